"""The synthetic dialogue builder (textless.dialogue.builder, textless build-dialogues): the schedule obeys its plan
and config, the audio is exactly where the timeline says, builds are deterministic and shard-independent, resume
rebuilds only what is missing, and the shipped default set is consistent.

Most tests use a fake synthesizer (a square wave of +-AMPLITUDE whose length follows the text, padded with zeros), so
every speech extent is known to the sample; tests that run flite skip where it is missing and fail under
TEXTLESS_REQUIRE_TTS=1 (`conftest.require_tts`).
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tts

from textless.cli import main
from textless.dialogue.builder import (
    SPEAKERS,
    Clip,
    Interrupt,
    NoiseConfig,
    Placer,
    TimingConfig,
    TurnPlan,
    build_conversation,
    default_dialogues,
    load_dialogues,
    load_sentences,
    noise_signal,
    speech_extent,
)
from textless.dialogue.stats import conversation_stats, stats_from_timelines
from textless.dialogue.timeline import read_rttm, read_timeline
from textless.dialogue.turn_taking import corpus_stats
from textless.dialogue.vad import VADConfig, conversation_segments
from textless.errors import ConfigError
from textless.eval.builder.tts import ENGINES, SAMPLE_RATE, SynthesisError, Voice
from textless.jobs.build_dialogues import FREE_VOICES, BuildDialoguesConfig, build_dialogues

SR = SAMPLE_RATE
AMPLITUDE = 1000
PAD = 800                     # zero samples the fake synthesizer puts before and after the speech
PER_CHAR = 800                # samples of speech per character of text (50 ms)
HAS_FLITE = not ENGINES["flite"].missing()
SENTENCES = ["one two three.", "the cat sat on the mat.", "a very long sentence with many words in it.",
             "short one.", "what do you think about that?", "it rained all day long."]


class FakeSynth:
    """A square wave (period 40 samples) of len(text) x PER_CHAR samples between PAD zeros; `fail` voices raise."""

    def __init__(self, fail: tuple[str, ...] = (), fail_probe: bool = False):
        self.fail, self.fail_probe = fail, fail_probe

    def text(self, voice: Voice, text: str) -> np.ndarray:
        if voice.voice in self.fail and (self.fail_probe or text != "okay"):
            raise SynthesisError(f"{voice.spec} cannot read {text!r}")
        n = len(text) * PER_CHAR
        wave = np.where((np.arange(n) // 20) % 2 == 0, AMPLITUDE, -AMPLITUDE).astype(np.int16)
        return np.concatenate([np.zeros(PAD, np.int16), wave, np.zeros(PAD, np.int16)])


def _clip(speaker: int, text: str) -> Clip:
    return Clip.from_samples(text, FakeSynth().text(Voice("x", "flite", "x"), text))


def _seconds(samples: int) -> float:
    return samples / SR


# ------------------------------------------------------------------------------------------------------ schedule
def test_speech_extent_is_first_to_last_sample_above_the_threshold():
    samples = np.zeros(4000, np.int16)
    samples[1000:3000] = 10000
    samples[500] = 20            # below 10000 x 10^(-45/20) = 56.2: silence
    samples[3500] = 100          # above it: speech
    first, end, threshold = speech_extent(samples)
    assert (first, end) == (1000, 3501)
    assert threshold == pytest.approx(10000 * 10 ** (-45 / 20))


def test_hand_made_schedule_gives_exact_segment_times():
    timing = TimingConfig(min_pause=0.25, lead_in=0.5, tail=0.5)
    placer = Placer(timing)
    a10, a5, a20, a3 = "x" * 20, "y" * 10, "z" * 40, "w" * 6   # 1.0, 0.5, 2.0 and 0.3 s of speech
    placer.add_turn(TurnPlan(0, [a10, a5], pauses=[0.3]), _clip)
    placer.add_turn(TurnPlan(1, [a20], gap=-0.2, backchannel=a3, backchannel_offset=0.8), _clip)
    placer.add_turn(TurnPlan(0, ["one two three four five"], gap=0.4,
                             interrupt=Interrupt(ipu=0, offset=0.5, reaction=0.3)), _clip)
    placer.add_turn(TurnPlan(1, [a10]), _clip)
    placer.add_turn(TurnPlan(0, [a10], gap=0.2, interrupt=Interrupt(0, 0.4, ignored=True, text="wait")), _clip)
    timeline = placer.timeline("hand")
    got = [(s.speaker, s.start, s.end, s.kind) for s in timeline.segments]
    # all in samples: A [0.5, 1.5) + 0.3 pause -> [1.8, 2.3); B starts 0.2 s before A's end (3200 samples)
    b1 = 36800 - 3200
    # the backchannel of A: 0.8 s into B's turn (A's own earliest is 2.3 + 0.25 s = 40800 < b1 + 12800)
    bc = b1 + 12800
    a3_start = b1 + 32000 + 6400                       # gap 0.4 s after B's end
    onset = a3_start + 8000                            # 0.5 s into A's IPU
    stop = onset + 4800                                # reaction 0.3 s
    b2 = onset                                         # B's interrupting turn starts at the onset
    a4 = b2 + 16000 + 3200                             # gap 0.2 s
    ignored = a4 + 6400                                # 0.4 s into A's last IPU
    assert got == [
        ("A", _seconds(8000), _seconds(24000), "turn"), ("A", _seconds(28800), _seconds(36800), "turn"),
        ("B", _seconds(b1), _seconds(b1 + 32000), "turn"), ("A", _seconds(bc), _seconds(bc + 4800), "backchannel"),
        ("A", _seconds(a3_start), _seconds(stop), "turn"), ("B", _seconds(b2), _seconds(b2 + 16000), "interruption"),
        ("A", _seconds(a4), _seconds(a4 + 16000), "turn"),
        ("B", _seconds(ignored), _seconds(ignored + 4 * PER_CHAR), "ignored_interruption")]
    # the cut IPU keeps the fraction of its words it spoke: 8000 + 4800 of 23 x 800 samples -> 3 of 5 words
    assert timeline.segments[4].text == "one two three-"
    assert [(i.interrupter, i.interrupted, i.onset, i.stop, i.ignored) for i in timeline.interruptions] == [
        ("B", "A", _seconds(onset), _seconds(stop), False), ("B", "A", _seconds(ignored), None, True)]
    assert timeline.duration == _seconds(a4 + 16000 + 8000)
    # the audio: each clip exactly on its segment, zeros elsewhere
    channels = placer.channels()
    assert channels.shape == (2, a4 + 16000 + 8000)
    for index, speaker in enumerate(SPEAKERS):
        inside = np.zeros(channels.shape[1], bool)
        for start, end in timeline.channel(speaker):
            inside[round(start * SR):round(end * SR)] = True
        assert np.all(channels[index][~inside] == 0)
        assert np.all(np.abs(channels[index][inside]) == AMPLITUDE)


def test_a_turn_never_starts_within_min_pause_of_its_own_speech():
    placer = Placer(TimingConfig(min_pause=0.25, lead_in=0.0))
    placer.add_turn(TurnPlan(0, ["x" * 20]), _clip)                         # A [0, 1)
    placer.add_turn(TurnPlan(1, ["x" * 4], gap=-0.1), _clip)                # B [0.9, 1.1)
    placer.add_turn(TurnPlan(0, ["x" * 4], gap=-0.15), _clip)               # wants 0.95, A is free at 1.25
    assert placer.timeline("c").channel("A") == [(0.0, 1.0), (1.25, 1.45)]
    with pytest.raises(ValueError, match="not inside the interrupted IPU"):
        placer.add_turn(TurnPlan(1, ["x" * 10], gap=0.2, interrupt=Interrupt(0, 0.1, reaction=0.6)), _clip)


def _drawn(seed: int, seconds: float = 400.0, **timing) -> tuple:
    voices = (Voice("a", "flite", "a"), Voice("b", "flite", "b"))
    conv = build_conversation("c", voices, SENTENCES, FakeSynth(), np.random.default_rng(seed), seconds,
                              TimingConfig(**timing))
    return conv.timeline, conv.channels


def _speaker_changes(timeline) -> list[float]:
    """Start of each turn IPU minus the end of the other speaker's previous turn IPU (turn changes only)."""
    turns = [s for s in timeline.segments if s.kind in ("turn", "interruption")]
    return [b.start - a.end for a, b in itertools.pairwise(turns) if a.speaker != b.speaker]


def test_drawn_gaps_follow_the_config():
    timeline, _ = _drawn(0, overlap_prob=0.0, interruption_prob=0.0, backchannel_prob=0.0)
    gaps = np.array(_speaker_changes(timeline))
    assert len(gaps) > 100 and gaps.min() > 0 and gaps.max() <= 2.0 + 1 / SR
    # the sample median of a lognormal: log-space sd ~ 1.2533 x sigma / sqrt(n); allow 4 sd
    tolerance = 4 * 1.2533 * 0.6 / np.sqrt(len(gaps))
    assert abs(np.log(np.median(gaps)) - np.log(0.3)) < tolerance
    # pauses: every silence between two IPUs of one speaker's turn is in [min_pause, max_pause]
    a = timeline.channel("A")
    silences = np.array([s2 - e1 for (_, e1), (s2, _) in itertools.pairwise(a)])
    assert silences.min() >= 0.25 - 1 / SR


def test_drawn_overlaps_follow_the_config():
    timeline, _ = _drawn(1, overlap_prob=0.4, interruption_prob=0.0, backchannel_prob=0.0)
    changes = np.array(_speaker_changes(timeline))
    # binomial: the overlap fraction within 4 sd of 0.4
    assert abs((changes < 0).mean() - 0.4) < 4 * np.sqrt(0.4 * 0.6 / len(changes))
    turns = [s for s in timeline.segments if s.kind == "turn"]
    for a, b in itertools.pairwise(turns):
        if a.speaker != b.speaker and b.start < a.end:  # an overlap is at most half of the shorter IPU
            assert a.end - b.start <= 0.5 * min(a.end - a.start, b.end - b.start) + 1 / SR


def test_drawn_interruptions_stop_the_speaker_within_the_reaction_time():
    timeline, _ = _drawn(2, seconds=200.0, interruption_prob=1.0, ignored_fraction=0.0, backchannel_prob=0.0)
    assert len(timeline.interruptions) > 10 and not any(i.ignored for i in timeline.interruptions)
    for record in timeline.interruptions:
        spoken = [s for s in timeline.segments if s.speaker == record.interrupted and s.start < record.onset]
        # the interrupted speaker's last segment before the onset ends exactly at the stop, onset + reaction
        assert spoken[-1].end == record.stop and spoken[-1].text.endswith("-")
        assert 0.2 - 1 / SR <= record.stop - record.onset <= 1.0 + 1 / SR
        starts = [s for s in timeline.segments if s.speaker == record.interrupter and s.start == record.onset]
        assert [s.kind for s in starts] == ["interruption"]
        # and says nothing more until at least min_pause after... its next turn
        later = [s for s in timeline.segments if s.speaker == record.interrupted and s.start > record.onset]
        assert not later or later[0].start >= record.stop + 0.25 - 1 / SR


def test_ignored_interruptions_do_not_stop_the_speaker():
    timeline, _ = _drawn(3, seconds=200.0, interruption_prob=1.0, ignored_fraction=1.0, backchannel_prob=0.0)
    assert len(timeline.interruptions) > 10 and all(i.ignored and i.stop is None for i in timeline.interruptions)
    for record in timeline.interruptions:
        attempt = next(s for s in timeline.segments if s.speaker == record.interrupter and s.start == record.onset)
        assert attempt.kind == "ignored_interruption"
        # the speaker's IPU that holds the onset runs past the end of the attempt (by the 0.1 s margin)
        holder = next(s for s in timeline.segments if s.speaker == record.interrupted and s.start < record.onset < s.end)
        assert holder.end >= attempt.end + 0.1 - 1 / SR and not holder.text.endswith("-")


def test_backchannels_sit_inside_the_other_speakers_turn():
    timeline, _ = _drawn(4, seconds=200.0, backchannel_prob=1.0, interruption_prob=0.0)
    backchannels = [s for s in timeline.segments if s.kind == "backchannel"]
    assert len(backchannels) > 10
    for bc in backchannels:
        other = [s for s in timeline.segments if s.speaker != bc.speaker and s.kind == "turn"]
        # inside the span of the other's turn IPUs: some IPU started before it, some IPU ends after it
        assert any(s.start < bc.start for s in other) and any(s.end > bc.end for s in other)


# ---------------------------------------------------------------------------------------------------------- noise
def test_noise_signals_have_unit_power_and_the_requested_shape():
    rng = np.random.default_rng(0)
    for kind in ("white", "pink", "tone"):
        x = noise_signal(kind, 32000, rng)
        assert np.mean(x ** 2) == pytest.approx(1.0, rel=1e-9)
    pink = np.abs(np.fft.rfft(noise_signal("pink", 2 ** 16, rng))) ** 2
    freqs = np.fft.rfftfreq(2 ** 16, 1 / SR)
    low, high = pink[(freqs >= 100) & (freqs < 200)].sum(), pink[(freqs >= 1000) & (freqs < 2000)].sum()
    assert low / high == pytest.approx(1.0, rel=0.2)   # 1/f: equal power per octave


# ---------------------------------------------------------------------------------------------------- the job
def _cfg(tmp_path: Path, name: str = "out", **kw) -> BuildDialoguesConfig:
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    base = {"output": str(tmp_path / name), "num_conversations": 3, "seconds": 15.0,
            "voices": ["flite:a", "flite:b", "flite:c"], "text": f"file:{text}", "progress": False}
    return BuildDialoguesConfig(**{**base, **kw})


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.parent.name in ("stereo", "mono", "timelines",
                                                                                       "rttm")
            or p.name == "manifest.jsonl"}


def test_build_writes_the_layout_and_a_summary(tmp_path):
    cfg = _cfg(tmp_path)
    summary = build_dialogues(cfg, FakeSynth())
    out = Path(cfg.output)
    entries = load_dialogues(out)
    assert [e.id for e in entries] == ["dlg-000000", "dlg-000001", "dlg-000002"]
    assert summary["built"] == 3 and summary["failures"] == [] and summary["real_time_factor"] > 0
    assert summary["audio_seconds"] == pytest.approx(sum(e.record["duration"] for e in entries), abs=1e-3)
    for entry in entries:
        timeline, audio = entry.timeline(), entry.audio()
        assert audio.shape == (2, round(timeline.duration * SR))
        assert set(entry.record["speakers"].values()) <= set(cfg.voices)
        assert entry.record["speakers"]["A"] != entry.record["speakers"]["B"]
        for index, speaker in enumerate(SPEAKERS):
            assert np.array_equal(entry.channel(speaker), audio[index])
            inside = np.zeros(audio.shape[1], bool)
            for start, end in timeline.channel(speaker):
                inside[round(start * SR):round(end * SR)] = True
            assert np.all(audio[index][~inside] == 0) and np.all(np.abs(audio[index][inside]) == AMPLITUDE)
        rttm = read_rttm(out / entry.record["rttm"])[entry.id]
        assert [(s.speaker, round(s.start, 3)) for s in rttm] == [
            (s.speaker, round(s.start, 3)) for s in sorted(timeline.segments, key=lambda s: (s.start, s.speaker))]


def test_build_is_deterministic_and_independent_of_sharding(tmp_path):
    build_dialogues(_cfg(tmp_path, "one"), FakeSynth())
    build_dialogues(_cfg(tmp_path, "two"), FakeSynth())
    for rank in (1, 0):
        build_dialogues(_cfg(tmp_path, "sharded", rank=rank, world_size=2), FakeSynth())
    build_dialogues(_cfg(tmp_path, "other", seed=1), FakeSynth())
    one = _digest(tmp_path / "one")
    assert len(one) == 3 * 5 + 1
    assert one == _digest(tmp_path / "two") == _digest(tmp_path / "sharded")
    other = _digest(tmp_path / "other")
    assert all(other[k] != v for k, v in one.items() if k.startswith("stereo"))


def test_resume_rebuilds_only_the_missing_conversation(tmp_path, logs):
    cfg = _cfg(tmp_path)
    build_dialogues(cfg, FakeSynth())
    out = Path(cfg.output)
    before = _digest(out)
    kept = {p: p.stat().st_mtime_ns for p in (out / "stereo").iterdir() if "000001" not in p.name}
    (out / "stereo" / "dlg-000001.wav").unlink()
    summary = build_dialogues(cfg, FakeSynth())
    assert (summary["built"], summary["skipped"]) == (1, 2)
    assert _digest(out) == before
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    # another setting into the same output is refused
    with pytest.raises(ConfigError, match="seconds"):
        build_dialogues(_cfg(tmp_path, seconds=20.0), FakeSynth())


def test_a_failing_voice_skips_its_conversations(tmp_path, logs):
    cfg = _cfg(tmp_path, num_conversations=4)
    summary = build_dialogues(cfg, FakeSynth(fail=("c",)))
    failed = {f["id"] for f in summary["failures"]}
    entries = load_dialogues(cfg.output)
    assert failed and len(entries) == 4 - len(failed)
    assert all("flite:c" not in e.record["speakers"].values() for e in entries)
    assert all("flite:c" in f["voices"] for f in summary["failures"])
    assert any("failed and was skipped" in line for line in logs)


def test_a_bad_voice_is_named(tmp_path):
    with pytest.raises(ConfigError, match="flite:c"):
        build_dialogues(_cfg(tmp_path), FakeSynth(fail=("c",), fail_probe=True))
    with pytest.raises(ConfigError, match="nosuch:voice"):
        build_dialogues(_cfg(tmp_path, voices=["flite:a", "nosuch:voice"]), FakeSynth())
    with pytest.raises(ConfigError, match="two distinct voices"):
        build_dialogues(_cfg(tmp_path, voices=["flite:a"]), FakeSynth())


def test_noise_is_added_at_the_drawn_snr_and_leaves_the_timeline(tmp_path):
    clean = _cfg(tmp_path, "clean", num_conversations=2)
    build_dialogues(clean, FakeSynth())
    noisy = _cfg(tmp_path, "noisy", num_conversations=2,
                 noise=NoiseConfig(kinds=["white", "pink", "babble", "tone"], snr_min=15.0, snr_max=25.0))
    build_dialogues(noisy, FakeSynth())
    for c, n in zip(load_dialogues(clean.output), load_dialogues(noisy.output)):
        assert c.timeline() == n.timeline()
        for index, speaker in enumerate(SPEAKERS):
            spec = n.record["noise"][speaker]
            assert spec["kind"] in ("white", "pink", "babble", "tone") and 15 <= spec["snr_db"] <= 25
            speech = c.audio()[index].astype(np.float64)
            noise = n.audio()[index].astype(np.float64) - speech
            inside = np.zeros(len(speech), bool)
            for start, end in c.timeline().channel(speaker):
                inside[round(start * SR):round(end * SR)] = True
            # int16 rounding adds 1/12 to the noise power (1e6 / 10^2.5 >= 3000 here): < 0.001 dB; SNR rounded to 0.01
            snr = 10 * np.log10(np.mean(speech[inside] ** 2) / np.mean(noise ** 2))
            assert snr == pytest.approx(spec["snr_db"], abs=0.01)


# ------------------------------------------------------------------------------------------------- real TTS + set
def test_sentences_from_the_bundled_corpus_and_a_file(tmp_path):
    corpus = load_sentences("corpus:all", 3, 12)
    assert corpus and all(3 <= len(s.split()) <= 12 for s in corpus) and corpus == sorted(set(corpus))
    (tmp_path / "t.txt").write_text("b.\n\na.\n")
    assert load_sentences(f"file:{tmp_path / 't.txt'}") == ["a.", "b."]
    with pytest.raises(ConfigError, match="no such file"):
        load_sentences(f"file:{tmp_path / 'missing.txt'}")


def test_flite_build_places_real_speech_on_the_timeline(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    cfg = BuildDialoguesConfig(output=str(tmp_path / "real"), num_conversations=1, seconds=12.0, text="corpus:all",
                               progress=False, timing=TimingConfig(interruption_prob=0.5, backchannel_prob=0.5))
    summary = build_dialogues(cfg)
    assert summary["real_time_factor"] > 1
    (entry,) = load_dialogues(cfg.output)
    timeline, audio = entry.timeline(), entry.audio()
    for index, speaker in enumerate(SPEAKERS):
        x = audio[index].astype(np.float64)
        inside = np.zeros(len(x), bool)
        for start, end in timeline.channel(speaker):
            a, b = round(start * SR), round(end * SR)
            inside[a:b] = True
            # speech from the first to the last sample: both above finish's trim threshold (> 0), RMS well above it
            assert x[a] != 0 and x[b - 1] != 0 and np.sqrt(np.mean(x[a:b] ** 2)) > 300
        assert np.all(x[~inside] == 0)


def test_flite_unknown_voice_is_named(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    with pytest.raises(ConfigError, match="flite:nosuch"):
        build_dialogues(BuildDialoguesConfig(output=str(tmp_path / "x"), voices=["flite:slt", "flite:nosuch"],
                                             text="corpus:all", progress=False))


def test_the_cli_command_builds_from_its_recipe(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    out = tmp_path / "cli"
    assert main(["build-dialogues", f"output={out}", "num_conversations=1", "seconds=5", "text=corpus:all",
                 "progress=false"]) == 0
    (entry,) = load_dialogues(out)
    assert entry.record["format"] == "flac" and entry.record["mono"] is None  # the recipe's settings


@pytest.mark.slow
def test_flite_build_with_a_process_pool_equals_one_process(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    base = {"num_conversations": 2, "seconds": 10.0, "text": "corpus:all", "progress": False}
    build_dialogues(BuildDialoguesConfig(output=str(tmp_path / "serial"), **base))
    build_dialogues(BuildDialoguesConfig(output=str(tmp_path / "pool"), num_workers=2, **base))
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "pool")


def test_the_shipped_default_set_is_consistent():
    root = default_dialogues()
    entries = load_dialogues()
    assert len(entries) >= 2
    assert 120 <= sum(e.record["duration"] for e in entries) <= 200
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 4.5e6
    kinds = set()
    for entry in entries:
        assert set(entry.record["speakers"].values()) <= set(FREE_VOICES)
        timeline, audio = entry.timeline(), entry.audio()
        assert timeline == read_timeline(root / entry.record["timeline"]) and timeline.conversation_id == entry.id
        assert audio.shape == (2, round(timeline.duration * SR))
        kinds |= {s.kind for s in timeline.segments}
        for index, speaker in enumerate(SPEAKERS):
            x = audio[index]
            inside = np.zeros(len(x), bool)
            for start, end in timeline.channel(speaker):
                a, b = round(start * SR), round(end * SR)
                inside[a:b] = True
                assert x[a] != 0 and x[b - 1] != 0
            assert np.all(x[~inside] == 0)
        assert len(read_rttm(root / entry.record["rttm"])[entry.id]) == len(timeline.segments)
    assert kinds == {"turn", "backchannel", "interruption", "ignored_interruption"}


@pytest.mark.parametrize("method", ["silero", "energy", "units"])
def test_turn_taking_statistics_through_vad_agree_with_the_builders_timelines(method):
    """The builder's audio through each VAD gives the statistics of its ground-truth timelines.

    Tolerances, from the VADs' measured edge errors (tests/test_vad.py: silero starts late by up to ~0.09 s and ends
    late by up to ~0.13 s; energy edges within ~0.1 s on real speech): an event's duration moves by at most 2 x 0.13 s,
    so seconds per minute by at most 0.26 s x events per minute; a silence or an overlap near one of those edges can
    appear or vanish, so counts may differ by a few events (measured on the shipped set: silero IPU 70 vs 70, pauses
    25 vs 24, gaps 17 vs 18, overlaps 25 vs 24; energy gaps 17 vs 20; the starter tokenizer's silence units, 20 ms
    frames: gaps 17 vs 20, overlaps 25 vs 23). The builder keeps a speaker's IPUs >= 0.25 s
    apart, so the IPUs themselves must match within one (a TTS sentence-internal pause over 200 ms would split one).
    """
    entries = list(load_dialogues())
    timelines = [e.timeline() for e in entries]
    reference = stats_from_timelines(timelines).corpus
    cfg = VADConfig(method=method)
    measured = []
    for entry, timeline in zip(entries, timelines, strict=True):
        audio = entry.audio().astype(np.float32) / 32768
        a, b = conversation_segments(audio, SR, cfg)
        frames = np.arange(0, timeline.duration, 0.01) + 0.005          # 10 ms frames, by their centres
        for index, segments in enumerate((a, b)):
            truth = np.zeros(len(frames), bool)
            found = np.zeros(len(frames), bool)
            for start, end in timeline.channel(index):
                truth |= (frames >= start) & (frames < end)
            for start, end in segments:
                found |= (frames >= start) & (frames < end)
            assert (found == truth).mean() > 0.9, (entry.id, index)     # measured 0.95-0.98
        measured.append(conversation_stats(entry.id, a, b, timeline.duration).stats)
    got = corpus_stats(measured)
    assert abs(got.ipu.count - reference.ipu.count) <= 1
    for kind in ("ipu", "pause", "gap", "overlap"):
        ref, new = getattr(reference, kind), getattr(got, kind)
        assert abs(new.count - ref.count) <= max(3, 0.2 * ref.count), kind
        assert abs(new.seconds_per_minute - ref.seconds_per_minute) <= 0.26 * ref.per_minute + 0.5, kind
