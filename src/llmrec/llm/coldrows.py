"""Rows for atomic items training never saw: the cold-start items of the data set, and items added later.

Two ways (``--cold_rows``): ``knn`` (default) copies the mean trained rows of each cold item's ``--cold_knn`` nearest
warm items by text cosine (``llmrec.items.neighbors.nearest_rows``); ``projector`` maps its text embedding through
the text projector. Measured on Amazon Beauty with 5% cold items (docs/results.md, "Cold-start items"): the
projector's rows sit near the warm mean and no cold item reaches a top 10; the nearest trained item's row does.

With ``projector``, ``project_cold_rows`` fits the ridge text projector (``llmrec.items.projector``) from the warm items' text
embeddings to their current trained rows (input rows, and an untied head's output rows separately) and writes
the projected rows of the cold items into the model, in place. The training loop calls it before every
validation and before the adapter is saved, so the saved adapter holds them and ``text_projector.safetensors``
(saved with it) is the map that produced them. Writing the cold rows mid-training changes nothing of the training
itself: cold items are never an input, never a target and never in the softmax (``ItemLM(cold_items=...)``), so
their rows get zero gradient (AdamW's decoupled weight decay only shrinks them, and they are rewritten anyway).
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from llmrec.items.neighbors import ItemTexts, nearest_rows, unit_rows
from llmrec.items.projector import TextProjector, fit_projector
from llmrec.items.text import TextEmbeddings
from llmrec.llm.model import ItemLM, item_rows


def row_sets(item_lm: ItemLM) -> dict[str, torch.Tensor]:
    """The item rows ``[N, D]`` of the model as writable views: ``input``, and ``output`` for an untied head."""
    base = item_lm._base[0]
    out = {"input": item_rows(base.get_input_embeddings(), item_lm.vocab)}
    if not item_lm.tied:
        out["output"] = item_rows(base.get_output_embeddings(), item_lm.vocab)
    return out


@torch.no_grad()
def write_rows(item_lm: ItemLM, items: torch.Tensor, projector: TextProjector, vectors, has) -> None:
    """Write ``projector``'s rows of text embeddings ``vectors`` [M, E] (``has`` [M]) into items ``items`` [M]."""
    for name, rows in row_sets(item_lm).items():
        new = projector.maps[name].rows(vectors, has)
        rows[items.to(rows.device)] = new.to(device=rows.device, dtype=rows.dtype)


def cold_mask(num_items: int, cold_items: Collection[int]) -> torch.Tensor:
    """``[num_items]`` bool, True for the cold items."""
    cold = torch.zeros(num_items, dtype=torch.bool)
    cold[list(cold_items)] = True
    return cold


@torch.no_grad()
def fit_warm_projector(item_lm: ItemLM, text: TextEmbeddings, cold_items: Collection[int], seed: int = 0):
    """The ridge text projector fitted from the warm items' text embeddings to their current rows."""
    n = item_lm.vocab.num_items
    if text.vectors.shape[0] != n:
        raise ValueError(f"text embeddings for {text.vectors.shape[0]} items, the model has {n}")
    warm = ~cold_mask(n, cold_items)
    warm_rows = {name: rows.detach()[warm.to(rows.device)] for name, rows in row_sets(item_lm).items()}
    return fit_projector(warm_rows, text.vectors[warm], text.has[warm], text.encoder, text.model, seed)


def run_item_texts(text: TextEmbeddings, cold_items: Collection[int], fusion: float = 0.0) -> ItemTexts:
    """The run's ``ItemTexts`` (saved as ``item_text.safetensors``): unit text rows, every warm item trained."""
    return ItemTexts(unit_rows(text.vectors), ~cold_mask(len(text.vectors), cold_items), text.encoder, text.model,
                     fusion)  # fmt: skip


@torch.no_grad()
def knn_cold_rows(item_lm: ItemLM, texts: ItemTexts, cold_items: Collection[int], k: int = 1) -> None:
    """Write each cold item's rows: the mean of its ``k`` nearest warm items' current rows (text cosine)."""
    idx = cold_mask(item_lm.vocab.num_items, cold_items).nonzero().squeeze(1)
    if len(idx) == 0:
        return
    for rows in row_sets(item_lm).values():
        rows[idx.to(rows.device)] = nearest_rows(rows.detach(), texts.vectors, texts.trained, texts.vectors[idx], k)


@torch.no_grad()
def project_cold_rows(item_lm: ItemLM, text: TextEmbeddings, cold_items: Collection[int], seed: int = 0,
                      method: str = "projector", k: int = 1):  # fmt: skip
    """Write the cold items' rows from their text (``method``: ``knn`` or ``projector``); returns the projector.

    ``projector``: the ridge text projector fitted on the warm items' rows, or with content dropout
    (``item_lm.text_map``, ``llmrec.llm.textmap``) the learned map, nothing fitted. ``knn``: ``knn_cold_rows``;
    returns None.

    Args:
        item_lm: an atomic-item model (its ``vocab.num_items`` rows match ``text``'s).
        text: every catalog item's text embeddings.
        cold_items: the items to write (``PreparedData.cold_items``).
        seed: the projector's held-out split.
        method, k: ``--cold_rows``, ``--cold_knn``.
    """
    n = item_lm.vocab.num_items
    if text.vectors.shape[0] != n:
        raise ValueError(f"text embeddings for {text.vectors.shape[0]} items, the model has {n}")
    if method == "knn":
        knn_cold_rows(item_lm, run_item_texts(text, cold_items), cold_items, k)
        return None
    if item_lm.text_map is not None:
        projector = item_lm.text_map.to_projector()
    else:
        projector = fit_warm_projector(item_lm, text, cold_items, seed)
    idx = cold_mask(n, cold_items).nonzero().squeeze(1)
    write_rows(item_lm, idx, projector, text.vectors[idx], text.has[idx])
    return projector
