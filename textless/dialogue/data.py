"""Two-channel unit datasets: one record = one conversation, one frame-aligned unit stream per speaker.

The on-disk format is the unit dataset's (`textless.data.units`, version 2 with ``"channels": ["A", "B"]``): jsonl or
binary, the same tokenizer identity for both channels (the units contract), units at the tokenizer's frame rate and
never deduplicated (as dGSLM), so a conversation of T frames lasts ``T / frame_rate`` seconds. Here a conversation
is a `Dialogue` with units int64 ``[C, T]`` (C channels, T frames) and, optionally, the speaker of each channel
(stored in meta.json ``extra.speakers``: ``{id: [speaker of channel 0, ...]}``). dGSLM's fairseq files
(``{split}.unitA`` / ``{split}.unitB`` + ``dict.unitA.txt`` / ``dict.unitB.txt``) convert both ways through
`textless.data.convert` (format ``dgslm``; `import_dgslm` / `export_dgslm` here).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from textless.data.convert import read_dgslm_units, write_dgslm_units
from textless.data.identity import UnitIdentity
from textless.data.units import InvalidUnitsError, UnitDataset, UnitMeta, UnitSequence, UnitWriter, read_units

CHANNELS = ("A", "B")
SPEAKERS_KEY = "speakers"


@dataclass(eq=False)
class Dialogue:
    """One conversation: `units` int64 ``[C, T]`` (frame-aligned channels), `speakers` per channel or None."""

    id: str
    units: np.ndarray
    speakers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.units = np.asarray(self.units)
        if self.units.ndim != 2 or self.units.shape[0] < 2 or self.units.shape[1] < 1:
            raise InvalidUnitsError(f"conversation {self.id!r}: units must have shape [channels >= 2, frames >= 1], "
                                    f"got {list(self.units.shape)}")
        if self.units.dtype.kind not in "iu":
            raise InvalidUnitsError(f"conversation {self.id!r}: units must be integers, got {self.units.dtype}")
        self.units = self.units.astype(np.int64)
        if self.speakers is not None:
            self.speakers = tuple(self.speakers)
            if len(self.speakers) != self.units.shape[0]:
                raise InvalidUnitsError(f"conversation {self.id!r}: {len(self.speakers)} speakers for "
                                        f"{self.units.shape[0]} channels")

    @property
    def num_frames(self) -> int:
        return int(self.units.shape[1])

    def seconds(self, frame_rate: float) -> float:
        return self.num_frames / frame_rate

    def interleaved(self) -> UnitSequence:
        """The stored form: frame-major interleaved units ``[T * C]``."""
        return UnitSequence(self.id, self.units.T.reshape(-1))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dialogue):
            return NotImplemented
        return self.id == other.id and np.array_equal(self.units, other.units) and self.speakers == other.speakers

    __hash__ = None  # type: ignore[assignment]


def dialogue_meta(identity: UnitIdentity | UnitMeta, channels: Sequence[str] = CHANNELS,
                  extra: dict[str, Any] | None = None) -> UnitMeta:
    """The meta of a two-channel dataset of units of `identity` (a tokenizer's identity or a one-stream meta)."""
    if isinstance(identity, UnitMeta):
        identity = identity.identity
    if identity.deduplicated:
        raise InvalidUnitsError("a dialogue dataset holds frame-level units: the tokenizer must not deduplicate "
                                "(set dedup off; durations follow from the frames)")
    base = UnitMeta.from_identity(identity, extra)
    return UnitMeta(base.tokenizer, base.frame_rate, base.vocab_size, deduplicated=False, extra=base.extra,
                    channels=tuple(channels))


class DialogueDataset(Sequence[Dialogue]):
    """A two-channel unit dataset opened by `read_dialogues`: ``len(ds)``, ``ds[i]``, iteration, ``ds.get(id)``;
    `meta` (with `channels`, `frame_rate`), `units` (the underlying `UnitDataset`, frame-major interleaved)."""

    def __init__(self, units: UnitDataset):
        if units.meta.channels is None:
            raise InvalidUnitsError(f"{units.path}: a one-stream unit dataset, not a dialogue dataset (no channels)")
        self.units = units
        self.meta = units.meta
        self.path = units.path
        self._speakers: dict[str, list[str]] = dict(units.meta.extra.get(SPEAKERS_KEY, {}))

    @property
    def channels(self) -> tuple[str, ...]:
        assert self.meta.channels is not None
        return self.meta.channels

    @property
    def ids(self) -> list[str]:
        return self.units.ids

    def _wrap(self, seq: UnitSequence) -> Dialogue:
        speakers = self._speakers.get(seq.id)
        return Dialogue(seq.id, seq.units.reshape(-1, len(self.channels)).T.copy(),
                        tuple(speakers) if speakers else None)

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._wrap(s) for s in self.units[i]]
        return self._wrap(self.units[i])

    def __iter__(self) -> Iterator[Dialogue]:
        for seq in self.units:
            yield self._wrap(seq)

    def get(self, conversation_id: str) -> Dialogue:
        return self._wrap(self.units.get(conversation_id))

    @property
    def num_frames(self) -> int:
        return self.units.num_frames

    @property
    def hours(self) -> float:
        return self.num_frames / self.meta.frame_rate / 3600

    def __repr__(self) -> str:
        return (f"DialogueDataset('{self.path}', encoding={self.units.encoding!r}, conversations={len(self)}, "
                f"channels={list(self.channels)}, hours={self.hours:.3f})")


def read_dialogues(path: str | Path) -> DialogueDataset:
    """Open a two-channel unit dataset (either encoding)."""
    return DialogueDataset(read_units(path, multichannel=True))


def write_dialogues(path: str | Path, dialogues: Iterable[Dialogue], meta: UnitMeta, encoding: str = "jsonl",
                    overwrite: bool = False) -> Path:
    """Write conversations as a two-channel unit dataset at `path` (atomically, each checked: vocabulary range,
    channel count, unique ids); their speakers go to meta.json ``extra.speakers``."""
    if meta.channels is None:
        raise InvalidUnitsError("write_dialogues needs a meta with channels (see dialogue_meta)")
    speakers: dict[str, list[str]] = {}  # filled while writing; meta.json is written when the block ends
    meta = replace(meta, extra={**meta.extra, SPEAKERS_KEY: speakers})
    with UnitWriter(path, meta, encoding=encoding, overwrite=overwrite) as writer:
        for dialogue in dialogues:
            if dialogue.units.shape[0] != len(meta.channels):
                raise InvalidUnitsError(f"conversation {dialogue.id!r} has {dialogue.units.shape[0]} channels, the "
                                        f"dataset {len(meta.channels)}")
            writer.add(dialogue.interleaved())
            if dialogue.speakers is not None:
                speakers[dialogue.id] = list(dialogue.speakers)
        if not speakers:
            del meta.extra[SPEAKERS_KEY]
    return Path(path)


def import_dgslm(prefix: str | Path, output: str | Path, *, encoding: str = "binary", overwrite: bool = False,
                 **options: Any) -> DialogueDataset:
    """dGSLM's ``<prefix>.unitA`` / ``.unitB`` (+ dicts) -> a two-channel unit dataset at `output`
    (`options`: ids_path, vocab_size, frame_rate, tokenizer; see `textless.data.convert.read_dgslm_units`)."""
    sequences, meta = read_dgslm_units(prefix, **options)
    with UnitWriter(output, meta, encoding=encoding, overwrite=overwrite) as writer:
        writer.extend(sequences)
    return read_dialogues(output)


def export_dgslm(dataset: str | Path | DialogueDataset, prefix: str | Path,
                 ids_path: str | Path | None = None) -> Path:
    """A two-channel unit dataset -> dGSLM's ``<prefix>.unitA`` / ``.unitB`` and ``dict.unitA.txt`` /
    ``dict.unitB.txt`` beside them (and the ids, one per line, if `ids_path`)."""
    data = dataset if isinstance(dataset, DialogueDataset) else read_dialogues(dataset)
    return write_dgslm_units(data.units, prefix, ids_path=ids_path)
