"""Signal levels: how loud speech is and how much of it is silence (resynthesis should keep silence silent).

Frames are non-overlapping 20 ms windows (``frame_seconds``); a frame's level is its RMS in dBFS, ``20 log10(rms)``
(0 dBFS = a full-scale square wave; a full-scale sine is -3 dBFS; digital silence is -inf, floored at -120 dBFS).
A frame is *silent* below ``threshold_db`` (-60 dBFS by default: well under any speech, above the noise floor of a
quiet 16-bit recording). The whole signal's level is its overall RMS in dBFS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FLOOR_DB = -120.0
SILENCE_DB = -60.0


def frame_levels(wav: np.ndarray, sample_rate: int, frame_seconds: float = 0.02) -> np.ndarray:
    """dBFS of each complete frame of a mono waveform [T] (float, nominally in [-1, 1]) -> float64 [F]."""
    wav = np.asarray(wav, np.float64).reshape(-1)
    size = max(1, round(frame_seconds * sample_rate))
    frames = wav[: len(wav) // size * size].reshape(-1, size)
    rms = np.sqrt((frames ** 2).mean(axis=1)) if len(frames) else np.zeros(0)
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-300)), FLOOR_DB)


@dataclass
class Levels:
    rms_dbfs: float            # the whole signal
    silent_ratio: float        # fraction of 20 ms frames below `threshold_db`
    quiet_floor_dbfs: float    # 5th percentile of the frame levels: where the quietest parts sit
    frames: int
    threshold_db: float = SILENCE_DB

    def to_dict(self) -> dict:
        return asdict(self)


def levels(wav: np.ndarray, sample_rate: int, threshold_db: float = SILENCE_DB,
           frame_seconds: float = 0.02) -> Levels:
    """`Levels` of a mono waveform."""
    wav = np.asarray(wav, np.float64).reshape(-1)
    per_frame = frame_levels(wav, sample_rate, frame_seconds)
    rms = float(np.sqrt((wav ** 2).mean())) if len(wav) else 0.0
    return Levels(rms_dbfs=max(20 * np.log10(max(rms, 1e-300)), FLOOR_DB),
                  silent_ratio=float((per_frame < threshold_db).mean()) if len(per_frame) else 0.0,
                  quiet_floor_dbfs=float(np.percentile(per_frame, 5)) if len(per_frame) else FLOOR_DB,
                  frames=len(per_frame), threshold_db=threshold_db)
