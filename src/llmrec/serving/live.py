"""A served recommender whose catalog changes while it serves: items added (``add_items``) and retired (masked).

Protocol:
    ``LiveCatalog(rec, overlay)`` wraps a recommender and is one itself (``name``, ``catalog``, ``score``). Adding
    an item calls ``rec.add_items(raw_ids, titles, texts) -> list[int]`` (the optional method of
    ``llmrec.inference.Recommender``: it appends to ``rec.catalog`` and makes ``score`` cover the new items at
    once, their ids consecutive from the old item count). Retiring an item only masks it: ``mask(scores)`` sets
    its score to ``-inf``, so it is never recommended again, while the catalog still resolves it in histories.

    Thread-safety: ``score`` and the model update of ``add`` hold the same lock, so a batch is scored entirely
    before or entirely after an item is added (never against a half-updated model); changes are serialized by a
    second lock, so retiring never waits for a batch. ``rec.catalog`` is only ever replaced (``Catalog.extended``),
    and read once per use, so a request always sees a consistent catalog that is at least as large as its scores.

    Durability: a change is written to the overlay (``llmrec.serving.overlay``) before the model sees it and before
    it is acknowledged; if the model then refuses the item, the previous overlay is restored. ``restore`` re-applies
    the overlay at start: the added items in their original order (one ``add_items`` call), then the retirements.
"""

from __future__ import annotations

import math
import threading

import torch

from llmrec.errors import DataError, UserError
from llmrec.serving.errors import ApiError, echo
from llmrec.serving.overlay import CatalogOverlay, NewItem, OverlayState


class LiveCatalog:
    """``rec`` with items added and retired at run time, persisted in ``overlay`` (default: in memory only)."""

    def __init__(self, rec, overlay: CatalogOverlay | None = None, max_added_items: int = 10_000):
        self.rec = rec
        self.overlay = overlay or CatalogOverlay(None)
        self.max_added_items = max_added_items
        self.skipped: list[str] = []  # overlay items the run's catalog already had at start (see restore)
        self._model_lock = threading.Lock()  # the model: scoring vs adding items
        self._change_lock = threading.Lock()  # the overlay: one change at a time
        self._retired: frozenset[int] = frozenset()
        self._retired_index = torch.zeros(0, dtype=torch.int64)

    # ------------------------------------------------------------ the recommender interface

    @property
    def name(self) -> str:
        return getattr(self.rec, "name", type(self.rec).__name__)

    @property
    def catalog(self):
        return self.rec.catalog

    def score(self, histories: list[list[int]]) -> torch.Tensor:
        with self._model_lock:
            return self.rec.score(histories)

    def can_add(self) -> bool:
        return callable(getattr(self.rec, "add_items", None))

    # ------------------------------------------------------------ retired items

    def is_retired(self, index: int) -> bool:
        return index in self._retired

    def num_retired(self) -> int:
        return len(self._retired)

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores`` [..., N] with every retired item at ``-inf`` (a copy; ``scores`` itself is unchanged)."""
        index = self._retired_index
        if not len(index):
            return scores
        index = index[index < scores.shape[-1]]  # an item added after these scores were computed
        out = scores.clone()
        out[..., index] = -math.inf
        return out

    def _set_retired(self, retired: frozenset[int]) -> None:
        self._retired_index = torch.tensor(sorted(retired), dtype=torch.int64)
        self._retired = retired

    # ------------------------------------------------------------ changes

    def _add_to_model(self, items: list[NewItem]) -> list[int]:
        with self._model_lock:
            n = len(self.catalog)
            ids = self.rec.add_items([i.raw_id for i in items], [i.title for i in items], [i.text for i in items])
            ids = [int(i) for i in ids]
            if ids != list(range(n, n + len(items))) or len(self.catalog) != n + len(items):
                raise RuntimeError(f"{self.name}: add_items broke its contract (returned {ids[:5]}, expected {n}..)")
            return ids

    def restore(self) -> None:
        """Re-apply the overlay (at start, before serving); ``DataError`` naming the overlay when it cannot be.

        Added items the run's catalog already has (a run retrained with them) are skipped and listed in
        ``skipped``; their raw ids keep the run's own title and text.
        """
        state, where = self.overlay.state, f"overlay: {self.overlay.path}"
        known = set(self.catalog.raw_ids)
        todo = [i for i in state.added if i.raw_id not in known]
        self.skipped = [i.raw_id for i in state.added if i.raw_id in known]
        if len({i.raw_id for i in todo}) != len(todo):
            raise DataError(f"{where}: added: a raw id appears twice")
        if todo and not self.can_add():
            raise DataError(f"{where}: adds {len(todo)} items, but the {self.name} model cannot add items")
        if todo:
            try:
                self._add_to_model(todo)
            except (UserError, NotImplementedError, ValueError) as e:
                raise DataError(f"{where}: the {self.name} model refused the added items ({e})") from None
        retired = set()
        for n, raw in enumerate(state.retired):
            try:
                retired.add(self.catalog.index_of_raw(raw))
            except KeyError:
                raise DataError(f"{where}: retired[{n}]: {raw[:200]!r} is not in the catalog") from None
        self._set_retired(frozenset(retired))

    def _save(self, state: OverlayState) -> None:
        try:
            self.overlay.save(state)
        except OSError as e:
            raise ApiError(
                503, None, f"overlay: cannot write {self.overlay.path} ({e.strerror or e}); not changed"
            ) from None

    def add(self, item: NewItem, client: str = "") -> int:
        """Add ``item`` (durably, then to the model); its internal id. ``ApiError`` when refused.

        409: the raw id is in the catalog (retired ones included: a raw id is never reused) or the
        ``max_added_items`` limit is reached; 501: the model cannot add items (the message names it); 503: the
        overlay cannot be written.
        """
        with self._change_lock:
            try:
                index = self.catalog.index_of_raw(item.raw_id)
            except KeyError:
                pass
            else:
                retired = " (retired; a raw id is never reused)" if self.is_retired(index) else ""
                raise ApiError(409, "raw_id", f"raw_id: {echo(item.raw_id)} is already in the catalog{retired}")
            if not self.can_add():
                raise ApiError(501, None, f"items: the {self.name} model cannot add items; retrain it with them")
            old = self.overlay.state
            if len(old.added) >= self.max_added_items:
                raise ApiError(
                    409,
                    "body",
                    f"body: {len(old.added)} items were already added, the limit (--max_added_items); retrain the "
                    "model with them",
                )
            self._save(OverlayState([*old.added, item], list(old.retired)))
            try:
                index = self._add_to_model([item])[0]
            except BaseException as e:
                self._save(old)
                if isinstance(e, NotImplementedError):
                    raise ApiError(501, None, f"items: the {self.name} model cannot add items ({e})") from None
                if isinstance(e, UserError | ValueError):
                    raise ApiError(422, "body", f"body: the {self.name} model refused the item ({e})") from None
                raise
            self.overlay.log("add", raw_id=item.raw_id, title=item.title, index=index, client=client)
            return index

    def retire(self, raw_id: str, client: str = "") -> int:
        """Retire ``raw_id`` (durably); its internal id. ``ApiError`` 404 when unknown, 409 when already retired."""
        with self._change_lock:
            try:
                index = self.catalog.index_of_raw(raw_id)
            except KeyError:
                raise ApiError(404, "raw_id", f"raw_id: unknown item {echo(raw_id)}") from None
            if self.is_retired(index):
                raise ApiError(409, "raw_id", f"raw_id: {echo(raw_id)} is already retired")
            old = self.overlay.state
            self._save(OverlayState(list(old.added), [*old.retired, raw_id]))
            self._set_retired(self._retired | {index})
            self.overlay.log("retire", raw_id=raw_id, index=index, client=client)
            return index
