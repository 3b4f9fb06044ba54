"""RQ-KMeans semantic IDs: collision-free, deterministic, small catalogs, storage, cold start, code tokens."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import save_file

from llmrec.errors import DataError
from llmrec.items.atomic import resize_for_items
from llmrec.items.semantic import (
    SemanticIds,
    assign_codes,
    concat_embeddings,
    kmeans_estimator,
    neighbor_prefix,
    residual_codes,
    rq_kmeans,
    rq_kmeans_warm,
)
from llmrec.items.semantic_store import CENTROIDS_FILE, IDS_FILE, load_semantic_ids, save_semantic_ids
from llmrec.items.semantic_vocab import (
    SemanticVocab,
    add_sid_tokens,
    centroid_map,
    find_sid_vocab,
    init_code_rows,
    sid_token,
)
from test_llm_helpers import make_tokenizer


def clustered(n: int = 60, d: int = 8, seed: int = 0) -> np.ndarray:
    """Items around 5 well-separated centres, with items 3, 4 and 5 identical (a guaranteed collision)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(5, d))
    x = centres[rng.integers(0, 5, n)] + rng.normal(size=(n, d))
    x[4] = x[5] = x[3]
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def sids() -> SemanticIds:
    return rq_kmeans(clustered(), levels=2, codes=4, seed=0, n_init=2)


def test_codes_are_collision_free_and_shaped(sids):
    assert sids.codes.shape == (60, 3) and sids.codes.dtype == np.int32
    assert len(np.unique(sids.codes, axis=0)) == 60
    assert sids.level_sizes[:2] == (4, 4) and [c.shape for c in sids.centroids] == [(4, 8), (4, 8)]
    assert (sids.codes < np.asarray(sids.level_sizes)).all() and (sids.codes >= 0).all()
    # identical items share the k-means prefix and are told apart by the last level, in item-id order
    assert (sids.codes[3, :2] == sids.codes[[4, 5], :2]).all()
    assert sids.codes[[3, 4, 5], 2].tolist() == [0, 1, 2]
    groups = np.unique(sids.codes[:, :2], axis=0, return_counts=True)[1]
    assert sids.level_sizes[2] == groups.max()


def test_codes_are_deterministic(sids):
    again = rq_kmeans(clustered(), levels=2, codes=4, seed=0, n_init=2)
    assert np.array_equal(again.codes, sids.codes)
    assert all(np.array_equal(a, b) for a, b in zip(again.centroids, sids.centroids))


def test_each_level_clusters_the_residual(sids):
    x = clustered()
    # the first level's codes follow the 5 planted clusters (4 clusters: at most two planted ones merge)
    level0 = sids.codes[:, 0]
    recon = sids.centroids[0][level0] + sids.centroids[1][sids.codes[:, 1]]
    assert np.linalg.norm(x - recon) < np.linalg.norm(x - sids.centroids[0][level0])
    assert np.array_equal(residual_codes(x, sids.centroids), sids.codes[:, :2])


def test_small_catalogs():
    one = rq_kmeans(np.ones((1, 4)), levels=3, codes=256)
    assert one.codes.tolist() == [[0, 0, 0, 0]] and one.level_sizes == (1, 1, 1, 1)
    same = rq_kmeans(np.ones((5, 3)), levels=2, codes=8)
    assert same.codes[:, :2].tolist() == [[0, 0]] * 5 and same.codes[:, 2].tolist() == [0, 1, 2, 3, 4]
    assert same.level_sizes == (1, 1, 5)
    few = rq_kmeans(np.eye(3, dtype=np.float32) * 5, levels=2, codes=256)
    assert few.level_sizes[0] == 3 and len(np.unique(few.codes, axis=0)) == 3
    with pytest.raises(ValueError, match="non-empty"):
        rq_kmeans(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        rq_kmeans(np.full((3, 2), np.nan))


def test_extra_codes_reserve_room_at_the_last_level():
    s = rq_kmeans(clustered(), levels=2, codes=4, n_init=1, extra_codes=3)
    assert s.level_sizes[2] == s.codes[:, 2].max() + 1 + 3


def test_concat_embeddings_normalises_each_block():
    text = np.array([[3.0, 4.0], [1.0, 0.0]])
    cf = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    out = concat_embeddings([text, cf], [1.0, 0.5])
    assert out.shape == (2, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [0.6, 0.8, 0.0, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(out[1], [1.0, 0.0, 0.0, 0.0, 0.0], atol=1e-6)  # a zero block row stays zero
    with pytest.raises(ValueError, match="rows"):
        concat_embeddings([text, cf[:1]])
    with pytest.raises(ValueError, match="weight"):
        concat_embeddings([text], [1.0, 2.0])


def test_save_load_round_trip(sids, tmp_path):
    save_semantic_ids(sids, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([IDS_FILE, CENTROIDS_FILE])  # no temp files left
    back = load_semantic_ids(tmp_path, num_items=60)
    assert np.array_equal(back.codes, sids.codes) and back.level_sizes == sids.level_sizes
    assert all(np.array_equal(a, b) for a, b in zip(back.centroids, sids.centroids))
    table = pq.read_table(tmp_path / IDS_FILE)
    assert table.schema.field("codes").type == pa.list_(pa.int32())


def _write_ids(path, item_ids, codes, sizes):
    table = pa.table({"item_id": pa.array(item_ids, pa.int32()), "codes": pa.array(codes, pa.list_(pa.int32()))})
    if sizes is not None:
        table = table.replace_schema_metadata({"llmrec": json.dumps({"format": 1, "level_sizes": sizes})})
    pq.write_table(table, path / IDS_FILE)


GOOD = ([0, 1, 2], [[0, 0], [0, 1], [1, 0]], [2, 2])


@pytest.mark.parametrize(
    "ids, codes, sizes, num_items, message",
    [
        ([0, 1, 3], GOOD[1], GOOD[2], None, "contiguous"),
        (GOOD[0], [[0, 0], [0, 1], [1]], GOOD[2], None, "exactly 2 codes"),
        (GOOD[0], [[0, 0], [0, 1], [0, 1]], GOOD[2], None, r"items \[1, 2\] share"),
        (GOOD[0], [[0, 0], [0, 1], [2, 0]], GOOD[2], None, "outside 0..1"),
        (GOOD[0], [[0, 0], [0, 1], [-1, 0]], GOOD[2], None, "outside"),
        (GOOD[0], GOOD[1], None, None, "level_sizes"),
        (*GOOD, 4, "catalog has 4"),
        ([], [], GOOD[2], None, "no items"),
    ],
)
def test_loader_rejects_bad_tables(tmp_path, ids, codes, sizes, num_items, message):
    save_file({"level_0": np.zeros((2, 3), np.float32)}, str(tmp_path / CENTROIDS_FILE))
    _write_ids(tmp_path, ids, codes, sizes)
    with pytest.raises(DataError, match=message) as err:
        load_semantic_ids(tmp_path, num_items=num_items)
    assert IDS_FILE in str(err.value)


@pytest.mark.parametrize(
    "tensors, message",
    [
        (None, "missing"),
        ({"level_0": np.zeros((3, 3), np.float32)}, "do not match"),
        ({"level_1": np.zeros((2, 3), np.float32)}, "expected tensors"),
    ],
)
def test_loader_rejects_bad_centroids(tmp_path, tensors, message):
    _write_ids(tmp_path, *GOOD)
    if tensors is not None:
        save_file(tensors, str(tmp_path / CENTROIDS_FILE))
    with pytest.raises(DataError, match=message) as err:
        load_semantic_ids(tmp_path)
    assert CENTROIDS_FILE in str(err.value)


def test_loader_rejects_missing_and_garbage_files(tmp_path):
    with pytest.raises(DataError, match="missing"):
        load_semantic_ids(tmp_path)
    (tmp_path / IDS_FILE).write_bytes(b"not parquet")
    with pytest.raises(DataError, match=IDS_FILE):
        load_semantic_ids(tmp_path)


def test_assign_codes_keeps_paths_collision_free(sids):
    x = clustered(n=80, seed=0)[60:]  # new items from the same clusters
    x[0] = clustered()[3]  # a new copy of an existing item: same prefix, a new leaf
    x[1] = x[2] = x[0]
    new = assign_codes(x, sids.centroids, sids.codes)
    assert new.shape == (20, 3) and new.dtype == np.int32
    assert np.array_equal(new[:, :2], residual_codes(x, sids.centroids))
    every = np.concatenate([sids.codes, new])
    assert len(np.unique(every, axis=0)) == len(every)
    held = int((sids.codes[:, :2] == sids.codes[3, :2]).all(axis=1).sum())  # items 0..held-1 of that prefix
    assert new[[0, 1, 2], 2].tolist() == [held, held + 1, held + 2]
    roomy = rq_kmeans(clustered(), levels=2, codes=4, seed=0, n_init=2, extra_codes=20)
    grown = roomy.add_items(x)
    assert grown.num_items == 80 and len(np.unique(grown.codes, axis=0)) == 80
    assert (grown.codes < np.asarray(roomy.level_sizes)).all()
    with pytest.raises(ValueError, match="reserve more"):
        assign_codes(x[:1], sids.centroids, sids.codes, level_size=held)  # that prefix is full


def test_cold_items_borrow_the_codes_of_their_nearest_warm_text():
    """``--sid_cold_codes neighbor``: a cold item's k-means codes are its nearest warm item's (by text cosine, not by
    the clustered embedding), on a new leaf; without text it keeps the nearest centroids. Deterministic."""
    x = clustered(n=60, seed=1)
    rng = np.random.default_rng(5)
    text = rng.normal(size=(60, 6)).astype(np.float32)
    cold = [10, 20, 30, 40]
    text[10] = text[2] * 3.0  # cosine 1 with warm item 2 (scale does not matter) ...
    text[20] = text[7] + 0.01 * rng.normal(size=6)  # ... and nearly 1 with warm item 7
    text[30] = text[10]  # two cold items with the same text: the same warm neighbour, two leaves
    text[40] = 0.0  # no text: the nearest centroids of its own embedding
    kmeans = dict(levels=2, codes=4, seed=0, n_init=2)
    base = rq_kmeans_warm(x, cold, **kmeans)
    sids = rq_kmeans_warm(x, cold, neighbor_text=text, **kmeans)
    warm = np.setdiff1d(np.arange(60), cold)
    assert np.array_equal(sids.codes[warm], base.codes[warm]) and sids.level_sizes[:-1] == base.level_sizes[:-1]
    assert np.array_equal(sids.codes[10, :2], sids.codes[2, :2]) and np.array_equal(
        sids.codes[30, :2], sids.codes[2, :2]
    )
    assert np.array_equal(sids.codes[20, :2], sids.codes[7, :2])
    assert np.array_equal(sids.codes[40, :2], base.codes[40, :2])  # its leaf value may differ: others took some
    assert len(np.unique(sids.codes, axis=0)) == 60  # collision-free: 10 and 30 sit beside item 2 on new leaves
    again = rq_kmeans_warm(x, cold, neighbor_text=text, **kmeans)
    assert np.array_equal(again.codes, sids.codes)
    # the borrowed codes are what neighbor_prefix gives; only trained items are lent from
    trained = np.ones(60, dtype=bool)
    trained[cold + [2]] = False
    unit = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    best = int(np.argmax(np.where(trained, unit @ unit[10], -np.inf)))  # brute force, item 2 not allowed
    assert best != 2 and neighbor_prefix(text[[10]], text, trained, sids.codes).tolist() == [
        sids.codes[best, :2].tolist()
    ]
    assert neighbor_prefix(np.zeros((1, 6), np.float32), text, trained, sids.codes).tolist() == [[-1, -1]]


def test_sid_vocab_tokens_are_contiguous_per_level():
    tok = make_tokenizer()
    base = len(tok)
    vocab = add_sid_tokens(tok, (3, 2, 4))
    assert vocab == SemanticVocab(base, (3, 2, 4)) and vocab.num_tokens == 9 and vocab.end_id == base + 9
    assert vocab.starts == (base, base + 3, base + 5) and vocab.level_range(1) == (base + 3, base + 5)
    assert vocab.token_id(2, 1) == tok.convert_tokens_to_ids(sid_token(2, 1)) == base + 6
    path = [2, 1, 3]
    assert vocab.path_ids(path) == [base + 2, base + 4, base + 8]
    assert tok(vocab.path_tokens(path), add_special_tokens=False)["input_ids"] == vocab.path_ids(path)
    table = vocab.token_table(np.array([[0, 0, 0], path]))
    assert table.tolist() == [[base, base + 3, base + 5], vocab.path_ids(path)]
    assert vocab.level_of(torch.tensor([0, base, base + 4, base + 8, base + 9])).tolist() == [-1, 0, 1, 2, -1]
    assert find_sid_vocab(tok, (3, 2, 4)) == vocab
    with pytest.raises(ValueError, match="already contains"):
        add_sid_tokens(tok, (3, 2, 4))
    with pytest.raises(ValueError, match="contiguous"):
        find_sid_vocab(tok, (3, 5))
    with pytest.raises(ValueError, match="outside"):
        vocab.token_id(1, 2)
    with pytest.raises(ValueError, match="outside"):
        vocab.token_table(np.array([[3, 0, 0]]))


def _pairwise(x: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x.double(), x.double())


@pytest.mark.parametrize("d", [8, 64])  # fits the hidden size (32) / does not, but 4 centroids span 3 dimensions
def test_centroid_map_keeps_distances(d):
    c = np.random.default_rng(0).normal(size=(4, d)).astype(np.float32)
    rows = centroid_map(c, hidden=32, seed=0)
    assert rows.shape == (4, 32)
    torch.testing.assert_close(_pairwise(rows), _pairwise(torch.tensor(c)), rtol=1e-4, atol=1e-4)


def test_init_code_rows_from_centroids(tmp_path):
    from llmrec.llm.loading import load_causal_lm
    from test_llm_helpers import make_tiny_model_dir

    lm, tok = load_causal_lm(str(make_tiny_model_dir(tmp_path / "m", tied=False)))
    vocab = add_sid_tokens(tok, (4, 3, 2))
    resize_for_items(lm, vocab)
    text_before = lm.get_input_embeddings().weight[: vocab.first_id].clone()
    rng = np.random.default_rng(0)
    centroids = [rng.normal(size=(4, 8)), rng.normal(size=(3, 8))]
    assert init_code_rows(lm, vocab, centroids, scale=2.0) == {"from_centroids": 2, "random": 1}
    for weight in (lm.get_input_embeddings().weight, lm.get_output_embeddings().weight):
        ref = 2.0 * weight[: vocab.first_id].norm(dim=1).mean()
        for level in range(3):
            start, end = vocab.level_range(level)
            rows = weight[start:end].detach()
            torch.testing.assert_close(rows.norm(dim=1).mean(), ref, rtol=1e-4, atol=1e-5)
            if level < 2:  # distances between code rows are the centroids' distances, up to one scale
                dist, want = _pairwise(rows), _pairwise(torch.tensor(centroids[level]))
                ratio = dist[0, 1] / want[0, 1]
                torch.testing.assert_close(dist, want * ratio, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(lm.get_input_embeddings().weight[: vocab.first_id], text_before)
    with pytest.raises(ValueError, match="centroids for"):
        init_code_rows(lm, vocab, [rng.normal(size=(3, 8))])


def test_minibatch_kmeans_codes_are_collision_free_and_deterministic():
    """``--sid_kmeans minibatch`` (the option for million-item catalogs): the same guarantees as exact KMeans."""
    x = clustered(n=200)
    runs = [rq_kmeans(x, levels=2, codes=4, seed=3, estimator=kmeans_estimator("minibatch")) for _ in range(2)]
    assert np.array_equal(runs[0].codes, runs[1].codes)
    assert len({tuple(r) for r in runs[0].codes.tolist()}) == len(x)
    assert kmeans_estimator("exact") is None
    with pytest.raises(ValueError, match="k-means kind"):
        kmeans_estimator("faiss")
