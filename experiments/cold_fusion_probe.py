"""Does an untrained item's text deserve its own fusion weight? A grid over (trained weight, untrained weight).

    python experiments/cold_fusion_probe.py --run RUN --data PREPARED_COLD [--trained 2,5,10] [--untrained 0,2,5]

Loads a fused atomic LLM run trained on a ``--cold_items`` data set, runs the model once over the validation users
(``--users 0``: all of them) and keeps ``rec.score_parts`` (LM logits, text cosine). Then for every pair of weights
it scores ``logit + w_trained * cos`` for trained items and ``logit + w_untrained * cos`` for the items training
never saw (``ItemTexts.trained`` false: the cold items), and prints NDCG@10 / HR@10 over all users and over the
cold and warm targets. Nothing in the run directory changes. Selection is on validation only; ``--split test`` is
for reporting a setting chosen beforehand.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from llmrec.data import load_prepared
from llmrec.evaluation import evaluate, metrics_from_ranks
from llmrec.llm.recommender import load_llm_run


def common_args(doc: str) -> argparse.ArgumentParser:
    """The arguments every cold-item probe takes (``--run --data --split --users --num_threads``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="valid", choices=("valid", "test"))
    ap.add_argument("--users", type=int, default=0, help="user subsample (0: all)")
    ap.add_argument("--num_threads", type=int, default=1)
    return ap


def model_pass(args):
    """``(rec, data, parts, is_cold)``: the model run once over the split's users, each batch's ``score_parts``
    (LM logits [B, N], text cosine [B, N]) kept in evaluator order; ``is_cold`` [U] bool marks the cold targets."""
    torch.set_num_threads(args.num_threads)
    rec, data = load_llm_run(args.run), load_prepared(args.data)
    if rec.texts is None:
        raise SystemExit(f"{args.run}: no item texts (item_text.safetensors): not a text-fused atomic run")
    if args.users:
        data = data.subsample(args.users, 0)
    parts: list[tuple] = []

    def first(histories):
        base, sim = rec.score_parts(histories, similarity=True)
        parts.append((base, sim))
        return base

    evaluate(first, data, args.split, mask_history=True)
    _, target_items = data.split(args.split)  # the evaluator's users, in its order
    return rec, data, parts, np.isin(np.asarray(target_items), sorted(data.cold_items))


def target_metrics(ranks, is_cold) -> dict:
    """``{"all" | "cold" | "warm": (NDCG@10, HR@10)}`` of the evaluator's ``ranks`` [U]."""
    out = {}
    for name, keep in (("all", slice(None)), ("cold", is_cold), ("warm", ~is_cold)):
        m = metrics_from_ranks(ranks[keep], ks=(10,))
        out[name] = (round(m["ndcg@10"], 4), round(m["hr@10"], 4))
    return out


def main() -> None:
    ap = common_args(__doc__)
    ap.add_argument("--trained", default="2,5,10", help="weights for trained items (comma-separated)")
    ap.add_argument("--untrained", default="0,2,5,7,10,12,15,20", help="weights for untrained items")
    args = ap.parse_args()
    rec, data, parts, is_cold = model_pass(args)
    untrained = ~rec.texts.trained  # [N] bool
    grid = [(float(wt), float(wu)) for wt in args.trained.split(",") for wu in args.untrained.split(",")]
    rows = []
    for wt, wu in grid:
        weight = torch.where(untrained, torch.tensor(wu), torch.tensor(wt))  # [N]
        calls = iter(parts)

        def score(histories, calls=calls, weight=weight):
            base, sim = next(calls)
            return base + weight * sim

        ranks = evaluate(score, data, args.split, mask_history=True, return_ranks=True)["ranks"]
        rows.append({"trained": wt, "untrained": wu, **target_metrics(ranks, is_cold)})
        print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["all"][0])
    print(f"{int(is_cold.sum())} of {len(is_cold)} users have a cold target")
    print("best on", args.split, "(all users, NDCG@10):", json.dumps(best))


if __name__ == "__main__":
    main()
