"""MFCC features: the GSLM "MFCC" baseline tokenizer's encoder (13 cepstra + deltas + delta-deltas = 39-d, 100 Hz).

Implementation: ``torchaudio.compliance.kaldi.mfcc`` (Kaldi-compatible: 25 ms Povey window, 23 mel bins, 13 cepstra
with lifter 22, pre-emphasis 0.97, DC removal, no dither, ``use_energy=False``, ``snip_edges=True``), which is what
fairseq's GSLM ``MfccFeatureReader`` uses, followed by ``torchaudio.functional.compute_deltas`` (window 5,
replicate padding) for deltas and delta-deltas, concatenated as [mfcc, delta, delta-delta].

Frames: ``1 + (T - 400) // 160`` for T >= 400 samples at 16 kHz and 100 Hz (window = 25 ms, hop = sample_rate /
frame_rate). Each item of a batch is computed on its own unpadded samples, so batched == unbatched exactly. Every
frame depends only on its own window (deltas: +-4 frames), so chunked encoding with >= 4 frames of context is
identical to whole-utterance encoding.
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import Tensor
from torchaudio.compliance import kaldi

from textless.errors import ConfigError, TextlessError
from textless.tokenizers.encoders.base import SpeechEncoder, check_batch

__all__ = ["MFCCEncoder", "load_mfcc"]

WINDOW_MS = 25.0
NUM_MEL_BINS = 23


class MFCCEncoder(SpeechEncoder):
    """Kaldi MFCCs (+ deltas): wavs [B, T] at `sample_rate` -> features [B, F, D], D = n_mfcc x (3 if deltas else 1).

    Args:
        n_mfcc: cepstra per frame (at most 23, the number of mel bins).
        deltas: append delta and delta-delta coefficients.
        sample_rate: input rate in Hz.
        frame_rate: output frames per second; sample_rate / frame_rate must be a whole number of samples.
    """

    def __init__(self, n_mfcc: int = 13, deltas: bool = True, sample_rate: int = 16000, frame_rate: float = 100.0):
        super().__init__()
        if not 1 <= int(n_mfcc) <= NUM_MEL_BINS:
            raise ConfigError(f"n_mfcc must be in 1..{NUM_MEL_BINS} (the Kaldi mel bins), got {n_mfcc}")
        hop = sample_rate / frame_rate
        if hop != int(hop) or hop < 1:
            raise ConfigError(f"sample_rate / frame_rate must be a whole number of samples, got "
                              f"{sample_rate} / {frame_rate} = {hop}")
        self.n_mfcc = int(n_mfcc)
        self.deltas = bool(deltas)
        self.sample_rate = int(sample_rate)
        self.frame_rate = float(frame_rate)
        self.hop = int(hop)
        self.window = int(self.sample_rate * WINDOW_MS / 1000)
        self.min_samples = self.window
        self.dim = self.n_mfcc * (3 if self.deltas else 1)
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """``1 + (T - window) // hop`` (Kaldi ``snip_edges``); fewer samples than one 25 ms window -> error."""
        num_samples = int(num_samples)
        if num_samples < self.window:
            raise TextlessError(self._too_short(num_samples))
        return 1 + (num_samples - self.window) // self.hop

    def _too_short(self, num_samples: int) -> str:
        return (f"{num_samples} samples is too short for MFCC features: at least {self.window} samples "
                f"({WINDOW_MS:g} ms at {self.sample_rate} Hz) are needed for one frame")

    def features(self, wav: Tensor) -> Tensor:
        """One unpadded waveform [T] -> [F, D]."""
        mfcc = kaldi.mfcc(wav[None], num_ceps=self.n_mfcc, num_mel_bins=NUM_MEL_BINS,
                          sample_frequency=float(self.sample_rate), frame_length=WINDOW_MS,
                          frame_shift=1000.0 / self.frame_rate, use_energy=False, dither=0.0)
        if not self.deltas:
            return mfcc
        coeffs = mfcc.T  # compute_deltas works along the last (time) axis
        delta = AF.compute_deltas(coeffs)
        delta2 = AF.compute_deltas(delta)
        return torch.cat([coeffs, delta, delta2], dim=0).T

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wavs float32 [B, T], lengths int64 [B] -> (features float32 [B, F, D], feature lengths int64 [B])."""
        wavs, lengths = check_batch(wavs, lengths, self.device)
        frame_counts = [self._frames_of_item(i, int(n)) for i, n in enumerate(lengths.tolist())]
        out = wavs.new_zeros(len(frame_counts), max(frame_counts), self.dim)
        with torch.inference_mode():
            for i, n in enumerate(lengths.tolist()):
                out[i, : frame_counts[i]] = self.features(wavs[i, :n])
        return out, torch.tensor(frame_counts, dtype=torch.long, device=wavs.device)

    def _frames_of_item(self, index: int, num_samples: int) -> int:
        if num_samples < self.window:
            raise TextlessError(f"batch item {index}: {self._too_short(num_samples)}")
        return self.num_frames(num_samples)

    def loader_options(self) -> dict:
        """The `MFCCEncoder` arguments (`load_encoder("mfcc", **options)` rebuilds it)."""
        return {"n_mfcc": self.n_mfcc, "deltas": self.deltas, "sample_rate": self.sample_rate,
                "frame_rate": self.frame_rate}

    def identity(self) -> dict:
        """{"name": "mfcc", "source": "mfcc", "layer": None, "n_mfcc", "deltas", ...}."""
        return {"name": "mfcc", "source": "mfcc", "layer": None, "n_mfcc": self.n_mfcc, "deltas": self.deltas,
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "dim": self.dim,
                "implementation": "torchaudio.compliance.kaldi.mfcc"}


def load_mfcc(source: str = "mfcc", layer: int | None = None, **kw) -> MFCCEncoder:
    """``load_encoder("mfcc", **kw)``: `kw` are `MFCCEncoder` options; `layer` must be None (MFCC has no layers)."""
    if layer is not None:
        raise ConfigError(f"the MFCC encoder has no layers: layer must be None, got {layer!r}")
    return MFCCEncoder(**kw)
