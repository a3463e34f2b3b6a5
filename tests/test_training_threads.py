"""textless.training.threads.prefetch: same items in order, errors at their place, and stop() leaves no thread behind
(a daemon thread still inside torch at interpreter exit aborts the process)."""

import threading
import time

import pytest

from textless.training.threads import prefetch


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


def test_prefetch_gives_the_items_in_order_and_stop_joins_the_thread():
    def slow_items():
        for i in range(1000):
            time.sleep(0.002)  # stop() arrives while an item is being made
            yield i

    stream, stop = prefetch(slow_items(), depth=2, name="test-prefetch-order")
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert _threads("test-prefetch-order")
    stop()
    assert not _threads("test-prefetch-order")


def test_prefetch_reraises_the_error_where_it_happened_and_stops_with_a_full_queue():
    def failing():
        yield 1
        yield 2
        raise ValueError("bad batch 3")

    stream, stop = prefetch(failing(), depth=1, name="test-prefetch-error")
    assert next(stream) == 1 and next(stream) == 2
    with pytest.raises(ValueError, match="bad batch 3"):
        next(stream)
    stop()
    assert not _threads("test-prefetch-error")

    # the producer is blocked on a full queue (nobody consumes): stop() still ends it
    stream, stop = prefetch(iter(range(100)), depth=1, name="test-prefetch-full")
    time.sleep(0.05)
    stop()
    assert not _threads("test-prefetch-full")


def test_depth_zero_is_inline():
    items = iter([1, 2])
    stream, stop = prefetch(items, depth=0)
    assert stream is items
    stop()


def test_a_process_that_stops_its_prefetch_exits_cleanly(tmp_path):
    """The producer is inside torch when the consumer stops and the interpreter exits: exit status 0, not SIGABRT."""
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(
        "import torch\n"
        "from textless.training.threads import prefetch\n"
        "def batches():\n"
        "    x = torch.randn(256, 256)\n"
        "    while True:\n"
        "        for _ in range(50):\n"
        "            x = torch.tanh(x @ x)\n"
        "        yield x.sum()\n"
        "stream, stop = prefetch(batches(), depth=4)\n"
        "[next(stream) for _ in range(3)]\n"
        "stop()\n")
    for _ in range(3):
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
