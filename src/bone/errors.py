"""The errors a user can fix, and nothing else.

Every exception bone raises for bad input (a config value, a data file, an adapter that does not
fit, a path that is missing or already exists, a missing optional package) is a `BoneError`. Its
message is one line that says what was wrong and how to fix it; the command line prints it as is
and exits with status 1. Anything else that escapes is a bug inside bone and keeps its traceback.

Each class also derives from the built-in type a library caller would expect (ValueError,
FileNotFoundError, ...), so `except ValueError` in user code keeps working.
"""
from __future__ import annotations


class BoneError(Exception):
    """An error the user can fix; the message says what was wrong and how to fix it."""


class ConfigError(BoneError, ValueError):
    """A config value, option or override that is out of range, unknown or contradictory."""


class DataError(BoneError, ValueError):
    """A data file or record that is malformed; the message names the file and the place."""


class AdapterError(BoneError, ValueError):
    """An adapter (files or blocks) that is corrupt, contradictory or does not fit the model."""


class ModelError(BoneError, ValueError):
    """A model (file, layers, state) that bone cannot use as asked."""


class UsageError(BoneError, RuntimeError):
    """A library call made in the wrong state (e.g. `disabled` while merged)."""


class NonFiniteError(BoneError, FloatingPointError):
    """Training produced NaN or inf (loss, gradients or weights); the message names the step and what to try."""


class CorruptFileError(BoneError, ValueError):
    """A file bone wrote earlier (a checkpoint's state, optimizer or RNG file) that is truncated or damaged."""


class MissingPathError(BoneError, FileNotFoundError):
    """A path the user named does not exist."""


class OutputExistsError(BoneError, FileExistsError):
    """An output the user named exists already and would be overwritten."""


class MissingDependencyError(BoneError, ImportError):
    """An optional package is not installed; the message gives the install command."""


def require(module: str, install: str, what: str):
    """Import and return `module`, or raise MissingDependencyError naming `install` for `what`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"{what} needs the `{module}` package: {install}") from None
