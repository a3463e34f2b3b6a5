"""The JSON file that names a textless directory's format and version (tokenizer bundles, vocoders, pipelines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from textless.errors import FormatError, TextlessError


def read_versioned_config(directory: str | Path, filename: str, format_name: str, version: int,
                          what: str) -> dict[str, Any]:
    """``directory / filename`` as a dict, checked to be `format_name` at a version this textless reads.

    `what` names the kind of directory in the errors ("a vocoder directory"...): `TextlessError` when the file is
    missing, `FormatError` (naming the file) for invalid JSON, another format or a newer version.
    """
    path = Path(directory) / filename
    if not path.is_file():
        raise TextlessError(f"'{directory}' is not {what} (no {filename})")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(path, f"invalid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != format_name:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise FormatError(path, f"not {what} (format {found!r}, expected {format_name!r})")
    found_version = config.get("version", 0)
    if not isinstance(found_version, int) or found_version > version:
        raise FormatError(path, f"written by a newer textless (version {found_version}); this textless reads "
                                f"version {version} - upgrade textless")
    return config
