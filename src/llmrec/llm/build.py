"""Building the trainable model of ``llmrec train``: base LM + item tokens + initial rows + LoRA + prompt encoder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

from llmrec.data import PreparedData
from llmrec.items.atomic import add_item_tokens, resize_for_items
from llmrec.items.init import add_cooccurrence_rows, init_item_embeddings
from llmrec.items.text import TextEmbeddings, item_text_embeddings
from llmrec.items.text_models import EncoderSpec
from llmrec.llm.config import TrainConfig
from llmrec.llm.loading import cache_root, load_causal_lm
from llmrec.llm.lora import adapted_modules, apply_lora
from llmrec.llm.model import ItemLM
from llmrec.prompts import PromptEncoder, PromptTemplate, load_template

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


def effective_cf_dim(cfg: TrainConfig, num_items: int) -> int:
    """``cfg.item_cf_dim``, lowered to ``num_items - 1`` (the most factors a catalog has) with a log note."""
    dim = min(cfg.item_cf_dim, num_items - 1)
    if dim < cfg.item_cf_dim:
        logger.warning("item_cf_dim %d lowered to %d: the catalog has %d items", cfg.item_cf_dim, dim, num_items)
    return max(dim, 0)


def text_encoder_spec(cfg: TrainConfig) -> EncoderSpec:
    """The item text encoder of ``cfg`` (``--item_text_encoder``): the llmrec cache, and for ``lm`` the full
    ``--model`` (every layer, whatever ``--num_layers`` keeps for training; float32)."""
    load = partial(load_causal_lm, num_layers=None, trust_remote_code=cfg.trust_remote_code)
    return EncoderSpec(cfg.item_text_encoder, cache_root(), model=cfg.model, load_lm=load)


def item_text_embeddings_for(cfg: TrainConfig, data: PreparedData) -> TextEmbeddings:
    """The catalog's text embeddings under ``cfg``'s encoder, cached by data fingerprint and encoder."""
    cat = data.catalog
    return item_text_embeddings(cat.titles, cat.texts, data.fingerprint, text_encoder_spec(cfg), cfg.progress)


def build_model(cfg: TrainConfig, data: PreparedData) -> BuiltModel:
    """The model of ``cfg`` for ``data``; every base weight frozen but the LoRA matrices and the item rows.

    Raises:
        ModelLoadError, LoraTargetError, PromptError, ValueError: the model, LoRA targets, template or
            co-occurrence size cannot be used (each message names the option).
    """
    template = load_template(cfg.prompt)  # a bad template name fails before the model loads
    # encoded first: the `lm` encoder loads the full model, freed before the training model loads
    text = item_text_embeddings_for(cfg, data) if cfg.item_init == "text" else None
    lm, tokenizer = load_causal_lm(
        cfg.model,
        num_layers=cfg.num_layers,
        dtype=cfg.dtype,
        load_in_4bit=cfg.load_in_4bit,
        trust_remote_code=cfg.trust_remote_code,
    )
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
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm = apply_lora(lm, vocab, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                    target_modules=cfg.lora_target_modules)  # fmt: skip
    encoder = PromptEncoder(template, tokenizer, vocab, data.catalog, cfg.max_history, cfg.max_prompt_tokens)
    item_lm = ItemLM(
        lm,
        vocab,
        embed_dropout=cfg.embed_dropout,
        item_mask_prob=cfg.item_mask_prob,
        item_mask_fill=cfg.item_mask_fill,
        label_smoothing=cfg.label_smoothing,
    )
    return BuiltModel(item_lm, tokenizer, encoder, template, adapted_modules(lm), cf_dim, stats)
