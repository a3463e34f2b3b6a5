"""Audio datasets: a directory of audio files or a manifest, with deterministic ids and torchrun-style sharding.

Accepted inputs (`load_manifest`):
- a directory: every audio file below it (sorted); id = path relative to the directory, without extension, with '/'
  separators (e.g. ``spk1/utt_0003``). Two files that differ only by extension are refused (ambiguous id).
- a textless TSV manifest: UTF-8, tab-separated, header line naming the columns, ``path`` required, optional ``id``,
  ``duration`` (seconds), ``speaker``, ``transcript``; any other column is kept in ``AudioItem.extra``. Relative paths
  are relative to the manifest's directory. Missing ids are derived from the path like a directory scan.
- a JSONL manifest: one object per line with the same keys.
- a fairseq wav2vec/HuBERT manifest (``.tsv`` whose first line is the audio root directory and whose rows are
  ``relpath<TAB>num_samples``); durations assume ``fairseq_sample_rate`` (16 kHz, as fairseq does).

`Manifest.shard(rank, world_size)` splits by strided position over the id-sorted items, so every item is in exactly one
shard whatever the world size, and the split does not depend on file-system order.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from textless.errors import ConfigError, FormatError, TextlessError
from textless.utils.atomic import atomic_open

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")
KNOWN_COLUMNS = ("id", "path", "duration", "speaker", "transcript")


@dataclass(frozen=True)
class AudioItem:
    """One utterance. `path` is absolute; `duration` in seconds (None = unknown)."""

    id: str
    path: Path
    duration: float | None = None
    speaker: str | None = None
    transcript: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_record(self, relative_to: Path | None = None) -> dict:
        path = self.path
        if relative_to is not None:
            try:
                path = Path(os.path.relpath(self.path, relative_to))
            except ValueError:  # different drive (Windows): keep absolute
                pass
        record: dict = {"id": self.id, "path": path.as_posix()}
        for key in ("duration", "speaker", "transcript"):
            value = getattr(self, key)
            if value is not None:
                record[key] = round(value, 4) if key == "duration" else value
        record.update(self.extra)
        return record


def derive_id(relative_path: str | Path) -> str:
    """Deterministic utterance id from a path relative to the dataset root: no extension, '/' separators."""
    return Path(relative_path).with_suffix("").as_posix()


class Manifest(Sequence[AudioItem]):
    """An ordered, id-unique list of `AudioItem`s (sorted by id)."""

    def __init__(self, items: Iterable[AudioItem], source: str | Path | None = None):
        self.source = str(source) if source is not None else None
        self.items: list[AudioItem] = sorted(items, key=lambda item: item.id)
        seen: dict[str, AudioItem] = {}
        for item in self.items:
            if item.id in seen:
                raise FormatError(self.source or "<manifest>",
                                  f"duplicate id '{item.id}' ({seen[item.id].path} and {item.path})")
            seen[item.id] = item
        self._by_id = seen

    # Sequence protocol
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return Manifest(self.items[index], source=self.source)
        return self.items[index]

    def __iter__(self) -> Iterator[AudioItem]:
        return iter(self.items)

    def __repr__(self) -> str:
        return f"Manifest({len(self)} items, {len(self.speakers)} speakers, source={self.source!r})"

    def identity(self) -> str:
        """What the dataset is, for run records: "<source>: N utterances (ids <hash of the ids and durations>)"
        (a hash of the manifest's content, not of the audio: reading every file would cost a pass over the data)."""
        digest = hashlib.blake2b(digest_size=6)
        for item in self.items:
            digest.update(f"{item.id}\t{item.duration}\n".encode())
        source = Path(self.source).resolve() if self.source else "(in memory)"  # data/ and ./data are one dataset
        return f"{source}: {len(self)} utterances (ids {digest.hexdigest()})"

    def get(self, item_id: str) -> AudioItem:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise KeyError(f"no utterance '{item_id}' in {self.source or 'manifest'}") from None

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    @property
    def speakers(self) -> list[str]:
        return sorted({item.speaker for item in self.items if item.speaker is not None})

    @property
    def total_duration(self) -> float | None:
        """Seconds, or None if any duration is unknown (see `with_durations`)."""
        if any(item.duration is None for item in self.items):
            return None
        return float(sum(item.duration for item in self.items))  # type: ignore[misc]

    def shard(self, rank: int, world_size: int) -> Manifest:
        """Items ``rank, rank + world_size, ...`` of the id-sorted list: disjoint shards whose union is everything."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        return Manifest(self.items[rank::world_size], source=self.source)

    def filter(self, predicate) -> Manifest:
        return Manifest((item for item in self.items if predicate(item)), source=self.source)

    def with_durations(self) -> Manifest:
        """Fill unknown durations from the audio headers (no decoding)."""
        from textless.audio import audio_info

        items = [item if item.duration is not None else replace(item, duration=audio_info(item.path).duration)
                 for item in self.items]
        return Manifest(items, source=self.source)

    def save(self, path: str | Path) -> Path:
        """Write a TSV (``.tsv``) or JSONL (``.jsonl``) manifest atomically, paths relative to its directory."""
        path = Path(path)
        writer = _WRITERS.get(path.suffix)
        if writer is None:
            raise TextlessError(f"cannot write manifest '{path}': use a .tsv or .jsonl file name")
        with atomic_open(path) as f:
            writer(self, f, path.parent.resolve())
        return path


def _write_tsv(manifest: Manifest, f, root: Path) -> None:
    records = [item.to_record(root) for item in manifest]
    columns = list(KNOWN_COLUMNS)
    extra_columns = sorted({key for record in records for key in record} - set(columns))
    columns = [c for c in columns if any(c in r for r in records) or c in ("id", "path")] + extra_columns
    f.write("\t".join(columns) + "\n")
    for record in records:
        values = [str(record.get(c, "")) for c in columns]
        for column, value in zip(columns, values):
            if "\t" in value or "\n" in value:
                raise TextlessError(f"cannot write '{record['id']}' to a TSV manifest: its {column} holds a tab or "
                                    f"newline (use .jsonl)")
        f.write("\t".join(values) + "\n")


def _write_jsonl(manifest: Manifest, f, root: Path) -> None:
    for item in manifest:
        f.write(json.dumps(item.to_record(root), ensure_ascii=False) + "\n")


_WRITERS = {".tsv": _write_tsv, ".jsonl": _write_jsonl}


def _item_from_record(record: Mapping[str, str], root: Path, where: str, line: int) -> AudioItem:
    if not record.get("path"):
        raise FormatError(where, "missing 'path'", line)
    rel = Path(str(record["path"]))
    path = rel if rel.is_absolute() else root / rel
    duration = record.get("duration")
    if duration not in (None, ""):
        try:
            duration = float(duration)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise FormatError(where, f"duration {duration!r} is not a number", line) from None
        if not duration >= 0:
            raise FormatError(where, f"duration {duration} is negative or NaN", line)
    else:
        duration = None
    extra = {k: str(v) for k, v in record.items() if k not in KNOWN_COLUMNS and v not in (None, "")}
    return AudioItem(
        id=str(record.get("id") or derive_id(rel if not rel.is_absolute() else rel.name)),
        path=path,
        duration=duration,  # type: ignore[arg-type]
        speaker=str(record["speaker"]) if record.get("speaker") not in (None, "") else None,
        transcript=str(record["transcript"]) if record.get("transcript") not in (None, "") else None,
        extra=extra,
    )


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise FormatError(path, "empty manifest")
    return lines


def _read_textless_tsv(path: Path, lines: list[str]) -> Manifest:
    header = lines[0].split("\t")
    if "path" not in header:
        raise FormatError(path, f"header has no 'path' column (got {header})", 1)
    items = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(header):
            raise FormatError(path, f"{len(values)} fields but the header has {len(header)}", n)
        items.append(_item_from_record(dict(zip(header, values)), path.parent, str(path), n))
    return Manifest(items, source=path)


def _read_fairseq_tsv(path: Path, lines: list[str], sample_rate: int) -> Manifest:
    root = Path(lines[0].strip())
    if not root.is_absolute():
        root = path.parent / root
    items = []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            raise FormatError(path, "fairseq manifest rows must be 'relpath<TAB>num_samples'", n)
        items.append(AudioItem(id=derive_id(fields[0]), path=root / fields[0],
                               duration=int(fields[1]) / sample_rate))
    return Manifest(items, source=path)


def _read_jsonl(path: Path, lines: list[str]) -> Manifest:
    items = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(path, f"invalid JSON ({e.msg})", n) from None
        if not isinstance(record, dict):
            raise FormatError(path, "each line must be a JSON object", n)
        items.append(_item_from_record(record, path.parent, str(path), n))
    return Manifest(items, source=path)


def scan_directory(root: str | Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> Manifest:
    """All audio files below `root` (recursively), ids derived from their relative paths."""
    root = Path(root)
    exts = {e.lower() for e in extensions}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise TextlessError(f"no audio files ({', '.join(sorted(exts))}) found under '{root}'")
    items: dict[str, AudioItem] = {}
    for f in files:
        item_id = derive_id(f.relative_to(root))
        if item_id in items:
            raise FormatError(root, f"ambiguous id '{item_id}': both {items[item_id].path.name} and {f.name}")
        items[item_id] = AudioItem(id=item_id, path=f.resolve())
    return Manifest(items.values(), source=root)


def load_manifest(path: str | Path, *, fairseq_sample_rate: int = 16000) -> Manifest:
    """Load an audio dataset from a directory, a TSV/JSONL manifest, or a fairseq manifest (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise TextlessError(f"dataset '{path}' not found")
    if path.is_dir():
        return scan_directory(path)
    lines = _read_lines(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path, lines)
    if path.suffix == ".tsv":
        header = lines[0].split("\t")
        if len(header) == 1 and header[0] != "path":
            return _read_fairseq_tsv(path, lines, fairseq_sample_rate)
        return _read_textless_tsv(path, lines)
    raise TextlessError(f"cannot read dataset '{path}': expected a directory, a .tsv or a .jsonl manifest")


def resolve_shard(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the given values, else the environment's (`shard_from_env`); `ConfigError` when they do
    not make a shard."""
    env_rank, env_world = shard_from_env()
    rank = env_rank if rank is None else rank
    world = env_world if world_size is None else world_size
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"need 0 <= rank < world_size, got rank={rank} world_size={world}")
    return rank, world


def shard_from_env() -> tuple[int, int]:
    """(rank, world_size) of this process under torchrun (RANK/WORLD_SIZE) or SLURM; (0, 1) otherwise."""
    for rank_var, world_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and world_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[world_var])
    return 0, 1
