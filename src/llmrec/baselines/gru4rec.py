"""GRU4Rec (Hidasi et al., 2016) in its sequence form: embedding -> dropout -> GRU -> projection on every position.

As in RecBole: embedding size = ``hidden_size``, GRU state ``2 x hidden_size``, a linear map back to the embedding
size, output tied to the item embeddings, full-softmax cross-entropy by default (``loss: sampled``: the sampled
softmax of ``llmrec.baselines.base.NegativeSampler``).
"""

from __future__ import annotations

import torch
from torch import nn

from llmrec.baselines.base import ModelArgs, SequenceModel
from llmrec.baselines.sasrec import init_weights


class GRU4Rec(SequenceModel):
    causal = True

    def __init__(self, args: ModelArgs):
        super().__init__(args)
        self.item_emb = nn.Embedding(args.num_items + 1, args.hidden_size, padding_idx=self.pad_id)
        self.emb_dropout = nn.Dropout(args.dropout)
        self.gru = nn.GRU(args.hidden_size, 2 * args.hidden_size, num_layers=args.num_layers, batch_first=True)
        self.proj = nn.Linear(2 * args.hidden_size, args.hidden_size)
        self.apply(init_weights)
        for name, param in self.gru.named_parameters():
            if "weight" in name:
                nn.init.xavier_uniform_(param)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        # Right padding: a unidirectional GRU's outputs at real positions never depend on the padding after them.
        out, _ = self.gru(self.emb_dropout(self.item_emb(items)))  # [B, L, 2D]
        return self.proj(out)  # [B, L, D]
