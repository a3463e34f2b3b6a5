"""Lossless converters between the unit dataset (`textless.data.units`) and the anchor toolkits' unit files.

Formats (`REGISTRY`; the CLI goes through `import_units` / `export_units`):

- ``fairseq_km`` (HuBERT / fairseq ``dump_km_label``): ``<split>.km`` holds one utterance per line, frame-level units
  separated by spaces, and no ids; the ids come from the parallel fairseq manifest ``<split>.tsv`` (line 1: the audio
  root; then ``relpath<TAB>num_samples``; id = relpath without its extension) or from an ids file (one per line).
  ``dict.km.txt`` is a fairseq Dictionary: one ``<unit> <count>`` line per symbol, the symbols being 0..K-1.
- ``gslm`` (GSLM ``quantize_with_kmeans.py``): one ``<file stem>|<u u u ...>`` line per utterance, frame-level units.
- ``slamkit`` (slamkit ``extract_features.py``): ``features.jsonl``, one
  ``{"units": [...], "duration": [...], "file_name": "..."}`` line per utterance; units are run-length encoded and
  ``duration[j]`` is the number of frames of ``units[j]`` (slamkit's ``dedup=False`` writes frame-level units with
  durations all 1, which is read back as a dataset that is not deduplicated).

- ``dgslm`` (fairseq ``examples/textless_nlp/dgslm``, two-channel): ``<prefix>.unitA`` and ``<prefix>.unitB`` are
  parallel text files, line i holding conversation i's frame-level units of speaker A / B (equal lengths: the
  channels are frame-aligned); ``dict.unitA.txt`` / ``dict.unitB.txt`` beside them are fairseq Dictionaries whose
  ``<unit> <count>`` lines are in dictionary order (by count, as fairseq's ``finalize`` sorts), NOT unit order: the
  units are the symbols, the dictionary index is only the model's (the dGSLM loader maps it). Ids: an ids file as
  for .km, or "0".."N-1". A textless dataset with channels ("A", "B") round-trips exactly.

No information is lost either way: .km and gslm files carry frame-level units, so the writers expand durations
(`UnitSequence.expand`) and the readers can re-deduplicate (`deduplicate=True`), which gives back the same run
lengths. Readers raise `FormatError` naming the file and 1-based line; writers are atomic (`atomic_open`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textless.data.manifest import derive_id
from textless.data.units import (
    InvalidUnitsError,
    UnitDataset,
    UnitMeta,
    UnitSequence,
    _check_id,
    _id_problem,
    _units_problem,
    dedup,
    read_units,
    write_units,
)
from textless.errors import ConfigError, FormatError
from textless.utils.atomic import atomic_open
from textless.utils.registry import Registry

MAX_VOCAB = 2**32
_UNITS_LINE = re.compile(r"[0-9\s]*", re.ASCII)
_UINT = re.compile(r"[0-9]+", re.ASCII)
_FAIRSEQ_OVERWRITE_FLAG = "#fairseq:overwrite"
_SLAMKIT_KEYS = ("units", "duration", "file_name")

Units = Iterable[UnitSequence] | UnitDataset


def _default_tokenizer(tokenizer: dict[str, Any] | None) -> dict[str, Any]:
    return dict(tokenizer) if tokenizer is not None else {"name": "unknown"}


# --------------------------------------------------------------------------------------------------------------------
# Shared parsing helpers
# --------------------------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, without line endings ("\\n" or "\\r\\n"); a final newline ends the last line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FormatError(path, "no such file") from None
    except UnicodeDecodeError as e:
        raise FormatError(path, f"not UTF-8 text ({e.reason})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _parse_units(text: str, path: Path, line: int, vocab_size: int | None) -> np.ndarray:
    """Space-separated non-negative ints -> int64 `[L]`, checked against `vocab_size` (or 2**32 when unknown)."""
    tokens = text.split()
    if not tokens:
        raise FormatError(path, "empty utterance", line)
    if not _UNITS_LINE.fullmatch(text):
        bad = next(t for t in tokens if not _UINT.fullmatch(t))
        raise FormatError(path, f"invalid unit {bad!r} (expected a non-negative integer)", line)
    return _checked_units([int(t) for t in tokens], path, line, vocab_size)


def _checked_units(values: list[int], path: Path, line: int, vocab_size: int | None) -> np.ndarray:
    limit = vocab_size if vocab_size is not None else MAX_VOCAB
    bad = next((v for v in values if not 0 <= v < limit), None)
    if bad is not None:
        raise FormatError(path, f"unit {bad} out of range [0, {limit})", line)
    return np.array(values, dtype=np.int64)


def _json_int_list(value: Any, key: str, path: Path, line: int) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise FormatError(path, f"'{key}' must be a list of integers", line)
    return value


def _infer_vocab_size(rows: Sequence[np.ndarray], path: Path, hint: str) -> int:
    if not rows:
        raise FormatError(path, f"no utterances, so vocab_size cannot be inferred ({hint})")
    return max(int(r.max()) for r in rows) + 1


def _sequences(ids: Sequence[str], rows: Sequence[np.ndarray], deduplicate: bool) -> list[UnitSequence]:
    if deduplicate:
        return [UnitSequence(utt_id, *dedup(units)) for utt_id, units in zip(ids, rows, strict=True)]
    return [UnitSequence(utt_id, units) for utt_id, units in zip(ids, rows, strict=True)]


# --------------------------------------------------------------------------------------------------------------------
# Shared writing helpers
# --------------------------------------------------------------------------------------------------------------------


def _vocab_size_of(data: Units, vocab_size: int | None) -> int | None:
    if vocab_size is None and isinstance(data, UnitDataset):
        return data.meta.vocab_size
    return vocab_size


def _export_checked(data: Units, vocab_size: int | None) -> Iterator[UnitSequence]:
    """Yield the sequences of `data`, refusing what the anchor files cannot hold (bad id, empty, out of range)."""
    for seq in data:
        problem = _id_problem(seq.id)
        if problem:
            raise InvalidUnitsError(problem)
        problem = _units_problem(seq.units, vocab_size or MAX_VOCAB, no_repeats=False)
        if problem:
            raise InvalidUnitsError(f"utterance {seq.id!r}: {problem}")
        yield seq


def _units_text(units: np.ndarray) -> str:
    return " ".join(map(str, units.tolist()))


# --------------------------------------------------------------------------------------------------------------------
# fairseq .km + dict.km.txt + manifest .tsv
# --------------------------------------------------------------------------------------------------------------------


def read_fairseq_dict(dict_path: str | Path) -> int:
    """Number of symbols in a fairseq `dict.km.txt` (`<unit> <count>` lines); the symbols must be 0..K-1."""
    path = Path(dict_path)
    seen: dict[int, int] = {}
    for line_no, text in enumerate(_read_lines(path), 1):
        fields = text.split()
        if fields and fields[-1] == _FAIRSEQ_OVERWRITE_FLAG:
            fields.pop()
        if len(fields) != 2:
            raise FormatError(path, f"expected '<unit> <count>', got {text!r}", line_no)
        symbol, count = fields
        if not _UINT.fullmatch(symbol):
            raise FormatError(path, f"symbol {symbol!r} is not a unit (a non-negative integer)", line_no)
        if not _UINT.fullmatch(count):
            raise FormatError(path, f"invalid count {count!r} (expected a non-negative integer)", line_no)
        if int(symbol) in seen:
            raise FormatError(path, f"duplicate symbol {symbol} (first on line {seen[int(symbol)]})", line_no)
        seen[int(symbol)] = line_no
    if not seen:
        raise FormatError(path, "no symbols")
    if max(seen) != len(seen) - 1:
        missing = sorted(set(range(len(seen))) - set(seen))
        raise FormatError(path, f"symbols must be the units 0..{len(seen) - 1}; missing {missing[:5]}")
    return len(seen)


def read_fairseq_manifest_ids(manifest_tsv: str | Path) -> list[str]:
    """Utterance ids of a fairseq audio manifest: each `relpath<TAB>num_samples` line's relpath without extension."""
    path = Path(manifest_tsv)
    lines = _read_lines(path)
    if not lines:
        raise FormatError(path, "empty manifest (line 1 must be the audio root directory)")
    ids: list[str] = []
    seen: dict[str, int] = {}
    for line_no, text in enumerate(lines[1:], 2):
        relpath, tab, _ = text.partition("\t")
        if not tab or not relpath:
            raise FormatError(path, "expected '<relative audio path>\\t<num samples>'", line_no)
        try:
            utt_id = derive_id(relpath)  # the project-wide rule: relative path, no extension, '/' separators
        except ValueError as e:
            raise FormatError(path, f"bad audio path {relpath!r} ({e})", line_no) from None
        _check_id(utt_id, path, line_no, seen)
        ids.append(utt_id)
    return ids


def read_ids_file(ids_path: str | Path) -> list[str]:
    """One utterance id per line (as `write_fairseq_km(ids_path=...)` writes them); checked for empties/duplicates."""
    path = Path(ids_path)
    lines = _read_lines(path)
    seen: dict[str, int] = {}
    for line_no, utt_id in enumerate(lines, 1):
        _check_id(utt_id, path, line_no, seen)
    return lines


def _km_ids(num: int, km_path: Path, ids: Sequence[str] | None, ids_path: str | Path | None,
            manifest_tsv: str | Path | None) -> list[str]:
    given = [name for name, value in (("ids", ids), ("ids_path", ids_path), ("manifest_tsv", manifest_tsv))
             if value is not None]
    if len(given) > 1:
        raise ConfigError(f"give at most one of ids, ids_path, manifest_tsv (got {', '.join(given)})")
    if ids is not None:
        if isinstance(ids, str | bytes | os.PathLike):
            raise TypeError("ids must be a sequence of strings; pass a file of ids as ids_path=")
        ids = list(ids)
        if len(ids) != num:
            raise FormatError(km_path, f"has {num} utterances but {len(ids)} ids were given")
        _check_id_list(ids)
        return ids
    source = ids_path if ids_path is not None else manifest_tsv
    if source is None:
        return [str(i) for i in range(num)]
    ids = read_ids_file(source) if ids_path is not None else read_fairseq_manifest_ids(source)
    if len(ids) != num:
        what = "ids file" if ids_path is not None else "manifest"
        raise FormatError(km_path, f"has {num} utterances but the {what} {source} lists {len(ids)}")
    return ids


def _check_id_list(ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for utt_id in ids:
        problem = _id_problem(utt_id) if isinstance(utt_id, str) else f"id {utt_id!r} is not a string"
        if problem or utt_id in seen:
            raise InvalidUnitsError(problem or f"duplicate id {utt_id!r}")
        seen.add(utt_id)


def read_fairseq_km(km_path: str | Path, *, ids: Sequence[str] | None = None, ids_path: str | Path | None = None,
                    manifest_tsv: str | Path | None = None, dict_path: str | Path | None = None,
                    frame_rate: float = 50.0, tokenizer: dict[str, Any] | None = None,
                    deduplicate: bool = False) -> tuple[list[UnitSequence], UnitMeta]:
    """Read a fairseq `.km` file (frame-level units, one utterance per line).

    Ids come from `ids`, an ids file (`ids_path`), the fairseq manifest (`manifest_tsv`) or default to "0".."N-1";
    their count must match the .km lines. vocab_size is the number of symbols of `dict_path`, else max unit + 1.
    `deduplicate=True` run-length encodes every utterance (durations in frames at `frame_rate` Hz).
    """
    path = Path(km_path)
    vocab_size = read_fairseq_dict(dict_path) if dict_path is not None else None
    rows = [_parse_units(text, path, n, vocab_size) for n, text in enumerate(_read_lines(path), 1)]
    utt_ids = _km_ids(len(rows), path, ids, ids_path, manifest_tsv)
    if vocab_size is None:
        vocab_size = _infer_vocab_size(rows, path, "pass dict_path")
    meta = UnitMeta(_default_tokenizer(tokenizer), frame_rate, vocab_size, deduplicated=deduplicate)
    return _sequences(utt_ids, rows, deduplicate), meta


def _grow_counts(counts: np.ndarray, frames: np.ndarray) -> np.ndarray:
    new = np.bincount(frames)
    if len(new) > len(counts):
        new[: len(counts)] += counts
        return new
    counts[: len(new)] += new
    return counts


def write_fairseq_km(data: Units, km_path: str | Path, *, dict_path: str | Path | None = None,
                     ids_path: str | Path | None = None, vocab_size: int | None = None) -> Path:
    """Write frame-level units (durations expanded) as a fairseq `.km`; optionally `dict.km.txt` and an ids file.

    The dict lists every unit 0..vocab_size-1 (vocab_size from the dataset's meta, the argument, or max unit + 1)
    with its frame count in the data. Returns `km_path`.
    """
    vocab_size = _vocab_size_of(data, vocab_size)
    counts = np.zeros(vocab_size or 0, dtype=np.int64)
    with ExitStack() as stack:
        km = stack.enter_context(atomic_open(km_path))
        ids_file = stack.enter_context(atomic_open(ids_path)) if ids_path is not None else None
        for seq in _export_checked(data, vocab_size):
            frames = seq.expand()
            km.write(_units_text(frames) + "\n")
            if ids_file is not None:
                ids_file.write(seq.id + "\n")
            counts = _grow_counts(counts, frames)
        if dict_path is not None:
            dict_file = stack.enter_context(atomic_open(dict_path))
            dict_file.writelines(f"{unit} {count}\n" for unit, count in enumerate(counts.tolist()))
    return Path(km_path)


# --------------------------------------------------------------------------------------------------------------------
# GSLM quantize output: "<stem>|u u u"
# --------------------------------------------------------------------------------------------------------------------


def read_gslm_units(path: str | Path, *, frame_rate: float = 50.0, vocab_size: int | None = None,
                    deduplicate: bool = False, tokenizer: dict[str, Any] | None = None,
                    ) -> tuple[list[UnitSequence], UnitMeta]:
    """Read GSLM `name|u u u` lines (frame-level units; id = name, split at the last '|')."""
    path = Path(path)
    ids: list[str] = []
    rows: list[np.ndarray] = []
    seen: dict[str, int] = {}
    for line_no, text in enumerate(_read_lines(path), 1):
        name, bar, units = text.rpartition("|")
        if not bar:
            raise FormatError(path, "expected '<name>|<units>'", line_no)
        _check_id(name, path, line_no, seen)
        ids.append(name)
        rows.append(_parse_units(units, path, line_no, vocab_size))
    if vocab_size is None:
        vocab_size = _infer_vocab_size(rows, path, "pass vocab_size")
    meta = UnitMeta(_default_tokenizer(tokenizer), frame_rate, vocab_size, deduplicated=deduplicate)
    return _sequences(ids, rows, deduplicate), meta


def write_gslm_units(data: Units, path: str | Path) -> Path:
    """Write `id|u u u` lines of frame-level units (durations expanded). Returns `path`."""
    with atomic_open(path) as f:
        for seq in _export_checked(data, _vocab_size_of(data, None)):
            f.write(f"{seq.id}|{_units_text(seq.expand())}\n")
    return Path(path)


# --------------------------------------------------------------------------------------------------------------------
# slamkit features.jsonl
# --------------------------------------------------------------------------------------------------------------------


def _slamkit_line(text: str, path: Path, line: int, vocab_size: int) -> tuple[str, np.ndarray, np.ndarray]:
    if not text.strip():
        raise FormatError(path, "empty line", line)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(path, f"invalid JSON ({e.msg} at column {e.colno})", line) from None
    if not isinstance(record, dict):
        raise FormatError(path, f"expected a JSON object, got {type(record).__name__}", line)
    for key in _SLAMKIT_KEYS:
        if key not in record:
            raise FormatError(path, f"missing key '{key}'", line)
    unknown = sorted(set(record) - set(_SLAMKIT_KEYS))
    if unknown:
        raise FormatError(path, f"unknown key {unknown[0]!r} (it would be lost)", line)
    if not isinstance(record["file_name"], str):
        raise FormatError(path, "'file_name' must be a string", line)
    units = _json_int_list(record["units"], "units", path, line)
    durations = _json_int_list(record["duration"], "duration", path, line)
    if not units:
        raise FormatError(path, "empty utterance", line)
    if len(durations) != len(units):
        raise FormatError(path, f"'duration' has {len(durations)} items but 'units' has {len(units)}", line)
    bad = next((i for i, d in enumerate(durations) if d < 1), None)
    if bad is not None:
        raise FormatError(path, f"duration {durations[bad]} at position {bad} is < 1", line)
    return record["file_name"], _checked_units(units, path, line, vocab_size), np.array(durations, dtype=np.int64)


def _first_repeat(units: np.ndarray) -> int | None:
    same = np.flatnonzero(units[1:] == units[:-1])
    return int(same[0]) + 1 if same.size else None


def _slamkit_is_deduplicated(rows: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> bool:
    """True unless some line repeats a unit; then every duration must be 1 (slamkit dedup=False, frame-level)."""
    repeat = next(((n, p) for n, (_, u, _) in enumerate(rows, 1) if (p := _first_repeat(u)) is not None), None)
    if repeat is None:
        return True
    long_line = next((n for n, (_, _, d) in enumerate(rows, 1) if d.max() > 1), None)
    if long_line is not None:
        line, pos = repeat
        raise FormatError(path, f"consecutive duplicate unit {int(rows[line - 1][1][pos])} at position {pos}, but "
                                f"line {long_line} has durations > 1 (a file must be all deduplicated or all "
                                f"frame-level)", line)
    return False


def read_slamkit_features(path: str | Path, *, frame_rate: float = 25.0, vocab_size: int = 500,
                          tokenizer: dict[str, Any] | None = None) -> tuple[list[UnitSequence], UnitMeta]:
    """Read slamkit `features.jsonl`; id = file_name verbatim, durations = slamkit's `duration` (frames).

    A file where some line repeats a unit and all durations are 1 (slamkit `dedup=False`) becomes a dataset that is
    not deduplicated (no durations).
    """
    path = Path(path)
    rows = []
    seen: dict[str, int] = {}
    for line_no, text in enumerate(_read_lines(path), 1):
        rows.append(_slamkit_line(text, path, line_no, vocab_size))
        _check_id(rows[-1][0], path, line_no, seen)
    deduplicated = _slamkit_is_deduplicated(rows, path)
    sequences = [UnitSequence(utt_id, units, durations if deduplicated else None) for utt_id, units, durations in rows]
    meta = UnitMeta(_default_tokenizer(tokenizer), frame_rate, vocab_size, deduplicated=deduplicated)
    return sequences, meta


def write_slamkit_features(data: Units, path: str | Path, *, deduplicate: bool = True) -> Path:
    """Write slamkit `features.jsonl` lines (`json.dumps` of units, duration, file_name = id). Returns `path`.

    With `deduplicate` (the default) every utterance is run-length encoded first (so data that is not deduplicated
    gets real durations); `deduplicate=False` writes frame-level units with durations all 1, like slamkit's
    `dedup=False`.
    """
    with atomic_open(path) as f:
        for seq in _export_checked(data, _vocab_size_of(data, None)):
            if deduplicate:
                seq = seq.deduplicated()
                units, durations = seq.units.tolist(), seq.durations.tolist()
            else:
                units = seq.expand().tolist()
                durations = [1] * len(units)
            f.write(json.dumps({"units": units, "duration": durations, "file_name": seq.id}) + "\n")
    return Path(path)


# --------------------------------------------------------------------------------------------------------------------
# dGSLM two-channel files: <prefix>.unitA / <prefix>.unitB + dict.unitA.txt / dict.unitB.txt
# --------------------------------------------------------------------------------------------------------------------

DGSLM_CHANNELS = ("A", "B")


def _dgslm_paths(prefix: str | Path, channels: Sequence[str]) -> tuple[list[Path], list[Path]]:
    prefix = Path(prefix)
    return ([prefix.with_name(f"{prefix.name}.unit{name}") for name in channels],
            [prefix.with_name(f"dict.unit{name}.txt") for name in channels])


def read_fairseq_symbols(dict_path: str | Path) -> list[int]:
    """The unit symbols of a fairseq Dictionary file in its order (`<unit> <count>` lines; specials are not listed
    in these files). Symbols must be distinct non-negative integers, in any order."""
    path = Path(dict_path)
    symbols: dict[int, int] = {}
    for line_no, text in enumerate(_read_lines(path), 1):
        fields = text.split()
        if fields and fields[-1] == _FAIRSEQ_OVERWRITE_FLAG:
            fields.pop()
        if len(fields) != 2 or not _UINT.fullmatch(fields[0]) or not _UINT.fullmatch(fields[1]):
            raise FormatError(path, f"expected '<unit> <count>' (non-negative integers), got {text!r}", line_no)
        if int(fields[0]) in symbols:
            raise FormatError(path, f"duplicate symbol {fields[0]} (first on line {symbols[int(fields[0])]})", line_no)
        symbols[int(fields[0])] = line_no
    if not symbols:
        raise FormatError(path, "no symbols")
    return list(symbols)


def read_dgslm_units(prefix: str | Path, *, channels: Sequence[str] = DGSLM_CHANNELS, ids_path: str | Path | None = None,
                     vocab_size: int | None = None, frame_rate: float = 50.0,
                     tokenizer: dict[str, Any] | None = None) -> tuple[list[UnitSequence], UnitMeta]:
    """Read dGSLM's parallel ``<prefix>.unit<channel>`` files into conversations (frame-major interleaved, as a
    channel dataset stores them); the dicts beside them, when present, must be equal and hold every unit used.
    vocab_size: the argument, else max dict symbol + 1, else max unit + 1."""
    data_paths, dict_paths = _dgslm_paths(prefix, channels)
    lines = [_read_lines(path) for path in data_paths]
    if len({len(x) for x in lines}) != 1:
        counts = ", ".join(f"{p.name}: {len(x)}" for p, x in zip(data_paths, lines, strict=True))
        raise FormatError(data_paths[1], f"the channel files have different numbers of conversations ({counts})")
    symbols = None
    present = [p for p in dict_paths if p.is_file()]
    if present:
        if len(present) != len(dict_paths):
            raise FormatError(prefix, f"found {present[0].name} but not {next(p.name for p in dict_paths if p not in present)}")
        parsed = [read_fairseq_symbols(p) for p in dict_paths]
        if any(sorted(x) != sorted(parsed[0]) for x in parsed):
            raise FormatError(dict_paths[1], f"holds other units than {dict_paths[0].name}")
        symbols = set(parsed[0])
        vocab_size = vocab_size or max(symbols) + 1
    rows: list[np.ndarray] = []
    for line_no, texts in enumerate(zip(*lines, strict=True), 1):
        channel_rows = [_parse_units(text, path, line_no, vocab_size) for text, path in zip(texts, data_paths, strict=True)]
        if len({len(r) for r in channel_rows}) != 1:
            raise FormatError(data_paths[1], f"conversation has {[len(r) for r in channel_rows]} frames per channel "
                                             "(the channels must be frame-aligned)", line_no)
        if symbols is not None:
            missing = set(np.unique(np.concatenate(channel_rows)).tolist()) - symbols
            if missing:
                raise FormatError(data_paths[0], f"unit {min(missing)} is not in {dict_paths[0].name}", line_no)
        rows.append(np.stack(channel_rows, axis=1).reshape(-1))
    ids = _km_ids(len(rows), data_paths[0], None, ids_path, None)
    if vocab_size is None:
        vocab_size = _infer_vocab_size(rows, data_paths[0], "pass vocab_size or put dict.unitA.txt beside the files")
    meta = UnitMeta(_default_tokenizer(tokenizer), frame_rate, vocab_size, deduplicated=False,
                    channels=tuple(channels))
    return [UnitSequence(i, r) for i, r in zip(ids, rows, strict=True)], meta


def write_dgslm_units(data: UnitDataset, prefix: str | Path, *, ids_path: str | Path | None = None) -> Path:
    """Write a dataset with channels as dGSLM's ``<prefix>.unit<channel>`` files and ``dict.unit<channel>.txt``
    beside them (every unit 0..vocab_size-1 with its frame count over all channels, most frequent first, ties by
    unit: fairseq's finalize order; the same dict for each channel, as dGSLM's). Returns the first channel file."""
    channels = data.meta.channels
    if channels is None:
        raise InvalidUnitsError(f"{data.path}: dgslm files hold two-channel conversations; this dataset has one stream")
    data_paths, dict_paths = _dgslm_paths(prefix, channels)
    counts = np.zeros(data.meta.vocab_size, dtype=np.int64)
    with ExitStack() as stack:
        files = [stack.enter_context(atomic_open(p)) for p in data_paths]
        ids_file = stack.enter_context(atomic_open(ids_path)) if ids_path is not None else None
        for seq in data:
            frames = seq.units.reshape(-1, len(channels))
            for c, f in enumerate(files):
                f.write(_units_text(frames[:, c]) + "\n")
            if ids_file is not None:
                ids_file.write(seq.id + "\n")
            counts += np.bincount(seq.units, minlength=len(counts))
        order = sorted(range(len(counts)), key=lambda u: (-counts[u], u))
        for p in dict_paths:
            stack.enter_context(atomic_open(p)).writelines(f"{u} {counts[u]}\n" for u in order)
    return data_paths[0]


# --------------------------------------------------------------------------------------------------------------------
# Registry and top-level helpers
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnchorFormat:
    """An external unit file format: `read(src, **kw) -> (sequences, meta)`, `write(data, dst, **kw) -> Path`."""

    name: str
    description: str
    read: Callable[..., tuple[list[UnitSequence], UnitMeta]]
    write: Callable[..., Path]
    channels: bool = False     # the format holds conversations with channels (`read_units(multichannel=True)`)


REGISTRY: Registry[AnchorFormat] = Registry("unit file format")
for _fmt in (
        AnchorFormat("fairseq_km", "fairseq/HuBERT .km (+ dict.km.txt, manifest .tsv)", read_fairseq_km,
                     write_fairseq_km),
        AnchorFormat("gslm", "GSLM quantize output, 'name|u u u' lines", read_gslm_units, write_gslm_units),
        AnchorFormat("slamkit", "slamkit features.jsonl (units, duration, file_name)", read_slamkit_features,
                     write_slamkit_features),
        AnchorFormat("dgslm", "dGSLM two-channel <prefix>.unitA / .unitB (+ dict.unitA.txt / dict.unitB.txt)",
                     read_dgslm_units, write_dgslm_units, channels=True),
):
    REGISTRY.register(_fmt.name, _fmt)


def get_format(fmt: str) -> AnchorFormat:
    return REGISTRY.get(fmt)


def import_units(src: str | Path, dst: str | Path, fmt: str, *, encoding: str = "binary", overwrite: bool = False,
                 **kw: Any) -> Path:
    """Read the anchor file `src` in format `fmt` (reader options in `kw`) and write a unit dataset at `dst`."""
    sequences, meta = get_format(fmt).read(src, **kw)
    return write_units(dst, sequences, meta, encoding=encoding, overwrite=overwrite)


def export_units(src_dir: str | Path, dst: str | Path, fmt: str, **kw: Any) -> Path:
    """Write the unit dataset at `src_dir` as an anchor file `dst` in format `fmt` (writer options in `kw`)."""
    anchor = get_format(fmt)
    data = read_units(src_dir, multichannel=anchor.channels)
    if anchor.channels and data.meta.channels is None:
        raise InvalidUnitsError(f"{src_dir}: format {fmt!r} holds conversations with channels; this dataset has one "
                                "stream")
    return anchor.write(data, dst, **kw)
