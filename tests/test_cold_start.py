"""Cold-start items (issue #19, first part): the prepare protocol, the evaluator's warm/cold target sets, and the
training-free content baseline TextKNN."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from llmrec.baselines import ModelArgs, TextKNN
from llmrec.baselines.config import BaselineConfig
from llmrec.baselines.train import build_model, load_baseline_run, save_weights, train_baseline
from llmrec.cli import main as cli_main
from llmrec.data import Catalog, DataError, PreparedData, load_prepared, save_prepared
from llmrec.data.processing import mark_cold_items
from llmrec.evaluation import evaluate
from llmrec.items.text import TextEmbeddings

NUM_USERS, NUM_ITEMS = 40, 25

# `llmrec prepare --format sequence` of toy_files(), written by the code before cold items existed (commit dc76acc):
# digests of the parquet columns + contents and of the JSON files (the temporary directory replaced by <DIR>).
BEFORE_COLD_ITEMS = {
    "fingerprint": "e072e2e3b8ed8d9556650116a4c71ee5d1fceca931cf18fc83f8fcce7e9c2552",
    "catalog.parquet": "eb946f057157791dd5229d1858b0cc5a740a1b26bb7a0cc8f70069714876a1cd",
    "sequences.parquet": "df1e85d6d6d26b63de4479cf49cd98b6828e57e99f9caa3357fccff29ab84b5f",
    "stats.json": "4a091611f10d9ad57b82ecff64e6bd1e63112f7b15794844ca25333ba93c0926",
    "meta.json": "58e31a5f78cbeccde265d76d6444bcf58e7ef5b6edd2085efa7befc1e7b109bf",
}


def toy_files(d: Path) -> tuple[Path, Path]:
    """40 users with 4-9 distinct items of 25 (raw ids 100..124), titled; arithmetic, so stable everywhere."""
    lines = []
    for u in range(NUM_USERS):
        n = 4 + (u * 7) % 6
        items = list(dict.fromkeys((u * 3 + j * j * 5 + j) % NUM_ITEMS for j in range(n + 4)))[:n]
        lines.append(f"u{u} " + " ".join(str(100 + i) for i in items))
    (d / "s.txt").write_text("\n".join(lines) + "\n")
    titles = ["item_id\ttitle"] + [f"{100 + i}\tProduct {i} {'red' if i % 2 else 'blue'}" for i in range(NUM_ITEMS)]
    (d / "t.tsv").write_text("\n".join(titles) + "\n")
    return d / "s.txt", d / "t.tsv"


def prepare(d: Path, out: str, *extra: str) -> Path:
    seqs, titles = toy_files(d)
    argv = ["prepare", "--format", "sequence", "--input", str(seqs), "--titles", str(titles), "--out", str(d / out)]
    assert cli_main([*argv, *extra]) == 0
    return d / out


def digests(out: Path, base: Path) -> dict[str, str]:
    res = {}
    for name in ("catalog.parquet", "sequences.parquet"):
        t = pq.read_table(out / name)
        cols = [(f.name, str(f.type)) for f in t.schema]
        res[name] = hashlib.sha256(json.dumps([cols, t.to_pydict()]).encode()).hexdigest()
    for name in ("stats.json", "meta.json"):
        res[name] = hashlib.sha256((out / name).read_text().replace(str(base), "<DIR>").encode()).hexdigest()
    res["fingerprint"] = json.loads((out / "meta.json").read_text())["fingerprint"]
    return res


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(warm data dir, cold data dir: --cold_items 0.2 --cold_seed 0)."""
    d = tmp_path_factory.mktemp("cold")
    return prepare(d, "p"), prepare(d, "cold", "--cold_items", "0.2", "--cold_seed", "0")


# ---------------------------------------------------------------- protocol


def test_prepare_without_cold_items_is_unchanged(toy):
    warm = toy[0]
    assert digests(warm, warm.parent) == BEFORE_COLD_ITEMS
    meta = json.loads((warm / "meta.json").read_text())
    assert "cold_items" not in meta and "cold_items" not in meta["options"]
    assert load_prepared(warm).cold_items == frozenset()


def test_cold_items_never_reach_training_or_histories(toy):
    warm, cold = load_prepared(toy[0]), load_prepared(toy[1])
    c = cold.cold_items
    assert len(c) == round(0.2 * NUM_ITEMS) and cold.catalog.raw_ids == warm.catalog.raw_ids  # text stays
    assert all(not set(s) & c for s in cold.train_sequences())
    assert pq.read_table(toy[1] / "sequences.parquet").column("train").to_pylist() == cold.train_sequences()
    for split in ("valid", "test"):
        histories, targets = cold.split(split)
        assert all(not set(h) & c for h in histories)
        assert targets == warm.split(split)[1]  # targets kept where they were, cold or not
        # each history is the warm one with the cold items taken out, nothing else
        assert histories == [[i for i in h if i not in c] for h in warm.split(split)[0]]
    assert cold.item_popularity()[sorted(c)].sum() == 0
    assert cold.item_popularity().sum() == sum(len(s) for s in cold.train_sequences())
    assert cold.subsample(10, 0).cold_items == c


def test_cold_stats_seed_and_fingerprint(toy, tmp_path):
    warm, cold = load_prepared(toy[0]), load_prepared(toy[1])
    stats = cold.stats["cold_items"]
    ids = sorted(cold.cold_items)
    assert stats["item_ids"] == ids == json.loads((toy[1] / "meta.json").read_text())["cold_items"]
    assert stats["raw_ids"] == [cold.catalog.raw_ids[i] for i in ids]
    assert (stats["count"], stats["fraction"], stats["seed"]) == (len(ids), 0.2, 0)
    assert stats["valid_targets"] == sum(s[-2] in cold.cold_items for s in cold.sequences) > 0
    assert stats["test_targets"] == sum(s[-1] in cold.cold_items for s in cold.sequences) > 0
    assert stats["users_without_training_items"] == sum(not s for s in cold.train_sequences())
    assert cold.fingerprint != warm.fingerprint and cold.sequences == warm.sequences
    assert cold.fingerprint == json.loads((toy[1] / "meta.json").read_text())["fingerprint"]
    # seeded: the same seed gives the same set, another seed another one (and another fingerprint)
    again = prepare(tmp_path, "again", "--cold_items", "0.2", "--cold_seed", "0")
    other = prepare(tmp_path, "other", "--cold_items", "0.2", "--cold_seed", "1")
    assert load_prepared(again).cold_items == cold.cold_items and load_prepared(again).fingerprint == cold.fingerprint
    assert load_prepared(other).cold_items != cold.cold_items and load_prepared(other).fingerprint != cold.fingerprint
    # save -> load keeps the set (a re-save of a loaded data set does not duplicate it)
    resaved = load_prepared(save_prepared(cold, tmp_path / "resaved"))
    assert resaved.cold_items == cold.cold_items and resaved.fingerprint == cold.fingerprint


@pytest.mark.parametrize(
    "extra, needle",
    [(["--cold_items", "1"], "cold_items"), (["--cold_items", "-0.1"], "cold_items"),
     (["--cold_items", "nan"], "cold_items"), (["--cold_seed", "3"], "cold_seed")],
)  # fmt: skip
def test_bad_cold_options_are_one_line_errors(tmp_path, capsys, extra, needle):
    seqs, titles = toy_files(tmp_path)
    code = cli_main(["prepare", "--format", "sequence", "--input", str(seqs), "--out", str(tmp_path / "p"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith(f"llmrec prepare: error: {needle}:"), err
    assert not (tmp_path / "p").exists()


def test_bad_cold_set_in_meta_and_bad_fraction(toy, tmp_path):
    with pytest.raises(DataError, match="cold_items"):
        mark_cold_items(load_prepared(toy[0]), 1.0)
    bad = tmp_path / "bad"
    save_prepared(load_prepared(toy[1]), bad)
    meta = json.loads((bad / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "cold_items": [0, NUM_ITEMS]}))
    with pytest.raises(DataError, match="cold_items"):
        load_prepared(bad)


def _hand_made(cold=frozenset({3})) -> PreparedData:
    """6 items; item 3 is cold; user c's training part [3, 3] is all cold."""
    catalog = Catalog(raw_ids=[str(i) for i in range(6)], titles=[f"t{i}" for i in range(6)])
    seqs = [[0, 1, 2, 3], [1, 0, 2, 4], [3, 3, 1, 0], [0, 2, 1, 4, 5], [2, 1, 0, 3]]
    return PreparedData(catalog=catalog, users=list("abcde"), sequences=seqs, cold_items=frozenset(cold))


def test_users_whose_training_part_is_all_cold_are_kept_and_evaluated():
    data = _hand_made()
    assert data.train_sequences()[2] == [] and data.split("valid")[0][2] == [] and data.split("test")[0][2] == [1]
    cfg = BaselineConfig(model="sasrec", data="x", output_dir="y", hidden_size=8, num_layers=1, max_len=5)
    model = build_model(cfg, data.num_items)  # an ID model scores an empty history (from padding alone)
    for split in ("valid", "test"):
        assert evaluate(model.score, data, split, ks=[1, 5])["num_users"] == 5


# ---------------------------------------------------------------- evaluator


def _score(data: PreparedData):
    pop = torch.as_tensor(data.item_popularity(), dtype=torch.float32)

    def score(histories):  # deterministic, history-dependent, with ties broken by a seeded draw
        g = torch.Generator().manual_seed(len(histories))
        return pop.expand(len(histories), -1) + torch.rand(len(histories), data.num_items, generator=g)

    return score


def _per_user_score(data: PreparedData):
    """Scores that depend on the history alone (not on the batch), so a user ranks the same in any subset."""
    pop = torch.as_tensor(data.item_popularity(), dtype=torch.float32)
    items = torch.arange(data.num_items)

    def score(histories):
        return torch.stack([pop + ((sum(h) * 7 + len(h) + items * 13) % 11) / 100 for h in histories])

    return score


def test_default_evaluation_is_unchanged(toy):
    """The same keys, protocol and numbers as the evaluator before cold items (pinned from commit dc76acc)."""
    data = load_prepared(toy[0])
    r = evaluate(_score(data), data, "test", batch_size=7)
    assert sorted(r) == ["ks", "metrics", "num_items", "num_users", "protocol", "split", "targets_in_history",
                         "users_digest", "wall_time_s"]  # fmt: skip
    assert r["protocol"] == (
        "leave-one-out, split=test (history s[:-1], target s[-1]); full ranking over all 25 items; items of the "
        "input history (other than the target) removed from the candidates; ties broken pessimistically"
    )
    assert (r["num_users"], r["users_digest"]) == (40, "107054a14be7d6c9")
    assert r["metrics"]["hr@10"] == 0.45 and r["metrics"]["ndcg@10"] == pytest.approx(0.20388314748763908, abs=1e-12)
    assert r["metrics"]["mrr"] == pytest.approx(0.16692850643508536, abs=1e-12)
    with pytest.raises(ValueError, match="no cold items"):
        evaluate(_score(data), data, "test", targets="cold")
    with pytest.raises(ValueError, match="targets must be one of"):
        evaluate(_score(data), data, "test", targets="new")


@pytest.mark.parametrize("split", ["valid", "test"])
def test_warm_and_cold_targets_partition_the_users(toy, split):
    data = load_prepared(toy[1])
    full = evaluate(_per_user_score(data), data, split, batch_size=7)
    parts = {t: evaluate(_per_user_score(data), data, split, targets=t, batch_size=3) for t in ("warm", "cold")}
    n_cold = data.stats["cold_items"][f"{split}_targets"]
    assert (parts["cold"]["num_users"], parts["warm"]["num_users"]) == (n_cold, data.num_users - n_cold)
    assert parts["cold"]["targets"] == "cold" and f"targets=cold ({n_cold:,} users" in parts["cold"]["protocol"]
    assert "cold-start: 5 cold items" in full["protocol"] and full["cold_items"] == 5 and "targets" not in full
    assert parts["warm"]["users_digest"] != full["users_digest"]
    for name in ("hr@10", "ndcg@10", "mrr", "hr@1", "ndcg@5"):
        weighted = sum(parts[t]["metrics"][name] * parts[t]["num_users"] for t in parts) / data.num_users
        assert weighted == pytest.approx(full["metrics"][name], abs=1e-12), name


def test_evaluate_command_writes_the_target_set(toy, tmp_path):
    from llmrec.commands.evaluate import main as evaluate_main

    run = tmp_path / "pop"
    train_baseline(BaselineConfig(model="pop", data=str(toy[1]), output_dir=str(run), ks=[1, 10]), log=lambda *a: None)
    assert evaluate_main(["--run", str(run), "--targets", "cold", "--ks", "1", "10"]) == 0
    result = json.loads((run / "eval_test_cold.json").read_text())
    data = load_prepared(toy[1])
    assert result["num_users"] == data.stats["cold_items"]["test_targets"]
    # Pop is an ID model: it never saw a cold item, so a cold target scores 0 and is never in its top-10 here
    assert result["metrics"]["hr@10"] == 0.0
    assert load_baseline_run(run).score([[0]])[0, sorted(data.cold_items)].abs().sum() == 0
    assert cli_main(["evaluate", "--run", str(run), "--targets", "cold", "--data", str(toy[0])]) == 2  # a mismatch


# ---------------------------------------------------------------- TextKNN

VECTORS = torch.tensor(
    [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
)  # item 5 has no text


def _textknn(last_k: int) -> TextKNN:
    model = TextKNN(ModelArgs(num_items=len(VECTORS)))
    model.set_embeddings(VECTORS, last_k)
    return model


def test_textknn_ranks_the_item_with_similar_text_first():
    top = lambda model, h: int(model.score([h])[0].index_fill(0, torch.tensor(h), -9).argmax())  # noqa: E731
    assert top(_textknn(1), [2, 0]) == 1 and top(_textknn(1), [0, 2]) == 3  # the last item decides
    assert top(_textknn(5), [2, 3, 0]) == 1  # mean of (0, 1, 0), (.1, .9, 0), (1, 0, 0): item 1 is the closest left
    scores = _textknn(5).score([[0], [], [5]])
    assert scores[0, 5] == -2.0 and scores[0, 1] == pytest.approx(0.9 / (0.82**0.5))
    assert torch.equal(scores[1, :5], torch.zeros(5)) and torch.equal(scores[2, :5], torch.zeros(5))  # no query


def test_textknn_recommends_a_cold_item_pop_cannot():
    data = _hand_made()  # user a: test history [0, 1, 2], target 3 (cold); user e: history [2, 1, 0], target 3
    result = evaluate(_textknn(1).score, data, "test", ks=[1], targets="cold")
    assert result["num_users"] == 2 and result["metrics"]["hr@1"] == 1.0  # 3 is the nearest new item to 2 and to 0
    pop = torch.as_tensor(data.item_popularity(), dtype=torch.float32)
    assert pop[3] == 0
    assert evaluate(lambda h: pop.expand(len(h), -1), data, "test", ks=[1], targets="cold")["metrics"]["hr@1"] == 0


def test_textknn_weights_round_trip(tmp_path):
    model = _textknn(2)
    save_weights(model, tmp_path / "model.safetensors")
    from safetensors.torch import load_file

    loaded = TextKNN(ModelArgs(num_items=len(VECTORS)))  # width 0 until the saved tensor says 3
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    assert int(loaded.last_k) == 2 and torch.equal(loaded.score([[0, 2], [4]]), model.score([[0, 2], [4]]))
    with pytest.raises(NotImplementedError, match="fit_data"):
        loaded.fit([[0, 1]])


def test_textknn_run_goes_through_the_run_schema(tmp_path, monkeypatch):
    import llmrec.items.text as text
    from llmrec.recommenders import load_recommender

    data = _hand_made()
    save_prepared(data, tmp_path / "data")

    def fixed(titles, texts, fingerprint, spec, progress=True):
        assert spec.name == "minilm" and fingerprint == data.fingerprint
        return TextEmbeddings(VECTORS.clone(), VECTORS.abs().sum(1) > 0, "minilm")

    monkeypatch.setattr(text, "item_text_embeddings", fixed)
    cfg = BaselineConfig(model="textknn", data=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), ks=[1],
                         metric="hr@1", textknn_history=1)  # fmt: skip
    metrics = train_baseline(cfg, log=lambda *a: None)
    assert metrics["status"] == "done" and metrics["valid"]["num_users"] == metrics["test"]["num_users"] == 5
    assert json.loads((tmp_path / "run" / "run.json").read_text())["model"] == "textknn"
    rec = load_recommender(tmp_path / "run")
    assert torch.equal(rec.score([[0, 1, 2]]), _textknn(1).score([[0, 1, 2]]))


@pytest.mark.parametrize(
    "kw, field",
    [(dict(model="textknn", textknn_history=0), "textknn_history"),
     (dict(model="textknn", textknn_encoder="bert"), "textknn_encoder"),
     (dict(model="sasrec", textknn_history=3), "textknn_history")],
)  # fmt: skip
def test_textknn_options_are_checked(kw, field):
    from llmrec.config import ConfigError

    with pytest.raises(ConfigError, match=f"^{field}:"):
        BaselineConfig(data="d", output_dir="o", **kw)


# ---------------------------------------------------------------- compare and the benchmark report by target set


def test_compare_by_target_set(toy, tmp_path, capsys):
    from llmrec.commands.evaluate import main as evaluate_main

    runs = []
    for name in ("pop", "sasrec"):
        run = tmp_path / name
        cfg = BaselineConfig(model=name, data=str(toy[1]), output_dir=str(run), ks=[1, 10], hidden_size=8,
                             num_layers=1, max_len=5, epochs=1, num_threads=1)  # fmt: skip
        train_baseline(cfg, log=lambda *a: None)
        assert evaluate_main(["--run", str(run), "--targets", "cold", "--ks", "10", "20"]) == 0
        runs.append(str(run))
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert cli_main(["compare", *runs, "--targets", "cold", "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    n_cold = load_prepared(toy[1]).stats["cold_items"]["test_targets"]
    assert report["targets"] == "cold" and {r["num_users"] for r in report["runs"]} == {n_cold}
    assert f"{n_cold} users whose target is a cold item" in (out / "compare.md").read_text()
    assert all("targets=cold" in r["protocol"] for r in report["runs"])
    # all users: the training's stored test evaluation, as before
    assert cli_main(["compare", *runs, "--out", str(tmp_path / "all")]) == 0
    assert json.loads((tmp_path / "all" / "compare.json").read_text())["runs"][0]["num_users"] == NUM_USERS
    # warm was never evaluated: a one-line error naming the file and the command that writes it
    capsys.readouterr()
    assert cli_main(["compare", *runs, "--targets", "warm", "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "eval_test_warm.json" in err and "--targets warm" in err
    assert cli_main(["compare", *runs, "--targets", "new", "--out", str(tmp_path / "x")]) == 2


def test_benchmark_report_splits_the_test_users_by_target_set(toy):
    import numpy as np

    from llmrec.benchmark.datasets import Dataset
    from llmrec.benchmark.render import _target_lines
    from llmrec.benchmark.report import targets_block
    from llmrec.evaluation import metrics_from_ranks

    data = load_prepared(toy[1])
    ranks = {0: np.arange(NUM_USERS) % 7, 1: np.arange(NUM_USERS) % 5}
    block = targets_block(Dataset("cold", toy[1], data), ranks)
    cold = np.array([t in data.cold_items for t in data.split("test")[1]])
    assert block["cold"]["users"] == cold.sum() == data.stats["cold_items"]["test_targets"]
    assert block["warm"]["users"] == NUM_USERS - cold.sum()
    expected = np.mean([metrics_from_ranks(r[cold], ks=(10, 20))["ndcg@10"] for r in ranks.values()])
    assert block["cold"]["test"]["ndcg@10"]["mean"] == pytest.approx(expected)
    assert len(block["warm"]["test"]["hr@10"]["values"]) == 2
    assert targets_block(Dataset("warm", toy[0], load_prepared(toy[0])), ranks) is None
    lines = _target_lines({"models": [{"name": "pop", "targets": block}]})
    assert any(line.startswith("| pop |") for line in lines) and "cold NDCG@10" in "\n".join(lines)
