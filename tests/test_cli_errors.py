"""Every expected failure of a command is one line on stderr naming the option, key or file, with exit code 2.

Each bad input goes through ``llmrec.cli.main`` in-process. No case loads model weights: the LLM cases fail on
the options, the template, the run directory, the data or the model's config, all checked before the weights load
(and before the run directory is touched). ``--debug`` / ``LLMREC_DEBUG=1`` keep the traceback instead.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec.cli import main as cli_main
from llmrec.data import Catalog, PreparedData, save_prepared
from llmrec.errors import ConfigError, DataError
from test_llm_helpers import make_tiny_model_dir, make_toy_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    """A tiny model dir, the toy data, a pop run on a catalog with two items titled "Same", and some bad inputs."""
    root = tmp_path_factory.mktemp("cli_errors")
    n = 10
    titles = ["Same", "Same"] + [f"Title {i}" for i in range(2, n)]
    seqs = [list(dict.fromkeys((u * 3 + j) % n for j in range(5))) for u in range(20)]
    save_prepared(PreparedData(Catalog([f"i{i}" for i in range(n)], titles), [f"u{u}" for u in range(20)], seqs,
                               {}, {"dataset": "dup_titles"}), root / "dup_data")  # fmt: skip
    assert cli_main(["baseline", "pop", "--data", str(root / "dup_data"), "--output_dir", str(root / "pop")]) == 0
    # a run directory whose metrics.json is gone (e.g. killed before its first validation)
    shutil.copytree(root / "pop", root / "nometrics")
    (root / "nometrics" / "metrics.json").unlink()
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "notes.txt").write_text("not an llmrec run\n")
    (root / "empty_model").mkdir()
    yamls = {
        "epochs_list": "epochs: [1, 2]\n",
        "lr_abc": "lr: abc\n",
        "batch_float": "batch_size: 1.5\n",
        "resume_maybe": "resume: maybe\n",
        "batch_null": "batch_size: null\n",
        "batch_bool": "batch_size: true\n",
        "unknown_key": "lrr: 0.1\n",
        "lr_negative": "lr: -1\n",
        "broken": "lr: [1,\n",
        "duplicate_key": "lr: 0.001\nepochs: 2\nlr: 0.01\n",
        "ks_scalar": "ks: 10\n",
    }
    for name, text in yamls.items():
        (root / f"{name}.yaml").write_text(text)
    (root / "unknown_item.jsonl").write_text('{"history": ["i1"]}\n{"history": ["i2", "nope"]}\n')
    (root / "prompt.jsonl").write_text('{"prompt": "hello"}\n')
    (root / "not_json.jsonl").write_text('{"history": ["i1"]}\n{history: i1}\n')
    for name, text in {
        "add_not_json": '{"raw_id": "n1", "title": "New"}\n{raw_id: n2}\n',
        "add_no_title": '{"raw_id": "n1"}\n',
        "add_known": '{"raw_id": "n1", "title": "New"}\n{"raw_id": "i3", "title": "Again"}\n',
        "add_twice": '{"raw_id": "n1", "title": "New"}\n\n{"raw_id": "n1", "title": "Newer"}\n',
        "add_unknown_key": '{"raw_id": "n1", "title": "New", "price": 3}\n',
        "add_text_number": '{"raw_id": "n1", "title": "New", "text": 3}\n',
        "add_empty": "\n",
        "add_ok": '{"raw_id": "n1", "title": "New"}\n',
    }.items():
        (root / f"{name}.jsonl").write_text(text)
    return {
        "root": root,
        "model": make_tiny_model_dir(root / "model"),
        "data": make_toy_data(root / "data"),
        "pop": root / "pop",
    }


# {train}: `llmrec train` on the toy data and the tiny model into {root}/run, which must stay untouched
TRAIN = "train --data {data} --model {model} --output_dir {root}/run --progress false"

# id -> (command line, with {train} {root} {data} {model} {pop} filled in; substrings of the one-line error)
CASES = {
    # train: the options (argparse, then the dataclass validation)
    "train-lr-negative": ("{train} --lr -1", ["lr", "-1"]),
    "train-lr-not-a-number": ("{train} --lr abc", ["--lr", "abc"]),
    "train-batch-size-float": ("{train} --batch_size 1.5", ["--batch_size", "1.5"]),
    "train-resume-not-bool": ("{train} --resume maybe", ["--resume", "maybe"]),
    "train-unknown-option": ("{train} --hidden_dropout 0.1", ["--hidden_dropout"]),
    "train-unknown-option-close": ("{train} --max_stesp 3", ["--max_stesp", "did you mean --max_steps"]),
    "train-none-for-int": ("{train} --batch_size none", ["--batch_size", "none"]),
    "train-missing-value": ("{train} --epochs", ["--epochs"]),
    "train-no-data": ("train --output_dir {root}/run", ["data"]),
    "train-lr-nan": ("{train} --lr nan", ["lr", "nan"]),
    "train-epochs-inf": ("{train} --epochs inf", ["epochs", "inf"]),
    # train: the inputs, each checked before the model's weights load
    "train-prompt-nosuch": ("{train} --prompt nosuch", ["prompt", "nosuch"]),
    "train-num-layers-999": ("{train} --num_layers 999", ["num_layers", "999"]),
    "train-model-nosuch": ("{train} --model nosuch", ["model", "nosuch"]),
    "train-model-dir-without-config": ("{train} --model {root}/empty_model", ["model", "empty_model", "config.json"]),
    # with --model nosuch: the run directory is refused before the model is even looked up
    "train-resume-without-checkpoint": ("{train} --resume true --model nosuch", ["resume", "run"]),
    "train-output-dir-not-a-run": ("train --data {data} --output_dir {root}/not_a_run", ["output_dir", "not_a_run"]),
    "train-data-missing": ("{train} --data {root}/missing", ["missing"]),
    # YAML values of the wrong type: the file, the key and the expected type
    "yaml-epochs-list": (
        "{train} --config {root}/epochs_list.yaml",
        ["epochs_list.yaml", "epochs", "number", "[1, 2]"],
    ),
    "yaml-lr-abc": ("{train} --config {root}/lr_abc.yaml", ["lr_abc.yaml", "lr", "number", "abc"]),
    "yaml-batch-size-float": ("{train} --config {root}/batch_float.yaml", ["batch_float.yaml", "batch_size", "1.5"]),
    "yaml-resume-maybe": ("{train} --config {root}/resume_maybe.yaml", ["resume_maybe.yaml", "resume", "boolean"]),
    "yaml-null-for-int": ("{train} --config {root}/batch_null.yaml", ["batch_null.yaml", "batch_size", "null"]),
    "yaml-bool-for-int": ("{train} --config {root}/batch_bool.yaml", ["batch_bool.yaml", "integer", "boolean"]),
    "yaml-unknown-key": ("{train} --config {root}/unknown_key.yaml", ["unknown_key.yaml", "lrr", "did you mean 'lr'"]),
    "yaml-value-out-of-range": ("{train} --config {root}/lr_negative.yaml", ["lr_negative.yaml", "lr", "> 0"]),
    "yaml-broken": ("{train} --config {root}/broken.yaml", ["broken.yaml", "invalid YAML"]),
    # PyYAML keeps the last of two equal keys silently; a config must not mean something other than it reads
    "yaml-duplicate-key": ("{train} --config {root}/duplicate_key.yaml", ["duplicate_key.yaml", "line 3", "'lr'"]),
    "yaml-missing-file": ("{train} --config {root}/nosuch.yaml", ["nosuch.yaml"]),
    # baseline
    "baseline-resume-without-checkpoint": (
        "baseline pop --data {data} --out {root}/fresh --resume true",
        ["resume", "fresh"],
    ),
    "baseline-unknown-model": ("baseline nosuch --data {data} --out o", ["model", "nosuch"]),
    "baseline-batch-size-float": ("baseline sasrec --data d --out o --batch_size 1.5", ["--batch_size", "1.5"]),
    "baseline-yaml-ks-scalar": (
        "baseline sasrec --data d --out o --config {root}/ks_scalar.yaml",
        ["ks_scalar.yaml", "ks", "list of integers"],
    ),
    "baseline-data-missing": ("baseline pop --data {root}/missing --out {root}/fresh", ["missing"]),
    # evaluate
    "evaluate-not-a-run": ("evaluate --run {root}/not_a_run", ["run", "not_a_run"]),
    "evaluate-data-missing": ("evaluate --run {pop} --data {root}/missing", ["data", "missing"]),
    "evaluate-bad-split": ("evaluate --run {pop} --split train", ["split", "train"]),
    # compare
    "compare-missing-metrics": ("compare {pop} {root}/nometrics --out {root}/cmp", ["nometrics", "metrics.json"]),
    "compare-not-a-run": ("compare {root}/not_a_run --out {root}/cmp", ["not_a_run", "run.json"]),
    # recommend
    "recommend-unknown-item": ("recommend --run {pop} --history i1 nosuch", ["--history[1]", "nosuch"]),
    "recommend-ambiguous-title": ("recommend --run {pop} --history Same", ["--history[0]", "ambiguous", "i0, i1"]),
    "recommend-not-a-run": ("recommend --run {root}/not_a_run --history i1", ["not_a_run", "run.json"]),
    "recommend-input-missing": ("recommend --run {pop} --input {root}/missing.jsonl", ["missing.jsonl"]),
    "recommend-jsonl-unknown-item": (
        "recommend --run {pop} --input {root}/unknown_item.jsonl",
        ["unknown_item.jsonl:2: history[1]", "nope"],
    ),
    "recommend-jsonl-not-json": ("recommend --run {pop} --input {root}/not_json.jsonl", ["not_json.jsonl:2:", "JSON"]),
    "recommend-prompt-on-baseline": (
        "recommend --run {pop} --input {root}/prompt.jsonl",
        ["prompt.jsonl:1:", "need an LLM run"],
    ),
    "recommend-two-inputs": (
        """recommend --run {pop} --history i1 --history_json '["i1"]'""",
        ["--history", "--history_json"],
    ),
    "recommend-k-zero": ("recommend --run {pop} --history i1 -k 0", ["k", "0"]),
    # recommend --add_items: FILE:LINE: field, checked before the model loads
    "recommend-add-items-not-json": (
        "recommend --run {pop} --history i1 --add_items {root}/add_not_json.jsonl",
        ["add_not_json.jsonl:2:", "JSON object"],
    ),
    "recommend-add-items-no-title": (
        "recommend --run {pop} --history i1 --add_items {root}/add_no_title.jsonl",
        ["add_no_title.jsonl:1: title: required"],
    ),
    "recommend-add-items-known-id": (
        "recommend --run {pop} --history i1 --add_items {root}/add_known.jsonl",
        ["add_known.jsonl:2: raw_id: 'i3' is already in the run's catalog"],
    ),
    "recommend-add-items-twice": (
        "recommend --run {pop} --history i1 --add_items {root}/add_twice.jsonl",
        ["add_twice.jsonl:3: raw_id: 'n1' repeats line 1"],
    ),
    "recommend-add-items-unknown-key": (
        "recommend --run {pop} --history i1 --add_items {root}/add_unknown_key.jsonl",
        ["add_unknown_key.jsonl:1: price: unknown key"],
    ),
    "recommend-add-items-text-number": (
        "recommend --run {pop} --history i1 --add_items {root}/add_text_number.jsonl",
        ["add_text_number.jsonl:1: text: expected a string, got int"],
    ),
    "recommend-add-items-empty": (
        "recommend --run {pop} --history i1 --add_items {root}/add_empty.jsonl",
        ["add_empty.jsonl: no items"],
    ),
    "recommend-add-items-missing": (
        "recommend --run {pop} --history i1 --add_items {root}/nosuch.jsonl",
        ["nosuch.jsonl"],
    ),
    "recommend-add-items-then-unknown-history": (
        "recommend --run {pop} --history n1 n9 --add_items {root}/add_ok.jsonl",
        ["--history[1]", "n9"],  # n1 is one of the added items: it resolves
    ),
    # the dispatcher
    "unknown-command": ("trian --data d", ["trian", "did you mean 'train'"]),
}


@pytest.mark.parametrize("line, expected", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2(paths, capsys, line, expected):
    fill = {name: str(path) for name, path in paths.items()}
    argv = shlex.split(line.format(train=TRAIN.format(**fill), **fill))
    capsys.readouterr()
    code = cli_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"llmrec {argv[0]}: error: ") or err.startswith("llmrec: error: "), err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert not (paths["root"] / "run").exists(), "a failed `llmrec train` wrote its run directory"
    assert not (paths["root"] / "fresh").exists(), "a failed `llmrec baseline` wrote its run directory"


def test_values_of_the_right_type_parse(tmp_path):
    """Integers for float fields, a YAML string float (``1e-3``: PyYAML has no exponent without a dot), null for
    an Optional field (``none`` on the command line); the command line wins over the file."""
    from llmrec.config import parse_config
    from llmrec.llm.config import TrainConfig

    cfg_file = tmp_path / "ok.yaml"
    cfg_file.write_text("epochs: 3\nlr: 1e-3\nnum_layers: null\nbatch_size: 8\n")
    cfg = parse_config(
        TrainConfig, ["--config", str(cfg_file), "--data", "d", "--output_dir", "o", "--batch_size", "4"]
    )
    assert (cfg.epochs, cfg.lr, cfg.num_layers, cfg.batch_size) == (3.0, 1e-3, None, 4)
    assert isinstance(cfg.epochs, float)
    cfg = parse_config(TrainConfig, ["--config", str(cfg_file), "--data", "d", "--output_dir", "o", "--num_layers",
                                     "2", "--max_steps", "none"])  # fmt: skip
    assert (cfg.num_layers, cfg.max_steps) == (2, None)


def test_debug_reraises_the_error(paths, monkeypatch):
    argv = ["evaluate", "--run", str(paths["root"] / "not_a_run")]
    with pytest.raises(ConfigError, match="run.json"):
        cli_main([*argv, "--debug"])
    monkeypatch.setenv("LLMREC_DEBUG", "1")
    with pytest.raises(DataError, match="run.json"):
        cli_main(["recommend", "--run", str(paths["root"] / "not_a_run"), "--history", "i1"])


def test_python_m_llmrec_exit_code_and_traceback(paths):
    """The real process: exit code 2 and one line; with --debug, the traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    env.pop("LLMREC_DEBUG", None)
    argv = [sys.executable, "-m", "llmrec", "evaluate", "--run", str(paths["root"] / "not_a_run")]
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and plain.stderr.strip().count("\n") == 0 and "run.json" in plain.stderr
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
