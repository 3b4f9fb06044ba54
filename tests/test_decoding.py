"""Fast ranking path vs constrained generation; constrained outputs are always allowed catalog items."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec.data.dataset import Catalog
from llmrec.decoding import ItemConstraintLogitsProcessor, generate_items
from llmrec.inference import mask_items, top_k
from llmrec.items.atomic import ItemVocab, add_item_tokens, resize_for_items
from llmrec.items.init import init_item_embeddings
from llmrec.llm.loading import load_causal_lm
from llmrec.llm.lora import apply_lora
from llmrec.llm.model import ItemLM
from llmrec.prompts import PromptEncoder, load_template
from test_llm_helpers import TITLES, make_tiny_model_dir

N = len(TITLES)
CATALOG = Catalog(raw_ids=[str(i) for i in range(N)], titles=TITLES)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    lm, tok = load_causal_lm(str(make_tiny_model_dir(tmp_path_factory.mktemp("m") / "m")))
    vocab = add_item_tokens(tok, N)
    resize_for_items(lm, vocab)
    init_item_embeddings(lm, tok, vocab, TITLES, init="random")
    item_lm = ItemLM(apply_lora(lm, vocab, r=4), vocab).eval()
    return item_lm, tok, vocab


@pytest.mark.parametrize("template", ["compact", "titles"])
def test_fast_path_equals_beam_search(setup, template):
    item_lm, tok, vocab = setup
    enc = PromptEncoder(load_template(template), tok, vocab, CATALOG)
    histories = [[0, 1, 2], [5], [7, 3, 9, 11, 4]]
    for h in histories:
        prompt = enc.encode(h)
        scores = mask_items(item_lm.score([prompt], tok.pad_token_id), [h])
        fast, _ = top_k(scores, 5)
        beams = generate_items(item_lm.lm, vocab, [prompt], tok.pad_token_id, k=5, exclude=[h])
        assert beams[0] == fast[0]


def test_fast_path_matches_lm_head_logits(setup):
    item_lm, tok, vocab = setup
    enc = PromptEncoder(load_template("titles"), tok, vocab, CATALOG)
    prompts = [enc.encode([0, 1]), enc.encode([4, 5, 6, 7])]  # different lengths: padding must not matter
    fast = item_lm.score(prompts, tok.pad_token_id)
    for i, p in enumerate(prompts):
        with torch.no_grad():
            logits = item_lm.lm(input_ids=torch.tensor([p])).logits[0, -1, vocab.first_id : vocab.end_id]
        torch.testing.assert_close(fast[i], logits, rtol=1e-4, atol=1e-4)


def test_processor_masks_text_and_history():
    vocab = ItemVocab(first_id=10, num_items=5)
    proc = ItemConstraintLogitsProcessor(vocab, exclude=[[0, 3], []], rows_per_user=2)
    out = proc(torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 16))
    allowed = [torch.isfinite(row).nonzero().flatten().tolist() for row in out]
    assert allowed == [[11, 12, 14], [11, 12, 14], [10, 11, 12, 13, 14], [10, 11, 12, 13, 14]]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    history=st.lists(st.integers(0, N - 1), min_size=0, max_size=6),
    k=st.integers(1, 4),
    mode=st.sampled_from(["greedy", "beam", "sample"]),
    seed=st.integers(0, 1000),
)
def test_generate_outputs_allowed_items(setup, history, k, mode, seed):
    item_lm, tok, vocab = setup
    enc = PromptEncoder(load_template("titles"), tok, vocab, CATALOG)
    torch.manual_seed(seed)
    k = 1 if mode == "greedy" else k
    out = generate_items(
        item_lm.lm,
        vocab,
        [enc.encode(history), enc.encode(history[:1])],
        tok.pad_token_id,
        k=k,
        do_sample=mode == "sample",
        exclude=[history, history[:1]],
    )
    for items, banned in zip(out, [history, history[:1]]):
        assert len(items) == k
        assert all(0 <= i < N and i not in banned for i in items)
        if mode == "beam":
            assert len(set(items)) == k
