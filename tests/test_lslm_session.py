"""ListenSpeakGenerator (frame by frame == listen_and_speak; stops with IRQ and speaks silence after) and
ListeningSession (audio in, audio out; piece sizes do not matter; the units equal the generator on offline features)."""

import json
import math

import numpy as np
import pytest
import torch

from textless.audio import load_audio
from textless.data.corpus import load_bundled_corpus
from textless.dialogue.listening import ListeningChannel, ListeningConfig
from textless.dialogue.lslm import FusionConfig, ListenSpeakLM, with_irq
from textless.dialogue.lslm.generate import ListenSpeakGenerator, ListenSpeakSampling, listen_and_speak
from textless.dialogue.lslm.session import ListeningSession
from textless.lm import UnitLM, UnitVocab
from textless.streaming import StreamingError
from textless.vocoders.model import UnitHiFiGANConfig, UnitVocoder

K, D = 12, 3


def _model(listen_dim=D, frame_rate=50.0):
    torch.manual_seed(0)
    lm = with_irq(UnitLM.from_scratch("tiny", UnitVocab.default(K), frame_rate=frame_rate).eval())
    return ListenSpeakLM(lm, FusionConfig(fusion="late", listen_dim=listen_dim)).eval()


def _alarm(model):
    """Feature 1 takes 100 from eos and irq, feature 0 adds 200 to irq (tests/test_lslm_generate.py)."""
    with torch.no_grad():
        weight = model.projection.net[0].weight
        weight.zero_()
        weight[model.irq_id, 0] = 200.0
        weight[[model.irq_id, model.vocab.eos_id], 1] = -100.0
    return model


def test_generator_is_listen_and_speak_frame_by_frame():
    model = _alarm(_model())
    listen = np.zeros((2, 40, D), np.float32)
    listen[:, :, 1] = 1.0
    listen[0, 20:, 0] = 1.0                                    # stream 0 hears the interruption from frame 20
    # frame 0 reads no listening frame (zeros: nothing forbids eos / irq there); seed 4 draws neither at frame 0
    reference = listen_and_speak(model, [np.zeros(0, np.int64)] * 2, list(listen), [40, 40],
                                 ListenSpeakSampling(seed=4))
    gen = ListenSpeakGenerator(model, silence_unit=0, sampling=ListenSpeakSampling(seed=4))
    with gen.streaming(2):
        frames = torch.stack([gen.step(torch.from_numpy(listen[:, t])) for t in range(40)], dim=1).numpy()
        stops = gen.stop_frames
    heard, calm = reference
    assert heard.stop == "irq" and stops == [heard.stop_frame, None] and heard.stop_frame == 21
    assert np.array_equal(frames[0, :21], heard.units) and (frames[0, 21:] == 0).all()   # silence after IRQ
    assert np.array_equal(frames[1], calm.units)
    with gen.streaming(1), pytest.raises(StreamingError, match=r"listening features \[1, 3\]"):
        gen.step(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="silence_unit 99"):
        ListenSpeakGenerator(model, silence_unit=99)


@pytest.fixture(scope="module")
def parts():
    channel = ListeningChannel(ListeningConfig(encoder="mfcc", frame_rate=100.0))
    model = _model(listen_dim=channel.dim, frame_rate=100.0)
    torch.manual_seed(0)
    config = UnitHiFiGANConfig(num_embeddings=K, embedding_dim=8, upsample_rates=[5, 4, 4],
                               upsample_kernel_sizes=[9, 8, 8], upsample_initial_channel=8, resblock_kernel_sizes=[3],
                               resblock_dilation_sizes=[[1]], sampling_rate=8000)
    vocoder = UnitVocoder.from_config(config, frame_rate=100.0).eval()
    for m in vocoder.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            torch.nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.weight.shape[1] * m.weight.shape[2]))
    wav = load_audio(next(iter(load_bundled_corpus("valid"))).path, 16000)[0][:16000].numpy()
    return channel, model, vocoder, wav


def _session(parts, wav, piece):
    channel, model, vocoder, _ = parts
    with ListeningSession(channel, model, vocoder, silence_unit=0, sampling=ListenSpeakSampling(seed=1)) as s:
        out = [s.feed(wav[i:i + piece]) for i in range(0, len(wav), piece)] + [s.close()]
    return s, np.concatenate(out)


def test_session_units_are_the_generator_on_the_offline_features(parts):
    channel, model, _, wav = parts
    session, audio = _session(parts, wav, 160)
    feats = channel(torch.from_numpy(wav)[None])[0][0]
    gen = ListenSpeakGenerator(model, silence_unit=0, sampling=ListenSpeakSampling(seed=1))
    with gen.streaming(1):
        units = [int(gen.step(f[None])[0]) for f in feats]
    assert session.speech_units.tolist() == units and len(units) == 98     # (16000 - 400) // 160 + 1 frames
    assert len(audio) == (len(units) + session.latency.vocoder_frames) * session.hop
    assert session.latency.model_frames == 0 and session.latency.tokenizer == channel.latency
    assert len(session.irq_probs) == len(units) and session.user_units == [-1] * len(units)
    again, audio_again = _session(parts, wav, 777)                         # other piece sizes: the same output
    assert np.array_equal(audio, audio_again) and again.speech_units.tolist() == units
    with pytest.raises(StreamingError, match="closed"):
        session.feed(wav[:10])


def test_textless_duplex_runs_a_listen_speak_model(parts, tmp_path):
    import soundfile as sf

    from textless.cli import main
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.tokenizers.encoders.mfcc import MFCCEncoder
    from textless.tokenizers.kmeans import KMeans

    channel, model, vocoder, wav = parts
    encoder = MFCCEncoder()
    kmeans = KMeans(k=K, backend="torch", max_iter=5, seed=0).fit(encoder.encode(torch.from_numpy(wav)).numpy())
    SpeechTokenizer(encoder, kmeans, deduplicate=False).save_pretrained(tmp_path / "tok")
    model.config.listening = {"encoder": "mfcc", "frame_rate": 100.0}
    model.save_pretrained(tmp_path / "lslm")
    vocoder.save_pretrained(tmp_path / "voc")
    sf.write(tmp_path / "user.wav", wav, 16000, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["duplex", f"model={tmp_path / 'lslm'}", f"input={tmp_path / 'user.wav'}", f"output={out}",
                 f"tokenizer={tmp_path / 'tok'}", f"vocoder={tmp_path / 'voc'}", "silence_units=[0]",
                 "progress=false"]) == 0
    stereo, rate = sf.read(out / "user.wav", always_2d=True)
    assert rate == 8000 and stereo.shape[1] == 2
    session = json.loads((out / "user.session.json").read_text())
    assert session["frames"] == 98 and session["latency"]["model_frames"] == 0
    assert session["latency"]["tokenizer"] == channel.latency
