"""Conversations as audio, one channel per speaker: the three layouts `textless tokenize dialogues=true` reads.

A dialogue manifest is JSONL, one conversation per line, paths relative to the manifest's directory; exactly one of
the source keys, and optionally ``speakers`` (the speaker of channel 0, then channel 1)::

    {"id": "fe_03_00001", "stereo": "audio/fe_03_00001.wav", "speakers": ["spk-a", "spk-b"]}   # Fisher/Switchboard
    {"id": "call-2", "channels": ["call-2.A.wav", "call-2.B.wav"]}                              # a pair of mono files
    {"id": "call-3", "audio": "call-3.wav", "rttm": "all.rttm", "speakers": ["S1", "S2"]}     # mono + diarization

Other keys are ignored (the dialogue builder's manifest.jsonl reads as is: its ``stereo`` key). For a mono recording
with an RTTM, channel k is the recording where speaker k speaks and digital silence elsewhere (overlaps kept in both
channels); ``speakers`` chooses and orders two of the RTTM's speakers (default: the two, in order of first speech;
``rttm_id`` picks the RTTM file id, default the conversation id). A directory given instead of a manifest means: every
audio file in it is a stereo conversation (id = relative path without extension). Pairs of mono files may differ in
length by at most `PAIR_TOLERANCE` seconds (the shorter is padded with silence).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textless.audio import load_audio
from textless.data.manifest import scan_directory
from textless.dialogue.timeline import read_rttm
from textless.errors import FormatError, TextlessError

SOURCE_KEYS = ("stereo", "channels", "audio")
PAIR_TOLERANCE = 0.1  # seconds: two mono files of one conversation may differ this much in length


@dataclass
class DialogueSource:
    """Where one conversation's audio is: `kind` stereo | channels | rttm; `paths` (1 or 2 files)."""

    id: str
    kind: str
    paths: list[Path]
    speakers: list[str] | None = None
    rttm: Path | None = None
    rttm_id: str | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        out = {"id": self.id, "kind": self.kind, "paths": [str(p) for p in self.paths]}
        if self.rttm is not None:
            out["rttm"] = str(self.rttm)
        return out


def _speakers(value, path: Path, line: int) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, dict):  # {"A": ..., "B": ...}: the keys in channel order
        value = list(value)
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(s, str) and s for s in value):
        raise FormatError(path, f"'speakers' must list the two channels' speakers, got {value!r}", line)
    return value


def read_dialogue_manifest(path: str | Path) -> list[DialogueSource]:
    """The conversations of a dialogue manifest (JSONL, see the module docstring), or of a directory of stereo
    files; errors name the file and line."""
    path = Path(path)
    if path.is_dir():
        return [DialogueSource(item.id, "stereo", [Path(item.path)]) for item in scan_directory(path)]
    root = path.parent
    sources: list[DialogueSource] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise TextlessError(f"cannot read the dialogue manifest {path}: {err}") from err
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise FormatError(path, f"invalid JSON ({err.msg})", number) from None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
            raise FormatError(path, "each line must be an object with a non-empty string 'id'", number)
        keys = [k for k in SOURCE_KEYS if k in record]
        if len(keys) != 1:
            raise FormatError(path, f"give exactly one of {', '.join(SOURCE_KEYS)} (got {keys or 'none'})", number)
        conv_id = record["id"]
        if conv_id in seen:
            raise FormatError(path, f"duplicate id {conv_id!r} (first on line {seen[conv_id]})", number)
        seen[conv_id] = number
        speakers = _speakers(record.get("speakers"), path, number)
        if keys[0] == "channels":
            files = record["channels"]
            if not isinstance(files, list) or len(files) != 2 or not all(isinstance(f, str) for f in files):
                raise FormatError(path, "'channels' must be a list of two audio paths", number)
            sources.append(DialogueSource(conv_id, "channels", [root / f for f in files], speakers))
        elif keys[0] == "stereo":
            sources.append(DialogueSource(conv_id, "stereo", [root / record["stereo"]], speakers))
        else:
            if "rttm" not in record:
                raise FormatError(path, "a mono 'audio' recording needs an 'rttm' diarization", number)
            sources.append(DialogueSource(conv_id, "rttm", [root / record["audio"]], speakers, root / record["rttm"],
                                          record.get("rttm_id", conv_id)))
    return sorted(sources, key=lambda s: s.id)


def _two(wav, path: Path) -> np.ndarray:
    if wav.ndim != 2 or wav.shape[0] != 2:
        channels = 1 if wav.ndim == 1 else wav.shape[0]
        raise TextlessError(f"{path}: a stereo conversation needs 2 channels, the file has {channels}")
    return wav.numpy()


def _rttm_masks(source: DialogueSource, num_samples: int, sample_rate: int) -> tuple[np.ndarray, list[str]]:
    assert source.rttm is not None
    files = read_rttm(source.rttm)
    if source.rttm_id not in files:
        raise TextlessError(f"{source.rttm}: no SPEAKER lines for file id {source.rttm_id!r} "
                            f"(it has {', '.join(sorted(files)) or 'none'})")
    segments = sorted(files[source.rttm_id], key=lambda s: s.start)
    found = list(dict.fromkeys(s.speaker for s in segments))
    speakers = source.speakers or found
    if len(speakers) != 2:
        raise TextlessError(f"{source.rttm}: file {source.rttm_id!r} has speakers {found}; name the two channels' "
                            f"speakers with 'speakers'")
    missing = [s for s in speakers if s not in found]
    if missing:
        raise TextlessError(f"{source.rttm}: speaker {missing[0]!r} has no turns in file {source.rttm_id!r}")
    masks = np.zeros((2, num_samples), dtype=np.float32)
    for seg in segments:
        if seg.speaker in speakers:
            a, b = round(seg.start * sample_rate), round(seg.end * sample_rate)
            masks[speakers.index(seg.speaker), a:min(b, num_samples)] = 1.0
    return masks, speakers


def load_dialogue_audio(source: DialogueSource, sample_rate: int, max_seconds: float | None = None
                        ) -> tuple[np.ndarray, list[str]]:
    """One conversation -> (float32 ``[2, samples]`` at `sample_rate`, the two channels' speakers). Raises
    `TextlessError` naming the file and the problem."""
    default = [f"{source.id}:A", f"{source.id}:B"]
    if source.kind == "stereo":
        wav, _ = load_audio(source.paths[0], sample_rate, mono=False, max_seconds=max_seconds)
        return _two(wav, source.paths[0]), source.speakers or default
    if source.kind == "channels":
        waves = [load_audio(p, sample_rate, max_seconds=max_seconds)[0].numpy() for p in source.paths]
        longest = max(len(w) for w in waves)
        if longest - min(len(w) for w in waves) > PAIR_TOLERANCE * sample_rate:
            raise TextlessError(f"{source.paths[1]}: {len(waves[1]) / sample_rate:.2f} s but "
                                f"{source.paths[0].name} is {len(waves[0]) / sample_rate:.2f} s (the two channels of "
                                f"a conversation must have the same length, within {PAIR_TOLERANCE} s)")
        return np.stack([np.pad(w, (0, longest - len(w))) for w in waves]), source.speakers or default
    wav, _ = load_audio(source.paths[0], sample_rate, max_seconds=max_seconds)
    masks, speakers = _rttm_masks(source, len(wav), sample_rate)
    return masks * wav.numpy()[None, :], speakers
