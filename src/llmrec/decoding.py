"""Constrained generation over item tokens.

Two ways to get recommendations from the fine-tuned LM, which agree on their top K:

- **Fast path** (``llmrec.llm.model.ItemLM.score``): one forward pass per batch, the decoder's last hidden state
  ``h`` of each prompt dotted with the item tokens' output rows only: ``scores = h @ W_item.T`` -> ``[B, N]``.
- **Constrained decoding** (``ItemConstraintLogitsProcessor`` + ``model.generate``): every token outside the
  catalog's item tokens, and optionally each user's history items, gets ``-inf``, so greedy, beam search and
  sampling can only produce catalog items. With ``num_beams=K`` and one new token, the K beams are K distinct items
  (the K best), identical to the fast path's top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from llmrec.batching import pad_sequences
from llmrec.items.atomic import ItemVocab


class ItemConstraintLogitsProcessor(LogitsProcessor):
    """Allow only catalog item tokens; optionally forbid each user's history items.

    Args:
        vocab: the item tokens' location.
        exclude: per input row (user), item ids that must not be generated; rows of ``generate``'s batch are
            ``batch * num_beams`` (or ``* num_return_sequences`` when sampling), each user's rows contiguous.
        rows_per_user: ``num_beams`` for beam search, ``num_return_sequences`` for sampling, else 1.
    """

    def __init__(self, vocab: ItemVocab, exclude: Sequence[Sequence[int]] | None = None, rows_per_user: int = 1):
        self.vocab, self.rows_per_user = vocab, rows_per_user
        self.exclude = (
            [torch.as_tensor(list(e), dtype=torch.long) + vocab.first_id for e in exclude] if exclude else None
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = torch.full_like(scores, float("-inf"))
        allowed[:, self.vocab.first_id : self.vocab.end_id] = 0.0
        if self.exclude is not None:
            for row in range(scores.shape[0]):
                banned = self.exclude[row // self.rows_per_user]
                if len(banned):
                    allowed[row, banned.to(scores.device)] = float("-inf")
        return scores + allowed


@torch.no_grad()
def generate_items(
    lm,
    vocab: ItemVocab,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    k: int = 10,
    do_sample: bool = False,
    exclude: Sequence[Sequence[int]] | None = None,
    **generate_kwargs,
) -> list[list[int]]:
    """Recommend with ``lm.generate`` under the item constraint (one new token per sequence).

    Beam search (default): ``k`` beams -> the ``k`` best distinct items, best first. ``k=1``: greedy.
    ``do_sample=True``: ``k`` independent samples (items may repeat).

    Returns:
        per prompt, a list of ``k`` internal item ids.
    """
    device = next(lm.parameters()).device
    ids, mask = pad_sequences(prompts, pad_id, side="left", device=device)
    processor = ItemConstraintLogitsProcessor(vocab, exclude, rows_per_user=k)
    kwargs = {"num_beams": 1 if do_sample else k, "num_return_sequences": k, "do_sample": do_sample}
    if do_sample:
        kwargs.update(top_k=0, top_p=1.0)
    kwargs.update(generate_kwargs)
    out = lm.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=1,
        logits_processor=[processor],
        pad_token_id=pad_id,
        **kwargs,
    )
    new = (out[:, ids.shape[1]] - vocab.first_id).view(len(prompts), k)
    return new.tolist()
