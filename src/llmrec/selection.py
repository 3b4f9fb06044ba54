"""Selecting one inference setting on the validation split over a grid of values, running the model once.

Used for the text-fusion weight (``llmrec.llm.fusion``) and an ensemble member's weight (``llmrec.ensemble_run``).
Rule: the value with the highest ``SELECT_METRIC`` on the validation users given; ties go to the smaller value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from llmrec.data import PreparedData
from llmrec.evaluation import evaluate

SELECT_METRIC = "ndcg@10"


def evaluate_grid(
    compute: Callable[[list[list[int]], object], object],
    mix: Callable[[object, object], torch.Tensor],
    grid: Sequence,
    data: PreparedData,
    split: str = "valid",
    replay: bool = True,
    **kwargs,
) -> list[dict]:
    """``evaluate`` once per value ``g`` of ``grid`` with the scorer ``histories -> mix(compute(histories, g), g)``:
    one result per value, in ``grid``'s order (``kwargs`` go to ``evaluate``).

    ``compute`` is the expensive part (running a model), ``mix`` the cheap one (combining its outputs for one grid
    value). With ``replay`` (default) ``compute`` runs only during the first value's pass, and each batch's output is
    kept in memory (the caller makes sure it fits) and mixed again for the later values; the evaluator sends the same
    batches in the same order every time, which is checked. Without ``replay`` ``compute`` runs for every value.

    Raises:
        RuntimeError: a replayed pass got other batches than the first one.
    """
    kept: list[tuple[list[list[int]], object]] = []
    results = []
    for i, g in enumerate(grid):
        replayed = iter(kept) if replay and i else None

        def score(histories, g=g, replayed=replayed):
            if replayed is None:
                out = compute(histories, g)
                if replay:
                    kept.append((histories, out))
                return mix(out, g)
            seen, out = next(replayed, (None, None))
            if seen != histories:
                raise RuntimeError("evaluate_grid: the evaluator's batches changed between grid values")
            return mix(out, g)

        results.append(evaluate(score, data, split, **kwargs))
    return results


def select_on_grid(
    compute: Callable[[list[list[int]], object], object],
    mix: Callable[[object, object], torch.Tensor],
    grid: Sequence[float],
    data: PreparedData,
    replay: bool = True,
    **kwargs,
) -> tuple[float, dict, list[dict]]:
    """``evaluate_grid`` on the validation split, then the rule of the module docstring.

    Returns:
        ``(best value, its validation result, [{"value", "ndcg@10", "hr@10"} per grid value])``.
    """
    results = evaluate_grid(compute, mix, grid, data, "valid", replay=replay, **kwargs)
    table = [
        {"value": float(g), "ndcg@10": r["metrics"]["ndcg@10"], "hr@10": r["metrics"]["hr@10"]}
        for g, r in zip(grid, results)
    ]
    if not table:
        raise ValueError("select_on_grid: an empty grid")
    best = max(range(len(table)), key=lambda i: (table[i][SELECT_METRIC], -table[i]["value"]))
    return table[best]["value"], results[best], table
