"""The prepared data set: what ``llmrec prepare`` writes and every later command reads.

On disk (one directory, written atomically):
    catalog.parquet    item_id (int32, contiguous 0..N-1), raw_id (str), title (str, may be ""), text (str)
    sequences.parquet  user (str raw id), items (list<int32>, full chronological sequence of internal ids),
                       train (list<int32>), valid (int32), test (int32)   -- leave-one-out split
    stats.json         counts, sequence-length summary, what each filter removed
    meta.json          format version, source data set, the prepare options

Split protocol (leave-one-out): for a user's chronological sequence ``s`` (len >= 3),
``train = s[:-2]``, ``valid = s[-2]``, ``test = s[-1]``. Evaluating the validation split uses history
``s[:-2]`` and target ``s[-2]``; evaluating the test split uses history ``s[:-1]`` and target ``s[-1]``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
SPLITS = ("valid", "test")


class DataError(ValueError):
    """Bad input data or a bad prepared directory; the message names the file (and line/field) at fault."""


@dataclass
class Catalog:
    """Items with contiguous internal ids ``0..len-1`` and their raw ids / titles / extra text."""

    raw_ids: list[str]
    titles: list[str]
    texts: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.texts:
            self.texts = [""] * len(self.raw_ids)
        if not (len(self.raw_ids) == len(self.titles) == len(self.texts)):
            raise DataError("Catalog: raw_ids, titles and texts must have the same length")
        self._by_raw: dict[str, int] | None = None
        self._by_title: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.raw_ids)

    def index_of_raw(self, raw_id: str) -> int:
        """Internal id of a raw item id. Raises ``KeyError`` naming the id if unknown."""
        if self._by_raw is None:
            self._by_raw = {r: i for i, r in enumerate(self.raw_ids)}
        try:
            return self._by_raw[str(raw_id)]
        except KeyError:
            raise KeyError(f"unknown item id {raw_id!r} (not in the catalog of {len(self)} items)") from None

    def index_of_title(self, title: str) -> int:
        """Internal id of an item by exact (case-insensitive, stripped) title; first match wins."""
        if self._by_title is None:
            self._by_title = {}
            for i, t in enumerate(self.titles):
                if t:
                    self._by_title.setdefault(t.strip().lower(), i)
        try:
            return self._by_title[title.strip().lower()]
        except KeyError:
            raise KeyError(f"no item with title {title!r}") from None

    def resolve(self, ref: str | int) -> int:
        """Resolve a raw id or an exact title to an internal id (raw id takes precedence)."""
        try:
            return self.index_of_raw(str(ref))
        except KeyError:
            pass
        try:
            return self.index_of_title(str(ref))
        except KeyError:
            raise KeyError(f"{ref!r} is neither a raw item id nor an exact item title in the catalog") from None

    def search(self, query: str, limit: int = 20) -> list[int]:
        """Internal ids whose title contains ``query`` (case-insensitive), in id order."""
        q = query.strip().lower()
        return [i for i, t in enumerate(self.titles) if q and q in t.lower()][:limit]


@dataclass
class PreparedData:
    """A prepared data set in memory. Item ids are internal (``0..num_items-1``)."""

    catalog: Catalog
    users: list[str]
    sequences: list[list[int]]
    stats: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def name(self) -> str:
        return str(self.meta.get("dataset", "custom"))

    def train_sequences(self) -> list[list[int]]:
        """Training part of every user's sequence (``s[:-2]``)."""
        return [s[:-2] for s in self.sequences]

    def split(self, split: str) -> tuple[list[list[int]], list[int]]:
        """(histories, targets) for ``split`` in {"valid", "test"} under leave-one-out."""
        if split == "valid":
            return [s[:-2] for s in self.sequences], [s[-2] for s in self.sequences]
        if split == "test":
            return [s[:-1] for s in self.sequences], [s[-1] for s in self.sequences]
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    def item_popularity(self) -> np.ndarray:
        """Interaction counts per item over the training parts only, shape ``[num_items]`` (int64)."""
        counts = np.zeros(self.num_items, dtype=np.int64)
        for s in self.sequences:
            if len(s) > 2:
                np.add.at(counts, np.asarray(s[:-2], dtype=np.int64), 1)
        return counts


def save_prepared(data: PreparedData, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``data`` to ``out_dir`` atomically: a temp dir next to it is filled, then renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise DataError(f"output directory {out} exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        cat = data.catalog
        pq.write_table(
            pa.table(
                {
                    "item_id": pa.array(np.arange(len(cat), dtype=np.int32)),
                    "raw_id": pa.array(cat.raw_ids, pa.string()),
                    "title": pa.array(cat.titles, pa.string()),
                    "text": pa.array(cat.texts, pa.string()),
                }
            ),
            tmp / "catalog.parquet",
        )
        seqs = data.sequences
        pq.write_table(
            pa.table(
                {
                    "user": pa.array(data.users, pa.string()),
                    "items": pa.array(seqs, pa.list_(pa.int32())),
                    "train": pa.array([s[:-2] for s in seqs], pa.list_(pa.int32())),
                    "valid": pa.array([s[-2] for s in seqs], pa.int32()),
                    "test": pa.array([s[-1] for s in seqs], pa.int32()),
                }
            ),
            tmp / "sequences.parquet",
        )
        (tmp / "stats.json").write_text(json.dumps(data.stats, indent=2) + "\n")
        meta = {"format_version": FORMAT_VERSION, **data.meta}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "d")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _flat_list_column(table, name: str) -> list[list[int]]:
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy().tolist()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def load_prepared(path: str | os.PathLike) -> PreparedData:
    """Load a directory written by ``llmrec prepare``. Raises ``DataError`` naming what is missing."""
    import pyarrow.parquet as pq

    path = Path(path)
    for name in ("catalog.parquet", "sequences.parquet", "stats.json", "meta.json"):
        if not (path / name).is_file():
            raise DataError(f"{path} is not a prepared data set: {name} is missing (create it with `llmrec prepare`)")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path / 'meta.json'}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}; "
            "re-run `llmrec prepare`"
        )
    cat = pq.read_table(path / "catalog.parquet")
    catalog = Catalog(
        raw_ids=cat.column("raw_id").to_pylist(),
        titles=cat.column("title").to_pylist(),
        texts=cat.column("text").to_pylist(),
    )
    seq = pq.read_table(path / "sequences.parquet", columns=["user", "items"])
    return PreparedData(
        catalog=catalog,
        users=seq.column("user").to_pylist(),
        sequences=_flat_list_column(seq, "items"),
        stats=json.loads((path / "stats.json").read_text()),
        meta=meta,
    )


def pad_histories(histories: Sequence[Sequence[int]], max_len: int, pad: int, left: bool = True) -> np.ndarray:
    """Truncate each history to its last ``max_len`` items and pad to ``[B, max_len]`` (left padding by default)."""
    out = np.full((len(histories), max_len), pad, dtype=np.int64)
    for i, h in enumerate(histories):
        h = list(h)[-max_len:]
        if not h:
            continue
        if left:
            out[i, max_len - len(h) :] = h
        else:
            out[i, : len(h)] = h
    return out
