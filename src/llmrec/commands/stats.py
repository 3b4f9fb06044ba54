"""`llmrec stats DIR`: print the statistics of a prepared data set (and how long loading took)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

from llmrec.config import parse_config

HELP = "Print the statistics of a prepared data set."


@dataclass
class StatsConfig:
    data: str = field(
        default="", metadata={"help": "Prepared data set directory (also the first positional argument)."}
    )
    json: bool = field(default=False, metadata={"help": "Print stats.json instead of the table."})


def main(argv: list[str]) -> int:
    if argv and not argv[0].startswith("-"):
        argv = ["--data", argv[0], *argv[1:]]
    cfg = parse_config(StatsConfig, argv, prog="llmrec stats", description=HELP)
    from llmrec.commands.prepare import format_stats, notes
    from llmrec.data import load_prepared

    t0 = time.time()
    data = load_prepared(cfg.data)
    if cfg.json:
        print(json.dumps(data.stats, indent=2))
    else:
        for line in notes(data.stats, data.meta):
            print(line, file=sys.stderr)
        print(format_stats(data.stats))
        print(f"loaded in {time.time() - t0:.2f}s")
    return 0
