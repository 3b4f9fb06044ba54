"""`--format hf`: Hugging Face datasets saved with save_to_disk or already in the local cache (Amazon Reviews 2023)."""

from __future__ import annotations

import json
import shutil

import pytest

from llmrec.cli import main as cli_main
from llmrec.data import DataError, hf, load_prepared, readers
from llmrec.data.processing import build_prepared

datasets = pytest.importorskip("datasets")

# Amazon Reviews 2023 layout: reviews keyed by parent_asin (asin is the variant), timestamps in milliseconds, a
# "title" column that is the *review* title; metadata with parent_asin, title and list-valued features/description.
REVIEWS = {
    "rating": [5.0, 4.0, 3.0, 5.0, 1.0, 2.0, 4.0],
    "title": ["great", "ok", "meh", "wow", "bad", "so-so", "fine"],
    "text": ["..."] * 7,
    "asin": ["V1a", "V2", "V3", "V1b", "V2", "V4", "V1a"],
    "parent_asin": ["P1", "P2", "P3", "P1", "P2", "P3", "P1"],
    "user_id": ["AU1", "AU1", "AU1", "AU2", "AU2", "AU2", "AU2"],
    "timestamp": [
        1_600_000_003_000,
        1_600_000_001_000,
        1_600_000_002_000,
        1_500_000_000_000,
        1_500_000_000_300,
        1_500_000_000_200,
        1_500_000_000_100,
    ],  # fmt: skip
    "helpful_vote": [0] * 7,
    "verified_purchase": [True] * 7,
}
META = {
    "main_category": ["All Beauty"] * 3,
    "title": ["Rose Soap", "Night Cream", "Not reviewed"],
    "features": [["vegan", "100 g"], [], ["x"]],
    "description": [["A soap."], ["A cream."], []],
    "parent_asin": ["P1", "P2", "P9"],
}


@pytest.fixture()
def amazon23(tmp_path):
    reviews, meta = tmp_path / "reviews", tmp_path / "meta"
    datasets.Dataset.from_dict(REVIEWS).save_to_disk(str(reviews))
    datasets.Dataset.from_dict(META).save_to_disk(str(meta))
    return reviews, meta


def _items(data, user):
    return [data.catalog.raw_ids[i] for i in data.sequences[data.users.index(user)]]


def test_amazon_2023_save_to_disk_prepare(amazon23, tmp_path, capsys):
    reviews, meta = amazon23
    out = tmp_path / "prep"
    argv = ["prepare", "--format", "hf", "--input", str(reviews), "--titles", str(meta), "--out", str(out)]
    assert cli_main(argv) == 0
    data = load_prepared(out)
    assert sorted(data.users) == ["AU1", "AU2"]
    assert data.catalog.raw_ids == ["P1", "P2", "P3"]  # parent_asin chosen without --item_col, not asin
    # chronological by the millisecond timestamps, not file order
    assert _items(data, "AU1") == ["P2", "P3", "P1"]
    assert _items(data, "AU2") == ["P1", "P1", "P3", "P2"]
    # item titles from the metadata, never the review titles; features + description as extra text
    assert data.catalog.titles == ["Rose Soap", "Night Cream", ""]
    assert data.catalog.texts[:2] == ["vegan 100 g A soap.", "A cream."]
    assert data.stats["titles_matched"] == 2 and data.stats["titles_entries"] == 3
    assert data.meta["source"] == str(reviews)
    assert "warning" not in capsys.readouterr().err


def test_dataset_dict_with_meta_split_and_explicit_split(tmp_path):
    dd = datasets.DatasetDict({"full": datasets.Dataset.from_dict(REVIEWS), "meta": datasets.Dataset.from_dict(META)})
    dd.save_to_disk(str(tmp_path / "amz"))
    log = hf.read_hf(str(tmp_path / "amz"))  # interactions: the split besides "meta"; titles: the "meta" split
    assert log.source.endswith("[full]") and log.titles_source.endswith("[meta]")
    assert log.titles["P1"] == "Rose Soap"
    assert hf.read_hf(str(tmp_path / "amz"), split="full", titles=str(tmp_path / "amz")).titles == log.titles
    with pytest.raises(DataError, match=r"no split 'train'; its splits are \['full', 'meta'\]"):
        hf.read_hf(str(tmp_path / "amz"), split="train")
    three = datasets.DatasetDict({k: datasets.Dataset.from_dict(REVIEWS) for k in ("a", "b")})
    three.save_to_disk(str(tmp_path / "ab"))
    with pytest.raises(DataError, match=r"cannot tell which split.*\['a', 'b'\] \(--split\)"):
        hf.read_hf(str(tmp_path / "ab"))
    assert len(hf.read_hf(str(tmp_path / "ab"), split="b")) == 7


def test_hf_explicit_columns_and_errors(amazon23, tmp_path):
    reviews, meta = amazon23
    log = hf.read_hf(str(reviews), item_col="asin", time_col=None)
    assert log.items == REVIEWS["asin"] and log.times is None
    with pytest.raises(DataError, match=r"missing column\(s\) \['uid'\]; the columns are \['rating'"):
        hf.read_hf(str(reviews), user_col="uid")
    with pytest.raises(DataError, match="not a Hugging Face dataset folder"):
        hf.read_hf(str(tmp_path))
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="is a file; --format hf reads a save_to_disk folder"):
        hf.read_hf(str(tmp_path / "x.parquet"))
    bad_meta = tmp_path / "bad_meta"
    datasets.Dataset.from_dict({"parent_asin": ["P1"], "name": ["x"]}).save_to_disk(str(bad_meta))
    with pytest.raises(DataError, match="needs an item id column .* and a 'title' column"):
        hf.read_hf(str(reviews), titles=str(bad_meta))


def _fake_hub_cache(cache, repo_id: str, config: str, columns: dict, split: str = "full"):
    """What `load_dataset(repo_id, config)` leaves in the datasets cache: OWNER___NAME/CONFIG/VERSION/HASH/."""
    staging = cache / "_staging"
    parquet = cache / "_src.parquet"
    datasets.Dataset.from_dict(columns).to_parquet(str(parquet))
    datasets.load_dataset("parquet", data_files={split: str(parquet)}, cache_dir=str(staging))
    (built,) = [p for p in staging.glob("parquet/*/*/*") if p.is_dir()]
    owner, name = repo_id.split("/")
    dest = cache / f"{owner}___{name.lower()}" / config / "0.0.0" / "abc123"
    shutil.copytree(built, dest)
    (dest / f"parquet-{split}.arrow").rename(dest / f"{name.lower()}-{split}.arrow")
    info = json.loads((dest / "dataset_info.json").read_text())
    info.update(config_name=config, dataset_name=name.lower())
    (dest / "dataset_info.json").write_text(json.dumps(info))
    shutil.rmtree(staging)
    parquet.unlink()


def test_cached_hub_id_offline(tmp_path):
    cache = tmp_path / "cache"
    _fake_hub_cache(cache, "Lab/Reviews", "raw_review_Beauty", REVIEWS)
    _fake_hub_cache(cache, "Lab/Reviews", "raw_meta_Beauty", META)
    out = tmp_path / "prep"
    argv = ["prepare", "--format", "hf", "--input", "Lab/Reviews", "--hf_config", "raw_review_Beauty",
            "--titles", "Lab/Reviews", "--titles_config", "raw_meta_Beauty", "--hf_cache_dir", str(cache),
            "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    data = load_prepared(out)
    assert data.name == "raw_review_Beauty"
    assert data.catalog.titles == ["Rose Soap", "Night Cream", ""]
    assert _items(data, "AU1") == ["P2", "P3", "P1"]
    # two configs cached and none named: an error that says so, not a guess
    with pytest.raises(DataError, match="multiple .* configurations in the cache.*--hf_config"):
        hf.read_hf("Lab/Reviews", cache_dir=str(cache))


def test_uncached_hub_id_is_one_line_error_naming_it(tmp_path, capsys):
    argv = ["prepare", "--format", "hf", "--input", "Nobody/NoSuchData", "--hf_cache_dir", str(tmp_path),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "'Nobody/NoSuchData'" in err and "never downloads" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_amazon_2023_json_lines(tmp_path):
    rows = [dict(zip(REVIEWS, values)) for values in zip(*REVIEWS.values())]
    reviews = tmp_path / "All_Beauty.jsonl"
    reviews.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = tmp_path / "meta_All_Beauty.jsonl"
    meta.write_text("".join(json.dumps(dict(zip(META, v))) + "\n" for v in zip(*META.values())))
    data = build_prepared(readers.read_amazon(reviews, meta))
    assert data.catalog.raw_ids == ["P1", "P2", "P3"]
    assert _items(data, "AU1") == ["P2", "P3", "P1"]
    assert data.catalog.titles[:2] == ["Rose Soap", "Night Cream"]
