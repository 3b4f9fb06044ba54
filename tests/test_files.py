"""Durable writes: a kill (simulated by a failing rename) never leaves a run without a loadable checkpoint."""

from __future__ import annotations

import os

import pytest

from llmrec import files
from llmrec.files import atomic_write_json, atomic_write_text, read_json, recover_dir, replace_dir


def _dir(path, text):
    path.mkdir()
    (path / "state.json").write_text(text)
    return path


def test_replace_dir_swaps_in_the_new_directory(tmp_path):
    _dir(tmp_path / "checkpoint", "old")
    replace_dir(_dir(tmp_path / ".checkpoint.tmp", "new"), tmp_path / "checkpoint")
    assert (tmp_path / "checkpoint" / "state.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]  # no temp or old copy left


def test_a_kill_between_the_renames_leaves_a_loadable_checkpoint(tmp_path, monkeypatch):
    _dir(tmp_path / "checkpoint", "old")
    new = _dir(tmp_path / ".checkpoint.tmp", "new")
    real, calls = os.replace, []

    def dies_on_the_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", dies_on_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(new, tmp_path / "checkpoint")
    monkeypatch.setattr(files.os, "replace", real)
    assert not (tmp_path / "checkpoint").exists()  # the moment of the kill: only the old copy exists
    restored = recover_dir(tmp_path / "checkpoint")  # what loading a checkpoint does first
    assert (restored / "state.json").read_text() == "old"


def test_atomic_writes_keep_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", broken)
    with pytest.raises(OSError):
        atomic_write_text(target, "{}")
    assert read_json(target) == {"a": 1} and os.listdir(tmp_path) == ["metrics.json"]
