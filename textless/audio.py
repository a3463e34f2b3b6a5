"""Audio file I/O: read any format libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, ...) and write WAV/FLAC/OGG/MP3.

Units and shapes used throughout:

* sample rates are integers in Hz; positions and lengths given by callers (`start`, `duration`, `max_seconds`) are
  seconds; everything returned is counted in samples per channel ("frames").
* waveforms are float32 `torch.Tensor`s with values nominally in [-1, 1]: `[T]` for mono, `[C, T]` for
  channels-first multichannel (the torch convention; soundfile itself uses `[T, C]`, converted here).
* mixing down to mono is the mean over channels; resampling is `torchaudio.functional.resample` (windowed-sinc,
  `sinc_interp_hann`, `lowpass_filter_width=6`, `rolloff=0.99`), output length `ceil(T * new_sr / orig_sr)`.

Why soundfile rather than `torchaudio.load`: torchaudio 2.9+ moved its decoding/encoding to TorchCodec (an FFmpeg
binding with its own native dependencies), which this project avoids. soundfile's wheels bundle libsndfile 1.2.x
with FLAC, Ogg/Vorbis/Opus and MP3 (mpg123/LAME) support, so no system library is needed.

Every problem with a file is raised as `AudioError` ("audio file '<path>': <reason>"); libsndfile's own exceptions
never escape. Behaviour of libsndfile that this module works around (measured with libsndfile 1.2.2):

* A WAV whose data chunk was cut short opens *silently*, reporting only the frames present. `audio_info` parses the
  RIFF chunk headers itself and raises "truncated" when the declared data size exceeds the bytes in the file (a data
  size of 0xFFFFFFFF, the placeholder written by streaming tools, means "until end of file" and is accepted).
* A truncated FLAC opens fine and fails on read ("flac decoder lost sync"); a truncated Ogg fails to open. Both are
  reported as "cannot decode: ...".
* MP3: the frame count is taken from the Xing/LAME tag when present, otherwise *estimated* from the file size, so it
  can be off (e.g. embedded cover art). Worse, seeking and reading an MP3 in several calls return wrong samples for
  many files. MP3s are therefore always decoded from the start in one read (then sliced), and a decode shorter than
  the estimate is accepted (the frames that decode are returned) instead of being reported as truncation.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from textless.errors import AudioError
from textless.utils.atomic import atomic_path

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "AudioInfo",
    "AudioWriter",
    "LazyWaveform",
    "audio_info",
    "load_audio",
    "resample",
    "save_audio",
    "to_mono",
]

DEFAULT_MAX_SECONDS = 3600.0
"""`load_audio` refuses to decode more than this many seconds unless the caller raises the limit (or passes None)."""

# suffix -> (libsndfile major format, default subtype)
_WRITE_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_MAX_WRITE_CHANNELS = 64  # more "channels" than this is almost certainly a [T, C] array passed as [C, T]
_WAV_STREAMING_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says. `num_frames` counts samples per channel; `subtype` is e.g. "PCM_16", "VORBIS"."""

    path: str
    sample_rate: int
    num_frames: int
    channels: int
    format: str
    subtype: str | None

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate


def _sf_message(exc: Exception) -> str:
    # LibsndfileError.error_string is libsndfile's text without soundfile's "Error opening '<path>': " prefix.
    msg = getattr(exc, "error_string", None) or str(exc)
    return msg.strip()


def _check_readable_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(path, f"cannot read: {e.strerror or e}") from e
    if size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _wav_truncation(path: Path) -> tuple[int, int] | None:
    """For a RIFF/RIFX WAVE file: (frames the header declares, frames present) when the data chunk is cut short.

    Returns None when the file is not RIFF WAVE, is complete, or uses the streaming size placeholder. Only chunk
    headers are read, never the audio data.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            endian = "<" if head[:4] == b"RIFF" else ">"
            file_size = os.fstat(f.fileno()).st_size
            block_align = 0
            pos = 12
            for _ in range(10_000):  # bounded: a corrupt file cannot make us loop forever
                f.seek(pos)
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                chunk_id = chunk[:4]
                (size,) = struct.unpack(endian + "I", chunk[4:])
                body = pos + 8
                if chunk_id == b"fmt ":
                    fmt = f.read(16)
                    if len(fmt) >= 14:
                        (block_align,) = struct.unpack(endian + "H", fmt[12:14])
                elif chunk_id == b"data":
                    available = file_size - body
                    if size == _WAV_STREAMING_SIZE or size <= available or block_align <= 0:
                        return None
                    return size // block_align, available // block_align
                pos = body + size + (size & 1)  # chunks are padded to an even size
                if pos >= file_size:
                    return None
    except OSError:
        return None
    return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of an audio file (no decoding). Raises `AudioError` if the file cannot be used.

    Checks: the file exists, is a regular non-empty file, libsndfile recognises it, a WAV is not truncated, and it
    holds at least one frame.
    """
    p = Path(path)
    _check_readable_file(p)
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(p, f"cannot decode: {_sf_message(e)}") from e
    except OSError as e:
        raise AudioError(p, f"cannot read: {e.strerror or e}") from e
    if info.format in ("WAV", "WAVEX"):
        cut = _wav_truncation(p)
        if cut is not None:
            declared, present = cut
            raise AudioError(
                p,
                f"truncated: the WAV header declares {declared} frames ({declared / info.samplerate:.3f} s) but the "
                f"file holds only {present} ({present / info.samplerate:.3f} s)",
            )
    if info.frames <= 0:
        raise AudioError(p, "contains no samples (0 frames)")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(p, f"cannot decode: invalid header (sample rate {info.samplerate}, {info.channels} channels)")
    return AudioInfo(
        path=str(p),
        sample_rate=int(info.samplerate),
        num_frames=int(info.frames),
        channels=int(info.channels),
        format=str(info.format),
        subtype=info.subtype or None,
    )


def _positive_int(value, name: str) -> int:
    ok = (not isinstance(value, bool) and isinstance(value, (int, np.integer, float))
          and math.isfinite(value) and value == int(value) and value > 0)
    if not ok:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {value!r}")
    return int(value)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    mono: bool = True,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    start: float = 0.0,
    duration: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Read an audio file as float32; returns `(wav, rate)`.

    `wav` is `[T]` when `mono` (channels averaged) or `[C, T]` otherwise. With `sample_rate` the audio is resampled
    to it (see `resample`) and that rate is returned; without it the file's own rate is returned.

    `start`/`duration` (seconds, rounded to the nearest frame of the file's rate) select a segment; it is read by
    seeking, without decoding the rest of the file (except MP3, always decoded from the beginning: see module doc).
    A segment running past the end is cut at the end, like slicing; a `start` at or past the end raises.

    `max_seconds` bounds the amount of audio decoded into memory (the segment, or for MP3 everything up to the
    segment's end) and is checked from the header before anything is decoded; None disables it.

    Float files are returned as stored (values beyond [-1, 1] are kept); NaN/Inf samples raise `AudioError`.
    """
    if sample_rate is not None:
        sample_rate = _positive_int(sample_rate, "sample_rate")
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"start must be a finite number of seconds >= 0, got {start!r}")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise ValueError(f"duration must be a finite number of seconds > 0 (or None), got {duration!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 (or None for no limit), got {max_seconds!r}")

    info = audio_info(path)
    p = Path(path)
    sr = info.sample_rate
    first = round(start * sr)
    if first >= info.num_frames:
        raise AudioError(p, f"start={start:g} s is at or past the end of the audio ({info.duration:.3f} s)")
    count = info.num_frames - first
    if duration is not None:
        count = min(count, max(1, round(duration * sr)))
    sequential = info.format == "MP3"  # see module docstring: libsndfile's MP3 seeking/chunked reads are unreliable

    if max_seconds is not None:
        decoded = (first + count) if sequential else count
        if decoded > max_seconds * sr:
            if first == 0 and duration is None:
                what = ""
            elif sequential:
                what = "the requested segment, decoded from the file start, "
            else:
                what = "the requested segment "
            raise AudioError(
                p,
                f"{what}is {decoded / sr:.2f} s long, over the max_seconds={max_seconds:g} limit "
                f"(pass a larger max_seconds, or None, to load it)",
            )

    try:
        with sf.SoundFile(str(p)) as f:
            if sequential or not f.seekable():
                data = f.read(first + count, dtype="float32", always_2d=True)[first:]
            else:
                if first:
                    f.seek(first)
                data = f.read(count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(p, f"cannot decode: {_sf_message(e)}") from e
    except OSError as e:
        raise AudioError(p, f"cannot read: {e.strerror or e}") from e

    if len(data) == 0:
        raise AudioError(p, f"cannot decode: no audio could be decoded from {start:g} s on")
    if len(data) < count and not sequential:
        raise AudioError(
            p, f"truncated: the header declares {info.num_frames} frames but reading stopped {count - len(data)} "
               f"frames early")
    if not np.isfinite(data).all():
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise AudioError(p, f"non-finite samples (NaN/Inf): {bad} of {data.size} values")

    if mono:
        wav = torch.from_numpy(data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0].copy())
    else:
        wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if sample_rate is not None and sample_rate != sr:
        return resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def to_mono(wav: torch.Tensor) -> torch.Tensor:
    """`[C, T]` -> `[T]` by the mean over channels; a `[T]` tensor is returned unchanged (the same object)."""
    if wav.ndim == 1:
        return wav
    if wav.ndim != 2:
        raise ValueError(f"expected a [T] or [C, T] waveform, got shape {tuple(wav.shape)}")
    if not wav.is_floating_point():
        raise ValueError(f"expected a floating-point waveform, got {wav.dtype}")
    return wav.mean(dim=0)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample the last dimension from `orig_sr` to `new_sr` Hz (any leading dimensions).

    Uses `torchaudio.functional.resample` with its defaults (windowed sinc, Hann window, `lowpass_filter_width=6`,
    `rolloff=0.99`: a band-limited resampler whose anti-aliasing cutoff is 0.99 x the lower Nyquist frequency).
    The output is float32 with `ceil(T * new_sr / orig_sr)` samples. When the rates are equal, `wav` itself is
    returned (no copy, dtype unchanged).
    """
    orig_sr = _positive_int(orig_sr, "orig_sr")
    new_sr = _positive_int(new_sr, "new_sr")
    if orig_sr == new_sr:
        return wav
    if wav.dtype != torch.float32:
        wav = wav.to(torch.float32)
    return AF.resample(wav, orig_sr, new_sr)


def save_audio(
    path: str | os.PathLike,
    wav: torch.Tensor | np.ndarray,
    sample_rate: int,
    *,
    subtype: str | None = None,
) -> Path:
    """Write `wav` (`[T]` or `[C, T]`, float, nominally in [-1, 1]) to `path`; returns the path.

    The format follows the suffix: .wav (default subtype PCM_16), .flac (PCM_16), .ogg (VORBIS), .mp3
    (MPEG_LAYER_III); `subtype` overrides the default (e.g. "FLOAT", "PCM_24"). Samples outside [-1, 1] are clipped
    for every subtype except FLOAT/DOUBLE, which store them as they are. NaN/Inf samples raise `AudioError`.

    The file is written to a temporary sibling and moved into place only when complete (`atomic_path`), so an
    interrupted write leaves neither a partial file nor a changed old file at `path`.
    """
    p = Path(path)
    fmt, subtype = _write_format(p, subtype)
    sample_rate = _positive_int(sample_rate, "sample_rate")

    if isinstance(wav, torch.Tensor):
        data = wav.detach().to("cpu", torch.float32).numpy()
    else:
        data = np.asarray(wav, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise ValueError(f"expected a [T] or [C, T] waveform, got shape {data.shape}")
    if data.ndim == 2:
        if data.shape[0] > _MAX_WRITE_CHANNELS:
            raise ValueError(f"expected a [C, T] waveform, got shape {data.shape}: {data.shape[0]} channels "
                             f"(was a [T, C] array passed?)")
        data = data.T
    if data.size == 0:
        raise AudioError(p, "refusing to write an empty signal (0 samples)")
    data = _writable_samples(p, data, subtype)
    with _write_errors(p), atomic_path(p) as tmp:
        sf.write(str(tmp), data, sample_rate, format=fmt, subtype=subtype)
    return p


def _write_format(path: Path, subtype: str | None) -> tuple[str, str]:
    """(soundfile format, subtype) for writing `path`: the suffix picks the format and the default subtype."""
    suffix = path.suffix.lower()
    if suffix not in _WRITE_FORMATS:
        raise AudioError(path, f"unknown audio file suffix '{path.suffix}' (can write: "
                               f"{', '.join(sorted(_WRITE_FORMATS))})")
    fmt, default_subtype = _WRITE_FORMATS[suffix]
    subtype = default_subtype if subtype is None else subtype.upper()
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"subtype {subtype!r} is not valid for {fmt} files; choose one of "
                         f"{', '.join(sorted(sf.available_subtypes(fmt)))}")
    return fmt, subtype


def _writable_samples(path: Path, data: np.ndarray, subtype: str) -> np.ndarray:
    """`data` checked for NaN/Inf (`AudioError`) and clipped to [-1, 1] unless the subtype is float."""
    finite = np.isfinite(data)
    if not finite.all():
        raise AudioError(path, f"non-finite samples (NaN/Inf): {int(data.size - np.count_nonzero(finite))} of "
                               f"{data.size} values; refusing to write")
    if subtype not in _FLOAT_SUBTYPES:
        data = np.clip(data, -1.0, 1.0)
    return np.ascontiguousarray(data)


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """libsndfile's and the file system's errors while writing `path` -> `AudioError` naming it."""
    try:
        yield
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(path, f"cannot write: {_sf_message(e)}") from e
    except OSError as e:
        raise AudioError(path, f"cannot write: {e.strerror or e}") from e


class LazyWaveform:
    """A mono waveform at `sample_rate` Hz read from a file window by window, for audio too long to hold in memory.

    ``len(w)`` is the number of samples at `sample_rate` (as `load_audio` would return: ``ceil(T * rate / file
    rate)``); ``w[a:b]`` reads just those samples (a float32 tensor ``[b - a]``, channels averaged), by seeking. When
    the file is at another rate, the window is read with a margin of source samples on each side and resampled alone,
    starting on a sample where both rates' grids meet, so the result equals resampling the whole file except for float
    rounding near the margins (the resampler's filter spans 6 zero crossings; the margin covers 32). The file is
    checked once when opened (`audio_info`: missing, empty, truncated...). An MP3 cannot be read by windows (see the
    module docstring: every read decodes from the start, and its length is an estimate), so it is decoded whole when
    opened and sliced: memory grows with an MP3's length, not with a WAV / FLAC / OGG's.
    """

    ndim = 1
    device = torch.device("cpu")

    def __init__(self, path: str | os.PathLike, sample_rate: int):
        self.path = Path(path)
        self.info = audio_info(path)
        self.sample_rate = _positive_int(sample_rate, "sample_rate")
        src, dst = self.info.sample_rate, self.sample_rate
        self._step = src // math.gcd(src, dst)  # source samples per grid point shared by both rates
        self._margin = 32 * max(1, math.ceil(src / dst)) if src != dst else 0
        self._len = math.ceil(self.info.num_frames * dst / src)
        self._whole: torch.Tensor | None = None
        if self.info.format == "MP3":
            self._whole = load_audio(self.path, self.sample_rate, max_seconds=None)[0]
            self._len = len(self._whole)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("LazyWaveform supports contiguous slices only (w[a:b])")
        start, stop, _ = index.indices(self._len)
        if stop <= start:
            return torch.zeros(0)
        if self._whole is not None:
            return self._whole[start:stop]
        src, dst = self.info.sample_rate, self.sample_rate
        if src == dst:
            return self._read(start, stop)
        first = max(0, (start * src // dst - self._margin) // self._step * self._step)  # on the shared grid
        last = min(self.info.num_frames, -(-stop * src // dst) + self._margin)
        out = resample(self._read(first, last), src, dst)
        offset = first * dst // src
        return out[start - offset: stop - offset].contiguous()

    def _read(self, first: int, last: int) -> torch.Tensor:
        rate = self.info.sample_rate
        wav, _ = load_audio(self.path, mono=True, max_seconds=None, start=first / rate, duration=(last - first) / rate)
        return wav


class AudioWriter:
    """Write a long mono signal to `path` block by block (`write`), published atomically when the block closes::

        with AudioWriter("out.wav", 16000) as out:
            for block in blocks:          # float arrays [T_i]
                out.write(block)

    Formats, subtypes, clipping and errors as `save_audio`; an exception inside the block (or no sample at all)
    leaves no file, and an old file at `path` unchanged.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, *, subtype: str | None = None):
        self.path = Path(path)
        self.format, self.subtype = _write_format(self.path, subtype)
        self.sample_rate = _positive_int(sample_rate, "sample_rate")
        self.samples = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        with _write_errors(self.path), contextlib.ExitStack() as stack:  # a failed open leaves no temporary file
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(sf.SoundFile(str(tmp), "w", self.sample_rate, 1, self.subtype,
                                                          format=self.format))
            self._stack = stack.pop_all()
        return self

    def write(self, block: np.ndarray | torch.Tensor) -> None:
        data = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
        data = _writable_samples(self.path, data.astype(np.float32, copy=False).reshape(-1), self.subtype)
        with _write_errors(self.path):
            self._file.write(data)
        self.samples += len(data)

    def __exit__(self, kind, error, trace) -> bool | None:
        if error is not None:  # the caller's exception goes on unchanged; the temporary file is dropped
            return self._stack.__exit__(kind, error, trace)
        if self.samples == 0:
            empty = AudioError(self.path, "refusing to write an empty signal (0 samples)")
            self._stack.__exit__(AudioError, empty, None)
            raise empty
        with _write_errors(self.path):  # closing flushes: its errors name the file too
            return self._stack.__exit__(None, None, None)
