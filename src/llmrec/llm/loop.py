"""The one training loop behind ``llmrec train``, ``accelerate launch -m llmrec train`` and ``torchrun -m llmrec train``.

Steps: validate every input (data, template, model, LoRA targets) before the run directory is touched; build the
model (``llmrec.llm.build``); make examples and global batches (``llmrec.llm.examples``); AdamW + schedule
(``llmrec.llm.optim``); train; validate every ``eval_every`` steps (and after the last) with the shared evaluator
on a fixed subsample of ``eval_users`` validation users, keeping the best adapter; checkpoint (every ``save_every``
steps and after every validation); finally test the best adapter once, reloaded from the run directory exactly as
``llmrec evaluate`` would.

Distributed: the loss of a step is the sum over the local targets divided by the global number of targets (times
the world size, because DDP averages), so a step is identical whatever the number of processes. Validation and
saving run on the main process with the unwrapped model, which is correct for DDP (every process holds all
weights); FSDP and DeepSpeed shard the weights and are refused with a clear error until they are supported.
``--resume`` restores adapter, optimizer, scheduler, per-process RNG and the position inside the epoch.

Cold-start items (``llmrec prepare --cold_items``) never reach training (``llmrec.llm.build``); with atomic item
tokens their rows are written from their text before every validation and before the adapter is saved
(``llmrec.llm.coldrows``: the nearest warm items' rows, or the text projector, then saved with the best adapter as
``text_projector.safetensors``). An atomic run that keeps item texts saves them as ``item_text.safetensors``; with
``--text_fusion -1`` the fusion weight is selected on the validation subsample before the test
(``llmrec.llm.fusion``), and ``metrics.json``'s ``valid`` is then the best step's validation with that weight (the
model that is tested); ``history`` keeps the validations during training, without fusion.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, set_seed
from tqdm.auto import tqdm

from llmrec.config import ConfigError, save_config
from llmrec.data import PreparedData, load_prepared
from llmrec.evaluation import evaluate
from llmrec.items.neighbors import save_item_text
from llmrec.items.projector import save_projector
from llmrec.items.semantic import SemanticIds
from llmrec.llm.build import BuiltModel, build_model, needs_item_text
from llmrec.llm.checkpoint import load_checkpoint, save_adapter, save_checkpoint
from llmrec.llm.coldrows import project_cold_rows, run_item_texts
from llmrec.llm.config import TrainConfig
from llmrec.llm.examples import build_examples, collate, epoch_batches
from llmrec.llm.fusion import select_fusion
from llmrec.llm.optim import make_optimizer, make_scheduler
from llmrec.llm.recommender import load_llm_run, make_recommender
from llmrec.llm.rundir import (
    apply_plan,
    check_resumed_codes,
    plan_train_dir,
    resumed_codes,
    trim_log,
    write_train_run,
)
from llmrec.runs import write_metrics, write_test_ranks


@dataclass
class LoopState:
    """Where the loop is; saved as ``checkpoint/state.json``."""

    step: int = 0
    epoch: int = 0
    batch: int = 0  # next batch index inside the epoch
    best: dict | None = None  # the best validation entry so far
    bad_evals: int = 0
    evals: list = field(default_factory=list)
    train_time_s: float = 0.0
    train_tokens: int = 0
    last_loss: float | None = None


class Trainer:
    """One training run (see the module docstring); ``run()`` returns the ``metrics.json`` content."""

    def __init__(self, cfg: TrainConfig, acc: Accelerator, data: PreparedData, built: BuiltModel, resume: bool,
                 started: float | None = None):  # fmt: skip
        self.cfg, self.acc, self.data, self.built = cfg, acc, data, built
        self.started = time.perf_counter() if started is None else started  # this process's start, for wall_time_s
        self.run_dir = Path(cfg.output_dir)
        tok = built.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        train = data.train_sequences()[: cfg.max_train_users] if cfg.max_train_users else data.train_sequences()
        self.examples = build_examples(train, built.encoder, cfg.objective, cfg.max_history)
        self.lengths = [len(e[0]) for e in self.examples]
        self.world, self.ga = acc.num_processes, cfg.grad_accum
        steps_per_epoch = len(self.batches(0))
        self.total_steps = math.ceil(cfg.epochs * steps_per_epoch)
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps) if cfg.epochs > 0 else cfg.max_steps
        optimizer = make_optimizer(built.item_lm, cfg)
        self.scheduler = make_scheduler(cfg, optimizer, self.total_steps)
        self.model, self.optimizer = acc.prepare(built.item_lm, optimizer)
        self.item_lm = acc.unwrap_model(self.model)
        self.valid_data = data.subsample(cfg.eval_users, cfg.seed)
        self.item_text = built.text if needs_item_text(cfg, data) else None  # cold rows and text fusion come from it
        self.state = LoopState()
        if resume:
            check_resumed_codes(built, self.run_dir)
            self.state = LoopState(**load_checkpoint(acc, self.item_lm, self.optimizer, self.scheduler, self.run_dir))
            if acc.is_main_process:  # e.g. more epochs than the first launch: keep the resolved config current
                save_config(cfg, self.run_dir / "config.yaml")
                trim_log(self.run_dir / "train_log.jsonl", self.state.step)
        elif acc.is_main_process:
            write_train_run(cfg, data, built, self.run_dir)
        if acc.is_main_process and self.item_text is not None:  # static: written at once, not only with a best
            save_item_text(run_item_texts(self.item_text, data.cold_items, max(cfg.text_fusion, 0.0)), self.run_dir)
        acc.wait_for_everyone()

    def batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch, self.world * self.ga)

    def run(self) -> dict:
        cfg, acc, state = self.cfg, self.acc, self.state
        bar = tqdm(total=self.total_steps, initial=state.step, desc="train", dynamic_ncols=True,
                   disable=not (cfg.progress and acc.is_main_process))  # fmt: skip
        stop = False
        self.model.train()
        while state.step < self.total_steps and not stop:
            batches = self.batches(state.epoch)
            for bi in range(state.batch, len(batches)):
                self.train_step(batches[bi])
                state.batch = bi + 1
                bar.update(1)
                bar.set_postfix(loss=f"{state.last_loss:.4f}", tok_s=f"{self.tokens_per_s():.0f}", epoch=state.epoch)
                last_of_epoch = bi == len(batches) - 1
                if last_of_epoch:
                    state.epoch, state.batch = state.epoch + 1, 0
                finished = state.step >= self.total_steps
                stop = self.after_step(last_of_epoch, finished)
                if stop or finished or last_of_epoch:
                    break
        bar.close()
        if not state.evals:
            projector = self.project_cold()
            if acc.is_main_process:
                self.save_best(projector)
        acc.wait_for_everyone()
        return self.finish()

    def train_step(self, batch: list[int]) -> None:
        """One optimizer step on a global batch: this process' share, in ``grad_accum`` micro-batches."""
        acc, state = self.acc, self.state
        t0 = time.perf_counter()
        n_targets = sum(len(self.examples[i][1]) for i in batch)
        rank = acc.process_index
        parts = np.array_split(np.array(batch), self.world * self.ga)[rank * self.ga : (rank + 1) * self.ga]
        local_loss = torch.zeros((), device=acc.device)
        for m, part in enumerate(parts):
            ids, mask, tmask = collate(self.examples, part.tolist(), self.pad_id)
            sync = contextlib.nullcontext() if m == self.ga - 1 else acc.no_sync(self.model)
            with sync:
                loss_sum, _ = self.model(ids.to(acc.device), mask.to(acc.device), tmask.to(acc.device))
                acc.backward(loss_sum * self.world / n_targets)
            local_loss += loss_sum.detach()
        if self.cfg.max_grad_norm:
            acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.last_loss = (acc.reduce(local_loss, reduction="sum") / n_targets).item()
        state.step += 1
        state.train_time_s += time.perf_counter() - t0
        state.train_tokens += sum(self.lengths[i] for i in batch)
        if acc.is_main_process and (state.step % self.cfg.log_every == 0 or state.step == 1):
            entry = {"step": state.step, "epoch": state.epoch, "loss": state.last_loss,
                     "lr": self.scheduler.get_last_lr()[0], "tokens_per_s": self.tokens_per_s()}  # fmt: skip
            with open(self.run_dir / "train_log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")

    def tokens_per_s(self) -> float:
        return self.state.train_tokens / max(self.state.train_time_s, 1e-9)

    def after_step(self, last_of_epoch: bool, finished: bool) -> bool:
        """Validate and checkpoint on schedule (always after the last step); returns True to stop early."""
        cfg, step = self.cfg, self.state.step
        do_eval = (cfg.eval_every and step % cfg.eval_every == 0) or (not cfg.eval_every and last_of_epoch) or finished
        stop = False
        if do_eval:
            self.model.eval()
            stop = self.validate()
            self.model.train()
        # after every validation too: a resume never repeats one (on a large validation set it costs as much as
        # hundreds of steps) and, after the last, goes straight to the final phase
        if do_eval or (cfg.save_every and step % cfg.save_every == 0):
            save_checkpoint(self.acc, self.item_lm, self.optimizer, self.scheduler, asdict(self.state), self.run_dir)
        return stop

    def project_cold(self):
        """Write the cold items' rows from their text (every process: the same rows); the projector, or None."""
        if self.item_text is None or self.built.sids is not None:  # semantic IDs: cold items have code paths
            return None
        cfg = self.cfg
        return project_cold_rows(self.item_lm, self.item_text, self.data.cold_items, cfg.seed, cfg.cold_rows,
                                 cfg.cold_knn)  # fmt: skip

    def save_best(self, projector) -> None:
        """The current adapter (and the text projector that wrote its cold rows) as the run's best."""
        save_adapter(self.item_lm, self.run_dir)
        if projector is not None:
            save_projector(projector, self.run_dir)

    def choose_fusion(self, train: dict) -> tuple:
        """``--text_fusion -1``: the best run reloaded, its fusion weight selected on the validation subsample and
        saved; returns the recommender and the ``valid`` entry of the model that is tested (the best step's, with that
        weight); ``(None, None)`` when nothing is selected."""
        if self.cfg.text_fusion != -1:
            return None, None
        rec = load_llm_run(self.run_dir, device=str(self.acc.device), batch_size=self.cfg.eval_batch_size)
        weight, valid, table = select_fusion(rec, self.valid_data)
        save_item_text(run_item_texts(self.item_text, self.data.cold_items, weight), self.run_dir)
        train["text_fusion"] = {"selected": weight, "valid": table, "num_users": self.valid_data.num_users}
        self.acc.print(f"text fusion: weight {weight} selected on {self.valid_data.num_users} validation users")
        best = {k: self.state.best[k] for k in ("step", "epoch")}
        return rec, best | with_speed(valid) | {"text_fusion": weight}

    def validate(self) -> bool:
        """Validate on the main process, keep the best adapter; returns True (on every process) to stop."""
        acc, state, cfg = self.acc, self.state, self.cfg
        stop = [False]
        projector = self.project_cold()
        if acc.is_main_process:
            b = self.built
            rec = make_recommender(self.item_lm, b.encoder, b.tokenizer, self.data.catalog, cfg.eval_batch_size,
                                   trie=b.trie, beam_width=cfg.beam_width, normalize=cfg.sid_loss)  # fmt: skip
            res = evaluate(rec.score, self.valid_data, "valid", mask_history=True, batch_size=256,
                           protocol_note=rec.protocol_note)  # fmt: skip
            entry = {"step": state.step, "epoch": state.epoch, **with_speed(res)}
            state.evals.append({k: entry[k] for k in ("step", "epoch", "num_users", "users_per_s")}
                               | {k: res["metrics"][k] for k in ("ndcg@10", "hr@10")})  # fmt: skip
            ndcg = res["metrics"]["ndcg@10"]
            if state.best is None or ndcg > state.best["metrics"]["ndcg@10"]:
                state.best, state.bad_evals = entry, 0
                self.save_best(projector)
            else:
                state.bad_evals += 1
            best = state.best
            acc.print(f"validation step {state.step}: ndcg@10 {ndcg:.4f} hr@10 {res['metrics']['hr@10']:.4f} "
                      f"(best {best['metrics']['ndcg@10']:.4f} at step {best['step']})")  # fmt: skip
            stop = [bool(cfg.patience) and state.bad_evals >= cfg.patience]
        broadcast_object_list(stop)
        return stop[0]

    def finish(self) -> dict:
        """Test the best adapter once (reloaded from the run directory) and write ``metrics.json``."""
        acc, state, cfg = self.acc, self.state, self.cfg
        train = {"steps": state.step, "epochs_done": state.epoch, "last_loss": state.last_loss,
                 "train_time_s": state.train_time_s, "train_tokens_per_s": self.tokens_per_s(),
                 "num_processes": self.world}  # fmt: skip
        result = {"status": "done", "valid": state.best, "test": None, "history": state.evals, "train": train}
        if acc.is_main_process:
            info = json.loads((self.run_dir / "run.json").read_text())
            selected, fused = self.choose_fusion(train)
            result["valid"] = fused or result["valid"]
            if cfg.test_users >= 0:
                rec = selected or load_llm_run(self.run_dir, device=str(acc.device), batch_size=cfg.eval_batch_size)
                test_data = self.data.subsample(cfg.test_users, cfg.seed)
                every = test_data.num_users == self.data.num_users  # ranks are kept for a test of every user
                res = evaluate(rec.score, test_data, "test", mask_history=True, batch_size=256, progress=cfg.progress,
                               protocol_note=rec.protocol_note, return_ranks=every)  # fmt: skip
                res = write_test_ranks(self.run_dir, info, res) if every else res
                result["test"] = with_speed(res)
            train["wall_time_s"] = round(time.perf_counter() - self.started, 2)  # this process: build, train, evals
            result = write_metrics(self.run_dir, info, **result)
        acc.wait_for_everyone()
        return result


def with_speed(res: dict) -> dict:
    """An evaluator result with its ``users_per_s``."""
    return {**res, "users_per_s": res["num_users"] / max(res["wall_time_s"], 1e-9)}


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The ``Accelerator`` of a run; refuses sharded-parameter launchers (see the module docstring)."""
    # cpu=True without CUDA: accelerate sets up gloo (MULTI_CPU) under torchrun only when told it runs on CPU.
    acc = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ConfigError(
            f"{acc.distributed_type.value}: not supported yet (validation and saving need the full weights on one "
            "process); launch with DDP (`accelerate launch --multi_gpu`) or a single process"
        )
    return acc


def train(cfg: TrainConfig, sids: SemanticIds | None = None) -> dict:
    """Train per ``cfg`` and write the run directory. Returns the ``metrics.json`` content (on every process).

    ``sids``: precomputed semantic IDs for ``--item_ids semantic`` (see ``build_model``); ``None``: from ``cfg``.
    """
    started = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    acc = make_accelerator(cfg)
    set_seed(cfg.seed)
    plan = plan_train_dir(cfg)  # a refused run directory fails before anything loads
    data = load_prepared(cfg.data)  # every input is checked before the run directory is touched
    if plan == "resume" and sids is None and cfg.item_ids == "semantic":
        sids = resumed_codes(cfg, Path(cfg.output_dir))  # the run's own codes, not clustered again
    built = build_model(cfg, data, sids=sids)
    resume = apply_plan(cfg, acc, plan)
    result = Trainer(cfg, acc, data, built, resume, started).run()
    acc.end_training()
    return result
