"""The one run-directory schema shared by every model (LLM and baselines).

A run directory holds:
    run.json        {"format": 2, "kind": "llm" | "baseline" | "ensemble", "model", "llmrec_version", "created",
                     "data": {"path", "name", "fingerprint", "users", "items"}, ...kind-specific fields}
    catalog.parquet the catalog the run was trained on (ids, raw ids, alternate ids, titles, texts): inference
                    (``recommend``, ``serve``) needs nothing outside the run directory
    config.yaml     the fully resolved config of the command that wrote it
    metrics.json    {"format": 2, "kind", "model", "status": "training" | "done",
                     "valid": <evaluator result of the selected checkpoint> + {"step" | "epoch"},
                     "test": <evaluator result> | null, "history": [validation entries], "train": {...}}
    + the kind's weights (LLM: adapter/, tokenizer/, prompt.txt; baseline: model.safetensors)
    test_ranks.npy  when the test covered every user: each test user's 0-based target rank (int64 ``[num_users]``,
    test_ranks.json data order) and its tag {"run_created", "users_digest", "test_metrics"} (``write_test_ranks``);
                    the benchmark's paired bootstrap reads them instead of scoring the test users again

``run.json`` is the marker that makes a directory an llmrec run: ``--overwrite`` refuses any directory without
it. Evaluation needs the prepared data again; ``load_run_data`` finds it (at the recorded path or one given) and
refuses data whose fingerprint differs from the one the run was trained on, naming both.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import llmrec
from llmrec.config import ConfigError
from llmrec.data import Catalog, DataError, PreparedData, load_catalog, load_prepared, save_catalog
from llmrec.files import atomic_write_json, read_json
from llmrec.machine import machine

RUN_FORMAT = 2
RANKS_FILE, RANKS_META = "test_ranks.npy", "test_ranks.json"
RESTORED_FILE = "restored.json"  # marks a run directory rebuilt from a benchmark trial record (no weights)
RUN_KINDS = ("llm", "baseline", "ensemble")
SPLIT_KEYS = ("valid", "test")


def data_record(data: PreparedData, path: str | os.PathLike) -> dict:
    """The ``data`` entry of ``run.json``: where the prepared data was and what it was (its fingerprint)."""
    return {
        "path": str(Path(path).resolve()),
        "name": data.name,
        "fingerprint": data.fingerprint,
        "users": data.num_users,
        "items": data.num_items,
    }


def write_run_info(run_dir: str | os.PathLike, kind: str, model: str, data: PreparedData, data_path, **extra) -> dict:
    """Write ``run.json`` and the run's own copy of the catalog; returns the info written."""
    if kind not in RUN_KINDS:
        raise ValueError(f"kind must be one of {RUN_KINDS}, got {kind!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_catalog(data.catalog, run_dir / "catalog.parquet")
    info = {
        "format": RUN_FORMAT,
        "kind": kind,
        "model": model,
        "llmrec_version": llmrec.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "data": data_record(data, data_path),
        **extra,
    }
    atomic_write_json(run_dir / "run.json", info)
    return info


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds an llmrec run (its ``run.json`` marker)."""
    return (Path(path) / "run.json").is_file()


def read_run_info(run_dir: str | os.PathLike) -> dict:
    """``run.json`` of a run directory, checked.

    Raises:
        DataError: not a run directory, unreadable, an older format, or an unknown kind (the message says which).
    """
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise DataError(
            f"{run_dir} is not a run directory: run.json is missing (create one with `llmrec train` or "
            "`llmrec baseline`)"
        )
    try:
        info = read_json(path)
    except ValueError as e:
        raise DataError(str(e)) from None
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        found = info.get("format") if isinstance(info, dict) else None
        raise DataError(
            f"{path}: run format {found!r}, expected {RUN_FORMAT} (written by an older llmrec; train the run again)"
        )
    if info.get("kind") not in RUN_KINDS:
        raise DataError(f"{path}: field 'kind' is {info.get('kind')!r}, expected one of {RUN_KINDS}")
    return info


def run_catalog(run_dir: str | os.PathLike) -> Catalog:
    """The catalog stored in the run directory (what inference recommends from)."""
    path = Path(run_dir) / "catalog.parquet"
    if not path.is_file():
        raise DataError(f"{run_dir} is not a complete run directory: catalog.parquet is missing")
    return load_catalog(path)


def load_run_data(run_dir: str | os.PathLike, data: str | os.PathLike | None = None) -> PreparedData:
    """The prepared data a run was trained on, for evaluation: at ``data`` if given, else at the recorded path.

    Raises:
        DataError: the data is not found (the message says to pass ``--data``), or its fingerprint differs from the
            run's (the message names both data sets).
    """
    info = read_run_info(run_dir)
    record = info["data"]
    path = Path(data) if data else Path(record["path"])
    if data and not path.exists():
        raise DataError(f"data: {path} does not exist (a prepared data directory from `llmrec prepare`)")
    if not path.exists():
        raise DataError(
            f"{run_dir} was trained on the prepared data at {record['path']}, which no longer exists; evaluation "
            "needs the same prepared data: pass --data DIR"
        )
    prepared = load_prepared(path)
    if prepared.fingerprint != record["fingerprint"]:
        raise DataError(
            f"data mismatch: {run_dir} was trained on {record['path']} ({record['name']}: {record['users']} users, "
            f"{record['items']} items, fingerprint {record['fingerprint'][:12]}), but {path} holds "
            f"{prepared.name}: {prepared.num_users} users, {prepared.num_items} items, fingerprint "
            f"{prepared.fingerprint[:12]}; re-prepare the data with the run's options or train again"
        )
    return prepared


def evaluation_protocol(result: dict) -> str:
    """The protocol of an ``evaluate`` result without its model's scoring note (e.g. a semantic-ID beam search):
    runs that score the catalog differently are still comparable under one evaluation protocol."""
    protocol, note = result.get("protocol", ""), result.get("scoring", "")
    return protocol.removesuffix(f"; {note}") if note else protocol


def write_metrics(run_dir: str | os.PathLike, info: dict, **fields) -> dict:
    """Write ``metrics.json`` in the shared schema (see the module docstring); returns what was written."""
    metrics = {
        "format": RUN_FORMAT,
        "kind": info["kind"],
        "model": info["model"],
        "status": "training",
        "valid": None,
        "test": None,
        "history": [],
        "train": {},
    }
    metrics.update(fields)
    atomic_write_json(Path(run_dir) / "metrics.json", metrics)
    return metrics


def ranks_tag(info: dict, users_digest: str, test_metrics: dict) -> dict:
    """What ``test_ranks.json`` holds: the ranks belong to this run (``created``), these users and these metrics."""
    return {"run_created": info["created"], "users_digest": users_digest, "test_metrics": test_metrics}


def write_test_ranks(run_dir: str | os.PathLike, info: dict, result: dict) -> dict:
    """Pop ``"ranks"`` from an ``evaluate(..., return_ranks=True)`` test result and store them (module docstring);
    returns the result without them, ready for ``metrics.json``."""
    import numpy as np

    result = dict(result)
    ranks = result.pop("ranks")
    run_dir = Path(run_dir)
    tmp = run_dir / f".{RANKS_FILE}.tmp.npy"
    np.save(tmp, ranks)
    tmp.replace(run_dir / RANKS_FILE)
    atomic_write_json(run_dir / RANKS_META, ranks_tag(info, result["users_digest"], result["metrics"]))
    return result


def read_metrics(run_dir: str | os.PathLike) -> dict:
    """``metrics.json`` of a run directory. Raises ``DataError`` when it is missing or unreadable."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise DataError(f"{run_dir}: metrics.json is missing (is it a finished llmrec run?)")
    try:
        return read_json(path)
    except ValueError as e:
        raise DataError(str(e)) from None


def plan_run_dir(run_dir: str | os.PathLike, resume: bool, overwrite: bool, has_checkpoint: bool) -> str:
    """Decide what a training command does with ``run_dir``: ``"new"``, ``"resume"`` or ``"restart"``.

    Rules (the same for ``llmrec train`` and ``llmrec baseline``):
        - a missing or empty directory starts a new run; ``--resume`` there is an error (nothing to resume);
        - a non-empty directory that is not an llmrec run (no ``run.json``) is refused, ``--overwrite`` or not:
          llmrec never deletes files it did not write;
        - a run with a checkpoint continues with ``--resume``, is replaced with ``--overwrite``, else is refused;
        - a run without a checkpoint (killed before its first one) restarts, with or without ``--resume``.
    ``"restart"`` means: remove the command's own outputs (``clear_outputs``), then start anew.

    Raises:
        ConfigError: the directory is refused; the message says why and what to pass instead.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output_dir: {run_dir} exists and is not a directory")
    if not run_dir.exists() or not any(run_dir.iterdir()):
        if resume:
            raise ConfigError(f"resume: {run_dir} holds no run to resume; drop --resume to start a new run there")
        return "new"
    if not is_run_dir(run_dir):
        raise ConfigError(
            f"output_dir: {run_dir} is not empty and is not an llmrec run directory (no run.json); llmrec does not "
            "write into or delete other directories: choose a new or empty one"
        )
    if not has_checkpoint:
        return "restart"
    if resume:
        return "resume"
    if overwrite:
        return "restart"
    raise ConfigError(
        f"output_dir: {run_dir} already holds a run; pass --resume true to continue it, --overwrite true to "
        "replace it, or choose a new directory"
    )


def clear_outputs(run_dir: str | os.PathLike, names) -> None:
    """Remove the files and folders ``names`` of ``run_dir`` (a command's own outputs), nothing else."""
    for name in names:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
