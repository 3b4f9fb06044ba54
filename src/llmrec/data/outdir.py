"""The output directory of ``llmrec prepare``: what may be replaced, and cleaning up after killed runs.

Protocol:
- A directory is *prepared* (written by llmrec) when its ``meta.json`` is a JSON object with a ``format_version``.
  ``--overwrite`` replaces only such a directory, and only when it holds nothing but the files llmrec wrote
  (``PREPARED_FILES`` plus those listed in ``meta.json``'s ``files``): any other directory, or one with files of the
  user's, is refused and left untouched. An empty directory may always be replaced.
- Never replaced: the current working directory or any directory containing it (renaming it fails with EBUSY, or
  leaves the shell in a deleted directory), a mount point, a file.
- The new data set is written to ``.NAME.tmp-PID-XXXX`` next to ``NAME`` and renamed into place by
  ``llmrec.files.replace_dir`` (the old one is removed only after the new one is in place). Before that,
  ``clean_stale`` removes temporary directories of prepares that are no longer running and ``recover`` restores a
  data set a killed replace left under ``.NAME.old``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from llmrec.errors import DataError
from llmrec.files import recover_dir

PREPARED_FILES = ("catalog.parquet", "sequences.parquet", "stats.json", "meta.json")


def prepared_meta(path: str | os.PathLike) -> dict | None:
    """The ``meta.json`` of a prepared directory, or ``None`` if ``path`` is not one (see the protocol)."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and "format_version" in meta else None


def resolve_output(out: str | os.PathLike) -> Path:
    """The absolute path that will be written: a symlink at ``out`` is followed (the link itself is kept)."""
    path = Path(os.path.abspath(out))
    return path.resolve() if path.is_symlink() else path


def check_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate ``out`` as the output of a prepare without touching anything; returns ``resolve_output(out)``.

    Raises:
        DataError: the path is refused (see the module protocol); the message says why and what to do.
    """
    target = resolve_output(out)
    real, cwd = target.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise DataError(
            f"refusing to write the prepared data set to {out}: it is the current directory or contains it; "
            "give a new subdirectory, e.g. --out prepared/NAME"
        )
    if target.exists() and not target.is_dir():
        raise DataError(f"output {out} exists and is not a directory; give a directory path with --out")
    if target.is_dir():
        _check_replaceable(target, out, overwrite)
    _check_parent_writable(target, out)
    return target


def _check_replaceable(target: Path, out, overwrite: bool) -> None:
    entries = sorted(p.name for p in target.iterdir())
    if entries and not overwrite:
        raise DataError(f"output directory {out} exists and is not empty (pass --overwrite to replace it)")
    if entries:
        meta = prepared_meta(target)
        if meta is None:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise DataError(
                f"refusing to overwrite {out}: it is not a data set written by llmrec prepare (no meta.json with a "
                f"format_version) and holds {len(entries)} entries ({shown}); nothing was changed"
            )
        ours = set(PREPARED_FILES) | {str(f) for f in meta.get("files", [])}
        foreign = [e for e in entries if e not in ours]
        if foreign:
            raise DataError(
                f"refusing to overwrite {out}: besides the prepared data set it holds {', '.join(foreign[:5])}, which "
                "llmrec did not write; move them away first. Nothing was changed"
            )
    if os.path.ismount(target):
        raise DataError(f"refusing to replace {out}: it is a mount point; give a subdirectory of it with --out")


def _check_parent_writable(target: Path, out) -> None:
    """The nearest existing ancestor of ``target`` must be a directory we may create entries in."""
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(f"cannot create {out}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DataError(f"cannot create {out}: no permission to write in {ancestor}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def recover(target: Path) -> None:
    """Restore a data set that a killed replace left under ``.NAME.old`` (or, older llmrec, ``.NAME.old-*/d``)."""
    recover_dir(target)
    if target.exists() or not target.parent.is_dir():
        return
    olds = [
        p / "d" for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.old-") and (p / "d").is_dir()
    ]
    if olds:
        os.replace(max(olds, key=lambda p: p.stat().st_mtime), target)


def clean_stale(target: Path) -> list[Path]:
    """Remove ``.NAME.tmp-*`` dirs of prepares no longer running and leftover ``.NAME.old*``; returns what went."""
    if not target.parent.is_dir():
        return []
    removed = []
    for p in target.parent.iterdir():
        if not p.is_dir() or p.is_symlink():
            continue
        if p.name.startswith(f".{target.name}.tmp-"):
            pid = p.name[len(f".{target.name}.tmp-") :].split("-", 1)[0]
            if pid.isdigit() and _pid_alive(int(pid)):
                continue  # a prepare of the same output is running (this one or another)
        elif not (p.name == f".{target.name}.old" or p.name.startswith(f".{target.name}.old-")) or not target.exists():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def make_temp_dir(target: Path) -> Path:
    """A new empty ``.NAME.tmp-PID-XXXX`` next to ``target`` (same file system, so the final rename is atomic)."""
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-{os.getpid()}-"))
