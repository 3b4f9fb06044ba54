"""What every sequence baseline shares: padding conventions, tied item embeddings, scoring, the training loss.

Conventions: internal item ids are ``0..num_items-1``; id ``num_items`` is padding and (BERT4Rec only)
``num_items + 1`` is the mask token. Sequences are right-padded, so with a causal model the real positions never
attend to padding, and positions count from the oldest item of the (truncated) window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmrec.batching import pad_sequences


@dataclass
class ModelArgs:
    """Architecture hyper-parameters shared by the neural baselines (a view of ``BaselineConfig``)."""

    num_items: int
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 1
    dropout: float = 0.5
    max_len: int = 50
    mask_prob: float = 0.2  # BERT4Rec only


def right_pad(seqs: Sequence[Sequence[int]], max_len: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the last ``max_len`` items of each sequence and right-pad: ``([B, L], lengths [B])``, L = longest kept."""
    items, mask = pad_sequences(seqs, pad, max_len=max_len)
    return items, mask.sum(1)


class SequenceModel(nn.Module):
    """A next-item model over a catalog: ``score(histories) -> [B, num_items]`` and a training ``loss``.

    Subclasses implement ``encode(items [B, L]) -> hidden [B, L, D]`` and set ``self.item_emb`` (an embedding with
    at least ``num_items + 1`` rows whose first ``num_items`` rows double as the output layer).
    """

    causal: bool = True

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.num_items = args.num_items
        self.pad_id = args.num_items

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item: ``[..., D] -> [..., num_items]`` (output layer tied to the item embeddings)."""
        return hidden @ self.item_emb.weight[: self.num_items].T

    def history_hidden(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Hidden state that predicts the item after each history: ``[B, D]``."""
        items, lengths = right_pad(histories, self.args.max_len, self.pad_id)
        items = items.to(self.item_emb.weight.device)
        hidden = self.encode(items)  # [B, L, D]
        last = (lengths.clamp(min=1) - 1).to(items.device)
        return hidden[torch.arange(len(items), device=items.device), last]

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores over the whole catalog for the next item of each history, ``[B, num_items]``."""
        was_training = self.training
        self.eval()
        try:
            return self.logits(self.history_hidden(histories))
        finally:
            self.train(was_training)

    def loss(self, seqs: Sequence[Sequence[int]], loss_type: str, generator: torch.Generator) -> torch.Tensor:
        """Next-item loss on every position of each training sequence (input ``items[:t]`` predicts ``items[t]``).

        ``loss_type`` "ce": full softmax over all items; "bce": one uniformly sampled negative per position.
        """
        items, _ = right_pad(seqs, self.args.max_len + 1, self.pad_id)
        items = items.to(self.item_emb.weight.device)
        inputs, labels = items[:, :-1], items[:, 1:]
        hidden = self.encode(inputs)  # [B, L, D]
        return token_loss(self, hidden, labels, loss_type, generator)


def token_loss(
    model: SequenceModel, hidden: torch.Tensor, labels: torch.Tensor, loss_type: str, generator: torch.Generator
) -> torch.Tensor:
    """Loss of predicting ``labels`` (``[B, L]``, pad = ignore) from ``hidden`` ``[B, L, D]``; logits only where needed."""
    keep = labels != model.pad_id
    h = hidden[keep]  # [T, D]
    y = labels[keep]  # [T]
    if loss_type == "ce":
        return F.cross_entropy(model.logits(h), y)
    if loss_type == "bce":
        neg = torch.randint(0, model.num_items, y.shape, generator=generator).to(y.device)
        emb = model.item_emb.weight
        pos_logit = (h * emb[y]).sum(-1)
        neg_logit = (h * emb[neg]).sum(-1)
        return F.binary_cross_entropy_with_logits(
            pos_logit, torch.ones_like(pos_logit)
        ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
    raise ValueError(f"loss_type must be 'ce' or 'bce', got {loss_type!r}")
