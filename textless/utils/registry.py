"""One registry helper for every "name -> implementation" table of textless (encoders, loaders, formats, suites...).

    ENCODERS = Registry("encoder")

    @ENCODERS.register("mfcc")
    def load_mfcc(...): ...

    ENCODERS.get("mfcc")        # -> load_mfcc
    ENCODERS.get("mfc")         # ConfigError: unknown encoder 'mfc' (known: mfcc); did you mean 'mfcc'?

Names keep their registration order (listings and auto-detection try entries in that order). Registering a name twice
is an error unless ``replace=True`` (a plugin overriding a built-in must say so).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from textless.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """"; did you mean 'x'?" for the closest of `known` to `name`, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """An ordered ``name -> T`` table whose unknown-name errors list the known names and suggest the closest."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str, entry: T, *, replace: bool = False) -> T: ...

    @overload
    def register(self, name: str, entry: None = None, *, replace: bool = False) -> Callable[[T], T]: ...

    def register(self, name, entry=None, *, replace=False):
        """Add `entry` under `name` and return it; without `entry`, a decorator that does so."""
        def add(value: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered (pass replace=True to override it)")
            self._entries[name] = value
            return value

        return add if entry is None else add(entry)

    def get(self, name: str, default: Any = _MISSING) -> T:
        """The entry registered as `name`; `default` when given and there is none, else `ConfigError` naming the
        known ones (and the closest)."""
        try:
            return self._entries[name]
        except KeyError:
            if default is not _MISSING:
                return default
            known = list(self._entries)
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {', '.join(known) or 'none'})"
                              f"{did_you_mean(str(name), known)}") from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __setitem__(self, name: str, entry: T) -> None:
        """Register or replace (``monkeypatch.setitem`` in tests)."""
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
