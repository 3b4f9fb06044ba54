"""Every shipped YAML config parses into its command's dataclass (no stale or misspelt keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmrec.baselines_train import BaselineConfig
from llmrec.config import parse_config
from llmrec.train import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_are_found():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path):
    raw = yaml.safe_load(path.read_text())
    if "prompt" in raw or "lora_r" in raw:  # an LLM run: llmrec train --config
        extra = [] if "data" in raw else ["--data", "d", "--output_dir", "o"]  # the demo passes them (scripts/demo.sh)
        cfg = parse_config(TrainConfig, ["--config", str(path), *extra])
        assert cfg.data and cfg.output_dir
    else:  # a baseline: llmrec baseline MODEL --config ... --data D --out O
        cfg = parse_config(BaselineConfig, ["--config", str(path), "--data", "d", "--out", "o"])
        assert cfg.model == raw["model"]


def test_demo_is_the_benchmark_recipe_cut_short():
    """configs/demo_beauty.yaml says it is the selected recipe with a shorter schedule: keep the two in step."""
    root = CONFIGS[0].parent
    demo = parse_config(TrainConfig, ["--config", str(root / "demo_beauty.yaml"), "--data", "d", "--output_dir", "o"])
    bench = parse_config(TrainConfig, ["--config", str(root / "llm_beauty_mask_wsd_l4_ls_bos.yaml")])
    schedule = {"data", "output_dir", "epochs", "eval_every", "eval_users", "test_users", "log_every"}
    differ = {k for k in vars(demo) if k not in schedule and getattr(demo, k) != getattr(bench, k)}
    assert not differ, f"demo_beauty.yaml differs from the benchmark recipe in {sorted(differ)}"
    assert demo.epochs < bench.epochs
