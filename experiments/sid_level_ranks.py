"""Where a semantic-ID model loses: per level, the teacher-forced rank of the true next code on validation users.

    python experiments/sid_level_ranks.py --run RUN --data PREPARED [--users 500] [--atomic ATOMIC_RUN]

For the semantic run RUN: each sampled validation user's prompt is followed by the target's code path and run once;
at level ``l`` the true code is ranked among *all* codes of the level (not only the trie children, so deeper levels
look harder than they are under the constrained beam). With ``--atomic``: the same ranks implied by an atomic run's
item distribution under RUN's codes (per level, the item probabilities summed per code among the items that share
the target's prefix), a reference for what a model as good as the atomic one would give. Users sampled with seed 0.
"""

from __future__ import annotations

import argparse
import random

import numpy as np
import torch

from llmrec.batching import pad_sequences
from llmrec.data import load_prepared
from llmrec.llm.recommender import load_llm_run


def semantic_ranks(rec, hist, targ, idx) -> list[list[int]]:
    codes, vocab = rec.sids.codes, rec.item_lm.vocab
    levels = vocab.num_levels
    ranks: list[list[int]] = [[] for _ in range(levels)]
    w = rec.item_lm.item_weights()
    for s in range(0, len(idx), 32):
        batch = idx[s : s + 32]
        prompts = [rec._prompt(hist[i]) + vocab.path_ids(codes[targ[i]].tolist()) for i in batch]
        ids, mask = pad_sequences(prompts, rec.pad_id)
        with torch.no_grad():
            h = rec.item_lm.hidden_states(ids, mask)
        for r, i in enumerate(batch):
            end = int(mask[r].sum())
            for lvl in range(levels):
                st, en = vocab.level_range(lvl)
                logits = h[r, end - levels - 1 + lvl] @ w[st - vocab.first_id : en - vocab.first_id].T
                ranks[lvl].append(int((logits > logits[codes[targ[i], lvl]]).sum()))
    return ranks


def implied_ranks(atomic, codes, hist, targ, idx) -> list[list[int]]:
    logp = atomic.score([hist[i] for i in idx]).log_softmax(-1)  # [n, N]
    ranks: list[list[int]] = [[] for _ in range(codes.shape[1])]
    for r, i in enumerate(idx):
        t, sel = targ[i], np.ones(len(codes), bool)
        for lvl in range(codes.shape[1]):
            members = np.flatnonzero(sel)
            cand, lp = torch.from_numpy(codes[members, lvl]).long(), logp[r][torch.from_numpy(members)]
            agg = torch.full((int(cand.max()) + 1,), float("-inf")).scatter_reduce(
                0, cand, lp.exp(), "sum", include_self=False
            )
            ranks[lvl].append(int((agg > agg[codes[t, lvl]]).sum()))
            sel &= codes[:, lvl] == codes[t, lvl]
    return ranks


def show(name: str, ranks: list[list[int]]) -> None:
    for lvl, r in enumerate(ranks):
        r = np.array(r)
        print(
            f"{name} level {lvl}: top1 {np.mean(r == 0):.3f} top10 {np.mean(r < 10):.3f} median rank {np.median(r):.0f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--atomic", default=None)
    ap.add_argument("--num_threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    rec, data = load_llm_run(args.run), load_prepared(args.data)
    hist, targ = data.split("valid")
    idx = random.Random(0).sample(range(len(hist)), args.users)
    show("semantic", semantic_ranks(rec, hist, targ, idx))
    if args.atomic:
        show("atomic-implied", implied_ranks(load_llm_run(args.atomic), rec.sids.codes, hist, targ, idx))


if __name__ == "__main__":
    main()
