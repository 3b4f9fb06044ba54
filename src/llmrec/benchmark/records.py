"""Trial records: what the report needs from a finished trial, small enough to commit, restorable anywhere.

A benchmark on a CPU takes far longer than one working session or one lent machine, and a trial directory holds
model weights that do not belong in a repository. ``--records REC`` keeps, for every finished trial, one record:

    REC/<data>/<model>/<trial>.json        format, trial, seed, params, data fingerprint, the run's options (minus the
                                            runtime ones: paths, threads, resume), run.json, metrics.json, and where
                                            and when it was exported (``llmrec.benchmark.provenance``)
    REC/<data>/<model>/<trial>.ranks.npz   each test user's 0-based target rank (``ranks``: int32 ``[num_users]``,
                                            data order), from the shared evaluator (``llmrec.benchmark.report``)

Protocol:
    - export: a trial whose run directory is finished (``metrics.json`` status ``done``) and has no record gets
      one, right after it finishes and at every later call; an existing record is never overwritten.
    - restore: a trial with a record and no run directory gets a directory rebuilt from it (``run.json``,
      ``config.yaml``, ``metrics.json``, ``test_ranks.npy`` and ``restored.json`` naming the record; no weights),
      so selection, the seed phase and the report treat it as finished. The record must be of this trial: same data
      fingerprint and the same options as the suite asks for now, else ``ConfigError`` names the record and the key.
    Path-valued options are kept relative to the current directory (or as their file name when outside it), so
    records made on one machine restore on another and hold no absolute path.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import yaml

from llmrec.benchmark.datasets import Dataset
from llmrec.benchmark.trials import PATH_OPTIONS, RUNTIME, Trial, options_mismatch
from llmrec.config import ConfigError
from llmrec.errors import DataError
from llmrec.evaluation import users_digest
from llmrec.files import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from llmrec.runs import RANKS_FILE, RANKS_META, RESTORED_FILE, ranks_tag

RECORD_FORMAT = 1


def record_paths(root: Path, trial: Trial) -> tuple[Path, Path]:
    """``(REC/<data>/<model>/<trial>.json, ....ranks.npz)``."""
    base = Path(root) / trial.data / trial.model / trial.name
    return base.with_suffix(".json"), base.with_suffix(".ranks.npz")


def portable(value):
    """An absolute path as a path relative to the current directory (its file name when outside it); else as is."""
    if not isinstance(value, str) or not Path(value).is_absolute():
        return value
    try:
        return str(Path(value).relative_to(Path.cwd().resolve()))
    except ValueError:
        return Path(value).name


def _comparable(trial: Trial, config: dict) -> dict:
    """A run's options as records keep them: runtime options dropped, path options portable."""
    paths = PATH_OPTIONS[trial.kind]
    return {k: portable(v) if k in paths else v for k, v in config.items() if k not in RUNTIME}


def export_record(trial: Trial, dataset: Dataset, root: Path, device: str = "cpu") -> Path | None:
    """Write the record of a finished trial (a no-op when it exists); returns its JSON path, or ``None``.

    Computes the per-user test ranks with ``llmrec.benchmark.report.test_ranks`` (cached in the run directory).
    """
    from llmrec.benchmark.provenance import provenance
    from llmrec.benchmark.report import test_ranks

    path, ranks_path = record_paths(root, trial)
    if path.is_file():
        return None
    run = trial.run_dir
    ranks, _ = test_ranks(trial, dataset, device)
    buf = io.BytesIO()
    np.savez_compressed(buf, ranks=ranks.astype(np.int32))
    blob = buf.getvalue()
    info = read_json(run / "run.json")
    info["data"] = {k: v for k, v in info["data"].items() if k != "path"}
    metrics = read_json(run / "metrics.json")
    metrics["model"] = portable(metrics.get("model"))
    info["model"] = portable(info.get("model"))
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    record = {
        "format": RECORD_FORMAT,
        "trial": trial.key,
        "kind": trial.kind,
        "seed": trial.seed,
        "params": trial.params,
        "data": {"name": trial.data, "fingerprint": dataset.fingerprint, "users": dataset.num_users},
        "config": _comparable(trial, config),
        "run": info,
        "metrics": metrics,
        "ranks": {
            "file": ranks_path.name,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "users_digest": users_digest(dataset.data.users),
        },
        "exported": provenance(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(ranks_path, blob)
    atomic_write_json(path, record)  # last: a record without its ranks file is never seen
    return path


def read_record(trial: Trial, dataset: Dataset, root: Path) -> tuple[dict, np.ndarray] | None:
    """The record of ``trial`` and its test ranks, checked to be this trial on this data; ``None`` without one.

    Raises:
        ConfigError: the record is of other data or other options (the suite changed since it was made).
        DataError: the record or its ranks file is unreadable, or the ranks do not match the record.
    """
    path, ranks_path = record_paths(root, trial)
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except ValueError as e:
        raise DataError(f"{path}: unreadable trial record ({e})") from None
    if record.get("format") != RECORD_FORMAT or record.get("trial") != trial.key:
        raise DataError(f"{path}: not a format-{RECORD_FORMAT} record of trial {trial.key}")
    if record["data"]["fingerprint"] != dataset.fingerprint:
        raise ConfigError(f"{path}: a record of a run on other data than the suite's {trial.data!r} (fingerprint)")
    problem = options_mismatch(trial, record["config"], "the record", path=portable)
    if problem:
        raise ConfigError(f"{path}: {problem}; the suite or a base config changed since this trial ran")
    if not ranks_path.is_file():
        raise DataError(f"{ranks_path}: missing (the ranks of record {path.name})")
    blob = ranks_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != record["ranks"]["sha256"]:
        raise DataError(f"{ranks_path}: does not match the sha256 in {path.name}")
    ranks = np.load(io.BytesIO(blob))["ranks"].astype(np.int64)
    if len(ranks) != dataset.num_users or record["ranks"]["users_digest"] != users_digest(dataset.data.users):
        raise DataError(f"{ranks_path}: ranks of {len(ranks)} users, not of the data set's {dataset.num_users}")
    return record, ranks


def restore_record(trial: Trial, dataset: Dataset, root: Path) -> bool:
    """Rebuild the run directory of ``trial`` from its record (module docstring); ``False`` without a record."""
    found = read_record(trial, dataset, root)
    if found is None:
        return False
    record, ranks = found
    run = trial.run_dir
    tmp = run.with_name(f".{run.name}.restoring")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    info = dict(record["run"], data={**record["run"]["data"], "path": str(dataset.path)})
    atomic_write_json(tmp / "run.json", info)
    local = {k: v for k, v in trial.options.items() if k in RUNTIME or k in PATH_OPTIONS[trial.kind]}
    atomic_write_text(tmp / "config.yaml", yaml.safe_dump({**record["config"], **local}, sort_keys=False))
    atomic_write_json(tmp / "metrics.json", record["metrics"])
    np.save(tmp / RANKS_FILE, ranks)
    tag = ranks_tag(info, users_digest(dataset.data.users), record["metrics"]["test"]["metrics"])
    atomic_write_json(tmp / RANKS_META, tag)
    path, _ = record_paths(root, trial)
    note = "restored from a trial record: options, metrics and test ranks only, no model weights"
    atomic_write_json(tmp / RESTORED_FILE, {"record": str(path), "exported": record["exported"], "note": note})
    if run.exists():
        run.rmdir()  # only an empty directory gets here (``state`` calls anything else a run or refuses it)
    tmp.replace(run)
    return True


def restored_from(trial: Trial) -> dict | None:
    """``restored.json`` of a run directory rebuilt from a record, or ``None`` for a run that trained here."""
    path = trial.run_dir / RESTORED_FILE
    return read_json(path) if path.is_file() else None
