"""Pop: recommend the items with the most training interactions to everyone (the floor every model must beat)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from llmrec.baselines.base import ModelArgs


class Pop(nn.Module):
    """Scores = training-split interaction counts (a buffer, so it is saved with the weights).

    A cold-start item is in no training sequence, so its count, and its score, is 0 (the floor); an item added
    later (``add_items``) gets 0 as well.
    """

    trainable = False

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.num_items = args.num_items
        self.register_buffer("counts", torch.zeros(args.num_items))

    def fit(self, train_sequences: Sequence[Sequence[int]]) -> None:
        counts = torch.zeros(self.num_items)
        for s in train_sequences:
            counts.index_add_(0, torch.as_tensor(list(s), dtype=torch.int64), torch.ones(len(s)))
        self.counts.copy_(counts)

    @torch.no_grad()
    def add_items(self, count: int) -> list[int]:
        """Append ``count`` items with a zero count (ids ``num_items..``)."""
        n = self.num_items
        self.counts = torch.cat([self.counts, self.counts.new_zeros(count)])
        self.num_items = self.args.num_items = n + count
        return list(range(n, n + count))

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(len(histories), -1).clone()
