"""Training loop on a tiny offline Llama: learning, save/load, exact resume, torchrun == single process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from llmrec.config import ConfigError, parse_config
from llmrec.data.dataset import load_prepared
from llmrec.llm.config import TrainConfig
from llmrec.llm.examples import build_examples
from llmrec.llm.loop import train
from test_llm_helpers import make_tiny_model_dir, make_toy_data


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("llmtrain")
    return {"model": make_tiny_model_dir(root / "model"), "data": make_toy_data(root / "data"), "root": root}


def _args(paths, out, **kw):
    base = {
        "data": str(paths["data"]),
        "model": str(paths["model"]),
        "output_dir": str(paths["root"] / out),
        "num_layers": 2,  # the tiny model's depth (the default, 4, is the selected recipe's)
        "item_cf_dim": 0,
        "item_mask_prob": 0.0,
        "label_smoothing": 0.0,
        "lr_schedule": "constant",
        "weight_decay": 0.0,
        "item_weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "epochs": 3,
        "patience": 2,
        "eval_users": 2000,
        "batch_size": 16,
        "lr": 1e-2,
        "eval_every": 1000,
        "test_users": -1,
        "progress": False,
        "log_every": 1,
    }
    base.update(kw)
    argv = []
    for k, v in base.items():
        argv += [f"--{k}", str(v)]
    return argv


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in open(os.path.join(run_dir, "train_log.jsonl"))]


def test_config_validation(paths):
    with pytest.raises(ConfigError, match="objective"):
        parse_config(TrainConfig, _args(paths, "x", objective="dpo"))
    with pytest.raises(ConfigError, match="data"):
        parse_config(TrainConfig, ["--output_dir", "x"])


def test_wsd_schedule_keeps_each_group_peak(paths):
    from llmrec.llm.optim import make_scheduler

    cfg = parse_config(TrainConfig, _args(paths, "x", lr_schedule="wsd", decay_fraction=0.25, warmup_steps=2))
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "lr": 5e-2}], lr=1e-2)
    sched = make_scheduler(cfg, opt, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0][0] == 0 and lrs[1][0] == pytest.approx(5e-3)  # warm-up
    assert all(lr[0] == pytest.approx(1e-2) for lr in lrs[2:15])  # stable until the last quarter
    assert all(a[0] > b[0] for a, b in zip(lrs[15:], lrs[16:]))  # then a linear decay towards 0
    assert lrs[-1][0] < 2.5e-3 and lrs[10][1] == pytest.approx(5e-2)  # each group keeps its own peak
    with pytest.raises(ConfigError, match="decay_fraction"):
        parse_config(TrainConfig, _args(paths, "x", decay_fraction=0))
    with pytest.raises(ConfigError, match="item_mask_prob"):
        parse_config(TrainConfig, _args(paths, "x", item_mask_prob=1.0))
    with pytest.raises(ConfigError, match="item_mask_fill"):
        parse_config(TrainConfig, _args(paths, "x", item_mask_fill="noise"))
    for name, bad in (("label_smoothing", 1.0), ("embed_dropout", -0.1)):
        with pytest.raises(ConfigError, match=name):
            parse_config(TrainConfig, _args(paths, "x", **{name: bad}))


def test_sft_examples_one_per_target(paths):
    from llmrec.items.atomic import add_item_tokens
    from llmrec.llm.loading import load_tokenizer
    from llmrec.prompts import PromptEncoder, load_template

    data = load_prepared(paths["data"])
    tok = load_tokenizer(str(paths["model"]))
    vocab = add_item_tokens(tok, data.num_items)
    enc = PromptEncoder(load_template("titles"), tok, vocab, data.catalog)
    seqs = data.train_sequences()
    seq_ex = build_examples(seqs, enc, "sequence", 20)
    sft_ex = build_examples(seqs, enc, "sft", 20)
    assert len(seq_ex) == len(seqs) and len(sft_ex) == sum(len(s) - 1 for s in seqs)
    assert sum(len(t) for _, t in seq_ex) == len(sft_ex)  # same predictions, one pass per user
    # long users are cut into windows that still predict every item once
    windows = build_examples([list(range(12)) * 2], enc, "sequence", 5)
    assert len(windows) == 5 and sum(len(t) for _, t in windows) == 23
    assert all(ids[-1] == ids[t[-1]] for ids, t in sft_ex)
    # a template whose first item sits at position 0 (`compact`) still predicts every item but the first
    compact = PromptEncoder(load_template("compact"), tok, vocab, data.catalog)
    assert sum(len(t) for _, t in build_examples(seqs, compact, "sequence", 20)) == len(sft_ex)
    (ids, targets), *_ = build_examples([[3, 4, 5]], compact, "sequence", 20)
    assert [ids[p] for p in targets] == [vocab.token_id(4), vocab.token_id(5)]


def test_loss_falls_and_saved_run_reproduces(paths):
    from llmrec.evaluation import evaluate
    from llmrec.inference import recommend
    from llmrec.llm.recommender import load_llm_run

    cfg = parse_config(TrainConfig, _args(paths, "learn", epochs=10, eval_every=0, eval_users=0, patience=0))
    result = train(cfg)
    losses = _losses(cfg.output_dir)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    assert result["valid"]["metrics"]["ndcg@10"] > 0.5  # the toy pattern is learnable
    rec = load_llm_run(cfg.output_dir)
    res = evaluate(rec.score, load_prepared(paths["data"]), "valid")
    assert res["metrics"]["ndcg@10"] == pytest.approx(result["valid"]["metrics"]["ndcg@10"], abs=1e-6)
    again = load_llm_run(cfg.output_dir)
    top = recommend(rec, [[0, 1]], k=5)[0]
    assert top == recommend(again, [[0, 1]], k=5)[0]
    assert [i for i, _ in top] == rec.generate([0, 1], k=5)
    assert all(i not in (0, 1) for i, _ in top)
    assert not rec.item_lm.training  # generate restores the mode it found
    for name in (
        "config.yaml",
        "run.json",
        "metrics.json",
        "prompt.txt",
        "catalog.parquet",
        "adapter/adapter_model.safetensors",
    ):
        assert os.path.exists(os.path.join(cfg.output_dir, name)), name
    with open(os.path.join(cfg.output_dir, "run.json")) as f:
        info = json.load(f)
    assert info["data"]["fingerprint"] == load_prepared(paths["data"]).fingerprint
    assert info["lora_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_resume_is_exact(paths):
    kw = {"lora_dropout": 0.1, "embed_dropout": 0.1, "item_mask_prob": 0.2, "save_every": 3, "prompt": "titles"}
    kw |= {"objective": "sft"}  # (a decaying schedule depends on max_steps: keep it constant)
    full = parse_config(TrainConfig, _args(paths, "full", max_steps=6, **kw))
    train(full)
    part = parse_config(TrainConfig, _args(paths, "part", max_steps=3, **kw))
    train(part)
    with open(os.path.join(part.output_dir, "train_log.jsonl"), "a") as f:  # logged after the last checkpoint
        f.write(json.dumps({"step": 4, "loss": 123.0}) + "\n")
    resumed = parse_config(TrainConfig, _args(paths, "part", max_steps=6, resume=True, **kw))
    train(resumed)
    assert _losses(full.output_dir) == pytest.approx(_losses(resumed.output_dir), abs=1e-6)  # log trimmed to step 3
    with open(os.path.join(full.output_dir, "metrics.json")) as f:
        evals = json.load(f)["history"]
    assert [e["step"] for e in evals] == [6]  # eval_every=1000 never fires: the last step is still validated
    from safetensors.torch import load_file

    # final weights (``adapter/`` holds the best-validation ones, which may differ: `part` validated at step 3 too)
    a = load_file(os.path.join(full.output_dir, "checkpoint", "adapter.safetensors"))
    b = load_file(os.path.join(resumed.output_dir, "checkpoint", "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="no torchrun",
)
def test_torchrun_two_processes_match_single(paths):
    args = _args(paths, "ddp", epochs=2)
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "llmrec", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((paths["root"] / "ddp" / "metrics.json").read_text())
    assert metrics["train"]["num_processes"] == 2
    train(parse_config(TrainConfig, _args(paths, "single", epochs=2)))
    ddp, single = _losses(paths["root"] / "ddp"), _losses(paths["root"] / "single")
    assert len(ddp) == len(single) and ddp == pytest.approx(single, abs=1e-4)


def test_grad_accumulation_matches_full_batch(paths):
    train(parse_config(TrainConfig, _args(paths, "ga1", max_steps=3)))
    train(parse_config(TrainConfig, _args(paths, "ga2", max_steps=3, grad_accum=2)))
    assert _losses(paths["root"] / "ga1") == pytest.approx(_losses(paths["root"] / "ga2"), abs=1e-5)


def test_run_killed_before_its_first_checkpoint_restarts(paths):
    cfg = parse_config(TrainConfig, _args(paths, "killed", max_steps=2))
    train(cfg)
    shutil.rmtree(os.path.join(cfg.output_dir, "checkpoint"))  # as if killed before the first checkpoint
    (paths["root"] / "killed" / "feedback.sqlite").write_text("kept")  # not an output of `llmrec train`
    train(cfg)  # a plain rerun restarts it: no --overwrite needed
    assert len(_losses(cfg.output_dir)) == 2
    retry = parse_config(TrainConfig, _args(paths, "killed", max_steps=2, resume=True))
    shutil.rmtree(os.path.join(cfg.output_dir, "checkpoint"))
    train(retry)  # --resume without a checkpoint starts from scratch
    assert (paths["root"] / "killed" / "feedback.sqlite").read_text() == "kept"
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg)  # now it has a checkpoint


def test_overwrite_refuses_a_foreign_directory_and_a_bad_data_path_keeps_the_run(paths, tmp_path):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("important")
    with pytest.raises(ConfigError, match="not an llmrec run"):
        train(parse_config(TrainConfig, _args(paths, "x", output_dir=str(foreign), overwrite=True, max_steps=1)))
    assert (foreign / "thesis.txt").read_text() == "important"
    cfg = parse_config(TrainConfig, _args(paths, "keep", max_steps=1))
    train(cfg)
    bad = parse_config(TrainConfig, _args(paths, "keep", max_steps=1, overwrite=True, data=str(tmp_path / "nosuch")))
    with pytest.raises(Exception, match="nosuch"):
        train(bad)
    assert os.path.exists(os.path.join(cfg.output_dir, "checkpoint", "state.json"))  # the old run is intact


def test_a_resume_after_the_last_validation_neither_trains_nor_validates_again(paths, monkeypatch):
    import llmrec.llm.loop as loop

    kw = {"max_steps": 4, "eval_every": 2, "save_every": 3, "test_users": -1}  # validations at 2 and 4
    cfg = parse_config(TrainConfig, _args(paths, "lastval", **kw))
    first = train(cfg)
    assert [e["step"] for e in first["history"]] == [2, 4]
    os.remove(os.path.join(cfg.output_dir, "metrics.json"))  # as if killed in the final phase
    splits = []
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: splits.append(a[2]) or real(*a, **k))
    again = train(parse_config(TrainConfig, _args(paths, "lastval", resume=True, **{**kw, "test_users": 0})))
    assert splits == ["test"]  # step 4's checkpoint (not step 3's, of --save_every) holds the last validation
    assert again["history"] == first["history"] and again["valid"] == first["valid"]
    assert again["train"]["steps"] == 4
    assert again["test"]["num_users"] > 0
