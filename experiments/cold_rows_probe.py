"""Probe of an atomic cold-start run (validation cold targets only): the projected cold rows against the warm rows,
and whether stretching them away from the warm mean (x scale) ranks cold items. A diagnostic, not a model change.

    python experiments/cold_rows_probe.py RUN_DIR
"""

import sys

import torch
from safetensors import safe_open

from llmrec.evaluation import evaluate
from llmrec.llm.recommender import load_llm_run
from llmrec.runs import load_run_data


def main() -> None:
    torch.set_num_threads(1)
    run = sys.argv[1]
    with safe_open(f"{run}/text_projector.safetensors", "pt") as f:
        print(f.metadata())
    rec = load_llm_run(run)
    data = load_run_data(run)
    cold = torch.tensor(sorted(data.cold_items))
    rows = rec.item_lm.item_weights().detach()  # a view of the merged (tied) embedding: edits change the model
    warm = torch.ones(len(rows), dtype=torch.bool)
    warm[cold] = False
    nw, nc = rows[warm].norm(dim=1), rows[cold].norm(dim=1)
    print(f"row norms: warm mean {nw.mean():.3f} sd {nw.std():.3f}; cold mean {nc.mean():.3f} sd {nc.std():.3f}")
    centre, projected = rows[warm].mean(0), rows[cold].clone()
    for scale in (1.0, 1.5, 2.0, 3.0):
        with torch.no_grad():
            rows[cold] = centre + (projected - centre) * scale
        m = evaluate(rec.score, data, "valid", targets="cold")["metrics"]
        print(f"scale {scale}: valid cold NDCG@10 {m['ndcg@10']:.4f} HR@10 {m['hr@10']:.4f} MRR {m['mrr']:.4f}")


if __name__ == "__main__":
    main()
