"""Word and character error rates (resynthesis WER/CER, ASR-based metrics).

``error_rate(references, hypotheses)`` = (substitutions + deletions + insertions) / reference tokens, summed over the
corpus (not averaged per utterance), after `normalize_text`: lower-case, digits kept, every other non-letter except
an in-word apostrophe replaced by a space, whitespace collapsed. Words for WER, characters (spaces removed) for CER.

Written here rather than taken from `jiwer`: the whole computation is one Levenshtein table per utterance (below), and
owning the normalisation keeps WER numbers comparable across textless versions whatever jiwer's defaults become.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_NOT_WORD = re.compile(r"[^a-z0-9']+")
_EDGE_APOSTROPHE = re.compile(r"(^|\s)'+|'+(\s|$)")


def normalize_text(text: str) -> str:
    """Lower-case, keep letters, digits and in-word apostrophes, collapse whitespace."""
    text = _NOT_WORD.sub(" ", text.lower())
    return " ".join(_EDGE_APOSTROPHE.sub(" ", text).split())


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (unit costs) between two token sequences."""
    if not reference:
        return len(hypothesis)
    previous = np.arange(len(hypothesis) + 1)
    for i, ref in enumerate(reference, start=1):
        current = np.empty_like(previous)
        current[0] = i
        for j, hyp in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return int(previous[-1])


@dataclass
class ErrorRate:
    """Corpus error rate: ``errors / reference_tokens`` (inf when there are no reference tokens but errors)."""

    errors: int
    reference_tokens: int
    utterances: int

    @property
    def rate(self) -> float:
        if self.reference_tokens == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_tokens

    def to_dict(self) -> dict:
        return {"rate": self.rate, "errors": self.errors, "reference_tokens": self.reference_tokens,
                "utterances": self.utterances}


def error_rate(references: Sequence[str], hypotheses: Sequence[str], unit: str = "word") -> ErrorRate:
    """Corpus WER (``unit="word"``) or CER (``unit="char"``) of `hypotheses` against `references`."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    errors = tokens = 0
    for ref, hyp in zip(references, hypotheses):
        ref, hyp = normalize_text(ref), normalize_text(hyp)
        r, h = (ref.split(), hyp.split()) if unit == "word" else (list(ref.replace(" ", "")), list(hyp.replace(" ", "")))
        errors += edit_distance(r, h)
        tokens += len(r)
    return ErrorRate(errors, tokens, len(references))
