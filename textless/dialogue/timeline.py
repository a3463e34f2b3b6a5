"""The ground truth of a two-party conversation: who speaks when, what, and which interruptions happened.

A `Timeline` is what the dialogue builder writes beside each conversation and what the turn-taking statistics and
interaction metrics read (also built from an RTTM diarization or from VAD). JSON layout (``version`` 1)::

    {"version": 1, "conversation_id": "dlg-000001", "duration": 61.2, "speakers": ["A", "B"],
     "segments": [{"speaker": "A", "start": 0.5, "end": 2.31, "text": "hello there", "kind": "turn"}, ...],
     "interruptions": [{"interrupter": "B", "interrupted": "A", "onset": 10.2, "stop": 10.61, "ignored": false}]}

Times are seconds from the start of the recording; segments are half-open ``[start, end)``. ``speakers`` gives the
channel order (speaker 0 = channel 0 = left). ``kind`` is one of `SEGMENT_KINDS`: ``turn`` (an IPU of a turn),
``backchannel`` ("mm-hmm" while the other speaks), ``interruption`` (speech that starts while the other speaks and
makes them stop) and ``ignored_interruption`` (speech that starts while the other speaks and does not). An interruption
record gives the onset (the interrupter's first sample) and ``stop``, the time the interrupted speaker stopped (None
when ignored). RTTM (NIST): ``SPEAKER <file> <channel> <onset> <duration> <NA> <NA> <speaker> <NA> <NA>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from textless.errors import TextlessError
from textless.utils.atomic import atomic_write_text

VERSION = 1
SEGMENT_KINDS = ("turn", "backchannel", "interruption", "ignored_interruption")

Interval = tuple[float, float]


class InvalidTimelineError(TextlessError, ValueError):
    """A timeline JSON or RTTM file that cannot be read; the message names the file and the problem."""


@dataclass
class Segment:
    speaker: str
    start: float            # seconds
    end: float              # seconds
    text: str = ""
    kind: str = "turn"


@dataclass
class Interruption:
    interrupter: str
    interrupted: str
    onset: float            # seconds: the interrupter's first speech
    stop: float | None      # seconds: when the interrupted speaker stopped; None when the interruption was ignored
    ignored: bool = False


@dataclass
class Timeline:
    conversation_id: str
    duration: float                      # seconds of recording
    speakers: tuple[str, str]            # channel order
    segments: list[Segment] = field(default_factory=list)
    interruptions: list[Interruption] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.speakers = tuple(self.speakers)  # type: ignore[assignment]
        problem = self.problem()
        if problem:
            raise InvalidTimelineError(f"timeline {self.conversation_id!r}: {problem}")

    def problem(self) -> str | None:
        if len(self.speakers) != 2 or self.speakers[0] == self.speakers[1]:
            return f"needs two distinct speakers, got {list(self.speakers)}"
        if not self.duration > 0:
            return f"duration must be > 0 seconds, got {self.duration}"
        for seg in self.segments:
            if seg.speaker not in self.speakers:
                return f"segment speaker {seg.speaker!r} is not one of {list(self.speakers)}"
            if not 0 <= seg.start <= seg.end:
                return f"segment ({seg.start}, {seg.end}) must have 0 <= start <= end"
            if seg.kind not in SEGMENT_KINDS:
                return f"segment kind {seg.kind!r} is not one of {SEGMENT_KINDS}"
        return None

    def channel(self, speaker: str | int) -> list[Interval]:
        """The (start, end) seconds of one speaker's segments (a name or a channel index), sorted."""
        name = self.speakers[speaker] if isinstance(speaker, int) else speaker
        return sorted((s.start, s.end) for s in self.segments if s.speaker == name)

    def to_dict(self) -> dict:
        return {"version": VERSION, **asdict(self), "speakers": list(self.speakers)}

    @classmethod
    def from_dict(cls, data: dict) -> Timeline:
        version = data.get("version")
        if version != VERSION:
            raise InvalidTimelineError(f"timeline version {version!r} is not supported (this textless reads {VERSION})")
        return cls(str(data["conversation_id"]), float(data["duration"]), tuple(data["speakers"]),
                   [Segment(**s) for s in data.get("segments", [])],
                   [Interruption(**i) for i in data.get("interruptions", [])])


def write_timeline(path: str | Path, timeline: Timeline) -> Path:
    """Write a timeline as JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(timeline.to_dict(), indent=1) + "\n")
    return path


def read_timeline(path: str | Path) -> Timeline:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return Timeline.from_dict(data)
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InvalidTimelineError(f"{path}: not a textless timeline: {err}") from err


def timeline_to_rttm(timeline: Timeline, file_id: str | None = None) -> str:
    """RTTM lines (channel 1, durations rounded to ms) of the timeline's segments, in time order."""
    file_id = file_id or timeline.conversation_id
    lines = [f"SPEAKER {file_id} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> <NA> {s.speaker} <NA> <NA>"
             for s in sorted(timeline.segments, key=lambda s: (s.start, s.speaker))]
    return "".join(line + "\n" for line in lines)


def read_rttm(path: str | Path) -> dict[str, list[Segment]]:
    """Segments per file id of an RTTM file (only SPEAKER lines; times in seconds)."""
    path = Path(path)
    out: dict[str, list[Segment]] = {}
    try:
        text = path.read_text()
    except OSError as err:
        raise InvalidTimelineError(f"{path}: cannot read: {err}") from err
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise InvalidTimelineError(f"{path}:{number}: an RTTM SPEAKER line has 10 fields, got {len(fields)}")
        try:
            onset, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise InvalidTimelineError(f"{path}:{number}: onset / duration are not numbers: {line!r}") from None
        if onset < 0 or duration < 0:
            raise InvalidTimelineError(f"{path}:{number}: negative onset or duration: {line!r}")
        out.setdefault(fields[1], []).append(Segment(fields[7], onset, onset + duration))
    return out


def timeline_from_segments(conversation_id: str, segments: Sequence[Segment], duration: float | None = None,
                           speakers: Iterable[str] | None = None) -> Timeline:
    """A timeline from diarization segments (e.g. one file of `read_rttm`). Speakers in order of first speech unless
    given; duration = the last segment's end unless given (the recording may be longer: pass its length)."""
    names = list(speakers) if speakers is not None else list(dict.fromkeys(s.speaker for s in sorted(
        segments, key=lambda s: s.start)))
    if len(names) != 2:
        raise InvalidTimelineError(f"{conversation_id}: a two-party timeline needs exactly two speakers, got {names}")
    end = max((s.end for s in segments), default=0.0)
    return Timeline(conversation_id, float(duration if duration is not None else end), (names[0], names[1]),
                    list(segments))
