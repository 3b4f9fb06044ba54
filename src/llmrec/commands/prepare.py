"""`llmrec prepare NAME|--format F --input FILE ... --out DIR`: raw files → one prepared data set directory."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmrec.config import ConfigError, parse_config

HELP = "Read a raw data set, filter, split leave-one-out, write a prepared directory."


def _read_sequence(cfg: PrepareConfig):
    from llmrec.data import readers

    return readers.read_sequences(cfg.input, cfg.titles or None, encoding=cfg.encoding or None)


def _read_ml1m(cfg: PrepareConfig):
    from llmrec.data import readers

    return readers.read_movielens_1m(cfg.input, cfg.titles or None, encoding=cfg.encoding or "latin-1")


def _read_ml100k(cfg: PrepareConfig):
    from llmrec.data import readers

    return readers.read_movielens_100k(cfg.input, cfg.titles or None, encoding=cfg.encoding or "latin-1")


def _read_amazon(cfg: PrepareConfig):
    from llmrec.data import readers

    return readers.read_amazon(cfg.input, cfg.titles or None, encoding=cfg.encoding or None)


def _columns(cfg: PrepareConfig) -> dict:
    return dict(user_col=cfg.user_col, item_col=cfg.item_col, time_col=cfg.time_col or None, title_col=cfg.title_col)


def _read_csv(cfg: PrepareConfig):
    from llmrec.data import tables

    return tables.read_csv(cfg.input, sep=cfg.sep, encoding=cfg.encoding or None, **_columns(cfg))


def _read_parquet(cfg: PrepareConfig):
    from llmrec.data import tables

    return tables.read_parquet(cfg.input, **_columns(cfg))


def _read_hf(cfg: PrepareConfig):
    from llmrec.data import hf

    return hf.read_hf(
        cfg.input,
        split=cfg.split,
        config=cfg.hf_config,
        cache_dir=cfg.hf_cache_dir,
        titles=cfg.titles,
        titles_config=cfg.titles_config,
        **_columns(cfg),
    )


def _read_events(cfg: PrepareConfig):
    from llmrec.data import readers

    return readers.read_event_log(cfg.input)


# --format name -> reader of the config's input files. Imports happen inside, so `--help` stays instant.
READERS: dict[str, Callable] = {
    "sequence": _read_sequence,
    "ml-1m": _read_ml1m,
    "ml-100k": _read_ml100k,
    "amazon": _read_amazon,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "hf": _read_hf,
    "events": _read_events,
}
FORMATS = tuple(READERS)
HF_ONLY = ("split", "hf_config", "titles_config", "hf_cache_dir")


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
    output_dir: str = field(
        default="",
        metadata={
            "help": "Output directory (default: ./prepared/<dataset>); never the current directory or a parent of it.",
            "aliases": ["--out"],
        },
    )
    format: str = field(
        default="",
        metadata={"help": f"Format of custom input files instead of a registered name: {', '.join(FORMATS)}."},
    )
    input: str = field(
        default="",
        metadata={
            "help": "Custom input: interactions file (sequence text, ratings.dat, u.data, reviews JSON lines, CSV, "
            "Parquet, SQLite event log), or for --format hf a save_to_disk folder or a dataset id in the local HF cache."
        },
    )
    titles: str = field(
        default="",
        metadata={
            "help": "Custom input: titles file (titles TSV, movies.dat, u.item, Amazon metadata JSON lines), or for "
            "--format hf a metadata dataset (folder or cached id; columns parent_asin/item_id/asin and title)."
        },
    )
    user_col: str = field(default="user_id", metadata={"help": "csv/parquet/hf: user column."})
    item_col: str = field(
        default="",
        metadata={
            "help": "csv/parquet/hf: item column ('' = item_id, else parent_asin, else asin: the first present)."
        },
    )
    time_col: str = field(
        default="timestamp",
        metadata={"help": "csv/parquet/hf: timestamp column ('' = the rows are in chronological order)."},
    )
    title_col: str = field(default="", metadata={"help": "csv/parquet/hf: optional title column of the interactions."})
    sep: str = field(default=",", metadata={"help": "csv: field separator (use '\\t' for TSV)."})
    split: str = field(
        default="",
        metadata={"help": "hf: split of the interactions ('' = the only one besides 'meta', else train, else full)."},
    )
    hf_config: str = field(
        default="", metadata={"help": "hf: config of a cached Hub dataset, e.g. raw_review_All_Beauty."}
    )
    titles_config: str = field(
        default="", metadata={"help": "hf: config of the --titles Hub dataset, e.g. raw_meta_All_Beauty."}
    )
    hf_cache_dir: str = field(
        default="", metadata={"help": "hf: datasets cache to look ids up in ('' = $HF_DATASETS_CACHE or its default)."}
    )
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
    cold_items: float = field(
        default=0.0,
        metadata={
            "help": "Cold-start protocol: this fraction of the items (in [0, 1), drawn with --cold_seed) is new: left "
            "out of every training part and history, kept in the catalog and as valid/test targets (0 = off)."
        },
    )
    cold_seed: int = field(default=0, metadata={"help": "Seed of the --cold_items draw."})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace an existing output directory; only one written by llmrec prepare that holds nothing else."
        },
    )

    def __post_init__(self):
        if bool(self.dataset) == bool(self.format):
            raise ConfigError(
                "give either a registered data set name (dataset) or --format with --input, not both/neither"
            )
        if self.format and self.format not in FORMATS:
            raise ConfigError(f"format: expected one of {FORMATS}, got {self.format!r}")
        if self.format and not self.input:
            raise ConfigError("input: --format needs --input FILE")
        stray = [name for name in HF_ONLY if getattr(self, name) and self.format != "hf"]
        if stray:
            raise ConfigError(f"{stray[0]}: only used with --format hf (format is {self.format or self.dataset!r})")
        if self.kcore < 0:
            raise ConfigError(f"kcore: expected >= 0, got {self.kcore}")
        if self.min_seq_len < 3:
            raise ConfigError(
                f"min_seq_len: expected >= 3 (leave-one-out needs train, valid and test items), got {self.min_seq_len}"
            )
        if not 0.0 <= self.cold_items < 1.0:  # also refuses nan
            raise ConfigError(f"cold_items: expected a fraction in [0, 1), got {self.cold_items}")
        if self.cold_seed and not self.cold_items:
            raise ConfigError("cold_seed: only used with --cold_items FRAC > 0")
        if self.sep == "\\t":
            self.sep = "\t"


def read_raw(cfg: PrepareConfig):
    """The ``RawLog`` of a registered data set, or of the custom input by ``READERS[cfg.format]``."""
    if cfg.dataset:
        from llmrec.data.registry import default_data_dir, read_registered

        return read_registered(cfg.dataset, cfg.data_dir or default_data_dir(), encoding=cfg.encoding or None)
    return READERS[cfg.format](cfg)


def dataset_name(cfg: PrepareConfig) -> str:
    """The data set's name: the registered name, an hf config, else the input's file or folder name."""
    if cfg.dataset:
        return cfg.dataset
    if cfg.format == "hf" and cfg.hf_config:
        return cfg.hf_config
    return Path(cfg.input.rstrip("/")).stem or "custom"


def format_stats(stats: dict) -> str:
    sl = stats["seq_len"]
    lines = [
        f"data set      {stats['dataset']}",
        f"users         {stats['users']:,}",
        f"items         {stats['items']:,}  ({stats['items_with_title']:,} with a non-empty title)",
        f"interactions  {stats['interactions']:,}  (density {stats['density']:.5f})",
        f"seq length    min {sl['min']}, mean {sl['mean']:.2f}, max {sl['max']}",
    ]
    if "titles_file" in stats:
        lines.append(
            f"titles        {stats['titles_matched']:,} items matched by {stats['titles_file']} "
            f"({stats['titles_entries']:,} entries)"
        )
    for name, rem in stats.get("removed_by_filter", {}).items():
        lines.append(
            f"filter {name:<12} removed {rem['users']:,} users, {rem['items']:,} items, {rem['interactions']:,} interactions"
        )
    if cold := stats.get("cold_items"):
        lines.append(
            f"cold items    {cold['count']:,} (fraction {cold['fraction']}, seed {cold['seed']}): cold targets "
            f"{cold['valid_targets']:,} valid, {cold['test_targets']:,} test; "
            f"{cold['training_interactions_removed']:,} training interactions removed, "
            f"{cold['users_without_training_items']:,} users left without a training item"
        )
    return "\n".join(lines)


def recorded_options(cfg: PrepareConfig) -> dict:
    """The options ``meta.json`` records; without cold items the cold fields are left out, so a data set prepared
    without them is byte-identical to one prepared before they existed."""
    options = asdict(cfg)
    if not cfg.cold_items:
        del options["cold_items"], options["cold_seed"]
    return options


def notes(stats: dict, meta: dict) -> list[str]:
    """Warnings and notes about the inputs, one line each: titles that match nothing, Latin-1 fallbacks."""
    from llmrec.data.readers import LATIN1_FALLBACK

    lines = [f"warning: {w}" for w in stats.get("warnings", [])]
    for path, how in meta.get("encodings", {}).items():
        if how == LATIN1_FALLBACK:
            lines.append(f"note: {path} is not valid UTF-8; it was read as Latin-1 (--encoding chooses another)")
    return lines


def main(argv: list[str]) -> int:
    if argv and not argv[0].startswith("-"):
        argv = ["--dataset", argv[0], *argv[1:]]
    cfg = parse_config(PrepareConfig, argv, prog="llmrec prepare", description=HELP)
    from llmrec.data.dataset import save_prepared
    from llmrec.data.outdir import check_output_dir
    from llmrec.data.processing import build_prepared

    t0 = time.time()
    name = dataset_name(cfg)
    out = Path(cfg.output_dir or Path("prepared") / name)
    check_output_dir(out, overwrite=cfg.overwrite)  # refuse a bad --out before a long read; nothing is touched
    log = read_raw(cfg)
    data = build_prepared(log, kcore_k=cfg.kcore, dedup=cfg.dedup, min_seq_len=cfg.min_seq_len, dataset=name,
                          options=recorded_options(cfg), cold_items=cfg.cold_items, cold_seed=cfg.cold_seed)  # fmt: skip
    save_prepared(data, out, overwrite=cfg.overwrite)
    for line in notes(data.stats, data.meta):
        print(line, file=sys.stderr)
    print(format_stats(data.stats))
    print(f"wrote {out} in {time.time() - t0:.1f}s")
    summary = {k: data.stats[k] for k in ("users", "items", "interactions", "items_with_title")}
    if cold := data.stats.get("cold_items"):
        summary.update(cold_items=cold["count"], cold_valid_targets=cold["valid_targets"],
                       cold_test_targets=cold["test_targets"])  # fmt: skip
    print(json.dumps(summary))
    return 0
