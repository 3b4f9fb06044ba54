"""Item text neighbours: rows for untrained items from their nearest trained items, and a text-similarity score.

Both work on unit text embeddings ``vectors`` [N, E] (``llmrec.items.text``; a zero row: the item has no text).

``nearest_rows`` gives an item training never saw (a cold-start item, an item added to a served run) the mean of the
trained rows of its ``k`` nearest *trained* items by cosine of the texts: a new shade of a lipstick gets the row of
the shade that was sold. Items without a text get the mean trained row.

``ColdNeighbors`` scores an untrained item by the best of its ``k`` nearest trained items' scores instead
(``--cold_neighbors``): ``max_j (score[n_j] - gap * (s_1 - s_j))``, ``s_1 >= .. >= s_k`` the text cosines.

``history_similarity`` is the content score of ``llmrec baseline textknn`` and of the LLM's ``--text_fusion``: the
cosine between each item's text and the normalised sum of the texts of the last ``last_k`` history items.

A run that uses either stores its item texts as ``item_text.safetensors`` (``save_item_text``): ``vectors`` [N, E]
float16 (unit rows), ``trained`` [N] uint8 (1: the item's rows were trained, a valid neighbour), metadata
``format``, ``encoder``, ``model`` (the encoder's key, as in ``text_projector.safetensors``) and ``fusion`` (the
text-fusion weight the run selected, JSON).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llmrec.errors import DataError
from llmrec.files import atomic_write_bytes

ITEM_TEXT_FILE = "item_text.safetensors"
FORMAT_VERSION = "1"
DEFAULT_LAST_K = 5  # history items whose texts make the query (textknn's default, measured there)
_CHUNK = 4096  # query rows per similarity block: [chunk, N] floats at a time


@dataclass
class ItemTexts:
    """Unit text embeddings of a run's items and which of them were trained (see the module docstring)."""

    vectors: torch.Tensor  # [N, E] float32, unit rows or zero
    trained: torch.Tensor  # [N] bool
    encoder: str
    model: str = ""
    fusion: float = 0.0

    def extended(self, vectors: torch.Tensor) -> ItemTexts:
        """These texts with untrained items ``vectors`` [M, E] appended (normalised here)."""
        if vectors.dim() != 2 or vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"text embeddings: expected [M, {self.vectors.shape[1]}], got {tuple(vectors.shape)}")
        new = F.normalize(vectors.float(), dim=1)
        trained = torch.cat([self.trained, torch.zeros(len(new), dtype=torch.bool)])
        return ItemTexts(torch.cat([self.vectors, new]), trained, self.encoder, self.model, self.fusion)


def unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    """``vectors`` [N, E] as float32 unit rows (zero rows stay zero)."""
    return F.normalize(vectors.float(), dim=1)


@torch.no_grad()
def nearest_items(vectors: torch.Tensor, trained: torch.Tensor, query: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``[M, min(k, S)]`` int64: the ``k`` nearest trained items (by text cosine, best first) of each query text.

    Args:
        vectors: ``[N, E]`` unit text embeddings of the catalog (zero: no text, never a neighbour).
        trained: ``[N]`` bool, the items that may be neighbours.
        query: ``[M, E]`` text embeddings (normalised here).
        k: neighbours per query.

    Rows of queries without text, or all rows when no trained item has a text (``S = 0``), hold ``-1``.
    """
    if k < 1:
        raise ValueError(f"cold_knn: must be >= 1, got {k}")
    source = (trained.bool() & (vectors.abs().sum(1) > 0)).nonzero().squeeze(1)
    q = unit_rows(query)
    out = torch.full((len(q), max(min(k, len(source)), 1)), -1, dtype=torch.int64)
    has = (q.abs().sum(1) > 0).nonzero().squeeze(1)
    if len(source) == 0 or len(has) == 0:
        return out
    keys = vectors[source].float()
    for start in range(0, len(has), _CHUNK):
        part = has[start : start + _CHUNK]
        out[part] = source[(q[part] @ keys.T).topk(out.shape[1], dim=1).indices]
    return out


@torch.no_grad()
def nearest_rows(rows: torch.Tensor, vectors: torch.Tensor, trained: torch.Tensor, query: torch.Tensor, k: int = 1):
    """``[M, D]`` rows for query texts ``query`` [M, E]: the mean of the rows of their ``k`` nearest trained items.

    Args:
        rows: ``[N, D]`` the items' current rows (only the ``trained`` ones are read).
        vectors: ``[N, E]`` unit text embeddings of the same items (zero: no text, never a neighbour).
        trained: ``[N]`` bool, the items whose rows may be copied.
        query: ``[M, E]`` text embeddings of the items that need rows (normalised here; a zero row: no text).
        k: neighbours averaged (with equal weights).

    A query without text, or without any trained neighbour with text, gets the mean of the trained rows.
    """
    top = nearest_items(vectors, trained, query, k)  # [M, k'], -1: no neighbour
    mean = rows[trained.bool().to(rows.device)].float().mean(0)
    out = mean.expand(len(top), -1).clone()
    has = (top[:, 0] >= 0).nonzero().squeeze(1)
    if len(has):
        out[has.to(out.device)] = rows[top[has].to(rows.device)].float().mean(1)
    return out.to(rows.dtype)


@dataclass
class ColdNeighbors:
    """The untrained items of ``texts`` and their ``k`` nearest trained items: ``ColdNeighbors.of(texts, k)``.

    ``apply(scores, gap)`` [B, N] -> [B, N] (a new tensor): each untrained item ``c`` with a text scores
    ``max_j (scores[:, n_j] - gap * (s_1 - s_j))`` over its neighbours ``n_1 .. n_k`` (text cosines ``s_1 >= ..
    >= s_k``); the other columns are copied. ``k = 1`` gives the nearest item's score (as its copied row does with
    ``--cold_rows knn``); a larger ``gap`` trusts the farther neighbours less. Untrained items without a text, or
    without a trained neighbour with one, keep their own scores.
    """

    items: torch.Tensor  # [C] int64, the untrained items with a neighbour
    top: torch.Tensor  # [C, k] int64, their nearest trained items, best first
    gaps: torch.Tensor  # [C, k] float32, s_1 - s_j >= 0

    @classmethod
    @torch.no_grad()
    def of(cls, texts: ItemTexts, k: int) -> ColdNeighbors:
        cold = torch.nonzero(~texts.trained.bool()).flatten()
        top = nearest_items(texts.vectors, texts.trained, texts.vectors[cold], k)  # [C, k'], -1: no neighbour
        keep = top[:, 0] >= 0
        cold, top = cold[keep], top[keep]
        sims = (texts.vectors[cold].float().unsqueeze(1) * texts.vectors[top].float()).sum(2)  # [C, k']
        return cls(cold, top, sims[:, :1] - sims)

    @torch.no_grad()
    def apply(self, scores: torch.Tensor, gap: float) -> torch.Tensor:
        out = scores.clone()
        if len(self.items) == 0:
            return out
        top, gaps = self.top.to(scores.device), self.gaps.to(scores.device, scores.dtype)
        cols = scores[:, top.reshape(-1)].reshape(scores.shape[0], *top.shape)  # [B, C, k]
        out[:, self.items.to(scores.device)] = (cols - gap * gaps.unsqueeze(0)).amax(dim=2)
        return out


@torch.no_grad()
def history_similarity(vectors: torch.Tensor, histories: Sequence[Sequence[int]], last_k: int = DEFAULT_LAST_K):
    """``[B, N]`` cosine of every item's text with the normalised sum of the last ``last_k`` history items' texts.

    ``vectors`` [N, E] unit rows (zero: no text, scores 0); a history without any text item scores 0 everywhere.
    """
    if last_k < 1:
        raise ValueError(f"last_k: must be >= 1, got {last_k}")
    n, dim = vectors.shape
    pad = torch.cat([vectors, vectors.new_zeros(1, dim)])  # row n: padding, a zero vector
    width = max((min(len(h), last_k) for h in histories), default=0) or 1
    idx = torch.full((len(histories), width), n, dtype=torch.int64)
    for b, h in enumerate(histories):
        last = list(h)[-last_k:]
        if last:
            idx[b, : len(last)] = torch.as_tensor(last, dtype=torch.int64)
    query = F.normalize(pad[idx.to(pad.device)].sum(1), dim=1)  # [B, E]
    return query @ vectors.T


def save_item_text(texts: ItemTexts, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/item_text.safetensors`` atomically; returns its path."""
    from safetensors.torch import save

    tensors = {"vectors": texts.vectors.half().contiguous().cpu(), "trained": texts.trained.to(torch.uint8).cpu()}
    meta = {
        "format": FORMAT_VERSION,
        "encoder": texts.encoder,
        "model": texts.model,
        "fusion": json.dumps(texts.fusion),
    }
    path = Path(out_dir) / ITEM_TEXT_FILE
    atomic_write_bytes(path, save(tensors, metadata=meta))
    return path


def load_item_text(run_dir: str | os.PathLike, num_items: int) -> ItemTexts | None:
    """The item texts saved in ``run_dir`` (None when there are none).

    Raises:
        DataError: the file is unreadable, of another format, or not for ``num_items`` items (the message names it).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(run_dir) / ITEM_TEXT_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            vectors, trained = f.get_tensor("vectors").float(), f.get_tensor("trained").bool()
        fusion = float(json.loads(meta.get("fusion", "0")))
    except (OSError, SafetensorError, KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a readable item-text file ({e})") from None
    if meta.get("format") != FORMAT_VERSION or not meta.get("encoder"):
        raise DataError(f"{path}: expected format {FORMAT_VERSION} with an encoder, got {meta}")
    if vectors.dim() != 2 or vectors.shape[0] != num_items or trained.shape != (num_items,):
        raise DataError(f"{path}: vectors {tuple(vectors.shape)} / trained {tuple(trained.shape)}, "
                        f"expected {num_items} items")  # fmt: skip
    return ItemTexts(vectors, trained, meta["encoder"], meta.get("model", ""), fusion)
