"""SASRec (Kang & McAuley, 2018): a causal transformer over the item sequence, output tied to the item embeddings.

Follows RecBole's layout (learned positional embedding, LayerNorm + dropout on the input, post-LN blocks with GELU
feed-forward of width 4 x hidden) and is trained by default with full-softmax cross-entropy on every position,
which is what makes it a strong baseline (the original paper's one-negative BCE is available as ``loss: bce``, and
eSASRec's sampled softmax over ``num_negatives`` sampled negatives, optionally logQ-corrected, as ``loss: sampled``).
"""

from __future__ import annotations

import torch
from torch import nn

from llmrec.baselines.base import ModelArgs, SequenceModel


def transformer_stack(args: ModelArgs) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=args.hidden_size,
        nhead=args.num_heads,
        dim_feedforward=4 * args.hidden_size,
        dropout=args.dropout,
        activation="gelu",
        batch_first=True,
    )
    return nn.TransformerEncoder(layer, args.num_layers, enable_nested_tensor=False)


def init_weights(module: nn.Module) -> None:
    """Normal(0, 0.02) for linear and embedding weights, as in BERT/RecBole."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class SASRec(SequenceModel):
    causal = True

    def __init__(self, args: ModelArgs):
        super().__init__(args)
        self.item_emb = nn.Embedding(args.num_items + 1, args.hidden_size, padding_idx=self.pad_id)
        self.pos_emb = nn.Embedding(args.max_len, args.hidden_size)
        self.emb_norm = nn.LayerNorm(args.hidden_size)
        self.emb_dropout = nn.Dropout(args.dropout)
        self.blocks = transformer_stack(args)
        self.apply(init_weights)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        length = items.shape[1]
        pos = torch.arange(length, device=items.device)
        x = self.emb_dropout(self.emb_norm(self.item_emb(items) + self.pos_emb(pos)))  # [B, L, D]
        # Right padding + causal mask: real positions never see padding, so no key-padding mask is needed.
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=items.device)
        return self.blocks(x, mask=causal, is_causal=True)
