"""``ItemLM``: a causal LM seen as a next-item model over its item tokens (or its semantic-ID code tokens).

Shapes: ``B`` prompts, ``L`` tokens, ``D`` hidden size, ``N`` catalog items, ``T`` training targets in a batch.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import nn

from llmrec.batching import pad_sequences
from llmrec.items.atomic import ItemVocab
from llmrec.items.semantic_vocab import SemanticVocab
from llmrec.llm.config import MASK_FILLS


def item_rows(layer: nn.Module, vocab: ItemVocab | SemanticVocab) -> torch.Tensor:
    """Effective item (or code token) rows [end_id - first_id, D] of an embedding/linear layer, seen through a peft
    trainable-tokens wrapper."""
    adapter = getattr(layer, "token_adapter", None)
    if adapter is not None and not adapter.disable_adapters and adapter.active_adapters:
        name = adapter.active_adapters[0]
        src = adapter.tied_adapter or adapter
        if name in src.trainable_tokens_delta:
            idx = src.token_indices[name]
            rows = vocab.end_id - vocab.first_id
            if idx[0] == vocab.first_id and len(idx) == rows and idx[-1] == vocab.end_id - 1:
                return src.trainable_tokens_delta[name]
    weight = layer.original_module.weight if hasattr(layer, "original_module") else layer.weight
    return weight[vocab.first_id : vocab.end_id]


class ItemLM(nn.Module):
    """The LM seen as a next-item model: decoder hidden states dotted with the item tokens' output rows.

    ``forward`` computes the summed next-item cross-entropy over the item-token vocabulary only, at every position
    flagged in ``target_mask`` (the hidden state *before* each flagged item token predicts it). Keeping the loss
    inside ``forward`` lets DDP/Accelerate wrap this module as a whole. ``score`` is the fast ranking path: one
    forward pass, the last hidden state of each prompt against the item rows only (the text vocabulary is never
    scored; for models that rescale logits monotonically, e.g. soft-capping, the order is the LM head's).

    Args:
        lm: the (peft-wrapped or merged) causal LM.
        vocab: item token location.
        embed_dropout: dropout on the input embeddings during training.
        item_mask_prob: while training, each history item token's input embedding is replaced with this probability
            (its target is kept). Unlike element-wise dropout this hides whole items, so a long training prefix
            can't be memorised as a user fingerprint (the item-masking augmentation of CL4SRec/BERT4Rec).
        item_mask_fill: what a hidden item's input becomes. ``zero``: a zero vector (the selected recipe; beware
            that a zero vector at position 0 stays exactly zero through every layer and RMSNorm's backward at 0
            blows the gradient up ~1000x per layer, so keep a BOS token first, as ``compact_bos`` does).
            ``mean``: the mean of the current item rows (detached), an "unknown item"; stable at any depth.
        label_smoothing: label smoothing of the next-item cross-entropy (spread over the item tokens only).
        cold_items: internal ids of cold-start items (``PreparedData.cold_items``), which training must never see.
            Atomic item tokens: the training cross-entropy runs over the *warm* item rows only (the cold columns are
            left out of the softmax, the label smoothing is spread over the warm items, and a cold target raises),
            and the ``mean`` fill is the mean of the warm rows; so a cold item's rows get exactly zero gradient at
            every step (its tokens never appear in a training input either: ``PreparedData.train_sequences`` drops
            them). ``score`` still ranks all ``N`` items (validation may score every item). Semantic IDs: nothing
            to mask, the code tokens are shared by all items (a cold item is simply never a target). Empty (the
            default): the computation is exactly the one without cold items.

    Semantic IDs (``vocab`` a ``SemanticVocab``): every target is a code token, and its cross-entropy runs over the
    code tokens of its own level only (rows ``vocab.level_range(l)``), label smoothing spread over that level.
    Item masking hides whole items: one draw per item (at its level-0 code) hides all its ``L`` code tokens, with
    ``zero`` or the mean of the current rows of each code's level (``mean``). ``score`` is for atomic item tokens
    only; a semantic-ID model ranks by beam search (``llmrec.llm.recommender.SemanticLLMRecommender``).
    """

    def __init__(
        self,
        lm,
        vocab: ItemVocab | SemanticVocab,
        embed_dropout: float = 0.0,
        item_mask_prob: float = 0.0,
        item_mask_fill: str = "zero",
        label_smoothing: float = 0.0,
        cold_items: Collection[int] = (),
    ):
        super().__init__()
        if item_mask_fill not in MASK_FILLS:
            raise ValueError(f"item_mask_fill must be one of {MASK_FILLS}, got {item_mask_fill!r}")
        self.lm, self.vocab = lm, vocab
        self.semantic = isinstance(vocab, SemanticVocab)
        self.item_mask_fill, self.item_mask_prob = item_mask_fill, item_mask_prob
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.label_smoothing = label_smoothing
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self.decoder = getattr(base, base.base_model_prefix)
        self.tied = bool(getattr(base.config, "tie_word_embeddings", False)) or base.get_output_embeddings() is None
        self._base = [base]  # a list: not registered as a submodule twice
        self.code_trie = None  # --sid_loss trie: the training items' CodeTrie (set_code_trie)
        self.text_map = None  # --content_dropout: a llmrec.llm.textmap.LearnedTextMap (set_text_map)
        self.set_cold_items(cold_items)

    def set_text_map(self, text_map) -> None:
        """Train with content dropout (``llmrec.llm.textmap``): atomic item tokens only."""
        if self.semantic:
            raise TypeError("content dropout is for atomic item tokens (semantic IDs code items from their text)")
        self.text_map = text_map

    def set_cold_items(self, cold_items: Collection[int]) -> None:
        """The items training must never see (see the class docstring); ``()`` for none."""
        self.cold_items = tuple(sorted({int(i) for i in cold_items}))
        self._warm = self._warm_pos = None  # [W] warm item ids, [N] their position among them (-1: cold)
        if not self.cold_items or self.semantic:
            return
        n = self.vocab.num_items
        if self.cold_items[0] < 0 or self.cold_items[-1] >= n:
            raise ValueError(f"cold_items must lie in 0..{n - 1}")
        is_cold = torch.zeros(n, dtype=torch.bool)
        is_cold[list(self.cold_items)] = True
        self._warm = (~is_cold).nonzero().squeeze(1)
        self._warm_pos = torch.full((n,), -1, dtype=torch.long)
        self._warm_pos[self._warm] = torch.arange(len(self._warm))

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def item_weights(self) -> torch.Tensor:
        """Output rows of the item tokens, [N, D] (semantic IDs: of every code token, [C, D]; differentiable)."""
        base = self._base[0]
        return item_rows(base.get_input_embeddings() if self.tied else base.get_output_embeddings(), self.vocab)

    def hide_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: the item tokens to hide in this training forward pass (each with ``item_mask_prob``)."""
        draw = torch.rand(input_ids.shape, device=input_ids.device)
        if not self.semantic:
            return self.vocab.is_item(input_ids) & (draw < self.item_mask_prob)
        level = self.vocab.level_of(input_ids)  # [B, L], -1 for text tokens
        start = (level == 0) & (draw < self.item_mask_prob)  # one draw per item, at its first code
        hide = start.clone()
        for lvl in range(1, self.vocab.num_levels):  # an item's codes are contiguous: level l sits l tokens later
            hide[:, lvl:] |= start[:, :-lvl] & (level[:, lvl:] == lvl)
        return hide

    def _mask_fill(self, embedding: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """The ``mean`` fill of each position: [D] (atomic), or [B, L, D] (each code token's level mean)."""
        rows = item_rows(embedding, self.vocab).detach()
        if not self.semantic:
            return (rows if self._warm is None else rows[self._warm.to(rows.device)]).mean(0)  # [D]
        first = self.vocab.first_id
        ranges = [self.vocab.level_range(lvl) for lvl in range(self.vocab.num_levels)]
        means = torch.stack([rows[s - first : e - first].mean(0) for s, e in ranges])  # [levels, D]
        return means[self.vocab.level_of(input_ids).clamp(min=0)]  # [B, L, D]

    def _content_inputs(self, embeds: torch.Tensor, input_ids: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """``embeds`` [B, L, D] with the input rows of the dropped items ``drop`` [M] replaced by the text map's."""
        n, dev = self.vocab.num_items, input_ids.device
        rank = torch.full((n,), -1, dtype=torch.long, device=dev)  # [N] position in drop, -1: not dropped
        rank[drop.to(dev)] = torch.arange(len(drop), device=dev)
        item = (input_ids - self.vocab.first_id).clamp(0, n - 1)
        r = torch.where(self.vocab.is_item(input_ids), rank[item], -1)  # [B, L]
        rows = self.text_map.rows("input", drop).to(embeds.dtype)  # [M, D]
        return torch.where((r >= 0).unsqueeze(-1), rows[r.clamp(min=0)], embeds)

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final (normed) decoder hidden states [B, L, D]; right padding keeps positions 0.. for real tokens.

        ``drop`` [M]: items whose input rows are the text map's in this pass (content dropout; training only).
        """
        embedding = self._base[0].get_input_embeddings()
        embeds = embedding(input_ids)  # [B, L, D]
        if drop is not None:
            embeds = self._content_inputs(embeds, input_ids, drop)
        embeds = self.embed_dropout(embeds)
        if self.training and self.item_mask_prob > 0:
            hide = self.hide_mask(input_ids).unsqueeze(-1)  # [B, L, 1]
            if self.item_mask_fill == "zero":
                embeds = embeds.masked_fill(hide, 0.0)
            else:
                fill = self._mask_fill(embedding, input_ids)
                embeds = torch.where(hide, fill.to(embeds.dtype), embeds)
        return self.decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor):
        """Summed cross-entropy and target count.

        Args:
            input_ids, attention_mask: [B, L], right-padded.
            target_mask: [B, L] bool, True at positions holding an item token to predict (never position 0).

        Returns:
            ``(loss_sum, num_targets)``.
        """
        drop = self.text_map.draw() if self.training and self.text_map is not None else None  # [M] or None
        hidden = self.hidden_states(input_ids, attention_mask, drop)  # [B, L, D]
        tmask = target_mask[:, 1:]
        h = hidden[:, :-1][tmask]  # [T, D], the state before each target token
        if self.semantic:
            prefixes = self._target_prefixes(input_ids, tmask) if self.code_trie is not None else None
            return self._code_loss(h, input_ids[:, 1:][tmask], prefixes)
        targets = input_ids[:, 1:][tmask] - self.vocab.first_id  # [T]
        weights = self.item_weights().float()  # [N, D]
        if drop is not None:  # the dropped items' softmax columns are the text map's rows
            rows = self.text_map.rows("input" if self.tied else "output", drop).float()
            weights = weights.index_copy(0, drop.to(weights.device), rows)
        if self._warm is not None:  # cold items: out of the softmax, targets renumbered among the warm items
            targets = self._warm_pos.to(targets.device)[targets]
            if (targets < 0).any():
                raise ValueError("a training target is a cold item (cold items must never reach training)")
            weights = weights[self._warm.to(weights.device)]  # [W, D]
        logits = h.float() @ weights.T  # [T, N] (or [T, W])
        loss = nn.functional.cross_entropy(logits, targets, reduction="sum", label_smoothing=self.label_smoothing)
        return loss, targets.numel()

    def set_code_trie(self, trie) -> None:
        """Semantic IDs: normalise each code's cross-entropy over the children of its prefix in ``trie`` (a
        ``llmrec.trie.CodeTrie`` of the *training* items: warm ones only) instead of over its whole level; ``None``:
        over the level (``--sid_loss level``)."""
        if not self.semantic and trie is not None:
            raise TypeError("a code trie is for semantic-ID models")
        self.code_trie = trie

    def _code_loss(self, h: torch.Tensor, tokens: torch.Tensor, prefixes: list[torch.Tensor] | None = None):
        """Summed cross-entropy of code-token targets ``tokens`` [T], each over its own level's codes only, or with
        ``code_trie`` over the children of its prefix (``prefixes[l]``: [T_l, l] codes of the level-``l`` targets'
        items so far)."""
        levels = self.vocab.level_of(tokens)  # [T]
        if (levels < 0).any():
            raise ValueError("a target of a semantic-ID model is not a code token")
        weights, first = self.item_weights().float(), self.vocab.first_id  # [C, D]
        loss = h.new_zeros((), dtype=torch.float32)
        for lvl in range(self.vocab.num_levels):
            sel = levels == lvl
            start, end = self.vocab.level_range(lvl)
            logits = h[sel].float() @ weights[start - first : end - first].T  # [T_l, C_l]
            if self.code_trie is None:
                loss = loss + nn.functional.cross_entropy(
                    logits, tokens[sel] - start, reduction="sum", label_smoothing=self.label_smoothing
                )
            else:
                loss = loss + self._trie_ce(logits, tokens[sel] - start, prefixes[lvl], lvl)
        return loss, tokens.numel()

    def _trie_ce(self, logits: torch.Tensor, target: torch.Tensor, prefix: torch.Tensor, level: int) -> torch.Tensor:
        """Summed label-smoothed cross-entropy of ``logits`` [T, C] over the trie children of each ``prefix`` [T, l]
        (the smoothing spread over those children)."""
        rows, edges = self.code_trie.children(self.code_trie.walk(prefix.cpu()), level)
        allowed = torch.zeros(logits.shape, dtype=torch.bool)
        allowed[rows, self.code_trie.edge_codes(level, edges)] = True
        allowed = allowed.to(logits.device)
        if not bool(allowed.gather(1, target[:, None]).all()):
            raise ValueError("a training target's code path is not in the training trie")
        logp = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
        nll = -logp.gather(1, target[:, None]).squeeze(1)
        smooth = -logp.masked_fill(~allowed, 0.0).sum(-1) / allowed.sum(-1)
        return ((1 - self.label_smoothing) * nll + self.label_smoothing * smooth).sum()

    def _target_prefixes(self, input_ids: torch.Tensor, tmask: torch.Tensor) -> list[torch.Tensor]:
        """Per level ``l``, ``[T_l, l]`` codes of the preceding code tokens of each level-``l`` target (its own item's
        first ``l`` codes: an item's code tokens are contiguous), in the order of ``input_ids[:, 1:][tmask]``."""
        b, t = tmask.nonzero(as_tuple=True)
        pos = t + 1  # target positions in input_ids
        levels = self.vocab.level_of(input_ids[b, pos])
        out = []
        for lvl in range(self.vocab.num_levels):
            sel = levels == lvl
            cols = [input_ids[b[sel], pos[sel] - lvl + j] - self.vocab.level_start(j) for j in range(lvl)]
            out.append(torch.stack(cols, 1) if cols else torch.zeros(int(sel.sum()), 0, dtype=torch.long))
        return out

    @torch.no_grad()
    def score(self, prompts: list[list[int]], pad_id: int, batch_size: int = 64) -> torch.Tensor:
        """Scores of every item as the next token of each prompt (token id lists): [B, N] float32 on CPU.

        Runs in eval mode (restoring the previous mode); prompts are sorted by length so padding stays small; an
        empty prompt is scored as a single padding token.
        """
        if self.semantic:
            raise TypeError("ItemLM.score ranks atomic item tokens; a semantic-ID model ranks by beam search")
        was_training = self.training
        self.eval()
        try:
            order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
            out = torch.empty(len(prompts), self.vocab.num_items)
            weights = self.item_weights()  # [N, D]
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, mask = pad_sequences([prompts[i] or [pad_id] for i in idx], pad_id, device=self.device)
                hidden = self.hidden_states(ids, mask)  # [b, L, D]
                last = hidden[torch.arange(len(idx), device=ids.device), mask.sum(1) - 1]  # [b, D]
                out[idx] = (last @ weights.T).float().cpu()
            return out
        finally:
            self.train(was_training)
