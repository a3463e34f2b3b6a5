"""`textless eval-duplex s2s.model=<dir> s2s.data=<build-duplex-s2s dir>`: a duplex S2S ListenSpeakLM speaking the
agent's channel of whole test conversations while the recorded user plays, scored as seed 003 section 5.2.

For each set (``normal`` and ``impatient``, the silences before user turns halved) of the split: the conversations are
prepared as train-duplex-s2s prepares them (cached in ``<output>/prepared``), the agent channel is generated from the
start with no prompt (`speak_along`), its speech is the frames whose unit is not one of ``units_tokenizer``'s silence
units (`textless.dialogue.vad.silence_units_of`; ``agent_bos`` counts as speech), IPUs with the 200 ms rule; the
user's speech and onsets come from the timeline. Scores (`textless.dialogue.interaction`): barge-in success (the
agent stops within 1.5 s of a user onset inside its speech) and latency, false alarms per user turn (the agent
starting while the user speaks, unless the user stops within 0.1 s), first-response latency (the agent's first onset
after the user's first turn). The recorded agent channel is scored the same way as the reference. Writes
``<output>/s2s_report.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textless.dialogue.duplex_s2s_data import read_duplex_s2s
from textless.dialogue.listening import ListeningChannel, ListeningConfig
from textless.dialogue.lslm.duplex_s2s import (
    agent_speech,
    conversation_scores,
    prepare_conversations,
    speak_along,
    summarise,
)
from textless.dialogue.lslm.generate import ListenSpeakSampling
from textless.dialogue.lslm.model import ListenSpeakLM
from textless.dialogue.vad import silence_units_of
from textless.errors import ConfigError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.utils.atomic import atomic_write_text

USER = "user"


@dataclass
class S2SEvalConfig:
    model: str | None = None            # a duplex S2S ListenSpeakLM directory (set: eval-duplex evaluates it)
    data: str | None = None             # a `textless build-duplex-s2s` directory
    split: str = "test"
    sets: list[str] = field(default_factory=lambda: ["normal", "impatient"])
    units_tokenizer: str = "starter"    # the tokenizer of the agent's units (its silence units make the VAD)
    temperature: float = 1.0
    top_p: float | None = 0.99
    seed: int = 0
    batch_size: int = 8
    min_silence: float = 0.2            # s: agent pauses shorter than this do not end its speech
    device: str = "cpu"


def _user(timeline) -> tuple[list[tuple[float, float]], list[float]]:
    segments = sorted((s.start, s.end) for s in timeline.segments if s.speaker == USER)
    return segments, [start for start, _ in segments]


def run_eval_duplex_s2s(cfg: S2SEvalConfig, output: str | Path) -> dict[str, Any]:
    """Evaluate the model (module docstring); writes ``<output>/s2s_report.json`` and returns the report."""
    if not cfg.model or not cfg.data:
        raise ConfigError("the duplex S2S evaluation needs s2s.model=<ListenSpeakLM dir> and s2s.data=<build-duplex-s2s "
                          "dir>")
    out = Path(output)
    model = ListenSpeakLM.from_pretrained(cfg.model, device=cfg.device)
    tokenizer = SpeechTokenizer.from_pretrained(cfg.units_tokenizer, device=cfg.device)
    channel = ListeningChannel(ListeningConfig(**model.inference_listening()))
    silence = set(silence_units_of(cfg.units_tokenizer))
    rate = tokenizer.frame_rate
    vocab = model.vocab
    lo = vocab.unit_range[0]
    report: dict[str, Any] = {"model": str(cfg.model), "data": str(cfg.data), "split": cfg.split,
                              "settings": asdict(cfg), "silence_units": sorted(silence), "sets": {}}
    for name in cfg.sets:
        records = read_duplex_s2s(cfg.data, cfg.split, name)
        if not records:
            continue
        prepared = prepare_conversations(cfg.data, cfg.split, tokenizer, channel,
                                         out / "prepared" / f"{cfg.split}_{name}.npz", set=name)
        generated: list[np.ndarray] = []
        for start in range(0, len(prepared), cfg.batch_size):
            chunk = prepared[start:start + cfg.batch_size]
            generated += speak_along(model, [c.listen for c in chunk],
                                     ListenSpeakSampling(cfg.temperature, None, cfg.top_p, cfg.seed + start))
        model_rows, reference_rows = [], []
        for record, conv, tokens in zip(records, prepared, generated, strict=True):
            user, onsets = _user(record.load_timeline())
            model_rows.append({"id": record.id, **conversation_scores(
                agent_speech(tokens, vocab, silence, rate, cfg.min_silence), user, onsets)})
            recorded = agent_speech(conv.units + lo, vocab, silence, rate, cfg.min_silence)
            reference_rows.append({"id": record.id, **conversation_scores(recorded, user, onsets)})
        report["sets"][name] = {"model": summarise(model_rows), "recording": summarise(reference_rows),
                                "per_conversation": model_rows}
    if not report["sets"]:
        raise ConfigError(f"{cfg.data}: no conversation in split {cfg.split!r} for sets {list(cfg.sets)}")
    atomic_write_text(out / "s2s_report.json", json.dumps(report, indent=1) + "\n")
    for name, result in report["sets"].items():
        m = result["model"]
        print(f"{name}: {m['conversations']} conversations, barge-in success {m['barge_in_success']} "
              f"(latency {m['barge_in_latency_mean']}), false alarms per user turn {m['false_alarm_rate']}, "
              f"first response {m['first_response_latency_mean']} s")
    print(f"wrote {out / 's2s_report.json'}")
    return report
