"""The validation trials of a tuned model: a fixed grid or a seeded random search, of equal size for every model.

Budget rule: every tuned model gets exactly ``suite.trials`` validation trials in total, ``prior_trials`` of them
spent before the suite (e.g. the ~35 runs that chose the LLM recipe) and the rest run by the suite; a tuned LLM may
lower its own budget (model ``trials``), so a baseline never gets fewer trials than an LLM. A grid must have
exactly that many points; a random search draws that many distinct points with ``numpy.random.default_rng(seed)``,
redrawing a point the command's config rejects (e.g. ``num_heads`` not dividing ``hidden_size``) or one already
drawn. With ``include_base``, trial 0 is the base config itself and counts as one of them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from llmrec.benchmark.suite import ModelSpec, Suite, config_class, model_budget
from llmrec.config import ConfigError

MAX_DRAWS_PER_TRIAL = 200


def suite_trials(suite: Suite, model: ModelSpec) -> int:
    """How many trials the suite itself runs for ``model`` (1 for an untuned model)."""
    return model_budget(suite.trials, model) - model.prior_trials if model.tuned else 1


def _valid(model: ModelSpec, params: dict) -> str | None:
    """``None`` when ``base + params`` is accepted by the command's config, else the config's message."""
    cls = config_class(model.kind)
    values = {**model.base, **params, "data": "x", "output_dir": "x"}
    try:
        cls(**values)
    except (ConfigError, TypeError, ValueError) as e:
        return str(e)
    return None


def _grid(model: ModelSpec, n: int, path: str) -> list[dict]:
    space = model.search.space
    points = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    if model.search.include_base:
        points = [{}, *points]
    if len(points) != n:
        sizes = " x ".join(str(len(v)) for v in space.values())
        base = " + 1 (include_base)" if model.search.include_base else ""
        raise ConfigError(
            f"{path}: {model.where}.search.space: the grid has {sizes}{base} = {len(points)} points, but the budget "
            f"gives this model {n} trial(s) (trials - prior_trials); every tuned model gets the same number of "
            "trials: change the grid, trials or prior_trials, or use method: random"
        )
    return points


def _draw(rng: np.random.Generator, spec) -> object:
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    ((how, (low, high)),) = spec.items()
    if how == "int":
        return int(rng.integers(low, high + 1))
    if how == "uniform":
        return float(f"{rng.uniform(low, high):.4g}")
    return float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.3g}")  # log_uniform


def _random(model: ModelSpec, n: int, path: str) -> list[dict]:
    rng = np.random.default_rng(model.search.seed)
    points = [{}] if model.search.include_base else []
    seen = {()}
    draws = 0
    while len(points) < n:
        draws += 1
        if draws > MAX_DRAWS_PER_TRIAL * n:
            raise ConfigError(
                f"{path}: {model.where}.search.space: found only {len(points)} distinct valid points for {n} "
                "trials; widen the space or lower trials"
            )
        point = {key: _draw(rng, spec) for key, spec in model.search.space.items()}
        key = tuple(sorted(point.items()))
        if key not in seen and _valid(model, point) is None:
            seen.add(key)
            points.append(point)
    return points


def search_points(suite: Suite, model: ModelSpec) -> list[dict]:
    """The searched values of each of ``model``'s trials in the suite (``[{}]`` for an untuned model).

    Raises:
        ConfigError: a grid of the wrong size, a space with too few valid points, or a point the command's config
            rejects (the message names the suite file, the model and the option).
    """
    if not model.tuned:
        points = [{}]
    else:
        n = suite_trials(suite, model)
        points = (_grid if model.search.method == "grid" else _random)(model, n, suite.path)
    for t, point in enumerate(points):
        problem = _valid(model, point)
        if problem:
            shown = ", ".join(f"{k}={v}" for k, v in point.items()) or "the base config"
            raise ConfigError(f"{suite.path}: {model.where}: trial {t} ({shown}): {problem}")
    return points
