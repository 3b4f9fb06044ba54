"""Cold-start items never reach training (issue #19, model side), in any form: not as an input, a target, a softmax
column or a sampled negative; for the atomic LLM, the semantic-ID LLM and every ID baseline. Each check runs a
negative control too (the same check on an unmasked model sees the cold items), so it can fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed

from baseline_helpers import make_next_item_toy, quiet
from llmrec.baselines import MODELS, ModelArgs
from llmrec.baselines.base import NegativeSampler
from llmrec.baselines.config import BaselineConfig
from llmrec.baselines.train import build_sampler, load_baseline_run, train_baseline
from llmrec.config import parse_config
from llmrec.data import load_prepared, save_prepared
from llmrec.data.processing import mark_cold_items
from llmrec.items.projector import load_projector
from llmrec.items.semantic import assign_codes, rq_kmeans
from llmrec.llm.build import build_model, sid_embeddings
from llmrec.llm.coldrows import row_sets
from llmrec.llm.config import TrainConfig
from llmrec.llm.loop import Trainer, make_accelerator
from llmrec.llm.recommender import load_llm_run
from test_llm_helpers import make_tiny_model_dir, make_toy_data


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("coldtrain")
    with pytest.MonkeyPatch.context() as mp:  # the `lm` text embeddings are cached here, not in ~/.cache
        mp.setenv("LLMREC_CACHE", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        warm = make_toy_data(root / "warm")
        cold = save_prepared(mark_cold_items(load_prepared(warm), 0.25, seed=1), root / "cold")
        yield {
            "model": make_tiny_model_dir(root / "model"),
            "untied": make_tiny_model_dir(root / "untied", tied=False),
            "data": cold,
            "root": root,
        }


def _cfg(paths, out, model="model", **kw) -> TrainConfig:
    base = {"data": str(paths["data"]), "model": str(paths[model]), "output_dir": str(paths["root"] / out),
            "num_layers": 2, "item_cf_dim": 4, "item_mask_prob": 0.3, "item_mask_fill": "mean",
            "label_smoothing": 0.2, "lr_schedule": "constant", "batch_size": 8, "lr": 1e-2, "epochs": 2,
            "eval_every": 3, "eval_users": 0, "test_users": -1, "progress": False, "item_text_encoder": "lm",
            "num_threads": 1}  # fmt: skip
    base.update(kw)
    return parse_config(TrainConfig, [x for k, v in base.items() for x in (f"--{k}", str(v))])


def _item_params(item_lm) -> list[torch.Tensor]:
    """The trainable item-row parameters (peft trainable-token rows: row i = item i)."""
    return [p for n, p in item_lm.named_parameters() if "trainable_tokens" in n and p.requires_grad]


def _train_watching_cold_grads(cfg: TrainConfig, mask: bool = True) -> tuple[list[float], object]:
    """Run the real training loop with a hook on every item-row parameter; per backward, the largest |gradient|
    of a cold item's row. ``mask=False``: the same run with the cold masking switched off (the negative control)."""
    data = load_prepared(cfg.data)
    acc = make_accelerator(cfg)
    set_seed(cfg.seed)
    built = build_model(cfg, data)
    if not mask:
        built.item_lm.set_cold_items(())
    cold = torch.tensor(sorted(data.cold_items))
    seen: list[float] = []
    params = _item_params(built.item_lm)
    assert params and all(p.shape[0] == data.num_items for p in params)
    for p in params:
        p.register_hook(lambda g: seen.append(float(g[cold].abs().max())))
    trainer = Trainer(cfg, acc, data, built, resume=False)
    # never an input nor a target: no example holds a cold item's token
    cold_tokens = {built.item_lm.vocab.token_id(i) for i in data.cold_items}
    assert all(not cold_tokens & set(ids) for ids, _ in trainer.examples)
    trainer.run()
    assert len(seen) >= trainer.total_steps * len(params)
    return seen, built


@pytest.mark.parametrize("model", ["model", "untied"])
def test_atomic_llm_cold_rows_get_exactly_zero_gradient(paths, model):
    cfg = _cfg(paths, f"atomic_{model}", model=model)
    seen, built = _train_watching_cold_grads(cfg)
    assert max(seen) == 0.0, "a cold item's row got a gradient"
    assert len(row_sets(built.item_lm)) == (1 if model == "model" else 2)
    # the control: without the masking the softmax pushes the cold rows (the check can fail)
    unmasked, _ = _train_watching_cold_grads(_cfg(paths, f"atomic_{model}_unmasked", model=model), mask=False)
    assert max(unmasked) > 0


def test_atomic_loss_ignores_the_cold_rows_entirely(paths):
    """Overwriting the cold rows with noise leaves the training loss bit-identical (inputs, softmax, label smoothing
    and the ``mean`` fill of hidden items all see warm rows only); without the masking it does not."""
    cfg = _cfg(paths, "unused")
    data = load_prepared(cfg.data)
    built = build_model(cfg, data)
    from llmrec.llm.examples import build_examples, collate

    examples = build_examples(data.train_sequences(), built.encoder, "sequence", 20)
    ids, mask, tmask = collate(examples, list(range(len(examples))), 0)
    item_lm, cold = built.item_lm.train(), sorted(data.cold_items)

    def loss():
        torch.manual_seed(0)  # the same hidden items and dropout
        return item_lm(ids, mask, tmask)[0].detach()

    before = loss()
    with torch.no_grad():
        for rows in row_sets(item_lm).values():
            rows[cold] = torch.randn(len(cold), rows.shape[1]) * 5
    assert torch.equal(loss(), before)
    item_lm.set_cold_items(())
    assert not torch.equal(loss(), before)


def test_atomic_cold_rows_are_projected_from_text_and_saved(paths):
    cfg = _cfg(paths, "atomic_projected", item_cf_dim=0, cold_rows="projector")
    data = load_prepared(cfg.data)
    from llmrec.llm.loop import train

    train(cfg)
    run = paths["root"] / "atomic_projected"
    proj = load_projector(run)
    assert proj is not None and set(proj.maps) == {"input"} and proj.encoder == "lm"
    rec = load_llm_run(run)
    rows = row_sets(rec.item_lm)["input"].detach()
    from llmrec.llm.build import item_text_embeddings_for

    text = item_text_embeddings_for(cfg, data)
    cold = sorted(data.cold_items)
    expected = proj.maps["input"].rows(text.vectors[cold], text.has[cold])
    assert torch.allclose(rows[cold], expected, atol=1e-5)
    warm = [i for i in range(data.num_items) if i not in data.cold_items]
    assert not torch.allclose(rows[warm], proj.maps["input"].rows(text.vectors[warm], text.has[warm]), atol=1e-3)


def test_semantic_ids_are_fitted_on_warm_items_and_cold_items_are_never_targets(paths):
    cfg = _cfg(paths, "sem", item_ids="semantic", sid_levels=2, sid_codes=3, sid_extra_codes=1, item_cf_dim=0)
    data = load_prepared(cfg.data)
    built = build_model(cfg, data)
    emb, _ = sid_embeddings(cfg, data)
    cold = sorted(data.cold_items)
    warm = [i for i in range(data.num_items) if i not in data.cold_items]
    alone = rq_kmeans(emb[warm], levels=2, codes=3, seed=cfg.seed)  # what no cold item took part in
    sids = built.sids
    assert all(np.array_equal(a, b) for a, b in zip(sids.centroids, alone.centroids))
    assert np.array_equal(sids.codes[warm], alone.codes)
    assert np.array_equal(sids.codes[cold], assign_codes(emb[cold], alone.centroids, alone.codes))
    assert sids.level_sizes[-1] == sids.codes[:, -1].max() + 1 + 1  # room for the cold items, plus the extra code
    assert built.trie.num_items == data.num_items and len(np.unique(sids.codes, axis=0)) == data.num_items
    # a control: fitted on every item, the centroids differ (the comparison above can fail)
    everyone = rq_kmeans(emb, levels=2, codes=3, seed=cfg.seed)
    assert not all(np.array_equal(a, b) for a, b in zip(everyone.centroids, alone.centroids))
    # no training example holds a cold item's code path, as input or as target
    trainer = Trainer(cfg, make_accelerator(cfg), data, built, resume=False)
    vocab, width = built.item_lm.vocab, built.item_lm.vocab.num_levels
    starts = torch.tensor(vocab.starts)
    for ids, targets in trainer.examples:
        t = torch.tensor(ids)
        codes = t[vocab.is_code(t)]
        paths_ = (codes - starts.repeat(len(codes) // width)).view(-1, width)
        items = built.trie.items(paths_)
        assert (items >= 0).all() and not set(items.tolist()) & data.cold_items
        assert all(vocab.is_code(t[targets]))
    trainer.run()
    rec = load_llm_run(paths["root"] / "sem")
    assert rec.num_items == data.num_items and rec.score([[0, 1]]).shape == (1, data.num_items)


# ---------------------------------------------------------------- ID baselines


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("coldbase")
    data = mark_cold_items(load_prepared(make_next_item_toy(root)), 0.2, seed=0)
    return save_prepared(data, root / "cold"), data


CASES = [("sasrec", "ce", {}), ("gru4rec", "ce", {}), ("bert4rec", "ce", {}), ("sasrec", "bce", {}),
         ("bert4rec", "sampled", {}), ("gru4rec", "sampled", {"negative_sampling": "popularity"}),
         ("sasrec", "sampled", {"shared_negatives": True, "logq_correction": True})]  # fmt: skip


def _baseline_cold_grads(data, name, loss, kw, mask=True) -> float:
    extra = {"num_negatives": 8} if loss == "sampled" else {}
    cfg = BaselineConfig(model=name, data="d", output_dir="o", loss=loss, hidden_size=16, num_layers=1, max_len=10,
                         **extra, **kw)  # fmt: skip
    torch.manual_seed(0)
    model = MODELS[name](ModelArgs(num_items=data.num_items, hidden_size=16, num_layers=1, max_len=10))
    if mask:
        model.set_cold_items(data.cold_items)
    sampler = build_sampler(cfg, data)
    if sampler is not None and not mask:
        sampler = NegativeSampler(data.num_items, sampler.num_negatives, None, sampler.logq_correction)
    cold = sorted(data.cold_items)
    seqs = [s for s in data.train_sequences() if len(s) >= 2]
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for start in range(0, len(seqs), 32):
        model.zero_grad()
        model.loss(seqs[start : start + 32], loss, gen, sampler).backward()
        for p in model.item_row_params():
            worst = max(worst, float(p.grad[cold].abs().max()))
    return worst


@pytest.mark.parametrize("name, loss, kw", CASES)
def test_id_baselines_cold_rows_get_exactly_zero_gradient(toy, name, loss, kw):
    data = toy[1]
    assert _baseline_cold_grads(data, name, loss, kw) == 0.0
    if kw.get("negative_sampling") != "popularity":  # popularity never draws a cold item (count 0) anyway
        assert _baseline_cold_grads(data, name, loss, kw, mask=False) > 0  # the control


@pytest.mark.parametrize("kw", [{}, {"negative_sampling": "popularity"}, {"shared_negatives": True}])
def test_the_sampler_never_returns_a_cold_item(toy, kw):
    data = toy[1]
    cfg = BaselineConfig(model="sasrec", data="d", output_dir="o", loss="sampled", num_negatives=64, **kw)
    sampler = build_sampler(cfg, data)
    drawn = sampler.sample(2000, torch.Generator().manual_seed(0)).unique().tolist()
    assert not set(drawn) & data.cold_items and len(drawn) > data.num_items // 2
    uniform = NegativeSampler(data.num_items, 64)  # the control
    assert set(uniform.sample(2000, torch.Generator().manual_seed(0)).unique().tolist()) & data.cold_items
    if not kw:
        assert torch.allclose(sampler.log_q(torch.tensor([0])), torch.tensor([-np.log(24.0)], dtype=torch.float32))


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_trained_id_baseline_gives_cold_items_the_mean_warm_row(toy, tmp_path, name):
    cfg = BaselineConfig(model=name, data=str(toy[0]), output_dir=str(tmp_path / name), hidden_size=16,
                         num_layers=1, max_len=10, epochs=2, eval_every=1, patience=5, ks=[1, 10],
                         num_threads=1)  # fmt: skip
    train_baseline(cfg, log=quiet)
    model = load_baseline_run(tmp_path / name).model
    data = toy[1]
    cold = sorted(data.cold_items)
    warm = [i for i in range(data.num_items) if i not in data.cold_items]
    for p in model.item_row_params():
        mean = p[warm].mean(0)
        assert torch.allclose(p[cold], mean.expand_as(p[cold]), atol=1e-6)


# --- content dropout: the text projector trained with the LM (llmrec.llm.textmap) ---------------------------------


def test_content_dropout_draws_only_warm_items_with_a_text(paths):
    cfg = _cfg(paths, "unused", content_dropout=0.5)
    data = load_prepared(cfg.data)
    text_map = build_model(cfg, data).item_lm.text_map
    assert text_map is not None and not text_map.droppable[sorted(data.cold_items)].any()
    gen = torch.Generator().manual_seed(0)
    draws = [text_map.draw(gen) for _ in range(200)]
    assert all(len(d) >= 1 and not set(d.tolist()) & set(data.cold_items) for d in draws)
    assert all(bool(text_map.has[d].all()) for d in draws)
    rate = sum(len(d) for d in draws) / (200 * int(text_map.droppable.sum()))
    assert 0.4 < rate < 0.6
    rare = type(text_map)(text_map.to_projector(), text_map.vectors, text_map.has, text_map.droppable, 1e-6)
    assert all(len(rare.draw(gen)) == 1 for _ in range(20))  # never an empty step


@pytest.mark.parametrize("model", ["model", "untied"])
def test_content_dropout_trains_the_map_on_the_loss_and_only_while_training(paths, model):
    cfg = _cfg(paths, "unused", model=model, content_dropout=0.5)
    data = load_prepared(cfg.data)
    built = build_model(cfg, data)
    from llmrec.llm.examples import build_examples, collate

    examples = build_examples(data.train_sequences(), built.encoder, "sequence", 20)
    ids, mask, tmask = collate(examples, list(range(len(examples))), 0)
    item_lm = built.item_lm.train()
    item_lm(ids, mask, tmask)[0].backward()
    names = ["input"] if model == "model" else ["input", "output"]
    assert item_lm.text_map.names == names
    for name in names:
        assert float(item_lm.text_map.weight[name].grad.abs().sum()) > 0, f"the {name} map got no gradient"
    # the control: without the map nothing reaches it; eval-mode scores never depend on it
    item_lm.eval()
    prompts = [built.encoder.encode(s[:3]) for s in data.train_sequences()[:4]]
    before = item_lm.score(prompts, 0)
    with torch.no_grad():
        for name in names:
            item_lm.text_map.weight[name].mul_(3.0).add_(1.0)
    assert torch.equal(item_lm.score(prompts, 0), before)


def test_content_dropout_keeps_cold_rows_at_zero_gradient(paths):
    seen, built = _train_watching_cold_grads(_cfg(paths, "atomic_cd", content_dropout=0.5))
    assert max(seen) == 0.0, "a cold item's row got a gradient"
    assert built.item_lm.text_map is not None


def test_content_dropout_saves_the_learned_map_and_writes_the_cold_rows_with_it(paths):
    from llmrec.llm.build import item_text_embeddings_for, start_text_map
    from llmrec.llm.loop import train

    cfg = _cfg(paths, "atomic_learned", item_cf_dim=0, content_dropout=0.5, cold_rows="projector")
    data = load_prepared(cfg.data)
    train(cfg)
    run = paths["root"] / "atomic_learned"
    proj = load_projector(run)
    assert proj is not None and proj.extra == {"learned": True, "content_dropout": 0.5}
    start = start_text_map(build_model(cfg, data).item_lm, item_text_embeddings_for(cfg, data), data.cold_items,
                           0.5, cfg.seed).to_projector()  # fmt: skip
    assert not torch.allclose(proj.maps["input"].weight, start.maps["input"].weight, atol=1e-4)  # it was trained
    rec = load_llm_run(run)
    rows = row_sets(rec.item_lm)["input"].detach()
    text = item_text_embeddings_for(cfg, data)
    cold = sorted(data.cold_items)
    assert torch.allclose(rows[cold], proj.maps["input"].rows(text.vectors[cold], text.has[cold]), atol=1e-5)


def test_content_dropout_resume_is_exact(paths):
    from safetensors.torch import load_file

    from llmrec.llm.loop import train

    full = _cfg(paths, "cd_full", content_dropout=0.5, max_steps=6, eval_every=3)
    train(full)
    train(_cfg(paths, "cd_part", content_dropout=0.5, max_steps=3, eval_every=3))
    train(_cfg(paths, "cd_part", content_dropout=0.5, max_steps=6, eval_every=3, resume=True))
    a = load_file(str(paths["root"] / "cd_full" / "checkpoint" / "text_map.safetensors"))
    b = load_file(str(paths["root"] / "cd_part" / "checkpoint" / "text_map.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_content_dropout_config_is_checked():
    from llmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="content_dropout"):
        TrainConfig(data="d", output_dir="o", content_dropout=1.0)
    with pytest.raises(ConfigError, match="content_dropout: atomic"):
        TrainConfig(data="d", output_dir="o", content_dropout=0.2, item_ids="semantic")
