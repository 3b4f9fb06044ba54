"""Time one full-ranking evaluation of a run (model and data loaded first) and save its ranks, to compare two versions
of the scoring code: ``python experiments/eval_time.py RUN valid|test OUT.npy`` (one torch thread)."""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from llmrec.evaluation import evaluate
from llmrec.recommenders import load_recommender
from llmrec.runs import load_run_data


def main() -> None:
    run, split, out = sys.argv[1:4]
    torch.set_num_threads(1)
    rec, data = load_recommender(run), load_run_data(run)
    start = time.perf_counter()
    with torch.inference_mode():
        result = evaluate(rec.score, data, split, batch_size=1024, return_ranks=True)
    m = result["metrics"]
    print(f"evaluate: {time.perf_counter() - start:.2f} s, ndcg@10 {m['ndcg@10']:.6f}, hr@10 {m['hr@10']:.6f}")
    np.save(out, result["ranks"])


if __name__ == "__main__":
    main()
