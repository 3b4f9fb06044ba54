"""Optimizer and learning-rate schedule of ``llmrec train``: AdamW with two groups (LoRA matrices, item rows)."""

from __future__ import annotations

import torch
from transformers import get_scheduler, get_wsd_schedule

from llmrec.llm.config import TrainConfig

SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def is_item_param(name: str) -> bool:
    """Whether a trainable parameter holds item rows (peft's trainable-token deltas) rather than LoRA matrices."""
    return "trainable_tokens" in name


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: LoRA with ``weight_decay``, item rows with ``item_weight_decay``."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not is_item_param(n)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params if is_item_param(n)], "weight_decay": cfg.item_weight_decay},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    """The learning-rate schedule of ``cfg.lr_schedule`` over ``total_steps`` optimizer steps (after warm-up).

    ``wsd`` (warm-up, stable, decay) holds the peak rate and decays linearly to 0 over the last
    ``cfg.decay_fraction`` of the steps, so early stopping still sees the fast constant-rate phase.
    """
    if cfg.lr_schedule == "wsd":
        return get_wsd_schedule(
            optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_decay_steps=max(1, round(cfg.decay_fraction * total_steps)),
            num_training_steps=total_steps,
            decay_type="linear",
        )
    return get_scheduler(
        SCHEDULER_NAMES[cfg.lr_schedule], optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps
    )
