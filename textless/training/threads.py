"""Helpers the training engine runs in threads (batch prefetching) and around its loop (deterministic algorithms)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")


def prefetch(iterator: Iterator[T], depth: int, name: str = "textless-batches") -> tuple[Iterator[T], Callable[[], None]]:
    """Run `iterator` in a daemon thread, `depth` items ahead; returns (iterator, stop). ``depth <= 0``: inline.

    An exception raised by `iterator` is re-raised by the consumer at the item where it happened. ``stop()`` waits
    for the thread to finish the item it is making: a daemon thread still inside torch when the interpreter exits is
    killed with ``pthread_exit``, which aborts the process ("terminate called without an active exception").
    """
    if depth <= 0:
        return iterator, lambda: None
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in iterator:
                if not put(("item", item)):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(("error", e))

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()

    def consume() -> Iterator[T]:
        while True:
            kind, value = items.get()
            if kind == "error":
                raise value
            yield value

    def stop_and_join(timeout: float = 60.0) -> None:
        stop.set()
        thread.join(timeout)

    return consume(), stop_and_join


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` inside the block (restored after)."""
    if not enabled:
        yield
        return
    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)
