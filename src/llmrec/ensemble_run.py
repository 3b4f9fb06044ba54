"""Writing an ensemble run (``llmrec ensemble``): select a -1 weight on the full validation split, test once.

The ensemble itself (``EnsembleConfig``, ``EnsembleRecommender``, the run's ``members``) is ``llmrec.ensemble``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from llmrec.config import ConfigError
from llmrec.ensemble import (
    EnsembleConfig,
    EnsembleRecommender,
    apply_member_options,
    combine,
    member_record,
    parse_member_options,
)
from llmrec.errors import DataError

CACHE_LIMIT_BYTES = 4 << 30  # selection keeps the members' validation scores in memory up to this size


def select_weight(ens: EnsembleRecommender, data, index: int, grid: Sequence[float], batch_size: int = 256):
    """Choose ``ens.weights[index]`` among ``grid`` on ``data``'s FULL validation split (module docstring).

    Each member runs once per batch when the validation scores of all members fit in ``CACHE_LIMIT_BYTES``
    (``users x items x members`` float32); otherwise once per grid value.

    Returns:
        ``(best weight, its full validation result, [{"weight", "ndcg@10", "hr@10"} per grid value])``; the
        weight is also set on ``ens``.
    """
    from llmrec.selection import select_on_grid

    running = [1.0 if (w or i == index) else 0.0 for i, w in enumerate(ens.weights)]  # the members scored
    cache = data.num_users * data.num_items * 4 * sum(running) <= CACHE_LIMIT_BYTES

    def weights_with(w: float) -> list[float]:
        return [w if i == index else x for i, x in enumerate(ens.weights)]

    values = [float(w) for w in grid if any(weights_with(w))]
    if not values:
        raise ConfigError("weight_grid: every candidate leaves all weights at zero")
    best, valid, table = select_on_grid(
        lambda histories, w: ens.member_scores(histories, running if cache else weights_with(w)),
        lambda scores, w: combine(scores, weights_with(w)),
        values, data, replay=cache, batch_size=batch_size, progress=True,
    )  # fmt: skip
    ens.weights[index] = best
    return best, valid, [{"weight": r["value"], "ndcg@10": r["ndcg@10"], "hr@10": r["hr@10"]} for r in table]


ENSEMBLE_OUTPUTS = ("run.json", "config.yaml", "catalog.parquet", "metrics.json", "eval_valid.json", "eval_test.json",
                    "eval_valid_warm.json", "eval_valid_cold.json", "eval_test_warm.json", "eval_test_cold.json",
                    "test_ranks.npy", "test_ranks.json")  # fmt: skip


def _output_dir(cfg: EnsembleConfig) -> Path:
    """``cfg.output_dir``, new or empty, or an ensemble run replaced with ``--overwrite`` (never a member)."""
    from llmrec.runs import clear_outputs, is_run_dir, read_run_info

    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir: {out} exists and is not a directory")
    if any(out.resolve() == Path(r).resolve() for r in cfg.runs):
        raise ConfigError(f"output_dir: {out} is one of the member runs; choose a new directory")
    if out.is_dir() and any(out.iterdir()):
        if not is_run_dir(out) or read_run_info(out)["kind"] != "ensemble":
            raise ConfigError(f"output_dir: {out} is not empty and is not an ensemble run; choose a new directory")
        if not cfg.overwrite:
            raise ConfigError(f"output_dir: {out} already holds an ensemble run; pass --overwrite true to replace it")
        clear_outputs(out, ENSEMBLE_OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _load_members(cfg: EnsembleConfig, options: list[dict], data, load_member: Callable) -> list:
    """The members, loaded, their ``options`` applied; every one trained on ``data`` (same fingerprint)."""
    from llmrec.runs import read_run_info

    members = []
    for run, opts in zip(cfg.runs, options):
        record = read_run_info(run)["data"]
        if record["fingerprint"] != data.fingerprint:
            raise DataError(
                f"runs: {run} was trained on other data ({record['name']}, fingerprint {record['fingerprint'][:12]}) "
                f"than {cfg.runs[0]} ({data.name}, {data.fingerprint[:12]}); an ensemble needs one data set"
            )
        rec = load_member(run, cfg.device)
        apply_member_options(rec, opts, run)
        members.append(rec)
    return members


def create_ensemble_run(cfg: EnsembleConfig, load_member: Callable) -> dict:
    """Write the ensemble run ``cfg.output_dir``: select a -1 weight on full validation, test once (module docstring).

    ``load_member(path, device)`` loads a member run (``llmrec.recommenders.load_recommender``). Returns the
    ``metrics.json`` written. ``run.json`` is written first (weights as given) so an interrupted run is still
    recognised and replaced with ``--overwrite``; loading refuses it until its weights are final.
    """
    import time

    import torch

    from llmrec.config import save_config
    from llmrec.evaluation import evaluate
    from llmrec.runs import load_run_data, read_run_info, write_metrics, write_run_info, write_test_ranks

    start = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    data = load_run_data(cfg.runs[0], cfg.data or None)
    data_path = cfg.data or read_run_info(cfg.runs[0])["data"]["path"]
    out = _output_dir(cfg)
    options = [parse_member_options(t) for t in cfg.member_options] or [{}] * len(cfg.runs)
    members = _load_members(cfg, options, data, load_member)
    ens = EnsembleRecommender(members, cfg.weights, name=f"ensemble:{out.name}")

    def info_with(weights):
        members = [member_record(r, out, w, o) for r, w, o in zip(cfg.runs, weights, options)]
        return write_run_info(out, "ensemble", "ensemble", data, data_path, members=members)

    info = info_with(cfg.weights)
    save_config(cfg, out / "config.yaml")
    table: list[dict] = []
    with torch.inference_mode():
        if -1 in cfg.weights:
            _, valid, table = select_weight(ens, data, cfg.weights.index(-1), cfg.weight_grid, cfg.batch_size)
            info = info_with(ens.weights)
        else:
            valid = evaluate(ens.score, data, "valid", batch_size=cfg.batch_size, progress=True)
        note = ens.protocol_note
        valid = {**valid, "protocol": f"{valid['protocol']}; {note}", "scoring": note, "selection": table}
        test = None
        if cfg.test:
            test = evaluate(ens.score, data, "test", batch_size=cfg.batch_size, progress=True, return_ranks=True,
                            protocol_note=note)  # fmt: skip
            test = write_test_ranks(out, info, test)
    train = {"weights": ens.weights, "wall_time_s": round(time.perf_counter() - start, 3)}
    return write_metrics(out, info, status="done", valid=valid, test=test, train=train)
