"""Long-form synthesis with bounded memory.

Method (overlap-and-keep-centre, no cross-fade needed): the units are first expanded to frames (given durations or
the duration predictor run once over the whole deduplicated sequence). The frames are cut into consecutive chunks of
``chunk_frames``; each chunk is synthesised inside a window extended by ``context_frames`` real frames on each side
(clipped at the sequence ends), and only the chunk's own ``chunk_frames * hop`` samples are kept. The generator is a
stack of zero-padded convolutions, so an output sample only depends on the frames within
`receptive_field_frames(config)` of its own frame (a window edge that is a sequence edge is the same zero padding
in both cases). With ``context_frames >= receptive_field_frames`` every kept sample therefore equals whole-sequence
synthesis up to float rounding, and there is no seam; with less context the chunk edges differ slightly.
Peak memory is that of one batch of windows of ``chunk_frames + 2 * context_frames`` frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from textless.errors import TextlessError
from textless.vocoders.generator import receptive_field_frames
from textless.vocoders.model import UnitVocoder

__all__ = ["iter_synthesize_long", "receptive_field_frames", "synthesize_long"]


def iter_synthesize_long(vocoder: UnitVocoder, units: np.ndarray, durations: np.ndarray | None = None, *,
                         chunk_frames: int = 500, context_frames: int = 50, speaker=None, f0: np.ndarray | None = None,
                         deduplicated: bool | None = None, batch_size: int = 4) -> Iterator[np.ndarray]:
    """`synthesize_long`, piece by piece: float32 waveforms of consecutive chunks (``chunk_frames * hop`` samples
    each, the last one shorter), ``batch_size`` windows synthesised at a time. Memory: one batch of windows plus the
    frame-level units (int64 [frames]), whatever the length; write the pieces out as they come (`AudioWriter`)."""
    if chunk_frames < 1 or context_frames < 0:
        raise TextlessError("chunk_frames must be >= 1 and context_frames >= 0")
    units = np.asarray(units).astype(np.int64, copy=False)
    vocoder._check_units(units, 0)
    deduplicated = vocoder.deduplicated if deduplicated is None else deduplicated
    if durations is None and deduplicated:
        durations = vocoder.predict_durations([units])[0]
    frames = np.repeat(units, np.asarray(durations, np.int64), axis=0) if durations is not None else units
    n = len(frames)
    if f0 is not None:
        f0 = np.asarray(f0, np.float32)
        if f0.shape[-1] != n:
            raise TextlessError(f"synthesize_long needs frame-level f0 ({n} frames), got {f0.shape[-1]} steps")
    windows = []
    for start in range(0, n, chunk_frames):
        stop = min(start + chunk_frames, n)
        windows.append((start, stop, max(0, start - context_frames), min(n, stop + context_frames)))
    hop = vocoder.hop
    for first in range(0, len(windows), batch_size):
        batch = windows[first: first + batch_size]
        wavs = vocoder.synthesize([frames[lo:hi] for _, _, lo, hi in batch], speakers=speaker,
                                  f0=None if f0 is None else [f0[..., lo:hi] for _, _, lo, hi in batch],
                                  batch_size=batch_size, deduplicated=False)
        for w, (start, stop, lo, _) in zip(wavs, batch):
            yield w[(start - lo) * hop: (stop - lo) * hop]


def synthesize_long(vocoder: UnitVocoder, units: np.ndarray, durations: np.ndarray | None = None, **kw) -> np.ndarray:
    """One long unit sequence [L] (+ durations [L]) -> float32 waveform [frames * hop] at ``vocoder.sample_rate``.

    ``durations`` / ``deduplicated`` follow `UnitVocoder.synthesize`. ``f0`` must be frame-level ([frames] or
    [C, frames]) here. ``chunk_frames`` frames (chunk_frames / frame_rate seconds) are kept per window,
    ``context_frames`` extra frames each side are synthesised and dropped; ``batch_size`` windows run together
    (keyword arguments of `iter_synthesize_long`).
    """
    pieces = list(iter_synthesize_long(vocoder, units, durations, **kw))
    return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
