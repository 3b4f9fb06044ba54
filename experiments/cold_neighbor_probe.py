"""Should a cold item take the best score of several text neighbours rather than its nearest one's row?

    python experiments/cold_neighbor_probe.py --run RUN --data PREPARED_COLD [--k 1,2,3,5,10] [--gap 0,2,5,10]

``--cold_rows knn`` (k = 1) gives each cold item its nearest warm item's rows, so its LM score is that neighbour's
logit. Here a cold item ``c`` with warm text neighbours ``n_1 .. n_k`` (cosines ``s_1 >= .. >= s_k``) scores

    max_j ( logit[n_j] - gap * (s_1 - s_j) ) + w * cos(c, history)

(``k = 1`` or a large ``gap``: the shipped rule; averaging the rows instead, measured before, averages the logits,
which is worse: docs/results.md, "Cold-start items"). Warm items keep ``logit + w * cos``; ``w`` is the run's
selected fusion weight unless ``--weights`` is given. The model runs once over the split's users (``--users 0``:
all of them), every (k, gap, w) only recombines the kept parts; prints NDCG@10 / HR@10 over all users and over the
cold and the warm targets. Nothing in the run directory changes. Select on ``--split valid``; ``--split test`` is
for reporting a setting chosen beforehand, once.
"""

from __future__ import annotations

import json

from cold_fusion_probe import common_args, model_pass, target_metrics  # experiments/ is the script's sys.path[0]

from llmrec.evaluation import evaluate
from llmrec.items.neighbors import ColdNeighbors


def main() -> None:
    ap = common_args(__doc__)
    ap.add_argument("--k", default="1,2,3,5,10", help="neighbours per cold item (comma-separated)")
    ap.add_argument("--gap", default="0,2,5,10,20", help="penalty per unit of cosine below the nearest neighbour")
    ap.add_argument("--weights", default="", help="fusion weights (default: the run's selected weight)")
    args = ap.parse_args()
    rec, data, parts, is_cold = model_pass(args)
    ks = [int(k) for k in args.k.split(",")]
    tables = {k: ColdNeighbors.of(rec.texts, k) for k in ks}  # the run's untrained items: the data set's cold ones
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [rec.fusion]
    rows = []
    for w in weights:
        for k in ks:
            for gap in [float(g) for g in args.gap.split(",")] if k > 1 else [0.0]:
                calls = iter(parts)

                def score(histories, calls=calls, w=w, k=k, gap=gap):
                    base, sim = next(calls)
                    return tables[k].apply(base, gap) + w * sim

                ranks = evaluate(score, data, args.split, mask_history=True, return_ranks=True)["ranks"]
                rows.append({"weight": w, "k": k, "gap": gap, **target_metrics(ranks, is_cold)})
                print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: (r["all"][0], -r["k"]))
    print(f"{int(is_cold.sum())} of {len(is_cold)} users have a cold target")
    print("best on", args.split, "(all users, NDCG@10):", json.dumps(best))


if __name__ == "__main__":
    main()
