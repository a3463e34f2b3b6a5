"""Sharded jobs: each rank journals its finished work; the last rank to finish merges the shards.

`ShardJournal`: one rank's finished records and failures (append-only `Journal`s) and its "done" mark (the digest of
the run that finished it). `take_merge_lock`: the lock the merging rank takes, so exactly one process publishes the
output.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from textless.utils.runs import Journal

logger = logging.getLogger(__name__)


class ShardJournal:
    """One shard's finished utterances and failures (`Journal`s of JSON lines) and its "done" mark."""

    def __init__(self, parts: Path, rank: int, world_size: int):
        stem = f"part-{rank:05d}-of-{world_size:05d}"
        self.units_path = parts / f"{stem}.jsonl"
        self.failures_path = parts / f"{stem}.failures.jsonl"
        self.done_path = parts / f"{stem}.done"
        self._units, self._failures = Journal(self.units_path), Journal(self.failures_path)
        parts.mkdir(parents=True, exist_ok=True)

    def finished(self) -> list[dict]:
        return self._units.read()

    def failures(self) -> list[dict]:
        return self._failures.read()

    def add(self, records: list[dict]) -> None:
        self._units.add(records)

    def add_failures(self, records: list[dict]) -> None:
        self._failures.add(records)

    def discard(self) -> None:
        """Forget this shard's finished utterances and failures (``restart=true``)."""
        for path in (self.units_path, self.failures_path, self.done_path):
            path.unlink(missing_ok=True)

    def mark_done(self, run: str) -> None:
        """Mark the shard finished by the run `run` (a digest of what it was started with)."""
        self.done_path.write_text(run)

    def done_by(self, run: str) -> bool:
        """Finished by this run? (A shard finished by an earlier run that another rank restarted does not count.)"""
        try:
            return self.done_path.read_text() == run
        except FileNotFoundError:
            return False


def journals_to_merge(parts: Path, world_size: int, run: str, output: Path) -> list[ShardJournal] | None:
    """Every shard's journal when all of them were finished by `run` and this process took the merge lock (it then
    publishes `output`); None otherwise (shards still running, or another process merges)."""
    journals = [ShardJournal(parts, r, world_size) for r in range(world_size)]
    if not all(j.done_by(run) for j in journals):
        logger.info(f"waiting for other shards; the last rank to finish writes {output}")
        return None
    if not take_merge_lock(parts / "merge.lock", output):
        return None
    return journals


def take_merge_lock(lock: Path, output: Path) -> bool:
    """Create `lock` ("host pid") exclusively; False when another live merge holds it or the merge already ran.

    A lock left by a killed process on this host is taken over. A lock of another host cannot be checked from here,
    so it is respected (the message says how to clear it if that merge died).
    """
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileNotFoundError:  # .parts is gone: another rank finished the merge
            logger.info(f"another process already wrote {output}")
            return False
        except FileExistsError:
            try:
                owner = lock.read_text().split()
            except FileNotFoundError:  # released (or removed with .parts) meanwhile
                continue
            host, pid = (owner[0], int(owner[1])) if len(owner) == 2 and owner[1].isdigit() else ("", -1)
            if host and host != socket.gethostname():
                logger.info(f"another process ({host}:{pid}) is writing {output}; if it died, delete {lock} and re-run")
                return False
            if host and _pid_alive(pid):
                logger.info(f"another process ({pid}) is writing {output}")
                return False
            lock.unlink(missing_ok=True)  # stale: a killed merge on this host (or an unreadable lock)
            continue
        os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
        os.close(fd)
        return True
    logger.info(f"could not take {lock}; re-run to write {output}")
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
