"""The machine a run or a report was made on: CPU model, cores, GPUs, OS, Python and torch versions.

``run.json`` keeps it (``llmrec.runs.write_run_info``) and benchmark reports and trial records name it, so every
number can say which machine produced it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """``{"cpu", "cores", "usable_cores", "gpus", "platform", "python", "torch"}``; ``usable_cores`` are the cores
    this process may use (its affinity), ``gpus`` the CUDA device names (empty without CUDA)."""
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


def machine_name(m: dict) -> str:
    """One line for a ``machine()`` dict: ``AMD EPYC 7B13 (2 usable cores; no GPU)``."""
    gpus = ", ".join(m.get("gpus") or []) or "no GPU"
    return f"{m.get('cpu')} ({m.get('usable_cores')} usable cores; {gpus})"
