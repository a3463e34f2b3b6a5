"""`textless tokenize dialogues=true`: stereo files, pairs of mono files and mono + RTTM -> two-channel units."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from textless.audio import load_audio
from textless.data.corpus import load_bundled_corpus
from textless.dialogue.data import read_dialogues
from textless.dialogue.ingest import DialogueSource, load_dialogue_audio, read_dialogue_manifest
from textless.errors import FormatError, TextlessError
from textless.jobs.tokenize import ShardJournal, TokenizeConfig, tokenize_dataset
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders import load_encoder
from textless.tokenizers.kmeans import KMeans

SR = 16_000


@pytest.fixture(scope="module")
def speech():
    items = list(load_bundled_corpus("valid"))[:4]
    return [load_audio(i.path, SR)[0].numpy() for i in items]


@pytest.fixture(scope="module")
def tokenizer(speech):
    encoder = load_encoder("mfcc")
    feats = np.concatenate([encoder.encode(torch.from_numpy(w)).numpy() for w in speech])
    return SpeechTokenizer(encoder, KMeans(k=24, backend="torch", max_iter=20, seed=0).fit(feats))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tokenizer):
    return tokenizer.save_pretrained(tmp_path_factory.mktemp("tok") / "mfcc-km24")


def _place(length, *pieces):
    out = np.zeros(length, dtype=np.float32)
    for start, wav in pieces:
        out[start:start + len(wav)] += wav
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, speech):
    """Three conversations, one per layout, with the channels each should give (as read back from the files)."""
    root = tmp_path_factory.mktemp("calls")
    a, b, c, d = speech
    length = len(a) + len(b) + SR
    ch_a, ch_b = _place(length, (0, a)), _place(length, (len(a) + SR // 2, b))
    sf.write(root / "stereo.wav", np.stack([ch_a, ch_b], axis=1), SR, subtype="FLOAT")
    sf.write(root / "pair.A.wav", _place(length, (0, c)), SR, subtype="FLOAT")
    sf.write(root / "pair.B.wav", _place(length, (len(c) // 2, d)), SR, subtype="FLOAT")
    # mono call: speaker S1 at [0, 1.5) s, S2 at [1.0, 3.0) s (0.5 s of overlap), S1 again at [3.5, 4.0) s
    mono = _place(4 * SR, (0, a[: 4 * SR]), (SR, b[: 2 * SR] * 0.5))
    sf.write(root / "mono.wav", mono, SR, subtype="FLOAT")
    (root / "all.rttm").write_text("SPEAKER mono 1 0.000 1.500 <NA> <NA> S1 <NA> <NA>\n"
                                   "SPEAKER mono 1 1.000 2.000 <NA> <NA> S2 <NA> <NA>\n"
                                   "SPEAKER mono 1 3.500 0.500 <NA> <NA> S1 <NA> <NA>\n"
                                   "SPEAKER other 1 0.000 1.000 <NA> <NA> X <NA> <NA>\n")
    lines = [{"id": "stereo", "stereo": "stereo.wav", "speakers": ["ann", "bob"], "timeline": "ignored.json"},
             {"id": "pair", "channels": ["pair.A.wav", "pair.B.wav"]},
             {"id": "mono", "audio": "mono.wav", "rttm": "all.rttm", "speakers": ["S2", "S1"]}]
    (root / "dialogues.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    mono_read = load_audio(root / "mono.wav", SR)[0].numpy()
    mask = np.zeros((2, len(mono_read)), np.float32)
    mask[0, SR:3 * SR] = 1  # S2 (channel 0, as `speakers` orders them)
    mask[1, :int(1.5 * SR)] = mask[1, int(3.5 * SR):4 * SR] = 1
    expected = {"stereo": (load_audio(root / "stereo.wav", SR, mono=False)[0].numpy(), ["ann", "bob"]),
                "pair": (np.stack([load_audio(root / f"pair.{x}.wav", SR)[0].numpy() for x in "AB"]),
                         ["pair:A", "pair:B"]),
                "mono": (mask * mono_read, ["S2", "S1"])}
    return root, expected


def _cfg(manifest, tokenizer_dir, output, **kw):
    return TokenizeConfig(dataset=str(manifest), tokenizer=str(tokenizer_dir), output=str(output), encoding="jsonl",
                          dialogues=True, progress=False, **kw)


def test_each_layout_gives_its_channels(corpus):
    root, expected = corpus
    sources = {s.id: s for s in read_dialogue_manifest(root / "dialogues.jsonl")}
    assert [sources[k].kind for k in ("mono", "pair", "stereo")] == ["rttm", "channels", "stereo"]
    for conv_id, (channels, speakers) in expected.items():
        audio, got_speakers = load_dialogue_audio(sources[conv_id], SR)
        assert got_speakers == speakers
        np.testing.assert_array_equal(audio, channels)  # masks are exact 0/1: no tolerance needed


def test_tokenize_dialogues_gives_frame_level_units_per_channel(corpus, tokenizer, tokenizer_dir, tmp_path):
    root, expected = corpus
    result = tokenize_dataset(_cfg(root / "dialogues.jsonl", tokenizer_dir, tmp_path / "units"))
    ds = read_dialogues(result.output)
    assert ds.ids == ["mono", "pair", "stereo"] and result.failures == []
    assert ds.meta.vocab_size == 24 and not ds.meta.deduplicated and ds.meta.frame_rate == tokenizer.frame_rate
    assert ds.meta.tokenizer["deduplicate"] is False and ds.meta.tokenizer["kmeans_sha256"]
    for conv_id, (channels, speakers) in expected.items():
        want = tokenizer.frame_labels_batch([torch.from_numpy(c) for c in channels])
        got = ds.get(conv_id)
        assert got.units.tolist() == [w.tolist() for w in want] and list(got.speakers) == speakers
    assert ds.meta.extra["sources"]["mono"]["kind"] == "rttm"


def test_bad_conversations_are_reported_and_the_rest_completes(corpus, tokenizer_dir, tmp_path):
    root, _ = corpus
    sf.write(tmp_path / "short.wav", np.zeros(SR // 2, np.float32), SR)
    lines = [{"id": "ok", "stereo": str(root / "stereo.wav")},
             {"id": "one-channel", "stereo": str(root / "pair.A.wav")},
             {"id": "lengths", "channels": [str(root / "pair.A.wav"), str(tmp_path / "short.wav")]},
             {"id": "missing", "stereo": "nowhere.wav"},
             {"id": "no-turns", "audio": str(root / "mono.wav"), "rttm": str(root / "all.rttm")},
             {"id": "three", "audio": str(root / "mono.wav"), "rttm": str(root / "all.rttm"), "rttm_id": "other"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = tokenize_dataset(_cfg(tmp_path / "m.jsonl", tokenizer_dir, tmp_path / "units"))
    errors = {f["id"]: f["error"] for f in result.failures}
    assert read_dialogues(result.output).ids == ["ok"]
    assert "needs 2 channels, the file has 1" in errors["one-channel"]
    assert "short.wav: 0.50 s but pair.A.wav is" in errors["lengths"]
    assert "nowhere.wav" in errors["missing"]
    assert "no SPEAKER lines for file id 'no-turns'" in errors["no-turns"]
    assert "has speakers ['X']; name the two channels' speakers" in errors["three"]


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "x"}', r"m.jsonl:1: give exactly one of stereo, channels, audio \(got none\)"),
    ('{"id": "x", "audio": "a.wav"}', "needs an 'rttm' diarization"),
    ('{"id": "x", "stereo": "a.wav", "speakers": ["a"]}', "'speakers' must list the two channels' speakers"),
    ('{"id": "x", "stereo": "a"}\n{"id": "x", "stereo": "b"}', r"m.jsonl:2: duplicate id 'x' \(first on line 1\)"),
])
def test_bad_manifest_lines_are_named(tmp_path, line, message):
    (tmp_path / "m.jsonl").write_text(line + "\n")
    with pytest.raises(FormatError, match=message):
        read_dialogue_manifest(tmp_path / "m.jsonl")


def test_sharded_and_interrupted_runs_give_the_same_dataset(corpus, tokenizer_dir, tmp_path, monkeypatch):
    root, _ = corpus
    manifest = root / "dialogues.jsonl"
    whole = list(read_dialogues(tokenize_dataset(_cfg(manifest, tokenizer_dir, tmp_path / "whole")).output))
    assert tokenize_dataset(_cfg(manifest, tokenizer_dir, tmp_path / "sharded", rank=0, world_size=2)).output is None
    sharded = tokenize_dataset(_cfg(manifest, tokenizer_dir, tmp_path / "sharded", rank=1, world_size=2)).output
    assert list(read_dialogues(sharded)) == whole

    original = ShardJournal.add
    calls = []

    def add_then_interrupt(self, records):
        original(self, records)
        calls.append(records[0]["id"])
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ShardJournal, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        tokenize_dataset(_cfg(manifest, tokenizer_dir, tmp_path / "resumed"))
    assert not (tmp_path / "resumed").exists()
    result = tokenize_dataset(_cfg(manifest, tokenizer_dir, tmp_path / "resumed"))
    assert len(calls) == 3 and len(set(calls)) == 3  # the finished conversation was not tokenized again
    assert list(read_dialogues(result.output)) == whole


def test_a_directory_of_stereo_files(corpus, tokenizer_dir, tmp_path):
    root, _ = corpus
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "x.wav").write_bytes((root / "stereo.wav").read_bytes())
    ds = read_dialogues(tokenize_dataset(_cfg(tmp_path / "calls", tokenizer_dir, tmp_path / "units")).output)
    assert ds.ids == ["x"] and ds[0].speakers == ("x:A", "x:B")
    with pytest.raises(TextlessError, match="pair.A.wav: a stereo conversation needs 2 channels"):
        load_dialogue_audio(DialogueSource("bad", "stereo", [root / "pair.A.wav"]), SR)
