"""`llmrec baseline MODEL --data DIR --output_dir RUN_DIR [...]`: train a sequence baseline, validate, test once."""

from __future__ import annotations

import json

from llmrec.baselines.config import BaselineConfig
from llmrec.config import parse_config

HELP = "Train and evaluate a sequence baseline (pop, gru4rec, sasrec, bert4rec)."


def model_positional(argv: list[str]) -> list[str]:
    """``baseline sasrec --data ...`` -> ``baseline --model sasrec --data ...`` (a leading positional is the model)."""
    if argv and not argv[0].startswith("-"):
        return ["--model", argv[0], *argv[1:]]
    return argv


def main(argv: list[str]) -> int:
    cfg = parse_config(BaselineConfig, model_positional(list(argv)), prog="llmrec baseline", description=HELP)
    from llmrec.baselines.train import train_baseline

    result = train_baseline(cfg)
    summary = {"run": cfg.output_dir, "best_epoch": result["train"]["best_epoch"], "test": result["test"]["metrics"]}
    print(json.dumps(summary, indent=2))
    return 0
