"""Probe: give each untrained item of a semantic-ID run the beam score of the trained item it sits beside.

    OMP_NUM_THREADS=1 python experiments/sid_sibling_probe.py --run RUN --data prepared/beauty_cold \
        --split test --targets cold

With ``--sid_cold_codes neighbor`` a cold item's code path is that of its nearest trained item (by text cosine) with
a new disambiguation code. That last code under that prefix was never a target, so beam search rarely reaches the
cold leaf and text fusion (which only re-ranks beam items) cannot lift it. This probe scores the run as
``llmrec evaluate`` does, except that every untrained item whose nearest trained item is in the beam takes that
item's beam score (if higher than its own) before the fusion with the run's selected weight; the text cosine then
orders the pair. It is the semantic-ID analogue of the atomic LLM's ``--cold_rows knn`` (a cold row copies its
nearest warm item's row). Nothing is selected here: the fusion weight is the run's (chosen on validation).
"""

from __future__ import annotations

import argparse

import torch

from llmrec.decoding import BEAM_FLOOR
from llmrec.evaluation import evaluate
from llmrec.files import atomic_write_json
from llmrec.items.neighbors import nearest_items
from llmrec.recommenders import load_recommender
from llmrec.runs import load_run_data


def sibling_map(rec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(untrained item ids [M], their nearest trained item [M])``, the pairs with a text on both sides."""
    texts = rec.texts
    cold = torch.nonzero(~texts.trained).flatten()
    near = nearest_items(texts.vectors, texts.trained, texts.vectors[cold], 1)[:, 0]
    keep = near >= 0
    return cold[keep], near[keep]


def sibling_scorer(rec):
    """``score(histories) -> [B, N]``: the run's fused beam scores with the siblings' beam scores shared."""
    cold, near = sibling_map(rec)

    def score(histories):
        base, sim = rec.score_parts(histories, similarity=True)
        borrowed = base[:, near]  # [B, M] the siblings' beam scores (BEAM_FLOOR outside the beams)
        base[:, cold] = torch.where(borrowed > BEAM_FLOOR, torch.maximum(borrowed, base[:, cold]), base[:, cold])
        return rec.fuse(base, sim, rec.fusion)

    return score, len(cold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", default="")
    ap.add_argument("--split", default="test", choices=("valid", "test"))
    ap.add_argument("--targets", default="cold", choices=("all", "warm", "cold"))
    ap.add_argument("--max_users", type=int, default=None)
    ap.add_argument("--output", default="", help="write the evaluation JSON here")
    args = ap.parse_args()
    data = load_run_data(args.run, args.data or None)
    rec = load_recommender(args.run)
    if rec.texts is None or not hasattr(rec, "beam_width"):
        raise SystemExit(f"{args.run}: needs a semantic-ID run with item_text.safetensors")
    score, pairs = sibling_scorer(rec)
    with torch.inference_mode():
        result = evaluate(score, data, args.split, targets=args.targets, max_users=args.max_users, progress=True,
                          protocol_note=rec.protocol_note + "; untrained items share their nearest trained item's "
                          "beam score (experiments/sid_sibling_probe.py)")  # fmt: skip
    result["sibling_pairs"] = pairs
    m = result["metrics"]
    print(
        f"{args.split} {args.targets}: {result['num_users']} users, {pairs} sibling pairs, "
        f"ndcg@10 {m['ndcg@10']:.4f} hr@10 {m['hr@10']:.4f} mrr {m['mrr']:.4f}"
    )
    if args.output:
        atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
