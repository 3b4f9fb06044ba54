"""scripts/scale_ids.py --quick (tiny Llama, tiny catalogs, in-process), and the two hooks it uses: rq_kmeans with
another estimator, and train() with precomputed semantic ids."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from llmrec.items.semantic import rq_kmeans
from llmrec.items.semantic_store import load_semantic_ids

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("scale_ids", REPO / "scripts" / "scale_ids.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_ids"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_table_json_and_plot_for_both_methods_at_every_size(tmp_path):
    script = load_script()
    report = script.main(["--quick", "--output_dir", str(tmp_path)])
    sizes = report["args"]["sizes"]
    assert len(sizes) >= 2
    for name in ("scale.md", "scale.json", "scale.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "scale.json").read_text())["rows"] == report["rows"]
    rows = {(r["items"], r["method"]): r for r in report["rows"]}
    assert set(rows) == {(n, m) for n in sizes for m in ("atomic", "semantic")}
    for (_, method), r in rows.items():
        assert r["status"] == "ok", r
        assert r["new_row_params"] > 0 and r["trainable_params"] > r["new_row_params"] and r["computed_bytes"] > 0
        assert r["serve_ms"] > 0 and r["load_s"] > 0
        if method == "atomic":
            assert r["score_ms"] > 0
        else:
            assert r["beam_20_ms"] > 0 and r["beam_50_ms"] > 0 and r["cluster_s"] > 0 and r["cluster_peak_rss"] > 0
            assert len(r["beam_20_round_medians_ms"]) == report["args"]["rounds"]
            assert r["train_peak_rss"] > 0 and r["trainable_params_adapter"] == r["trainable_params"]
    # the largest atomic catalog takes the untrained path (--quick forces it), the smaller ones train
    assert "train_peak_rss" not in rows[(sizes[-1], "atomic")] and rows[(sizes[-1], "atomic")]["add_item_tokens_s"] > 0
    assert rows[(sizes[0], "atomic")]["trainable_params_adapter"] == rows[(sizes[0], "atomic")]["trainable_params"]
    assert all(report["exact_kmeans"][str(n)]["seconds"] > 0 for n in sizes)
    table = (tmp_path / "scale.md").read_text()
    for n in sizes:
        assert f"| {n:,} | atomic |" in table and f"| {n:,} | semantic |" in table
    table_before = (tmp_path / "scale.md").read_text()
    again = script.main(["--quick", "--output_dir", str(tmp_path), "--render"])  # from the stage records alone
    assert again["rows"] == report["rows"] and (tmp_path / "scale.md").read_text() == table_before
    # the semantic runs are real run directories holding the codes the script clustered
    run = tmp_path / "runs" / f"semantic_{sizes[-1]}"
    assert list(load_semantic_ids(run).level_sizes) == rows[(sizes[-1], "semantic")]["level_sizes"]


def clustered(n=60, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((4, d)) * 5)[rng.integers(0, 4, n)] + rng.standard_normal((n, d)) * 0.1


def test_rq_kmeans_takes_another_estimator():
    from sklearn.cluster import MiniBatchKMeans

    seen = []

    def estimator(k, seed):
        seen.append((k, seed))
        return MiniBatchKMeans(n_clusters=k, batch_size=32, n_init=2, random_state=seed)

    sids = rq_kmeans(clustered(), levels=2, codes=4, seed=5, estimator=estimator)
    assert seen == [(4, 5), (4, 6)]  # one per level, seeded seed + level
    assert len(np.unique(sids.codes, axis=0)) == 60 and sids.level_sizes[:2] == (4, 4)
    again = rq_kmeans(clustered(), levels=2, codes=4, seed=5, estimator=estimator)
    assert np.array_equal(sids.codes, again.codes)
    default = rq_kmeans(clustered(), levels=2, codes=4, seed=5)  # None: the exact KMeans as before
    assert default.num_items == 60 and default.level_sizes[:2] == (4, 4)


def test_train_uses_precomputed_semantic_ids(tmp_path):
    from llmrec.data import load_prepared
    from llmrec.llm.build import build_model
    from llmrec.llm.config import TrainConfig
    from llmrec.llm.loop import train
    from test_llm_helpers import make_tiny_model_dir, make_toy_data

    model, data = make_tiny_model_dir(tmp_path / "m"), make_toy_data(tmp_path / "d")
    sids = rq_kmeans(clustered(12, seed=1), levels=2, codes=3, seed=0)
    cfg = TrainConfig(data=str(data), output_dir=str(tmp_path / "run"), model=str(model), num_layers=None,
                      item_ids="semantic", max_steps=1, batch_size=8, eval_users=4, test_users=-1, progress=False,
                      beam_width=20)  # fmt: skip
    train(cfg, sids=sids)
    saved = load_semantic_ids(tmp_path / "run", 12)
    assert np.array_equal(saved.codes, sids.codes) and saved.level_sizes == sids.level_sizes
    with pytest.raises(ValueError, match="sids"):
        build_model(TrainConfig(data=str(data), output_dir=str(tmp_path / "a"), model=str(model)), load_prepared(data),
                    sids=sids)  # fmt: skip
