"""Rendering item histories into token ids from the templates in ``prompts/*.txt``.

A template file holds ``key = "JSON string"`` lines (``#`` starts a comment):

    prefix  text before the history; ``{bos}`` becomes the tokenizer's BOS token (its EOS token when it has no BOS),
            e.g. to give the first history item a position other than 0, which causal LMs use as an attention sink
    item    one history item; ``{item}`` is the item token (required), ``{title}`` and ``{raw_id}`` come from the
            catalog
    suffix  the cue after the history; the predicted item token follows it directly
    system  system message, used only with ``chat``
    chat    "true": wrap ``prefix + items + suffix`` as the user turn of the tokenizer's chat template and let the
            assistant answer with the item token; ignored (plain text) when the tokenizer has no chat template

A prompt is ``[chat head] prefix item(h_1) ... item(h_n) suffix [chat tail]`` followed, in training, by the target
item token. Pieces are tokenized separately and concatenated (each item piece once, cached), so an item token
is always the single id of ``<|item_i|>`` and truncation works on whole items: the history keeps its last
``max_items`` items, then drops the oldest until the prompt fits ``max_tokens``.

Semantic IDs (``llmrec.items.semantic``): with a ``SemanticVocab`` and the catalog's code paths, ``{item}`` (and the
target) becomes the item's ``L`` code tokens ``<|sid_0_c0|>..<|sid_{L-1}_c{L-1}|>``, one id each, in level order;
truncation still removes whole items (all ``L`` codes, and their text).

Templates are looked up by name in ``$LLMREC_PROMPTS`` (if set), then in the repository's ``prompts/``, then in the
copy packaged into the wheel (``llmrec/prompts``, a link to ``prompts/`` in the source tree);
a path to a ``.txt`` file works too. Run directories store the template text, so loading a run never needs
the lookup.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmrec.errors import PromptError
from llmrec.items.atomic import ItemVocab
from llmrec.items.semantic_vocab import SemanticVocab

_KEYS = {"prefix", "item", "suffix", "system", "chat"}
_PLACEHOLDER = "\u2063LLMREC_USER_TURN\u2063"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    item: str = "{item}"
    prefix: str = ""
    suffix: str = ""
    system: str = ""
    chat: bool = False
    text: str = ""  # the file's source, saved into run directories


def template_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("LLMREC_PROMPTS"):
        dirs.append(Path(os.environ["LLMREC_PROMPTS"]))
    dirs.append(Path(__file__).resolve().parents[2] / "prompts")  # a source checkout's prompts/
    dirs.append(Path(__file__).resolve().parent / "prompts")  # packaged copy (a link to prompts/ in the repository)
    seen, unique = set(), []  # in a checkout the packaged link and prompts/ are the same directory
    for d in dirs:
        if d.is_dir() and d.resolve() not in seen:
            seen.add(d.resolve())
            unique.append(d)
    return unique


def available_templates() -> list[str]:
    """Names of the templates found in the template directories."""
    return sorted({p.stem for d in template_dirs() if d.is_dir() for p in d.glob("*.txt")})


def parse_template(text: str, name: str) -> PromptTemplate:
    """Parse template source text (see the module docstring). Raises ``PromptError`` naming the line."""
    values: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or key not in _KEYS:
            raise PromptError(f'template {name!r} line {n}: expected `key = "value"` with key in {sorted(_KEYS)}')
        try:
            parsed = json.loads(value.strip())
        except json.JSONDecodeError as e:
            raise PromptError(f"template {name!r} line {n}: value must be a JSON string ({e})") from e
        if not isinstance(parsed, str):
            raise PromptError(f"template {name!r} line {n}: value must be a JSON string")
        values[key] = parsed
    item = values.get("item", "{item}")
    if item.count("{item}") != 1:
        raise PromptError(f"template {name!r}: `item` must contain {{item}} exactly once, got {item!r}")
    chat = values.get("chat", "false").lower()
    if chat not in ("true", "false"):
        raise PromptError(f'template {name!r}: chat must be "true" or "false"')
    return PromptTemplate(
        name=name,
        item=item,
        prefix=values.get("prefix", ""),
        suffix=values.get("suffix", ""),
        system=values.get("system", ""),
        chat=chat == "true",
        text=text,
    )


def load_template(name_or_path: str) -> PromptTemplate:
    """Template by name (``compact``, ``titles``, ...) or by path to a ``.txt`` file.

    Raises:
        PromptError: not found (the message lists the available names) or malformed.
    """
    path = Path(name_or_path)
    if not (path.suffix == ".txt" and path.is_file()):
        candidates = [d / f"{name_or_path}.txt" for d in template_dirs()]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise PromptError(f"unknown prompt template {name_or_path!r}; available: {available_templates()}")
    return parse_template(path.read_text(encoding="utf-8"), path.stem)


def _fill_bos(text: str, tokenizer, name: str) -> str:
    """``text`` with ``{bos}`` replaced by the tokenizer's BOS token (EOS if it has none)."""
    if "{bos}" not in text:
        return text
    token = getattr(tokenizer, "bos_token", None) or getattr(tokenizer, "eos_token", None)
    if not token:
        raise PromptError(
            f"template {name!r}: prefix uses {{bos}} but the tokenizer has neither a BOS nor an EOS token"
        )
    return text.replace("{bos}", token)


class PromptEncoder:
    """Turns histories of internal item ids into token ids with one template, tokenizer and catalog.

    Args:
        template: the prompt template.
        tokenizer: a tokenizer holding the item tokens (or the code tokens).
        vocab: where the item tokens are: an ``ItemVocab`` (one token per item) or a ``SemanticVocab`` (code
            tokens; then ``codes`` is required).
        catalog: the ``Catalog`` (``titles`` and ``raw_ids`` by internal id fill ``{title}`` and ``{raw_id}``).
        max_items: keep only the last ``max_items`` history items.
        max_tokens: drop the oldest items until the prompt (with target) has at most this many tokens.
        codes: ``[N, L]`` code paths (row ``i`` = item ``i``), for a ``SemanticVocab``.
    """

    def __init__(
        self,
        template: PromptTemplate,
        tokenizer,
        vocab: ItemVocab | SemanticVocab,
        catalog,
        max_items: int = 20,
        max_tokens: int | None = None,
        codes: np.ndarray | None = None,
    ):
        if max_items < 1:
            raise PromptError(f"max_items must be >= 1, got {max_items}")
        self.template, self.tokenizer, self.vocab = template, tokenizer, vocab
        self._code_ids: list[list[int]] | None = None  # per item, its L code token ids (semantic IDs)
        if isinstance(vocab, SemanticVocab):
            if codes is None:
                raise PromptError("a semantic-ID prompt encoder needs the catalog's code paths (codes)")
            self._code_ids = vocab.token_table(codes).tolist()
        self.num_items = len(self._code_ids) if self._code_ids is not None else vocab.num_items
        self.titles, self.raw_ids = catalog.titles, catalog.raw_ids
        self.max_items, self.max_tokens = max_items, max_tokens
        self.uses_chat = template.chat and bool(getattr(tokenizer, "chat_template", None))
        head, tail = _fill_bos(template.prefix, tokenizer, template.name), template.suffix
        if self.uses_chat:
            messages = [{"role": "system", "content": template.system}] if template.system else []
            messages.append({"role": "user", "content": _PLACEHOLDER})
            chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            before, _, after = chat.partition(_PLACEHOLDER)
            head, tail = before + head, tail + after
            specials: list[int] = []
        else:
            # BOS (or whatever the tokenizer puts in front of every text), e.g. for Llama-3-style models.
            specials = tokenizer("", add_special_tokens=True)["input_ids"]
        self.head = specials + self._encode_text(head)
        self.tail = self._encode_text(tail)
        self._item_cache: dict[int, list[int]] = {}
        self._plain_items = template.item == "{item}"

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    @property
    def tokens_per_item(self) -> int:
        """Tokens of one item's identity: 1 (atomic), or ``L`` code tokens (semantic IDs)."""
        return 1 if self._code_ids is None else self.vocab.num_levels

    def target_ids(self, item: int) -> list[int]:
        """The token ids that stand for ``item`` itself (what ``{item}`` becomes, and a training target)."""
        return [self.vocab.token_id(item)] if self._code_ids is None else list(self._code_ids[item])

    def item_ids(self, item: int) -> list[int]:
        """Token ids of one rendered history item."""
        if self._plain_items:
            return self.target_ids(item)
        ids = self._item_cache.get(item)
        if ids is None:
            before, _, after = self.template.item.partition("{item}")
            ids = self._encode_text(self._fill(before, item)) + self.target_ids(item)
            ids += self._encode_text(self._fill(after, item))
            self._item_cache[item] = ids
        return ids

    def _fill(self, text: str, item: int) -> str:
        title = self.titles[item] if item < len(self.titles) else ""
        raw = self.raw_ids[item] if item < len(self.raw_ids) else str(item)
        return text.replace("{title}", title or "").replace("{raw_id}", raw)

    def encode(self, history: Sequence[int], target: int | None = None) -> list[int]:
        """Token ids of the prompt for ``history`` (oldest first), followed by the target's token(s) if given."""
        for i in history:
            if not 0 <= i < self.num_items:
                raise PromptError(f"item id {i} is outside the catalog (0..{self.num_items - 1})")
        pieces = [self.item_ids(i) for i in list(history)[-self.max_items :]]
        end = self.target_ids(target) if target is not None else []
        if self.max_tokens is not None:
            fixed = len(self.head) + len(self.tail) + len(end)
            total = fixed + sum(len(p) for p in pieces)
            start = 0
            while total > self.max_tokens and start < len(pieces):
                total -= len(pieces[start])
                start += 1
            pieces = pieces[start:]
        return self.head + [t for p in pieces for t in p] + self.tail + end

    def render(self, history: Sequence[int], target: int | None = None) -> str:
        """The prompt as text (for display and debugging)."""
        return self.tokenizer.decode(self.encode(history, target), skip_special_tokens=False)
