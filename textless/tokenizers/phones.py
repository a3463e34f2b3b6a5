"""Oracle phone "tokenizer": frame-level phone labels read off forced alignments.

It needs no audio model, so it is the topline that learned units are compared against (as in ZeroSpeech), and the
tokenizer the demo uses before an SSL tokenizer is trained. Units are indices into
`textless.data.alignments.PHONES` (39 ARPAbet phones + SIL), sampled at `frame_rate` Hz at frame centres.
"""

from __future__ import annotations

from dataclasses import dataclass

from textless.data.alignments import PHONES, Alignment
from textless.data.identity import UnitIdentity
from textless.data.units import UnitMeta, UnitSequence, dedup


@dataclass
class OraclePhoneTokenizer:
    frame_rate: float = 50.0
    deduplicate: bool = True

    @property
    def vocab_size(self) -> int:
        return len(PHONES)

    def identity(self) -> dict:
        return {"name": "oracle-phones", "phones": list(PHONES), "frame_rate": self.frame_rate}

    def unit_identity(self) -> UnitIdentity:
        return UnitIdentity(tokenizer=self.identity(), vocab_size=self.vocab_size, frame_rate=self.frame_rate,
                            deduplicated=self.deduplicate, bpe=False)

    def meta(self) -> UnitMeta:
        return UnitMeta.from_identity(self.unit_identity())

    def encode(self, alignment: Alignment, duration: float | None = None) -> UnitSequence:
        """Units of one utterance; `duration` (seconds, the audio's) sets the frame count, else the alignment's end."""
        seconds = alignment.duration if duration is None else duration
        frames = alignment.frame_labels(self.frame_rate, int(seconds * self.frame_rate))
        if not self.deduplicate:
            return UnitSequence(alignment.id, frames)
        units, durations = dedup(frames)
        return UnitSequence(alignment.id, units, durations)
