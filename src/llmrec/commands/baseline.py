"""`llmrec baseline MODEL --data DIR --out RUN_DIR [...]`: train a sequence baseline, validate, test once."""

from __future__ import annotations

import json

HELP = "Train and evaluate a sequence baseline (pop, gru4rec, sasrec, bert4rec)."


def _model_positional(argv: list[str]) -> list[str]:
    """``baseline sasrec --data ...`` -> ``baseline --model sasrec --data ...`` (a leading positional is the model)."""
    if argv and not argv[0].startswith("-"):
        return ["--model", argv[0], *argv[1:]]
    return argv


def main(argv: list[str]) -> int:
    from llmrec.baselines_train import BaselineConfig, train_baseline
    from llmrec.config import parse_config

    cfg = parse_config(
        BaselineConfig, _model_positional(list(argv)), prog="llmrec baseline", description=__doc__.splitlines()[0]
    )
    result = train_baseline(cfg)
    print(
        json.dumps({"run": cfg.out, "best_epoch": result["best_epoch"], "test": result["test"]["metrics"]}, indent=2)
    )
    return 0
