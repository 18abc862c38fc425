"""The errors sesrx raises.

    SesrxError
    ├── ConfigError         a configuration file that cannot be used
    ├── StartError          the server cannot listen where it was asked to
    ├── ObjectNotFoundError a bucket has no object under the key asked for
    └── ActionError         an action that could not do its work
        └── StorageError    a bucket or the data folder could not be written
                            or read (SMTP 451)

Only the CLI turns these into exit codes and only the SMTP layer turns them
into replies.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ActionError",
    "ConfigError",
    "ObjectNotFoundError",
    "SesrxError",
    "StartError",
    "StorageError",
    "describe_error",
]


class SesrxError(Exception):
    """Base class of every error sesrx raises on purpose."""


class ConfigError(SesrxError):
    """A configuration that cannot be loaded, with where and why."""

    def __init__(self, source: Path | str, key_path: str, problem: str) -> None:
        self.source = str(source)
        self.key_path = key_path
        self.problem = problem
        where = f"{self.source}: {key_path}" if key_path else self.source
        super().__init__(f"{where}: {problem}")


class StartError(SesrxError):
    """The listener could not be opened."""


class ObjectNotFoundError(SesrxError):
    """A bucket, local or remote, holds no object under the key asked for."""


class ActionError(SesrxError):
    """A receipt rule action that failed."""


class StorageError(ActionError):
    """A bucket or the data folder failed us; a sender must retry."""


def describe_error(exc: BaseException) -> str:
    """Return ``Type: message`` for any exception, even one with broken text."""
    try:
        text = str(exc)
    except Exception:
        text = "(the exception's text could not be read)"
    return f"{type(exc).__name__}: {text}".encode("utf-8", "backslashreplace").decode()
