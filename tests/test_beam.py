"""The one-prompt-pass beam search (llmrec.llm.beam) is the same search as model.generate with the trie processor:
same items in the same order, same scores, on random catalogs, widths, exclusions and prompt lengths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec.decoding import generate_items_by_codes
from llmrec.items.semantic_vocab import SemanticVocab
from llmrec.llm.beam import beam_search_codes
from llmrec.llm.model import ItemLM
from llmrec.trie import CodeTrie
from test_semantic_llm import paths, sem_run  # noqa: F401  (module-scoped: a semantic run trained by the CLI)
from test_trie_decoding import catalogs, model  # noqa: F401  (the module-scoped tiny model fixture)


def _item_lm(lm, first_id, sizes):
    vocab = SemanticVocab(first_id, sizes)
    return ItemLM(lm, vocab).eval(), vocab


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(catalog=catalogs(), data=st.data(), width=st.integers(1, 6), users=st.integers(1, 3),
       normalize=st.sampled_from(["level", "trie"]))  # fmt: skip
def test_fast_beam_search_equals_generate(model, catalog, data, width, users, normalize):  # noqa: F811
    lm, tok, first_id = model
    sizes, codes = catalog
    item_lm, vocab = _item_lm(lm, first_id, sizes)
    trie, n = CodeTrie(codes, sizes), len(codes)
    exclude = [data.draw(st.lists(st.integers(0, n - 1), max_size=n + 1)) for _ in range(users)]
    exclude = exclude if data.draw(st.booleans()) else None
    prompts = [data.draw(st.lists(st.integers(2, 40), min_size=1, max_size=7)) for _ in range(users)]
    want_items, want_scores = generate_items_by_codes(
        lm, vocab, trie, prompts, tok.pad_token_id, k=width, exclude=exclude, return_scores=True, normalize=normalize
    )
    got_items, got_scores = beam_search_codes(item_lm, trie, prompts, tok.pad_token_id, width, exclude=exclude,
                                              normalize=normalize)  # fmt: skip
    assert got_items == want_items
    for got, want in zip(got_scores, want_scores):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for its, banned in zip(got_items, exclude or [[]] * users):
        assert len(its) == min(width, n - len(set(banned))) and not set(its) & set(banned)


def test_fast_beam_search_is_batch_independent(model):  # noqa: F811
    """A prompt's beams do not depend on the other prompts of its batch (left padding, positions, cache rows)."""
    lm, tok, first_id = model
    sizes = (3, 4, 2)
    codes = np.array([[a, b, c] for a in range(3) for b in range(4) for c in range(2)][::2])
    item_lm, _ = _item_lm(lm, first_id, sizes)
    trie = CodeTrie(codes, sizes)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15]]
    together = beam_search_codes(item_lm, trie, prompts, tok.pad_token_id, 5)
    for i, p in enumerate(prompts):
        alone = beam_search_codes(item_lm, trie, [p], tok.pad_token_id, 5)
        assert alone[0][0] == together[0][i]
        np.testing.assert_allclose(alone[1][0], together[1][i], rtol=1e-4, atol=1e-5)
    assert all(math.isfinite(v) for vals in together[1] for v in vals)


def test_fast_beam_search_rejects_bad_arguments(model):  # noqa: F811
    lm, tok, first_id = model
    item_lm, _ = _item_lm(lm, first_id, (2, 2))
    trie = CodeTrie(np.array([[0, 0], [1, 1]]), (2, 2))
    with pytest.raises(ValueError, match="exclusion lists"):
        beam_search_codes(item_lm, trie, [[3]], tok.pad_token_id, 2, exclude=[[0], [1]])
    with pytest.raises(ValueError, match="width"):
        beam_search_codes(item_lm, trie, [[3]], tok.pad_token_id, 0)
    assert beam_search_codes(item_lm, trie, [], tok.pad_token_id, 2) == ([], [])
    assert beam_search_codes(item_lm, trie, [[3]], tok.pad_token_id, 2, exclude=[[0, 1]]) == ([[]], [[]])


@pytest.mark.parametrize("arch", ["qwen2", "gemma3", "phi3", "gpt2", "gpt_neox"])
def test_fast_beam_search_equals_generate_on_other_architectures(arch):
    """Cache layout, position ids and untied heads differ by architecture; items and order must not (Gemma3 soft-caps
    its logits in ``generate``, so only its order is compared)."""
    from llmrec.items.atomic import resize_for_items
    from llmrec.items.semantic_vocab import add_sid_tokens, init_code_rows
    from test_architectures import _make_model
    from test_llm_helpers import make_tokenizer

    tok = make_tokenizer()
    lm = _make_model(arch, tok)
    sizes = (3, 4, 2)
    vocab = add_sid_tokens(tok, sizes)
    resize_for_items(lm, vocab)
    rng = np.random.default_rng(0)
    init_code_rows(lm, vocab, [rng.normal(size=(s, 16)) for s in sizes], scale=30.0)
    lm.eval()
    codes = np.array([[a, b, c] for a in range(3) for b in range(4) for c in range(2)][1::2])
    trie, item_lm = CodeTrie(codes, sizes), ItemLM(lm, vocab).eval()
    prompts, exclude = [[5, 6, 7, 8, 9], [10], [11, 12, 13]], [[0, 3], [], [7]]
    want = generate_items_by_codes(lm, vocab, trie, prompts, tok.pad_token_id, k=6, exclude=exclude,
                                   return_scores=True)  # fmt: skip
    got = beam_search_codes(item_lm, trie, prompts, tok.pad_token_id, 6, exclude=exclude)
    assert got[0] == want[0]
    if arch != "gemma3":
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_evaluate_beam_width_override(sem_run, tmp_path, capsys):  # noqa: F811
    """``llmrec evaluate --beam_width`` rescores a semantic run with another width; the protocol names it."""
    import json

    from llmrec.cli import main as cli_main

    assert cli_main(["evaluate", "--run", str(sem_run), "--split", "test", "--beam_width", "20",
                     "--output_dir", str(tmp_path)]) == 0  # fmt: skip
    result = json.loads((tmp_path / "eval_test.json").read_text())
    assert "beam search of width 20" in result["protocol"]
    capsys.readouterr()
    assert cli_main(["evaluate", "--run", str(sem_run), "--beam_width", "5"]) == 2
    assert "beam_width" in capsys.readouterr().err
    assert cli_main(["evaluate", "--run", str(sem_run), "--cold_neighbors", "3"]) == 2  # atomic runs only
    assert "cold_neighbors: " in capsys.readouterr().err


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    num_items=st.integers(2, 12),
    weight=st.sampled_from([0.0, 0.5, 2.0, 20.0, -1.0]),
)
def test_text_fusion_reranks_the_beam_and_never_lifts_an_item_into_it(data, num_items, weight):
    """SemanticLLMRecommender.fuse (llmrec.llm.fusion): beam items keep first place, ordered by beam score + w * cos;
    the items outside the beams follow, ordered by their cosine alone."""
    from llmrec.decoding import beam_score_matrix
    from llmrec.llm.recommender import SemanticLLMRecommender

    beam = data.draw(st.lists(st.integers(0, num_items - 1), unique=True, max_size=num_items))
    log_probs = data.draw(st.lists(st.floats(-30.0, 0.0), min_size=len(beam), max_size=len(beam)))
    sim = torch.tensor([data.draw(st.lists(st.floats(-1.0, 1.0), min_size=num_items, max_size=num_items))])
    base = beam_score_matrix([beam], [log_probs], num_items)
    fused = SemanticLLMRecommender.fuse(base, sim, weight)[0]
    if not weight:
        assert torch.equal(fused, base[0])
        return
    outside = [i for i in range(num_items) if i not in beam]
    if beam and outside:
        assert fused[beam].min() > fused[outside].max()  # no item is lifted into the beam
    for j, i in enumerate(beam):
        assert fused[i].item() == pytest.approx(log_probs[j] + weight * sim[0, i].item(), abs=1e-4)
    for a in outside:  # outside the beams: ordered by the cosine (times the weight's sign), as textknn would
        for b in outside:
            if weight * (sim[0, a] - sim[0, b]) > 1e-6:
                assert fused[a] > fused[b]
