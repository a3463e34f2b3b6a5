"""Word timestamps of faster-whisper (Full-Duplex-Bench TOR / latency) on a real utterance of the bundled corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from textless.errors import TextlessError
from textless.eval.asr import transcribe_words

CORPUS = Path(__file__).resolve().parents[1] / "textless" / "assets" / "corpus"


def _norm(word: str) -> str:
    return re.sub(r"[^a-z']", "", word.lower())


def test_faster_whisper_word_timestamps_match_the_transcript():
    pytest.importorskip("faster_whisper")
    from textless.audio import load_audio
    from textless.eval.asr import load_asr

    try:
        asr = load_asr("faster-whisper")
    except TextlessError as e:  # the offline Whisper-base packages are missing
        pytest.skip(str(e))
    wav, rate = load_audio(CORPUS / "audio" / "awb" / "awb_0002.flac", 16000)
    duration = len(wav) / rate                                        # 2.595 s
    [words] = transcribe_words(asr, [wav.numpy()])
    assert [_norm(w) for _, _, w in words] == ["i", "have", "confidence", "in", "our", "team"]
    starts = [s for s, _, _ in words]
    assert starts == sorted(starts)
    assert all(0 <= s <= e <= duration + 0.05 for s, e, _ in words)
    assert words[-1][1] - words[0][0] > 1.0                            # spans the sentence, not a point


def test_an_engine_without_word_times_is_a_clear_error():
    class TextOnly:
        name = "pocketsphinx"

        def transcribe(self, wavs):
            return ["x"]

    with pytest.raises(TextlessError, match="ASR 'pocketsphinx' gives no word timestamps"):
        transcribe_words(TextOnly(), [])
