"""Does adding a second run's scores to a run's help, and for which targets? A weight grid, selected on validation.

    python experiments/run_fusion_probe.py --run RUN --add OTHER_RUN --data PREPARED [--weights 0,0.25,0.5,1,2]
    python experiments/run_fusion_probe.py --run RUN --add OTHER_RUN --data PREPARED --split test --weights 0,W \
        --versus THIRD_RUN                                  # the selected W once on test, bootstrapped

Every item scores ``score_RUN + w * score_OTHER`` (each run's own ``score``, e.g. an LLM run with its selected text
fusion, and a ``texttower`` run). Both runs score each batch once; every ``w`` only recombines. Prints NDCG@10 /
HR@10 over all users and, on a ``--cold_items`` data set, over the cold and the warm targets. ``--versus``: a
paired bootstrap (1,000 resamples of the users) of each setting minus that run's stored test ranks
(``test_ranks.npy``), on all users and on the cold targets. Select on ``--split valid`` (all users' NDCG@10); use
``--split test`` once, for the weight selected. Nothing in the run directories changes.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from cold_fusion_probe import target_metrics  # experiments/ is the script's sys.path[0]

from llmrec.data import load_prepared
from llmrec.evaluation import evaluate, paired_bootstrap
from llmrec.recommenders import load_recommender


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--add", required=True, help="the run whose scores are added, times each weight")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="valid", choices=("valid", "test"))
    ap.add_argument("--weights", default="0,0.25,0.5,1,2")
    ap.add_argument("--versus", default="", help="with --split test: a run to bootstrap each setting against")
    ap.add_argument("--num_threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    data = load_prepared(args.data)
    a, b = load_recommender(args.run), load_recommender(args.add)
    parts = []

    def first(histories):
        parts.append((a.score(histories), b.score(histories)))
        return parts[-1][0]

    evaluate(first, data, args.split, mask_history=True)
    _, targets = data.split(args.split)
    is_cold = np.isin(np.asarray(targets), sorted(data.cold_items))
    other = np.load(f"{args.versus}/test_ranks.npy") if args.versus else None
    rows = []
    for w in [float(v) for v in args.weights.split(",")]:
        calls = iter(parts)

        def score(histories, calls=calls, w=w):
            sa, sb = next(calls)
            return sa + w * sb if w else sa

        ranks = evaluate(score, data, args.split, mask_history=True, return_ranks=True)["ranks"]
        row = {"weight": w, **target_metrics(ranks, is_cold)}
        if other is not None:
            row["vs_all"] = paired_bootstrap(other, ranks)
            if is_cold.any():
                row["vs_cold"] = paired_bootstrap(other[is_cold], ranks[is_cold])
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: r["all"][0])
    print(f"{int(is_cold.sum())} of {len(is_cold)} users have a cold target")
    print("best on", args.split, "(all users, NDCG@10):", json.dumps(best))


if __name__ == "__main__":
    main()
