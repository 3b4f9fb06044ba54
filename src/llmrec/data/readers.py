"""Readers for raw public interaction formats. Each returns a ``RawLog`` in file order.

A ``RawLog`` is a flat interaction log (parallel lists ``users``, ``items``, optional ``times``) plus
item titles/texts keyed by raw item id. Ordering, filtering and splitting happen later in ``processing``.
Every parse error raises ``DataError`` with ``file:line`` and what was expected. Each reader records how it decoded
every text file it read in ``RawLog.encodings`` (``"utf-8"``, ``"latin-1 (fallback)"`` or the forced encoding) and
the titles file in ``RawLog.titles_source``, so ``prepare`` can report both. Table formats (CSV, Parquet, Hugging
Face datasets) live in ``llmrec.data.tables`` and ``llmrec.data.hf``.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import os
from collections.abc import Iterator
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
    alt_ids: dict[str, str] = field(default_factory=dict)  # raw item id -> alternate id (e.g. ASIN)
    source: str = ""
    titles_source: str = ""  # the titles/metadata file the titles came from ("" = none given)
    encodings: dict[str, str] = field(default_factory=dict)  # text file -> how it was decoded

    def __len__(self) -> int:
        return len(self.users)


LATIN1_FALLBACK = "latin-1 (fallback)"


def read_text(path: str | os.PathLike, encoding: str | None = None) -> tuple[str, str]:
    """``(text, how it was decoded)`` of an (optionally .gz) text file; a leading BOM is dropped.

    Without ``encoding``: UTF-8 if the bytes decode, else Latin-1, reported as ``"latin-1 (fallback)"``. Latin-1
    maps every byte, so legacy files (MovieLens) never fail to decode.

    Raises:
        DataError: the file does not exist, or it does not decode with the forced ``encoding``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if encoding is None:
        try:
            text, how = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, how = raw.decode("latin-1"), LATIN1_FALLBACK
    else:
        try:
            text, how = raw.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError) as e:
            raise DataError(f"{path}: cannot decode as {encoding}: {e}") from e
    return text.removeprefix("\ufeff"), how


def open_text(
    path: str | os.PathLike, encoding: str | None = None, used: dict[str, str] | None = None
) -> io.TextIOBase:
    """The decoded text of ``path`` (see ``read_text``) as a file object; ``used[str(path)]`` gets how it was decoded."""
    text, how = read_text(path, encoding)
    if used is not None:
        used[str(path)] = how
    return io.StringIO(text)


def _lines(
    path: str | os.PathLike, encoding: str | None = None, used: dict[str, str] | None = None
) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline), skipping blank lines."""
    with open_text(path, encoding, used) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line.strip():
                yield n, line


def as_number(value, at: str, what: str = "timestamp") -> float:
    """``value`` as a float (datetimes, e.g. from Arrow timestamp columns, as POSIX seconds); ``at`` names the place."""
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"{at}: expected a numeric {what}, got {value!r}") from None


def _time(value, path, n: int, what: str = "timestamp") -> float:
    return as_number(value, f"{path}:{n}", what)


def read_sequences(
    path: str | os.PathLike, titles_path: str | os.PathLike | None = None, encoding: str | None = None
) -> RawLog:
    """S3-Rec/SASRec text: ``user item item ...`` per line (or ``user item`` pairs), chronological, whitespace-separated.

    Optional titles TSV: with a header naming ``item_id`` and ``title`` columns (extra columns ignored, a
    ``text``/``description`` column kept as extra text), or headerless ``item_id<TAB>title``.
    """
    log = RawLog(source=str(path))
    for n, line in _lines(path, encoding, log.encodings):
        parts = line.split()
        if len(parts) < 2:
            raise DataError(
                f"{path}:{n}: expected 'user item [item ...]' (at least 2 whitespace-separated fields), got {line!r}"
            )
        user = parts[0]
        log.users.extend([user] * (len(parts) - 1))
        log.items.extend(parts[1:])
    if titles_path:
        log.titles, log.texts, log.alt_ids = read_titles_tsv(titles_path, encoding, log.encodings)
        log.titles_source = str(titles_path)
    return log


ALT_ID_COLUMNS = ("asin", "parent_asin", "alt_id", "business_id")


def read_titles_tsv(
    path: str | os.PathLike, encoding: str | None = None, used: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(titles, texts, alt_ids)`` keyed by item id, from a titles TSV (see ``read_sequences``).

    With a header, an ``asin`` / ``parent_asin`` / ``alt_id`` / ``business_id`` column becomes the items' alternate
    id (S3-Rec's Beauty titles file maps its numeric ids to ASINs this way).
    """
    titles: dict[str, str] = {}
    texts: dict[str, str] = {}
    alt_ids: dict[str, str] = {}
    rows = list(_lines(path, encoding, used))
    if not rows:
        return titles, texts, alt_ids
    header = [h.strip().lower() for h in rows[0][1].split("\t")]
    alt_col = None
    if "item_id" in header and "title" in header:
        id_col, title_col = header.index("item_id"), header.index("title")
        text_col = next((header.index(c) for c in ("text", "description") if c in header), None)
        alt_col = next((header.index(c) for c in ALT_ID_COLUMNS if c in header), None)
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
        if alt_col is not None and alt_col < len(cols) and cols[alt_col].strip():
            alt_ids[cols[id_col].strip()] = cols[alt_col].strip()
    return titles, texts, alt_ids


def _read_rating_lines(path: str | os.PathLike, sep: str, expected: str, encoding: str | None) -> RawLog:
    """``user SEP item SEP rating SEP timestamp`` lines (both MovieLens layouts); the rating is not kept."""
    log = RawLog(source=str(path), times=[])
    for n, line in _lines(path, encoding, log.encodings):
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
        log.titles, log.texts = read_movies_dat(movies_path, encoding, log.encodings)
        log.titles_source = str(movies_path)
    return log


def read_movies_dat(
    path: str | os.PathLike, encoding: str | None = "latin-1", used: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """``(titles, texts)`` from MovieLens-1M ``movies.dat``; the text is ``"Genres: a, b"``."""
    titles, texts = {}, {}
    for n, line in _lines(path, encoding, used):
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
        for n, line in _lines(item_path, encoding, log.encodings):
            parts = line.split("|")
            if len(parts) < 2:
                raise DataError(f"{item_path}:{n}: expected 'item|title|release date|...|genre flags', got {line!r}")
            log.titles[parts[0]] = parts[1].strip()
            flags = parts[-19:] if len(parts) >= 24 else []
            names = [g for g, f in zip(genres, flags) if f.strip() == "1"]
            if names:
                log.texts[parts[0]] = "Genres: " + ", ".join(names)
        log.titles_source = str(item_path)
    return log


def _json_records(
    path: str | os.PathLike, encoding: str | None = None, used: dict[str, str] | None = None
) -> Iterator[tuple[int, dict]]:
    """JSON lines; also accepts the 2014 Amazon metadata's Python-literal lines (single quotes)."""
    for n, line in _lines(path, encoding, used):
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


# Amazon review field names (user, item, time) by release; a file's first record decides which one it follows.
AMAZON_FIELDS = {
    "2014/2018": ("reviewerID", "asin", "unixReviewTime"),
    "2023": ("user_id", "parent_asin", "timestamp"),
}


def item_text(rec: dict) -> str:
    """Extra text of an Amazon-style metadata record: its ``features`` then its ``description`` (strings or lists)."""
    parts = []
    for key in ("features", "feature", "description"):
        value = rec.get(key)
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value if v)
        if value:
            parts.append(str(value).strip())
    return " ".join(parts)


def read_amazon(
    reviews_path: str | os.PathLike, meta_path: str | os.PathLike | None = None, encoding: str | None = None
) -> RawLog:
    """Amazon reviews JSON lines: 2014 (``reviews_X_5.json.gz``) and 2018 style (``reviewerID``, ``asin``,
    ``unixReviewTime``) or 2023 style (``user_id``, ``parent_asin``, ``timestamp`` in milliseconds).

    Metadata JSON lines (``asin`` or, 2023, ``parent_asin``; ``title``; optional ``features``/``description``) give
    titles and extra text.
    """
    log = RawLog(source=str(reviews_path), times=[])
    fields = None
    for n, rec in _json_records(reviews_path, encoding, log.encodings):
        if fields is None:
            fields = AMAZON_FIELDS["2023" if "parent_asin" in rec or "user_id" in rec else "2014/2018"]
        missing = [k for k in fields if k not in rec]
        if missing:
            raise DataError(f"{reviews_path}:{n}: missing field(s) {missing}; expected {', '.join(fields)}")
        log.users.append(str(rec[fields[0]]))
        log.items.append(str(rec[fields[1]]))
        log.times.append(_time(rec[fields[2]], reviews_path, n, fields[2]))
    if meta_path:
        for n, rec in _json_records(meta_path, encoding, log.encodings):
            key = "parent_asin" if "parent_asin" in rec else "asin"
            if key not in rec:
                raise DataError(f"{meta_path}:{n}: metadata record without 'asin' or 'parent_asin'")
            log.titles[str(rec[key])] = str(rec.get("title") or "").strip()
            text = item_text(rec)
            if text:
                log.texts[str(rec[key])] = text
        log.titles_source = str(meta_path)
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
