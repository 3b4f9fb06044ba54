"""Benchmark tables inside Markdown files, rendered from a committed report JSON (``llmrec benchmark --render``).

A block is the lines between two marker comments, for example in README.md::

    <!-- benchmark:begin docs/benchmarks/beauty/report.json -->
    ...generated...
    <!-- benchmark:end -->

The path (relative to the repository root, the directory ``render_files`` is given) names the report; an optional
second word picks the rendering, ``llmrec.benchmark.render.VIEWS`` (default ``summary``):
``<!-- benchmark:begin docs/benchmarks/beauty/report.json datasets -->``. Rendering replaces what is between the
markers by a blank line, the view's Markdown and a blank line, so a table is never typed by hand; ``check`` compares
instead of writing, so a test (or CI) fails when a hand edit or a new report left a block behind.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from llmrec.benchmark.render import VIEWS
from llmrec.errors import ConfigError, DataError
from llmrec.files import atomic_write_text, read_json

BEGIN = re.compile(r"<!-- benchmark:begin (?P<source>\S+)(?: (?P<view>\S+))? -->")
END = "<!-- benchmark:end -->"
DEFAULT_VIEW = "summary"


@dataclass(frozen=True)
class Block:
    """One marked block: where it is and what it should hold."""

    file: str  # the Markdown file as given
    line: int  # 1-based line of the begin marker
    source: str  # the report path written in the marker
    view: str
    start: int  # index of the first line between the markers
    stop: int  # index of the end marker

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Outcome:
    """What ``render_files`` found: every block, those that differed (before rewriting) and the files written."""

    blocks: list[Block]
    stale: list[tuple[Block, str]]  # (block, "+A -R lines": lines the rendering adds / removes)
    written: list[str]

    def summary(self, check: bool) -> str:
        """One line: how many blocks were up to date, rewritten, or (with ``check``) differ and where."""
        if not self.blocks:
            return "no benchmark blocks (<!-- benchmark:begin REPORT.json -->) found"
        if not self.stale:
            return f"{len(self.blocks)} benchmark block(s) match their reports"
        where = ", ".join(f"{b.where} ({b.source}: {diff})" for b, diff in self.stale)
        if check:
            return (f"{len(self.stale)} of {len(self.blocks)} benchmark block(s) differ from their reports: {where}; "
                    "`llmrec benchmark --render` rewrites them")  # fmt: skip
        return f"rewrote {len(self.stale)} of {len(self.blocks)} benchmark block(s): {where}"


def find_blocks(lines: list[str], file: str) -> list[Block]:
    """The marked blocks of a file's ``lines``, in order (markers inside a fenced code block are text, not blocks).

    Raises:
        DataError: a begin marker without its end (or inside another block), an end without a begin, or an unknown
            view; the message names the file and line.
    """
    blocks, open_at, fenced = [], None, False
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith(("```", "~~~")):
            fenced = not fenced
        match = None if fenced else BEGIN.fullmatch(text)
        if match:
            if open_at is not None:
                raise DataError(f"{file}:{i + 1}: a benchmark:begin inside the block opened on line {open_at[0] + 1}")
            view = match["view"] or DEFAULT_VIEW
            if view not in VIEWS:
                raise DataError(f"{file}:{i + 1}: unknown view {view!r}; expected one of {sorted(VIEWS)}")
            open_at = (i, match["source"], view)
        elif text == END and not fenced:
            if open_at is None:
                raise DataError(f"{file}:{i + 1}: benchmark:end without a benchmark:begin")
            begin, source, view = open_at
            blocks.append(Block(file, begin + 1, source, view, begin + 1, i))
            open_at = None
    if open_at is not None:
        raise DataError(f"{file}:{open_at[0] + 1}: benchmark:begin without a benchmark:end ({END})")
    return blocks


def render_block(block: Block, root: Path) -> list[str]:
    """The lines a block should hold: blank, the view of its report, blank.

    Raises:
        ConfigError: the report file does not exist (named with the block's file and line).
    """
    path = root / block.source
    if not path.is_file():
        raise ConfigError(f"{block.where}: the report {block.source} does not exist (under {root})")
    body = VIEWS[block.view](read_json(path)).strip("\n").split("\n")
    return ["", *body, ""]


def render_files(files: list[str], root: str | Path = ".", check: bool = False) -> Outcome:
    """Re-render every block of ``files`` (paths relative to ``root``) from the report it names.

    Args:
        files: Markdown files; each is rewritten atomically, and only when one of its blocks changed.
        root: the repository root: ``files`` and every marker's report path are relative to it.
        check: compare only; write nothing.

    Returns:
        The blocks found and those whose content differed from their rendering.
    """
    root = Path(root)
    found, stale, written = [], [], []
    for name in files:
        lines = (root / name).read_text(encoding="utf-8").split("\n")
        blocks = find_blocks(lines, name)
        found += blocks
        out, pos = [], 0
        for block in blocks:
            want = render_block(block, root)
            have = lines[block.start : block.stop]
            if have != want:
                marks = [d[0] for d in difflib.ndiff(have, want)]
                stale.append((block, f"+{marks.count('+')} -{marks.count('-')} lines"))
            out += lines[pos : block.start] + want
            pos = block.stop
        out += lines[pos:]
        if out != lines and not check:
            atomic_write_text(root / name, "\n".join(out))
            written.append(name)
    return Outcome(found, stale, written)
