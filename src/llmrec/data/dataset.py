"""The prepared data set: what ``llmrec prepare`` writes and every later command reads.

On disk (one directory, written atomically):
    catalog.parquet    item_id (int32, contiguous 0..N-1), raw_id (str), title (str, may be ""), text (str),
                       alt_id (str, "" if none: e.g. the ASIN of an S3-Rec Amazon item)
    sequences.parquet  user (str raw id), items (list<int32>, full chronological sequence of internal ids),
                       train (list<int32>), valid (int32), test (int32)   -- leave-one-out split
    stats.json         counts, sequence-length summary, what each filter removed (and the cold items, if any)
    meta.json          format version, source data set, the prepare options; ``cold_items`` (sorted internal ids)
                       only in a cold-start data set

Split protocol (leave-one-out): for a user's chronological sequence ``s`` (len >= 3),
``train = s[:-2]``, ``valid = s[-2]``, ``test = s[-1]``. Evaluating the validation split uses history
``s[:-2]`` and target ``s[-2]``; evaluating the test split uses history ``s[:-1]`` and target ``s[-1]``.

Cold-start items (``llmrec prepare --cold_items FRAC``): a set ``C`` of items new to the system. ``items`` still
holds the full sequence, so every target stays where it was (a cold item may be a valid or test target), but
``C`` is left out of every training part and every history: ``train = [i for i in s[:-2] if i not in C]`` (also
the ``train`` column and the validation history), the test history is ``[i for i in s[:-1] if i not in C]``. A
user whose training part is all cold keeps an empty one (and is still evaluated, from an empty or one-item
history). The fingerprint covers ``C``; a data set without cold items has no ``cold_items`` key and the same files
and fingerprint as before cold items existed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmrec.data.catalog import AmbiguousItemError, Catalog  # noqa: F401  (re-exported)
from llmrec.errors import DataError
from llmrec.files import atomic_write_with

FORMAT_VERSION = 1
SPLITS = ("valid", "test")


@dataclass
class PreparedData:
    """A prepared data set in memory. Item ids are internal (``0..num_items-1``)."""

    catalog: Catalog
    users: list[str]
    sequences: list[list[int]]
    stats: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    cold_items: frozenset[int] = field(default_factory=frozenset)  # never in a training part or history

    def __post_init__(self):
        self.cold_items = frozenset(self.cold_items)

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def name(self) -> str:
        return str(self.meta.get("dataset", "custom"))

    def _warm(self, items: list[int]) -> list[int]:
        cold = self.cold_items
        return [i for i in items if i not in cold] if cold else items

    def train_sequences(self) -> list[list[int]]:
        """Training part of every user's sequence (``s[:-2]``, without cold items: possibly empty)."""
        return [self._warm(s[:-2]) for s in self.sequences]

    def split(self, split: str) -> tuple[list[list[int]], list[int]]:
        """(histories, targets) for ``split`` in {"valid", "test"} under leave-one-out.

        Histories never hold a cold item; targets are kept as they are, cold or not (see the module docstring).
        """
        if split == "valid":
            return [self._warm(s[:-2]) for s in self.sequences], [s[-2] for s in self.sequences]
        if split == "test":
            return [self._warm(s[:-1]) for s in self.sequences], [s[-1] for s in self.sequences]
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the catalog (raw ids, titles, texts), the users, their sequences and the cold items.

        The leave-one-out split is a function of the sequences and the cold items, so two data sets with the same
        fingerprint give every model the same training data, candidates and targets. Cached after the first call.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = data_fingerprint(self.catalog, self.users, self.sequences, self.cold_items)
            self.__dict__["_fingerprint"] = cached
        return cached

    def subsample(self, n: int, seed: int) -> PreparedData:
        """The same data restricted to ``n`` random users (fixed by ``seed``), in their original order.

        Returns ``self`` when ``n`` <= 0 or ``n`` >= the number of users. The catalog is shared.
        """
        if n <= 0 or n >= self.num_users:
            return self
        keep = sorted(np.random.default_rng(seed).choice(self.num_users, n, replace=False).tolist())
        return PreparedData(
            catalog=self.catalog,
            users=[self.users[i] for i in keep],
            sequences=[self.sequences[i] for i in keep],
            stats=self.stats,
            meta=self.meta,
            cold_items=self.cold_items,
        )

    def item_popularity(self) -> np.ndarray:
        """Interaction counts per item over the training parts only (0 for a cold item), ``[num_items]`` int64."""
        counts = np.zeros(self.num_items, dtype=np.int64)
        for s in self.train_sequences():
            if s:
                np.add.at(counts, np.asarray(s, dtype=np.int64), 1)
        return counts


def data_fingerprint(
    catalog: Catalog, users: Sequence[str], sequences: Sequence[Sequence[int]], cold_items: Collection[int] = ()
) -> str:
    """SHA-256 hex digest of a prepared data set's content (see ``PreparedData.fingerprint``).

    Without cold items the digest is the one of data sets prepared before cold items existed.
    """
    h = hashlib.sha256(b"llmrec-data-v1\0")
    for column in (catalog.raw_ids, catalog.alt_ids, catalog.titles, catalog.texts, users):
        h.update(len(column).to_bytes(8, "little"))
        h.update("\0".join(column).encode("utf-8") + b"\1")
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    h.update(lengths.tobytes())
    h.update(np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum())).tobytes())
    if cold_items:  # the byte streams above have fixed lengths, so this tail cannot collide with other sequences
        h.update(b"cold\0" + np.asarray(sorted(cold_items), dtype=np.int64).tobytes())
    return h.hexdigest()


def save_catalog(catalog: Catalog, path: str | os.PathLike) -> None:
    """Write ``catalog`` as Parquet (item_id, raw_id, title, text, alt_id) to ``path`` atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "item_id": pa.array(np.arange(len(catalog), dtype=np.int32)),
            "raw_id": pa.array(catalog.raw_ids, pa.string()),
            "title": pa.array(catalog.titles, pa.string()),
            "text": pa.array(catalog.texts, pa.string()),
            "alt_id": pa.array(catalog.alt_ids, pa.string()),
        }
    )
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp))


def load_catalog(path: str | os.PathLike) -> Catalog:
    """Read a catalog written by ``save_catalog``."""
    import pyarrow.parquet as pq

    cat = pq.read_table(path)
    return Catalog(
        raw_ids=cat.column("raw_id").to_pylist(),
        titles=cat.column("title").to_pylist(),
        texts=cat.column("text").to_pylist(),
        alt_ids=cat.column("alt_id").to_pylist() if "alt_id" in cat.column_names else [],
    )


def save_prepared(data: PreparedData, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``data`` to ``out_dir`` atomically and return ``out_dir``.

    The files are written into a temporary directory next to ``out_dir``, fsynced, and renamed into place; an old
    data set there is removed only after the new one is in place. ``overwrite`` replaces only a directory written by
    ``llmrec prepare`` that holds nothing else; the rules (and the clean-up of killed runs) are in
    ``llmrec.data.outdir``.

    Raises:
        DataError: ``out_dir`` is refused (not empty without ``overwrite``, not a prepared data set, holds other
            files, is a file, the working directory or a parent of it, a mount point, not writable).
        OSError: the file system fails while writing (nothing is left half-written).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    import llmrec.data.outdir as outdir
    from llmrec.files import replace_dir

    outdir.recover(outdir.resolve_output(out_dir))  # a data set a killed replace left aside counts as present
    target = outdir.check_output_dir(out_dir, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    outdir.clean_stale(target)
    tmp = outdir.make_temp_dir(target)
    try:
        save_catalog(data.catalog, tmp / "catalog.parquet")
        seqs = data.sequences
        pq.write_table(
            pa.table(
                {
                    "user": pa.array(data.users, pa.string()),
                    "items": pa.array(seqs, pa.list_(pa.int32())),
                    "train": pa.array(data.train_sequences(), pa.list_(pa.int32())),
                    "valid": pa.array([s[-2] for s in seqs], pa.int32()),
                    "test": pa.array([s[-1] for s in seqs], pa.int32()),
                }
            ),
            tmp / "sequences.parquet",
        )
        (tmp / "stats.json").write_text(json.dumps(data.stats, indent=2) + "\n")
        meta = {"format_version": FORMAT_VERSION, **data.meta, "fingerprint": data.fingerprint}
        meta.pop("cold_items", None)  # the field is the truth (a loaded data set's meta holds the old list)
        if data.cold_items:
            meta["cold_items"] = sorted(data.cold_items)
        meta["files"] = list(outdir.PREPARED_FILES)  # what llmrec wrote: all that --overwrite may replace
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(out_dir)


def _flat_list_column(table, name: str) -> list[list[int]]:
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy().tolist()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); re-run `llmrec prepare`") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object; re-run `llmrec prepare`")
    return value


def load_prepared(path: str | os.PathLike) -> PreparedData:
    """Load a directory written by ``llmrec prepare``.

    Raises:
        DataError: a file is missing, unreadable or not what ``prepare`` writes (the message names it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such prepared data directory (create it with `llmrec prepare`)")
    for name in ("catalog.parquet", "sequences.parquet", "stats.json", "meta.json"):
        if not (path / name).is_file():
            raise DataError(f"{path} is not a prepared data set: {name} is missing (create it with `llmrec prepare`)")
    meta = _read_json(path / "meta.json")
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path / 'meta.json'}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}; "
            "re-run `llmrec prepare`"
        )
    try:
        catalog = load_catalog(path / "catalog.parquet")
    except (pa.ArrowException, KeyError) as e:
        raise DataError(
            f"{path / 'catalog.parquet'}: unreadable or missing a column ({e}); re-run `llmrec prepare`"
        ) from None
    try:
        seq = pq.read_table(path / "sequences.parquet", columns=["user", "items"])
    except (pa.ArrowException, KeyError) as e:
        raise DataError(
            f"{path / 'sequences.parquet'}: unreadable or missing a column ({e}); re-run `llmrec prepare`"
        ) from None
    return PreparedData(
        catalog=catalog,
        users=seq.column("user").to_pylist(),
        sequences=_flat_list_column(seq, "items"),
        stats=_read_json(path / "stats.json"),
        meta=meta,
        cold_items=_cold_items(meta, len(catalog), path / "meta.json"),
    )


def _cold_items(meta: dict, num_items: int, path: Path) -> frozenset[int]:
    """The ``cold_items`` of ``meta.json`` (absent: none), checked to be distinct item ids of the catalog."""
    ids = meta.get("cold_items", [])
    ok = (
        isinstance(ids, list) and all(type(i) is int and 0 <= i < num_items for i in ids) and len(set(ids)) == len(ids)
    )
    if not ok:
        raise DataError(
            f"{path}: cold_items must be a list of distinct item ids in 0..{num_items - 1}; re-run prepare"
        )
    return frozenset(ids)
