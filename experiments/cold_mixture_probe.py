"""Should cold items share a fixed share of each user's probability, spread by text, instead of one additive score?

    python experiments/cold_mixture_probe.py --run RUN --data PREPARED_COLD [--prior 0.02,0.05,0.1] [--temp 5,10,20]

The shipped rule ranks every item by ``logit + w * cos(item, history)``, a cold item's logit being its nearest warm
item's (``--cold_rows knn``). Here the catalog is two groups with a two-part model:

    P(warm w) = (1 - pi) * softmax_warm(logit + w * cos)[w]
    P(cold c) = pi * softmax_cold(a * logit + t * cos)[c]

``pi`` (``--prior``) is the share of next items that are new, ``t`` (``--temp``) sharpens the text match among the
cold items and ``a`` (``--lm``) keeps some of the neighbour's logit. A cold item then ranks high only where it
stands out among the cold items, instead of wherever its text resembles the history. Items rank by ``log P``.
The model runs once; every (pi, a, t) only recombines the kept parts (``cold_fusion_probe.model_pass``). Prints
NDCG@10 / HR@10 over all users and over the cold and the warm targets. Select on ``--split valid`` only;
``--split test`` is for reporting a setting chosen beforehand, once. Nothing in the run directory changes.
"""

from __future__ import annotations

import json
import math

import torch
from cold_fusion_probe import common_args, model_pass, target_metrics  # experiments/ is the script's sys.path[0]

from llmrec.evaluation import evaluate


def mixture(base, sim, cold, w: float, prior: float, lm: float, temp: float) -> torch.Tensor:
    """``[B, N]`` log-probabilities of the two-group model (module docstring); ``cold`` [N] bool."""
    warm_lp = torch.log_softmax((base + w * sim).masked_fill(cold, -math.inf), dim=1) + math.log(1 - prior)
    cold_lp = torch.log_softmax((lm * base + temp * sim).masked_fill(~cold, -math.inf), dim=1) + math.log(prior)
    return torch.where(cold, cold_lp, warm_lp)


def fit_cold_group(parts, cold, targets, lms, temps) -> tuple[float, float, float]:
    """``(lm, temp, mean log-likelihood)`` maximising ``log softmax_cold(lm * logit + temp * cos)[target]`` over the
    users whose target is cold (``targets`` [U] item ids, -1 for a warm target; the parts in evaluator order)."""
    best = (0.0, 0.0, -math.inf)
    for lm in lms:
        for temp in temps:
            total, n, start, hits = 0.0, 0, 0, 0
            for base, sim in parts:
                t = targets[start : start + len(base)]
                start += len(base)
                keep = t >= 0
                if keep.any():
                    z = (lm * base[keep] + temp * sim[keep]).masked_fill(~cold, -math.inf)
                    lp = torch.log_softmax(z, dim=1)
                    at = lp.gather(1, t[keep].unsqueeze(1))  # [b, 1]
                    total += float(at.sum())
                    hits += int(((lp > at).sum(1) < 10).sum())  # target in the top 10 of the cold items
                    n += int(keep.sum())
            print(
                json.dumps(
                    {
                        "lm": lm,
                        "temp": temp,
                        "cold_loglik": round(total / n, 4),
                        "hr@10_among_cold": round(hits / n, 4),
                    }
                ),
                flush=True,
            )
            if total / n > best[2]:
                best = (lm, temp, total / n)
    return best


def main() -> None:
    ap = common_args(__doc__)
    ap.add_argument("--prior", default="0.02,0.05,0.1,0.2", help="share of new items (comma-separated)")
    ap.add_argument("--lm", default="0,0.5,1", help="weight of the neighbour's logit inside the cold group")
    ap.add_argument("--temp", default="5,10,20,40", help="text weight inside the cold group")
    ap.add_argument(
        "--fit",
        default="",
        help="valid: fit (lm, temp) and the prior by likelihood on this split "
        "and score it; or 'PRIOR,LM,TEMP' fitted before (then --prior/--lm/--temp are ignored)",
    )
    args = ap.parse_args()
    rec, data, parts, is_cold = model_pass(args)
    cold = ~rec.texts.trained  # [N] bool
    w = rec.fusion
    if args.fit == "valid":
        _, items = data.split(args.split)
        targets = torch.where(torch.as_tensor(is_cold), torch.as_tensor(items), torch.tensor(-1))
        lms = [float(a) for a in args.lm.split(",")]
        lm, temp, ll = fit_cold_group(parts, cold, targets, lms, [float(t) for t in args.temp.split(",")])
        prior = float(is_cold.mean())
        print(json.dumps({"fitted": {"prior": round(prior, 4), "lm": lm, "temp": temp, "cold_loglik": round(ll, 4)}}))
        args.prior, args.lm, args.temp = str(prior), str(lm), str(temp)
    elif args.fit:
        args.prior, args.lm, args.temp = args.fit.split(",")
    calls = iter(parts)
    ref = evaluate(lambda h: (lambda b, s: b + w * s)(*next(calls)), data, args.split, mask_history=True,
                   return_ranks=True)["ranks"]  # fmt: skip
    print(json.dumps({"shipped": f"logit + {w} * cos", **target_metrics(ref, is_cold)}), flush=True)
    rows = []
    for prior in [float(p) for p in args.prior.split(",")]:
        for lm in [float(a) for a in args.lm.split(",")]:
            for temp in [float(t) for t in args.temp.split(",")]:
                calls = iter(parts)

                def score(histories, calls=calls, prior=prior, lm=lm, temp=temp):
                    base, sim = next(calls)
                    return mixture(base, sim, cold, w, prior, lm, temp)

                ranks = evaluate(score, data, args.split, mask_history=True, return_ranks=True)["ranks"]
                rows.append({"prior": prior, "lm": lm, "temp": temp, **target_metrics(ranks, is_cold)})
                print(json.dumps(rows[-1]), flush=True)
    best = max(rows, key=lambda r: r["all"][0])
    print(f"{int(is_cold.sum())} of {len(is_cold)} users have a cold target; fusion weight {w}")
    print("best on", args.split, "(all users, NDCG@10):", json.dumps(best))


if __name__ == "__main__":
    main()
