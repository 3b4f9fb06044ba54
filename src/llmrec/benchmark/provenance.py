"""Where and when a report was made: machine (CPU, cores, GPU), date, llmrec version and git commit."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import llmrec


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU model, cores (all and usable by this process), GPUs, OS, Python and torch versions."""
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "gpus": gpus,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


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
