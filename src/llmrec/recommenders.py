"""``load_recommender(run_dir)``: any trained run directory (LLM or baseline) as an ``llmrec.inference.Recommender``.

Loading needs only the run directory (the run keeps its own catalog); evaluation additionally needs the prepared
data (``llmrec.runs.load_run_data``, which checks the fingerprint).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from llmrec.baselines.train import load_baseline_run
from llmrec.ensemble import load_ensemble_run
from llmrec.errors import DataError
from llmrec.inference import Recommender
from llmrec.llm.recommender import load_llm_run
from llmrec.runs import RESTORED_FILE, read_run_info

# run.json "kind" -> loader(run_dir, device) -> Recommender
LOADERS: dict[str, Callable[[Path, str], Recommender]] = {
    "llm": lambda run_dir, device: load_llm_run(run_dir, device=device),
    "baseline": lambda run_dir, device: load_baseline_run(run_dir, device=device),
    "ensemble": lambda run_dir, device: load_ensemble_run(run_dir, device, load_recommender),
}


def load_recommender(run_dir: str | os.PathLike, device: str = "cpu") -> Recommender:
    """The recommender of a run directory, in eval mode.

    Raises:
        DataError: not a run directory, or an unknown kind / format (the message names the file).
        DataError: a file the run needs is missing or malformed (the message names it).
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if (run_dir / RESTORED_FILE).is_file():
        raise DataError(
            f"{run_dir}: rebuilt from a benchmark trial record ({RESTORED_FILE}): its options, metrics and test ranks "
            "only, no model weights; run the trial again to get a model"
        )
    return LOADERS[info["kind"]](run_dir, device)
