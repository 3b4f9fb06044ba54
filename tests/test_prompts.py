"""Prompt templates: parsing, rendering, chat wrapping, truncation."""

from __future__ import annotations

import pytest

from llmrec.data.dataset import Catalog
from llmrec.items.atomic import add_item_tokens
from llmrec.prompts import PromptEncoder, PromptError, available_templates, load_template, parse_template
from test_llm_helpers import TITLES, make_tokenizer

CATALOG = Catalog(raw_ids=[f"i{i}" for i in range(len(TITLES))], titles=TITLES)


@pytest.fixture
def tok_vocab():
    tok = make_tokenizer()
    return tok, add_item_tokens(tok, len(TITLES))


def test_shipped_templates_load():
    assert {"compact", "compact_bos", "titles", "chat_titles"} <= set(available_templates())
    for name in ("compact", "compact_bos", "titles", "chat_titles"):
        assert "{item}" in load_template(name).item


def test_compact_is_item_tokens_only(tok_vocab):
    tok, vocab = tok_vocab
    enc = PromptEncoder(load_template("compact"), tok, vocab, CATALOG, max_items=3)
    assert enc.encode([0, 1, 2, 3, 4]) == [vocab.token_id(i) for i in (2, 3, 4)]
    assert enc.encode([2], target=7) == [vocab.token_id(2), vocab.token_id(7)]


def test_compact_bos_puts_one_bos_token_first(tok_vocab):
    tok, vocab = tok_vocab
    enc = PromptEncoder(load_template("compact_bos"), tok, vocab, CATALOG, max_items=3)
    assert enc.encode([0, 1, 2, 3, 4]) == [tok.bos_token_id] + [vocab.token_id(i) for i in (2, 3, 4)]
    assert enc.encode([]) == [tok.bos_token_id]
    tok.bos_token = None  # falls back to EOS
    enc = PromptEncoder(load_template("compact_bos"), tok, vocab, CATALOG)
    assert enc.encode([2]) == [tok.eos_token_id, vocab.token_id(2)]
    tok.eos_token = None
    with pytest.raises(PromptError, match="compact_bos.*bos"):
        PromptEncoder(load_template("compact_bos"), tok, vocab, CATALOG)


def test_titles_rendering(tok_vocab):
    tok, vocab = tok_vocab
    enc = PromptEncoder(load_template("titles"), tok, vocab, CATALOG)
    text = enc.render([0, 1], target=2)
    assert text.split() == [
        "the",
        "user",
        "bought",
        ":",
        "<|item_0|>",
        "red",
        "cream",
        ";",
        "<|item_1|>",
        "blue",
        "balm",
        ";",
        "next",
        "item",
        ":",
        "<|item_2|>",
    ]
    ids = enc.encode([0, 5], target=2)  # item 5 has an empty title
    assert ids[-1] == vocab.token_id(2) and vocab.token_id(5) in ids


def test_chat_template_used_when_available(tok_vocab):
    tok, vocab = tok_vocab
    enc = PromptEncoder(load_template("chat_titles"), tok, vocab, CATALOG)
    assert enc.uses_chat
    text = enc.render([3])
    assert text.split()[-3:] == ["<s>", "assistant", ":"] and "<|item_3|>" in text and "[UNK]" not in text
    plain = make_tokenizer(chat=False)
    enc2 = PromptEncoder(load_template("chat_titles"), plain, add_item_tokens(plain, len(TITLES)), CATALOG)
    assert not enc2.uses_chat


def test_token_truncation_drops_oldest_items(tok_vocab):
    tok, vocab = tok_vocab
    enc = PromptEncoder(load_template("titles"), tok, vocab, CATALOG, max_items=20, max_tokens=14)
    ids = enc.encode([0, 1, 2, 3], target=4)
    assert len(ids) <= 14 and vocab.token_id(3) in ids and vocab.token_id(0) not in ids


def test_template_errors(tok_vocab):
    with pytest.raises(PromptError, match="exactly once"):
        parse_template('item = "no token"', "bad")
    with pytest.raises(PromptError, match="line 1"):
        parse_template("prefix: hello", "bad")
    with pytest.raises(PromptError, match="available"):
        load_template("does-not-exist")
    tok, vocab = tok_vocab
    with pytest.raises(PromptError, match="outside the catalog"):
        PromptEncoder(load_template("compact"), tok, vocab, CATALOG).encode([99])


def test_templates_are_packaged_with_the_library():
    """The wheel ships prompts/ as llmrec/prompts (a link in the source tree, listed in package-data)."""
    from pathlib import Path

    import llmrec.prompts as prompts_module

    packaged = Path(prompts_module.__file__).parent / "prompts"
    assert {"compact.txt", "titles.txt", "chat_titles.txt"} <= {p.name for p in packaged.glob("*.txt")}
    pyproject = Path(prompts_module.__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():  # source checkout
        assert '"prompts/*.txt"' in pyproject.read_text()
