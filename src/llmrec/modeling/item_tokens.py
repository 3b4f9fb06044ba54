"""One special token per catalog item, ``<|item_{i}|>`` for internal id ``i``, with title-initialised embeddings.

The item tokens are added to the tokenizer as special tokens (so an id is never split into sub-words and
normalisation never touches it) and receive contiguous token ids ``first_id .. first_id + num_items - 1``; that
contiguity lets scoring slice the item rows of a weight matrix instead of gathering them.

Initialisation (``init="title"``, the default; FINDINGS: nearly doubles quality at equal compute):
    input row of item ``i``  = mean of the LM's input embeddings of the tokens of ``titles[i]``;
    output row (untied lm_head only) = mean of the lm_head rows of the same tokens.
    Items with an empty title get the mean of all title-initialised item rows, plus Gaussian noise with the
    model's ``initializer_range`` so that they stay distinguishable; if no item has a title, the mean of the whole
    text vocabulary is used as that centre. ``init="random"`` draws every row from ``N(0, initializer_range^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ITEM_TOKEN_FORMAT = "<|item_{}|>"


def item_token(item_id: int) -> str:
    """Token string of internal item id ``item_id``."""
    return ITEM_TOKEN_FORMAT.format(item_id)


@dataclass(frozen=True)
class ItemVocab:
    """Where the item tokens live in the vocabulary: ids ``first_id .. first_id + num_items - 1``."""

    first_id: int
    num_items: int

    @property
    def end_id(self) -> int:
        return self.first_id + self.num_items

    def token_id(self, item_id: int) -> int:
        return self.first_id + int(item_id)

    def token_ids(self, device=None) -> torch.Tensor:
        return torch.arange(self.first_id, self.end_id, device=device)

    def is_item(self, token_ids: torch.Tensor) -> torch.Tensor:
        return (token_ids >= self.first_id) & (token_ids < self.end_id)


def find_item_vocab(tokenizer, num_items: int) -> ItemVocab:
    """The ``ItemVocab`` of a tokenizer that already holds the item tokens (e.g. one saved in a run directory).

    Raises:
        ValueError: the tokens are missing or not contiguous.
    """
    first = tokenizer.convert_tokens_to_ids(item_token(0))
    last = tokenizer.convert_tokens_to_ids(item_token(num_items - 1))
    unk = tokenizer.unk_token_id
    if first is None or first == unk or last != first + num_items - 1:
        raise ValueError(
            f"tokenizer does not hold {num_items} contiguous item tokens {item_token(0)}..{item_token(num_items - 1)}"
        )
    return ItemVocab(first, num_items)


def add_item_tokens(tokenizer, num_items: int) -> ItemVocab:
    """Add ``<|item_0|> .. <|item_{num_items-1}|>`` as special tokens; returns where they landed.

    Raises:
        ValueError: some item token already exists (e.g. the tokenizer was already extended).
    """
    from tokenizers import AddedToken

    if tokenizer.convert_tokens_to_ids(item_token(0)) not in (None, tokenizer.unk_token_id):
        raise ValueError(f"tokenizer already contains {item_token(0)}; use find_item_vocab()")
    first = len(tokenizer)
    tokens = [
        AddedToken(item_token(i), special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
        for i in range(num_items)
    ]
    added = tokenizer.add_tokens(tokens, special_tokens=True)
    if added != num_items:
        raise ValueError(f"expected to add {num_items} item tokens, the tokenizer added {added}")
    return find_item_vocab(tokenizer, num_items) if num_items else ItemVocab(first, 0)


def resize_for_items(model, vocab: ItemVocab) -> None:
    """Grow the (input and output) embedding matrices so that every item token has a row."""
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < vocab.end_id:
        model.resize_token_embeddings(vocab.end_id, mean_resizing=False)


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
) -> dict:
    """Initialise the item rows of the input embeddings (and of an untied lm_head). See the module docstring.

    Returns:
        ``{"titled": n_items_with_title_tokens, "fallback": n_items_without}``.
    """
    if init not in ("title", "random"):
        raise ValueError(f"init must be 'title' or 'random', got {init!r}")
    if len(titles) != vocab.num_items:
        raise ValueError(f"{len(titles)} titles for {vocab.num_items} item tokens")
    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    text_rows = vocab.first_id  # the text vocabulary is everything before the first item token
    if init == "title":
        enc = tokenizer(
            [t or "" for t in titles], add_special_tokens=False, truncation=True, max_length=max_title_tokens
        )
        token_lists = [[t for t in ids if t < text_rows] for ids in enc["input_ids"]]
    else:
        token_lists = [[] for _ in titles]
    noise = torch.randn(vocab.num_items, model.get_input_embeddings().weight.shape[1], generator=gen) * std

    def fill(weight: torch.Tensor) -> None:
        means, has = _title_means(weight, token_lists)
        if init == "random":
            centre = torch.zeros(weight.shape[1], device=weight.device)
        elif has.any():
            centre = means[has].mean(0)
        else:
            centre = weight[:text_rows].float().mean(0)
        rows = torch.where(has.unsqueeze(1), means, centre + noise.to(weight.device))
        weight[vocab.first_id : vocab.end_id] = rows.to(weight.dtype)

    for weight in item_row_weights(model):
        fill(weight.data)
    n_titled = sum(1 for t in token_lists if t)
    return {"titled": n_titled, "fallback": vocab.num_items - n_titled}


def item_row_weights(model) -> list[torch.Tensor]:
    """The weights that hold item rows: the input embeddings, plus the output layer's when it is not tied to them."""
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    return [inp] if out is None or out.weight.data_ptr() == inp.data_ptr() else [inp, out.weight]


def is_tied(model) -> bool:
    """Whether the output layer shares its weight with the input embeddings."""
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
