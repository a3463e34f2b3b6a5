"""SpeechTokenizer bundles and the `textless kmeans` / `textless tokenize` jobs (MFCC encoder: no weights needed)."""

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch

from textless.audio import load_audio
from textless.cli import main
from textless.data.corpus import load_bundled_corpus
from textless.data.units import read_units
from textless.errors import TextlessError
from textless.jobs.tokenize import ShardJournal, TokenizeConfig, tokenize_dataset
from textless.tokenizers.bpe import BPEConfig, UnitBPE
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders import load_encoder
from textless.tokenizers.kmeans import KMeans
from textless.utils.runs import ResumeMismatchError


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
    """Audio at another rate is resampled to the tokenizer's rate (textless.audio.resample) before encoding."""
    from textless.audio import resample

    wav8k = resample(_wavs(valid_items[:1])[0], 16000, 8000)
    units = tokenizer.encode(wav8k, 8000)
    expected = tokenizer.encode(resample(wav8k, 8000, 16000), 16000)
    assert np.array_equal(units.ids, expected.ids) and np.array_equal(units.durations, expected.durations)
    assert units.durations.sum() == tokenizer.encoder.num_frames(2 * len(wav8k))


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


def test_bundle_units_decode_back_to_units_and_durations(tokenizer, valid_items):
    wavs = _wavs(valid_items)
    plain = [tokenizer.encode(w, 16000) for w in wavs]
    bpe = UnitBPE.train([u.ids for u in plain], tokenizer.num_units, BPEConfig(vocab_size=60))
    with_bpe = SpeechTokenizer(tokenizer.encoder, tokenizer.kmeans, bpe=bpe)
    for wav, base in zip(wavs, plain):
        tokens = with_bpe.encode(wav, 16000)
        ids, durations = with_bpe.to_units(tokens)
        assert np.array_equal(ids, base.ids) and np.array_equal(durations, base.durations)
    assert tokenizer.to_units(plain[0])[0] is plain[0].ids


def test_bundle_keeps_encoder_options(tmp_path, valid_items):
    """Non-default encoder options (MFCC sizes; SSL dtype / normalize) survive save/load; kwargs override them."""
    wav = _wavs(valid_items[:1])[0]
    encoder = load_encoder("mfcc", n_mfcc=20, deltas=False)
    feats = encoder.encode(wav).numpy()
    tok = SpeechTokenizer(encoder, KMeans(k=8, backend="torch", max_iter=5, seed=0).fit(feats))
    loaded = SpeechTokenizer.from_pretrained(tok.save_pretrained(tmp_path / "mfcc20"))
    assert loaded.encoder.dim == 20 and not loaded.encoder.deltas
    assert np.array_equal(loaded.encode(wav, 16000).ids, tok.encode(wav, 16000).ids)
    config = json.loads((tmp_path / "mfcc20" / "tokenizer.json").read_text())
    assert config["encoder"]["options"] == {"n_mfcc": 20, "deltas": False, "sample_rate": 16000, "frame_rate": 100.0}

    from transformers import HubertConfig, HubertModel

    from textless.tokenizers.encoders import SSLEncoder

    hf = tmp_path / "hubert"
    HubertModel(HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                             conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                             num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)).save_pretrained(hf)
    ssl = load_encoder(hf, 1, normalize=True, dtype="bfloat16")
    assert isinstance(ssl, SSLEncoder)
    km = KMeans.from_centroids(np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32))
    reloaded = SpeechTokenizer.from_pretrained(SpeechTokenizer(ssl, km).save_pretrained(tmp_path / "ssl"))
    assert reloaded.encoder.normalize and reloaded.encoder.dtype == torch.bfloat16
    assert SpeechTokenizer.from_pretrained(tmp_path / "ssl", dtype=None).encoder.dtype is None


def test_too_short_waveform_is_named(tokenizer):
    with pytest.raises(TextlessError, match="waveform 1: 100 samples is too short"):
        tokenizer.encode_batch([np.zeros(16000, np.float32), np.zeros(100, np.float32)], 16000)


def test_public_names_import_from_the_package():
    import textless.tokenizers as pkg
    from textless.tokenizers import KMeans as K2
    from textless.tokenizers import SpeechTokenizer as S2
    from textless.tokenizers import load_encoder as L2

    assert (K2, S2, L2) == (KMeans, SpeechTokenizer, load_encoder)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pkg.nope  # noqa: B018


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


def test_tokenize_reports_bad_files_and_completes_the_rest(messy_dataset, tokenizer_dir, tokenizer, tmp_path, logs):
    log = logs
    result = tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, tmp_path / "units"))
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


def test_interrupted_run_resumes_without_duplicates(messy_dataset, tokenizer_dir, tmp_path, monkeypatch, logs):
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
    log = logs
    result = tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, out))
    assert any(f"{len(done_before)} of 9 utterances already done, 3 failed earlier" in line for line in log)
    assert _as_dict(result.output) == whole


def _interrupt_after_first_batch(monkeypatch, cfg):
    original = ShardJournal.add

    def add_then_interrupt(self, records):
        original(self, records)
        raise KeyboardInterrupt

    monkeypatch.setattr(ShardJournal, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        tokenize_dataset(cfg)
    monkeypatch.setattr(ShardJournal, "add", original)


def test_a_partial_run_is_resumed_only_with_the_same_tokenizer_and_dataset(messy_dataset, tokenizer, tokenizer_dir,
                                                                           valid_items, tmp_path, monkeypatch):
    """Killed, then rerun into the same output with another tokenizer (another k), another tokenizer of the same k,
    or another dataset: refused, naming both sides; nothing merged; restart=true starts over."""
    out = tmp_path / "units"
    _interrupt_after_first_batch(monkeypatch, _cfg(messy_dataset, tokenizer_dir, out))
    feats = np.concatenate([tokenizer.encoder.encode(w).numpy() for w in _wavs(valid_items[:3])])
    others = {"k12": SpeechTokenizer(tokenizer.encoder, KMeans(k=12, backend="torch", max_iter=5, seed=0).fit(feats)),
              "k24": SpeechTokenizer(tokenizer.encoder, KMeans(k=24, backend="torch", max_iter=5, seed=3).fit(feats))}
    for name, other in others.items():
        other_dir = other.save_pretrained(tmp_path / name)
        with pytest.raises(ResumeMismatchError) as err:
            tokenize_dataset(_cfg(messy_dataset, other_dir, out))
        message = str(err.value)
        assert f"tokenizer: {tokenizer.unit_identity().describe()!r} there, {other.unit_identity().describe()!r} now" \
            in message, message
        assert "restart=true" in message and not out.exists()
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    for f in sorted(messy_dataset.iterdir())[:4]:
        shutil.copy(f, smaller / f.name)
    with pytest.raises(ResumeMismatchError, match=r"dataset: '.*data: 9 utterances \(ids \w+\)' there, "
                                                   r"'.*smaller: 4 utterances \(ids \w+\)' now"):
        tokenize_dataset(_cfg(smaller, tokenizer_dir, out))
    # the same command resumes; restart=true with another tokenizer starts over and gives its own units only
    k12 = tokenize_dataset(_cfg(messy_dataset, tmp_path / "k12", tmp_path / "fresh")).output
    assert tokenize_dataset(_cfg(messy_dataset, tmp_path / "k12", out, restart=True)).output == out
    assert _as_dict(out) == _as_dict(k12) and read_units(out).meta.vocab_size == 12


def test_a_restarted_rank_does_not_merge_the_shards_of_the_old_run(messy_dataset, tokenizer, tokenizer_dir,
                                                                    valid_items, tmp_path):
    """Two ranks finished with tokenizer A, the merge not yet done; rank 0 restarts with tokenizer B: rank 1's shard
    (tokenizer A) does not count as done, so nothing is published until rank 1 reruns with B too."""
    out = tmp_path / "units"
    assert tokenize_dataset(_cfg(messy_dataset, tokenizer_dir, out, rank=1, world_size=2)).output is None
    feats = np.concatenate([tokenizer.encoder.encode(w).numpy() for w in _wavs(valid_items[:3])])
    other = SpeechTokenizer(tokenizer.encoder, KMeans(k=12, backend="torch", max_iter=5, seed=0).fit(feats))
    other_dir = other.save_pretrained(tmp_path / "k12")
    assert tokenize_dataset(_cfg(messy_dataset, other_dir, out, rank=0, world_size=2, restart=True)).output is None
    assert not out.exists()
    assert tokenize_dataset(_cfg(messy_dataset, other_dir, out, rank=1, world_size=2, restart=True)).output == out
    assert _as_dict(out) == _as_dict(tokenize_dataset(_cfg(messy_dataset, other_dir, tmp_path / "whole")).output)


def test_sigkilled_run_leaves_no_output_and_resumes(messy_dataset, tokenizer_dir, tmp_path):
    out = tmp_path / "units"
    script = textwrap.dedent(f"""
        import os, signal
        from textless.jobs import tokenize as job
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


def test_tokenize_with_bpe_writes_a_bpe_dataset(messy_dataset, tokenizer, valid_items, tmp_path):
    """BPE tokens may repeat (two runs of the same pair): the dataset says bpe=true and keeps them."""
    sequences = [tokenizer.encode(w, 16000).ids for w in _wavs(valid_items)]
    bpe = UnitBPE.train(sequences, tokenizer.num_units, BPEConfig(vocab_size=80))
    with_bpe = SpeechTokenizer(tokenizer.encoder, tokenizer.kmeans, bpe=bpe)
    bundle = with_bpe.save_pretrained(tmp_path / "bpe-tok")
    out = tokenize_dataset(_cfg(messy_dataset, bundle, tmp_path / "bpe-units")).output
    ds = read_units(out)
    assert ds.meta.bpe and ds.meta.deduplicated and ds.meta.vocab_size == bpe.vocab_size
    assert json.loads((out / "meta.json").read_text())["bpe"] is True
    for seq in ds:
        wav = load_audio(messy_dataset / f"{seq.id}.flac", 16000)[0]
        expected = with_bpe.encode(wav, 16000)
        assert np.array_equal(seq.units, expected.ids) and np.array_equal(seq.durations, expected.durations)
    # a repeated token is legal in a BPE dataset, not in a plain deduplicated one
    from textless.data.units import UnitMeta, UnitSequence, write_units

    repeat = [UnitSequence("r", np.array([30, 30, 2]), np.array([3, 4, 1]))]
    assert write_units(tmp_path / "ok", repeat, UnitMeta({"name": "t"}, 50, 90, True, bpe=True)).exists()
    with pytest.raises(TextlessError, match="consecutive duplicate unit 30"):
        write_units(tmp_path / "bad", repeat, UnitMeta({"name": "t"}, 50, 90, True))
    with pytest.raises(ValueError, match="'deduplicated' must be true"):
        UnitMeta({"name": "t"}, 50, 90, False, bpe=True)


def test_merge_lock(tmp_path, logs):
    """A lock of a dead process on this host is taken over; a live one or another host's is respected."""
    import os
    import socket

    from textless.utils.shards import take_merge_lock

    lock = tmp_path / "merge.lock"
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")  # alive: this process
    assert not take_merge_lock(lock, tmp_path / "out") and "is writing" in logs[-1]
    lock.write_text("some-other-host 12")
    assert not take_merge_lock(lock, tmp_path / "out")
    assert "some-other-host:12" in logs[-1] and f"delete {lock}" in logs[-1]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{socket.gethostname()} {dead.pid}")
    assert take_merge_lock(lock, tmp_path / "out")
    assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
    lock.unlink()
    assert take_merge_lock(lock, tmp_path / "out")
    assert not take_merge_lock(tmp_path / "gone" / "merge.lock", tmp_path / "out")
    assert "already wrote" in logs[-1]


# --------------------------------------------------------------------------------------------------- kmeans job
def test_frame_reservoir_is_a_uniform_sample_within_capacity():
    from textless.jobs.kmeans import FrameReservoir

    n, capacity, trials = 60, 10, 3000
    frames = np.arange(n, dtype=np.float32)[:, None]
    counts = np.zeros(n)
    for seed in range(trials):
        reservoir = FrameReservoir(capacity, seed)
        for part in np.split(frames, [7, 8, 30, 31]):  # uneven batches, one of them empty-ish
            reservoir.add(part)
        sample = reservoir.sample()[:, 0].astype(int)
        assert sample.shape == (capacity,) and len(set(sample)) == capacity and reservoir.rows.shape == (capacity, 1)
        counts[sample] += 1
    # every frame is kept with probability capacity / n = 1/6: 500 of 3000 trials, binomial sd ~20
    assert np.abs(counts - trials * capacity / n).max() < 6 * np.sqrt(trials * (capacity / n) * (1 - capacity / n))
    small = FrameReservoir(100, 0)
    small.add(frames[:5])
    assert np.array_equal(small.sample(), frames[:5])


def test_kmeans_job_skips_bad_files(messy_dataset, tmp_path, logs):
    """Unreadable and too-short files are reported and skipped; long files are encoded in windows."""
    from textless.jobs.kmeans import KMeansJobConfig, fit_tokenizer

    cfg = KMeansJobConfig(dataset=str(messy_dataset), k=8, backend="torch", max_iter=5, max_frames=500,
                          bpe_vocab_size=40, output=str(tmp_path / "tok"), progress=False, chunk_seconds=1.0)
    tok = fit_tokenizer(cfg)
    skipped = sorted(line.split()[1].rstrip(":") for line in logs if line.startswith("skipped"))
    assert skipped == ["empty", "text", "tiny"]
    assert any("sampled 500 of" in line for line in logs)
    assert tok.bpe is not None and tok.num_units == 8


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
    saved = KMeans.load(tmp_path / "tok" / "kmeans.safetensors")  # the safe copy records where it came from
    assert saved.metadata["encoder"] == "mfcc" and saved.metadata["init_from"] == str(tmp_path / "km.bin")
    np.testing.assert_array_equal(saved.exact_centroids, km.cluster_centers_)  # float64 kept


def test_a_killed_kmeans_fit_resumes_from_its_feature_sample_and_only_with_the_same_inputs(tmp_path, monkeypatch,
                                                                                           logs):
    import textless.jobs.kmeans as job
    from textless.utils.runs import ResumeMismatchError

    class Killed(BaseException):
        pass

    def killed_fit(self, features, metadata=None):
        raise Killed

    cfg = job.KMeansJobConfig(dataset="bundled:valid", k=8, backend="torch", max_iter=5, max_frames=2000,
                              output=str(tmp_path / "tok"), progress=False)
    real_fit = job.KMeans.fit
    monkeypatch.setattr(job.KMeans, "fit", killed_fit)
    with pytest.raises(Killed):
        job.fit_tokenizer(cfg)
    saved = np.load(tmp_path / "tok.parts" / "features.npy")
    assert saved.shape == (2000, 39) and not (tmp_path / "tok").exists()
    with pytest.raises(ResumeMismatchError, match=r"dataset: '.*valid.tsv: 15 utterances .*' there, '.*train.tsv: .*' now"):
        job.fit_tokenizer(job.KMeansJobConfig(**{**cfg.__dict__, "dataset": "bundled:train"}))
    monkeypatch.setattr(job.KMeans, "fit", real_fit)
    passes = []
    monkeypatch.setattr(job, "_collect_features", lambda *a, **k: passes.append(1))
    tok = job.fit_tokenizer(job.KMeansJobConfig(**{**cfg.__dict__, "k": 6}))  # a new k reuses the sample
    assert passes == [] and tok.num_units == 6 and any("resuming: the feature sample" in line for line in logs)
    assert not (tmp_path / "tok.parts").exists()


def test_the_progress_bar_counts_seconds_of_audio_with_one_decimal(messy_dataset, tokenizer_dir, tmp_path, capsys):
    """It used to show float sums such as ``231.60000000000002s``."""
    import dataclasses
    import re

    tokenize_dataset(dataclasses.replace(_cfg(messy_dataset, tokenizer_dir, tmp_path / "units"), progress=True))
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert re.fullmatch(r"tokenize rank 0/1: \d+\.\d s of audio \[00:\d\d\]", last), last  # no durations up front
    tokenize_dataset(TokenizeConfig(dataset="bundled:valid", tokenizer=str(tokenizer_dir), output=str(tmp_path / "v"),
                                    batch_seconds=4.0))  # a manifest with durations: a bar to 100 %
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    done = re.search(r"100%.*\| (\d+\.\d)/(\d+\.\d) s of audio \[", last)
    assert done and done.group(1) == done.group(2), last
