"""Fast ranking path vs constrained beam search on the same prompts of an LLM run.

    python scripts/bench_llm_decoding.py --run runs/llm_beauty --users 200 --beams 20

Prints a table and a JSON line: users/s of each path, and how often their top-K lists agree exactly.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="LLM run directory written by llmrec train")
    ap.add_argument(
        "--data", default=None, help="prepared data for the histories (default: where the run recorded it)"
    )
    ap.add_argument("--split", default="test")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--beams", type=int, default=20)
    ap.add_argument("--beam_batch", type=int, default=8, help="prompts per generate call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)

    from llmrec.decoding import generate_items
    from llmrec.inference import mask_items, top_k
    from llmrec.llm.recommender import load_llm_run
    from llmrec.runs import load_run_data

    rec = load_llm_run(args.run)
    histories, _ = load_run_data(args.run, args.data).split(args.split)
    pick = np.random.default_rng(args.seed).choice(len(histories), min(args.users, len(histories)), replace=False)
    hist = [histories[i] for i in pick]
    prompts = [rec.encoder.encode(h) for h in hist]

    t = time.perf_counter()
    with torch.inference_mode():
        fast, _ = top_k(mask_items(rec.score(hist), hist), args.beams)
    fast_s = time.perf_counter() - t

    t = time.perf_counter()
    beams: list[list[int]] = []
    for s in range(0, len(prompts), args.beam_batch):
        beams += generate_items(
            rec.item_lm.lm,
            rec.item_lm.vocab,
            prompts[s : s + args.beam_batch],
            rec.pad_id,
            k=args.beams,
            exclude=hist[s : s + args.beam_batch],
        )
    beam_s = time.perf_counter() - t

    same = sum(a == b for a, b in zip(fast, beams))
    same_set = sum(set(a) == set(b) for a, b in zip(fast, beams))
    out = {
        "run": args.run,
        "users": len(hist),
        "k": args.beams,
        "threads": torch.get_num_threads(),
        "fast_users_per_s": len(hist) / fast_s,
        "beam_users_per_s": len(hist) / beam_s,
        "speedup": beam_s / fast_s,
        "topk_identical": same / len(hist),
        "topk_same_set": same_set / len(hist),
    }
    print(f"| path | users/s |\n|---|---|\n| fast path (1 forward, item rows) | {out['fast_users_per_s']:.1f} |")
    print(f"| constrained beam search ({args.beams} beams) | {out['beam_users_per_s']:.1f} |")
    print(f"top-{args.beams} identical: {out['topk_identical']:.3f}, same set: {out['topk_same_set']:.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
