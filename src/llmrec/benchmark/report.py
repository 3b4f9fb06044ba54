"""The benchmark report (``DIR/report.json``; rendered to Markdown and PNG by ``llmrec.benchmark.render``).

Protocol of the numbers:
    - Every model's configuration is selected on the full validation split (``llmrec.benchmark.select``); then the
      selected trial is run with each of the suite's seeds (seed 0 is the tuning trial itself) and each seed run is
      tested once: its test result is the ``test`` entry of its ``metrics.json`` (all test users, leave-one-out,
      full-catalog ranking, history items masked, ties broken pessimistically).
    - Per model and data set the report gives each seed's numbers and their mean and sample standard deviation
      (``ddof=1``; ``null`` with one seed).
    - The best LLM and the best baseline of a data set are the models with the highest MEAN VALIDATION metric over
      seeds (never chosen on test). Their paired bootstrap (``llmrec.evaluation.paired_bootstrap``, difference LLM
      minus baseline) pools the seeds: seed i of one is paired with seed i of the other, user by user, and the
      (seed, user) pairs are resampled. Per-user test ranks come from re-evaluating each seed run with the shared
      evaluator (``test_ranks.npy`` in the run directory, reused while the run is unchanged); the report records the
      largest difference between their metrics and the run's stored test metrics.
    - Cold-start data (``llmrec prepare --cold_items``): each model entry adds ``targets``: for the users whose test
      target is a warm item and for those whose target is a cold one, their number and the seeds' test metrics
      (mean ± std), computed from the same per-user test ranks (``targets_block``; the two sets partition the users;
      every metric but ``auc``).
    - Verdict: ``win`` (``loss``) when the bootstrap's 95% interval of the difference lies above (below) 0 AND the
      gap between the seed means exceeds the larger of the two seed standard deviations; else ``tie``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmrec.benchmark.datasets import Dataset
from llmrec.benchmark.select import Selection
from llmrec.benchmark.suite import ModelSpec, Suite, model_budget
from llmrec.benchmark.trials import Trial
from llmrec.errors import DataError
from llmrec.evaluation import metrics_from_ranks, paired_bootstrap, users_digest
from llmrec.files import atomic_write_json, read_json
from llmrec.runs import RANKS_FILE, RANKS_META, evaluation_protocol, ranks_tag

REPORT_FORMAT = 1
# f1@K and auc are null in the seeds (and absent from the means) of runs evaluated before they existed
REPORT_METRICS = ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr", "f1@10", "f1@20", "auc")


def test_ranks(trial: Trial, dataset: Dataset, device: str = "cpu") -> tuple[np.ndarray, float]:
    """Each test user's 0-based target rank for a finished run, and the largest gap to its stored test metrics.

    Read from ``test_ranks.npy`` + ``test_ranks.json`` in the run directory (written by the run's own test, see
    ``llmrec.runs``, or by an earlier call); recomputed with the shared evaluator when absent or stale.
    """
    import torch

    from llmrec.evaluation import evaluate
    from llmrec.recommenders import load_recommender
    from llmrec.runs import load_run_data, read_run_info

    run = trial.run_dir
    stored = read_json(run / "metrics.json")["test"]["metrics"]
    tag = ranks_tag(read_run_info(run), users_digest(dataset.data.users), stored)
    if (run / RANKS_FILE).is_file() and (run / RANKS_META).is_file() and read_json(run / RANKS_META) == tag:
        ranks = np.load(run / RANKS_FILE)
    else:
        data = load_run_data(run, dataset.path)
        rec = load_recommender(run, device=device)
        with torch.inference_mode():
            note = getattr(rec, "protocol_note", "")
            ranks = evaluate(rec.score, data, "test", return_ranks=True, protocol_note=note)["ranks"]
        tmp = run / f".{RANKS_FILE}.tmp.npy"
        np.save(tmp, ranks)
        tmp.replace(run / RANKS_FILE)
        atomic_write_json(run / RANKS_META, tag)
    again = metrics_from_ranks(ranks, ks=(10, 20))
    gap = max(abs(again[k] - stored[k]) for k in ("ndcg@10", "hr@10", "mrr") if k in stored)
    return ranks, float(gap)


def _stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return {"mean": float(arr.mean()), "std": std, "values": [float(v) for v in arr]}


def _stopped_by(trial: Trial, train: dict) -> str:
    if trial.kind == "llm":
        return "early stopping" if trial.options.get("patience") else "schedule (fixed epochs)"
    if not train.get("epochs_run"):
        return "no training (counting)"
    if "stopped_by" in train:  # written by `llmrec baseline`
        return train["stopped_by"].replace("_", " ")
    cap = trial.options.get("epochs")
    return "epoch cap" if cap and train["epochs_run"] >= cap else "early stopping"


def metric_keys(metric: str) -> tuple[str, ...]:
    """The metrics a report keeps: ``REPORT_METRICS``, the selection metric and the bootstrap's NDCG/HR@K."""
    k = metric.partition("@")[2] or "10"
    return tuple(dict.fromkeys((*REPORT_METRICS, metric, f"ndcg@{k}", f"hr@{k}")))


def seed_run(trial: Trial, dataset: Dataset, root: Path, keys: tuple[str, ...] = REPORT_METRICS) -> dict:
    """One seed run's validation and test numbers (read from its ``metrics.json``), checked to cover every user."""
    path = trial.run_dir / "metrics.json"
    metrics = read_json(path)
    test = metrics.get("test")
    if not isinstance(test, dict) or test.get("num_users") != dataset.num_users:
        found = test.get("num_users") if isinstance(test, dict) else None
        raise DataError(f"{path}: the test evaluation covers {found} users, the data set has {dataset.num_users}")
    train = metrics.get("train") or {}
    return {
        "seed": trial.seed,
        "run": str(trial.run_dir.relative_to(root.resolve())),
        "valid": {k: metrics["valid"]["metrics"].get(k) for k in keys},
        "test": {k: test["metrics"].get(k) for k in keys},
        "stopped_by": _stopped_by(trial, train),
        "epochs_run": train.get("epochs_run", train.get("epochs_done")),
    }


def model_entry(suite: Suite, model: ModelSpec, sel: Selection, runs: list[dict], num_trials: int) -> dict:
    """One model on one data set: budget, selection, seeds and their mean ± std."""
    return {
        "name": model.name,
        "kind": model.kind,
        "config": model.config,
        "tuned": model.tuned,
        "trials": {
            "suite": num_trials,
            "prior": model.prior_trials,
            "total": num_trials + model.prior_trials,
            "search": model.search.method if model.tuned else None,
        },
        "selected": {
            "trial": sel.selected.name,
            "params": sel.selected.params,
            "valid": sel.scores[sel.selected.name],
        },
        "validation_scores": sel.scores,
        "flagged": sel.flagged,
        "seeds": runs,
        "valid": _split_stats(runs, "valid"),
        "test": _split_stats(runs, "test"),
    }


def targets_block(dataset: Dataset, ranks: dict) -> dict | None:
    """``{"warm"|"cold": {"users": n, "test": {metric: mean ± std over seeds}}}`` from the per-seed test ranks
    ``ranks`` (seed -> [num_users], data order) of one model; ``None`` on a data set without cold items."""
    data = dataset.data
    if not data.cold_items:
        return None
    _, targets = data.split("test")
    cold = np.array([t in data.cold_items for t in targets], dtype=bool)
    out = {}
    for name, mask in (("warm", ~cold), ("cold", cold)):
        per_seed = [metrics_from_ranks(r[mask], ks=(10, 20)) for r in ranks.values()] if mask.any() else []
        # no auc here: it needs each user's number of candidates, which the cached ranks do not keep
        test = {k: _stats([m[k] for m in per_seed]) for k in REPORT_METRICS if per_seed and k in per_seed[0]}
        out[name] = {"users": int(mask.sum()), "test": test}
    return out


def _split_stats(runs: list[dict], split: str) -> dict:
    """Mean ± std over the seed runs of every metric they all have."""
    keys = [k for k in runs[0][split] if all(r[split].get(k) is not None for r in runs)]
    return {k: _stats([r[split][k] for r in runs]) for k in keys}


def _verdict(boot: dict, a: dict, b: dict) -> str:
    """``win``/``loss``/``tie`` of B (LLM) over A (baseline); the rule is in the module docstring."""
    gap = b["mean"] - a["mean"]
    spread = max(s for s in (a["std"], b["std"], 0.0) if s is not None)
    if boot["low"] > 0 and gap > spread:
        return "win"
    if boot["high"] < 0 and -gap > spread:
        return "loss"
    return "tie"


def bootstrap_block(suite: Suite, entries: list[dict], ranks: dict, k: int) -> dict | None:
    """Best LLM vs best baseline (by mean validation metric), pooled over seeds; ``None`` without both kinds."""
    best = {}
    for kind in ("llm", "baseline"):
        pool = [e for e in entries if e["kind"] == kind]
        if pool:
            best[kind] = max(pool, key=lambda e: e["valid"][suite.metric]["mean"])
    if len(best) < 2:
        return None
    llm, base = best["llm"], best["baseline"]
    a = np.concatenate([ranks[base["name"]][r["seed"]] for r in base["seeds"]])
    b = np.concatenate([ranks[llm["name"]][r["seed"]] for r in llm["seeds"]])
    boot = paired_bootstrap(a, b, k=k, num_samples=suite.bootstrap_samples, seed=0)
    key = f"ndcg@{k}"
    return {
        "llm": llm["name"],
        "baseline": base["name"],
        "chosen_by": f"mean validation {suite.metric} over seeds",
        "difference": "llm - baseline",
        "pairs": int(len(a)),
        "seeds": len(base["seeds"]),
        "num_samples": suite.bootstrap_samples,
        **boot,
        "verdict": _verdict(boot[key], base["test"][key], llm["test"][key]),
        "verdict_metric": key,
    }


def dataset_block(suite: Suite, dataset: Dataset, models: list[tuple], root: Path, device: str = "cpu") -> dict:
    """One data set's section: the data, the protocol of its test numbers, every model and the bootstrap.

    Args:
        models: ``(ModelSpec, Selection, seed trials, number of suite trials)`` per model, in suite order.

    Raises:
        DataError: a seed run's test does not cover every user, or two runs were tested under different protocols.
    """
    entries, ranks, gap, protocols = [], {}, 0.0, {}
    for model, sel, seeds, num_trials in models:
        runs = [seed_run(t, dataset, root, metric_keys(suite.metric)) for t in seeds]
        ranks[model.name] = {}
        for t in seeds:
            ranks[model.name][t.seed], g = test_ranks(t, dataset, device)
            gap = max(gap, g)
            protocols[t.key] = evaluation_protocol(read_json(t.run_dir / "metrics.json")["test"])
        entries.append(model_entry(suite, model, sel, runs, num_trials))
        by_target = targets_block(dataset, ranks[model.name])
        if by_target is not None:
            entries[-1]["targets"] = by_target
    first_key, first = next(iter(protocols.items()))
    for key, protocol in protocols.items():
        if protocol != first:
            raise DataError(f"{first_key} and {key} were tested under different protocols: {first!r} vs {protocol!r}")
    k = int(suite.metric.partition("@")[2] or 10)
    return {
        "name": dataset.name,
        "path": str(dataset.path),
        "users": dataset.num_users,
        "items": dataset.data.num_items,
        "fingerprint": dataset.fingerprint,
        "test_protocol": first,
        "models": entries,
        "bootstrap": bootstrap_block(suite, entries, ranks, k),
        "ranks_check_max_abs_diff": gap,
    }


def protocol_block(suite: Suite) -> dict:
    return {
        "split": "leave-one-out: train s[:-2], validation target s[-2], test target s[-1]",
        "selection": f"highest {suite.metric} on the FULL validation split (every user); test never used to select",
        "seeds": list(suite.seeds),
        "test": "each seed run tested once on every user",
        "ranking": "full catalog, no sampled negatives",
        "masking": "items of the user's input history (other than the target) removed from the candidates",
        "ties": "pessimistic: the target is placed after every other item with the same score",
        "std": "sample standard deviation over seeds (ddof=1)",
        "budget": _budget(suite),
    }


def _budget(suite: Suite) -> str:
    """The budget rule as run: the suite's trials, and any LLM that lowered its own."""
    if not suite.trials:
        return "no tuned model"
    lower = [f"{m.name} {m.trials}" for m in suite.models if m.tuned and model_budget(suite.trials, m) < suite.trials]
    text = f"{suite.trials} validation trials per tuned model, counting prior_trials"
    return text + (f"; fewer for the LLM(s) ({', '.join(lower)}): no baseline gets fewer than an LLM" if lower else "")
