"""Signal levels (textless.eval.levels) on hand-made signals."""

import numpy as np
import pytest

from textless.eval.levels import FLOOR_DB, frame_levels, levels


def test_levels_of_a_sine_then_silence():
    sr = 16000
    t = np.arange(sr) / sr
    sine = 0.5 * np.sin(2 * np.pi * 400 * t)           # RMS 0.5 / sqrt(2): -9.03 dBFS
    quiet = np.full(sr // 2, 10 ** (-70 / 20))          # constant -70 dBFS: "silent" under -60
    wav = np.concatenate([sine, quiet, np.zeros(sr // 2)])
    per_frame = frame_levels(wav, sr)
    assert len(per_frame) == 100                        # 2 s of 20 ms frames
    np.testing.assert_allclose(per_frame[:50], 20 * np.log10(0.5 / np.sqrt(2)), atol=1e-6)  # 8 whole periods per 20 ms frame
    np.testing.assert_allclose(per_frame[50:75], -70.0, atol=1e-9)
    assert (per_frame[75:] == FLOOR_DB).all()
    result = levels(wav, sr)
    assert result.silent_ratio == 0.5 and result.frames == 100 and result.quiet_floor_dbfs == FLOOR_DB
    expected_rms = np.sqrt((sine ** 2).sum() / len(wav) + (quiet ** 2).sum() / len(wav))
    assert result.rms_dbfs == pytest.approx(20 * np.log10(expected_rms), abs=1e-9)
    assert levels(wav, sr, threshold_db=-80).silent_ratio == 0.25
