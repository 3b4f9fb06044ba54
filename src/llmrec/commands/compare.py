"""`llmrec compare RUN_DIR ... --output_dir DIR`: one report of LLM runs and baselines on the same data set.

Reads each run's ``run.json`` and its evaluation of the split: ``eval_SPLIT.json`` when ``llmrec evaluate`` wrote
one (e.g. the test split of a run trained with ``--test_users 0``, or all validation users), else the ``valid`` or
``test`` entry of ``metrics.json`` written at the end of training; and writes ``DIR/compare.md`` (Markdown table), ``DIR/compare.json`` and ``DIR/compare.png``.
Runs are refused, naming both, when they were trained on different data (by fingerprint), evaluated under
different protocols, or on different users (count or set): their numbers are not comparable.

Runs whose ``config.yaml`` differs only in the seed and in how the run was executed (``RUN_ONLY_KEYS`` and the
benchmark's ``RUNTIME``: paths, threads, checkpointing, progress) form one recipe; a recipe with two or more runs also gets a line of mean ± sample
standard deviation (ddof=1) over its seeds, in ``compare.md`` and under ``"recipes"`` in ``compare.json``.

``--targets warm|cold`` (a data set prepared with ``--cold_items``) compares the users whose target is a warm / a
cold item instead: each run's ``eval_SPLIT_TARGETS.json``, written by ``llmrec evaluate --run R --split SPLIT
--targets TARGETS`` (training stores only the evaluation of all users).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmrec.config import ConfigError, load_yaml, parse_config
from llmrec.errors import DataError
from llmrec.files import atomic_write_json, atomic_write_text, read_json
from llmrec.runs import SPLIT_KEYS, evaluation_protocol, read_metrics, read_run_info

HELP = "Compare run directories on the same data set: Markdown table, JSON and a PNG bar chart."
COLUMNS = ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr", "auc", "coverage@10")  # a run without one shows —
SEED_COLUMNS = ("ndcg@10", "hr@10", "mrr")  # the mean ± std line of a recipe run with several seeds
# config keys that change how a run executes, not what it trains or how it is scored, beside the benchmark's RUNTIME
# (llmrec.benchmark.trials, imported where used: it needs torch)
RUN_ONLY_KEYS = frozenset({"seed", "save_every", "log_every", "eval_batch_size"})
TARGET_SETS = ("all", "warm", "cold")  # llmrec.evaluation.TARGET_SETS (not imported: it needs torch)


@dataclass
class CompareConfig:
    runs: list[str] = field(default_factory=list, metadata={"help": "Run directories (also positional)."})
    output_dir: str = field(
        default="compare", metadata={"help": "Output directory for compare.md/.json/.png.", "aliases": ["--out"]}
    )
    split: str = field(default="test", metadata={"help": "Which stored evaluation to compare: test or valid."})
    targets: str = field(
        default="all",
        metadata={
            "help": "Users compared: 'all', or those whose target is a 'warm' or a 'cold' item (a data set "
            "prepared with --cold_items; reads eval_SPLIT_TARGETS.json from `llmrec evaluate --targets`)."
        },
    )

    def __post_init__(self):
        if len(self.runs) < 1:
            raise ConfigError("runs: give at least one run directory")
        if self.split not in SPLIT_KEYS:
            raise ConfigError(f"split: expected one of {SPLIT_KEYS}, got {self.split!r}")
        if self.targets not in TARGET_SETS:
            raise ConfigError(f"targets: expected one of {TARGET_SETS}, got {self.targets!r}")


def _stored(run_dir: Path, split: str, targets: str) -> tuple[dict, dict, Path]:
    """``(metrics.json, the evaluation result compared, its file)`` of a run."""
    metrics = read_metrics(run_dir)
    where = run_dir / "metrics.json"
    if not isinstance(metrics, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(metrics).__name__}")
    hint = f"run `llmrec evaluate --run {run_dir} --split {split}" + (
        f" --targets {targets}`" if targets != "all" else "`"
    )
    if targets == "all":
        explicit = run_dir / f"eval_{split}.json"  # a later `llmrec evaluate` of all users wins over training's
        if explicit.is_file():
            return metrics, read_json(explicit), explicit
        result = metrics.get(split)
        if not result:
            raise ConfigError(f"{where}: no '{split}' evaluation stored ({hint})")
        return metrics, result, where
    where = run_dir / f"eval_{split}_{targets}.json"
    if not where.is_file():
        raise ConfigError(f"{where}: no '{split}' evaluation of the {targets}-target users stored ({hint})")
    result = read_json(where)
    if not isinstance(result, dict) or result.get("targets") != targets:
        raise DataError(f"{where}: not an evaluation of the {targets}-target users (no 'targets': {targets!r})")
    return metrics, result, where


def _row(run_dir: Path, split: str, targets: str = "all") -> dict:
    info = read_run_info(run_dir)
    metrics, result, where = _stored(run_dir, split, targets)
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        raise DataError(f"{where}: '{split}' has no 'metrics' object (not written by the llmrec evaluator)")
    data = info.get("data")
    if not isinstance(data, dict) or not {"name", "fingerprint", "users", "items"} <= set(data):
        raise DataError(f"{run_dir / 'run.json'}: field 'data' lacks name/fingerprint/users/items")
    return {
        "run": str(run_dir),
        "kind": info["kind"],
        "model": info.get("model", "?"),
        "data": data,
        "protocol": evaluation_protocol(result),
        "scoring": result.get("scoring", ""),
        "num_users": result.get("num_users"),
        "users_digest": result.get("users_digest"),
        "metrics": {k: result["metrics"].get(k) for k in COLUMNS},
        "train_time_s": (metrics.get("train") or {}).get("train_time_s"),
        **_recipe(run_dir, info),
    }


def _recipe(run_dir: Path, info: dict) -> dict:
    """``{"seed", "recipe"}`` of a run from its ``config.yaml``: the recipe is the config without ``RUN_ONLY_KEYS``
    (canonical JSON), ``None`` when the run has no readable config (it is then a recipe of its own)."""
    import json

    path = run_dir / "config.yaml"
    if not path.is_file():
        return {"seed": None, "recipe": None}
    try:
        cfg = load_yaml(path)
    except ConfigError as e:
        raise DataError(str(e)) from None
    from llmrec.benchmark.trials import RUNTIME

    skip = RUN_ONLY_KEYS | set(RUNTIME)
    recipe = {k: v for k, v in {**_defaults(info["kind"]), **cfg}.items() if k not in skip}
    recipe["_run"] = (info["kind"], info.get("model"))
    return {"seed": cfg.get("seed"), "recipe": json.dumps(recipe, sort_keys=True, default=str)}


def _defaults(kind: str) -> dict:
    """The option defaults of the command that wrote a run of ``kind``: an option added after a run was trained
    takes its default, which is what the run did."""
    import dataclasses

    if kind == "ensemble":  # its config names its members: no option of it can be missing in a meaningful way
        return {}
    from llmrec.benchmark.suite import config_class

    return dataclasses.asdict(config_class(kind)(data="x", output_dir="x"))


def seed_groups(rows: list[dict]) -> list[dict]:
    """Mean ± std over the runs of each recipe that has two or more runs, best mean NDCG@10 first.

    Returns:
        ``[{"model", "runs": [names], "seeds": [...], "metrics": {name: {"mean", "std", "values"}}}]``.
    """
    import numpy as np

    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["recipe"] is not None:
            groups.setdefault(r["recipe"], []).append(r)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        stats = {}
        for key in SEED_COLUMNS:
            vals = [m["metrics"][key] for m in members]
            if all(isinstance(v, float) for v in vals):
                arr = np.asarray(vals, dtype=np.float64)
                stats[key] = {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)), "values": vals}
        runs = [m["label"] for m in members]
        out.append(
            {"model": members[0]["model"], "runs": runs, "seeds": [m["seed"] for m in members], "metrics": stats}
        )
    return sorted(out, key=lambda g: -g["metrics"].get("ndcg@10", {}).get("mean", 0.0))


def _seed_lines(groups: list[dict]) -> list[str]:
    if not groups:
        return []
    lines = ["", "Recipes run with several seeds (the same config.yaml but for the seed and how it ran): mean ± sample "
             "std (ddof=1) over the seeds.", "", "| model | runs | seeds | " + " | ".join(SEED_COLUMNS) + " |",
             "|" + "---|" * (3 + len(SEED_COLUMNS))]  # fmt: skip
    for g in groups:
        vals = [f"{m['mean']:.4f} ± {m['std']:.4f}" if (m := g["metrics"].get(k)) else "—" for k in SEED_COLUMNS]
        seeds = ", ".join(str(s) for s in g["seeds"])
        lines.append(f"| {g['model']} | {', '.join(g['runs'])} | {seeds} | " + " | ".join(vals) + " |")
    return lines


def _refuse_mixed(rows: list[dict], key, what: str) -> None:
    first = rows[0]
    for r in rows[1:]:
        if key(r) != key(first):
            raise ConfigError(f"{first['run']} and {r['run']} {what}: {key(first)} vs {key(r)}")


def collect(run_dirs: list[str], split: str = "test", targets: str = "all") -> list[dict]:
    """One row per run; refuses runs that are not comparable (see the module docstring)."""
    rows = [_row(Path(d), split, targets) for d in run_dirs]
    names = [Path(r["run"]).name for r in rows]
    for r, name in zip(rows, names):  # the directory name, or parent/name where two runs share a name (t000)
        r["label"] = name if names.count(name) == 1 else f"{Path(r['run']).parent.name}/{name}"
    _refuse_mixed(rows, lambda r: f"{r['data']['name']} ({r['data']['fingerprint'][:12]})",
                  "were trained on different prepared data sets")  # fmt: skip
    _refuse_mixed(rows, lambda r: r["protocol"], "were evaluated under different protocols")
    _refuse_mixed(rows, lambda r: r["num_users"], f"were evaluated on different numbers of {split} users")
    _refuse_mixed(rows, lambda r: r["users_digest"], f"were evaluated on different {split} users")
    return rows


def to_markdown(rows: list[dict], split: str, targets: str = "all", groups: list[dict] | None = None) -> str:
    head = ["model", "run", *COLUMNS, "train time (s)"]
    data = rows[0]["data"]
    who = "users" if targets == "all" else f"users whose target is a {targets} item"
    lines = [
        f"Data: {data['name']} ({data['users']} users, {data['items']} items, fingerprint {data['fingerprint'][:12]}). "
        f"Split: {split}, {rows[0]['num_users']} {who} evaluated. Protocol: {rows[0]['protocol']}.",
        "",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -(r["metrics"]["ndcg@10"] or 0)):
        vals = [f"{v:.4f}" if isinstance(v, float) else "—" for v in r["metrics"].values()]
        t = r["train_time_s"]
        lines.append(
            f"| {r['model']} | {r['label']} | " + " | ".join(vals) + f" | {f'{t:.0f}' if t is not None else '—'} |"
        )
    notes = [f"- {r['label']}: {r['scoring']}" for r in rows if r.get("scoring")]
    lines += _seed_lines(seed_groups(rows) if groups is None else groups)
    if notes:
        lines += ["", "Scoring (every other run: its model's own score of every item in the catalog):", *notes]
    if any("beam" in r.get("scoring", "") for r in rows):
        lines += ["", "AUC of a beam-scored run ranks every item outside its beams below them (tied last, or with text "
                  "fusion in the order of the text cosine), so it is not comparable with the AUC of a run that scores "
                  "the whole catalog with its model."]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['model']}\n{r['label']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows)), 3.6))
    for off, key in ((-0.2, "ndcg@10"), (0.2, "hr@10")):
        ax.bar(x + off, [r["metrics"][key] or 0 for r in rows], 0.4, label=key.upper())
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("metric (full ranking)")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str]) -> int:
    runs = []
    while argv and not argv[0].startswith("-"):
        runs.append(argv.pop(0))
    if runs:
        argv = ["--runs", *runs, *argv]
    cfg = parse_config(CompareConfig, argv, prog="llmrec compare", description=HELP)
    rows = collect(cfg.runs, cfg.split, cfg.targets)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = seed_groups(rows)
    md = to_markdown(rows, cfg.split, cfg.targets, groups)
    atomic_write_text(out / "compare.md", md)
    atomic_write_json(
        out / "compare.json",
        {
            "split": cfg.split,
            "targets": cfg.targets,
            "runs": [{k: v for k, v in r.items() if k != "recipe"} for r in rows],
            "recipes": groups,
        },
    )
    plot(rows, out / "compare.png")
    print(md)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return 0
