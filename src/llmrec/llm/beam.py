"""Trie-constrained beam search over semantic IDs with one prompt pass per user: the fast path of scoring.

``llmrec.decoding.generate_items_by_codes`` runs ``model.generate`` with ``CodeTrieLogitsProcessor``; Hugging Face
beam search copies every prompt ``W`` times before its first forward pass, so a width-50 search costs 50 prompt
passes. Here each prompt runs through the decoder once, its key/value cache is repeated ``W`` times
(``Cache.batch_repeat_interleave``), and only the ``L - 1`` later code tokens run per beam: for a prompt of ``P``
tokens, ``P + W (L - 1)`` token positions instead of ``W (P + L - 1)``.

It is the same search (``tests/test_beam.py`` checks items and scores against ``generate_items_by_codes``):

- step ``t`` scores the codes of level ``t`` with a log-softmax over that level's code rows (``normalize="level"``
  in the processor); a beam's score is the sum over its ``L`` steps;
- the allowed codes are those of ``CodeTrieLogitsProcessor.allowed``: children in the trie, minus the user's dead
  edges (an edge all of whose items are excluded);
- after each step the ``W`` best (beam, code) pairs of a user survive (before the first step only the empty beam
  exists, as ``generate`` starts its other beams at -1e9); with fewer than ``W`` live candidates the rest stay
  empty and are dropped from the result.

The scores are ``ItemLM.item_weights()`` rows dotted with the decoder's final hidden state, i.e. the LM head's
logits for tied or untied heads alike; a model whose head rescales logits (e.g. Gemma's soft-capping) ranks the
same but scores differently from ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from llmrec.batching import pad_sequences
from llmrec.decoding import CodeTrieLogitsProcessor, log_normalize_allowed
from llmrec.trie import CodeTrie


@torch.no_grad()
def beam_search_codes(
    item_lm,
    trie: CodeTrie,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    width: int,
    exclude: Sequence[Sequence[int]] | None = None,
    normalize: str = "level",
) -> tuple[list[list[int]], list[list[float]]]:
    """Beam search of width ``width`` for each prompt (token id lists, non-empty) of a semantic-ID ``ItemLM``.

    ``normalize``: each step's log-softmax runs over the step's level (``level``) or over the allowed codes only
    (``trie``: a model trained with ``--sid_loss trie``), as ``CodeTrieLogitsProcessor``'s ``normalize``.

    Returns:
        per prompt, up to ``width`` distinct item ids, best first, and their scores (sum of the per-level code
        log-probabilities). Fewer when fewer items remain after ``exclude`` (per prompt, item ids left out).
    """
    if exclude is not None and len(exclude) != len(prompts):
        raise ValueError(f"{len(exclude)} exclusion lists for {len(prompts)} prompts")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if normalize not in ("level", "trie"):
        raise ValueError(f"normalize must be 'level' or 'trie', got {normalize!r}")
    if not prompts:
        return [], []
    vocab, device = item_lm.vocab, item_lm.device
    ids, mask = pad_sequences(prompts, pad_id, side="left", device=device)  # [B, P]
    processor = CodeTrieLogitsProcessor(vocab, trie, 0, exclude, rows_per_user=width)
    batch = len(prompts)
    rows = torch.arange(batch, device=device).repeat_interleave(width)  # [B*W]: each row's user
    hidden, cache, mask, pos = _prefill(item_lm, ids, mask, width)  # [B*W, D]
    scores = torch.full((batch, width), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live (empty) beam per user before the first step
    tokens = torch.empty(batch * width, 0, dtype=torch.long)  # [B*W, t] generated code token ids (CPU)
    weights = item_lm.item_weights()
    for step in range(trie.num_levels):
        cand = _step_scores(hidden, weights, vocab, processor, tokens, step, normalize)  # [B*W, C_t]
        size = cand.shape[1]
        total = (scores.reshape(-1, 1) + cand).reshape(batch, width * size)
        scores, flat = total.topk(width, dim=1)  # [B, W]
        src = (rows * width + torch.div(flat, size, rounding_mode="floor").reshape(-1)).cpu()
        new = flat.reshape(-1).cpu() % size + vocab.level_start(step)
        tokens = torch.cat([tokens[src], new[:, None]], dim=1)
        if step + 1 < trie.num_levels:
            cache.reorder_cache(src.to(device))
            mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=1)
            pos = pos + 1
            out = item_lm.decoder(input_ids=new[:, None].to(device), attention_mask=mask, position_ids=pos[:, None],
                                  cache=cache, use_cache=True)  # fmt: skip
            hidden = out.last_hidden_state[:, -1]
    items = trie.items(tokens - torch.tensor(vocab.starts)).view(batch, width)
    return _collect(items, scores.float().cpu())


def _prefill(item_lm, ids: torch.Tensor, mask: torch.Tensor, width: int):
    """Run the left-padded prompts once; return the last hidden state, cache, mask and last position, ``width``
    times each (rows ``b * width .. b * width + width - 1`` belong to prompt ``b``)."""
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = item_lm.decoder(input_ids=ids, attention_mask=mask, position_ids=pos, cache=DynamicCache(),
                          use_cache=True)  # fmt: skip
    cache = out.cache
    cache.batch_repeat_interleave(width)
    hidden = out.last_hidden_state[:, -1].repeat_interleave(width, dim=0)
    return hidden, cache, mask.repeat_interleave(width, dim=0), pos[:, -1].repeat_interleave(width)


def _step_scores(hidden, weights, vocab, processor, tokens, step: int, normalize: str = "level") -> torch.Tensor:
    """``[R, C_t]`` level-``step`` code log-probabilities of each row, ``-inf`` where the trie forbids the code."""
    start, end = vocab.level_range(step)
    first = vocab.first_id
    logits = hidden.float() @ weights[start - first : end - first].float().T  # [R, C_t]
    logp = logits.log_softmax(-1) if normalize == "level" else logits
    rows, cols = processor.allowed(tokens)
    out = torch.full_like(logp, float("-inf"))
    rows, cols = rows.to(logp.device), (cols - start).to(logp.device)
    out[rows, cols] = logp[rows, cols]
    return log_normalize_allowed(out) if normalize == "trie" else out


def _collect(items: torch.Tensor, scores: torch.Tensor) -> tuple[list[list[int]], list[list[float]]]:
    """Per user, the finite-score beams (already best first) as item and score lists."""
    found, values = [], []
    for its, vals in zip(items.tolist(), scores.tolist()):
        keep = [(i, v) for i, v in zip(its, vals) if v != float("-inf") and i >= 0]
        found.append([i for i, _ in keep])
        values.append([v for _, v in keep])
    return found, values
