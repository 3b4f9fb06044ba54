"""Trials: one run directory each, written by one self-contained ``llmrec train`` / ``llmrec baseline`` command.

Layout under the benchmark directory ``DIR``:
    DIR/trials/<data>/<model>/t000          tuning trial 0 (seed ``suite.seeds[0]``, i.e. 0)
    DIR/trials/<data>/<model>/t003-seed1    seed 1 of the selected trial t003 (seed 0 is t003 itself)

A trial's options are, in increasing priority: the command's defaults, the model's base config, its ``set``, the
trial's searched values, and what the benchmark owns: ``data``, ``output_dir``, ``seed``, ``num_threads``,
``resume``, ``overwrite`` and, for LLM trials, ``eval_users: 0`` (every validation on all users, so the selected
checkpoint and the trial's ``valid`` entry come from the full validation split) and ``test_users: 0``. Every option
is written out on the command line, so a line of ``plan.txt`` needs nothing but the prepared data and llmrec.

State of a trial directory: ``missing`` (absent or empty), ``done`` (``metrics.json`` has status ``done``),
``interrupted`` (a run directory that is not done: its command is repeated with ``--resume true``, which continues
from the last checkpoint, or starts again when the run had none).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmrec.benchmark.suite import ModelSpec, Suite, config_class
from llmrec.config import ConfigError
from llmrec.errors import DataError
from llmrec.files import read_json
from llmrec.runs import is_run_dir, read_run_info

COMMANDS = {"llm": "train", "baseline": "baseline"}
# options that do not change what a trial computes: a finished trial is reused whatever they were
RUNTIME = ("data", "output_dir", "num_threads", "resume", "overwrite", "progress", "device")
# options that may name a local file or folder: made absolute when they do, so a plan line runs from any directory
PATH_OPTIONS = {"llm": ("model", "prompt"), "baseline": ()}
# options a command may lower to fit the model and records as run (``llmrec train``: item_cf_dim <= hidden size)
LOWERED = {("llm", "item_cf_dim")}


@dataclass(frozen=True)
class Trial:
    """One run of a model on a data set: ``name`` is ``t007`` (tuning) or ``t007-seed2`` (a finalist's seed)."""

    data: str
    model: str
    kind: str
    name: str
    seed: int
    params: dict  # the searched values ({} for the base config)
    options: dict = field(repr=False)  # every option of the command
    run_dir: Path = field(repr=False)

    @property
    def key(self) -> str:
        return f"{self.data}/{self.model}/{self.name}"

    def argv(self, resume: bool = False, num_threads: int | None = None) -> list[str]:
        """The command's arguments (after ``llmrec``), every option explicit."""
        opts = dict(self.options, resume=resume)
        if num_threads is not None:
            opts["num_threads"] = num_threads
        args = [COMMANDS[self.kind]]
        for key, value in opts.items():
            args.append(f"--{key}")
            args += [_text(v) for v in value] if isinstance(value, list) else [_text(value)]
        return args

    def shell(self, resume: bool = False) -> str:
        """One line for a shell or a scheduler: ``llmrec train --data ... --output_dir DIR/trials/...``."""
        return " ".join(["llmrec", *(shlex.quote(a) for a in self.argv(resume))])


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def trial_options(model: ModelSpec, params: dict, data_path: Path, run_dir: Path, seed: int, threads: int) -> dict:
    """Every option of the trial's command (see the module docstring for the priorities)."""
    cls = config_class(model.kind)
    defaults = dataclasses.asdict(cls(data="x", output_dir="x"))
    opts = {**defaults, **model.base, **params}
    opts.update(data=str(data_path), output_dir=str(run_dir), seed=seed, num_threads=threads, resume=False,
                overwrite=False)  # fmt: skip
    if model.kind == "llm":
        opts.update(eval_users=0, test_users=0)
    for key in PATH_OPTIONS[model.kind]:
        if isinstance(opts.get(key), str) and opts[key] and Path(opts[key]).exists():
            opts[key] = str(Path(opts[key]).resolve())
    return opts


def make_trial(suite: Suite, model: ModelSpec, data: str, data_path: Path, root: Path, name: str, seed: int,
               params: dict) -> Trial:  # fmt: skip
    run_dir = (root / "trials" / data / model.name / name).resolve()
    opts = trial_options(model, params, data_path.resolve(), run_dir, seed, suite.num_threads)
    return Trial(data, model.name, model.kind, name, seed, dict(params), opts, run_dir)


def state(trial: Trial, fingerprint: str) -> str:
    """``missing``, ``done`` or ``interrupted`` (module docstring); checks that a run is this trial.

    Raises:
        ConfigError: the directory holds something else: not an llmrec run, a run on other data, or a run with
            other options (the suite or a base config changed since it ran); the message names the directory.
    """
    run = trial.run_dir
    if not run.exists() or (run.is_dir() and not any(run.iterdir())):
        return "missing"
    if not is_run_dir(run):
        raise ConfigError(
            f"{run}: not an llmrec run directory (no run.json), so trial {trial.key} cannot start there; it may be a "
            "run killed while it was being created: delete the directory to run the trial again"
        )
    info = read_run_info(run)
    if info["data"]["fingerprint"] != fingerprint:
        raise ConfigError(f"{run}: trained on other data ({info['data']['path']}) than the suite's {trial.data!r}")
    problem = _mismatch(trial)
    if problem:
        raise ConfigError(
            f"{run}: {problem}; the suite or a base config changed since this trial ran: restore them, or use a new "
            "--output_dir (or delete the directory to run the trial again)"
        )
    metrics_path = run / "metrics.json"
    if metrics_path.is_file():
        try:
            if read_json(metrics_path).get("status") == "done":
                return "done"
        except (ValueError, AttributeError) as e:
            raise DataError(f"{metrics_path}: unreadable ({e})") from None
    return "interrupted"


def _mismatch(trial: Trial) -> str | None:
    path = trial.run_dir / "config.yaml"
    if not path.is_file():
        return None  # a run killed before its config was written restarts anyway
    ran = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return options_mismatch(trial, ran, "config.yaml")


def options_mismatch(trial: Trial, ran: dict, where: str, path=lambda value: value) -> str | None:
    """How the options ``ran`` (a run's config, as ``where`` holds them) differ from the trial's, or ``None``.

    Runtime options and options absent from ``ran`` are skipped; ``LOWERED`` ones may be lower; ``path`` maps the
    trial's value of each ``PATH_OPTIONS`` key to the form ``ran`` keeps it in.
    """
    for key, value in trial.options.items():
        if key in RUNTIME or key not in ran:
            continue
        value = path(value) if key in PATH_OPTIONS[trial.kind] else value
        lowered = (trial.kind, key) in LOWERED and isinstance(ran[key], int) and 0 <= ran[key] <= value
        if ran[key] != value and not lowered:
            return f"{where} has {key}: {ran[key]!r}, the suite asks for {value!r}"
    return None
