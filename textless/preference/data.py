"""The preference dataset: what `textless preference-pairs` writes and `textless dpo` reads.

A directory (written atomically)::

    meta.json       {"format": "textless.preference_pairs", "version": 1,
                     "units": <UnitIdentity dict of every unit list below>,
                     "source": {...how the pairs were made: lm, sampling, judges, rule, selection...},
                     "num_pairs": N,
                     "ref": null | {"model": <fingerprint>, "add_bos": true, "add_eos": true, "max_length": ...}}
    pairs.jsonl     one pair per line (the `Pair` fields; see below)
    dataset/        the same rows as a Hugging Face `datasets` directory (``datasets.load_from_disk``); scores
                    are JSON strings there (their keys vary with the judges)
    candidates.jsonl  (pair generation only) every continuation with its transcript and scores, chosen or not

A pair: ``prompt_units`` (the cropped prompt), ``chosen_units`` / ``rejected_units`` (continuations; unit ids, not
LM tokens: the LM's vocabulary adds bos / eos), optional transcripts, audio paths (relative to the directory or
absolute), each side's judge scores and combined ``score``, and optional reference log-probs (``ref_chosen_logps`` /
``ref_rejected_logps``: summed log-probability of the continuation tokens + eos under the reference model, the
quantity DPO needs; `textless dpo` fills them once when ``reference=precomputed``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from textless.data.identity import UnitIdentity
from textless.errors import TextlessError
from textless.utils.atomic import atomic_directory
from textless.utils.versioned import artifact

PAIRS = artifact("textless.preference_pairs", 1, "a preference dataset")
META_FILE = "meta.json"
PAIRS_FILE = "pairs.jsonl"
CANDIDATES_FILE = "candidates.jsonl"
HF_DIR = "dataset"


@dataclass
class Pair:
    id: str
    prompt_id: str
    prompt_units: list[int]
    chosen_units: list[int]
    rejected_units: list[int]
    prompt_text: str | None = None
    chosen_text: str | None = None
    rejected_text: str | None = None
    prompt_audio: str | None = None
    chosen_audio: str | None = None
    rejected_audio: str | None = None
    chosen_scores: dict[str, float] = field(default_factory=dict)
    rejected_scores: dict[str, float] = field(default_factory=dict)
    chosen_score: float | None = None
    rejected_score: float | None = None
    ref_chosen_logps: float | None = None
    ref_rejected_logps: float | None = None

    @property
    def margin(self) -> float | None:
        if self.chosen_score is None or self.rejected_score is None:
            return None
        return self.chosen_score - self.rejected_score

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> Pair:
        known = {f.name for f in fields(cls)}
        try:
            pair = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise TextlessError(f"{where}: not a preference pair ({e})") from None
        for name in ("prompt_units", "chosen_units", "rejected_units"):
            value = getattr(pair, name)
            if not isinstance(value, list) or not all(isinstance(u, int) and u >= 0 for u in value):
                raise TextlessError(f"{where}: {name} must be a list of non-negative unit ids")
        if not pair.chosen_units or not pair.rejected_units:
            raise TextlessError(f"{where}: pair {pair.id!r} has an empty chosen or rejected continuation")
        return pair


@dataclass
class PreferenceData:
    """A preference dataset in memory."""

    units: UnitIdentity
    pairs: list[Pair]
    source: dict[str, Any] = field(default_factory=dict)
    ref: dict[str, Any] | None = None
    directory: Path | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def audio_path(self, path: str | None) -> Path | None:
        """A pair's audio path as a path (relative ones are relative to the dataset directory)."""
        if path is None:
            return None
        p = Path(path)
        return p if p.is_absolute() or self.directory is None else self.directory / p

    def fingerprint(self) -> str:
        """A hash of the pairs' units (what DPO trains on), for resume checks."""
        import hashlib

        digest = hashlib.blake2b(digest_size=8)
        for p in self.pairs:
            digest.update(json.dumps([p.id, p.prompt_units, p.chosen_units, p.rejected_units]).encode())
        return digest.hexdigest()


def write_pairs(directory: str | Path, data: PreferenceData, *, candidates: Sequence[dict] | None = None,
                overwrite: bool = False, extra_files: dict[str, Path] | None = None) -> Path:
    """Write `data` as a preference dataset directory (atomically; `extra_files`: name -> a file or directory
    hard-linked / copied in, e.g. the audio)."""
    import shutil

    directory = Path(directory)
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        meta = {"units": data.units.to_dict(), "source": data.source, "num_pairs": len(data), "ref": data.ref}
        (tmp / META_FILE).write_text(PAIRS.dumps(meta), encoding="utf-8")
        rows = [json_safe(p.to_dict()) for p in data.pairs]
        with open(tmp / PAIRS_FILE, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in rows)
        if candidates is not None:
            with open(tmp / CANDIDATES_FILE, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(json_safe(c), allow_nan=False) + "\n" for c in candidates)
        _write_hf(tmp / HF_DIR, data.pairs)
        for name, src in (extra_files or {}).items():
            if src.is_dir():
                shutil.copytree(src, tmp / name, copy_function=_link_or_copy)
            elif src.exists():
                _link_or_copy(src, tmp / name)
    return directory


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (a NaN score, a -inf combined score) as None: standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _link_or_copy(src, dst) -> None:
    import os
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_hf(directory: Path, pairs: Sequence[Pair]) -> None:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    columns: dict[str, list] = {f.name: [] for f in fields(Pair)}
    for p in pairs:
        for name, column in columns.items():
            value = getattr(p, name)
            column.append(json.dumps(json_safe(value)) if name.endswith("_scores") else json_safe(value))
    shown = is_progress_bar_enabled()
    disable_progress_bar()  # a bar for a save that takes milliseconds
    try:
        Dataset.from_dict(columns).save_to_disk(str(directory))
    finally:
        if shown:
            enable_progress_bar()


def read_pairs(directory: str | Path) -> PreferenceData:
    """Read a preference dataset directory (or a ``pairs.jsonl`` file beside its ``meta.json``)."""
    path = Path(directory)
    if path.is_file():
        path = path.parent
    meta = PAIRS.read_dir(path, META_FILE)
    jsonl = path / PAIRS_FILE
    if not jsonl.is_file():
        raise TextlessError(f"preference dataset '{path}': {PAIRS_FILE} is missing")
    pairs = []
    for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise TextlessError(f"{jsonl}:{n}: not JSON ({e})") from None
        pairs.append(Pair.from_dict(row, where=f"{jsonl}:{n}"))
    return PreferenceData(units=UnitIdentity.from_dict(meta["units"]), pairs=pairs, source=meta.get("source") or {},
                          ref=meta.get("ref"), directory=path)
