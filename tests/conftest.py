"""Shared fixtures."""

from __future__ import annotations

import logging

import pytest


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logs():
    """The messages textless logs (INFO and above, every ``textless.*`` logger) during the test, in order."""
    lines: list[str] = []
    logger = logging.getLogger("textless")
    handler, level = _ListHandler(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
