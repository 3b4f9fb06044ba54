"""Where runs win and lose: NDCG@10 by history length and by target popularity, and a popularity-prior probe.

    python experiments/error_analysis.py runs/sasrec_beauty runs/exp/LS2D5-L4 --split valid \
        --pop_prior 0.1,0.3,0.5
    python experiments/error_analysis.py RUN_A RUN_B --split test --targets cold --bootstrap 1000

Same protocol as ``llmrec evaluate`` (full ranking, history masked, pessimistic ties; every user of the split).
Each run is scored once. Prints Markdown tables:

- users bucketed by the length of their input history, and by the training popularity of their target (the number
  of occurrences in the training sequences), with each run's mean NDCG@10 per bucket;
- with ``--pop_prior``: NDCG@10 / HR@10 / avg_pop@10 when ``lam * log(1 + training count)`` is added to the scores,
  a probe of whether a run under-weights popular items (not a model: choose ``lam`` on validation only);
- with ``--bootstrap N``: each later run minus the first one, NDCG@10 and HR@10, with a 95% paired-bootstrap
  interval over users (N resamples) and the share of resamples where the later run is not better.

All runs must use the same prepared data set (same users and items).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

LENGTH_EDGES = (1, 3, 5, 7, 10, 15, 21, None)
POPULARITY_EDGES = (0, 3, 6, 10, 20, 50, 100, None)


def bucket_rows(key: np.ndarray, edges, ranks: dict[str, np.ndarray]) -> list[str]:
    """Markdown rows ``| [lo, hi) | users | ndcg@10 per run |`` for the non-empty buckets of ``key``."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (key >= lo) & (key < (hi if hi is not None else np.inf))
        if not sel.any():
            continue
        label = f"{lo}–{hi - 1}" if hi is not None else f"≥ {lo}"
        cells = " | ".join(f"{ndcg10(r[sel]):.4f}" for r in ranks.values())
        rows.append(f"| {label} | {int(sel.sum())} | {cells} |")
    return rows


def ndcg10(ranks: np.ndarray) -> float:
    """Mean NDCG@10 of 0-based ranks (the evaluator's ``metrics_from_ranks``)."""
    from llmrec.evaluation import metrics_from_ranks

    return metrics_from_ranks(ranks, ks=(10,))["ndcg@10"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (llmrec train / llmrec baseline)")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--pop_prior", default="", help="comma-separated lam values for the popularity-prior probe")
    ap.add_argument("--bootstrap", type=int, default=0, help="paired-bootstrap resamples vs the first run (0: off)")
    ap.add_argument(
        "--targets",
        default="all",
        choices=["all", "warm", "cold"],
        help="users whose target is warm / cold (a data set prepared with --cold_items)",
    )
    ap.add_argument("--batch_size", type=int, default=512)
    ap.add_argument("--num_threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    from tqdm.auto import tqdm

    from llmrec.evaluation import metrics_from_ranks, paired_bootstrap, pessimistic_ranks
    from llmrec.inference import mask_items
    from llmrec.recommenders import load_recommender
    from llmrec.runs import load_run_data

    lams = [0.0] + [float(x) for x in args.pop_prior.split(",") if x.strip()]
    ranks: dict[str, np.ndarray] = {}
    probe: dict[str, dict[float, dict[str, float]]] = {}
    data = None
    for path in args.runs:
        run = load_recommender(path)
        run_data = load_run_data(path)
        if data is None:
            data = run_data
            histories, targets = data.split(args.split)
            if args.targets != "all":
                keep = [i for i, t in enumerate(targets) if (t in data.cold_items) == (args.targets == "cold")]
                histories, targets = [histories[i] for i in keep], [targets[i] for i in keep]
            counts = data.item_popularity()  # training counts, as the evaluator's avg_pop@K
            prior = torch.as_tensor(np.log1p(counts), dtype=torch.float32)
        elif run_data.fingerprint != data.fingerprint:
            raise SystemExit(f"{path}: its data set differs from {args.runs[0]}'s (fingerprint)")
        per_lam: dict[float, list[torch.Tensor]] = {lam: [] for lam in lams}
        top_pop: dict[float, list[float]] = {lam: [] for lam in lams}
        for lo in tqdm(range(0, len(histories), args.batch_size), desc=run.name, unit="batch"):
            hist = [list(h) for h in histories[lo : lo + args.batch_size]]
            tgt = torch.as_tensor(targets[lo : lo + args.batch_size], dtype=torch.int64)
            base = run.score(hist).detach().float().cpu()
            for lam in lams:
                scores = base + lam * prior if lam else base.clone()
                mask_items(scores, hist, keep=tgt)
                per_lam[lam].append(pessimistic_ranks(scores, tgt))
                top_pop[lam] += counts[scores.topk(10, dim=1).indices.numpy()].mean(1).tolist()
        name = Path(path).name  # run names repeat (every LLM run is "llm"); directory names tell them apart
        ranks[name] = torch.cat(per_lam[0.0]).numpy()
        probe[name] = {}
        for lam in lams:
            r = torch.cat(per_lam[lam]).numpy()
            m = metrics_from_ranks(r, ks=(10,))
            probe[name][lam] = {
                "ndcg@10": m["ndcg@10"],
                "hr@10": m["hr@10"],
                "train_count@10": float(np.mean(top_pop[lam])),
            }

    names = list(ranks)
    lengths = np.array([len(h) for h in histories])
    popularity = counts[np.array(targets)]
    header = "| {} | users | " + " | ".join(names) + " |\n|---|---|" + "---|" * len(names)
    print(f"\nNDCG@10 by input history length ({args.split}, {len(histories)} users)\n")
    print(header.format("history items"))
    print("\n".join(bucket_rows(lengths, LENGTH_EDGES, ranks)))
    print(f"\nNDCG@10 by the target's training count ({args.split})\n")
    print(header.format("target count"))
    print("\n".join(bucket_rows(popularity, POPULARITY_EDGES, ranks)))
    print(f"| all | {len(histories)} | " + " | ".join(f"{ndcg10(r):.4f}" for r in ranks.values()) + " |")
    print(f"\nAll {len(histories)} users ({args.split}, targets {args.targets}): NDCG@10 / HR@10\n")
    for name, r in ranks.items():
        m = metrics_from_ranks(r, ks=(10,))
        print(f"| {name} | {m['ndcg@10']:.4f} / {m['hr@10']:.4f} |")
    if len(lams) > 1:
        print("\nPopularity-prior probe: scores + lam * log(1 + training count)\n")
        print("| run | lam | NDCG@10 | HR@10 | mean training count of the top 10 |\n|---|---|---|---|---|")
        for name in names:
            for lam, m in probe[name].items():
                print(f"| {name} | {lam:g} | {m['ndcg@10']:.4f} | {m['hr@10']:.4f} | {m['train_count@10']:.1f} |")
    if args.bootstrap:
        print(f"\nPaired bootstrap vs {names[0]} ({args.split}, {args.bootstrap} resamples of the users)\n")
        print("| run | metric | run - first | 95% interval | share not better |\n|---|---|---|---|---|")
        for name in names[1:]:
            for metric, r in paired_bootstrap(ranks[names[0]], ranks[name], num_samples=args.bootstrap).items():
                interval = f"[{r['low']:+.4f}, {r['high']:+.4f}]"
                print(f"| {name} | {metric} | {r['diff']:+.4f} | {interval} | {r['p_b_not_better']:.3f} |")


if __name__ == "__main__":
    main()
