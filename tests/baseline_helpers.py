"""Toy data and a small config shared by the baseline tests (imported by them; holds no tests itself)."""

from __future__ import annotations

import random
from pathlib import Path

from llmrec.baselines.config import BaselineConfig
from llmrec.data import Catalog, PreparedData, save_prepared

NUM_ITEMS = 30


def make_next_item_toy(root: Path) -> str:
    """A prepared toy data set with a deterministic pattern: item i is always followed by item i+1 (mod NUM_ITEMS)."""
    rng = random.Random(0)
    seqs = []
    for _ in range(300):
        start, length = rng.randrange(NUM_ITEMS), rng.randint(5, 12)
        seqs.append([(start + j) % NUM_ITEMS for j in range(length)])
    catalog = Catalog(raw_ids=[str(i) for i in range(NUM_ITEMS)], titles=[""] * NUM_ITEMS)
    data = PreparedData(
        catalog=catalog, users=[str(u) for u in range(len(seqs))], sequences=seqs, meta={"dataset": "toy"}
    )
    return str(save_prepared(data, root / "prepared"))


def baseline_cfg(toy_dir, out, **kw) -> BaselineConfig:
    """A tiny one-layer config on the toy data (early stopping on HR@1), overridden by ``kw``."""
    base = dict(
        data=toy_dir, output_dir=str(out), max_len=12, hidden_size=32, num_layers=1, num_heads=1, dropout=0.1,
        lr=5e-3, batch_size=32, epochs=15, patience=15, ks=[1, 10], metric="hr@1", num_threads=1,
    )  # fmt: skip
    base.update(kw)
    return BaselineConfig(**base)


def quiet(*args) -> None:
    """A ``log`` callback that prints nothing."""
