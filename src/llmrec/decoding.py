"""Next-item ranking and constrained generation over item tokens.

Two ways to get recommendations from the fine-tuned LM, which agree on their top K:

- **Fast path** (``score_prompts``): one forward pass per batch, the decoder's last hidden state ``h`` of each prompt
  dotted with the item tokens' output rows only: ``scores = h @ W_item.T`` -> ``[B, num_items]``. The text
  vocabulary is never scored. (For models that rescale logits monotonically, e.g. soft-capping, the order is the
  same as the LM head's.)
- **Constrained decoding** (``ItemConstraintLogitsProcessor`` + ``model.generate``): every token outside the
  catalog's item tokens, and optionally each user's history items, gets ``-inf``, so greedy, beam search and
  sampling can only produce catalog items. With ``num_beams=K`` and one new token, the K beams are K distinct items
  (the K best), identical to the fast path's top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from llmrec.modeling.item_tokens import ItemVocab


def pad_right(prompts: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists: (input_ids [B, L], attention_mask [B, L])."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, : len(p)] = 1
    return ids.to(device), mask.to(device)


def pad_left(prompts: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists (what ``generate`` expects for decoder-only models)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def score_prompts(item_lm, prompts: Sequence[Sequence[int]], pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """Scores of every catalog item as the next token of each prompt: ``[B, num_items]`` float32 on CPU.

    Args:
        item_lm: an ``llmrec.modeling.llm.ItemLM``.
        prompts: token id lists (from ``PromptEncoder.encode``), each non-empty.
        pad_id: padding token id.
        batch_size: prompts per forward pass; prompts are sorted by length so padding stays small.
    """
    device = item_lm.device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = torch.empty(len(prompts), item_lm.vocab.num_items)
    weights = item_lm.item_weights()  # [N, D]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, mask = pad_right([prompts[i] for i in idx], pad_id, device)
        hidden = item_lm.hidden_states(ids, mask)  # [b, L, D]
        last = hidden[torch.arange(len(idx), device=device), mask.sum(1) - 1]  # [b, D]
        out[idx] = (last @ weights.T).float().cpu()
    return out


def mask_items(scores: torch.Tensor, exclude: Sequence[Sequence[int]] | None) -> torch.Tensor:
    """Copy of ``scores`` [B, N] with ``exclude[b]`` items of row ``b`` set to ``-inf``."""
    scores = scores.clone()
    if exclude is not None:
        for b, items in enumerate(exclude):
            if len(items):
                scores[b, torch.as_tensor(list(items), dtype=torch.long)] = float("-inf")
    return scores


def top_k(scores: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Top ``k`` item ids and scores per row (best first); ``-inf`` (masked) items are never returned."""
    k = min(k, scores.shape[1])
    values, ids = torch.topk(scores, k, dim=1)
    items, vals = [], []
    for row_ids, row_vals in zip(ids.tolist(), values.tolist()):
        keep = [(i, v) for i, v in zip(row_ids, row_vals) if v != float("-inf")]
        items.append([i for i, _ in keep])
        vals.append([v for _, v in keep])
    return items, vals


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
    ids, mask = pad_left(prompts, pad_id, device)
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
