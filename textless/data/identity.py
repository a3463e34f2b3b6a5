"""The units contract: one identity of a unit stream, and one rule for whether units fit what consumes them.

A `UnitIdentity` says what a stream of unit ids means:

    tokenizer     the identity dict of the tokenizer that made them ({"name": ..., "kmeans_sha256": ..., ...})
    vocab_size    ids lie in [0, vocab_size)  (units, or BPE tokens when `bpe`)
    frame_rate    Hz of the frames, before deduplication
    deduplicated  runs of equal frames collapsed (durations carried beside the ids)
    bpe           the ids are BPE tokens over deduplicated units

Producers create it (`SpeechTokenizer.unit_identity()`), artifacts carry it (unit datasets in ``meta.json``, unit LMs
and vocoders in their configs, pipelines through their parts), and every consumer checks what it is given with the
same rule, `check_fits(expected, given)`, which raises one `UnitMismatchError` naming both sides and every problem.

What a consumer may leave unknown (None): a checkpoint imported from another code base (TWIST, slamkit, fairseq)
records no tokenizer, and a vocoder voices frame-level or deduplicated units alike (it expands durations), so its
`deduplicated` is None. The rule, field by field:

    tokenizer     both known: same name, and every hash-like key both record ("sha256" / "hash" in the key) equal
    vocab_size    the consumer knows its tokenizer: equal; it does not: the given ids must fit (given <= expected)
    frame_rate    both known: equal (relative 1e-6)
    deduplicated  both known: equal
    bpe           both known: equal

Several channels. A two-channel dataset (one channel per speaker) carries ONE identity that every channel shares; a
model that reads one stream and writes another keeps one identity per stream and checks each with this rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from textless.errors import TextlessError


class UnitMismatchError(TextlessError):
    """Units were made by another tokenizer (or vocabulary / frame rate / dedup / BPE setting) than a consumer takes."""


def _hash_keys(identity: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in identity.items() if "sha256" in k or "hash" in k}


@dataclass(frozen=True)
class UnitIdentity:
    """What a stream of unit ids is (see the module docstring); None = unknown."""

    tokenizer: Mapping[str, Any] | None = None
    vocab_size: int | None = None
    frame_rate: float | None = None
    deduplicated: bool | None = None
    bpe: bool | None = None

    def __post_init__(self) -> None:
        if self.tokenizer is not None:
            object.__setattr__(self, "tokenizer", dict(self.tokenizer))
        if self.vocab_size is not None:
            object.__setattr__(self, "vocab_size", int(self.vocab_size))
        if self.frame_rate is not None:
            object.__setattr__(self, "frame_rate", float(self.frame_rate))

    @property
    def name(self) -> str | None:
        """The tokenizer's name, or None when unknown."""
        return None if self.tokenizer is None else self.tokenizer.get("name")

    def describe(self) -> str:
        """One phrase: "tokenizer 'hubert-l6-km100' (kmeans_sha256=ab12), 100 units, 50 Hz, deduplicated"."""
        parts = []
        if self.tokenizer is not None:
            hashes = ", ".join(f"{k}={v}" for k, v in sorted(_hash_keys(self.tokenizer).items()))
            parts.append(f"tokenizer {self.name!r}" + (f" ({hashes})" if hashes else ""))
        else:
            parts.append("unknown tokenizer")
        if self.vocab_size is not None:
            parts.append(f"{self.vocab_size} {'BPE tokens' if self.bpe else 'units'}")
        if self.frame_rate is not None:
            parts.append(f"{self.frame_rate:g} Hz")
        if self.deduplicated is not None:
            parts.append(_dedup_word(self.deduplicated))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"tokenizer": None if self.tokenizer is None else dict(self.tokenizer), "vocab_size": self.vocab_size,
                "frame_rate": self.frame_rate, "deduplicated": self.deduplicated, "bpe": self.bpe}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitIdentity:
        return cls(tokenizer=data.get("tokenizer"), vocab_size=data.get("vocab_size"),
                   frame_rate=data.get("frame_rate"), deduplicated=data.get("deduplicated"), bpe=data.get("bpe"))


def _dedup_word(flag: bool) -> str:
    return "deduplicated" if flag else "non-deduplicated"


def same_tokenizer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same name, and every hash-like key ("sha256" / "hash" in the key) present in both is equal."""
    if a.get("name") != b.get("name"):
        return False
    return all(a[k] == b[k] for k in _hash_keys(a).keys() & _hash_keys(b).keys())


def fit_problems(expected: UnitIdentity, given: UnitIdentity, consumer: str = "the consumer") -> list[str]:
    """Why units of identity `given` do not fit a consumer that takes `expected` (empty: they fit).

    `consumer` is a short name used inside the phrases ("the LM", "the vocoder").
    """
    problems = []
    if expected.tokenizer is not None and given.tokenizer is not None \
            and not same_tokenizer(expected.tokenizer, given.tokenizer):
        problems.append(f"{consumer} expects units of {_tokenizer_phrase(expected)} but the units come from "
                        f"{_tokenizer_phrase(given)}")
    if expected.vocab_size is not None and given.vocab_size is not None:
        if expected.tokenizer is None and given.vocab_size > expected.vocab_size:
            problems.append(f"{consumer} has {expected.vocab_size} units but the units have vocab_size "
                            f"{given.vocab_size} (their ids do not fit)")
        elif expected.tokenizer is not None and given.vocab_size != expected.vocab_size:
            problems.append(f"{consumer} has {expected.vocab_size} units but the units have vocab_size "
                            f"{given.vocab_size}")
    if expected.frame_rate is not None and given.frame_rate is not None \
            and not math.isclose(expected.frame_rate, given.frame_rate, rel_tol=1e-6):
        problems.append(f"{consumer} expects {expected.frame_rate:g} Hz units but the units are "
                        f"{given.frame_rate:g} Hz")
    if expected.deduplicated is not None and given.deduplicated is not None \
            and expected.deduplicated != given.deduplicated:
        problems.append(f"{consumer} expects {_dedup_word(expected.deduplicated)} units but the units are "
                        f"{_dedup_word(given.deduplicated)}")
    if expected.bpe is not None and given.bpe is not None and expected.bpe != given.bpe:
        want, have = ("BPE tokens", "plain units") if expected.bpe else ("plain units", "BPE tokens")
        problems.append(f"{consumer} expects {want} but the units are {have}")
    return problems


def _tokenizer_phrase(identity: UnitIdentity) -> str:
    hashes = ", ".join(f"{k}={v}" for k, v in sorted(_hash_keys(identity.tokenizer or {}).items()))
    return f"tokenizer {identity.name!r}" + (f" ({hashes})" if hashes else "")


def check_fits(expected: UnitIdentity, given: UnitIdentity, *, consumer: str, source: str,
               short: str = "the consumer") -> None:
    """Raise `UnitMismatchError` unless units of `given` (from `source`, e.g. "unit dataset 'units/dev'") fit
    `consumer` (e.g. "unit LM 'runs/lm/final'"), which takes `expected`; `short` names the consumer inside the
    problem phrases ("the LM"). The message names both sides and every problem."""
    problems = fit_problems(expected, given, short)
    if problems:
        raise UnitMismatchError(f"the units of {source} do not fit {consumer}: " + "; ".join(problems))
