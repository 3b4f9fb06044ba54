"""Hugging Face ``datasets`` input: a folder written by ``save_to_disk`` or a dataset id already in the local cache.

Protocol:
- ``ref`` is a folder holding a ``Dataset`` (``state.json``) or a ``DatasetDict`` (``dataset_dict.json``), read with
  ``datasets.load_from_disk``; otherwise a Hub id (``owner/name``) looked up in the ``datasets`` cache
  (``$HF_DATASETS_CACHE``, or ``cache_dir``) and never downloaded: a missing id is a ``DataError`` naming it.
- Splits: an explicit ``split`` must exist. Otherwise the interactions are the only split other than ``meta``, else
  ``train``, else ``full`` (Amazon Reviews 2023 calls its one split ``full``); metadata (titles) is the ``meta``
  split, else the only split, else ``full``/``train``. A ``DatasetDict`` with a ``meta`` split gives titles by itself.
- Columns as in ``llmrec.data.tables`` (an empty item column = ``item_id``, else ``parent_asin``, else ``asin``). The
  metadata's id column is the item column when it has one, else found the same way; its ``title`` column gives titles
  and ``features``/``description`` (strings or lists of strings) the extra text: the Amazon Reviews 2023 ``raw_meta_*``
  layout.
"""

from __future__ import annotations

import re
from pathlib import Path

from llmrec.data.readers import RawLog, item_text
from llmrec.data.tables import ITEM_COLUMNS, log_from_arrow, resolve_columns
from llmrec.errors import DataError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TEXT_COLUMNS = ("features", "feature", "description", "text")


def load(ref: str, config: str = "", cache_dir: str = ""):
    """The ``Dataset`` or ``DatasetDict`` at ``ref`` (see the module protocol). Never touches the network.

    Raises:
        DataError: ``ref`` is a file, a folder not written by ``save_to_disk``, or an id not in the local cache.
    """
    import datasets

    path = Path(ref)
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path))
        except FileNotFoundError as e:
            raise DataError(
                f"{ref}: not a Hugging Face dataset folder ({' '.join(str(e).split())}); --format hf reads a folder "
                "written by Dataset.save_to_disk / DatasetDict.save_to_disk, or a dataset id in the local cache"
            ) from None
    if path.exists():
        raise DataError(
            f"{ref}: is a file; --format hf reads a save_to_disk folder (for files use --format parquet/csv)"
        )
    if not HUB_ID.match(ref):
        raise DataError(f"{ref}: no such folder (and not a Hugging Face dataset id)")
    return _from_cache(ref, config, cache_dir)


def _from_cache(ref: str, config: str, cache_dir: str):
    """All splits of dataset ``ref`` (optionally its ``config``) from the local ``datasets`` cache, offline.

    This is the builder ``load_dataset`` itself falls back to in offline mode; calling it directly guarantees no
    network access whatever ``HF_DATASETS_OFFLINE`` was when ``datasets`` was imported.
    """
    import datasets
    from datasets.packaged_modules.cache.cache import Cache

    where = cache_dir or str(datasets.config.HF_DATASETS_CACHE)
    try:
        builder = Cache(
            cache_dir=cache_dir or None,
            repo_id=ref,
            dataset_name=ref.split("/")[-1],
            config_name=config or None,
            version="auto",
            hash="auto",
        )
        return builder.as_dataset()
    except (ValueError, FileNotFoundError, OSError) as e:
        what = f"Hugging Face dataset {ref!r}" + (f" (config {config!r})" if config else "")
        raise DataError(
            f"{what} is neither a folder nor in the local datasets cache {where} ({' '.join(str(e).split())}). "
            "llmrec never downloads: load it once with datasets.load_dataset (or save_to_disk and pass the folder); "
            "--hf_config names the config, --hf_cache_dir the cache"
        ) from None


def pick_split(obj, split: str, ref: str, role: str = "interactions"):
    """``(dataset, split name)`` from a ``Dataset`` or ``DatasetDict`` by the split rules of the module protocol."""
    import datasets

    if isinstance(obj, datasets.Dataset):
        if split and split != str(obj.split or split):
            raise DataError(
                f"{ref}: is a single Dataset (split {obj.split!r}), not a DatasetDict with split {split!r}"
            )
        return obj, str(obj.split or "")
    names = list(obj)
    if split:
        if split not in obj:
            raise DataError(f"{ref}: no split {split!r}; its splits are {names} (--split)")
        return obj[split], split
    if role == "titles":
        order = ["meta"] + (names if len(names) == 1 else []) + ["full", "train"]
    else:
        rest = [n for n in names if n != "meta"]
        order = (rest if len(rest) == 1 else []) + ["train", "full"]
    name = next((n for n in order if n in obj), None)
    if name is None:
        raise DataError(f"{ref}: cannot tell which split holds the {role}; its splits are {names} (--split)")
    return obj[name], name


def _arrow(ds, columns: list[str]):
    """The ``columns`` of ``ds`` as one ``pyarrow.Table`` in row order (an indices mapping applied)."""
    if len(ds) == 0:
        return ds.select_columns(columns).data.table.slice(0, 0)
    return ds.select_columns(columns).with_format("arrow")[:]


def read_hf(
    ref: str,
    split: str = "",
    config: str = "",
    cache_dir: str = "",
    titles: str = "",
    titles_config: str = "",
    **columns,
) -> RawLog:
    """Interactions (and titles) from a Hugging Face dataset; see the module protocol. ``columns`` as in ``tables``."""
    import datasets

    obj = load(ref, config, cache_dir)
    ds, name = pick_split(obj, split, ref)
    source = f"{ref}[{name}]" if name else ref
    cols = resolve_columns(ds.column_names, source, **columns)
    log = log_from_arrow(_arrow(ds, sorted(set(cols.values()))), source, **columns)
    meta, meta_source = None, ""
    if titles:
        meta_obj = obj if (titles == ref and config == titles_config) else load(titles, titles_config, cache_dir)
        meta, meta_name = pick_split(meta_obj, "", titles, role="titles")
        meta_source = f"{titles}[{meta_name}]" if meta_name else titles
    elif isinstance(obj, datasets.DatasetDict) and "meta" in obj and name != "meta":
        meta, meta_source = obj["meta"], f"{ref}[meta]"
    if meta is not None:
        log.titles, log.texts = read_hf_titles(meta, meta_source, cols["item"])
        log.titles_source = meta_source
    return log


def read_hf_titles(meta, source: str, item_col: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """``(titles, texts)`` keyed by item id from a metadata ``Dataset`` (columns: an id, ``title``, optional text)."""
    names = meta.column_names
    id_col = item_col if item_col in names else next((c for c in ITEM_COLUMNS if c in names), None)
    if id_col is None or "title" not in names:
        raise DataError(
            f"{source}: a titles dataset needs an item id column ({item_col or ITEM_COLUMNS[0]}, or one of "
            f"{ITEM_COLUMNS}) and a 'title' column; its columns are {names}"
        )
    text_cols = [c for c in TEXT_COLUMNS if c in names]
    table = _arrow(meta, [id_col, "title", *text_cols])
    ids, title_values = table.column(id_col).to_pylist(), table.column("title").to_pylist()
    texts_by_col = {c: table.column(c).to_pylist() for c in text_cols}
    titles: dict[str, str] = {}
    texts: dict[str, str] = {}
    for i, item in enumerate(ids):
        if item in (None, ""):
            continue
        titles[str(item)] = str(title_values[i] or "").strip()
        rec = {c: v[i] for c, v in texts_by_col.items()}
        text = item_text(rec) or str(rec.get("text") or "").strip()
        if text:
            texts[str(item)] = text
    return titles, texts
