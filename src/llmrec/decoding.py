"""Constrained generation over item tokens.

Two ways to get recommendations from the fine-tuned LM, which agree on their top K:

- **Fast path** (``llmrec.llm.model.ItemLM.score``): one forward pass per batch, the decoder's last hidden state
  ``h`` of each prompt dotted with the item tokens' output rows only: ``scores = h @ W_item.T`` -> ``[B, N]``.
- **Constrained decoding** (``ItemConstraintLogitsProcessor`` + ``model.generate``): every token outside the
  catalog's item tokens, and optionally each user's history items, gets ``-inf``, so greedy, beam search and
  sampling can only produce catalog items. With ``num_beams=K`` and one new token, the K beams are K distinct items
  (the K best), identical to the fast path's top K.

Semantic IDs (``llmrec.items.semantic``): an item is ``L`` code tokens, so recommendation is a search over paths.

- ``CodeTrieLogitsProcessor`` allows, at generation step ``t``, only the code tokens that continue a catalog path
  from the ``t`` tokens generated after the prompt (``llmrec.trie.CodeTrie``), minus the user's dead edges (an
  excluded item's last code, and every prefix whose items are all excluded, so no beam dead-ends). It also
  normalises each step's scores (``normalize="level"``, the default: a log-softmax over the level's code tokens,
  the factorisation the code-level training objective fits), so a beam's score is ``sum_l log p(c_l | prompt,
  c_<l)`` over the level's codes.
- ``generate_items_by_codes``: beam search of width ``k`` (``L`` new tokens, length penalty 0) returns ``k``
  distinct catalog items, best first, whenever the user has at least ``k`` allowed items; greedy (``k=1``) and
  sampling work too. Beam search is not exhaustive: with fewer beams than prefixes at some level, an item whose
  prefix fell out of the beam is missed even if its full score is higher (it is exact when ``k`` is at least the
  number of distinct prefixes of every length ``< L``; tested).
- ``beam_score_matrix`` turns the beams into the ``[B, N]`` scores the shared evaluator takes: beam items keep their
  beam scores, every other item gets ``floor``, below every beam item.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from llmrec.batching import pad_sequences
from llmrec.items.atomic import ItemVocab
from llmrec.items.semantic_vocab import SemanticVocab
from llmrec.trie import CodeTrie

BEAM_FLOOR = -1e30  # beam_score_matrix's score of the items outside the beams: finite, below any beam score

NORMALIZE = ("level", "trie", "none")


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


def log_normalize_allowed(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` [R, V] (``-inf`` where not allowed) as a log-softmax over each row's allowed entries; a row with
    none allowed stays ``-inf`` instead of NaN."""
    norm = scores.logsumexp(-1, keepdim=True)
    return torch.where(torch.isfinite(norm), scores - norm, scores)


class CodeTrieLogitsProcessor(LogitsProcessor):
    """Allow only code tokens that continue a catalog path; optionally forbid each user's excluded items.

    Args:
        vocab: the code tokens' location.
        trie: the catalog's code paths.
        prompt_len: width of the (left-padded) prompt batch: tokens from this column on are generated codes.
        exclude: per user, item ids that must not be generated (each user's rows contiguous, as in
            ``ItemConstraintLogitsProcessor``).
        rows_per_user: ``num_beams`` for beam search, ``num_return_sequences`` for sampling, else 1.
        normalize: what the allowed tokens' scores become. ``level``: a log-softmax over the step's level of code
            tokens (a beam's score is then the sum of the per-level conditional log-probabilities); ``trie``: a
            log-softmax over the allowed tokens only (the search's own local distribution); ``none``: the scores as
            ``generate`` hands them over (full-vocabulary log-probabilities in beam search).
    """

    def __init__(
        self,
        vocab: SemanticVocab,
        trie: CodeTrie,
        prompt_len: int,
        exclude: Sequence[Sequence[int]] | None = None,
        rows_per_user: int = 1,
        normalize: str = "level",
    ):
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if tuple(vocab.level_sizes) != tuple(trie.level_sizes):
            raise ValueError(f"vocabulary levels {vocab.level_sizes} differ from the trie's {trie.level_sizes}")
        self.vocab, self.trie, self.prompt_len = vocab, trie, prompt_len
        self.rows_per_user, self.normalize = rows_per_user, normalize
        self.num_users = len(exclude) if exclude is not None else None
        self.dead = trie.dead_edges(exclude) if exclude is not None else None
        self.starts = torch.tensor(vocab.starts)

    def allowed(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, token ids)`` [E] each: the tokens each row may generate next (CPU tensors)."""
        step = input_ids.shape[1] - self.prompt_len
        if not 0 <= step < self.trie.num_levels:
            raise ValueError(f"generation step {step}: generate exactly {self.trie.num_levels} new tokens")
        generated = input_ids[:, self.prompt_len :].cpu()
        nodes = self.trie.walk(generated - self.starts[:step])
        rows, edges = self.trie.children(nodes, step)
        if self.dead is not None and len(self.dead[step]):
            if input_ids.shape[0] != self.num_users * self.rows_per_user:
                raise ValueError(f"{input_ids.shape[0]} rows for {self.num_users} users x {self.rows_per_user}")
            keys = torch.div(rows, self.rows_per_user, rounding_mode="floor") * self.trie.num_edges(step) + edges
            keep = ~torch.isin(keys, self.dead[step])
            rows, edges = rows[keep], edges[keep]
        return rows, self.trie.edge_codes(step, edges) + self.vocab.level_start(step)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, cols = (t.to(scores.device) for t in self.allowed(input_ids))
        if self.normalize == "level":
            start, end = self.vocab.level_range(input_ids.shape[1] - self.prompt_len)
            values = scores[:, start:end].float().log_softmax(-1)[rows, cols - start]
        else:
            values = scores[rows, cols].float()
        out = torch.full(scores.shape, float("-inf"), device=scores.device)
        out[rows, cols] = values
        if self.normalize == "trie":
            out = log_normalize_allowed(out)
        return out.to(scores.dtype)


@torch.no_grad()
def generate_items_by_codes(
    lm,
    vocab: SemanticVocab,
    trie: CodeTrie,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    k: int = 10,
    exclude: Sequence[Sequence[int]] | None = None,
    do_sample: bool = False,
    normalize: str = "level",
    return_scores: bool = False,
    **generate_kwargs,
):
    """Recommend with ``lm.generate`` under the code trie (``L`` new tokens per sequence).

    Beam search (default): ``k`` beams -> up to ``k`` distinct items, best first (exactly ``k`` when the user has at
    least ``k`` items left after ``exclude``). ``k=1``: greedy. ``do_sample=True``: ``k`` independent samples
    (items may repeat). A prompt whose every item is excluded gets ``[]`` and is not run.

    Returns:
        per prompt, a list of internal item ids; with ``return_scores``, also per prompt the list of their scores
        (the sum over levels of the processor's per-step scores; see ``CodeTrieLogitsProcessor``'s ``normalize``).
    """
    if {"num_beams", "num_return_sequences"} & set(generate_kwargs):
        raise ValueError("the beam width is k (num_beams and num_return_sequences are set from it)")
    if exclude is not None and len(exclude) != len(prompts):
        raise ValueError(f"{len(exclude)} exclusion lists for {len(prompts)} prompts")
    live = list(range(len(prompts)))
    if exclude is not None:
        live = [i for i, n in enumerate(trie.num_allowed(exclude)) if n > 0]
    items: list[list[int]] = [[] for _ in prompts]
    scores: list[list[float]] = [[] for _ in prompts]
    if live:
        device = next(lm.parameters()).device
        ids, mask = pad_sequences([prompts[i] for i in live], pad_id, side="left", device=device)
        excl = [exclude[i] for i in live] if exclude is not None else None
        processor = CodeTrieLogitsProcessor(vocab, trie, ids.shape[1], excl, rows_per_user=k, normalize=normalize)
        kwargs = {"num_beams": 1 if do_sample else k, "num_return_sequences": k, "do_sample": do_sample}
        if do_sample:
            kwargs.update(top_k=0, top_p=1.0)
        elif k > 1:
            kwargs.update(length_penalty=0.0)  # every path has L tokens; 0 keeps the score a plain sum
        kwargs.update(generate_kwargs)
        out = lm.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=trie.num_levels,
            logits_processor=[processor],
            pad_token_id=pad_id,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
        found, values = _decode_paths(out, vocab, trie, ids.shape[1], kwargs["num_beams"] > 1)
        for row, i in enumerate(live):
            rows = slice(row * k, (row + 1) * k)
            items[i], scores[i] = _keep_real(found[rows], values[rows], distinct=kwargs["num_beams"] > 1)
    return (items, scores) if return_scores else items


def _keep_real(found: list[int], values: list[float], distinct: bool) -> tuple[list[int], list[float]]:
    """One prompt's returned sequences without beam-search fillers: no catalog path, or a score built on the
    -1e9 that ``generate`` gives its not-yet-used beams (there when fewer than ``k`` prefixes exist); with
    ``distinct``, a filler that repeats a real item is dropped too (the real one comes first, best first)."""
    items, scores = [], []
    for i, v in zip(found, values):
        if i >= 0 and v > -1e8 and not (distinct and i in items):
            items.append(i)
            scores.append(v)
    return items, scores


def _decode_paths(out, vocab: SemanticVocab, trie: CodeTrie, prompt_len: int, beams: bool):
    """Item id (``-1`` if not a catalog path) and score of every returned sequence of ``generate``."""
    new = out.sequences[:, prompt_len : prompt_len + trie.num_levels].cpu()
    if new.shape[1] < trie.num_levels:
        return [-1] * len(new), [float("-inf")] * len(new)
    found = trie.items(new - torch.tensor(vocab.starts))
    if beams:
        values = out.sequences_scores.float().cpu()
    else:  # greedy / sampling: the processed score of each chosen token, summed over the steps
        chosen = new.to(out.scores[0].device)
        values = sum(s.float().gather(1, chosen[:, j : j + 1]).squeeze(1) for j, s in enumerate(out.scores)).cpu()
    return found.tolist(), values.tolist()


def beam_score_matrix(
    items: Sequence[Sequence[int]], scores: Sequence[Sequence[float]], num_items: int, floor: float = BEAM_FLOOR
) -> torch.Tensor:
    """``[B, N]`` float32 scores for the shared evaluator from per-user beams (``generate_items_by_codes``).

    Beam items get their beam scores; every other item gets ``floor`` (default ``BEAM_FLOOR``, -1e30: finite, below any beam
    score), so items outside the beams rank below every beam item and tie with each other; the evaluator breaks the
    tie pessimistically (a target outside the beams ranks after all of them). Pass ``floor=float("-inf")`` to make
    ``llmrec.inference.top_k`` drop non-beam items instead of returning them as fillers.
    """
    out = torch.full((len(items), num_items), floor, dtype=torch.float32)
    for row, (its, vals) in enumerate(zip(items, scores)):
        if len(its) != len(vals):
            raise ValueError(f"row {row}: {len(its)} items but {len(vals)} scores")
        if len(its):
            v = torch.tensor(vals, dtype=torch.float32)
            if not (v > floor).all():
                raise ValueError(f"row {row}: a beam score is not above the floor {floor}")
            out[row, torch.as_tensor(list(its), dtype=torch.long)] = v
    return out
