"""``add_items`` of the LLM recommenders: items appended to a trained run's catalog, scored at once, no retraining.

Atomic item tokens (``add_atomic_items``): each new item gets a new item token ``<|item_{N+j}|>`` (the tokenizer and
the embedding matrices grow by one row per item, and an untied head's too) whose rows come from the item's text
embedding under the run's ``--item_text_encoder``, exactly as the cold-start items of a ``--cold_items`` run got
theirs (``--cold_rows``): with ``knn`` the mean rows of its nearest trained items (``item_text.safetensors``,
``llmrec.items.neighbors``), with ``projector`` the run's text projector (``text_projector.safetensors``,
``llmrec.items.projector``). Its text joins the run's item texts, so ``--text_fusion`` scores it too. A run with
neither (trained on a data set without cold items) gives a new item the mean of the item rows instead: the honest
fallback of an ID model, it scores like an average item.

Semantic IDs (``add_semantic_items``): each new item gets a code path from its text embedding (``assign_codes``
against the run's centroids: the nearest centroid of each level's residual, and a free value of the disambiguation
level); when that level needs more values than it has, its missing code tokens are added, with the mean row of the
level's existing tokens. The trie is rebuilt with the new leaves. For ``--sid_embeddings text+cf`` a new item has no
interactions: its co-occurrence block is zero. With ``--sid_cold_codes neighbor`` the k-means codes are instead those
of the nearest trained item by text cosine (``neighbor_prefix``), so the new leaf sits beside that item.

Either needs a merged model (the default of ``load_llm_run``); a QLoRA run (4-bit, kept unmerged) raises
``NotImplementedError``. The catalog check (``Catalog.extended``: an empty, repeated or known raw id raises
``DataError``) and the text encoding run before anything changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from llmrec.errors import DataError
from llmrec.items.atomic import extend_item_tokens, resize_for_items
from llmrec.items.neighbors import nearest_rows
from llmrec.items.semantic import SemanticIds, assign_codes, concat_embeddings, neighbor_prefix
from llmrec.items.semantic_vocab import extend_last_level
from llmrec.items.text import TextEmbeddings, encode_item_texts
from llmrec.items.text_models import build_encoder
from llmrec.llm.build import encoder_spec
from llmrec.llm.coldrows import row_sets
from llmrec.prompts import PromptEncoder
from llmrec.trie import CodeTrie


@dataclass
class NewItemText:
    """How a run embeds the text of an item added after training (its config.yaml settings).

    The encoder is loaded on first use and kept (an ``lm`` encoder is the full base model).
    """

    encoder: str  # --item_text_encoder
    model: str  # --model (what the `lm` encoder loads)
    trust_remote_code: bool = False
    cf_dim: int = 0  # semantic IDs with --sid_embeddings text+cf: the co-occurrence block (zero for a new item)
    cf_weight: float = 1.0
    cold_codes: str = "centroid"  # semantic IDs: --sid_cold_codes (neighbor: the codes of the nearest trained item)
    _loaded: object = field(default=None, repr=False)

    def embed(self, titles: Sequence[str], texts: Sequence[str]) -> TextEmbeddings:
        if self._loaded is None:
            self._loaded = build_encoder(encoder_spec(self.encoder, self.model, self.trust_remote_code))
        return encode_item_texts(self._loaded, titles, texts)


def _check_mergeable(rec) -> None:
    if hasattr(rec.item_lm.lm, "peft_config"):
        raise NotImplementedError("adding items needs the merged model; this run is loaded unmerged (QLoRA)")


def _extended(rec, raw_ids, titles, texts):
    """``(the catalog with the new items, old item count, new item count)``; checks run before anything changes:
    ``Catalog.extended``'s raw ids, then (when there is something to add) that the model is merged."""
    catalog = rec.catalog.extended(raw_ids, titles, texts)
    n, m = len(rec.catalog), len(catalog) - len(rec.catalog)
    if m:
        _check_mergeable(rec)
    return catalog, n, m


def _encoder(rec, vocab, catalog, codes=None) -> PromptEncoder:
    e = rec.encoder
    return PromptEncoder(e.template, e.tokenizer, vocab, catalog, e.max_items, e.max_tokens, codes)


@torch.no_grad()
def add_atomic_items(rec, raw_ids: Sequence[str], titles: Sequence[str], texts: Sequence[str]) -> list[int]:
    """``LLMRecommender.add_items`` (see the module docstring); returns the new internal ids."""
    catalog, n, m = _extended(rec, raw_ids, titles, texts)
    if not m:
        return []
    item_lm, projector, known = rec.item_lm, rec.projector, rec.texts
    sets = row_sets(item_lm)
    new = {name: rows.detach().float().mean(0, keepdim=True).expand(m, -1) for name, rows in sets.items()}
    knn = rec.cold_rows == "knn" and known is not None
    emb = rec.item_text.embed(list(titles), list(texts)) if (projector is not None or known is not None) else None
    widths = {"item texts": known.vectors.shape[1] if known is not None else None,
              "text projector": projector.dim if projector is not None else None}  # fmt: skip
    for what, width in widths.items():
        if width is not None and emb.dim != width:
            raise ValueError(f"text embeddings of width {emb.dim}; the run's {what} have width {width}")
    if knn:
        new = {name: nearest_rows(rows.detach(), known.vectors, known.trained, emb.vectors, rec.cold_knn)
               for name, rows in sets.items()}  # fmt: skip
    elif projector is not None:
        new.update({name: projector.maps[name].rows(emb.vectors, emb.has) for name in new if name in projector.maps})
    vocab = extend_item_tokens(rec.tokenizer, item_lm.vocab, m)
    resize_for_items(item_lm.lm, vocab)
    item_lm.vocab = vocab
    for name, rows in row_sets(item_lm).items():
        rows[n:] = new[name].to(device=rows.device, dtype=rows.dtype)
    rec.encoder, rec.catalog = _encoder(rec, vocab, catalog), catalog
    if known is not None:  # its text joins the run's (untrained): --text_fusion scores it
        rec.texts = known.extended(emb.vectors)
    return list(range(n, n + m))


def new_codes(rec, titles: Sequence[str], texts: Sequence[str]) -> tuple[np.ndarray, TextEmbeddings]:
    """``([M, L] collision-free code paths, text embeddings)`` of new items from their text (see the module
    docstring)."""
    sids: SemanticIds = rec.sids
    text = rec.item_text.embed(list(titles), list(texts))
    emb = text.vectors.numpy()
    if rec.item_text.cf_dim:
        emb = concat_embeddings([emb, np.zeros((len(emb), rec.item_text.cf_dim), np.float32)],
                                [1.0, rec.item_text.cf_weight])  # fmt: skip
    if emb.shape[1] != sids.centroids[0].shape[1]:
        raise ValueError(
            f"item embeddings of width {emb.shape[1]}; the run's centroids have {sids.centroids[0].shape[1]}"
        )
    prefix = None
    if rec.item_text.cold_codes == "neighbor":
        if rec.texts is None:
            raise DataError("sid_cold_codes neighbor: the run has no item_text.safetensors to find neighbours in")
        known = rec.texts.vectors.numpy()
        prefix = neighbor_prefix(text.vectors.numpy(), known, rec.texts.trained.numpy(), sids.codes)
    return assign_codes(emb, sids.centroids, sids.codes, None, prefix), text


@torch.no_grad()
def add_semantic_items(rec, raw_ids: Sequence[str], titles: Sequence[str], texts: Sequence[str]) -> list[int]:
    """``SemanticLLMRecommender.add_items`` (see the module docstring); returns the new internal ids."""
    catalog, n, m = _extended(rec, raw_ids, titles, texts)
    if not m:
        return []
    if rec.sids is None or rec.item_text is None:
        raise NotImplementedError(
            "this recommender has no centroids or text encoder settings (load it with load_llm_run)"
        )
    codes, text = new_codes(rec, titles, texts)
    if rec.texts is not None and text.dim != rec.texts.vectors.shape[1]:
        raise ValueError(
            f"text embeddings of width {text.dim}; the run's item texts have {rec.texts.vectors.shape[1]}"
        )
    item_lm, old = rec.item_lm, rec.item_lm.vocab
    size = max(old.level_sizes[-1], int(codes[:, -1].max()) + 1)
    vocab = extend_last_level(rec.tokenizer, old, size)
    if vocab != old:  # new values of the disambiguation level: the mean row of the level's existing tokens
        resize_for_items(item_lm.lm, vocab)
        item_lm.vocab = vocab
        start, end = (i - vocab.first_id for i in old.level_range(old.num_levels - 1))
        for rows in row_sets(item_lm).values():
            rows[end:] = rows[start:end].mean(0)
    sids = SemanticIds(np.concatenate([rec.sids.codes, codes]), vocab.level_sizes, rec.sids.centroids)
    rec.trie, rec.sids = CodeTrie(sids.codes, sids.level_sizes), sids
    rec.encoder, rec.catalog = _encoder(rec, vocab, catalog, sids.codes), catalog
    if rec.texts is not None:  # its text joins the run's (untrained): --text_fusion scores it
        rec.texts = rec.texts.extended(text.vectors)
    return list(range(n, n + m))
