"""Training loop of the sequence baselines (``llmrec baseline``): early stopping on validation, test once at the end.

Run directory (the shared schema of ``llmrec.runs``, plus):
    model.safetensors  weights of the best-on-validation epoch
    checkpoint.pt      last epoch: model + optimizer + epoch + best + RNG states (``--resume`` continues from it)

Cold-start items (a data set prepared with ``--cold_items``) never reach training: the model gets them
(``SequenceModel.set_cold_items``: out of the softmax and of the negatives, ``build_sampler`` too), and before every
validation their rows are set to the mean of the warm rows (``fill_cold_rows``), so the saved weights carry that
fallback and a run needs no cold-item list at inference.

``metrics.json`` ``train``: ``epochs_run``, ``best_epoch``, ``train_time_s``, ``wall_time_s`` and, once done,
``stopped_by``: "early_stopping" (``patience`` validations without improvement) or "epoch_cap" (``epochs`` reached).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from llmrec.baselines import MODELS, ModelArgs, TextKNN, TextTower
from llmrec.baselines.base import NegativeSampler
from llmrec.baselines.config import BaselineConfig
from llmrec.batching import length_bucketed_batches
from llmrec.config import ConfigError, check_yaml_values, load_yaml, save_config
from llmrec.data import Catalog, PreparedData, load_prepared
from llmrec.evaluation import evaluate
from llmrec.files import atomic_write_with
from llmrec.items.cooccurrence import add_cf_rows, cooccurrence_factors
from llmrec.runs import (
    RANKS_FILE,
    RANKS_META,
    clear_outputs,
    plan_run_dir,
    read_run_info,
    run_catalog,
    write_metrics,
    write_run_info,
    write_test_ranks,
)

BASELINE_OUTPUTS = ("run.json", "config.yaml", "catalog.parquet", "model.safetensors", "checkpoint.pt",
                    "metrics.json", "eval_valid.json", "eval_test.json", "eval_valid_warm.json",
                    "eval_valid_cold.json", "eval_test_warm.json", "eval_test_cold.json", RANKS_FILE,
                    RANKS_META)  # fmt: skip


class BaselineRecommender:
    """A trained baseline as an ``llmrec.inference.Recommender``: its model, the run's catalog and a name.

    ``add_items`` appends items to the catalog and the model: an ID model (SASRec, GRU4Rec, BERT4Rec) gives each
    the mean item row (``SequenceModel.add_items``: it has never seen them, so they score like an average item), Pop
    a zero count, TextKNN and TextTower the embedding of its text under ``text_encoder`` (the run's
    ``--textknn_encoder``).
    """

    def __init__(self, model: torch.nn.Module, catalog: Catalog, name: str, text_encoder: str = "minilm"):
        self.model, self.catalog, self.name = model, catalog, name
        self.text_encoder = text_encoder
        self._encoder = None  # TextKNN: loaded on the first add_items, then kept

    @property
    def num_items(self) -> int:
        return self.model.num_items

    def score(self, histories) -> torch.Tensor:
        return self.model.score([list(h) for h in histories])

    def add_items(self, raw_ids, titles, texts) -> list[int]:
        """Append items (see the class docstring); returns their ids, consecutive from ``num_items``.

        Raises:
            DataError: an empty, repeated or known raw id (nothing is changed).
        """
        catalog = self.catalog.extended(raw_ids, titles, texts)
        if len(catalog) == len(self.catalog):
            return []
        if isinstance(self.model, (TextKNN, TextTower)):
            from llmrec.baselines.textknn import text_encoder_spec
            from llmrec.items.text import encode_item_texts
            from llmrec.items.text_models import build_encoder

            if self._encoder is None:
                self._encoder = build_encoder(text_encoder_spec(self.text_encoder))
            ids = self.model.add_items(encode_item_texts(self._encoder, list(titles), list(texts)).vectors)
        else:
            ids = self.model.add_items(len(catalog) - len(self.catalog))
        self.catalog = catalog
        return ids


def build_model(cfg: BaselineConfig, num_items: int) -> torch.nn.Module:
    """The model named by ``cfg.model`` for a catalog of ``num_items`` items."""
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


def build_sampler(cfg: BaselineConfig, data: PreparedData) -> NegativeSampler | None:
    """The negatives of ``loss: sampled`` (None for the other losses); popularity = training interaction counts."""
    if cfg.loss != "sampled":
        return None
    probs = None
    if cfg.negative_sampling == "popularity":
        counts = torch.as_tensor(data.item_popularity(), dtype=torch.float64)
        if not counts.sum() > 0:
            raise ConfigError("negative_sampling: popularity needs training interactions; the data set has none")
        probs = counts / counts.sum()
    return NegativeSampler(data.num_items, cfg.num_negatives, probs, cfg.logq_correction, cfg.shared_negatives,
                           cold_items=sorted(data.cold_items) or None)  # fmt: skip


def add_cf_init(model, cfg: BaselineConfig, train_sequences) -> None:
    """With ``cfg.item_cf_dim``: add co-occurrence factors to the first ``num_items`` rows of ``model.item_emb``."""
    if not cfg.item_cf_dim or not hasattr(model, "item_emb"):
        return
    factors = cooccurrence_factors(train_sequences, model.num_items, cfg.item_cf_dim, cfg.item_cf_window)
    add_cf_rows([model.item_emb.weight.data[: model.num_items]], factors, cfg.item_cf_scale, cfg.seed)


def load_baseline_run(run_dir: str | os.PathLike, device: str = "cpu") -> BaselineRecommender:
    """Rebuild a trained baseline from its run directory alone (weights, config, catalog), in eval mode."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    values = check_yaml_values(BaselineConfig, load_yaml(run_dir / "config.yaml"), run_dir / "config.yaml")
    values.update(resume=False, overwrite=False)
    cfg = BaselineConfig(**values)
    catalog = run_catalog(run_dir)
    model = build_model(cfg, len(catalog))
    model.load_state_dict(load_file(str(run_dir / "model.safetensors"), device=device))
    return BaselineRecommender(
        model.to(device).eval(), catalog, f"{info['model']}:{run_dir.name}", cfg.textknn_encoder
    )


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was asked for, but no CUDA GPU is available")
    return name


def save_weights(model, path: Path) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp)))


def prepare_run_dir(cfg: BaselineConfig, data: PreparedData) -> tuple[Path, bool]:
    """Start, resume or refuse ``cfg.output_dir`` (``llmrec.runs.plan_run_dir``); returns ``(dir, resume)``."""
    out = Path(cfg.output_dir)
    plan = plan_run_dir(out, cfg.resume, cfg.overwrite, (out / "checkpoint.pt").is_file())
    if plan == "resume":
        return out, True
    if plan == "restart":
        clear_outputs(out, BASELINE_OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    write_run_info(out, "baseline", cfg.model, data, cfg.data)
    return out, False


def train_baseline(cfg: BaselineConfig, log=print) -> dict:
    """Train ``cfg.model`` with early stopping on validation ``cfg.metric``, then evaluate the test split once.

    Returns:
        The dict written to ``metrics.json``.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    data = load_prepared(cfg.data)  # inputs are checked before the run directory is touched
    out, resume = prepare_run_dir(cfg, data)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.num_items).to(device)
    if hasattr(model, "set_cold_items"):  # the neural models; Pop's and TextKNN's fits need nothing
        model.set_cold_items(data.cold_items)
    add_cf_init(model, cfg, data.train_sequences())
    if getattr(model, "trainable", True) and hasattr(model, "fit_data"):  # TextTower: texts before the optimizer
        model.fit_data(data, cfg)
    info = read_run_info(out)

    def run_eval(split: str) -> dict:
        res = evaluate(model.score, data, split, ks=cfg.ks, mask_history=cfg.mask_history,
                       batch_size=cfg.eval_batch_size, return_ranks=split == "test")  # fmt: skip
        return write_test_ranks(out, info, res) if split == "test" else res

    if not getattr(model, "trainable", True):  # Pop: counting, no epochs
        if hasattr(model, "fit_data"):  # TextKNN: embeds the catalog's texts (cfg: encoder, history length)
            model.fit_data(data, cfg)
        else:
            model.fit(data.train_sequences())
        save_weights(model, out / "model.safetensors")
        valid, test = {**run_eval("valid"), "epoch": 0}, run_eval("test")
        train = {"epochs_run": 0, "best_epoch": 0, "wall_time_s": round(time.perf_counter() - start, 2)}
        return write_metrics(out, info, status="done", valid=valid, test=test, train=train)
    state = _fit(cfg, model, data, out, device, resume, run_eval, info, log)
    # Test exactly once, with the best-on-validation weights.
    model.load_state_dict(load_file(str(out / "model.safetensors"), device=device))
    test = run_eval("test")
    stopped = "early stopping" if state["stopped"] else "epoch cap"
    log(
        f"test (best epoch {state['best_epoch']} of {state['epoch']}, ended by {stopped}): "
        + ", ".join(f"{k} {test['metrics'][k]:.4f}" for k in ("ndcg@10", "hr@10") if k in test["metrics"])
    )
    return _write(out, info, state, status="done", test=test, wall_time_s=round(time.perf_counter() - start, 2))


def _write(out: Path, info: dict, state: dict, status: str, test=None, wall_time_s=None) -> dict:
    train = {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
             "train_time_s": round(state["train_time_s"], 2), "wall_time_s": wall_time_s}  # fmt: skip
    if status == "done":
        train["stopped_by"] = "early_stopping" if state["stopped"] else "epoch_cap"
    return write_metrics(out, info, status=status, valid=state["best_valid"], test=test, history=state["history"],
                         train=train)  # fmt: skip


def _fit(cfg, model, data, out: Path, device: str, resume: bool, run_eval, info: dict, log) -> dict:
    """The epochs: train, validate every ``eval_every``, keep the best weights, checkpoint; returns the state."""
    seqs = [s for s in data.train_sequences() if len(s) >= 2]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = build_sampler(cfg, data)
    state = {"epoch": 0, "best": float("-inf"), "best_epoch": 0, "best_valid": None, "bad_evals": 0, "history": [],
             "train_time_s": 0.0, "stopped": False}  # fmt: skip
    ckpt_path = out / "checkpoint.pt"
    if resume:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_torch"])
        gen.set_state(ckpt["rng_gen"])
        state = ckpt["state"]
        log(f"resumed from {ckpt_path} at epoch {state['epoch']} (best {cfg.metric} {state['best']:.5f})")
    permutation = lambda n: torch.randperm(n, generator=gen).tolist()  # noqa: E731
    while (not cfg.epochs or state["epoch"] < cfg.epochs) and not state["stopped"]:  # epochs 0: no cap
        epoch_start = time.perf_counter()
        model.train()
        batches = length_bucketed_batches([len(s) for s in seqs], cfg.batch_size, permutation)
        total = 0.0
        bar = tqdm(batches, desc=f"epoch {state['epoch'] + 1}", unit="batch", mininterval=2.0, leave=False)
        for idx in bar:
            loss = model.loss([seqs[i] for i in idx], cfg.loss, gen, sampler)
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
            line += _validate(cfg, model, state, total / len(batches), run_eval, out)
        state["train_time_s"] += time.perf_counter() - epoch_start
        log(line)
        checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng_torch": torch.get_rng_state(),
                      "rng_gen": gen.get_state(), "state": state}  # fmt: skip
        atomic_write_with(ckpt_path, lambda tmp, c=checkpoint: torch.save(c, tmp))
        _write(out, info, state, status="training")
    if state["best_epoch"] == 0:
        raise ConfigError("eval_every: no validation ran; set eval_every <= epochs")
    return state


def _validate(cfg, model, state: dict, loss: float, run_eval, out: Path) -> str:
    """Validate, keep the best weights and update the early-stopping state; returns the log text."""
    model.fill_cold_rows()  # never trained: the warm mean (changes nothing of the training, see the module docstring)
    valid = run_eval("valid")
    value = valid["metrics"][cfg.metric]
    state["history"].append(
        {"epoch": state["epoch"], "loss": loss, "num_users": valid["num_users"], **valid["metrics"]}
    )
    if value > state["best"]:
        state.update(best=value, best_epoch=state["epoch"], bad_evals=0, best_valid={**valid, "epoch": state["epoch"]})
        save_weights(model, out / "model.safetensors")
    else:
        state["bad_evals"] += 1
    state["stopped"] = state["bad_evals"] >= cfg.patience
    return (
        f", valid {cfg.metric} {value:.5f} (best {state['best']:.5f} @ {state['best_epoch']}),"
        f" eval {valid['wall_time_s']:.1f}s"
    )
