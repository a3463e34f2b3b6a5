"""Sharded jobs: each rank does its share; the last rank to finish merges the shards.

`ShardJournal` (tokenize, kmeans...): one rank's finished records and failures (append-only `Journal`s) and its
"done" mark (the digest of the run that finished it). `take_merge_lock`: the lock the merging rank takes, so exactly
one process publishes the output.

Builder jobs (`build-dialogues`, `build-lslm`, `build-duplex-s2s`), whose items write their own files: `build_items`
builds one rank's items serially or in a process pool; `write_part` records the rank's statistics of a run in
``<output>/.parts``; `read_parts` / `pooled` give the summary fields once every rank of the run is done. An item's
result is a dict with ``id`` and either ``error`` (it failed: reported and skipped, with its ``voices`` when known)
or its ``audio_seconds`` and ``stages`` (seconds per stage).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from textless.utils.atomic import atomic_write_text
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


# ---------------------------------------------------------------------------------------------------------------------
# builder jobs
# ---------------------------------------------------------------------------------------------------------------------
PARTS = ".parts"

_WORKER: dict[str, Any] = {}


def _init_worker(build: Callable[..., dict[str, Any]], args: tuple) -> None:
    _WORKER.update(build=build, args=args)


def _call(build: Callable[..., dict[str, Any]], args: tuple, item: Any) -> dict[str, Any]:
    return build(*args, *item) if isinstance(item, tuple) else build(*args, item)


def _worker_build(item: Any) -> dict[str, Any]:
    return _call(_WORKER["build"], _WORKER["args"], item)


def build_items(build: Callable[..., dict[str, Any]], args: tuple, todo: Sequence[Any], *, num_workers: int,
                desc: str, unit: str, progress: bool) -> list[dict[str, Any]]:
    """``build(*args, *item)`` (``build(*args, item)`` for a non-tuple item) of every item, in order: in a spawned
    process pool of `num_workers` (`build` and `args` must pickle) or in this process."""
    results: list[dict[str, Any]] = []
    with tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress) as bar:
        if num_workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(min(num_workers, len(todo)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker, initargs=(build, args)) as pool:
                for result in pool.map(_worker_build, todo):
                    results.append(result)
                    bar.update()
        else:
            for item in todo:
                results.append(_call(build, args, item))
                bar.update()
    return results


def add_stages(total: dict[str, float], stages: dict[str, float]) -> None:
    """Add `stages` (seconds per stage) into `total`, in place."""
    for name, seconds in stages.items():
        total[name] = total.get(name, 0.0) + seconds


def part_path(output: Path, rank: int, world: int) -> Path:
    return output / PARTS / f"rank-{rank:05d}-of-{world:05d}.json"


def write_part(output: Path, rank: int, world: int, digest: str, results: list[dict[str, Any]], skipped: int,
               wall_start: float, stages: dict[str, float]) -> dict[str, Any]:
    """This rank's statistics of run `digest` (built, skipped, failures, audio and wall seconds, seconds per stage),
    written atomically to ``.parts``; failures are logged. Returns them."""
    failures = [r for r in results if "error" in r]
    for failure in failures:
        voices = f" (voices {', '.join(failure['voices'])})" if failure.get("voices") else ""
        logger.warning(f"{failure['id']} failed and was skipped{voices}: {failure['error']}")
    for result in results:
        add_stages(stages, result.get("stages", {}))
    part = {"run": digest, "rank": rank, "world_size": world, "built": len(results) - len(failures),
            "skipped": skipped, "failures": failures,
            "audio_seconds": sum(r.get("audio_seconds", 0.0) for r in results),
            "wall_seconds": time.perf_counter() - wall_start, "stages": stages}
    atomic_write_text(part_path(output, rank, world), json.dumps(part, indent=1) + "\n")
    return part


def read_parts(output: Path, world: int, digest: str, written_by_last: Path) -> list[dict[str, Any]] | None:
    """Every rank's statistics of run `digest`; None (logged) while some rank is not done."""
    parts = []
    for rank in range(world):
        path = part_path(output, rank, world)
        part = json.loads(path.read_text()) if path.is_file() else None
        if part is None or part["run"] != digest:
            logger.info(f"waiting for rank {rank}: the last rank to finish writes {written_by_last}")
            return None
        parts.append(part)
    return parts


def pooled(parts: list[dict[str, Any]], total_audio_seconds: float) -> dict[str, Any]:
    """The summary fields of all ranks: built, skipped, failures, this run's audio seconds, `total_audio_seconds`
    (of every complete item), wall seconds, real-time factor (audio / wall) and seconds per stage."""
    audio = sum(p["audio_seconds"] for p in parts)
    wall = sum(p["wall_seconds"] for p in parts)
    stages: dict[str, float] = {}
    for part in parts:
        add_stages(stages, part["stages"])
    return {"built": sum(p["built"] for p in parts), "skipped": sum(p["skipped"] for p in parts),
            "failures": [f for p in parts for f in p["failures"]],
            "audio_seconds": round(audio, 3), "total_audio_seconds": round(total_audio_seconds, 3),
            "wall_seconds": round(wall, 3), "real_time_factor": round(audio / wall, 2) if wall > 0 else None,
            "stage_seconds": {k: round(v, 3) for k, v in sorted(stages.items())}}
