"""Text fusion (``--text_fusion``): the LM's item logits plus a weight times the items' text similarity to the history.

    score[b, i] = logit[b, i] + w * cos(text_i, sum of the unit texts of the last 5 items of history b)

A semantic-ID run adds the same term to its beam items' beam scores (the sum of their code log-probabilities);
the items outside the beams stay below every beam item and are ordered among themselves by the cosine
(``SemanticLLMRecommender.fuse``), so the fusion re-ranks the beam and never lifts an item into it.

The second term is ``llmrec baseline textknn``'s score (``llmrec.items.neighbors.history_similarity``), computed
from the run's ``item_text.safetensors``. It is what lets an atomic run rank an item by its text: a cold or newly
added item, whose row is only a neighbour's copy (``--cold_rows knn``), and a rare one. A ranking per user does not
change when a per-user constant is added, so adding the cosine to the logits ranks as adding it to the
log-softmax. With ``--text_fusion -1`` the weight is selected after training on the validation subsample (the
``eval_users`` users the loop validates on, never the test split): the ``FUSION_GRID`` value with the highest
NDCG@10 over all of them, ties to the smaller weight; it is saved in ``item_text.safetensors`` (``fusion``).
"""

from __future__ import annotations

from llmrec.selection import select_on_grid

FUSION_GRID = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)


def select_fusion(rec, valid_data, batch_size: int = 256) -> tuple[float, dict, list[dict]]:
    """``(the selected weight, the validation result with it, [{"text_fusion", "ndcg@10", "hr@10"} per grid value])``
    on ``valid_data``'s validation split; ``rec`` is an ``LLMRecommender`` (atomic or semantic) with item texts; its
    ``fusion`` is set to the selected weight, and the result's protocol says so (``rec.protocol_note``).

    The model runs once: the first grid value's pass keeps each batch's ``rec.score_parts`` (model scores and text
    similarity, ``2 * [B, N]`` float32 per batch), the other values only recombine them with ``rec.fuse``.
    """
    if rec.texts is None:
        raise ValueError("text_fusion: the run has no item texts (item_text.safetensors)")
    best, result, table = select_on_grid(
        lambda histories, _: rec.score_parts(histories, similarity=True),
        lambda parts, w: rec.fuse(parts[0], parts[1], w),
        FUSION_GRID, valid_data, mask_history=True, batch_size=batch_size,
    )  # fmt: skip
    table = [{"text_fusion": r["value"], "ndcg@10": r["ndcg@10"], "hr@10": r["hr@10"]} for r in table]
    rec.fusion = best
    note = rec.protocol_note
    return rec.fusion, {**result, "protocol": f"{result['protocol']}; {note}", "scoring": note}, table
