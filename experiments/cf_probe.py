"""How much the co-occurrence factors of ``--item_cf_dim`` know on their own, before any training.

    python experiments/cf_probe.py prepared/beauty-llm --dim 512 --window 3 --last 3 --split valid

Scores every item by ``factors @ mean(factors of the last `--last` history items)`` and runs the shared evaluator
(full ranking, history masked, every user of the split). The factors come from the training sequences only.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="prepared data directory (llmrec prepare)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--last", type=int, default=3, help="history items averaged into the query")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from llmrec.data.dataset import load_prepared
    from llmrec.evaluation import evaluate
    from llmrec.items.cooccurrence import cooccurrence_factors

    data = load_prepared(args.data)
    start = time.time()
    factors = cooccurrence_factors(data.train_sequences(), data.num_items, args.dim, args.window, args.seed)
    print(f"factors {tuple(factors.shape)} in {time.time() - start:.1f} s")

    def score(histories):
        query = torch.stack([factors[torch.as_tensor(list(h)[-args.last :])].mean(0) for h in histories])
        return query @ factors.T

    m = evaluate(score, data, args.split, mask_history=True, batch_size=1024)["metrics"]
    print(" ".join(f"{k} {m[k]:.4f}" for k in ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr")))


if __name__ == "__main__":
    main()
