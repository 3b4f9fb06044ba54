"""Semantic IDs on disk: a run's code paths and centroids (``llmrec.items.semantic.SemanticIds``).

Storage (``save_semantic_ids`` / ``load_semantic_ids``), each file written atomically (temp file + rename; the
centroids first, so a ``semantic_ids.parquet`` is never there without its centroids):
    semantic_ids.parquet            item_id (int32, 0..N-1), codes (list<int32>, levels + 1 codes); the schema's
                                    ``llmrec`` metadata holds ``level_sizes`` (values per level, JSON)
    semantic_centroids.safetensors  ``level_{l}`` [k_l, d] float32 for every k-means level l (cold start: new items
                                    are coded with ``assign_codes``, and the code tokens start from them)
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from llmrec.errors import DataError
from llmrec.files import atomic_write_bytes
from llmrec.items.semantic import SemanticIds

IDS_FILE = "semantic_ids.parquet"
CENTROIDS_FILE = "semantic_centroids.safetensors"
FORMAT_VERSION = 1


def save_semantic_ids(sids: SemanticIds, out_dir: str | os.PathLike) -> None:
    """Write ``semantic_ids.parquet`` and ``semantic_centroids.safetensors`` into ``out_dir``, each atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.numpy import save

    out = Path(out_dir)
    codes = np.asarray(sids.codes, dtype=np.int32)
    table = pa.table(
        {
            "item_id": pa.array(np.arange(len(codes), dtype=np.int32)),
            "codes": pa.array(codes.tolist(), pa.list_(pa.int32())),
        }
    )
    meta = {"format": FORMAT_VERSION, "level_sizes": [int(s) for s in sids.level_sizes]}
    table = table.replace_schema_metadata({"llmrec": json.dumps(meta)})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    tensors = {f"level_{i}": np.ascontiguousarray(c, dtype=np.float32) for i, c in enumerate(sids.centroids)}
    atomic_write_bytes(out / CENTROIDS_FILE, save(tensors, metadata={"format": str(FORMAT_VERSION)}))
    atomic_write_bytes(out / IDS_FILE, buf.getvalue())


def load_semantic_ids(run_dir: str | os.PathLike, num_items: int | None = None) -> SemanticIds:
    """Read and validate the files written by ``save_semantic_ids`` in ``run_dir``.

    Checked: both files present and readable; item ids a permutation of ``0..N-1`` (and ``N == num_items`` if
    given); every item has the same number of codes, each within its level's size; no two items share a path;
    one centroid matrix per k-means level with ``level_sizes[l]`` rows and a common ``d``.

    Raises:
        DataError: naming the file and what is wrong.
    """
    import pyarrow.parquet as pq

    path = Path(run_dir) / IDS_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing (a semantic-ID run writes it at training time)")
    try:
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"llmrec", b"{}"))
        item_col, code_col = table.column("item_id").combine_chunks(), table.column("codes").combine_chunks()
        flat = code_col.flatten()
        ok = item_col.null_count == 0 and code_col.null_count == 0 and flat.null_count == 0
        item_ids = item_col.to_numpy(zero_copy_only=False).astype(np.int64)
        lengths = np.diff(code_col.offsets.to_numpy()) if len(code_col) else np.zeros(0, dtype=np.int64)
        values = flat.to_numpy(zero_copy_only=False).astype(np.int64)
    except (OSError, KeyError, ValueError, AttributeError) as e:  # pyarrow's errors subclass the first three
        raise DataError(f"{path}: not a semantic-ID table with columns item_id, codes ({e})") from None
    sizes = meta.get("level_sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list) or not sizes or not all(isinstance(s, int) and s >= 1 for s in sizes):
        raise DataError(f"{path}: schema metadata 'llmrec' lacks a valid level_sizes list")
    if not ok or (lengths != len(sizes)).any():
        raise DataError(f"{path}: every item must have exactly {len(sizes)} codes (one per level of level_sizes)")
    codes = _check_codes(path, item_ids, values.reshape(-1, len(sizes)), sizes, num_items)
    return SemanticIds(codes, tuple(sizes), _load_centroids(Path(run_dir) / CENTROIDS_FILE, sizes))


def _check_codes(path: Path, item_ids: np.ndarray, rows: np.ndarray, sizes: list[int], num_items: int | None):
    n = len(item_ids)
    if n == 0:
        raise DataError(f"{path}: holds no items")
    if num_items is not None and n != num_items:
        raise DataError(f"{path}: holds {n} items, the catalog has {num_items}")
    if not np.array_equal(np.sort(item_ids), np.arange(n)):
        raise DataError(f"{path}: item_id must be the contiguous ids 0..{n - 1}")
    codes = np.empty((n, len(sizes)), dtype=np.int64)
    codes[item_ids] = rows
    bad = (codes < 0) | (codes >= np.asarray(sizes))
    if bad.any():
        item, level = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"{path}: item {item} has code {codes[item, level]} at level {level}, outside 0..{sizes[level] - 1}"
        )
    uniq, counts = np.unique(codes, axis=0, return_counts=True)
    if len(uniq) != n:
        dup = uniq[counts > 1][0]
        items = np.flatnonzero((codes == dup).all(axis=1)).tolist()
        raise DataError(f"{path}: items {items} share the code path {dup.tolist()} (codes must be collision-free)")
    return codes.astype(np.int32)


def _load_centroids(path: Path, sizes: list[int]) -> tuple[np.ndarray, ...]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise DataError(f"{path} is missing (written next to {IDS_FILE})")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise DataError(f"{path}: not a readable safetensors file ({e})") from None
    expected = [f"level_{i}" for i in range(len(sizes) - 1)]
    if sorted(tensors) != sorted(expected):
        raise DataError(f"{path}: expected tensors {expected}, found {sorted(tensors)}")
    out = tuple(tensors[k].astype(np.float32) for k in expected)
    dims = {c.shape[1] if c.ndim == 2 else -1 for c in out}
    if len(dims) > 1 or -1 in dims or any(len(c) != s for c, s in zip(out, sizes)):
        shapes = [c.shape for c in out]
        raise DataError(f"{path}: centroid shapes {shapes} do not match level_sizes {sizes[:-1]} with one common d")
    return out
