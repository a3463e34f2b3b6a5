"""`textless train-vocoder` (textless.vocoders.train / data / losses / presets / checkpoint): segment alignment,
duration targets, losses, the training loop, exact resume, checkpoints, TensorBoard, speakers, config errors, CLI.

Everything runs tiny: hop-16 generators on 1000 Hz hand-made units and a small registered discriminator (the real
speechbrain discriminators are checked for interface compatibility separately; one of their checkpoints is ~850 MB).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from textless.cli import main
from textless.data import load_dataset
from textless.data.units import UnitMeta, UnitSequence, dedup, read_units, write_units
from textless.errors import ConfigError
from textless.vocoders import UnitVocoder, load_vocoder
from textless.vocoders.data import VocoderSegments, segment_runs
from textless.vocoders.losses import (
    LogMel,
    dc_offset_loss,
    discriminator_loss,
    duration_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1,
)
from textless.vocoders.presets import PRESETS, GeneratorOverrides, generator_config
from textless.vocoders.train import (
    DISCRIMINATORS,
    TRAINER_STATE_KEYS,
    VocoderTrainConfig,
    VocoderTrainHooks,
    register_discriminator,
    train_vocoder,
)

SR, HOP, RATE, K = 16000, 16, 1000.0, 12
TINY = GeneratorOverrides(upsample_initial_channel=16, embedding_dim=8, upsample_rates=[4, 4],
                          upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                          dur_predictor_hidden_dim=8)


class TinyDiscriminator(nn.Module):
    """Two small weight-normed sub-discriminators with speechbrain's output convention (scores, feats)."""

    def __init__(self):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.subs = nn.ModuleList(
            nn.ModuleList([wn(nn.Conv1d(1, 4, 9, stride, padding=4)), wn(nn.Conv1d(4, 4, 9, 2, padding=4)),
                           nn.Conv1d(4, 1, 3, padding=1)]) for stride in (1, 2))

    def forward(self, x):
        scores, feats = [], []
        for convs in self.subs:
            h, fs = x, []
            for conv in convs[:-1]:
                h = F.leaky_relu(conv(h), 0.1)
                fs.append(h)
            h = convs[-1](h)
            fs.append(h)
            scores.append(h.flatten(1))
            feats.append(fs)
        return scores, feats


register_discriminator("test-tiny", TinyDiscriminator)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------------ corpora
def tone_audio(frames: np.ndarray) -> np.ndarray:
    """A learnable waveform: each unit u is a sine of (400 + 300 u) Hz during its frames."""
    n = np.arange(len(frames) * HOP)
    freq = 400.0 + 300.0 * np.repeat(frames, HOP)
    return (0.5 * np.sin(2 * np.pi * freq * n / SR)).astype(np.float32)


def index_audio(frames: np.ndarray) -> np.ndarray:
    """Sample n = (its frame index) / 1024: exact in float32, so alignment is checked sample by sample."""
    return (np.arange(len(frames) * HOP) // HOP / 1024).astype(np.float32)


def write_corpus(root: Path, utts: dict, *, deduplicated: bool = True, source: bool = True, rate: float = RATE,
                 audio=tone_audio, vocab: int = K, bpe: bool = False, encoding: str = "jsonl") -> Path:
    """utts: id -> (frame-level units, speaker or None, extra samples appended (> 0) or cut (< 0) from the audio).
    Writes audio/<id>.wav (float), a manifest audio.tsv and the unit dataset units/ (its source = the manifest)."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows, seqs = ["id\tpath\tduration\tspeaker"], []
    for utt_id, (frames, speaker, extra) in utts.items():
        frames = np.asarray(frames, np.int64)
        wav = audio(frames)
        wav = np.concatenate([wav, np.full(max(extra, 0), 0.25, np.float32)])[: len(wav) + extra]
        sf.write(root / "audio" / f"{utt_id}.wav", wav, SR, subtype="FLOAT")
        rows.append(f"{utt_id}\taudio/{utt_id}.wav\t{len(wav) / SR:.6f}\t{speaker or ''}")
        seqs.append(UnitSequence(utt_id, *dedup(frames)) if deduplicated else UnitSequence(utt_id, frames))
    (root / "audio.tsv").write_text("\n".join(rows) + "\n")
    meta = UnitMeta(tokenizer={"name": "test-km12", "k": vocab}, frame_rate=rate, vocab_size=vocab,
                    deduplicated=deduplicated, bpe=bpe, extra={"source": str(root / "audio.tsv")} if source else {})
    return write_units(root / "units", seqs, meta, encoding=encoding)


def random_frames(rng, n: int) -> np.ndarray:
    """n frames of runs of 1-6 frames of random units (no two equal neighbouring runs)."""
    out = []
    while len(out) < n:
        u = int(rng.integers(0, K))
        if not out or out[-1] != u:
            out += [u] * int(rng.integers(1, 7))
    return np.array(out[:n], np.int64)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(train units, valid units): two speakers, 8 + 3 utterances of 80-200 frames (0.08-0.2 s)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("vocoder_corpus")
    train = {f"u{i:02d}": (random_frames(rng, int(rng.integers(80, 200))), ["bob", "alice"][i % 2], 0)
             for i in range(8)}
    valid = {f"v{i:02d}": (random_frames(rng, int(rng.integers(80, 200))), ["bob", "alice"][i % 2], 0)
             for i in range(3)}
    return write_corpus(root / "train", train), write_corpus(root / "valid", valid)


def config(corpus, out, **kw) -> VocoderTrainConfig:
    train, valid = corpus
    base = {"train_dataset": str(train), "valid_dataset": str(valid), "output_dir": str(out), "preset": "small",
            "generator": TINY, "discriminator": "test-tiny", "segment_frames": 64, "batch_size": 3, "max_steps": 6,
            "mel_only_steps": 2, "eval_every": 3, "save_every": 2, "log_every": 1, "num_valid_samples": 2,
            "progress": False, "tensorboard": False, "prefetch": 0, "seed": 3}
    base.update(kw)
    return VocoderTrainConfig(**base)


def segments(units_dir, segment_frames=16, **kw) -> VocoderSegments:
    units = read_units(units_dir)
    return VocoderSegments(units, load_dataset(units.meta.extra["source"]), sampling_rate=SR,
                           segment_frames=segment_frames, **kw)


# ---------------------------------------------------------------------------------------------------- alignment
def test_segments_pair_frame_t_with_samples_t_hop(tmp_path):
    rng = np.random.default_rng(1)
    utts = {"exact": (random_frames(rng, 40), None, 0),
            "longer": (random_frames(rng, 40), None, 100),     # HuBERT-like: audio longer than frames * hop -> cut
            "shorter": (random_frames(rng, 40), None, -10),    # Whisper-like: audio shorter -> zero-padded
            "tiny": (random_frames(rng, 5), None, 0)}          # shorter than a segment -> padded with a mask
    data = segments(write_corpus(tmp_path, utts, audio=index_audio))
    assert data.hop == HOP and data.ids == ["exact", "longer", "shorter", "tiny"]
    for i, utt_id in enumerate(data.ids):
        wav = data.waveform(i)
        frames = utts[utt_id][0]
        assert len(wav) == len(frames) * HOP and np.array_equal(data.frames(i), frames)
    shorter = data.waveform(2)
    assert np.all(shorter[-10:] == 0) and np.array_equal(shorter[:-10], index_audio(utts["shorter"][0])[:-10])
    assert np.array_equal(data.waveform(1), index_audio(utts["longer"][0]))  # the 100 extra samples are cut
    seen = set()
    for step in range(60):
        batch = data.batch(step, 4)
        assert batch.units.shape == (4, 16) and batch.audio.shape == (4, 1, 16 * HOP)
        for row, (utt_id, start) in enumerate(zip(batch.ids, batch.starts)):
            frames = utts[utt_id][0]
            n = min(16, len(frames) - start)
            assert 0 <= start <= max(len(frames) - 16, 0) and int(batch.mask[row].sum()) == n
            assert batch.mask[row, :n].all() and not batch.mask[row, n:].any()
            assert torch.equal(batch.units[row, :n], torch.from_numpy(frames[start: start + n]))
            assert not batch.units[row, n:].any()
            rows = batch.audio[row, 0].reshape(16, HOP).numpy()
            expected = np.arange(start, start + 16)[:, None] / 1024 * np.ones((1, HOP))
            ok = rows[:n] == expected[:n].astype(np.float32)
            if utt_id == "shorter" and start + n == 40:  # the zero-padded tail of the last frame
                ok[n - 1, HOP - 10:] = rows[n - 1, HOP - 10:] == 0
            assert ok.all() and not rows[n:].any()
            seen.add((utt_id, int(start)))
    assert ("tiny", 0) in seen and int(batch.valid_samples.max()) == 16 * HOP


def test_sampling_is_a_pure_function_of_seed_and_step_and_uniform_over_positions(tmp_path):
    rng = np.random.default_rng(2)
    utts = {"a": (random_frames(rng, 100), None, 0), "b": (random_frames(rng, 25), None, 0),
            "c": (random_frames(rng, 10), None, 0)}
    units = write_corpus(tmp_path, utts)
    first, second = segments(units, seed=7), segments(units, seed=7)
    for step in (0, 5, 1234):
        a, b = first.batch(step, 5), second.batch(step, 5)
        assert a.ids == b.ids and np.array_equal(a.starts, b.starts) and torch.equal(a.audio, b.audio)
    assert not np.array_equal(first.draw(0, 50)[1], first.draw(1, 50)[1])
    assert not np.array_equal(first.draw(0, 50)[1], segments(units, seed=8).draw(0, 50)[1])
    # windows: a 100 - 16 + 1 = 85, b 10, c 1 (shorter than a segment) -> draw frequencies in proportion
    utt, starts = first.draw(99, 20000)
    freq = np.bincount(utt, minlength=3) / 20000
    assert np.allclose(freq, np.array([85, 10, 1]) / 96, atol=0.01)
    assert starts[utt == 2].max() == 0 and starts[utt == 0].max() == 84


def test_duration_targets_drop_the_first_and_last_run(tmp_path):
    units, durations, target = segment_runs(np.array([7, 7, 3, 3, 3, 5, 9, 9]))
    assert units.tolist() == [7, 3, 5, 9] and durations.tolist() == [2, 3, 1, 2]
    assert target.tolist() == [False, True, True, False]
    assert segment_runs(np.array([1, 1, 2]))[2].tolist() == [False, False]  # two runs: both cut, no target
    # through a batch: one utterance of exactly one segment, so every draw is this segment
    frames = np.array([4] * 3 + [1] * 5 + [2] * 2 + [4] * 4 + [0] * 2, np.int64)  # 16 frames, runs 3 5 2 4 2
    data = segments(write_corpus(tmp_path, {"only": (frames, None, 0)}))
    batch = data.batch(0, 2)
    assert batch.run_units[0].tolist() == [4, 1, 2, 4, 0] and batch.run_durations[0].tolist() == [3, 5, 2, 4, 2]
    assert batch.run_targets[0].tolist() == [False, True, True, True, False] and batch.run_mask.all()
    # the loss: predicting 0 for every run costs the mean of log(1 + d)^2 over the targets 5, 2, 4
    loss = duration_loss(torch.zeros(2, 5), batch.run_durations, batch.run_targets)
    expected = np.mean(np.log1p([5, 2, 4]) ** 2)
    assert math.isclose(float(loss), expected, rel_tol=1e-6)


# -------------------------------------------------------------------------------------------------------- losses
def test_losses_on_hand_made_values():
    mel = LogMel(SR)
    wav = torch.randn(2, 1, 4096) * 0.1
    spec = mel(wav)
    assert spec.shape == (2, 80, 16) and spec.dtype == torch.float32 and float(spec.min()) >= math.log(1e-5) - 1e-6
    assert float(mel_l1(spec, spec)) == 0.0
    other = spec + 1.0
    other[1, :, 8:] += 10.0  # only counted without the mask
    frame_mask = mel.frame_mask(torch.tensor([4096, 8 * 256]), 16)
    assert frame_mask.sum(1).tolist() == [16, 8]
    assert math.isclose(float(mel_l1(other, spec, frame_mask)), 1.0, rel_tol=1e-6)
    assert float(mel_l1(other, spec)) > 3.0
    half = [torch.full((2, 3), 0.5), torch.full((2, 5), 0.5)]
    assert math.isclose(float(discriminator_loss(half, half)), 2 * (0.25 + 0.25))
    assert float(discriminator_loss([torch.ones(2, 3)], [torch.zeros(2, 3)])) == 0.0
    assert float(generator_adversarial_loss([torch.ones(2, 3), torch.zeros(1, 4)])) == 1.0
    feats = [[torch.ones(2, 4, 8), torch.zeros(2, 1, 3)], [torch.ones(2, 2)]]
    shifted = [[f + 0.5 for f in fs] for fs in feats]
    assert math.isclose(float(feature_matching_loss(feats, shifted)), 3 * 0.5)  # summed over layers (HiFi-GAN)
    # DC offset: |mean(fake) - mean(real)| per segment, averaged; padding beyond valid_samples does not count
    real = torch.randn(2, 1, 100)
    fake = real + torch.tensor([0.25, -0.5]).view(2, 1, 1)
    assert math.isclose(float(dc_offset_loss(fake, real)), (0.25 + 0.5) / 2, rel_tol=1e-5)
    fake[1, :, 60:] = 7.0
    assert math.isclose(float(dc_offset_loss(fake, real, torch.tensor([100, 60]))), (0.25 + 0.5) / 2, rel_tol=1e-5)


def test_speechbrain_discriminators_fit_the_losses():
    assert set(DISCRIMINATORS) >= {"hifigan", "mpd", "msd"}
    torch.manual_seed(0)
    disc = DISCRIMINATORS["hifigan"]()
    assert type(disc).__name__ == "HifiganDiscriminator"
    real, fake = torch.randn(2, 1, 2048) * 0.1, (torch.randn(2, 1, 2048) * 0.1).requires_grad_()
    scores_real, feats_real = disc(real)
    scores_fake, feats_fake = disc(fake)
    assert len(scores_real) == 8 and all(s.dim() == 2 and s.shape[0] == 2 for s in scores_real)  # 5 periods + 3 scales
    loss = generator_adversarial_loss(scores_fake) + 2 * feature_matching_loss(feats_real, feats_fake)
    loss = loss + discriminator_loss(scores_real, [s.detach() for s in scores_fake])
    loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all() and float(fake.grad.abs().sum()) > 0


# -------------------------------------------------------------------------------------------------------- presets
def test_presets_pick_the_upsampling_of_the_frame_rate():
    v1 = generator_config("hifigan_v1", None, sampling_rate=16000, frame_rate=50, num_units=100,
                          duration_predictor=True, speakers=None)
    assert (v1.upsample_rates, v1.upsample_kernel_sizes, v1.upsample_initial_channel) == (
        [5, 4, 4, 2, 2], [11, 8, 8, 4, 4], 512)
    assert v1.resblock_kernel_sizes == [3, 7, 11] and v1.resblock_dilation_sizes == [[1, 3, 5]] * 3
    assert v1.embedding_dim == 128 and v1.dur_predictor_params["var_pred_hidden_dim"] == 128 and v1.hop == 320
    twist = generator_config("hifigan_v1", None, sampling_rate=16000, frame_rate=25, num_units=500,
                             duration_predictor=False, speakers=["a", "b"])
    assert twist.upsample_rates == [5, 4, 4, 4, 2] and twist.upsample_kernel_sizes == [11, 8, 8, 8, 4]
    assert twist.multispkr and twist.num_speakers == 2 and twist.speakers == ["a", "b"] and twist.num_embeddings == 500
    small = generator_config("small", None, sampling_rate=16000, frame_rate=100, num_units=50,
                             duration_predictor=False, speakers=None)
    assert small.hop == 160 and small.upsample_initial_channel == 128 and set(PRESETS) == {"hifigan_v1", "small"}


@pytest.mark.parametrize("rate, overrides, message", [
    (30.0, None, r"frame rate 30 Hz .* sampling rate 16000 Hz .*533\.333"),
    (40.0, None, r"frame rate 40 Hz .* sampling rate 16000 Hz needs hop 400, .*supported hops: 160, 320, 640"),
    (50.0, GeneratorOverrides(upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8]),
     r"multiply to 16, but frame rate 50 Hz .* needs 320"),
    (50.0, GeneratorOverrides(upsample_rates=[5, 4, 4, 2, 2]), "needs generator.upsample_kernel_sizes"),
])
def test_frame_rate_errors_name_both_rates(rate, overrides, message):
    with pytest.raises(ConfigError, match=message):
        generator_config("small", overrides, sampling_rate=16000, frame_rate=rate, num_units=10,
                         duration_predictor=False, speakers=None)


# ---------------------------------------------------------------------------------------------------------- loop
def test_training_reduces_the_mel_loss_on_a_tiny_overfit_case(tmp_path):
    rng = np.random.default_rng(4)
    units = write_corpus(tmp_path / "data", {"one": (random_frames(rng, 64), None, 0)})  # one segment: always it
    result = train_vocoder(config((units, None), tmp_path / "run", valid_dataset=None, max_steps=20,
                                  mel_only_steps=20, lr=5e-3, save_every=100, eval_every=100, num_valid_samples=0))
    mel = result.history["mel"]
    assert len(mel) == 20 and np.mean(mel[-3:]) < 0.8 * np.mean(mel[:3])
    assert all(math.isnan(v) for v in result.history["disc"])  # mel-only: the discriminator never ran


def test_the_dc_term_removes_an_offset_the_mel_loss_leaves(tmp_path):
    """Issue 12 (silence comes back as noise): audio with a constant offset; 60 mel-only steps with dc_weight learn
    it (the generator's mean follows the audio's: off by 0.002 here), without it the mean stays off (0.028: the
    log-mel barely sees a constant)."""
    rng = np.random.default_rng(4)
    offset = lambda frames: tone_audio(frames) * 0.2 + 0.02  # a DC of 0.02 (-34 dBFS) under a tone
    units = write_corpus(tmp_path / "data", {"one": (random_frames(rng, 64), None, 0)}, audio=offset)
    runs = {w: train_vocoder(config((units, None), tmp_path / f"run{w}", valid_dataset=None, max_steps=60,
                                    mel_only_steps=60, lr=1e-3, save_every=100, eval_every=100, num_valid_samples=0,
                                    dc_weight=w))
            for w in (0.0, 100.0)}
    frames = read_units(units)[0]
    target = offset(np.repeat(frames.units, frames.durations)).mean()
    means = {w: float(load_vocoder(r.final_model).synthesize([frames.units], [frames.durations])[0].mean())
             for w, r in runs.items()}
    errors = {w: abs(m - target) for w, m in means.items()}
    assert errors[100.0] < 0.2 * errors[0.0], (means, target)
    dc = runs[100.0].history["dc"]
    assert np.mean(dc[-3:]) < 0.25 * np.mean(dc[:3])


def test_train_end_to_end_checkpoints_tensorboard_and_final_vocoder(corpus, tmp_path, logs):
    out = tmp_path / "run"
    result = train_vocoder(config(corpus, out, max_steps=4, eval_every=2, save_every=2, keep_checkpoints=1,
                                  tensorboard=True))
    assert result.step == 4 and result.stopped_by == "max_steps" and result.resumed_from is None
    h = result.history
    assert h["step"] == [1.0, 2.0, 3.0, 4.0] and set(h) == {"step", "mel", "dur", "gen", "disc", "adv", "fm"}
    assert math.isnan(h["disc"][1]) and not math.isnan(h["disc"][2]) and all(v > 0 for v in h["mel"])
    assert result.valid_history["step"] == [2.0, 4.0] and set(result.valid_history) == {"step", "mel_l1", "dur_mse"}
    assert any("train: 8 utterances" in line for line in logs) and any("valid mel_l1" in line for line in logs)

    # checkpoints: only the newest kept; the trainer state is pickle-free; the generator is saved in both forms
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["latest", "step-0000004"] and result.checkpoint == out / "checkpoints" / "step-0000004"
    state = torch.load(result.checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True)
    assert set(TRAINER_STATE_KEYS) <= set(state) and state["step"] == 4 and state["optimizer_d"]["state"]
    assert state["history"]["mel"].dtype == torch.float64 and state["history"]["mel"].tolist() == h["mel"]
    training_form = load_file(result.checkpoint / "generator.safetensors")
    assert any(".parametrizations.weight.original1" in k for k in training_form)  # trained with weight norm
    final = load_file(out / "final" / "model.safetensors")
    assert "conv_pre.weight" in final and not any("parametrizations" in k for k in final)  # saved folded
    assert load_file(result.checkpoint / "model" / "model.safetensors").keys() == final.keys()

    # TensorBoard: scalars, generated + real audio, the mel figure
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"audio": 0, "images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/mel", "train/disc", "train/lr", "train/grad_norm_g", "train/seconds_per_step",
            "valid/mel_l1"} <= set(tags["scalars"])
    sample = "samples/v00"
    assert {f"{sample}/generated", f"{sample}/real"} <= set(tags["audio"]) and f"{sample}/mel" in tags["images"]
    assert len(events.Audio(f"{sample}/generated")) == 2 and len(events.Audio(f"{sample}/real")) == 1  # real once
    assert events.Images(f"{sample}/mel")[0].width > 100

    # the final vocoder: speakers by name, the units' identity, and synthesis
    for vocoder in (UnitVocoder.from_pretrained(out / "final"), load_vocoder(out / "final")):
        c = vocoder.config
        assert c.multispkr and c.speakers == ["alice", "bob"] and c.num_speakers == 2 and c.num_embeddings == K
        assert vocoder.tokenizer == {"name": "test-km12", "k": K} and vocoder.frame_rate == RATE
        assert vocoder.deduplicated and vocoder.hop == HOP and vocoder.generator.dur_predictor is not None
        wavs = vocoder.synthesize([np.array([1, 2, 3])], [np.array([2, 1, 3])], speakers="alice")
        assert wavs[0].shape == (6 * HOP,) and np.isfinite(wavs[0]).all()
        assert len(vocoder.synthesize([np.array([1, 2, 3])], speakers="bob")[0]) % HOP == 0  # duration predictor
    assert json.loads((out / "final" / "config.json").read_text())["generator"]["speakers"] == ["alice", "bob"]


class _Interrupt(VocoderTrainHooks):
    def __init__(self, at: int):
        self.at = at

    def on_checkpoint(self, step, path):
        if step == self.at:
            raise KeyboardInterrupt


def test_resumed_run_equals_the_uninterrupted_run_bit_for_bit(corpus, tmp_path, logs):
    reference = train_vocoder(config(corpus, tmp_path / "ref"))
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):  # killed right after checkpoint 4 (GAN steps 3-4 already done)
        train_vocoder(config(corpus, out, prefetch=2), hooks=_Interrupt(4))
    assert not (out / "final").exists()
    resumed = train_vocoder(config(corpus, out, prefetch=2))  # the same command again
    # (prefetching batches in a thread changes nothing: a batch is a pure function of the step)
    assert resumed.resumed_from == 4 and any("resuming from" in line for line in logs)
    for name in reference.history:
        np.testing.assert_array_equal(resumed.history[name], reference.history[name])  # NaN == NaN here
    assert resumed.valid_history == reference.valid_history
    for f in ("final/model.safetensors", "checkpoints/step-0000006/discriminator.safetensors",
              "checkpoints/step-0000006/generator.safetensors"):
        a, b = load_file(tmp_path / "ref" / f), load_file(out / f)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    # nothing left to do: a third run only rewrites final/
    again = train_vocoder(config(corpus, out))
    assert again.step == 6 and again.resumed_from == 6 and again.history["mel"] == resumed.history["mel"]


def test_max_seconds_stops_and_still_writes_the_final_vocoder(corpus, tmp_path):
    result = train_vocoder(config(corpus, tmp_path, max_steps=None, max_seconds=1e-9))
    assert result.stopped_by == "max_seconds" and result.step == 0 and load_vocoder(result.final_model).hop == HOP


def test_resume_refuses_a_different_generator(corpus, tmp_path):
    train_vocoder(config(corpus, tmp_path, max_steps=2))
    wider = GeneratorOverrides(**{**vars(TINY), "upsample_initial_channel": 32})
    with pytest.raises(ConfigError, match="different inputs or settings .*generator.upsample_initial_channel: 16 "
                                          "there, 32 now"):
        train_vocoder(config(corpus, tmp_path, max_steps=3, generator=wider))


# ------------------------------------------------------------------------------------------------------ speakers
def test_speaker_ids_are_sorted_names_and_multispkr_follows_the_data(tmp_path):
    rng = np.random.default_rng(5)
    utts = {f"s{i}": (random_frames(rng, 70), spk, 0) for i, spk in enumerate(["zoe", "adam", "mia", "adam"])}
    data = segments(write_corpus(tmp_path / "multi", utts))
    names, unlabeled = data.speaker_names()
    assert names == ["adam", "mia", "zoe"] and unlabeled == []
    data.use_speakers(names)
    assert data.speaker_ids.tolist() == [2, 0, 1, 0]  # s0..s3 are zoe, adam, mia, adam
    assert data.batch(0, 4).speakers.tolist() == [data.speaker_ids[data.ids.index(i)] for i in data.batch(0, 4).ids]
    # one speaker -> single-speaker vocoder; no labels + multispkr=true -> an error naming the utterances
    single = write_corpus(tmp_path / "single", {"a": (random_frames(rng, 70), "only", 0)})
    result = train_vocoder(config((single, None), tmp_path / "run1", valid_dataset=None, max_steps=1,
                                  mel_only_steps=1, num_valid_samples=0))
    assert not load_vocoder(result.final_model).config.multispkr
    unlabeled = write_corpus(tmp_path / "unlabeled", {"a": (random_frames(rng, 70), None, 0),
                                                      "b": (random_frames(rng, 70), "x", 0)})
    with pytest.raises(ConfigError, match=r"multispkr=true needs a speaker for every utterance.*\(e\.g\. a\)"):
        train_vocoder(config((unlabeled, None), tmp_path / "run2", valid_dataset=None, multispkr=True))


def test_validation_utterances_of_unknown_speakers_are_skipped(corpus, tmp_path, logs):
    rng = np.random.default_rng(6)
    valid = write_corpus(tmp_path / "valid", {"v0": (random_frames(rng, 90), "alice", 0),
                                              "v1": (random_frames(rng, 90), "carol", 0)})
    result = train_vocoder(config((corpus[0], valid), tmp_path / "run", max_steps=1, mel_only_steps=1,
                                  eval_every=1))
    assert any("1 utterances" in line and "speaker the vocoder does not know" in line and "v1" in line
               for line in logs)
    assert any("valid mel_l1" in line and "(1 utterances)" in line for line in logs)
    assert len(result.valid_history["mel_l1"]) == 1


# -------------------------------------------------------------------------------------------------------- errors
def test_missing_audio_is_reported_in_one_line_and_skipped(tmp_path, logs):
    rng = np.random.default_rng(7)
    utts = {f"m{i}": (random_frames(rng, 70), None, 0) for i in range(4)}
    units = write_corpus(tmp_path, utts)
    manifest = tmp_path / "audio.tsv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:3]) + "\n")  # m2 and m3 lose their audio
    data = segments(units)
    assert data.ids == ["m0", "m1"]
    assert len(logs) == 1 and "2 of 4 utterances" in logs[0] and "no audio" in logs[0] and "m2, m3" in logs[0]
    manifest.write_text(lines[0] + "\n")
    with pytest.raises(ConfigError, match="no utterance of unit dataset .* has usable audio"):
        segments(units)


def test_audio_that_does_not_match_the_units_is_skipped(tmp_path, logs):
    rng = np.random.default_rng(8)
    utts = {"ok": (random_frames(rng, 300), None, 0), "off": (random_frames(rng, 300), None, 3200)}  # +0.2 s
    data = segments(write_corpus(tmp_path, utts))
    assert data.ids == ["ok"] and "differ by more than 0.1 s" in logs[0] and "off (0.50 s of audio" in logs[0]


@pytest.mark.parametrize("change, message", [
    ({"precision": "bf16"}, "precision=bf16 autocasts on CUDA only"),
    ({"segment_frames": 8}, r"segment_frames 8 x hop 16 = 128 samples is shorter than the mel loss window"),
    ({"max_steps": None}, "give max_steps and/or max_seconds"),
    ({"discriminator": "nope"}, r"unknown discriminator 'nope' \(known: hifigan, mpd, msd"),
    ({"preset": "huge"}, "unknown vocoder preset 'huge'"),
    ({"generator": GeneratorOverrides()}, r"frame rate 1000 Hz of unit dataset .* needs hop 16, which has no preset"),
    ({"audio_dataset": "/no/such/audio"}, r"audio dataset '/no/such/audio' \(from audio_dataset\) .* not found"),
])
def test_config_errors(corpus, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        train_vocoder(config(corpus, tmp_path, **change))


def test_units_without_an_audio_source_or_of_bpe_tokens(tmp_path):
    rng = np.random.default_rng(9)
    utts = {"a": (random_frames(rng, 70), None, 0)}
    no_source = write_corpus(tmp_path / "nosrc", utts, source=False)
    with pytest.raises(ConfigError, match=r"does not record its audio \(no extra.source .*set audio_dataset"):
        train_vocoder(config((no_source, None), tmp_path / "r1", valid_dataset=None))
    result = train_vocoder(config((no_source, None), tmp_path / "r2", valid_dataset=None, max_steps=1,
                                  mel_only_steps=1, num_valid_samples=0,
                                  audio_dataset=str(tmp_path / "nosrc" / "audio.tsv")))
    assert result.step == 1
    bpe = write_corpus(tmp_path / "bpe", utts, bpe=True)
    with pytest.raises(ConfigError, match="holds BPE tokens"):
        train_vocoder(config((bpe, None), tmp_path / "r3", valid_dataset=None))


# ----------------------------------------------------------------------------------------------------------- CLI
def test_cli_recipes_print(capsys):
    assert main(["train-vocoder", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "preset: hifigan_v1" in out and "lr: 0.0002" in out and "segment_frames: 28" in out
    assert main(["train-vocoder", "--config", "vocoder_small", "--print-config", "generator.embedding_dim=32"]) == 0
    out = capsys.readouterr().out
    assert "preset: small" in out and "embedding_dim: 32" in out and "multispkr: true" in out


def test_cli_trains_on_the_bundled_corpus_with_mfcc_units(tmp_path, capsys):
    """MFCC units (100 Hz -> hop 160) of bundled:valid, tokenized by the real job; the CPU recipe, shrunk."""
    from textless.audio import load_audio
    from textless.jobs.tokenize import TokenizeConfig, tokenize_dataset
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.tokenizers.encoders import load_encoder
    from textless.tokenizers.kmeans import KMeans

    items = list(load_dataset("bundled:valid"))[:6]
    encoder = load_encoder("mfcc")
    feats = np.concatenate([encoder.encode(load_audio(i.path, 16000)[0]).numpy() for i in items])
    tokenizer = SpeechTokenizer(encoder, KMeans(k=16, backend="torch", max_iter=10, seed=0).fit(feats))
    bundle = tokenizer.save_pretrained(tmp_path / "tok")
    units = tokenize_dataset(TokenizeConfig(dataset="bundled:valid", tokenizer=str(bundle),
                                            output=str(tmp_path / "units"), progress=False)).output
    assert read_units(units).meta.extra["source"] == "bundled:valid"
    out = tmp_path / "run"
    assert main(["train-vocoder", "--config", "vocoder_small", f"train_dataset={units}", f"valid_dataset={units}",
                 f"output_dir={out}", "generator.upsample_initial_channel=16", "generator.embedding_dim=8",
                 "generator.resblock_kernel_sizes=[3]", "generator.resblock_dilation_sizes=[[1]]",
                 "discriminator=test-tiny", "batch_size=2", "max_steps=3", "mel_only_steps=2", "eval_every=3",
                 "max_valid_utterances=3", "num_valid_samples=1", "progress=false", "prefetch=1"]) == 0
    printed = capsys.readouterr().out
    assert "single speaker" not in printed and "speakers" in printed and "hop 160" in printed
    vocoder = load_vocoder(out / "final")
    assert vocoder.hop == 160 and vocoder.config.upsample_rates == [5, 4, 4, 2] and vocoder.deduplicated
    assert vocoder.config.speakers == sorted({i.speaker for i in load_dataset("bundled:valid")})
    first = read_units(units)[0]
    wav = vocoder.synthesize([first.units], [first.durations], speakers=vocoder.config.speakers[0])[0]
    assert len(wav) == first.num_frames * 160
