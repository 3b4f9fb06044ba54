"""`llmrec compare RUN_DIR ... --out DIR`: one report of LLM runs and baselines on the same data set.

Reads each run's ``run.json`` and ``metrics.json`` (the ``test`` entry written by the shared evaluator) and writes
``DIR/compare.md`` (Markdown table), ``DIR/compare.json`` and ``DIR/compare.png`` (NDCG@10 / HR@10 bars).
Runs evaluated on different data sets or protocols are refused: their numbers are not comparable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.config import ConfigError, atomic_write_json, atomic_write_text, parse_config

HELP = "Compare run directories on the same data set: Markdown table, JSON and a PNG bar chart."
COLUMNS = ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr", "coverage@10")


@dataclass
class CompareConfig:
    runs: list[str] = field(default_factory=list, metadata={"help": "Run directories (also positional)."})
    out: str = field(default="compare", metadata={"help": "Output directory for compare.md/.json/.png."})
    split: str = field(default="test", metadata={"help": "Which stored evaluation to compare (test or valid_best)."})

    def __post_init__(self):
        if len(self.runs) < 1:
            raise ConfigError("runs: give at least one run directory")
        if self.split not in ("test", "valid_best"):
            raise ConfigError(f"split: expected 'test' or 'valid_best', got {self.split!r}")


def collect(run_dirs: list[str], split: str = "test") -> list[dict]:
    rows = []
    for d in run_dirs:
        d = Path(d)
        for name in ("run.json", "metrics.json"):
            if not (d / name).is_file():
                raise ConfigError(f"{d}: {name} is missing (is it a finished llmrec run?)")
        info, metrics = json.loads((d / "run.json").read_text()), json.loads((d / "metrics.json").read_text())
        result = metrics.get(split)
        if not result:
            raise ConfigError(
                f"{d / 'metrics.json'}: no '{split}' evaluation stored (run `llmrec evaluate --run {d}`)"
            )
        m = result.get("metrics", result)
        rows.append(
            {
                "run": str(d),
                "kind": info.get("kind"),
                "model": info.get("model") or info.get("kind"),
                "data": info.get("data"),
                "protocol": result.get("protocol", ""),
                "num_users": result.get("num_users"),
                "metrics": {k: m.get(k) for k in COLUMNS},
                "train_time_s": metrics.get("train_time_s", metrics.get("wall_time_s")),
            }
        )
    datas = {r["data"] for r in rows}
    if len(datas) > 1:
        raise ConfigError(f"runs were trained on different prepared data sets: {sorted(map(str, datas))}")
    protocols = {r["protocol"] for r in rows}
    if len(protocols) > 1:
        raise ConfigError(f"runs were evaluated under different protocols: {sorted(protocols)}")
    return rows


def to_markdown(rows: list[dict], split: str) -> str:
    head = ["model", "run", *COLUMNS, "train time (s)"]
    lines = [f"Split: {split}. Protocol: {rows[0]['protocol']}. Users: {rows[0]['num_users']}.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -(r["metrics"]["ndcg@10"] or 0)):
        vals = [f"{v:.4f}" if isinstance(v, float) else "—" for v in r["metrics"].values()]
        t = r["train_time_s"]
        lines.append(
            f"| {r['model']} | {Path(r['run']).name} | " + " | ".join(vals) + f" | {t if t is not None else '—'} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{r['model']}\n{Path(r['run']).name}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows)), 3.6))
    for off, key in ((-0.2, "ndcg@10"), (0.2, "hr@10")):
        ax.bar(x + off, [r["metrics"][key] or 0 for r in rows], 0.4, label=key.upper())
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("test metric (full ranking)")
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
    rows = collect(cfg.runs, cfg.split)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rows, cfg.split)
    atomic_write_text(out / "compare.md", md)
    atomic_write_json(out / "compare.json", {"split": cfg.split, "runs": rows})
    plot(rows, out / "compare.png")
    print(md)
    print(f"wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}")
    return 0
