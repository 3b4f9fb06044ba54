"""Trie-constrained beam search over semantic IDs with one prompt pass per user: the fast path of scoring.

``llmrec.decoding.generate_items_by_codes`` runs ``model.generate`` with ``CodeTrieLogitsProcessor``; Hugging Face
beam search copies every prompt ``W`` times before its first forward pass, so a width-50 search costs 50 prompt
passes. Here each prompt runs through the decoder once and its key/value cache is never copied: after step ``t``
the ``W`` beams' new code tokens of a user run as one block of ``W`` positions appended to that user's cache, under
a tree attention mask (``_tree_mask``) by which each token sees the prompt and its own beam's earlier codes only.
For a prompt of ``P`` tokens that is ``P + W (L - 1)`` token positions instead of ``W (P + L - 1)``, and no
``W``-fold copy (nor per-step reorder) of the prompt's cache, which at width 100 cost more than the model itself
(docs/results.md, "Beam-search speed"). The mask is a 4D additive one, which the eager and SDPA attention of
``transformers`` (the defaults here) take as given; FlashAttention-2, which takes only padding masks, cannot run it.

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
    hidden, cache, last = _prefill(item_lm, ids, mask)  # [B, D], cache of B rows, [B] last prompt position
    hidden = hidden.repeat_interleave(width, dim=0)  # [B*W, D]: before the first step every beam is the empty one
    scores = torch.full((batch, width), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live (empty) beam per user before the first step
    tokens = torch.empty(batch * width, 0, dtype=torch.long)  # [B*W, t] generated code token ids (CPU)
    ancestors = torch.empty(batch, width, 0, dtype=torch.long, device=device)  # [B, W, t] each beam's block slots
    slot = torch.arange(width, device=device).expand(batch, width)[..., None]  # [B, W, 1] each beam's own slot
    weights = item_lm.item_weights()
    for step in range(trie.num_levels):
        cand = _step_scores(hidden, weights, vocab, processor, tokens, step, normalize)  # [B*W, C_t]
        size = cand.shape[1]
        total = (scores.reshape(-1, 1) + cand).reshape(batch, width * size)
        scores, flat = total.topk(width, dim=1)  # [B, W]
        parent = torch.div(flat, size, rounding_mode="floor")  # [B, W] the beam each new beam extends
        src = (rows * width + parent.reshape(-1)).cpu()
        new = flat.reshape(-1).cpu() % size + vocab.level_start(step)
        tokens = torch.cat([tokens[src], new[:, None]], dim=1)
        if step + 1 < trie.num_levels:
            ancestors = torch.cat([ancestors.gather(1, parent[..., None].expand(-1, -1, step)), slot], dim=2)
            out = item_lm.decoder(input_ids=new.view(batch, width).to(device),
                                  attention_mask=_tree_mask(mask, ancestors, width, hidden.dtype),
                                  position_ids=(last + 1 + step)[:, None].expand(batch, width),
                                  cache=cache, use_cache=True)  # fmt: skip
            hidden = out.last_hidden_state.reshape(batch * width, -1)
    items = trie.items(tokens - torch.tensor(vocab.starts)).view(batch, width)
    return _collect(items, scores.float().cpu())


def _prefill(item_lm, ids: torch.Tensor, mask: torch.Tensor):
    """Run the left-padded prompts ``[B, P]`` once; return the last hidden state ``[B, D]``, the cache (``B``
    rows, ``P`` positions) and each prompt's last position ``[B]``."""
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = item_lm.decoder(input_ids=ids, attention_mask=mask, position_ids=pos, cache=DynamicCache(),
                          use_cache=True)  # fmt: skip
    return out.last_hidden_state[:, -1], out.cache, pos[:, -1]


def _tree_mask(prompt_mask: torch.Tensor, ancestors: torch.Tensor, width: int, dtype) -> torch.Tensor:
    """``[B, 1, W, P + W (t + 1)]`` additive attention mask of step ``t``'s ``W`` new tokens per user.

    The cache holds each user's prompt (``P`` positions, ``prompt_mask`` [B, P]) and then one block of ``W``
    tokens per step, slot ``j`` of block ``s`` being the code that beam ``j`` chose at step ``s``. A new token
    sees the real prompt tokens and its own beam's path: slot ``ancestors[b, j, s]`` of every block ``s <= t``
    (``ancestors`` [B, W, t + 1], the last column its own slot).
    """
    batch, _, steps = ancestors.shape
    seen = torch.zeros(batch, width, steps, width, dtype=torch.bool, device=ancestors.device)
    seen.scatter_(3, ancestors[..., None], True)  # [B, W, t+1, W]: which slot of each block a beam sees
    allowed = torch.cat([prompt_mask.bool()[:, None, :].expand(-1, width, -1), seen.flatten(2)], dim=2)
    out = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return out.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


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
