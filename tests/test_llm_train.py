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
from llmrec.train import TrainConfig
from llmrec.training import build_examples, train
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


def test_wsd_schedule_and_item_lr(paths):
    from llmrec.training import make_scheduler

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
    for name, bad in (("label_smoothing", 1.0), ("hidden_dropout", -0.1)):
        with pytest.raises(ConfigError, match=name):
            parse_config(TrainConfig, _args(paths, "x", **{name: bad}))


def test_sft_examples_one_per_target(paths):
    from llmrec.modeling.item_tokens import add_item_tokens
    from llmrec.modeling.lm import load_tokenizer
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


def test_loss_falls_and_saved_run_reproduces(paths):
    from llmrec.evaluation import evaluate
    from llmrec.modeling.llm import load_run

    cfg = parse_config(TrainConfig, _args(paths, "learn", epochs=10, eval_every=0, eval_users=0, patience=0))
    result = train(cfg)
    losses = _losses(cfg.output_dir)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    assert result["best_valid"]["metrics"]["ndcg@10"] > 0.5  # the toy pattern is learnable
    rec = load_run(cfg.output_dir)
    res = evaluate(rec.score, load_prepared(paths["data"]), "valid")
    assert res["metrics"]["ndcg@10"] == pytest.approx(result["best_valid"]["metrics"]["ndcg@10"], abs=1e-6)
    again = load_run(cfg.output_dir)
    assert rec.recommend([0, 1], k=5) == again.recommend([0, 1], k=5)
    assert [i for i, _ in rec.recommend([0, 1], k=5)] == rec.generate([0, 1], k=5)
    assert all(i not in (0, 1) for i, _ in rec.recommend([0, 1], k=5))
    for name in ("config.yaml", "run.json", "metrics.json", "prompt.txt", "adapter/adapter_model.safetensors"):
        assert os.path.exists(os.path.join(cfg.output_dir, name)), name


def test_resume_is_exact(paths):
    kw = {"lora_dropout": 0.1, "embed_dropout": 0.1, "item_mask_prob": 0.2, "save_every": 3, "prompt": "titles"}
    kw |= {"objective": "sft", "item_lr": 0.02}  # (a decaying schedule depends on max_steps: keep it constant)
    full = parse_config(TrainConfig, _args(paths, "full", max_steps=6, **kw))
    train(full)
    part = parse_config(TrainConfig, _args(paths, "part", max_steps=3, **kw))
    train(part)
    resumed = parse_config(TrainConfig, _args(paths, "part", max_steps=6, resume=True, **kw))
    train(resumed)
    assert _losses(full.output_dir) == pytest.approx(_losses(resumed.output_dir), abs=1e-6)
    with open(os.path.join(full.output_dir, "metrics.json")) as f:
        evals = json.load(f)["evals"]
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
        [torchrun, "--nproc_per_node", "2", "-m", "llmrec.train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((paths["root"] / "ddp" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    train(parse_config(TrainConfig, _args(paths, "single", epochs=2)))
    ddp, single = _losses(paths["root"] / "ddp"), _losses(paths["root"] / "single")
    assert len(ddp) == len(single) and ddp == pytest.approx(single, abs=1e-4)


def test_grad_accumulation_matches_full_batch(paths):
    train(parse_config(TrainConfig, _args(paths, "ga1", max_steps=3)))
    train(parse_config(TrainConfig, _args(paths, "ga2", max_steps=3, grad_accum=2)))
    assert _losses(paths["root"] / "ga1") == pytest.approx(_losses(paths["root"] / "ga2"), abs=1e-5)


def test_item_init_decay_pulls_rows_to_their_title_init(paths):
    from safetensors.torch import load_file

    from llmrec.training import build_model, pull_toward

    p, a = torch.tensor([1.0, -3.0]), torch.tensor([0.0, 1.0])
    pull_toward([p], [a], 0.25)
    assert p.tolist() == [0.75, -2.0]  # a quarter of the way to the anchor
    with pytest.raises(ConfigError, match="item_init_decay"):
        parse_config(TrainConfig, _args(paths, "x", item_init_decay=-1))

    def final_rows(out, decay):
        cfg = parse_config(TrainConfig, _args(paths, out, max_steps=3, item_init_decay=decay))
        train(cfg)
        state = load_file(os.path.join(cfg.output_dir, "checkpoint", "adapter.safetensors"))
        (key,) = [k for k in state if "trainable_tokens" in k]
        return state[key], cfg

    moved, cfg = final_rows("nodecay", 0.0)
    init = build_model(cfg, load_prepared(paths["data"]))[0].item_weights().detach()  # the same for both runs
    assert not torch.allclose(moved, init, atol=1e-4)
    reset, _ = final_rows("fulldecay", 100.0)  # lr 1e-2 x 100: each step ends back at the init
    assert torch.allclose(reset, init, atol=1e-6)


def test_untied_lm_head_trains_separate_item_rows_and_reloads(paths):
    from llmrec.modeling.item_tokens import is_tied
    from llmrec.modeling.llm import _item_rows, load_run
    from llmrec.training import build_model

    cfg = parse_config(TrainConfig, _args(paths, "untied", max_steps=4, untie_lm_head="true"))
    item_lm = build_model(cfg, load_prepared(paths["data"]))[0]
    trainable = [n for n, p in item_lm.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    assert not item_lm.tied and len(trainable) == 2 and any("lm_head" in n for n in trainable)
    init_in = _item_rows(item_lm.lm.get_input_embeddings(), item_lm.vocab).detach().clone()
    torch.testing.assert_close(item_lm.item_weights().detach(), init_in)  # both row sets start at the title init
    train(cfg)
    rec = load_run(cfg.output_dir, merge=False)
    base, v = rec.item_lm.lm.get_base_model(), rec.item_lm.vocab
    inp = _item_rows(base.get_input_embeddings(), v)
    out = rec.item_lm.item_weights()
    assert not torch.allclose(inp, init_in, atol=1e-5) and not torch.allclose(out, init_in, atol=1e-5)  # trained
    assert not torch.allclose(out, inp, atol=1e-5)  # the output rows are separate ones
    merged = load_run(cfg.output_dir)
    assert not is_tied(merged.item_lm.lm)
    text = slice(0, v.first_id)  # text rows of the head: a frozen copy of the embeddings
    torch.testing.assert_close(
        merged.item_lm.lm.get_output_embeddings().weight[text], merged.item_lm.lm.get_input_embeddings().weight[text]
    )
    torch.testing.assert_close(merged.score([[0, 1]]), rec.score([[0, 1]]), atol=1e-4, rtol=1e-4)
    assert [i for i, _ in merged.recommend([0, 1], k=5)] == merged.generate([0, 1], k=5)


def test_low_rank_item_delta_trains_only_the_delta_saves_merged_rows_and_resumes(paths):
    from safetensors.torch import load_file

    from llmrec.evaluation import evaluate
    from llmrec.modeling.llm import _item_rows, load_run
    from llmrec.training import build_model

    for bad in ({"item_delta_rank": -1}, {"item_delta_rank": 2, "untie_lm_head": "true"}):
        with pytest.raises(ConfigError, match="item_delta_rank"):
            parse_config(TrainConfig, _args(paths, "x", **bad))
    kw = {"item_delta_rank": 3, "save_every": 3, "item_mask_prob": 0.3}
    cfg = parse_config(TrainConfig, _args(paths, "delta", max_steps=6, eval_every=6, eval_users=0, **kw))
    item_lm = build_model(cfg, load_prepared(paths["data"]))[0]
    trainable = {n for n, p in item_lm.named_parameters() if p.requires_grad}
    assert {"item_delta.U", "item_delta.V"} <= trainable and not any("trainable_tokens" in n for n in trainable)
    init = _item_rows(item_lm.lm.get_input_embeddings(), item_lm.vocab).detach().clone()
    torch.testing.assert_close(item_lm.item_weights().detach(), init)  # U = 0: starts at the title rows
    result = train(cfg)

    # the checkpoint keeps the frozen rows and the rank-3 factors; the delta moved the rows
    state = load_file(os.path.join(cfg.output_dir, "checkpoint", "adapter.safetensors"))
    (key,) = [k for k in state if "trainable_tokens" in k]
    torch.testing.assert_close(state[key], init)
    delta = load_file(os.path.join(cfg.output_dir, "checkpoint", "item_delta.safetensors"))
    assert delta["U"].shape == (init.shape[0], 3) and delta["V"].shape == (3, init.shape[1])
    moved = delta["U"] @ delta["V"]
    assert moved.abs().max() > 1e-3 and torch.linalg.matrix_rank(moved) <= 3

    # the saved adapter holds rows + delta: a plain run directory with the in-training validation score
    rec = load_run(cfg.output_dir, merge=False)
    torch.testing.assert_close(_item_rows(rec.item_lm.lm.get_input_embeddings(), rec.item_lm.vocab), init + moved)
    res = evaluate(rec.score, load_prepared(paths["data"]), "valid")
    assert res["metrics"]["ndcg@10"] == pytest.approx(result["best_valid"]["metrics"]["ndcg@10"], abs=1e-6)
    assert [i for i, _ in rec.recommend([0, 1], k=5)] == rec.generate([0, 1], k=5)

    # resume from step 3 reproduces the uninterrupted losses
    part = parse_config(TrainConfig, _args(paths, "delta_part", max_steps=3, eval_every=6, eval_users=0, **kw))
    train(part)
    resumed = parse_config(
        TrainConfig, _args(paths, "delta_part", max_steps=6, eval_every=6, eval_users=0, resume=True, **kw)
    )
    train(resumed)
    assert _losses(cfg.output_dir) == pytest.approx(_losses(resumed.output_dir), abs=1e-6)


def test_item_adam_eps_reaches_the_item_rows_group_only(paths):
    with pytest.raises(ConfigError, match="item_adam_eps"):
        parse_config(TrainConfig, _args(paths, "x", item_adam_eps=0))
    cfg = parse_config(TrainConfig, _args(paths, "eps", max_steps=2, item_adam_eps=1e-3))
    train(cfg)
    groups = torch.load(os.path.join(cfg.output_dir, "checkpoint", "optimizer.pt"), weights_only=False)["param_groups"]
    assert [g["eps"] for g in groups] == [1e-8, 1e-3]  # LoRA matrices keep AdamW's default
