"""StreamingVocoder: one unit frame per step == `UnitVocoder` synthesis of the whole sequence, delayed by the look-ahead.

Tolerance. Streaming runs the same convolutions as whole-sequence synthesis on other lengths, so only the order of the
float sums differs: each of the D convolutions on the longest path from a unit to a sample may round differently by
about one unit roundoff u of the dtype relative to the signal's scale. The bound used is ``4 D u max|y|`` (u = 2^-53
in float64, 2^-24 in float32); a real error (a wrong frame, a missing context frame) is of the order of max|y| itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from textless.errors import TextlessError
from textless.streaming import StreamingError
from textless.utils.assets import STARTER_DIR
from textless.vocoders.generator import UnitHiFiGANConfig, receptive_field_frames
from textless.vocoders.model import UnitVocoder
from textless.vocoders.presets import UPSAMPLING, GeneratorOverrides, generator_config
from textless.vocoders.streaming import StreamingVocoder, receptive_field_sides

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**kw) -> UnitHiFiGANConfig:
    """hop 6, receptive field (10, 10): cheap enough to stream hundreds of frames."""
    base = {"num_embeddings": 20, "embedding_dim": 8, "upsample_rates": [3, 2], "upsample_kernel_sizes": [7, 4],
            "upsample_initial_channel": 8, "resblock_kernel_sizes": [3, 5],
            "resblock_dilation_sizes": [[1, 3], [1, 2]]}
    return UnitHiFiGANConfig(**{**base, **kw})


def random_vocoder(config: UnitHiFiGANConfig, dtype=torch.float64, seed: int = 0) -> UnitVocoder:
    """Random weights scaled by 1 / sqrt(fan-in), so every layer's signal is O(1) (the N(0, 0.01) init of training
    makes the far taps vanish below float precision, which would hide a missing context frame)."""
    torch.manual_seed(seed)
    vocoder = UnitVocoder.from_config(config)
    for m in vocoder.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            fan_in = m.weight.shape[1 if isinstance(m, torch.nn.Conv1d) else 0] * m.weight.shape[2]
            torch.nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(fan_in))
    return vocoder.to(dtype).eval()


def depth(config: UnitHiFiGANConfig) -> int:
    """Convolutions on the longest path: conv_pre, per stage the transposed conv + 2 per dilation, conv_post."""
    return 2 + len(config.upsample_rates) * (1 + 2 * max(len(d) for d in config.resblock_dilation_sizes))


def tolerance(vocoder: UnitVocoder, reference: np.ndarray) -> float:
    dtype = vocoder.generator.conv_pre.weight.dtype
    return 4 * depth(vocoder.config) * torch.finfo(dtype).eps / 2 * float(np.abs(reference).max())


def offline(vocoder: UnitVocoder, units: np.ndarray, speaker=None) -> np.ndarray:
    """Whole-sequence synthesis in the vocoder's own dtype (`synthesize` returns float32)."""
    spk = None if speaker is None else torch.tensor([speaker])
    with torch.no_grad():
        return vocoder.generator(torch.as_tensor(units)[None], None, spk)[0, 0].numpy()


# ------------------------------------------------------------------------------------------------ receptive field
@pytest.mark.parametrize("hop", sorted(UPSAMPLING))
def test_sides_agree_with_the_receptive_field(hop):
    config = generator_config("small", None, sampling_rate=16000, frame_rate=16000 / hop, num_units=10,
                              duration_predictor=False, speakers=None)
    left, right = receptive_field_sides(config)
    assert max(left, right) == receptive_field_frames(config)
    assert (left, right) == {160: (20, 20), 320: (21, 21), 640: (20, 20)}[hop]


def test_sides_are_exact_dependencies():
    """Changing frame j changes exactly the frames j - right .. j + left (float64, O(1) weights): the bound is tight."""
    vocoder = random_vocoder(tiny_config(upsample_kernel_sizes=[5, 4]))
    left, right = receptive_field_sides(vocoder.config)
    units = np.random.RandomState(0).randint(0, 20, 60)
    base = offline(vocoder, units)
    j = 30
    changed = units.copy()
    changed[j] = (units[j] + 1) % 20
    diff = np.abs(offline(vocoder, changed) - base).reshape(60, vocoder.hop).max(1)
    frames = np.nonzero(diff)[0]
    assert (frames.min(), frames.max()) == (j - right, j + left)


# ------------------------------------------------------------------------------------------------ streaming == offline
def stream(sv: StreamingVocoder, sequences: list[np.ndarray], starts: list[int], speaker=None) -> list[np.ndarray]:
    """Stream B sequences, item b starting at step starts[b] (paused before, and after its end), then flush.

    Returns per item its output from its first step on: (len + lookahead) * hop samples."""
    batch = len(sequences)
    steps = max(s + len(q) for s, q in zip(starts, sequences))
    outputs: list[list[np.ndarray]] = [[] for _ in range(batch)]
    with sv.streaming(batch):
        if speaker is not None:
            sv.set_speakers(speaker)
        for t in range(steps):
            active = torch.tensor([s <= t < s + len(q) for s, q in zip(starts, sequences)])
            sv.set_exec_mask(active)
            units = torch.tensor([q[t - s] if s <= t < s + len(q) else 0 for s, q in zip(starts, sequences)])
            out = sv.step(units).numpy()
            for b in range(batch):
                if active[b]:
                    outputs[b].append(out[b])
                else:
                    assert not out[b].any()  # paused: zeros
        tail = sv.flush().numpy()
    return [np.concatenate(outputs[b] + [tail[b]]) for b in range(batch)]


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_streaming_equals_offline_float64_staggered(padding_mode):
    vocoder = random_vocoder(tiny_config(padding_mode=padding_mode))
    sv = StreamingVocoder(vocoder)
    assert (sv.left, sv.right, sv.lookahead, sv.window, sv.exact) == (10, 10, 10, 21, True)
    rng = np.random.RandomState(1)
    # longer and shorter than the window (reflection needs more frames than conv_pre's padding of 3)
    sequences = [rng.randint(0, 20, n) for n in (50, 7, 33, 1 if padding_mode == "zeros" else 4)]
    got = stream(sv, sequences, starts=[0, 5, 12, 3])
    delay = sv.lookahead * vocoder.hop
    for units, out in zip(sequences, got):
        ref = offline(vocoder, units)
        assert out.shape == (delay + len(ref),)
        assert not out[:delay].any()
        np.testing.assert_allclose(out[delay:], ref, rtol=0, atol=tolerance(vocoder, ref))


def test_streaming_equals_synthesize_float32_multispeaker_preset():
    """A ``small``-preset layout (hop 160, 2 speakers): float32 against the public `synthesize`."""
    config = generator_config("small", GeneratorOverrides(upsample_initial_channel=16), sampling_rate=16000,
                              frame_rate=100, num_units=20, duration_predictor=False, speakers=["a", "b"])
    vocoder = random_vocoder(config, torch.float32)
    sv = StreamingVocoder(vocoder, speaker="a")
    assert sv.latency == pytest.approx(20 * 160 / 16000)
    rng = np.random.RandomState(2)
    sequences = [rng.randint(0, 20, n) for n in (60, 45)]
    got = stream(sv, sequences, starts=[0, 9], speaker=torch.tensor([1, 0]))
    delay = sv.lookahead * vocoder.hop
    for units, speaker, out in zip(sequences, [1, 0], got):
        ref = vocoder.synthesize([units], speakers=speaker)[0]
        np.testing.assert_allclose(out[delay:], ref, rtol=0, atol=tolerance(vocoder, ref))


def test_reset_in_the_middle_and_snapshots():
    vocoder = random_vocoder(tiny_config())
    sv = StreamingVocoder(vocoder)
    rng = np.random.RandomState(3)
    first, second, other = rng.randint(0, 20, 25), rng.randint(0, 20, 30), rng.randint(0, 20, 55)
    out0, out1 = [], []
    with sv.streaming(2):
        for t in range(55):
            if t == 25:  # item 0: a new stream; item 1 goes on
                sv.reset_streaming(torch.tensor([True, False]))
            unit0 = first[t] if t < 25 else second[t - 25]
            out = sv.step(torch.tensor([unit0, other[t]])).numpy()
            out0.append(out[0])
            out1.append(out[1])
            if t == 40:
                snap = sv.get_streaming_state()
                ahead = [sv.step(torch.tensor([1, 2])).numpy() for _ in range(3)]
                sv.set_streaming_state(snap)
                again = [sv.step(torch.tensor([1, 2])).numpy() for _ in range(3)]
                np.testing.assert_array_equal(np.stack(ahead), np.stack(again))
                sv.set_streaming_state(snap)
        tail = sv.flush().numpy()
    hop, delay = vocoder.hop, sv.lookahead * vocoder.hop
    # item 0 after the reset: its earlier frames (and the first stream's tail) are gone, the second stream is offline
    got0 = np.concatenate(out0[25:] + [tail[0]])
    ref0 = offline(vocoder, second)
    np.testing.assert_allclose(got0[delay:], ref0, rtol=0, atol=tolerance(vocoder, ref0))
    assert not got0[:delay].any()
    got1 = np.concatenate(out1 + [tail[1]])
    ref1 = offline(vocoder, other)
    np.testing.assert_allclose(got1[delay:], ref1, rtol=0, atol=tolerance(vocoder, ref1))
    assert len(got1) == (len(other) + sv.lookahead) * hop


def test_starter_vocoder_streams_like_synthesize():
    vocoder = UnitVocoder.from_pretrained(STARTER_DIR / "vocoder")
    sv = StreamingVocoder(vocoder, speaker="awb")
    assert (sv.left, sv.right) == (14, 14)
    assert sv.latency_frames == 14 and sv.latency == pytest.approx(0.28)
    units = np.random.RandomState(4).randint(0, 100, 40)
    (got,) = stream(sv, [units], starts=[0])
    ref = vocoder.synthesize([units], speakers="awb", deduplicated=False)[0]
    np.testing.assert_allclose(got[sv.lookahead * vocoder.hop:], ref, rtol=0, atol=tolerance(vocoder, ref))


def test_shorter_lookahead_is_cheaper_but_not_exact():
    vocoder = random_vocoder(tiny_config())
    sv = StreamingVocoder(vocoder, lookahead=3, context=4)
    assert (sv.window, sv.latency_frames, sv.exact) == (8, 3, False)
    units = np.random.RandomState(5).randint(0, 20, 30)
    (got,) = stream(sv, [units], starts=[0])
    ref = offline(vocoder, units)
    out = got[3 * vocoder.hop:]
    assert out.shape == ref.shape and np.abs(out - ref).max() > 1e-3


def test_multi_codebook_units():
    config = tiny_config(num_embeddings=2 * 10, num_codebooks=2, pooling="sum")
    vocoder = random_vocoder(config)
    units = np.random.RandomState(6).randint(0, 10, (30, 2))
    sv = StreamingVocoder(vocoder)
    with sv.streaming(1):
        outs = [sv.step(torch.as_tensor(u)[None]).numpy()[0] for u in units]
        tail = sv.flush().numpy()[0]
    got = np.concatenate(outs + [tail])[sv.lookahead * vocoder.hop:]
    ref = offline(vocoder, units)
    np.testing.assert_allclose(got, ref, rtol=0, atol=tolerance(vocoder, ref))


def test_refusals():
    with pytest.raises(TextlessError, match="f0"):
        StreamingVocoder(random_vocoder(tiny_config(f0=True)))
    with pytest.raises(TextlessError, match="multi-speaker"):
        StreamingVocoder(random_vocoder(tiny_config(multispkr=True, num_speakers=2)))
    with pytest.raises(TextlessError, match="single-speaker"):
        StreamingVocoder(random_vocoder(tiny_config()), speaker=0)
    sv = StreamingVocoder(random_vocoder(tiny_config()))
    with pytest.raises(StreamingError):
        sv.step(torch.tensor([1]))
    with sv.streaming(2):
        with pytest.raises(StreamingError, match="unit ids"):
            sv.step(torch.tensor([1, 20]))
        with pytest.raises(StreamingError, match="shape"):
            sv.step(torch.tensor([1, 2, 3]))
        sv.set_exec_mask(torch.tensor([True, False]))
        sv.step(torch.tensor([1, 99]))  # a paused stream's input is not checked
