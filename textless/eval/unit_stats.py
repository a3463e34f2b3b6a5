"""Summary statistics of a unit dataset: rate, run lengths, entropy and bitrate.

Bitrate follows the usual unit-bitrate definition: units per second times the empirical entropy (bits) of the unit
distribution over the dataset, i.e. the cost of transmitting the (deduplicated) unit stream with an ideal unigram code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from textless.data.units import UnitSequence


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
    counts = np.zeros(vocab_size, dtype=np.int64)
    utterances = frames = 0
    for seq in sequences:
        utterances += 1
        counts += np.bincount(np.asarray(seq.units, dtype=np.int64), minlength=vocab_size)[:vocab_size]
        frames += int(seq.durations.sum()) if seq.durations is not None else len(seq.units)
    units = int(counts.sum())
    seconds = frames / frame_rate
    p = counts[counts > 0] / max(units, 1)
    entropy = float(-(p * np.log2(p)).sum()) if units else 0.0
    ups = units / seconds if seconds else 0.0
    return UnitStats(utterances=utterances, units=units, frames=frames, seconds=seconds, units_per_second=ups,
                     mean_run_frames=frames / units if units else 0.0, used_units=int((counts > 0).sum()),
                     entropy_bits=entropy, bitrate=ups * entropy)
