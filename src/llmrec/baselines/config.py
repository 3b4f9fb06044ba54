"""``BaselineConfig``: every option of ``llmrec baseline`` (Pop, GRU4Rec, SASRec, BERT4Rec, TextKNN, TextTower)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from llmrec.config import ConfigError

BASELINE_NAMES = ("pop", "gru4rec", "sasrec", "bert4rec", "textknn", "texttower")
TEXT_MODELS = ("textknn", "texttower")  # the models that read item texts (--textknn_encoder, --textknn_history)
TEXTKNN_ENCODERS = ("minilm", "lm")  # llmrec.items.text_models.TEXT_ENCODERS (not imported: it needs torch)
METRIC_NAMES = ("hr", "ndcg", "mrr", "precision")


@dataclass
class BaselineConfig:
    """Options of ``llmrec baseline MODEL --data DIR --output_dir RUN_DIR``; YAML configs mirror these keys."""

    model: str = field(default="sasrec", metadata={"help": f"Baseline to train: one of {', '.join(BASELINE_NAMES)}."})
    data: str = field(default="", metadata={"help": "Prepared data directory (written by `llmrec prepare`)."})
    output_dir: str = field(
        default="",
        metadata={"help": "Run directory for config, checkpoints, weights and metrics.", "aliases": ["--out"]},
    )
    max_len: int = field(default=50, metadata={"help": "Most recent items kept per sequence (50 Amazon, 200 ML)."})
    hidden_size: int = field(default=64, metadata={"help": "Item embedding / hidden size."})
    num_layers: int = field(default=2, metadata={"help": "Transformer blocks (SASRec, BERT4Rec) or GRU layers."})
    num_heads: int = field(default=1, metadata={"help": "Attention heads (SASRec, BERT4Rec)."})
    dropout: float = field(default=0.5, metadata={"help": "Dropout on embeddings, attention and feed-forward."})
    mask_prob: float = field(default=0.2, metadata={"help": "BERT4Rec cloze masking probability."})
    loss: str = field(
        default="ce",
        metadata={
            "help": "'ce': full softmax over all items; 'bce': one sampled negative (weak); 'sampled': softmax over "
            "the target and `num_negatives` sampled negatives (eSASRec's loss; GRU4Rec, SASRec, BERT4Rec)."
        },
    )
    num_negatives: int = field(
        default=256,
        metadata={"help": "loss sampled: negatives per target position (per batch with shared_negatives)."},
    )
    negative_sampling: str = field(
        default="uniform",
        metadata={"help": "loss sampled: 'uniform' over the catalog or 'popularity' (training interaction counts)."},
    )
    logq_correction: bool = field(
        default=False,
        metadata={"help": "loss sampled: subtract log Q(item) from each negative's logit (not the positive's)."},
    )
    shared_negatives: bool = field(
        default=False,
        metadata={"help": "loss sampled: one draw of negatives per batch for every position (less memory)."},
    )
    item_cf_dim: int = field(
        default=0,
        metadata={
            "help": "0: off. k > 0 (<= hidden_size): add k co-occurrence factors of the training sequences to the "
            "initial item embeddings, as the LLM's --item_cf_dim (GRU4Rec, SASRec, BERT4Rec)."
        },
    )
    item_cf_scale: float = field(default=1.0, metadata={"help": "Norm of the added part relative to the init rows."})
    item_cf_window: int = field(default=3, metadata={"help": "Co-occurrence window (positions apart)."})
    textknn_history: int = field(
        default=5, metadata={"help": "textknn: the last N history items whose mean text embedding is the query."}
    )
    textknn_encoder: str = field(
        default="minilm",
        metadata={"help": "textknn: item text encoder, 'minilm' or 'lm' (llmrec's default base LM, mean-pooled)."},
    )
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=256, metadata={"help": "Training sequences per step."})
    epochs: int = field(
        default=200,
        metadata={
            "help": "Maximum training epochs; 0: no cap, train until `patience` validations without improvement "
            "end it (metrics.json train.stopped_by says which ended a run)."
        },
    )
    patience: int = field(
        default=10, metadata={"help": "Stop after this many validations without improving `metric`."}
    )
    eval_every: int = field(default=1, metadata={"help": "Validate every N epochs."})
    metric: str = field(default="ndcg@10", metadata={"help": "Validation metric for early stopping / model choice."})
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"help": "Cut-offs K for @K metrics."})
    mask_history: bool = field(default=True, metadata={"help": "Remove history items from the ranked candidates."})
    eval_batch_size: int = field(default=1024, metadata={"help": "Users per scoring batch in evaluation."})
    seed: int = field(default=0, metadata={"help": "Random seed (init, shuffling, dropout, masking)."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})
    resume: bool = field(default=False, metadata={"help": "Continue from RUN_DIR/checkpoint.pt."})
    overwrite: bool = field(default=False, metadata={"help": "Start over even if RUN_DIR has a checkpoint."})

    def __post_init__(self):
        if self.model not in BASELINE_NAMES:
            raise ConfigError(f"model: must be one of {BASELINE_NAMES}, got {self.model!r}")
        if not self.data:
            raise ConfigError("data: a prepared data directory is required (--data DIR)")
        if not self.output_dir:
            raise ConfigError("output_dir: a run directory is required (--output_dir RUN_DIR)")
        for f in fields(self):  # nan and inf pass most range checks below
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}: must be a finite number, got {value}")
        for name in ("max_len", "hidden_size", "num_layers", "num_heads", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ConfigError(f"epochs: must be >= 0 (0: no cap, until early stopping), got {self.epochs}")
        if self.num_threads < 0:
            raise ConfigError(f"num_threads: must be >= 0, got {self.num_threads}")
        for name in ("eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"num_heads: {self.num_heads} does not divide hidden_size {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob: must be in (0, 1), got {self.mask_prob}")
        if self.loss not in ("ce", "bce", "sampled"):
            raise ConfigError(f"loss: must be 'ce', 'bce' or 'sampled', got {self.loss!r}")
        self._check_sampled()
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"ks: need one or more cut-offs >= 1, got {self.ks}")
        base, _, k = self.metric.partition("@")
        if base not in METRIC_NAMES or (base != "mrr" and (not k.isdigit() or int(k) not in self.ks)):
            raise ConfigError(
                f"metric: expected one of {METRIC_NAMES} with @K for K in ks={self.ks}, got {self.metric!r}"
            )
        if not 0 <= self.item_cf_dim <= self.hidden_size:
            raise ConfigError(f"item_cf_dim: must be in 0..hidden_size ({self.hidden_size}), got {self.item_cf_dim}")
        if self.item_cf_window < 1:
            raise ConfigError(f"item_cf_window: must be >= 1, got {self.item_cf_window}")
        if not self.item_cf_scale >= 0:
            raise ConfigError(f"item_cf_scale: must be >= 0, got {self.item_cf_scale}")
        if self.textknn_history < 1:
            raise ConfigError(f"textknn_history: must be >= 1, got {self.textknn_history}")
        if self.textknn_encoder not in TEXTKNN_ENCODERS:
            raise ConfigError(f"textknn_encoder: must be one of {TEXTKNN_ENCODERS}, got {self.textknn_encoder!r}")
        for name, default in (("textknn_history", 5), ("textknn_encoder", "minilm")):
            if self.model not in TEXT_MODELS and getattr(self, name) != default:
                raise ConfigError(f"{name}: only used with models {TEXT_MODELS} (model is {self.model!r})")
        if self.model == "texttower" and self.loss == "bce":
            raise ConfigError("loss: texttower trains with 'ce' or 'sampled' (it has no item rows for 'bce')")
        if self.model == "texttower" and self.item_cf_dim:
            raise ConfigError("item_cf_dim: texttower has no item rows to initialise; use 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.resume and self.overwrite:
            raise ConfigError("resume/overwrite: pass at most one of them")

    def _check_sampled(self) -> None:
        """The options of ``loss: sampled``; with another loss they must keep their defaults (they would do nothing)."""
        if self.num_negatives < 1:
            raise ConfigError(f"num_negatives: must be >= 1, got {self.num_negatives}")
        if self.negative_sampling not in ("uniform", "popularity"):
            raise ConfigError(f"negative_sampling: must be 'uniform' or 'popularity', got {self.negative_sampling!r}")
        if self.loss != "sampled":
            for name in ("num_negatives", "negative_sampling", "logq_correction", "shared_negatives"):
                default = next(f.default for f in fields(self) if f.name == name)
                if getattr(self, name) != default:
                    raise ConfigError(f"{name}: only used with loss: sampled (loss is {self.loss!r})")
