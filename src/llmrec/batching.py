"""Padding and length-bucketed batching, shared by the LLM trainer, the baselines and the scorers.

Conventions: a batch of token (or item) id lists becomes ``ids [B, L]`` int64 and ``mask [B, L]`` int64 (1 = real),
``L`` the longest kept list; right padding keeps real tokens at positions ``0..len-1`` (what the training loss and
the fast scoring path index), left padding is what ``generate`` expects for decoder-only models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def pad_sequences(
    seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right", max_len: int | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into ``(ids [B, L], mask [B, L])``; with ``max_len``, keep each list's last ``max_len`` ids.

    ``L`` is the longest kept list (at least 1, so an all-empty batch is ``[B, 1]`` of padding).
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    kept = [list(s)[-max_len:] if max_len else list(s) for s in seqs]
    width = max((len(s) for s in kept), default=0) or 1
    ids = torch.full((len(kept), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(kept), width), dtype=torch.long)
    for row, s in enumerate(kept):
        if not s:
            continue
        cols = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[row, cols] = torch.as_tensor(s, dtype=torch.long)
        mask[row, cols] = 1
    return ids.to(device), mask.to(device)


def length_bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    permutation: Callable[[int], Sequence[int]],
    chunk_batches: int = 50,
    min_size: int = 1,
) -> list[list[int]]:
    """Shuffled batches of indices whose lists have similar lengths, so little compute goes to padding.

    Indices are permuted with ``permutation(n)`` (a seeded RNG's permutation of ``range(n)``), cut into chunks of
    ``chunk_batches`` batches, sorted by length inside each chunk (stable), batched, and the batches permuted again
    with the same ``permutation``. Batches smaller than ``min_size`` (e.g. processes x micro-batches) are dropped;
    with ``min_size=1`` every index appears exactly once.
    """
    order = [int(i) for i in permutation(len(lengths))]
    chunk = batch_size * chunk_batches
    batches = []
    for lo in range(0, len(order), chunk):
        part = sorted(order[lo : lo + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    batches = [b for b in batches if len(b) >= min_size]
    return [batches[int(i)] for i in permutation(len(batches))]
