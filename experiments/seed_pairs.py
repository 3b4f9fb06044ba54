"""Interim look at two FIXED recipes of a benchmark from its committed records, before the report exists.

For two models whose configuration is not searched (an untuned model: one trial ``t000``), reads the test ranks of
``t000``, ``t000-seed1``, ... from the trial records, prints each model's test NDCG@10 / HR@10 mean ± std over seeds
and the paired bootstrap of B - A pooled over seeds (the report's rule, ``llmrec.benchmark.report``). No model is
chosen here, so no test result takes part in a selection. A tuned model's seeds are those of its selected trial: use
the report (``llmrec benchmark --collect``) for those, not this script.

    python experiments/seed_pairs.py docs/benchmarks/beauty/records/beauty sasrec-cf llm --seeds 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from llmrec.evaluation import metrics_from_ranks, paired_bootstrap


def seed_ranks(records: Path, model: str, seeds: int) -> list[np.ndarray]:
    names = ["t000"] + [f"t000-seed{s}" for s in range(1, seeds)]
    files = [records / model / f"{n}.ranks.npz" for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"missing records: {', '.join(missing)}")
    return [np.load(f)["ranks"].astype(np.int64) for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", type=Path, help="REC/<data> (the records of one data set)")
    ap.add_argument("a", help="model A (the baseline)")
    ap.add_argument("b", help="model B (the LLM); the difference is B - A")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args()
    ranks = {m: seed_ranks(args.records, m, args.seeds) for m in (args.a, args.b)}
    for m, rs in ranks.items():
        per = [metrics_from_ranks(r, ks=(10,)) for r in rs]
        for key in ("ndcg@10", "hr@10"):
            v = np.array([p[key] for p in per])
            print(f"{m}: test {key} {v.mean():.4f} ± {v.std(ddof=1):.4f} (seeds: {', '.join(f'{x:.4f}' for x in v)})")
    a, b = np.concatenate(ranks[args.a]), np.concatenate(ranks[args.b])
    boot = paired_bootstrap(a, b, k=10, num_samples=args.samples, seed=0)
    for key, r in boot.items():
        print(f"{args.b} - {args.a} {key}: {r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] "
              f"(pooled over {args.seeds} seeds x {len(ranks[args.a][0]):,} users; P(B not better) "
              f"{r['p_b_not_better']:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
