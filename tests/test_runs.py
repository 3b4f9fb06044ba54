"""The one run-directory schema: an LLM run and a baseline run compare on both splits, runs carry their catalog,
and data is pinned by fingerprint."""

from __future__ import annotations

import json
import shutil

import pytest

from llmrec.cli import main as cli_main
from llmrec.data import load_prepared, save_prepared
from test_llm_helpers import make_tiny_model_dir, make_toy_data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = make_toy_data(root / "data")
    model = make_tiny_model_dir(root / "model")
    llm = ["train", "--data", str(data), "--model", str(model), "--output_dir", str(root / "llm"), "--num_layers",
           "2", "--item_cf_dim", "4", "--max_steps", "3", "--batch_size", "8", "--eval_users", "0", "--progress",
           "false"]  # fmt: skip
    assert cli_main(llm) == 0
    assert cli_main(["baseline", "pop", "--data", str(data), "--output_dir", str(root / "pop")]) == 0
    sub = ["--eval_users", "5", "--output_dir", str(root / "llm_sub")]
    assert cli_main([*llm[:-6], *sub, "--max_steps", "1", "--test_users", "-1", "--progress", "false"]) == 0
    return root


def test_run_json_and_metrics_share_one_schema(runs):
    for name in ("llm", "pop"):
        info = json.loads((runs / name / "run.json").read_text())
        metrics = json.loads((runs / name / "metrics.json").read_text())
        assert info["format"] == metrics["format"] == 2 and info["kind"] == metrics["kind"]
        assert info["data"]["fingerprint"] == load_prepared(runs / "data").fingerprint
        assert set(metrics) >= {"status", "valid", "test", "history", "train"} and metrics["status"] == "done"
        assert metrics["valid"]["num_users"] == metrics["test"]["num_users"] == info["data"]["users"]
        assert (runs / name / "catalog.parquet").is_file()


@pytest.mark.parametrize("split", ["test", "valid"])
def test_compare_an_llm_run_with_a_baseline(runs, tmp_path, split, capsys):
    out = tmp_path / split
    assert cli_main(["compare", str(runs / "llm"), str(runs / "pop"), "--split", split, "--output_dir", str(out)]) == 0
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert {r["kind"] for r in rows} == {"llm", "baseline"}
    assert len({r["num_users"] for r in rows}) == 1


def test_compare_refuses_different_user_counts_naming_both(runs, tmp_path, capsys):
    assert cli_main(["compare", str(runs / "llm_sub"), str(runs / "pop"), "--split", "valid", "--output_dir",
                     str(tmp_path)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "llm_sub" in err and "pop" in err and "numbers of valid users" in err and "5 vs" in err


def test_a_moved_run_recommends_and_serves_without_its_data(runs, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from llmrec.recommenders import load_recommender
    from llmrec.serving.app import create_app

    shutil.copytree(runs / "data", tmp_path / "data")
    for name in ("llm", "pop"):
        shutil.copytree(runs / name, tmp_path / name)
    data = load_prepared(tmp_path / "data")
    raw = [data.catalog.raw_ids[0], data.catalog.raw_ids[1]]
    info = json.loads((tmp_path / "llm" / "run.json").read_text())
    info["data"]["path"] = str(tmp_path / "data")
    (tmp_path / "llm" / "run.json").write_text(json.dumps(info))
    shutil.rmtree(tmp_path / "data")  # the prepared data is gone
    capsys.readouterr()
    for name in ("llm", "pop"):
        assert cli_main(["recommend", "--run", str(tmp_path / name), "--history", *raw, "-k", "3", "--json"]) == 0
        items = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["items"]
        assert len(items) == 3 and not set(raw) & {it["id"] for it in items}
        with TestClient(create_app(load_recommender(tmp_path / name)), base_url="http://127.0.0.1") as client:
            response = client.post("/recommend", json={"history": raw, "k": 3})
            assert response.status_code == 200 and len(response.json()["items"]) == 3
    # evaluation needs the data and says so
    assert cli_main(["evaluate", "--run", str(tmp_path / "llm")]) == 2
    err = capsys.readouterr().err
    assert "no longer exists" in err and "--data" in err


def test_evaluate_refuses_data_re_prepared_with_another_filter(runs, tmp_path, capsys):
    data = load_prepared(runs / "data")
    fewer = data.subsample(data.num_users - 1, seed=0)  # as if re-prepared with a stricter filter
    save_prepared(fewer, tmp_path / "data")
    assert cli_main(["evaluate", "--run", str(runs / "pop"), "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "data mismatch" in err and str(tmp_path / "data") in err and "fingerprint" in err
    assert cli_main(["evaluate", "--run", str(runs / "pop"), "--data", str(runs / "data")]) == 0  # the same data


def test_compare_reads_a_later_evaluate_of_a_run_trained_without_test(runs, tmp_path, capsys):
    """A run trained with ``--test_users -1`` stores no test result; the compare hint's `llmrec evaluate` fixes it."""
    run = tmp_path / "llm_sub"
    shutil.copytree(runs / "llm_sub", run)
    assert json.loads((run / "metrics.json").read_text())["test"] is None
    args = ["compare", str(run), str(runs / "pop"), "--split", "test", "--output_dir", str(tmp_path / "cmp")]
    assert cli_main(args) == 2
    assert f"llmrec evaluate --run {run} --split test" in capsys.readouterr().err
    assert cli_main(["evaluate", "--run", str(run), "--split", "test"]) == 0
    assert cli_main(args) == 0
    rows = {r["run"]: r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]}
    stored = json.loads((run / "eval_test.json").read_text())["metrics"]["ndcg@10"]
    assert rows[str(run)]["metrics"]["ndcg@10"] == pytest.approx(stored)
