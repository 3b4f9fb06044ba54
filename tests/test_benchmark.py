"""`llmrec benchmark` on the smoke suite (toy data, a tiny Llama, tiny SASRec grid, Pop): run, skip, resume, plan +
collect, validation-only selection, suite errors. About 30-40 s on a 2-core CPU with OMP_NUM_THREADS=1.

``python tests/test_benchmark.py DIR`` writes the smoke suite's inputs (DIR/toy, DIR/tiny-llama).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from llmrec.benchmark import load_suite, run_benchmark
from llmrec.benchmark.datasets import Dataset
from llmrec.benchmark.search import search_points
from llmrec.benchmark.select import select
from llmrec.benchmark.trials import Trial
from llmrec.config import ConfigError
from llmrec.data import load_prepared
from llmrec.evaluation import users_digest
from llmrec.machine import machine, machine_name
from test_llm_helpers import make_tiny_model_dir, make_toy_data

REPO = Path(__file__).resolve().parents[1]
SMOKE = "configs/benchmarks/smoke.yaml"


def make_smoke_inputs(root: Path) -> Path:
    make_toy_data(root / "toy")
    make_tiny_model_dir(root / "tiny-llama")
    return root


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A directory laid out as smoke.yaml expects (configs/ + smoke-inputs/), as the current directory."""
    root = tmp_path_factory.mktemp("bench")
    make_smoke_inputs(root / "smoke-inputs")
    (root / "configs").symlink_to(REPO / "configs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        yield root


@pytest.fixture(scope="module")
def direct(smoke):
    logs = []
    outcome = run_benchmark(load_suite(SMOKE), smoke / "direct", log=logs.append)
    return outcome, logs


def _core(report: dict) -> dict:
    """The report without what legitimately differs between two runs of it (when, where, how long)."""
    return {k: v for k, v in report.items() if k not in ("provenance", "timing", "records")}


def _metrics_mtimes(root: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in sorted((root / "trials").rglob("metrics.json"))}


def test_smoke_suite_runs_end_to_end_with_mean_std_and_bootstrap(smoke, direct):
    outcome, _ = direct
    assert outcome.status == "done"
    out = smoke / "direct"
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(outcome.report))
    assert (out / "report.png").stat().st_size > 0
    (block,) = report["datasets"]
    assert block["users"] == 48
    models = {e["name"]: e for e in block["models"]}
    assert set(models) == {"llm-tiny", "sasrec", "pop"}
    assert models["sasrec"]["trials"]["suite"] == models["llm-tiny"]["trials"]["suite"] == 2
    assert not models["pop"]["tuned"]
    for e in models.values():
        assert [r["seed"] for r in e["seeds"]] == [0, 1]
        assert e["seeds"][0]["run"] == f"trials/toy/{e['name']}/{e['selected']['trial']}"  # seed 0 = the trial
        stat = e["test"]["ndcg@10"]
        assert stat["mean"] == pytest.approx(np.mean(stat["values"]))
        for seed in e["seeds"]:  # f1@K = 2 hr@K / (K + 1) with one target; auc of the full catalog
            assert seed["test"]["f1@10"] == pytest.approx(2 * seed["test"]["hr@10"] / 11)
            assert 0 <= seed["test"]["auc"] <= 1
        assert e["test"]["auc"]["mean"] == pytest.approx(np.mean([r["test"]["auc"] for r in e["seeds"]]))
        assert stat["std"] == pytest.approx(np.std(stat["values"], ddof=1))
        ranks = np.load(out / e["seeds"][1]["run"] / "test_ranks.npy")
        assert ranks.shape == (48,)
    boot = block["bootstrap"]
    assert (boot["llm"], boot["baseline"], boot["pairs"]) == ("llm-tiny", "sasrec", 96)
    assert boot["ndcg@10"]["low"] <= boot["ndcg@10"]["diff"] <= boot["ndcg@10"]["high"]
    assert boot["verdict"] in ("win", "tie", "loss")
    assert block["ranks_check_max_abs_diff"] < 1e-6
    assert {"split", "masking", "ties", "selection"} <= set(report["protocol"])
    assert {"cpu", "cores", "gpus"} <= set(report["provenance"]["machine"])
    assert {"date", "llmrec_version", "git_commit"} <= set(report["provenance"])
    md = (out / "report.md").read_text()
    assert "±" in md and "Best LLM vs best baseline" in md and "pessimistic" in md and "test AUC" in md
    assert "test F1@10" in md and "F1@K = 2 HR@K / (K + 1)" in md  # the F1 column and how it relates to HR
    here = machine_name(machine())
    assert report["records"]["trial_machines"] == {here: 8}  # 5 tuning trials + 3 seed runs, all run here
    assert f"Machines the trials ran on (from each run.json, else its record): {here}: 8." in md


def test_second_invocation_skips_finished_trials(smoke, direct):
    before = _metrics_mtimes(smoke / "direct")
    logs = []
    outcome = run_benchmark(load_suite(SMOKE), smoke / "direct", log=logs.append)
    assert not [line for line in logs if "running" in line]
    assert _metrics_mtimes(smoke / "direct") == before
    assert _core(outcome.report) == _core(direct[0].report)


def test_interrupted_trials_resume(smoke, direct):
    trials = smoke / "direct" / "trials" / "toy"
    (trials / "llm-tiny" / "t001" / "metrics.json").unlink()  # killed before its final metrics
    sasrec = next(e for e in direct[0].report["datasets"][0]["models"] if e["name"] == "sasrec")
    path = smoke / "direct" / sasrec["seeds"][1]["run"]  # a seed run, stopped while "training"
    metrics = json.loads((path / "metrics.json").read_text())
    (path / "metrics.json").write_text(json.dumps({**metrics, "status": "training"}))
    logs = []
    outcome = run_benchmark(load_suite(SMOKE), smoke / "direct", log=logs.append)
    ran = [line for line in logs if line.startswith("[benchmark] running")]
    assert len(ran) == 2 and all("(resuming)" in line and "--resume true" in line for line in ran)
    assert json.loads((trials / "llm-tiny" / "t001" / "metrics.json").read_text())["status"] == "done"
    assert _core(outcome.report) == _core(direct[0].report)  # resumed from their checkpoints: the same numbers


def _run_plan(path: Path) -> int:
    from llmrec.cli import main

    lines = path.read_text().splitlines()
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0
    return len(lines)


def test_plan_then_collect_gives_the_direct_report(smoke, direct):
    out = smoke / "planned"
    suite = load_suite(SMOKE)
    assert run_benchmark(suite, out, mode="plan").status == "pending"
    lines = (out / "plan.txt").read_text().splitlines()
    assert len(lines) == 5  # 2 LLM + 2 SASRec grid points + 1 Pop
    for line in lines:
        args = shlex.split(line)
        assert args[:2] in (["llmrec", "train"], ["llmrec", "baseline"])
        assert args.count("--output_dir") == 1
        assert Path(args[args.index("--output_dir") + 1]).is_relative_to((out / "trials").resolve())
        if args[1] == "train":
            assert args[args.index("--eval_users") + 1] == "0"
    progress = (out / "progress.md").read_text()
    assert "0 of 5 trial(s) of the tuning phase finished" in progress and "- tuning toy/sasrec: t000, t001" in progress
    assert "No model has finished its tuning yet." in progress
    assert str(out.resolve()) not in progress  # trials are named, never given with a local path
    assert _run_plan(out / "plan.txt") == 5
    pending = run_benchmark(suite, out, mode="collect")
    progress = (out / "progress.md").read_text()
    assert "## seeds" in progress and "0 of 3 trial(s) of the seeds phase finished" in progress
    assert (pending.status, pending.phase, pending.pending) == ("pending", "seeds", 3)
    assert all("-seed1 " in line for line in (out / "plan.txt").read_text().splitlines())
    assert _run_plan(out / "plan.txt") == 3
    done = run_benchmark(suite, out, mode="collect")
    assert done.status == "done" and (out / "plan.txt").read_text() == ""
    assert _core(done.report) == _core(direct[0].report)


def test_a_models_seeds_are_planned_as_soon_as_its_own_tuning_is_finished(smoke, direct):
    """Seeds of Pop and the LLM are planned while SASRec is still tuning; the report equals the direct run's."""
    from llmrec.cli import main

    out = smoke / "early-seeds"
    suite = load_suite(SMOKE)
    run_benchmark(suite, out, mode="plan")
    for line in (out / "plan.txt").read_text().splitlines():
        if "/sasrec/" not in line:  # everything but SASRec's tuning
            assert main(shlex.split(line)[1:]) == 0
    pending = run_benchmark(suite, out, mode="plan")
    lines = (out / "plan.txt").read_text().splitlines()
    names = sorted(shlex.split(x)[shlex.split(x).index("--output_dir") + 1].split("/trials/")[1] for x in lines)
    assert names == ["toy/llm-tiny/t000-seed1", "toy/pop/t000-seed1", "toy/sasrec/t000", "toy/sasrec/t001"]
    assert (pending.status, pending.phase, pending.pending) == ("pending", "tuning", 4)
    assert "0 of 2 trial(s) of the seeds phase finished" in (out / "progress.md").read_text()
    _run_plan(out / "plan.txt")
    assert run_benchmark(suite, out, mode="collect").phase == "seeds"  # SASRec's seed, now that it is selected
    _run_plan(out / "plan.txt")
    done = run_benchmark(suite, out, mode="collect")
    assert done.status == "done" and _core(done.report) == _core(direct[0].report)


def test_progress_names_each_models_validation_leader(smoke, direct):
    """progress.md's best trial and value per model are the selection's, from full validation (no test read)."""
    from llmrec.benchmark.progress import progress_markdown
    from llmrec.benchmark.runner import Benchmark

    suite = load_suite(SMOKE)
    bench = Benchmark(suite, smoke / "direct", log=lambda *_: None)
    tuning = bench.tuning_trials()
    text = progress_markdown(suite.name, {"tuning": tuning}, bench.datasets, suite.metric)
    assert "5 of 5 trial(s) of the tuning phase finished" in text and "Not finished" not in text
    for (d, m), trials in tuning.items():
        sel = select(trials, bench.datasets[d], suite.metric)
        row = next(line for line in text.splitlines() if line.startswith(f"| {d} | {m} |"))
        assert f"{sel.scores[sel.selected.name]:.4f} ({sel.selected.name})" in row
        assert row.split("|")[3].strip() == str(len(trials))  # finished


def test_progress_names_the_machines_the_trials_ran_on(smoke, direct, tmp_path):
    from llmrec.benchmark.progress import machines_line

    text = (smoke / "direct" / "progress.md").read_text()
    here = machine_name(machine())
    # 5 tuning trials + one more seed of each of the 3 models, every one run here
    assert text.rstrip().splitlines()[-1] == f"Machines of the 8 finished trial(s): {here}: 8."
    trial = Trial("toy", "x", "baseline", "t000", 0, {}, {}, tmp_path / "old")
    trial.run_dir.mkdir()
    (trial.run_dir / "run.json").write_text(json.dumps({"kind": "baseline"}))  # a run from before run.json named it
    assert machines_line([trial]) == "Machines of the 1 finished trial(s): not recorded: 1."


def test_longest_expected_trials_come_first(smoke, direct):
    from llmrec.benchmark.progress import longest_first, wall_seconds
    from llmrec.benchmark.runner import Benchmark

    bench = Benchmark(load_suite(SMOKE), smoke / "direct", log=lambda *_: None)
    trials = [t for ts in bench.tuning_trials().values() for t in ts]
    mean = {m: np.mean([wall_seconds(t) for t in trials if t.model == m]) for m in {t.model for t in trials}}
    ordered = [t for t, _ in longest_first([(t, False) for t in trials], trials)]
    assert [mean[t.model] for t in ordered] == sorted((mean[t.model] for t in trials), reverse=True)
    unknown = longest_first([(t, False) for t in trials], [t for t in trials if t.model != "pop"])
    assert unknown[0][0].model == "pop"  # a model with no finished trial yet counts as the longest


def test_records_carry_finished_trials_to_a_new_directory(smoke, direct):
    """Export every trial of a finished benchmark, then rebuild the same report elsewhere from the records alone."""
    from llmrec.evaluation import metrics_from_ranks

    # every trial's own test kept its per-user ranks (so neither export nor the report scores the test users again)
    for run in (smoke / "direct" / "trials").glob("toy/*/*"):
        test = json.loads((run / "metrics.json").read_text())["test"]["metrics"]
        assert json.loads((run / "test_ranks.json").read_text())["test_metrics"] == test
        again = metrics_from_ranks(np.load(run / "test_ranks.npy"), ks=(10,))
        assert abs(again["ndcg@10"] - test["ndcg@10"]) < 1e-9 and abs(again["hr@10"] - test["hr@10"]) < 1e-9
    rec, suite = smoke / "records", load_suite(SMOKE)
    run_benchmark(suite, smoke / "direct", records=rec, log=lambda line: None)  # exports, runs nothing
    files = sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*") if p.is_file())
    assert len(files) == 16 and "toy/sasrec/t001-seed1.ranks.npz" in files
    for path in rec.rglob("*.json"):
        text = path.read_text()
        assert str(smoke) not in text and str(smoke.resolve()) not in text  # no absolute path of this machine
    logs = []
    moved = run_benchmark(suite, smoke / "moved", records=rec, log=logs.append)
    assert not [line for line in logs if line.startswith("[benchmark] running")]
    assert any("restored 5 finished trial(s)" in line for line in logs)  # tuning; then the 3 seed runs
    assert not list((smoke / "moved" / "trials").rglob("*.safetensors"))  # no weights travel
    from llmrec.errors import DataError
    from llmrec.recommenders import load_recommender

    with pytest.raises(DataError, match="trial record .* no model weights"):
        load_recommender(smoke / "moved" / "trials" / "toy" / "sasrec" / "t000")
    assert _core(moved.report) == _core(direct[0].report)
    assert moved.report["records"]["restored"] == 8 and moved.report["records"]["trials"] == 8

    # a trial whose record is gone runs again (and gets a record); the others stay restored
    for path in rec.glob("toy/sasrec/t000*"):
        path.unlink()
    logs = []
    again = run_benchmark(suite, smoke / "partial", records=rec, log=logs.append)
    assert [line.split(":")[0] for line in logs if line.startswith("[benchmark] running")] == [
        "[benchmark] running toy/sasrec/t000"
    ]
    assert (rec / "toy/sasrec/t000.json").is_file()
    assert _core(again.report)["datasets"][0]["bootstrap"] == _core(direct[0].report)["datasets"][0]["bootstrap"]


def test_records_of_other_options_or_altered_ranks_are_refused(smoke, direct, tmp_path):
    from llmrec.errors import DataError

    rec = tmp_path / "rec"
    run_benchmark(load_suite(SMOKE), smoke / "direct", records=rec, log=lambda line: None)
    suite = yaml.safe_load((smoke / SMOKE).read_text())
    suite["models"][1]["set"]["hidden_size"] = 16
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(suite))
    with pytest.raises(ConfigError, match=r"t000\.json: the record has hidden_size: 8, the suite asks for 16"):
        run_benchmark(load_suite(changed), tmp_path / "b1", records=rec, mode="plan")
    ranks = rec / "toy" / "pop" / "t000.ranks.npz"
    ranks.write_bytes(ranks.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(DataError, match="does not match the sha256"):
        run_benchmark(load_suite(SMOKE), tmp_path / "b2", records=rec, mode="plan")


def _fake_trial(root: Path, name: str, valid: float, num_users: int, data) -> Trial:
    run = root / name
    run.mkdir(parents=True)
    entry = {"split": "valid", "num_users": num_users, "users_digest": users_digest(data.users[:num_users]),
             "metrics": {"ndcg@10": valid}}  # fmt: skip
    # "test" holds no metrics at all: selection that looked at it would fail
    (run / "metrics.json").write_text(json.dumps({"status": "done", "valid": entry, "test": "never read"}))
    return Trial("toy", "m", "baseline", name, 0, {"x": name}, {}, run)


def test_selection_uses_full_validation_only(tmp_path):
    data = load_prepared(make_toy_data(tmp_path / "toy"))
    ds = Dataset("toy", tmp_path / "toy", data)
    trials = [
        _fake_trial(tmp_path, "t000", 0.50, 48, data),  # best full validation
        _fake_trial(tmp_path, "t001", 0.10, 48, data),  # worst validation (whatever its test)
        _fake_trial(tmp_path, "t002", 0.90, 10, data),  # validated on 10 of 48 users: flagged
    ]
    sel = select(trials, ds, "ndcg@10")
    assert sel.selected.name == "t000"
    assert set(sel.scores) == {"t000", "t001"}
    assert "10 users" in sel.flagged["t002"]


def _write_suite(tmp_path: Path, **overrides) -> Path:
    suite = {
        "name": "s",
        "trials": 2,
        "seeds": 1,
        "data": [{"name": "toy", "prepared": str(make_toy_data(tmp_path / "toy"))}],
        "models": [
            {
                "name": "sasrec",
                "kind": "baseline",
                "set": {"model": "sasrec"},
                "search": {"method": "grid", "space": {"dropout": [0.1, 0.2]}},
            }
        ],
    }
    suite.update(overrides)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _model(**kw) -> list[dict]:
    return [{"name": "sasrec", "kind": "baseline", **kw}]


@pytest.mark.parametrize(
    "overrides, where",
    [
        ({"nmae": "x"}, "unknown key(s) ['nmae']"),
        ({"seeds": "three"}, "seeds: expected an integer"),
        ({"trials": None}, "trials: required"),
        ({"models": _model(kind="svd")}, "models[0] (sasrec).kind"),
        ({"models": _model(config="nope.yaml")}, "models[0] (sasrec).config: nope.yaml does not exist"),
        ({"models": _model(set={"hidden_size": "big"})}, "models[0] (sasrec).set: hidden_size: expected an integer"),
        ({"models": _model(set={"seed": 3})}, "models[0] (sasrec).set.seed: set by the benchmark"),
        ({"models": [{"name": "llm", "kind": "llm", "set": {"eval_users": 3000}}]}, "(llm).set.eval_users"),
        ({"models": _model(search={"space": {"hiden_size": [8]}})}, "(sasrec).search.space.hiden_size: not an option"),
        ({"models": _model(search={"space": {"dropout": [0.1, 0.2, 0.3]}})}, "the grid has 3 = 3 points"),
        ({"models": _model(trials=1, search={"space": {"dropout": [0.1]}})}, "(sasrec).trials: only a tuned LLM"),
        (
            {"models": [{"name": "llm", "kind": "llm", "trials": 3, "search": {"space": {"lr": [0.1, 0.2, 0.3]}}}]},
            "(llm).trials: 3 exceeds the suite's trials (2)",
        ),
        ({"models": _model(search={"space": {"lr": {"uniform": [1, 0]}}, "method": "random"})}, "space.lr.uniform"),
        ({"models": _model(search={"space": {"hidden_size": [8, 16]}}, set={"num_heads": 3})}, "trial 0"),
        ({"models": _model() * 2}, "models: the name 'sasrec' is used twice"),
        ({"models": _model(prior_trials=2)}, "(sasrec).prior_trials: 2 + its 1 run here exceed"),  # trials: 2
        ({"data": [{"name": "toy", "dataset": "beauty", "prepared": "x"}]}, "data[0] (toy): give either"),
    ],
)
def test_suite_errors_name_the_file_and_the_key(tmp_path, overrides, where):
    path = _write_suite(tmp_path, **overrides)
    with pytest.raises(ConfigError) as err:
        suite = load_suite(path)
        for model in suite.models:
            search_points(suite, model)
    assert str(path) in str(err.value) and where in str(err.value)


def test_an_llm_may_lower_its_own_budget_and_the_report_says_so(tmp_path):
    from llmrec.benchmark.report import protocol_block

    llm = {"name": "llm", "kind": "llm", "trials": 1, "search": {"method": "random", "space": {"lr": [0.1, 0.2]}}}
    suite = load_suite(_write_suite(tmp_path, models=[llm, *_model(search={"space": {"dropout": [0.1, 0.2]}})]))
    assert [len(search_points(suite, m)) for m in suite.models] == [1, 2]
    assert "fewer for the LLM(s) (llm 1)" in protocol_block(suite)["budget"]


def test_random_search_is_seeded_distinct_and_valid(tmp_path):
    space = {"hidden_size": [8, 12, 16], "num_heads": [1, 2, 4], "lr": {"log_uniform": [1e-4, 1e-2]},
             "num_layers": {"int": [1, 3]}}  # fmt: skip
    search = {"method": "random", "seed": 7, "include_base": True, "space": space}
    path = _write_suite(tmp_path, trials=6, models=_model(search=search))
    suite = load_suite(path)
    points = search_points(suite, suite.models[0])
    assert points == search_points(load_suite(path), load_suite(path).models[0])
    assert len(points) == 6 and points[0] == {}
    assert len({tuple(sorted(p.items())) for p in points}) == 6
    for p in points[1:]:
        assert p["hidden_size"] % p["num_heads"] == 0 and 1e-4 <= p["lr"] <= 1e-2 and 1 <= p["num_layers"] <= 3


def test_a_changed_suite_is_refused_in_the_same_directory(smoke, direct, tmp_path):
    suite = yaml.safe_load((smoke / SMOKE).read_text())
    suite["models"][1]["set"]["hidden_size"] = 16
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(ConfigError, match="hidden_size: 8, the suite asks for 16"):
        run_benchmark(load_suite(path), smoke / "direct", mode="plan")


def test_jobs_runs_single_thread_subprocesses(tmp_path):
    models = [{"name": f"pop{i}", "kind": "baseline", "config": str(REPO / "configs/pop_beauty.yaml")} for i in (1, 2)]
    path = _write_suite(tmp_path, models=models, trials=None)
    logs = []
    outcome = run_benchmark(load_suite(path), tmp_path / "out", jobs=2, log=logs.append)
    assert outcome.status == "done" and outcome.report["datasets"][0]["bootstrap"] is None
    assert len([line for line in logs if " done, " in line]) == 2
    for i in (1, 2):
        log = (tmp_path / "out" / "logs" / f"toy__pop{i}__t000.log").read_text()
        assert "--num_threads 1" in log.splitlines()[0]


def test_a_stop_file_or_a_time_limit_drains_a_run_and_the_same_command_continues(tmp_path, capsys):
    from llmrec.cli import main

    models = [{"name": f"pop{i}", "kind": "baseline", "config": str(REPO / "configs/pop_beauty.yaml")} for i in (1, 2)]
    path, out = _write_suite(tmp_path, models=models, trials=None), tmp_path / "out"
    assert run_benchmark(load_suite(path), out, mode="plan").status == "pending"
    (out / "STOP").touch()  # e.g. while a run is going
    logs = []
    outcome = run_benchmark(load_suite(path), out, jobs=2, log=logs.append)
    assert (outcome.status, outcome.pending) == ("pending", 2) and not (out / "trials").exists()
    assert any("stopped: 2 trial(s) not started" in line and "STOP exists" in line for line in logs)
    argv = ["benchmark", "--suite", str(path), "--output_dir", str(out)]
    assert main(argv) == 1  # a drained run exits 1: trials are left
    (out / "STOP").unlink()
    assert main([*argv, "--time_limit_h", "1e-9"]) == 1  # in-process path: the limit is past before the first trial
    assert "time limit" in capsys.readouterr().out and not (out / "trials").exists()
    assert main([*argv, "--jobs", "2", "--time_limit_h", "1"]) == 0  # enough time: every trial, then the report
    assert (out / "report.json").is_file()
    assert main([*argv, "--plan", "true", "--time_limit_h", "1"]) == 2
    assert "time_limit_h: --plan and --collect run no trial" in capsys.readouterr().err


def test_the_gate_refuses_a_trial_expected_to_end_past_the_limit(tmp_path):
    from llmrec.benchmark.execute import Gate

    now = [0.0]
    gate = Gate(tmp_path / "STOP", limit_s=100.0, clock=lambda: now[0])
    slow, fast, new = (Trial("toy", m, "baseline", "t000", 0, {}, {}, tmp_path / m) for m in ("slow", "fast", "new"))
    gate.expected = {("toy", "slow"): 80.0, ("toy", "fast"): 10.0}
    assert gate.refusal(slow) is None  # 0 + 80 <= 100
    now[0] = 30.0
    assert "time limit" in gate.refusal(slow)  # 30 + 80 > 100
    assert gate.refusal(fast) is None and gate.refusal(new) is None  # a model without an expectation starts
    now[0] = 100.0
    assert gate.refusal(new) is not None  # no time left at all
    unlimited = Gate(tmp_path / "STOP", clock=lambda: now[0])
    assert unlimited.refusal(slow) is None
    (tmp_path / "STOP").touch()
    assert "STOP exists" in unlimited.refusal(slow)


@pytest.mark.parametrize("name", ["beauty", "ml-1m", "sports"])
def test_shipped_suites_never_give_a_baseline_fewer_trials_than_the_llm(monkeypatch, name):
    monkeypatch.chdir(REPO)
    suite = load_suite(f"configs/benchmarks/{name}.yaml")
    assert suite.name == name  # the suite file is the data set it says it is (sports.yaml once loaded as beauty)
    assert [d.name for d in suite.data] == [name]
    budgets = {m.name: len(search_points(suite, m)) + m.prior_trials for m in suite.models if m.tuned}
    assert {"llm", "sasrec", "sasrec-sampled"} <= set(budgets)
    kinds = {m.name: m.kind for m in suite.models}
    baselines = {budgets[n] for n in budgets if kinds[n] == "baseline"}
    assert baselines == {suite.trials} and suite.trials >= 16  # every tuned baseline: the suite's budget, >= 16
    assert all(budgets[n] <= suite.trials for n in budgets if kinds[n] == "llm")  # an LLM never gets more
    for m in suite.models:  # a fixed recipe (llm-sid) had no more validation runs than each tuned model gets
        assert m.tuned or m.prior_trials + 1 <= suite.trials
    assert suite.seeds == (0, 1, 2)
    models = {m.name: m for m in suite.models}
    # the SASRec search: hidden size, layers, dropout, learning rate and co-occurrence init (0 = off)
    sasrec = models["sasrec"].search.space
    assert {"hidden_size", "num_layers", "dropout", "lr", "item_cf_dim"} <= set(sasrec)
    assert 0 in sasrec["item_cf_dim"] and max(sasrec["item_cf_dim"]) > 0
    # GRU4Rec and BERT4Rec run until early stopping ends them, not capped by an epoch count
    for early in ("gru4rec", "bert4rec"):
        assert models[early].base["epochs"] >= 200 and models[early].base["patience"] > 0


def test_cli_registers_the_command_and_errors_are_one_line(tmp_path, capsys):
    from llmrec.cli import main

    assert main(["--help"]) == 0 and "benchmark" in capsys.readouterr().out
    path = _write_suite(tmp_path, seeds=0)
    assert main(["benchmark", "--suite", str(path), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("llmrec benchmark: error:") and str(path) in err
    assert main(["benchmark", "--suite", str(path), "--output_dir", "o", "--plan", "true", "--collect", "true"]) == 2
    assert "plan/collect" in capsys.readouterr().err


if __name__ == "__main__":
    print(make_smoke_inputs(Path(sys.argv[1])))
