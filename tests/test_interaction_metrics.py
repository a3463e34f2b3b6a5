"""LSLM and duplex S2S interaction metrics on hand-made timelines with known answers."""

from __future__ import annotations

import pytest

from textless.dialogue.interaction import (
    barge_in,
    false_alarms,
    first_response_latency,
    lslm_outcome,
    lslm_scores,
)


def test_lslm_hit_is_a_stop_within_two_mu_after_the_interruption_begins():
    assert lslm_outcome(3.0, 3.0) == "TP" and lslm_outcome(3.0, 4.0) == "TP"   # [0, 2 mu] = [0, 1 s], inclusive
    assert lslm_outcome(3.0, 4.01) == "FN"                                     # too late
    assert lslm_outcome(3.0, None) == "FN"                                     # never stopped
    assert lslm_outcome(3.0, 2.9) == "FN"                                      # stopped before the interruption
    assert lslm_outcome(None, 5.0) == "FP" and lslm_outcome(None, None) == "TN"
    assert lslm_outcome(3.0, 3.5, mu=0.2) == "FN"


def test_lslm_precision_recall_f1():
    samples = [(1.0, 1.5), (1.0, 1.2), (1.0, None), (None, 2.0), (None, None), (None, None)]
    s = lslm_scores(samples)
    assert (s.tp, s.fn, s.fp, s.tn) == (2, 1, 1, 2)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)
    assert lslm_scores([(None, None)]).f1 == 0.0


def test_barge_in_latency_and_success():
    agent = [(0.0, 4.0), (6.0, 9.0)]
    b = barge_in(agent, 2.0)
    assert (b.stop, b.latency, b.success) == (4.0, 2.0, False)
    b = barge_in(agent, 7.6)
    assert b.latency == pytest.approx(1.4) and b.success
    assert barge_in(agent, 5.0) is None        # the agent was silent: not a barge-in
    assert barge_in(agent, 4.0) is None        # the agent's segment is half-open: it had just stopped


def test_false_alarms_skip_a_user_who_stops_within_100_ms():
    user = [(0.0, 3.0), (5.0, 8.0)]
    agent = [(1.0, 2.0), (2.95, 4.0), (8.5, 9.0)]  # talks over the user at 1.0; at 2.95 the user stops 50 ms later
    alarms, rate = false_alarms(agent, user)
    assert alarms == [1.0] and rate == 0.5
    assert false_alarms(agent, []) == ([], 0.0)


def test_first_response_latency():
    assert first_response_latency([(0.2, 0.5), (3.4, 5.0)], [(0.0, 3.0), (6.0, 7.0)]) == pytest.approx(0.4)
    assert first_response_latency([(0.2, 0.5)], [(0.0, 3.0)]) is None
    assert first_response_latency([(1.0, 2.0)], []) is None


def test_full_duplex_bench_turn_over_and_latency():
    from textless.dialogue.interaction import response_latency, turn_over

    assert turn_over([]) == 0
    assert turn_over([(2.0, 2.3, "mm"), (2.4, 2.9, "hmm")]) == 0                    # short, 2 words: backchannel
    assert turn_over([(2.0, 2.3, "a"), (2.4, 2.6, "b"), (2.7, 2.8, "c"), (2.85, 2.9, "d")]) == 1  # 4 words
    assert turn_over([(2.0, 2.5, "well"), (2.6, 3.0, "yes")]) == 1                  # spans exactly 1 s
    assert response_latency([(5.4, 5.8, "yes"), (6.0, 6.5, "sure")], 5.0) == pytest.approx(0.4)
    assert response_latency([(4.5, 5.8, "yes")], 5.0) == 0.0                         # started before the end
    assert response_latency([], 5.0) is None


def test_full_duplex_bench_backchannel_turn_over_definition_and_last_segment_quirk():
    from textless.dialogue.interaction import backchannel_segment_turn_over, backchannel_turn_over, words_in_segment

    assert backchannel_segment_turn_over(0.5, 2) == 0        # < 1 s, <= 2 words: a backchannel
    assert backchannel_segment_turn_over(0.5, 3) == 1        # 3 words
    assert backchannel_segment_turn_over(1.0, 0) == 1        # 1 s or longer
    assert backchannel_segment_turn_over(3.5, 0) == 1        # > 3 s: speaking formally
    words = [(1.0, 1.3, "so"), (1.35, 1.6, "what"), (1.6, 1.8, "I"), (1.8, 2.2, "mean"), (5.1, 5.4, "yeah")]
    assert words_in_segment(words, 1.5, 1.9) == ["what", "I", "mean"]  # straddles start, inside, straddles end
    assert words_in_segment(words, 1.0, 2.2) == ["so", "what", "I", "mean"]
    turn_then_backchannel = [(1.0, 2.2), (5.0, 5.5)]         # 4 words (a turn), then "yeah" in 0.5 s
    assert backchannel_turn_over(turn_then_backchannel, words) == 1
    assert backchannel_turn_over(turn_then_backchannel, words, last_segment_wins=True) == 0  # the quirk
    assert backchannel_turn_over([(5.0, 5.5), (6.0, 9.5), (10.0, 10.2)], words, last_segment_wins=True) == 1  # break
    assert backchannel_turn_over([], words) == 0 and backchannel_turn_over([(5.0, 5.5)], words) == 0


def test_full_duplex_bench_backchannel_frequency_and_histogram_jsd_by_hand():
    import math

    import numpy as np

    from textless.dialogue.interaction import (
        backchannel_frequency,
        backchannel_histogram,
        backchannel_jsd,
        backchannel_metrics,
        backchannel_segments,
    )

    # short, short, LONG (their loop stops there), short: 2 backchannels over 10 s of audio
    segments = [(0.5, 1.0), (2.0, 3.0), (4.0, 7.5), (8.0, 8.4)]
    assert backchannel_segments(segments) == [(0.5, 1.0), (2.0, 3.0)]
    assert backchannel_frequency(segments, 10.0) == pytest.approx(0.2)
    # 1 s of audio -> int(1.0 / 0.2) + 1 = 6 bins; (0.1, 0.5) covers bins 0..int(2.5)=2 inclusive
    hist = backchannel_histogram([(0.1, 0.5)], 1.0)
    assert hist == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0, 0, 0], abs=1e-9)
    assert np.flatnonzero(backchannel_histogram([(0.6, 0.7)], 1.0) > 1e-6).tolist() == [2, 3]  # 0.6 / 0.2 -> bin 2
    # against a uniform reference q = 1/6 each: m = 1/4 (x3), 1/12 (x3); KL(p||m) = ln(4/3), KL(q||m) = ln(4/3) / 2
    # JS divergence = (ln(4/3) + ln(4/3) / 2) / 2 = 0.75 ln(4/3) (natural log, scipy's default); distance = sqrt
    expected = math.sqrt(0.75 * math.log(4 / 3))
    assert backchannel_jsd([(0.1, 0.5)], 1.0, [1.0] * 6) == pytest.approx(expected, abs=1e-6)
    assert backchannel_jsd([(0.1, 0.5)], 1.0, [0.5, 0.5]) == pytest.approx(expected, abs=1e-6)  # interpolated to 6
    assert backchannel_jsd([(0.1, 0.5)], 1.0, [0, 0, 0, 1, 1, 1]) == pytest.approx(math.sqrt(math.log(2)), abs=1e-4)
    assert backchannel_jsd([(4.0, 7.5)], 10.0, [1.0] * 6) == 1.0       # no backchannel: 1 by convention
    m = backchannel_metrics(segments, 10.0)
    assert (m.tor, m.frequency, m.jsd) == (None, pytest.approx(0.2), None)
