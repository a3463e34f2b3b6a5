import json

import numpy as np
import pytest
import soundfile as sf

from textless.data.manifest import AudioItem, Manifest, derive_id, load_manifest, scan_directory, shard_from_env
from textless.errors import FormatError, TextlessError


def _wav(path, seconds=0.1, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * sr), dtype=np.float32), sr)
    return path


@pytest.fixture
def audio_dir(tmp_path):
    root = tmp_path / "audio"
    for spk in ("b", "a"):
        for i in range(3):
            _wav(root / spk / f"utt{i}.wav", seconds=0.1 * (i + 1))
    _wav(root / "a" / "x.flac")
    (root / "notes.txt").write_text("not audio")
    return root


def test_directory_scan_gives_sorted_deterministic_ids(audio_dir):
    m = scan_directory(audio_dir)
    assert m.ids == ["a/utt0", "a/utt1", "a/utt2", "a/x", "b/utt0", "b/utt1", "b/utt2"]
    assert m.get("b/utt1").path == (audio_dir / "b" / "utt1.wav").resolve()
    assert load_manifest(audio_dir).ids == m.ids


def test_directory_with_same_stem_twice_is_ambiguous(audio_dir):
    _wav(audio_dir / "a" / "utt0.flac")
    with pytest.raises(FormatError, match="ambiguous id 'a/utt0'"):
        scan_directory(audio_dir)


def test_empty_directory_is_an_error(tmp_path):
    with pytest.raises(TextlessError, match="no audio files"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_manifest_round_trip_keeps_every_field(tmp_path, audio_dir, suffix):
    m = scan_directory(audio_dir).with_durations()
    items = [AudioItem(i.id, i.path, i.duration, speaker=i.id.split("/")[0], transcript=f"hello {k}",
                       extra={"emotion": "calm"}) for k, i in enumerate(m)]
    m = Manifest(items)
    out = m.save(tmp_path / f"manifest{suffix}")
    back = load_manifest(out)
    assert [i.id for i in back] == m.ids
    for a, b in zip(m, back):
        assert b.path.resolve() == a.path.resolve()
        assert b.duration == pytest.approx(a.duration, abs=1e-4)
        assert (b.speaker, b.transcript, dict(b.extra)) == (a.speaker, a.transcript, {"emotion": "calm"})
    assert back.get("a/utt2").duration == pytest.approx(0.3)
    # relative paths are written relative to the manifest's directory
    text = out.read_text()
    assert "audio/a/utt0.wav" in text and str(tmp_path) not in text


def test_tsv_without_ids_derives_them(tmp_path):
    (tmp_path / "m.tsv").write_text("path\tspeaker\nwavs/s1/u1.wav\ts1\nwavs/s2/u1.wav\ts2\n")
    m = load_manifest(tmp_path / "m.tsv")
    assert m.ids == ["wavs/s1/u1", "wavs/s2/u1"]
    assert m.speakers == ["s1", "s2"]
    assert m.total_duration is None


def test_fairseq_manifest(tmp_path):
    (tmp_path / "train.tsv").write_text("/data/LibriSpeech\ntrain/1/a.flac\t32000\ntrain/1/b.flac\t8000\n")
    m = load_manifest(tmp_path / "train.tsv")
    assert m.ids == ["train/1/a", "train/1/b"]
    assert str(m.get("train/1/a").path) == "/data/LibriSpeech/train/1/a.flac"
    assert m.total_duration == pytest.approx(2.5)


@pytest.mark.parametrize("content, message", [
    ("id\tpath\nu1\ta.wav\nu1\tb.wav\n", "duplicate id 'u1'"),
    ("id\tpath\tduration\nu1\ta.wav\tfast\n", "m.tsv:2: duration 'fast' is not a number"),
    ("id\tpath\nu1\ta.wav\textra\n", "m.tsv:2: 3 fields but the header has 2"),
    ("id\tspeaker\tx\nu1\ta\tb\n", "m.tsv:1: header has no 'path' column"),
    ("", "empty manifest"),
])
def test_bad_tsv_manifests_name_file_and_line(tmp_path, content, message):
    (tmp_path / "m.tsv").write_text(content)
    with pytest.raises(FormatError) as e:
        load_manifest(tmp_path / "m.tsv")
    assert message in str(e.value)


def test_bad_jsonl_manifest_names_line(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "a.wav"}) + "\n{oops\n")
    with pytest.raises(FormatError, match=r"m.jsonl:2: invalid JSON"):
        load_manifest(tmp_path / "m.jsonl")


def test_missing_manifest(tmp_path):
    with pytest.raises(TextlessError, match="not found"):
        load_manifest(tmp_path / "nope.tsv")


@pytest.mark.parametrize("n, world", [(0, 1), (1, 3), (7, 3), (10, 4), (5, 8)])
def test_shards_are_disjoint_and_cover_everything(n, world):
    m = Manifest(AudioItem(f"u{i:03d}", f"/x/{i}.wav") for i in range(n))
    shards = [m.shard(r, world) for r in range(world)]
    ids = [i for s in shards for i in s.ids]
    assert sorted(ids) == m.ids and len(ids) == len(set(ids))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shards_do_not_depend_on_input_order():
    items = [AudioItem(f"u{i}", f"/x/{i}.wav") for i in range(9)]
    assert Manifest(items).shard(1, 3).ids == Manifest(reversed(items)).shard(1, 3).ids == ["u1", "u4", "u7"]


def test_bad_shard_arguments():
    with pytest.raises(ValueError, match="rank"):
        Manifest([]).shard(2, 2)


def test_shard_from_env(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert shard_from_env() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert shard_from_env() == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_from_env() == (1, 2)


def test_derive_id():
    assert derive_id("a/b/c.flac") == "a/b/c"
