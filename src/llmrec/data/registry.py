"""Known public data sets: where their files live under the data directory and where to download them.

The registry is a dict ``name -> DatasetSpec``. A spec lists one or more *layouts* (alternative sets of
files in ``<data_dir>/<subdir>/``); the first layout whose required files exist is read. When none
exists, ``DataError`` says which files are expected where and where to download them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.data import readers
from llmrec.data.dataset import DataError
from llmrec.data.readers import RawLog


@dataclass(frozen=True)
class Layout:
    reader: Callable[..., RawLog]
    files: dict[str, str]  # reader keyword -> file name (relative to the data set's folder)
    optional: tuple[str, ...] = ()  # reader keywords whose files may be absent
    # separate (titles reader, file), optional; reader(path, [encoding], used=dict) -> (titles, texts)
    titles: tuple[Callable[..., tuple[dict, dict]], str] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    subdir: str
    layouts: tuple[Layout, ...]
    download: str
    description: str
    defaults: dict = field(default_factory=dict)  # prepare options (e.g. kcore) that reproduce the benchmark


_S3REC = "https://github.com/RUCAIBox/CIKM2020-S3Rec/tree/master/data"
_AMAZON14 = "https://jmcauley.ucsd.edu/data/amazon/ (2014 5-core reviews + metadata)"


def _s3rec(name: str, subdir: str, stem: str, what: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        subdir=subdir,
        layouts=(
            Layout(
                readers.read_sequences,
                {"path": f"{stem}.txt", "titles_path": f"{stem}_item_titles.tsv"},
                ("titles_path",),
            ),
            Layout(
                readers.read_amazon,
                {"reviews_path": f"reviews_{stem}_5.json.gz", "meta_path": f"meta_{stem}.json.gz"},
                ("meta_path",),
            ),
        ),
        download=f"{stem}.txt from {_S3REC}; or reviews_{stem}_5.json.gz and meta_{stem}.json.gz from {_AMAZON14}",
        description=f"Amazon {what} 2014, 5-core, S3-Rec split",
    )


REGISTRY: dict[str, DatasetSpec] = {
    "beauty": _s3rec("beauty", "beauty", "Beauty", "Beauty"),
    "sports": _s3rec("sports", "sports", "Sports_and_Outdoors", "Sports and Outdoors"),
    "toys": _s3rec("toys", "toys", "Toys_and_Games", "Toys and Games"),
    "ml-1m": DatasetSpec(
        name="ml-1m",
        subdir="ml-1m",
        layouts=(
            Layout(
                readers.read_movielens_1m,
                {"ratings_path": "ratings.dat", "movies_path": "movies.dat"},
                ("movies_path",),
            ),
            Layout(
                readers.read_sequences, {"path": "ml-1m_seq_rawids.txt"}, (), (readers.read_movies_dat, "movies.dat")
            ),
        ),
        download="https://files.grouplens.org/datasets/movielens/ml-1m.zip (unzip; ratings.dat + movies.dat)",
        description="MovieLens 1M, all ratings as implicit interactions, chronological",
    ),
    "ml-100k": DatasetSpec(
        name="ml-100k",
        subdir="ml-100k",
        layouts=(Layout(readers.read_movielens_100k, {"data_path": "u.data", "item_path": "u.item"}, ("item_path",)),),
        download="https://files.grouplens.org/datasets/movielens/ml-100k.zip (unzip; u.data + u.item)",
        description="MovieLens 100K, all ratings as implicit interactions, chronological",
    ),
}


def default_data_dir() -> str:
    return os.environ.get("LLMREC_DATA_DIR", "data")


def read_registered(name: str, data_dir: str | os.PathLike, encoding: str | None = None) -> RawLog:
    """Read a registered data set from ``<data_dir>/<subdir>/``.

    Raises:
        DataError: unknown name, or none of its layouts' files present (the message lists them and the download).
    """
    if name not in REGISTRY:
        raise DataError(
            f"unknown data set {name!r}; known: {sorted(REGISTRY)} (or pass --format and --input for your own files)"
        )
    spec = REGISTRY[name]
    folder = Path(data_dir) / spec.subdir
    for layout in spec.layouts:
        required = [f for k, f in layout.files.items() if k not in layout.optional]
        if all((folder / f).is_file() for f in required):
            kwargs = {}
            for key, fname in layout.files.items():
                if (folder / fname).is_file():
                    kwargs[key] = folder / fname
            if encoding is not None:
                kwargs["encoding"] = encoding
            log = layout.reader(**kwargs)
            if layout.titles and (folder / layout.titles[1]).is_file():
                reader, path = layout.titles[0], folder / layout.titles[1]
                enc = {} if encoding is None else {"encoding": encoding}
                log.titles, log.texts = reader(path, used=log.encodings, **enc)
                log.titles_source = str(path)
            return log
    expected = " OR ".join("{" + ", ".join(str(folder / f) for f in lay.files.values()) + "}" for lay in spec.layouts)
    raise DataError(
        f"data set {name!r} not found under {Path(data_dir).resolve()}: expected files {expected} "
        f"(optional: titles/metadata). Download: {spec.download}. Set --data-dir or LLMREC_DATA_DIR."
    )
