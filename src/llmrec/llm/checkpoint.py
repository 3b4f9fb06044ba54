"""Checkpoints of ``llmrec train``: everything to continue a run exactly, written so a kill never loses one.

``RUN_DIR/checkpoint/`` holds ``adapter.safetensors`` (LoRA + item rows), ``optimizer.pt``, ``scheduler.pt``,
``state.json`` (the loop position), ``rng_{process}.pt`` per process and, with ``--content_dropout``,
``text_map.safetensors`` (the learned text map, ``llmrec.llm.textmap``). It is written into
``.checkpoint.tmp``, fsynced and swapped in with ``llmrec.files.replace_dir``: a kill at any moment leaves the
previous or the new checkpoint. The best-on-validation adapter (``RUN_DIR/adapter/``) is swapped in the same way.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from llmrec.files import atomic_write_json, recover_dir, replace_dir

TEXT_MAP_FILE = "text_map.safetensors"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def has_checkpoint(run_dir: Path) -> bool:
    return (recover_dir(run_dir / "checkpoint") / "state.json").is_file()


def save_checkpoint(acc, item_lm, optimizer, scheduler, state: dict, run_dir: Path) -> None:
    """Write ``run_dir/checkpoint`` (all processes take part: each saves its RNG state)."""
    tmp, final = run_dir / ".checkpoint.tmp", run_dir / "checkpoint"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        adapter = get_peft_model_state_dict(item_lm.lm, save_embedding_layers=False)
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, str(tmp / "adapter.safetensors"))
        if item_lm.text_map is not None:  # --content_dropout: the learned text map trains with the adapter
            text_map = {k: v.detach().cpu().contiguous() for k, v in item_lm.text_map.state_dict().items()}
            save_file(text_map, str(tmp / TEXT_MAP_FILE))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        atomic_write_json(tmp / "state.json", state)
    acc.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng_{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        replace_dir(tmp, final)
    acc.wait_for_everyone()


def load_checkpoint(acc, item_lm, optimizer, scheduler, run_dir: Path) -> dict:
    """Restore adapter, optimizer, scheduler and this process' RNG from ``run_dir/checkpoint``; returns the state."""
    ckpt = recover_dir(run_dir / "checkpoint")
    set_peft_model_state_dict(item_lm.lm, load_file(str(ckpt / "adapter.safetensors")))
    if item_lm.text_map is not None:
        if not (ckpt / TEXT_MAP_FILE).is_file():
            raise ValueError(f"{ckpt}: no {TEXT_MAP_FILE}; this checkpoint was not trained with --content_dropout")
        item_lm.text_map.load_state_dict(load_file(str(ckpt / TEXT_MAP_FILE)))
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))
    rng_file = ckpt / f"rng_{acc.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((ckpt / "state.json").read_text())


def save_adapter(item_lm, run_dir: Path) -> None:
    """Write the current LoRA + item rows as ``run_dir/adapter`` (peft format), swapped in atomically."""
    tmp = run_dir / ".adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    item_lm.lm.save_pretrained(tmp, save_embedding_layers=False)
    replace_dir(tmp, run_dir / "adapter")
