"""Text fusion on a finished atomic run that was trained without it: the weight selected on validation, then the test.

    python experiments/fusion_probe.py --run RUN [--data PREPARED] [--select_users 5000] [--knn_cold_rows]

``llmrec train --text_fusion -1`` does this inside training; this probe measures it on runs trained before the
option existed. It embeds the catalog with the run's ``--item_text_encoder`` (cached), selects the weight from
``llmrec.llm.fusion.FUSION_GRID`` on a seeded ``--select_users`` subsample of the validation users (never the
test split), then evaluates the test split once without fusion and once with the selected weight. Nothing in
the run directory changes.
"""

from __future__ import annotations

import argparse
import json

import torch

from llmrec.config import load_yaml
from llmrec.data import load_prepared
from llmrec.evaluation import evaluate
from llmrec.items.text import item_text_embeddings
from llmrec.llm.build import encoder_spec
from llmrec.llm.coldrows import knn_cold_rows, run_item_texts
from llmrec.llm.fusion import select_fusion
from llmrec.llm.recommender import load_llm_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", default=None, help="the prepared data (default: the run's config.yaml `data`)")
    ap.add_argument("--select_users", type=int, default=5000)
    ap.add_argument("--knn_cold_rows", action="store_true")
    ap.add_argument("--num_threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    cfg = load_yaml(f"{args.run}/config.yaml")
    data = load_prepared(args.data or cfg["data"])
    spec = encoder_spec(cfg.get("item_text_encoder", "minilm"), cfg["model"], cfg.get("trust_remote_code", False))
    text = item_text_embeddings(data.catalog.titles, data.catalog.texts, data.fingerprint, spec)
    rec = load_llm_run(args.run)
    rec.texts = run_item_texts(text, data.cold_items)
    if args.knn_cold_rows:
        knn_cold_rows(rec.item_lm, rec.texts, data.cold_items, 1)
    weight, _, table = select_fusion(rec, data.subsample(args.select_users, 0))
    out = {
        "run": args.run,
        "knn_cold_rows": args.knn_cold_rows,
        "select_users": args.select_users,
        "valid": table,
        "selected": weight,
        "test": {},
    }
    for w in sorted({0.0, weight}):
        rec.fusion = w
        for targets in ("all", "warm", "cold") if data.cold_items else ("all",):
            m = evaluate(rec.score, data, "test", targets=targets)["metrics"]
            out["test"][f"{w}/{targets}"] = {k: m[k] for k in ("ndcg@10", "hr@10", "mrr")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
