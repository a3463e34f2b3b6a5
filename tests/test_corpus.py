"""The bundled corpus is the embedded default: pin the properties the issue asks of it."""

import subprocess
import sys

import pytest
import soundfile as sf

from textless.data import load_dataset
from textless.data.corpus import (
    SPLITS,
    bundled_corpus_dir,
    load_bundled_alignments,
    load_bundled_corpus,
    load_bundled_speakers,
)
from textless.jobs.demo import DemoConfig, run_demo


@pytest.fixture(scope="module")
def splits():
    return {split: load_bundled_corpus(split) for split in SPLITS}


def test_size_duration_and_voices(splits):
    total = sum(m.total_duration for m in splits.values())
    assert 13 * 60 <= total <= 17 * 60
    speakers = {s for m in splits.values() for s in m.speakers}
    assert len(speakers) >= 8
    size = sum(f.stat().st_size for f in bundled_corpus_dir().rglob("*") if f.is_file())
    assert size < 20_000_000


def test_audio_is_16k_mono_flac_and_durations_match(splits):
    for manifest in splits.values():
        for item in manifest:
            info = sf.info(item.path)
            assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1), item.id
            assert info.frames / 16000 == pytest.approx(item.duration, abs=1e-3), item.id
            assert item.transcript and item.speaker


def test_split_by_speaker_and_by_utterance(splits):
    train, valid, unseen = (set(splits[s].speakers) for s in SPLITS)
    assert valid <= train and not (unseen & train) and len(unseen) >= 2
    ids = [i for m in splits.values() for i in m.ids]
    assert len(ids) == len(set(ids))
    texts = [item.transcript for m in splits.values() for item in m]
    assert len(texts) == len(set(texts)), "a sentence is spoken twice"
    speakers = load_bundled_speakers()
    assert {s for s, v in speakers.items() if v["split"] == "valid_unseen"} == unseen


def test_alignments_cover_the_audio(splits):
    alignments = load_bundled_alignments()
    items = {item.id: item for m in splits.values() for item in m}
    assert alignments and set(alignments) <= set(items)
    speakers = load_bundled_speakers()
    for item_id, a in alignments.items():
        assert speakers[items[item_id].speaker]["alignments"]
        assert a.phones[0][0] == 0.0
        assert a.duration == pytest.approx(items[item_id].duration, abs=0.02)
    aligned_speakers = {items[i].speaker for i in alignments}
    assert aligned_speakers == {s for s, v in speakers.items() if v["alignments"]}
    assert len(aligned_speakers) >= 5 and {"slt", "rms"} <= aligned_speakers  # the held-out speakers too (ABX)


def test_bundled_dataset_spec():
    assert load_dataset("bundled:valid").ids == load_bundled_corpus("valid").ids


def test_demo_fits_a_tokenizer_and_writes_units(tmp_path, logs):
    lines = logs
    summary = run_demo(DemoConfig(mode="train", output_dir=str(tmp_path), k=20, splits=["valid", "valid_unseen"],
                                  progress=False))
    assert summary["tokenizer"]["name"] == "mfcc-km20"
    assert set(summary["splits"]) == {"valid", "valid_unseen"}
    for split, result in summary["splits"].items():
        assert not result["failures"]
        assert result["units"]["utterances"] == len(load_bundled_corpus(split))
        assert 10 < result["units"]["units_per_second"] < 60  # 100 Hz MFCC frames, deduplicated
        assert 5 < result["oracle_phones"]["units_per_second"] < 20  # phones per second of read speech
        assert (tmp_path / "units" / split / "meta.json").exists()
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    assert any("bitrate" in line for line in lines)


def test_make_corpus_script_documents_its_requirements():
    script = bundled_corpus_dir().parents[2] / "experiments" / "data" / "make_corpus.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "--minutes" in out.stdout
