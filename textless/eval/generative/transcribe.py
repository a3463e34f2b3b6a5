"""Transcripts of generated / resynthesized speech, with a cache (`textless eval-resynth` scores resynthesis).

`transcribe_records` turns the records of a generations directory (`textless generate ... vocoder=`) into one
transcript each. With ``include_prompt`` (slamkit's default: ``remove_prompt`` unset, so the transcript covers the
prompt too) the record's prompt audio and continuation audio are concatenated and transcribed together; without it
only the continuation is. A record without audio (an empty continuation: ``"audio": null``) gets the prompt's
transcript, or ``""`` without the prompt. Identical audio (the same files, unchanged) is transcribed once.

The cache (`TranscriptCache`, a JSON file) maps (ASR engine name, audio files with their size and mtime) to the
transcript; the name is the engine that runs (``asr.name``: with ``asr=auto``, the engine it picked), so a cache
shared by two engines never hands one engine's transcripts to the other. A re-run (another text LM, another report)
does not run the ASR again, and an interrupted run resumes (the cache is saved, atomically, after every ASR batch).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textless.errors import FormatError, TextlessError
from textless.utils.atomic import atomic_write_text
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

CACHE = artifact("textless.transcripts", 1, "a transcript cache")


class TranscriptCache:
    """A JSON file of ``{key: transcript}``; keys come from `audio_key`. `path` None: in memory only."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, str] = {}
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise FormatError(self.path, f"unreadable transcript cache ({e}); delete it to start afresh") from e
            try:
                CACHE.check(data, self.path)
            except FormatError as e:
                raise FormatError(self.path, f"{e.reason}; delete it to start afresh") from None
            self.entries = dict(data["entries"])

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def put(self, key: str, text: str) -> None:
        self.entries[key] = text

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({**CACHE.header(),
                                                     "entries": self.entries}, indent=1) + "\n")


def audio_key(asr: str, directory: Path, files: Sequence[Path]) -> str:
    """Cache key of the concatenation of `files` transcribed by `asr`: names (relative to `directory` when inside it,
    so a moved generations directory keeps its cache; else absolute), sizes and mtimes."""
    def name(f: Path) -> str:
        return f.relative_to(directory).as_posix() if f.is_relative_to(directory) else f.resolve().as_posix()

    stamps = [[name(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return json.dumps([asr, stamps])


def load_waveform(path: Path, sample_rate: int) -> np.ndarray:
    """A mono float32 waveform at `sample_rate` (any format `textless.audio.load_audio` reads)."""
    from textless.audio import load_audio

    return load_audio(path, sample_rate)[0].numpy().astype(np.float32, copy=False)


def record_audio(directory: Path, record: dict, include_prompt: bool) -> list[Path]:
    """The audio files to transcribe (in order) for one generations record; checks they exist."""
    rels = ([record["prompt_audio"]] if include_prompt and record.get("prompt_audio") else []) + \
        ([record["audio"]] if record.get("audio") else [])
    files = [directory / rel for rel in rels]
    for f in files:
        if not f.is_file():
            raise TextlessError(f"'{directory / 'generations.jsonl'}': record {record.get('id')!r} names audio "
                                f"'{f.relative_to(directory)}', which does not exist in {directory}")
    return files


@dataclass
class TranscriptionStats:
    transcribed: int   # distinct audio inputs sent to the ASR in this run
    cached: int        # distinct audio inputs found in the cache
    silent: int        # records with no audio to transcribe (transcript "")


def transcribe_records(directory: str | Path, records: Sequence[dict], asr, asr_name: str, *,
                       include_prompt: bool = True, cache: TranscriptCache | None = None,
                       batch_size: int = 8) -> tuple[list[str], TranscriptionStats]:
    """One transcript per record (see the module docstring); the ASR sees each distinct audio input once.
    `asr_name` names the engine in the cache keys: ``asr.name``, never the spec ``auto``."""
    directory = Path(directory)
    files = [record_audio(directory, r, include_prompt) for r in records]
    return transcribe_files(files, asr, asr_name, directory=directory, cache=cache, batch_size=batch_size)


def transcribe_files(inputs: Sequence[Sequence[Path]], asr, asr_name: str, *, directory: Path,
                     cache: TranscriptCache | None = None,
                     batch_size: int = 8) -> tuple[list[str], TranscriptionStats]:
    """One transcript per input: the concatenation of its files (none: ``""``), each distinct input transcribed once,
    in batches of `batch_size`, through `cache` (saved after every batch: an interrupted run resumes). Cache keys
    name files relative to `directory` when inside it (`audio_key`)."""
    if asr_name == "auto":
        raise TextlessError("transcribe: asr_name must name the engine that runs (asr.name), not 'auto' "
                            "(cached transcripts of different engines would be mixed)")
    cache = cache if cache is not None else TranscriptCache(None)
    keys = [audio_key(asr_name, directory, f) if f else None for f in inputs]
    todo: dict[str, Sequence[Path]] = {}
    for key, f in zip(keys, inputs):
        if key is not None and cache.get(key) is None:
            todo.setdefault(key, f)
    distinct = {k for k in keys if k is not None}
    if todo:
        logger.info(f"transcribing {len(todo)} audio inputs with {asr_name} ({len(distinct) - len(todo)} cached)")
    pending = list(todo.items())
    for start in range(0, len(pending), batch_size):
        batch = pending[start: start + batch_size]
        wavs = [np.concatenate([load_waveform(f, asr.sample_rate) for f in fs]) for _, fs in batch]
        texts = asr.transcribe(wavs)
        if len(texts) != len(wavs):
            raise TextlessError(f"ASR '{asr_name}' returned {len(texts)} transcripts for {len(wavs)} inputs")
        for (key, _), text in zip(batch, texts):
            cache.put(key, text.strip())
        cache.save()
    transcripts = [(cache.get(k) or "") if k is not None else "" for k in keys]
    stats = TranscriptionStats(transcribed=len(todo), cached=len(distinct) - len(todo),
                               silent=sum(k is None for k in keys))
    return transcripts, stats
