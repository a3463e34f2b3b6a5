"""The versioned header every textless artifact carries, read and written in one place.

Every file or directory textless writes for another stage to read names its format and version::

    {"format": "textless.units", "version": 1, ...the artifact's own keys...}

An `Artifact` knows its format name, the version this textless writes (the newest it reads) and a phrase for messages
("a unit dataset"). Readers refuse another format and newer versions with a `FormatError` naming the file; older
versions are read (each artifact's own module upgrades their content). Names are ``textless.<what>`` throughout;
files written under an older name (``legacy_names``, e.g. ``textless-kmeans``) or with the older version key
``format_version`` still read. All artifacts are listed in `ARTIFACTS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textless.errors import FormatError, TextlessError
from textless.utils.atomic import atomic_write_text
from textless.utils.registry import Registry


@dataclass(frozen=True)
class Artifact:
    name: str                            # "textless.units"
    version: int                         # written by this textless; the newest it reads
    what: str                            # "a unit dataset", for messages
    legacy_names: tuple[str, ...] = ()   # names older textless versions wrote

    def header(self) -> dict[str, Any]:
        """``{"format": name, "version": version}``: put it first in the artifact's JSON."""
        return {"format": self.name, "version": self.version}

    def check(self, data: Any, path: str | Path) -> int:
        """The version of `data` (a parsed header dict); `FormatError` naming `path` for another format, a missing
        or invalid version, or a version newer than this textless reads."""
        if not isinstance(data, dict):
            raise FormatError(path, f"not {self.what} (expected a JSON object, got {type(data).__name__})")
        found = data.get("format")
        if found is None:
            raise FormatError(path, f"not {self.what} (missing key 'format')")
        if found != self.name and found not in self.legacy_names:
            raise FormatError(path, f"not {self.what} (format is {found!r}, expected {self.name!r})")
        version = data.get("version", data.get("format_version"))
        if version is None:
            raise FormatError(path, f"{self.what}: missing key 'version'")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise FormatError(path, f"{self.what}: 'version' must be a positive integer, got {version!r}")
        if version > self.version:
            raise FormatError(path, f"written by a newer textless (version {version}); this textless reads "
                                    f"{self.what} up to version {self.version} - upgrade textless")
        return version

    def read_json(self, path: str | Path, *, missing: str | None = None) -> dict[str, Any]:
        """The JSON object in `path`, header checked. A missing file is a `TextlessError` (`missing` overrides its
        message); unreadable JSON a `FormatError`."""
        path = Path(path)
        if not path.is_file():
            raise TextlessError(missing or f"'{path}' is not {self.what} (no such file)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise FormatError(path, f"not UTF-8 text ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise FormatError(path, f"invalid JSON ({e.msg} at line {e.lineno})") from None
        self.check(data, path)
        return data

    def read_dir(self, directory: str | Path, filename: str) -> dict[str, Any]:
        """``directory / filename`` of an artifact directory (a missing file: "'dir' is not <what> (no filename)")."""
        return self.read_json(Path(directory) / filename,
                              missing=f"'{directory}' is not {self.what} (no {filename})")

    def dumps(self, content: dict[str, Any]) -> str:
        """`content` with the header first, as indented JSON text."""
        body = {k: v for k, v in content.items() if k not in ("format", "version", "format_version")}
        return json.dumps({**self.header(), **body}, indent=2) + "\n"

    def write_json(self, path: str | Path, content: dict[str, Any]) -> Path:
        """Write `content` with the header first, atomically."""
        atomic_write_text(path, self.dumps(content))
        return Path(path)


ARTIFACTS: Registry[Artifact] = Registry("artifact format")


def artifact(name: str, version: int, what: str, legacy_names: tuple[str, ...] = ()) -> Artifact:
    """Declare (and register) an artifact format; each module that writes one declares it once."""
    return ARTIFACTS.register(name, Artifact(name, version, what, legacy_names))
