"""Rows for atomic items training never saw: the cold-start items of the data set, and items added later.

``project_cold_rows`` fits the ridge text projector (``llmrec.items.projector``) from the warm items' text
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


def _cold_mask(num_items: int, cold_items: Collection[int]) -> torch.Tensor:
    cold = torch.zeros(num_items, dtype=torch.bool)
    cold[list(cold_items)] = True
    return cold


@torch.no_grad()
def fit_warm_projector(item_lm: ItemLM, text: TextEmbeddings, cold_items: Collection[int], seed: int = 0):
    """The ridge text projector fitted from the warm items' text embeddings to their current rows."""
    n = item_lm.vocab.num_items
    if text.vectors.shape[0] != n:
        raise ValueError(f"text embeddings for {text.vectors.shape[0]} items, the model has {n}")
    warm = ~_cold_mask(n, cold_items)
    warm_rows = {name: rows.detach()[warm.to(rows.device)] for name, rows in row_sets(item_lm).items()}
    return fit_projector(warm_rows, text.vectors[warm], text.has[warm], text.encoder, text.model, seed)


@torch.no_grad()
def project_cold_rows(item_lm: ItemLM, text: TextEmbeddings, cold_items: Collection[int], seed: int = 0):
    """Fit the text projector on the warm items' rows and write the cold items' rows; returns the projector.

    With content dropout (``item_lm.text_map``, ``llmrec.llm.textmap``) nothing is fitted: the learned map is the
    projector.

    Args:
        item_lm: an atomic-item model (its ``vocab.num_items`` rows match ``text``'s).
        text: every catalog item's text embeddings.
        cold_items: the items to write (``PreparedData.cold_items``).
        seed: the projector's held-out split.
    """
    n = item_lm.vocab.num_items
    if text.vectors.shape[0] != n:
        raise ValueError(f"text embeddings for {text.vectors.shape[0]} items, the model has {n}")
    if item_lm.text_map is not None:
        projector = item_lm.text_map.to_projector()
    else:
        projector = fit_warm_projector(item_lm, text, cold_items, seed)
    idx = _cold_mask(n, cold_items).nonzero().squeeze(1)
    write_rows(item_lm, idx, projector, text.vectors[idx], text.has[idx])
    return projector
