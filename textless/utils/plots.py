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
    return _save(fig, path)


@dataclass
class Curve:
    """One line of `plot_curves`: y (and optional error bars) at each x, in the panel named `title` (curves with the
    same title share a panel, told apart by `label`); `chance` draws a dashed reference line."""

    title: str
    x: Sequence[float]
    y: Sequence[float]
    err: Sequence[float] | None = None
    ylabel: str = ""
    chance: float | None = None
    label: str | None = None


def plot_curves(curves: Sequence[Curve], path: str | Path, title: str = "", xlabel: str = "iteration") -> Path:
    """One small panel per title side by side (before / after curves of a training loop); PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[Curve]] = {}
    for c in curves:
        panels.setdefault(c.title, []).append(c)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (name, group) in zip(axes[0], panels.items()):
        for c in group:
            ax.errorbar(list(c.x), list(c.y), yerr=None if c.err is None else list(c.err), marker="o", capsize=3,
                        label=c.label)
        chance = next((c.chance for c in group if c.chance is not None), None)
        if chance is not None:
            ax.axhline(chance, color="0.5", linestyle="--", linewidth=1)
        if any(c.label for c in group):
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(group[0].ylabel, fontsize=8)
        ax.set_xticks(sorted({x for c in group for x in c.x}))
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Lay out `fig`, write it as a PNG at `path` (folders created) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
