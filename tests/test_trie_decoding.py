"""Trie-constrained decoding of semantic IDs: only catalog items, W distinct, never an excluded one; beam search
against brute force over every item on a tiny model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrec.decoding import CodeTrieLogitsProcessor, beam_score_matrix, generate_items_by_codes
from llmrec.evaluation import pessimistic_ranks
from llmrec.items.atomic import resize_for_items
from llmrec.items.semantic_vocab import SemanticVocab, add_sid_tokens, init_code_rows
from llmrec.llm.loading import load_causal_lm
from llmrec.trie import CodeTrie
from test_llm_helpers import make_tiny_model_dir

MAX_SIZES = (4, 4, 4)  # the code tokens added to the tiny model; each test's vocabulary uses a prefix of them


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    lm, tok = load_causal_lm(str(make_tiny_model_dir(tmp_path_factory.mktemp("m") / "m", seed=1)))
    vocab = add_sid_tokens(tok, MAX_SIZES)
    resize_for_items(lm, vocab)
    rng = np.random.default_rng(0)
    # centroid rows far larger than the random text rows, so the code distributions are far from uniform
    init_code_rows(lm, vocab, [rng.normal(size=(4, 16)) for _ in MAX_SIZES], scale=30.0)
    return lm.eval(), tok, vocab.first_id


def prompts_for(tok, texts):
    return [[tok.bos_token_id] + tok(t, add_special_tokens=False)["input_ids"] for t in texts]


# --- the trie and the processor on hand-made catalogs ---

HAND = np.array([[0, 0], [0, 2], [1, 1]])  # sizes (2, 3)


def test_trie_lookups():
    trie = CodeTrie(HAND, (2, 3))
    assert trie.num_items == 3 and [trie.num_edges(t) for t in range(2)] == [2, 3]
    assert trie.walk(torch.tensor([[0], [1], [2], [-1]])).tolist() == [0, 1, -1, -1]
    rows, edges = trie.children(torch.tensor([0, -1, 1]), 1)
    assert rows.tolist() == [0, 0, 2] and trie.edge_codes(1, edges).tolist() == [0, 2, 1]
    assert trie.items(torch.tensor([[0, 2], [1, 1], [1, 0], [0, 5]])).tolist() == [1, 2, -1, -1]
    dead = trie.dead_edges([[0, 1], [2], [5, 0, 0], []])
    # user 0 excludes both items under prefix (0,): that prefix is dead too; user 2's id 5 is not in the catalog
    assert dead[0].tolist() == [0 * 2 + 0, 1 * 2 + 1]
    assert dead[1].tolist() == [0 * 3 + 0, 0 * 3 + 1, 1 * 3 + 2, 2 * 3 + 0]
    assert trie.num_allowed([[0, 1], [2], [5, 0, 0], []]) == [1, 2, 2, 3]


def test_trie_rejects_collisions_and_bad_codes():
    with pytest.raises(ValueError, match="collision"):
        CodeTrie(np.array([[0, 1], [0, 1]]))
    with pytest.raises(ValueError, match="do not fit"):
        CodeTrie(HAND, (2, 2))
    with pytest.raises(ValueError, match="non-empty"):
        CodeTrie(np.zeros((0, 2)))


def _allowed(out):
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in out]


def test_processor_allows_only_trie_children_minus_dead_prefixes():
    vocab, trie = SemanticVocab(10, (2, 3)), CodeTrie(HAND, (2, 3))  # level 0: ids 10-11, level 1: ids 12-14
    proc = CodeTrieLogitsProcessor(vocab, trie, prompt_len=1, exclude=[[0, 1], [1]], rows_per_user=2)
    step0 = proc(torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, 16))
    assert _allowed(step0) == [[11], [11], [10, 11], [10, 11]]  # user 0 must not enter the dead prefix (0,)
    torch.testing.assert_close(step0[2, 10:12], torch.full((2,), math.log(0.5)))  # a log-softmax over the level
    step1 = proc(torch.tensor([[0, 11], [0, 11], [0, 10], [0, 11]]), torch.zeros(4, 16))
    assert _allowed(step1) == [[13], [13], [12], [13]]
    with pytest.raises(ValueError, match="exactly 2 new tokens"):
        proc(torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 16))
    junk = CodeTrieLogitsProcessor(vocab, trie, prompt_len=1, normalize="trie")
    out = junk(torch.tensor([[0, 3], [0, 10]]), torch.randn(2, 16))  # row 0 is off the trie: nothing allowed
    assert _allowed(out) == [[], [12, 14]] and not out.isnan().any()
    torch.testing.assert_close(out[1, [12, 14]].exp().sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="differ"):
        CodeTrieLogitsProcessor(SemanticVocab(10, (2, 2)), trie, prompt_len=1)


# --- property test: random catalogs, code lengths and histories ---


@st.composite
def catalogs(draw):
    levels = draw(st.integers(1, 3))
    sizes = tuple(draw(st.lists(st.integers(1, 4), min_size=levels, max_size=levels)))
    space = list(itertools.product(*(range(s) for s in sizes)))
    paths = draw(st.lists(st.sampled_from(space), min_size=1, max_size=min(len(space), 12), unique=True))
    return sizes, np.array(paths)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    catalog=catalogs(),
    data=st.data(),
    k=st.integers(1, 5),
    mode=st.sampled_from(["beam", "greedy", "sample"]),
    seed=st.integers(0, 1000),
)
def test_generation_yields_only_allowed_catalog_items(model, catalog, data, k, mode, seed):
    lm, tok, first_id = model
    sizes, codes = catalog
    vocab, trie = SemanticVocab(first_id, sizes), CodeTrie(codes, sizes)
    n = len(codes)
    history = st.lists(st.integers(0, n - 1), max_size=n + 2)
    exclude = [data.draw(history), data.draw(history)]
    prompts = [data.draw(st.lists(st.integers(2, 40), min_size=1, max_size=5)) for _ in exclude]
    k = 1 if mode == "greedy" else k
    torch.manual_seed(seed)
    items, scores = generate_items_by_codes(
        lm, vocab, trie, prompts, tok.pad_token_id, k=k, exclude=exclude, do_sample=mode == "sample",
        return_scores=True,
    )  # fmt: skip
    for got, vals, banned in zip(items, scores, exclude):
        left = n - len(set(banned))
        assert all(0 <= i < n and i not in banned for i in got)
        assert len(vals) == len(got) and all(math.isfinite(v) and v <= 1e-6 for v in vals)
        if mode == "beam":
            assert len(got) == min(k, left) and len(set(got)) == len(got)
            assert vals == sorted(vals, reverse=True)
        else:
            assert len(got) == (k if left else 0)


# --- beam search against brute force over every item ---

SIZES = (3, 4, 2)


def brute_force(lm, vocab, trie, prompt, normalize="level"):
    """[N] score of every catalog item: the sum over levels of the code's log-prob after prompt + earlier codes."""
    table = vocab.token_table(trie.codes)  # [N, L]
    ids = torch.cat([torch.tensor(prompt).expand(len(table), -1), table], dim=1)
    with torch.no_grad():
        logits = lm(input_ids=ids).logits.float()  # [N, P + L, V]
    total = torch.zeros(len(table))
    for level in range(vocab.num_levels):
        pos = len(prompt) - 1 + level
        if normalize == "level":
            start, end = vocab.level_range(level)
            logp = logits[:, pos, start:end].log_softmax(-1)
            total += logp.gather(1, trie.codes[:, level : level + 1]).squeeze(1)
        else:  # "none": the full-vocabulary log-probabilities beam search hands to the processor
            logp = logits[:, pos].log_softmax(-1)
            total += logp.gather(1, table[:, level : level + 1]).squeeze(1)
    return total


@pytest.fixture(scope="module")
def catalog():
    rng = np.random.default_rng(3)
    space = np.array(list(itertools.product(*(range(s) for s in SIZES))))
    return space[np.sort(rng.choice(len(space), size=14, replace=False))]


@pytest.mark.parametrize("normalize", ["level", "none"])
def test_beam_search_returns_the_best_items_when_beams_cover_every_prefix(model, catalog, normalize):
    lm, tok, first_id = model
    vocab, trie = SemanticVocab(first_id, SIZES), CodeTrie(catalog, SIZES)
    width = max(trie.num_edges(t) for t in range(trie.num_levels - 1))  # prefixes of every length < L fit the beam
    assert width < trie.num_items  # the test is not only "all items"
    prompts = prompts_for(tok, ["the user bought red cream", "blue balm", "lip oil nail polish serum gel"])
    exclude = [[], [0, 1, 2, 5], list(range(0, 14, 2))]
    items, scores = generate_items_by_codes(
        lm, vocab, trie, prompts, tok.pad_token_id, k=width, exclude=exclude, normalize=normalize, return_scores=True
    )
    for prompt, banned, got, vals in zip(prompts, exclude, items, scores):
        full = brute_force(lm, vocab, trie, prompt, normalize)
        full[banned] = -math.inf
        best = full.topk(min(width, 14 - len(banned))).values
        # the same top values (robust to near-ties), and each beam item carries its own brute-force score
        torch.testing.assert_close(torch.tensor(vals), best, rtol=0, atol=1e-4)
        torch.testing.assert_close(torch.tensor(vals), full[got], rtol=0, atol=1e-4)


def test_beam_search_gap_with_narrow_beams(model, catalog):
    """The known gap: with fewer beams than prefixes, the W returned items are W distinct catalog items scored
    exactly, best first, but not necessarily the W best (a strong item under a weak prefix can be pruned)."""
    lm, tok, first_id = model
    vocab, trie = SemanticVocab(first_id, SIZES), CodeTrie(catalog, SIZES)
    prompt = prompts_for(tok, ["the user bought green soap"])[0]
    full = brute_force(lm, vocab, trie, prompt)
    for width in (1, 2, 3):
        (got,), (vals,) = generate_items_by_codes(
            lm, vocab, trie, [prompt], tok.pad_token_id, k=width, return_scores=True
        )
        assert len(set(got)) == width and vals == sorted(vals, reverse=True)
        torch.testing.assert_close(torch.tensor(vals), full[got], rtol=0, atol=1e-4)
        assert vals[0] <= full.max().item() + 1e-4


def test_all_beams_under_trie_normalisation_form_a_distribution(model, catalog):
    lm, tok, first_id = model
    vocab, trie = SemanticVocab(first_id, SIZES), CodeTrie(catalog, SIZES)
    prompt = prompts_for(tok, ["hair shampoo mask"])
    (got,), (vals,) = generate_items_by_codes(
        lm, vocab, trie, prompt, tok.pad_token_id, k=14, normalize="trie", return_scores=True
    )
    assert sorted(got) == list(range(14))
    torch.testing.assert_close(torch.tensor(vals).exp().sum(), torch.tensor(1.0), rtol=0, atol=1e-4)


def test_greedy_follows_the_best_allowed_code_at_each_step(model, catalog):
    lm, tok, first_id = model
    vocab, trie = SemanticVocab(first_id, SIZES), CodeTrie(catalog, SIZES)
    prompt = prompts_for(tok, ["red brush"])[0]
    (got,) = generate_items_by_codes(lm, vocab, trie, [prompt], tok.pad_token_id, k=1)
    ids, node = list(prompt), torch.zeros(1, dtype=torch.long)
    for level in range(trie.num_levels):
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
        _, edges = trie.children(node, level)
        tokens = trie.edge_codes(level, edges) + vocab.level_start(level)
        pick = int(logits[tokens].argmax())
        ids.append(int(tokens[pick]))
        node = edges[pick : pick + 1]
    assert got == trie.items(torch.tensor([ids[len(prompt) :]]) - torch.tensor(vocab.starts)).tolist()


def test_beam_score_matrix_ranks_non_beam_items_last():
    m = beam_score_matrix([[2, 0], [], [1]], [[-0.5, -1.5], [], [-3.0]], num_items=4)
    low = torch.tensor(-1e30).item()  # the default floor in float32
    assert m.shape == (3, 4) and m.dtype == torch.float32 and m[0].tolist() == [-1.5, low, -0.5, low]
    assert (m[1] == low).all()
    ranks = pessimistic_ranks(m, torch.tensor([2, 1, 3])).tolist()
    assert ranks[0] == 0 and ranks[1] == 3 and ranks[2] == 3  # outside the beams: after every other item
    assert pessimistic_ranks(m, torch.tensor([0, 0, 1])).tolist()[0] == 1
    dropped = beam_score_matrix([[1]], [[-2.0]], 3, floor=-math.inf)
    assert torch.isinf(dropped[0, [0, 2]]).all()
    with pytest.raises(ValueError, match="scores"):
        beam_score_matrix([[1, 2]], [[-1.0]], 3)
