"""Config parsing shared by every command: one dataclass per command, YAML mirrors it, CLI overrides YAML.

Protocol:
    ``parse_config(MyConfig, argv)`` accepts ``--config file.yaml`` whose top-level keys must be field names of
    ``MyConfig`` (unknown keys raise ``ConfigError`` naming the file and the key). Each YAML value is checked
    against its field's type (``check_yaml_values``: the message names the file, the key and the expected type),
    then becomes a parser default, so any ``--field value`` on the command line wins. Dataclass ``__post_init__``
    validation runs on the final, merged values. Every failure, a bad command-line option included, is a one-line
    ``ConfigError`` (never argparse's usage dump and exit), which ``llmrec`` prints and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from llmrec.errors import ConfigError
from llmrec.files import atomic_write_text

__all__ = ["ConfigError", "check_yaml_values", "load_yaml", "make_parser", "parse_config", "save_config"]

T = TypeVar("T")


def _unique_key_loader():
    """A ``yaml.SafeLoader`` that refuses a key repeated in one mapping (PyYAML keeps the last one silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (a key may appear once per mapping)", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_unique_key_loader()) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError(f"{path}: invalid YAML: {where}{what}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


# ---- YAML values against the dataclass field types ----------------------------------------------------------------

_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _optional_inner(tp) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None`` / ``Optional[X]``, else ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(tp)):
            return args[0], True
    return tp, False


def _describe(tp) -> str:
    inner, optional = _optional_inner(tp)
    if typing.get_origin(inner) is list:
        (elem,) = typing.get_args(inner) or (Any,)
        text = f"a list of {_PLURALS.get(elem, 'values')}"
    else:
        text = _TYPE_NAMES.get(inner, getattr(inner, "__name__", str(inner)))
    return f"{text} or null" if optional else text


def _yaml_kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


class _Mismatch(Exception):
    pass


def _coerce_scalar(value, tp):
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML reads `1e-3` (no dot) as a string: accept what float() reads
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # a type this checker does not know: leave it to the parser and __post_init__
        return value
    raise _Mismatch


def _coerce(value, tp):
    inner, optional = _optional_inner(tp)
    if value is None:
        if optional:
            return None
        raise _Mismatch
    if typing.get_origin(inner) is list:
        (elem,) = typing.get_args(inner) or (Any,)
        if not isinstance(value, list) or any(v is None for v in value):
            raise _Mismatch
        return [_coerce_scalar(v, elem) for v in value]
    return _coerce_scalar(value, inner)


def check_yaml_values(config_cls: type, values: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """``values`` read from the YAML file ``path``, checked against the field types of ``config_cls``.

    Accepted: ``int``, ``float`` (an integer too), ``bool``, ``str``, ``X | None`` (``null``), ``list[X]``; a
    boolean is never an integer or a number. Returns the values with integers for float fields made floats.

    Raises:
        ConfigError: an unknown key, or a value of the wrong type; the message names the file, the key and the
            expected type.
    """
    hints = typing.get_type_hints(config_cls)
    names = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(values) - names, key=str)
    if unknown:
        close = {k: difflib.get_close_matches(str(k), names, n=1) for k in unknown}
        suggestions = "".join(f" ({k!r}: did you mean {c[0]!r}?)" for k, c in close.items() if c)
        raise ConfigError(
            f"{path}: unknown key(s) {unknown}{suggestions}; valid keys are the fields of {config_cls.__name__}: "
            f"{sorted(names)}"
        )
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _coerce(value, hints[key])
        except _Mismatch:
            shown = (
                "" if value is None else " " + (repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...")
            )
            raise ConfigError(
                f"{path}: {key}: expected {_describe(hints[key])}, got {_yaml_kind(value)}{shown}"
            ) from None
    return checked


# ---- the parser ---------------------------------------------------------------------------------------------------


@functools.cache
def _parser_class():
    """``HfArgumentParser`` whose errors are one-line ``ConfigError``s (argparse would print usage and exit)."""
    from transformers import HfArgumentParser

    class ConfigParser(HfArgumentParser):
        def error(self, message: str):
            hint = ""
            if message.startswith("unrecognized arguments:"):
                options = [s for action in self._actions for s in action.option_strings]
                unknown = [a.split("=", 1)[0] for a in message.split(":", 1)[1].split() if a.startswith("-")]
                close = {a: difflib.get_close_matches(a, options, n=1) for a in unknown}
                hint = "".join(f"; did you mean {c[0]}?" for c in close.values() if c)
            raise ConfigError(f"{message}{hint} (see `{self.prog} --help`)")

    return ConfigParser


def _none_or(convert):
    """``convert``, but ``none``/``null`` give ``None`` (an Optional option can be unset from the command line)."""

    def parse(text: str):
        return None if text.strip().lower() in ("none", "null") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid int value: ..."
    return parse


def make_parser(config_cls: type, prog: str | None = None, description: str | None = None):
    """An ``HfArgumentParser`` for ``config_cls`` plus a ``--config`` YAML option; errors raise ``ConfigError``.

    An ``X | None`` option also takes ``none`` on the command line.
    """
    parser = _parser_class()(config_cls, prog=prog, description=description)
    hints = typing.get_type_hints(config_cls)
    for action in parser._actions:
        if action.dest in hints and _optional_inner(hints[action.dest])[1] and action.type in (int, float):
            action.type = _none_or(action.type)
    parser.add_argument("--config", type=str, default=None, help="YAML file whose keys mirror the options.")
    return parser


def parse_config(
    config_cls: type[T], argv: list[str] | None, prog: str | None = None, description: str | None = None
) -> T:
    """Parse ``argv`` (with optional ``--config`` YAML) into an instance of ``config_cls``.

    Raises:
        ConfigError: a bad or unknown option, an unknown YAML key or a YAML value of the wrong type, or a field
            rejected by the dataclass' validation; one line naming the option, key or file.
    """
    parser = make_parser(config_cls, prog=prog, description=description)
    argv = list(argv or [])
    pre, _ = parser.parse_known_args(argv)
    values: dict[str, Any] = {}
    if pre.config:
        values = check_yaml_values(config_cls, load_yaml(pre.config), pre.config)
        parser.set_defaults(**values)
    ns = parser.parse_args(argv)
    kwargs = {f.name: getattr(ns, f.name) for f in dataclasses.fields(config_cls) if f.init}
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as e:
        message = str(e)
        # "field: ..." about a value that came from the YAML file: say which file
        name = message.split(":", 1)[0]
        if name in values and kwargs.get(name) == values[name]:
            message = f"{pre.config}: {message}"
        if isinstance(e, ConfigError) and message == str(e):
            raise
        raise ConfigError(message) from e


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Save the fully resolved config as YAML (keys mirror the dataclass fields)."""
    import yaml

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
