"""Reading a duplex S2S set built by `textless build-duplex-s2s` (`textless.jobs.build_duplex_s2s`).

A set holds two-stream conversations (seed 003, sec. 4.1-4.2 and 5.2): a stereo 16 kHz wav per conversation (channel
0 = the user, channel 1 = the agent, zeros where a role is silent), its `textless.dialogue.timeline` JSON (speakers
``("user", "agent")``) and the agent's turns (start, end) in seconds after any barge-in cut. The test split also has
an ``impatient`` copy of every conversation (the same draws, the silences before user turns halved). The manifest
(``manifest.jsonl``, one JSON object per conversation and set; paths relative to the set's directory) holds::

    id, split, set ("normal" | "impatient"), source ("tts" | "dialogues"), stereo, timeline, sample_rate (Hz),
    samples, seconds, agent_turns ([[start, end], ...] s), barge_ins, user_voice, agent_voice, seed

`read_duplex_s2s` gives `DuplexS2SConversation` records; the models' layer reads these, the job writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from textless.dialogue.timeline import Timeline, read_timeline
from textless.errors import ConfigError, FormatError, TextlessError
from textless.utils.jsonl import check_types, read_records

MANIFEST = "manifest.jsonl"
SPLITS = ("train", "valid", "test")
SETS = ("normal", "impatient")      # impatient: test only, the silences before user turns halved
SOURCES = ("tts", "dialogues")


@dataclass(frozen=True)
class DuplexS2SConversation:
    """One conversation of a built set (paths resolved; times in seconds, sample_rate in Hz)."""

    id: str
    split: str                                # train | valid | test
    set: str                                  # normal | impatient
    source: str                               # tts | dialogues
    stereo: Path                              # 16-bit wav [samples, 2]: channel 0 user, channel 1 agent
    timeline: Path                            # textless.dialogue.timeline JSON, speakers ("user", "agent")
    agent_turns: list[tuple[float, float]]    # s: [start, end) of every agent turn, after any barge-in cut
    sample_rate: int                          # Hz
    samples: int                              # length of both channels
    seconds: float                            # samples / sample_rate
    barge_ins: int                            # agent turns cut by the user
    user_voice: str | None                    # engine:voice (None: unknown, e.g. a recording)
    agent_voice: str | None

    def load_timeline(self) -> Timeline:
        return read_timeline(self.timeline)

    def audio(self) -> np.ndarray:
        """[2, samples] int16: user, agent."""
        data, rate = sf.read(self.stereo, dtype="int16", always_2d=True)
        if rate != self.sample_rate or data.shape != (self.samples, 2):
            raise TextlessError(f"{self.stereo}: expected {self.samples} samples x 2 channels at {self.sample_rate} "
                                f"Hz, got {data.shape[0]} x {data.shape[1]} at {rate} Hz")
        return np.ascontiguousarray(data.T)


_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "split": (str,), "set": (str,), "source": (str,), "stereo": (str,), "timeline": (str,),
    "sample_rate": (int,), "samples": (int,), "seconds": (int, float), "agent_turns": (list,), "barge_ins": (int,),
    "user_voice": (str, type(None)), "agent_voice": (str, type(None))}


def _turns(path: Path, line: int, value: list, seconds: float) -> list[tuple[float, float]]:
    turns = []
    for turn in value:
        if (not isinstance(turn, list) or len(turn) != 2
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in turn)):
            raise FormatError(path, f"'agent_turns' must be a list of [start, end] seconds, got {turn!r}", line)
        start, end = float(turn[0]), float(turn[1])
        if not 0 <= start <= end <= seconds + 1e-9:
            raise FormatError(path, f"agent turn [{start}, {end}] is not inside [0, {seconds}] s", line)
        turns.append((start, end))
    return turns


def _conversation(directory: Path, path: Path, line: int, record: Any) -> DuplexS2SConversation:
    check_types(path, line, record, _TYPES)
    for key, allowed in (("split", SPLITS), ("set", SETS), ("source", SOURCES)):
        if record[key] not in allowed:
            raise FormatError(path, f"unknown {key} {record[key]!r} (one of {', '.join(allowed)})", line)
    if record["sample_rate"] <= 0 or record["samples"] < 1:
        raise FormatError(path, "'sample_rate' and 'samples' must be positive", line)
    seconds = float(record["seconds"])
    files = {}
    for key in ("stereo", "timeline"):
        files[key] = (directory / record[key]).resolve()
        if not files[key].is_file():
            raise FormatError(path, f"{key} file '{files[key]}' does not exist", line)
    return DuplexS2SConversation(record["id"], record["split"], record["set"], record["source"], files["stereo"],
                                 files["timeline"], _turns(path, line, record["agent_turns"], seconds),
                                 record["sample_rate"], record["samples"], seconds, record["barge_ins"],
                                 record["user_voice"], record["agent_voice"])


def read_duplex_s2s(directory: str | Path, split: str, set: str = "normal") -> list[DuplexS2SConversation]:
    """The conversations of `split` (train / valid / test) and `set` (normal / impatient; impatient: test only) of a
    set built by `textless build-duplex-s2s`, in manifest order. `FormatError` naming ``<directory>/manifest.jsonl``
    and the line for a malformed manifest or a missing file."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if set not in SETS:
        raise ConfigError(f"set must be one of {', '.join(SETS)}, got {set!r}")
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise TextlessError(f"'{path}' does not exist: {directory} is not a set built by `textless build-duplex-s2s` "
                            f"(or its build has not finished)")
    out = []
    for line, record in read_records(path):
        conversation = _conversation(directory, path, line, record)
        if conversation.split == split and conversation.set == set:
            out.append(conversation)
    return out
