"""The unit dataset: one versioned on-disk format for discrete speech units, in two encodings.

A unit dataset is a directory::

    meta.json      format, version, encoding, tokenizer identity, frame_rate (Hz), vocab_size, deduplicated, counts,
                   bpe (only when true)
    units.jsonl    encoding "jsonl": one utterance per line, {"id": str, "units": [int, ...], "durations": [int, ...]}
    units.bin      encoding "binary": all units concatenated, raw little-endian `dtype` (uint16/uint32)  [num_units]
    durations.bin  binary, deduplicated datasets only: run lengths, little-endian `durations_dtype`      [num_units]
    index.npy      binary: int64 offsets, utterance i is units[index[i]:index[i + 1]]                  [N + 1]
    ids.txt        binary: one utterance id per line                                                  N lines

Shapes and units. An utterance holds `L >= 1` units, int64 `[L]` in memory, each in `[0, vocab_size)`. One unit frame
lasts `1 / frame_rate` seconds (the rate *before* deduplication). When `deduplicated` is true, runs of equal frames
were collapsed: `durations[j] >= 1` is the number of frames unit `j` stood for, no two consecutive units are equal and
`UnitSequence.expand()` gives back the frame-level `[T]` sequence, `T = durations.sum()`. When it is false there are no
durations and every unit is one frame. A dataset of BPE tokens over deduplicated units (`bpe` true, with
`deduplicated`) holds token ids, each token's duration in frames, and may repeat a token (two runs of the same pair).

Rules that writers enforce and readers check (errors name the file and the line or utterance): ids are non-empty,
unique and hold no tab, newline or carriage return; an utterance has at least one unit; units lie in
`[0, vocab_size)`; durations exist exactly when the dataset is deduplicated, match the units in length and are in
`[1, 2**32)`; a deduplicated utterance (not BPE) has no two equal consecutive units.

Reading (`read_units`):
- jsonl is parsed and fully validated when opened (errors name the line); it is the small, human-readable encoding.
- binary is memory-mapped (`np.memmap`, mode "r") and opens in O(N) of the index, not O(num_units): opening checks
  meta.json, the file sizes and that the index is strictly increasing. Each item is checked when accessed (cheap),
  and `UnitDataset.validate()` scans everything (vectorised numpy, in chunks). ids.txt is read lazily, on the first
  access that needs an id (`ds[i]`, iteration, `ds.ids`, `ds.get`), so a training loader that only uses
  `units_array` / `durations_array` / `index` never reads it.

Channels (version 2). A dataset whose meta.json has ``"channels": ["A", "B"]`` holds conversations with one unit
stream per channel (dGSLM's two speakers), frame-aligned at `frame_rate`, never deduplicated: a jsonl record's
``"units"`` is a list of C equal-length lists; in binary, units.bin holds each conversation frame-major (frame 0 of
every channel, then frame 1, ...), so units.bin reshapes to ``[num_frames, C]`` and the index counts units (C per
frame). `read_units` refuses such a dataset (a single-stream consumer would read interleaved units);
`textless.dialogue.data.read_dialogues` opens it. Datasets without channels are still written as version 1, byte for
byte as before, so older readers read them.

Writing (`write_units`, `UnitWriter`) goes through `atomic_directory`: readers see the old dataset or the complete new
one, never a partial one; a killed writer leaves at most a hidden `.tmp-*` sibling.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, overload

import numpy as np

from textless.data.corpus import BUNDLED_PREFIX, bundled_units_dir
from textless.data.identity import UnitIdentity
from textless.errors import FormatError, TextlessError
from textless.utils.atomic import atomic_directory
from textless.utils.versioned import artifact

UNITS = artifact("textless.units", 2, "a textless unit dataset")
ENCODINGS = ("jsonl", "binary")

META_FILE = "meta.json"
JSONL_FILE = "units.jsonl"
UNITS_FILE = "units.bin"
DURATIONS_FILE = "durations.bin"
INDEX_FILE = "index.npy"
IDS_FILE = "ids.txt"

MAX_DURATION = 2**32 - 1
_UINT16_LIMIT = 2**16
_CHUNK = 1 << 22  # elements per chunk when scanning or widening binary files
_JSONL_KEYS = ("id", "units", "durations")
_BINARY_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}


class InvalidUnitsError(TextlessError, ValueError):
    """Sequences handed to a writer break the format rules; the message names the utterance id."""


# --------------------------------------------------------------------------------------------------------------------
# In-memory types
# --------------------------------------------------------------------------------------------------------------------


def _as_int_array(value: Any, what: str, utt_id: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise InvalidUnitsError(f"utterance {utt_id!r}: {what} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise InvalidUnitsError(f"utterance {utt_id!r}: {what} must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidUnitsError(f"utterance {utt_id!r}: {what} value {int(arr.max())} does not fit in int64")
    return arr.astype(np.int64, copy=False)


def _length_mismatch(num_durations: int, num_units: int) -> str:
    return f"'durations' has {num_durations} items but 'units' has {num_units}"


def _optional_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


@dataclass(eq=False)
class UnitSequence:
    """One utterance: `units` int64 `[L]`; `durations` int64 `[L]` frames per unit (deduplicated data only).

    Equality compares the id and the array contents.
    """

    id: str
    units: np.ndarray
    durations: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"utterance id must be a str, got {type(self.id).__name__}")
        self.units = _as_int_array(self.units, "units", self.id)
        if self.durations is not None:
            self.durations = _as_int_array(self.durations, "durations", self.id)
            if len(self.durations) != len(self.units):
                raise InvalidUnitsError(
                    f"utterance {self.id!r}: {_length_mismatch(len(self.durations), len(self.units))}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnitSequence):
            return NotImplemented
        return (self.id == other.id and bool(np.array_equal(self.units, other.units))
                and _optional_equal(self.durations, other.durations))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays

    @property
    def num_units(self) -> int:
        return len(self.units)

    @property
    def num_frames(self) -> int:
        """Frames covered: `durations.sum()`, or the number of units when there are no durations."""
        return int(self.durations.sum()) if self.durations is not None else len(self.units)

    def expand(self) -> np.ndarray:
        """Frame-level units, int64 `[num_frames]`: `np.repeat(units, durations)` (the units if no durations)."""
        if self.durations is None:
            return self.units.copy()
        return np.repeat(self.units, self.durations)

    def deduplicated(self) -> UnitSequence:
        """Run-length encode: equal consecutive units merge and their durations (1 frame each if none) add up."""
        units, counts = dedup(self.units)
        if self.durations is None or len(units) == 0:
            return UnitSequence(self.id, units, counts)
        run_starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        return UnitSequence(self.id, units, np.add.reduceat(self.durations, run_starts))


def crop_prompt(seq: UnitSequence, seconds: float | None, frame_rate: float) -> UnitSequence:
    """The first `seconds` of an utterance: whole units while their frames fit (at least one unit)."""
    if seconds is None:
        return seq
    frames = np.cumsum(seq.durations) if seq.durations is not None else np.arange(1, len(seq.units) + 1)
    keep = max(1, int(np.searchsorted(frames, seconds * frame_rate, side="right")))
    return UnitSequence(seq.id, seq.units[:keep], None if seq.durations is None else seq.durations[:keep])


def dedup(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run-length encode `units` `[T]` -> (units `[L]`, durations `[L]`), both int64; `np.repeat` inverts it."""
    arr = np.asarray(units)
    if arr.ndim != 1:
        raise ValueError(f"dedup expects a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], arr[1:] != arr[:-1])))
    durations = np.diff(np.concatenate((starts, [arr.size])))
    return arr[starts].astype(np.int64), durations.astype(np.int64)


def _meta_problem(meta: UnitMeta) -> str | None:
    tok = meta.tokenizer
    if not isinstance(tok, dict) or not isinstance(tok.get("name"), str) or not tok["name"]:
        return "'tokenizer' must be a dict with a non-empty string 'name'"
    rate = meta.frame_rate
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not math.isfinite(rate) or rate <= 0:
        return f"'frame_rate' must be a positive number, got {rate!r}"
    vocab = meta.vocab_size
    if isinstance(vocab, bool) or not isinstance(vocab, numbers.Integral) or not 1 <= vocab <= 2**32:
        return f"'vocab_size' must be an integer in [1, 2**32], got {vocab!r}"
    if not isinstance(meta.deduplicated, bool):
        return f"'deduplicated' must be true or false, got {meta.deduplicated!r}"
    if not isinstance(meta.bpe, bool):
        return f"'bpe' must be true or false, got {meta.bpe!r}"
    if meta.bpe and not meta.deduplicated:
        return "'bpe' datasets hold tokens over deduplicated units: 'deduplicated' must be true"
    if not isinstance(meta.extra, dict):
        return f"'extra' must be a dict, got {type(meta.extra).__name__}"
    if meta.channels is not None:
        names = meta.channels
        if (not isinstance(names, list | tuple) or len(names) < 2 or len(set(names)) != len(names)
                or not all(isinstance(n, str) and n and not any(c in n for c in "\n\r\t") for n in names)):
            return f"'channels' must be at least two distinct non-empty names, got {names!r}"
        if meta.deduplicated or meta.bpe:
            return "a dataset with channels holds frame-aligned units: 'deduplicated' and 'bpe' must be false"
    for key in ("tokenizer", "extra"):
        try:
            json.dumps(getattr(meta, key))
        except (TypeError, ValueError) as e:
            return f"'{key}' must be JSON-serialisable ({e})"
    return None


@dataclass
class UnitMeta:
    """What a unit dataset is: which tokenizer made it, at what frame rate (Hz), with how many units.

    `tokenizer` is a free-form identity dict with at least {"name": str} (may hold encoder, layer, k, hash...);
    `extra` is free-form user metadata; `bpe`: the units are BPE tokens (see the module docstring); `channels`: the
    names of the frame-aligned streams of a multi-channel dataset (None: one stream). Counts
    (num_utterances, num_units, num_frames) are computed by the writer.
    """

    tokenizer: dict[str, Any]
    frame_rate: float
    vocab_size: int
    deduplicated: bool
    extra: dict[str, Any] = field(default_factory=dict)
    bpe: bool = False
    channels: tuple[str, ...] | None = None

    @property
    def num_channels(self) -> int:
        return 1 if self.channels is None else len(self.channels)

    @property
    def identity(self) -> UnitIdentity:
        """What these units are (`textless.data.identity`): the one thing consumers check them against."""
        return UnitIdentity(tokenizer=self.tokenizer, vocab_size=self.vocab_size, frame_rate=self.frame_rate,
                            deduplicated=self.deduplicated, bpe=self.bpe)

    @classmethod
    def from_identity(cls, identity: UnitIdentity, extra: dict[str, Any] | None = None) -> UnitMeta:
        """The meta.json of units of a fully known `identity` (every field set), with `extra` user metadata."""
        unknown = [k for k, v in identity.to_dict().items() if v is None]
        if unknown:
            raise ValueError(f"a unit dataset needs a complete identity; unknown: {', '.join(unknown)}")
        return cls(tokenizer=dict(identity.tokenizer), frame_rate=identity.frame_rate, vocab_size=identity.vocab_size,
                   deduplicated=identity.deduplicated, bpe=identity.bpe, extra=dict(extra or {}))

    @property
    def no_repeats(self) -> bool:
        """Whether two equal consecutive units are an error (deduplicated units, not BPE tokens)."""
        return self.deduplicated and not self.bpe

    def __post_init__(self) -> None:
        problem = _meta_problem(self)
        if problem:
            raise ValueError(problem)
        self.frame_rate = float(self.frame_rate)
        self.vocab_size = int(self.vocab_size)
        if self.channels is not None:
            self.channels = tuple(self.channels)

    def header(self) -> dict[str, Any]:
        """The format header: version 2 only for datasets with channels (others stay readable by older textless)."""
        return {**UNITS.header(), "version": 1} if self.channels is None else UNITS.header()

    def to_json(self) -> dict[str, Any]:
        data = {**self.header(), "tokenizer": self.tokenizer,
                "frame_rate": self.frame_rate, "vocab_size": self.vocab_size, "deduplicated": self.deduplicated,
                "extra": self.extra}
        if self.bpe:  # written only when true: version-1 files without it read as before
            data["bpe"] = True
        if self.channels is not None:
            data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_json(cls, data: Any, path: str | Path = META_FILE) -> UnitMeta:
        """Parse meta.json content; raises `FormatError` naming `path` (newer versions are refused, not guessed)."""
        UNITS.check(data, path)
        for key in ("tokenizer", "frame_rate", "vocab_size", "deduplicated"):
            if key not in data:
                raise FormatError(path, f"missing key '{key}'")
        try:
            return cls(tokenizer=data["tokenizer"], frame_rate=data["frame_rate"], vocab_size=data["vocab_size"],
                       deduplicated=data["deduplicated"], extra=data.get("extra", {}), bpe=data.get("bpe", False),
                       channels=data.get("channels"))
        except ValueError as e:
            raise FormatError(path, str(e)) from None


def units_dtype(vocab_size: int) -> str:
    """Name of the on-disk dtype of units.bin for `vocab_size`: uint16 when it fits, else uint32."""
    return "uint16" if vocab_size <= _UINT16_LIMIT else "uint32"


# --------------------------------------------------------------------------------------------------------------------
# Rules (shared by writers, the jsonl reader, binary item access and validate())
# --------------------------------------------------------------------------------------------------------------------


def _id_problem(utt_id: str) -> str | None:
    if not utt_id:
        return "empty id"
    if any(c in utt_id for c in "\n\r\t"):
        return f"id {utt_id!r} contains a tab, newline or carriage return"
    return None


def _units_problem(units: np.ndarray, vocab_size: int, no_repeats: bool) -> str | None:
    if units.size == 0:
        return "empty utterance"
    if units.min() < 0 or units.max() >= vocab_size:
        bad = units[(units < 0) | (units >= vocab_size)][0]
        return f"unit {int(bad)} out of range [0, {vocab_size})"
    if no_repeats:
        same = np.flatnonzero(units[1:] == units[:-1])
        if same.size:
            pos = int(same[0]) + 1
            return f"consecutive duplicate unit {int(units[pos])} at position {pos} in a deduplicated dataset"
    return None


def _durations_problem(durations: np.ndarray | None, num_units: int, deduplicated: bool) -> str | None:
    if not deduplicated:
        return None if durations is None else "'durations' given but the dataset is not deduplicated"
    if durations is None:
        return "'durations' missing (the dataset is deduplicated)"
    if len(durations) != num_units:
        return _length_mismatch(len(durations), num_units)
    if durations.size and (durations.min() < 1 or durations.max() > MAX_DURATION):
        pos = int(np.flatnonzero((durations < 1) | (durations > MAX_DURATION))[0])
        return f"duration {int(durations[pos])} at position {pos} is outside [1, {MAX_DURATION}]"
    return None


def _sequence_problem(units: np.ndarray, durations: np.ndarray | None, meta: UnitMeta) -> str | None:
    return (_units_problem(units, meta.vocab_size, meta.no_repeats)
            or _durations_problem(durations, len(units), meta.deduplicated))


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


class UnitDataset(Sequence[UnitSequence]):
    """A unit dataset opened by `read_units`: `len(ds)`, `ds[i]` / `ds[a:b]`, iteration, `ds.get(id)`.

    Attributes: `path` (the directory), `meta` (`UnitMeta`), `encoding`, `info` (the whole meta.json dict),
    `units_array` (all units concatenated `[num_units]`; an `np.memmap` for binary datasets), `durations_array`
    (same layout, None if not deduplicated) and `index` (int64 offsets `[N + 1]`; this attribute shadows
    `Sequence.index()`). Items are fresh int64 copies, detached from the memory map.
    """

    def __init__(self, path: Path, meta: UnitMeta, info: dict[str, Any], encoding: str, units_array: np.ndarray,
                 durations_array: np.ndarray | None, index: np.ndarray, ids: list[str] | None = None):
        self.path = path
        self.meta = meta
        self.info = info
        self.encoding = encoding
        self.units_array = units_array
        self.durations_array = durations_array
        self.index = index  # type: ignore[assignment]
        self._ids = ids
        self._positions: dict[str, int] | None = None

    # ids --------------------------------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self._load_ids()
        return self._ids

    def _load_ids(self) -> list[str]:  # pragma: no cover - every encoding provides ids or overrides this
        raise NotImplementedError

    def get(self, utt_id: str) -> UnitSequence:
        """The utterance with this id; `KeyError` if there is none."""
        if self._positions is None:
            self._positions = {u: i for i, u in enumerate(self.ids)}
        return self[self._positions[utt_id]]

    # counts -----------------------------------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        return int(self.index[-1])

    @property
    def num_frames(self) -> int:
        return int(self.info["num_frames"])

    # sequence protocol ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index) - 1

    @overload
    def __getitem__(self, i: int) -> UnitSequence: ...

    @overload
    def __getitem__(self, i: slice) -> list[UnitSequence]: ...

    def __getitem__(self, i: int | slice) -> UnitSequence | list[UnitSequence]:
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        j = int(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"utterance index {i} out of range for {n} utterances")
        return self._item(j)

    def __iter__(self) -> Iterator[UnitSequence]:
        for j in range(len(self)):
            yield self._item(j)

    def _raw(self, j: int) -> tuple[np.ndarray, np.ndarray | None]:
        a, b = int(self.index[j]), int(self.index[j + 1])
        durations = None if self.durations_array is None else self.durations_array[a:b]
        return self.units_array[a:b], durations

    def _item(self, j: int) -> UnitSequence:
        units, durations = self._raw(j)
        return UnitSequence(self.ids[j], np.array(units, dtype=np.int64),
                            None if durations is None else np.array(durations, dtype=np.int64))

    # validation -------------------------------------------------------------------------------------------------
    def _fail(self, j: int) -> NoReturn:
        """Raise the precise error for utterance j (found bad by a vectorised scan)."""
        units, durations = self._raw(j)
        units = np.asarray(units, dtype=np.int64)
        durations = None if durations is None else np.asarray(durations, dtype=np.int64)
        where = f"utterance {j} ({self.ids[j]!r})"
        problem = _units_problem(units, self.meta.vocab_size, self.meta.no_repeats)
        if problem:
            raise FormatError(self._data_file(UNITS_FILE), f"{where}: {problem}")
        problem = _durations_problem(durations, len(units), self.meta.deduplicated)
        if problem:
            raise FormatError(self._data_file(DURATIONS_FILE), f"{where}: {problem}")
        raise AssertionError(f"{where} was flagged by the scan but passes the item check")  # a bug, not bad data

    def _data_file(self, binary_name: str) -> Path:
        return self.path / (JSONL_FILE if self.encoding == "jsonl" else binary_name)

    def fingerprint(self) -> str:
        """A short hash of what the dataset holds (its identity, counts, utterance boundaries and an even sample of
        at most 65536 units), independent of where it lies: a copied dataset keeps it, another dataset (or the same
        one with utterances added) gets another. Reads the index and the sample only, not the whole corpus."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(json.dumps([self.meta.identity.to_dict(), len(self), self.num_units], sort_keys=True).encode())
        digest.update(np.ascontiguousarray(self.index, dtype="<i8").tobytes())
        stride = max(1, self.num_units // 65536)
        digest.update(np.ascontiguousarray(self.units_array[::stride], dtype="<i8").tobytes())
        return digest.hexdigest()

    def validate(self) -> None:
        """Scan every unit (and duration) against the rules, in chunks; raise `FormatError` on the first problem.

        Also loads and checks the ids, and that num_frames in meta.json matches the durations.
        """
        _ = self.ids
        frames = 0
        for lo in range(0, self.num_units, _CHUNK):
            hi = min(lo + _CHUNK, self.num_units)
            bad = self._bad_positions(lo, hi)
            if bad.size:
                self._fail(int(np.searchsorted(self.index, bad[0], side="right")) - 1)
            if self.durations_array is not None:
                frames += int(np.asarray(self.durations_array[lo:hi]).sum(dtype=np.int64))
        if self.durations_array is None:
            frames = self.num_units // self.meta.num_channels
        if frames != self.num_frames:
            raise FormatError(self.path / META_FILE, f"'num_frames' is {self.num_frames} but the data holds "
                                                     f"{frames} frames")

    def _bad_positions(self, lo: int, hi: int) -> np.ndarray:
        """Flat positions in [lo, hi) that break a rule (out-of-range unit, bad duration, duplicate of previous)."""
        units = np.asarray(self.units_array[lo:hi])
        bad = units >= self.meta.vocab_size
        if units.dtype.kind == "i":
            bad |= units < 0
        if self.durations_array is not None:
            durations = np.asarray(self.durations_array[lo:hi])
            bad |= durations < 1
        if self.meta.no_repeats:
            ext = np.asarray(self.units_array[max(lo - 1, 0):hi])
            same = ext[1:] == ext[:-1]
            if lo == 0:  # position 0 has no predecessor
                same = np.concatenate(([False], same))
            # now same[k] says whether position lo + k repeats position lo + k - 1
            first = int(np.searchsorted(self.index, lo, side="left"))
            last = int(np.searchsorted(self.index, hi, side="left"))
            same[np.asarray(self.index[first:last]) - lo] = False  # an utterance may start with its predecessor's unit
            bad |= same
        return np.flatnonzero(bad) + lo

    def __repr__(self) -> str:
        return (f"UnitDataset('{self.path}', encoding={self.encoding!r}, utterances={len(self)}, "
                f"units={self.num_units}, vocab_size={self.meta.vocab_size}, "
                f"deduplicated={self.meta.deduplicated})")


class _BinaryUnitDataset(UnitDataset):
    """Memory-mapped binary dataset: ids read lazily; each accessed item is checked (cheap); validate() for all."""

    def _load_ids(self) -> list[str]:
        path = self.path / IDS_FILE
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
        ids = text.split("\n")
        if ids and ids[-1] == "":
            ids.pop()
        if len(ids) != len(self):
            raise FormatError(path, f"has {len(ids)} ids but the index has {len(self)} utterances")
        seen: dict[str, int] = {}
        for line, utt_id in enumerate(ids, 1):
            _check_id(utt_id, path, line, seen)
        self._positions = {u: i - 1 for u, i in seen.items()}
        return ids

    def _item(self, j: int) -> UnitSequence:
        seq = super()._item(j)
        if _sequence_problem(seq.units, seq.durations, self.meta):
            self._fail(j)
        return seq


def _check_id(utt_id: str, path: Path, line: int, seen: dict[str, int]) -> None:
    problem = _id_problem(utt_id)
    if problem:
        raise FormatError(path, problem, line)
    if utt_id in seen:
        raise FormatError(path, f"duplicate id {utt_id!r} (first on line {seen[utt_id]})", line)
    seen[utt_id] = line


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise FormatError(path, f"invalid JSON ({e.msg})", e.lineno) from None
    except UnicodeDecodeError as e:
        raise FormatError(path, f"not UTF-8 text ({e.reason})") from None
    if not isinstance(data, dict):
        raise FormatError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _count(info: dict[str, Any], key: str, path: Path) -> int:
    if key not in info:
        raise FormatError(path, f"missing key '{key}'")
    value = info[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(path, f"'{key}' must be a non-negative integer, got {value!r}")
    return value


def _check_count(info: dict[str, Any], key: str, actual: int, path: Path, what: str) -> None:
    if info[key] != actual:
        raise FormatError(path, f"'{key}' is {info[key]} but {what} holds {actual} (truncated or edited?)")


def resolve_units_path(spec: str | Path) -> Path:
    """A unit dataset directory from a path, or ``bundled:<split>``: the bundled corpus as units of the starter
    tokenizer."""
    if isinstance(spec, str) and spec.startswith(BUNDLED_PREFIX):
        return bundled_units_dir(spec[len(BUNDLED_PREFIX):])
    return Path(spec)


def read_units(path: str | Path, *, multichannel: bool = False) -> UnitDataset:
    """Open a unit dataset directory (either encoding, detected from meta.json), or ``bundled:<split>``; see the
    module docstring. A dataset with channels is refused unless `multichannel` (its items are frame-major
    interleaved; `textless.dialogue.data.read_dialogues` gives them as ``[C, T]``)."""
    path = resolve_units_path(path)
    if not path.exists():
        raise FormatError(path, "no such unit dataset directory")
    if not path.is_dir():
        raise FormatError(path, "not a textless unit dataset (expected a directory holding meta.json)")
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FormatError(path, "not a textless unit dataset (no meta.json)")
    info = _read_json_object(meta_path)
    meta = UnitMeta.from_json(info, meta_path)
    if meta.channels is not None and not multichannel:
        raise FormatError(path, f"a {meta.num_channels}-channel unit dataset (channels {', '.join(meta.channels)}): "
                                "open it with textless.dialogue.data.read_dialogues, not as one stream of units")
    encoding = info.get("encoding")
    if encoding is None:
        raise FormatError(meta_path, "missing key 'encoding'")
    if encoding not in _OPENERS:
        raise FormatError(meta_path, f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
    for key in ("num_utterances", "num_units", "num_frames"):
        _count(info, key, meta_path)
    return _OPENERS[encoding](path, meta, info)


def _parse_int_list(value: Any, key: str) -> np.ndarray | str:
    """A JSON list of integers as a 1-D integer array, or a problem string."""
    if not isinstance(value, list):
        return f"'{key}' must be a list of integers, got {type(value).__name__}"
    if not value:
        return np.zeros(0, dtype=np.int64)
    try:
        arr = np.array(value)
    except (ValueError, OverflowError):
        arr = None
    if arr is None or arr.ndim != 1 or arr.dtype.kind not in "iu":
        return f"'{key}' must be a list of integers"
    return arr


def _parse_channels(value: Any, num_channels: int) -> np.ndarray | str:
    """A jsonl record's C equal-length channel lists -> frame-major interleaved units `[T * C]`, or a problem."""
    if not isinstance(value, list) or len(value) != num_channels:
        return f"'units' must be a list of {num_channels} channel lists"
    rows = [_parse_int_list(row, "units") for row in value]
    for row in rows:
        if isinstance(row, str):
            return row
    if len({len(row) for row in rows}) != 1:
        return f"the channels have different lengths {[len(row) for row in rows]} (they must be frame-aligned)"
    return np.stack(rows, axis=1).reshape(-1)


def _parse_jsonl_line(text: str, meta: UnitMeta) -> tuple[str, np.ndarray, np.ndarray | None] | str:
    """One units.jsonl line -> (id, units, durations) or a problem string (the caller adds file and line)."""
    if not text.strip():
        return "empty line"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    unknown = sorted(set(record) - set(_JSONL_KEYS))
    if unknown:
        return f"unknown key {unknown[0]!r} (allowed: {', '.join(_JSONL_KEYS)})"
    for key in ("id", "units"):
        if key not in record:
            return f"missing key '{key}'"
    utt_id = record["id"]
    if not isinstance(utt_id, str):
        return f"'id' must be a string, got {type(utt_id).__name__}"
    units = (_parse_int_list(record["units"], "units") if meta.channels is None
             else _parse_channels(record["units"], len(meta.channels)))
    durations = _parse_int_list(record["durations"], "durations") if "durations" in record else None
    for parsed in (units, durations):
        if isinstance(parsed, str):
            return parsed
    problem = _id_problem(utt_id) or _sequence_problem(units, durations, meta)
    if problem:
        return problem
    return utt_id, units.astype(np.int64), None if durations is None else durations.astype(np.int64)


def _open_jsonl(path: Path, meta: UnitMeta, info: dict[str, Any]) -> UnitDataset:
    data_path = path / JSONL_FILE
    if not data_path.is_file():
        raise FormatError(data_path, "missing (meta.json says the encoding is jsonl)")
    ids: list[str] = []
    seen: dict[str, int] = {}
    units: list[np.ndarray] = []
    durations: list[np.ndarray] = []
    with open(data_path, encoding="utf-8") as f:
        try:
            for line_no, text in enumerate(f, 1):
                parsed = _parse_jsonl_line(text, meta)
                if isinstance(parsed, str):
                    raise FormatError(data_path, parsed, line_no)
                _check_id(parsed[0], data_path, line_no, seen)
                ids.append(parsed[0])
                units.append(parsed[1])
                if parsed[2] is not None:
                    durations.append(parsed[2])
        except UnicodeDecodeError as e:
            raise FormatError(data_path, f"not UTF-8 text ({e.reason})") from None
    units_array = np.concatenate(units) if units else np.zeros(0, dtype=np.int64)
    durations_array = None
    if meta.deduplicated:
        durations_array = np.concatenate(durations) if durations else np.zeros(0, dtype=np.int64)
    index = np.concatenate(([0], np.cumsum([len(u) for u in units], dtype=np.int64))).astype(np.int64)
    meta_path = path / META_FILE
    _check_count(info, "num_utterances", len(ids), meta_path, JSONL_FILE)
    _check_count(info, "num_units", len(units_array), meta_path, JSONL_FILE)
    frames = int(durations_array.sum()) if durations_array is not None else len(units_array) // meta.num_channels
    _check_count(info, "num_frames", frames, meta_path, JSONL_FILE)
    return UnitDataset(path, meta, info, "jsonl", units_array, durations_array, index, ids)


def _binary_dtype(info: dict[str, Any], key: str, meta_path: Path) -> np.dtype:
    name = info.get(key)
    if name is None:
        raise FormatError(meta_path, f"missing key '{key}'")
    if name not in _BINARY_DTYPES:
        raise FormatError(meta_path, f"'{key}' must be one of {', '.join(_BINARY_DTYPES)}, got {name!r}")
    return _BINARY_DTYPES[name]


def _map_array(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """Memory-map `count` items of `dtype` from `path`, after checking the file size."""
    if not path.is_file():
        raise FormatError(path, "missing (needed by the binary encoding)")
    size = path.stat().st_size
    if size != count * dtype.itemsize:
        raise FormatError(path, f"has {size} bytes but meta.json implies {count} x {dtype.itemsize} = "
                                f"{count * dtype.itemsize} (truncated or edited?)")
    if count == 0:
        return np.zeros(0, dtype=dtype)  # an empty file cannot be mapped
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def _load_index(path: Path, num_utterances: int, num_units: int) -> np.ndarray:
    if not path.is_file():
        raise FormatError(path, "missing (needed by the binary encoding)")
    try:
        index = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(path, f"not a valid .npy file ({e})") from None
    if index.dtype != np.dtype("<i8") or index.shape != (num_utterances + 1,):
        raise FormatError(path, f"expected int64 offsets of shape ({num_utterances + 1},), got {index.dtype} "
                                f"{index.shape}")
    if index[0] != 0 or index[-1] != num_units:
        raise FormatError(path, f"offsets must run from 0 to num_units={num_units}, got {index[0]}..{index[-1]}")
    steps = np.diff(index)
    if steps.size and steps.min() < 1:
        j = int(np.flatnonzero(steps < 1)[0])
        raise FormatError(path, f"offsets are not strictly increasing at utterance {j} (empty or negative length)")
    return index


def _open_binary(path: Path, meta: UnitMeta, info: dict[str, Any]) -> UnitDataset:
    meta_path = path / META_FILE
    dtype = _binary_dtype(info, "dtype", meta_path)
    if meta.vocab_size > np.iinfo(dtype).max + 1:
        raise FormatError(meta_path, f"'dtype' {info['dtype']} cannot hold vocab_size {meta.vocab_size}")
    num_units = info["num_units"]
    index = _load_index(path / INDEX_FILE, info["num_utterances"], num_units)
    units_array = _map_array(path / UNITS_FILE, dtype, num_units)
    durations_array = None
    if meta.deduplicated:
        durations_dtype = _binary_dtype(info, "durations_dtype", meta_path)
        durations_array = _map_array(path / DURATIONS_FILE, durations_dtype, num_units)
    elif meta.channels is not None:
        steps = np.diff(index)
        if np.any(steps % meta.num_channels):
            j = int(np.flatnonzero(steps % meta.num_channels)[0])
            raise FormatError(path / INDEX_FILE, f"conversation {j} holds {int(steps[j])} units, not a multiple of "
                                                 f"the {meta.num_channels} channels")
        if info["num_frames"] * meta.num_channels != num_units:
            raise FormatError(meta_path, f"'num_frames' is {info['num_frames']} but {num_units} units in "
                                         f"{meta.num_channels} channels make {num_units // meta.num_channels}")
    elif info["num_frames"] != num_units:
        raise FormatError(meta_path, f"'num_frames' is {info['num_frames']} but a dataset that is not deduplicated "
                                     f"has one frame per unit ({num_units})")
    return _BinaryUnitDataset(path, meta, info, "binary", units_array, durations_array, index)


_OPENERS: dict[str, Callable[[Path, UnitMeta, dict[str, Any]], UnitDataset]] = {
    "jsonl": _open_jsonl,
    "binary": _open_binary,
}


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


class _JsonlSink:
    """Appends utterances to units.jsonl (compact JSON, UTF-8, one line each)."""

    def __init__(self, directory: Path, meta: UnitMeta):
        # closed by finish() / close(), which UnitWriter always calls
        self._file = open(directory / JSONL_FILE, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        self._channels = meta.num_channels

    def add(self, seq: UnitSequence) -> None:
        units = seq.units if self._channels == 1 else seq.units.reshape(-1, self._channels).T
        record: dict[str, Any] = {"id": seq.id, "units": units.tolist()}
        if seq.durations is not None:
            record["durations"] = seq.durations.tolist()
        self._file.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")

    def finish(self) -> dict[str, Any]:
        self._file.close()
        return {}

    def close(self) -> None:
        self._file.close()


class _BinarySink:
    """Streams units.bin / durations.bin / ids.txt; index.npy is written by finish() from offsets kept in memory.

    durations.bin starts as uint16 and is widened once to uint32 (rewritten in chunks) if a duration needs it.
    """

    def __init__(self, directory: Path, meta: UnitMeta):
        self._dir = directory
        self._units_dtype = _BINARY_DTYPES[units_dtype(meta.vocab_size)]
        self._durations_dtype = _BINARY_DTYPES["uint16"]
        self._offsets = array("q", [0])
        self._files: list[Any] = []
        self._units = self._open(UNITS_FILE, "wb")
        self._durations = self._open(DURATIONS_FILE, "wb") if meta.deduplicated else None
        self._ids = self._open(IDS_FILE, "w")

    def _open(self, name: str, mode: str) -> Any:
        text_options = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        f = open(self._dir / name, mode, **text_options)  # noqa: SIM115 - closed by close()
        self._files.append(f)
        return f

    def add(self, seq: UnitSequence) -> None:
        self._units.write(seq.units.astype(self._units_dtype).tobytes())
        if self._durations is not None:
            assert seq.durations is not None
            if self._durations_dtype.itemsize == 2 and seq.durations.max() >= _UINT16_LIMIT:
                self._widen_durations()
            self._durations.write(seq.durations.astype(self._durations_dtype).tobytes())
        self._ids.write(seq.id + "\n")
        self._offsets.append(self._offsets[-1] + len(seq.units))

    def _widen_durations(self) -> None:
        assert self._durations is not None
        self._durations.close()
        self._files.remove(self._durations)
        path, wide = self._dir / DURATIONS_FILE, self._dir / (DURATIONS_FILE + ".wide")
        with open(path, "rb") as src, open(wide, "wb") as dst:
            while chunk := src.read(2 * _CHUNK):
                dst.write(np.frombuffer(chunk, dtype="<u2").astype("<u4").tobytes())
        os.replace(wide, path)
        self._durations_dtype = _BINARY_DTYPES["uint32"]
        self._durations = self._open(DURATIONS_FILE, "ab")

    def finish(self) -> dict[str, Any]:
        self.close()
        np.save(self._dir / INDEX_FILE, np.frombuffer(self._offsets, dtype=np.int64).astype("<i8"))
        info: dict[str, Any] = {"dtype": self._units_dtype.name}
        if self._durations is not None:
            info["durations_dtype"] = self._durations_dtype.name
        return info

    def close(self) -> None:
        for f in self._files:
            f.close()


_SINKS: dict[str, Callable[[Path, UnitMeta], Any]] = {"jsonl": _JsonlSink, "binary": _BinarySink}


class UnitWriter:
    """Streaming, validating, atomic writer of a unit dataset.

    >>> with UnitWriter("out/units", meta, encoding="binary") as w:   # doctest: +SKIP
    ...     for seq in sequences:
    ...         w.add(seq)

    Files go to a hidden temporary sibling directory that becomes `path` only when the block ends without an
    exception (replacing an existing dataset only if `overwrite`); on an exception it is deleted. `add` checks each
    sequence (id, vocab range, durations, deduplication) and raises `InvalidUnitsError` (a `ValueError`) naming the
    utterance id, before anything of it is written; duplicate ids are refused. Memory: the ids seen and one int64
    offset per utterance.
    """

    def __init__(self, path: str | Path, meta: UnitMeta, encoding: str = "jsonl", overwrite: bool = False):
        if encoding not in _SINKS:
            raise ValueError(f"unknown encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")
        if not isinstance(meta, UnitMeta):
            raise TypeError(f"meta must be a UnitMeta, got {type(meta).__name__}")
        self.path = Path(path)
        self.meta = meta
        self.encoding = encoding
        self.overwrite = overwrite
        self.num_units = 0
        self.num_frames = 0
        self._ids: set[str] = set()
        self._stack: ExitStack | None = None
        self._tmp: Path | None = None
        self._sink: Any = None

    @property
    def num_utterances(self) -> int:
        return len(self._ids)

    def __enter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError("UnitWriter is already open")
        with ExitStack() as stack:
            self._tmp = stack.enter_context(atomic_directory(self.path, overwrite=self.overwrite))
            self._sink = _SINKS[self.encoding](self._tmp, self.meta)
            stack.callback(self._sink.close)
            self._stack = stack.pop_all()
        return self

    def add(self, seq: UnitSequence) -> None:
        if self._stack is None:
            raise RuntimeError("UnitWriter.add() called outside its with-block")
        if not isinstance(seq, UnitSequence):
            raise TypeError(f"expected a UnitSequence, got {type(seq).__name__}")
        problem = _id_problem(seq.id)
        if problem:
            raise InvalidUnitsError(problem)
        problem = _sequence_problem(seq.units, seq.durations, self.meta)
        if problem:
            raise InvalidUnitsError(f"utterance {seq.id!r}: {problem}")
        if seq.id in self._ids:
            raise InvalidUnitsError(f"duplicate utterance id {seq.id!r}")
        channels = self.meta.num_channels
        if seq.num_units % channels:
            raise InvalidUnitsError(f"conversation {seq.id!r}: {seq.num_units} interleaved units are not a multiple "
                                    f"of the {channels} channels")
        self._sink.add(seq)
        self._ids.add(seq.id)
        self.num_units += seq.num_units
        self.num_frames += seq.num_frames // channels

    def extend(self, sequences: Iterable[UnitSequence]) -> None:
        for seq in sequences:
            self.add(seq)

    def _finish(self) -> None:
        assert self._tmp is not None
        encoding_info = self._sink.finish()
        meta = self.meta
        info = {**meta.header(), "encoding": self.encoding,
                "tokenizer": meta.tokenizer, "frame_rate": meta.frame_rate, "vocab_size": meta.vocab_size,
                "deduplicated": meta.deduplicated, "num_utterances": self.num_utterances,
                "num_units": self.num_units, "num_frames": self.num_frames, **encoding_info, "extra": meta.extra}
        if meta.bpe:
            info["bpe"] = True
        if meta.channels is not None:
            info["channels"] = list(meta.channels)
        with open(self._tmp / META_FILE, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2, ensure_ascii=False)
            f.write("\n")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        stack, self._stack = self._stack, None
        assert stack is not None
        if exc_type is not None:
            stack.__exit__(exc_type, exc, tb)  # closes files and deletes the temporary directory
            return False
        with stack:  # publishes on success; an error in _finish() deletes the temporary directory instead
            self._finish()
        return False


def write_units(path: str | Path, sequences: Iterable[UnitSequence], meta: UnitMeta, encoding: str = "jsonl",
                overwrite: bool = False) -> Path:
    """Write `sequences` as a unit dataset at `path` (atomically, validating each); returns the path."""
    with UnitWriter(path, meta, encoding=encoding, overwrite=overwrite) as writer:
        writer.extend(sequences)
    return Path(path)


def convert_encoding(src: str | Path, dst: str | Path, encoding: str, overwrite: bool = False) -> Path:
    """Re-encode the dataset at `src` as `encoding` ("jsonl" or "binary") at `dst`; meta and data are unchanged."""
    dataset = read_units(src, multichannel=True)
    return write_units(dst, dataset, dataset.meta, encoding=encoding, overwrite=overwrite)
