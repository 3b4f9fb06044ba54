"""A prefix trie over the catalog's code paths (semantic IDs), stored as sorted edge arrays for batched lookups.

Nodes at depth ``t`` are the distinct code prefixes of length ``t`` (depth 0: the root, node 0). The edges of
depth ``t`` lead from a depth-``t`` node to a depth-``t+1`` node; they are numbered in lexicographic order of the
prefixes they end at, and the edge number *is* the child's node id. Each edge is identified by the key
``parent * level_sizes[t] + code``, and ``edge_keys[t]`` is sorted, so finding a child and listing all children of
many nodes at once are ``searchsorted`` calls on one tensor: no Python dict per prefix, and a million-item catalog
costs a few int64 arrays of about ``N`` entries per level.

``llmrec.decoding.CodeTrieLogitsProcessor`` walks the tokens each beam has generated down this trie and allows only
the children of the node it reached, minus the ``dead_edges`` of the user: an edge is dead when every item below
it is excluded, so a beam never enters a prefix that cannot finish in an allowed item.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class CodeTrie:
    """Trie of the code paths ``codes`` [N, L] (row ``i`` = item ``i``), which must be distinct.

    Args:
        codes: ``[N, L]`` non-negative integer codes.
        level_sizes: values per level (default: each column's maximum + 1); every code must lie below its size.

    Raises:
        ValueError: empty or non-2-D codes, codes outside the level sizes, or two items with the same path.
    """

    def __init__(self, codes: np.ndarray | torch.Tensor, level_sizes: Sequence[int] | None = None):
        c = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        if c.dim() != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"codes must be a non-empty [N, L] matrix, got shape {tuple(c.shape)}")
        sizes = (
            tuple(int(s) for s in level_sizes) if level_sizes is not None else tuple(c.max(0).values.add(1).tolist())
        )
        if len(sizes) != c.shape[1] or ((c < 0) | (c >= torch.tensor(sizes))).any():
            raise ValueError(f"codes of shape {tuple(c.shape)} do not fit level sizes {sizes}")
        self.codes, self.level_sizes = c, sizes
        self.edge_keys: list[torch.Tensor] = []  # per depth, sorted [E_t]: parent * level_sizes[t] + code
        self.leaf_counts: list[torch.Tensor] = []  # per depth [E_t]: items below each edge
        self.item_edges = torch.empty_like(c)  # [N, L]: the edge each item's path takes at each depth
        node = torch.zeros(len(c), dtype=torch.long)
        for depth, size in enumerate(sizes):
            keys, inverse, counts = torch.unique(node * size + c[:, depth], return_inverse=True, return_counts=True)
            self.edge_keys.append(keys)
            self.leaf_counts.append(counts)
            self.item_edges[:, depth] = inverse
            node = inverse
        if len(self.edge_keys[-1]) != len(c):
            raise ValueError("codes are not collision-free: two items share a code path")
        self.leaf_items = torch.empty(len(c), dtype=torch.long)
        self.leaf_items[node] = torch.arange(len(c))

    @property
    def num_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_levels(self) -> int:
        return int(self.codes.shape[1])

    def num_edges(self, depth: int) -> int:
        return int(len(self.edge_keys[depth]))

    def walk(self, prefixes: torch.Tensor) -> torch.Tensor:
        """``[R]`` node ids at depth ``t`` reached by ``prefixes`` [R, t] of codes; ``-1`` where not a catalog prefix."""
        node = torch.zeros(prefixes.shape[0], dtype=torch.long)
        for depth in range(prefixes.shape[1]):
            node = self._child(node, prefixes[:, depth].long(), depth)
        return node

    def _child(self, node: torch.Tensor, code: torch.Tensor, depth: int) -> torch.Tensor:
        size, keys = self.level_sizes[depth], self.edge_keys[depth]
        key = node * size + code
        idx = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        found = (node >= 0) & (code >= 0) & (code < size) & (keys[idx] == key)
        return torch.where(found, idx, torch.full_like(idx, -1))

    def children(self, nodes: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All children of depth-``depth`` ``nodes`` [R] as pairs ``(rows [E], edges [E])``; node ``-1`` has none."""
        size, keys = self.level_sizes[depth], self.edge_keys[depth]
        lo = torch.searchsorted(keys, nodes * size)
        hi = torch.searchsorted(keys, nodes * size + size)
        counts = torch.where(nodes >= 0, hi - lo, torch.zeros_like(lo))
        rows = torch.repeat_interleave(torch.arange(len(nodes)), counts)
        first = torch.repeat_interleave(lo, counts)
        within = torch.arange(len(rows)) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        return rows, first + within

    def edge_codes(self, depth: int, edges: torch.Tensor) -> torch.Tensor:
        """The code each edge of depth ``depth`` stands for."""
        return self.edge_keys[depth][edges] % self.level_sizes[depth]

    def items(self, paths: torch.Tensor) -> torch.Tensor:
        """``[R]`` item id of each full code path ``paths`` [R, L]; ``-1`` for a path that is not in the catalog."""
        if paths.shape[1] != self.num_levels:
            return torch.full((paths.shape[0],), -1, dtype=torch.long)
        node = self.walk(paths)
        return torch.where(node >= 0, self.leaf_items[node.clamp(min=0)], node)

    def dead_edges(self, exclude: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per depth, the sorted keys ``user * num_edges(depth) + edge`` of the edges whose items user excludes all.

        ``exclude[u]`` lists user ``u``'s excluded item ids (ids outside the catalog and repeats are ignored). An
        excluded item's leaf edge is dead; so is every edge above it once all items below that edge are excluded.
        """
        users, items = _pairs(exclude, self.num_items)
        out = []
        for depth in range(self.num_levels):
            edges = self.item_edges[items, depth]
            keys, counts = torch.unique(users * self.num_edges(depth) + edges, return_counts=True)
            out.append(keys[counts == self.leaf_counts[depth][keys % self.num_edges(depth)]])
        return out

    def num_allowed(self, exclude: Sequence[Sequence[int]]) -> list[int]:
        """Per user, the number of catalog items not excluded."""
        users, _ = _pairs(exclude, self.num_items)
        return (self.num_items - torch.bincount(users, minlength=len(exclude))).tolist()


def _pairs(exclude: Sequence[Sequence[int]], num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct ``(user, item)`` pairs of ``exclude`` with items inside ``0..num_items-1``, as two [P] tensors."""
    users = torch.tensor([u for u, items in enumerate(exclude) for _ in items], dtype=torch.long)
    items = torch.tensor([int(i) for items in exclude for i in items], dtype=torch.long)
    keep = (items >= 0) & (items < num_items)
    keys = torch.unique(users[keep] * num_items + items[keep])
    return keys // num_items, keys % num_items
