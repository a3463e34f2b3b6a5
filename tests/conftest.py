"""Shared fixtures."""

from __future__ import annotations

import logging
import os

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


def require_tts(available: bool, reason: str) -> None:
    """Skip a test whose offline TTS engine is missing; in CI (``TEXTLESS_REQUIRE_TTS=1``, set by .ci/run after it
    installs the engines) fail instead, so a missing install step cannot hide behind a skip."""
    if available:
        return
    if os.environ.get("TEXTLESS_REQUIRE_TTS") == "1":
        pytest.fail(f"{reason} (TEXTLESS_REQUIRE_TTS=1: the engines should have been installed by .ci/run)")
    pytest.skip(reason)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny models and
    small windows run many times slower with 2 threads on a loaded 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
