"""Word and character error rates (resynthesis WER/CER, ASR-based metrics) and the text normalisers they use.

``error_rate(references, hypotheses)`` = (substitutions + deletions + insertions) / reference tokens, summed over the
corpus (not averaged per utterance), after normalising both sides. Words for WER, characters (spaces removed) for CER.

Normalisers (`NORMALIZERS`; reports name the one used):

* ``whisper``: the English normaliser of Whisper's evaluation, the standard for ASR-based WER: transformers'
  `EnglishTextNormalizer` (spelled-out numbers become digits, "twenty five" = "25"; British spellings become
  American; fillers, bracketed text and most punctuation removed; lower case) with Whisper's spelling table
  (``textless/assets/whisper/english_spelling.json``, MIT, from openai/whisper ``whisper/normalizers/english.json``:
  transformers does not ship it, it reads it from a model repository on the hub).
* ``whisper-digits`` (the default for WER / CER): ``whisper``, then every number split into its digits (and the
  normaliser's "one" for a lone 1 turned back into "1"). Why: the standard normaliser merges a spoken digit sequence
  into one number ("one two three four" -> "1234") but keeps written separate digits apart ("1-2-3-4" -> "one 2 3
  4"), so a correct reading of a digit string scores 100 % WER against an ASR that writes digits. Split into digits
  on both sides, the grouping no longer matters; a wrong digit counts as one error. Tokens without a letter or digit
  (a "." the normaliser keeps from "...") are dropped.
* ``basic``: textless' earlier normaliser: lower-case, keep letters, digits and in-word apostrophes, collapse
  whitespace. The text side of the generative metrics (auto-BLEU, GenPPL word splitting) keeps using it, so those
  numbers stay comparable with earlier reports.

The edit distance is written here rather than taken from `jiwer`: it is one Levenshtein table per utterance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from textless.utils.assets import ASSETS_DIR
from textless.utils.registry import Registry

SPELLING_FILE = ASSETS_DIR / "whisper" / "english_spelling.json"
DEFAULT_NORMALIZER = "whisper-digits"

_NOT_WORD = re.compile(r"[^a-z0-9']+")
_EDGE_APOSTROPHE = re.compile(r"(^|\s)'+|'+(\s|$)")


def normalize_text(text: str) -> str:
    """The ``basic`` normaliser: lower-case, keep letters, digits and in-word apostrophes, collapse whitespace."""
    text = _NOT_WORD.sub(" ", text.lower())
    return " ".join(_EDGE_APOSTROPHE.sub(" ", text).split())


@cache
def _whisper_english() -> Callable[[str], str]:
    # imported here: transformers takes seconds to import, and the ``basic`` normaliser does not need it
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(json.loads(SPELLING_FILE.read_text(encoding="utf-8")))


def whisper_normalize(text: str) -> str:
    """The ``whisper`` normaliser (see the module docstring), whitespace collapsed."""
    return " ".join(_whisper_english()(text).split())


_ONE = re.compile(r"\bone\b")
_DIGIT = re.compile(r"(?<=\d)(?=\d)")


def whisper_digits_normalize(text: str) -> str:
    """The ``whisper-digits`` normaliser: ``whisper``, then "one" -> "1", numbers split into their digits, and
    tokens without a letter or digit (a stray "." the normaliser keeps from "...") dropped."""
    words = _DIGIT.sub(" ", _ONE.sub("1", whisper_normalize(text))).split()
    return " ".join(w for w in words if any(c.isalnum() for c in w))


NORMALIZERS: Registry[Callable[[str], str]] = Registry("text normalizer")
NORMALIZERS.register("whisper-digits", whisper_digits_normalize)
NORMALIZERS.register("whisper", whisper_normalize)
NORMALIZERS.register("basic", normalize_text)


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
    normalizer: str = DEFAULT_NORMALIZER

    @property
    def rate(self) -> float:
        if self.reference_tokens == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_tokens

    def to_dict(self) -> dict:
        return {"rate": self.rate, "errors": self.errors, "reference_tokens": self.reference_tokens,
                "utterances": self.utterances, "normalizer": self.normalizer}


def tokens(text: str, unit: str = "word", normalizer: str = DEFAULT_NORMALIZER) -> list[str]:
    """The words (or characters, spaces removed) of normalised `text`."""
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    text = NORMALIZERS.get(normalizer)(text)
    return text.split() if unit == "word" else list(text.replace(" ", ""))


def error_rate(references: Sequence[str], hypotheses: Sequence[str], unit: str = "word",
               normalizer: str = DEFAULT_NORMALIZER) -> ErrorRate:
    """Corpus WER (``unit="word"``) or CER (``unit="char"``) of `hypotheses` against `references`."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = count = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = tokens(ref, unit, normalizer), tokens(hyp, unit, normalizer)
        errors += edit_distance(r, h)
        count += len(r)
    return ErrorRate(errors, count, len(references), normalizer)
