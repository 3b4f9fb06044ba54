"""The benchmark's two phases, run here or planned for a scheduler; the same trials and the same report either way.

Phases (one trial = one run directory under ``DIR/trials``, see ``llmrec.benchmark.trials``):
    1. tuning: every model's search points on every data set, each trained with seed ``seeds[0]`` (0) and selected
       on the full validation split (``llmrec.benchmark.select``);
    2. seeds: each model's selected trial again with every other seed of the suite (seed 0 is the trial itself).
A model's seeds depend on its own selection only, so they are planned as soon as that model's tuning trials on that
data set are all finished (an untuned model's at once after its one trial), while other models are still tuning.

Modes:
    run      run every pending trial whose selection is known (``jobs`` 0: in this process; N: N single-thread
             subprocesses), select the models whose tuning just finished, run their seeds, and so on; then write the
             report. Finished trials are skipped, interrupted ones resumed, so running it again continues where it
             stopped. ``time_limit_h`` or a file ``DIR/STOP`` drains it: no further trial starts, the running ones
             finish (``llmrec.benchmark.execute.Gate``), and the call returns ``pending``.
    plan     write ``DIR/plan.txt``: one shell command per pending trial that can run now, the tuning trials and the
             seeds of the models already selected (interrupted ones with ``--resume true``), the longest expected
             first (``llmrec.benchmark.progress.longest_first``, as ``run`` orders them); nothing runs. An existing
             scheduler runs the lines.
    collect  as plan while a trial is pending (returns ``pending``); when every trial is finished, write
             ``DIR/report.{json,md,png}``.
Every mode rewrites ``DIR/progress.md`` (``llmrec.benchmark.progress``): per model and phase, the trials finished
and pending, and the validation leader so far. With ``records`` (``llmrec.benchmark.records``), every mode first
rebuilds the missing trials that have a record and exports the finished ones that have none; ``run`` exports each
trial as it finishes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from llmrec.benchmark.datasets import Dataset, load_datasets
from llmrec.benchmark.execute import STOP_FILE, Gate, Progress, run_trials
from llmrec.benchmark.progress import (
    expected_seconds,
    longest_first,
    machine_counts,
    machines_line,
    progress_markdown,
)
from llmrec.benchmark.records import export_record, portable, restore_record, restored_from
from llmrec.benchmark.report import REPORT_FORMAT, dataset_block, protocol_block
from llmrec.benchmark.search import search_points
from llmrec.benchmark.select import Selection, select
from llmrec.benchmark.suite import Suite
from llmrec.benchmark.trials import Trial, make_trial, state
from llmrec.config import ConfigError
from llmrec.files import atomic_write_json, atomic_write_text, atomic_write_with, read_json
from llmrec.machine import machine_name

PLAN_FILE = "plan.txt"
PROGRESS_FILE = "progress.md"
SUITE_COPY = "suite.yaml"
MODES = ("run", "plan", "collect")


@dataclass(frozen=True)
class Outcome:
    """What a call did: ``status`` ``done`` (every trial finished) or ``pending`` (``plan.txt`` lists the rest)."""

    status: str
    phase: str  # "tuning", "seeds" or "report"
    pending: int = 0
    report: dict | None = None


def _prepare_root(suite: Suite, root: Path) -> None:
    """Create ``DIR`` (or accept one of an earlier call, marked by its copy of the suite) and copy the suite in."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output_dir: {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not (root / SUITE_COPY).is_file():
        raise ConfigError(
            f"output_dir: {root} is not empty and holds no {SUITE_COPY} (not a benchmark directory); choose a new "
            "or empty one"
        )
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_with(root / SUITE_COPY, lambda tmp: shutil.copyfile(suite.path, tmp))


class Benchmark:
    """A suite bound to its directory: its data sets, trials, selection and report."""

    def __init__(self, suite: Suite, root: str | Path, log=print, records: str | Path | None = None,
                 device: str = "cpu", time_limit_h: float = 0.0):  # fmt: skip
        self.suite, self.root, self.log, self.device = suite, Path(root), log, device
        self.gate = Gate(self.root / STOP_FILE, time_limit_h * 3600)
        self.stopped = False  # the gate refused a trial: this call starts no more
        self.records = Path(records) if records else None
        self._announced: set[tuple[str, str]] = set()  # selections already logged
        self.points = {m.name: search_points(suite, m) for m in suite.models}  # suite errors before any write
        _prepare_root(suite, self.root)
        self.datasets: dict[str, Dataset] = load_datasets(suite, self.root, log)

    def tuning_trials(self) -> dict[tuple[str, str], list[Trial]]:
        """``(data, model) -> trials t000, t001, ...`` with seed ``seeds[0]``."""
        out = {}
        for d, ds in self.datasets.items():
            for m in self.suite.models:
                out[d, m.name] = [make_trial(self.suite, m, d, ds.path, self.root, f"t{i:03d}", self.suite.seeds[0],
                                             p) for i, p in enumerate(self.points[m.name])]  # fmt: skip
        return out

    def seed_trials(self, selections: dict[tuple[str, str], Selection]) -> dict[tuple[str, str], list[Trial]]:
        """``(data, model) -> [selected trial, its seed-1 run, ...]`` (seed ``seeds[0]`` reuses the trial)."""
        models = {m.name: m for m in self.suite.models}
        out = {}
        for (d, name), sel in selections.items():
            t = sel.selected
            out[d, name] = [t] + [make_trial(self.suite, models[name], d, self.datasets[d].path, self.root,
                                             f"{t.name}-seed{s}", s, t.params) for s in self.suite.seeds[1:]]  # fmt: skip
        return out

    def restore(self, trials: list[Trial]) -> int:
        """Rebuild the missing run directories that have a record (``llmrec.benchmark.records``); returns how many."""
        n = self._each(trials, "missing", lambda t, ds: restore_record(t, ds, self.records))
        if n:
            self.log(f"[benchmark] restored {n} finished trial(s) from the records in {self.records}")
        return n

    def export(self, trials: list[Trial]) -> int:
        """Write the record of every finished trial that has none; returns how many were written."""
        return self._each(trials, "done", lambda t, ds: export_record(t, ds, self.records, self.device) is not None)

    def _each(self, trials: list[Trial], wanted: str, action) -> int:
        """``action(trial, dataset)`` for each trial in state ``wanted`` (none without records); how many were true."""
        if self.records is None:
            return 0
        ds = self.datasets
        return sum(bool(action(t, ds[t.data])) for t in trials if state(t, ds[t.data].fingerprint) == wanted)

    def pending(self, trials: list[Trial]) -> tuple[list[tuple[Trial, bool]], list[Trial]]:
        """The unfinished trials as ``(trial, resume)``, and the finished ones."""
        todo, done = [], []
        for t in trials:
            s = state(t, self.datasets[t.data].fingerprint)
            if s == "done":
                done.append(t)
            else:
                todo.append((t, s == "interrupted"))
        return todo, done

    def select_all(self, tuning: dict[tuple[str, str], list[Trial]]) -> dict[tuple[str, str], Selection]:
        """The selection of every ``(data, model)`` whose tuning trials are all finished (the others are left out)."""
        out = {}
        for (d, m), trials in tuning.items():
            if self.pending(trials)[0]:
                continue
            out[d, m] = sel = select(trials, self.datasets[d], self.suite.metric)
            if (d, m) in self._announced:
                continue
            self._announced.add((d, m))
            shown = ", ".join(f"{k}={v}" for k, v in sel.selected.params.items()) or "base config"
            flagged = f"; flagged {sorted(sel.flagged)}" if sel.flagged else ""
            self.log(f"[benchmark] selected {d}/{m}/{sel.selected.name} ({shown}): valid {self.suite.metric} "
                     f"{sel.scores[sel.selected.name]:.4f} of {len(trials)} trial(s){flagged}")  # fmt: skip
        return out

    def step(self, phases: dict[str, dict[tuple[str, str], list[Trial]]], mode: str, jobs: int) -> int:
        """Run (mode run) or plan (plan, collect) the pending trials of ``phases`` (phase name -> ``(data, model) ->
        trials``); returns how many were pending before a run. ``DIR/progress.md`` says where each phase stands."""
        trials = [t for groups in phases.values() for ts in groups.values() for t in ts]
        self.restore(trials)
        self.export(trials)  # trials finished by a scheduler, or before a call with --records
        todo, finished = self.pending(trials)
        todo, done = longest_first(todo, finished), len(finished)
        if todo and mode == "run":
            self.log(f"[benchmark] {len(trials)} trial(s) ready, {done} finished before, {len(todo)} to run")
            on_done = (lambda t: self.export([t])) if self.records else None
            self.gate.expected = expected_seconds(finished)
            refused = run_trials(todo, Progress(len(trials), done, self.log), jobs, self.root, on_done, self.gate)
            self.stopped = self.stopped or refused > 0
            finished = self.pending(trials)[1]  # with the trials that just ran
        machines = machines_line(finished, self.records)
        text = progress_markdown(self.suite.name, phases, self.datasets, self.suite.metric, machines)
        atomic_write_text(self.root / PROGRESS_FILE, text)
        if todo and mode != "run":
            atomic_write_text(self.root / PLAN_FILE, "".join(t.shell(resume) + "\n" for t, resume in todo))
            self.log(f"[benchmark] {done}/{len(trials)} trial(s) finished; wrote {len(todo)} command(s) to "
                     f"{self.root / PLAN_FILE}: run them (any scheduler), then `llmrec benchmark --collect true`"
                     f"; {self.root / PROGRESS_FILE} says where each model stands")  # fmt: skip
        return len(todo)

    def report(self, selections, seeds, device: str = "cpu") -> dict:
        from llmrec.benchmark.provenance import provenance

        models = {m.name: m for m in self.suite.models}
        blocks = []
        for d, ds in self.datasets.items():
            rows = [(models[m.name], selections[d, m.name], seeds[d, m.name], len(self.points[m.name]))
                    for m in self.suite.models]  # fmt: skip
            blocks.append(dataset_block(self.suite, ds, rows, self.root, device))
        s = self.suite
        return {
            "format": REPORT_FORMAT,
            "suite": {
                "name": s.name,
                "path": s.path,
                "description": s.description,
                "trials": s.trials,
                "seeds": list(s.seeds),
            },
            "metric": s.metric,
            "protocol": protocol_block(s),
            "datasets": blocks,
            "provenance": provenance(),
            "timing": self.timing(seeds),
            "records": self.records_block(seeds),
        }

    def records_block(self, seeds) -> dict:
        """How many of the report's trials were restored from records, the commits and machines that exported them,
        and how many of all its trials ran on each machine (``trial_machines``)."""
        trials = {t.key: t for ts in self.tuning_trials().values() for t in ts}
        trials.update({t.key: t for ts in seeds.values() for t in ts})
        marks = [m for m in (restored_from(t) for t in trials.values()) if m]
        return {
            "dir": portable(str(self.records.resolve())) if self.records else None,
            "trials": len(trials),
            "restored": len(marks),
            "commits": sorted({str(m["exported"].get("git_commit")) for m in marks}),
            "machines": sorted({machine_name(m["exported"].get("machine") or {}) for m in marks}),
            "trial_machines": machine_counts(list(trials.values()), self.records),
        }

    def timing(self, seeds) -> dict:
        """Mean training time per trial of each model on each data set (from the runs' ``metrics.json``)."""
        out = {}
        for (d, m), trials in self.tuning_trials().items():
            runs = {t.key: t for t in trials + seeds.get((d, m), [])}.values()
            times = [(read_json(t.run_dir / "metrics.json").get("train") or {}) for t in runs]
            secs = [x.get("train_time_s") or x.get("wall_time_s") or 0.0 for x in times]
            out[f"{d}/{m}"] = {"runs": len(secs), "mean_train_time_s": round(sum(secs) / len(secs), 2)}
        return out


def write_report(report: dict, root: Path) -> list[Path]:
    from llmrec.benchmark.render import plot, to_markdown

    paths = [root / "report.json", root / "report.md", root / "report.png"]
    atomic_write_json(paths[0], report)
    atomic_write_text(paths[1], to_markdown(report))
    plot(report, paths[2])
    return paths


def run_benchmark(suite: Suite, root: str | Path, mode: str = "run", jobs: int = 0, device: str = "cpu",
                  log=print, records: str | Path | None = None, time_limit_h: float = 0.0) -> Outcome:  # fmt: skip
    """Run, plan or collect ``suite`` in ``root`` (see the module docstring); ``records``: a trial-record directory
    (``llmrec.benchmark.records``) that finished trials are exported to and missing ones restored from;
    ``time_limit_h`` (mode run, 0: none): hours after which no further trial starts.

    Raises:
        ConfigError: a bad suite, a refused directory, or a trial directory that holds something else.
        TrialFailed: a trial failed (mode run).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    bench = Benchmark(suite, root, log, records, device, time_limit_h)
    tuning = bench.tuning_trials()
    bench.restore([t for ts in tuning.values() for t in ts])
    while True:
        selections = bench.select_all(tuning)
        seeds = bench.seed_trials(selections)
        phases = {"tuning": tuning, "seeds": {k: ts[1:] for k, ts in seeds.items()}}
        ran = bench.step(phases, mode, jobs)
        if mode != "run" or not ran or bench.stopped:
            break  # a run: the models whose tuning just finished have seeds to run now
    tuning_left = sum(len(bench.pending(ts)[0]) for ts in tuning.values())
    left = tuning_left + sum(len(bench.pending(ts)[0]) for ts in phases["seeds"].values())
    if left:
        return Outcome("pending", "tuning" if tuning_left else "seeds", left)
    if mode != "run":
        atomic_write_text(bench.root / PLAN_FILE, "")  # nothing left to schedule
    if mode == "plan":
        log("[benchmark] every trial is finished; `llmrec benchmark --collect true` writes the report")
        return Outcome("done", "seeds")
    report = bench.report(selections, seeds, device)
    for path in write_report(report, bench.root):
        log(f"[benchmark] wrote {path}")
    return Outcome("done", "report", 0, report)
