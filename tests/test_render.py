"""`llmrec benchmark --render [--check]`: Markdown blocks rendered from a committed benchmark report JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrec.benchmark.blocks import render_files
from llmrec.benchmark.render import to_markdown
from llmrec.cli import main

REPO = Path(__file__).resolve().parents[1]
REPORT = "docs/benchmarks/toy/report.json"


def _stat(*values: float) -> dict:
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return {"mean": mean, "std": std, "values": list(values)}


def _model(name: str, kind: str, ndcg: tuple[float, float], auc: tuple[float, float] | None) -> dict:
    test = {"ndcg@10": _stat(*ndcg), "hr@10": _stat(2 * ndcg[0], 2 * ndcg[1]), "mrr": _stat(*ndcg)}
    if auc:
        test["auc"] = _stat(*auc)
    seeds = [{"seed": s, "run": f"trials/toy/{name}/t000" + (f"-seed{s}" if s else ""), "stopped_by": "early stopping",
              "test": {"ndcg@10": ndcg[s], "hr@10": 2 * ndcg[s]}, "valid": {}} for s in (0, 1)]  # fmt: skip
    return {"name": name, "kind": kind, "config": f"configs/{name}.yaml", "tuned": True,
            "trials": {"suite": 4, "prior": 0, "total": 4, "search": "grid"},
            "selected": {"trial": "t000", "params": {"lr": 0.001}, "valid": 0.05}, "validation_scores": {},
            "flagged": {}, "seeds": seeds, "valid": {"ndcg@10": _stat(0.05, 0.06)}, "test": test}  # fmt: skip


def make_report() -> dict:
    boot = {"diff": 0.0012, "low": -0.0004, "high": 0.0031, "p_b_not_better": 0.08}
    return {
        "format": 1,
        "suite": {"name": "toy", "path": "configs/benchmarks/toy.yaml", "description": ""},
        "metric": "ndcg@10",
        "provenance": {"date": "2026-12-05", "llmrec_version": "0.1.0", "git_commit": "0123456789abcdef",
                       "git_dirty": False, "machine": {"cpu": "x86_64", "cores": 2, "usable_cores": 2, "gpus": [],
                                                       "python": "3.12", "torch": "2.13"}},  # fmt: skip
        "protocol": {"split": "leave-one-out", "seeds": [0, 1], "ties": "pessimistic"},
        "datasets": [
            {"name": "toy", "path": "prepared/toy", "users": 48, "items": 30, "fingerprint": "f" * 64,
             "test_protocol": "leave-one-out, full ranking", "ranks_check_max_abs_diff": 0.0,
             "models": [_model("llm", "llm", (0.0511, 0.0517), (0.9012, 0.9034)),
                        _model("sasrec", "baseline", (0.0498, 0.0503), None)],
             "bootstrap": {"llm": "llm", "baseline": "sasrec", "chosen_by": "mean validation ndcg@10 over seeds",
                           "difference": "llm - baseline", "pairs": 96, "seeds": 2, "num_samples": 100,
                           "ndcg@10": boot, "hr@10": boot, "verdict": "tie", "verdict_metric": "ndcg@10"}},
        ],
    }  # fmt: skip


README = """# Project

Intro text that stays.

<!-- benchmark:begin docs/benchmarks/toy/report.json -->
| typed by hand | 0.1 |
<!-- benchmark:end -->

```
<!-- benchmark:begin not/a/block.json -->
```

Tail.
"""
RESULTS = """# Results

## Headline

<!-- benchmark:begin docs/benchmarks/toy/report.json datasets -->
<!-- benchmark:end -->
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "docs/benchmarks/toy").mkdir(parents=True)
    (tmp_path / REPORT).write_text(json.dumps(make_report()))
    (tmp_path / "README.md").write_text(README)
    (tmp_path / "docs/results.md").write_text(RESULTS)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _block(text: str, begin: str) -> str:
    return text.split(begin, 1)[1].split("<!-- benchmark:end -->", 1)[0]


def test_render_round_trips_and_check_catches_a_hand_edit(repo, capsys):
    assert main(["benchmark", "--render", "--check"]) == 1
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "2 of 2" in out and "README.md:5" in out and "docs/results.md:5" in out
    assert (repo / "README.md").read_text() == README  # --check writes nothing

    assert main(["benchmark", "--render"]) == 0
    readme = (repo / "README.md").read_text()
    summary = _block(readme, "report.json -->\n")
    assert "typed by hand" not in summary
    assert (
        "| toy | llm | llm | 4 (grid) | 0.0514 ± 0.0004 | 0.1028 ± 0.0008 | 0.0514 ± 0.0004 | 0.9023 ± 0.0016 |"
        in summary
    )
    assert "| toy | sasrec | baseline | 4 (grid) | 0.0500 ± 0.0004 |" in summary  # its runs have no auc:
    assert "0.0500 ± 0.0004 | — |\n" in summary and summary.rstrip().endswith("48 users): **tie**.")  # a dash
    assert readme.startswith("# Project\n\nIntro text that stays.\n\n") and readme.endswith("```\n\nTail.\n")
    results = (repo / "docs/results.md").read_text()
    sections = _block(results, "datasets -->\n")
    table_rows = [line for line in to_markdown(make_report()).splitlines() if line.startswith("| llm |")]
    assert "### toy: 48 users, 30 items" in sections and table_rows and table_rows[0] in sections

    assert main(["benchmark", "--render", "--check"]) == 0
    assert "2 benchmark block(s) match" in capsys.readouterr().out
    before = (repo / "README.md").stat().st_mtime_ns
    assert main(["benchmark", "--render"]) == 0 and (repo / "README.md").stat().st_mtime_ns == before  # unchanged

    (repo / "README.md").write_text(readme.replace("0.9023 ± 0.0016", "0.9100 ± 0.0016"))
    assert main(["benchmark", "--render", "--check"]) == 1
    out = capsys.readouterr().out
    assert "1 of 2" in out and "README.md:5 (docs/benchmarks/toy/report.json: +1 -1 lines)" in out


def test_a_new_report_makes_the_blocks_stale(repo):
    assert render_files(["README.md"], repo).written == ["README.md"]
    report = make_report()
    report["datasets"][0]["models"][0]["test"]["ndcg@10"] = _stat(0.06, 0.07)
    (repo / REPORT).write_text(json.dumps(report))
    stale = render_files(["README.md"], repo, check=True).stale
    assert [(b.where, b.source) for b, _ in stale] == [("README.md:5", REPORT)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- benchmark:begin docs/benchmarks/toy/report.json -->\n", "README.md:1: benchmark:begin without"),
        ("x\n<!-- benchmark:end -->\n", "README.md:2: benchmark:end without"),
        ("<!-- benchmark:begin missing.json -->\n<!-- benchmark:end -->\n", "README.md:1: the report missing.json"),
        ("<!-- benchmark:begin docs/benchmarks/toy/report.json wide -->\n<!-- benchmark:end -->\n", "unknown view"),
    ],
)
def test_bad_blocks_are_one_line_errors(repo, capsys, text, message):
    (repo / "README.md").write_text(text)
    assert main(["benchmark", "--render", "--files", "README.md"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_the_repository_blocks_match_their_reports():
    """Every marked table of README.md and docs/results.md is the rendering of the committed report it names."""
    outcome = render_files(["README.md", "docs/results.md"], REPO, check=True)
    assert not outcome.stale, outcome.summary(check=True)


def test_trial_counts_label_untuned_models_and_fixed_recipes():
    """A tuned model shows its budget; an untuned one '1 (untuned)'; a fixed recipe with earlier runs counts them."""
    report = make_report()
    llm, sasrec = report["datasets"][0]["models"]
    llm.update(tuned=False, trials={"suite": 1, "prior": 9, "total": 10, "search": "none"})
    sasrec.update(tuned=False, trials={"suite": 1, "prior": 0, "total": 1, "search": "none"})
    md = to_markdown(report)
    assert "1 + 9 earlier (fixed recipe)" in md and "1 (untuned)" in md
