"""Config parsing shared by every command: one dataclass per command, YAML mirrors it, CLI overrides YAML.

Protocol:
    ``parse_config(MyConfig, argv)`` accepts ``--config file.yaml`` whose top-level keys must be field names of
    ``MyConfig`` (unknown keys raise ``ConfigError`` naming the file and the key); values from YAML become the
    parser defaults, so any ``--field value`` on the command line wins. Dataclass ``__post_init__`` validation
    runs on the final, merged values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or option is invalid; the message names the file/field and what was expected."""


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def make_parser(config_cls: type, prog: str | None = None, description: str | None = None):
    """An ``HfArgumentParser`` for ``config_cls`` plus a ``--config`` YAML option."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(config_cls, prog=prog, description=description)
    parser.add_argument("--config", type=str, default=None, help="YAML file whose keys mirror the options.")
    return parser


def parse_config(
    config_cls: type[T], argv: list[str] | None, prog: str | None = None, description: str | None = None
) -> T:
    """Parse ``argv`` (with optional ``--config`` YAML) into an instance of ``config_cls``.

    Raises:
        ConfigError: unknown YAML key, or a field rejected by the dataclass' validation.
    """
    parser = make_parser(config_cls, prog=prog, description=description)
    argv = list(argv or [])
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        values = load_yaml(pre.config)
        names = {f.name for f in dataclasses.fields(config_cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{pre.config}: unknown key(s) {unknown}; valid keys are the fields of {config_cls.__name__}: "
                f"{sorted(names)}"
            )
        parser.set_defaults(**values)
    ns = parser.parse_args(argv)
    kwargs = {f.name: getattr(ns, f.name) for f in dataclasses.fields(config_cls) if f.init}
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from e


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same directory + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Save the fully resolved config as YAML (keys mirror the dataclass fields)."""
    import yaml

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
