"""``Catalog``: the items of a data set (raw ids, alternate ids, titles, extra text) with contiguous internal ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmrec.errors import DataError


class AmbiguousItemError(KeyError):
    """An exact title that several items share; the message lists their raw ids."""


@dataclass
class Catalog:
    """Items with contiguous internal ids ``0..len-1``: raw ids, alternate ids, titles and extra text.

    ``raw_ids`` are the ids of the input files; ``alt_ids`` an optional second id users know an item by (e.g. the
    ASIN of an Amazon item whose raw id is a benchmark number), ``""`` where there is none. ``resolve`` accepts
    any of raw id, alternate id or exact title.
    """

    raw_ids: list[str]
    titles: list[str]
    texts: list[str] = field(default_factory=list)
    alt_ids: list[str] = field(default_factory=list)

    def __post_init__(self):
        n = len(self.raw_ids)
        self.texts = self.texts or [""] * n
        self.alt_ids = self.alt_ids or [""] * n
        if not (n == len(self.titles) == len(self.texts) == len(self.alt_ids)):
            raise DataError("Catalog: raw_ids, titles, texts and alt_ids must have the same length")
        self._index: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self.raw_ids)

    def _lookup(self, kind: str) -> dict:
        """``kind`` (raw / alt / title) -> {key: [internal ids]} built on first use."""
        if kind not in self._index:
            column = {"raw": self.raw_ids, "alt": self.alt_ids, "title": self.titles}[kind]
            table: dict[str, list[int]] = {}
            for i, value in enumerate(column):
                if value:
                    table.setdefault(value.strip().lower() if kind == "title" else value, []).append(i)
            self._index[kind] = table
        return self._index[kind]

    def index_of_raw(self, raw_id: str) -> int:
        """Internal id of a raw item id. Raises ``KeyError`` naming the id if unknown."""
        hit = self._lookup("raw").get(str(raw_id))
        if not hit:
            raise KeyError(f"unknown item id {raw_id!r} (not in the catalog of {len(self)} items)")
        return hit[0]

    def index_of_title(self, title: str) -> int:
        """Internal id of an item by exact (case-insensitive, stripped) title.

        Raises:
            AmbiguousItemError: several items have this title (the message lists their raw ids).
            KeyError: no item has this title.
        """
        hit = self._lookup("title").get(title.strip().lower(), [])
        if len(hit) > 1:
            ids = ", ".join(self.raw_ids[i] for i in hit[:10])
            raise AmbiguousItemError(
                f"title {title!r} is ambiguous: {len(hit)} items have it (raw ids {ids}); use a raw id"
            )
        if not hit:
            raise KeyError(f"no item with title {title!r}")
        return hit[0]

    def resolve(self, ref: str | int) -> int:
        """Internal id of a raw id, an alternate id or an exact title, tried in this order.

        Raises:
            AmbiguousItemError: the title is ambiguous (a ``KeyError``: the message lists the candidates).
            KeyError: nothing matches.
        """
        ref = str(ref)
        for kind in ("raw", "alt"):
            hit = self._lookup(kind).get(ref)
            if hit and (kind == "raw" or len(hit) == 1):
                return hit[0]
        try:
            return self.index_of_title(ref)
        except AmbiguousItemError:
            raise
        except KeyError:
            raise KeyError(
                f"{ref[:200]!r} is neither a raw item id, an alternate id nor an exact item title in the catalog"
            ) from None

    def extended(self, raw_ids: Sequence[str], titles: Sequence[str], texts: Sequence[str] | None = None) -> Catalog:
        """A new catalog with these items appended (internal ids ``len(self)..``); ``self`` is unchanged.

        Raises:
            DataError: a raw id that is empty, repeated, or already in the catalog (named in the message).
        """
        texts = list(texts) if texts is not None else [""] * len(raw_ids)
        if not len(raw_ids) == len(titles) == len(texts):
            raise DataError("Catalog.extended: raw_ids, titles and texts must have the same length")
        seen = set(self.raw_ids)
        for raw in raw_ids:
            if not str(raw):
                raise DataError("raw_id: must be a non-empty string")
            if str(raw) in seen:
                raise DataError(f"raw_id: {str(raw)[:200]!r} is already in the catalog")
            seen.add(str(raw))
        return Catalog(
            raw_ids=[*self.raw_ids, *map(str, raw_ids)],
            titles=[*self.titles, *map(str, titles)],
            texts=[*self.texts, *map(str, texts)],
            alt_ids=[*self.alt_ids, *([""] * len(raw_ids))],
        )

    def search(self, query: str, limit: int = 20) -> list[int]:
        """Internal ids whose title contains ``query`` (case-insensitive), in id order."""
        q = query.strip().lower()
        return [i for i, t in enumerate(self.titles) if q and q in t.lower()][:limit]
