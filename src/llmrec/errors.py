"""The errors a user can cause. ``llmrec`` prints any of them as one line and exits with code 2 (``cli.py``).

Every message names the file, line, field or option at fault and what was expected. Anything else that escapes a
command is a bug: it keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every expected failure (bad option, bad input file, missing model, refused directory...)."""


class ConfigError(UserError, ValueError):
    """A config file or option is invalid; the message names the file/field and what was expected."""


class DataError(UserError, ValueError):
    """Bad input data or a bad prepared/run directory; the message names the file (and line/field) at fault."""


class PromptError(UserError, ValueError):
    """A template is missing, malformed or unusable; the message names the template and the problem."""


class ModelLoadError(UserError, RuntimeError):
    """The requested model cannot be loaded; the message says which model and what to do."""


class LoraTargetError(UserError, ValueError):
    """No module of the model matches the requested LoRA targets; the message names the architecture."""
