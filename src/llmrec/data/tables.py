"""Readers for tables with one row per interaction: CSV/TSV, Parquet, and Arrow tables (``llmrec.data.hf``).

Protocol: the reader is chosen by ``--format``, never by the file name. Columns are named by the caller; an empty
item column means "the first of ``ITEM_COLUMNS`` the table has" (so the Amazon Reviews 2023 layout, whose item id is
``parent_asin``, needs no option). A missing column, a short or long CSV row, an empty id or a non-numeric timestamp
raises ``DataError`` naming the file, the line (CSV) or row (Parquet/Arrow) and what was expected.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from llmrec.data.readers import RawLog, as_number, open_text
from llmrec.errors import DataError

# Item id columns tried, in order, when no item column is given: generic, Amazon 2023 (parent item), Amazon 2014/18.
ITEM_COLUMNS = ("item_id", "parent_asin", "asin")
PARQUET_MAGIC = b"PAR1"


def resolve_columns(
    available: list[str],
    where: str,
    user_col: str = "user_id",
    item_col: str = "",
    time_col: str | None = "timestamp",
    title_col: str | None = None,
) -> dict[str, str]:
    """``{"user", "item", ["time"], ["title"]} -> column name`` after item auto-detection, checked against ``available``.

    Raises:
        DataError: a column is missing; the message names ``where``, the missing columns and the ones there are.
    """
    item = item_col or next((c for c in ITEM_COLUMNS if c in available), ITEM_COLUMNS[0])
    cols = {"user": user_col, "item": item, "time": time_col, "title": title_col}
    cols = {role: name for role, name in cols.items() if name}
    missing = [c for c in cols.values() if c not in available]
    if missing:
        hint = "" if item_col or item in available else f" (the item column defaults to the first of {ITEM_COLUMNS})"
        raise DataError(
            f"{where}: missing column(s) {missing}; the columns are {list(available)}{hint}. Name them with "
            "--user_col, --item_col, --time_col ('' = rows are in chronological order), --title_col"
        )
    return cols


def _append(log: RawLog, cols: dict[str, str], row: dict, at: str) -> None:
    """Add one interaction (``row`` maps column names to values) to ``log``; ``at`` names the line or row."""
    user, item = row[cols["user"]], row[cols["item"]]
    if user in (None, "") or item in (None, ""):
        raise DataError(f"{at}: empty {cols['user']!r} or {cols['item']!r} field")
    log.users.append(str(user))
    log.items.append(str(item))
    if "time" in cols:
        log.times.append(as_number(row[cols["time"]], at, f"{cols['time']!r} column"))
    title = row[cols["title"]] if "title" in cols else None
    if title and str(item) not in log.titles:
        log.titles[str(item)] = str(title).strip()


def log_from_arrow(table, source: str, **columns) -> RawLog:
    """A ``RawLog`` from a ``pyarrow.Table`` in row order; ``columns`` as for ``resolve_columns``. Errors name rows."""
    cols = resolve_columns(table.column_names, source, **columns)
    log = RawLog(source=source, times=[] if "time" in cols else None)
    values = {name: table.column(name).to_pylist() for name in set(cols.values())}
    for i in range(table.num_rows):
        _append(log, cols, {name: v[i] for name, v in values.items()}, f"{source}: row {i + 1}")
    return log


def read_parquet(path: str | os.PathLike, **columns) -> RawLog:
    """A Parquet file (whatever its name), one row per interaction; ``columns`` as for ``resolve_columns``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        schema = pq.read_schema(path)
        cols = resolve_columns(schema.names, str(path), **columns)
        table = pq.read_table(path, columns=sorted(set(cols.values())))
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e}); for CSV/TSV use --format csv") from None
    return log_from_arrow(table, str(path), **columns)


def read_csv(path: str | os.PathLike, sep: str = ",", encoding: str | None = None, **columns) -> RawLog:
    """CSV/TSV (by ``sep``) with a header row; ``columns`` as for ``resolve_columns``.

    Every row must have as many fields as the header: a short row names the columns it lacks, a long one its extra
    values (``csv.DictReader`` would silently fill ``None`` or collect extras under the ``None`` key).
    """
    path = Path(path)
    if path.is_file() and path.suffix != ".gz":
        with open(path, "rb") as f:
            if f.read(4) == PARQUET_MAGIC:
                raise DataError(f"{path}: this is a Parquet file, not CSV; use --format parquet")
    log = RawLog(source=str(path))
    reader = csv.DictReader(open_text(path, encoding, log.encodings), delimiter=sep)
    header = reader.fieldnames or []
    cols = resolve_columns(header, f"{path}:1", **columns)
    log.times = [] if "time" in cols else None
    for row in reader:
        n = reader.line_num
        if None in row:
            raise DataError(
                f"{path}:{n}: {len(header) + len(row[None])} fields but the header has {len(header)}; extra "
                f"value(s) {row[None]} (check --sep and the quoting)"
            )
        lacking = [c for c in header if row[c] is None]
        if lacking:
            raise DataError(
                f"{path}:{n}: {len(header) - len(lacking)} fields but the header has {len(header)}; missing "
                f"column(s) {lacking}"
            )
        _append(log, cols, row, f"{path}:{n}")
    return log


def read_table(
    path: str | os.PathLike,
    user_col: str = "user_id",
    item_col: str = "",
    time_col: str | None = "timestamp",
    title_col: str | None = None,
    sep: str = ",",
    encoding: str | None = None,
) -> RawLog:
    """Parquet when the file starts with the Parquet magic bytes, else CSV/TSV; for callers without a ``--format``."""
    columns = dict(user_col=user_col, item_col=item_col, time_col=time_col, title_col=title_col)
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) == PARQUET_MAGIC:
                return read_parquet(path, **columns)
    return read_csv(path, sep=sep, encoding=encoding, **columns)
