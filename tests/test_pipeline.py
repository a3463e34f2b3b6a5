"""SpeechPipeline (tokenizer + unit LM + vocoder) and `textless resynth`, with tiny parts built here."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from textless.audio import load_audio
from textless.cli import main
from textless.data.corpus import load_bundled_corpus
from textless.errors import TextlessError
from textless.lm.generation import SamplingConfig
from textless.lm.model import UnitLM
from textless.lm.vocab import UnitVocab
from textless.pipeline import SpeechPipeline
from textless.tokenizers import KMeans, SpeechTokenizer, load_encoder
from textless.vocoders import UnitHiFiGANConfig, UnitVocoder

K = 16


@pytest.fixture(scope="module")
def items():
    return list(load_bundled_corpus("valid"))[:3]


@pytest.fixture(scope="module")
def tokenizer(items):
    encoder = load_encoder("mfcc")
    feats = np.concatenate([encoder.encode(load_audio(i.path, 16000)[0]).numpy() for i in items])
    return SpeechTokenizer(encoder, KMeans(k=K, backend="torch", max_iter=10, seed=0).fit(feats))


def vocoder_for(tokenizer, **kw) -> UnitVocoder:
    cfg = {"num_embeddings": K, "embedding_dim": 8, "upsample_rates": [5, 4, 4, 2], "upsample_kernel_sizes": [
        11, 8, 8, 4], "upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]],
        "duration_predictor": True, "dur_predictor_params": {"encoder_embed_dim": 8, "var_pred_hidden_dim": 8},
        "multispkr": True, "num_speakers": 2, "speakers": ["kal", "slt"]}
    cfg.update(kw)
    torch.manual_seed(0)
    return UnitVocoder.from_config(UnitHiFiGANConfig(**cfg), tokenizer=tokenizer.identity(),
                                   deduplicated=True).eval()


@pytest.fixture(scope="module")
def pipeline(tokenizer):
    identity = tokenizer.identity()
    lm = UnitLM.from_scratch("tiny", UnitVocab.default(K), tokenizer=identity, frame_rate=tokenizer.frame_rate,
                             deduplicated=True)
    return SpeechPipeline(tokenizer, lm, vocoder_for(tokenizer), default_speaker="slt", notes="test")


def test_short_inputs_skip_numba_and_give_the_same_units(tokenizer, items, monkeypatch):
    """A short file is labelled without numba (no compile / cache load in a one-shot process): same units."""
    from textless.tokenizers import bundle, kernels

    wav, sr = load_audio(items[0].path)
    monkeypatch.setattr(bundle, "SMALL_INPUT_FRAMES", 0)  # everything through numba
    through_numba = tokenizer.encode(wav, sr)
    monkeypatch.setattr(bundle, "SMALL_INPUT_FRAMES", 4096)

    def refuse(*args, **kwargs):
        raise AssertionError("a numba kernel ran for a short input")

    monkeypatch.setattr(kernels, "_assign_numba", refuse)
    monkeypatch.setattr(bundle, "dedup", refuse)
    short = tokenizer.encode(wav, sr)
    np.testing.assert_array_equal(short.ids, through_numba.ids)
    np.testing.assert_array_equal(short.durations, through_numba.durations)


def test_resynthesis_and_continuation(pipeline, items):
    wav, sr = load_audio(items[0].path)
    audio, units = pipeline.resynthesize(wav, sr, speaker="kal")
    assert audio.dtype == np.float32 and len(audio) == units.durations.sum() * pipeline.vocoder.hop
    # same units, same durations -> the vocoder's own synthesis
    ref = pipeline.vocoder.synthesize([units.ids], [units.durations], speakers=0)[0]
    np.testing.assert_allclose(audio, ref, atol=1e-6)
    out = pipeline.continue_speech(wav, sr, prompt_seconds=0.5, sampling=SamplingConfig(max_new_tokens=8, seed=1))
    assert out.prompt_durations.sum() <= 50 and 0 < len(out.units) <= 8 and out.sample_rate == 16000
    assert len(out.prompt_audio) == out.prompt_durations.sum() * 160 and len(out.audio) >= len(out.units) * 160


def test_save_load_round_trip(pipeline, items, tmp_path):
    path = pipeline.save_pretrained(tmp_path / "pipe")
    config = json.loads((path / "pipeline.json").read_text())
    assert config["default_speaker"] == "slt" and config["lm"] == "lm" and config["vocoder"] == "vocoder"
    loaded = SpeechPipeline.from_pretrained(path)
    wav, sr = load_audio(items[1].path)
    np.testing.assert_allclose(loaded.resynthesize(wav, sr)[0], pipeline.resynthesize(wav, sr)[0], atol=1e-6)
    assert SpeechPipeline.from_pretrained(path, load_lm=False).lm is None


def test_parts_must_fit(tokenizer):
    other = vocoder_for(tokenizer)
    other.tokenizer = {**other.tokenizer, "kmeans_sha256": "0" * 16}
    with pytest.raises(TextlessError, match="the vocoder expects units of tokenizer"):
        SpeechPipeline(tokenizer, None, other)
    with pytest.raises(TextlessError, match="the vocoder has 20 units but the units have vocab_size"):
        SpeechPipeline(tokenizer, None, vocoder_for(tokenizer, num_embeddings=20))
    with pytest.raises(TextlessError, match="expects 200 Hz units"):
        SpeechPipeline(tokenizer, None, vocoder_for(tokenizer, upsample_rates=[5, 4, 2, 2],
                                                    upsample_kernel_sizes=[11, 8, 4, 4]))
    lm = UnitLM.from_scratch("tiny", UnitVocab.default(K), tokenizer={"name": "other"}, frame_rate=100.0,
                             deduplicated=True)
    with pytest.raises(TextlessError, match="other"):
        SpeechPipeline(tokenizer, lm, None)
    with pytest.raises(TextlessError, match="not a speech pipeline"):
        SpeechPipeline.from_pretrained("/nonexistent")


def test_resynth_cli(pipeline, items, tmp_path, capsys):
    tok = pipeline.tokenizer.save_pretrained(tmp_path / "tok")
    voc = pipeline.vocoder.save_pretrained(tmp_path / "voc")
    # one file
    assert main(["resynth", str(items[0].path), str(tmp_path / "one.wav"), "--tokenizer", str(tok), "--vocoder",
                 str(voc), "--speaker", "slt"]) == 0
    out, sr = sf.read(tmp_path / "one.wav", dtype="float32")
    wav, _ = load_audio(items[0].path)
    expected = pipeline.resynthesize(wav, 16000, speaker="slt")[0]
    assert sr == 16000 and len(out) == len(expected)
    np.testing.assert_allclose(out, expected, atol=1 / 2**15 + 1e-6)
    # a directory with a bad file: reported, the rest written; a re-run skips what exists
    data = tmp_path / "data"
    data.mkdir()
    for item in items:
        shutil.copy(item.path, data / f"{item.id}.flac")
    (data / "broken.wav").write_text("not audio")
    pipe_dir = pipeline.save_pretrained(tmp_path / "pipe")
    assert main(["resynth", str(data), str(tmp_path / "out"), "--pipeline", str(pipe_dir)]) == 0
    err = capsys.readouterr().out
    assert "failed broken" in err and f"{len(items)} resynthesized, 1 failed" in err
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.wav")) == sorted(i.id for i in items)
    assert main(["resynth", str(data), str(tmp_path / "out"), "--pipeline", str(pipe_dir)]) == 0
    assert f"{len(items)} already there" in capsys.readouterr().out
    assert main(["resynth", str(items[0].path), str(tmp_path / "x.wav"), "--tokenizer", str(tok)]) == 2
    # resuming into the same output with another vocoder (or speaker) is refused; --restart starts over
    other = vocoder_for(pipeline.tokenizer)
    torch.nn.init.normal_(other.generator.conv_post.weight)
    other_dir = other.save_pretrained(tmp_path / "other_voc")
    argv = ["resynth", str(data), str(tmp_path / "out"), "--tokenizer", str(tok), "--vocoder", str(other_dir)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the resynthesis in" in err and "vocoder:" in err and "--restart" in err
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main([*argv, "--restart"]) == 0 and f"{len(items)} resynthesized" in capsys.readouterr().out
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"  # --restart replaces only what resynth writes
    # a directory with files but no record of a resynthesis is not adopted
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.wav").write_bytes(b"")
    assert main(["resynth", str(data), str(tmp_path / "mine"), "--pipeline", str(pipe_dir)]) == 2
    assert "holds files but no record" in capsys.readouterr().err
    # a single file that fails: one error line, exit status 2, nothing written
    assert main(["resynth", str(data / "broken.wav"), str(tmp_path / "b.wav"), "--pipeline", str(pipe_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("textless: error: audio file") and err.count("\n") == 1 and not (tmp_path / "b.wav").exists()


def test_long_files_are_read_and_written_piece_by_piece(pipeline, items, tmp_path):
    """resynthesize_file (windows in, pieces out) == resynthesize (whole waveform) on a file longer than a window of
    the tokenizer (60 s) and of the vocoder (500 frames): MFCC features and windowed synthesis with a full receptive
    field of context are exact, so only float rounding differs (and the 16-bit file: 1/2**15)."""
    wav = torch.cat([load_audio(i.path)[0] for i in items] * 12)  # > 60 s
    assert len(wav) > 61 * 16000
    sf.write(tmp_path / "long.wav", wav.numpy(), 16000, subtype="FLOAT")
    units = pipeline.resynthesize_file(tmp_path / "long.wav", tmp_path / "out.wav", speaker="kal")
    expected, whole = pipeline.resynthesize(wav, 16000, speaker="kal")
    assert np.array_equal(units.ids, whole.ids) and np.array_equal(units.durations, whole.durations)
    out, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert len(out) == len(expected)
    np.testing.assert_allclose(out, expected, atol=1 / 2**15 + 1e-5)


def test_versioned_config_errors_name_the_file(tmp_path):
    from textless.errors import FormatError

    (tmp_path / "pipeline.json").write_text('{"format": "textless.pipeline", "version": 99}')
    with pytest.raises(FormatError, match=r"pipeline\.json.*newer textless \(version 99\)"):
        SpeechPipeline.from_pretrained(tmp_path)
    (tmp_path / "pipeline.json").write_text('{"format": "textless.vocoder", "version": 1}')
    with pytest.raises(FormatError, match="not a speech pipeline directory .format is 'textless.vocoder'"):
        SpeechPipeline.from_pretrained(tmp_path)
    (tmp_path / "pipeline.json").write_text("{not json")
    with pytest.raises(FormatError, match=r"pipeline\.json.*invalid JSON"):
        SpeechPipeline.from_pretrained(tmp_path)


def test_resynth_cli_defaults_to_the_starter_pipeline(tmp_path):
    """`textless resynth in.wav out.wav` with no model options: the shipped starter pipeline, its default voice."""
    from textless.data.corpus import load_bundled_corpus
    from textless.pipeline import starter_pipeline

    item = load_bundled_corpus("valid_unseen")[0]
    assert main(["resynth", str(item.path), str(tmp_path / "out.wav")]) == 0
    out, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    starter = starter_pipeline()
    wav, _ = load_audio(item.path)
    expected = starter.resynthesize(wav, 16000)[0]
    assert sr == starter.vocoder.sample_rate and len(out) == len(expected)
    np.testing.assert_allclose(out, expected, atol=1 / 2**15 + 1e-6)


def test_eval_resynth_reports_wer_cer_and_levels_per_item_and_overall(pipeline, items, tmp_path, monkeypatch):
    """A stub ASR that hears the reference for originals and a fixed sentence for resyntheses: WER / CER by hand;
    the levels are those of the files."""
    from textless.eval import asr as asr_module
    from textless.eval.levels import levels
    from textless.eval.wer import tokens
    from textless.jobs.eval_resynth import EvalResynthConfig, evaluate_resynthesis

    transcripts = {}

    class StubASR:
        sample_rate = 16000
        name = "stub"

        def transcribe(self, wavs):
            return [transcripts.get(round(float(np.abs(w).sum()), 3), "one two three") for w in wavs]

    for item in items:
        transcripts[round(float(np.abs(load_audio(item.path)[0].numpy()).sum()), 3)] = item.transcript
    monkeypatch.setitem(asr_module.ASR_LOADERS, "stub", lambda spec, **kw: StubASR())
    pipe_dir = pipeline.save_pretrained(tmp_path / "pipe")
    data = tmp_path / "data.tsv"
    from textless.data.manifest import Manifest

    Manifest(items).save(data)
    report = evaluate_resynthesis(EvalResynthConfig(dataset=str(data), pipeline=str(pipe_dir), asr="stub",
                                                    output=str(tmp_path / "eval")))
    assert report["format"] == "textless.eval.resynth" and report["items"] == len(items) == 3
    words = [len(tokens(i.transcript)) for i in items]  # normalised reference words (no digits in these sentences)
    orig, resynth = report["summary"]["original"], report["summary"]["resynthesis"]
    assert orig["wer"]["rate"] == 0.0 and orig["wer"]["normalizer"] == "whisper-digits"
    # "one two three" -> "1 2 3": 3 tokens against each reference (no digits in them): every word wrong or missing
    assert resynth["wer"]["errors"] == sum(max(n, 3) for n in words) and resynth["wer"]["reference_tokens"] == sum(words)
    row = report["per_item"][0]
    wav, _ = load_audio(tmp_path / "eval" / "audio" / f"{row['id']}.wav")
    assert row["resynthesis_levels"] == levels(wav.numpy(), 16000).to_dict()
    # a second run reuses the resyntheses and the cached transcripts
    again = evaluate_resynthesis(EvalResynthConfig(dataset=str(data), pipeline=str(pipe_dir), asr="stub",
                                                   output=str(tmp_path / "eval")))
    assert again["summary"] == report["summary"]
