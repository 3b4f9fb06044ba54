"""Shared fixtures. Real data sets are looked up in $LLMREC_DATA_DIR or ../shared/data; tests skip without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    for cand in (os.environ.get("LLMREC_DATA_DIR"), REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip("real data sets not present (set LLMREC_DATA_DIR or provide ../shared/data)")
    return d
