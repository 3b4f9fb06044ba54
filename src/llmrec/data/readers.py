"""Readers for raw public interaction formats. Each returns a ``RawLog`` in file order.

A ``RawLog`` is a flat interaction log (parallel lists ``users``, ``items``, optional ``times``) plus
item titles/texts keyed by raw item id. Ordering, filtering and splitting happen later in ``processing``.
Every parse error raises ``DataError`` with ``file:line`` and what was expected.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmrec.data.dataset import DataError


@dataclass
class RawLog:
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    times: list[float] | None = None
    titles: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.users)


def open_text(path: str | os.PathLike, encoding: str | None = None) -> io.TextIOBase:
    """Open a (optionally .gz) text file. Without ``encoding``: UTF-8 if the bytes decode, else Latin-1.

    Latin-1 maps every byte, so legacy files (MovieLens) never fail to decode.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if encoding is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    else:
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as e:
            raise DataError(f"{path}: cannot decode as {encoding}: {e}") from e
    if text.startswith("\ufeff"):
        text = text[1:]
    return io.StringIO(text)


def _lines(path: str | os.PathLike, encoding: str | None = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping blank lines."""
    with open_text(path, encoding) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield n, line


def _time(value: str, path, n: int, what: str = "timestamp") -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{path}:{n}: expected a numeric {what}, got {value!r}") from None


def read_sequences(
    path: str | os.PathLike, titles_path: str | os.PathLike | None = None, encoding: str | None = None
) -> RawLog:
    """S3-Rec/SASRec text: ``user item item ...`` per line (or ``user item`` pairs), chronological, whitespace-separated.

    Optional titles TSV: with a header naming ``item_id`` and ``title`` columns (extra columns ignored, a
    ``text``/``description`` column kept as extra text), or headerless ``item_id<TAB>title``.
    """
    log = RawLog(source=str(path))
    for n, line in _lines(path, encoding):
        parts = line.split()
        if len(parts) < 2:
            raise DataError(
                f"{path}:{n}: expected 'user item [item ...]' (at least 2 whitespace-separated fields), got {line!r}"
            )
        user = parts[0]
        log.users.extend([user] * (len(parts) - 1))
        log.items.extend(parts[1:])
    if titles_path:
        log.titles, log.texts = read_titles_tsv(titles_path, encoding)
    return log


def read_titles_tsv(path: str | os.PathLike, encoding: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    titles: dict[str, str] = {}
    texts: dict[str, str] = {}
    rows = list(_lines(path, encoding))
    if not rows:
        return titles, texts
    header = [h.strip().lower() for h in rows[0][1].split("\t")]
    if "item_id" in header and "title" in header:
        id_col, title_col = header.index("item_id"), header.index("title")
        text_col = next((header.index(c) for c in ("text", "description") if c in header), None)
        rows = rows[1:]
    else:
        id_col, title_col, text_col = 0, 1, None
    for n, line in rows:
        cols = line.split("\t")
        if len(cols) <= max(id_col, title_col):
            # a trailing empty title may have been stripped with its tab
            if len(cols) == title_col and len(cols) > id_col:
                cols = cols + [""]
            else:
                raise DataError(
                    f"{path}:{n}: expected at least {max(id_col, title_col) + 1} tab-separated columns (item_id, title), got {line!r}"
                )
        titles[cols[id_col].strip()] = cols[title_col].strip()
        if text_col is not None and text_col < len(cols):
            texts[cols[id_col].strip()] = cols[text_col].strip()
    return titles, texts


def _read_rating_lines(path: str | os.PathLike, sep: str, expected: str, encoding: str | None) -> RawLog:
    """``user SEP item SEP rating SEP timestamp`` lines (both MovieLens layouts); the rating is not kept."""
    log = RawLog(source=str(path), times=[])
    for n, line in _lines(path, encoding):
        parts = line.split(sep)
        if len(parts) != 4:
            raise DataError(f"{path}:{n}: expected {expected}, got {line!r}")
        log.users.append(parts[0])
        log.items.append(parts[1])
        log.times.append(_time(parts[3], path, n))
    return log


def read_movielens_1m(
    ratings_path: str | os.PathLike, movies_path: str | os.PathLike | None = None, encoding: str | None = "latin-1"
) -> RawLog:
    """MovieLens-1M ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) + ``movies.dat`` (``MovieID::Title::Genres``), Latin-1."""
    log = _read_rating_lines(
        ratings_path, "::", "'UserID::MovieID::Rating::Timestamp' (4 '::'-separated fields)", encoding
    )
    if movies_path:
        log.titles, log.texts = read_movies_dat(movies_path, encoding)
    return log


def read_movies_dat(
    path: str | os.PathLike, encoding: str | None = "latin-1"
) -> tuple[dict[str, str], dict[str, str]]:
    titles, texts = {}, {}
    for n, line in _lines(path, encoding):
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(f"{path}:{n}: expected 'MovieID::Title::Genres' (3 '::'-separated fields), got {line!r}")
        titles[parts[0]] = parts[1].strip()
        texts[parts[0]] = "Genres: " + ", ".join(g for g in parts[2].split("|") if g)
    return titles, texts


def read_movielens_100k(
    data_path: str | os.PathLike, item_path: str | os.PathLike | None = None, encoding: str | None = "latin-1"
) -> RawLog:
    """MovieLens-100K ``u.data`` (``user<TAB>item<TAB>rating<TAB>timestamp``) + ``u.item`` (``item|title|...|19 genre flags``)."""
    log = _read_rating_lines(data_path, "\t", "'user<TAB>item<TAB>rating<TAB>timestamp' (4 fields)", encoding)
    if item_path:
        genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
                  "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]  # fmt: skip
        for n, line in _lines(item_path, encoding):
            parts = line.split("|")
            if len(parts) < 2:
                raise DataError(f"{item_path}:{n}: expected 'item|title|release date|...|genre flags', got {line!r}")
            log.titles[parts[0]] = parts[1].strip()
            flags = parts[-19:] if len(parts) >= 24 else []
            names = [g for g, f in zip(genres, flags) if f.strip() == "1"]
            if names:
                log.texts[parts[0]] = "Genres: " + ", ".join(names)
    return log


def _json_records(path: str | os.PathLike, encoding: str | None = None) -> Iterator[tuple[int, dict]]:
    """JSON lines; also accepts the 2014 Amazon metadata's Python-literal lines (single quotes)."""
    for n, line in _lines(path, encoding):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            try:
                rec = ast.literal_eval(line)
            except (ValueError, SyntaxError):
                raise DataError(f"{path}:{n}: expected one JSON object per line, got {line[:80]!r}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
        yield n, rec


def read_amazon(
    reviews_path: str | os.PathLike, meta_path: str | os.PathLike | None = None, encoding: str | None = None
) -> RawLog:
    """Amazon reviews JSON lines (2014 ``reviews_X_5.json(.gz)`` and 2018 style): ``reviewerID``, ``asin``, ``unixReviewTime``.

    Metadata JSON lines (``asin``, ``title``, optional ``description``) give titles and extra text.
    """
    log = RawLog(source=str(reviews_path), times=[])
    for n, rec in _json_records(reviews_path, encoding):
        missing = [k for k in ("reviewerID", "asin", "unixReviewTime") if k not in rec]
        if missing:
            raise DataError(
                f"{reviews_path}:{n}: missing field(s) {missing}; expected reviewerID, asin, unixReviewTime"
            )
        log.users.append(str(rec["reviewerID"]))
        log.items.append(str(rec["asin"]))
        log.times.append(_time(str(rec["unixReviewTime"]), reviews_path, n, "unixReviewTime"))
    if meta_path:
        for n, rec in _json_records(meta_path, encoding):
            if "asin" not in rec:
                raise DataError(f"{meta_path}:{n}: metadata record without 'asin'")
            title = rec.get("title") or ""
            log.titles[str(rec["asin"])] = str(title).strip()
            desc = rec.get("description")
            if isinstance(desc, list):
                desc = " ".join(str(d) for d in desc)
            if desc:
                log.texts[str(rec["asin"])] = str(desc).strip()
    return log


def read_table(
    path: str | os.PathLike,
    user_col: str = "user_id",
    item_col: str = "item_id",
    time_col: str | None = "timestamp",
    title_col: str | None = None,
    sep: str = ",",
    encoding: str | None = None,
) -> RawLog:
    """Generic CSV/TSV (by ``sep``) or Parquet (by ``.parquet`` suffix) with named user/item/time/title columns."""
    path = Path(path)
    wanted = [c for c in (user_col, item_col, time_col, title_col) if c]
    log = RawLog(source=str(path), times=[] if time_col else None)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        if not path.is_file():
            raise DataError(f"{path}: file not found")
        table = pq.read_table(path)
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; columns are {table.column_names}")
        cols = {c: table.column(c).to_pylist() for c in wanted}
        rows: Callable = lambda: ((i + 1, {c: cols[c][i] for c in wanted}) for i in range(table.num_rows))  # noqa: E731
    else:
        f = open_text(path, encoding)
        reader = csv.DictReader(f, delimiter=sep)
        header = reader.fieldnames or []
        missing = [c for c in wanted if c not in header]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {missing} in header {header}; set the column options")
        rows = lambda: ((reader.line_num, r) for r in reader)  # noqa: E731
    for n, r in rows():
        user, item = r.get(user_col), r.get(item_col)
        if user in (None, "") or item in (None, ""):
            raise DataError(f"{path}:{n}: empty {user_col!r} or {item_col!r} field")
        log.users.append(str(user))
        log.items.append(str(item))
        if time_col:
            log.times.append(_time(str(r.get(time_col)), path, n, f"{time_col!r} column"))
        if title_col and r.get(title_col) and str(item) not in log.titles:
            log.titles[str(item)] = str(r[title_col]).strip()
    return log


def read_event_log(path: str | os.PathLike, events: tuple[str, ...] = ("click", "purchase", "rating")) -> RawLog:
    """The SQLite feedback log written by ``llmrec serve`` (table ``events``: ts, user_hash, item, event, value)."""
    import sqlite3

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: event log not found")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(events))
        rows = con.execute(
            f"SELECT user_hash, item, ts FROM events WHERE event IN ({marks}) ORDER BY id", events
        ).fetchall()
    except sqlite3.DatabaseError as e:
        raise DataError(f"{path}: not an llmrec event log ({e})") from e
    finally:
        con.close()
    log = RawLog(source=str(path), times=[])
    for user, item, ts in rows:
        log.users.append(str(user))
        log.items.append(str(item))
        log.times.append(float(ts))
    return log
