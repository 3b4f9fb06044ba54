"""Semantic-ID runs end to end on a tiny offline Llama: codes, prompts, the code-level loss, beam-search scoring,
save -> load, and the commands (train, evaluate, recommend, compare, serve); the atomic path stays as it was (losses to 1e-6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from llmrec.cli import main as cli_main
from llmrec.config import ConfigError, parse_config
from llmrec.data.dataset import load_prepared
from llmrec.evaluation import evaluate
from llmrec.inference import recommend
from llmrec.items.semantic import rq_kmeans
from llmrec.items.semantic_store import load_semantic_ids
from llmrec.llm.build import build_model, item_text_embeddings_for
from llmrec.llm.config import TrainConfig
from llmrec.llm.examples import build_examples
from llmrec.llm.loop import train
from llmrec.llm.recommender import SemanticLLMRecommender, load_llm_run
from test_llm_helpers import make_tiny_model_dir, make_toy_data

SID = {"item_ids": "semantic", "sid_levels": 2, "sid_codes": 3, "item_text_encoder": "lm"}  # 12 items: 3 x 3 x d


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("semllm")
    with pytest.MonkeyPatch.context() as mp:  # the `lm` text embeddings are cached here, not in ~/.cache
        mp.setenv("LLMREC_CACHE", str(root / "cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield {"model": make_tiny_model_dir(root / "model"), "data": make_toy_data(root / "data"), "root": root}


def _argv(paths, out, **kw) -> list[str]:
    base = {
        "data": str(paths["data"]),
        "model": str(paths["model"]),
        "output_dir": str(paths["root"] / out),
        "num_layers": 2,
        "item_cf_dim": 0,
        "item_mask_prob": 0.0,
        "label_smoothing": 0.0,
        "lr_schedule": "constant",
        "batch_size": 16,
        "lr": 1e-2,
        "eval_every": 0,
        "eval_users": 0,
        "test_users": 0,
        "progress": False,
        "log_every": 1,
    }
    base.update(kw)
    return [x for k, v in base.items() for x in (f"--{k}", str(v))]


def _cfg(paths, out, **kw) -> TrainConfig:
    return parse_config(TrainConfig, _argv(paths, out, **kw))


def _losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in open(run_dir / "train_log.jsonl")]


@pytest.fixture(scope="module")
def sem_run(paths):
    """A semantic-ID run trained through the command line, as a user would."""
    assert cli_main(["train", *_argv(paths, "sem", epochs=10, **SID)]) == 0
    return paths["root"] / "sem"


@pytest.fixture(scope="module")
def atomic_run(paths):
    train(_cfg(paths, "atomic", epochs=3))
    return paths["root"] / "atomic"


def test_config_validation_names_the_field(paths):
    bad = {
        "item_ids": "hashed",
        "sid_embeddings": "cf",
        "beam_width": 10,
        "sid_levels": 0,
        "sid_codes": 0,
        "sid_extra_codes": -1,
        "sid_cf_weight": -1.0,
    }
    for name, value in bad.items():
        with pytest.raises(ConfigError, match=name):
            _cfg(paths, "x", **{name: value})
    with pytest.raises(ConfigError, match="item_cf_dim"):
        _cfg(paths, "x", item_ids="semantic", sid_embeddings="text+cf", item_cf_dim=0)
    cfg = _cfg(paths, "x")
    assert (cfg.item_ids, cfg.sid_levels, cfg.sid_codes, cfg.beam_width) == ("atomic", 3, 256, 50)


def test_codes_are_deterministic_stored_and_rendered_as_code_tokens(paths, sem_run):
    cfg = _cfg(paths, "codes", **SID)
    data = load_prepared(paths["data"])
    stored = load_semantic_ids(sem_run, data.num_items)
    emb = item_text_embeddings_for(cfg, data).vectors.numpy()
    again = rq_kmeans(emb, cfg.sid_levels, cfg.sid_codes, seed=cfg.seed)
    assert np.array_equal(stored.codes, again.codes) and stored.level_sizes == again.level_sizes
    assert len({tuple(c) for c in stored.codes.tolist()}) == data.num_items  # collision-free
    built = build_model(cfg, data)
    assert np.array_equal(built.sids.codes, stored.codes)
    enc, vocab = built.encoder, built.encoder.vocab
    assert enc.tokens_per_item == stored.num_levels == 3
    paths_of = [vocab.path_ids(stored.codes[i]) for i in range(data.num_items)]
    assert enc.encode([4, 7], target=1) == enc.head + paths_of[4] + paths_of[7] + paths_of[1]
    assert "<|sid_0_" in enc.render([4]) and "<|item_" not in enc.render([4])
    # lora trains exactly the code-token rows
    delta = built.item_lm.item_weights()
    assert delta.shape[0] == vocab.num_tokens and delta.requires_grad


def test_examples_predict_every_code_of_every_item(paths):
    built = build_model(_cfg(paths, "ex", prompt="titles", **SID), load_prepared(paths["data"]))
    enc, L = built.encoder, built.encoder.tokens_per_item
    seqs = load_prepared(paths["data"]).train_sequences()
    seq_ex, sft_ex = build_examples(seqs, enc, "sequence", 20), build_examples(seqs, enc, "sft", 20)
    assert sum(len(t) for _, t in seq_ex) == L * sum(len(s) - 1 for s in seqs) == sum(len(t) for _, t in sft_ex)
    for ids, targets in seq_ex[:5]:
        assert all(enc.vocab.first_id <= ids[p] < enc.vocab.end_id for p in targets) and min(targets) >= 1
    ids, targets = sft_ex[0]
    assert targets == list(range(len(ids) - L, len(ids)))
    compact = build_model(_cfg(paths, "ex2", prompt="compact", **SID), load_prepared(paths["data"])).encoder
    ids, targets = build_examples([[0, 1, 2]], compact, "sequence", 20)[0]
    assert targets == list(range(L, 3 * L))  # the first item (at position 0) is the only one not predicted
    windows = build_examples([list(range(12)) * 2], enc, "sequence", 5)
    assert sum(len(t) for _, t in windows) == 23 * L  # long users: windows still predict every item once


def test_code_loss_is_per_level_and_masking_hides_whole_items(paths):
    cfg = _cfg(paths, "loss", label_smoothing=0.2, **SID)
    built = build_model(cfg, load_prepared(paths["data"]))
    item_lm, vocab = built.item_lm.eval(), built.encoder.vocab
    ids = torch.tensor([built.encoder.encode([0, 5, 9], target=2)])
    tmask = torch.zeros_like(ids, dtype=torch.bool)
    tmask[0, -3:] = True
    loss, n = item_lm(ids, torch.ones_like(ids), tmask)
    with torch.no_grad():
        h = item_lm.hidden_states(ids, torch.ones_like(ids))[0, -4:-1]  # the states before the 3 target codes
        w = item_lm.item_weights()
        manual = 0.0
        for lvl in range(3):
            s, e = vocab.level_range(lvl)
            logits = h[lvl] @ w[s - vocab.first_id : e - vocab.first_id].T
            target = torch.tensor(int(ids[0, -3 + lvl]) - s)
            manual += torch.nn.functional.cross_entropy(logits[None], target[None], label_smoothing=0.2).item()
    assert n == 3 and loss.item() == pytest.approx(manual, rel=1e-5)
    item_lm.item_mask_prob = 0.5
    torch.manual_seed(0)
    batch = torch.tensor([built.encoder.encode(list(range(12)))] * 8)
    hide = item_lm.hide_mask(batch)
    level = vocab.level_of(batch)
    assert hide.any() and not hide[level < 0].any()
    starts = hide & (level == 0)
    for lvl in (1, 2):  # an item is hidden with all its codes or not at all
        assert torch.equal(hide[:, lvl:] & (level[:, lvl:] == lvl), starts[:, :-lvl])
    with pytest.raises(TypeError, match="beam search"):
        item_lm.score([[1, 2]], pad_id=0)


def test_loss_falls_and_the_saved_run_reproduces(paths, sem_run):
    losses = _losses(sem_run)
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    metrics = json.loads((sem_run / "metrics.json").read_text())
    assert metrics["valid"]["metrics"]["ndcg@10"] > 0.6 and metrics["test"]["metrics"]["ndcg@10"] > 0.6
    for split in ("valid", "test"):
        assert "beam search of width 50" in metrics[split]["protocol"] and "tie last" in metrics[split]["protocol"]
    saved = yaml.safe_load((sem_run / "config.yaml").read_text())
    assert (saved["item_ids"], saved["beam_width"]) == ("semantic", 50)
    rec = load_llm_run(sem_run)
    assert isinstance(rec, SemanticLLMRecommender)
    res = evaluate(rec.score, load_prepared(paths["data"]), "valid", protocol_note=rec.protocol_note)
    assert res["metrics"]["ndcg@10"] == pytest.approx(metrics["valid"]["metrics"]["ndcg@10"], abs=1e-6)
    assert res["protocol"] == metrics["valid"]["protocol"] and res["scoring"] == rec.protocol_note
    again = load_llm_run(sem_run)
    hists = [[0, 1, 2], [5, 6], [9], []]
    assert recommend(rec, hists, k=5) == recommend(again, hists, k=5)


def test_recommend_generate_and_score_agree_on_catalog_items(sem_run):
    rec = load_llm_run(sem_run)
    catalog = set(range(len(rec.catalog)))
    for hist in ([0, 1, 2], [4, 5], [8, 9, 10, 11, 8], [3]):
        top = recommend(rec, [hist], k=5)[0]
        ids = [i for i, _ in top]
        assert ids == rec.generate(hist, k=5)
        assert set(ids) <= catalog and not set(ids) & set(hist) and len(set(ids)) == 5
        scores = rec.score([hist])[0]
        assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
        assert torch.equal(torch.tensor([s for _, s in top]), scores[ids])
        assert (scores > -1e29).sum() == min(rec.beam_width, len(catalog))  # every item is within 50 beams
        assert set(rec.generate(hist, k=12, exclude_seen=False)) == catalog
        assert set(rec.generate(hist, k=4, do_sample=True)) <= catalog
    assert rec.generate([0, 1, 2], k=1) == [3] and rec.generate([9, 10], k=1) == [11]  # the toy cycles
    text = rec.score_text([rec.encoder.render([0, 1])])
    assert torch.equal(text.argmax(1), rec.score([[0, 1]]).argmax(1))


def test_beam_scores_put_items_outside_the_beams_last(sem_run):
    rec = load_llm_run(sem_run, beam_width=20)
    rec.exclude_history = True
    scores = rec.score([[0, 1, 2, 3]])[0]
    assert (scores[:4] == scores.min()).all()  # excluded inside the search: tied with the non-beam items
    assert "history items excluded inside the search" in rec.protocol_note


def test_commands_work_on_a_semantic_run(paths, sem_run, capsys):
    assert cli_main(["evaluate", "--run", str(sem_run), "--split", "test"]) == 0
    result = json.loads((sem_run / "eval_test.json").read_text())
    stored = json.loads((sem_run / "metrics.json").read_text())["test"]
    assert "beam search" in result["protocol"] and result["protocol"] == stored["protocol"]
    assert result["metrics"]["ndcg@10"] == pytest.approx(stored["metrics"]["ndcg@10"], abs=1e-6)
    capsys.readouterr()
    assert cli_main(["recommend", "--run", str(sem_run), "--history", "i0", "i1", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert len(out["items"]) == 3 and not {"i0", "i1"} & {it["id"] for it in out["items"]}
    other = paths["root"] / "sem_b"  # another semantic run on the same data
    assert cli_main(["train", *_argv(paths, "sem_b", max_steps=2, **{**SID, "sid_codes": 4})]) == 0
    assert cli_main(["compare", str(sem_run), str(other), "--output_dir", str(paths["root"] / "cmp")]) == 0
    assert "beam search" in (paths["root"] / "cmp" / "compare.md").read_text()


def test_compare_a_semantic_run_with_an_atomic_run(paths, sem_run, atomic_run):
    out = paths["root"] / "cmp_mixed"
    assert cli_main(["compare", str(sem_run), str(atomic_run), "--output_dir", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert "Scoring (every other run: its model's own score of every item in the catalog):" in md
    assert "beam search" in md and "AUC of a beam-scored run" in md


def test_http_app_serves_a_semantic_run(sem_run):
    from fastapi.testclient import TestClient

    from llmrec.serving.app import create_app

    rec = load_llm_run(sem_run)
    with TestClient(create_app(rec), base_url="http://127.0.0.1") as client:
        r = client.post("/recommend", json={"history": ["i4", "i5"], "k": 4})
        assert r.status_code == 200, r.text
        ids = [it["id"] for it in r.json()["items"]]
        assert ids == [f"i{i}" for i in rec.generate([4, 5], k=4)]
        r = client.post("/recommend", json={"history": ["i4"], "k": 12, "exclude_seen": False})
        assert sorted(it["id"] for it in r.json()["items"]) == sorted(f"i{i}" for i in range(12))


def test_text_cf_codes_titles_sft_and_masking_train(paths):
    kw = {**SID, "sid_embeddings": "text+cf", "item_cf_dim": 4, "sid_cf_weight": 0.5, "prompt": "titles"}
    kw |= {"objective": "sft", "item_mask_prob": 0.3, "item_mask_fill": "mean", "label_smoothing": 0.1}
    cfg = _cfg(paths, "semcf", max_steps=3, test_users=-1, sid_extra_codes=2, **kw)
    result = train(cfg)
    assert result["valid"]["metrics"]["ndcg@10"] > 0 and all(np.isfinite(_losses(paths["root"] / "semcf")))
    sids = load_semantic_ids(paths["root"] / "semcf", 12)
    assert sids.level_sizes[-1] == int(sids.codes[:, -1].max()) + 1 + 2  # room for later items
    assert yaml.safe_load((paths["root"] / "semcf" / "config.yaml").read_text())["item_cf_dim"] == 4
    with pytest.raises(ConfigError, match="semantic ids"):  # resuming under other code settings is refused
        train(_cfg(paths, "semcf", max_steps=4, test_users=-1, resume=True, **{**kw, "sid_codes": 2}))


# Losses of short atomic runs on this tiny model and toy data, logged before semantic IDs were wired in
# (llmrec 2026-12-01, torch CPU, 1 thread): the atomic path must keep consuming randomness and building examples
# exactly as it did. Compared to 1e-6 relative, not bit for bit: on the 2026-12-02 machine (another CPU, newer
# libraries: transformers 5.24) the same code moved one loss in its 7th digit (2.4842556 vs 2.4842558); another
# draw (--seed 1 or 2 instead of 0) moves the losses of seq_titles_mask_mean by up to 2.9% and 2.4%.
ATOMIC_BASELINE = {
    "seq_cf": (
        {"item_cf_dim": 4, "item_mask_prob": 0.3, "label_smoothing": 0.3, "lr_schedule": "wsd"},
        # with _fixed_factors (re-logged 2026-12-02 on the code of commit 91710f1, Intel Xeon, 1 thread; with the
        # data's own factors the AMD machine logged 2.2131851, 2.1401017, 2.1450348, 2.1821475, 2.1372640, 2.1400938)
        [3.0510036945343018, 2.8354289531707764, 2.592888593673706, 2.416841983795166, 2.3492114543914795,
         2.326145887374878],
    ),
    "seq_titles_mask_mean": (
        {"prompt": "titles", "item_mask_prob": 0.3, "item_mask_fill": "mean", "embed_dropout": 0.1,
         "lora_dropout": 0.1, "label_smoothing": 0.3, "lr_schedule": "wsd"},
        [2.4921085834503174, 2.484255790710449, 2.4843809604644775, 2.469388484954834, 2.3829429149627686,
         2.3775174617767334],
    ),
    "sft_compact": (
        {"objective": "sft", "prompt": "compact", "item_mask_prob": 0.3, "label_smoothing": 0.1,
         "lr_schedule": "wsd"},
        [2.5001211166381836, 2.537628650665283, 2.420100212097168, 2.3448972702026367, 2.3241069316864014,
         2.241081476211548],
    ),
}  # fmt: skip


def _fixed_factors(sequences, num_items, dim, window=3, seed=0):
    """Co-occurrence factors that no LAPACK routine chooses: the toy's normalised co-occurrence matrix has the
    eigenvalue 1 three times (three disconnected item groups), so ``torch.svd_lowrank`` may return any rotation of
    that subspace, and it returned another one on another CPU (2026-12-02, an Intel Xeon; the baseline was logged on
    an AMD EPYC). ``seq_cf`` checks the training loop with these instead."""
    return torch.randn(num_items, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(ATOMIC_BASELINE))
def test_atomic_losses_are_unchanged_from_before(paths, name, monkeypatch):
    kw, expected = ATOMIC_BASELINE[name]
    if kw.get("item_cf_dim"):
        monkeypatch.setattr("llmrec.items.init.cooccurrence_factors", _fixed_factors)
    threads = torch.get_num_threads()
    try:  # one thread: float sums in the same order as when the baseline was logged
        cfg = _cfg(paths, f"base_{name}", max_steps=6, batch_size=8, eval_every=1000, test_users=-1,
                   weight_decay=0.01, item_weight_decay=0.01, num_threads=1, **kw)  # fmt: skip
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    assert _losses(paths["root"] / f"base_{name}") == pytest.approx(expected, rel=1e-6, abs=0)


def test_trie_loss_normalises_each_code_over_its_prefix_children(paths):
    """``--sid_loss trie``: each code's cross-entropy runs over the children of its item's prefix in the training
    trie (by brute force below); with a trie holding every path it equals the level loss (the control)."""
    from itertools import product

    from llmrec.trie import CodeTrie

    cfg = _cfg(paths, "loss_trie", label_smoothing=0.2, sid_loss="trie", **SID)
    data = load_prepared(paths["data"])
    built = build_model(cfg, data)
    item_lm, vocab, codes = built.item_lm.eval(), built.encoder.vocab, built.sids.codes
    assert item_lm.code_trie is not None and item_lm.code_trie.num_items == data.num_items
    examples = build_examples(data.train_sequences()[:6], built.encoder, "sequence", 20)
    from llmrec.llm.examples import collate

    ids, mask, tmask = collate(examples, list(range(len(examples))), 0)
    loss, n = item_lm(ids, mask, tmask)
    trie = item_lm.code_trie
    with torch.no_grad():
        h = item_lm.hidden_states(ids, mask)
        w = item_lm.item_weights()
        manual = 0.0
        for b, t in tmask[:, 1:].nonzero().tolist():
            tok = int(ids[b, t + 1])
            lvl = int(vocab.level_of(torch.tensor([tok]))[0])
            s, e = vocab.level_range(lvl)
            prefix = [int(ids[b, t + 1 - lvl + j]) - vocab.level_start(j) for j in range(lvl)]
            kids = sorted({int(c[lvl]) for c in trie.codes.tolist() if list(c[:lvl]) == prefix})
            logits = (h[b, t] @ w[s - vocab.first_id : e - vocab.first_id].T)[kids]
            logp = logits.log_softmax(-1)
            nll = -logp[kids.index(tok - s)]
            manual += float(0.8 * nll - 0.2 * logp.mean())
    assert n == int(tmask.sum()) and loss.item() == pytest.approx(manual, rel=1e-5)
    # a trie of every possible path: all codes of a level are children, so the trie loss is the level loss
    full = np.array(list(product(*[range(s) for s in vocab.level_sizes])))
    item_lm.set_code_trie(CodeTrie(full, vocab.level_sizes))
    every, _ = item_lm(ids, mask, tmask)
    item_lm.set_code_trie(None)
    level, _ = item_lm(ids, mask, tmask)
    assert every.item() == pytest.approx(level.item(), rel=1e-5) and loss.item() < level.item()
    bad = CodeTrie(codes[codes[:, 0] != codes[data.train_sequences()[0][0], 0]], vocab.level_sizes)
    item_lm.set_code_trie(bad)  # a training item missing from the trie is refused, not silently skipped
    with pytest.raises(ValueError, match="not in the training trie"):
        item_lm(ids, mask, tmask)


def test_trie_loss_run_trains_and_scores_with_the_same_normalisation(paths):
    assert cli_main(["train", *_argv(paths, "sem_trie", epochs=6, sid_loss="trie", **SID)]) == 0
    run = paths["root"] / "sem_trie"
    rec = load_llm_run(run)
    assert isinstance(rec, SemanticLLMRecommender) and rec.normalize == "trie"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["valid"]["metrics"]["ndcg@10"] > 0.5
    _, scores = rec.beams([rec._prompt([0, 1, 2])], None, 12)
    probs = np.exp(scores[0])  # per-step distributions over the allowed codes: the item probabilities sum to 1
    assert len(scores[0]) == 12 and probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_resume_reads_the_runs_own_codes_and_refuses_other_code_options(paths, monkeypatch):
    """k-means, the factors and the encoder are not bit-reproducible across thread counts or machines: a resumed
    semantic-ID run continues in the codes it stored, never clusters again, and refuses options that decide codes."""
    import llmrec.llm.build as build

    kw = {**SID, "save_every": 2, "lr_schedule": "constant", "test_users": -1}
    train(_cfg(paths, "sem_resume", max_steps=2, **kw))
    run = paths["root"] / "sem_resume"
    stored = load_semantic_ids(run).codes.copy()

    def no_clustering(*args, **kwargs):
        raise AssertionError("a resumed run clustered its items again")

    monkeypatch.setattr(build, "rq_kmeans_warm", no_clustering)
    with pytest.raises(ConfigError, match="resume: sid_codes is 2, the run started with 3"):
        train(_cfg(paths, "sem_resume", max_steps=4, resume=True, **{**kw, "sid_codes": 2}))
    train(_cfg(paths, "sem_resume", max_steps=4, resume=True, num_threads=1, **kw))
    assert json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])["step"] == 4
    assert np.array_equal(load_semantic_ids(run).codes, stored)
