"""`llmrec evaluate --run DIR --split test`: score a run directory with the shared full-ranking evaluator.

The model comes from the run directory alone (``llmrec.recommenders.load_recommender``); the users, histories and
targets from the prepared data it was trained on, found at the recorded path (or ``--data``) and checked against
the run's data fingerprint. ``--targets warm|cold`` restricts a cold-start data set's evaluation to the users whose
target is a warm / cold item and writes ``eval_SPLIT_TARGETS.json`` (``eval_SPLIT.json`` for all users).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.config import ConfigError, parse_config

HELP = "Evaluate a run directory with the shared full-ranking evaluator."
TARGET_SETS = ("all", "warm", "cold")  # llmrec.evaluation.TARGET_SETS (not imported: it needs torch)


@dataclass
class EvaluateConfig:
    """Options of ``llmrec evaluate``."""

    run: str = field(default="", metadata={"help": "Run directory (holds run.json)."})
    data: str = field(
        default="", metadata={"help": "Prepared data (default: where the run recorded it); checked by fingerprint."}
    )
    split: str = field(default="test", metadata={"help": "'valid' or 'test'."})
    targets: str = field(
        default="all",
        metadata={
            "help": "Users evaluated: 'all', or those whose target is a 'warm' or a 'cold' item (a data set prepared "
            "with --cold_items)."
        },
    )
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"help": "Cut-offs K for @K metrics."})
    mask_history: bool = field(default=True, metadata={"help": "Remove history items from the ranked candidates."})
    batch_size: int = field(default=1024, metadata={"help": "Users per scoring batch."})
    max_users: int | None = field(default=None, metadata={"help": "Evaluate only the first N users (quick check)."})
    beam_width: int = field(
        default=0,
        metadata={
            "help": "Semantic-ID runs: beams per history (0: the run's own beam_width); items outside the beams "
            "rank below every beam item."
        },
    )
    cold_neighbors: int = field(
        default=0,
        metadata={
            "help": "Atomic LLM runs: untrained items score as the best of this many nearest trained items "
            "(0: the run's own --cold_neighbors; see llmrec train --help)."
        },
    )
    cold_gap: float = field(default=-1.0, metadata={"help": "With --cold_neighbors: the gap (-1: the run's own)."})
    device: str = field(default="cpu", metadata={"help": "Device to score on."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})
    output_dir: str = field(
        default="", metadata={"help": "Where eval_SPLIT.json goes (default: the run directory).", "aliases": ["--out"]}
    )

    def __post_init__(self):
        if not self.run:
            raise ConfigError("run: a run directory is required (--run DIR)")
        if not (Path(self.run) / "run.json").is_file():
            raise ConfigError(f"run: {self.run} has no run.json (not a run directory)")
        if self.data and not Path(self.data).is_dir():
            raise ConfigError(f"data: {self.data} is not a directory (a prepared data set from `llmrec prepare`)")
        if self.split not in ("valid", "test"):
            raise ConfigError(f"split: must be 'valid' or 'test', got {self.split!r}")
        if self.targets not in TARGET_SETS:
            raise ConfigError(f"targets: must be one of {TARGET_SETS}, got {self.targets!r}")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"ks: need one or more cut-offs >= 1, got {self.ks}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.max_users is not None and self.max_users < 1:
            raise ConfigError(f"max_users: must be >= 1, got {self.max_users}")
        if self.num_threads < 0:
            raise ConfigError(f"num_threads: must be >= 0, got {self.num_threads}")
        if self.cold_neighbors < 0 or (self.cold_gap < 0 and self.cold_gap != -1):
            raise ConfigError(f"cold_neighbors, cold_gap: need >= 0 and >= 0 (or -1), got {self.cold_neighbors}, "
                              f"{self.cold_gap}")  # fmt: skip
        if self.beam_width < 0 or 0 < self.beam_width < max(self.ks):
            raise ConfigError(
                f"beam_width: must be 0 (the run's) or >= the largest K {max(self.ks)}, got {self.beam_width}"
            )


def main(argv: list[str]) -> int:
    cfg = parse_config(EvaluateConfig, argv, prog="llmrec evaluate", description=HELP)
    import torch

    from llmrec.evaluation import evaluate
    from llmrec.files import atomic_write_json
    from llmrec.recommenders import load_recommender
    from llmrec.runs import load_run_data

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    data = load_run_data(cfg.run, cfg.data or None)  # before the model loads: a data mismatch fails fast
    if cfg.targets == "cold" and not data.cold_items:
        raise ConfigError("targets: 'cold' needs a data set prepared with --cold_items; this one has no cold items")
    rec = load_recommender(cfg.run, device=cfg.device)
    if cfg.beam_width:
        if not hasattr(rec, "beam_width"):
            raise ConfigError(f"beam_width: {cfg.run} is not a semantic-ID run (it scores every item, without beams)")
        rec.beam_width = cfg.beam_width
    if cfg.cold_neighbors or cfg.cold_gap >= 0:
        if not hasattr(rec, "cold_neighbors") or hasattr(rec, "beam_width"):
            raise ConfigError(f"cold_neighbors: {cfg.run} is not an atomic LLM run")
        rec.cold_neighbors = cfg.cold_neighbors or rec.cold_neighbors
        rec.cold_gap = cfg.cold_gap if cfg.cold_gap >= 0 else rec.cold_gap
    with torch.inference_mode():
        result = evaluate(rec.score, data, cfg.split, ks=cfg.ks, mask_history=cfg.mask_history,
                          batch_size=cfg.batch_size, max_users=cfg.max_users, progress=True,
                          targets=cfg.targets, protocol_note=getattr(rec, "protocol_note", ""))  # fmt: skip
    result["run"] = str(cfg.run)
    name = f"eval_{cfg.split}.json" if cfg.targets == "all" else f"eval_{cfg.split}_{cfg.targets}.json"
    atomic_write_json(Path(cfg.output_dir or cfg.run) / name, result)
    print(json.dumps(result, indent=2))
    return 0
