"""How far an LLM run's trained item rows moved from their initial (title) values, by training frequency.

    python experiments/item_drift.py --run runs/exp/LS2D5-L4

Rebuilds the initial rows exactly as ``llmrec train`` does (same config, data and seed), reads the trained rows from
``RUN/adapter`` (the best-validation adapter), and prints one JSON line per frequency bucket (the number of training
sequences that contain the item): items, mean ‖init‖, mean ‖trained‖, mean ‖trained − init‖ and mean cosine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

BUCKETS = ((0, 3), (3, 6), (6, 12), (12, None), (0, None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="LLM run directory written by llmrec train")
    args = ap.parse_args()

    import yaml
    from safetensors.torch import load_file

    from llmrec.data.dataset import load_prepared
    from llmrec.llm.build import build_model
    from llmrec.llm.config import TrainConfig

    run = Path(args.run)
    cfg = TrainConfig(**yaml.safe_load((run / "config.yaml").read_text()))
    data = load_prepared(cfg.data)
    init = build_model(cfg, data).item_lm.item_weights().detach().float()
    state = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    keys = [k for k in state if "embed_tokens" in k and "trainable_tokens" in k] or [
        k for k in state if "trainable_tokens" in k
    ]
    if not keys:
        raise SystemExit(f"{run}/adapter holds no trainable item rows")
    trained = state[keys[0]].float()
    counts = torch.zeros(data.num_items)
    for seq in data.train_sequences():
        counts[torch.tensor(seq)] += 1  # indexed add: an item repeated inside one sequence counts once
    cos = torch.nn.functional.cosine_similarity(trained, init, dim=1)
    for lo, hi in BUCKETS:
        m = (counts >= lo) & (counts < (hi if hi is not None else float("inf")))
        row = {
            "train_count": f"[{lo}, {hi if hi is not None else 'inf'})",
            "items": int(m.sum()),
            "init_norm": round(init[m].norm(dim=1).mean().item(), 4),
            "trained_norm": round(trained[m].norm(dim=1).mean().item(), 4),
            "delta_norm": round((trained - init)[m].norm(dim=1).mean().item(), 4),
            "cosine": round(cos[m].mean().item(), 4),
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main()
