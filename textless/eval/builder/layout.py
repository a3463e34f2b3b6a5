"""The official ZeroSpeech 2021 layout: wav names and gold.csv files (read back by
`textless.eval.suites.zerospeech`).

    <root>/lexical/<split>/<name>.wav     + gold.csv   id, filename, voice, frequency, word, phones, length, correct
    <root>/syntactic/<split>/<name>.wav   + gold.csv   filename, id, voice, type, subtype, transcription, correct

Wav names are 11 letters that look random (like the official ``aAAfmkmQpVz``) but are a hash of the build seed, the
task, the item id, the voice and the side (`stable_name`), so a rebuild with the same seed writes the same names and a
name does not reveal which side of a pair a file is. Lexical rows: ``word`` is empty for a non-word (the reader then
shows its ``phones``), ``phones`` is the ARPAbet pronunciation with stress digits, ``length`` its number of phones,
and both rows of a pair carry the word's ``frequency`` (its count in the reference corpus; 0 = OOV). Rows are sorted
by id, voice, then the correct row first.
"""

from __future__ import annotations

import csv
import hashlib
import io
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEXICAL_COLUMNS = ("id", "filename", "voice", "frequency", "word", "phones", "length", "correct")
SYNTACTIC_COLUMNS = ("filename", "id", "voice", "type", "subtype", "transcription", "correct")
_LETTERS = string.ascii_letters


def stable_name(seed: int, task: str, item: str, voice: str, correct: int, length: int = 11) -> str:
    """A random-looking, deterministic wav stem (letters only)."""
    digest = hashlib.sha256(f"{seed}|{task}|{item}|{voice}|{correct}".encode()).digest()
    number = int.from_bytes(digest, "big")
    letters = []
    for _ in range(length):
        number, index = divmod(number, len(_LETTERS))
        letters.append(_LETTERS[index])
    return "".join(letters)


@dataclass(frozen=True)
class LexicalRow:
    id: str
    filename: str
    voice: str
    frequency: int
    word: str  # "" for the non-word
    phones: tuple[str, ...]
    correct: int

    def to_csv(self) -> dict[str, str]:
        return {"id": self.id, "filename": self.filename, "voice": self.voice, "frequency": str(self.frequency),
                "word": self.word, "phones": " ".join(self.phones), "length": str(len(self.phones)),
                "correct": str(self.correct)}


@dataclass(frozen=True)
class SyntacticRow:
    filename: str
    id: str
    voice: str
    type: str
    subtype: str
    transcription: str
    correct: int

    def to_csv(self) -> dict[str, str]:
        return {"filename": self.filename, "id": self.id, "voice": self.voice, "type": self.type,
                "subtype": self.subtype, "transcription": self.transcription, "correct": str(self.correct)}


def gold_csv(rows: Sequence[LexicalRow] | Sequence[SyntacticRow], columns: Sequence[str]) -> str:
    """The gold.csv text (sorted by id, voice, correct row first)."""
    ordered = sorted(rows, key=lambda r: (r.id, r.voice, -r.correct))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in ordered:
        writer.writerow(row.to_csv())
    return buffer.getvalue()


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono wav (the official format)."""
    import soundfile as sf

    if samples.dtype != np.int16:
        raise ValueError(f"{path}: expected int16 samples, got {samples.dtype}")
    sf.write(path, samples, sample_rate, subtype="PCM_16", format="WAV")
