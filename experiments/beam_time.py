"""Users/s of ``SemanticLLMRecommender.score`` at one beam width on the first N validation histories of a run.

    python experiments/beam_time.py RUN PREPARED_DIR WIDTH N

One thread, no text fusion, one call (no warm-up). Prints users/s, seconds, and an md5 digest of the top-WIDTH item
ids with the sum of their scores, so two code versions (e.g. ``PYTHONPATH=OLD_CHECKOUT/src``) can be checked to
return the same beams. Used for the before/after table in docs/results.md, "Beam-search speed".
"""

import hashlib
import sys
import time

import torch

from llmrec.data import load_prepared
from llmrec.llm.recommender import load_llm_run

run, data_dir, width, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
rec = load_llm_run(run, beam_width=width)
rec.fusion = 0.0
data = load_prepared(data_dir)
hist, _ = data.split("valid")
hist = [list(h) for h in hist[:n]]
t = time.perf_counter()
s = rec.score(hist)
dt = time.perf_counter() - t
top = s.topk(width, dim=1)
print(
    f"{n / dt:.2f} users/s  {dt:.1f} s  digest {hashlib.md5(top.indices.numpy().tobytes()).hexdigest()[:10]} "
    f"score-sum {top.values.sum().item():.3f}"
)
