"""`textless duplex`: full-duplex sessions from recordings — each user recording is fed frame by frame through a
`DuplexSession` (streaming tokenizer -> duplex LM generator -> streaming vocoder) and written as a stereo file.

Inputs (``input=``): an audio file; a directory of audio files; a manifest (.tsv / .jsonl; optional columns
``timeline`` and ``channel``) or ``bundled:<split>``; or a dialogue builder directory (``manifest.jsonl`` with
stereo files and timelines, `textless build-dialogues`). The user is the recording's channel ``channel`` (0 | 1;
mono files are used as they are); the model answers in its place. Each input is fed in pieces of ``piece_seconds``
(default one frame's samples, as a live stream; the output does not depend on it), then ``tail_seconds`` of
silence (the user keeps quiet: room for the model's answer).

Outputs, per input id (each file atomic), in ``output``:

* ``<id>.wav``: stereo 32-bit float WAV at the VOCODER's sample rate. Channel 0 = the user's input exactly as read
  (resampled only when its rate differs from the vocoder's: then it equals the input resampled to that rate by
  `textless.audio.resample`), followed by the tail's zeros. Channel 1 = the model, as long as channel 0: with
  ``compensate_latency=false`` (default) as a listener hears it live, model frame j at ``j / frame_rate + total``
  seconds (`SessionLatency`: total = tokenizer latency + model delay + vocoder latency, algorithmic; compute time
  excluded; what would come after the end of channel 0 is cut), with ``true`` model frame j on user frame j.
* ``<id>.timeline.json``: a `textless.dialogue.timeline` of speakers ("user", "model"): the user's segments from the
  input's timeline when it has one (speaker ``channel``; kinds and texts kept), else VAD (``vad``) on channel 0; the
  model's IPUs from its non-silence units (``model_speech=units``; ``silence_units``, else those learned for the
  tokenizer) or VAD on channel 1 (``model_speech=audio``); segments closer than ``min_silence`` merged.
* ``<id>.session.json``: rates, frame counts, the latency accounting, the user's and the model's units per frame,
  compute seconds and real-time factor, and the interaction metrics of `textless.dialogue.interaction` on the
  file's timing: first-response latency, false alarms; barge-in per user onset (the input timeline's interruptions
  by the user, else every user IPU onset); LSLM (onset, stop, outcome) when the input timeline has an interruption
  by the user.

``summary.json`` (rewritten at the end of every run): the config, the latency, every done session's record, this
run's failures and the pooled metrics. An input that cannot be read, is too short for one frame, or has more than
one channel without ``channel=`` is reported and skipped (a single-file input raises instead).

Resume: sessions are journalled in ``<output>/.textless-sessions.jsonl`` with a record of the settings
(``.textless-run.json``: model, tokenizer, vocoder, sampling and every option that changes the outputs); a re-run
with the same ones skips the sessions done (journalled and their wav present) and does the rest (new or failed
inputs); other settings are refused with the differences. ``restart=true`` discards the record and the journal and
redoes every input (other files stay); ``overwrite=true`` deletes the output directory first.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from textless.dialogue.vad import VADConfig
from textless.errors import ConfigError, TextlessError

logger = logging.getLogger(__name__)

MODEL_SPEECH = ("units", "audio")
RECORD_FILE = ".textless-run.json"
JOURNAL_FILE = ".textless-sessions.jsonl"
SUMMARY_FILE = "summary.json"
SPEAKERS = ("user", "model")


@dataclass
class DuplexSessionConfig:
    model: str = ""                      # a DuplexLM directory (train-duplex's output_dir/final), or a ListenSpeakLM
    #                                      (train-lslm / train-duplex-s2s): it hears continuous features of the user
    input: str = ""                      # audio file, directory, manifest (.tsv/.jsonl), bundled:<split>, or a
    #                                      dialogue builder directory (manifest.jsonl with stereo files + timelines)
    channel: int | None = None           # the user's channel of multi-channel inputs (0 | 1); mono files as they are
    output: str = "outputs/duplex"       # directory: <id>.wav, <id>.timeline.json, <id>.session.json, summary.json
    tokenizer: str | None = None         # SpeechTokenizer bundle (null: starter); must have made the model's units
    vocoder: str = "starter"             # textless / fairseq / speechbrain vocoder, or starter (the output's rate)
    speaker: str | None = None           # multi-speaker vocoder: the model's voice (name or id; null: its first)
    trust_pickle: bool = False           # allow a fairseq vocoder checkpoint that pickles more than tensors
    temperature: float = 1.0             # sampling of every speak stream (0: greedy)
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0                        # every session samples from this seed (independent of order and resume)
    lookahead: int | None = None         # tokenizer look-ahead frames (null: exact reach for MFCC, 10 otherwise)
    left_context: float | None = None    # tokenizer left context in seconds (null: exact reach for MFCC, 2 s)
    block_frames: int = 1                # frames the tokenizer labels per encoder window
    vocoder_lookahead: int | None = None  # vocoder look-ahead frames (null: its receptive field: exact synthesis)
    piece_seconds: float | None = None   # audio fed per call (null: one frame's samples, as live); no effect on output
    tail_seconds: float = 0.0            # silence fed after each input (room for the model's answer)
    compensate_latency: bool = False     # false: the model channel as heard live (delayed by the total latency);
    #                                      true: model frame j on user frame j
    model_speech: str = "units"          # units | audio: the model's speech from its non-silence units or VAD
    silence_units: list[int] = field(default_factory=list)  # the tokenizer's silence units (default: learned)
    silence_unit: int | None = None      # ListenSpeakLM: what it says once stopped (null: the lowest silence unit)
    vad: VADConfig = field(default_factory=VADConfig)  # the user's speech (inputs without timeline); model_speech=audio
    min_silence: float = 0.2             # seconds: speech segments closer than this are one IPU
    max_seconds: float | None = 3600.0   # longer inputs are reported and skipped (null: no limit)
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False              # delete the output directory first
    restart: bool = False                # discard the earlier run's record and journal, redo every input

    def __post_init__(self) -> None:
        if isinstance(self.vad, dict):
            self.vad = VADConfig.from_dict(self.vad)


@dataclass
class SessionInput:
    id: str
    path: Path
    timeline: Path | None = None
    channel: int | None = None


# --------------------------------------------------------------------------------------------------------- inputs
def read_inputs(spec: str, channel: int | None = None) -> list[SessionInput]:
    """The sessions to run (see the module docstring); `channel`: the default user channel."""
    from textless.data import load_dataset
    from textless.data.manifest import AUDIO_EXTENSIONS

    path = Path(spec)
    if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
        return [SessionInput(path.stem, path, None, channel)]
    if path.is_dir() and (path / "manifest.jsonl").is_file():
        from textless.dialogue.stats import read_builder_manifest

        rows = read_builder_manifest(path)
        missing = [r["id"] for r in rows if r["audio"] is None]
        if missing:
            raise ConfigError(f"{path / 'manifest.jsonl'}: no audio path for {missing[:5]}")
        return [SessionInput(r["id"], Path(r["audio"]), r["timeline"], _channel(r.get("channel"), channel))
                for r in rows]
    manifest = load_dataset(spec)
    root = Path(manifest.source).parent if manifest.source is not None and Path(manifest.source).is_file() else None
    items = []
    for item in manifest:
        timeline = item.extra.get("timeline")
        if timeline and root is not None and not Path(timeline).is_absolute():
            timeline = root / timeline
        items.append(SessionInput(item.id, item.path, Path(timeline) if timeline else None,
                                  _channel(item.extra.get("channel"), channel)))
    return items


def _channel(value: Any, default: int | None) -> int | None:
    return default if value in (None, "") else int(value)


# ---------------------------------------------------------------------------------------------------------- parts
@dataclass
class Parts:
    """What every session runs on."""

    tokenizer: Any            # StreamingTokenizer | StreamingListener (what hears the user)
    generator: Any            # DuplexGenerator | TDMGenerator | ListenSpeakGenerator
    vocoder: Any              # StreamingVocoder
    silence: list[int] | None
    record: dict[str, Any]    # what the outputs depend on (the resume record)


def _check(cfg: DuplexSessionConfig) -> None:
    problems = []
    if not cfg.model or not cfg.input:
        problems.append("duplex needs model=<DuplexLM directory> and input=<audio file, directory or manifest>")
    if cfg.model_speech not in MODEL_SPEECH:
        problems.append(f"model_speech must be one of {', '.join(MODEL_SPEECH)}, got {cfg.model_speech!r}")
    if cfg.channel is not None and cfg.channel < 0:
        problems.append(f"channel must be >= 0, got {cfg.channel}")
    if cfg.piece_seconds is not None and not cfg.piece_seconds > 0:
        problems.append(f"piece_seconds must be > 0 (or null: one frame), got {cfg.piece_seconds}")
    if not cfg.tail_seconds >= 0 or not cfg.min_silence >= 0:
        problems.append("tail_seconds and min_silence must be >= 0 seconds")
    if problems:
        raise ConfigError("; ".join(problems))


def load_parts(cfg: DuplexSessionConfig) -> Parts:
    """The model's generator, the streaming tokenizer and vocoder, and the silence units."""
    from textless.dialogue.duplex.generate import DuplexGenerator, DuplexSampling, TDMGenerator
    from textless.dialogue.duplex.model import DuplexLM
    from textless.dialogue.duplex.session import frame_identity
    from textless.dialogue.lslm.train import is_lslm_dir
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.tokenizers.streaming import StreamingTokenizer
    from textless.utils.runs import module_fingerprint
    from textless.vocoders import load_vocoder
    from textless.vocoders.streaming import StreamingVocoder

    if is_lslm_dir(cfg.model):
        return load_listening_parts(cfg)
    model = DuplexLM.from_pretrained(cfg.model, device=cfg.device)
    sampling = DuplexSampling(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed)
    generator = (TDMGenerator if model.config.format == "tdm" else DuplexGenerator)(model, sampling)
    spec = cfg.tokenizer or "starter"
    tokenizer = SpeechTokenizer.from_pretrained(spec, device=cfg.device)
    units = frame_identity(tokenizer)
    try:
        model.check_units(units, where=f"tokenizer {spec!r}")
    except TextlessError as e:
        hint = "" if cfg.tokenizer else " (pass tokenizer=<the bundle that made the model's units>)"
        raise ConfigError(f"{e}{hint}") from None
    streaming_tokenizer = StreamingTokenizer(tokenizer, left_context=cfg.left_context, lookahead=cfg.lookahead,
                                             block_frames=cfg.block_frames)
    vocoder = load_vocoder(cfg.vocoder, device=cfg.device, trust_pickle=cfg.trust_pickle)
    vocoder.check_units(units, where=f"tokenizer {spec!r}", name=f"the vocoder {cfg.vocoder!r}")
    speaker: Any = None
    if vocoder.config.multispkr:
        speaker = cfg.speaker if cfg.speaker is not None else (vocoder.config.speakers or [0])[0]
        speaker = int(speaker) if isinstance(speaker, str) and speaker.isdigit() else speaker
    elif cfg.speaker is not None:
        raise ConfigError(f"speaker= needs a multi-speaker vocoder; {cfg.vocoder!r} has one voice")
    streaming_vocoder = StreamingVocoder(vocoder, speaker=speaker, lookahead=cfg.vocoder_lookahead)
    silence = _silence_units(cfg, tokenizer) if cfg.model_speech == "units" else None
    record = {"model": module_fingerprint(model), "sampling": asdict(sampling),
              "tokenizer": {"identity": tokenizer.identity(), "context": streaming_tokenizer.context,
                            "lookahead": streaming_tokenizer.lookahead, "block_frames": streaming_tokenizer.block},
              "vocoder": {"weights": module_fingerprint(vocoder.generator), "speaker": speaker,
                          "context": streaming_vocoder.context, "lookahead": streaming_vocoder.lookahead},
              "channel": cfg.channel, "tail_seconds": cfg.tail_seconds,
              "compensate_latency": cfg.compensate_latency, "model_speech": cfg.model_speech, "silence_units": silence,
              "vad": cfg.vad.to_dict(), "min_silence": cfg.min_silence}
    return Parts(streaming_tokenizer, generator, streaming_vocoder, silence, record)


def load_listening_parts(cfg: DuplexSessionConfig) -> Parts:
    """A ListenSpeakLM's parts: its listening channel streamed, its generator, the streaming vocoder; the silence
    units of the tokenizer that made its units (its stopped frames and its speech)."""
    from textless.dialogue.duplex.session import frame_identity
    from textless.dialogue.listening import ListeningChannel, ListeningConfig
    from textless.dialogue.lslm.generate import ListenSpeakGenerator, ListenSpeakSampling
    from textless.dialogue.lslm.model import ListenSpeakLM
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.utils.runs import module_fingerprint
    from textless.vocoders import load_vocoder
    from textless.vocoders.streaming import StreamingVocoder

    model = ListenSpeakLM.from_pretrained(cfg.model, device=cfg.device)
    channel = ListeningChannel(ListeningConfig(**model.inference_listening(left_context=cfg.left_context,
                                                                           lookahead=cfg.lookahead)))
    spec = cfg.tokenizer or "starter"
    tokenizer = SpeechTokenizer.from_pretrained(spec, device=cfg.device)
    units = frame_identity(tokenizer)
    model.lm.check_units(units, where=f"tokenizer {spec!r}")
    silence = _silence_units(cfg, tokenizer)
    silence_unit = cfg.silence_unit if cfg.silence_unit is not None else min(silence)
    sampling = ListenSpeakSampling(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed)
    generator = ListenSpeakGenerator(model, silence_unit, sampling)
    vocoder = load_vocoder(cfg.vocoder, device=cfg.device, trust_pickle=cfg.trust_pickle)
    vocoder.check_units(units, where=f"tokenizer {spec!r}", name=f"the vocoder {cfg.vocoder!r}")
    speaker: Any = None
    if vocoder.config.multispkr:
        speaker = cfg.speaker if cfg.speaker is not None else (vocoder.config.speakers or [0])[0]
    streaming_vocoder = StreamingVocoder(vocoder, speaker=speaker, lookahead=cfg.vocoder_lookahead)
    listener = channel.streaming_listener()
    record = {"model": module_fingerprint(model), "sampling": asdict(sampling), "silence_unit": silence_unit,
              "listening": {**model.config.listening, "left_context": cfg.left_context, "lookahead": cfg.lookahead},
              "vocoder": {"weights": module_fingerprint(vocoder.generator), "speaker": speaker,
                          "context": streaming_vocoder.context, "lookahead": streaming_vocoder.lookahead},
              "channel": cfg.channel, "tail_seconds": cfg.tail_seconds, "compensate_latency": cfg.compensate_latency,
              "model_speech": cfg.model_speech, "silence_units": silence, "vad": cfg.vad.to_dict(),
              "min_silence": cfg.min_silence}
    return Parts(listener, generator, streaming_vocoder, silence if cfg.model_speech == "units" else None, record)


def _open_session(parts: Parts):
    from textless.dialogue.duplex.session import DuplexSession
    from textless.dialogue.lslm.generate import ListenSpeakGenerator
    from textless.dialogue.lslm.session import ListeningSession

    if isinstance(parts.generator, ListenSpeakGenerator):
        return ListeningSession(parts.tokenizer, parts.generator, parts.vocoder)
    return DuplexSession(parts.tokenizer, parts.generator, parts.vocoder)


def _silence_units(cfg: DuplexSessionConfig, tokenizer) -> list[int]:
    if cfg.silence_units:
        bad = [u for u in cfg.silence_units if not 0 <= u < tokenizer.num_units]
        if bad:
            raise ConfigError(f"silence_units {bad} are outside the tokenizer's units [0, {tokenizer.num_units})")
        return sorted({int(u) for u in cfg.silence_units})
    from textless.dialogue.vad import silence_units_for

    try:
        with torch.random.fork_rng(devices=[]):
            return sorted(silence_units_for(tokenizer))
    except (TextlessError, OSError) as e:
        raise ConfigError(f"no silence units for the model's speech ({e}); pass silence_units=[...] or "
                          "model_speech=audio") from None


# --------------------------------------------------------------------------------------------------------- session
def _user_channel(item: SessionInput, cfg: DuplexSessionConfig) -> tuple[torch.Tensor, int]:
    """The user's channel as read (float [n]) and its rate."""
    from textless.audio import load_audio

    wav, rate = load_audio(item.path, None, mono=False, max_seconds=cfg.max_seconds)
    if wav.shape[0] == 1:
        return wav[0], rate
    if item.channel is None:
        raise TextlessError(f"{item.path} has {wav.shape[0]} channels: pass channel=<the user's channel>")
    if not 0 <= item.channel < wav.shape[0]:
        raise TextlessError(f"{item.path} has {wav.shape[0]} channels, no channel {item.channel}")
    return wav[item.channel], rate


def run_session(item: SessionInput, parts: Parts, cfg: DuplexSessionConfig) -> dict[str, Any]:
    """Run one session: returns its stereo audio [2, n] (float32, at the vocoder's rate), timeline, and record."""
    from textless.audio import resample

    raw, rate = _user_channel(item, cfg)
    given = _given_timeline(item)
    st, voc = parts.tokenizer, parts.vocoder
    in_rate, out_rate = st.sample_rate, voc.vocoder.sample_rate
    feed = resample(raw, rate, in_rate).numpy()
    user = resample(raw, rate, out_rate).numpy()
    feed = np.concatenate([feed, np.zeros(round(cfg.tail_seconds * in_rate), np.float32)])
    user = np.concatenate([user, np.zeros(round(cfg.tail_seconds * out_rate), np.float32)])
    frame = round(in_rate / st.frame_rate)
    piece = frame if cfg.piece_seconds is None else max(1, round(cfg.piece_seconds * in_rate))
    started = time.perf_counter()
    with _open_session(parts) as session:
        out = [session.feed(feed[i: i + piece]) for i in range(0, len(feed), piece)]
        out.append(session.close())
    compute = time.perf_counter() - started
    if not session.user_units:
        raise TextlessError(f"{item.path}: too short for one frame of the tokenizer")
    stream = np.concatenate(out)
    latency = session.latency
    hop, n = session.hop, len(user)
    if cfg.compensate_latency:
        model, shift = stream[latency.vocoder_frames * hop:], 0.0
    else:
        offset = round(latency.stream_offset * out_rate)
        model, shift = np.concatenate([np.zeros(offset, np.float32), stream]), latency.total
    model = np.pad(model[:n], (0, max(0, n - len(model))))
    duration = n / out_rate
    user_segments, user_name, source = _user_segments(given, item, user, out_rate, duration, cfg)
    model_segments = _model_segments(session.speech_units, latency.frame_rate, shift, model, out_rate, duration,
                                     parts.silence, cfg)
    from textless.dialogue.timeline import Segment, Timeline

    timeline = Timeline(item.id, duration, SPEAKERS, sorted(
        user_segments + [Segment("model", s, e) for s, e in model_segments], key=lambda s: (s.start, s.speaker)))
    onsets = ([i.onset for i in given.interruptions if i.interrupter == user_name] if given is not None
              else [s.start for s in user_segments])
    metrics = interaction_metrics(model_segments, [(s.start, s.end) for s in user_segments], onsets,
                                  lslm=given is not None)
    seconds = len(feed) / in_rate
    record = {"id": item.id, "input": str(item.path), "channel": item.channel, "sample_rate": out_rate,
              "input_sample_rate": rate, "tokenizer_sample_rate": in_rate, "seconds": duration,
              "tail_seconds": cfg.tail_seconds, "frames": len(session.user_units),
              "model_frames": len(session.model_frames), "latency": latency.to_dict(),
              "compensate_latency": cfg.compensate_latency,
              "model_offset": shift, "user_timeline": source, "metrics": metrics,
              "compute_seconds": compute, "real_time_factor": compute / seconds if seconds else None}
    units = {"user_units": session.user_units,
             "model_units": [f.tolist() for f in session.model_frames],
             "model_streams": list(session.speak_names)}
    return {"audio": np.stack([user, model]).astype(np.float32), "timeline": timeline, "record": record,
            "units": units}


def _given_timeline(item: SessionInput):
    if item.timeline is None:
        return None
    from textless.dialogue.timeline import read_timeline

    timeline = read_timeline(item.timeline)
    if item.channel is None or not 0 <= item.channel < 2:
        raise TextlessError(f"{item.id}: its timeline names two speakers: pass channel=0|1 (the user's)")
    return timeline


def _user_segments(given, item: SessionInput, user: np.ndarray, rate: int, duration: float,
                   cfg: DuplexSessionConfig):
    """(the user's timeline segments, the user's name in the input timeline, "timeline" | "vad")."""
    from textless.dialogue.timeline import Segment
    from textless.dialogue.turn_taking import merge_ipus
    from textless.dialogue.vad import speech_segments

    if given is not None:
        name = given.speakers[item.channel]
        segments = [Segment("user", min(s.start, duration), min(s.end, duration), s.text, s.kind)
                    for s in given.segments if s.speaker == name and s.start < duration]
        return segments, name, "timeline"
    ipus = merge_ipus(speech_segments(user, rate, cfg.vad), cfg.min_silence)
    return [Segment("user", float(s), float(e)) for s, e in ipus], None, "vad"


def _model_segments(units: np.ndarray, frame_rate: float, shift: float, audio: np.ndarray, rate: int,
                    duration: float, silence: list[int] | None, cfg: DuplexSessionConfig) -> list[tuple[float, float]]:
    """The model's IPUs (seconds in the file): from its units (shifted by `shift`) or VAD on its channel."""
    from textless.dialogue.turn_taking import merge_ipus
    from textless.dialogue.vad import speech_segments, unit_speech_segments

    if cfg.model_speech == "audio":
        segments = speech_segments(audio, rate, cfg.vad)
    else:
        assert silence is not None
        segments = [(s + shift, min(e + shift, duration))
                    for s, e in unit_speech_segments(units, frame_rate, silence) if s + shift < duration]
    return [(float(s), float(e)) for s, e in merge_ipus(segments, cfg.min_silence)]


def interaction_metrics(model: list[tuple[float, float]], user: list[tuple[float, float]], onsets: list[float],
                        lslm: bool) -> dict[str, Any]:
    """`textless.dialogue.interaction` metrics of one session (module docstring); `lslm`: the onsets are the input
    timeline's interruptions (then the first one is an LSLM sample)."""
    from textless.dialogue import interaction as ia

    alarms, rate = ia.false_alarms(model, user)
    out: dict[str, Any] = {"first_response_latency": ia.first_response_latency(model, user),
                           "false_alarms": alarms, "false_alarm_rate": rate,
                           "barge_in": [None if b is None else asdict(b) for b in (ia.barge_in(model, o)
                                                                                    for o in onsets)],
                           "barge_in_onsets": onsets, "lslm": None}
    if lslm and onsets:
        onset = min(onsets)
        running = [e for s, e in model if s <= onset < e]
        before = [e for _, e in model if e <= onset]
        stop = running[0] if running else max(before, default=None)
        out["lslm"] = {"onset": onset, "stop": stop, "outcome": ia.lslm_outcome(onset, stop)}
    return out


def pooled_metrics(records: list[dict]) -> dict[str, Any]:
    """Pooled metrics over the sessions' records."""
    from textless.dialogue.interaction import lslm_scores

    metrics = [r["metrics"] for r in records]
    samples = [(m["lslm"]["onset"], m["lslm"]["stop"]) for m in metrics if m["lslm"] is not None]
    barge = [b for m in metrics for b in m["barge_in"] if b is not None]
    return {"sessions": len(records),
            "first_response_latency": _mean([m["first_response_latency"] for m in metrics]),
            "answered": sum(m["first_response_latency"] is not None for m in metrics),
            "false_alarms": sum(len(m["false_alarms"]) for m in metrics),
            "false_alarm_rate": _mean([m["false_alarm_rate"] for m in metrics]),
            "barge_in": {"count": len(barge), "success_rate": _mean([float(b["success"]) for b in barge]),
                         "mean_latency": _mean([b["latency"] for b in barge]),
                         "onsets_while_silent": sum(b is None for m in metrics for b in m["barge_in"])},
            "lslm": asdict(lslm_scores(samples)) if samples else None,
            "real_time_factor": _mean([r["real_time_factor"] for r in records])}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.fmean(values)) if values else None


# ------------------------------------------------------------------------------------------------------------ job
def _target(output: Path, item_id: str, suffix: str) -> Path:
    return output / f"{item_id}{suffix}"


def _write(output: Path, result: dict[str, Any]) -> dict[str, Any]:
    from textless.audio import save_audio
    from textless.dialogue.timeline import write_timeline
    from textless.utils.atomic import atomic_write_text

    record = result["record"]
    wav = _target(output, record["id"], ".wav")
    wav.parent.mkdir(parents=True, exist_ok=True)
    save_audio(wav, result["audio"], record["sample_rate"], subtype="FLOAT")
    timeline = write_timeline(_target(output, record["id"], ".timeline.json"), result["timeline"])
    session = _target(output, record["id"], ".session.json")
    record = {**record, "wav": wav.relative_to(output).as_posix(), "timeline": timeline.relative_to(output).as_posix(),
              "session": session.relative_to(output).as_posix()}
    atomic_write_text(session, json.dumps({**record, **result["units"]}, indent=1) + "\n")
    return record


def _prepare_output(cfg: DuplexSessionConfig, items: list[SessionInput], record: dict[str, Any]) -> Path:
    from textless.utils.runs import resume_or_record

    output = Path(cfg.output)
    if cfg.overwrite and output.exists():
        if not output.is_dir() or any(output.resolve() in (i.path.resolve(), *i.path.resolve().parents)
                                      for i in items):
            raise ConfigError(f"overwrite=true would delete '{output}', which holds the inputs (or is a file)")
        logger.info(f"overwrite=true: deleting {output}")
        shutil.rmtree(output)
    if cfg.restart:
        for name in (RECORD_FILE, JOURNAL_FILE):
            (output / name).unlink(missing_ok=True)
    resume_or_record(output, record, what=f"the duplex sessions in {output}", filename=RECORD_FILE,
                     restart=cfg.restart, how_to_restart="or pass restart=true to redo them (or choose another "
                                                         "output)")
    return output


def run_duplex(cfg: DuplexSessionConfig) -> dict[str, Any]:
    """Run the sessions (see the module docstring); returns the summary written to ``summary.json``."""
    from textless.utils.atomic import atomic_write_text
    from textless.utils.runs import Journal

    _check(cfg)
    items = read_inputs(cfg.input, cfg.channel)
    if not items:
        raise TextlessError(f"no audio in '{cfg.input}'")
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"'{cfg.input}': duplicate ids {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    single = len(items) == 1 and Path(cfg.input).is_file() and items[0].path == Path(cfg.input)
    parts = load_parts(cfg)
    output = _prepare_output(cfg, items, parts.record)
    journal = Journal(output / JOURNAL_FILE)
    done = {r["id"]: r for r in journal.read() if _target(output, r["id"], ".wav").is_file()}
    todo = [item for item in items if item.id not in done]
    if len(todo) < len(items):
        logger.info(f"resuming {output}: {len(items) - len(todo)} of {len(items)} sessions already done")
    failures: list[dict[str, str]] = []
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="session", desc="duplex",
               disable=not cfg.progress)
    for item in todo:
        try:
            record = _write(output, run_session(item, parts, cfg))
        except (TextlessError, OSError) as e:
            if single:
                raise
            failures.append({"id": item.id, "input": str(item.path), "error": str(e)})
            logger.warning(f"duplex: {item.id}: {e}")
            bar.update(1)
            continue
        journal.add([record])
        done[item.id] = record
        bar.set_postfix(rtf=f"{record['real_time_factor']:.2f}")
        bar.update(1)
    bar.close()
    records = [done[i.id] for i in items if i.id in done]
    latency = records[0]["latency"] if records else None
    summary = {"config": asdict(cfg), "latency": latency, "sessions": records, "failures": failures,
               "pooled": pooled_metrics(records)}
    atomic_write_text(output / SUMMARY_FILE, json.dumps(summary, indent=1, default=str) + "\n")
    pooled = summary["pooled"]
    frl = pooled["first_response_latency"]
    logger.info(f"wrote {output}: {len(records)} sessions" + (f", {len(failures)} failed" if failures else "")
                + (f"; latency {latency['total'] * 1000:.0f} ms" if latency else "")
                + (f"; first-response latency {frl:.2f} s" if frl is not None else ""))
    return summary

