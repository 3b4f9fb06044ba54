"""The LLM's cold-start tools on an ID baseline: cold rows from the nearest warm item's text, and text fusion.

    python experiments/baseline_knn_rows.py --run SASREC_RUN --data PREPARED_COLD [--select_users 3000] \
        [--versus LLM_RUN --bootstrap 1000] [--cold_neighbors K --cold_gap G]

A control for the atomic LLM's ``--cold_rows knn`` and ``--text_fusion`` (docs/results.md, "Cold-start items"):
whatever they do for the LLM they may do for SASRec / GRU4Rec / BERT4Rec too, which are otherwise left with the mean
warm row. Loads a trained baseline run on a ``--cold_items`` data set, rewrites every cold item's row (and per-item
bias) as the row of its nearest warm item by MiniLM text cosine (``llmrec.items.neighbors.nearest_rows``, k = 1),
selects the fusion weight from ``llmrec.llm.fusion.FUSION_GRID`` on the same seeded validation subsample the LLM
loop uses (``--select_users``, seed 0; all of its targets), then prints validation and test metrics on cold and
warm targets (all targets on a data set without cold items: then only the fusion acts) for weight 0 and the
selected one; with ``--versus``, the paired bootstrap of that run (loaded as
``llmrec evaluate`` loads it) minus this control on the test split's cold and warm targets. Nothing in the run
directories changes. With ``--cold_neighbors K`` (> 1), after the weight is selected, cold items score as the best of
their K nearest warm items less G per unit of cosine (``llmrec.items.neighbors.ColdNeighbors``, what
``llmrec evaluate --cold_neighbors K --cold_gap G`` does to an LLM run), in the reported metrics and, applied to the
``--versus`` run too, in the bootstrap.
"""

from __future__ import annotations

import argparse
import json

import torch

from llmrec.baselines.textknn import text_encoder_spec
from llmrec.baselines.train import load_baseline_run
from llmrec.data import load_prepared
from llmrec.evaluation import evaluate, paired_bootstrap
from llmrec.items.neighbors import ColdNeighbors, ItemTexts, history_similarity, nearest_rows, unit_rows
from llmrec.items.text import item_text_embeddings
from llmrec.llm.fusion import FUSION_GRID
from llmrec.llm.recommender import load_llm_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--select_users", type=int, default=3000)
    ap.add_argument("--versus", default=None, help="an LLM run: paired bootstrap of it minus this control (test)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--num_threads", type=int, default=1)
    ap.add_argument("--cold_neighbors", type=int, default=1, help="> 1: the best-neighbour rule after selection")
    ap.add_argument("--cold_gap", type=float, default=10.0)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    rec, data = load_baseline_run(args.run), load_prepared(args.data)
    spec = text_encoder_spec("minilm")
    vec = unit_rows(item_text_embeddings(data.catalog.titles, data.catalog.texts, data.fingerprint, spec).vectors)
    cold = torch.tensor(sorted(data.cold_items), dtype=torch.long)
    trained = torch.ones(data.num_items, dtype=torch.bool)
    trained[cold] = False
    with torch.no_grad():
        for p in rec.model.item_row_params():
            p[cold] = nearest_rows(p[: data.num_items].detach(), vec, trained, vec[cold], 1)

    table = (
        ColdNeighbors.of(ItemTexts(vec, trained, "minilm"), args.cold_neighbors) if args.cold_neighbors > 1 else None
    )

    def scorer(w, rule=False):
        base = (lambda h: table.apply(rec.score(h), args.cold_gap)) if (rule and table is not None) else rec.score
        return (lambda h: base(h) + w * history_similarity(vec, h)) if w else base

    pick = data.subsample(args.select_users, 0)
    valid = [
        {"text_fusion": w, "ndcg@10": evaluate(scorer(w), pick, "valid")["metrics"]["ndcg@10"]} for w in FUSION_GRID
    ]
    best = max(valid, key=lambda r: (r["ndcg@10"], -r["text_fusion"]))["text_fusion"]
    out = {"run": args.run, "select_users": args.select_users, "valid_selection": valid, "selected": best,
           "cold_neighbors": args.cold_neighbors, "cold_gap": args.cold_gap}  # fmt: skip
    for w in sorted({0.0, best}):
        for split in ("valid", "test"):
            for targets in ("cold", "warm") if data.cold_items else ("all",):
                m = evaluate(scorer(w, rule=True), data, split, targets=targets)["metrics"]
                out[f"{w}/{split}/{targets}"] = {k: round(m[k], 4) for k in ("ndcg@10", "hr@10")}
    if args.versus:
        other = load_llm_run(args.versus)
        other.cold_neighbors, other.cold_gap = args.cold_neighbors, args.cold_gap
        for targets in ("cold", "warm") if data.cold_items else ("all",):
            ranks = [evaluate(f, data, "test", targets=targets, return_ranks=True)["ranks"]
                     for f in (scorer(best, rule=True), other.score)]  # fmt: skip
            out[f"bootstrap/{targets}: {args.versus} minus control"] = paired_bootstrap(
                *ranks, num_samples=args.bootstrap
            )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
