"""The examples of a `textless build-lslm` set: `read_lslm_examples(directory, split)` -> `LSLMExample`s.

``<directory>/examples.jsonl``: one JSON object per example (paths relative to the directory)::

    {"id", "split": train | valid | test, "speaking": wav, "listening": wav (same length), "sample_rate": Hz,
     "samples", "seconds", "text", "speaking_voice", "onset": s | null,
     "interruption": {"word", "voice", "start": s, "seconds"} | null, "noise": {"kind", "snr_db", "file"?} | null,
     "listening_gain"}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textless.errors import ConfigError, FormatError, TextlessError
from textless.utils.jsonl import check_types, read_records

SPLITS = ("train", "valid", "test")
MANIFEST = "examples.jsonl"


@dataclass(frozen=True)
class LSLMExample:
    """One example of a built set (paths resolved; times in seconds, sample_rate in Hz)."""

    id: str
    split: str
    speaking: Path                    # mono wav: the speaking utterance
    listening: Path                   # mono wav of the same length: the listening channel
    sample_rate: int                  # Hz
    samples: int                      # length of both channels
    seconds: float                    # samples / sample_rate
    text: str                         # the sentence spoken
    speaking_voice: str               # engine:voice
    onset: float | None               # s: the interruption's speech start in the listening channel; None: none
    interruption_word: str | None
    interruption_voice: str | None    # engine:voice
    interruption_start: float | None  # s: the clip's first sample (<= onset)
    interruption_seconds: float | None  # the clip's length (its speech)
    noise_kind: str | None            # white | pink | tone | recording; None: clean
    snr_db: float | None              # dB, relative to the interruption clip's speech power
    noise_file: str | None            # the recording, for kind "recording"
    listening_gain: float             # the listening channel's scale (< 1 only where noise would clip)

    @property
    def interrupted(self) -> bool:
        return self.onset is not None


_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "split": (str,), "speaking": (str,), "listening": (str,), "sample_rate": (int,), "samples": (int,),
    "seconds": (int, float), "text": (str,), "speaking_voice": (str,), "onset": (int, float, type(None)),
    "interruption": (dict, type(None)), "noise": (dict, type(None)), "listening_gain": (int, float)}


def _example(directory: Path, path: Path, line: int, record: Any) -> LSLMExample:
    check_types(path, line, record, _TYPES)
    cut, noise = record["interruption"], record["noise"]
    if (cut is None) != (record["onset"] is None):
        raise FormatError(path, "'onset' and 'interruption' must both be null or both be set", line)
    try:
        if cut is not None:
            word, voice, start, length = str(cut["word"]), str(cut["voice"]), float(cut["start"]), float(cut["seconds"])
        else:
            word = voice = start = length = None
        kind, snr = (str(noise["kind"]), float(noise["snr_db"])) if noise is not None else (None, None)
    except (KeyError, TypeError, ValueError) as err:
        raise FormatError(path, f"bad 'interruption' or 'noise' entry ({type(err).__name__}: {err})", line) from None
    audio = {}
    for key in ("speaking", "listening"):
        audio[key] = (directory / record[key]).resolve()
        if not audio[key].is_file():
            raise FormatError(path, f"{key} audio '{audio[key]}' does not exist", line)
    return LSLMExample(record["id"], record["split"], audio["speaking"], audio["listening"], record["sample_rate"],
                       record["samples"], float(record["seconds"]), record["text"], record["speaking_voice"],
                       None if record["onset"] is None else float(record["onset"]), word, voice, start, length, kind,
                       snr, None if noise is None else noise.get("file"), float(record["listening_gain"]))


def read_lslm_examples(directory: str | Path, split: str) -> list[LSLMExample]:
    """The examples of `split` (train / valid / test) of a set built by `textless build-lslm`, in manifest order.
    `FormatError` naming ``<directory>/examples.jsonl`` and the line for a malformed manifest or a missing audio
    file."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise TextlessError(f"'{path}' does not exist: {directory} is not a set built by `textless build-lslm` (or "
                            f"its build has not finished)")
    out = []
    for line, record in read_records(path):
        example = _example(directory, path, line, record)
        if example.split not in SPLITS:
            raise FormatError(path, f"unknown split {example.split!r}", line)
        if example.split == split:
            out.append(example)
    return out
