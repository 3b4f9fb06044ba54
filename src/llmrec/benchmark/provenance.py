"""Where and when a report was made: machine (CPU, cores, GPU), date, llmrec version and git commit."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import llmrec
from llmrec.machine import machine


def _git(*args: str) -> str | None:
    repo = Path(llmrec.__file__).resolve().parent
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def provenance() -> dict:
    """``{"date", "llmrec_version", "git_commit", "git_dirty", "machine"}`` (commit ``None`` outside a checkout)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "llmrec_version": llmrec.__version__,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "machine": machine(),
    }
