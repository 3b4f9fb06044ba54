"""A benchmark suite (``configs/benchmarks/NAME.yaml``) read and validated into ``Suite``.

Schema (every key is checked; an error is one line naming the file and the key, e.g.
``configs/benchmarks/x.yaml: models[1] (sasrec).search.space.lr: expected a list of values or a range``):

    name: beauty                     # label of the report
    description: "..."               # optional, printed at the top of the report
    trials: 40                       # validation trials per TUNED model (one with a search), counting prior_trials:
                                     #   every tuned model gets this many, so the budgets are equal ...
    seeds: 3                         # finalists are run with seeds 0..seeds-1 (seed 0 = the tuning trial itself)
    metric: ndcg@10                  # selection metric on the FULL validation split
    num_threads: 1                   # torch threads of each trial (--jobs N forces 1)
    bootstrap_samples: 1000          # resamples of the paired bootstrap
    data:                            # one or more data sets
      - name: beauty                 #   label; also the folder under DIR/trials/
        dataset: beauty              #   a registered name (`llmrec prepare NAME`), prepared into DIR/data/NAME ...
        data_dir: ../shared/data     #   ... from this folder (default: $LLMREC_DATA_DIR or ./data)
      - name: mine
        prepared: prepared/mine      #   or an already prepared directory
    models:
      - name: sasrec                 #   label; also the folder under DIR/trials/<data>/
        kind: baseline               #   llm (`llmrec train`) or baseline (`llmrec baseline`)
        config: configs/sasrec_beauty.yaml   # base config (its keys are the command's options); optional
        set: {epochs: 200}           #   options fixed for every trial of this model (override the base config)
        prior_trials: 0              #   validation trials this model had before the suite (counted in `trials`; for
                                     #   an untuned model: the runs that chose its fixed recipe, at most trials - 1)
        trials: 4                    #   ... unless a tuned LLM lowers its own budget: optional, for `kind: llm` only
                                     #   (a baseline never gets fewer trials than an LLM), e.g. where an LLM trial
                                     #   costs hours; the report gives every model's count
        search:                      #   absent: one untuned trial (reported as untuned)
          method: random             #   grid (cartesian product of lists) or random (seeded draws)
          seed: 0                    #   random only
          include_base: true         #   trial 0 is the base config + set, unchanged
          space:
            hidden_size: [32, 64, 128]            # a list: grid values / random choices
            lr: {log_uniform: [1.0e-4, 3.0e-3]}   # random only: log_uniform, uniform (floats), int (inclusive)

Relative paths are relative to the current directory, as everywhere in llmrec. Options that the benchmark owns
(``data``, ``output_dir``, ``seed``, ``num_threads``, ``resume``, ``overwrite``; for LLM trials also ``eval_users``,
which is 0 so that every validation uses all users, and ``test_users``, 0) cannot be set by a suite.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrec.config import ConfigError, check_yaml_values, load_yaml

KINDS = ("llm", "baseline")
METHODS = ("grid", "random")
RANGES = ("log_uniform", "uniform", "int")
# options every trial gets from the benchmark, never from the suite
OWNED = ("data", "output_dir", "seed", "num_threads", "resume", "overwrite")
OWNED_BY_KIND = {"llm": ("eval_users", "test_users"), "baseline": ()}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class SuiteFile:
    """The top-level keys of a suite YAML file (types checked by ``llmrec.config.check_yaml_values``)."""

    name: str = ""
    description: str = ""
    trials: int | None = None
    seeds: int = 3
    metric: str = "ndcg@10"
    num_threads: int = 1
    bootstrap_samples: int = 1000
    data: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)


@dataclass
class DataEntry:
    name: str = ""
    dataset: str = ""
    data_dir: str = ""
    prepared: str = ""


@dataclass
class ModelEntry:
    name: str = ""
    kind: str = ""
    config: str = ""
    set: dict = field(default_factory=dict)
    prior_trials: int = 0
    trials: int | None = None
    search: dict | None = None


@dataclass
class SearchEntry:
    method: str = "grid"
    seed: int = 0
    include_base: bool = False
    space: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """One data set of a suite: a registered name to prepare (``dataset``) or a prepared directory."""

    name: str
    dataset: str = ""
    data_dir: str = ""
    prepared: str = ""


@dataclass(frozen=True)
class SearchSpec:
    method: str
    seed: int
    include_base: bool
    space: dict  # option -> list of values, or {"log_uniform" | "uniform" | "int": [low, high]}


@dataclass(frozen=True)
class ModelSpec:
    """One model of a suite: its kind, base options (config file + ``set``) and search space."""

    name: str
    kind: str
    config: str
    base: dict  # the base config's values with ``set`` applied (option -> value)
    prior_trials: int = 0
    search: SearchSpec | None = None
    where: str = ""  # "models[i] (name)", for error messages
    trials: int | None = None  # an LLM's own lower budget (``None``: the suite's ``trials``)

    @property
    def tuned(self) -> bool:
        return self.search is not None


@dataclass(frozen=True)
class Suite:
    path: str
    name: str
    description: str
    trials: int | None
    seeds: tuple[int, ...]
    metric: str
    num_threads: int
    bootstrap_samples: int
    data: tuple[DataSpec, ...]
    models: tuple[ModelSpec, ...]


def model_budget(trials: int | None, model: ModelSpec) -> int | None:
    """The validation trials ``model`` gets in total (prior ones counted): its own ``trials`` or the suite's."""
    return model.trials if model.trials is not None else trials


def config_class(kind: str) -> type:
    """The options dataclass of a trial command: ``TrainConfig`` (llm) or ``BaselineConfig`` (baseline)."""
    if kind == "llm":
        from llmrec.llm.config import TrainConfig

        return TrainConfig
    from llmrec.baselines.config import BaselineConfig

    return BaselineConfig


def option_names(kind: str) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class(kind)) if f.init}


def _entry(cls: type, value: Any, path: str, where: str):
    """``value`` (a mapping from the suite) checked against the dataclass ``cls``; errors name ``path: where``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where}: expected a mapping, got {type(value).__name__}")
    return cls(**check_yaml_values(cls, value, f"{path}: {where}"))


def _check_name(name: str, path: str, where: str) -> None:
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"{path}: {where}.name: expected letters, digits, '.', '_' or '-' (a folder name), got {name!r}"
        )


def _data_spec(value: Any, path: str, i: int) -> DataSpec:
    where = f"data[{i}]"
    e = _entry(DataEntry, value, path, where)
    _check_name(e.name, path, where)
    if bool(e.dataset) == bool(e.prepared):
        raise ConfigError(f"{path}: {where} ({e.name}): give either 'dataset' (a registered name) or 'prepared'")
    if e.dataset:
        from llmrec.data.registry import REGISTRY

        if e.dataset not in REGISTRY:
            raise ConfigError(f"{path}: {where}.dataset: unknown data set {e.dataset!r}; known: {sorted(REGISTRY)}")
    elif not (Path(e.prepared) / "meta.json").is_file():
        raise ConfigError(f"{path}: {where}.prepared: {e.prepared} is not a prepared data directory (no meta.json)")
    if e.data_dir and not e.dataset:
        raise ConfigError(f"{path}: {where}.data_dir: only used with 'dataset'")
    return DataSpec(e.name, e.dataset, e.data_dir, e.prepared)


def _base_options(e: ModelEntry, path: str, where: str) -> dict:
    """The base config file's values with ``set`` on top, each checked against the command's option types."""
    cls = config_class(e.kind)
    base = {}
    if e.config:
        if not Path(e.config).is_file():
            raise ConfigError(f"{path}: {where}.config: {e.config} does not exist")
        base = check_yaml_values(cls, load_yaml(e.config), e.config)
    if not isinstance(e.set, dict):
        raise ConfigError(f"{path}: {where}.set: expected a mapping of options, got {type(e.set).__name__}")
    base.update(check_yaml_values(cls, e.set, f"{path}: {where}.set"))
    owned = [k for k in (*OWNED, *OWNED_BY_KIND[e.kind]) if k in e.set]
    if owned:
        raise ConfigError(f"{path}: {where}.set.{owned[0]}: set by the benchmark for every trial; remove it")
    return base


def _search_spec(value: Any, kind: str, path: str, where: str) -> SearchSpec:
    e = _entry(SearchEntry, value, path, where)
    if e.method not in METHODS:
        raise ConfigError(f"{path}: {where}.method: expected one of {METHODS}, got {e.method!r}")
    if not isinstance(e.space, dict) or not e.space:
        raise ConfigError(f"{path}: {where}.space: expected a non-empty mapping of options to values")
    names = option_names(kind)
    for key, values in e.space.items():
        at = f"{path}: {where}.space.{key}"
        if key not in names:
            raise ConfigError(f"{at}: not an option of `llmrec {'train' if kind == 'llm' else 'baseline'}`")
        if key in (*OWNED, *OWNED_BY_KIND[kind]):
            raise ConfigError(f"{at}: set by the benchmark for every trial; it cannot be searched")
        if isinstance(values, list) and values:
            for v in values:
                check_yaml_values(config_class(kind), {key: v}, f"{path}: {where}.space")
        elif isinstance(values, dict) and len(values) == 1 and next(iter(values)) in RANGES:
            _check_range(values, e.method, at)
        else:
            raise ConfigError(
                f"{at}: expected a non-empty list of values or a range {{{'|'.join(RANGES)}: [low, high]}}"
            )
    return SearchSpec(e.method, e.seed, e.include_base, dict(e.space))


def _check_range(values: dict, method: str, at: str) -> None:
    ((how, bounds),) = values.items()
    if method == "grid":
        raise ConfigError(f"{at}: a grid takes a list of values; {how} ranges need method: random")
    ok = isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)
    if not ok or not bounds[0] < bounds[1] or (how == "log_uniform" and bounds[0] <= 0):
        raise ConfigError(
            f"{at}.{how}: expected [low, high] with low < high (low > 0 for log_uniform), got {bounds!r}"
        )
    if how == "int" and not all(isinstance(b, int) for b in bounds):
        raise ConfigError(f"{at}.int: expected two integers, got {bounds!r}")


def _model_spec(value: Any, path: str, i: int) -> ModelSpec:
    where = f"models[{i}]"
    e = _entry(ModelEntry, value, path, where)
    _check_name(e.name, path, where)
    where = f"models[{i}] ({e.name})"
    if e.kind not in KINDS:
        raise ConfigError(f"{path}: {where}.kind: expected one of {KINDS}, got {e.kind!r}")
    if e.prior_trials < 0:
        raise ConfigError(f"{path}: {where}.prior_trials: must be >= 0, got {e.prior_trials}")
    base = _base_options(e, path, where)
    search = None if e.search is None else _search_spec(e.search, e.kind, path, f"{where}.search")
    if e.trials is not None:
        if e.kind != "llm" or search is None:
            raise ConfigError(f"{path}: {where}.trials: only a tuned LLM (kind llm, with a search) may lower its own "
                              "budget; baselines get the suite's trials")  # fmt: skip
        if e.trials < 1:
            raise ConfigError(f"{path}: {where}.trials: must be >= 1, got {e.trials}")
    return ModelSpec(e.name, e.kind, e.config, base, e.prior_trials, search, where, e.trials)


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite file (see the module docstring).

    Raises:
        ConfigError: the file is missing or invalid; the message names the file and the key.
    """
    path = str(path)
    top = SuiteFile(**check_yaml_values(SuiteFile, load_yaml(path), path))
    if not _NAME.match(top.name or ""):
        raise ConfigError(f"{path}: name: expected letters, digits, '.', '_' or '-', got {top.name!r}")
    if top.seeds < 1:
        raise ConfigError(f"{path}: seeds: must be >= 1, got {top.seeds}")
    if top.num_threads < 1:
        raise ConfigError(f"{path}: num_threads: must be >= 1, got {top.num_threads}")
    if top.bootstrap_samples < 100:
        raise ConfigError(f"{path}: bootstrap_samples: must be >= 100, got {top.bootstrap_samples}")
    base, _, k = top.metric.partition("@")
    if base not in ("ndcg", "hr", "mrr") or (base != "mrr" and k not in ("1", "5", "10", "20")):
        raise ConfigError(f"{path}: metric: expected ndcg@K or hr@K (K in 1, 5, 10, 20) or mrr, got {top.metric!r}")
    if not top.data or not top.models:
        raise ConfigError(f"{path}: {'data' if not top.data else 'models'}: give at least one entry")
    data = tuple(_data_spec(v, path, i) for i, v in enumerate(top.data))
    models = tuple(_model_spec(v, path, i) for i, v in enumerate(top.models))
    for what, names in (("data", [d.name for d in data]), ("models", [m.name for m in models])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{path}: {what}: the name {dup[0]!r} is used twice")
    if any(m.tuned for m in models) and top.trials is None:
        raise ConfigError(
            f"{path}: trials: required when a model has a search (the equal budget of every tuned model)"
        )
    if top.trials is not None and top.trials < 1:
        raise ConfigError(f"{path}: trials: must be >= 1, got {top.trials}")
    for m in models:
        budget = model_budget(top.trials, m)
        if m.trials is not None and m.trials > top.trials:
            raise ConfigError(f"{path}: {m.where}.trials: {m.trials} exceeds the suite's trials ({top.trials}): an LLM "
                              "may get fewer trials than the baselines, never more")  # fmt: skip
        if not m.tuned and m.prior_trials and top.trials is not None and m.prior_trials + 1 > top.trials:
            raise ConfigError(
                f"{path}: {m.where}.prior_trials: {m.prior_trials} + its 1 run here exceed the budget of a tuned model "
                f"(trials: {top.trials}): the tuned models would get fewer validation trials than this recipe had"
            )
        if m.tuned and m.prior_trials >= budget:
            raise ConfigError(f"{path}: {m.where}.prior_trials: {m.prior_trials} leaves no trial of the budget "
                              f"(trials: {budget})")  # fmt: skip
    return Suite(path, top.name, top.description, top.trials, tuple(range(top.seeds)), top.metric, top.num_threads,
                 top.bootstrap_samples, data, models)  # fmt: skip
