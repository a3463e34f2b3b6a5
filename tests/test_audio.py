"""Tests for textless.audio: reading/writing real files with soundfile, error reporting, resampling numerics."""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from textless import audio
from textless.audio import (
    DEFAULT_MAX_SECONDS,
    AudioInfo,
    audio_info,
    load_audio,
    resample,
    save_audio,
    to_mono,
)
from textless.errors import AudioError, TextlessError

PCM16_TOL = 1.0 / 32768


def sine(freq: float, sr: int, n: int, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr + phase)).astype(np.float32)


def ramp_sine(sr: int, n: int) -> np.ndarray:
    """A 440 Hz sine with a rising envelope: every position differs, so an offset segment cannot match by chance."""
    return (sine(440, sr, n) * np.linspace(0.05, 1.0, n, dtype=np.float32)).astype(np.float32)


def wav_bytes(tmp_path, x: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> bytes:
    p = tmp_path / "_src.wav"
    sf.write(p, x, sr, subtype=subtype)
    data = p.read_bytes()
    p.unlink()
    return data


def raises_audio_error(path, phrase: str, fn=load_audio, **kwargs) -> AudioError:
    with pytest.raises(AudioError) as ei:
        fn(path, **kwargs)
    msg = str(ei.value)
    assert path.name in msg, msg
    assert phrase in msg, msg
    assert ei.value.path == str(path)
    return ei.value


# ---------------------------------------------------------------------------------------------------- info / errors


def test_audio_info_reads_header(tmp_path):
    p = tmp_path / "st.wav"
    sf.write(p, np.zeros((8000, 2), np.float32), 16000, subtype="PCM_24")
    info = audio_info(p)
    assert info == AudioInfo(path=str(p), sample_rate=16000, num_frames=8000, channels=2, format="WAV",
                             subtype="PCM_24")
    assert info.duration == pytest.approx(0.5)
    assert DEFAULT_MAX_SECONDS == 3600.0


def test_audio_info_does_not_decode(tmp_path, monkeypatch):
    p = tmp_path / "a.flac"
    sf.write(p, sine(440, 16000, 1600), 16000)

    def no_read(*args, **kwargs):
        raise AssertionError("audio_info must not decode")

    monkeypatch.setattr(sf.SoundFile, "read", no_read)
    assert audio_info(p).num_frames == 1600


@pytest.mark.parametrize("fn", [load_audio, audio_info])
def test_missing_file(tmp_path, fn):
    err = raises_audio_error(tmp_path / "nope.wav", "file not found", fn=fn)
    assert isinstance(err, TextlessError)


@pytest.mark.parametrize("fn", [load_audio, audio_info])
def test_directory(tmp_path, fn):
    d = tmp_path / "folder.wav"
    d.mkdir()
    raises_audio_error(d, "is a directory", fn=fn)


@pytest.mark.parametrize("fn", [load_audio, audio_info])
def test_empty_file(tmp_path, fn):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    raises_audio_error(p, "empty file (0 bytes)", fn=fn)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.wav"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    raises_audio_error(p, "cannot decode")


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio\n" * 20)
    err = raises_audio_error(p, "cannot decode")
    assert "Format not recognised" in str(err)  # libsndfile's own reason is passed on


def test_truncated_wav_data_chunk(tmp_path):
    data = wav_bytes(tmp_path, sine(440, 16000, 16000))
    p = tmp_path / "cut.wav"
    p.write_bytes(data[: len(data) // 2])
    # libsndfile itself opens this silently, reporting only the frames present: we must refuse it.
    assert sf.info(p).frames < 16000
    for fn in (audio_info, load_audio):
        err = raises_audio_error(p, "truncated", fn=fn)
        assert "declares 16000 frames" in str(err)


def test_wav_header_without_data(tmp_path):
    data = wav_bytes(tmp_path, sine(440, 16000, 16000))
    p = tmp_path / "header_only.wav"
    p.write_bytes(data[:44])
    raises_audio_error(p, "truncated")


def test_wav_cut_inside_header(tmp_path):
    data = wav_bytes(tmp_path, sine(440, 16000, 16000))
    p = tmp_path / "half_header.wav"
    p.write_bytes(data[:40])
    raises_audio_error(p, "cannot decode")


def test_streaming_wav_size_placeholder_is_accepted(tmp_path):
    """Streaming writers leave 0xFFFFFFFF as the data size; that is 'until end of file', not truncation."""
    x = sine(440, 16000, 4000)
    data = bytearray(wav_bytes(tmp_path, x))
    assert data[36:40] == b"data"
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)
    p = tmp_path / "stream.wav"
    p.write_bytes(bytes(data))
    wav, sr = load_audio(p)
    assert sr == 16000 and wav.shape == (4000,)
    assert torch.allclose(wav, torch.from_numpy(x), atol=PCM16_TOL)


def test_truncated_flac(tmp_path):
    src = tmp_path / "full.flac"
    sf.write(src, sine(440, 16000, 16000), 16000)
    data = src.read_bytes()
    p = tmp_path / "cut.flac"
    p.write_bytes(data[: len(data) // 2])
    raises_audio_error(p, "cannot decode")


def test_truncated_ogg(tmp_path):
    src = tmp_path / "full.ogg"
    sf.write(src, sine(440, 16000, 16000), 16000)
    data = src.read_bytes()
    p = tmp_path / "cut.ogg"
    p.write_bytes(data[: len(data) // 2])
    raises_audio_error(p, "cannot decode")


@pytest.mark.parametrize("fn", [load_audio, audio_info])
def test_zero_frames(tmp_path, fn):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    assert p.stat().st_size > 0
    raises_audio_error(p, "contains no samples", fn=fn)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = sine(440, 16000, 1000)
    x[500] = bad
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    raises_audio_error(p, "non-finite samples (NaN/Inf)")


def test_max_seconds_refuses_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "one_second.wav"
    sf.write(p, sine(440, 16000, 16000), 16000)

    def no_read(*args, **kwargs):
        raise AssertionError("decoded a file that is over the limit")

    with monkeypatch.context() as m:
        m.setattr(sf.SoundFile, "read", no_read)
        raises_audio_error(p, "is 1.00 s long, over the max_seconds=0.5 limit", max_seconds=0.5)
    assert load_audio(p, max_seconds=None)[0].shape == (16000,)
    assert load_audio(p, max_seconds=1.0)[0].shape == (16000,)
    # The limit is on what is decoded: a short segment of a long file is fine.
    assert load_audio(p, max_seconds=0.5, start=0.25, duration=0.25)[0].shape == (4000,)
    raises_audio_error(p, "over the max_seconds=0.5 limit", max_seconds=0.5, start=0.1, duration=0.8)


@pytest.mark.parametrize("kwargs", [
    {"sample_rate": 0}, {"sample_rate": -16000}, {"sample_rate": 16000.5}, {"sample_rate": math.inf},
    {"start": -1.0}, {"duration": 0.0}, {"duration": -1.0}, {"start": math.nan}, {"max_seconds": 0.0},
])
def test_invalid_arguments(tmp_path, kwargs):
    p = tmp_path / "a.wav"
    sf.write(p, sine(440, 16000, 1600), 16000)
    with pytest.raises(ValueError):
        load_audio(p, **kwargs)


def test_start_past_end(tmp_path):
    p = tmp_path / "short.wav"
    sf.write(p, sine(440, 16000, 1600), 16000)
    raises_audio_error(p, "past the end", start=0.1)
    raises_audio_error(p, "past the end", start=5.0)


def test_libsndfile_errors_never_escape_raw(tmp_path, monkeypatch):
    p = tmp_path / "a.wav"
    sf.write(p, sine(440, 16000, 1600), 16000)

    def broken_read(*args, **kwargs):
        raise sf.LibsndfileError(1, "Error reading: ")

    monkeypatch.setattr(sf.SoundFile, "read", broken_read)
    raises_audio_error(p, "cannot decode")


# ---------------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_round_trip_pcm16(tmp_path, suffix):
    sr = 22050
    x = ramp_sine(sr, 5000)
    p = save_audio(tmp_path / f"a{suffix}", torch.from_numpy(x), sr)
    assert p == tmp_path / f"a{suffix}"
    info = audio_info(p)
    assert (info.format, info.subtype, info.num_frames, info.channels) == (suffix[1:].upper(), "PCM_16", 5000, 1)
    wav, got_sr = load_audio(p)
    assert got_sr == sr and wav.dtype == torch.float32 and wav.shape == (5000,)
    assert (wav - torch.from_numpy(x)).abs().max().item() <= PCM16_TOL


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_round_trip_stereo_channels_first(tmp_path, suffix):
    sr = 16000
    x = np.stack([ramp_sine(sr, 3000), sine(1000, sr, 3000, amp=0.25)])  # [C, T]
    p = save_audio(tmp_path / f"st{suffix}", x, sr)
    assert audio_info(p).channels == 2
    wav, _ = load_audio(p, mono=False)
    assert wav.shape == (2, 3000)
    assert (wav - torch.from_numpy(x)).abs().max().item() <= PCM16_TOL


def test_round_trip_float_subtype_is_exact_and_unclipped(tmp_path):
    x = ramp_sine(16000, 2000) * 3.0  # beyond [-1, 1]: FLOAT keeps it
    p = save_audio(tmp_path / "f.wav", x, 16000, subtype="float")
    assert audio_info(p).subtype == "FLOAT"
    wav, _ = load_audio(p)
    assert torch.equal(wav, torch.from_numpy(x))


def test_pcm_clips_out_of_range(tmp_path):
    p = save_audio(tmp_path / "clip.wav", np.array([1.5, -1.5, 0.5, -0.25], np.float32), 8000)
    wav, _ = load_audio(p)
    assert wav.tolist() == [32767 / 32768, -1.0, 0.5, -0.25]


def test_lossy_write_clips_out_of_range(tmp_path):
    # Vorbis stores floats, so without our clipping a 1.5-amplitude sine would decode with peaks near 1.5.
    p = save_audio(tmp_path / "loud.ogg", sine(440, 16000, 16000, amp=1.5), 16000)
    wav, _ = load_audio(p)
    assert 0.9 < wav.abs().max().item() < 1.25


@pytest.mark.parametrize("suffix,fmt", [(".mp3", "MP3"), (".ogg", "OGG")])
def test_lossy_formats_read(tmp_path, suffix, fmt):
    sr = 16000
    x = sine(440, sr, sr)
    p = tmp_path / f"lossy{suffix}"
    sf.write(p, x, sr)  # written by soundfile directly, read back by us
    info = audio_info(p)
    assert info.format == fmt and info.sample_rate == sr and info.channels == 1
    wav, got_sr = load_audio(p)
    assert got_sr == sr and wav.dtype == torch.float32
    assert abs(wav.shape[0] - sr) <= 1152  # MP3 frame counts may include/lose up to one MPEG frame
    n = min(wav.shape[0], sr)
    assert np.corrcoef(wav.numpy()[:n], x[:n])[0, 1] > 0.9
    # and save_audio can write them too
    q = save_audio(tmp_path / f"out{suffix}", wav, sr)
    assert audio_info(q).format == fmt


# ---------------------------------------------------------------------------------------------------- mono / segments


def test_mono_mixdown_is_exact_channel_mean(tmp_path):
    rng = np.random.default_rng(0)
    # Multiples of 2**-15: exactly representable, and so is their mean, so the comparison can be exact.
    a = (rng.integers(-16384, 16384, 4000) / 32768).astype(np.float32)
    b = (rng.integers(-16384, 16384, 4000) / 32768).astype(np.float32)
    p = tmp_path / "st.wav"
    sf.write(p, np.stack([a, b], 1), 16000, subtype="FLOAT")
    wav, _ = load_audio(p)
    assert wav.shape == (4000,)
    assert torch.equal(wav, torch.from_numpy((a + b) / 2))
    both, _ = load_audio(p, mono=False)
    assert torch.equal(both, torch.from_numpy(np.stack([a, b])))
    assert torch.equal(to_mono(both), wav)


def test_to_mono_shapes():
    x = torch.randn(100)
    assert to_mono(x) is x
    st = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 7.0]])
    assert torch.equal(to_mono(st), torch.tensor([2.0, 3.0, 5.0]))
    assert torch.equal(to_mono(torch.ones(1, 5)), torch.ones(5))
    with pytest.raises(ValueError):
        to_mono(torch.zeros(2, 2, 10))


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_segment_equals_slice_of_full_read(tmp_path, suffix):
    sr = 16000
    x = np.stack([ramp_sine(sr, 3 * sr), ramp_sine(sr, 3 * sr)[::-1] * 0.5], 1)
    p = tmp_path / f"seg{suffix}"
    sf.write(p, x, sr)
    full, _ = load_audio(p, mono=False)
    a, b = round(0.7 * sr), round(0.7 * sr) + round(0.45 * sr)
    seg, got_sr = load_audio(p, mono=False, start=0.7, duration=0.45)
    assert got_sr == sr
    # exact: the segment is the same decoded samples (for MP3 this needs the decode-from-start path, since
    # libsndfile's MP3 seeking returns different samples)
    assert torch.equal(seg, full[:, a:b])
    seg_mono, _ = load_audio(p, start=0.7, duration=0.45)
    assert torch.equal(seg_mono, to_mono(full[:, a:b]))


def test_segment_reads_only_the_segment(tmp_path, monkeypatch):
    sr = 16000
    p = tmp_path / "long.flac"
    sf.write(p, ramp_sine(sr, 4 * sr), sr)
    requested = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append((self.tell(), frames))
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    wav, _ = load_audio(p, start=2.0, duration=0.5)
    assert wav.shape == (8000,)
    assert requested == [(2 * sr, 8000)]  # seeked, then decoded just the segment


def test_segment_past_end_is_cut_like_slicing(tmp_path):
    sr = 8000
    x = ramp_sine(sr, sr)
    p = tmp_path / "a.wav"
    sf.write(p, x, sr, subtype="FLOAT")
    seg, _ = load_audio(p, start=0.9, duration=0.5)
    assert torch.equal(seg, torch.from_numpy(x[round(0.9 * sr):]))
    seg, _ = load_audio(p, start=0.5)
    assert torch.equal(seg, torch.from_numpy(x[sr // 2:]))


# ---------------------------------------------------------------------------------------------------- resampling


def test_resample_keeps_frequency_and_rms():
    orig, new, n = 44100, 16000, 44137
    x = torch.from_numpy(sine(440, orig, n))
    y = resample(x, orig, new)
    assert y.dtype == torch.float32
    assert y.shape == (math.ceil(n * new / orig),) == (16014,)
    spectrum = np.abs(np.fft.rfft(y.numpy() * np.hanning(len(y))))
    bin_hz = new / len(y)
    assert abs(spectrum.argmax() * bin_hz - 440) <= bin_hz
    mid = y.numpy()[200:-200]  # away from the filter's edge transients
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    ideal = sine(440, new, len(y))[200:-200]
    assert np.abs(mid - ideal).max() < 2e-3


def test_resample_matches_scipy_resample_poly():
    signal = pytest.importorskip("scipy.signal")
    x = sine(440, 44100, 44100) + sine(3000, 44100, 44100, amp=0.2)
    y = resample(torch.from_numpy(x), 44100, 16000).numpy()
    z = signal.resample_poly(x.astype(np.float64), 160, 441)
    assert len(y) == len(z)
    assert np.abs(y[200:-200] - z[200:-200]).max() < 5e-3


def test_resample_identity_and_shapes():
    x = torch.randn(2, 3, 1000, dtype=torch.float64)
    assert resample(x, 16000, 16000) is x
    y = resample(x, 16000, 8000)
    assert y.shape == (2, 3, 500) and y.dtype == torch.float32
    # leading dimensions are independent signals (a batched convolution may sum in another order: float32 sums of
    # ~50 taps of |x| <= 5 differ by at most ~50 x 1.2e-7 x 5 = 3e-5)
    assert torch.allclose(y[1, 2], resample(x[1, 2], 16000, 8000), atol=5e-5)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)
    with pytest.raises(ValueError):
        resample(x, 16000, -1)


def test_load_audio_resamples(tmp_path):
    p = tmp_path / "a.wav"
    x = ramp_sine(44100, 4410)
    sf.write(p, x, 44100, subtype="FLOAT")
    wav, sr = load_audio(p, sample_rate=16000)
    assert sr == 16000
    assert torch.equal(wav, resample(torch.from_numpy(x), 44100, 16000))
    same, sr = load_audio(p, sample_rate=44100)
    assert sr == 44100 and torch.equal(same, torch.from_numpy(x))


# ---------------------------------------------------------------------------------------------------- save_audio


def test_save_refuses_non_finite(tmp_path):
    for bad in (np.nan, np.inf):
        x = sine(440, 16000, 100)
        x[10] = bad
        target = tmp_path / "bad.wav"
        with pytest.raises(AudioError, match=r"non-finite samples \(NaN/Inf\)") as ei:
            save_audio(target, x, 16000)
        assert "bad.wav" in str(ei.value)
        assert list(tmp_path.iterdir()) == []


def test_save_unknown_suffix(tmp_path):
    with pytest.raises(AudioError, match=r"\.xyz") as ei:
        save_audio(tmp_path / "a.xyz", np.zeros(10, np.float32), 16000)
    assert "a.xyz" in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_save_invalid_arguments(tmp_path):
    x = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="VORBIS"):
        save_audio(tmp_path / "a.flac", x, 16000, subtype="VORBIS")
    with pytest.raises(ValueError):
        save_audio(tmp_path / "a.wav", x, 0)
    with pytest.raises(ValueError):
        save_audio(tmp_path / "a.wav", np.zeros((16000, 2), np.float32), 16000)  # [T, C] by mistake
    with pytest.raises(ValueError):
        save_audio(tmp_path / "a.wav", np.zeros((1, 2, 100), np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        save_audio(tmp_path / "a.wav", np.zeros(0, np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


def test_save_creates_parent_directories(tmp_path):
    p = save_audio(tmp_path / "x" / "y" / "a.flac", sine(440, 16000, 100), 16000)
    assert audio_info(p).num_frames == 100


def _half_writing_fake(exc: BaseException, seen: list):
    """A soundfile.write that writes half the samples to its target, then dies (as a killed writer would)."""
    real_write = sf.write

    def fake(file, data, samplerate, *args, **kwargs):
        real_write(file, data[: len(data) // 2], samplerate, *args, **kwargs)
        seen.append((str(file), os.path.getsize(file)))
        raise exc

    return fake


@pytest.mark.parametrize("exc,expected", [(KeyboardInterrupt(), KeyboardInterrupt),
                                          (RuntimeError("disk on fire"), AudioError)])
def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch, exc, expected):
    seen: list = []
    monkeypatch.setattr(audio.sf, "write", _half_writing_fake(exc, seen))
    target = tmp_path / "out.wav"
    with pytest.raises(expected):
        save_audio(target, sine(440, 16000, 16000), 16000)
    assert len(seen) == 1
    tmp_written, size = seen[0]
    assert tmp_written != str(target) and size > 0  # something partial really was written, elsewhere
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # and the temporary was removed


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.flac"
    save_audio(target, sine(440, 16000, 8000), 16000)
    old = target.read_bytes()
    seen: list = []
    monkeypatch.setattr(audio.sf, "write", _half_writing_fake(RuntimeError("killed"), seen))
    with pytest.raises(AudioError, match="cannot write"):
        save_audio(target, sine(880, 16000, 16000), 16000)
    assert seen and target.read_bytes() == old
    assert sorted(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    wav, _ = load_audio(target)
    assert wav.shape == (8000,)


# ------------------------------------------------------------------------------------------- long files, piecewise
@pytest.mark.parametrize("rate", [44100, 8000, 16000])
def test_lazy_waveform_reads_windows_equal_to_the_whole_resampled_file(tmp_path, rate):
    """Windows of a file at another rate equal the whole file resampled: interior samples are sums of the same ~100
    taps of |x| <= 1 in another blocking (float32: 100 x 6e-8 = 6e-6); the windows' margins hide the edges."""
    from textless.audio import LazyWaveform

    rng = np.random.default_rng(0)
    x = (ramp_sine(rate, 5 * rate) + 0.05 * rng.standard_normal(5 * rate)).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, x, rate, subtype="PCM_24")
    whole, _ = load_audio(path, 16000)
    lazy = LazyWaveform(path, 16000)
    assert len(lazy) == len(whole) == math.ceil(5 * rate * 16000 / rate)
    for a, b in [(0, 1000), (12345, 23456), (len(whole) - 777, len(whole)), (40000, 40001)]:
        piece = lazy[a:b]
        assert piece.shape == (b - a,) and piece.dtype == torch.float32
        np.testing.assert_allclose(piece.numpy(), whole[a:b].numpy(), atol=1e-5 if rate != 16000 else 0)
    assert lazy[5:5].numel() == 0
    with pytest.raises(TypeError, match="contiguous slices"):
        lazy[::2]


def test_lazy_waveform_of_an_mp3_is_the_whole_decode(tmp_path):
    from textless.audio import LazyWaveform

    path = save_audio(tmp_path / "a.mp3", sine(300, 16000, 3 * 16000), 16000)
    whole, _ = load_audio(path, 16000)
    lazy = LazyWaveform(path, 16000)
    assert len(lazy) == len(whole) and torch.equal(lazy[100:9000], whole[100:9000])


def test_audio_writer_writes_blocks_atomically(tmp_path):
    from textless.audio import AudioWriter

    blocks = [sine(440, 16000, n) for n in (1000, 1, 16000)]
    with AudioWriter(tmp_path / "out.wav", 16000) as out:
        for block in blocks:
            out.write(block)
        out.write(torch.from_numpy(blocks[0] * 3))  # clipped to [-1, 1], as save_audio does
    whole = save_audio(tmp_path / "ref.wav", np.concatenate(blocks + [blocks[0] * 3]), 16000)
    assert (tmp_path / "out.wav").read_bytes() == whole.read_bytes()
    assert out.samples == 17001 + 1000
    # an error inside the block, or nothing written: no file, no temporary, the old file unchanged
    before = (tmp_path / "out.wav").read_bytes()
    with pytest.raises(RuntimeError), AudioWriter(tmp_path / "out.wav", 16000) as out:
        out.write(blocks[0])
        raise RuntimeError("killed")
    with pytest.raises(AudioError, match="non-finite"), AudioWriter(tmp_path / "out.wav", 16000) as out:
        out.write(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioError, match="empty signal"), AudioWriter(tmp_path / "new.wav", 16000):
        pass
    assert (tmp_path / "out.wav").read_bytes() == before and not (tmp_path / "new.wav").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav", "ref.wav"]
    with pytest.raises(AudioError, match="unknown audio file suffix"):
        AudioWriter(tmp_path / "x.aiff", 16000)
    with pytest.raises(AudioError, match="cannot write"), AudioWriter(tmp_path / "ref.wav" / "x.wav", 16000):
        pass  # a file where the directory should be
