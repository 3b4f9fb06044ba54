"""`llmrec prepare --out/--overwrite`: replace only what llmrec wrote, atomically; refuse everything else in one line."""

from __future__ import annotations

import os

import pytest

from llmrec.cli import main as cli_main
from llmrec.data import Catalog, DataError, PreparedData, load_prepared, save_prepared
from llmrec.data.outdir import check_output_dir, clean_stale


@pytest.fixture()
def raw(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("u1 1 2 3\nu2 2 3 4\n")
    return path


def prepare(raw, out, *extra) -> int:
    return cli_main(["prepare", "--format", "sequence", "--input", str(raw), "--out", str(out), *extra])


def one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmrec prepare: error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def test_overwrite_refuses_foreign_dir_and_keeps_its_files(raw, tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("important\n")
    assert prepare(raw, precious, "--overwrite") == 2
    one_line_error(capsys, "not a data set written by llmrec prepare", "thesis.txt")
    assert (precious / "thesis.txt").read_text() == "important\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "s.txt"]  # no temp dirs either


def test_overwrite_home_like_dir_refused(raw, tmp_path, capsys):
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (home / "notes.md").write_text("x")
    assert prepare(raw, home, "--overwrite") == 2
    one_line_error(capsys, "refusing to overwrite")
    assert (home / "notes.md").exists() and (home / ".config").is_dir()


def test_overwrite_replaces_prepared_dir_but_not_one_with_user_files(raw, tmp_path, capsys):
    out = tmp_path / "prep"
    assert prepare(raw, out) == 0
    assert prepare(raw, out) == 2
    one_line_error(capsys, "exists and is not empty", "--overwrite")
    raw.write_text("u1 1 2 3 4\nu2 2 3 4\nu3 1 2 3\n")
    assert prepare(raw, out, "--overwrite") == 0
    assert load_prepared(out).num_users == 3
    (out / "my_notes.txt").write_text("mine")
    assert prepare(raw, out, "--overwrite") == 2
    one_line_error(capsys, "my_notes.txt", "did not write")
    assert (out / "my_notes.txt").read_text() == "mine" and load_prepared(out).num_users == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep", "s.txt"]


def test_out_dot_and_parents_of_cwd_refused(raw, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work / "sub")
    for out in (".", "..", str(tmp_path), "./"):
        for extra in ((), ("--overwrite",)):
            assert prepare(raw, out, *extra) == 2
            one_line_error(capsys, "current directory or contains it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.txt", "work"]  # no ..old-* or .tmp-* left
    assert [p.name for p in work.iterdir()] == ["sub"] and list((work / "sub").iterdir()) == []
    assert prepare(raw, "prepared/x") == 0  # a new subdirectory of the cwd is fine
    assert load_prepared(work / "sub" / "prepared" / "x").num_users == 2


def test_out_is_a_file_or_under_a_file(raw, tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("data")
    assert prepare(raw, f, "--overwrite") == 2
    one_line_error(capsys, "exists and is not a directory")
    assert prepare(raw, f / "sub") == 2
    one_line_error(capsys, "is not a directory")
    assert f.read_text() == "data"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_parent(raw, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert prepare(raw, parent / "out") == 2
        one_line_error(capsys, "no permission to write")
    finally:
        parent.chmod(0o700)


def test_file_system_refusal_while_writing_is_one_line(raw, tmp_path, capsys, monkeypatch):
    # what an immutable (chattr +i) or read-only parent does to root: EPERM at the first write
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    assert prepare(raw, tmp_path / "out") == 2
    one_line_error(capsys, "Operation not permitted")
    assert not (tmp_path / "out").exists()


def test_invalid_input_touches_nothing(tmp_path, capsys):
    out = tmp_path / "prep"
    assert prepare(tmp_path / "missing.txt", out) == 2
    one_line_error(capsys, "missing.txt: file not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _toy() -> PreparedData:
    return PreparedData(Catalog(["a", "b", "c"], ["A", "", "C"]), ["u1"], [[0, 1, 2]], {"users": 1}, {"dataset": "t"})


def test_leftovers_of_killed_prepares_are_cleaned(tmp_path):
    out = tmp_path / "prep"
    dead = tmp_path / ".prep.tmp-999999999-abcd"  # no such pid
    old_style = tmp_path / ".prep.tmp-xyz"
    for d in (dead, old_style):
        d.mkdir()
        (d / "catalog.parquet").write_text("half")
    alive = tmp_path / f".prep.tmp-{os.getpid()}-live"  # a prepare that is still running
    alive.mkdir()
    save_prepared(_toy(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name, "prep"]
    assert load_prepared(out).users == ["u1"]


def test_killed_replace_is_recovered(tmp_path):
    out = save_prepared(_toy(), tmp_path / "prep")
    os.replace(out, tmp_path / ".prep.old")  # killed between replace_dir's two renames
    with pytest.raises(DataError, match="exists and is not empty"):
        save_prepared(_toy(), out)  # the old data set was restored first, so it is not silently replaced
    assert load_prepared(out).users == ["u1"] and not (tmp_path / ".prep.old").exists()
    # older llmrec: .NAME.old-XXXX/d
    (tmp_path / ".prep.old-1234").mkdir()
    os.replace(out, tmp_path / ".prep.old-1234" / "d")
    save_prepared(_toy(), out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]


def test_symlinked_output_replaces_target_and_keeps_link(tmp_path):
    real = save_prepared(_toy(), tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    save_prepared(_toy(), link, overwrite=True)
    assert link.is_symlink() and load_prepared(link).users == ["u1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_check_output_dir_touches_nothing(tmp_path):
    target = check_output_dir(tmp_path / "a" / "b" / "c")
    assert target == tmp_path / "a" / "b" / "c" and list(tmp_path.iterdir()) == []
    assert clean_stale(tmp_path / "nowhere" / "x") == []


def test_meta_marks_the_directory_as_written_by_llmrec(tmp_path):
    out = save_prepared(_toy(), tmp_path / "p")
    meta = load_prepared(out).meta
    assert meta["format_version"] >= 1 and set(meta["files"]) == {p.name for p in out.iterdir()}
