"""Where an atomic run's cold items land: row norms and the ranks of cold test targets.

    python experiments/cold_rank_probe.py --run RUN --data PREPARED_COLD [--users 300]

Prints the mean norm of the warm and of the cold input rows, then, for the first ``--users`` test users whose
target is cold (history items masked as the evaluator does): the target's rank among all items (median, 10th
percentile, share in the top 100 / 1000) and its rank among the cold items only (median, share in the top 10; a
random order would put 10 / number-of-cold-items there).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from llmrec.data import load_prepared
from llmrec.llm.coldrows import row_sets
from llmrec.llm.recommender import load_llm_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--num_threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    rec, data = load_llm_run(args.run), load_prepared(args.data)
    rows = row_sets(rec.item_lm)["input"].detach()
    cold = sorted(data.cold_items)
    warm = sorted(set(range(data.num_items)) - set(cold))
    print(f"row norm: warm {rows[warm].norm(dim=1).mean():.2f}, cold {rows[cold].norm(dim=1).mean():.2f}")
    hist, targ = data.split("test")
    idx = [i for i, t in enumerate(targ) if t in data.cold_items][: args.users]
    scores = rec.score([hist[i] for i in idx])
    for r, i in enumerate(idx):
        scores[r, [h for h in hist[i] if h != targ[i]]] = float("-inf")
    ranks = np.array([int((scores[r] > scores[r, targ[i]]).sum()) for r, i in enumerate(idx)])
    among = np.array([int((scores[r, cold] > scores[r, targ[i]]).sum()) for r, i in enumerate(idx)])
    print(f"{len(idx)} cold targets: rank median {np.median(ranks):.0f}, p10 {np.percentile(ranks, 10):.0f}, "
          f"top 100 {(ranks < 100).mean():.3f}, top 1000 {(ranks < 1000).mean():.3f}")  # fmt: skip
    print(f"among the {len(cold)} cold items: median {np.median(among):.0f}, top 10 {(among < 10).mean():.3f} "
          f"(random: {10 / len(cold):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
