"""Types shared by the likelihood suites: what a reader returns, how pair outcomes are averaged, what a result holds.

A reader turns one suite's OFFICIAL on-disk layout into a `SuiteData`: the wav files to score and the `Pair`\\ s to
compare (each with an explicit positive and negative side, never inferred from file order). The scoring engine
(`textless.eval.likelihood`) gives every file one score (higher = more probable); a pair's outcome is

    outcome = 0.5 * (s_pos == s_neg) + (s_pos > s_neg)      in {0, 0.5, 1}  (ties count half)

as in the ZeroSpeech 2021 evaluation and slamkit's ``modelling_metric``. Pairs sharing an ``item`` are averaged
first (ZeroSpeech: the voices of one id; SALMon with every negative: the negatives of one sample) and accuracies are
means over items. A suite's ``aggregate`` turns the per-item scores into headline `Score`\\ s and breakdowns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from textless.errors import TextlessError


@dataclass(frozen=True)
class Pair:
    """One comparison: the LM should find `positive` more probable than `negative`.

    `item` names the unit of averaging (pairs with the same item are averaged before the accuracy is taken);
    `info` keeps the gold fields used for breakdowns and reports (voice, frequency band, type, part...).
    """

    positive: Path
    negative: Path
    item: str
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ReadOptions:
    """Reader options. `split`: ZeroSpeech 2021 subset (dev | test); `salmon_parts`: SALMon parts to read (None:
    all eight); `all_negatives`: SALMon, compare the positive with every negative instead of the first only."""

    split: str = "dev"
    salmon_parts: Sequence[str] | None = None
    all_negatives: bool = False


@dataclass
class SuiteData:
    """What a reader found. `files`: every wav to score, in a stable order (for a ZeroSpeech split: every wav of the
    split, which the submission file lists); `pairs`: the comparisons (empty when there is no gold, e.g. the
    ZeroSpeech test split, which is scored for submission only); `notes`: facts worth printing in the report."""

    suite: str
    source: Path
    files: list[Path]
    pairs: list[Pair]
    split: str | None = None
    has_gold: bool = True
    complete: bool = True  # False once `limited` dropped items: a partial split is not a valid submission
    notes: list[str] = field(default_factory=list)

    @property
    def items(self) -> list[str]:
        """Distinct items, in pair order."""
        return list(dict.fromkeys(p.item for p in self.pairs))

    def limited(self, max_items: int | None) -> SuiteData:
        """The first `max_items` items (all their pairs) and only the files those pairs use."""
        if max_items is None or max_items >= len(self.items):
            return self
        if max_items < 1:
            raise TextlessError(f"max_items must be >= 1, got {max_items}")
        keep = set(self.items[:max_items])
        pairs = [p for p in self.pairs if p.item in keep]
        used = {f for p in pairs for f in (p.positive, p.negative)}
        return replace(self, pairs=pairs, files=[f for f in self.files if f in used], complete=False,
                       notes=[*self.notes, f"max_items={max_items}: first {max_items} of {len(self.items)} items"])


@dataclass
class Score:
    """An accuracy in [0, 1] (fraction of pairs won, ties 0.5) over `n` items; `std` is the sample standard
    deviation (ddof 1, as pandas' ``std``) of the item scores, None when n < 2. `accuracy` is None when n == 0."""

    accuracy: float | None
    n: int
    std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "std": self.std}


@dataclass
class SuiteResult:
    """Headline `metrics` (name -> Score) and `breakdowns` (kind -> group -> Score) of one suite."""

    suite: str
    split: str | None
    metrics: dict[str, Score]
    breakdowns: dict[str, dict[str, Score]] = field(default_factory=dict)
    pairs: int = 0
    items: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": self.suite, "split": self.split, "pairs": self.pairs, "items": self.items,
                "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
                "breakdowns": {k: {g: s.to_dict() for g, s in v.items()} for k, v in self.breakdowns.items()},
                "notes": list(self.notes)}


@dataclass(frozen=True)
class ItemScore:
    """One item's score (mean of its pairs' outcomes) and the `info` of its first pair."""

    item: str
    score: float
    info: Mapping[str, Any]


@dataclass(frozen=True)
class Suite:
    """A registry entry: `read(path, options)` -> SuiteData; `aggregate(data, outcomes [P])` -> SuiteResult;
    optional `write_submission(data, scores {file: score}, directory)` -> the file written (official format)."""

    name: str
    description: str
    read: Callable[[Path, ReadOptions], SuiteData]
    aggregate: Callable[[SuiteData, np.ndarray], SuiteResult]
    write_submission: Callable[[SuiteData, Mapping[Path, float], Path], Path] | None = None


# ------------------------------------------------------------------------------------------------------- scoring
def pair_outcomes(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """float64 [P] outcomes ``0.5 * (pos == neg) + (pos > neg)`` of scores [P] (higher = more probable)."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    return 0.5 * (positive == negative) + (positive > negative)


def item_scores(pairs: Sequence[Pair], outcomes: np.ndarray) -> list[ItemScore]:
    """Mean outcome per item, items in order of first appearance."""
    if len(pairs) != len(outcomes):
        raise ValueError(f"{len(pairs)} pairs but {len(outcomes)} outcomes")
    totals: dict[str, list[float]] = {}
    infos: dict[str, Mapping[str, Any]] = {}
    for pair, outcome in zip(pairs, outcomes):
        totals.setdefault(pair.item, []).append(float(outcome))
        infos.setdefault(pair.item, pair.info)
    return [ItemScore(item, float(np.mean(v)), infos[item]) for item, v in totals.items()]


def summarize(values: Iterable[float]) -> Score:
    """Mean, count and sample std (ddof 1) of item scores."""
    v = np.asarray(list(values), dtype=np.float64)
    if len(v) == 0:
        return Score(None, 0, None)
    return Score(float(v.mean()), len(v), float(v.std(ddof=1)) if len(v) > 1 else None)


def group_scores(items: Sequence[ItemScore], key: Callable[[ItemScore], Any],
                 order: Sequence[Any] | None = None) -> dict[str, Score]:
    """`summarize` per group; groups in `order` (kept even when empty) or sorted."""
    groups: dict[Any, list[float]] = {k: [] for k in order} if order is not None else {}
    for it in items:
        groups.setdefault(key(it), []).append(it.score)
    names = list(groups) if order is not None else sorted(groups, key=_sort_key)
    return {str(k): summarize(groups[k]) for k in names}


def weighted_mean(scores: Iterable[Score]) -> Score:
    """Count-weighted mean of group accuracies (groups with n == 0 skipped); std is not defined here (None)."""
    kept = [s for s in scores if s.n > 0 and s.accuracy is not None]
    n = sum(s.n for s in kept)
    if n == 0:
        return Score(None, 0, None)
    return Score(float(np.average([s.accuracy for s in kept], weights=[s.n for s in kept])), n, None)


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) and not math.isnan(value) else (1, 0, str(value))


# ------------------------------------------------------------------------------------------------------ file help
def list_wavs(directory: Path) -> list[Path]:
    """``*.wav`` directly in `directory`, sorted by name; a clear error when the directory is missing."""
    if not directory.is_dir():
        raise TextlessError(f"'{directory}': no such directory")
    return sorted(p for p in directory.iterdir() if p.suffix == ".wav" and p.is_file())


def show(names: Iterable[Any], limit: int = 5) -> str:
    """At most `limit` names, then how many more."""
    names = [str(n) for n in names]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
