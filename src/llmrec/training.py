"""The one training loop behind `llmrec train`, `accelerate launch -m llmrec.train` and `torchrun -m llmrec.train`.

Objectives:
    sequence (default)  one example per user (per window of ``max_history + 1`` items for longer users): the
                        prompt of the training part ``s[:-2]`` with its last item as the target; cross-entropy over
                        the item vocabulary at every item position after the first item, from the hidden state
                        before it. One forward pass trains all next-item predictions of the window.
    sft                 classic supervised fine-tuning: one prompt per (prefix, next item) pair, loss at the
                        target only. Same number of predictions, many more forward passes.

Batches: ``batch_size`` examples per optimizer step over all processes and accumulation micro-batches, built from
the seed and epoch (length-bucketed, shuffled), so every process knows the global batch; the loss is the sum over
the local targets divided by the global number of targets (times the world size, because DDP averages), which
makes a step identical whatever the number of processes. ``--resume`` restores adapter, optimizer, scheduler,
per-process RNG and the position inside the epoch from ``output_dir/checkpoint``.

Early stopping: NDCG@10 on a fixed random subsample of ``eval_users`` validation users (shared evaluator,
history masked, full ranking), computed on the main process; the best adapter is kept in ``output_dir/adapter``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from llmrec.config import ConfigError, atomic_write_json, save_config
from llmrec.data.dataset import PreparedData, load_prepared
from llmrec.train import TrainConfig

SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def make_scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    """The learning-rate schedule of ``cfg.lr_schedule`` over ``total_steps`` optimizer steps (after warm-up).

    ``wsd`` (warm-up, stable, decay) holds the peak rate and decays linearly to 0 over the last
    ``cfg.decay_fraction`` of the steps, so early stopping still sees the fast constant-rate phase.
    """
    from transformers import get_scheduler, get_wsd_schedule

    if cfg.lr_schedule == "wsd":
        decay = max(1, round(cfg.decay_fraction * total_steps))
        return get_wsd_schedule(
            optimizer,
            num_warmup_steps=cfg.warmup_steps,
            num_decay_steps=decay,
            num_training_steps=total_steps,
            decay_type="linear",
        )
    return get_scheduler(
        SCHEDULER_NAMES[cfg.lr_schedule], optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps
    )


def pull_toward(params: list[torch.Tensor], anchors: list[torch.Tensor], rate: float) -> None:
    """In place, without grad: ``p -= rate * (p - anchor)`` for each pair (decoupled decay toward ``anchor``).

    With ``rate = lr * item_init_decay`` this is AdamW's decoupled weight decay with the initial values as the
    centre instead of zero.
    """
    with torch.no_grad():
        for p, a in zip(params, anchors):
            p.sub_(rate * (p - a))


def build_examples(
    sequences: list[list[int]], encoder, objective: str, max_history: int
) -> list[tuple[list[int], list[int]]]:
    """Training examples ``(token_ids, target_positions)`` from training sequences (see the module docstring)."""
    vocab = encoder.vocab
    examples = []
    for seq in sequences:
        if len(seq) < 2:
            continue
        if objective == "sequence":
            # windows of max_history + 1 items from the end; each window's first item is the previous window's
            # last target, so every item but the very first is predicted exactly once (as in sft)
            end = len(seq)
            while end > 1:
                start = max(0, end - max_history - 1)
                s = seq[start:end]
                ids = encoder.encode(s[:-1], target=s[-1])
                # every item token but the window's first, which has no history inside the window
                targets = [p for p in range(1, len(ids)) if vocab.first_id <= ids[p] < vocab.end_id][1:]
                examples.append((ids, targets))
                end = start + 1
        else:
            for t in range(1, len(seq)):
                ids = encoder.encode(seq[max(0, t - max_history) : t], target=seq[t])
                examples.append((ids, [len(ids) - 1]))
    return examples


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, min_size: int = 1) -> list[list[int]]:
    """Global batches of one epoch: shuffled, length-bucketed within windows of 50 batches, batch order shuffled.

    A final batch smaller than ``min_size`` (processes x micro-batches) is dropped.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    window = batch_size * 50
    batches = []
    for start in range(0, len(perm), window):
        chunk = sorted(perm[start : start + window].tolist(), key=lambda i: lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) >= min_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(examples, idx: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask, target_mask)`` for examples ``idx``."""
    width = max(len(examples[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    tmask = torch.zeros((len(idx), width), dtype=torch.bool)
    for row, i in enumerate(idx):
        tokens, targets = examples[i]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        tmask[row, targets] = True
    return ids, mask, tmask


def subsample(data: PreparedData, n: int, seed: int) -> PreparedData:
    """The same data restricted to ``n`` random users (all if ``n`` <= 0 or >= the user count)."""
    if n <= 0 or n >= data.num_users:
        return data
    keep = sorted(np.random.default_rng(seed).choice(data.num_users, n, replace=False).tolist())
    return PreparedData(
        catalog=data.catalog,
        users=[data.users[i] for i in keep],
        sequences=[data.sequences[i] for i in keep],
        stats=data.stats,
        meta=data.meta,
    )


def build_model(cfg: TrainConfig, data: PreparedData):
    """Base LM + item tokens (title init) + LoRA -> ``(ItemLM, tokenizer, PromptEncoder, template)``."""
    from llmrec.modeling.item_tokens import add_item_tokens, init_item_embeddings, resize_for_items
    from llmrec.modeling.llm import ItemLM, apply_lora
    from llmrec.modeling.lm import load_causal_lm
    from llmrec.prompts import PromptEncoder, load_template

    lm, tokenizer = load_causal_lm(
        cfg.model,
        num_layers=cfg.num_layers,
        dtype=cfg.dtype,
        load_in_4bit=cfg.load_in_4bit,
        trust_remote_code=cfg.trust_remote_code,
        untie_lm_head=cfg.untie_lm_head,
    )
    vocab = add_item_tokens(tokenizer, data.num_items)
    resize_for_items(lm, vocab)
    init_item_embeddings(lm, tokenizer, vocab, data.catalog.titles, init=cfg.item_init, seed=cfg.seed)
    if cfg.item_cf_dim:
        from llmrec.modeling.cf_init import add_cf_rows, cooccurrence_factors
        from llmrec.modeling.item_tokens import item_row_weights

        if cfg.item_cf_dim > lm.get_input_embeddings().weight.shape[1]:
            raise ValueError(f"item_cf_dim {cfg.item_cf_dim} exceeds the model's hidden size")
        factors = cooccurrence_factors(
            data.train_sequences(), data.num_items, cfg.item_cf_dim, cfg.item_cf_window, cfg.seed
        )
        rows = [w.data[vocab.first_id : vocab.end_id] for w in item_row_weights(lm)]
        add_cf_rows(rows, factors, cfg.item_cf_scale, cfg.seed)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm = apply_lora(lm, vocab, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_mlp=cfg.lora_mlp)
    template = load_template(cfg.prompt)
    encoder = PromptEncoder(template, tokenizer, vocab, data.catalog, cfg.max_history, cfg.max_prompt_tokens)
    return (
        ItemLM(
            lm,
            vocab,
            embed_dropout=cfg.embed_dropout,
            item_mask_prob=cfg.item_mask_prob,
            item_mask_fill=cfg.item_mask_fill,
            hidden_dropout=cfg.hidden_dropout,
            label_smoothing=cfg.label_smoothing,
            item_delta_rank=cfg.item_delta_rank,
        ),
        tokenizer,
        encoder,
        template,
    )


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(acc, item_lm, optimizer, scheduler, state: dict, run_dir: Path) -> None:
    """Write ``run_dir/checkpoint`` (adapter weights, optimizer, scheduler, RNG per process, loop state) atomically."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp, final = run_dir / ".checkpoint.tmp", run_dir / "checkpoint"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

        def save(tensors: dict, name: str) -> None:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name))

        save(get_peft_model_state_dict(item_lm.lm, save_embedding_layers=False), "adapter.safetensors")
        if item_lm.item_delta is not None:
            save(item_lm.item_delta.state_dict(), "item_delta.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_json(tmp / "state.json", state)
    acc.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng_{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    acc.wait_for_everyone()


def load_checkpoint(acc, item_lm, optimizer, scheduler, run_dir: Path) -> dict:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    ckpt = run_dir / "checkpoint"
    if not (ckpt / "state.json").is_file():
        raise FileNotFoundError(f"--resume: no checkpoint in {ckpt}")
    set_peft_model_state_dict(item_lm.lm, load_file(str(ckpt / "adapter.safetensors")))
    if item_lm.item_delta is not None:
        item_lm.item_delta.load_state_dict(load_file(str(ckpt / "item_delta.safetensors"), device=str(acc.device)))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    rng_file = ckpt / f"rng_{acc.process_index}.pt"
    if rng_file.is_file():
        _set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((ckpt / "state.json").read_text())


def validate(item_lm, encoder, tokenizer, data: PreparedData, split: str, batch_size: int, progress=False) -> dict:
    """Shared evaluator on ``data`` (history masked, full ranking) with the fast scoring path."""
    from llmrec.evaluation import evaluate
    from llmrec.modeling.llm import LLMRecommender

    rec = LLMRecommender(item_lm, encoder, tokenizer, data.catalog, batch_size=batch_size)
    return evaluate(rec.score, data, split, mask_history=True, batch_size=256, progress=progress)


def _write_run_files(cfg: TrainConfig, tokenizer, template, run_dir: Path) -> None:
    import llmrec

    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    tokenizer.save_pretrained(run_dir / "tokenizer")
    (run_dir / "prompt.txt").write_text(template.text, encoding="utf-8")
    atomic_write_json(
        run_dir / "run.json",
        {
            "kind": "llm",
            "data": str(Path(cfg.data).resolve()),
            "model": cfg.model,
            "num_layers": cfg.num_layers,
            "prompt": template.name,
            "llmrec_version": llmrec.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )


def train(cfg: TrainConfig) -> dict:
    """Train per ``cfg`` and write the run directory. Returns the metrics dict (also in ``metrics.json``)."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, set_seed
    from tqdm.auto import tqdm

    # cpu=True without CUDA: accelerate only sets up gloo (MULTI_CPU) under torchrun when told it runs on CPU.
    acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    run_dir = Path(cfg.output_dir)
    holds_run = any((run_dir / name).exists() for name in ("run.json", "checkpoint", "metrics.json"))
    acc.wait_for_everyone()  # every process has looked before the main one deletes anything
    if holds_run and cfg.overwrite:
        if acc.is_main_process:
            shutil.rmtree(run_dir)
        acc.wait_for_everyone()
    elif holds_run and not cfg.resume:
        raise ConfigError(
            f"output_dir: {run_dir} already holds a run; pass --resume true to continue it, --overwrite true to "
            "start over, or choose a new directory"
        )
    data = load_prepared(cfg.data)
    item_lm, tokenizer, encoder, template = build_model(cfg, data)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    train_seqs = data.train_sequences()
    if cfg.max_train_users:
        train_seqs = train_seqs[: cfg.max_train_users]
    examples = build_examples(train_seqs, encoder, cfg.objective, cfg.max_history)
    lengths = [len(e[0]) for e in examples]
    world, ga = acc.num_processes, cfg.grad_accum
    steps_per_epoch = len(batch_order(lengths, cfg.batch_size, cfg.seed, 0, world * ga))
    total_steps = math.ceil(cfg.epochs * steps_per_epoch)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps

    params = [(n, p) for n, p in item_lm.named_parameters() if p.requires_grad]
    is_item = lambda n: "trainable_tokens" in n or n.startswith("item_delta.")  # noqa: E731
    groups = [
        {"params": [p for n, p in params if not is_item(n)], "weight_decay": cfg.weight_decay},
        {
            "params": [p for n, p in params if is_item(n)],
            "weight_decay": cfg.item_weight_decay,
            "lr": cfg.item_lr or cfg.lr,
            "eps": cfg.item_adam_eps,
        },
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)
    scheduler = make_scheduler(cfg, optimizer, total_steps)
    model, optimizer = acc.prepare(item_lm, optimizer)
    item_lm = acc.unwrap_model(model)
    item_params = groups[1]["params"]
    # the item rows as built (title init, already on the device), before any checkpoint is loaded: the centre of
    # item_init_decay
    anchors = [p.detach().clone() for p in item_params] if cfg.item_init_decay else []

    valid_data = subsample(data, cfg.eval_users, cfg.seed)
    state = {
        "step": 0,
        "epoch": 0,
        "batch": 0,
        "best": None,
        "bad_evals": 0,
        "evals": [],
        "train_time_s": 0.0,
        "train_tokens": 0,
    }
    if cfg.resume:
        state = load_checkpoint(acc, item_lm, optimizer, scheduler, run_dir)
        if acc.is_main_process:  # e.g. more epochs than the first launch: keep the resolved config current
            save_config(cfg, run_dir / "config.yaml")
    elif acc.is_main_process:
        _write_run_files(cfg, tokenizer, template, run_dir)
    acc.wait_for_everyone()

    def run_validation() -> bool:
        """Validate on the main process; returns True when training should stop."""
        stop = [False]
        if acc.is_main_process:
            res = validate(item_lm, encoder, tokenizer, valid_data, "valid", cfg.eval_batch_size)
            ndcg = res["metrics"]["ndcg@10"]
            entry = {
                "step": state["step"],
                "epoch": state["epoch"],
                "ndcg@10": ndcg,
                "hr@10": res["metrics"]["hr@10"],
                "users": res["num_users"],
                "users_per_s": res["num_users"] / max(res["wall_time_s"], 1e-9),
            }
            state["evals"].append(entry)
            if state["best"] is None or ndcg > state["best"]["ndcg@10"]:
                state["best"], state["bad_evals"] = entry, 0
                with item_lm.folded_item_delta():  # the saved rows include the delta: load_run needs no delta
                    item_lm.lm.save_pretrained(run_dir / "adapter", save_embedding_layers=False)
            else:
                state["bad_evals"] += 1
            acc.print(
                f"validation step {state['step']}: ndcg@10 {ndcg:.4f} hr@10 {entry['hr@10']:.4f} "
                f"(best {state['best']['ndcg@10']:.4f} at step {state['best']['step']})"
            )
            stop = [bool(cfg.patience) and state["bad_evals"] >= cfg.patience]
        broadcast_object_list(stop)
        return stop[0]

    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        disable=not (cfg.progress and acc.is_main_process),
        desc="train",
        dynamic_ncols=True,
    )
    log_path = run_dir / "train_log.jsonl"
    stop = False
    model.train()
    while state["step"] < total_steps and not stop:
        batches = batch_order(lengths, cfg.batch_size, cfg.seed, state["epoch"], world * ga)
        for bi in range(state["batch"], len(batches)):
            t0 = time.perf_counter()
            batch = batches[bi]
            n_targets = sum(len(examples[i][1]) for i in batch)
            parts = np.array_split(np.array(batch), world * ga)[acc.process_index * ga : (acc.process_index + 1) * ga]
            local_loss = torch.zeros((), device=acc.device)
            for m, part in enumerate(parts):
                ids, mask, tmask = collate(examples, part.tolist(), pad_id)
                sync = contextlib.nullcontext() if m == ga - 1 else acc.no_sync(model)
                with sync:
                    loss_sum, _ = model(ids.to(acc.device), mask.to(acc.device), tmask.to(acc.device))
                    acc.backward(loss_sum * world / n_targets)
                local_loss += loss_sum.detach()
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            if anchors:
                item_lr = next(g["lr"] for g in optimizer.param_groups if g["params"][0] is item_params[0])
                pull_toward(item_params, anchors, item_lr * cfg.item_init_decay)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss = (acc.reduce(local_loss, reduction="sum") / n_targets).item()
            state["step"] += 1
            state["batch"] = bi + 1
            state["train_time_s"] += time.perf_counter() - t0
            state["train_tokens"] += sum(lengths[i] for i in batch)
            tps = state["train_tokens"] / max(state["train_time_s"], 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tps:.0f}", epoch=state["epoch"])
            if acc.is_main_process and (state["step"] % cfg.log_every == 0 or state["step"] == 1):
                with open(log_path, "a") as f:
                    f.write(
                        json.dumps(
                            {
                                "step": state["step"],
                                "epoch": state["epoch"],
                                "loss": loss,
                                "lr": scheduler.get_last_lr()[0],
                                "tokens_per_s": tps,
                            }
                        )
                        + "\n"
                    )
            state["last_loss"] = loss
            last_of_epoch = bi == len(batches) - 1
            if last_of_epoch:
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
            finished = state["step"] >= total_steps
            # validate on schedule, and always after the last step so the final weights are never lost
            do_eval = (
                (cfg.eval_every and state["step"] % cfg.eval_every == 0)
                or (not cfg.eval_every and last_of_epoch)
                or finished
            )
            if do_eval:
                model.eval()
                stop = run_validation()
                model.train()
            if (cfg.save_every and state["step"] % cfg.save_every == 0) or (do_eval and not cfg.save_every):
                save_checkpoint(acc, item_lm, optimizer, scheduler, state, run_dir)
            if stop or finished or last_of_epoch:
                break
    bar.close()
    if not state["evals"] and acc.is_main_process:
        with item_lm.folded_item_delta():
            item_lm.lm.save_pretrained(run_dir / "adapter", save_embedding_layers=False)
    acc.wait_for_everyone()

    result = {
        "is_main": acc.is_main_process,
        "steps": state["step"],
        "epochs_done": state["epoch"],
        "last_loss": state.get("last_loss"),
        "train_time_s": state["train_time_s"],
        "train_tokens_per_s": state["train_tokens"] / max(state["train_time_s"], 1e-9),
        "num_processes": world,
        "evals": state["evals"],
        "best_valid": None,
        "test": None,
    }
    if acc.is_main_process:
        if state["best"] is not None:
            result["best_valid"] = {
                "metrics": {"ndcg@10": state["best"]["ndcg@10"], "hr@10": state["best"]["hr@10"]},
                "num_users": state["best"]["users"],
                "step": state["best"]["step"],
            }
        if cfg.test_users >= 0:
            from llmrec.modeling.llm import load_run

            rec = load_run(run_dir, device=str(acc.device), batch_size=cfg.eval_batch_size)
            test_data = subsample(data, cfg.test_users, cfg.seed)
            from llmrec.evaluation import evaluate

            res = evaluate(rec.score, test_data, "test", mask_history=True, batch_size=256, progress=cfg.progress)
            res["users_per_s"] = res["num_users"] / max(res["wall_time_s"], 1e-9)
            result["test"] = res
        atomic_write_json(run_dir / "metrics.json", {k: v for k, v in result.items() if k != "is_main"})
    acc.wait_for_everyone()
    acc.end_training()
    return result
