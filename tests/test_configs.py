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
