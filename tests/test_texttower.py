"""TextTower (``llmrec baseline texttower``): textknn at initialisation, trained on warm items only, scored from text
alone (cold and added items), through the run schema."""

from __future__ import annotations

import json

import pytest
import torch

from llmrec.baselines import ModelArgs, TextKNN, TextTower
from llmrec.baselines.config import BaselineConfig
from llmrec.baselines.train import save_weights, train_baseline
from llmrec.config import ConfigError
from llmrec.data import Catalog, PreparedData, save_prepared
from llmrec.items.text import TextEmbeddings

VECTORS = torch.tensor(
    [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
)  # item 5 has no text


def _tower(last_k: int = 2, hidden: int = 8, vectors: torch.Tensor = VECTORS) -> TextTower:
    torch.manual_seed(0)
    model = TextTower(ModelArgs(num_items=len(vectors), hidden_size=hidden, dropout=0.0, max_len=10))
    model.set_embeddings(vectors, last_k)
    return model.eval()


def test_an_untrained_tower_is_textknn_times_its_temperature():
    knn = TextKNN(ModelArgs(num_items=len(VECTORS)))
    knn.set_embeddings(VECTORS, 2)
    histories = [[0], [2, 3, 0], [4, 1], [1, 2, 3, 4]]
    has_text = VECTORS.abs().sum(1) > 0
    got, want = _tower().score(histories), 20.0 * knn.score(histories)
    assert torch.allclose(got[:, has_text], want[:, has_text], atol=1e-5)
    assert torch.equal(got[:, 5], torch.zeros(4))  # no text: the key is g(0) = 0 before training


def test_encode_gives_each_prefix_the_mean_of_its_last_k_items():
    model = _tower(last_k=2)
    hidden = model.encode(torch.tensor([[0, 2, 4, 6]]))  # 6: padding
    assert torch.allclose(hidden[0, 1], torch.nn.functional.normalize(VECTORS[0] + VECTORS[2], dim=0))
    assert torch.allclose(hidden[0, 2], torch.nn.functional.normalize(VECTORS[2] + VECTORS[4], dim=0))
    assert torch.allclose(hidden[0, 3], VECTORS[4])  # the window (4, padding)


def _data(cold=frozenset({3})) -> PreparedData:
    catalog = Catalog(raw_ids=[str(i) for i in range(6)], titles=[f"t{i}" for i in range(6)])
    seqs = [[0, 2, 0, 2, 4], [0, 2, 1, 2, 3], [1, 2, 0, 2, 4], [0, 2, 0, 2, 3], [1, 2, 1, 2, 4]] * 4
    return PreparedData(catalog=catalog, users=[f"u{i}" for i in range(20)], sequences=seqs, cold_items=cold)


def test_cold_items_never_reach_the_training_loss():
    model, data = _tower(), _data()
    model.set_cold_items(data.cold_items)
    model.train()
    seqs = data.train_sequences()
    loss = model.loss(seqs, "ce", torch.Generator().manual_seed(0))
    moved = VECTORS.clone()
    moved[3] = torch.tensor([1.0, 0.0, 0.0])  # another text for the cold item only: item 0's
    model.set_embeddings(moved, 2)
    assert model.loss(seqs, "ce", torch.Generator().manual_seed(0)) == loss
    model.set_cold_items(())  # without the cold list its text does enter the softmax
    assert model.loss(seqs, "ce", torch.Generator().manual_seed(0)) != loss


def test_a_run_learns_what_the_text_cosine_misses_and_round_trips(tmp_path, monkeypatch):
    import llmrec.items.text as text
    from llmrec.recommenders import load_recommender

    data = _data()  # in training, after item 2 comes 0 or 1, never 3 (item 2's text twin, cold) or 4
    save_prepared(data, tmp_path / "data")
    monkeypatch.setattr(text, "item_text_embeddings",
                        lambda *a, **k: TextEmbeddings(VECTORS.clone(), VECTORS.abs().sum(1) > 0, "minilm"))  # fmt: skip
    cfg = BaselineConfig(model="texttower", data=str(tmp_path / "data"), output_dir=str(tmp_path / "run"),
                         ks=[1], metric="hr@1", hidden_size=16, dropout=0.0, lr=0.01, epochs=30, patience=30,
                         batch_size=8, textknn_history=1)  # fmt: skip
    metrics = train_baseline(cfg, log=lambda *a: None)
    assert metrics["status"] == "done"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["model"] == "texttower"
    rec = load_recommender(tmp_path / "run")
    before = _tower(last_k=1).score([[0, 2]])[0]
    after = rec.score([[0, 2]])[0]
    assert before[3] > before[0]  # the cosine: item 3's text is the closest to item 2's
    assert min(after[0], after[1]) > max(after[3], after[4])  # the interactions: after 2 comes 0 or 1


def test_saved_weights_rebuild_the_towers_and_added_items_score_by_text(tmp_path):
    from safetensors.torch import load_file

    model = _tower()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_weights(model, tmp_path / "model.safetensors")
    loaded = TextTower(ModelArgs(num_items=len(VECTORS), hidden_size=8, dropout=0.0, max_len=10))
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")))  # width 3 from the saved vectors
    loaded.eval()
    assert torch.equal(loaded.score([[0, 2], [4]]), model.score([[0, 2], [4]]))
    new = loaded.add_items(VECTORS[[2]])  # an added item with item 2's text scores exactly as item 2
    assert new == [6]
    scores = loaded.score([[0, 1]])[0]
    assert scores.shape == (7,) and scores[6] == pytest.approx(float(scores[2]))


@pytest.mark.parametrize(
    "kw, field",
    [(dict(loss="bce"), "loss"), (dict(item_cf_dim=8), "item_cf_dim")],
)
def test_texttower_options_are_checked(kw, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        BaselineConfig(model="texttower", data="d", output_dir="o", **kw)
    BaselineConfig(model="texttower", data="d", output_dir="o", textknn_history=3)  # the text options apply
