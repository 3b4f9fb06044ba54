"""Code tokens of semantic IDs: ``<|sid_{l}_{c}|>`` for code ``c`` of level ``l``, and their initial rows.

Unlike the atomic vocabulary (one token per item, ``llmrec.items.atomic``), the semantic vocabulary has
``sum(level_sizes)`` tokens shared by all items: an item is the path of its ``L`` codes (``llmrec.items.semantic``),
written as ``L`` tokens, one per level. The tokens are special tokens (``normalized=False``), level by level, with
contiguous ids: level ``l`` holds ids ``first_id + offset_l .. first_id + offset_l + level_sizes[l] - 1``,
``offset_l = sum(level_sizes[:l])``. So each level's rows are one slice of a weight matrix, and a level's logits
are one slice of the LM's output. ``llmrec.items.atomic.resize_for_items`` and ``llmrec.llm.lora.apply_lora`` take a
``SemanticVocab`` as they take an ``ItemVocab`` (they use only ``first_id`` and ``end_id``).

``init_code_rows`` sets each code token's rows from its cluster centroid; the mapping is in its docstring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from llmrec.items.atomic import item_row_weights

SID_TOKEN_FORMAT = "<|sid_{}_{}|>"

logger = logging.getLogger(__name__)


def sid_token(level: int, code: int) -> str:
    """Token string of code ``code`` at level ``level``."""
    return SID_TOKEN_FORMAT.format(level, code)


@dataclass(frozen=True)
class SemanticVocab:
    """Where the code tokens live: level ``l``'s ``level_sizes[l]`` tokens start at ``level_start(l)``."""

    first_id: int
    level_sizes: tuple[int, ...]

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def num_tokens(self) -> int:
        return int(sum(self.level_sizes))

    @property
    def end_id(self) -> int:
        return self.first_id + self.num_tokens

    @cached_property
    def starts(self) -> tuple[int, ...]:
        """First token id of each level."""
        return tuple(self.first_id + int(s) for s in np.cumsum((0,) + tuple(self.level_sizes[:-1])))

    def level_start(self, level: int) -> int:
        return self.starts[level]

    def level_range(self, level: int) -> tuple[int, int]:
        """``(start, end)`` token ids of level ``level`` (end exclusive)."""
        return self.starts[level], self.starts[level] + self.level_sizes[level]

    def token_id(self, level: int, code: int) -> int:
        if not 0 <= code < self.level_sizes[level]:
            raise ValueError(f"code {code} is outside level {level}'s 0..{self.level_sizes[level] - 1}")
        return self.starts[level] + int(code)

    def path_ids(self, path: Sequence[int]) -> list[int]:
        """Token ids of one item's code path (``L`` codes, level order)."""
        if len(path) != self.num_levels:
            raise ValueError(f"a code path has {self.num_levels} codes, got {len(path)}")
        return [self.token_id(level, c) for level, c in enumerate(path)]

    def path_tokens(self, path: Sequence[int]) -> str:
        """The code path as text, e.g. ``<|sid_0_3|><|sid_1_7|><|sid_2_0|>`` (what a prompt string holds)."""
        return "".join(sid_token(level, int(c)) for level, c in enumerate(path))

    def token_table(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``[N, L]`` int64 token ids of every item's path from ``codes`` [N, L] (row ``i`` = item ``i``)."""
        c = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        if c.dim() != 2 or c.shape[1] != self.num_levels:
            raise ValueError(f"codes must be [N, {self.num_levels}], got {tuple(c.shape)}")
        sizes = torch.tensor(self.level_sizes)
        if ((c < 0) | (c >= sizes)).any():
            raise ValueError(f"codes outside the level sizes {self.level_sizes}")
        return c + torch.tensor(self.starts)

    def is_code(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask: which ids are code tokens (of any level)."""
        return (token_ids >= self.first_id) & (token_ids < self.end_id)

    def level_of(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Level of each code token id (``-1`` for ids that are not code tokens)."""
        level = torch.bucketize(token_ids, torch.tensor(self.starts, device=token_ids.device), right=True) - 1
        return torch.where(self.is_code(token_ids), level, torch.full_like(level, -1))


def _all_tokens(level_sizes: Sequence[int]) -> list[str]:
    return [sid_token(level, c) for level, size in enumerate(level_sizes) for c in range(size)]


def find_sid_vocab(tokenizer, level_sizes: Sequence[int]) -> SemanticVocab:
    """The ``SemanticVocab`` of a tokenizer that already holds the code tokens (e.g. one saved in a run directory).

    Raises:
        ValueError: a token is missing or the tokens are not contiguous in level order.
    """
    sizes = tuple(int(s) for s in level_sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"level_sizes must be positive, got {sizes}")
    tokens = _all_tokens(sizes)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    first = ids[0]
    if first is None or first == tokenizer.unk_token_id or ids != list(range(first, first + len(ids))):
        raise ValueError(f"tokenizer does not hold {len(ids)} contiguous code tokens {tokens[0]}..{tokens[-1]}")
    return SemanticVocab(first, sizes)


def add_sid_tokens(tokenizer, level_sizes: Sequence[int]) -> SemanticVocab:
    """Add ``<|sid_{l}_{c}|>`` for every level ``l`` and code ``c < level_sizes[l]`` as special tokens.

    Raises:
        ValueError: a code token already exists (e.g. the tokenizer was already extended).
    """
    from tokenizers import AddedToken

    if tokenizer.convert_tokens_to_ids(sid_token(0, 0)) not in (None, tokenizer.unk_token_id):
        raise ValueError(f"tokenizer already contains {sid_token(0, 0)}; use find_sid_vocab()")
    tokens = [
        AddedToken(t, special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
        for t in _all_tokens(level_sizes)
    ]
    added = tokenizer.add_tokens(tokens, special_tokens=True)
    if added != len(tokens):
        raise ValueError(f"expected to add {len(tokens)} code tokens, the tokenizer added {added}")
    return find_sid_vocab(tokenizer, level_sizes)


def extend_last_level(tokenizer, vocab: SemanticVocab, size: int) -> SemanticVocab:
    """Grow the last level (the disambiguation level, the last block of code tokens) to ``size`` values by adding
    its missing code tokens at the end of the tokenizer (``add_items``); returns the new vocab.

    Raises:
        ValueError: other tokens follow the code tokens, so the new ones could not be contiguous with them.
    """
    from tokenizers import AddedToken

    last, old = vocab.num_levels - 1, vocab.level_sizes[-1]
    if size <= old:
        return vocab
    if len(tokenizer) != vocab.end_id:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, its code tokens end at {vocab.end_id}: new code "
                         "tokens would not be contiguous")  # fmt: skip
    tokens = [
        AddedToken(sid_token(last, c), special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
        for c in range(old, size)
    ]
    if tokenizer.add_tokens(tokens, special_tokens=True) != size - old:
        raise ValueError(f"expected to add {size - old} code tokens")
    return find_sid_vocab(tokenizer, (*vocab.level_sizes[:-1], size))


def centroid_map(centroids: np.ndarray | torch.Tensor, hidden: int, seed: int = 0) -> torch.Tensor:
    """``[k, hidden]``: centroids [k, d] mean-centred and carried into ``hidden`` dimensions, distances kept.

    ``d <= hidden``: a fixed random orthonormal map [d, hidden] (an isometry). ``d > hidden``: first onto the
    orthonormal basis of the centred centroids' own span (rank <= k - 1, from their SVD), which keeps every distance
    whenever that rank fits ``hidden`` (256 centroids always fit SmolLM2's 576); a larger rank keeps its top
    ``hidden`` singular directions (PCA), with a log note. Then the same random orthonormal map.
    """
    c = torch.as_tensor(np.asarray(centroids), dtype=torch.float32)
    c = c - c.mean(0)  # the shared mean carries nothing that tells the codes of a level apart
    if c.shape[1] > hidden:
        _, s, vh = torch.linalg.svd(c, full_matrices=False)  # c = U S Vh, rows of Vh span the centroids
        rank = int((s > s.max() * 1e-6).sum()) if len(s) else 0
        if rank > hidden:
            logger.warning("code rows: %d centroid directions kept of rank %d (hidden size)", hidden, rank)
        c = c @ vh[: min(max(rank, 1), hidden)].T  # [k, r], r <= hidden
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, c.shape[1], generator=gen))  # [hidden, r], orthonormal columns
    return c @ q.T


@torch.no_grad()
def init_code_rows(
    model, vocab: SemanticVocab, centroids: Sequence[np.ndarray], scale: float = 1.0, seed: int = 0
) -> dict:
    """Initialise the code tokens' rows (input embeddings, and an untied head's) from their cluster centroids.

    Level ``l`` < ``len(centroids)``: the rows are ``centroid_map(centroids[l], hidden, seed + l)`` (a separate random
    map per level, so the levels start in nearly orthogonal subspaces), scaled so that their mean norm is ``scale``
    times the mean norm of the text vocabulary's rows of the same matrix (deeper levels cluster smaller residuals;
    scaling each level separately keeps every code token as visible as a word). The disambiguation level, and any
    level whose centroids coincide, has no geometry to copy: its rows are seeded Gaussian noise at that same norm.

    Returns:
        ``{"from_centroids": levels initialised from centroids, "random": levels drawn at random}``.

    Raises:
        ValueError: more centroid sets than levels, or a level's centroid count differs from its size.
    """
    if len(centroids) > vocab.num_levels:
        raise ValueError(f"{len(centroids)} centroid sets for {vocab.num_levels} levels")
    for level, c in enumerate(centroids):
        if len(c) != vocab.level_sizes[level]:
            raise ValueError(f"level {level}: {len(c)} centroids for {vocab.level_sizes[level]} code tokens")
    random_levels = set()
    for weight in item_row_weights(model):
        gen = torch.Generator().manual_seed(seed)  # the same noise for the input rows and an untied head's
        ref = weight[: vocab.first_id].float().norm(dim=1).mean() * scale
        hidden = weight.shape[1]
        for level in range(vocab.num_levels):
            start, end = vocab.level_range(level)
            rows = centroid_map(centroids[level], hidden, seed + level) if level < len(centroids) else None
            if rows is None or not (rows.norm(dim=1) > 0).any():
                rows = torch.randn(end - start, hidden, generator=gen)
                random_levels.add(level)
            rows = rows * (ref / rows.norm(dim=1).mean())
            weight[start:end] = rows.to(device=weight.device, dtype=weight.dtype)
    return {"from_centroids": vocab.num_levels - len(random_levels), "random": len(random_levels)}
