"""Building the trainable model of ``llmrec train``: base LM + item tokens + initial rows + LoRA + prompt encoder.

``--item_ids semantic``: the item embeddings (``sid_embeddings``: text, or text + co-occurrence factors) are
clustered by RQ-KMeans (``llmrec.items.semantic.rq_kmeans``, seeded with ``--seed``) into collision-free code paths;
the ``<|sid_l_c|>`` code tokens are added (``add_sid_tokens``), their rows start from the cluster centroids
(``init_code_rows``), and LoRA trains them as it trains atomic item rows (``trainable_token_indices`` = the code
token ids). The codes (and centroids) are saved into the run directory by ``llmrec.llm.rundir.write_train_run``.

Cold-start items (a data set prepared with ``--cold_items``) never reach training: ``ItemLM(cold_items=...)`` leaves
their columns out of the atomic softmax; semantic IDs are fitted on the warm items only and the cold items coded
afterwards (``llmrec.items.semantic.rq_kmeans_warm``). An atomic run on such data also keeps the items' text
embeddings (``BuiltModel.text``), from which the training loop projects the cold items' rows
(``llmrec.llm.coldrows``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from llmrec.data import PreparedData
from llmrec.items.atomic import add_item_tokens, resize_for_items
from llmrec.items.cooccurrence import cooccurrence_factors
from llmrec.items.init import add_cooccurrence_rows, init_item_embeddings
from llmrec.items.semantic import SemanticIds, concat_embeddings, kmeans_estimator, rq_kmeans_warm
from llmrec.items.semantic_vocab import add_sid_tokens, init_code_rows
from llmrec.items.text import TextEmbeddings, item_text_embeddings
from llmrec.items.text_models import EncoderSpec
from llmrec.llm.coldrows import cold_mask, fit_warm_projector
from llmrec.llm.config import TrainConfig
from llmrec.llm.loading import cache_root, load_causal_lm
from llmrec.llm.lora import adapted_modules, apply_lora
from llmrec.llm.model import ItemLM
from llmrec.llm.textmap import LearnedTextMap
from llmrec.prompts import PromptEncoder, PromptTemplate, load_template
from llmrec.trie import CodeTrie

logger = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    item_lm: ItemLM
    tokenizer: object
    encoder: PromptEncoder
    template: PromptTemplate
    lora_modules: list[str]  # leaf names of the modules that got LoRA
    item_cf_dim: int  # co-occurrence factors actually added (item_cf_dim, lowered to num_items - 1 if needed)
    item_init_stats: dict = field(default_factory=dict)  # init_item_embeddings' counts (titled, texted, fallback)
    sids: SemanticIds | None = None  # --item_ids semantic: the catalog's code paths (None: atomic item tokens)
    trie: CodeTrie | None = None  # and their prefix trie, for beam search
    text: TextEmbeddings | None = None  # the items' text embeddings, kept when a run needs them (needs_item_text)


def needs_item_text(cfg: TrainConfig, data: PreparedData) -> bool:
    """Whether a run keeps its items' text embeddings (``item_text.safetensors``): with ``--text_fusion``, and for
    atomic item tokens also on a data set with cold items, whose rows they write (``llmrec.llm.coldrows``, and the
    text projector with ``--cold_rows projector``), with ``--text_projector`` (for items added after training) or
    content dropout; for semantic IDs with ``--sid_cold_codes neighbor`` (the codes of new items come from it)."""
    atomic = cfg.item_ids == "atomic" and (bool(data.cold_items) or cfg.text_projector or cfg.content_dropout > 0)
    neighbor_codes = cfg.item_ids == "semantic" and cfg.sid_cold_codes == "neighbor"  # cold and added items' codes
    return atomic or neighbor_codes or cfg.text_fusion != 0


def effective_cf_dim(cfg: TrainConfig, num_items: int) -> int:
    """``cfg.item_cf_dim``, lowered to ``num_items - 1`` (the most factors a catalog has) with a log note."""
    dim = min(cfg.item_cf_dim, num_items - 1)
    if dim < cfg.item_cf_dim:
        logger.warning("item_cf_dim %d lowered to %d: the catalog has %d items", cfg.item_cf_dim, dim, num_items)
    return max(dim, 0)


def text_encoder_spec(cfg: TrainConfig) -> EncoderSpec:
    """The item text encoder of ``cfg`` (``--item_text_encoder``): the llmrec cache, and for ``lm`` the full
    ``--model`` (every layer, whatever ``--num_layers`` keeps for training; float32)."""
    return encoder_spec(cfg.item_text_encoder, cfg.model, cfg.trust_remote_code)


def encoder_spec(name: str, model: str, trust_remote_code: bool = False) -> EncoderSpec:
    """``text_encoder_spec`` from its three settings (e.g. a run's config.yaml values)."""
    load = partial(load_causal_lm, num_layers=None, trust_remote_code=trust_remote_code)
    return EncoderSpec(name, cache_root(), model=model, load_lm=load)


def item_text_embeddings_for(cfg: TrainConfig, data: PreparedData) -> TextEmbeddings:
    """The catalog's text embeddings under ``cfg``'s encoder, cached by data fingerprint and encoder."""
    cat = data.catalog
    return item_text_embeddings(cat.titles, cat.texts, data.fingerprint, text_encoder_spec(cfg), cfg.progress)


def sid_embeddings(cfg: TrainConfig, data: PreparedData) -> tuple[np.ndarray, int]:
    """``([N, d] float32, cf_dim)``: what RQ-KMeans clusters under ``cfg.sid_embeddings`` (``text``: the text
    embeddings; ``text+cf``: text and ``cf_dim`` co-occurrence factors side by side, ``concat_embeddings``)."""
    text = item_text_embeddings_for(cfg, data).vectors.numpy()
    if cfg.sid_embeddings == "text":
        return text, 0
    dim = effective_cf_dim(cfg, data.num_items)
    if dim < 1:
        raise ValueError(f"sid_embeddings text+cf: the catalog has {data.num_items} item(s), too few for factors")
    factors = cooccurrence_factors(data.train_sequences(), data.num_items, dim, cfg.item_cf_window, cfg.seed)
    return concat_embeddings([text, factors.numpy()], [1.0, cfg.sid_cf_weight]), dim


def build_model(cfg: TrainConfig, data: PreparedData, sids: SemanticIds | None = None) -> BuiltModel:
    """The model of ``cfg`` for ``data``; every base weight frozen but the LoRA matrices and the item rows.

    Args:
        sids: ``--item_ids semantic`` only: the catalog's code paths, computed by the caller (e.g. ``rq_kmeans``
            with another ``estimator``); ``None``: ``rq_kmeans_warm`` of ``sid_embeddings``.

    Raises:
        ModelLoadError, LoraTargetError, PromptError, ValueError: the model, LoRA targets, template or
            co-occurrence size cannot be used (each message names the option).
    """
    template = load_template(cfg.prompt)  # a bad template name fails before the model loads
    # encoded first: the `lm` encoder loads the full model, freed before the training model loads
    semantic = cfg.item_ids == "semantic"
    needs_text = (not semantic and cfg.item_init == "text") or needs_item_text(cfg, data)
    text = item_text_embeddings_for(cfg, data) if needs_text else None
    if sids is not None and (not semantic or sids.num_items != data.num_items):
        raise ValueError(f"sids: precomputed semantic ids need item_ids semantic and {data.num_items} items, got "
                         f"item_ids {cfg.item_ids!r} and {sids.num_items} items")  # fmt: skip
    cf_dim = 0
    if semantic and sids is None:  # fitted on the warm items, the cold ones coded afterwards (as without cold items)
        emb, cf_dim = sid_embeddings(cfg, data)
        near = text.vectors.numpy() if cfg.sid_cold_codes == "neighbor" else None
        sids = rq_kmeans_warm(emb, data.cold_items, extra_codes=cfg.sid_extra_codes, neighbor_text=near,
                              levels=cfg.sid_levels, codes=cfg.sid_codes, seed=cfg.seed,
                              estimator=kmeans_estimator(cfg.sid_kmeans))  # fmt: skip
        logger.info("semantic ids: %d items, level sizes %s", sids.num_items, sids.level_sizes)
    lm, tokenizer = load_causal_lm(
        cfg.model,
        num_layers=cfg.num_layers,
        dtype=cfg.dtype,
        load_in_4bit=cfg.load_in_4bit,
        trust_remote_code=cfg.trust_remote_code,
    )
    if semantic:
        vocab = add_sid_tokens(tokenizer, sids.level_sizes)
        resize_for_items(lm, vocab)
        stats = init_code_rows(lm, vocab, sids.centroids, seed=cfg.seed)
        logger.info("code rows: %s", stats)
    else:
        init_text = text if cfg.item_init == "text" else None
        vocab, stats, cf_dim = _add_item_tokens(cfg, data, lm, tokenizer, init_text)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm = apply_lora(lm, vocab, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                    target_modules=cfg.lora_target_modules)  # fmt: skip
    codes = sids.codes if semantic else None
    encoder = PromptEncoder(template, tokenizer, vocab, data.catalog, cfg.max_history, cfg.max_prompt_tokens, codes)
    item_lm = ItemLM(
        lm,
        vocab,
        embed_dropout=cfg.embed_dropout,
        item_mask_prob=cfg.item_mask_prob,
        item_mask_fill=cfg.item_mask_fill,
        label_smoothing=cfg.label_smoothing,
        cold_items=data.cold_items,
    )
    if cfg.content_dropout > 0:
        item_lm.set_text_map(start_text_map(item_lm, text, data.cold_items, cfg.content_dropout, cfg.seed))
    trie = CodeTrie(sids.codes, sids.level_sizes) if semantic else None
    if semantic and cfg.sid_loss == "trie":  # over the training items' children: no cold leaf is a negative
        warm = np.setdiff1d(np.arange(sids.num_items), np.fromiter(data.cold_items, dtype=np.int64))
        item_lm.set_code_trie(CodeTrie(sids.codes[warm], sids.level_sizes))
    return BuiltModel(item_lm, tokenizer, encoder, template, adapted_modules(lm), cf_dim, stats, sids, trie, text)


def start_text_map(item_lm: ItemLM, text: TextEmbeddings, cold_items, rate: float, seed: int) -> LearnedTextMap:
    """The content-dropout text map, started from the ridge projector of the initial warm rows."""
    cold = cold_mask(item_lm.vocab.num_items, cold_items)
    projector = fit_warm_projector(item_lm, text, cold_items, seed)
    return LearnedTextMap(projector, text.vectors, text.has, text.has.bool() & ~cold, rate)


def _add_item_tokens(cfg: TrainConfig, data: PreparedData, lm, tokenizer, text):
    """Atomic item tokens with their initial rows; returns ``(vocab, init stats, co-occurrence dim added)``."""
    vocab = add_item_tokens(tokenizer, data.num_items)
    resize_for_items(lm, vocab)
    stats = init_item_embeddings(
        lm,
        tokenizer,
        vocab,
        data.catalog.titles,
        init=cfg.item_init,
        seed=cfg.seed,
        text_embeddings=text,
        text_projection=cfg.item_text_projection,
    )
    logger.info("item rows: %s init %s", cfg.item_init, stats)
    cf_dim = effective_cf_dim(cfg, data.num_items)
    if cf_dim:
        train = data.train_sequences()
        add_cooccurrence_rows(lm, vocab, train, cf_dim, cfg.item_cf_scale, cfg.item_cf_window, cfg.seed)
    return vocab, stats, cf_dim
