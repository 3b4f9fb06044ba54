"""Which neighbour rule gives an atomic cold-start run's cold items useful rows (validation cold targets only).

    python experiments/cold_knn_probe.py --run RUN --data PREPARED_COLD

Loads an atomic LLM run trained on a ``--cold_items`` data set and, for each setting, rewrites every cold item's
rows as the similarity-softmax-weighted mean of the rows of its ``k`` nearest warm items by MiniLM text cosine (``k =
1``: the nearest item's row, ``llmrec.llm.coldrows.knn_cold_rows``), then evaluates the validation users whose target
is cold. The run as saved and ``textknn``'s score are printed for reference. Nothing in the run directory changes.
"""

from __future__ import annotations

import argparse

import torch

from llmrec.baselines.textknn import text_encoder_spec
from llmrec.data import load_prepared
from llmrec.evaluation import evaluate
from llmrec.items.neighbors import history_similarity, unit_rows
from llmrec.items.text import item_text_embeddings
from llmrec.llm.coldrows import row_sets
from llmrec.llm.recommender import load_llm_run

SETTINGS = ((1, 1.0), (3, 0.01), (5, 0.05), (20, 0.05), (20, 0.02), (50, 0.05))  # (k, temperature)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--num_threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.num_threads)
    rec, data = load_llm_run(args.run), load_prepared(args.data)
    spec = text_encoder_spec("minilm")
    vec = unit_rows(item_text_embeddings(data.catalog.titles, data.catalog.texts, data.fingerprint, spec).vectors)
    cold = torch.tensor(sorted(data.cold_items), dtype=torch.long)
    warm = torch.ones(data.num_items, dtype=torch.bool)
    warm[cold] = False
    widx = warm.nonzero().squeeze(1)
    sim = vec[cold] @ vec[widx].T  # [C, W]
    sets = row_sets(rec.item_lm)
    saved = {name: rows.detach().clone() for name, rows in sets.items()}

    def report(tag, fn):
        m = evaluate(fn, data, "valid", targets="cold")["metrics"]
        print(f"{tag}: valid cold NDCG@10 {m['ndcg@10']:.4f} HR@10 {m['hr@10']:.4f} MRR {m['mrr']:.4f}", flush=True)

    report("textknn (last 5)", lambda h: history_similarity(vec, h))
    report("run as saved", rec.score)
    for k, temp in SETTINGS:
        top = sim.topk(k, dim=1)
        weights = torch.softmax(top.values / temp, dim=1).unsqueeze(2)  # [C, k, 1]
        with torch.no_grad():
            for name, rows in sets.items():
                rows[cold] = (weights * saved[name][widx][top.indices]).sum(1).to(rows.dtype)
        report(f"k={k} temperature={temp}", rec.score)


if __name__ == "__main__":
    main()
