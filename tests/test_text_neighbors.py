"""Rows of untrained items from their nearest trained items' texts (``--cold_rows knn``) and the text fusion
(``--text_fusion``) of the atomic and the semantic-ID LLM: the neighbour rule, the saved item texts, the selection
on validation, the fused score and items added to a served run (issue #19)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmrec.baselines import ModelArgs, TextKNN
from llmrec.config import ConfigError, parse_config
from llmrec.data import DataError, load_prepared, save_prepared
from llmrec.data.processing import mark_cold_items
from llmrec.decoding import BEAM_FLOOR
from llmrec.items.neighbors import (
    ITEM_TEXT_FILE,
    ColdNeighbors,
    ItemTexts,
    history_similarity,
    load_item_text,
    nearest_rows,
    save_item_text,
)
from llmrec.llm.coldrows import row_sets
from llmrec.llm.config import TrainConfig
from llmrec.llm.fusion import FUSION_GRID
from llmrec.llm.loop import train
from llmrec.llm.recommender import load_llm_run
from llmrec.runs import read_metrics
from test_llm_helpers import make_tiny_model_dir, make_toy_data


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_nearest_rows_copies_the_nearest_trained_item_only():
    vectors = torch.cat([_unit([1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [1, 0, 0]), torch.zeros(1, 3)])
    trained = torch.tensor([True, True, True, False, True])  # item 3 (a copy of item 0's text) is untrained
    rows = torch.arange(15, dtype=torch.float32).reshape(5, 3)
    query = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    out = nearest_rows(rows, vectors, trained, query, k=1)
    assert torch.equal(out[0], rows[0]) and torch.equal(out[1], rows[1])
    assert torch.allclose(out[2], rows[trained].mean(0))  # no text: the mean trained row (item 4 counts in it)
    two = nearest_rows(rows, vectors, trained, query[:1], k=2)  # items 0 and 2, never the untrained twin 3
    assert torch.allclose(two[0], (rows[0] + rows[2]) / 2)
    assert torch.allclose(nearest_rows(rows, vectors, trained, query[:1], k=50)[0], rows[[0, 1, 2]].mean(0))
    with pytest.raises(ValueError, match="cold_knn"):
        nearest_rows(rows, vectors, trained, query, k=0)


def test_cold_neighbors_take_the_best_neighbour_score_less_the_gap():
    vectors = torch.cat([_unit([1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [1, 0.1, 0], [0, 0, 1]), torch.zeros(1, 3)])
    trained = torch.tensor([True, True, True, False, False, False])  # untrained: 3 (near 0, then 1), 4, 5 (no text)
    table = ColdNeighbors.of(ItemTexts(vectors, trained, "minilm"), k=2)
    assert table.items.tolist() == [3, 4] and table.top[0].tolist() == [0, 1]
    scores = torch.tensor([[1.0, 3.0, 0.0, -5.0, -5.0, 7.0], [2.0, 0.0, 1.0, -5.0, -5.0, 7.0]])
    s = (vectors[3] @ vectors[[0, 1]].T).tolist()  # cosines to items 0 and 1, s[0] > s[1]
    out = table.apply(scores, gap=2.0)
    assert out[0, 3].item() == pytest.approx(max(1.0, 3.0 - 2.0 * (s[0] - s[1])))  # the farther, better neighbour
    assert out[1, 3].item() == pytest.approx(2.0)  # the nearest one when it scores best
    assert torch.equal(out[:, [0, 1, 2, 5]], scores[:, [0, 1, 2, 5]])  # trained and text-less items untouched
    assert torch.equal(ColdNeighbors.of(ItemTexts(vectors, trained, "minilm"), k=1).apply(scores, 9.0)[:, 3],
                       scores[:, 0])  # fmt: skip
    assert out[0, 4].item() == max(scores[0, table.top[1]].tolist())  # all cosines 0: no gap, the best of two


def test_history_similarity_is_the_textknn_score():
    g = torch.Generator().manual_seed(0)
    vectors = F.normalize(torch.randn(9, 5, generator=g), dim=1)
    knn = TextKNN(ModelArgs(num_items=9))
    knn.set_embeddings(vectors, last_k=3)
    hist = [[0, 1, 2, 3], [4], []]
    sim = history_similarity(vectors, hist, last_k=3)
    assert torch.allclose(knn.score(hist), sim)
    expected = F.normalize(vectors[[1, 2, 3]].sum(0), dim=0) @ vectors.T
    assert torch.allclose(sim[0], expected) and torch.equal(sim[2], torch.zeros(9))


def test_item_text_file_round_trip_and_errors(tmp_path):
    texts = ItemTexts(_unit([1, 0], [0, 1], [1, 1]), torch.tensor([True, False, True]), "minilm", "", 5.0)
    save_item_text(texts, tmp_path)
    back = load_item_text(tmp_path, 3)
    assert back.encoder == "minilm" and back.fusion == 5.0 and torch.equal(back.trained, texts.trained)
    assert torch.allclose(back.vectors, texts.vectors, atol=1e-3)  # stored as float16
    assert load_item_text(tmp_path / "none", 3) is None
    with pytest.raises(DataError, match="expected 4 items"):
        load_item_text(tmp_path, 4)
    (tmp_path / ITEM_TEXT_FILE).write_bytes(b"not safetensors")
    with pytest.raises(DataError, match=ITEM_TEXT_FILE):
        load_item_text(tmp_path, 3)
    grown = texts.extended(torch.tensor([[3.0, 4.0]]))
    assert grown.trained.tolist() == [True, False, True, False] and torch.allclose(grown.vectors[3], _unit([3, 4])[0])


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    root = tmp_path_factory.mktemp("knnllm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMREC_CACHE", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        cold = save_prepared(mark_cold_items(load_prepared(make_toy_data(root / "warm")), 0.25, seed=1), root / "cold")
        yield {"model": make_tiny_model_dir(root / "model"), "cold": cold, "root": root}


def _cfg(llm, out, **kw) -> TrainConfig:
    base = {"data": str(llm["cold"]), "model": str(llm["model"]), "output_dir": str(llm["root"] / out),
            "num_layers": 2, "item_cf_dim": 0, "item_mask_prob": 0.0, "label_smoothing": 0.0,
            "lr_schedule": "constant", "batch_size": 8, "lr": 1e-2, "epochs": 2, "eval_every": 0, "eval_users": 0,
            "test_users": -1, "progress": False, "item_text_encoder": "lm", "num_threads": 1}  # fmt: skip
    base.update(kw)
    return parse_config(TrainConfig, [x for k, v in base.items() for x in (f"--{k}", str(v))])


def test_knn_cold_rows_fusion_selected_on_validation_and_added_items(llm):
    cfg = _cfg(llm, "knn_fused", text_fusion=-1)
    result = train(cfg)
    run, data = llm["root"] / "knn_fused", load_prepared(cfg.data)
    texts = load_item_text(run, data.num_items)
    cold = sorted(data.cold_items)
    assert texts is not None and texts.trained.tolist() == [i not in data.cold_items for i in range(data.num_items)]
    # the weight: the grid value with the best validation NDCG@10 (ties: the smaller), saved and reported
    sel = read_metrics(run)["train"]["text_fusion"]
    assert [r["text_fusion"] for r in sel["valid"]] == list(FUSION_GRID)
    best = max(r["ndcg@10"] for r in sel["valid"])
    assert sel["selected"] == min(r["text_fusion"] for r in sel["valid"] if r["ndcg@10"] == best) == texts.fusion
    assert result["train"]["text_fusion"]["selected"] == texts.fusion
    valid = read_metrics(run)["valid"]  # the tested model's validation: the best step's adapter, fused
    chosen = next(r for r in sel["valid"] if r["text_fusion"] == sel["selected"])
    assert valid["text_fusion"] == sel["selected"] and valid["step"] == result["history"][-1]["step"]
    assert valid["metrics"]["ndcg@10"] == chosen["ndcg@10"] and valid["metrics"]["hr@10"] == chosen["hr@10"]
    assert valid["num_users"] == data.num_users and ("text cosine" in valid["protocol"]) == (sel["selected"] > 0)
    rec = load_llm_run(run)
    assert rec.fusion == texts.fusion and rec.cold_rows == "knn"
    rows = row_sets(rec.item_lm)["input"].detach()
    has = texts.vectors.abs().sum(1) > 0
    for c in cold:  # the row of a nearest warm item with text (any of them on a tie)
        if not has[c]:
            continue
        sims = texts.vectors @ texts.vectors[c]
        sims[~(texts.trained & has)] = -2
        twins = (sims >= sims.max() - 1e-4).nonzero().squeeze(1)
        assert any(torch.allclose(rows[c], rows[j], atol=1e-5) for j in twins), c
    # the fused score is the LM's logits plus the weight times the textknn score
    hist = [[4, 5], [0, 1, 2], []]
    rec.fusion = 3.0
    fused = rec.score(hist)
    assert "3 x text cosine" in rec.protocol_note  # every result of a fused run says what its scores are
    rec.fusion = 0.0
    plain = rec.score(hist)
    assert rec.protocol_note == ""
    assert torch.allclose(fused, plain + 3.0 * history_similarity(texts.vectors, hist), atol=1e-5)
    # an item added with the text of a trained item gets that item's row, so it scores like it
    rec.fusion = 3.0
    unique = [i for i in range(data.num_items) if texts.trained[i] and has[i]
              and int(((texts.vectors @ texts.vectors[i]) > 1 - 1e-4)[texts.trained].sum()) == 1]  # fmt: skip
    warm, n = unique[0], rec.num_items
    assert rec.add_items(["copy"], [data.catalog.titles[warm]], [data.catalog.texts[warm]]) == [n]
    assert rec.texts.vectors.shape[0] == n + 1 and not bool(rec.texts.trained[n])
    assert torch.allclose(row_sets(rec.item_lm)["input"][n], row_sets(rec.item_lm)["input"][warm], atol=1e-5)
    after = rec.score(hist)
    assert torch.allclose(after[:, n], after[:, warm], atol=1e-3)  # text fusion included: the same text
    # --cold_neighbors 3: untrained items (the cold ones and the added copy) take their best neighbour's logit
    rec.fusion, rec.cold_neighbors, rec.cold_gap = 0.0, 3, 2.0
    base = rec.item_lm.score([rec._prompt(h) for h in hist], rec.pad_id, rec.batch_size)
    best = rec.score(hist)
    assert torch.allclose(best, ColdNeighbors.of(rec.texts, 3).apply(base, 2.0))
    warm_items = rec.texts.trained.nonzero().squeeze(1)
    assert torch.equal(best[:, warm_items], base[:, warm_items])
    assert "3 nearest trained items" in rec.protocol_note
    for h in hist:  # generate: the top of these scores, the history masked
        masked = best[hist.index(h)].clone()
        masked[h] = float("-inf")
        assert rec.generate(h, k=5) == masked.topk(5).indices.tolist()
    n2 = rec.num_items
    rec.add_items(["copy2"], [data.catalog.titles[warm]], [data.catalog.texts[warm]])  # a new table, with it
    assert torch.allclose(rec.score(hist)[:, n2], rec.score(hist)[:, n], atol=1e-3)


def test_projector_rows_and_no_fusion_write_no_fusion(llm):
    cfg = _cfg(llm, "proj_plain", cold_rows="projector", epochs=1)
    train(cfg)
    rec = load_llm_run(llm["root"] / "proj_plain")
    assert rec.fusion == 0.0 and rec.cold_rows == "projector" and rec.projector is not None
    assert "text_fusion" not in read_metrics(llm["root"] / "proj_plain")["train"]
    (llm["root"] / "proj_plain" / ITEM_TEXT_FILE).unlink()
    cfg_path = llm["root"] / "proj_plain" / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("text_fusion: 0.0", "text_fusion: 2.0"))
    with pytest.raises(DataError, match="item_text.safetensors"):
        load_llm_run(llm["root"] / "proj_plain")


def test_semantic_fusion_selected_on_a_finished_run_reranks_the_beam(llm):
    sem = {"item_ids": "semantic", "sid_levels": 2, "sid_codes": 4, "beam_width": 20, "epochs": 1}
    run = llm["root"] / "sem_fused"
    train(_cfg(llm, "sem_fused", **sem))
    assert not (run / ITEM_TEXT_FILE).exists() and load_llm_run(run).fusion == 0.0
    # the finished run resumed with --text_fusion -1: no more training, the weight selected on validation
    train(_cfg(llm, "sem_fused", text_fusion=-1, resume=True, **sem))
    data = load_prepared(llm["cold"])
    sel = read_metrics(run)["train"]["text_fusion"]
    assert [r["text_fusion"] for r in sel["valid"]] == list(FUSION_GRID)
    best = max(r["ndcg@10"] for r in sel["valid"])
    assert sel["selected"] == min(r["text_fusion"] for r in sel["valid"] if r["ndcg@10"] == best)
    valid = read_metrics(run)["valid"]
    assert valid["text_fusion"] == sel["selected"] and valid["metrics"]["ndcg@10"] == best
    rec = load_llm_run(run)
    assert rec.texts is not None and rec.fusion == sel["selected"]
    assert rec.texts.trained.tolist() == [i not in data.cold_items for i in range(data.num_items)]
    hist = [[4, 5], [0, 1, 2], [3]]
    rec.fusion = 0.0
    plain = rec.score(hist)
    rec.fusion = 3.0
    fused = rec.score(hist)
    assert "beam score + 3 x text cosine" in rec.protocol_note
    for row, h in zip(fused, hist):  # generate: the beam re-ordered by the fused scores, as score ranks it
        assert rec.generate(h, k=6, exclude_seen=False) == row.topk(6).indices.tolist()
    sim = history_similarity(rec.texts.vectors, hist)
    beam = plain > BEAM_FLOOR  # a 12-item catalog: every item is in a width-20 beam
    assert torch.allclose(fused[beam], (plain + 3.0 * sim)[beam], atol=1e-5)  # the beam items: re-scored
    # items outside the beams: below every beam item, in the order of their text cosine
    gen = torch.Generator().manual_seed(0)
    base = torch.where(torch.rand(4, 50, generator=gen) < 0.3, -20 * torch.rand(4, 50, generator=gen), BEAM_FLOOR)
    base[3] = BEAM_FLOOR  # no beam item at all
    sim = 2 * torch.rand(4, 50, generator=gen) - 1
    for w in (0.5, 20.0):
        out = type(rec).fuse(base, sim, w)
        beam = base > BEAM_FLOOR
        assert torch.allclose(out[beam], base[beam] + w * sim[beam])
        for b in range(4):
            inside, outside = out[b][beam[b]], out[b][~beam[b]]
            assert not len(inside) or outside.max() < inside.min()
            assert torch.equal(outside.argsort(), sim[b][~beam[b]].argsort())
    assert type(rec).fuse(base, sim, 0.0) is base
    # an added item's text joins the run's, so the fusion scores it
    n = rec.num_items
    assert rec.add_items(["new"], [data.catalog.titles[0]], [data.catalog.texts[0]]) == [n]
    assert rec.texts.vectors.shape[0] == n + 1 and not bool(rec.texts.trained[n])
    assert rec.score(hist).shape == (3, n + 1)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"cold_rows": "mean"}, "^cold_rows:"),
        ({"cold_knn": 0}, "^cold_knn:"),
        ({"text_fusion": -2}, "^text_fusion:"),
        ({"cold_neighbors": 0}, "^cold_neighbors"),
        ({"item_ids": "semantic", "cold_neighbors": 3}, "^cold_neighbors: atomic"),
    ],  # fmt: skip
)
def test_config_errors_name_the_field(llm, kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(llm, "never", **kw)


def test_ensemble_member_options_set_the_atomic_llm_inference_rule(llm):
    """``llmrec ensemble --member_options cold_neighbors=3,...``: the LLM member scores with that rule."""
    from llmrec.baselines.config import BaselineConfig
    from llmrec.baselines.train import train_baseline
    from llmrec.ensemble import EnsembleConfig
    from llmrec.ensemble_run import create_ensemble_run
    from llmrec.recommenders import load_recommender

    train(_cfg(llm, "ens_llm", text_fusion=1.0))
    train_baseline(BaselineConfig(model="pop", data=str(llm["cold"]), output_dir=str(llm["root"] / "ens_pop")),
                   log=lambda *a: None)  # fmt: skip
    runs = [str(llm["root"] / "ens_llm"), str(llm["root"] / "ens_pop")]
    opts = ["cold_neighbors=3,cold_gap=2,text_fusion=0.5", ""]
    cfg = EnsembleConfig(runs=runs, weights=[1.0, 0.01], member_options=opts, output_dir=str(llm["root"] / "ens"))
    create_ensemble_run(cfg, load_recommender)
    ens = load_recommender(llm["root"] / "ens")
    lm, pop = load_llm_run(runs[0]), load_recommender(runs[1])
    lm.cold_neighbors, lm.cold_gap, lm.fusion = 3, 2.0, 0.5
    hist = [[4, 5], [0, 1, 2], []]
    assert torch.allclose(ens.score(hist), lm.score(hist) + 0.01 * pop.score(hist), atol=1e-5)
    assert "3 nearest trained items" in ens.protocol_note
    lm.cold_neighbors = 1  # the rule matters here: without it the sum differs
    assert not torch.allclose(ens.score(hist), lm.score(hist) + 0.01 * pop.score(hist), atol=1e-5)
