"""SpeechTokenizer bundles and the `textless kmeans` / `textless tokenize` jobs (MFCC encoder: no weights needed)."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf

from textless.audio import load_audio
from textless.cli import main
from textless.data.corpus import load_bundled_corpus
from textless.data.units import read_units
from textless.errors import TextlessError
from textless.tokenizers.bpe import BPEConfig, UnitBPE
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders import load_encoder
from textless.tokenizers.kmeans import KMeans
from textless.tokenizers.tokenize_job import ShardJournal, TokenizeConfig, tokenize_dataset


@pytest.fixture(scope="module")
def valid_items():
    return list(load_bundled_corpus("valid"))[:8]


@pytest.fixture(scope="module")
def tokenizer(valid_items):
    encoder = load_encoder("mfcc")
    feats = np.concatenate([encoder.encode(load_audio(i.path, 16000)[0]).numpy() for i in valid_items])
    kmeans = KMeans(k=24, backend="torch", max_iter=20, seed=0).fit(feats)
    return SpeechTokenizer(encoder, kmeans)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, tokenizer):
    return tokenizer.save_pretrained(tmp_path_factory.mktemp("tok") / "mfcc-km24")


def _wavs(items):
    return [load_audio(i.path, 16000)[0] for i in items]


def test_units_are_deduplicated_kmeans_labels(tokenizer, valid_items):
    wav = _wavs(valid_items[:1])[0]
    feats = tokenizer.encoder.encode(wav).numpy()
    labels = tokenizer.kmeans.predict(feats)
    units = tokenizer.encode(wav, 16000)
    assert np.array_equal(np.repeat(units.ids, units.durations), labels)
    assert np.all(units.ids[1:] != units.ids[:-1])
    assert units.durations.sum() == tokenizer.encoder.num_frames(len(wav))


def test_batch_equals_one_by_one(tokenizer, valid_items):
    wavs = _wavs(valid_items)
    batched = tokenizer.encode_batch(wavs, 16000)
    for wav, units in zip(wavs, batched):
        single = tokenizer.encode(wav, 16000)
        assert np.array_equal(single.ids, units.ids) and np.array_equal(single.durations, units.durations)


def test_resampled_input(tokenizer, valid_items):
    import torchaudio.functional as AF

    wav = _wavs(valid_items[:1])[0]
    units = tokenizer.encode(AF.resample(wav, 16000, 8000), 8000)
    assert abs(len(units.ids) - len(tokenizer.encode(wav, 16000).ids)) < 0.2 * len(units.ids)


def test_bundle_round_trip_reproduces_units(tokenizer, tokenizer_dir, valid_items):
    loaded = SpeechTokenizer.from_pretrained(tokenizer_dir)
    assert loaded.identity() == tokenizer.identity()
    assert loaded.identity()["name"] == "mfcc-km24"
    for wav in _wavs(valid_items):
        a, b = tokenizer.encode(wav, 16000), loaded.encode(wav, 16000)
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.durations, b.durations)


def test_bundle_with_bpe_round_trip(tokenizer, tmp_path, valid_items):
    wavs = _wavs(valid_items)
    sequences = [tokenizer.encode(w, 16000).ids for w in wavs]
    bpe = UnitBPE.train(sequences, tokenizer.num_units, BPEConfig(vocab_size=60))
    with_bpe = SpeechTokenizer(tokenizer.encoder, tokenizer.kmeans, bpe=bpe)
    loaded = SpeechTokenizer.from_pretrained(with_bpe.save_pretrained(tmp_path / "bpe-tok"))
    assert loaded.vocab_size == bpe.vocab_size > tokenizer.num_units
    for wav, base in zip(wavs, sequences):
        tokens = loaded.encode(wav, 16000)
        assert np.array_equal(bpe.decode(tokens.ids), base)
        assert tokens.durations.sum() == tokenizer.encode(wav, 16000).durations.sum()


def test_bundle_errors(tokenizer, tmp_path):
    with pytest.raises(TextlessError, match="not a speech tokenizer bundle"):
        SpeechTokenizer.from_pretrained(tmp_path)
    with pytest.raises(TextlessError, match="dimension 5"):
        SpeechTokenizer(tokenizer.encoder, KMeans.from_centroids(np.zeros((3, 5), np.float32)))


# ------------------------------------------------------------------------------------------------- tokenize job
@pytest.fixture
def messy_dataset(tmp_path, valid_items):
    """A directory with 6 good files and 3 bad ones (empty, not audio, too short for the encoder)."""
    root = tmp_path / "data"
    root.mkdir()
    for item in valid_items[:6]:
        shutil.copy(item.path, root / f"{item.id}.flac")
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio")
    sf.write(root / "tiny.wav", np.zeros(100, dtype=np.float32), 16000)
    return root


def _cfg(data, tokenizer_dir, out, **kw):
    return TokenizeConfig(dataset=str(data), tokenizer=str(tokenizer_dir), output=str(out), progress=False,
                          batch_seconds=4.0, **kw)


def _as_dict(units_dir):
    return {s.id: (s.units.tolist(), s.durations.tolist()) for s in read_units(units_dir)}


def test_tokenize_reports_bad_files_and_completes_the_rest(messy_dataset, tokenizer_dir, tokenizer, tmp_path):
    log = []
    result = tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, tmp_path / "units"), log=log.append)
    units = read_units(result.output)
    assert len(units) == 6
    failed = {f["id"]: f["error"] for f in units.meta.extra["failures"]}
    assert set(failed) == {"empty", "text", "tiny"}
    assert "empty file" in failed["empty"] and "cannot decode" in failed["text"]
    assert any("failed tiny" in line for line in log)
    assert units.meta.tokenizer == tokenizer.identity() and units.meta.vocab_size == 24
    for seq in units:
        expected = tokenizer.encode(load_audio(messy_dataset / f"{seq.id}.flac", 16000)[0], 16000)
        assert np.array_equal(seq.units, expected.ids) and np.array_equal(seq.durations, expected.durations)
    assert not (tmp_path / "units.parts").exists()
    with pytest.raises(TextlessError, match="already exists"):
        tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, tmp_path / "units"))


def test_sharded_ranks_merge_into_one_dataset(messy_dataset, tokenizer_dir, tmp_path):
    whole = _as_dict(tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, tmp_path / "whole")).output)
    out = tmp_path / "sharded"
    first = tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, out, rank=1, world_size=3))
    assert first.output is None and not out.exists()
    assert tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, out, rank=0, world_size=3)).output is None
    last = tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, out, rank=2, world_size=3))
    assert last.output == out and _as_dict(out) == whole


def test_interrupted_run_resumes_without_duplicates(messy_dataset, tokenizer_dir, tmp_path, monkeypatch):
    whole = _as_dict(tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, tmp_path / "whole")).output)
    out = tmp_path / "units"
    calls = {"n": 0}
    original = ShardJournal.add

    def add_then_interrupt(self, records):
        original(self, records)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ShardJournal, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, out))
    monkeypatch.setattr(ShardJournal, "add", original)
    assert not out.exists()
    journal = ShardJournal(tmp_path / "units.parts", 0, 1)
    done_before = [r["id"] for r in journal.finished()]
    assert 0 < len(done_before) < 6
    with open(journal.units_path, "a") as f:  # a torn line, as a kill in the middle of a write leaves
        f.write('{"id": "torn", "units": [1, 2')
    log = []
    result = tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, out), log=log.append)
    assert any(f"{len(done_before)} of 9 utterances already done, 3 failed earlier" in line for line in log)
    assert _as_dict(result.output) == whole


def test_sigkilled_run_leaves_no_output_and_resumes(messy_dataset, tokenizer_dir, tmp_path):
    out = tmp_path / "units"
    script = textwrap.dedent(f"""
        import os, signal
        from textless.tokenizers import tokenize_job as job
        original, calls = job.ShardJournal.add, []
        def add(self, records):
            original(self, records)
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        job.ShardJournal.add = add
        job.tokenize_dataset(job.TokenizeConfig(dataset={str(messy_dataset)!r}, tokenizer={str(tokenizer_dir)!r},
                             output={str(out)!r}, batch_seconds=4.0, progress=False))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr
    assert not out.exists()
    assert main(["tokenize", f"dataset={messy_dataset}", f"tokenizer={tokenizer_dir}", f"output={out}",
                 "batch_seconds=4.0", "progress=false"]) == 0
    whole = _as_dict(tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, tmp_path / "whole")).output)
    assert _as_dict(out) == whole


# --------------------------------------------------------------------------------------------------- kmeans job
def test_kmeans_cli_fits_a_bundle_and_tokenizes(tmp_path, capsys):
    tok = tmp_path / "tok"
    assert main(["kmeans", "dataset=bundled:valid", "k=16", "backend=torch", "max_iter=10", f"output={tok}",
                 "progress=false"]) == 0
    config = json.loads((tok / "tokenizer.json").read_text())
    assert config["num_units"] == 16 and config["encoder"]["source"] == "mfcc"
    assert main(["tokenize", "dataset=bundled:valid", f"tokenizer={tok}", f"output={tmp_path / 'u'}",
                 "progress=false"]) == 0
    assert len(read_units(tmp_path / "u")) == len(load_bundled_corpus("valid"))
    # init_from imports existing centroids instead of fitting
    assert main(["kmeans", f"init_from={tok / 'kmeans.safetensors'}", f"output={tmp_path / 'tok2'}"]) == 0
    assert json.loads((tmp_path / "tok2" / "tokenizer.json").read_text())["num_units"] == 16


def test_kmeans_cli_refuses_untrusted_pickle(tmp_path, capsys):
    joblib = pytest.importorskip("joblib")
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=4, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(64, 39)))
    joblib.dump(km, tmp_path / "km.bin")
    assert main(["kmeans", f"init_from={tmp_path / 'km.bin'}", f"output={tmp_path / 'tok'}"]) == 2
    err = capsys.readouterr().err
    assert "trust_pickle" in err and len(err.strip().splitlines()) == 1
    assert main(["kmeans", f"init_from={tmp_path / 'km.bin'}", "trust_pickle=true", f"output={tmp_path / 'tok'}"]) == 0
