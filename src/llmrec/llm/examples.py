"""Training examples and batches of ``llmrec train``.

Objectives:
    sequence (default)  one example per user (per window of ``max_history + 1`` items for longer users): the
                        prompt of the training part ``s[:-2]`` with its last item as the target; cross-entropy over
                        the item vocabulary at every item position after the window's first item, from the hidden
                        state before it. One forward pass trains all next-item predictions of the window.
    sft                 classic supervised fine-tuning: one prompt per (prefix, next item) pair, loss at the
                        target only. Same number of predictions, many more forward passes.

Semantic IDs (the encoder writes each item as its ``L`` code tokens): the same examples with every item's ``L``
codes as targets, teacher-forced. ``sequence``: every code token of every item but the window's first (the
hidden state before each code predicts it: the previous item's state the first code, the item's own earlier codes
the others); ``sft``: the target item's ``L`` codes, the last ``L`` positions.

Batches: ``batch_size`` examples per optimizer step over all processes and accumulation micro-batches, a function
of the seed and the epoch only (length-bucketed, shuffled), so every process knows the global batch and a resumed
run continues inside its epoch exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from llmrec.batching import length_bucketed_batches, pad_sequences

Example = tuple[list[int], list[int]]  # (token ids, positions of the item tokens to predict)


def build_examples(sequences: Sequence[Sequence[int]], encoder, objective: str, max_history: int) -> list[Example]:
    """Training examples ``(token_ids, target_positions)`` from training sequences (see the module docstring)."""
    vocab = encoder.vocab
    width = encoder.tokens_per_item  # 1 (atomic item tokens) or L (code tokens)
    examples = []
    for seq in sequences:
        if len(seq) < 2:
            continue
        if objective == "sequence":
            # windows of max_history + 1 items from the end; each window's first item is the previous window's
            # last target, so every item but the very first is predicted exactly once (as in sft)
            end = len(seq)
            while end > 1:
                start = max(0, end - max_history - 1)
                s = seq[start:end]
                ids = encoder.encode(s[:-1], target=s[-1])
                # every item token but the window's first item, which has no history inside the window (its tokens
                # may start at position 0, as with the `compact` template)
                targets = [p for p in range(len(ids)) if vocab.first_id <= ids[p] < vocab.end_id][width:]
                examples.append((ids, targets))
                end = start + 1
        else:
            for t in range(1, len(seq)):
                ids = encoder.encode(seq[max(0, t - max_history) : t], target=seq[t])
                examples.append((ids, list(range(len(ids) - width, len(ids)))))
    return examples


def epoch_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, min_size: int = 1
) -> list[list[int]]:
    """Global batches of one epoch (length-bucketed, shuffled by ``(seed, epoch)``); ones below ``min_size`` dropped."""
    rng = np.random.default_rng([seed, epoch])
    return length_bucketed_batches(lengths, batch_size, rng.permutation, min_size=min_size)


def collate(examples: Sequence[Example], idx: Sequence[int], pad_id: int):
    """Right-padded ``(input_ids [b, L], attention_mask [b, L], target_mask [b, L] bool)`` for examples ``idx``."""
    ids, mask = pad_sequences([examples[i][0] for i in idx], pad_id)
    tmask = torch.zeros(ids.shape, dtype=torch.bool)
    for row, i in enumerate(idx):
        tmask[row, examples[i][1]] = True
    return ids, mask, tmask
