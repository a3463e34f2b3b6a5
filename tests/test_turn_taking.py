"""dGSLM turn-taking statistics on hand-made timelines with known answers."""

from __future__ import annotations

import pytest

from textless.dialogue.turn_taking import (
    corpus_stats,
    intersect,
    merge_ipus,
    turn_taking_events,
    turn_taking_stats,
)


def test_a_199_ms_silence_is_inside_an_ipu_and_a_201_ms_one_splits_it():
    assert merge_ipus([(0.0, 1.0), (1.199, 2.0)]) == [(0.0, 2.0)]
    assert merge_ipus([(0.0, 1.0), (1.201, 2.0)]) == [(0.0, 1.0), (1.201, 2.0)]
    assert merge_ipus([(1.2, 2.0), (0.0, 1.0)]) == [(0.0, 1.0), (1.2, 2.0)]  # exactly 200 ms separates; any order
    assert merge_ipus([(0.0, 1.0), (0.5, 0.8), (3.0, 3.0)]) == [(0.0, 1.0)]  # nested and empty segments
    with pytest.raises(ValueError, match="0 <= start <= end"):
        merge_ipus([(2.0, 1.0)])


def test_pauses_gaps_and_overlaps_of_a_hand_made_conversation():
    # A: 0-2, (pause 1 s) 3-5, ............................ 9-10
    # B:                        4.5-7 (overlap 0.5 s), (gap 2 s) ...
    a = [(0.0, 2.0), (3.0, 5.0), (9.0, 10.0)]
    b = [(4.5, 7.0)]
    events = turn_taking_events(a, b)
    assert events.ipu == [(0, 0.0, 2.0), (0, 3.0, 5.0), (0, 9.0, 10.0), (1, 4.5, 7.0)]
    assert events.overlap == [(4.5, 5.0)]
    assert events.pause == [(0, 2.0, 3.0)]
    assert events.gap == [(0, 7.0, 9.0)]  # B spoke last, A speaks next
    stats = turn_taking_stats(a, b, duration=30.0)  # half a minute
    assert stats.minutes == 0.5
    assert (stats.ipu.count, stats.ipu.seconds, stats.ipu.per_minute) == (4, 7.5, 8.0)
    assert (stats.pause.count, stats.pause.seconds_per_minute) == (1, 2.0)
    assert (stats.gap.count, stats.gap.per_minute, stats.gap.seconds_per_minute) == (1, 2.0, 4.0)
    assert (stats.overlap.count, stats.overlap.seconds) == (1, 0.5)
    assert stats.to_dict()["gap"]["durations"] == [2.0]


def test_overlap_at_the_start_and_a_speaker_who_held_the_floor():
    # both start at 0; B stops at 1, A goes on to 2: the silence after A's IPU is A's pause when A resumes
    a = [(0.0, 2.0), (2.5, 3.0)]
    b = [(0.0, 1.0)]
    events = turn_taking_events(a, b)
    assert events.overlap == [(0.0, 1.0)] and events.pause == [(0, 2.0, 2.5)] and events.gap == []
    # both end together at 2: the one who started later (B) held the floor; A then speaks: a gap
    events = turn_taking_events([(0.0, 2.0), (3.0, 4.0)], [(1.0, 2.0)])
    assert events.gap == [(0, 2.0, 3.0)] and events.pause == []
    # a short silence (< 200 ms) between different speakers is still a gap (IPUs bound silences per channel only)
    assert turn_taking_events([(0.0, 1.0)], [(1.1, 2.0)]).gap == [(1, 1.0, 1.1)]


def test_leading_and_trailing_silence_and_touching_turns_are_not_events():
    events = turn_taking_events([(5.0, 6.0)], [(6.0, 8.0)])  # B starts exactly when A stops
    assert events.gap == [] and events.pause == [] and events.overlap == []
    stats = turn_taking_stats([], [], duration=60.0)
    assert stats.ipu.count == 0 and stats.gap.per_minute == 0.0
    with pytest.raises(ValueError, match="duration must be > 0"):
        turn_taking_stats([], [], duration=0.0)


def test_corpus_statistics_pool_events_over_total_minutes():
    one = turn_taking_stats([(0.0, 1.0), (2.0, 3.0)], [], duration=60.0)   # 1 pause of 1 s in 1 min
    two = turn_taking_stats([(0.0, 1.0)], [(1.5, 2.0)], duration=120.0)    # 1 gap of 0.5 s in 2 min
    pooled = corpus_stats([one, two])
    assert pooled.minutes == 3.0
    assert pooled.pause.per_minute == pytest.approx(1 / 3) and pooled.gap.seconds_per_minute == pytest.approx(0.5 / 3)
    assert pooled.ipu.count == 4
    assert intersect([(0.0, 2.0), (3.0, 4.0)], [(1.0, 3.5)]) == [(1.0, 2.0), (3.0, 3.5)]
