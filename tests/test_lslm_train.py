"""train-lslm: preparation (units + listening features, cached), IRQ targets in the trained batches, exact resume
after SIGKILL, the saved model, config errors. Data: a hand-made build-lslm directory (bundled corpus speech; the
listening channel silent or holding another utterance from a known onset), an MFCC tokenizer (100 Hz units)."""

import json
import signal

import numpy as np
import pytest
import soundfile as sf
import torch
from kill_fixtures import kill_after_checkpoint

from textless.audio import load_audio
from textless.data.corpus import load_bundled_corpus
from textless.dialogue.listening import ListeningChannel, ListeningConfig
from textless.dialogue.lslm import ListenSpeakLM
from textless.dialogue.lslm.data import LSLMItem
from textless.dialogue.lslm.generate import ListenSpeakResult
from textless.dialogue.lslm.train import LSLMObjective, LSLMTrainConfig, prepare_split, train_lslm
from textless.errors import ConfigError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders.mfcc import MFCCEncoder
from textless.tokenizers.kmeans import KMeans
from textless.training.checkpoint import list_checkpoints

SR = 16000
ONSET = 1.0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(build-lslm-like directory, MFCC tokenizer directory): 6 train / 2 valid examples, every second one
    interrupted at 1.0 s by another utterance."""
    root = tmp_path_factory.mktemp("lslm")
    speech = [load_audio(item.path, SR)[0].numpy() for item in list(load_bundled_corpus("valid"))[:8]]
    encoder = MFCCEncoder()
    feats = torch.cat([encoder.encode(torch.from_numpy(w)) for w in speech]).numpy()
    tokenizer = SpeechTokenizer(encoder, KMeans(k=16, backend="torch", max_iter=10, seed=0).fit(feats),
                                deduplicate=False)
    tokenizer.save_pretrained(root / "tok")
    records = []
    for i, wav in enumerate(speech):
        listening = np.zeros_like(wav)
        interrupted = i % 2 == 1
        if interrupted:
            other = speech[(i + 3) % len(speech)]
            start = int(ONSET * SR)
            piece = other[: len(wav) - start]
            listening[start:start + len(piece)] = piece
        (root / "audio").mkdir(exist_ok=True)
        sf.write(root / "audio" / f"{i}.speaking.wav", wav, SR)
        sf.write(root / "audio" / f"{i}.listening.wav", listening, SR)
        records.append({"id": f"ex{i}", "split": "train" if i < 6 else "valid", "speaking": f"audio/{i}.speaking.wav",
                        "listening": f"audio/{i}.listening.wav", "sample_rate": SR, "samples": len(wav),
                        "seconds": len(wav) / SR, "text": "", "speaking_voice": "corpus",
                        "onset": ONSET if interrupted else None,
                        "interruption": {"word": "corpus", "voice": "corpus", "start": ONSET, "seconds": 1.0}
                        if interrupted else None, "noise": None, "listening_gain": 1.0})
    (root / "data").mkdir()
    for r in records:
        for key in ("speaking", "listening"):
            r[key] = "../" + r[key]
    (root / "data" / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root / "data", root / "tok"


def config(data, out, **kw):
    directory, tok = data
    fields = {"train_data": str(directory), "units_tokenizer": str(tok), "init": "scratch:tiny",
              "listening": {"encoder": "mfcc", "frame_rate": 100.0}, "output_dir": str(out), "max_steps": 4,
              "batch_size": 2, "warmup_steps": 1, "eval_every": 2, "save_every": 2, "log_every": 1, "progress": False,
              "tensorboard": False, "precision": "fp32", "lr": 1e-2, **kw}
    return LSLMTrainConfig(**fields)


def test_prepare_units_features_and_cache(data, tmp_path):
    directory, tok = data
    tokenizer = SpeechTokenizer.from_pretrained(tok)
    channel = ListeningChannel(ListeningConfig(encoder="mfcc", frame_rate=100.0))
    cache = tmp_path / "train.npz"
    items = prepare_split(directory, "train", tokenizer, channel, cache)
    assert [i.id for i in items] == [f"ex{i}" for i in range(6)] and [i.onset for i in items][:2] == [None, ONSET]
    for item in items:
        wav, _ = load_audio(directory / f"../audio/{item.id[2:]}.speaking.wav", SR)
        assert np.array_equal(item.units, tokenizer.frame_labels_batch([wav])[0])
        assert item.listen.shape == (len(item.units), channel.dim)
    assert np.abs(items[0].listen).max() == np.abs(channel(torch.zeros(1, 16000))[0].numpy()).max()  # silence
    again = prepare_split(directory, "train", tokenizer, channel, cache)
    assert all(np.array_equal(a.listen, b.listen) and np.array_equal(a.units, b.units) for a, b in zip(items, again))
    stamp = cache.stat().st_mtime_ns
    prepare_split(directory, "train", tokenizer, channel, cache)
    assert cache.stat().st_mtime_ns == stamp                       # the cache answered
    other = ListeningChannel(ListeningConfig(encoder="mfcc", frame_rate=50.0))
    assert prepare_split(directory, "train", tokenizer, other, cache)[0].listen.shape[0] == len(items[0].units)
    assert cache.stat().st_mtime_ns != stamp                       # another listening channel: prepared again


def test_batches_end_interrupted_utterances_with_irq(data, tmp_path):
    objective = LSLMObjective(config(data, tmp_path / "o", batch_size=6))
    from textless.training.objective import Context

    class Acc:
        device = torch.device("cpu")

    objective.build(Context(Acc(), 0, 1, True, False, "no", tmp_path), None, None)
    batch = next(objective.batches(0))
    vocab = objective.model.vocab
    irq, rate = objective.model.irq_id, objective.frame_rate
    for row in range(6):
        labels = batch.labels[row][batch.labels[row] != -100]
        if batch.interrupted[row]:
            assert labels[-1] == irq and len(labels) == round((ONSET + 0.5) * rate) + 1
        else:
            assert labels[-1] == vocab.eos_id
    assert int(batch.interrupted.sum()) == 3


def test_exact_resume_after_sigkill_and_the_saved_model(data, tmp_path):
    N, k = 4, 2
    reference = train_lslm(config(data, tmp_path / "ref", max_steps=N))
    out = tmp_path / "killed"
    cfg = config(data, out, max_steps=N)
    entry = "textless.dialogue.lslm.train:train_lslm"
    assert kill_after_checkpoint(cfg, k, entry, tmp_path / "killed.stderr") == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(out)] == [f"step-{k:07d}"]
    resumed = train_lslm(cfg)
    assert resumed.resumed_from == k and resumed.history == reference.history
    assert resumed.valid_history == reference.valid_history
    a = ListenSpeakLM.from_pretrained(reference.final_model).state_dict()
    model = ListenSpeakLM.from_pretrained(out / "final")
    b = model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert model.config.fusion == "middle" and model.config.listening["encoder"] == "mfcc"
    assert "irq" in model.vocab.specials
    directory, tok = data
    train = prepare_split(directory, "train", SpeechTokenizer.from_pretrained(tok),
                          ListeningChannel(ListeningConfig(encoder="mfcc", frame_rate=100.0)))
    rms = torch.from_numpy(np.concatenate([i.listen for i in train])).pow(2).mean(dim=0).sqrt()
    torch.testing.assert_close(model.projection.input_scale, 1 / rms)  # the training features' scale
    assert len(reference.valid_history["speak_nll"]) == 2 and resumed.extra["seen"] == N * 2


def test_config_errors(data, tmp_path):
    for kw, match in [({"train_data": ""}, "train_data is required"), ({"init": "nowhere"}, "init must be"),
                      ({"fusion": "cross"}, "fusion must be one of"),
                      ({"max_steps": None}, "give max_steps")]:
        with pytest.raises(ConfigError, match=match):
            train_lslm(config(data, tmp_path / "x", **kw))


def test_the_command_runs_the_recipe(data, tmp_path, capsys):
    from textless.cli import main

    directory, tok = data
    out = tmp_path / "run"
    argv = ["train-lslm", f"train_data={directory}", f"units_tokenizer={tok}", "+listening.frame_rate=100.0",
            "fusion=late", f"output_dir={out}", "batch_size=2", "max_steps=2", "eval_every=2", "save_every=2",
            "log_every=1", "progress=false", "tensorboard=false"]
    assert main(argv) == 0
    captured = capsys.readouterr().out
    assert "step 2/2 loss" in captured and "speak_nll" in captured and "late fusion" in captured
    assert ListenSpeakLM.from_pretrained(out / "final").config.fusion == "late"
    assert main([*argv, "fusion=cross"]) == 2
    assert "fusion must be one of" in capsys.readouterr().err


def test_eval_duplex_runs_a_trained_model_on_a_split(data, tmp_path, capsys):
    from textless.cli import main
    from textless.dialogue.interaction import lslm_outcome

    directory, tok = data
    run = train_lslm(config(data, tmp_path / "run", max_steps=2))
    out = tmp_path / "eval"
    argv = ["eval-duplex", f"output={out}", f"lslm.model={run.final_model}", f"lslm.data={directory}",
            "lslm.split=valid", f"lslm.units_tokenizer={tok}", "lslm.prompt_seconds=0.2"]
    assert main(argv) == 0
    assert "precision" in capsys.readouterr().out
    report = json.loads((out / "lslm_report.json").read_text())
    assert [p["id"] for p in report["per_item"]] == ["ex6", "ex7"] and report["prompt_frames"] == 20
    outcomes = [lslm_outcome(p["onset"], p["stop_time"]) for p in report["per_item"]]
    scores = report["interaction"]["all"]
    assert [scores[k] for k in ("tp", "fn", "fp", "tn")] == [outcomes.count(k) for k in ("TP", "FN", "FP", "TN")]
    assert report["interaction"]["noisy_listening"]["items"] == 0 and report["speaking_nll"]["all"]["items"] == 1
    assert report["speaking_nll"]["all"] == report["speaking_nll"]["clean_listening"]
    assert report["speaking_nll"]["all"]["with_listening"] > 0 and (out / "irq_ex7.png").is_file()
    assert main(["eval-duplex", f"output={out}", f"lslm.model={run.final_model}"]) == 2
    assert "lslm.data" in capsys.readouterr().err


def test_vanilla_is_the_plain_lm_trained_on_the_same_utterances(data, tmp_path):
    from textless.training.objective import Context

    class Acc:
        device = torch.device("cpu")

    objective = LSLMObjective(config(data, tmp_path / "o", batch_size=6, vanilla=True, cache_dir=str(tmp_path / "c")))
    objective.build(Context(Acc(), 0, 1, True, False, "no", tmp_path), None, None)
    batch = next(objective.batches(0))
    ends = [labels[labels != -100][-1] for labels in batch.labels]
    assert all(e == objective.model.vocab.eos_id for e in ends) and batch.listen.abs().sum() == 0
    run = train_lslm(config(data, tmp_path / "vanilla", max_steps=2, vanilla=True, cache_dir=str(tmp_path / "c")))
    model = ListenSpeakLM.from_pretrained(run.final_model)
    assert all(torch.count_nonzero(p) == 0 for p in model.projection.parameters())  # it never heard anything
    assert (tmp_path / "c" / "train.npz").is_file() and not (tmp_path / "vanilla" / "prepared").exists()


def test_character_prefix_training_and_intelligibility(data, tmp_path, monkeypatch):
    from textless.jobs import eval_lslm
    from textless.vocoders.model import UnitHiFiGANConfig, UnitVocoder

    run = train_lslm(config(data, tmp_path / "tts", max_steps=2, prefix="characters"))
    model = ListenSpeakLM.from_pretrained(run.final_model)
    assert model.config.prefix == "characters" and "chr:a" in model.vocab.specials
    with pytest.raises(ConfigError, match="prefix must be one of"):
        train_lslm(config(data, tmp_path / "x", prefix="phones"))
    config_ = UnitHiFiGANConfig(num_embeddings=16, embedding_dim=8, upsample_rates=[5, 4, 8],
                                upsample_kernel_sizes=[9, 8, 16], upsample_initial_channel=8,
                                resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]], sampling_rate=16000)
    UnitVocoder.from_config(config_, frame_rate=100.0).eval().save_pretrained(tmp_path / "voc")

    class FakeASR:  # the first utterance heard right, the other one not at all
        sample_rate = 16000

        def __init__(self):
            self.calls = []

        def transcribe(self, wavs):
            self.calls.append([len(w) for w in wavs])
            return ["the first words"] + [""] * (len(wavs) - 1)

    asr = FakeASR()
    monkeypatch.setattr(eval_lslm, "load_asr", lambda spec, device: asr)
    items = [LSLMItem("a", np.arange(10) % 16, np.zeros((10, 40), np.float32), None, text="The first words"),
             LSLMItem("b", np.arange(8) % 16, np.zeros((8, 40), np.float32), None, text="two more")]
    results = [ListenSpeakResult(i.units, "eos", len(i.units), np.zeros(0, np.float32), i.units) for i in items]
    report = eval_lslm.intelligibility(results, items, eval_lslm.LSLMEvalConfig(vocoder=str(tmp_path / "voc"),
                                                                               asr="fake"))
    assert asr.calls == [[10 * 160, 8 * 160]]                 # 100 Hz frames voiced at 16 kHz
    assert report["errors"] == 2 and report["reference_words"] == 5 and report["wer"] == pytest.approx(0.4)


def test_an_unreadable_example_is_reported_and_skipped(data, tmp_path, logs):
    import shutil

    directory, tok = data
    copy = tmp_path / "copy"
    shutil.copytree(directory.parent, copy)
    (copy / "audio" / "2.listening.wav").write_bytes(b"not a wav")
    tokenizer = SpeechTokenizer.from_pretrained(tok)
    channel = ListeningChannel(ListeningConfig(encoder="mfcc", frame_rate=100.0))
    items = prepare_split(copy / "data", "train", tokenizer, channel, tmp_path / "c.npz")
    assert [i.id for i in items] == ["ex0", "ex1", "ex3", "ex4", "ex5"]
    assert any("skipping example ex2" in line and "2.listening.wav" in line for line in logs)
    cached = prepare_split(copy / "data", "train", tokenizer, channel, tmp_path / "c.npz")
    assert [i.id for i in cached] == [i.id for i in items]
    assert all(np.array_equal(a.units, b.units) for a, b in zip(items, cached, strict=True))


@pytest.fixture(scope="module")
def hubert_data(data, tmp_path_factory):
    """The same set with 50 Hz units of a tiny random HuBERT (a saved HF directory), the listening encoder to train."""
    from transformers import HubertConfig, HubertModel

    from textless.tokenizers.encoders.registry import load_encoder

    root = tmp_path_factory.mktemp("hubert")
    torch.manual_seed(0)
    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                             num_conv_pos_embedding_groups=4)).save_pretrained(root / "hubert")
    encoder = load_encoder(str(root / "hubert"), 2)
    speech = [load_audio(item.path, SR)[0] for item in list(load_bundled_corpus("valid"))[:4]]
    feats = torch.cat([encoder.encode(w) for w in speech]).numpy()
    SpeechTokenizer(encoder, KMeans(k=16, backend="torch", max_iter=10, seed=0).fit(feats),
                    deduplicate=False).save_pretrained(root / "tok")
    return data[0], root / "tok", root / "hubert"


def test_a_trainable_listening_encoder_trains_saves_and_resumes(hubert_data, tmp_path):
    from textless.tokenizers.encoders.registry import load_encoder

    directory, tok, hubert = hubert_data
    listening = {"encoder": str(hubert), "layer": 2, "frame_rate": 50.0, "trainable": True}
    kw = {"units_tokenizer": str(tok), "listening": listening, "max_steps": 4, "lr": 3e-3}
    reference = train_lslm(config((directory, tok), tmp_path / "ref", **kw))
    out = tmp_path / "killed"
    cfg = config((directory, tok), out, **kw)
    assert kill_after_checkpoint(cfg, 2, "textless.dialogue.lslm.train:train_lslm", tmp_path / "k.stderr") \
        == -signal.SIGKILL
    resumed = train_lslm(cfg)
    assert resumed.resumed_from == 2 and resumed.history == reference.history
    model = ListenSpeakLM.from_pretrained(out / "final")
    assert model.config.listening["encoder"] == str((out / "final" / "listener").resolve())
    trained = load_encoder(model.config.listening["encoder"], 2).model.state_dict()
    again = load_encoder(str(reference.final_model / "listener"), 2).model.state_dict()
    original = load_encoder(str(hubert), 2).model.state_dict()
    assert all(torch.equal(trained[k], again[k]) for k in trained)          # exact resume, the encoder included
    assert any(not torch.equal(trained[k], original[k]) for k in trained)   # and the encoder did train
    with pytest.raises(ConfigError, match="differentiable forward"):
        train_lslm(config((directory, tok), tmp_path / "mfcc", units_tokenizer=str(tok),
                          listening={"encoder": "mfcc", "frame_rate": 50.0, "trainable": True}))


def test_only_ssl_encoders_train_in_train_lslm(hubert_data, tmp_path, monkeypatch):
    from textless.dialogue.lslm import train as train_module

    directory, tok, hubert = hubert_data
    monkeypatch.setattr(train_module, "TRAINABLE_ENCODERS", ())  # as for a Whisper encoder: no saver for it
    with pytest.raises(ConfigError, match="trains SSL encoders .* not SSLEncoder"):
        train_lslm(config((directory, tok), tmp_path / "w", units_tokenizer=str(tok),
                          listening={"encoder": str(hubert), "layer": 2, "frame_rate": 50.0, "trainable": True}))
