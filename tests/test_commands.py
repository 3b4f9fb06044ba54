"""`llmrec recommend` and `llmrec compare` on small baseline runs (the LLM runs use the same code paths)."""

from __future__ import annotations

import json

import pytest

from llmrec.cli import main as cli_main
from llmrec.data import Catalog, PreparedData, save_prepared


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmd")
    n = 10
    seqs = [[(u * 3 + j) % n for j in range(5)] + [0] * (u % 2) for u in range(20)]
    seqs = [list(dict.fromkeys(s)) for s in seqs]
    data = PreparedData(
        Catalog([f"i{i}" for i in range(n)], [f"Title {i}" for i in range(n)]),
        [f"u{u}" for u in range(20)],
        seqs,
        {},
        {"dataset": "toy"},
    )
    save_prepared(data, root / "data")
    save_prepared(data, root / "same")  # the same content at another path
    other = PreparedData(data.catalog, data.users[:-1], data.sequences[:-1], {}, {"dataset": "toy"})
    save_prepared(other, root / "data2")  # one user fewer: another data set
    for name, d in (("pop", "data"), ("pop_same", "same"), ("pop2", "data2")):
        assert cli_main(["baseline", "pop", "--data", str(root / d), "--output_dir", str(root / name)]) == 0
    return root


def test_recommend_history_ids_and_titles_json(runs, capsys):
    capsys.readouterr()
    assert cli_main(["recommend", "--run", str(runs / "pop"), "--history", "i1", "Title 2", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["history"] == ["i1", "i2"]
    ids = [it["id"] for it in out["items"]]
    assert len(ids) == 3 and not {"i1", "i2"} & set(ids)
    scores = [it["score"] for it in out["items"]]
    assert scores == sorted(scores, reverse=True)
    for argv in (["--history", "i1,i2"], ["--history_json", '["i1", "Title 2"]']):  # comma list / JSON list
        assert cli_main(["recommend", "--run", str(runs / "pop"), *argv, "-k", "3", "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip())["history"] == ["i1", "i2"]


def test_recommend_jsonl_and_errors(runs, tmp_path, capsys):
    f = tmp_path / "h.jsonl"
    f.write_text('{"history": ["i1"]}\n\n{"history": ["i3", "i4"]}\n')
    assert cli_main(["recommend", "--run", str(runs / "pop"), "--input", str(f), "-k", "2", "--json"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    f.write_text('{"history": ["i1"]}\n{"history": ["nope"]}\n')
    assert cli_main(["recommend", "--run", str(runs / "pop"), "--input", str(f)]) == 2
    assert f"{f}:2:" in capsys.readouterr().err
    f.write_text('{"prompt": "hello"}\n')
    assert cli_main(["recommend", "--run", str(runs / "pop"), "--input", str(f)]) == 2
    assert "need an LLM run" in capsys.readouterr().err
    assert cli_main(["recommend", "--run", str(tmp_path), "--history", "i1"]) == 2


def test_compare_writes_table_json_png_and_refuses_mixed_data(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli_main(["compare", str(runs / "pop"), str(runs / "pop_same"), "--output_dir", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert "| pop |" in md and "ndcg@10" in md and "20 users evaluated" in md
    rows = json.loads((out / "compare.json").read_text())["runs"]
    metrics = json.loads((runs / "pop" / "metrics.json").read_text())["test"]["metrics"]
    assert rows[0]["metrics"]["ndcg@10"] == metrics["ndcg@10"]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert cli_main(["compare", str(runs / "pop"), str(runs / "pop_same"), "--split", "valid", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli_main(["compare", str(runs / "pop"), str(runs / "pop2"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different prepared data" in err and "pop2" in err


def test_compare_groups_seeds_of_one_recipe(runs, tmp_path):
    """Two SASRec seeds of one config form a recipe line with their mean ± std; another config and Pop do not."""
    base = [
        "baseline",
        "sasrec",
        "--data",
        str(runs / "data"),
        "--epochs",
        "2",
        "--hidden_size",
        "8",
        "--max_len",
        "6",
    ]
    for name, extra in (
        ("s0", ["--seed", "0"]),
        ("s1", ["--seed", "1", "--num_threads", "1"]),
        ("h16", ["--seed", "0"]),
    ):
        size = ["--hidden_size", "16"] if name == "h16" else []
        assert cli_main([*base, *extra, *size, "--output_dir", str(tmp_path / name)]) == 0
    cfg = tmp_path / "s1" / "config.yaml"  # as if s1 ran before the option existed: it takes the default
    lines = cfg.read_text().splitlines(keepends=True)
    cfg.write_text("".join(line for line in lines if not line.startswith("textknn_history:")))
    out = tmp_path / "cmp"
    dirs = [str(tmp_path / n) for n in ("s0", "s1", "h16")] + [str(runs / "pop")]
    assert cli_main(["compare", *dirs, "--out", str(out)]) == 0
    (group,) = json.loads((out / "compare.json").read_text())["recipes"]
    assert group["runs"] == ["s0", "s1"] and group["seeds"] == [0, 1]
    vals = [
        json.loads((tmp_path / n / "metrics.json").read_text())["test"]["metrics"]["ndcg@10"] for n in ("s0", "s1")
    ]
    assert group["metrics"]["ndcg@10"]["values"] == vals
    assert group["metrics"]["ndcg@10"]["mean"] == pytest.approx(sum(vals) / 2)
    assert group["metrics"]["ndcg@10"]["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2**0.5)
    assert "| sasrec | s0, s1 | 0, 1 |" in (out / "compare.md").read_text()


def test_llm_run_recommend_prompt_equals_history_and_evaluate(tmp_path, capsys):
    """A tiny LLM run: a ready prompt and the same history give the same list; `evaluate` works on the run."""
    from llmrec.data import load_prepared
    from test_llm_helpers import make_tiny_model_dir, make_toy_data

    model, data_dir = make_tiny_model_dir(tmp_path / "model"), make_toy_data(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train", "--data", str(data_dir), "--model", str(model), "--output_dir", str(run), "--max_steps", "3",
            "--num_layers", "2", "--item_cf_dim", "4"]  # fmt: skip
    assert (
        cli_main([*argv, "--batch_size", "8", "--test_users", "-1", "--progress", "false", "--eval_users", "0"]) == 0
    )
    cat = load_prepared(data_dir).catalog
    capsys.readouterr()
    hist = [cat.raw_ids[0], cat.raw_ids[1]]
    assert (
        cli_main(
            [
                "recommend",
                "--run",
                str(run),
                "--history",
                *hist,
                "-k",
                "4",
                "--json",
                "--exclude_seen",
                "false",
            ]
        )
        == 0
    )
    by_history = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["items"]
    f = tmp_path / "p.jsonl"
    bos = json.loads((run / "tokenizer" / "tokenizer_config.json").read_text())["bos_token"]
    f.write_text(json.dumps({"prompt": f"{bos}<|item_0|><|item_1|>"}) + "\n")  # the default prompt: compact_bos
    assert cli_main(["recommend", "--run", str(run), "--input", str(f), "-k", "4", "--json"]) == 0
    by_prompt = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["items"]
    assert [it["id"] for it in by_prompt] == [it["id"] for it in by_history]
    assert cli_main(["evaluate", "--run", str(run), "--split", "valid"]) == 0
    assert "ndcg@10" in capsys.readouterr().out
    # training into an existing run without --resume is refused (nothing is overwritten)
    before = (run / "metrics.json").read_bytes()
    assert cli_main([*argv, "--batch_size", "8", "--test_users", "-1", "--progress", "false"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "metrics.json").read_bytes() == before
    # --overwrite starts over: the old run's files are replaced; files llmrec did not write stay
    (run / "notes.txt").write_text("the user's")
    short = ["--batch_size", "8", "--test_users", "-1", "--progress", "false", "--max_steps", "1"]
    assert cli_main([*argv, *short, "--overwrite", "true"]) == 0
    assert (run / "notes.txt").read_text() == "the user's" and (run / "metrics.json").is_file()
    train = json.loads((run / "metrics.json").read_text())["train"]
    assert train["steps"] == 1 and train["wall_time_s"] >= train["train_time_s"] > 0  # wall: build, train, evals
