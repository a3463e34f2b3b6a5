"""DuplexSession and `textless duplex`: a tiny DuplexLM (from scratch) on the units of an MFCC tokenizer fitted in the
test, voiced by a tiny random vocoder at 8 kHz (so the user channel is resampled), on bundled recordings cut to ~1.5 s.

What is pinned: the latency accounting (tokenizer + model delay + vocoder) and the stream's length; the output does
not depend on how the audio is cut into pieces; the streamed audio is the offline synthesis of the model's units;
the stereo file's user channel equals the input at the file's rate and its model channel is the stream placed at
the stated latency (or aligned with compensate_latency); timelines and metrics; bad inputs reported and skipped; a
re-run skips what is done and refuses other settings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from textless.audio import load_audio, resample, save_audio
from textless.cli import main
from textless.data.corpus import load_bundled_corpus
from textless.dialogue.builder import default_dialogues
from textless.dialogue.duplex.generate import DuplexSampling
from textless.dialogue.duplex.model import DuplexConfig, DuplexLM, backbone_config
from textless.dialogue.duplex.session import DuplexSession
from textless.dialogue.streams import TDMFormat, listen_speak_layout
from textless.dialogue.timeline import Segment, Timeline, read_timeline, write_timeline
from textless.jobs.duplex import DuplexSessionConfig, interaction_metrics, run_duplex
from textless.streaming import StreamingError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders.mfcc import MFCCEncoder
from textless.tokenizers.kmeans import KMeans
from textless.utils.runs import ResumeMismatchError
from textless.vocoders.generator import UnitHiFiGANConfig
from textless.vocoders.model import UnitVocoder
from textless.vocoders.streaming import StreamingVocoder

K = 16            # units
RATE = 16000      # the recordings' and the tokenizer's rate
VOC_RATE = 8000   # the vocoder's: 100 Hz frames of 80 samples
DELAY = 2         # the native model's speak delay (frames)
CHUNK = 4         # the TDM model's chunk (frames)
SECONDS = 1.5     # recordings are cut to this


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """Recordings (two bundled utterances cut to 1.5 s), the tokenizer, vocoder and models (saved directories)."""
    root = tmp_path_factory.mktemp("duplex")
    recordings = root / "recordings"
    recordings.mkdir()
    wavs = []
    for n, item in enumerate(list(load_bundled_corpus("valid"))[:2]):
        wav = load_audio(item.path, RATE)[0][: round(SECONDS * RATE)]
        save_audio(recordings / f"utt{n}.wav", wav, RATE)
        wavs.append(wav)
    encoder = MFCCEncoder()
    kmeans = KMeans(k=K, backend="torch", max_iter=10, seed=0).fit(torch.cat([encoder.encode(w) for w in wavs]).numpy())
    tokenizer = SpeechTokenizer(encoder, kmeans, deduplicate=False)
    tokenizer.save_pretrained(root / "tokenizer")
    identity = tokenizer.identity()
    torch.manual_seed(0)
    config = UnitHiFiGANConfig(num_embeddings=K, embedding_dim=8, upsample_rates=[5, 4, 4],
                               upsample_kernel_sizes=[9, 8, 8], upsample_initial_channel=8, resblock_kernel_sizes=[3],
                               resblock_dilation_sizes=[[1]], sampling_rate=VOC_RATE)
    vocoder = UnitVocoder.from_config(config, tokenizer=identity, frame_rate=100.0)
    for m in vocoder.modules():  # O(1) signals (the training init makes them vanish)
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
            torch.nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.weight.shape[1] * m.weight.shape[2]))
    vocoder.eval().save_pretrained(root / "vocoder")
    backbone = backbone_config("tiny", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=2, intermediate_size=64)
    native = DuplexConfig(layout=listen_speak_layout(K, 0, speak_delay=DELAY), backbone=backbone,
                          tokenizer=identity, frame_rate=100.0)
    tdm = DuplexConfig(format="tdm", tdm=TDMFormat(K, CHUNK, controlled=True, silence_unit=0), backbone=backbone,
                       tokenizer=identity, frame_rate=100.0)
    for name, cfg in (("native", native), ("tdm", tdm)):
        torch.manual_seed(1)
        DuplexLM.from_scratch(cfg).save_pretrained(root / name)
    return {"root": root, "recordings": recordings, "tokenizer": root / "tokenizer", "vocoder": root / "vocoder",
            "native": root / "native", "tdm": root / "tdm"}


def parts(assets, fmt: str = "native"):
    return (SpeechTokenizer.from_pretrained(assets["tokenizer"]), DuplexLM.from_pretrained(assets[fmt]),
            UnitVocoder.from_pretrained(assets["vocoder"]))


def run(session: DuplexSession, wav: np.ndarray, piece: int) -> np.ndarray:
    out = [session.feed(wav[i: i + piece]) for i in range(0, len(wav), piece)]
    out.append(session.close())
    return np.concatenate(out)


def recording(assets, n: int = 0) -> np.ndarray:
    return load_audio(assets["recordings"] / f"utt{n}.wav", RATE)[0].numpy()


# ------------------------------------------------------------------------------------------------ the session
@pytest.mark.parametrize("fmt", ["native", "tdm"])
def test_latency_lengths_and_callback(assets, fmt):
    tokenizer, model, vocoder = parts(assets, fmt)
    events = []
    session = DuplexSession(tokenizer, model, vocoder, on_frame=lambda u, m, a: events.append((u, m, a)))
    wav = recording(assets)
    stream = run(session, wav, 160)
    frames = (len(wav) - 400) // 160 + 1                       # MFCC: hop 160, span 400
    lat = session.latency
    assert (lat.frame_rate, lat.tokenizer) == (100.0, (4 * 160 + 400) / RATE)  # look-ahead 4 + one span
    assert lat.model_frames == (DELAY if fmt == "native" else CHUNK - 1)
    assert lat.vocoder_frames == StreamingVocoder(vocoder).latency_frames > 0
    assert lat.total == pytest.approx(lat.tokenizer + (lat.model_frames + lat.vocoder_frames) / 100)
    assert len(session.user_units) == len(session.model_frames) == frames
    assert len(stream) == (frames + lat.vocoder_frames) * session.hop and session.sample_rate == VOC_RATE
    steps = frames + (DELAY if fmt == "native" else 0)           # native: D drain steps on silence in close()
    assert len(events) == steps
    if fmt == "native":
        assert all(m is None and len(a) == 0 for _, m, a in events[:DELAY])
        assert all(u is None for u, _, _ in events[-DELAY:])
    assert [int(u[0]) for u, _, _ in events if u is not None] == session.user_units
    assert np.array_equal(np.concatenate([a for *_, a in events] + [np.zeros(0, np.float32)]),
                          stream[: len(stream) - lat.vocoder_frames * session.hop])
    with pytest.raises(StreamingError, match="closed"):
        session.feed(wav[:10])


@pytest.mark.parametrize("fmt", ["native", "tdm"])
def test_piece_sizes_do_not_change_the_output(assets, fmt):
    tokenizer, model, vocoder = parts(assets, fmt)
    wav = recording(assets)
    outs = []
    for piece in (160, 37, 1111, len(wav)):
        session = DuplexSession(tokenizer, model, vocoder, sampling=DuplexSampling(seed=5))
        outs.append((run(session, wav, piece), session.speech_units, session.user_units))
    for stream, units, user in outs[1:]:
        assert user == outs[0][2]
        np.testing.assert_array_equal(units, outs[0][1])
        np.testing.assert_array_equal(stream, outs[0][0])


def test_streamed_audio_is_the_synthesis_of_the_model_units(assets):
    tokenizer, model, vocoder = parts(assets)
    session = DuplexSession(tokenizer, model, vocoder)
    stream = run(session, recording(assets), 160)
    skip = session.latency.vocoder_frames * session.hop
    assert not stream[:skip].any()
    ref = vocoder.synthesize([session.speech_units], deduplicated=False)[0]
    np.testing.assert_allclose(stream[skip:], ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_interaction_metrics_on_hand_made_segments():
    model = [(0.5, 2.0), (3.0, 4.0)]
    user = [(0.0, 0.4), (1.0, 1.5)]
    m = interaction_metrics(model, user, [1.0], lslm=True)
    assert m["first_response_latency"] == pytest.approx(0.1)
    assert m["barge_in"] == [{"onset": 1.0, "stop": 2.0, "latency": 1.0, "success": True}]
    assert m["lslm"] == {"onset": 1.0, "stop": 2.0, "outcome": "TP"}
    assert m["false_alarms"] == []
    assert interaction_metrics(model, user, [2.5], lslm=True)["lslm"]["outcome"] == "FN"  # silent then: a miss


# ------------------------------------------------------------------------------------------------ the job
def job(assets, output: Path, **kw) -> DuplexSessionConfig:
    base = {"model": str(assets["native"]), "input": str(assets["recordings"]), "output": str(output),
            "tokenizer": str(assets["tokenizer"]), "vocoder": str(assets["vocoder"]), "silence_units": [0],
            "progress": False}
    return DuplexSessionConfig(**{**base, **kw})


def test_cli_writes_a_stereo_file_whose_user_channel_is_the_input(assets, tmp_path):
    source = assets["recordings"] / "utt0.wav"
    out = tmp_path / "out"
    assert main(["duplex", f"model={assets['native']}", f"input={source}", f"output={out}",
                 f"tokenizer={assets['tokenizer']}", f"vocoder={assets['vocoder']}", "silence_units=[0]",
                 "vad.method=energy", "progress=false"]) == 0
    data, rate = sf.read(out / "utt0.wav", dtype="float32", always_2d=True)
    assert rate == VOC_RATE and data.shape[1] == 2
    raw, raw_rate = load_audio(source, None)
    user = resample(raw, raw_rate, VOC_RATE).numpy()
    np.testing.assert_array_equal(data[:, 0], user)              # the input at the file's rate, bit for bit
    # the model channel: the session's stream, placed at the tokenizer + model latency (the vocoder's is in it)
    tokenizer, model, vocoder = parts(assets)
    session = DuplexSession(tokenizer, model, vocoder, sampling=DuplexSampling(seed=0))
    stream = run(session, load_audio(source, RATE)[0].numpy(), 160)
    offset = round(session.latency.stream_offset * VOC_RATE)
    expected = np.concatenate([np.zeros(offset, np.float32), stream])[: len(user)]
    np.testing.assert_array_equal(data[:, 1], np.pad(expected, (0, len(user) - len(expected))))
    record = json.loads((out / "utt0.session.json").read_text())
    assert record["latency"]["total"] == pytest.approx(session.latency.total)
    assert record["model_offset"] == pytest.approx(session.latency.total)
    assert record["user_units"] == session.user_units
    assert [f[0] for f in record["model_units"]] == session.speech_units.tolist()
    assert (record["sample_rate"], record["input_sample_rate"], record["user_timeline"]) == (VOC_RATE, RATE, "vad")
    timeline = read_timeline(out / "utt0.timeline.json")
    assert timeline.speakers == ("user", "model") and timeline.duration == pytest.approx(len(user) / VOC_RATE)
    assert timeline.channel("user")                                # speech found in the recording
    shift = session.latency.total
    model_speech = [s for s in timeline.segments if s.speaker == "model"]
    assert all(s.start >= shift - 1e-9 for s in model_speech)     # nothing before the model could speak
    summary = json.loads((out / "summary.json").read_text())
    assert [s["id"] for s in summary["sessions"]] == ["utt0"] and summary["failures"] == []


def test_compensated_model_channel_is_aligned_with_the_user(assets, tmp_path):
    out = tmp_path / "out"
    run_duplex(job(assets, out, input=str(assets["recordings"] / "utt1.wav"), compensate_latency=True,
                   tail_seconds=0.25, model_speech="audio", vad={"method": "energy"}))
    data, _ = sf.read(out / "utt1.wav", dtype="float32", always_2d=True)
    n = round(SECONDS * VOC_RATE)
    assert len(data) == n + round(0.25 * VOC_RATE) and not data[n:, 0].any()   # the tail: silence
    record = json.loads((out / "utt1.session.json").read_text())
    vocoder = UnitVocoder.from_pretrained(assets["vocoder"])
    ref = vocoder.synthesize([np.asarray([f[0] for f in record["model_units"]])], deduplicated=False)[0]
    np.testing.assert_allclose(data[: len(ref), 1], ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    assert not data[len(ref):, 1].any() and record["model_offset"] == 0.0


def test_bad_files_are_skipped_and_a_rerun_skips_what_is_done(assets, tmp_path, logs):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for n in range(2):
        (inputs / f"utt{n}.wav").write_bytes((assets["recordings"] / f"utt{n}.wav").read_bytes())
    (inputs / "broken.wav").write_bytes(b"RIFF not really a wav")
    stereo = np.stack([recording(assets, 0), recording(assets, 1)])
    save_audio(inputs / "two.wav", stereo, RATE)                      # stereo without channel=: refused
    out = tmp_path / "out"
    summary = run_duplex(job(assets, out, input=str(inputs), vad={"method": "energy"}, tail_seconds=0.1))
    assert sorted(f["id"] for f in summary["failures"]) == ["broken", "two"]
    assert "channel" in next(f["error"] for f in summary["failures"] if f["id"] == "two")
    assert [s["id"] for s in summary["sessions"]] == ["utt0", "utt1"]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("utt*")}
    logs.clear()
    again = run_duplex(job(assets, out, input=str(inputs), vad={"method": "energy"}, tail_seconds=0.1))
    assert any("2 of 4 sessions already done" in line for line in logs)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("utt*")} == stamps
    assert again["sessions"] == summary["sessions"]
    with pytest.raises(ResumeMismatchError, match="seed"):
        run_duplex(job(assets, out, input=str(inputs), vad={"method": "energy"}, tail_seconds=0.1, seed=1))
    redone = run_duplex(job(assets, out, input=str(inputs), vad={"method": "energy"}, tail_seconds=0.1, seed=1,
                            restart=True, channel=1))
    assert sorted(f["id"] for f in redone["failures"]) == ["broken"]      # two.wav: channel 1 is the user
    assert {s["id"] for s in redone["sessions"]} == {"utt0", "utt1", "two"}
    data, _ = sf.read(out / "two.wav", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(data[: len(stereo[1]) // 2, 0],
                                  resample(torch.from_numpy(stereo[1]), RATE, VOC_RATE).numpy()[: len(stereo[1]) // 2])


def test_dialogue_with_a_timeline_gets_barge_in_and_lslm(assets, tmp_path):
    """3 s of a bundled dialogue around an interruption by speaker B (the user: channel 1)."""
    source = default_dialogues()
    wav, rate = load_audio(source / "stereo" / "dlg-000000.flac", None, mono=False)
    start, stop = 19.0, 22.0
    timeline = read_timeline(source / "timelines" / "dlg-000000.json")
    (onset,) = [i.onset - start for i in timeline.interruptions if start < i.onset < stop]
    folder = tmp_path / "dialogues"
    (folder / "stereo").mkdir(parents=True)
    save_audio(folder / "stereo" / "cut.wav", wav[:, round(start * rate): round(stop * rate)], rate)
    segments = [Segment(s.speaker, max(0.0, s.start - start), min(stop, s.end) - start, s.text, s.kind)
                for s in timeline.segments if s.end > start and s.start < stop]
    interruptions = [type(i)(i.interrupter, i.interrupted, i.onset - start, i.stop and i.stop - start, i.ignored)
                     for i in timeline.interruptions if start < i.onset < stop]
    write_timeline(folder / "timelines" / "cut.json", Timeline("cut", stop - start, timeline.speakers, segments,
                                                               interruptions))
    (folder / "manifest.jsonl").write_text(json.dumps({"id": "cut", "stereo": "stereo/cut.wav",
                                                       "timeline": "timelines/cut.json"}) + "\n")
    out = tmp_path / "out"
    summary = run_duplex(job(assets, out, input=str(folder), channel=1, tail_seconds=0.5))
    record = summary["sessions"][0]
    assert record["user_timeline"] == "timeline"
    metrics = record["metrics"]
    assert metrics["barge_in_onsets"] == [pytest.approx(onset)] and len(metrics["barge_in"]) == 1
    assert metrics["lslm"]["onset"] == pytest.approx(onset)
    assert metrics["lslm"]["outcome"] in ("TP", "FN")
    assert summary["pooled"]["lslm"]["tp"] + summary["pooled"]["lslm"]["fn"] == 1
    written = read_timeline(out / "cut.timeline.json")
    user = [s for s in segments if s.speaker == "B"]
    assert [(s.start, s.kind) for s in written.segments if s.speaker == "user"] == \
        [(pytest.approx(s.start), s.kind) for s in user]


@pytest.mark.slow
def test_starter_tokenizer_and_vocoder_on_a_bundled_recording(assets, tmp_path):
    """The defaults: the starter tokenizer (Whisper-base layer 4, 50 Hz; chosen because the model's units are its)
    and the starter vocoder (16 kHz: no resampling), on a bundled corpus recording (2.6 s)."""
    from textless.errors import ConfigError

    with pytest.raises(ConfigError, match="tokenizer="):  # an MFCC model: the starter did not make its units
        run_duplex(job(assets, tmp_path / "mismatch", tokenizer=None))
    starter = SpeechTokenizer.from_pretrained("starter")
    backbone = backbone_config("tiny", hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               num_key_value_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    DuplexLM.from_scratch(DuplexConfig(layout=listen_speak_layout(starter.num_units, 0), backbone=backbone,
                                       tokenizer=starter.identity(), frame_rate=50.0)).save_pretrained(tmp_path / "m")
    source = next(iter(load_bundled_corpus("valid"))).path
    out = tmp_path / "out"
    assert main(["duplex", f"model={tmp_path / 'm'}", f"input={source}", f"output={out}", "vad.method=energy",
                 "progress=false"]) == 0
    data, rate = sf.read(out / f"{source.stem}.wav", dtype="float32", always_2d=True)
    raw, raw_rate = load_audio(source, None)
    assert rate == raw_rate == 16000
    np.testing.assert_array_equal(data[:, 0], raw.numpy())
    record = json.loads((out / f"{source.stem}.session.json").read_text())
    assert record["latency"] == {"frame_rate": 50.0, "tokenizer": 0.22, "model_frames": 0, "model": 0.0,
                                 "vocoder_frames": 14, "vocoder": 0.28, "total": pytest.approx(0.5)}
    assert not data[: round(0.5 * rate), 1].any() and data[round(0.5 * rate):, 1].any()
    assert record["frames"] == record["model_frames"] == math.ceil(len(raw) / 320)  # Whisper: a last partial frame
