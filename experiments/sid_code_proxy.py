"""How predictable are semantic-ID codes from behaviour? A training-free proxy for comparing code embeddings.

    python experiments/sid_code_proxy.py --data PREPARED text:1 text+cf:1 text+cf:2 cf:1

For each coding ``kind:weight`` (``text``: MiniLM text embeddings; ``text+cf``: side by side with the 512
co-occurrence factors, the factors weighted by ``weight``, as ``--sid_embeddings text+cf --sid_cf_weight``; ``cf``:
the factor block alone) RQ-KMeans (3 x 256, seed 0, one k-means start) codes the catalog; a count model over the
training transitions (previous item -> next item) then predicts, level by level, the next item's code from
(the previous item's path up to that level, the next item's true prefix), backing off to the prefix alone. Printed:
per level, the share of validation targets whose true code is among the model's 10 most frequent. A higher share
means codes that a sequence model can learn to predict more easily; it is not a recommendation metric.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from llmrec.data import load_prepared
from llmrec.items.semantic import rq_kmeans
from llmrec.llm.build import sid_embeddings
from llmrec.llm.config import TrainConfig


def level_hits(codes: np.ndarray, seqs, hist, targ) -> np.ndarray:
    levels = codes.shape[1]
    cnt = [collections.defaultdict(collections.Counter) for _ in range(levels)]
    back = [collections.defaultdict(collections.Counter) for _ in range(levels)]
    for s in seqs:
        for a, b in zip(s[:-1], s[1:]):
            pa, pb = tuple(codes[a]), tuple(codes[b])
            for lvl in range(levels):
                cnt[lvl][(pa[: lvl + 1], pb[:lvl])][pb[lvl]] += 1
                back[lvl][pb[:lvl]][pb[lvl]] += 1
    hits = np.zeros(levels)
    for h, t in zip(hist, targ):
        if not h:
            continue
        pa, pb = tuple(codes[h[-1]]), tuple(codes[t])
        for lvl in range(levels):
            c = cnt[lvl].get((pa[: lvl + 1], pb[:lvl])) or back[lvl].get(pb[:lvl]) or collections.Counter()
            hits[lvl] += pb[lvl] in [k for k, _ in c.most_common(10)]
    return hits / len(targ)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("codings", nargs="+")
    args = ap.parse_args()
    data = load_prepared(args.data)
    hist, targ = data.split("valid")
    for spec in args.codings:
        kind, weight = spec.split(":")
        cfg = TrainConfig(data=args.data, output_dir="unused", item_ids="semantic",
                          sid_embeddings="text" if kind == "text" else "text+cf", sid_cf_weight=float(weight))  # fmt: skip
        emb, _ = sid_embeddings(cfg, data)
        if kind == "cf":
            emb = emb[:, -cfg.item_cf_dim :]
        codes = rq_kmeans(emb, 3, 256, seed=0, n_init=1).codes
        print(spec, "top-10 share per level:", np.round(level_hits(codes, data.train_sequences(), hist, targ), 3))


if __name__ == "__main__":
    main()
