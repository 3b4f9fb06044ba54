"""Data pipeline: readers for every format, ordering, k-core, split, atomic output, errors with file:line."""

from __future__ import annotations

import gzip
import json
import sqlite3

import pytest

from llmrec.cli import main as cli_main
from llmrec.config import ConfigError
from llmrec.data import Catalog, DataError, PreparedData, load_prepared, readers, save_prepared, tables
from llmrec.data.processing import build_prepared, kcore
from llmrec.data.registry import read_registered


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- readers


def test_sequence_format_with_titles(tmp_path):
    seq = write(tmp_path / "s.txt", "u1 10 11 12\nu2 11 12 13 10\n\nu1 13\n")
    titles = write(tmp_path / "t.tsv", "item_id\tasin\ttitle\n10\tA\tRed lipstick\n11\tB\t\n12\tC\tBlue cream\n")
    log = readers.read_sequences(seq, titles)
    assert log.users == ["u1"] * 3 + ["u2"] * 4 + ["u1"]
    assert log.items == ["10", "11", "12", "11", "12", "13", "10", "13"]
    assert log.times is None
    assert log.titles == {"10": "Red lipstick", "11": "", "12": "Blue cream"}
    data = build_prepared(log)
    # natural (numeric) order of raw ids -> contiguous internal ids
    assert data.catalog.raw_ids == ["10", "11", "12", "13"]
    assert data.catalog.titles == ["Red lipstick", "", "Blue cream", ""]
    # pairs appended later in the file come after earlier items of the same user
    assert data.sequences[data.users.index("u1")] == [0, 1, 2, 3]


def test_movielens_1m_latin1_and_stable_ties(tmp_path):
    ratings = write(
        tmp_path / "ratings.dat", "1::20::5::100\n1::10::3::100\n1::30::4::50\n2::10::1::7\n2::20::2::8\n2::30::2::9\n"
    )
    movies = write(
        tmp_path / "movies.dat",
        "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n30::Up (2009)::Animation\n",
        "latin-1",
    )
    log = readers.read_movielens_1m(ratings, movies)
    data = build_prepared(log)
    # user 1: item 30 (t=50) first, then 20 and 10 tie at t=100 and keep file order
    assert [data.catalog.raw_ids[i] for i in data.sequences[0]] == ["30", "20", "10"]
    assert data.catalog.titles[0] == "Amélie (2001)"
    assert data.catalog.texts[0] == "Genres: Comedy, Romance"


def test_movielens_100k(tmp_path):
    udata = write(tmp_path / "u.data", "1\t5\t3\t300\n1\t6\t3\t100\n1\t7\t3\t200\n")
    flags = "|".join(["0"] * 18 + ["1"])
    uitem = write(
        tmp_path / "u.item", f"5|Café (1999)|01-Jan-1999||http://x|{flags}\n6|B (1998)|||x|{flags}\n", "latin-1"
    )
    data = build_prepared(readers.read_movielens_100k(udata, uitem))
    assert [data.catalog.raw_ids[i] for i in data.sequences[0]] == ["6", "7", "5"]
    assert data.catalog.titles == ["Café (1999)", "B (1998)", ""]
    assert data.catalog.texts[0] == "Genres: Western"


@pytest.mark.parametrize("style", ["2014", "2018"])
def test_amazon_json_lines(tmp_path, style):
    recs = [
        {"reviewerID": "A", "asin": "X2", "unixReviewTime": 20, "overall": 5.0},
        {"reviewerID": "A", "asin": "X1", "unixReviewTime": 10},
        {"reviewerID": "A", "asin": "X3", "unixReviewTime": 30},
    ]
    if style == "2018":
        recs = [{**r, "verified": True, "vote": "2"} for r in recs]
    reviews = tmp_path / "reviews.json.gz"
    with gzip.open(reviews, "wt") as f:
        f.write("\n".join(json.dumps(r) for r in recs) + "\n")
    # 2014 metadata lines are Python literals with single quotes, not JSON
    meta = write(
        tmp_path / "meta.json",
        "{'asin': 'X1', 'title': 'Soap', 'description': 'Nice'}\n"
        + json.dumps({"asin": "X2", "title": "Shampoo"})
        + "\n",
    )
    data = build_prepared(readers.read_amazon(reviews, meta))
    assert [data.catalog.raw_ids[i] for i in data.sequences[0]] == ["X1", "X2", "X3"]
    assert data.catalog.titles == ["Soap", "Shampoo", ""]
    assert data.catalog.texts[0] == "Nice"


def test_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = write(tmp_path / "log.csv", "uid,iid,ts,name\na,i1,3,One\na,i2,1,Two\na,i3,2,\n")
    log = tables.read_table(csv_path, "uid", "iid", "ts", "name")
    data = build_prepared(log)
    assert [data.catalog.raw_ids[i] for i in data.sequences[0]] == ["i2", "i3", "i1"]
    assert data.catalog.titles == ["One", "Two", ""]
    pq_path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"uid": ["a", "a", "a"], "iid": ["i1", "i2", "i3"], "ts": [3, 1, 2]}), pq_path)
    data2 = build_prepared(tables.read_table(pq_path, "uid", "iid", "ts"))
    assert data2.sequences == data.sequences


def test_event_log(tmp_path):
    db = tmp_path / "events.sqlite"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, ts REAL, user_hash TEXT, item TEXT, event TEXT, value REAL)"
    )
    rows = [
        (1.0, "h1", "a", "click", None),
        (2.0, "h1", "b", "purchase", None),
        (3.0, "h1", "c", "rating", 4.0),
        (4.0, "h1", "d", "view", None),
    ]
    con.executemany("INSERT INTO events (ts, user_hash, item, event, value) VALUES (?,?,?,?,?)", rows)
    con.commit()
    con.close()
    log = readers.read_event_log(db)
    assert log.items == ["a", "b", "c"]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "reader,name,content,expected",
    [
        (readers.read_sequences, "s.txt", "u1 1 2\nu2\n", "s.txt:2: expected 'user item"),
        (
            readers.read_movielens_1m,
            "ratings.dat",
            "1::2::3::4\n1::2::3\n",
            "ratings.dat:2: expected 'UserID::MovieID::Rating::Timestamp'",
        ),
        (readers.read_movielens_1m, "ratings.dat", "1::2::3::x\n", "ratings.dat:1: expected a numeric timestamp"),
        (readers.read_movielens_100k, "u.data", "1\t2\t3\t4\n\n1 2 3 4\n", "u.data:3: expected 'user<TAB>item"),
        (
            readers.read_amazon,
            "r.json",
            '{"reviewerID": "a", "asin": "b", "unixReviewTime": 1}\n{"asin": "b"}\n',
            "r.json:2: missing field(s) ['reviewerID', 'unixReviewTime']",
        ),
        (readers.read_amazon, "r.json", "not json\n", "r.json:1: expected one JSON object per line"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, reader, name, content, expected):
    path = write(tmp_path / name, content)
    with pytest.raises(
        DataError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        reader(path)


def test_csv_missing_column_and_empty_field(tmp_path):
    path = write(tmp_path / "x.csv", "user_id,item\n1,2\n")
    with pytest.raises(DataError, match=r"x.csv:1: missing column\(s\) \['item_id', 'timestamp'\]"):
        tables.read_table(path)
    path = write(tmp_path / "y.csv", "user_id,item_id,timestamp\n1,2,3\n,4,5\n")
    with pytest.raises(DataError, match=r"y.csv:3: empty"):
        tables.read_table(path)


def test_empty_after_filter_names_the_filter(tmp_path):
    log = readers.read_sequences(write(tmp_path / "s.txt", "u1 1 2 3\nu2 4 5 6\n"))
    with pytest.raises(DataError, match="5-core filter removed every user"):
        build_prepared(log, kcore_k=5)
    with pytest.raises(DataError, match="min_seq_len=4 filter removed every user"):
        build_prepared(log, min_seq_len=4)


def test_missing_registered_files_say_where_and_download(tmp_path):
    with pytest.raises(DataError, match=r"(?s)expected files .*Beauty\.txt.*Download: .*S3Rec"):
        read_registered("beauty", tmp_path)
    with pytest.raises(DataError, match="unknown data set 'nope'"):
        read_registered("nope", tmp_path)


def test_prepare_config_errors_name_the_field(tmp_path):
    assert cli_main(["prepare", "--format", "bogus", "--input", "x"]) == 2
    from llmrec.commands.prepare import PrepareConfig

    with pytest.raises(ConfigError, match="min_seq_len"):
        PrepareConfig(dataset="beauty", min_seq_len=2)
    with pytest.raises(ConfigError, match="format"):
        PrepareConfig(format="xml", input="a")


# ---------------------------------------------------------------- processing


def test_kcore_hand_made_case():
    seqs = {"a": ["x", "y", "w"], "b": ["x", "y", "w"], "c": ["x", "y", "z"], "d": ["x", "w", "w"]}
    out = kcore(seqs, 3)
    # z (1) dropped -> c=[x,y] dropped -> y has 2 -> a=[x,w], b=[x,w] dropped -> x has 1, w has 2 -> d empties
    assert out == {}
    seqs = {"a": ["x", "y", "x"], "b": ["y", "x", "y"], "c": ["x", "y", "z"]}
    out = kcore(seqs, 3)
    # c loses z (count 1) -> length 2 < 3 -> dropped; then x=3, y=3 in a,b: stable
    assert out == {"a": ["x", "y", "x"], "b": ["y", "x", "y"]}
    for s in out.values():
        assert len(s) >= 3


def test_kcore_counts_in_stats(tmp_path):
    log = readers.read_sequences(write(tmp_path / "s.txt", "a 1 2 1\nb 2 1 2\nc 1 2 3\n"))
    data = build_prepared(log, kcore_k=3)
    assert data.stats["removed_by_filter"]["kcore_3"] == {"users": 1, "items": 1, "interactions": 3}
    assert data.num_users == 2 and data.num_items == 2


def test_dedup_keeps_first_interaction(tmp_path):
    log = readers.read_sequences(write(tmp_path / "s.txt", "a 1 2 1 3 2 4\n"))
    data = build_prepared(log, dedup=True)
    assert [data.catalog.raw_ids[i] for i in data.sequences[0]] == ["1", "2", "3", "4"]
    assert data.stats["removed_by_filter"]["dedup"] == {"users": 0, "items": 0, "interactions": 2}


def test_split_is_leave_one_out_and_leak_free():
    data = PreparedData(Catalog(["a", "b", "c", "d"], [""] * 4), ["u"], [[0, 1, 2, 3]])
    assert data.train_sequences() == [[0, 1]]
    assert data.split("valid") == ([[0, 1]], [2])
    assert data.split("test") == ([[0, 1, 2]], [3])
    with pytest.raises(ValueError, match="split must be one of"):
        data.split("train")


def test_save_load_roundtrip_and_atomic(tmp_path, monkeypatch):
    data = PreparedData(
        Catalog(["a", "b", "c"], ["A", "", "C"], ["x", "", ""]),
        ["u1", "u2"],
        [[0, 1, 2], [2, 1, 0, 1]],
        {"users": 2},
        {"dataset": "t"},
    )
    out = save_prepared(data, tmp_path / "out")
    back = load_prepared(out)
    assert back.sequences == data.sequences and back.users == data.users
    assert back.catalog.titles == ["A", "", "C"] and back.catalog.texts == ["x", "", ""]
    with pytest.raises(DataError, match="exists and is not empty"):
        save_prepared(data, out)
    # a failure while writing leaves neither a half-written directory nor a damaged old one
    import llmrec.data.dataset as ds

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ds.json, "dumps", boom)
    with pytest.raises(OSError):
        save_prepared(data, tmp_path / "new")
    with pytest.raises(OSError):
        save_prepared(data, out, overwrite=True)
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert load_prepared(out).sequences == data.sequences


def test_load_prepared_errors(tmp_path):
    with pytest.raises(DataError, match="catalog.parquet is missing"):
        load_prepared(tmp_path)


def test_catalog_resolution():
    cat = Catalog(["10", "20"], ["Red Lipstick", "Blue cream"])
    assert cat.resolve("20") == 1
    assert cat.resolve("red lipstick ") == 0
    assert cat.search("CREAM") == [1]
    with pytest.raises(KeyError, match="neither a raw item id, an alternate id nor an exact item title"):
        cat.resolve("green")


def test_prepare_cli_end_to_end(tmp_path, capsys):
    folder = tmp_path / "raw" / "ml-100k"
    folder.mkdir(parents=True)
    write(folder / "u.data", "".join(f"{u}\t{i}\t3\t{i * 10}\n" for u in (1, 2) for i in (1, 2, 3, 4)))
    out = tmp_path / "prep"
    assert cli_main(["prepare", "ml-100k", "--data-dir", str(tmp_path / "raw"), "--out", str(out)]) == 0
    assert '"users": 2, "items": 4, "interactions": 8' in capsys.readouterr().out
    assert cli_main(["stats", str(out)]) == 0
    assert cli_main(["prepare", "ml-1m", "--data-dir", str(tmp_path / "raw"), "--out", str(tmp_path / "x")]) == 2
    assert "ratings.dat" in capsys.readouterr().err


def test_registered_layout_with_separate_titles_file(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    write(folder / "ml-1m_seq_rawids.txt", "1 10 20 30\n2 20 30 10\n")
    write(folder / "movies.dat", "10::Amélie (2001)::Comedy\n20::Heat (1995)::Action\n", "latin-1")
    data = build_prepared(read_registered("ml-1m", tmp_path))
    assert data.catalog.titles == ["Amélie (2001)", "Heat (1995)", ""]
    assert data.stats["titles_file"] == str(folder / "movies.dat") and data.stats["titles_matched"] == 2
    assert data.meta["encodings"][str(folder / "movies.dat")] == "latin-1"


def test_catalog_extended_appends_and_refuses_duplicates():
    from llmrec.data import Catalog, DataError

    cat = Catalog(raw_ids=["a", "b"], titles=["A", "B"])
    new = cat.extended(["c", "d"], ["C", "D"], ["text c", ""])
    assert len(cat) == 2 and len(new) == 4
    assert new.index_of_raw("d") == 3 and new.texts[2] == "text c" and new.resolve("C") == 2
    for raw in (["a"], ["x", "x"], [""]):
        with pytest.raises(DataError, match="raw_id"):
            cat.extended(raw, ["T"] * len(raw))
