"""`textless eval-duplex`: interaction metrics of a full-duplex model from its output audio and the user's timeline.

A session is the model's output channel (a mono file, or a channel of a stereo file) and the ground-truth timeline of
the conversation (the user's segments and interruption onsets; the model is timeline speaker `model_channel`, the
user the other one). Sessions come from a dialogue builder's directory (``manifest.jsonl``: id, stereo audio,
timeline; the model in channel `model_channel`) or a JSONL file with one session per line::

    {"id": "s1", "audio": "s1_model.wav", "channel": 0, "timeline": "s1.json"}

(``channel`` optional: default `model_channel` for a stereo file, the only channel of a mono one; relative paths are
relative to the JSONL's directory). The model's speech = VAD on its channel (`vad`), segments closer than
`min_silence` merged; its stop times are the ends of those segments. Per session and pooled
(`textless.dialogue.interaction`):

* LSLM: the first user interruption onset and the end of the model segment running then (the end of its last
  segment before the onset when it was silent: a miss); a session without interruption is a false positive when
  the model's speech ends more than `early_stop_tolerance` s before the end of its own timeline segments (skipped
  when the timeline has none for the model) -> TP/FN/FP/TN, precision, recall, F1;
* duplex S2S: barge-in latency and success per interruption onset, false alarms (rate per user segment),
  first-response latency;
* Full-Duplex-Bench v1 (needs word timestamps: `asr`, faster-whisper): TOR and latency - of the words from the first
  interruption on, against the end of the interrupting user segment (interruption task), or of all words against
  the end of the last user segment (smooth turn-taking); latency only when TOR = 1;
* Full-Duplex-Bench v1 backchannel: frequency always, TOR with words, JSD with `backchannel_reference` (a JSON
  ``{session id: [distribution]}`` such as their ``icc_gt_distribution.json``) - from the raw VAD segments.

What cannot be computed is listed under ``skipped`` in ``<output>/report.json`` and printed.

With ``lslm.model`` (a ListenSpeakLM directory) and ``lslm.data`` (a `textless build-lslm` set) the command runs the
model instead of scoring recorded sessions: `textless.jobs.eval_lslm` (LSLM precision / recall / F1 on clean and noisy
listening, the speaking NLL with and without the listening channel, p(IRQ) plots); with ``s2s.model`` and ``s2s.data``
(a `textless build-duplex-s2s` set) a duplex S2S model speaks the agent's channel of the test conversations, normal and
impatient: `textless.jobs.eval_duplex_s2s` (barge-in success and latency, false alarms, first-response latency).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textless.dialogue.vad import VADConfig
from textless.errors import ConfigError, TextlessError
from textless.jobs.eval_duplex_s2s import S2SEvalConfig, run_eval_duplex_s2s
from textless.jobs.eval_lslm import LSLMEvalConfig, run_eval_lslm

SAMPLE_RATE = 16000


@dataclass
class EvalDuplexConfig:
    sessions: str = ""                       # a builder directory (manifest.jsonl) or a JSONL of sessions
    output: str = "outputs/eval_duplex"      # directory: report.json
    model_channel: int = 1                   # timeline speaker index (= stereo channel) of the model
    vad: VADConfig = field(default_factory=VADConfig)  # on the model's channel: vad.method=silero | energy, options
    min_silence: float = 0.2                 # seconds: model segments closer than this are one (its stops)
    early_stop_tolerance: float = 0.5        # seconds: LSLM, a non-interrupted model ending earlier stopped early
    asr: str | None = "auto"                 # word timestamps for Full-Duplex-Bench (null: skip those metrics)
    device: str = "cpu"
    backchannel_reference: str | None = None  # JSON {session id: [distribution]} for the backchannel JSD
    backchannel_last_segment_wins: bool = False  # backchannel TOR as their loop (see interaction.backchannel_turn_over)
    lslm: LSLMEvalConfig = field(default_factory=LSLMEvalConfig)  # lslm.model set: run and score a ListenSpeakLM
    s2s: S2SEvalConfig = field(default_factory=S2SEvalConfig)     # s2s.model set: run and score a duplex S2S model


@dataclass
class Session:
    id: str
    audio: Path
    channel: int | None
    timeline: Path


def read_sessions(path: str | Path, model_channel: int = 1) -> list[Session]:
    """Sessions of a builder directory or a JSONL file (see the module docstring)."""
    from textless.dialogue.stats import _jsonl, read_builder_manifest

    path = Path(path)
    if path.is_dir():
        if not (path / "manifest.jsonl").is_file():
            raise ConfigError(f"{path}: a sessions directory needs a manifest.jsonl (dialogue builder output)")
        rows = read_builder_manifest(path)
        for r in rows:
            if r["audio"] is None or r["timeline"] is None:
                raise ConfigError(f"{path / 'manifest.jsonl'}: session {r['id']!r} needs an audio and a timeline path")
        return [Session(r["id"], r["audio"], model_channel, r["timeline"]) for r in rows]
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or directory")
    sessions = []
    for number, row in enumerate(_jsonl(path), 1):
        audio, timeline = row.get("audio") or row.get("output"), row.get("timeline")
        if "id" not in row or not audio or not timeline:
            raise ConfigError(f"{path}:{number}: a session needs 'id', 'audio' and 'timeline'")
        sessions.append(Session(str(row["id"]), path.parent / audio, row.get("channel"), path.parent / timeline))
    return sessions


def _model_audio(session: Session, model_channel: int) -> np.ndarray:
    from textless.audio import load_audio

    if not session.audio.is_file():
        raise TextlessError(f"session {session.id!r}: {session.audio}: no such audio file")
    wav, _ = load_audio(session.audio, SAMPLE_RATE, mono=False, max_seconds=None)
    channel = session.channel if session.channel is not None else (model_channel if wav.shape[0] > 1 else 0)
    if not 0 <= channel < wav.shape[0]:
        raise TextlessError(f"session {session.id!r}: {session.audio} has {wav.shape[0]} channel(s), no channel "
                            f"{channel}")
    return wav[channel].numpy()


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.fmean(values)) if values else None


def _lslm_sample(model: list, onset: float | None, planned: list, tolerance: float):
    """(onset, stop) of one session for `lslm_scores`, or None when it cannot be judged."""
    if onset is not None:
        running = [end for start, end in model if start <= onset < end]
        before = [end for _, end in model if end <= onset]
        return onset, running[0] if running else max(before, default=None)
    if not planned:
        return None
    last = max((end for _, end in model), default=0.0)  # a model that never spoke stopped at once
    return None, last if last < max(end for _, end in planned) - tolerance else None


def evaluate_session(session: Session, cfg: EvalDuplexConfig, vad, asr=None, reference: list | None = None
                     ) -> dict:
    """The metrics of one session (see the module docstring) as a JSON-able dict."""
    from textless.dialogue import interaction as ia
    from textless.dialogue.timeline import read_timeline
    from textless.dialogue.turn_taking import merge_ipus
    from textless.dialogue.vad import speech_segments
    from textless.eval.asr import transcribe_words

    timeline = read_timeline(session.timeline)
    model_name = timeline.speakers[cfg.model_channel]
    user_name = timeline.speakers[1 - cfg.model_channel]
    wav = _model_audio(session, cfg.model_channel)
    seconds = len(wav) / SAMPLE_RATE
    raw = [(float(s), float(e)) for s, e in speech_segments(wav, SAMPLE_RATE, vad)]
    model = merge_ipus(raw, cfg.min_silence)
    user = timeline.channel(user_name)
    onsets = sorted(i.onset for i in timeline.interruptions if i.interrupter == user_name)
    onset = onsets[0] if onsets else None
    out: dict[str, Any] = {"id": session.id, "audio_seconds": seconds, "model_segments": model,
                           "interruption_onset": onset}
    lslm = _lslm_sample(model, onset, timeline.channel(model_name), cfg.early_stop_tolerance)
    out["lslm"] = None if lslm is None else {"onset": lslm[0], "stop": lslm[1], "outcome": ia.lslm_outcome(*lslm)}
    out["barge_in"] = [None if b is None else asdict(b) for b in (ia.barge_in(model, o) for o in onsets)]
    alarms, rate = ia.false_alarms(model, user)
    out["false_alarms"], out["false_alarm_rate"] = alarms, rate
    out["first_response_latency"] = ia.first_response_latency(model, user)
    words = transcribe_words(asr, [wav])[0] if asr is not None else None
    out["words"] = words
    if words is not None:
        if onset is not None:
            task = "interruption"
            ref_end = next((e for s, e in user if s <= onset < e), onset)
            task_words = [w for w in words if w[0] >= onset]
        else:
            task, task_words = "smooth_turn_taking", words
            ref_end = max((e for _, e in user), default=None)
        tor = ia.turn_over(task_words)
        latency = ia.response_latency(task_words, ref_end) if tor == 1 and ref_end is not None else None
        out["fdb"] = {"task": task, "tor": tor, "latency": latency, "reference_end": ref_end}
    bc = ia.backchannel_metrics(raw, seconds, words, reference, cfg.backchannel_last_segment_wins)
    out["backchannel"] = asdict(bc)
    return out


def summarise(results: list[dict]) -> dict:
    """Pooled metrics over the sessions' results."""
    from textless.dialogue.interaction import lslm_scores

    samples = [(r["lslm"]["onset"], r["lslm"]["stop"]) for r in results if r["lslm"] is not None]
    barge = [b for r in results for b in r["barge_in"] if b is not None]
    fdb = [r["fdb"] for r in results if r.get("fdb")]
    summary: dict[str, Any] = {
        "sessions": len(results),
        "lslm": asdict(lslm_scores(samples)) if samples else None,
        "barge_in": {"count": len(barge), "success_rate": _mean([float(b["success"]) for b in barge]),
                     "mean_latency": _mean([b["latency"] for b in barge]),
                     "onsets_while_silent": sum(b is None for r in results for b in r["barge_in"])},
        "false_alarms": sum(len(r["false_alarms"]) for r in results),
        "false_alarm_rate": _mean([r["false_alarm_rate"] for r in results]),
        "first_response_latency": _mean([r["first_response_latency"] for r in results]),
        "backchannel": {"frequency": _mean([r["backchannel"]["frequency"] for r in results]),
                        "tor": _mean([r["backchannel"]["tor"] for r in results]),
                        "jsd": _mean([r["backchannel"]["jsd"] for r in results])},
    }
    for task in ("smooth_turn_taking", "interruption"):
        rows = [f for f in fdb if f["task"] == task]
        summary[f"fdb_{task}"] = {"count": len(rows), "tor": _mean([f["tor"] for f in rows]),
                                  "latency": _mean([f["latency"] for f in rows])} if rows else None
    return summary


def _table(summary: dict) -> str:
    from textless.utils.table import format_table

    rows: list[list[object]] = []

    def add(name: str, value) -> None:
        rows.append([name, "-" if value is None else float(value)])

    if summary["lslm"]:
        for k in ("precision", "recall", "f1"):
            add(f"LSLM {k}", summary["lslm"][k])
    add("barge-in success rate", summary["barge_in"]["success_rate"])
    add("barge-in latency s", summary["barge_in"]["mean_latency"])
    add("false alarms", summary["false_alarms"])
    add("false alarms per user turn", summary["false_alarm_rate"])
    add("first-response latency s", summary["first_response_latency"])
    for task in ("smooth_turn_taking", "interruption"):
        if summary[f"fdb_{task}"]:
            add(f"FDB {task} TOR", summary[f"fdb_{task}"]["tor"])
            add(f"FDB {task} latency s", summary[f"fdb_{task}"]["latency"])
    for k in ("tor", "frequency", "jsd"):
        add(f"FDB backchannel {k}", summary["backchannel"][k])
    return format_table(["metric", "value"], rows)


def run_eval_duplex(cfg: EvalDuplexConfig) -> dict:
    """Evaluate every session, write ``<output>/report.json`` and print the table; returns the report."""
    from textless.utils.atomic import atomic_write_text

    if cfg.lslm.model:
        return run_eval_lslm(cfg.lslm, cfg.output)
    if cfg.s2s.model:
        return run_eval_duplex_s2s(cfg.s2s, cfg.output)
    if not cfg.sessions:
        raise ConfigError("eval-duplex needs sessions=<builder dir | sessions.jsonl> (or lslm.model= and lslm.data=)")
    if cfg.model_channel not in (0, 1):
        raise ConfigError(f"model_channel must be 0 or 1, got {cfg.model_channel}")
    vad = cfg.vad
    sessions = read_sessions(cfg.sessions, cfg.model_channel)
    skipped: list[str] = []
    asr = None
    if cfg.asr is None:
        skipped.append("Full-Duplex-Bench TOR / latency and backchannel TOR: asr=null (no word timestamps)")
    else:
        from textless.eval.asr import load_asr

        try:
            asr = load_asr(cfg.asr, device=cfg.device)
            if not hasattr(asr, "transcribe_words"):
                raise TextlessError(f"ASR '{asr.name}' gives no word timestamps")
        except TextlessError as e:
            skipped.append(f"Full-Duplex-Bench TOR / latency and backchannel TOR: {e}")
            asr = None
    references: dict = {}
    if cfg.backchannel_reference:
        try:
            references = json.loads(Path(cfg.backchannel_reference).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{cfg.backchannel_reference}: not a JSON of reference distributions: {e}") from None
    else:
        skipped.append("backchannel JSD: no backchannel_reference (a JSON {session id: [distribution]})")
    results = [evaluate_session(s, cfg, vad, asr, references.get(s.id)) for s in sessions]
    if references and any(s.id not in references for s in sessions):
        skipped.append("backchannel JSD of sessions missing from backchannel_reference: "
                       + ", ".join(s.id for s in sessions if s.id not in references)[:200])
    if not any(r["lslm"] for r in results):
        skipped.append("LSLM: no session with an interruption or with the model's own timeline segments")
    elif any(r["lslm"] is None for r in results):
        skipped.append("LSLM of non-interrupted sessions without the model's timeline segments (no planned end)")
    summary = summarise(results)
    report = {"sessions": str(cfg.sessions), "vad": vad.to_dict(), "asr": None if asr is None else asr.name,
              "summary": summary, "skipped": skipped, "per_session": results}
    out = Path(cfg.output)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    print(f"{cfg.sessions}: {len(results)} sessions")
    print(_table(summary))
    for reason in skipped:
        print(f"skipped: {reason}")
    print(f"wrote {out / 'report.json'}")
    return report
