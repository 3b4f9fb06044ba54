import json
import random

import pytest
import torch

from baseline_helpers import NUM_ITEMS, make_next_item_toy
from baseline_helpers import baseline_cfg as _cfg
from baseline_helpers import quiet as _quiet
from llmrec.baselines.config import BaselineConfig
from llmrec.baselines.train import load_baseline_run, train_baseline
from llmrec.config import ConfigError, parse_config
from llmrec.data import load_prepared


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return make_next_item_toy(tmp_path_factory.mktemp("toy"))


@pytest.mark.parametrize("model, loss", [("sasrec", "ce"), ("gru4rec", "ce"), ("sasrec", "bce")])
def test_causal_models_learn_next_item_pattern(toy_dir, tmp_path, model, loss):
    result = train_baseline(_cfg(toy_dir, tmp_path / model, model=model, loss=loss), log=_quiet)
    assert result["test"]["metrics"]["hr@1"] > 0.9
    assert (tmp_path / model / "model.safetensors").is_file()
    assert json.loads((tmp_path / model / "run.json").read_text())["kind"] == "baseline"


def test_bert4rec_learns_something(toy_dir, tmp_path):
    result = train_baseline(_cfg(toy_dir, tmp_path / "b", model="bert4rec", mask_prob=0.3, epochs=12), log=_quiet)
    assert result["test"]["metrics"]["hr@10"] > 0.6  # random would be ~0.33


def test_pop_ranks_by_training_counts(toy_dir, tmp_path):
    result = train_baseline(_cfg(toy_dir, tmp_path / "pop", model="pop"), log=_quiet)
    rec = load_baseline_run(tmp_path / "pop")
    counts = torch.as_tensor(load_prepared(toy_dir).item_popularity(), dtype=torch.float32)
    assert torch.equal(rec.score([[0]])[0], counts)
    assert result["train"]["epochs_run"] == 0 and 0 < result["test"]["metrics"]["hr@10"] < 1
    assert result["valid"]["num_users"] == result["test"]["num_users"] == load_prepared(toy_dir).num_users


def test_resume_matches_uninterrupted_training(toy_dir, tmp_path):
    full = train_baseline(_cfg(toy_dir, tmp_path / "full", epochs=4), log=_quiet)
    train_baseline(_cfg(toy_dir, tmp_path / "split", epochs=2), log=_quiet)
    resumed = train_baseline(_cfg(toy_dir, tmp_path / "split", epochs=4, resume=True), log=_quiet)
    assert resumed["train"]["epochs_run"] == 4
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]])
    assert resumed["test"]["metrics"] == pytest.approx(full["test"]["metrics"])


def test_saved_run_scores_like_the_trained_model(toy_dir, tmp_path):
    from llmrec.commands.evaluate import main as evaluate_main

    result = train_baseline(_cfg(toy_dir, tmp_path / "r", epochs=2), log=_quiet)
    assert evaluate_main(["--run", str(tmp_path / "r"), "--split", "test", "--ks", "1", "10"]) == 0
    again = json.loads((tmp_path / "r" / "eval_test.json").read_text())
    assert again["metrics"] == pytest.approx(result["test"]["metrics"])


def test_existing_run_needs_resume_or_overwrite(toy_dir, tmp_path):
    train_baseline(_cfg(toy_dir, tmp_path / "r", model="pop"), log=_quiet)
    train_baseline(_cfg(toy_dir, tmp_path / "r", model="pop"), log=_quiet)  # no checkpoint: a rerun restarts it
    train_baseline(_cfg(toy_dir, tmp_path / "s", epochs=1), log=_quiet)
    with pytest.raises(ConfigError, match="already holds a run"):
        train_baseline(_cfg(toy_dir, tmp_path / "s", epochs=1), log=_quiet)
    (tmp_path / "s" / "feedback.sqlite").write_text("kept")
    train_baseline(_cfg(toy_dir, tmp_path / "s", epochs=1, overwrite=True), log=_quiet)
    assert (tmp_path / "s" / "feedback.sqlite").read_text() == "kept"  # --overwrite removes only its own files
    with pytest.raises(ConfigError, match="resume"):
        train_baseline(_cfg(toy_dir, tmp_path / "empty", model="pop", resume=True), log=_quiet)


@pytest.mark.parametrize(
    "kw, field_name",
    [
        ({"model": "lstm"}, "model"),
        ({"dropout": 1.0}, "dropout"),
        ({"loss": "hinge"}, "loss"),
        ({"hidden_size": 30, "num_heads": 4}, "num_heads"),
        ({"metric": "ndcg@7"}, "metric"),
        ({"data": ""}, "data"),
    ],
)
def test_config_errors_name_the_field(kw, field_name):
    base = {"data": "d", "output_dir": "o", **kw}
    with pytest.raises(ConfigError, match=field_name):
        BaselineConfig(**base)


def test_positional_model_and_yaml(tmp_path):
    from llmrec.commands.baseline import model_positional

    (tmp_path / "c.yaml").write_text("model: gru4rec\ndropout: 0.3\n")
    argv = model_positional(["bert4rec", "--config", str(tmp_path / "c.yaml"), "--data", "d", "--out", "o"])
    cfg = parse_config(BaselineConfig, argv)
    assert cfg.model == "bert4rec" and cfg.dropout == 0.3  # command line wins over YAML
    (tmp_path / "bad.yaml").write_text("dropuot: 0.3\n")
    with pytest.raises(ConfigError, match="dropuot"):
        parse_config(BaselineConfig, ["--config", str(tmp_path / "bad.yaml"), "--data", "d", "--out", "o"])


def test_length_bucketed_batches_cover_every_index_once():
    from llmrec.batching import length_bucketed_batches

    lengths = [random.Random(1).randint(2, 50) for _ in range(1000)]
    gen = torch.Generator().manual_seed(0)
    batches = length_bucketed_batches(
        lengths, 32, lambda n: torch.randperm(n, generator=gen).tolist(), chunk_batches=4
    )
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000)) and max(len(b) for b in batches) == 32


def test_cf_init_adds_cooccurrence_factors_to_the_item_rows(toy_dir, tmp_path):
    from llmrec.baselines.train import add_cf_init, build_model
    from llmrec.data import load_prepared
    from llmrec.items.cooccurrence import cf_rows, cooccurrence_factors

    data = load_prepared(toy_dir)
    cfg = _cfg(toy_dir, tmp_path / "cf", item_cf_dim=8, item_cf_scale=2.0, epochs=3, patience=3)
    torch.manual_seed(0)
    model = build_model(cfg, data.num_items)
    before = model.item_emb.weight.detach().clone()
    add_cf_init(model, cfg, data.train_sequences())
    after = model.item_emb.weight.detach()
    f = cooccurrence_factors(data.train_sequences(), data.num_items, 8, 3)
    torch.testing.assert_close(after[:NUM_ITEMS], before[:NUM_ITEMS] + cf_rows(f, before[:NUM_ITEMS], 2.0, cfg.seed))
    torch.testing.assert_close(after[NUM_ITEMS:], before[NUM_ITEMS:])  # padding row untouched
    assert train_baseline(cfg, log=_quiet)["valid"]["metrics"]["hr@10"] > 0.5  # trains from it
    with pytest.raises(ConfigError, match="item_cf_dim"):
        BaselineConfig(data="d", output_dir="o", hidden_size=32, item_cf_dim=33)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_causal_models_score_a_history_the_same_in_any_length_group(name, monkeypatch):
    """``history_hidden`` encodes groups of similar length, each padded to its own longest: a row's score must not
    depend on the other histories of the batch (right padding + causal attention), and rows keep their order."""
    from llmrec.baselines import MODELS, ModelArgs, base

    torch.manual_seed(0)
    model = MODELS[name](ModelArgs(num_items=40, hidden_size=16, num_layers=2, num_heads=2, max_len=12)).eval()
    rng = random.Random(0)
    histories = [[rng.randrange(40) for _ in range(rng.choice([0, 1, 3, 7, 12, 20]))] for _ in range(50)]
    alone = torch.cat([model._last_hidden([h]) for h in histories])  # each history padded to nothing but itself
    monkeypatch.setattr(base, "LENGTH_GROUP", 8)  # several groups in one batch
    grouped = model.history_hidden(histories)
    assert torch.allclose(grouped, alone, atol=1e-5)
    padded = model._last_hidden(histories)  # the whole batch padded to its longest, as before the groups
    assert torch.allclose(grouped, padded, atol=1e-5)
    assert torch.allclose(model.score(histories[:5]), model.logits(alone[:5]), atol=1e-5)
