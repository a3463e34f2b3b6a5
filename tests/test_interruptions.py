"""The listen-while-speaking data recipes (textless.dialogue.interruptions): LSLM's IRQ targets and listening channel,
the duplex S2S streams (0.64 s agent lead, barge-in cut keeping 0.64 s, impatient gaps) and the role split.

Every expected value is computed by hand in samples (16 kHz unless said: 0.64 s = 10240 samples, 1 s = 16000) or in
frames (50 Hz: 20 ms). Probabilities are checked over many seeded draws with a Hoeffding bound: for N independent
Bernoulli(p) draws, P(|X / N - p| >= eps) <= 2 exp(-2 N eps^2); N = 4000 and eps = 0.04 give 2 exp(-12.8) < 6e-6 per
check, so a correct implementation fails one of these checks with a chance far below 1e-4 (and, the draws being
seeded, every run gives the same counts).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from textless.dialogue import interaction as ia
from textless.dialogue.builder import speech_extent
from textless.dialogue.interruptions import (
    AGENT,
    AGENT_LEAD_SILENCE,
    BARGE_IN_KEEP,
    USER,
    DuplexRecipe,
    ListeningMix,
    QATurn,
    compose_duplex,
    irq_cut,
    lslm_targets,
    mix_listening,
    split_roles,
    trim_to_speech,
)
from textless.dialogue.timeline import Interruption, Segment, Timeline
from textless.errors import ConfigError

SR = 16000
LEAD = 10240            # 0.64 s at 16 kHz
KEEP = 10240


# ------------------------------------------------------------------------------------------------------ irq_cut
def test_irq_cut_hand_values():
    assert AGENT_LEAD_SILENCE == BARGE_IN_KEEP == 0.64 and ia.LSLM_MU == 0.5
    # (1.0 + 0.5) s * 50 Hz = 75: frame 75 starts exactly at 1.5 s
    assert irq_cut(100, 1.0, 50) == 75
    assert irq_cut(76, 1.0, 50) == 75           # the last frame is frame 75: IRQ there
    assert irq_cut(75, 1.0, 50) is None         # frames 0..74 only: the utterance ends first -> EOS
    # (0.34 + 0.5) * 50 evaluates to 42.00000000000001 in floats: still frame 42 (starts at 0.84 s)
    assert (0.34 + 0.5) * 50 > 42
    assert irq_cut(100, 0.34, 50) == 42
    assert irq_cut(100, 0.3399, 50) == 42       # 41.995 -> the first frame starting after is 42
    assert irq_cut(100, 0.3401, 50) == 43       # 42.005 -> frame 42 starts 0.1 ms too early
    assert irq_cut(100, 0.0, 50) == 25          # an onset at 0: IRQ at 0.5 s
    assert irq_cut(100, 0.5, 50, mu=0.0) == 25
    assert irq_cut(100, 1.0, 12.5) == 19        # 18.75 frames of 80 ms -> frame 19 (1.52 s)
    assert irq_cut(50, 1.2, 50) is None         # onset past the end (frame 85 of 50)
    assert irq_cut(100, None, 50) is None
    with pytest.raises(ValueError):
        irq_cut(100, -0.1, 50)
    with pytest.raises(ValueError):
        irq_cut(100, 1.0, 0)


def test_lslm_targets_layout():
    units = np.arange(10, 110, dtype=np.int16)            # 100 frames at 50 Hz, units 10..109
    irq, eos = 1000, 1001
    cut = lslm_targets(units, 1.0, 50, irq, eos)
    assert cut.dtype == np.int64 and cut.shape == (76,)
    assert cut[:75].tolist() == list(range(10, 85)) and cut[75] == irq   # frames 0..74 kept, IRQ at 75
    full = lslm_targets(units, None, 50, irq, eos)
    assert full.dtype == np.int64 and full.tolist() == list(range(10, 110)) + [eos]
    late = lslm_targets(units, 1.5, 50, irq, eos)         # IRQ frame 100 = the EOS position: no IRQ
    assert late.tolist() == full.tolist()
    early = lslm_targets(units, 1.48, 50, irq, eos)       # 1.98 s * 50 = 99: the last unit becomes the IRQ
    assert early.tolist() == list(range(10, 109)) + [irq]
    # the model's stop (n / frame_rate = 1.5 s) is a hit of the LSLM metric: within [onset, onset + 2 mu]
    assert ia.lslm_outcome(1.0, irq_cut(100, 1.0, 50) / 50) == "TP"
    with pytest.raises(ValueError):
        lslm_targets(np.zeros(4), 1.0, 50, irq, eos)      # float units


# ------------------------------------------------------------------------------------------------ listening mix
def _clip(lead: int, speech: int, tail: int, amplitude: float = 0.5) -> np.ndarray:
    """`lead` zeros, a square wave of +-amplitude over `speech` samples, `tail` zeros (float32)."""
    square = amplitude * np.where(np.arange(speech) % 2 == 0, 1.0, -1.0)
    return np.concatenate([np.zeros(lead), square, np.zeros(tail)]).astype(np.float32)


def test_interruption_onset_is_the_clips_speech_onset():
    rate = 1000
    clip = _clip(200, 300, 100)
    assert speech_extent(clip, sample_rate=rate)[:2] == (200, 500)
    cfg = ListeningMix(noise_prob=0.0, interrupt_prob=1.0, onset_unit="seconds", onset_min=1.0, onset_max=1.0)
    out = mix_listening(3.0, rate, np.random.default_rng(0), [clip], [], cfg)
    assert out.audio.dtype == np.float32 and out.audio.shape == (3000,)
    assert out.onset == 1.0 and out.clip == 0 and out.clip_start == 800 and out.noise is None
    assert not out.audio[:1000].any() and not out.audio[1300:].any()   # the clip's 200 lead zeros end at 1000
    np.testing.assert_array_equal(out.audio[1000:1300], clip[200:500])
    assert speech_extent(out.audio, sample_rate=rate)[0] == 1000
    # an onset as a fraction of the utterance: 0.5 of 2 s = sample 1000
    frac = ListeningMix(noise_prob=0.0, interrupt_prob=1.0, onset_min=0.5, onset_max=0.5)
    assert mix_listening(2.0, rate, np.random.default_rng(0), [clip], [], frac).onset == 1.0
    # head cut: speech onset at sample 100, before the clip's 200 lead samples fit
    head = ListeningMix(noise_prob=0.0, interrupt_prob=1.0, onset_unit="seconds", onset_min=0.1, onset_max=0.1)
    out = mix_listening(1.0, rate, np.random.default_rng(0), [clip], [], head)
    assert out.onset == 0.1 and out.clip_start == -100
    assert not out.audio[:100].any() and not out.audio[400:].any()
    np.testing.assert_array_equal(out.audio[100:400], clip[200:500])
    # tail cut: 1.2 s utterance, onset at 1.0 s: 200 samples of speech fit
    tail = ListeningMix(noise_prob=0.0, interrupt_prob=1.0, onset_unit="seconds", onset_min=1.0, onset_max=1.0,
                        end_margin=0.0)
    out = mix_listening(1.2, rate, np.random.default_rng(0), [clip], [], tail)
    assert out.audio.shape == (1200,) and out.onset == 1.0
    np.testing.assert_array_equal(out.audio[1000:], clip[200:400])


def test_onset_window_and_end_margin():
    rate, clip = 1000, _clip(5, 20, 0)
    cfg = ListeningMix(noise_prob=0.0, interrupt_prob=1.0)      # fraction [0, 1], end_margin = mu = 0.5 s
    rng = np.random.default_rng(1)
    onsets = [mix_listening(1.0, rate, rng, [clip], [], cfg).onset for _ in range(300)]
    samples = [round(o * rate) for o in onsets]
    assert min(samples) >= 0 and max(samples) <= 499           # 1000 - 1 - 500: the IRQ lands inside
    assert len(set(samples)) > 150                             # uniform over 500 samples, not a constant
    # a 0.4 s utterance cannot hold an onset 0.5 s before its end: no interruption, the clip still drawn
    out = mix_listening(0.4, rate, np.random.default_rng(1), [clip], [], cfg)
    assert out.onset is None and out.clip == 0 and not out.audio.any()


def test_mixing_probabilities_and_independence():
    rate, clip = 1000, _clip(5, 20, 0)
    cfg = ListeningMix(noise_prob=0.2, interrupt_prob=0.7, end_margin=0.0)
    rng = np.random.default_rng(2024)
    n = 4000
    draws = [mix_listening(0.05, rate, rng, [clip], ["white"], cfg) for _ in range(n)]
    noise = np.array([d.noise is not None for d in draws])
    irq = np.array([d.onset is not None for d in draws])
    eps = 0.04
    assert 2 * math.exp(-2 * n * eps ** 2) < 6e-6
    assert abs(noise.mean() - 0.2) < eps
    assert abs(irq.mean() - 0.7) < eps
    assert abs((noise & irq).mean() - 0.2 * 0.7) < eps           # independent decisions
    assert abs((~noise & ~irq).mean() - 0.8 * 0.3) < eps


def test_mix_is_deterministic_for_a_seed():
    rate, clip = 1000, _clip(50, 200, 20)
    recording = np.sin(np.arange(700) * 0.3)
    cfg = ListeningMix(noise_prob=1.0, interrupt_prob=1.0)
    a = mix_listening(2.0, rate, np.random.default_rng(7), [clip, clip * 0.5], ["pink", recording], cfg)
    b = mix_listening(2.0, rate, np.random.default_rng(7), [clip, clip * 0.5], ["pink", recording], cfg)
    c = mix_listening(2.0, rate, np.random.default_rng(8), [clip, clip * 0.5], ["pink", recording], cfg)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert (a.onset, a.clip, a.clip_start, a.noise) == (b.onset, b.clip, b.clip_start, b.noise)
    assert not np.array_equal(a.audio, c.audio)


@pytest.mark.parametrize("source", ["white", "tone", "recording"])
def test_noise_snr_refers_to_the_clips_speech_power(source):
    rate = 1000
    clip = _clip(100, 400, 0)                                  # speech power 0.5^2 = 0.25
    noise = np.sin(np.arange(333) * 0.7) if source == "recording" else source
    cfg = ListeningMix(noise_prob=1.0, interrupt_prob=0.0, snr_min=10.0, snr_max=10.0)
    out = mix_listening(2.0, rate, np.random.default_rng(3), [clip], [noise], cfg)
    assert out.onset is None and out.noise is not None and out.noise.snr_db == 10.0
    assert out.noise.kind == ("recording" if source == "recording" else source)
    np.testing.assert_allclose(float((out.audio.astype(np.float64) ** 2).mean()), 0.025, rtol=1e-5)
    # with the interruption placed the noise keeps that level: audio - clip is the noise
    both = ListeningMix(noise_prob=1.0, interrupt_prob=1.0, snr_min=10.0, snr_max=10.0)
    out = mix_listening(2.0, rate, np.random.default_rng(3), [clip], [noise], both)
    residual = out.audio.astype(np.float64)
    start = out.clip_start
    lo, hi = max(start, 0), min(start + len(clip), len(residual))
    residual[lo:hi] -= clip[lo - start:hi - start]
    np.testing.assert_allclose(float((residual ** 2).mean()), 0.025, rtol=1e-4)
    # no clips: the SNR refers to reference_rms (0.1 -> power 0.01, / 10 dB = 0.001)
    out = mix_listening(2.0, rate, np.random.default_rng(3), [], [noise], cfg)
    np.testing.assert_allclose(float((out.audio.astype(np.float64) ** 2).mean()), 0.001, rtol=1e-5)


def test_mix_config_errors():
    rng, clip = np.random.default_rng(0), _clip(5, 20, 0)
    with pytest.raises(ConfigError):
        mix_listening(1.0, 1000, rng, [clip], ["babble"])
    with pytest.raises(ConfigError):
        mix_listening(1.0, 1000, rng, [clip], [])               # default noise_prob 0.5 needs noises
    with pytest.raises(ConfigError):
        mix_listening(1.0, 1000, rng, [], ["white"])            # default interrupt_prob 0.5 needs clips
    with pytest.raises(ConfigError):
        mix_listening(1.0, 1000, rng, [clip], ["white"], ListeningMix(onset_unit="frames"))


# ------------------------------------------------------------------------------------------------ duplex recipe
def _turns(*lengths: tuple[int, int]) -> list[QATurn]:
    """QA pair i: user = i + 1 everywhere, agent = -(i + 1) everywhere (float32, lengths in samples)."""
    return [QATurn(np.full(u, i + 1, np.float32), np.full(a, -(i + 1), np.float32), f"q{i}", "one two three four")
            for i, (u, a) in enumerate(lengths)]


def test_single_turn_has_the_agent_lead_silence():
    conv = compose_duplex(_turns((16000, 32000)))
    assert conv.user.shape == conv.agent.shape == (16000 + LEAD + 32000,)
    assert conv.user.dtype == np.float32 and conv.stereo.shape == (2, 58240)
    user_speech, agent_speech = np.flatnonzero(conv.user), np.flatnonzero(conv.agent)
    assert (user_speech[0], user_speech[-1]) == (0, 15999)
    assert (agent_speech[0], agent_speech[-1]) == (26240, 58239)
    assert agent_speech[0] - (user_speech[-1] + 1) == LEAD       # 0.64 s of silence, in samples
    assert not conv.agent[:26240].any() and not conv.user[16000:].any()
    t = conv.turns[0]
    assert (t.user_start, t.user_end, t.agent_start, t.agent_end, t.barge_in) == (0, 16000, 26240, 58240, None)
    tl = conv.timeline
    assert tl.speakers == (USER, AGENT) and tl.duration == 58240 / SR and tl.interruptions == []
    assert [(s.speaker, s.start, s.end, s.kind) for s in tl.segments] == [
        (USER, 0.0, 1.0, "turn"), (AGENT, 26240 / SR, 58240 / SR, "turn")]
    assert ia.first_response_latency(tl.channel(AGENT), tl.channel(USER)) == pytest.approx(0.64, abs=1e-12)
    assert ia.false_alarms(tl.channel(AGENT), tl.channel(USER)) == ([], 0.0)
    assert Timeline.from_dict(tl.to_dict()) == tl


def test_multi_turn_gaps_and_impatient_halving():
    turns = _turns((16000, 32000), (8000, 24000), (4000, 4000))
    plain = compose_duplex(turns, DuplexRecipe(gaps=[1.0, 0.25], lead_in=0.5, tail=0.1))
    impatient = compose_duplex(turns, DuplexRecipe(gaps=[1.0, 0.25], lead_in=0.5, tail=0.1, impatient=True))
    # plain: user0 [8000, 24000), agent0 [34240, 66240), gap 16000 -> user1 [82240, 90240), agent1 [100480, 124480),
    # gap 4000 -> user2 [128480, 132480), agent2 [142720, 146720), tail 1600
    assert [(t.user_start, t.user_end, t.agent_start, t.agent_end) for t in plain.turns] == [
        (8000, 24000, 34240, 66240), (82240, 90240, 100480, 124480), (128480, 132480, 142720, 146720)]
    assert plain.user.shape == (148320,)
    # impatient: the gaps halve (8000, 2000 samples); the agent lead stays 10240
    assert [(t.user_start, t.agent_start) for t in impatient.turns] == [
        (8000, 34240), (74240, 92480), (118480, 132720)]
    for conv, gaps in ((plain, [16000, 4000]), (impatient, [8000, 2000])):
        assert [b.user_start - a.agent_end for a, b in zip(conv.turns, conv.turns[1:])] == gaps
        assert all(t.agent_start - t.user_end == LEAD for t in conv.turns)
        for i, t in enumerate(conv.turns):                      # each clip exactly where placed, silence elsewhere
            assert (conv.user[t.user_start:t.user_end] == i + 1).all()
            assert (conv.agent[t.agent_start:t.agent_end] == -(i + 1)).all()
        assert np.count_nonzero(conv.user) == 28000 and np.count_nonzero(conv.agent) == 60000
        assert not (conv.user.astype(bool) & conv.agent.astype(bool)).any()   # no overlap without barge-in
        assert ia.false_alarms(conv.timeline.channel(AGENT), conv.timeline.channel(USER)) == ([], 0.0)


def test_drawn_gaps_halve_exactly_under_impatient():
    turns = _turns(*[(1600, 3200)] * 6)
    cfg = {"gap_min": 0.3, "gap_max": 1.7}
    plain = compose_duplex(turns, DuplexRecipe(**cfg), np.random.default_rng(11))
    impatient = compose_duplex(turns, DuplexRecipe(**cfg, impatient=True), np.random.default_rng(11))
    rng = np.random.default_rng(11)                             # the documented draws: decision, onset, gap
    expected = []
    for _ in range(5):
        rng.random(), rng.random()
        expected.append(round(float(rng.uniform(0.3, 1.7)) * SR))
    gaps = [b.user_start - a.agent_end for a, b in zip(plain.turns, plain.turns[1:])]
    halved = [b.user_start - a.agent_end for a, b in zip(impatient.turns, impatient.turns[1:])]
    assert gaps == expected and halved == [g // 2 for g in gaps]
    assert all(4800 <= g <= 27200 for g in gaps)


def test_barge_in_keeps_exactly_064_s_of_agent_speech():
    turns = _turns((16000, 32000), (8000, 16000))
    # agent0 occupies [26240, 58240); the onset window is [26240 + earliest, 58240 - 10240 - 1 = 47999]:
    # earliest = 21759 samples leaves the single onset 47999
    cfg = DuplexRecipe(barge_in_prob=1.0, barge_in_earliest=21759 / SR)
    conv = compose_duplex(turns, cfg, np.random.default_rng(0))
    first, second = conv.turns
    assert first.barge_in == 47999 and second.user_start == 47999
    assert (first.agent_start, first.agent_end, first.agent_full_end) == (26240, 58239, 58240)
    assert (second.user_end, second.agent_start, second.agent_end) == (55999, 66239, 82239)
    # the agent speaks from its start to onset + 10240 samples, then silence until its next turn
    assert (conv.agent[26240:58239] == -1).all()
    assert np.count_nonzero(conv.agent[47999:66239]) == KEEP
    assert not conv.agent[58239:66239].any()
    assert (conv.user[47999:55999] == 2).all()
    tl = conv.timeline
    assert tl.interruptions == [Interruption(USER, AGENT, 47999 / SR, 58239 / SR, False)]
    kinds = [(s.speaker, s.kind) for s in tl.segments]
    assert kinds == [(USER, "turn"), (AGENT, "turn"), (USER, "interruption"), (AGENT, "turn")]
    assert tl.segments[1].end == 58239 / SR and tl.segments[1].text == "one two three four-"  # 31999 / 32000 kept
    # the interaction metrics score the reference: a 0.64 s barge-in latency, a success, no false alarm
    hit = ia.barge_in(tl.channel(AGENT), tl.interruptions[0].onset)
    assert hit is not None and hit.success and hit.latency == pytest.approx(0.64, abs=1e-12)
    assert ia.false_alarms(tl.channel(AGENT), tl.channel(USER)) == ([], 0.0)


def test_random_barge_ins_stay_inside_the_agent_turn():
    turns = _turns((16000, 32000), (8000, 16000))
    for seed in range(50):
        conv = compose_duplex(turns, DuplexRecipe(barge_in_prob=1.0), np.random.default_rng(seed))
        t = conv.turns[0]
        assert t.barge_in is not None and 26240 <= t.barge_in <= 47999
        assert t.agent_end == t.barge_in + KEEP < t.agent_full_end
        assert np.count_nonzero(conv.agent[t.barge_in:conv.turns[1].agent_start]) == KEEP
    # an agent turn of only 0.64 s leaves no room to cut: the gap is used instead
    short = compose_duplex(_turns((1600, KEEP), (1600, 1600)), DuplexRecipe(barge_in_prob=1.0, gaps=[0.5]),
                           np.random.default_rng(0))
    assert short.turns[0].barge_in is None and short.turns[1].user_start - short.turns[0].agent_end == 8000


def test_barge_in_probability_on_frame_arrays():
    # frames [N, 3] at 100 Hz: agent lead = keep = 64 frames; 2001 turns -> 2000 agent turns that may be barged into
    n = 2000
    turns = [QATurn(np.ones((20, 3), np.float32), -np.ones((200, 3), np.float32)) for _ in range(n + 1)]
    conv = compose_duplex(turns, DuplexRecipe(rate=100, barge_in_prob=0.3, gap_min=0.1, gap_max=0.2),
                          np.random.default_rng(5))
    assert conv.user.shape == conv.agent.shape and conv.user.shape[1:] == (3,)
    assert all(t.agent_start - t.user_end == 64 for t in conv.turns)
    barged = np.array([t.barge_in is not None for t in conv.turns[:-1]])
    eps = 0.05                                                  # Hoeffding: 2 exp(-2 * 2000 * 0.0025) < 1e-4
    assert abs(barged.mean() - 0.3) < eps
    assert len(conv.timeline.interruptions) == int(barged.sum())
    assert all(t.agent_end - t.barge_in == 64 for t in conv.turns if t.barge_in is not None)


def test_duplex_errors():
    with pytest.raises(ConfigError):
        compose_duplex(_turns((10, 10), (10, 10)), DuplexRecipe(gaps=[1.0, 2.0]))
    with pytest.raises(ValueError):
        compose_duplex(_turns((10, 10), (10, 10)))               # drawn gaps need an rng
    with pytest.raises(ValueError):
        compose_duplex([])
    with pytest.raises(ConfigError):
        compose_duplex(_turns((10, 10)), DuplexRecipe(gap_min=2.0, gap_max=1.0))


def test_trim_to_speech_uses_the_builders_extent():
    clip = _clip(300, 800, 500).astype(np.float64)
    np.testing.assert_array_equal(trim_to_speech(clip), clip[300:1100])


# --------------------------------------------------------------------------------------------------- role split
def test_split_roles_renames_channels_and_timeline():
    audio = np.stack([np.full(100, 1, np.int16), np.full(100, 2, np.int16)])
    tl = Timeline("dlg-1", 100 / SR, ("A", "B"), [
        Segment("A", 0.001, 0.003, "hi", "turn"), Segment("B", 0.002, 0.004, "wait", "interruption")],
        [Interruption("B", "A", 0.002, 0.0025, False)])
    conv = split_roles(audio, tl, "B")
    assert (conv.user == 2).all() and (conv.agent == 1).all()
    assert conv.timeline.speakers == (USER, AGENT) and conv.timeline.duration == tl.duration
    assert [(s.speaker, s.start, s.end, s.text, s.kind) for s in conv.timeline.segments] == [
        (AGENT, 0.001, 0.003, "hi", "turn"), (USER, 0.002, 0.004, "wait", "interruption")]
    assert conv.timeline.interruptions == [Interruption(USER, AGENT, 0.002, 0.0025, False)]
    by_index = split_roles(audio, tl, 0)
    assert (by_index.user == 1).all() and by_index.timeline.segments[0].speaker == USER
    with pytest.raises(ValueError):
        split_roles(audio, tl, "C")
