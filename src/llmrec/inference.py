"""The one inference interface of every model, and the one batched top-k with exclusion.

Protocol: a *recommender* is any object with

    name: str                                        # display name (e.g. "sasrec:sasrec_beauty")
    catalog: llmrec.data.Catalog                     # the items it can recommend, internal ids 0..N-1
    score(histories: list[list[int]]) -> Tensor      # [B, N] float, higher = more likely next; no masking

The LLM run, SASRec, GRU4Rec, BERT4Rec and Pop all satisfy it (``llmrec.recommenders.load_recommender``). The
evaluator, ``llmrec recommend``, ``llmrec compare`` and the HTTP service use nothing else. ``mask_items`` and
``top_k`` are the single implementation of "never return these items" and "the best k" that all of them share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Recommender(Protocol):
    name: str

    @property
    def catalog(self): ...

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor: ...


# Optional attribute of a recommender: ``protocol_note: str``, how its scores cover the catalog when they do not
# rank every item (a semantic-ID beam search); callers pass it to ``llmrec.evaluation.evaluate(protocol_note=...)``.
#
# Optional method: ``add_items(raw_ids: Sequence[str], titles: Sequence[str], texts: Sequence[str]) -> list[int]``
# appends the items to ``catalog`` (``Catalog.extended``: an empty, repeated or already known raw id raises
# ``llmrec.errors.DataError`` and changes nothing), makes ``score`` (and ``generate``, ``num_items``) cover them at
# once, and returns their new internal ids, consecutive from the old number of items. How a model scores an item
# it was never trained on: the atomic LLM maps the item's text to rows with the run's text projector
# (``llmrec.llm.additems``), a semantic-ID LLM gives it a code path from its text (a new trie leaf), TextKNN encodes
# its text; an ID model cannot know it: SASRec, GRU4Rec and BERT4Rec give it the mean item row, Pop a zero count.
# A model that cannot add items at all raises ``NotImplementedError`` (e.g. a QLoRA run kept unmerged). The HTTP
# service (``llmrec.serving``) and ``llmrec recommend --add_items`` call it.


def mask_items(
    scores: torch.Tensor,
    exclude: Sequence[Sequence[int]] | None,
    keep: torch.Tensor | Sequence[int] | None = None,
    everyone: Sequence[int] | None = None,
) -> torch.Tensor:
    """Set excluded items' scores to ``-inf``, in place, and return ``scores`` [B, N].

    Args:
        scores: [B, N] float scores.
        exclude: per row ``b``, the item ids row ``b`` must never return (e.g. its history); ``None``: none.
        keep: optional [B] item ids that stay scored in their row even when excluded (the evaluator keeps each
            user's target, so a repeat consumption is still rankable).
        everyone: item ids excluded for every row.
    """
    if exclude is not None:
        rows = torch.tensor([b for b, items in enumerate(exclude) for _ in items], dtype=torch.int64)
        cols = torch.tensor([int(i) for items in exclude for i in items], dtype=torch.int64)
        if len(rows):
            if keep is not None:
                hit = cols != torch.as_tensor(keep, dtype=torch.int64)[rows]
                rows, cols = rows[hit], cols[hit]
            scores[rows, cols] = -math.inf
    if everyone is not None and len(everyone):
        scores[:, torch.as_tensor(list(everyone), dtype=torch.int64)] = -math.inf
    return scores


def top_k(scores: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Top ``k`` item ids and scores per row of ``scores`` [B, N] (best first); ``-inf`` items are never returned."""
    k = min(k, scores.shape[1])
    values, ids = torch.topk(scores, k, dim=1)
    items, vals = [], []
    for row_ids, row_vals in zip(ids.tolist(), values.tolist()):
        keep = [(i, v) for i, v in zip(row_ids, row_vals) if v != -math.inf]
        items.append([i for i, _ in keep])
        vals.append([v for _, v in keep])
    return items, vals


def rank(
    scores: torch.Tensor, histories: Sequence[Sequence[int]], k: int, exclude_seen: bool = True
) -> list[list[tuple[int, float]]]:
    """Per row, the top ``k`` ``(item id, score)`` pairs of ``scores`` [B, N], history items removed if asked."""
    scores = scores.detach().to("cpu", torch.float32).clone()
    items, values = top_k(mask_items(scores, histories if exclude_seen else None), k)
    return [list(zip(i, v)) for i, v in zip(items, values)]


def recommend(
    model: Recommender, histories: Sequence[Sequence[int]], k: int = 10, exclude_seen: bool = True
) -> list[list[tuple[int, float]]]:
    """Top ``k`` next items for each history (internal ids, oldest first), best first, as ``(item id, score)``."""
    with torch.inference_mode():
        scores = model.score([list(h) for h in histories])
    return rank(scores, histories, k, exclude_seen)
