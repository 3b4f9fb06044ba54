"""The shipped YAML configs: each parses into its command's dataclass, none holds a machine-specific path, each
header says what it reproduces and how, the selected-recipe config is the `llmrec train` defaults, and the demo is
that recipe cut short."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from llmrec.baselines.config import BaselineConfig
from llmrec.config import parse_config
from llmrec.llm.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SELECTED = CONFIG_DIR / "llm_beauty_cf.yaml"
DEMO = CONFIG_DIR / "demo_beauty.yaml"
PATHS = ["--data", "prepared/beauty", "--output_dir", "runs/x"]  # the command line gives them, never the config
# The fields a shortened run may change: how long it trains and how much it validates, tests and logs.
SCHEDULE_FIELDS = {"epochs", "max_steps", "eval_every", "eval_users", "test_users", "log_every", "progress"}
# An absolute POSIX path (/work/..., /tmp/...), a home path (~/...) or a Windows drive path (C:\...).
ABSOLUTE = re.compile(r"(?<![\w.:/-])(/[A-Za-z0-9_.-]+/|~/|[A-Za-z]:\\)")


def is_llm(raw: dict) -> bool:
    """An LLM config has no `model: <baseline>` key (and the demo may hold only schedule fields)."""
    return raw.get("model") not in {"pop", "gru4rec", "sasrec", "bert4rec"}


def parse(path: Path):
    raw = yaml.safe_load(path.read_text()) or {}
    if is_llm(raw):  # llmrec train --config PATH --data D --output_dir R
        return parse_config(TrainConfig, ["--config", str(path), *PATHS])
    return parse_config(BaselineConfig, ["--config", str(path), *PATHS])  # llmrec baseline MODEL --config PATH ...


def differing_fields(a, b, ignore=()) -> set[str]:
    return {f.name for f in dataclasses.fields(a) if f.name not in ignore and getattr(a, f.name) != getattr(b, f.name)}


def test_configs_are_found():
    assert SELECTED in CONFIGS and DEMO in CONFIGS
    assert len(CONFIGS) >= 7


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_into_its_dataclass(path):
    raw = yaml.safe_load(path.read_text()) or {}
    cfg = parse(path)
    expected = TrainConfig if is_llm(raw) else BaselineConfig
    assert type(cfg) is expected
    for key, value in raw.items():  # every YAML key reached the dataclass unchanged
        assert getattr(cfg, key) == value, f"{path.name}: {key}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_has_no_machine_paths(path):
    """Data and run directories come from the command line; a config never names a directory of one machine."""
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    assert not {"data", "output_dir"} & set(raw), f"{path.name}: data/output_dir belong on the command line"
    hits = [m.group(0) for m in ABSOLUTE.finditer(text)]
    assert not hits, f"{path.name}: absolute path(s) {hits}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_header_states_command_and_measurement(path):
    """The first comment says what it reproduces, the command (current flags, this file) and the measurement."""
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert "Command:" in text, f"{path.name}: header has no 'Command:'"
    assert f"configs/{path.name}" in text, f"{path.name}: the command does not use this file"
    assert "Measured" in text and re.search(r"20\d\d-\d\d-\d\d", text), f"{path.name}: no measured result with date"
    assert not re.search(r"--out\b", text), f"{path.name}: use --output_dir, not the old --out"
    assert "-m llmrec.train" not in text


# A directory of one machine in prose: /tmp/..., /work/..., /home/... (a home-relative path only as the documented
# ~/.cache default). Endpoints such as /items/{raw_id} are not directories of a machine, so ABSOLUTE is too wide here.
MACHINE_DIR = re.compile(r"(?<![\w.:/-])(/(?:tmp|work|home|root|Users|mnt|scratch|opt|var)/|~/(?!\.cache/))")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").rglob("*.json"))]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_have_no_machine_paths(path):
    """Commands in the docs name data and run directories relative to the user's working directory."""
    hits = [(n, m.group(0)) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            for m in MACHINE_DIR.finditer(line)]  # fmt: skip
    assert not hits, f"{path.relative_to(ROOT)}: machine paths at (line, path) {hits[:5]}"


def test_machine_path_check_can_fail():
    for bad in ("--data /tmp/meas/beauty", "`/work/runs/x`", "ls ~/runs"):
        assert MACHINE_DIR.search(bad), bad
    for fine in ("--data prepared/beauty", "POST /items/{raw_id}", "https://github.com/a/b", "~/.cache/llmrec"):
        assert not MACHINE_DIR.search(fine), fine


def test_absolute_path_check_can_fail():
    for bad in ("data: /work/data/beauty", "# Command: llmrec train --output_dir /tmp/runs/x", "dir: ~/runs/x"):
        assert ABSOLUTE.search(bad), bad
    for fine in ("# Command: llmrec train --data prepared/beauty --output_dir runs/x", "lr: 0.001", "a 1/2 split"):
        assert not ABSOLUTE.search(fine), fine


def test_selected_recipe_is_the_train_defaults():
    """configs/llm_beauty_cf.yaml documents the recipe that `llmrec train` runs without a config: keep them equal."""
    raw = yaml.safe_load(SELECTED.read_text())
    assert raw.get("item_cf_dim") == 512 and raw.get("num_layers") == 4, "the selected recipe's values are listed"
    selected = parse(SELECTED)
    defaults = parse_config(TrainConfig, PATHS)
    differ = differing_fields(selected, defaults)
    assert not differ, f"{SELECTED.name} differs from the TrainConfig defaults in {sorted(differ)}"


def test_selected_recipe_check_can_fail():
    changed = dataclasses.replace(parse(SELECTED), lr=0.002)
    assert differing_fields(changed, parse_config(TrainConfig, PATHS)) == {"lr"}


def test_demo_is_the_selected_recipe_cut_short():
    """configs/demo_beauty.yaml says it is the selected recipe with a shorter schedule: keep the two in step."""
    demo, selected = parse(DEMO), parse(SELECTED)
    differ = differing_fields(demo, selected, ignore=SCHEDULE_FIELDS)
    assert not differ, f"{DEMO.name} differs from the selected recipe in {sorted(differ)}"
    assert demo.epochs < selected.epochs
    assert 0 < demo.eval_users <= selected.eval_users and demo.test_users > 0  # sampled users, never all


def test_demo_check_can_fail():
    demo, selected = parse(DEMO), parse(SELECTED)
    assert differing_fields(dataclasses.replace(demo, label_smoothing=0.1), selected, SCHEDULE_FIELDS) == {
        "label_smoothing"
    }


def test_sid_kmeans_choices_are_checked():
    from llmrec.config import ConfigError, parse_config
    from llmrec.llm.config import TrainConfig

    base = ["--data", "d", "--output_dir", "o", "--item_ids", "semantic"]
    assert parse_config(TrainConfig, [*base, "--sid_kmeans", "minibatch"]).sid_kmeans == "minibatch"
    with pytest.raises(ConfigError, match="sid_kmeans"):
        parse_config(TrainConfig, [*base, "--sid_kmeans", "faiss"])
