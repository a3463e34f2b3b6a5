"""The non-word rule: phonotactically legal, same-class phone substitutions of a word's pronunciation.

Given a word's pronunciation (ARPAbet with stress), a non-word is made by replacing ``k`` phones, each by a different
phone of the same class (`textless.eval.builder.lexicon.PHONE_CLASSES`; a vowel keeps its stress digit), with

    k = 1  for words of at most `NonWordRule.single_max_length` phones (default 4), else 2 (two distinct positions);

and the candidate is kept only if

1. every phone trigram of ``# p1 ... pn #`` (stress ignored, ``#`` = word boundary) occurs at least
   `NonWordRule.min_trigram_count` times in the reference lexicon's pronunciations (`Phonotactics`; CMUdict by
   default, each distinct pronunciation counted once). The boundary-padded trigrams also cover word-initial and
   word-final bigrams, so position constraints (no word-initial NG, no word-final HH...) hold;
2. its word-initial consonant cluster is empty or a legal English onset (`lexicon.ONSETS`): CMUdict's many foreign
   names attest clusters such as ``# V R`` or ``# S R`` a dozen times, which the trigram test alone would allow;
3. it is not a pronunciation of any word of the lexicon (stress ignored): a real non-word, not a homophone;
4. it has the word's length and stress pattern (guaranteed by substitution).

Every candidate satisfying 1-4 is enumerated in a fixed order and one is drawn with the caller's seeded
`random.Random`, so the result is deterministic for a seed. A word without any candidate gets None (the builder then
skips it). The word and its non-word are then synthesized through the same phone-input path and voice
(`textless.eval.builder.tts`), so the engine's lexicon and letter-to-sound rules cannot give the answer away.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from textless.eval.builder.lexicon import (
    ONSETS,
    PHONE_CLASSES,
    Pron,
    Pronouncer,
    check_pronunciation,
    initial_onset,
    phone_class,
    stress,
    strip_stress,
)

BOUNDARY = "#"


@dataclass(frozen=True)
class NonWordRule:
    """Parameters of the rule (see the module docstring)."""

    min_trigram_count: int = 10
    single_max_length: int = 4

    def substitutions(self, length: int) -> int:
        return 1 if length <= self.single_max_length else 2


class Phonotactics:
    """Counts of boundary-padded, stress-less phone trigrams over a set of pronunciations."""

    def __init__(self, pronunciations):
        self.counts: Counter[tuple[str, str, str]] = Counter()
        for pron in {tuple(strip_stress(p) for p in pron) for pron in pronunciations}:
            self.counts.update(trigrams(pron))

    @classmethod
    def from_pronouncer(cls, pronouncer: Pronouncer) -> Phonotactics:
        return cls(pron for prons in pronouncer.entries.values() for pron in prons)

    def unattested(self, pron: Sequence[str], min_count: int = 1) -> list[tuple[str, str, str]]:
        """The trigrams of `pron` seen fewer than `min_count` times (empty: phonotactically legal)."""
        return [t for t in trigrams([strip_stress(p) for p in pron]) if self.counts[t] < min_count]


def trigrams(pron: Sequence[str]) -> list[tuple[str, str, str]]:
    padded = [BOUNDARY, *pron, BOUNDARY]
    return [tuple(padded[i:i + 3]) for i in range(len(padded) - 2)]  # type: ignore[misc]


def _alternatives(phone: str) -> list[str]:
    """Same-class replacements of `phone`, vowels with its stress digit."""
    base, digit = strip_stress(phone), stress(phone)
    return [alt + digit for alt in PHONE_CLASSES[phone_class(phone)] if alt != base]


def candidates(pron: Sequence[str], rule: NonWordRule, phonotactics: Phonotactics, pronouncer: Pronouncer,
               exclude: Collection[Sequence[str]] = ()) -> list[Pron]:
    """Every non-word of `pron` allowed by the rule, in a fixed (sorted) order; `exclude`: stress-less
    pronunciations not to return (e.g. the non-words already used in a set)."""
    pron = check_pronunciation(pron)
    k = rule.substitutions(len(pron))
    found: set[Pron] = set()
    for positions in itertools.combinations(range(len(pron)), k):
        for replacements in itertools.product(*(_alternatives(pron[i]) for i in positions)):
            phones = list(pron)
            for i, phone in zip(positions, replacements):
                phones[i] = phone
            result = tuple(phones)
            onset = initial_onset(result)
            if onset and onset not in ONSETS:
                continue
            if phonotactics.unattested(result, rule.min_trigram_count) or pronouncer.is_word(result):
                continue
            if tuple(strip_stress(p) for p in result) in exclude:
                continue
            found.add(result)
    return sorted(found)


def make_nonword(pron: Sequence[str], rule: NonWordRule, phonotactics: Phonotactics, pronouncer: Pronouncer,
                 rng: random.Random, exclude: Collection[Sequence[str]] = ()) -> Pron | None:
    """One non-word of `pron` drawn with `rng` among `candidates` (None if there is none)."""
    options = candidates(pron, rule, phonotactics, pronouncer, exclude)
    return rng.choice(options) if options else None


def differences(a: Sequence[str], b: Sequence[str]) -> list[int]:
    """Positions where two equal-length pronunciations differ."""
    if len(a) != len(b):
        raise ValueError(f"lengths differ: {' '.join(a)} vs {' '.join(b)}")
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
