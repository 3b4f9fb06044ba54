"""Issue #19's cold-start table: NDCG@10 / HR@10 on the cold and the warm targets of one split, for several runs and
settings, each scored once over all users, with paired bootstraps.

    python experiments/cold_table.py --data PREPARED_COLD --cache DIR [--split test] SPEC ... \
        [--versus A:B ...] [--bootstrap 1000]

``SPEC`` is ``NAME=RUN`` with optional modifiers ``@MOD``:

- ``@k3g10``: untrained items score as the best of their 3 nearest trained items less 10 per unit of cosine
  (``llmrec.items.neighbors.ColdNeighbors``), for an atomic LLM run as ``llmrec evaluate --cold_neighbors 3
  --cold_gap 10`` does, before its text fusion;
- ``@rows`` (baselines): each cold item's rows (and bias) rewritten as its nearest warm item's by MiniLM text cosine,
  as ``experiments/baseline_knn_rows.py`` does;
- ``@f10`` (baselines): plus 10 times the ``textknn`` score (an LLM run keeps the fusion weight it selected);
- ``@t0.5``: plus 0.5 times the score of the ``--tower`` run (e.g. a ``texttower`` run), added last, as
  ``experiments/run_fusion_probe.py`` adds it (select the weight there or with ``--split valid`` here).

An LLM run is run once for all its specs (its logits and text cosines kept, ~2 GB for Beauty's test split); each
spec's test ranks are kept in ``--cache`` as ``NAME.npy`` and reused when the file is there (delete it after
changing a spec). ``--versus A:B`` prints the paired bootstrap B minus A over the cold and the warm targets
(``llmrec.evaluation.paired_bootstrap``, 1,000 resamples of the users). Prints a Markdown table. Choose the settings
on ``--split valid``; report the test once.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import torch
from cold_fusion_probe import target_metrics  # experiments/ is the script's sys.path[0]

from llmrec.baselines.textknn import text_encoder_spec
from llmrec.data import load_prepared
from llmrec.evaluation import evaluate, paired_bootstrap
from llmrec.items.neighbors import ColdNeighbors, ItemTexts, history_similarity, nearest_rows, unit_rows
from llmrec.items.text import item_text_embeddings
from llmrec.recommenders import load_recommender


def parse_spec(spec: str) -> tuple[str, str, dict]:
    """``NAME=RUN@MOD...`` -> ``(name, run, {"k", "gap", "rows", "fusion", "tower"})``."""
    name, _, rest = spec.partition("=")
    run, *mods = rest.split("@")
    out = {"k": 1, "gap": 0.0, "rows": False, "fusion": 0.0, "tower": 0.0}
    for mod in mods:
        if m := re.fullmatch(r"k(\d+)g([\d.]+)", mod):
            out["k"], out["gap"] = int(m[1]), float(m[2])
        elif mod == "rows":
            out["rows"] = True
        elif m := re.fullmatch(r"f([\d.]+)", mod):
            out["fusion"] = float(m[1])
        elif m := re.fullmatch(r"t([\d.]+)", mod):
            out["tower"] = float(m[1])
        else:
            raise SystemExit(f"{spec}: unknown modifier @{mod} (k<K>g<G>, rows, f<W>, t<W>)")
    if not name or not run:
        raise SystemExit(f"{spec}: expected NAME=RUN[@MOD...]")
    return name, run, out


def catalog_texts(data) -> ItemTexts:
    """The data set's unit MiniLM text embeddings, cold items marked untrained."""
    spec = text_encoder_spec("minilm")
    vec = unit_rows(item_text_embeddings(data.catalog.titles, data.catalog.texts, data.fingerprint, spec).vectors)
    trained = torch.ones(data.num_items, dtype=torch.bool)
    trained[sorted(data.cold_items)] = False
    return ItemTexts(vec, trained, "minilm")


def llm_ranks(rec, data, split, mods_by_name: dict, tower=None) -> dict:
    """One model pass of an LLM run; ``{name: ranks}`` for each of its specs (see the module docstring)."""
    parts, rec.cold_neighbors = [], 1  # the raw logits; each spec applies its own rule
    need_tower = tower is not None and any(m["tower"] for m in mods_by_name.values())

    def first(histories):
        base, sim = rec.score_parts(histories, similarity=True)
        parts.append((base, sim, tower.score(histories) if need_tower else None))
        return base

    evaluate(first, data, split, mask_history=True)
    out = {}
    for name, mods in mods_by_name.items():
        table = ColdNeighbors.of(rec.texts, mods["k"]) if mods["k"] > 1 else None
        calls = iter(parts)

        def score(histories, calls=calls, table=table, gap=mods["gap"], w=mods["tower"]):
            base, sim, extra = next(calls)
            out = rec.fuse(table.apply(base, gap) if table is not None else base, sim, rec.fusion)
            return out + w * extra if w else out

        out[name] = evaluate(score, data, split, mask_history=True, return_ranks=True)["ranks"]
    return out


def baseline_ranks(rec, data, split, mods: dict, texts: ItemTexts, tower=None):
    """Ranks of a baseline run with the ``@rows``, ``@f``, ``@k..g..``, ``@t`` modifiers."""
    cold = torch.tensor(sorted(data.cold_items), dtype=torch.long)
    if mods["rows"]:
        with torch.no_grad():
            for p in rec.model.item_row_params():
                p[cold] = nearest_rows(p[: data.num_items].detach(), texts.vectors, texts.trained, texts.vectors[cold])
    table = ColdNeighbors.of(texts, mods["k"]) if mods["k"] > 1 else None

    def score(histories):
        s = rec.score(histories)
        s = table.apply(s, mods["gap"]) if table is not None else s
        s = s + mods["fusion"] * history_similarity(texts.vectors, histories) if mods["fusion"] else s
        return s + mods["tower"] * tower.score(histories) if mods["tower"] else s

    return evaluate(score, data, split, mask_history=True, return_ranks=True)["ranks"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--cache", required=True, help="directory for each spec's ranks (NAME.npy)")
    ap.add_argument("--split", default="test", choices=["valid", "test"])
    ap.add_argument("--versus", action="append", default=[], help="A:B, the bootstrap of B minus A")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--tower", default="", help="the run that @t<W> adds (W times its scores)")
    ap.add_argument("--num_threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    data, cache = load_prepared(args.data), Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    specs = [parse_spec(s) for s in args.specs]
    if any(m["tower"] for *_, m in specs) and not args.tower:
        raise SystemExit("@t<W> needs --tower RUN")
    tower = load_recommender(args.tower) if args.tower else None
    texts = catalog_texts(data) if any(m["rows"] or m["fusion"] or m["k"] > 1 for *_, m in specs) else None
    ranks = {n: np.load(cache / f"{n}.npy") for n, _, _ in specs if (cache / f"{n}.npy").is_file()}
    for run in dict.fromkeys(r for n, r, _ in specs if n not in ranks):
        todo = {n: m for n, r, m in specs if r == run and n not in ranks}
        rec = load_recommender(run)
        with torch.inference_mode():
            if hasattr(rec, "score_parts") and not hasattr(rec, "beam_width"):  # an atomic LLM run
                got = llm_ranks(rec, data, args.split, todo, tower)
            else:
                got = {n: baseline_ranks(load_recommender(run), data, args.split, m, texts, tower)
                       for n, m in todo.items()}  # fmt: skip
        for name, r in got.items():
            np.save(cache / f"{name}.npy", np.asarray(r))
            ranks[name] = np.asarray(r)
        print(f"scored {run}: {', '.join(got)}", flush=True)
    _, target_items = data.split(args.split)
    is_cold = np.isin(np.asarray(target_items), sorted(data.cold_items))
    print(f"\n{args.split}: {int(is_cold.sum())} of {len(is_cold)} users have a cold target\n")
    print("| spec | all NDCG@10 / HR@10 | cold targets NDCG@10 / HR@10 | warm targets NDCG@10 / HR@10 |")
    print("|---|---|---|---|")
    for name, run, _ in specs:
        m = target_metrics(ranks[name], is_cold)
        print(
            f"| {name} (`{run}`) | "
            + " | ".join(f"{m[t][0]:.4f} / {m[t][1]:.4f}" for t in ("all", "cold", "warm"))
            + " |"
        )
    for pair in args.versus:
        a, b = pair.split(":")
        for targets, keep in (("cold", is_cold), ("warm", ~is_cold)):
            boot = paired_bootstrap(ranks[a][keep], ranks[b][keep], num_samples=args.bootstrap)
            print(f"bootstrap {targets}: {b} minus {a}: {json.dumps(boot)}")


if __name__ == "__main__":
    main()
