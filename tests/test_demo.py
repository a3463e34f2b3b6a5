"""`make demo` / `textless demo`: the starter pipeline end to end writes the three wav files and the picture."""

import json

import numpy as np
import pytest
import soundfile as sf

from textless.cli import main
from textless.data.corpus import load_bundled_corpus
from textless.pipeline import STARTER_DIR, starter_pipeline


def test_starter_pipeline_ships_and_fits_together():
    total = sum(f.stat().st_size for f in STARTER_DIR.rglob("*") if f.is_file())
    assert total < 40e6, f"the starter pipeline is {total / 1e6:.1f} MB (budget 40 MB)"
    pipeline = starter_pipeline()  # parts checked against each other when loaded
    assert pipeline.tokenizer.frame_rate == pipeline.vocoder.frame_rate == 50.0
    assert pipeline.lm.vocab.num_units == pipeline.tokenizer.num_units == pipeline.vocoder.config.codebook_size
    assert (STARTER_DIR / "README.md").is_file()


def test_demo_writes_three_wavs_a_picture_and_timings(tmp_path, capsys):
    assert main(["demo", f"output_dir={tmp_path}", "transcribe=false", "max_new_tokens=60", "min_new_tokens=20",
                 "prompt_seconds=2"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    units = json.loads((tmp_path / "units.json").read_text())
    prompt, sr = sf.read(tmp_path / "prompt.wav")
    resynthesis, sr2 = sf.read(tmp_path / "resynthesis.wav")
    continuation, sr3 = sf.read(tmp_path / "continuation.wav")
    assert sr == sr2 == sr3 == 16000 and len(prompt) == 2 * 16000
    frames = sum(units["prompt_durations"])
    assert len(resynthesis) == frames * 320 and 95 <= frames <= 100  # 2 s of 50 Hz frames (Whisper: ceil(T / 320))
    assert 20 <= len(units["continuation_units"]) <= 60
    new_frames = sum(units["continuation_durations"])
    assert len(continuation) == (frames + new_frames) * 320
    np.testing.assert_allclose(continuation[: len(resynthesis)][:3200], resynthesis[:3200], atol=0.05)
    png = (tmp_path / "demo.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    for stage in ("load models", "tokenize", "generate (unit LM)", "vocode", "tokenize bundled:valid"):
        assert stage in summary["timings_s"] and stage in printed
    # the held-out split of the training voices, tokenized: every utterance, all of its audio, consistent statistics
    corpus = summary["corpus_units"]
    items = load_bundled_corpus("valid")
    assert summary["frame_rate"] == 50.0 and corpus["split"] == "valid" and corpus["utterances"] == len(items)
    assert abs(corpus["seconds"] - sum(i.duration for i in items)) < 0.02 * len(items)  # <= 1 frame per utterance
    assert corpus["frames"] == round(corpus["seconds"] * 50) and corpus["units"] < corpus["frames"]
    assert corpus["bitrate"] == pytest.approx(corpus["units_per_second"] * corpus["entropy_bits"])
    assert 0 < corpus["entropy_bits"] <= np.log2(corpus["used_units"]) and corpus["used_units"] <= 100
    assert "bitrate b/s" in printed and "bundled:valid through whisper" in printed
    assert "wrote" in printed and str(tmp_path / "demo.png") in printed


@pytest.mark.slow
def test_demo_transcribes_with_whisper(tmp_path):
    from textless.jobs.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(output_dir=str(tmp_path), max_new_tokens=30, min_new_tokens=10))
    assert set(summary["transcripts"]) == {"prompt", "resynthesis", "continuation"}
    # Whisper-base hears the original prompt (a clear held-out TTS sentence) almost perfectly
    from textless.eval.wer import error_rate

    item = next(i for i in load_bundled_corpus("valid") if str(i.path) == summary["prompt"])
    words = item.transcript.split()
    heard = summary["transcripts"]["prompt"].split()
    assert error_rate([" ".join(words[: len(heard)])], [" ".join(heard)]).rate < 0.3
