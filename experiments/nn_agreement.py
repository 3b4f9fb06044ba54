"""Nearest-neighbour agreement of item vectors with training co-occurrence on a prepared data set.

For every item that co-occurs (window 3, training part s[:-2]) with at least one other item: is one of its top-10
cosine neighbours (self excluded) an item it co-occurs with? Prints the fraction per representation, and the
fraction expected from 10 random neighbours. Usage: nn_agreement.py PREPARED_DIR [CACHE_DIR]
"""

import json
import sys
from pathlib import Path

import torch

from llmrec.data import load_prepared
from llmrec.items.cooccurrence import cooccurrence_matrix
from llmrec.items.init import _title_means
from llmrec.items.text import cache_path, item_text_embeddings, text_rows
from llmrec.items.text_models import EncoderSpec
from llmrec.llm.loading import cache_root, load_causal_lm

data = load_prepared(sys.argv[1])
cache = Path(sys.argv[2]) if len(sys.argv) > 2 else cache_root()
n = data.num_items
c = cooccurrence_matrix(data.train_sequences(), n, 3)
i, j = c.indices()
nbr = [set() for _ in range(n)]
for a, b in zip(i.tolist(), j.tolist()):
    nbr[a].add(b)
deg = torch.tensor([len(s) for s in nbr])


def agreement(vecs: torch.Tensor, valid: torch.Tensor, k: int = 10) -> float:
    v = torch.nn.functional.normalize(vecs.float(), dim=1)
    items = [x for x in range(n) if deg[x] > 0 and valid[x]]
    hits = 0
    for start in range(0, len(items), 1024):
        rows = items[start : start + 1024]
        sim = v[rows] @ v.T
        sim[:, ~valid] = -2
        sim[torch.arange(len(rows)), rows] = -2
        top = sim.topk(k, dim=1).indices.tolist()
        hits += sum(any(t in nbr[r] for t in tt) for r, tt in zip(rows, top))
    return hits / len(items)


def chance(valid, k=10):
    m = int(valid.sum()) - 1
    items = [x for x in range(n) if deg[x] > 0 and valid[x]]
    p = 0.0
    for x in items:
        d = len([y for y in nbr[x] if valid[y]])
        q = 1.0
        for t in range(k):
            q *= max(m - d - t, 0) / (m - t)
        p += 1 - q
    return p / len(items)


out = {"data": sys.argv[1], "items": n, "items_with_cooccurrence": int((deg > 0).sum()), "k": 10}
mini = item_text_embeddings(
    data.catalog.titles, data.catalog.texts, data.fingerprint, EncoderSpec("minilm", cache), False
)
out["chance"] = round(chance(mini.has), 4)
out["minilm"] = round(agreement(mini.vectors, mini.has), 4)
lm, tok = load_causal_lm("smollm2-135m", num_layers=1)
emb = lm.get_input_embeddings().weight.detach()
ids = tok([t or "" for t in data.catalog.titles], add_special_tokens=False, truncation=True, max_length=32)[
    "input_ids"
]
title, has_title = _title_means(emb, ids)
out["smollm2_title_mean"] = round(agreement(title, has_title), 4)
for proj in ("ridge", "orthonormal"):
    rows = text_rows(mini, title, has_title, emb, proj, seed=1)
    out[f"minilm_{proj}_rows"] = round(agreement(rows, mini.has), 4)
lm_path = EncoderSpec("lm", cache, model="smollm2-135m")
p = cache_path(cache, data.fingerprint, lm_path)
if p.is_file():
    lme = item_text_embeddings(data.catalog.titles, data.catalog.texts, data.fingerprint, lm_path, False)
    out["lm_smollm2_full"] = round(agreement(lme.vectors, lme.has), 4)
    for proj in ("ridge", "orthonormal"):
        rows = text_rows(lme, title, has_title, emb, proj, seed=1)
        out[f"lm_{proj}_rows"] = round(agreement(rows, lme.has), 4)
print(json.dumps(out))
