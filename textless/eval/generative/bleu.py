"""Repetition and diversity of generated speech: auto-BLEU (two variants), self-BLEU and VERT.

Every function takes an *item*: a text (an ASR transcript, split into words by a registered word tokenizer, see
`textless.eval.generative.word_tokenize`) or a sequence of unit ids (used as is). Scores are fractions in [0, 1];
fairseq prints them x100.

auto-BLEU, fairseq (`auto_bleu_fairseq`; GSLM, ``examples/textless_nlp/gslm/metrics/asr_metrics/self_auto_bleu.py``)
    For each order k (weights ``(0.5, 0.5)`` = unigrams and bigrams, "auto-BLEU2"), ``b_k`` = the fraction of the
    k-grams at positions p that also occur among the k-grams lying entirely LEFT of p (ending before p) or entirely
    RIGHT of the k-gram (starting at p + k or later): a repeat may not overlap the k-gram itself. Then
    ``sum w_k b_k`` ("arithmetic") or ``prod b_k ** w_k`` ("geometric"). An item of <= 1 token scores 0 (as fairseq).
    Divergence: an order with no k-gram at all (item shorter than k, only with 3-gram weights) counts 0 here where
    fairseq divides by zero (nan).
auto-BLEU, slamkit (`auto_bleu_slamkit`; ``slamkit/utils/calculation_utils.py: calc_auto_bleu``, n = 2)
    Overlapping n-grams over the word tokens (slamkit: NLTK's word tokenizer on the raw, not lower-cased transcript);
    the score is the fraction of n-grams that occur at ANY other position (overlap allowed), 0 without n-grams.
    "a a a b": fairseq-arithmetic = 0.5 * 3/4 + 0.5 * 0/3 = 0.375 (the two "a a" overlap), slamkit = 2/3.
self-BLEU, fairseq (`self_bleu_fairseq`; ``get_self_bleu`` + ``misc/bleu_utils.py``)
    Each item is a hypothesis against ALL other items as references: NLTK's clipped modified precision ``p_k``
    (each hypothesis k-gram counts at most as often as it occurs in the single reference holding it most often;
    denominator max(1, number of hypothesis k-grams)), no brevity penalty, combined with the same weights
    arithmetically or geometrically; 0 when no unigram matches (and for a corpus of one item, where NLTK would
    fail on the empty reference list). Written here rather than with NLTK: nltk is not a
    textless dependency (not installed), and NLTK's sentence_bleu recounts every reference for every hypothesis
    (O(N^2) per corpus) where `self_bleu_fairseq` keeps, per k-gram, its two highest per-item counts (O(total
    tokens)). Divergence: NLTK's method0 replaces a zero precision by ``sys.float_info.min`` (so the geometric
    score is ~1e-154 instead of 0, and the arithmetic one carries ~1e-308 extra): 0 here.
VERT (`vert`; GSLM paper, Lakhotia et al. 2021, "VERT": no code exists in fairseq)
    ``VERT = sqrt(self-BLEU2 * auto-BLEU2)``, the geometric mean of the corpus self-BLEU2 and the corpus mean
    auto-BLEU2 (fairseq variant), in the same averaging mode. The paper then reads VERT at several temperatures and
    reports the oracle-VERT temperature / AUC against perplexity; that sweep is left to the caller (one generations
    directory per temperature). Note: the textless-LM survey (section 7.2) describes VERT as "a linear combination
    of the text PPL and auto-BLEU", which does not match the GSLM paper; the GSLM definition is the one implemented.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from textless.eval.generative.word_tokenize import word_tokenizer

Item = str | Sequence[int]
FAIRSEQ_WEIGHTS = (0.5, 0.5)  # auto-BLEU2 / self-BLEU2: unigrams and bigrams, equal weights
MEAN_MODES = ("arithmetic", "geometric")


def tokens_of(item: Item, tokenizer: str = "whitespace") -> list[Hashable]:
    """The tokens of an item: a text's words (registered tokenizer `tokenizer`), or a unit sequence's ids."""
    if isinstance(item, str):
        return word_tokenizer(tokenizer)(item)
    return [int(u) for u in np.asarray(item).reshape(-1)]


def ngrams(tokens: Sequence[Hashable], k: int) -> list[tuple]:
    """The overlapping k-grams of `tokens`, left to right."""
    return [tuple(tokens[i: i + k]) for i in range(len(tokens) - k + 1)]


def combine(precisions: Sequence[float], weights: Sequence[float], mean_mode: str) -> float:
    """``sum w p`` (arithmetic) or ``prod p ** w`` (geometric) of per-order scores."""
    if mean_mode == "arithmetic":
        return float(sum(w * p for w, p in zip(weights, precisions)))
    if mean_mode == "geometric":
        return float(math.prod(p ** w for w, p in zip(weights, precisions)))
    raise ValueError(f"unknown mean mode {mean_mode!r} (known: {', '.join(MEAN_MODES)})")


def repeated_fraction_fairseq(tokens: Sequence[Hashable], k: int) -> float:
    """fairseq's per-order ``b_k``: fraction of k-grams repeated strictly left or right of themselves (no overlap)."""
    grams = ngrams(tokens, k)
    if not grams:
        return 0.0
    first: dict[tuple, int] = {}
    last: dict[tuple, int] = {}
    for p, g in enumerate(grams):
        first.setdefault(g, p)
        last[g] = p
    # a copy at q is non-overlapping iff q <= p - k (all left of p) or q >= p + k (all right of the k-gram)
    hits = sum(first[g] <= p - k or last[g] >= p + k for p, g in enumerate(grams))
    return hits / len(grams)


def auto_bleu_fairseq(item: Item, weights: Sequence[float] = FAIRSEQ_WEIGHTS, mean_mode: str = "arithmetic",
                      tokenizer: str = "whitespace") -> float:
    """fairseq's auto-BLEU of one item (see the module docstring); 0 for <= 1 token."""
    tokens = tokens_of(item, tokenizer)
    if len(tokens) <= 1:
        return 0.0
    return combine([repeated_fraction_fairseq(tokens, k) for k in range(1, len(weights) + 1)], weights, mean_mode)


def auto_bleu_slamkit(item: Item, n: int = 2, tokenizer: str = "treebank") -> float:
    """slamkit's auto-BLEU of one item: fraction of its overlapping n-grams found at another position."""
    grams = [" ".join(map(str, g)) for g in ngrams(tokens_of(item, tokenizer), n)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(counts[g] > 1 for g in grams) / len(grams)


@dataclass
class _Best:
    """The two highest per-item counts of one k-gram, and which item holds the highest."""

    top: int = 0
    owner: int = -1
    second: int = 0

    def add(self, item: int, count: int) -> None:
        if count > self.top:
            self.top, self.owner, self.second = count, item, self.top
        elif count > self.second:
            self.second = count

    def max_other(self, item: int) -> int:
        return self.second if self.owner == item else self.top


def self_bleu_fairseq(items: Sequence[Item], weights: Sequence[float] = FAIRSEQ_WEIGHTS,
                      mean_mode: str = "arithmetic", tokenizer: str = "whitespace") -> list[float]:
    """fairseq's self-BLEU of each item against all the others (see the module docstring); mean it for the corpus."""
    tokens = [tokens_of(item, tokenizer) for item in items]
    orders = range(1, len(weights) + 1)
    counts = [{k: Counter(ngrams(t, k)) for k in orders} for t in tokens]
    best: dict[tuple, _Best] = {}
    for i, per_order in enumerate(counts):
        for counter in per_order.values():
            for gram, c in counter.items():
                best.setdefault(gram, _Best()).add(i, c)
    scores = []
    for i, per_order in enumerate(counts):
        matches = {k: sum(min(c, best[g].max_other(i)) for g, c in per_order[k].items()) for k in orders}
        if matches[1] == 0:
            scores.append(0.0)
            continue
        precisions = [matches[k] / max(1, sum(per_order[k].values())) for k in orders]
        scores.append(combine(precisions, weights, mean_mode))
    return scores


def vert(self_bleu: float, auto_bleu: float) -> float:
    """GSLM's VERT: ``sqrt(self_bleu * auto_bleu)`` (corpus self-BLEU2 and mean auto-BLEU2, fractions)."""
    if self_bleu < 0 or auto_bleu < 0:
        raise ValueError(f"VERT needs non-negative scores, got self-BLEU {self_bleu} and auto-BLEU {auto_bleu}")
    return math.sqrt(self_bleu * auto_bleu)


@dataclass
class MeanSem:
    """Mean over items and its standard error (``std / sqrt(n)``, numpy's ddof=0 as fairseq prints it)."""

    mean: float
    sem: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanSem:
        if len(values) == 0:
            return cls(float("nan"), float("nan"), 0)
        v = np.asarray(values, np.float64)
        return cls(float(v.mean()), float(v.std() / np.sqrt(len(v))), len(v))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RepetitionMetrics:
    """All repetition / diversity scores of one corpus of items (transcripts or unit sequences)."""

    auto_bleu_fairseq_arithmetic: MeanSem
    auto_bleu_fairseq_geometric: MeanSem
    auto_bleu_slamkit: MeanSem
    self_bleu_fairseq_arithmetic: MeanSem
    self_bleu_fairseq_geometric: MeanSem
    vert_arithmetic: float
    vert_geometric: float
    per_item: dict[str, list[float]]

    def to_dict(self) -> dict:
        out: dict = {k: v.to_dict() if isinstance(v, MeanSem) else v for k, v in vars(self).items()
                     if k != "per_item"}
        return out


def repetition_metrics(items: Sequence[Item], fairseq_tokenizer: str = "whitespace",
                       slamkit_tokenizer: str = "treebank") -> RepetitionMetrics:
    """auto-BLEU2 (fairseq, both means), auto-BLEU (slamkit, bigrams), self-BLEU2 (both means) and VERT of `items`.

    The tokenizers apply to texts only (unit sequences are their own tokens).
    """
    per_item = {
        "auto_bleu_fairseq_arithmetic": [auto_bleu_fairseq(x, mean_mode="arithmetic", tokenizer=fairseq_tokenizer)
                                         for x in items],
        "auto_bleu_fairseq_geometric": [auto_bleu_fairseq(x, mean_mode="geometric", tokenizer=fairseq_tokenizer)
                                        for x in items],
        "auto_bleu_slamkit": [auto_bleu_slamkit(x, tokenizer=slamkit_tokenizer) for x in items],
        "self_bleu_fairseq_arithmetic": self_bleu_fairseq(items, mean_mode="arithmetic", tokenizer=fairseq_tokenizer),
        "self_bleu_fairseq_geometric": self_bleu_fairseq(items, mean_mode="geometric", tokenizer=fairseq_tokenizer),
    }
    stats = {k: MeanSem.of(v) for k, v in per_item.items()}
    verts = {mode: vert(stats[f"self_bleu_fairseq_{mode}"].mean, stats[f"auto_bleu_fairseq_{mode}"].mean)
             if items else float("nan") for mode in MEAN_MODES}
    return RepetitionMetrics(**stats, vert_arithmetic=verts["arithmetic"], vert_geometric=verts["geometric"],
                             per_item=per_item)
