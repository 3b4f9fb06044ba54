"""Running the pending trials of a phase on this machine: in this process, or ``--jobs N`` subprocesses.

Both run exactly the command line a trial has in ``plan.txt`` (``Trial.argv``). In-process, the argv is parsed by
the command's own config parser and handed to its training function. With ``jobs`` > 0, each trial runs as
``python -m llmrec ...`` with ``OMP_NUM_THREADS=1`` and ``--num_threads 1``, N at a time; its output goes to
``DIR/logs/<data>__<model>__<trial>.log``. Progress lines give trials done / left, the time of each trial and an
estimate of the time left.

A ``Gate`` drains a run gracefully: it is asked just before each trial would start, and a trial it refuses is not
started (the running ones finish); a later call runs it. It refuses once ``DIR/STOP`` exists, and, with a time
limit, a trial that is expected to end past it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from llmrec.benchmark.trials import Trial
from llmrec.config import parse_config
from llmrec.errors import UserError

STOP_FILE = "STOP"


class TrialFailed(UserError):
    """One or more trials exited with an error; the message names their logs."""


class Gate:
    """May a trial start now? Not once ``stop_file`` exists; with ``limit_s`` > 0, not when the time since this
    gate was made plus the trial's expected wall time (``expected``: ``(data, model) -> seconds``, see
    ``llmrec.benchmark.progress.expected_seconds``) is past ``limit_s``. A model with no expectation yet starts
    while any time is left."""

    def __init__(self, stop_file: Path, limit_s: float = 0.0, clock=time.monotonic):
        self.stop_file, self.limit_s, self.clock = Path(stop_file), float(limit_s), clock
        self.start = clock()
        self.expected: dict[tuple[str, str], float] = {}

    def refusal(self, trial: Trial) -> str | None:
        """Why ``trial`` may not start now, or None."""
        if self.stop_file.exists():
            return f"{self.stop_file} exists (delete it to run trials again)"
        if self.limit_s <= 0:
            return None
        elapsed = self.clock() - self.start
        need = self.expected.get((trial.data, trial.model), 0.0)
        if elapsed + need > self.limit_s or elapsed >= self.limit_s:
            return (f"the time limit of {_duration(self.limit_s)} would be passed ({_duration(elapsed)} used, "
                    f"{trial.model} trials take {_duration(need)} on average)")  # fmt: skip
        return None


class Progress:
    """Prints ``[benchmark] 3/12 done, 9 left: toy/sasrec/t002 in 4.1 s (mean 3.9 s/trial, ~35 s left)``."""

    def __init__(self, total: int, already: int, log=print):
        self.total, self.done, self.log = total, already, log
        self.times: list[float] = []

    def finished(self, trial: Trial, seconds: float, jobs: int = 1) -> None:
        self.done += 1
        self.times.append(seconds)
        mean = sum(self.times) / len(self.times)
        left = self.total - self.done
        eta = f", ~{_duration(mean * left / max(jobs, 1))} left" if left else ""
        self.log(f"[benchmark] {self.done}/{self.total} done, {left} left: {trial.key} in {_duration(seconds)} "
                 f"(mean {_duration(mean)}/trial{eta})")  # fmt: skip


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def run_in_process(trial: Trial, resume: bool) -> None:
    """Parse the trial's command line with its command's parser and train, in this process."""
    argv = trial.argv(resume)
    if trial.kind == "llm":
        from llmrec.llm.config import TrainConfig
        from llmrec.llm.loop import train

        train(parse_config(TrainConfig, argv[1:], prog="llmrec train"))
    else:
        from llmrec.baselines.config import BaselineConfig
        from llmrec.baselines.train import train_baseline

        train_baseline(parse_config(BaselineConfig, argv[1:], prog="llmrec baseline"))


def log_path(root: Path, trial: Trial) -> Path:
    return root / "logs" / f"{trial.data}__{trial.model}__{trial.name}.log"


def _run_subprocess(trial: Trial, resume: bool, root: Path) -> int:
    path = log_path(root, trial)
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(path, "a", encoding="utf-8") as out:
        out.write(f"$ {trial.shell(resume)}\n")
        out.flush()
        cmd = [sys.executable, "-m", "llmrec", *trial.argv(resume, num_threads=1)]
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode


def run_trials(pending: list[tuple[Trial, bool]], progress: Progress, jobs: int, root: Path, on_done=None,
               gate: Gate | None = None) -> int:  # fmt: skip
    """Run ``(trial, resume)`` pairs; ``jobs`` 0: one at a time in this process, else N subprocesses.
    ``on_done(trial)`` runs in this process after each trial that finished without error; ``gate`` is asked before
    each trial starts. Returns how many trials the gate did not start.

    Raises:
        TrialFailed: a subprocess trial failed (after the others finished); in-process, a trial's own error.
    """
    refused: list[str] = []

    def allowed(trial: Trial) -> bool:
        reason = gate.refusal(trial) if gate else None
        if reason:
            refused.append(reason)
        return reason is None

    if jobs == 0:
        for trial, resume in pending:
            if not allowed(trial):
                continue
            start = time.perf_counter()
            progress.log(f"[benchmark] running {trial.key}{' (resuming)' if resume else ''}: {trial.shell(resume)}")
            run_in_process(trial, resume)
            progress.finished(trial, time.perf_counter() - start)
            if on_done:
                on_done(trial)
        return _report_refused(refused, progress)
    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_timed, allowed, _run_subprocess, t, resume, root): t for t, resume in pending}
        for future in as_completed(futures):
            trial = futures[future]
            code, seconds = future.result()
            if code is None:
                continue
            if code:
                failed.append(f"{trial.key} (exit {code}, log {log_path(root, trial)})")
                progress.log(f"[benchmark] FAILED {trial.key} after {_duration(seconds)}: see {log_path(root, trial)}")
            else:
                progress.finished(trial, seconds, jobs)
                if on_done:
                    on_done(trial)
    if failed:
        raise TrialFailed(f"{len(failed)} trial(s) failed: " + "; ".join(failed) + "; fix and run the benchmark again")
    return _report_refused(refused, progress)


def _report_refused(refused: list[str], progress: Progress) -> int:
    if refused:
        progress.log(f"[benchmark] stopped: {len(refused)} trial(s) not started, {refused[-1]}; the same command "
                     "continues where this one stopped")  # fmt: skip
    return len(refused)


def _timed(allowed, fn, trial: Trial, *args) -> tuple[int | None, float]:
    """``fn(trial, *args)`` and its time; ``(None, 0.0)`` when ``allowed(trial)`` is false (not started)."""
    if not allowed(trial):
        return None, 0.0
    start = time.perf_counter()
    code = fn(trial, *args)
    return code, time.perf_counter() - start
