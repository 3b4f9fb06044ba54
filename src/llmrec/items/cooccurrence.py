"""Collaborative item factors from training co-occurrences, to add to the title initialisation of the item rows.

A spectral embedding of the item co-occurrence graph of the training sequences (``s[:-2]`` only, so nothing of
the validation or test targets leaks in):

    C[i, j] = number of times items i != j sit at most ``window`` positions apart in a training sequence
              (symmetric)
    A = D^-1/2 C D^-1/2,  D = diag(row sums of C)
    A ~= U S U^T (top ``dim``, ``torch.svd_lowrank``)  ->  factors F = U sqrt(S)    [num_items, dim]

Items that never co-occur with another item get zero factors. ``cf_rows`` maps the factors into the LM's
embedding space with a fixed random orthonormal projection [dim, hidden] and scales them so that their mean row
norm is ``scale`` times the mean norm of the rows they are added to: ``rows + cf_rows(...)`` keeps the title
meaning and adds a direction shared by items that users buy together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def cooccurrence_matrix(sequences: Sequence[Sequence[int]], num_items: int, window: int = 3) -> torch.Tensor:
    """Sparse symmetric [num_items, num_items] float32 (coalesced) co-occurrence counts; zero diagonal."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    rows: list[int] = []
    cols: list[int] = []
    for s in sequences:
        for d in range(1, window + 1):
            for a, b in zip(s[:-d], s[d:]):
                if a != b:
                    rows += (a, b)
                    cols += (b, a)
    idx = torch.tensor([rows, cols], dtype=torch.int64).reshape(2, -1)
    if idx.numel() and (idx.min() < 0 or idx.max() >= num_items):
        raise ValueError(f"item ids must lie in [0, {num_items}), got {int(idx.min())}..{int(idx.max())}")
    val = torch.ones(idx.shape[1], dtype=torch.float32)
    return torch.sparse_coo_tensor(idx, val, (num_items, num_items), check_invariants=True).coalesce()


def cooccurrence_factors(
    sequences: Sequence[Sequence[int]], num_items: int, dim: int, window: int = 3, seed: int = 0
) -> torch.Tensor:
    """[num_items, dim] float32 spectral factors ``U sqrt(S)`` of the normalised co-occurrence matrix."""
    if not 1 <= dim < num_items:
        raise ValueError(f"dim must be in [1, num_items), got {dim} for {num_items} items")
    c = cooccurrence_matrix(sequences, num_items, window)
    deg = torch.zeros(num_items).index_add_(0, c.indices()[0], c.values())
    inv = deg.clamp(min=1e-12).rsqrt() * (deg > 0)
    i, j = c.indices()
    a = torch.sparse_coo_tensor(c.indices(), c.values() * inv[i] * inv[j], c.shape, check_invariants=True).coalesce()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # svd_lowrank draws a random start; keep the factors a function of the data and seed
    try:
        u, s, _ = torch.svd_lowrank(a, q=min(dim + 10, num_items), niter=6)
    finally:
        torch.random.set_rng_state(state)
    f = u[:, :dim] * s[:dim].clamp(min=0).sqrt()
    return f * (deg > 0).unsqueeze(1)


def cf_rows(factors: torch.Tensor, rows: torch.Tensor, scale: float, seed: int = 0) -> torch.Tensor:
    """[N, D] addition for item rows ``rows`` [N, D]: ``factors`` [N, k] through a random orthonormal [k, D] map.

    Scaled so that the mean norm over items with non-zero factors is ``scale`` times the mean norm of ``rows``.
    """
    n, k = factors.shape
    d = rows.shape[1]
    if rows.shape[0] != n or k > d:
        raise ValueError(f"factors {tuple(factors.shape)} do not fit rows {tuple(rows.shape)}")
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=gen))  # [D, k], orthonormal columns
    out = factors.float() @ q.T
    norms = out.norm(dim=1)
    live = norms > 0
    if not live.any():
        return torch.zeros_like(rows, dtype=torch.float32)
    return out * (scale * rows.float().norm(dim=1).mean() / norms[live].mean())


@torch.no_grad()
def add_cf_rows(row_sets: Sequence[torch.Tensor], factors: torch.Tensor, scale: float, seed: int = 0) -> None:
    """Add ``cf_rows(factors, rows, scale, seed)`` in place to each ``rows`` [N, D] in ``row_sets`` (weight views)."""
    for rows in row_sets:
        rows += cf_rows(factors, rows, scale, seed).to(device=rows.device, dtype=rows.dtype)
