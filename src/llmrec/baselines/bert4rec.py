"""BERT4Rec (Sun et al., 2019): a bidirectional transformer trained with the cloze task.

Training masks each item of a training sequence with probability ``mask_prob`` (at least one per sequence) and
predicts the masked items with a full softmax over the catalog (``loss: sampled``: a sampled softmax, as for SASRec);
prediction appends a ``[mask]`` token after the history and reads its output. Output head as in the paper/RecBole:
dense -> GELU -> LayerNorm -> tied embeddings plus a per-item bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from llmrec.baselines.base import ModelArgs, NegativeSampler, SequenceModel, right_pad, token_loss
from llmrec.baselines.sasrec import init_weights, transformer_stack


class BERT4Rec(SequenceModel):
    causal = False

    def __init__(self, args: ModelArgs):
        super().__init__(args)
        self.mask_id = args.num_items + 1
        self.item_emb = nn.Embedding(args.num_items + 2, args.hidden_size, padding_idx=self.pad_id)
        self.pos_emb = nn.Embedding(args.max_len, args.hidden_size)
        self.emb_norm = nn.LayerNorm(args.hidden_size)
        self.emb_dropout = nn.Dropout(args.dropout)
        self.blocks = transformer_stack(args)
        self.head = nn.Sequential(
            nn.Linear(args.hidden_size, args.hidden_size), nn.GELU(), nn.LayerNorm(args.hidden_size)
        )
        self.out_bias = nn.Parameter(torch.zeros(args.num_items))
        self.apply(init_weights)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(items.shape[1], device=items.device)
        x = self.emb_dropout(self.emb_norm(self.item_emb(items) + self.pos_emb(pos)))  # [B, L, D]
        hidden = self.blocks(x, src_key_padding_mask=items == self.pad_id)
        return self.head(hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().logits(hidden) + self.out_bias

    def candidate_logits(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return super().candidate_logits(hidden, items) + self.out_bias[items]

    def item_row_params(self) -> list[torch.Tensor]:
        return [self.item_emb.weight, self.out_bias]

    @torch.no_grad()
    def add_items(self, count: int) -> list[int]:
        """As ``SequenceModel.add_items``; each new item's output bias is the mean bias."""
        bias = self.out_bias.mean().expand(count)
        ids = super().add_items(count)
        self.mask_id = self.num_items + 1
        self.out_bias = nn.Parameter(torch.cat([self.out_bias.detach(), bias]))
        return ids

    def history_hidden(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        keep = self.args.max_len - 1
        seqs = [list(h)[-keep:] + [self.mask_id] for h in histories]
        items, lengths = right_pad(seqs, self.args.max_len, self.pad_id)
        items = items.to(self.item_emb.weight.device)
        hidden = self.encode(items)
        return hidden[torch.arange(len(items), device=items.device), (lengths - 1).to(items.device)]

    def loss(
        self,
        seqs: Sequence[Sequence[int]],
        loss_type: str,
        generator: torch.Generator,
        sampler: NegativeSampler | None = None,
    ) -> torch.Tensor:
        items, lengths = right_pad(seqs, self.args.max_len, self.pad_id)
        real = items != self.pad_id
        masked = (torch.rand(items.shape, generator=generator) < self.args.mask_prob) & real
        # At least one masked item per sequence: the last one where the random draw masked none.
        none = ~masked.any(dim=1)
        masked[none, (lengths[none] - 1).clamp(min=0)] = True
        masked &= real
        labels = torch.where(masked, items, torch.full_like(items, self.pad_id))
        inputs = torch.where(masked, torch.full_like(items, self.mask_id), items)
        device = self.item_emb.weight.device
        hidden = self.encode(inputs.to(device))
        return token_loss(self, hidden, labels.to(device), loss_type, generator, sampler)
