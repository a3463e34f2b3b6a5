"""Encode hours-long audio with bounded memory: overlapping windows, central frames kept, concatenated.

The utterance's frame grid is cut into chunks of ``chunk_seconds``; each chunk is encoded in a window that adds up to
``context_seconds`` of audio on each side, and only the chunk's own frames are kept. Window starts are multiples of
the encoder's hop (samples per frame, measured with `num_frames`), so frame k of a window is frame
``start / hop + k`` of the whole utterance: the result has exactly ``encoder.num_frames(T)`` frames on the same grid
as whole-utterance encoding.

How chunked features differ from whole-utterance ones: a transformer encoder (HuBERT, wav2vec2, WavLM, Whisper)
only sees the window, so every kept frame has at least ``context_seconds`` of audio context on each side (or the
utterance edge) instead of the whole utterance; with trained models attention is mostly local and the difference is
small, and it shrinks as the context grows (a window covering the whole utterance gives the same features). The
first conv layer of ``feat_extract_norm="group"`` models (HuBERT-base, wav2vec2-base) normalises over the whole
input, so there even the CNN features depend on the window. Whisper additionally sees each window at positions
starting from 0 and normalises its log-mel per window. For an encoder
whose receptive field is within the context (MFCC: 25 ms window + 4 frames for deltas; a CNN-only model) the chunked
features are identical.

Memory: one window of at most ``(chunk_seconds + 2 context_seconds) x sample_rate`` samples plus one receptive field
(400 samples for HuBERT) goes through the encoder at a time, whatever the input length; the output itself is
``num_frames x D`` (use `iter_encode_long` to consume it piece by piece).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from textless.audio import resample
from textless.errors import ConfigError, TextlessError
from textless.tokenizers.encoders.base import SpeechEncoder

__all__ = ["FrameGeometry", "Window", "encode_long", "frame_geometry", "iter_encode_long", "plan_windows",
           "total_frame_count"]

_PROBE_SECONDS = (5, 15)  # two lengths at which the hop is measured (both within Whisper's 30 s window)


@dataclass(frozen=True)
class FrameGeometry:
    """How an encoder's frames tile its input: frame k covers samples [k hop, k hop + receptive)."""

    hop: int        # samples per frame
    receptive: int  # fewest samples giving one frame


@dataclass(frozen=True)
class Window:
    """One encoder call: samples [start, end) give frames [first, ...); frames [keep_from, keep_to) are kept."""

    start: int
    end: int
    first: int
    keep_from: int
    keep_to: int


def _frames_or_zero(encoder: SpeechEncoder, num_samples: int) -> int:
    try:
        return encoder.num_frames(num_samples)
    except TextlessError:
        return 0


def frame_geometry(encoder: SpeechEncoder) -> FrameGeometry:
    """Measure hop and receptive field from `encoder.num_frames` (e.g. HuBERT 320 / 400, MFCC 160 / 400)."""
    a, b = (seconds * encoder.sample_rate for seconds in _PROBE_SECONDS)
    frames = encoder.num_frames(b) - encoder.num_frames(a)
    hop = (b - a) // frames
    if hop * frames != b - a:
        raise TextlessError(f"cannot chunk {encoder.identity().get('name')}: its frames are not on a regular grid "
                            f"({b - a} samples give {frames} frames)")
    low, high = 1, a  # smallest n with num_frames(n) >= 1
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if _frames_or_zero(encoder, mid) >= 1 else (mid + 1, high)
    return FrameGeometry(hop=hop, receptive=low)


def total_frame_count(encoder: SpeechEncoder, geometry: FrameGeometry, num_samples: int) -> int:
    """Frames of the whole utterance: `encoder.num_frames`, extended along the grid past `max_samples` (Whisper)."""
    if encoder.max_samples is None or num_samples <= encoder.max_samples:
        return encoder.num_frames(num_samples)
    return (num_samples - geometry.receptive) // geometry.hop + 1


def _window_frames(encoder: SpeechEncoder, geometry: FrameGeometry, chunk_seconds: float,
                   context_seconds: float) -> tuple[int, int]:
    """(chunk frames, context frames); the chunk shrinks so a window fits the encoder's `max_samples`."""
    if not chunk_seconds > 0 or not context_seconds >= 0:
        raise ConfigError(f"need chunk_seconds > 0 and context_seconds >= 0, got {chunk_seconds} and "
                          f"{context_seconds}")
    chunk = max(1, round(chunk_seconds * encoder.sample_rate / geometry.hop))
    context = math.ceil(context_seconds * encoder.sample_rate / geometry.hop)
    if encoder.max_samples is not None:
        # a window spans at most (chunk + 2 context) hops + receptive - 1 samples (the last one takes the tail)
        fits = (encoder.max_samples - geometry.receptive + 1) // geometry.hop - 2 * context
        if fits < 1:
            raise ConfigError(f"context_seconds={context_seconds} leaves no room for a chunk in the encoder's "
                              f"{encoder.max_samples / encoder.sample_rate:g} s window")
        chunk = min(chunk, fits)
    return chunk, context


def plan_windows(num_samples: int, total_frames: int, geometry: FrameGeometry, chunk: int,
                 context: int) -> Iterator[Window]:
    """Windows covering frames [0, total_frames) in chunks of `chunk` frames with `context` frames on each side."""
    for keep_from in range(0, total_frames, chunk):
        keep_to = min(keep_from + chunk, total_frames)
        first = max(0, keep_from - context)
        last = min(total_frames, keep_to + context)
        start = first * geometry.hop
        # the window reaching the last frame takes the utterance's tail too (samples after the last full frame still
        # enter GroupNorm statistics of HuBERT-base-like models), so a single window is the whole utterance
        end = num_samples if last == total_frames else (last - 1) * geometry.hop + geometry.receptive
        yield Window(start, end, first, keep_from, keep_to)


def iter_encode_long(encoder: SpeechEncoder, wav: Tensor, sample_rate: int | None = None, chunk_seconds: float = 30.0,
                     context_seconds: float = 2.0, out_device: torch.device | None = None) -> Iterator[Tensor]:
    """Like `encode_long`, but yield the features chunk by chunk ([F_i, D] each, in order, on `out_device`: by
    default `wav`'s device)."""
    if wav.ndim != 1:
        raise ValueError(f"expected one mono waveform [T], got shape {tuple(wav.shape)}")
    if sample_rate is not None:
        wav = resample(wav, sample_rate, encoder.sample_rate)
    geometry = frame_geometry(encoder)
    total_frames = total_frame_count(encoder, geometry, len(wav))
    chunk, context = _window_frames(encoder, geometry, chunk_seconds, context_seconds)
    for window in plan_windows(len(wav), total_frames, geometry, chunk, context):
        piece = wav[window.start: window.end].to(encoder.device, torch.float32)
        features, lengths = encoder(piece[None])
        if int(lengths[0]) < window.keep_to - window.first:
            raise TextlessError(f"window [{window.start}, {window.end}) gave {int(lengths[0])} frames, fewer than "
                                f"the {window.keep_to - window.first} planned")
        yield features[0, window.keep_from - window.first: window.keep_to - window.first].to(out_device or wav.device)


def encode_long(encoder: SpeechEncoder, wav: Tensor, sample_rate: int | None = None, chunk_seconds: float = 30.0,
                context_seconds: float = 2.0) -> Tensor:
    """Features [F, D] of a long mono waveform `wav` [T] (at `sample_rate`, None = the encoder's) with bounded memory.

    F = ``encoder.num_frames(T)`` (extended along the same grid beyond Whisper's 30 s), on the whole-utterance
    frame grid; see the module docstring for how the features
    differ from whole-utterance encoding (not at all for MFCC) and for the memory bound. The result is on `wav`'s
    device. Encoders with a maximum input (Whisper, 30 s) get chunks shortened to fit ``chunk + 2 x context``.
    """
    return torch.cat(list(iter_encode_long(encoder, wav, sample_rate, chunk_seconds, context_seconds)))
