"""The report JSON rendered as Markdown (``report.md``) and a PNG chart (``report.png``); numbers are never retyped.

``VIEWS`` are the renderings a Markdown file can embed (``llmrec.benchmark.blocks``): ``summary``, one compact test
table over every data set and the bootstrap verdicts (the README's results table), and ``datasets``, the data set
sections of ``report.md`` one heading level down (docs/results.md).
"""

from __future__ import annotations

from pathlib import Path

COLUMNS = ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr", "f1@10", "auc")  # f1@20 in the JSON only
F1_NOTE = (
    "F1@K: with one target per user, precision@K = HR@K / K and recall@K = HR@K, so F1@K = 2 HR@K / (K + 1): it "
    "orders models exactly as HR@K does. AUC: per user, the fraction of the candidate items (the whole catalog less "
    "the masked history) ranked below the target, ties counted against it, averaged over users."
)


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _pm(stat: dict | None) -> str:
    if not stat:
        return "—"
    std = stat["std"]
    return f"{stat['mean']:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def _signed(x: float) -> str:
    return f"{x:+.4f}".replace("-", "−")


def _params(entry: dict) -> str:
    sel = entry["selected"]
    shown = ", ".join(f"{k}={v}" for k, v in sel["params"].items()) or "base config"
    return f"{sel['trial']}: {shown}"


def _trials(entry: dict) -> str:
    t = entry["trials"]
    if not entry["tuned"]:
        return f"1 + {t['prior']} earlier (fixed recipe)" if t["prior"] else "1 (untuned)"
    prior = f" + {t['prior']} earlier" if t["prior"] else ""
    return f"{t['suite']}{prior} ({t['search']})"


def _bootstrap_lines(boot: dict | None, metric: str) -> list[str]:
    if boot is None:
        return ["No paired bootstrap: the suite needs at least one LLM and one baseline on this data set."]
    parts = []
    for key in (boot["verdict_metric"], boot["verdict_metric"].replace("ndcg", "hr")):
        b = boot[key]
        parts.append(f"{key.upper()} {_signed(b['diff'])} [{_signed(b['low'])}, {_signed(b['high'])}], "
                     f"P(LLM not better) {b['p_b_not_better']:.3f}")  # fmt: skip
    users = boot["pairs"] // max(boot["seeds"], 1)
    return [
        f"**Best LLM vs best baseline** (chosen by {boot['chosen_by']}): `{boot['llm']}` − `{boot['baseline']}`, "
        f"paired bootstrap over {boot['seeds']} seed(s) × {users:,} users ({boot['pairs']:,} pairs, "
        f"{boot['num_samples']} resamples, 95% intervals): " + "; ".join(parts) + ".",
        "",
        f"Verdict on {boot['verdict_metric'].upper()}: **{boot['verdict']}** (win or loss needs the interval to exclude "
        "0 and the gap of the seed means to exceed the larger seed std; otherwise tie).",
    ]


def _target_lines(block: dict) -> list[str]:
    """Cold-start data: test NDCG@10 / HR@10 of the users whose target is a warm / a cold item, per model."""
    entries = [e for e in block["models"] if e.get("targets")]
    if not entries:
        return []
    t = entries[0]["targets"]
    head = ["model"] + [f"{s} {c}" for s in ("warm", "cold") for c in ("NDCG@10", "HR@10")]
    lines = ["", f"Test by target item (warm: {t['warm']['users']:,} users, cold: {t['cold']['users']:,} users whose "
             "test target is a cold item, never seen in training):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for e in entries:
        row = [e["name"]] + [
            _pm(e["targets"][s]["test"].get(c)) for s in ("warm", "cold") for c in ("ndcg@10", "hr@10")
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _dataset_lines(block: dict, metric: str, level: int = 2) -> list[str]:
    head = ["model", "kind", "trials", "selected (on validation)", f"valid {metric}"]
    head += [f"test {c.upper()}" for c in COLUMNS] + ["stopped by"]
    lines = [
        f"{'#' * level} {block['name']}: {block['users']:,} users, {block['items']:,} items "
        f"(fingerprint {block['fingerprint'][:12]})",
        "",
        f"Test protocol: {block['test_protocol']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for e in block["models"]:
        stopped = sorted({r["stopped_by"] for r in e["seeds"]})
        row = [e["name"], e["kind"], _trials(e), _params(e), _pm(e["valid"].get(metric))]
        row += [_pm(e["test"].get(c)) for c in COLUMNS] + [", ".join(stopped)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", F1_NOTE]
    lines += _target_lines(block)
    lines += ["", *_bootstrap_lines(block["bootstrap"], metric), ""]
    flagged = [f"{e['name']}/{t}: {why}" for e in block["models"] for t, why in e["flagged"].items()]
    lines.append("Flagged trials (left out of selection): " + ("; ".join(flagged) if flagged else "none") + ".")
    lines += ["", "Seed runs (test NDCG@10 / HR@10):", ""]
    for e in block["models"]:
        runs = ", ".join(f"seed {r['seed']} `{r['run']}` {_num(r['test'].get('ndcg@10'))} / "
                         f"{_num(r['test'].get('hr@10'))}" for r in e["seeds"])  # fmt: skip
        lines.append(f"- {e['name']}: {runs}")
    return lines + [""]


def _provenance(report: dict) -> str:
    prov, m = report["provenance"], report["provenance"]["machine"]
    commit = (prov["git_commit"] or "unknown")[:12] + (" with uncommitted changes" if prov["git_dirty"] else "")
    gpus = ", ".join(m["gpus"]) or "none"
    text = (
        f"Suite `{report['suite']['path']}`; made {prov['date']} with llmrec {prov['llmrec_version']} (commit "
        f"{commit}) on {m['cpu']} ({m['cores']} cores, {m['usable_cores']} usable), GPU: {gpus}; Python "
        f"{m['python']}, torch {m['torch']}."
    )
    rec = report.get("records") or {}
    if rec.get("restored"):
        commits = ", ".join(c[:12] for c in rec["commits"])
        text += (f" {rec['restored']} of its {rec['trials']} trials ran in earlier calls and were restored from the "
                 f"trial records in `{rec['dir']}` (exported at commit(s) {commits}; on {'; '.join(rec['machines'])}).")  # fmt: skip
    if rec.get("trial_machines"):
        shown = "; ".join(f"{name}: {n}" for name, n in rec["trial_machines"].items())
        text += f" Machines the trials ran on (from each run.json, else its record): {shown}."
    return text


def to_markdown(report: dict) -> str:
    """The report as Markdown: provenance, protocol, one table per data set, the bootstrap and its verdict."""
    proto = report["protocol"]
    lines = [f"# Benchmark `{report['suite']['name']}`", ""]
    if report["suite"]["description"]:
        lines += [report["suite"]["description"].strip(), ""]
    lines += [
        _provenance(report),
        "",
        "Protocol:",
        *[f"- {k}: {v}" for k, v in proto.items()],
        "",
    ]
    for block in report["datasets"]:
        lines += _dataset_lines(block, report["metric"])
    return "\n".join(lines)


SUMMARY_COLUMNS = ("ndcg@10", "hr@10", "mrr", "auc")


def summary_markdown(report: dict) -> str:
    """Every data set's test numbers (mean ± std over seeds) in one table, then each bootstrap verdict."""
    seeds = ", ".join(str(s) for s in report["protocol"]["seeds"])
    head = ["data", "model", "kind", "tuning trials"] + [f"test {c.upper()}" for c in SUMMARY_COLUMNS]
    lines = [f"Benchmark `{report['suite']['name']}`: test split, every user, mean ± std over seeds {seeds}; "
             f"configs selected on the full validation split. {_provenance(report)}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip
    for block in report["datasets"]:
        for e in block["models"]:
            row = [block["name"], e["name"], e["kind"], _trials(e)] + [_pm(e["test"].get(c)) for c in SUMMARY_COLUMNS]
            lines.append("| " + " | ".join(row) + " |")
    for block in report["datasets"]:
        boot = block["bootstrap"]
        if boot is None:
            continue
        key = boot["verdict_metric"]
        b = boot[key]
        lines += ["", f"{block['name']}: best LLM `{boot['llm']}` − best baseline `{boot['baseline']}` (both chosen on "
                  f"validation), test {key.upper()} {_signed(b['diff'])}, 95% interval [{_signed(b['low'])}, "
                  f"{_signed(b['high'])}] (paired bootstrap over {boot['seeds']} seed(s) × "
                  f"{boot['pairs'] // max(boot['seeds'], 1):,} users): "
                  f"**{boot['verdict']}**."]  # fmt: skip
    return "\n".join(lines) + "\n"


def datasets_markdown(report: dict) -> str:
    """The data set sections of ``to_markdown`` (table, bootstrap, seed runs) under ``###`` headings."""
    lines = [_provenance(report), ""]
    for block in report["datasets"]:
        lines += _dataset_lines(block, report["metric"], level=3)
    return "\n".join(lines)


# view name (in a Markdown block's begin marker) -> rendering of the report JSON
VIEWS = {"summary": summary_markdown, "datasets": datasets_markdown}


def plot(report: dict, path: Path) -> None:
    """Bars of test NDCG@10 and HR@10 (mean over seeds, std as error bars), one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    blocks = report["datasets"]
    fig, axes = plt.subplots(1, len(blocks), figsize=(max(5, 1.3 * max(len(b["models"]) for b in blocks)) * len(blocks),
                                                      3.8), squeeze=False)  # fmt: skip
    for ax, block in zip(axes[0], blocks):
        models = block["models"]
        x = np.arange(len(models))
        for off, key in ((-0.2, "ndcg@10"), (0.2, "hr@10")):
            means = [e["test"][key]["mean"] for e in models]
            stds = [e["test"][key]["std"] or 0.0 for e in models]
            ax.bar(x + off, means, 0.4, yerr=stds, capsize=3, label=key.upper())
        ax.set_xticks(x, [e["name"] for e in models], fontsize=8, rotation=20)
        ax.set_title(f"{block['name']} (test, mean ± std over seeds)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
