"""`llmrec <command> ...`: dispatch to ``llmrec.commands.<module>.main(argv)``, nothing else."""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("llmrec.commands.prepare", "Read a raw data set, filter, split leave-one-out, write a prepared dir."),
    "stats": ("llmrec.commands.stats", "Print the statistics of a prepared data set."),
    "baseline": (
        "llmrec.commands.baseline",
        "Train and evaluate a sequence baseline (pop, gru4rec, sasrec, bert4rec).",
    ),
    "train": ("llmrec.train", "LoRA fine-tune a causal LM to generate the next item token."),
    "evaluate": ("llmrec.commands.evaluate", "Evaluate a run directory with the shared full-ranking evaluator."),
    "recommend": ("llmrec.commands.recommend", "Recommend the next items for a history."),
    "compare": ("llmrec.commands.compare", "Compare run directories: Markdown table, JSON and a PNG chart."),
    "serve": ("llmrec.commands.serve", "Serve a run over HTTP (recommendations + feedback log)."),
}


def _usage() -> str:
    lines = ["usage: llmrec <command> [options]   (llmrec <command> --help for a command's options)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from llmrec import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"llmrec: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    from llmrec.config import ConfigError
    from llmrec.data import DataError

    try:
        return int(module.main(rest) or 0)
    except (ConfigError, DataError) as e:
        print(f"llmrec {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
