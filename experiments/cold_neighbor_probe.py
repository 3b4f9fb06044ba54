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

import torch
from cold_fusion_probe import common_args, model_pass, target_metrics  # experiments/ is the script's sys.path[0]

from llmrec.evaluation import evaluate
from llmrec.items.neighbors import nearest_items


def neighbor_scores(base: torch.Tensor, top: torch.Tensor, gaps: torch.Tensor, gap: float) -> torch.Tensor:
    """``[B, C]``: ``max_j (base[:, top[:, j]] - gap * gaps[:, j])`` for the cold items' neighbours ``top`` [C, k]."""
    cols = base[:, top.reshape(-1)].reshape(base.shape[0], *top.shape)  # [B, C, k]
    return (cols - gap * gaps.unsqueeze(0)).amax(dim=2)


def main() -> None:
    ap = common_args(__doc__)
    ap.add_argument("--k", default="1,2,3,5,10", help="neighbours per cold item (comma-separated)")
    ap.add_argument("--gap", default="0,2,5,10,20", help="penalty per unit of cosine below the nearest neighbour")
    ap.add_argument("--weights", default="", help="fusion weights (default: the run's selected weight)")
    args = ap.parse_args()
    rec, data, parts, is_cold = model_pass(args)
    vec, trained = rec.texts.vectors, rec.texts.trained
    cold = torch.nonzero(~trained).flatten()  # [C] the items training never saw (the data set's cold items)
    ks = [int(k) for k in args.k.split(",")]
    top = nearest_items(vec, trained, vec[cold], max(ks))  # [C, K] best first, -1: no neighbour
    keep = top[:, 0] >= 0
    cold, top = cold[keep], top[keep]  # cold items without text keep their rows' score
    sims = (vec[cold].unsqueeze(1) * vec[top]).sum(2)  # [C, K]
    gaps = sims[:, :1] - sims  # [C, K] >= 0
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [rec.fusion]
    rows = []
    for w in weights:
        for k in ks:
            for gap in [float(g) for g in args.gap.split(",")] if k > 1 else [0.0]:
                calls = iter(parts)

                def score(histories, calls=calls, w=w, k=k, gap=gap):
                    base, sim = next(calls)
                    out = base.clone()
                    out[:, cold] = neighbor_scores(base, top[:, :k], gaps[:, :k], gap)
                    return out + w * sim

                ranks = evaluate(score, data, args.split, mask_history=True, return_ranks=True)["ranks"]
                rows.append({"weight": w, "k": k, "gap": gap, **target_metrics(ranks, is_cold)})
                print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: (r["all"][0], -r["k"]))
    print(f"{int(is_cold.sum())} of {len(is_cold)} users have a cold target")
    print("best on", args.split, "(all users, NDCG@10):", json.dumps(best))


if __name__ == "__main__":
    main()
