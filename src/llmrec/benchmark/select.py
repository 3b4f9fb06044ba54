"""Selection of each model's configuration on the FULL validation split; the test split is never read here.

Protocol: for each (data set, model), every finished tuning trial contributes the ``valid`` entry of its
``metrics.json`` (the evaluator's result for the checkpoint or epoch the run itself selected on validation). A
trial whose validation did not cover every user of the data set (``num_users`` differs from the data's user count,
or ``users_digest`` from the digest of its users, e.g. an LLM run with ``eval_users`` > 0) is flagged and left out.
The selected trial has the highest ``valid`` value of the suite's metric; ties go to the lower trial number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmrec.benchmark.datasets import Dataset
from llmrec.benchmark.trials import Trial
from llmrec.config import ConfigError
from llmrec.errors import DataError
from llmrec.evaluation import users_digest
from llmrec.files import read_json


@dataclass(frozen=True)
class Selection:
    """The outcome of one model's tuning on one data set."""

    data: str
    model: str
    selected: Trial
    scores: dict[str, float]  # trial name -> validation metric (selectable trials only)
    flagged: dict[str, str] = field(default_factory=dict)  # trial name -> why it was left out


def validation_entry(trial: Trial) -> dict:
    """The ``valid`` entry of a finished trial's ``metrics.json`` (and nothing else of it)."""
    path = trial.run_dir / "metrics.json"
    valid = read_json(path).get("valid")
    if not isinstance(valid, dict) or not isinstance(valid.get("metrics"), dict):
        raise DataError(f"{path}: no 'valid' evaluation with 'metrics' (not a finished llmrec run)")
    return valid


def full_validation_problem(valid: dict, dataset: Dataset) -> str | None:
    """Why ``valid`` is not an evaluation of every validation user of ``dataset``, or ``None``."""
    if valid.get("split") not in (None, "valid"):
        return f"its 'valid' entry is a {valid.get('split')!r} evaluation"
    if valid.get("num_users") != dataset.num_users:
        return f"validated on {valid.get('num_users')} users, the data set has {dataset.num_users}"
    digest = valid.get("users_digest")
    if digest is not None and digest != users_digest(dataset.data.users):
        return "validated on other users than the data set's (users_digest differs)"
    return None


def select(trials: list[Trial], dataset: Dataset, metric: str) -> Selection:
    """Pick the best of ``trials`` (one model on one data set, all finished) on full validation ``metric``.

    Raises:
        ConfigError: no trial can be selected (all flagged); the message gives each reason.
    """
    scores, flagged = {}, {}
    for trial in trials:
        valid = validation_entry(trial)
        problem = full_validation_problem(valid, dataset)
        value = valid["metrics"].get(metric)
        if problem is None and not isinstance(value, (int, float)):
            problem = f"its validation has no {metric!r}"
        if problem:
            flagged[trial.name] = problem
        else:
            scores[trial.name] = float(value)
    if not scores:
        reasons = "; ".join(f"{name}: {why}" for name, why in flagged.items())
        raise ConfigError(f"{trials[0].data}/{trials[0].model}: no trial validated on the full split ({reasons})")
    best = max(scores, key=lambda name: (scores[name], -list(scores).index(name)))
    chosen = next(t for t in trials if t.name == best)
    return Selection(chosen.data, chosen.model, chosen, scores, flagged)
