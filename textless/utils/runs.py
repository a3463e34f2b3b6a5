"""What a resumable run was started with, and the one rule for resuming it: the same inputs and settings, or stop.

A resumable job (tokenize, kmeans, resynth, generate, train, ...) records the settings that change its output and
the identities (fingerprints) of its inputs when it starts. Re-run into the same output, it compares what it is given
now with that record: settings the job can take over (a longer budget, another log interval) apply; any other
difference stops the run with `ResumeMismatchError`, which lists every difference and says how to start over
(``restart=true``, or another output). A partial output without a record (an older textless, another tool) is refused
too. Nothing is merged, nothing is overwritten silently.

Partial work lives in ``<output>.parts/`` (`parts_dir`) as append-only JSON-lines journals (`Journal`): a line is
written and fsynced per finished piece, so a run killed at any point loses at most the piece in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from textless.errors import ConfigError, FormatError
from textless.utils.atomic import TMP_PREFIX
from textless.utils.versioned import artifact


class ResumeMismatchError(ConfigError):
    """An output holds a run started with other inputs or settings than the ones given now."""


class _Absent:
    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()  # a key one side of a comparison does not have


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = (), *,
                one_sided: bool = False) -> list[tuple[str, Any, Any]]:
    """(dotted key, recorded value, current value) of every difference: nested mappings are compared key by key,
    anything else (lists, tuples, None against a mapping...) as a value. A key is ignored when it or one of its
    parents is in `ignore`. A key only one side has counts (its other value `ABSENT`) with `one_sided`; without it
    (checkpoints of an older textless lack newer settings, which keep their defaults) it is skipped."""
    skip = set(ignore)
    out: list[tuple[str, Any, Any]] = []

    def plain(value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    def walk(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str) -> None:
        for key in sorted(set(a) | set(b), key=str):
            name = f"{prefix}{key}"
            if name in skip:
                continue
            if key not in a or key not in b:
                if one_sided:
                    out.append((name, a.get(key, ABSENT), b.get(key, ABSENT)))
            elif isinstance(a[key], Mapping) and isinstance(b[key], Mapping):
                walk(a[key], b[key], name + ".")
            elif plain(a[key]) != plain(b[key]):
                out.append((name, a[key], b[key]))

    walk(recorded, current, "")
    return out


def describe(changes: list[tuple[str, Any, Any]]) -> str:
    """"lr: 0.001 there, 0.1 now; preset: 'tiny' there, 'small' now"."""
    return "; ".join(f"{k}: {old!r} there, {new!r} now" for k, old, new in changes)


def refuse(what: str, changes: list[tuple[str, Any, Any]], how_to_restart: str) -> None:
    """Raise `ResumeMismatchError` listing `changes` (no-op when there are none)."""
    if changes:
        raise ResumeMismatchError(f"{what} was started with different inputs or settings ({describe(changes)}); "
                                  f"resume with the same ones, {how_to_restart}")


RUN_RECORD = artifact("textless.run", 1, "a run record")
RECORD_FILE = "run.json"


def resume_or_record(directory: str | Path, started_with: dict[str, Any], *, what: str, how_to_restart: str,
                     restart: bool = False, filename: str = RECORD_FILE) -> None:
    """The one resume rule for a job's partial output `directory`: when it holds a record (`filename`, default
    ``run.json``; a hidden name where the directory holds the user's outputs) of what the run was started with,
    `started_with` must match it, else `ResumeMismatchError` naming `what` and every difference; when it holds
    files but no record, it is refused as well (nothing says what made them); else the record is written.
    `started_with` holds plain JSON values: input identities and the options that change the output. `restart`:
    write the record without comparing (the caller has discarded the partial output)."""
    directory = Path(directory)
    path = directory / filename
    if not restart:
        if path.is_file():
            recorded = RUN_RECORD.read_json(path)["started_with"]
            refuse(what, differences(recorded, started_with, one_sided=True), how_to_restart)
            return
        # (a concurrent rank's record being written atomically shows as a temporary file: not a foreign file)
        if directory.is_dir() and any(not p.name.startswith(TMP_PREFIX) for p in directory.iterdir()):
            raise ResumeMismatchError(f"{what} holds files but no record of the run that wrote them ({filename}: an "
                                      f"older textless or another tool); {how_to_restart.removeprefix('or ')}")
    directory.mkdir(parents=True, exist_ok=True)
    RUN_RECORD.write_json(path, {"started_with": started_with})


def run_digest(started_with: dict[str, Any]) -> str:
    """A short hash of a run record's content: marks pieces of work as made by this run."""
    return hashlib.blake2b(json.dumps(started_with, sort_keys=True).encode(), digest_size=8).hexdigest()


def parts_dir(output: str | Path) -> Path:
    """Where the partial work of a job writing `output` lives: the sibling ``<output>.parts``."""
    output = Path(output)
    return output.with_name(output.name + ".parts")


class Journal:
    """An append-only JSON-lines file of finished pieces of work: `add` writes and fsyncs whole lines; `read` returns
    the complete ones, cutting off a torn last line (a writer killed mid-line)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)
        records = []
        for number, line in enumerate(data[:end].splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise FormatError(self.path, f"not a JSON line ({e.msg}); delete the partial run (restart=true)",
                                      line=number) from None
        return records

    def add(self, records: list[dict]) -> None:
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())


def module_fingerprint(module: Any, sample: int = 4096) -> str:
    """A short hash of a torch module's weights, for run records: every tensor's name, dtype and shape and an even
    sample of at most `sample` of its values (a full hash of a 7B model would copy 14 GB off the GPU; any training
    step changes the sampled values too)."""
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        values = flat[:: max(1, flat.numel() // sample)].float().cpu().contiguous().numpy()
        digest.update(f"{name}\t{tensor.dtype}\t{tuple(tensor.shape)}\n".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()
