"""Summary statistics of a unit dataset: rate, run lengths, entropy and bitrate.

Bitrate follows the usual unit-bitrate definition: units per second times the empirical entropy (bits) of the unit
distribution over the dataset, i.e. the cost of transmitting the (deduplicated) unit stream with an ideal unigram code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from textless.data.units import InvalidUnitsError, UnitSequence
from textless.errors import TextlessError


@dataclass
class UnitStats:
    utterances: int
    units: int            # stored units (after dedup when deduplicated)
    frames: int           # frames before dedup
    seconds: float        # frames / frame_rate
    units_per_second: float
    mean_run_frames: float  # frames per stored unit
    used_units: int       # distinct unit values seen
    entropy_bits: float   # unigram entropy of the stored units
    bitrate: float        # units_per_second * entropy_bits (bits/s)

    def to_dict(self) -> dict:
        return asdict(self)


def unit_statistics(sequences: Iterable[UnitSequence], frame_rate: float, vocab_size: int) -> UnitStats:
    """Statistics of `sequences` (frames: the durations' sum when deduplicated, else one frame per unit). A unit
    outside ``0..vocab_size - 1`` is an error naming the utterance (it would otherwise be dropped from the counts)."""
    if frame_rate <= 0:
        raise TextlessError(f"unit statistics: frame_rate must be > 0, got {frame_rate}")
    counts = np.zeros(vocab_size, dtype=np.int64)
    utterances = frames = 0
    for seq in sequences:
        utterances += 1
        ids = np.asarray(seq.units, dtype=np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = ids[(ids < 0) | (ids >= vocab_size)][0]
            raise InvalidUnitsError(f"utterance {seq.id!r}: unit {bad} is outside the vocabulary 0..{vocab_size - 1}")
        counts += np.bincount(ids, minlength=vocab_size)
        frames += int(seq.durations.sum()) if seq.durations is not None else len(ids)
    units = int(counts.sum())
    seconds = frames / frame_rate
    p = counts[counts > 0] / max(units, 1)
    entropy = float((p * np.log2(1 / p)).sum()) if units else 0.0  # 1/p: one used unit gives 0.0, not -0.0
    ups = units / seconds if seconds else 0.0
    return UnitStats(utterances=utterances, units=units, frames=frames, seconds=seconds, units_per_second=ups,
                     mean_run_frames=frames / units if units else 0.0, used_units=int((counts > 0).sum()),
                     entropy_bits=entropy, bitrate=ups * entropy)
