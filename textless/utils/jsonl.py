"""JSON-lines manifests: their records with line numbers, and typed required keys, each problem a `FormatError` naming
the file and the line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from textless.errors import FormatError


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of every non-blank line of `path`; each line must be a JSON object."""
    out = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise FormatError(path, f"invalid JSON ({err.msg})", line) from None
        if not isinstance(record, dict):
            raise FormatError(path, f"expected a JSON object, got {type(record).__name__}", line)
        out.append((line, record))
    return out


def check_types(path: Path, line: int, record: Mapping[str, Any], types: Mapping[str, tuple[type, ...]]) -> None:
    """Every key of `types` is in `record` with a value of one of its types (a bool is never an int or a float)."""
    for key, allowed in types.items():
        if key not in record:
            raise FormatError(path, f"missing key '{key}'", line)
        if not isinstance(record[key], allowed) or (isinstance(record[key], bool) and bool not in allowed):
            raise FormatError(path, f"'{key}' has the wrong type ({type(record[key]).__name__})", line)
