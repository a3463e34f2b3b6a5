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
(`response_latency`: first output word start minus the user turn's or the interruption's end, negative -> 0). Its
backchannel frequency and timing-histogram distance are not here yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
