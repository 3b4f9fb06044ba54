"""``DIR/progress.md``: where a long benchmark stands, rewritten by every ``llmrec benchmark`` call.

One row per (data set, model) of the current phase: trials finished / interrupted / not started, the best
FULL-validation value of the suite's metric so far and its trial (validation only: nothing here reads a test
result), and the mean wall time of the finished trials (training and validations; a resumed trial counts its last
process only). A last line names the machines the finished trials ran on. Trials are named, never given with a
local path, so the file can be committed beside a suite's records.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from llmrec.benchmark.datasets import Dataset
from llmrec.benchmark.records import record_paths, restored_from
from llmrec.benchmark.select import select
from llmrec.benchmark.trials import Trial, state
from llmrec.config import ConfigError
from llmrec.files import read_json
from llmrec.machine import machine_name


def wall_seconds(trial: Trial) -> float:
    """A finished trial's wall time from its ``metrics.json`` ``train`` entry; its training time where the run
    recorded no wall time (LLM runs before 2026-12-07: validations not counted), 0 when neither is there."""
    train = read_json(trial.run_dir / "metrics.json").get("train") or {}
    return float(train.get("wall_time_s") or train.get("train_time_s") or 0.0)


def machine_of(trial: Trial, records: Path | None = None) -> dict | None:
    """The machine a finished trial ran on: its ``run.json`` ``machine`` (runs since 2026-12-07), else the machine
    that exported its record (restored trials, or ``records`` holding one), else ``None``."""
    found = read_json(trial.run_dir / "run.json").get("machine")
    if found:
        return found
    mark = restored_from(trial)
    if mark:
        return mark["exported"].get("machine")
    path = record_paths(records, trial)[0] if records is not None else None
    return read_json(path)["exported"].get("machine") if path and path.is_file() else None


def machine_counts(trials: list[Trial], records: Path | None = None) -> dict[str, int]:
    """``machine name -> how many`` of the finished ``trials`` ran on it (``not recorded`` where none is known), the
    most frequent first."""
    counts = Counter(machine_name(m) if (m := machine_of(t, records)) else "not recorded" for t in trials)
    return dict(counts.most_common())


def machines_line(trials: list[Trial], records: Path | None = None) -> str:
    """``Machines of the N finished trial(s): A: n, B: m.`` for the finished ``trials``."""
    shown = ", ".join(f"{name}: {n}" for name, n in machine_counts(trials, records).items())
    return f"Machines of the {len(trials)} finished trial(s): {shown or 'none yet'}."


def expected_seconds(finished: list[Trial]) -> dict[tuple[str, str], float]:
    """``(data, model) -> mean wall time`` of the ``finished`` trials: what a further trial of it is expected to
    take. A model with no finished trial on a data set has no entry."""
    times: dict[tuple[str, str], list[float]] = {}
    for t in finished:
        times.setdefault((t.data, t.model), []).append(wall_seconds(t))
    return {k: sum(v) / len(v) for k, v in times.items()}


def longest_first(todo: list, finished: list[Trial]) -> list:
    """``todo`` (``(trial, resume)`` pairs) with the longest expected trials first (``expected_seconds``), so N
    parallel jobs end together; a model with no finished trial counts as the longest. Equal expectations keep their
    order."""
    means = expected_seconds(finished)
    return sorted(todo, key=lambda p: -means.get((p[0].data, p[0].model), float("inf")))


def _row(trials: list[Trial], dataset: Dataset, metric: str) -> dict:
    """Counts, the validation leader (by the selection's own rule) and the mean wall time of one model's trials on
    one data set."""
    counts = {"done": 0, "interrupted": 0, "missing": 0}
    done, waiting = [], []
    for t in trials:
        s = state(t, dataset.fingerprint)
        counts[s] += 1
        if s == "done":
            done.append(t)
        else:
            waiting.append(t.name)
    best = None
    if done:
        try:
            sel = select(done, dataset, metric)
            best = (sel.scores[sel.selected.name], sel.selected.name)
        except ConfigError:  # every finished trial is flagged (not validated on the full split)
            pass
    secs = [wall_seconds(t) for t in done]
    return {**counts, "best": best, "mean_s": sum(secs) / len(secs) if secs else None, "waiting": waiting}


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def progress_markdown(suite_name: str, phases: dict[str, dict[tuple[str, str], list[Trial]]],
                      datasets: dict[str, Dataset], metric: str, machines: str = "") -> str:  # fmt: skip
    """The Markdown of ``progress.md``: one table per phase (phase name -> ``(data, model) -> trials``), then
    ``machines`` (``machines_line``) when given."""
    lines = [
        f"# Benchmark `{suite_name}`: progress",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `llmrec benchmark`. Best = highest full-"
        f"validation {metric} among the finished trials so far (no test result is read before the report). A model's "
        "seed runs are planned once its own tuning trials are all finished.",
    ]
    waiting = []
    for phase, groups in phases.items():
        lines += ["", f"## {phase}", ""]
        if not groups:
            lines.append("No model has finished its tuning yet." if phase == "seeds" else "No trial.")
            continue
        lines += [
            f"| data | model | finished | interrupted | not started | best valid {metric} (trial) | mean time per "
            "finished trial |",
            "|---|---|---:|---:|---:|---|---:|",
        ]
        total = done = 0
        for (d, m), trials in groups.items():
            r = _row(trials, datasets[d], metric)
            best = f"{r['best'][0]:.4f} ({r['best'][1]})" if r["best"] else ""
            lines.append(f"| {d} | {m} | {r['done']} | {r['interrupted']} | {r['missing']} | {best} | "
                         f"{_minutes(r['mean_s'])} |")  # fmt: skip
            total, done = total + len(trials), done + r["done"]
            if r["waiting"]:
                waiting.append(f"- {phase} {d}/{m}: {', '.join(r['waiting'])}")
        lines += ["", f"{done} of {total} trial(s) of the {phase} phase finished."]
    if waiting:
        lines += ["", "Not finished (an interrupted trial resumes from its last checkpoint):", "", *waiting]
    if machines:
        lines += ["", machines]
    return "\n".join(lines) + "\n"
