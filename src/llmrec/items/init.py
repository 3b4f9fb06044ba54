"""Initial values of the item rows: the title's token embeddings or a text encoder's, plus co-occurrence factors.

``init="title"`` (the default; FINDINGS: nearly doubles quality at equal compute):
    input row of item ``i``  = mean of the LM's input embeddings of the tokens of ``titles[i]``;
    output row (untied lm_head only) = mean of the lm_head rows of the same tokens.
    Items with an empty title get the mean of all title-initialised item rows, plus Gaussian noise with the
    model's ``initializer_range`` so that they stay distinguishable; if no item has a title, the mean of the whole
    text vocabulary is used as that centre. ``init="random"`` draws every row from ``N(0, initializer_range^2)``.

``init="text"``: every row set (input rows, and an untied head's) gets ``llmrec.items.text.text_rows`` of the
items' text embeddings (``--item_text_encoder``), mapped into that weight's space by ``--item_text_projection``
around and with the spread of the title rows computed as above (the title rows are the map's target, not the
result). Items with an empty text fall back as in the title init: the mean of the text-initialised rows plus the
same Gaussian noise.

``add_cooccurrence_rows`` then adds ``llmrec.items.cooccurrence`` factors of the training sequences to every item
row set (input rows, and the rows of an untied head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmrec.items.atomic import ItemVocab, item_row_weights
from llmrec.items.cooccurrence import add_cf_rows, cooccurrence_factors
from llmrec.items.text import TextEmbeddings, text_rows

ITEM_INITS = ("title", "random", "text")


def _title_means(weight: torch.Tensor, token_lists: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean row of ``weight`` over each token list: ([N, D] means, [N] bool has-tokens)."""
    dev = weight.device  # the weight may already sit on a GPU (e.g. a 4-bit model loaded with a device_map)
    lengths = torch.tensor([len(t) for t in token_lists], device=dev)
    flat = torch.tensor([t for ts in token_lists for t in ts], dtype=torch.long, device=dev)
    owner = torch.repeat_interleave(torch.arange(len(token_lists), device=dev), lengths)
    sums = torch.zeros(len(token_lists), weight.shape[1], dtype=torch.float32, device=dev)
    if len(flat):
        sums.index_add_(0, owner, weight[flat].float())
    has = lengths > 0
    return sums / lengths.clamp(min=1).unsqueeze(1), has


@torch.no_grad()
def init_item_embeddings(
    model,
    tokenizer,
    vocab: ItemVocab,
    titles: list[str],
    init: str = "title",
    max_title_tokens: int = 32,
    seed: int = 0,
    text_embeddings: TextEmbeddings | None = None,
    text_projection: str = "orthonormal",
) -> dict:
    """Initialise the item rows of the input embeddings (and of an untied lm_head). See the module docstring.

    Args:
        text_embeddings: ``init="text"`` only: the items' text embeddings (``llmrec.items.text``).
        text_projection: ``init="text"`` only: a ``llmrec.items.text.TEXT_PROJECTIONS`` name.

    Returns:
        ``{"titled": n_items_with_title_tokens, "fallback": n_items_without}``; for ``init="text"``, ``"texted"``
        (items with a text embedding) too, and ``"fallback"`` counts the items without one.
    """
    if init not in ITEM_INITS:
        raise ValueError(f"init must be one of {ITEM_INITS}, got {init!r}")
    if len(titles) != vocab.num_items:
        raise ValueError(f"{len(titles)} titles for {vocab.num_items} item tokens")
    if init == "text" and (text_embeddings is None or text_embeddings.vectors.shape[0] != vocab.num_items):
        raise ValueError(f"init 'text' needs text embeddings for the {vocab.num_items} items")
    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    n_vocab = vocab.first_id  # the text vocabulary is everything before the first item token
    if init in ("title", "text"):  # the text init maps into the space of the title rows
        enc = tokenizer(
            [t or "" for t in titles], add_special_tokens=False, truncation=True, max_length=max_title_tokens
        )
        token_lists = [[t for t in ids if t < n_vocab] for ids in enc["input_ids"]]
    else:
        token_lists = [[] for _ in titles]
    noise = torch.randn(vocab.num_items, model.get_input_embeddings().weight.shape[1], generator=gen) * std

    def fill(weight: torch.Tensor) -> None:
        means, has = _title_means(weight, token_lists)
        if init == "text":
            means = text_rows(text_embeddings, means, has, weight[:n_vocab], text_projection, seed)
            has = text_embeddings.has.to(weight.device)
        if init == "random":
            centre = torch.zeros(weight.shape[1], device=weight.device)
        elif has.any():
            centre = means[has].mean(0)
        else:
            centre = weight[:n_vocab].float().mean(0)
        rows = torch.where(has.unsqueeze(1), means, centre + noise.to(weight.device))
        weight[vocab.first_id : vocab.end_id] = rows.to(weight.dtype)

    for weight in item_row_weights(model):
        fill(weight.data)
    n_titled = sum(1 for t in token_lists if t)
    if init == "text":
        n_texted = int(text_embeddings.has.sum())
        return {"titled": n_titled, "texted": n_texted, "fallback": vocab.num_items - n_texted}
    return {"titled": n_titled, "fallback": vocab.num_items - n_titled}


def add_cooccurrence_rows(
    model, vocab: ItemVocab, train_sequences: Sequence[Sequence[int]], dim: int, scale: float, window: int, seed: int
) -> None:
    """Add ``dim`` co-occurrence factors of ``train_sequences`` to every item row set of ``model`` (in place).

    Raises:
        ValueError: ``dim`` exceeds the hidden size or is not below the number of items.
    """
    hidden = model.get_input_embeddings().weight.shape[1]
    if dim > hidden:
        raise ValueError(f"item_cf_dim {dim} exceeds the model's hidden size {hidden}")
    factors = cooccurrence_factors(train_sequences, vocab.num_items, dim, window, seed)
    add_cf_rows([w.data[vocab.first_id : vocab.end_id] for w in item_row_weights(model)], factors, scale, seed)
