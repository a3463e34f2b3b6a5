"""Logging: every module logs through ``logging.getLogger(__name__)``; the CLI shows the ``textless`` loggers.

Library code never prints. A program that uses textless as a library sees its warnings (Python's default) and can
show the rest with ``logging.basicConfig(level=logging.INFO)`` or `enable_cli_logging`. The ``textless`` command
calls `enable_cli_logging`: INFO and above of every ``textless.*`` logger go to stdout as plain lines (warnings
prefixed ``warning:``), written through tqdm so that a running progress bar stays intact below them. In a torchrun
job only global rank 0 logs what concerns the whole job (the training engine checks the rank).
"""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

ROOT = "textless"


class _TqdmHandler(logging.Handler):
    """Writes each record on its own line through `tqdm.write` (progress bars are redrawn below it)."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream or sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


def enable_cli_logging(level: int = logging.INFO, stream=None) -> logging.Handler:
    """Show ``textless.*`` records of `level` and above as plain lines on `stream` (default: the current stdout).

    Idempotent: a second call replaces the handler the first one installed. Returns the handler.
    """
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, _TqdmHandler)]:
        logger.removeHandler(old)
    handler = _TqdmHandler(stream)
    handler.setFormatter(_PlainFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
