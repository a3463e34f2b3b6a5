"""What a resumable run was started with, and the one rule for resuming it: the same inputs and settings, or stop.

A resumable job (tokenize, kmeans, resynth, generate, train, ...) records the settings that change its output and
the identities (fingerprints) of its inputs when it starts. Re-run into the same output, it compares what it is given
now with that record: settings the job can take over (a longer budget, another log interval) apply; any other
difference stops the run with `ResumeMismatchError`, which lists every difference and says how to start over
(``restart=true``, or another output). Nothing is merged, nothing is overwritten silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from textless.errors import ConfigError
from textless.utils.versioned import artifact


class ResumeMismatchError(ConfigError):
    """An output holds a run started with other inputs or settings than the ones given now."""


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> one level with dotted keys ({"a": {"b": 1}} -> {"a.b": 1}); lists compare as values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ()
                ) -> list[tuple[str, Any, Any]]:
    """(key, recorded value, current value) for every key present in both whose value differs (dotted keys; a key
    is ignored when it or one of its parents is in `ignore`)."""
    skip = set(ignore)
    a, b = flatten(recorded), flatten(current)

    def ignored(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in skip for i in range(1, len(parts) + 1))

    return [(k, a[k], b[k]) for k in sorted(a.keys() & b.keys()) if not ignored(k) and a[k] != b[k]]


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
                     resumable: Iterable[str] = (), restart: bool = False, filename: str = RECORD_FILE) -> bool:
    """The one resume rule for a job's partial output `directory`: when it holds a record (``run.json``) of what the
    run was started with, `started_with` must match it (but for the keys in `resumable`), else
    `ResumeMismatchError` naming `what` and every difference; when it holds none, the record is written (as
    `filename`: a hidden name where the directory holds the user's outputs). Returns
    True when resuming. `started_with` holds plain JSON values: input identities and the options that change the
    output. `restart`: overwrite the record without comparing (the caller discards the partial output)."""
    path = Path(directory) / filename
    if path.is_file() and not restart:
        recorded = RUN_RECORD.read_json(path)["started_with"]
        refuse(what, differences(recorded, started_with, ignore=resumable), how_to_restart)
        return True
    Path(directory).mkdir(parents=True, exist_ok=True)
    RUN_RECORD.write_json(path, {"started_with": started_with})
    return False


def module_fingerprint(module: Any, sample: int = 4096) -> str:
    """A short hash of a torch module's weights, for run records: every tensor's name, dtype and shape and an even
    sample of at most `sample` of its values (a full hash of a 7B model would copy 14 GB off the GPU; any training
    step changes the sampled values too)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        values = flat[:: max(1, flat.numel() // sample)].float().cpu().contiguous().numpy()
        digest.update(f"{name}\t{tensor.dtype}\t{tuple(tensor.shape)}\n".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()
