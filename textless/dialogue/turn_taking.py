"""Turn-taking statistics of a two-party conversation (dGSLM's definitions), from each speaker's speech segments.

Definitions (dGSLM, Nguyen et al. 2023, after Heldner & Edlund 2010; ../shared/docs/anchors.md, turn-taking section):

IPU (inter-pausal unit)
    a stretch of one speaker's speech bounded by silences of at least ``min_silence`` (200 ms): speech segments of a
    channel separated by a silence SHORTER than 200 ms are one IPU (199 ms: merged; 200 or 201 ms: two IPUs).
overlap
    a stretch in which both speakers speak (the intersection of the two channels' IPUs).
pause / gap
    a stretch of mutual silence (neither speaks) between two IPUs: a *pause* when the same speaker speaks right before
    and right after it, a *gap* when the speaker changes. Silence before the first or after the last IPU of the
    conversation is neither. The speaker "right before" is the one whose IPU ends at the silence's start (both: the one
    whose IPU started later, who held the floor last); "right after" is the one whose IPU starts at its end (both: a
    pause if the speaker before is one of them).

Each kind is reported as events per minute and seconds per minute of conversation, with the list of its durations
(seconds), per conversation (`turn_taking_stats`) and pooled over a corpus (`corpus_stats`: events and seconds summed
over conversations, divided by their total minutes). Times are seconds; intervals are half-open ``[start, end)``.
Written here rather than taken from a library: no maintained package computes these four event types with these
attribution rules (pyannote.metrics scores diarization, not turn-taking).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise

MIN_SILENCE = 0.2      # seconds of silence that bound an IPU (dGSLM's 200 ms)
KINDS = ("ipu", "pause", "gap", "overlap")
TIME_EPS = 1e-9        # seconds: a silence within this of min_silence counts as min_silence (1.2 - 1.0 < 0.2 in floats)

Interval = tuple[float, float]


def _check(segments: Sequence[Interval], what: str) -> list[Interval]:
    out = []
    for start, end in segments:
        if not end >= start >= 0:
            raise ValueError(f"{what}: a segment must have 0 <= start <= end, got ({start}, {end})")
        if end > start:
            out.append((float(start), float(end)))
    return sorted(out)


def merge_ipus(segments: Sequence[Interval], min_silence: float = MIN_SILENCE) -> list[Interval]:
    """One channel's speech segments (seconds, any order, may overlap) -> its IPUs: segments closer than
    `min_silence` seconds merged (a silence of exactly `min_silence` separates two IPUs)."""
    ipus: list[list[float]] = []
    for start, end in _check(segments, "merge_ipus"):
        if ipus and start - ipus[-1][1] < min_silence - TIME_EPS:
            ipus[-1][1] = max(ipus[-1][1], end)
        else:
            ipus.append([start, end])
    return [(s, e) for s, e in ipus]


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Intersection of two sorted lists of disjoint intervals."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _union(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    merged: list[list[float]] = []
    for start, end in sorted([*a, *b]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


@dataclass
class Events:
    """The events of one conversation: per kind, the (start, end) intervals in seconds."""

    ipu: list[tuple[int, float, float]] = field(default_factory=list)   # (speaker 0 / 1, start, end)
    pause: list[tuple[int, float, float]] = field(default_factory=list)  # (speaker, start, end)
    gap: list[tuple[int, float, float]] = field(default_factory=list)    # (speaker AFTER the gap, start, end)
    overlap: list[Interval] = field(default_factory=list)


def turn_taking_events(a: Sequence[Interval], b: Sequence[Interval], min_silence: float = MIN_SILENCE) -> Events:
    """IPUs, pauses, gaps and overlaps of a conversation whose speakers 0 and 1 speak in segments `a` and `b`
    (seconds; raw VAD segments: they are merged into IPUs first). See the module docstring."""
    ipus = [merge_ipus(a, min_silence), merge_ipus(b, min_silence)]
    events = Events(ipu=sorted((spk, s, e) for spk in (0, 1) for s, e in ipus[spk]), overlap=intersect(*ipus))
    speech = _union(*ipus)
    for (_, silence_start), (silence_end, _) in pairwise(speech):
        before = [(s, spk) for spk in (0, 1) for s, e in ipus[spk] if e == silence_start]
        after = {spk for spk in (0, 1) for s, _ in ipus[spk] if s == silence_end}
        speaker_before = max(before)[1]  # both ended here: the one who started later held the floor
        if speaker_before in after:
            events.pause.append((speaker_before, silence_start, silence_end))
        else:
            events.gap.append((min(after), silence_start, silence_end))
    return events


@dataclass
class KindStats:
    count: int
    seconds: float
    per_minute: float            # events per minute of conversation
    seconds_per_minute: float
    durations: list[float]       # seconds, in time order


@dataclass
class TurnTakingStats:
    minutes: float
    ipu: KindStats
    pause: KindStats
    gap: KindStats
    overlap: KindStats
    min_silence: float = MIN_SILENCE

    def to_dict(self) -> dict:
        return asdict(self)


def _durations(events: Events, kind: str) -> list[float]:
    return [e - s for *_, s, e in getattr(events, kind)]


def _stats(durations: list[float], minutes: float) -> KindStats:
    seconds = float(sum(durations))
    return KindStats(len(durations), seconds, len(durations) / minutes if minutes else 0.0,
                     seconds / minutes if minutes else 0.0, durations)


def turn_taking_stats(a: Sequence[Interval], b: Sequence[Interval], duration: float,
                      min_silence: float = MIN_SILENCE) -> TurnTakingStats:
    """Statistics of one conversation of `duration` seconds (the per-minute denominators)."""
    if duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    events = turn_taking_events(a, b, min_silence)
    minutes = duration / 60.0
    return TurnTakingStats(minutes, *(_stats(_durations(events, k), minutes) for k in KINDS), min_silence=min_silence)


def corpus_stats(conversations: Sequence[TurnTakingStats]) -> TurnTakingStats:
    """Pooled statistics: events and seconds summed over the conversations, per minute of their total duration."""
    if not conversations:
        raise ValueError("corpus_stats needs at least one conversation")
    minutes = sum(c.minutes for c in conversations)
    kinds = [_stats([d for c in conversations for d in getattr(c, k).durations], minutes) for k in KINDS]
    return TurnTakingStats(minutes, *kinds, min_silence=conversations[0].min_silence)
