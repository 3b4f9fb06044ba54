"""`llmrec ensemble --runs A B --weights 1 -1 --output_dir DIR`: one run whose scores are a weighted sum of runs'.

    llmrec ensemble --runs runs/llm runs/tower --weights 1 -1 --output_dir runs/llm_tower   # tower weight on valid
    llmrec ensemble --runs runs/llm runs/tower --weights 1 0.5 --member_options "cold_neighbors=5,cold_gap=10" "" \\
        --output_dir runs/llm_tower

The members are finished runs on the same prepared data. A weight of -1 is selected on the full validation split
(``llmrec.ensemble``); the ensemble is then tested once. The result is a run directory like any other: ``evaluate``,
``compare``, ``recommend`` and ``serve`` take it (its members must stay where they are relative to it).
"""

from __future__ import annotations

import json

from llmrec.config import parse_config
from llmrec.ensemble import EnsembleConfig

HELP = "Sum other runs' scores (weights selected on validation) as one run."


def main(argv: list[str]) -> int:
    cfg = parse_config(EnsembleConfig, argv, prog="llmrec ensemble", description=HELP)
    from llmrec.ensemble_run import create_ensemble_run
    from llmrec.recommenders import load_recommender

    metrics = create_ensemble_run(cfg, load_recommender)
    summary = {
        "run": cfg.output_dir,
        "weights": metrics["train"]["weights"],
        "selection": metrics["valid"]["selection"],
        "valid": {k: metrics["valid"]["metrics"][k] for k in ("ndcg@10", "hr@10")},
        "test": {k: metrics["test"]["metrics"][k] for k in ("ndcg@10", "hr@10")} if metrics["test"] else None,
    }
    print(json.dumps(summary, indent=2))
    return 0
