"""`llmrec <command> ...`: dispatch to ``llmrec.commands.<module>.main(argv)``, nothing else."""

from __future__ import annotations

import difflib
import importlib
import os
import sys

from llmrec.errors import UserError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("llmrec.commands.prepare", "Read a raw data set, filter, split leave-one-out, write a prepared dir."),
    "stats": ("llmrec.commands.stats", "Print the statistics of a prepared data set."),
    "baseline": (
        "llmrec.commands.baseline",
        "Train and evaluate a sequence baseline (pop, gru4rec, sasrec, bert4rec).",
    ),
    "train": ("llmrec.commands.train", "LoRA fine-tune a causal LM to generate the next item token."),
    "evaluate": ("llmrec.commands.evaluate", "Evaluate a run directory with the shared full-ranking evaluator."),
    "recommend": ("llmrec.commands.recommend", "Recommend the next items for a history."),
    "ensemble": ("llmrec.commands.ensemble", "Sum other runs' scores (weights selected on validation) as one run."),
    "compare": ("llmrec.commands.compare", "Compare run directories: Markdown table, JSON and a PNG chart."),
    "serve": ("llmrec.commands.serve", "Serve a run over HTTP (recommendations + feedback log)."),
    "benchmark": ("llmrec.commands.benchmark", "Equal-budget tuning on full validation, seeds, one report."),
}


def _usage() -> str:
    lines = ["usage: llmrec <command> [options] [--debug]   (llmrec <command> --help for a command's options)", "",
             "commands:"]  # fmt: skip
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # --debug (anywhere) or LLMREC_DEBUG=1: a user error keeps its traceback
    debug = "--debug" in argv or os.environ.get("LLMREC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from llmrec import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"llmrec: error: unknown command {name!r}; {hint}commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except (UserError, OSError) as e:
        if debug:
            raise
        print(f"llmrec {name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"llmrec {name}: interrupted", file=sys.stderr)
        return 130


def _one_line(error: BaseException) -> str:
    """The error's message on one line (an OSError from the system as 'what: path')."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
