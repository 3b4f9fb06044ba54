"""Load any run directory (LLM or baseline) as a recommender: ``load_run(run_dir) -> LoadedRun``.

Every run directory holds a ``run.json`` with at least ``kind`` (a key of ``RUN_LOADERS``) and ``data`` (the
prepared data set it was trained on). A loader returns an object with ``score(histories) -> Tensor [B, N]``
over internal item ids; ``LoadedRun`` adds the catalog and a name, which is all the evaluator, the
``recommend``/``compare`` commands and the HTTP server need.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrec.data import Catalog, DataError, PreparedData


@dataclass
class LoadedRun:
    kind: str
    name: str
    run_dir: Path
    model: Any  # has score(histories) -> Tensor [B, num_items]
    data: PreparedData
    info: dict = field(default_factory=dict)

    @property
    def catalog(self) -> Catalog:
        return self.data.catalog

    def score(self, histories: Sequence[Sequence[int]]):
        import torch

        with torch.inference_mode():
            return self.model.score([list(h) for h in histories])


def _load_baseline(run_dir: Path, info: dict, device: str) -> tuple[Any, PreparedData]:
    from llmrec.baselines_train import load_baseline_run

    model, data, _ = load_baseline_run(run_dir, device=device)
    return model, data


def _load_llm(run_dir: Path, info: dict, device: str) -> tuple[Any, PreparedData]:
    from llmrec.modeling.llm import load_run as load_llm_run

    rec = load_llm_run(run_dir, device=device)
    data = getattr(rec, "data", None)
    if data is None:
        from llmrec.data import load_prepared

        data = load_prepared(info["data"])
    return rec, data


RUN_LOADERS: dict[str, Callable[[Path, dict, str], tuple[Any, PreparedData]]] = {
    "baseline": _load_baseline,
    "llm": _load_llm,
}


def read_run_info(run_dir: str | os.PathLike) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not path.is_file():
        raise DataError(
            f"{run_dir} is not a run directory: run.json is missing (create one with `llmrec train` or `llmrec baseline`)"
        )
    info = json.loads(path.read_text())
    if info.get("kind") not in RUN_LOADERS:
        raise DataError(f"{path}: field 'kind' is {info.get('kind')!r}, expected one of {sorted(RUN_LOADERS)}")
    return info


def load_run(run_dir: str | os.PathLike, device: str = "cpu") -> LoadedRun:
    """Load a trained run (model in eval mode + its prepared data) from its directory."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    model, data = RUN_LOADERS[info["kind"]](run_dir, info, device)
    name = info.get("name") or f"{info.get('model', info['kind'])}:{run_dir.name}"
    return LoadedRun(kind=info["kind"], name=name, run_dir=run_dir, model=model, data=data, info=info)


def top_k(scores, history: Sequence[int], k: int, exclude_seen: bool = True) -> list[tuple[int, float]]:
    """Top-``k`` (item id, score) from one score vector ``[N]``, optionally never returning history items.

    The one-history form of ``llmrec.decoding.mask_items`` + ``llmrec.decoding.top_k`` (same masking, same order).
    """
    from llmrec.decoding import mask_items
    from llmrec.decoding import top_k as batched_top_k

    row = scores.detach().float().reshape(1, -1)
    items, values = batched_top_k(mask_items(row, [history] if exclude_seen else None), k)
    return list(zip(items[0], values[0]))
