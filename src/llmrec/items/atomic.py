"""Atomic item tokens: one special token per catalog item, ``<|item_{i}|>`` for internal id ``i``.

The item tokens are added to the tokenizer as special tokens (so an id is never split into sub-words and
normalisation never touches it) and receive contiguous token ids ``first_id .. first_id + num_items - 1``; that
contiguity lets scoring slice the item rows of a weight matrix instead of gathering them. How the rows start is
``llmrec.items.init``.
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

    Every one of the ``num_items`` tokens is checked, not only the first and the last.

    Raises:
        ValueError: a token is missing or the tokens are not contiguous.
    """
    if num_items < 1:
        raise ValueError(f"num_items must be >= 1, got {num_items}")
    ids = tokenizer.convert_tokens_to_ids([item_token(i) for i in range(num_items)])
    first = ids[0]
    if first is None or first == tokenizer.unk_token_id or ids != list(range(first, first + num_items)):
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


def extend_item_tokens(tokenizer, vocab: ItemVocab, count: int) -> ItemVocab:
    """Add the item tokens of ``count`` new items right after ``vocab``'s (``add_items``); returns the new vocab.

    Raises:
        ValueError: other tokens follow the item tokens, so the new ones could not be contiguous with them.
    """
    from tokenizers import AddedToken

    if len(tokenizer) != vocab.end_id:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, its item tokens end at {vocab.end_id}: new item "
                         "tokens would not be contiguous")  # fmt: skip
    tokens = [
        AddedToken(item_token(i), special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)
        for i in range(vocab.num_items, vocab.num_items + count)
    ]
    if tokenizer.add_tokens(tokens, special_tokens=True) != count:
        raise ValueError(f"expected to add {count} item tokens")
    return find_item_vocab(tokenizer, vocab.num_items + count)


def resize_for_items(model, vocab: ItemVocab) -> None:
    """Grow the (input and output) embedding matrices so that every item token has a row."""
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < vocab.end_id:
        model.resize_token_embeddings(vocab.end_id, mean_resizing=False)


def item_row_weights(model) -> list[torch.Tensor]:
    """The weights that hold item rows: the input embeddings, plus the output layer's when it is not tied to them."""
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    return [inp] if out is None or out.weight.data_ptr() == inp.data_ptr() else [inp, out.weight]


def is_tied(model) -> bool:
    """Whether the output layer shares its weight with the input embeddings."""
    out = model.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
