"""Voice activity per channel (`textless.dialogue.vad`): the energy VAD exact on synthetic bursts, silero and the
unit VAD against the bundled corpus' phone alignments (first / last non-silence phone = truth)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textless.audio import load_audio, resample
from textless.data.corpus import bundled_units_dir, load_bundled_alignments, load_bundled_corpus
from textless.data.units import read_units
from textless.dialogue.turn_taking import merge_ipus
from textless.dialogue.vad import (
    SILERO_WINDOW,
    VADS,
    VADConfig,
    _bundled_frame_units,
    channel_ipus,
    conversation_segments,
    learn_silence_units,
    silence_units_for,
    speech_segments,
    unit_speech_segments,
)
from textless.errors import ConfigError

SR = 16000
ALIGN_TOL = 0.03    # s: the TTS engines' reported phone times agree with the audio to within a few tens of ms
PAD = 1.0           # s of digital silence + low noise added around each corpus utterance
NOISE_DBFS = -70.0
SPEAKERS = ("awb", "kal", "ked", "rms", "slt")  # the aligned voices (rms, slt: never in the starter's training split)


def _burst(rng: np.random.Generator, kind: str, n: int, amplitude: float) -> np.ndarray:
    if kind == "tone":
        return amplitude * np.sin(2 * np.pi * 440 * np.arange(n) / SR + rng.uniform(0, 2 * np.pi))
    return amplitude * rng.standard_normal(n)


def _noise(rng: np.random.Generator, n: int, dbfs: float = NOISE_DBFS) -> np.ndarray:
    return rng.standard_normal(n) * 10 ** (dbfs / 20)


# ----------------------------------------------------------------------------------------------------------- energy
@pytest.mark.parametrize(("frame_ms", "hop_ms", "rate"), [(20.0, 5.0, 16000), (20.0, 10.0, 16000), (25.0, 5.0, 44100),
                                                          (30.0, 10.0, 8000)])
def test_energy_vad_finds_burst_edges_within_one_hop(frame_ms, hop_ms, rate):
    """Tone and noise bursts at random sample positions on -75 dBFS noise: each edge within one hop (the module
    docstring's bound: the bursts are far more than 6 dB over a -40 dB relative threshold)."""
    rng = np.random.default_rng(int(frame_ms * hop_ms + rate))
    cfg = VADConfig(method="energy", energy_frame_ms=frame_ms, energy_hop_ms=hop_ms)
    hop = round(hop_ms * rate / 1000)
    worst = 0.0
    for trial in range(40):
        x = _noise(rng, 3 * rate, -75.0)
        bursts = []
        start = int(rng.integers(rate // 20, rate // 2))
        for _ in range(2):
            end = start + int(rng.integers(rate // 10, rate // 2))
            t = np.arange(end - start) / rate
            x[start:end] += (0.3 * np.sin(2 * np.pi * 440 * t + rng.uniform(0, 6.3)) if trial % 2
                             else 0.1 * rng.standard_normal(end - start))
            bursts.append((start, end))
            start = end + int(rng.integers(rate // 2, rate))
        found = speech_segments(x, rate, cfg)
        assert len(found) == 2, (trial, found)
        for (s, e), (fs, fe) in zip(bursts, found):
            errors = (fs * rate - s, fe * rate - e)
            assert all(abs(err) <= hop for err in errors), (trial, errors, hop)
            worst = max(worst, *map(abs, errors))
    print(f"energy {frame_ms}/{hop_ms} ms at {rate} Hz: worst edge error {worst:.0f} samples (hop {hop})")


def test_energy_vad_is_exact_on_the_hop_grid_and_ignores_silence_and_noise():
    rng = np.random.default_rng(0)
    cfg = VADConfig(method="energy")  # 20 ms frames, 5 ms = 80-sample hop
    x = _noise(rng, 2 * SR)
    x[800:8000] += _burst(rng, "noise", 7200, 0.1)      # 50 ms - 500 ms, both on the grid
    assert speech_segments(x, SR, cfg) == [(0.05, 0.5)]
    assert speech_segments(np.zeros(SR), SR, cfg) == []
    assert speech_segments(_noise(rng, SR), SR, cfg) == []          # -70 dBFS: under the -60 dBFS floor
    assert speech_segments(np.zeros(0), SR, cfg) == []
    loud = _burst(rng, "noise", SR, 0.1)
    assert speech_segments(loud, SR, cfg) == [(0.0, 1.0)]           # speech to both ends of the signal
    with pytest.raises(ConfigError, match="multiple of energy_hop_ms"):
        speech_segments(x, SR, VADConfig(method="energy", energy_frame_ms=12.0, energy_hop_ms=5.0))


def test_energy_vad_absolute_threshold_hangover_and_min_speech():
    rng = np.random.default_rng(1)
    x = _noise(rng, 2 * SR)
    x[1600:4800] += _burst(rng, "noise", 3200, 0.3)       # 0.1-0.3 s, -10 dBFS (2 ms frames: up to about -7)
    x[6400:6560] += _burst(rng, "noise", 160, 0.3)        # 0.4-0.41 s: a 10 ms click
    x[8000:12800] += _burst(rng, "noise", 4800, 0.002)    # 0.5-0.8 s, -54 dBFS (2 ms frames: -58 to -51)
    base = {"method": "energy", "energy_frame_ms": 2.0, "energy_hop_ms": 1.0}
    assert speech_segments(x, SR, VADConfig(**base)) == [(0.1, 0.3), (0.4, 0.41)]  # quiet burst < max - 40 dB
    absolute = VADConfig(**base, energy_reference="dbfs", energy_threshold_db=-60.0)
    assert speech_segments(x, SR, absolute) == [(0.1, 0.3), (0.4, 0.41), (0.5, 0.8)]
    held = VADConfig(**base, energy_reference="dbfs", energy_threshold_db=-60.0, energy_hangover_ms=50.0)
    assert speech_segments(x, SR, held) == [(0.1, 0.35), (0.4, 0.46), (0.5, 0.85)]  # ends held 50 ms
    held = VADConfig(**base, energy_reference="dbfs", energy_threshold_db=-60.0, energy_hangover_ms=95.0)
    assert speech_segments(x, SR, held) == [(0.1, 0.395), (0.4, 0.895)]  # the 90 ms silence is bridged, 100 ms not
    pruned = VADConfig(**base, energy_min_speech_ms=50.0)
    assert speech_segments(x, SR, pruned) == [(0.1, 0.3)]


@pytest.mark.parametrize(("gap_ms", "ipus"), [(199, 1), (200, 2), (201, 2)])
def test_a_199_ms_gap_is_one_ipu_and_201_ms_two_after_merge_ipus(gap_ms, ipus):
    """1 ms hop, bursts on the grid: the energy VAD reads the gap to the sample, `merge_ipus` applies the 200 ms rule."""
    rng = np.random.default_rng(gap_ms)
    cfg = VADConfig(method="energy", energy_frame_ms=2.0, energy_hop_ms=1.0)
    x = _noise(rng, 2 * SR)
    first, second = (8000, 16000), (16000 + gap_ms * SR // 1000, 24000 + gap_ms * SR // 1000)
    for a, b in (first, second):
        x[a:b] += _burst(rng, "tone", b - a, 0.3)
    segments = speech_segments(x, SR, cfg)
    assert segments == [(a / SR, b / SR) for a, b in (first, second)]
    assert len(merge_ipus(segments)) == ipus


def test_conversation_segments_take_either_channel_layout():
    rng = np.random.default_rng(2)
    stereo = np.stack([_noise(rng, 2 * SR), _noise(rng, 2 * SR)])
    stereo[0, 1600:8000] += _burst(rng, "noise", 6400, 0.1)                        # A: 0.1-0.5 s
    stereo[1, 9600:16000] += _burst(rng, "noise", 6400, 0.1)                       # B: 0.6-1.0 s
    stereo[1, 17600:24000] += _burst(rng, "noise", 6400, 0.1)                      # B: 1.1-1.5 s (100 ms pause)
    cfg = VADConfig(method="energy")
    a, b = conversation_segments(stereo, SR, cfg)
    assert (a, b) == ([(0.1, 0.5)], [(0.6, 1.0), (1.1, 1.5)])
    assert conversation_segments(stereo.T, SR, cfg) == (a, b)
    assert channel_ipus(stereo, SR, cfg) == ([(0.1, 0.5)], [(0.6, 1.5)])
    with pytest.raises(ValueError, match="two-channel"):
        conversation_segments(np.zeros((3, SR)), SR, cfg)


# ------------------------------------------------------------------------------------------------ config, registry
def test_config_round_trip_and_bad_method_name():
    cfg = VADConfig(method="energy", energy_hop_ms=1.0, energy_frame_ms=2.0, units_silence=[5, 3])
    data = json.loads(json.dumps(cfg.to_dict()))
    assert VADConfig.from_dict(data) == cfg and data["units_silence"] == [3, 5]
    assert set(VADS.names()) == {"silero", "energy", "units"}
    with pytest.raises(ConfigError, match=r"unknown VAD method 'silerro' \(known: .*silero.*\); did you mean 'silero'"):
        VADConfig(method="silerro")
    with pytest.raises(ConfigError, match="unknown VADConfig keys: thresold"):
        VADConfig.from_dict({"thresold": 0.5})
    with pytest.raises(ConfigError, match="energy_reference"):
        VADConfig(energy_reference="peak")


# ----------------------------------------------------------------------------------------------- real speech (corpus)
def _speech_span(uid: str) -> tuple[float, float]:
    """First non-silence phone start, last non-silence phone end (seconds) of an aligned corpus utterance."""
    phones = [p for p in load_bundled_alignments()[uid].phones if p[2] != "SIL"]
    return phones[0][0], phones[-1][1]


def _padded_utterances(per_speaker: int) -> list[tuple[str, np.ndarray]]:
    """The first utterances of each aligned voice with PAD s of digital silence each side, -70 dBFS noise on all."""
    alignments = load_bundled_alignments()
    paths = {item.id: item.path for split in ("train", "valid", "valid_unseen") for item in load_bundled_corpus(split)}
    rng = np.random.default_rng(3)
    out = []
    for speaker in SPEAKERS:
        for uid in sorted(u for u in alignments if u.startswith(speaker + "_"))[:per_speaker]:
            wav = load_audio(paths[uid], SR)[0].numpy()
            pad = np.zeros(round(PAD * SR))
            x = np.concatenate([pad, wav, pad])
            out.append((uid, (x + _noise(rng, len(x))).astype(np.float32)))
    return out


def _edge_errors(method_segments, utterances) -> np.ndarray:
    errors = []
    for uid, x in utterances:
        segments = method_segments(x)
        assert segments, uid
        start, end = _speech_span(uid)
        errors.append((segments[0][0] - PAD - start, segments[-1][1] - PAD - end))
    return np.array(errors)


def test_silero_finds_the_speech_of_real_utterances():
    """Tolerance from silero's 32 ms window w and its pad p (0): a start is the first window whose probability passes
    the threshold, so at most one window + p early; it lags onsets (weak ones: HH, SH, K) and ends lag the last phone
    while the model's state decays, so allow 4 windows late; both +- ALIGN_TOL for the alignments' own error.
    Measured (15 utterances, 3 per voice): starts +0.049 s on average (-0.004 to +0.088), ends +0.059 s (-0.046 to
    +0.105); on all 144 aligned utterances +0.038 s (-0.019 to +0.224) and +0.072 s (-0.046 to +0.130)."""
    cfg = VADConfig()  # silero
    utterances = _padded_utterances(3)
    errors = _edge_errors(lambda x: speech_segments(x, SR, cfg), utterances)
    early = SILERO_WINDOW + cfg.speech_pad_ms / 1000 + ALIGN_TOL
    late = 4 * SILERO_WINDOW + cfg.speech_pad_ms / 1000 + ALIGN_TOL
    for name, column in (("start", errors[:, 0]), ("end", errors[:, 1])):
        print(f"silero {name} errors (s): mean {column.mean():+.3f} [{column.min():+.3f}, {column.max():+.3f}]")
    assert (errors >= -early).all() and (errors <= late).all(), errors
    assert 0 <= errors.mean(axis=0).min() and errors.mean(axis=0).max() <= 3 * SILERO_WINDOW
    # another rate is resampled to 16 kHz: the same segments to within a window
    x = utterances[0][1]
    x441 = resample(torch.from_numpy(x), SR, 44100).numpy()
    ref, other = speech_segments(x, SR, cfg), speech_segments(x441, 44100, cfg)
    assert len(ref) == len(other)
    assert np.abs(np.array(ref) - np.array(other)).max() <= SILERO_WINDOW + 1e-6


def test_energy_vad_on_real_utterances():
    """The energy VAD on the same padded corpus speech: measured starts +0.023 s on average, ends -0.009 s; allow the
    alignment error plus 0.1 s for weak onsets and offsets (fricatives near the -40 dB relative threshold)."""
    cfg = VADConfig(method="energy")
    errors = _edge_errors(lambda x: speech_segments(x, SR, cfg), _padded_utterances(3))
    print("energy edge errors (s): mean", errors.mean(axis=0).round(3), "max |err|", np.abs(errors).max().round(3))
    assert (np.abs(errors) <= 0.1 + ALIGN_TOL).all(), errors


# ------------------------------------------------------------------------------------------------------- unit VAD
def test_unit_speech_segments_on_a_hand_made_sequence():
    units = np.array([0, 0, 5, 5, 6, 0, 7, 1, 1, 1, 9, 9, 9, 0])
    assert unit_speech_segments(units, 50.0, {0, 1}) == [(0.04, 0.1), (0.12, 0.14), (0.2, 0.26)]
    assert unit_speech_segments(units, 50.0, {0, 1}, min_speech_frames=3) == [(0.04, 0.1), (0.2, 0.26)]
    assert unit_speech_segments(units, 50.0, set()) == [(0.0, 0.28)]
    assert learn_silence_units([np.array([0, 0, 3, 3, 4])], [np.array([1, 1, 1, 0, 0], bool)]) == {0, 3}
    assert learn_silence_units([np.array([0, 0, 3, 3, 4])], [np.array([1, 1, 1, 0, 0], bool)], min_fraction=0.6) == {0}
    with pytest.raises(ValueError, match="silence mask of 4 frames"):
        learn_silence_units([np.array([0, 0, 3])], [np.ones(4, bool)])


def _frame_units(split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, frame-level starter units, known-silence mask) of the aligned utterances of a split, from the shipped
    units (the starter tokenizer's labels, run-length coded)."""
    alignments = load_bundled_alignments()
    out = []
    for seq in read_units(bundled_units_dir(split)):
        if seq.id in alignments:
            frames = seq.expand()
            out.append((seq.id, frames, alignments[seq.id].frame_labels(50.0, len(frames)) == 0))
    return out


def test_silence_units_learned_on_train_mark_held_out_silence():
    """Learned on the training split's aligned voices (81 utterances), tested on `valid` + `valid_unseen` (63; two
    voices the tokenizer never saw). Measured: 30 of 100 units are silence units; 98.4 % of held-out frames right
    (silence 98.2 %, speech 98.5 %; silence is 24.6 % of the frames)."""
    train = _frame_units("train")
    held_out = _frame_units("valid") + _frame_units("valid_unseen")
    silence = learn_silence_units([u for _, u, _ in train], [m for _, _, m in train])
    truth = np.concatenate([m for _, _, m in held_out])
    predicted = np.concatenate([np.isin(u, list(silence)) for _, u, _ in held_out])
    accuracy = (truth == predicted).mean()
    print(f"{len(silence)} silence units; held-out frame accuracy {accuracy:.4f}, silence recall "
          f"{predicted[truth].mean():.4f}, speech recall {(~predicted[~truth]).mean():.4f}")
    assert accuracy >= 0.95 and predicted[truth].mean() >= 0.93 and (~predicted[~truth]).mean() >= 0.93
    # and as segments: the utterance's speech span within 0.1 s + the alignment error (measured: 0.12 s at worst)
    errors = []
    for uid, units, _ in held_out:
        segments = unit_speech_segments(units, 50.0, silence)
        start, end = _speech_span(uid)
        errors.append((segments[0][0] - start, segments[-1][1] - end))
    assert np.mean(np.abs(errors) <= 0.1 + ALIGN_TOL) >= 0.95, errors


@pytest.fixture(scope="module")
def starter_tokenizer():
    from textless.tokenizers.bundle import SpeechTokenizer

    return SpeechTokenizer.from_pretrained("starter")


def test_silence_units_for_the_starter_and_the_units_method(starter_tokenizer):
    train = _frame_units("train")
    learned = silence_units_for(starter_tokenizer)  # reuses the shipped units (same tokenizer) + synthetic silence
    assert learned == learn_silence_units([u for _, u, _ in train], [m for _, _, m in train])
    # digital silence and low noise are silence for it
    rng = np.random.default_rng(4)
    known = [torch.zeros(SR), *(torch.from_numpy(_noise(rng, SR, level).astype(np.float32)) for level in (-80, -70))]
    for labels in starter_tokenizer.frame_labels_batch(known):
        assert np.isin(labels, list(learned)).mean() >= 0.95
    # the registered method on padded real speech: the speech span to within 2 frames + the alignment error
    cfg = VADConfig(method="units", units_silence=sorted(learned))
    errors = _edge_errors(lambda x: speech_segments(x, SR, cfg), _padded_utterances(1))
    print("units edge errors (s):", errors.round(3).tolist())
    assert (np.abs(errors) <= 2 / 50 + ALIGN_TOL + 0.05).all(), errors


def test_the_shipped_units_silence_units_for_reuses_are_the_tokenizers_frame_labels(starter_tokenizer):
    """`silence_units_for` reads the shipped starter units instead of re-encoding the training split (~80 s on 2
    cores); they must be exactly what encoding gives, checked on a sample of utterances (one per voice)."""
    shipped = _bundled_frame_units(starter_tokenizer, "train")
    assert shipped is not None
    items = list({item.speaker: item for item in load_bundled_corpus("train")}.values())
    labels = starter_tokenizer.frame_labels_batch([load_audio(item.path, SR)[0] for item in items])
    for item, frames in zip(items, labels, strict=True):
        assert np.array_equal(shipped[item.id], frames), item.id
