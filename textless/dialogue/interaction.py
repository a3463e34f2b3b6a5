"""Interaction metrics of a model that listens while it speaks, from its speech segments and the other side's timeline.

Times are seconds; segments are ``(start, end)`` stretches of speech (IPUs, `textless.dialogue.turn_taking`).

LSLM (Ma et al. 2024, seed 002, section 6.1): "a successful turn-taking is the model stopping speaking within the
``[0, 2 mu]`` interval after the interruption begins" (mu = 0.5 s, so 1 s). Per sample (`lslm_outcome`), with the
interruption onset (None: the sample has no interruption) and the time the model stopped speaking early (None: it
spoke to the end of its utterance):

    interrupted,     stopped in [onset, onset + 2 mu]      TP (hit)
    interrupted,     no stop, a later stop, or a stop BEFORE the onset    FN (miss)
    not interrupted, stopped early                         FP
    not interrupted, spoke to the end                      TN

precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean (`lslm_scores`; 0 when undefined).

Duplex S2S (seed 003, section 5.2):

* barge-in (`barge_in`): the user starts speaking while the agent speaks (the onset lies inside an agent segment);
  latency = the end of that agent segment minus the onset; success = latency <= 1.5 s. An onset while the agent is
  silent is not a barge-in (None);
* false alarm (`false_alarms`): the agent starts speaking while the user speaks (an agent onset strictly inside a user
  segment), unless the user stops within 0.1 s of it (the paper: "if the user stops speaking within 0.1 s, the event
  is not counted"); the rate is false alarms per user segment (turn);
* first-response latency (`first_response_latency`): the first agent onset after the end of the first user segment,
  minus that end (None when the agent never answers).

Full-Duplex-Bench v1 (from the model output's ASR words with timestamps): turn-over rate (`turn_over`: 0 iff the
output has no words, or spans < 1 s with <= 3 words) and the smooth turn-taking / interruption latency
(`response_latency`: first output word start minus the user turn's or the interruption's end, negative -> 0); its
backchannel task (`backchannel_metrics`: turn-over rate, backchannel frequency and the Jensen-Shannon distance of
their timing histogram, from the output's VAD segments).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon

LSLM_MU = 0.5                  # seconds: LSLM's detection interval mu; a hit stops within [0, 2 mu]
BARGE_IN_SUCCESS = 1.5         # seconds: duplex S2S success threshold
FALSE_ALARM_GRACE = 0.1        # seconds: a user who stops this soon after the agent starts is not talked over

Interval = tuple[float, float]


def lslm_outcome(onset: float | None, stop: float | None, mu: float = LSLM_MU) -> str:
    """"TP", "FN", "FP" or "TN" of one sample (see the module docstring)."""
    if onset is None:
        return "TN" if stop is None else "FP"
    return "TP" if stop is not None and onset <= stop <= onset + 2 * mu else "FN"


@dataclass
class LSLMScores:
    tp: int
    fn: int
    fp: int
    tn: int
    precision: float
    recall: float
    f1: float


def lslm_scores(samples: Sequence[tuple[float | None, float | None]], mu: float = LSLM_MU) -> LSLMScores:
    """The confusion matrix and precision / recall / F1 over samples of (interruption onset, early stop)."""
    outcomes = [lslm_outcome(onset, stop, mu) for onset, stop in samples]
    tp, fn, fp, tn = (outcomes.count(k) for k in ("TP", "FN", "FP", "TN"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return LSLMScores(tp, fn, fp, tn, precision, recall, f1)


@dataclass
class BargeIn:
    onset: float       # user speech onset (s)
    stop: float        # end of the agent segment the user talked into (s)
    latency: float     # stop - onset (s)
    success: bool      # latency <= threshold


def barge_in(agent: Sequence[Interval], onset: float, threshold: float = BARGE_IN_SUCCESS) -> BargeIn | None:
    """The barge-in of a user who starts speaking at `onset` (None when the agent is silent then)."""
    for start, end in sorted(agent):
        if start <= onset < end:
            return BargeIn(onset, end, end - onset, end - onset <= threshold)
    return None


def false_alarms(agent: Sequence[Interval], user: Sequence[Interval], grace: float = FALSE_ALARM_GRACE
                 ) -> tuple[list[float], float]:
    """(agent onsets that talk over the user, false alarms per user segment) - see the module docstring."""
    alarms = [a_start for a_start, _ in sorted(agent)
              if any(u_start < a_start < u_end and u_end - a_start > grace for u_start, u_end in user)]
    return alarms, len(alarms) / len(user) if user else 0.0


def first_response_latency(agent: Sequence[Interval], user: Sequence[Interval]) -> float | None:
    """Seconds from the end of the first user segment to the next agent onset (None: no answer)."""
    if not user:
        return None
    turn_end = min(user)[1]
    onsets = [start for start, _ in agent if start >= turn_end]
    return min(onsets) - turn_end if onsets else None


# Full-Duplex-Bench v1 (Lin et al. 2025; v1_v1.5/evaluation/): from the model output's ASR words with timestamps
TOR_MIN_SPAN = 1.0             # seconds: a shorter output with at most TOR_MAX_WORDS words does not take the turn
TOR_MAX_WORDS = 3

Word = tuple[float, float, str]  # (start s, end s, word)


def turn_over(words: Sequence[Word]) -> int:
    """Full-Duplex-Bench's turn-over (TOR) of one sample: 0 when the output has no words, or spans less than 1 s
    with at most 3 words (a backchannel or a false start); else 1 (the model took the turn)."""
    if not words:
        return 0
    span = max(end for _, end, _ in words) - min(start for start, _, _ in words)
    return 0 if span < TOR_MIN_SPAN and len(words) <= TOR_MAX_WORDS else 1


def response_latency(words: Sequence[Word], reference_end: float) -> float | None:
    """Seconds from `reference_end` (the user's turn end for smooth turn-taking, the interruption's end for the
    interruption task) to the first output word's start, negative values as 0 (the model started early); None
    without words."""
    if not words:
        return None
    return max(0.0, min(start for start, _, _ in words) - reference_end)


# Full-Duplex-Bench v1 backchannel task: v1_v1.5/evaluation/eval_backchannel.py (DanielLin94144/Full-Duplex-Bench
# @ d7336bd), from the output's VAD segments (Silero in their code) and its ASR words
BC_MAX_SEGMENT = 3.0           # seconds: a longer VAD segment is the model speaking formally (`time_threshold`, l.14)
BC_SHORT = 1.0                 # seconds: a backchannel segment is shorter than this ...
BC_MAX_WORDS = 2               # ... with at most this many words (l.101-103)
BC_TURN_WORDS = 3              # more words than this in a segment: it took the turn (l.98)
BC_WINDOW = 0.2                # seconds: histogram bin (`window_size`, l.12)
BC_EPSILON = 1e-10             # added to every bin before normalising (`epsilon`, l.13)


def words_in_segment(words: Sequence[Word], start: float, end: float) -> list[str]:
    """The words of the (start, end) seconds VAD segment, by their rule (l.85-91): inside it, or straddling its end
    (a word starting exactly at `end` included), or straddling its start."""
    return [w for ws, we, w in words
            if (ws >= start and we <= end) or (ws <= end and we > end) or (ws <= start and we > start)]


def backchannel_segment_turn_over(duration: float, n_words: int) -> int:
    """1 when a VAD segment of `duration` seconds with `n_words` words takes the turn, 0 for a backchannel:
    longer than 3 s, more than 3 words, 1 s or longer, or 3 words -> 1; shorter than 1 s with <= 2 words -> 0
    (l.59-61 and 96-107)."""
    if duration > BC_MAX_SEGMENT or n_words > BC_TURN_WORDS:
        return 1
    return 0 if duration < BC_SHORT and n_words <= BC_MAX_WORDS else 1


def backchannel_turn_over(segments: Sequence[Interval], words: Sequence[Word],
                          last_segment_wins: bool = False) -> int:
    """Backchannel-task turn-over of one sample from its VAD `segments` (seconds) and ASR `words`.

    By the definition (the model takes the turn instead of backchanneling): 1 iff any segment takes the turn
    (`backchannel_segment_turn_over`), 0 without segments. ``last_segment_wins=True`` reproduces their loop
    (l.52-107): segments in time order, stop at the first one longer than 3 s (TOR 1), otherwise each segment
    OVERWRITES the TOR, so the last one decides (a turn followed by a short "mm-hmm" scores 0).
    """
    tor = 0
    for start, end in sorted(segments):
        value = backchannel_segment_turn_over(end - start, len(words_in_segment(words, start, end)))
        if last_segment_wins:
            tor = value
            if end - start > BC_MAX_SEGMENT:
                break
        else:
            tor = max(tor, value)
    return tor


def backchannel_segments(segments: Sequence[Interval]) -> list[Interval]:
    """The segments their code counts as backchannels (`backchannel_prediction`, l.109): those of at most 3 s, in
    time order, up to the first longer one (the loop breaks there, so later short segments are not counted)."""
    out = []
    for start, end in sorted(segments):
        if end - start > BC_MAX_SEGMENT:
            break
        out.append((start, end))
    return out


def backchannel_frequency(segments: Sequence[Interval], audio_seconds: float) -> float:
    """Backchannels per second of output audio: ``len(backchannel_segments) / audio_seconds`` (l.114-115, audio
    seconds = the output file's samples / rate)."""
    if audio_seconds <= 0:
        raise ValueError(f"audio_seconds must be > 0, got {audio_seconds}")
    return len(backchannel_segments(segments)) / audio_seconds


def backchannel_histogram(segments: Sequence[Interval], audio_seconds: float) -> np.ndarray:
    """Their timing histogram (l.120-134): ``int(audio_seconds / 0.2) + 1`` bins of 200 ms over the output; each
    backchannel adds 1 to every bin from ``int(start / 0.2)`` to ``int(end / 0.2)`` INCLUSIVE (float division as
    theirs: 0.6 / 0.2 -> bin 2); then 1e-10 is added to every bin and the bins are divided by their sum."""
    hist = np.zeros(int(audio_seconds / BC_WINDOW) + 1)
    for start, end in backchannel_segments(segments):
        hist[int(start / BC_WINDOW): int(end / BC_WINDOW) + 1] += 1
    hist = hist + BC_EPSILON
    return hist / hist.sum()


def backchannel_jsd(segments: Sequence[Interval], audio_seconds: float, reference: Sequence[float]) -> float:
    """Jensen-Shannon DISTANCE between the output's backchannel timing histogram (`backchannel_histogram`) and the
    sample's reference distribution (their ``icc_gt_distribution.json[sample id]``), as l.117-153: 1.0 when the
    output has no backchannel; else the reference resampled to the histogram's length by linear interpolation on
    ``linspace(0, 1, n)`` grids (`np.interp`, equal to their ``interp1d(kind="linear")`` on these in-range points),
    not renormalised, and ``scipy.spatial.distance.jensenshannon(hist, reference)`` with its default base (natural
    log: at most sqrt(ln 2) = 0.833; scipy normalises both to sum 1). The 1.0 of an empty output is above that
    maximum - their convention, kept."""
    if not backchannel_segments(segments):
        return 1.0
    hist = backchannel_histogram(segments, audio_seconds)
    ref = np.asarray(reference, dtype=float)
    if ref.ndim != 1 or not len(ref):
        raise ValueError("the reference distribution must be a non-empty list of numbers")
    resized = np.interp(np.linspace(0, 1, len(hist)), np.linspace(0, 1, len(ref)), ref)
    return float(jensenshannon(hist, resized))


@dataclass
class BackchannelMetrics:
    tor: int | None            # None without words
    frequency: float           # backchannels per second of output audio
    jsd: float | None          # None without a reference distribution
    backchannels: list[Interval]


def backchannel_metrics(segments: Sequence[Interval], audio_seconds: float, words: Sequence[Word] | None = None,
                        reference: Sequence[float] | None = None, last_segment_wins: bool = False
                        ) -> BackchannelMetrics:
    """Full-Duplex-Bench v1's backchannel metrics of one output (VAD `segments` in seconds over `audio_seconds` of
    audio): TOR (needs `words`), frequency, and JSD (needs the sample's `reference` distribution)."""
    return BackchannelMetrics(
        None if words is None else backchannel_turn_over(segments, words, last_segment_wins),
        backchannel_frequency(segments, audio_seconds),
        None if reference is None else backchannel_jsd(segments, audio_seconds, reference),
        backchannel_segments(segments))
