"""Exceptions meant for users: the CLI prints their message on one line and exits non-zero (no traceback).

Raise a `TextlessError` subclass for anything caused by the user's input (a bad file, a wrong option); let real bugs
raise ordinary exceptions so they keep their traceback.
"""

from __future__ import annotations

from pathlib import Path


class TextlessError(Exception):
    """A user-facing error. The message names the file/option and the problem."""


class AudioError(TextlessError):
    """An audio file cannot be used. `path` is the file; `reason` says why."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"audio file '{self.path}': {reason}")


class FormatError(TextlessError):
    """A data file (manifest, unit dataset, checkpoint...) is malformed. `line` is 1-based when known."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


class ConfigError(TextlessError):
    """A configuration value or CLI option is invalid."""
