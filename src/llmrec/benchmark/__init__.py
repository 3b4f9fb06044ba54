"""``llmrec benchmark``: equal-budget tuning on the full validation split, seeds, one report (issue #20).

suite.py (the YAML suite), search.py (grid / random trials), trials.py (one command and run directory per trial),
datasets.py, select.py (validation-only selection), execute.py (in-process or ``--jobs N`` subprocesses),
report.py + render.py (JSON, Markdown, PNG), provenance.py (machine, date, commit), runner.py (the phases),
blocks.py (README / docs tables rendered from a committed report: ``llmrec benchmark --render``).
"""

from llmrec.benchmark.runner import Outcome, run_benchmark
from llmrec.benchmark.suite import Suite, load_suite

__all__ = ["Outcome", "Suite", "load_suite", "run_benchmark"]
