"""Semantic item IDs: RQ-KMeans code paths of item embeddings, collision-free, stored with their centroids.

RQ-KMeans (residual k-means, as in TIGER / OneRec) on item embeddings ``x`` [N, d] float32:

    r_0 = x
    for level l = 0 .. levels-1:
        k_l = min(codes, number of distinct rows of r_l)            # small catalogs: never more clusters than points
        KMeans(k_l, n_init, random_state=seed + l).fit(r_l)  ->  c_l [N] codes, C_l [k_l, d] centroids
        r_{l+1} = r_l - C_l[c_l]                                     # the next level clusters what is left

**Collisions: an extra disambiguation level (TIGER).** Items whose ``levels`` k-means codes are equal (always the
case for identical embeddings, e.g. duplicate titles) are told apart by one more code: the item's index among the
items sharing its prefix, in item-id order (0, 1, 2, ...). The level is always present, so every code path has
``levels + 1`` codes; it has ``max collision group + extra_codes`` values (``extra_codes`` reserves room for items
added later by ``assign_codes``). It carries no meaning, and it has no centroids.

Deterministic: the same embeddings and seed give the same codes (scikit-learn's KMeans with a fixed
``random_state``; tested on one machine and thread setting, where float rounding cannot differ between runs).

Storage: ``llmrec.items.semantic_store`` (``semantic_ids.parquet`` + ``semantic_centroids.safetensors``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmrec.items.neighbors import nearest_items, unit_rows


@dataclass(frozen=True, eq=False)
class SemanticIds:
    """Collision-free code paths of a catalog.

    Attributes:
        codes: ``[N, L]`` int32, row ``i`` = item ``i``'s code path; ``L = len(centroids) + 1`` (the last column is
            the disambiguation level).
        level_sizes: number of values of each of the ``L`` levels (the code tokens each level needs).
        centroids: per k-means level, ``[level_sizes[l], d]`` float32.
    """

    codes: np.ndarray
    level_sizes: tuple[int, ...]
    centroids: tuple[np.ndarray, ...]

    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_levels(self) -> int:
        return int(self.codes.shape[1])

    def add_items(self, embeddings: np.ndarray) -> SemanticIds:
        """These ids plus code paths for new items (ids ``N..N+M-1``), collision-free; see ``assign_codes``."""
        new = assign_codes(embeddings, self.centroids, self.codes, self.level_sizes[-1])
        return SemanticIds(np.concatenate([self.codes, new]), self.level_sizes, self.centroids)


def concat_embeddings(blocks: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Rows of several item matrices side by side, e.g. text embeddings and co-occurrence factors.

    Each block [N, d_b] is L2-normalised row by row (a zero row stays zero, e.g. an item that never co-occurs), then
    multiplied by its weight (default 1), so a block's share of a squared distance is at most ``4 weight^2``,
    whatever its own scale.

    Returns:
        ``[N, sum d_b]`` float32.
    """
    weights = [1.0] * len(blocks) if weights is None else list(weights)
    if not blocks or len(weights) != len(blocks):
        raise ValueError(f"need one weight per block, got {len(blocks)} blocks and {len(weights)} weights")
    if len({len(b) for b in blocks}) != 1:
        raise ValueError(f"blocks differ in their number of rows: {[len(b) for b in blocks]}")
    out = []
    for block, w in zip(blocks, weights):
        b = np.asarray(block, dtype=np.float32).reshape(len(block), -1)
        norms = np.linalg.norm(b, axis=1, keepdims=True)
        out.append(np.float32(w) * b / np.where(norms > 0, norms, 1.0))
    return np.concatenate(out, axis=1).astype(np.float32)


def _check_matrix(embeddings: np.ndarray, name: str = "embeddings") -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty [N, d] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return np.ascontiguousarray(x)


def rq_kmeans(
    embeddings: np.ndarray,
    levels: int = 3,
    codes: int = 256,
    seed: int = 0,
    n_init: int = 3,
    max_iter: int = 300,
    extra_codes: int = 0,
    estimator: Callable[[int, int], Any] | None = None,
) -> SemanticIds:
    """RQ-KMeans code paths of ``embeddings`` [N, d], with a disambiguation level (see the module docstring).

    Args:
        embeddings: ``[N, d]`` item embeddings (cast to float32), row ``i`` = item ``i``.
        levels: k-means levels (the code path has ``levels + 1`` codes).
        codes: clusters per level, lowered to the number of distinct residual rows where there are fewer.
        seed: level ``l`` uses ``random_state = seed + l``.
        n_init: k-means restarts per level (the best inertia is kept).
        max_iter: Lloyd iterations per restart.
        extra_codes: values of the disambiguation level reserved for items added later.
        estimator: ``(n_clusters, random_state) -> `` an unfitted scikit-learn-style clusterer (``fit``,
            ``cluster_centers_``, ``labels_``) for each level, e.g. ``MiniBatchKMeans`` for a million items, where
            exact KMeans' k-means++ starts alone take over an hour on 2 CPU cores (``n_init`` and ``max_iter`` are
            then the estimator's own).
            ``None``: ``KMeans(n_clusters, n_init=n_init, max_iter=max_iter, random_state=random_state)``.

    Returns:
        ``SemanticIds``.
    """
    from sklearn.cluster import KMeans

    if levels < 1 or codes < 1 or n_init < 1 or extra_codes < 0:
        raise ValueError(
            f"need levels, codes, n_init >= 1 and extra_codes >= 0; got {levels}, {codes}, {n_init}, {extra_codes}"
        )
    residual = _check_matrix(embeddings).copy()
    columns, centroids = [], []
    for level in range(levels):
        k = min(codes, len(np.unique(residual, axis=0)))
        if estimator is None:
            km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed + level)
        else:
            km = estimator(k, seed + level)
        km = km.fit(residual)
        centres = km.cluster_centers_.astype(np.float32)
        labels = km.labels_.astype(np.int32)
        columns.append(labels)
        centroids.append(centres)
        residual -= centres[labels]
    prefix = np.stack(columns, axis=1)
    last = _disambiguate(prefix)
    size = int(last.max()) + 1 + extra_codes
    sizes = tuple(len(c) for c in centroids) + (size,)
    return SemanticIds(np.concatenate([prefix, last[:, None]], axis=1), sizes, tuple(centroids))


def kmeans_estimator(kind: str, batch_size: int = 4096) -> Callable[[int, int], Any] | None:
    """The ``rq_kmeans`` ``estimator`` of ``--sid_kmeans``: ``exact`` -> ``None`` (KMeans), ``minibatch`` ->
    seeded ``MiniBatchKMeans`` (k-means++ on a subsample, mini-batches of ``batch_size``, 3 starts)."""
    if kind == "exact":
        return None
    if kind != "minibatch":
        raise ValueError(f"unknown k-means kind {kind!r} (exact, minibatch)")
    from sklearn.cluster import MiniBatchKMeans

    return lambda k, seed: MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init=3, random_state=seed)


def rq_kmeans_warm(
    embeddings: np.ndarray,
    cold_items: Collection[int] = (),
    extra_codes: int = 0,
    neighbor_text: np.ndarray | None = None,
    **kmeans,
) -> SemanticIds:
    """``rq_kmeans`` fitted on the warm items only, the cold-start items coded afterwards like new items.

    The centroids (and the warm items' codes) come from ``rq_kmeans(embeddings[warm], **kmeans)``, so no cold item
    shapes them; each cold item then gets ``assign_codes`` against them: the nearest centroid of every level's
    residual and a free value of the disambiguation level, i.e. a new, collision-free leaf of the trie. The
    disambiguation level gets the values the warm and cold items use, plus ``extra_codes`` kept free for items added
    later. With ``neighbor_text`` a cold item's k-means codes are instead those of its nearest warm item by text
    cosine (``neighbor_prefix``; items without text keep the nearest centroids). With no cold item this is exactly
    ``rq_kmeans(embeddings, extra_codes=extra_codes, **kmeans)``.

    Args:
        embeddings: ``[N, d]`` every catalog item's embedding (row ``i`` = item ``i``).
        cold_items: internal ids of the cold items (``PreparedData.cold_items``).
        extra_codes: as ``rq_kmeans``.
        neighbor_text: ``[N, E]`` the items' text embeddings, or ``None`` (cold items: nearest centroids).
        kmeans: ``levels``, ``codes``, ``seed``, ``n_init``, ``max_iter`` of ``rq_kmeans``.
    """
    cold = sorted({int(i) for i in cold_items})
    if not cold:
        return rq_kmeans(embeddings, extra_codes=extra_codes, **kmeans)
    x = _check_matrix(embeddings)
    if cold[0] < 0 or cold[-1] >= len(x) or len(cold) == len(x):
        raise ValueError(f"cold_items must be some (not all) of the ids 0..{len(x) - 1}")
    is_cold = np.zeros(len(x), dtype=bool)
    is_cold[cold] = True
    warm = rq_kmeans(x[~is_cold], **kmeans)
    codes = np.empty((len(x), warm.num_levels), dtype=np.int32)
    codes[~is_cold] = warm.codes
    prefix = None
    if neighbor_text is not None:
        prefix = neighbor_prefix(np.asarray(neighbor_text)[is_cold], neighbor_text, ~is_cold, codes)
    codes[is_cold] = assign_codes(x[is_cold], warm.centroids, warm.codes, None, prefix)
    size = int(codes[:, -1].max()) + 1 + extra_codes
    return SemanticIds(codes, warm.level_sizes[:-1] + (size,), warm.centroids)


def _disambiguate(prefix: np.ndarray) -> np.ndarray:
    """[N] int32: each row's index among the rows with the same prefix, in row order."""
    _, inverse = np.unique(prefix, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")  # groups contiguous, row order kept inside each group
    sorted_groups = inverse[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    out = np.empty(len(order), dtype=np.int32)
    out[order] = rank
    return out


def residual_codes(embeddings: np.ndarray, centroids: Sequence[np.ndarray]) -> np.ndarray:
    """``[M, len(centroids)]`` int32 k-means codes of new embeddings: the nearest centroid of each level's residual."""
    residual = _check_matrix(embeddings).astype(np.float64)
    out = []
    for level, centres in enumerate(centroids):
        c = np.asarray(centres, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != residual.shape[1]:
            raise ValueError(f"centroids of level {level} have shape {c.shape}; embeddings have d={residual.shape[1]}")
        labels = np.concatenate(
            [_nearest(residual[s : s + 4096], c) for s in range(0, len(residual), 4096)]
        )  # in blocks: the [rows, k] distances of a million new items would not fit at once
        out.append(labels.astype(np.int32))
        residual = residual - c[labels]
    return np.stack(out, axis=1) if out else np.zeros((len(residual), 0), dtype=np.int32)


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of the nearest row of ``c`` [k, d] for each row of ``x`` [m, d] (squared Euclidean)."""
    return ((c**2).sum(1) - 2 * x @ c.T).argmin(axis=1)  # ||x||^2 is the same for every centroid


def assign_codes(
    embeddings: np.ndarray,
    centroids: Sequence[np.ndarray],
    existing_codes: np.ndarray,
    level_size: int | None = None,
    prefix: np.ndarray | None = None,
) -> np.ndarray:
    """Code paths for new items (cold start) that collide neither with ``existing_codes`` nor with each other.

    The k-means codes are the nearest centroids of each level's residual (``residual_codes``), or ``prefix`` where
    given; the disambiguation code is the smallest value not yet taken under them (a new leaf of the trie).

    Args:
        embeddings: ``[M, d]`` the new items' embeddings (same encoder and ``d`` as the catalog's).
        centroids: per k-means level ``[k_l, d]`` (``SemanticIds.centroids``).
        existing_codes: ``[N, len(centroids) + 1]`` the catalog's code paths.
        level_size: values of the disambiguation level (``SemanticIds.level_sizes[-1]``): a new item that would
            need a value beyond it raises; ``None`` = no limit (the caller then adds the code tokens it needs).
        prefix: ``[M, len(centroids)]`` k-means codes to use instead of the nearest centroids (``neighbor_prefix``);
            a row of ``-1`` is computed from its embedding.

    Returns:
        ``[M, len(centroids) + 1]`` int32.

    Raises:
        ValueError: shapes do not match, or a prefix has no free value left under ``level_size``.
    """
    existing = np.asarray(existing_codes, dtype=np.int64).reshape(-1, len(centroids) + 1)
    computed = residual_codes(embeddings, centroids)
    if prefix is not None:
        given = np.asarray(prefix, dtype=np.int64).reshape(len(computed), len(centroids))
        computed = np.where((given < 0).any(axis=1, keepdims=True), computed, given).astype(np.int32)
    prefix = computed
    taken: dict[tuple[int, ...], set[int]] = {}
    for row in existing.tolist():
        taken.setdefault(tuple(row[:-1]), set()).add(row[-1])
    last = np.empty(len(prefix), dtype=np.int32)
    for i, row in enumerate(prefix.tolist()):
        used = taken.setdefault(tuple(row), set())
        value = next(v for v in range(len(used) + 1) if v not in used)
        if level_size is not None and value >= level_size:
            raise ValueError(
                f"new item {i}: prefix {tuple(row)} already holds {len(used)} items, the disambiguation level has "
                f"{level_size} values (reserve more with rq_kmeans(extra_codes=...))"
            )
        used.add(value)
        last[i] = value
    return np.concatenate([prefix, last[:, None]], axis=1).astype(np.int32)


def neighbor_prefix(query_text: np.ndarray, text: np.ndarray, trained: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``[M, L - 1]`` int32: the k-means codes of each query's nearest trained item by text cosine (``-1``: the
    query has no text, or no trained item has one), for ``assign_codes(prefix=...)``: a new item becomes a new leaf
    beside the item its text resembles most, on a path the model was trained on (``--sid_cold_codes neighbor``).

    Args:
        query_text: ``[M, E]`` the new items' text embeddings.
        text: ``[N, E]`` the catalog's text embeddings (zero rows: no text).
        trained: ``[N]`` bool, the items whose codes may be borrowed.
        codes: ``[N, L]`` the catalog's code paths.
    """
    vectors = unit_rows(torch.as_tensor(np.asarray(text, dtype=np.float32)))
    near = nearest_items(vectors, torch.as_tensor(np.asarray(trained, dtype=bool)),
                         torch.as_tensor(np.asarray(query_text, dtype=np.float32)), 1)[:, 0].numpy()  # fmt: skip
    prefix = np.asarray(codes, dtype=np.int32)[np.maximum(near, 0), :-1].copy()
    prefix[near < 0] = -1
    return prefix
