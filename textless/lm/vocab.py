"""The token vocabulary of a unit LM: unit ids placed after (or around) a few named special tokens.

Layout. Unit ``u`` in ``[0, num_units)`` is token ``u + offset``; the unit block is ``[offset, offset + num_units)``.
Named special tokens (``specials``, e.g. ``{"pad": 0, "bos": 1, "eos": 2}``) live anywhere outside that block, and
two names may share an id (slamkit uses bos = eos = 1). ``size`` is the number of embedding rows: every id is
``< size``; ids below ``size`` that are neither units nor specials are unused (never sampled, never produced).

Default size. When ``size`` is not given it is ``max id + 1`` rounded UP to a multiple of 8 (``SIZE_MULTIPLE``;
tensor-core friendly), e.g. ``UnitVocab.default(100)``: pad 0, bos 1, eos 2, units 3..102, size 104 (103 unused).
Pass ``size`` explicitly to reproduce an existing checkpoint (slamkit k=500: ``size=502``, no rounding).

Layouts:
    default(k)      pad 0, bos 1, eos 2, extra specials 3.., offset 3 + len(extras)     (textless)
    slamkit(k)      pad 0, bos = eos 1, offset 2, size k + 2                            (slamkit)
    fairseq(k)      bos 0 ("<s>"), pad 1, eos 2 ("</s>"), unk 3, offset 4                 (fairseq dictionaries)

Arrays. ``units_to_tokens`` / ``tokens_to_units`` keep the container (numpy array or torch tensor, any shape) and
return int64; ``encode`` returns a numpy int64 ``[L + bos + eos]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from textless.errors import TextlessError

SIZE_MULTIPLE = 8
REQUIRED_SPECIALS = ("pad", "bos", "eos")
_DICT_KEYS = ("num_units", "offset", "specials", "size")

Array = TypeVar("Array", np.ndarray, torch.Tensor)


class VocabError(TextlessError, ValueError):
    """A vocabulary layout is inconsistent, or tokens/units fall outside it."""


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class UnitVocab:
    """Unit <-> token id mapping plus named special tokens (see the module docstring for the layout rules).

    `specials` is copied into a plain dict ordered by id (treat it as read-only); the dataclass is frozen, hashable
    and picklable.
    """

    num_units: int
    offset: int
    specials: Mapping[str, int] = field(default_factory=dict)
    size: int | None = None  # None -> max id + 1 rounded up to a multiple of SIZE_MULTIPLE

    def __post_init__(self) -> None:
        if not _is_int(self.num_units) or self.num_units < 1:
            raise VocabError(f"num_units must be a positive integer, got {self.num_units!r}")
        if not _is_int(self.offset) or self.offset < 0:
            raise VocabError(f"offset must be a non-negative integer, got {self.offset!r}")
        specials = _checked_specials(self.specials, int(self.offset), int(self.num_units))
        object.__setattr__(self, "num_units", int(self.num_units))
        object.__setattr__(self, "offset", int(self.offset))
        object.__setattr__(self, "specials", specials)
        needed = max([self.offset + self.num_units, *(i + 1 for i in specials.values())])
        if self.size is None:
            object.__setattr__(self, "size", _round_up(needed, SIZE_MULTIPLE))
        elif not _is_int(self.size) or self.size < needed:
            raise VocabError(f"size {self.size!r} is too small: ids go up to {needed - 1} (need size >= {needed})")
        else:
            object.__setattr__(self, "size", int(self.size))

    def __hash__(self) -> int:
        return hash((self.num_units, self.offset, tuple(self.specials.items()), self.size))

    # ------------------------------------------------------------------------------------------------ layouts
    @classmethod
    def default(cls, num_units: int, extra_specials: Sequence[str] = ()) -> UnitVocab:
        """pad 0, bos 1, eos 2, `extra_specials` 3.. (in order), units after them; size rounded up to 8."""
        names = [*REQUIRED_SPECIALS, *extra_specials]
        if len(set(names)) != len(names):
            raise VocabError(f"duplicate special token names in {names}")
        return cls(num_units=num_units, offset=len(names), specials={n: i for i, n in enumerate(names)})

    @classmethod
    def slamkit(cls, num_units: int) -> UnitVocab:
        """slamkit's layout: pad 0, bos = eos = 1, unit u = token u + 2, size num_units + 2 (no rounding)."""
        return cls(num_units=num_units, offset=2, specials={"pad": 0, "bos": 1, "eos": 1}, size=num_units + 2)

    @classmethod
    def fairseq(cls, num_units: int, size: int | None = None) -> UnitVocab:
        """fairseq dictionary order: <s>=0 (bos), <pad>=1, </s>=2 (eos), <unk>=3, unit u = token u + 4."""
        return cls(num_units=num_units, offset=4, specials={"bos": 0, "pad": 1, "eos": 2, "unk": 3}, size=size)

    # ------------------------------------------------------------------------------------------------ ids
    @property
    def pad_id(self) -> int:
        return self._special("pad")

    @property
    def bos_id(self) -> int:
        return self._special("bos")

    @property
    def eos_id(self) -> int:
        return self._special("eos")

    def _special(self, name: str) -> int:
        try:
            return self.specials[name]
        except KeyError:
            raise VocabError(f"this vocabulary has no {name!r} token (specials: {dict(self.specials)})") from None

    @property
    def unit_range(self) -> tuple[int, int]:
        """Token ids of the units: ``[start, stop)`` = ``[offset, offset + num_units)``."""
        return self.offset, self.offset + self.num_units

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self.specials.values())

    def is_unit(self, tokens: Array) -> Array:
        """Boolean mask, same container and shape: True where a token id is a unit."""
        return (tokens >= self.offset) & (tokens < self.offset + self.num_units)

    # ------------------------------------------------------------------------------------------------ conversion
    def units_to_tokens(self, units: Array, *, check: bool = True) -> Array:
        """Units (any shape, numpy or torch; lists become numpy) -> int64 token ids, same container.

        `check` raises `VocabError` on a unit outside ``[0, num_units)`` (on GPU tensors this synchronises).
        """
        if isinstance(units, torch.Tensor):
            tokens = units.long()
        else:
            tokens = np.asarray(units)
            if tokens.size and tokens.dtype.kind not in "iu":
                raise VocabError(f"units must be integers, got dtype {tokens.dtype}")
            tokens = tokens.astype(np.int64)
        if check and _numel(tokens):
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.num_units:
                bad = lo if lo < 0 else hi
                raise VocabError(f"unit {bad} is outside this vocabulary's [0, {self.num_units})")
        return tokens + self.offset

    def tokens_to_units(self, tokens: Array, *, strict: bool = False) -> Array:
        """Token ids -> units (int64, same container). Non-unit tokens (specials, unused ids) are dropped.

        Dropping needs a 1-D input; `strict=True` keeps any shape and raises `VocabError` on a non-unit token.
        """
        is_torch = isinstance(tokens, torch.Tensor)
        tokens = tokens.long() if is_torch else np.asarray(tokens).astype(np.int64)
        mask = self.is_unit(tokens)
        if not bool(mask.all()):
            if strict:
                bad = int(tokens[~mask].reshape(-1)[0])
                raise VocabError(f"token {bad} is not a unit (units are tokens {self.unit_range[0]}.."
                                 f"{self.unit_range[1] - 1})")
            if tokens.ndim != 1:
                raise VocabError(f"dropping non-unit tokens needs a 1-D sequence, got shape {tuple(tokens.shape)}")
            tokens = tokens[mask]
        return tokens - self.offset

    def encode(self, units: Any, *, bos: bool = True, eos: bool = False) -> np.ndarray:
        """Units `[L]` -> numpy int64 token ids ``[bos?] + (units + offset) + [eos?]``."""
        body = self.units_to_tokens(np.asarray(units).reshape(-1))
        parts = [[self.bos_id]] if bos else []
        parts.append(body)
        if eos:
            parts.append([self.eos_id])
        return np.concatenate(parts).astype(np.int64, copy=False)

    def decode(self, tokens: Any) -> np.ndarray:
        """Token ids `[T]` -> units `[L]`: stops at the first eos (when not at position 0), drops other specials."""
        arr = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if "eos" in self.specials:
            hits = np.flatnonzero(arr == self.eos_id)
            hits = hits[hits > 0] if self.specials.get("bos") == self.eos_id else hits
            if hits.size:
                arr = arr[: hits[0]]
        return self.tokens_to_units(arr)

    # ------------------------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        return {"num_units": self.num_units, "offset": self.offset, "specials": dict(self.specials),
                "size": self.size}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UnitVocab:
        """Inverse of `to_dict`; raises `VocabError` on missing keys or an inconsistent layout."""
        if not isinstance(data, Mapping):
            raise VocabError(f"a vocabulary must be a JSON object, got {type(data).__name__}")
        missing = [k for k in _DICT_KEYS if k not in data]
        if missing:
            raise VocabError(f"vocabulary is missing key(s) {missing}")
        if not isinstance(data["specials"], Mapping):
            raise VocabError(f"vocabulary 'specials' must be an object, got {type(data['specials']).__name__}")
        return cls(num_units=data["num_units"], offset=data["offset"], specials=dict(data["specials"]),
                   size=data["size"])


def _numel(x: np.ndarray | torch.Tensor) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else x.size


def _checked_specials(specials: Mapping[str, int], offset: int, num_units: int) -> dict[str, int]:
    """Validate the named specials; return them as a dict ordered by id (then name)."""
    if not isinstance(specials, Mapping):
        raise VocabError(f"specials must be a mapping name -> id, got {type(specials).__name__}")
    out: dict[str, int] = {}
    for name, idx in specials.items():
        if not isinstance(name, str) or not name:
            raise VocabError(f"special token names must be non-empty strings, got {name!r}")
        if not _is_int(idx) or idx < 0:
            raise VocabError(f"special token {name!r} must have a non-negative integer id, got {idx!r}")
        if offset <= idx < offset + num_units:
            raise VocabError(f"special token {name!r} (id {idx}) collides with unit {idx - offset} "
                             f"(units are tokens {offset}..{offset + num_units - 1})")
        out[name] = int(idx)
    return dict(sorted(out.items(), key=lambda kv: (kv[1], kv[0])))
