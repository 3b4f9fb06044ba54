"""The live catalog's changes on disk: items added to a served run and items retired from it.

Protocol:
    The overlay file (``llmrec serve --overlay``, default ``RUN/catalog_overlay.json``) holds the whole state::

        {"format": "llmrec-catalog-overlay", "version": 1,
         "added": [{"raw_id": "...", "title": "...", "text": "..."}, ...],   # in the order they were added
         "retired": ["raw id", ...]}                                        # in the order they were retired

    It is rewritten by ``llmrec.files.atomic_write_json`` (temp file, fsync, rename, fsync of the directory) on every
    change, before the change is acknowledged: a kill at any moment leaves the old or the new state, never half a
    file, and leftover ``.catalog_overlay.json.*.tmp`` files of a killed write are never read. Beside it, an
    append-only action log (``catalog_overlay.log.jsonl``: one ``{"ts", "time", "action", "raw_id", ...}`` object
    per line, fsynced) records who changed what and when; the overlay, not the log, is the state. A writing
    server holds an exclusive lock on ``catalog_overlay.json.lock`` for its lifetime, so two servers never
    overwrite each other's changes.

    ``check_new_item`` is the one check of an item to add, shared by ``POST /items`` and ``llmrec recommend
    --add_items``.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from llmrec.errors import DataError
from llmrec.files import atomic_write_json, read_json

FORMAT = "llmrec-catalog-overlay"
VERSION = 1
OVERLAY_NAME = "catalog_overlay.json"


@dataclass(frozen=True)
class NewItem:
    """An item to add to a catalog."""

    raw_id: str
    title: str
    text: str = ""


@dataclass(frozen=True)
class ItemLimits:
    """Bounds of an added item (``llmrec serve`` options of the same names)."""

    max_raw_id_chars: int = 200
    max_title_chars: int = 1000
    max_text_chars: int = 10_000


class ItemFieldError(ValueError):
    """A bad field of an item to add: ``field`` names it, the message says what was expected."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def _check_string(obj: dict, name: str, limit: int, required: bool, single_line: bool) -> str:
    if name not in obj:
        if required:
            raise ItemFieldError(name, "required (a string)")
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise ItemFieldError(name, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ItemFieldError(name, "must not be empty")
    if len(value) > limit:
        raise ItemFieldError(name, f"at most {limit} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate decodes from JSON but cannot be written back as UTF-8
        raise ItemFieldError(name, "not valid Unicode (lone surrogate)") from None
    allowed = "" if single_line else "\n\t"
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        raise ItemFieldError(name, "must not contain control characters" + ("" if single_line else " (but \\n, \\t)"))
    return value


def check_new_item(obj: Any, limits: ItemLimits = ItemLimits()) -> NewItem:
    """``obj`` (a decoded JSON object) as a ``NewItem``, or ``ItemFieldError`` naming the first bad field.

    ``raw_id``: a non-empty string without surrounding spaces or control characters, at most ``max_raw_id_chars``;
    ``title``: a non-empty single-line string, at most ``max_title_chars``; ``text`` (optional, default ""): at most
    ``max_text_chars``. Unknown keys are refused. Whether the raw id is new is the catalog's business.
    """
    if not isinstance(obj, dict):
        raise ItemFieldError("item", f"expected a JSON object with raw_id, title and text, got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"raw_id", "title", "text"})
    if unknown:
        raise ItemFieldError(str(unknown[0])[:40], "unknown key (expected raw_id, title, text)")
    raw_id = _check_string(obj, "raw_id", limits.max_raw_id_chars, required=True, single_line=True)
    if raw_id != raw_id.strip():
        raise ItemFieldError("raw_id", "must not start or end with spaces")
    title = _check_string(obj, "title", limits.max_title_chars, required=True, single_line=True)
    text = _check_string(obj, "text", limits.max_text_chars, required=False, single_line=False)
    return NewItem(raw_id, title, text)


@dataclass
class OverlayState:
    """What the overlay file holds: the added items in order and the retired raw ids in order."""

    added: list[NewItem] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "added": [asdict(i) for i in self.added],
            "retired": self.retired,
        }


def _parse(doc: Any, where: str) -> OverlayState:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{where}: not a catalog overlay (expected an object with format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise DataError(f"{where}: version: expected {VERSION}, got {doc.get('version')!r}")
    added, retired = doc.get("added", []), doc.get("retired", [])
    if not isinstance(added, list) or not isinstance(retired, list):
        raise DataError(f"{where}: added and retired: expected lists")
    # the items were checked when they were added; this catches a hand-edited file (no length bounds: they may
    # have been raised since)
    loose = ItemLimits(1 << 30, 1 << 30, 1 << 30)
    items = []
    for n, obj in enumerate(added):
        try:
            items.append(check_new_item(obj, loose))
        except ItemFieldError as e:
            raise DataError(f"{where}: added[{n}].{e}") from None
    for n, raw in enumerate(retired):
        if not isinstance(raw, str) or not raw:
            raise DataError(f"{where}: retired[{n}]: expected a non-empty raw id string")
    return OverlayState(items, list(retired))


class CatalogOverlay:
    """The overlay file at ``path`` (``None``: in memory only, nothing persisted) and its action log.

    ``load`` reads it (a missing file is an empty overlay); ``save`` writes the whole state atomically; ``log``
    appends one fsynced line to the action log. ``lock`` takes the exclusive writer lock (see the module doc).
    """

    def __init__(self, path: str | os.PathLike | None, state: OverlayState | None = None):
        self.path = Path(path) if path is not None else None
        self.state = state or OverlayState()
        self._lock_fd: int | None = None

    @property
    def log_path(self) -> Path | None:
        return self.path.with_name(self.path.stem + ".log.jsonl") if self.path is not None else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> CatalogOverlay:
        """The overlay at ``path``; ``DataError`` naming the file when it is malformed."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            doc = read_json(path)
        except (ValueError, OSError) as e:
            raise DataError(f"overlay: {' '.join(str(e).split())[:300]}") from None
        return cls(path, _parse(doc, f"overlay: {path}"))

    def save(self, state: OverlayState) -> None:
        """Make ``state`` the durable state (atomically), then the current one."""
        if self.path is not None:
            atomic_write_json(self.path, state.to_json())
        self.state = state

    def log(self, action: str, **details: Any) -> None:
        """Append ``{"ts", "time", "action", **details}`` to the action log and fsync it."""
        if self.log_path is None:
            return
        now = datetime.now(timezone.utc)
        entry = {"ts": round(now.timestamp(), 3), "time": now.isoformat(timespec="milliseconds"), "action": action}
        line = json.dumps({**entry, **details}, ensure_ascii=False)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def lock(self) -> None:
        """Take the writer lock for this process's lifetime; ``DataError`` when another process holds it.

        Also checks that the overlay's directory is writable, so a read-only run directory fails at start, not on
        the first change.
        """
        if self.path is None or self._lock_fd is not None:
            return
        import fcntl

        directory = self.path.parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise DataError(
                f"overlay: cannot write in {directory} (missing or read-only); pass --overlay PATH in a writable place"
            )
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DataError(
                f"overlay: {self.path} is in use by another llmrec serve with catalog changes enabled; stop it or "
                "pass --overlay PATH"
            ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
