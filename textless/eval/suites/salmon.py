"""SALMon (slp-rl/salmon): acoustic consistency and acoustic-semantic alignment, eight parts.

Layout: ``<root>/<part>/sample_{i}_{j}.wav`` for each part in `PARTS`; ``j = 0`` is the positive (consistent /
aligned) recording of sample ``i`` and ``j >= 1`` are its negatives (``data_generation``: ``sample_{i}_{k+1}``).
There is no CSV. The official loader (``salmon.py`` ``SalmonDataset``, copied into slamkit) groups files by ``i``,
sorts each group by name and compares ``[0]`` (the positive) with ``[1]``, the first negative; we read ``j`` from the
name and compare ``j = 0`` with the smallest ``j >= 1`` (the same file whenever ``sample_{i}_1.wav`` exists).
With ``all_negatives`` every negative is compared with the positive and a sample's score is the mean over its
negatives (not in the official code: an option for sets with several negatives).

Scoring: per pair 1 / 0.5 / 0 (ties half), accuracy per part over samples, reported per part as the official
``SALMon - {part}: x``. A wav whose name is not ``sample_<int>_<int>.wav``, a sample without its positive or without
a negative, or a missing part directory is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from textless.errors import FormatError, TextlessError
from textless.eval.suites.base import (
    Pair,
    ReadOptions,
    SuiteData,
    SuiteResult,
    group_scores,
    item_scores,
    list_wavs,
    show,
)

PARTS = ("bg_alignment", "bg_all_consistency", "bg_domain_consistency", "gender_consistency", "rir_consistency",
         "sentiment_alignment", "sentiment_consistency", "speaker_consistency")
_NAME = re.compile(r"^sample_(\d+)_(\d+)$")


def _parts(root: Path, wanted: Sequence[str] | None) -> list[str]:
    parts = list(PARTS if wanted is None or list(wanted) == ["all"] else wanted)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise TextlessError(f"unknown SALMon part(s) {', '.join(unknown)} (parts: {', '.join(PARTS)})")
    if not root.is_dir():
        raise TextlessError(f"'{root}': no such directory (expected a SALMon root with {', '.join(PARTS)})")
    missing = [p for p in parts if not (root / p).is_dir()]
    if missing:
        present = sorted(d.name for d in root.iterdir() if d.is_dir())
        raise TextlessError(f"'{root}' is not a complete SALMon root: missing part(s) {', '.join(missing)} "
                            f"(found: {', '.join(present) or 'no directories'}); pass salmon_parts=[...] to "
                            f"evaluate some parts only")
    return parts


def _read_part(directory: Path, part: str, all_negatives: bool) -> tuple[list[Path], list[Pair]]:
    samples: dict[int, dict[int, Path]] = {}
    for path in list_wavs(directory):
        match = _NAME.match(path.stem)
        if match is None:
            raise FormatError(path, "not a SALMon file name (expected sample_<index>_<j>.wav, j = 0 the positive)")
        index, j = int(match.group(1)), int(match.group(2))
        if j in samples.setdefault(index, {}):
            raise FormatError(path, f"sample {index} already has j={j}: {samples[index][j].name}")
        samples[index][j] = path
    if not samples:
        raise TextlessError(f"'{directory}': no sample_<index>_<j>.wav files")
    no_positive = [f"sample_{i}" for i, s in sorted(samples.items()) if 0 not in s]
    if no_positive:
        raise TextlessError(f"'{directory}': no positive (sample_<i>_0.wav) for {show(no_positive)}")
    no_negative = [f"sample_{i}_0.wav" for i, s in sorted(samples.items()) if len(s) < 2]
    if no_negative:
        raise TextlessError(f"'{directory}': no negative (sample_<i>_<j>.wav, j >= 1) for {show(no_negative)}")
    files, pairs = [], []
    for index, sides in sorted(samples.items()):
        negatives = sorted(j for j in sides if j > 0)
        for j in negatives if all_negatives else negatives[:1]:
            pairs.append(Pair(sides[0], sides[j], item=f"{part}/{index}",
                              info={"part": part, "sample": index, "negative": j}))
        files += [sides[j] for j in sorted(sides) if j == 0 or all_negatives or j == negatives[0]]
    return files, pairs


def read_salmon(root: Path, options: ReadOptions) -> SuiteData:
    """Pairs of every requested part (`options.salmon_parts`, default all eight), parts in `PARTS` order."""
    files, pairs = [], []
    parts = _parts(root, options.salmon_parts)
    for part in parts:
        part_files, part_pairs = _read_part(root / part, part, options.all_negatives)
        files += part_files
        pairs += part_pairs
    mode = "every negative (mean per sample)" if options.all_negatives else "the first negative (official)"
    return SuiteData("salmon", root, files, pairs, notes=[f"parts: {', '.join(parts)}; positive vs {mode}"])


def aggregate_salmon(data: SuiteData, outcomes: np.ndarray) -> SuiteResult:
    """One accuracy per part (over samples)."""
    items = item_scores(data.pairs, outcomes)
    parts = [p for p in PARTS if any(it.info["part"] == p for it in items)]
    metrics = group_scores(items, lambda it: it.info["part"], order=parts)
    return SuiteResult(data.suite, data.split, metrics, pairs=len(data.pairs), items=len(items),
                       notes=list(data.notes))
