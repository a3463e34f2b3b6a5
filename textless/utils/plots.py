"""Figures a person would rather look at than read: waveforms and spectrograms with unit boundaries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SpeechPanel:
    """One row of `plot_speech`: a waveform [T] at `sample_rate` Hz, unit boundaries in seconds, and an optional
    time (seconds) where something starts (e.g. the generated continuation), drawn as a red line."""

    title: str
    wav: np.ndarray
    sample_rate: int
    boundaries: Sequence[float] = ()
    marker: float | None = None


def log_mel(wav: np.ndarray, sample_rate: int, n_mels: int = 80) -> tuple[np.ndarray, float]:
    """(log-mel [n_mels, frames] in dB, frame hop in seconds): 25 ms windows, 10 ms hop."""
    import torch
    import torchaudio

    hop = sample_rate // 100
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=sample_rate // 40, hop_length=hop, n_mels=n_mels)
    spec = mel(torch.as_tensor(wav, dtype=torch.float32))
    return (10 * torch.log10(spec.clamp(min=1e-10))).numpy(), hop / sample_rate


def plot_speech(panels: Sequence[SpeechPanel], path: str | Path, title: str = "") -> Path:
    """Waveform + log-mel spectrogram per panel (shared time axis); PNG at `path`. Units show as alternating shaded
    bands behind the waveform and as cyan lines over the spectrogram (visible on its dark background)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max(len(p.wav) / p.sample_rate for p in panels)
    fig, axes = plt.subplots(2 * len(panels), 1, figsize=(12, 2.6 * len(panels)), sharex=True,
                             gridspec_kw={"height_ratios": [1, 2] * len(panels)})
    for i, panel in enumerate(panels):
        ax_wav, ax_mel = axes[2 * i], axes[2 * i + 1]
        t = np.arange(len(panel.wav)) / panel.sample_rate
        edges = [0.0, *panel.boundaries, len(panel.wav) / panel.sample_rate]
        for k in range(0, len(edges) - 1, 2):
            ax_wav.axvspan(edges[k], edges[k + 1], color="0.85", linewidth=0)
        ax_wav.plot(t, panel.wav, linewidth=0.4, color="tab:blue")
        ax_wav.set_ylim(-1, 1)
        ax_wav.set_title(panel.title, fontsize=10, loc="left")
        ax_wav.set_yticks([])
        spec, hop = log_mel(panel.wav, panel.sample_rate)
        ax_mel.imshow(spec, origin="lower", aspect="auto", cmap="magma", extent=(0, spec.shape[1] * hop, 0, 80),
                      vmin=spec.max() - 80, vmax=spec.max())
        ax_mel.set_ylabel("mel", fontsize=8)
        for b in panel.boundaries:
            ax_mel.axvline(b, color="cyan", linewidth=0.6, alpha=0.9)
        if panel.marker is not None:
            for ax in (ax_wav, ax_mel):
                ax.axvline(panel.marker, color="red", linewidth=1.5)
    axes[-1].set_xlim(0, longest)
    axes[-1].set_xlabel("seconds")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
