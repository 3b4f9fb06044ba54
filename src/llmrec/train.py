"""`llmrec train`: LoRA fine-tune a causal LM to produce the next item token.

The same code runs under every launcher, through ``accelerate.Accelerator``:

    llmrec train --config configs/llm_beauty.yaml
    accelerate launch -m llmrec.train --config configs/llm_beauty.yaml
    torchrun --nproc_per_node 2 -m llmrec.train --config configs/llm_beauty.yaml
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from llmrec.config import parse_config

HELP = "LoRA fine-tune a causal LM to generate the next item token."

OBJECTIVES = ("sequence", "sft")
SCHEDULES = ("constant", "linear", "cosine", "wsd")
MASK_FILLS = ("mean", "zero")  # ItemLM(item_mask_fill=...)


@dataclass
class TrainConfig:
    data: str = field(default="", metadata={"help": "Prepared data directory (from `llmrec prepare`)."})
    output_dir: str = field(default="", metadata={"help": "Run directory to write (adapter, tokenizer, metrics)."})
    model: str = field(
        default="smollm2-135m",
        metadata={"help": "Embedded model name (smollm2-135m), local model dir, or hub id in the local cache."},
    )
    num_layers: int | None = field(default=None, metadata={"help": "Keep only the first N decoder layers."})
    dtype: str = field(default="float32", metadata={"help": "Weights dtype: float32, bfloat16, float16."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the checkpoint."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: NF4 base weights via bitsandbytes (CUDA)."})
    prompt: str = field(
        default="compact_bos",
        metadata={
            "help": "Prompt template name (prompts/*.txt) or path; compact_bos: item tokens after one BOS token."
        },
    )
    max_history: int = field(default=20, metadata={"help": "History items kept in a prompt (most recent)."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "Drop oldest items beyond this length."})
    item_init: str = field(default="title", metadata={"help": "Item embedding init: title or random."})
    item_cf_dim: int = field(
        default=0,
        metadata={
            "help": "0: off. k > 0: add k spectral factors of the training co-occurrence graph to the initial item "
            "rows (random orthonormal map into the hidden size; docs/llm.md)."
        },
    )
    item_cf_scale: float = field(
        default=1.0, metadata={"help": "Mean norm of the added co-occurrence part, relative to the initial rows."}
    )
    item_cf_window: int = field(
        default=3, metadata={"help": "Co-occurrence: items at most this many positions apart."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_mlp: bool = field(default=False, metadata={"help": "Also put LoRA on the MLP projections."})
    untie_lm_head: bool = field(
        default=False,
        metadata={
            "help": "Separate output rows for the item tokens: a tied LM head gets its own copy of the embeddings "
            "(both item row sets start from the title init and are trained)."
        },
    )
    embed_dropout: float = field(default=0.0, metadata={"help": "Dropout on input embeddings while training."})
    item_mask_prob: float = field(
        default=0.0,
        metadata={
            "help": "Hide each history item's input embedding with this probability (training; see item_mask_fill)."
        },
    )
    item_mask_fill: str = field(
        default="mean",
        metadata={"help": "Masked item input: mean (mean item row) or zero (runs before 2026-11-28 06:00; see docs)."},
    )
    hidden_dropout: float = field(
        default=0.0,
        metadata={"help": "Dropout on each layer's attention and MLP output before the residual add (training)."},
    )
    label_smoothing: float = field(default=0.0, metadata={"help": "Label smoothing of the next-item cross-entropy."})
    objective: str = field(
        default="sequence",
        metadata={"help": "sequence: one pass per user, loss at every item; sft: one prompt per target."},
    )
    epochs: float = field(default=3.0, metadata={"help": "Training epochs (fractions allowed)."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    batch_size: int = field(default=64, metadata={"help": "Examples per optimizer step, over all processes."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step and process."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    item_lr: float | None = field(default=None, metadata={"help": "Learning rate of the item rows (default: lr)."})
    item_adam_eps: float = field(
        default=1e-8,
        metadata={
            "help": "AdamW epsilon of the item rows. Larger values damp the ~lr-sized steps Adam gives rows whose "
            "gradients are tiny (items rarely or never seen as targets)."
        },
    )
    lr_schedule: str = field(
        default="constant",
        metadata={
            "help": "constant, linear or cosine decay, or wsd (constant, then linear decay over decay_fraction)."
        },
    )
    decay_fraction: float = field(default=0.2, metadata={"help": "wsd: final fraction of the steps spent decaying."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the LoRA matrices."})
    item_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the item rows."})
    item_init_decay: float = field(
        default=0.0,
        metadata={
            "help": "Decoupled decay of the item rows toward their initial (title) values: after each step "
            "rows -= lr * item_init_decay * (rows - init_rows) (0: off). At 1 and 5 it slowed learning on Beauty "
            "(docs/llm.md)."
        },
    )
    item_delta_rank: int = field(
        default=0,
        metadata={
            "help": "0: train every item row freely. r > 0: keep the initial (title) rows frozen and train a rank-r "
            "delta U[N, r] @ V[r, D] (N*r + r*D free values instead of N*D); merged into the saved rows."
        },
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0: off)."})
    mixed_precision: str = field(default="no", metadata={"help": "Accelerate mixed precision: no, fp16, bf16."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    seed: int = field(default=0, metadata={"help": "Seed for init, data order and dropout."})
    eval_every: int = field(default=0, metadata={"help": "Validate every N steps (0: at the end of each epoch)."})
    eval_users: int = field(
        default=2000, metadata={"help": "Validation subsample (random, fixed by seed) for early stopping; 0: all."}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Prompts per forward pass when scoring."})
    patience: int = field(default=2, metadata={"help": "Stop after N validations without NDCG@10 gain (0: off)."})
    save_every: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: at each validation)."})
    resume: bool = field(default=False, metadata={"help": "Continue from output_dir/checkpoint exactly."})
    overwrite: bool = field(default=False, metadata={"help": "Delete an existing run in output_dir and start over."})
    test_users: int = field(default=0, metadata={"help": "Final test evaluation users (0: all, -1: skip)."})
    log_every: int = field(default=10, metadata={"help": "Log loss every N steps."})
    max_train_users: int | None = field(default=None, metadata={"help": "Use only the first N users (debug)."})
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})

    def __post_init__(self):
        if not self.data:
            raise ValueError("data: a prepared data directory is required (--data DIR)")
        if not self.output_dir:
            raise ValueError("output_dir: a run directory is required (--output_dir DIR)")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.item_init not in ("title", "random"):
            raise ValueError(f"item_init must be 'title' or 'random', got {self.item_init!r}")
        if self.item_mask_fill not in MASK_FILLS:
            raise ValueError(f"item_mask_fill must be one of {MASK_FILLS}, got {self.item_mask_fill!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "max_history", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("epochs must be > 0 (or set max_steps)")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if self.item_cf_dim < 0 or self.item_cf_window < 1 or self.item_cf_scale < 0:
            raise ValueError(
                f"item_cf_dim must be >= 0, item_cf_window >= 1 and item_cf_scale >= 0; got {self.item_cf_dim}, "
                f"{self.item_cf_window}, {self.item_cf_scale}"
            )
        if self.item_init_decay < 0:
            raise ValueError(f"item_init_decay must be >= 0, got {self.item_init_decay}")
        if self.item_delta_rank < 0:
            raise ValueError(f"item_delta_rank must be >= 0, got {self.item_delta_rank}")
        if self.item_delta_rank and (self.untie_lm_head or self.item_init_decay):
            raise ValueError("item_delta_rank works with tied item rows and without item_init_decay")
        if self.item_adam_eps <= 0:
            raise ValueError(f"item_adam_eps must be > 0, got {self.item_adam_eps}")
        if self.item_lr is not None and self.item_lr <= 0:
            raise ValueError(f"item_lr must be > 0, got {self.item_lr}")
        if self.resume and self.overwrite:
            raise ValueError("resume/overwrite: pass at most one of them")
        for name in ("lora_dropout", "embed_dropout", "item_mask_prob", "hidden_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(TrainConfig, sys.argv[1:] if argv is None else argv, prog="llmrec train", description=HELP)
    from llmrec.training import train

    result = train(cfg)
    if result.get("is_main", True):
        print(f"run written to {cfg.output_dir}")
        for split in ("best_valid", "test"):
            if result.get(split):
                m = result[split]["metrics"]
                print(
                    f"{split}: ndcg@10 {m['ndcg@10']:.4f} hr@10 {m['hr@10']:.4f} ({result[split]['num_users']} users)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
