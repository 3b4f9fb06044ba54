"""CUDA-only checks (skipped without a GPU): a QLoRA run is reloaded in 4-bit by evaluate/recommend/serve, so the
scores after training are those of the model that was trained."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from llmrec.cli import main as cli_main
from test_llm_helpers import make_tiny_model_dir, make_toy_data

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes"),
]


def test_a_4bit_run_is_reloaded_in_4bit(tmp_path):
    from llmrec.evaluation import evaluate
    from llmrec.llm.recommender import load_llm_run
    from llmrec.recommenders import load_recommender
    from llmrec.runs import load_run_data

    data, model, run = make_toy_data(tmp_path / "data"), make_tiny_model_dir(tmp_path / "model"), tmp_path / "run"
    argv = ["train", "--data", str(data), "--model", str(model), "--output_dir", str(run), "--num_layers", "2",
            "--item_cf_dim", "4", "--max_steps", "4", "--batch_size", "8", "--eval_users", "0", "--load_in_4bit",
            "true", "--mixed_precision", "bf16", "--progress", "false"]  # fmt: skip
    assert cli_main(argv) == 0
    rec = load_llm_run(run, device="cuda")
    assert getattr(rec.item_lm.lm, "is_loaded_in_4bit", False) or rec.item_lm.lm.get_base_model().is_loaded_in_4bit
    metrics = json.loads((run / "metrics.json").read_text())
    res = evaluate(rec.score, load_run_data(run), "valid")
    # the in-training validation scored the same NF4 base + the same adapter
    assert res["metrics"]["ndcg@10"] == pytest.approx(metrics["valid"]["metrics"]["ndcg@10"], abs=2e-3)
    again = load_recommender(run, device="cuda")  # what evaluate/recommend/serve load
    assert torch.allclose(again.score([[0, 1]]), rec.score([[0, 1]]))
