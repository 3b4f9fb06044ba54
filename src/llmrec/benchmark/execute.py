"""Running the pending trials of a phase on this machine: in this process, or ``--jobs N`` subprocesses.

Both run exactly the command line a trial has in ``plan.txt`` (``Trial.argv``). In-process, the argv is parsed by
the command's own config parser and handed to its training function. With ``jobs`` > 0, each trial runs as
``python -m llmrec ...`` with ``OMP_NUM_THREADS=1`` and ``--num_threads 1``, N at a time; its output goes to
``DIR/logs/<data>__<model>__<trial>.log``. Progress lines give trials done / left, the time of each trial and an
estimate of the time left.
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


class TrialFailed(UserError):
    """One or more trials exited with an error; the message names their logs."""


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


def run_trials(pending: list[tuple[Trial, bool]], progress: Progress, jobs: int, root: Path, on_done=None) -> None:
    """Run ``(trial, resume)`` pairs; ``jobs`` 0: one at a time in this process, else N subprocesses.
    ``on_done(trial)`` runs in this process after each trial that finished without error.

    Raises:
        TrialFailed: a subprocess trial failed (after the others finished); in-process, a trial's own error.
    """
    if jobs == 0:
        for trial, resume in pending:
            start = time.perf_counter()
            progress.log(f"[benchmark] running {trial.key}{' (resuming)' if resume else ''}: {trial.shell(resume)}")
            run_in_process(trial, resume)
            progress.finished(trial, time.perf_counter() - start)
            if on_done:
                on_done(trial)
        return
    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_timed, _run_subprocess, t, resume, root): t for t, resume in pending}
        for future in as_completed(futures):
            trial = futures[future]
            code, seconds = future.result()
            if code:
                failed.append(f"{trial.key} (exit {code}, log {log_path(root, trial)})")
                progress.log(f"[benchmark] FAILED {trial.key} after {_duration(seconds)}: see {log_path(root, trial)}")
            else:
                progress.finished(trial, seconds, jobs)
                if on_done:
                    on_done(trial)
    if failed:
        raise TrialFailed(f"{len(failed)} trial(s) failed: " + "; ".join(failed) + "; fix and run the benchmark again")


def _timed(fn, *args) -> tuple[int, float]:
    start = time.perf_counter()
    code = fn(*args)
    return code, time.perf_counter() - start
