"""``llmrec ensemble``: a run whose scores are a weighted sum of other runs' scores, its weight selected on validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from baseline_helpers import baseline_cfg, make_next_item_toy, quiet
from llmrec import ensemble_run as ens_mod
from llmrec.baselines.train import train_baseline
from llmrec.cli import main as cli
from llmrec.config import ConfigError, parse_config
from llmrec.data import DataError, load_prepared, save_prepared
from llmrec.ensemble import EnsembleConfig, parse_member_options
from llmrec.ensemble_run import create_ensemble_run
from llmrec.evaluation import evaluate
from llmrec.recommenders import load_recommender


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    toy = make_next_item_toy(root)
    train_baseline(baseline_cfg(toy, root / "sasrec", epochs=2), log=quiet)
    train_baseline(baseline_cfg(toy, root / "pop", model="pop"), log=quiet)
    return {"root": root, "toy": toy, "sasrec": str(root / "sasrec"), "pop": str(root / "pop")}


def _ensemble(runs, out, *extra) -> dict:
    argv = ["--runs", runs["sasrec"], runs["pop"], "--output_dir", str(runs["root"] / out), "--batch_size", "64"]
    cfg = parse_config(EnsembleConfig, [*argv, *extra])
    return create_ensemble_run(cfg, load_recommender)


def test_fixed_weights_score_as_the_weighted_sum_and_write_a_run(runs):
    metrics = _ensemble(runs, "fixed", "--weights", "1", "0.05")
    rec = load_recommender(runs["root"] / "fixed")
    a, b = load_recommender(runs["sasrec"]), load_recommender(runs["pop"])
    hist = [[1, 2, 3], [7], []]
    assert torch.allclose(rec.score(hist), a.score(hist) + 0.05 * b.score(hist), atol=1e-6)
    info = json.loads((runs["root"] / "fixed" / "run.json").read_text())
    assert info["kind"] == "ensemble" and [m["weight"] for m in info["members"]] == [1.0, 0.05]
    assert info["members"][0]["run"] == "../sasrec"  # relative: the pair can move together
    # the test was scored once, on the same users and metrics as the evaluator gives the sum directly
    data = load_prepared(runs["toy"])
    direct = evaluate(lambda h: a.score(h) + 0.05 * b.score(h), data, "test", return_ranks=True)
    assert metrics["test"]["metrics"]["ndcg@10"] == pytest.approx(direct["metrics"]["ndcg@10"])
    assert np.array_equal(np.load(runs["root"] / "fixed" / "test_ranks.npy"), direct["ranks"])
    assert metrics["valid"]["selection"] == [] and "ensemble 1 x" in metrics["valid"]["scoring"]


@pytest.mark.parametrize("cache", [True, False])
def test_a_minus_one_weight_is_selected_on_full_validation(runs, monkeypatch, cache):
    if not cache:
        monkeypatch.setattr(ens_mod, "CACHE_LIMIT_BYTES", 0)
    grid = [0.0, 0.5, 20.0]
    metrics = _ensemble(runs, f"sel{cache}", "--weights", "1", "-1", "--weight_grid", *map(str, grid))
    a, b = load_recommender(runs["sasrec"]), load_recommender(runs["pop"])
    data = load_prepared(runs["toy"])
    want = [evaluate(lambda h, w=w: a.score(h) + w * b.score(h), data, "valid")["metrics"]["ndcg@10"] for w in grid]
    got = [r["ndcg@10"] for r in metrics["valid"]["selection"]]
    assert got == pytest.approx(want)
    best = grid[max(range(len(grid)), key=lambda i: (want[i], -grid[i]))]
    assert metrics["train"]["weights"] == [1.0, best]
    assert load_recommender(runs["root"] / f"sel{cache}").weights == [1.0, best]
    assert want[-1] < max(want)  # pop x 20 swamps the learned pattern: the grid really had to choose


def test_add_items_reach_every_member_and_a_refused_call_changes_nothing(runs):
    _ensemble(runs, "add", "--weights", "1", "0.1", "--no_test")
    rec = load_recommender(runs["root"] / "add")
    n = rec.num_items
    with pytest.raises(DataError, match="raw_id"):
        rec.add_items([rec.catalog.raw_ids[0]], ["dup"], [""])
    assert all(m.num_items == n for m in rec.members)
    assert rec.add_items(["x1", "x2"], ["new one", "new two"], ["", ""]) == [n, n + 1]
    assert all(m.num_items == n + 2 for m in rec.members) and rec.score([[1, 2]]).shape == (1, n + 2)


def test_bad_ensembles_are_refused_with_the_field_named(runs, tmp_path):
    other = make_next_item_toy(tmp_path)  # same items, but one user less: another fingerprint
    data = load_prepared(other)
    data.users, data.sequences = data.users[:-1], data.sequences[:-1]
    save_prepared(data, tmp_path / "other", overwrite=True)
    train_baseline(baseline_cfg(str(tmp_path / "other"), tmp_path / "pop2", model="pop"), log=quiet)
    with pytest.raises(DataError, match="other data"):
        create_ensemble_run(
            EnsembleConfig(runs=[runs["sasrec"], str(tmp_path / "pop2")], output_dir=str(tmp_path / "e")),
            load_recommender,
        )
    for argv, match in [
        ([], "one or more"),
        (["--runs", runs["sasrec"], runs["pop"], "--weights", "1"], "one per run"),
        (["--runs", runs["sasrec"], runs["pop"], "--weights", "-1", "-1"], "at most one"),
        (["--runs", runs["sasrec"], runs["pop"], "--member_options", "colder=3", ""], "colder"),
        (["--runs", runs["sasrec"], runs["pop"], "--member_options", "cold_neighbors=x", ""], "int"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_config(EnsembleConfig, [*argv, "--output_dir", str(tmp_path / "e")])
    with pytest.raises(ConfigError, match="needs an atomic LLM run"):
        _ensemble(runs, "opt", "--member_options", "cold_neighbors=3", "")
    with pytest.raises(ConfigError, match="member runs"):
        create_ensemble_run(
            EnsembleConfig(runs=[runs["sasrec"], runs["pop"]], output_dir=runs["pop"]), load_recommender
        )
    assert parse_member_options("cold_neighbors=5, cold_gap=10") == {"cold_neighbors": 5, "cold_gap": 10.0}


def test_cli_refuses_to_replace_without_overwrite_and_loading_names_a_missing_member(runs, tmp_path, capsys):
    out = str(tmp_path / "cli")
    argv = ["ensemble", "--runs", runs["sasrec"], runs["pop"], "--weights", "1", "0.1", "--output_dir", out]
    assert cli(argv) == 0 and json.loads(capsys.readouterr().out)["weights"] == [1.0, 0.1]
    assert cli(argv) == 2 and "--overwrite true" in capsys.readouterr().err
    assert cli([*argv, "--overwrite", "true"]) == 0
    info = json.loads((tmp_path / "cli" / "run.json").read_text())
    info["members"][1]["run"] = "../nowhere"
    (tmp_path / "cli" / "run.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="nowhere"):
        load_recommender(out)


def test_one_run_alone_is_that_run_with_other_inference_options(runs):
    _ensemble_one = parse_config(EnsembleConfig, ["--runs", runs["pop"], "--output_dir", str(runs["root"] / "one")])
    metrics = create_ensemble_run(_ensemble_one, load_recommender)
    rec, pop = load_recommender(runs["root"] / "one"), load_recommender(runs["pop"])
    assert torch.equal(rec.score([[1, 2]]), pop.score([[1, 2]]))
    stored = json.loads((runs["root"] / "pop" / "metrics.json").read_text())["test"]["metrics"]["ndcg@10"]
    assert metrics["test"]["metrics"]["ndcg@10"] == pytest.approx(stored)


def test_a_served_ensemble_takes_a_new_item_into_every_member():
    from llmrec.ensemble import EnsembleRecommender
    from test_serving_items import AUTH, NEW, TITLES, HashTextRecommender, _client, _ids

    a, b = HashTextRecommender(), HashTextRecommender()
    rec = EnsembleRecommender([a, b], [1.0, 0.5])
    with _client(rec) as c:
        assert c.post("/items", json=NEW, headers=AUTH).status_code == 201
        assert _ids(c.post("/recommend", json={"history": ["r3"], "k": 3}))[0] == "new-1"
    assert len(a.catalog) == len(b.catalog) == len(TITLES) + 1


def test_compare_and_evaluate_take_an_ensemble_run(runs, tmp_path, capsys):
    _ensemble(runs, "cmp", "--weights", "1", "0.1")
    ens = str(runs["root"] / "cmp")
    assert cli(["evaluate", "--run", ens, "--split", "test"]) == 0
    stored = json.loads((runs["root"] / "cmp" / "metrics.json").read_text())["test"]["metrics"]["ndcg@10"]
    assert json.loads((runs["root"] / "cmp" / "eval_test.json").read_text())["metrics"]["ndcg@10"] == pytest.approx(
        stored
    )
    capsys.readouterr()
    assert cli(["compare", ens, runs["sasrec"], "--split", "test", "--output_dir", str(tmp_path / "rep")]) == 0
    rows = json.loads((tmp_path / "rep" / "compare.json").read_text())["runs"]
    assert {r["kind"] for r in rows} == {"ensemble", "baseline"}


def test_a_beam_members_floor_keeps_its_beam_first_and_the_rest_in_the_other_members_order():
    """combine with a semantic-ID member (beam items scored, the rest at BEAM_FLOOR): beam items first, re-ranked by
    the weighted sum; the items outside the beam ordered by the dense member, not tied at the floor."""
    from llmrec.decoding import beam_score_matrix
    from llmrec.ensemble import combine

    beam = beam_score_matrix([[3, 1], [0]], [[-0.5, -2.0], [-1.0]], 6)  # user 0 beam {3, 1}; user 1 beam {0}
    dense = torch.tensor([[0.0, 4.0, 1.0, 0.0, 3.0, 2.0], [5.0, 0.0, 1.0, 2.0, 3.0, 4.0]])
    got = combine([beam, dense], [1.0, 0.5])
    assert got[0].argsort(descending=True).tolist() == [1, 3, 4, 5, 2, 0]  # 1: -2 + 2 > 3: -0.5 + 0; then 4, 5, 2, 0
    assert got[1].argsort(descending=True).tolist() == [0, 5, 4, 3, 2, 1]
    assert torch.equal(combine([dense, 2 * dense], [1.0, 0.5]), dense + dense)  # no floor: the plain weighted sum
