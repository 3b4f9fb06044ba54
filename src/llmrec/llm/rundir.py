"""The run directory of ``llmrec train``: start, resume or refuse (``llmrec.runs.plan_run_dir``), and its first files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml

from llmrec.config import ConfigError, save_config
from llmrec.data import DataError, PreparedData
from llmrec.files import atomic_write_text
from llmrec.items.projector import PROJECTOR_FILE
from llmrec.items.semantic_store import CENTROIDS_FILE, IDS_FILE, load_semantic_ids, save_semantic_ids
from llmrec.llm.checkpoint import has_checkpoint
from llmrec.runs import RANKS_FILE, RANKS_META, clear_outputs, plan_run_dir, write_run_info

# everything `llmrec train` writes into a run directory (what --overwrite may remove; feedback.sqlite stays)
TRAIN_OUTPUTS = ("run.json", "config.yaml", "catalog.parquet", "prompt.txt", "tokenizer", "adapter", "checkpoint",
                 ".checkpoint.tmp", ".checkpoint.old", ".adapter.tmp", ".adapter.old", "metrics.json",
                 "train_log.jsonl", "eval_valid.json", "eval_test.json", "eval_valid_warm.json", "eval_valid_cold.json",
                 "eval_test_warm.json", "eval_test_cold.json", IDS_FILE, CENTROIDS_FILE, PROJECTOR_FILE, RANKS_FILE,
                 RANKS_META)  # fmt: skip
# the options that, with the data, decide a semantic-ID run's code paths: a resumed run keeps those it started with
CODE_OPTIONS = ("item_ids", "sid_levels", "sid_codes", "sid_embeddings", "sid_cf_weight", "sid_kmeans",
                "sid_extra_codes", "item_text_encoder", "item_cf_dim", "item_cf_window", "seed")  # fmt: skip


def plan_train_dir(cfg) -> str:
    """``plan_run_dir`` for ``cfg.output_dir`` (only reads: call it before anything loads).

    Raises:
        ConfigError: the directory is refused.
    """
    run_dir = Path(cfg.output_dir)
    return plan_run_dir(run_dir, cfg.resume, cfg.overwrite, run_dir.is_dir() and has_checkpoint(run_dir))


def apply_plan(cfg, acc, plan: str) -> bool:
    """Carry out ``plan`` (from ``plan_train_dir``) on every process; returns True when the run resumes."""
    run_dir = Path(cfg.output_dir)
    acc.wait_for_everyone()  # every process has looked before the main one deletes anything
    if plan == "restart":
        if acc.is_main_process:
            if not has_checkpoint(run_dir):
                acc.print(f"{run_dir}: run without a checkpoint (stopped before its first one): starting it again")
            clear_outputs(run_dir, TRAIN_OUTPUTS)
        acc.wait_for_everyone()
    return plan == "resume"


def write_train_run(cfg, data: PreparedData, built, run_dir: Path) -> dict:
    """The first files of a new run: config.yaml (as run), tokenizer/, prompt.txt, catalog.parquet, run.json, and
    for ``--item_ids semantic`` semantic_ids.parquet + semantic_centroids.safetensors (``save_semantic_ids``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(dataclasses.replace(cfg, item_cf_dim=built.item_cf_dim), run_dir / "config.yaml")
    built.tokenizer.save_pretrained(run_dir / "tokenizer")
    atomic_write_text(run_dir / "prompt.txt", built.template.text)
    if built.sids is not None:
        save_semantic_ids(built.sids, run_dir)
    return write_run_info(
        run_dir,
        "llm",
        cfg.model,
        data,
        cfg.data,
        num_layers=cfg.num_layers,
        prompt=built.template.name,
        load_in_4bit=cfg.load_in_4bit,
        lora_modules=built.lora_modules,
    )


def trim_log(path: Path, step: int) -> None:
    """Drop the log lines after ``step`` (written after the checkpoint a resumed run continues from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def resumed_codes(cfg, run_dir: Path):
    """The code paths a semantic-ID run started with, read back from ``run_dir`` for its resumption.

    Not clustered again: the text encoder, the co-occurrence factors and k-means are reproducible for one machine
    and thread count, not across them (a run started on 2 threads and resumed on 1 would get other codes), and the
    run's examples and trained code rows are in its own codes.

    Raises:
        ConfigError: an option of ``CODE_OPTIONS`` differs from the run's ``config.yaml`` (named), or the stored
            codes are unreadable.
    """
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    for key in CODE_OPTIONS:
        ran, now = saved.get(key), getattr(cfg, key)
        lowered = key == "item_cf_dim" and isinstance(ran, int) and 0 <= ran <= now  # as run: lowered to fit
        if key in saved and ran != now and not lowered:
            raise ConfigError(
                f"resume: {key} is {now!r}, the run started with {ran!r} and its semantic ids depend on it; resume "
                "with the settings the run started with, or start again with --overwrite"
            )
    try:
        return load_semantic_ids(run_dir)
    except DataError as e:
        raise ConfigError(f"resume: {e}") from None


def check_resumed_codes(built, run_dir: Path) -> None:
    """A resumed semantic-ID run must rebuild the code paths it started with (its examples are written in them).

    Raises:
        ConfigError: the rebuilt codes differ from ``run_dir``'s (e.g. other text embeddings or k-means settings).
    """
    if built.sids is None:
        return
    try:
        saved = load_semantic_ids(run_dir, built.sids.num_items)
    except DataError as e:
        raise ConfigError(f"resume: {e}") from None
    if saved.level_sizes != built.sids.level_sizes or not np.array_equal(saved.codes, built.sids.codes):
        raise ConfigError(
            f"resume: the semantic ids rebuilt from the config differ from {run_dir / IDS_FILE}; resume with the "
            "settings the run started with, or start again with --overwrite"
        )
