"""Figures of turn-taking statistics: two-lane conversation timelines and event-duration histograms (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from textless.dialogue.stats import HIST_BIN, ConversationStats, CorpusReport
from textless.dialogue.turn_taking import KINDS, turn_taking_events
from textless.utils.atomic import atomic_path
from textless.utils.plots import _save

COLOURS = {"ipu": "tab:blue", "pause": "tab:orange", "gap": "tab:red", "overlap": "tab:purple"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timelines(conversations: Sequence[ConversationStats], path: str | Path, max_conversations: int = 8,
                   min_silence: float = 0.2) -> Path:
    """One panel per conversation (the first `max_conversations`): a lane per speaker with its IPUs as bars, pauses
    (orange) in the lane of their speaker, gaps (red) between the lanes and overlaps (purple) across both."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    shown = list(conversations)[:max_conversations]
    fig, axes = plt.subplots(len(shown), 1, figsize=(12, 1.3 * len(shown) + 0.6), squeeze=False)
    for ax, conv in zip(axes[:, 0], shown):
        events = turn_taking_events(*conv.segments, min_silence)
        lane = {0: 1.0, 1: 0.0}  # speaker 0 on top
        for spk, start, end in events.ipu:
            ax.broken_barh([(start, end - start)], (lane[spk] - 0.35, 0.7), color=COLOURS["ipu"])
        for spk, start, end in events.pause:
            ax.broken_barh([(start, end - start)], (lane[spk] - 0.15, 0.3), color=COLOURS["pause"])
        for _, start, end in events.gap:
            ax.broken_barh([(start, end - start)], (0.35, 0.3), color=COLOURS["gap"])
        for start, end in events.overlap:
            ax.axvspan(start, end, color=COLOURS["overlap"], alpha=0.35, linewidth=0)
        ax.set_xlim(0, conv.duration)
        ax.set_ylim(-0.6, 1.6)
        ax.set_yticks([1.0, 0.0], list(conv.speakers), fontsize=8)
        ax.set_title(conv.id, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.legend(handles=[Patch(color=COLOURS[k], label=k) for k in KINDS], loc="upper right", ncol=4, fontsize=8)
    with atomic_path(path) as tmp:
        _save(fig, tmp)
    return Path(path)


def plot_duration_histograms(report: CorpusReport, path: str | Path, reference: CorpusReport | None = None,
                             labels: tuple[str, str] = ("generated", "reference")) -> Path:
    """A panel per event kind: the histogram of its durations (200 ms bins, fraction of events), against the
    reference corpus's when given."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(KINDS), figsize=(3.4 * len(KINDS), 3.0), squeeze=False)
    for ax, kind in zip(axes[0], KINDS):
        sides = [(labels[0], getattr(report.corpus, kind).durations)]
        if reference is not None:
            sides.append((labels[1], getattr(reference.corpus, kind).durations))
        longest = max((max(d) for _, d in sides if d), default=HIST_BIN)
        edges = np.arange(int(longest / HIST_BIN) + 2) * HIST_BIN
        for label, durations in sides:
            if durations:
                weights = np.full(len(durations), 1 / len(durations))
                ax.hist(durations, bins=edges, weights=weights, histtype="step", linewidth=1.5,
                        label=f"{label} ({len(durations)})")
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("seconds", fontsize=8)
        ax.set_ylabel("fraction of events", fontsize=8)
        if any(d for _, d in sides):
            ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        _save(fig, tmp)
    return Path(path)
