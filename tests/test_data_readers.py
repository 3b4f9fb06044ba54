"""Reader errors and notes: CSV row shapes, --format decides the reader, unmatched titles, the Latin-1 fallback."""

from __future__ import annotations

import json

import pytest

from llmrec.cli import main as cli_main
from llmrec.data import DataError, load_prepared, readers, tables
from llmrec.data.processing import build_prepared


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_short_csv_row_names_missing_columns_and_line(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp,rating\na,1,10,5\nb,2\n")
    with pytest.raises(
        DataError, match=r"log.csv:3: 2 fields but the header has 4; missing column\(s\) \['timestamp', 'rating'\]"
    ):
        tables.read_csv(path)


def test_extra_csv_field_is_an_error_naming_the_line(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\na,1,10\na,2,11,oops\n")
    with pytest.raises(DataError, match=r"log.csv:3: 4 fields but the header has 3; extra value\(s\) \['oops'\]"):
        tables.read_csv(path)
    # a TSV read with the default comma separator: one column, so the header check names the columns
    tsv = write(tmp_path / "log.tsv", "user_id\titem_id\ttimestamp\na\t1\t10\n")
    with pytest.raises(DataError, match=r"log.tsv:1: missing column\(s\)"):
        tables.read_csv(tsv)
    assert tables.read_csv(tsv, sep="\t").items == ["1"]


def _parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"user_id": ["a"] * 3, "item_id": ["x", "y", "z"], "timestamp": [3, 1, 2]}), path)
    return path


def test_format_not_suffix_chooses_the_reader(tmp_path, capsys):
    data_file = _parquet(tmp_path / "interactions.dat")  # Parquet without the .parquet suffix
    out = tmp_path / "prep"
    assert cli_main(["prepare", "--format", "parquet", "--input", str(data_file), "--out", str(out)]) == 0
    assert load_prepared(out).catalog.raw_ids == ["x", "y", "z"]
    assert cli_main(["prepare", "--format", "csv", "--input", str(data_file), "--out", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err
    assert "is a Parquet file, not CSV; use --format parquet" in err and err.count("\n") == 1
    csv_file = write(tmp_path / "log.parquet", "user_id,item_id,timestamp\na,1,1\n")  # CSV named .parquet
    with pytest.raises(DataError, match="not a readable Parquet file.*use --format csv"):
        tables.read_parquet(csv_file)
    assert tables.read_csv(csv_file).items == ["1"]
    assert tables.read_table(data_file).items == ["x", "y", "z"]  # without a format: by content


def test_parquet_errors_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user_id": ["a", None], "item_id": ["x", "y"], "timestamp": [1, 2]}), path)
    with pytest.raises(DataError, match=r"t.parquet: row 2: empty 'user_id' or 'item_id' field"):
        tables.read_parquet(path)


def test_item_column_auto_detection(tmp_path):
    path = write(tmp_path / "a.csv", "user_id,asin,parent_asin,timestamp\nu,V1,P1,1\n")
    assert tables.read_csv(path).items == ["P1"]
    assert tables.read_csv(path, item_col="asin").items == ["V1"]
    with pytest.raises(DataError, match=r"missing column\(s\) \['item_id'\].*defaults to the first of"):
        tables.read_csv(write(tmp_path / "b.csv", "user_id,product,timestamp\nu,p,1\n"))


def test_titles_matching_no_item_warns_and_is_recorded(tmp_path, capsys):
    seq = write(tmp_path / "s.txt", "u1 1 2 3\nu2 2 3 4\n")
    titles = write(tmp_path / "other_titles.tsv", "item_id\ttitle\nB001\tSoap\nB002\tCream\n")
    out = tmp_path / "prep"
    argv = ["prepare", "--format", "sequence", "--input", str(seq), "--titles", str(titles), "--out", str(out)]
    assert cli_main(argv) == 0
    captured = capsys.readouterr()
    assert "warning: titles file" in captured.err and "other_titles.tsv matches none of the 4 items" in captured.err
    assert "0 items matched by" in captured.out
    stats = json.loads((out / "stats.json").read_text())
    assert stats["titles_matched"] == 0 and stats["titles_file"] == str(titles) and stats["titles_entries"] == 2
    assert len(stats["warnings"]) == 1
    assert cli_main(["stats", str(out)]) == 0
    assert "warning: titles file" in capsys.readouterr().err


def test_matching_titles_no_warning(tmp_path):
    seq = write(tmp_path / "s.txt", "u1 1 2 3\n")
    data = build_prepared(readers.read_sequences(seq, write(tmp_path / "t.tsv", "1\tOne\n9\tNine\n")))
    assert data.stats["titles_matched"] == 1 and data.stats["warnings"] == []


def test_latin1_fallback_recorded_and_noted(tmp_path, capsys):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\nJosé,1,1\nJosé,2,2\nJosé,3,3\n", "latin-1")
    out = tmp_path / "prep"
    assert cli_main(["prepare", "--format", "csv", "--input", str(path), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "log.csv is not valid UTF-8; it was read as Latin-1" in err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["encoding"] == "latin-1 (fallback)" and meta["encodings"] == {str(path): "latin-1 (fallback)"}
    assert load_prepared(out).users == ["José"]
    utf8 = write(tmp_path / "u.csv", "user_id,item_id,timestamp\nJosé,1,1\nJosé,2,2\nJosé,3,3\n")
    assert cli_main(["prepare", "--format", "csv", "--input", str(utf8), "--out", str(tmp_path / "p2")]) == 0
    assert "note:" not in capsys.readouterr().err
    assert json.loads((tmp_path / "p2" / "meta.json").read_text())["encoding"] == "utf-8"


def test_mixed_encodings_and_forced_encoding(tmp_path):
    seq = write(tmp_path / "s.txt", "u1 1 2 3\n")
    titles = write(tmp_path / "t.tsv", "1\tCafé\n", "latin-1")
    data = build_prepared(readers.read_sequences(seq, titles))
    assert data.meta["encoding"] == "mixed"
    assert data.meta["encodings"] == {str(seq): "utf-8", str(titles): "latin-1 (fallback)"}
    assert data.catalog.titles[0] == "Café"
    forced = build_prepared(readers.read_sequences(seq, titles, encoding="cp1252"))
    assert forced.meta["encoding"] == "cp1252"
    with pytest.raises(DataError, match="cannot decode as utf-8"):
        readers.read_sequences(titles, encoding="utf-8")
