"""Acceptance checks of `llmrec prepare` on the real public data sets; skipped when they are absent."""

from __future__ import annotations

import time

import pytest

from llmrec.cli import main as cli_main
from llmrec.data import load_prepared

pytestmark = pytest.mark.realdata

EXPECTED = {
    # name: (users, items, interactions, items with a non-empty title)
    "beauty": (22_363, 12_101, 198_502, 12_094),
    "ml-1m": (6_040, 3_706, 1_000_209, 3_706),
    "ml-100k": (943, 1_682, 100_000, 1_682),
}


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    out = {}
    for name in EXPECTED:
        if not (shared_data / name).is_dir():
            continue
        d = tmp_path_factory.mktemp(name) / "prep"
        assert cli_main(["prepare", name, "--data-dir", str(shared_data), "--out", str(d)]) == 0
        out[name] = d
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_and_split(prepared, name):
    if name not in prepared:
        pytest.skip(f"{name} not present")
    t0 = time.perf_counter()
    data = load_prepared(prepared[name])
    load_s = time.perf_counter() - t0
    users, items, inter, titled = EXPECTED[name]
    assert (data.num_users, data.num_items, sum(map(len, data.sequences))) == (users, items, inter)
    assert sum(1 for t in data.catalog.titles if t) == titled
    assert data.stats["users"] == users and data.stats["interactions"] == inter
    if name == "beauty":
        assert load_s < 2.0, f"loading beauty took {load_s:.2f}s"
    # leave-one-out: valid/test targets are the last two items; the test item never leaks into training
    (vh, vt), (th, tt) = data.split("valid"), data.split("test")
    train = data.train_sequences()
    for s, tr, v, t, hv, ht in zip(data.sequences, train, vt, tt, vh, th):
        assert (v, t) == (s[-2], s[-1])
        assert hv == tr and ht == tr + [v]
        assert s[:-2] == tr
        assert t not in set(tr), "test item appears in the user's training part"


def test_beauty_no_test_item_in_training_positions(prepared):
    if "beauty" not in prepared:
        pytest.skip("beauty not present")
    import pyarrow.parquet as pq

    table = pq.read_table(prepared["beauty"] / "sequences.parquet")
    items, train, test = (table.column(c).to_pylist() for c in ("items", "train", "test"))
    for s, tr, t in zip(items, train, test):
        # the stored training part is exactly the prefix: the final (test) interaction is not in it
        assert tr == s[:-2] and t == s[-1] and len(tr) == len(s) - 2
