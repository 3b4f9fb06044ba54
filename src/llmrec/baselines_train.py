"""Training loop for the sequence baselines (``llmrec baseline``): early stopping on validation, test once at the end.

Run directory layout (everything ``llmrec evaluate --run DIR`` needs):
    run.json           {"kind": "baseline", "model": ..., "data": <prepared dir>, ...}
    config.yaml        the fully resolved ``BaselineConfig``
    model.safetensors  weights of the best-on-validation epoch
    checkpoint.pt      last epoch: model + optimizer + epoch + best + RNG states (``--resume`` continues from it)
    metrics.json       validation history, best epoch, test metrics of the best checkpoint, wall time
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.config import ConfigError, atomic_write_json, config_to_dict, save_config

BASELINE_NAMES = ("pop", "gru4rec", "sasrec", "bert4rec")
METRIC_NAMES = ("hr", "ndcg", "mrr", "precision")


@dataclass
class BaselineConfig:
    """Options of ``llmrec baseline MODEL --data DIR --out RUN_DIR``; YAML configs mirror these keys."""

    model: str = field(default="sasrec", metadata={"help": f"Baseline to train: one of {', '.join(BASELINE_NAMES)}."})
    data: str = field(default="", metadata={"help": "Prepared data directory (written by `llmrec prepare`)."})
    out: str = field(default="", metadata={"help": "Run directory for config, checkpoints, weights and metrics."})
    max_len: int = field(default=50, metadata={"help": "Most recent items kept per sequence (50 Amazon, 200 ML)."})
    hidden_size: int = field(default=64, metadata={"help": "Item embedding / hidden size."})
    num_layers: int = field(default=2, metadata={"help": "Transformer blocks (SASRec, BERT4Rec) or GRU layers."})
    num_heads: int = field(default=1, metadata={"help": "Attention heads (SASRec, BERT4Rec)."})
    dropout: float = field(default=0.5, metadata={"help": "Dropout on embeddings, attention and feed-forward."})
    mask_prob: float = field(default=0.2, metadata={"help": "BERT4Rec cloze masking probability."})
    loss: str = field(
        default="ce", metadata={"help": "'ce': full softmax over all items; 'bce': one sampled negative (weak)."}
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
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=256, metadata={"help": "Training sequences per step."})
    epochs: int = field(default=200, metadata={"help": "Maximum training epochs."})
    patience: int = field(
        default=10, metadata={"help": "Stop after this many validations without improving `metric`."}
    )
    eval_every: int = field(default=1, metadata={"help": "Validate every N epochs."})
    metric: str = field(default="ndcg@10", metadata={"help": "Validation metric for early stopping / model choice."})
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20], metadata={"help": "Cut-offs K for @K metrics."})
    mask_history: bool = field(default=True, metadata={"help": "Remove history items from the ranked candidates."})
    eval_batch_size: int = field(default=1024, metadata={"help": "Users per scoring batch in evaluation."})
    seed: int = field(default=42, metadata={"help": "Random seed (init, shuffling, dropout, masking)."})
    num_threads: int = field(default=2, metadata={"help": "torch CPU threads."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})
    resume: bool = field(default=False, metadata={"help": "Continue from RUN_DIR/checkpoint.pt."})
    overwrite: bool = field(default=False, metadata={"help": "Start over even if RUN_DIR has a checkpoint."})

    def __post_init__(self):
        if self.model not in BASELINE_NAMES:
            raise ConfigError(f"model: must be one of {BASELINE_NAMES}, got {self.model!r}")
        if not self.data:
            raise ConfigError("data: a prepared data directory is required (--data DIR)")
        if not self.out:
            raise ConfigError("out: a run directory is required (--out RUN_DIR)")
        for name in ("max_len", "hidden_size", "num_layers", "num_heads", "batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "eval_batch_size", "num_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"num_heads: {self.num_heads} does not divide hidden_size {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob: must be in (0, 1), got {self.mask_prob}")
        if self.loss not in ("ce", "bce"):
            raise ConfigError(f"loss: must be 'ce' or 'bce', got {self.loss!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(
                f"lr/weight_decay: need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"ks: need one or more cut-offs >= 1, got {self.ks}")
        base, _, k = self.metric.partition("@")
        if base not in METRIC_NAMES or (base != "mrr" and (not k.isdigit() or int(k) not in self.ks)):
            raise ConfigError(
                f"metric: expected one of {METRIC_NAMES} with @K for K in ks={self.ks}, got {self.metric!r}"
            )
        if not 0 <= self.item_cf_dim <= self.hidden_size or self.item_cf_window < 1 or self.item_cf_scale < 0:
            raise ConfigError(
                f"item_cf_dim/item_cf_window/item_cf_scale: need 0 <= item_cf_dim <= hidden_size ({self.hidden_size}), "
                f"window >= 1, scale >= 0; got {self.item_cf_dim}, {self.item_cf_window}, {self.item_cf_scale}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device: must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.resume and self.overwrite:
            raise ConfigError("resume/overwrite: pass at most one of them")


def build_model(cfg: BaselineConfig, num_items: int):
    """The model named by ``cfg.model`` for a catalog of ``num_items`` items."""
    from llmrec.modeling.baselines import MODELS, ModelArgs

    args = ModelArgs(
        num_items=num_items,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        dropout=cfg.dropout,
        max_len=cfg.max_len,
        mask_prob=cfg.mask_prob,
    )
    return MODELS[cfg.model](args)


def add_cf_init(model, cfg: BaselineConfig, train_sequences) -> None:
    """With ``cfg.item_cf_dim``: add co-occurrence factors to the first ``num_items`` rows of ``model.item_emb``."""
    if not cfg.item_cf_dim or not hasattr(model, "item_emb"):
        return
    from llmrec.modeling.cf_init import add_cf_rows, cooccurrence_factors

    factors = cooccurrence_factors(train_sequences, model.num_items, cfg.item_cf_dim, cfg.item_cf_window)
    add_cf_rows([model.item_emb.weight.data[: model.num_items]], factors, cfg.item_cf_scale, cfg.seed)


def load_baseline_run(run_dir: str | os.PathLike, device: str = "cpu"):
    """Rebuild a trained baseline from its run directory: ``(model in eval mode, prepared data, config)``."""
    from safetensors.torch import load_file

    from llmrec.config import load_yaml
    from llmrec.data import load_prepared

    run_dir = Path(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    values = load_yaml(run_dir / "config.yaml")
    values.update(resume=False, overwrite=False)
    cfg = BaselineConfig(**values)
    data = load_prepared(info["data"])
    model = build_model(cfg, data.num_items)
    model.load_state_dict(load_file(str(run_dir / "model.safetensors"), device=device))
    return model.to(device).eval(), data, cfg


def length_bucketed_batches(lengths: list[int], batch_size: int, gen, chunk_batches: int = 50) -> list[list[int]]:
    """Shuffled batches of indices whose sequences have similar lengths, so little compute goes to padding.

    Indices are shuffled, cut into chunks of ``chunk_batches`` batches, sorted by length inside each chunk, batched,
    and the batches shuffled again; every index appears exactly once.
    """
    import torch

    order = torch.randperm(len(lengths), generator=gen).tolist()
    chunk = batch_size * chunk_batches
    batches = []
    for lo in range(0, len(order), chunk):
        part = sorted(order[lo : lo + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def _save_checkpoint(state: dict, path: Path) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _prepare_run_dir(cfg: BaselineConfig) -> Path:
    out = Path(cfg.out)
    ckpt = out / "checkpoint.pt"
    if out.exists() and (ckpt.exists() or (out / "metrics.json").exists()) and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"out: {out} already holds a run; pass --resume to continue it or --overwrite to start over")
    if cfg.overwrite:
        for name in ("checkpoint.pt", "model.safetensors", "metrics.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    atomic_write_json(
        out / "run.json",
        {"kind": "baseline", "model": cfg.model, "data": str(Path(cfg.data).resolve()), "format_version": 1},
    )
    return out


def train_baseline(cfg: BaselineConfig, log=print) -> dict:
    """Train ``cfg.model`` with early stopping on validation ``cfg.metric``, then evaluate the test split once.

    Returns:
        The dict written to ``metrics.json``.
    """
    import torch
    from tqdm.auto import tqdm

    from llmrec.data import load_prepared
    from llmrec.evaluation import evaluate

    torch.set_num_threads(cfg.num_threads)
    start = time.perf_counter()
    data = load_prepared(cfg.data)
    out = _prepare_run_dir(cfg)
    device = _resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.num_items).to(device)
    add_cf_init(model, cfg, data.train_sequences())

    def run_eval(split: str) -> dict:
        return evaluate(
            model.score, data, split, ks=cfg.ks, mask_history=cfg.mask_history, batch_size=cfg.eval_batch_size
        )

    base = {
        "model": cfg.model,
        "data": str(Path(cfg.data).resolve()),
        "dataset": data.name,
        "config": config_to_dict(cfg),
    }
    if not getattr(model, "trainable", True):  # Pop: counting, no epochs
        model.fit(data.train_sequences())
        _save_weights(model, out / "model.safetensors")
        valid, test = run_eval("valid"), run_eval("test")
        result = {**base, "best_epoch": 0, "epochs_run": 0, "valid_best": valid, "valid_history": [], "test": test}
        result["wall_time_s"] = round(time.perf_counter() - start, 2)
        atomic_write_json(out / "metrics.json", result)
        return result

    seqs = [s for s in data.train_sequences() if len(s) >= 2]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "best": float("-inf"), "best_epoch": 0, "bad_evals": 0, "history": [], "train_time_s": 0.0}
    state["stopped"] = False
    ckpt_path = out / "checkpoint.pt"
    if cfg.resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_torch"])
        gen.set_state(ckpt["rng_gen"])
        state = ckpt["state"]
        log(f"resumed from {ckpt_path} at epoch {state['epoch']} (best {cfg.metric} {state['best']:.5f})")

    def write_metrics(extra: dict) -> dict:
        result = {
            **base,
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "valid_best": next((h for h in state["history"] if h["epoch"] == state["best_epoch"]), None),
            "valid_history": state["history"],
            "train_time_s": round(state["train_time_s"], 2),
            **extra,
        }
        atomic_write_json(out / "metrics.json", result)
        return result

    while state["epoch"] < cfg.epochs and not state["stopped"]:
        epoch_start = time.perf_counter()
        model.train()
        batches = length_bucketed_batches([len(s) for s in seqs], cfg.batch_size, gen)
        total = 0.0
        bar = tqdm(batches, desc=f"epoch {state['epoch'] + 1}", unit="batch", mininterval=2.0, leave=False)
        for idx in bar:
            loss = model.loss([seqs[i] for i in idx], cfg.loss, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        state["epoch"] += 1
        line = (
            f"epoch {state['epoch']}: loss {total / len(batches):.4f}, train {time.perf_counter() - epoch_start:.1f}s"
        )
        if state["epoch"] % cfg.eval_every == 0 or state["epoch"] == cfg.epochs:
            valid = run_eval("valid")
            value = valid["metrics"][cfg.metric]
            state["history"].append({"epoch": state["epoch"], "loss": total / len(batches), **valid["metrics"]})
            if value > state["best"]:
                state.update(best=value, best_epoch=state["epoch"], bad_evals=0)
                _save_weights(model, out / "model.safetensors")
            else:
                state["bad_evals"] += 1
            state["stopped"] = state["bad_evals"] >= cfg.patience
            line += (
                f", valid {cfg.metric} {value:.5f} (best {state['best']:.5f} @ {state['best_epoch']}),"
                f" eval {valid['wall_time_s']:.1f}s"
            )
        state["train_time_s"] += time.perf_counter() - epoch_start
        log(line)
        _save_checkpoint(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "rng_torch": torch.get_rng_state(),
                "rng_gen": gen.get_state(),
                "state": state,
            },
            ckpt_path,
        )
        write_metrics({"status": "training"})
    if state["best_epoch"] == 0:
        raise RuntimeError("no validation ran; set eval_every <= epochs")
    from safetensors.torch import load_file

    # Test exactly once, with the best-on-validation weights.
    model.load_state_dict(load_file(str(out / "model.safetensors"), device=device))
    test = run_eval("test")
    log(
        f"test (best epoch {state['best_epoch']}): "
        + ", ".join(f"{k} {test['metrics'][k]:.4f}" for k in ("ndcg@10", "hr@10") if k in test["metrics"])
    )
    return write_metrics({"status": "done", "test": test, "wall_time_s": round(time.perf_counter() - start, 2)})
