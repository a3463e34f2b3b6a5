"""Helpers shared by the training loops (unit LM, vocoder): a prefetching thread and deterministic algorithms."""

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

    An exception raised by `iterator` is re-raised by the consumer at the item where it happened.
    """
    if depth <= 0:
        return iterator, lambda: None
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            items.put(("error", e))

    threading.Thread(target=work, name=name, daemon=True).start()

    def consume() -> Iterator[T]:
        while True:
            kind, value = items.get()
            if kind == "error":
                raise value
            yield value

    return consume(), stop.set


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
