"""Phone / word alignments (``alignments.jsonl``) and their frame-level view.

One JSON object per line: ``{"id": str, "phones": [[start_s, end_s, "AH"], ...], "words": [[start_s, end_s, "word"], ...]}``
(``words`` optional). Times are seconds from the start of the audio file; phones are contiguous and sorted. Phone labels
use the 39 stress-less ARPAbet phones plus ``SIL`` (`PHONES`), the set the bundled corpus is normalised to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

from textless.errors import FormatError

PHONES: tuple[str, ...] = (
    "SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY",
    "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)
PHONE_TO_ID = {p: i for i, p in enumerate(PHONES)}

Segment = tuple[float, float, str]


@dataclass
class Alignment:
    """Time-aligned phones (and optionally words) of one utterance; times in seconds."""

    id: str
    phones: list[Segment]
    words: list[Segment] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.phones[-1][1] if self.phones else 0.0

    def frame_labels(self, frame_rate: float, num_frames: int | None = None) -> np.ndarray:
        """Phone id (index into `PHONES`) of each frame, read at the frame's centre time ``(i + 0.5) / frame_rate``.

        Phones are half-open ``[start, end)`` intervals; frames past the last phone get ``SIL``. Returns int64 ``[num_frames]`` (default: ``floor(duration * rate)``).
        """
        if num_frames is None:
            num_frames = int(self.duration * frame_rate)
        ends = np.array([end for _, end, _ in self.phones], dtype=np.float64)
        ids = np.array([PHONE_TO_ID[p] for _, _, p in self.phones] + [PHONE_TO_ID["SIL"]], dtype=np.int64)
        centres = (np.arange(num_frames) + 0.5) / frame_rate
        return ids[np.searchsorted(ends, centres, side="right")]


def _segments(value, path: Path, line: int, key: str, check_phones: bool) -> list[Segment]:
    if not isinstance(value, list):
        raise FormatError(path, f"'{key}' must be a list of [start, end, label]", line)
    out: list[Segment] = []
    for seg in value:
        if not (isinstance(seg, list) and len(seg) == 3):
            raise FormatError(path, f"'{key}' entries must be [start, end, label], got {seg!r}", line)
        start, end, label = float(seg[0]), float(seg[1]), str(seg[2])
        if not 0 <= start <= end:
            raise FormatError(path, f"'{key}' segment {seg!r} has start > end or a negative time", line)
        if check_phones and label not in PHONE_TO_ID:
            raise FormatError(path, f"unknown phone '{label}' (expected one of textless.data.alignments.PHONES)", line)
        out.append((start, end, label))
    return out


def load_alignments(path: str | Path) -> dict[str, Alignment]:
    """Read an ``alignments.jsonl`` file into ``{id: Alignment}``, validating every line."""
    path = Path(path)
    alignments: dict[str, Alignment] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise FormatError(path, f"invalid JSON ({e.msg})", n) from None
            if not isinstance(record, dict) or "id" not in record or "phones" not in record:
                raise FormatError(path, "each line needs 'id' and 'phones'", n)
            if record["id"] in alignments:
                raise FormatError(path, f"duplicate id '{record['id']}'", n)
            phones = _segments(record["phones"], path, n, "phones", check_phones=True)
            for (_, prev_end, _), (start, _, _) in pairwise(phones):
                if abs(start - prev_end) > 1e-3:
                    raise FormatError(path, f"phones of '{record['id']}' are not contiguous at {start:.4f} s", n)
            words = _segments(record.get("words", []), path, n, "words", check_phones=False)
            alignments[record["id"]] = Alignment(str(record["id"]), phones, words)
    return alignments
