"""Durable file writes shared by every command: temp file + fsync + rename, so a crash never leaves half a file.

Protocol: ``atomic_write_text`` / ``atomic_write_json`` write ``.NAME.*.tmp`` next to the target, fsync it, rename
it over the target and fsync the directory; the old file stays in place until the new one is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (a rename inside it) to disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temp file next to ``path``, fsync it, rename it over ``path``, fsync the directory.

    For writers that take a file name (``torch.save``, ``safetensors.save_file``, ``pyarrow.parquet.write_table``).
    A failure or kill leaves the old file in place; a failed write leaves no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_write_with``)."""
    atomic_write_with(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (non-JSON values are written with ``str``)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a ``ValueError`` names the file and the position on malformed JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under ``path`` and every directory, so a later rename publishes complete files."""
    for root, _, names in os.walk(path):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def replace_dir(new: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put the complete directory ``new`` in place of ``final`` so that a kill at any moment leaves one of them.

    ``final`` (if any) is first renamed to ``.NAME.old``, then ``new`` to ``final``, then the old copy removed;
    ``recover_dir`` restores ``.NAME.old`` when a kill came between the two renames.
    """
    import shutil

    new, final = Path(new), Path(final)
    fsync_tree(new)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: str | os.PathLike) -> Path:
    """``final``, restored from ``.NAME.old`` if a ``replace_dir`` was killed between its renames."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    if not final.exists() and old.is_dir():
        with contextlib.suppress(FileNotFoundError):  # another process restored it first
            os.replace(old, final)
    return final
