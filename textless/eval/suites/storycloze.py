"""Spoken StoryCloze (sSC) and Topic StoryCloze (tSC): a flat folder of whole-story wavs, paired by integer id.

Layout (slp-rl/SpokenStoryCloze as slamkit evaluates it: ``subfolder=false``, ``sep='_'``): ``<dir>/*.wav``, two
files per story, each the full story (four prompt sentences + an ending) as one utterance. sSC's negative is the
original wrong ending; tSC's is an ending drawn from another story. The model's likelihood of the WHOLE wav is
compared (prompt included), as in slamkit.

Positive / negative come from the file NAME, never from file order. Accepted naming conventions (`CONVENTIONS`;
one per folder):

    labels    ``<id>_correct.wav`` (positive) / ``<id>_incorrect.wav`` (negative)
    slamkit   ``<id>_0.wav`` (positive) / ``<id>_1.wav`` (negative): slamkit's ``<int id>_<suffix>`` names read
              with k = 0 as the positive

``<id>`` is a non-negative integer (leading zeros allowed; ``01`` and ``1`` are the same story, so both present is an
error). slamkit itself sorts files by the integer prefix only and takes the first file of each pair as the positive,
so inside a pair it follows the filesystem's listing order; a folder whose names do not say which side is which is
refused here instead. Any other wav name, a mix of conventions, or a story with a side missing or doubled is an
error naming the files. Scoring: accuracy over stories (no averaging: one voice).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textless.errors import FormatError, TextlessError
from textless.eval.suites.base import (
    Pair,
    ReadOptions,
    SuiteData,
    SuiteResult,
    item_scores,
    list_wavs,
    show,
    summarize,
)


@dataclass(frozen=True)
class NamingConvention:
    """Wav stems ``<id>_<label>``: `pattern` captures (id, label); `positive` / `negative` are the labels."""

    name: str
    pattern: re.Pattern
    positive: str
    negative: str

    def describe(self) -> str:
        return f"{self.name}: <id>_{self.positive}.wav / <id>_{self.negative}.wav"


CONVENTIONS: dict[str, NamingConvention] = {
    "labels": NamingConvention("labels", re.compile(r"^(\d+)_(correct|incorrect)$"), "correct", "incorrect"),
    "slamkit": NamingConvention("slamkit", re.compile(r"^(\d+)_([01])$"), "0", "1"),
}


def _parse(path: Path) -> tuple[NamingConvention, int, str]:
    for convention in CONVENTIONS.values():
        match = convention.pattern.match(path.stem)
        if match:
            return convention, int(match.group(1)), match.group(2)
    accepted = "; ".join(c.describe() for c in CONVENTIONS.values())
    raise FormatError(path, f"not a StoryCloze file name (accepted: {accepted})")


def read_storycloze(directory: Path, suite: str) -> SuiteData:
    """Pairs (true ending, wrong ending) of a flat StoryCloze folder, in integer id order."""
    wavs = list_wavs(directory)
    if not wavs:
        raise TextlessError(f"'{directory}': no .wav files (expected a flat StoryCloze folder of "
                            f"<id>_correct.wav / <id>_incorrect.wav or <id>_0.wav / <id>_1.wav)")
    parsed = [(_parse(p), p) for p in wavs]
    used = {conv.name: p for (conv, _, _), p in parsed}
    if len(used) > 1:
        examples = ", ".join(f"{p.name} ({name})" for name, p in used.items())
        raise TextlessError(f"'{directory}' mixes StoryCloze naming conventions: {examples}; use one per folder")
    stories: dict[int, dict[str, Path]] = {}
    for (conv, story, label), path in parsed:
        side = "positive" if label == conv.positive else "negative"
        if side in stories.setdefault(story, {}):
            raise FormatError(path, f"story {story} has two {side} files: {stories[story][side].name} and "
                                    f"{path.name}")
        stories[story][side] = path
    incomplete = [f"{story} (only {next(iter(sides.values())).name})" for story, sides in sorted(stories.items())
                  if len(sides) != 2]
    if incomplete:
        raise TextlessError(f"'{directory}': {len(incomplete)} stor{'y has' if len(incomplete) == 1 else 'ies have'} "
                            f"one side missing: {show(incomplete)}")
    pairs = [Pair(s["positive"], s["negative"], item=str(story), info={"id": story})
             for story, s in sorted(stories.items())]
    files = [f for p in pairs for f in (p.positive, p.negative)]
    convention = next(iter(used))
    return SuiteData(suite, directory, files, pairs, notes=[f"naming convention: {CONVENTIONS[convention].describe()}"])


def aggregate_storycloze(data: SuiteData, outcomes: np.ndarray) -> SuiteResult:
    """Accuracy over stories, under the suite's name."""
    items = item_scores(data.pairs, outcomes)
    return SuiteResult(data.suite, data.split, {data.suite: summarize(it.score for it in items)},
                       pairs=len(data.pairs), items=len(items), notes=list(data.notes))


def reader(suite: str):
    """`Suite.read` for one StoryCloze variant (the options are not used)."""

    def read(directory: Path, options: ReadOptions) -> SuiteData:
        return read_storycloze(directory, suite)

    return read
