"""`llmrec prepare NAME|--format F --input FILE ... --out DIR`: raw files → one prepared data set directory."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmrec.config import ConfigError, parse_config

HELP = "Read a raw data set, filter, split leave-one-out, write a prepared directory."
FORMATS = ("sequence", "ml-1m", "ml-100k", "amazon", "csv", "parquet", "events")


@dataclass
class PrepareConfig:
    dataset: str = field(
        default="",
        metadata={
            "help": "Registered data set (beauty, ml-1m, ml-100k, sports, toys). Also the first positional argument."
        },
    )
    data_dir: str = field(
        default="",
        metadata={"help": "Folder holding the registered data sets' folders (default: $LLMREC_DATA_DIR or ./data)."},
    )
    out: str = field(default="", metadata={"help": "Output directory (default: ./prepared/<dataset>)."})
    format: str = field(
        default="",
        metadata={"help": f"Format of custom input files instead of a registered name: {', '.join(FORMATS)}."},
    )
    input: str = field(
        default="",
        metadata={
            "help": "Custom input: interactions file (sequence text, ratings.dat, u.data, reviews JSON lines, CSV/Parquet, SQLite event log)."
        },
    )
    titles: str = field(
        default="",
        metadata={"help": "Custom input: titles file (titles TSV, movies.dat, u.item, Amazon metadata JSON lines)."},
    )
    user_col: str = field(default="user_id", metadata={"help": "csv/parquet: user column."})
    item_col: str = field(default="item_id", metadata={"help": "csv/parquet: item column."})
    time_col: str = field(
        default="timestamp", metadata={"help": "csv/parquet: timestamp column ('' = file order is chronological)."}
    )
    title_col: str = field(default="", metadata={"help": "csv/parquet: optional title column."})
    sep: str = field(default=",", metadata={"help": "csv: field separator (use '\\t' for TSV)."})
    encoding: str = field(
        default="",
        metadata={
            "help": "Text encoding of the input ('' = UTF-8, falling back to Latin-1; MovieLens readers default to Latin-1)."
        },
    )
    dedup: bool = field(
        default=False, metadata={"help": "Keep only each user's first interaction with an item (drop repeats)."}
    )
    kcore: int = field(default=0, metadata={"help": "Iterative k-core on users and items (0 = off)."})
    min_seq_len: int = field(
        default=3, metadata={"help": "Drop users with fewer interactions (>= 3 for the leave-one-out split)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self):
        if bool(self.dataset) == bool(self.format):
            raise ConfigError(
                "give either a registered data set name (dataset) or --format with --input, not both/neither"
            )
        if self.format and self.format not in FORMATS:
            raise ConfigError(f"format: expected one of {FORMATS}, got {self.format!r}")
        if self.format and not self.input:
            raise ConfigError("input: --format needs --input FILE")
        if self.kcore < 0:
            raise ConfigError(f"kcore: expected >= 0, got {self.kcore}")
        if self.min_seq_len < 3:
            raise ConfigError(
                f"min_seq_len: expected >= 3 (leave-one-out needs train, valid and test items), got {self.min_seq_len}"
            )
        if self.sep == "\\t":
            self.sep = "\t"


def read_raw(cfg: PrepareConfig):
    from llmrec.data import readers
    from llmrec.data.registry import default_data_dir, read_registered

    enc = cfg.encoding or None
    if cfg.dataset:
        return read_registered(cfg.dataset, cfg.data_dir or default_data_dir(), encoding=enc)
    titles = cfg.titles or None
    if cfg.format == "sequence":
        return readers.read_sequences(cfg.input, titles, encoding=enc)
    if cfg.format == "ml-1m":
        return readers.read_movielens_1m(cfg.input, titles, encoding=enc or "latin-1")
    if cfg.format == "ml-100k":
        return readers.read_movielens_100k(cfg.input, titles, encoding=enc or "latin-1")
    if cfg.format == "amazon":
        return readers.read_amazon(cfg.input, titles, encoding=enc)
    if cfg.format == "events":
        return readers.read_event_log(cfg.input)
    return readers.read_table(
        cfg.input, cfg.user_col, cfg.item_col, cfg.time_col or None, cfg.title_col or None, cfg.sep, encoding=enc
    )


def format_stats(stats: dict) -> str:
    sl = stats["seq_len"]
    lines = [
        f"data set      {stats['dataset']}",
        f"users         {stats['users']:,}",
        f"items         {stats['items']:,}  ({stats['items_with_title']:,} with a non-empty title)",
        f"interactions  {stats['interactions']:,}  (density {stats['density']:.5f})",
        f"seq length    min {sl['min']}, mean {sl['mean']:.2f}, max {sl['max']}",
    ]
    for name, rem in stats.get("removed_by_filter", {}).items():
        lines.append(
            f"filter {name:<12} removed {rem['users']:,} users, {rem['items']:,} items, {rem['interactions']:,} interactions"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and not argv[0].startswith("-"):
        argv = ["--dataset", argv[0], *argv[1:]]
    cfg = parse_config(PrepareConfig, argv, prog="llmrec prepare", description=HELP)
    from llmrec.data.dataset import save_prepared
    from llmrec.data.processing import build_prepared

    t0 = time.time()
    log = read_raw(cfg)
    name = cfg.dataset or Path(cfg.input).stem
    data = build_prepared(
        log, kcore_k=cfg.kcore, dedup=cfg.dedup, min_seq_len=cfg.min_seq_len, dataset=name, options=asdict(cfg)
    )
    out = Path(cfg.out or Path("prepared") / name)
    save_prepared(data, out, overwrite=cfg.overwrite)
    print(format_stats(data.stats))
    print(f"wrote {out} in {time.time() - t0:.1f}s")
    print(json.dumps({k: data.stats[k] for k in ("users", "items", "interactions", "items_with_title")}))
    return 0
