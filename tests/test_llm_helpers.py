"""Tiny offline LLM fixtures shared by the LLM tests (imported by them; holds no tests itself).

A word-level tokenizer built with ``tokenizers`` and a 2-layer random Llama, saved with ``save_pretrained`` so
that ``llmrec.llm.loading.load_causal_lm(path)`` loads them like any local model. No hub access.
"""

from __future__ import annotations

from pathlib import Path

from llmrec.data.dataset import Catalog, PreparedData, save_prepared

WORDS = [
    "the",
    "user",
    "bought",
    "next",
    "item",
    "which",
    "red",
    "blue",
    "green",
    "cream",
    "lip",
    "balm",
    "soap",
    "shampoo",
    "mask",
    "oil",
    "gel",
    "serum",
    "brush",
    "nail",
    "polish",
    "you",
    "recommend",
    "answer",
    "system",
    "assistant",
    "product",
    "a",
    "shopper",
    "will",
    "buy",
    "with",
    "one",
    "token",
    "hair",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant : {% endif %}"
)
TITLES = [
    "red cream",
    "blue balm",
    "green soap",
    "lip oil",
    "nail polish",
    "",
    "hair shampoo mask",
    "serum gel",
    "red brush",
    "blue nail polish",
    "green oil",
    "lip balm",
]


def make_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "<s>", "</s>", ":", ";", ",", "?", "."] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>", eos_token="</s>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model_dir(path: Path, tied: bool = True, seed: int = 0) -> Path:
    """Save a random 2-layer Llama + word-level tokenizer into ``path``; returns ``path``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_toy_data(path: Path, num_users: int = 48, seed: int = 0) -> Path:
    """A learnable toy data set: 12 items in 3 cycles; each user walks one cycle (next item = successor)."""
    import random

    rng = random.Random(seed)
    cycles = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    seqs = []
    for u in range(num_users):
        c = cycles[u % 3]
        start, n = rng.randrange(4), rng.randrange(5, 9)
        seqs.append([c[(start + j) % 4] for j in range(n)])
    data = PreparedData(
        catalog=Catalog(raw_ids=[f"i{i}" for i in range(12)], titles=TITLES),
        users=[f"u{u}" for u in range(num_users)],
        sequences=seqs,
        meta={"dataset": "toy"},
    )
    save_prepared(data, path, overwrite=True)
    return path
