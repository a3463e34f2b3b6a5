"""`textless train-duplex-s2s`: the duplex S2S model of seed 003 made textless - a `ListenSpeakLM` with ``sum`` fusion
that speaks the agent's channel of whole conversations while it listens to the user's.

Per frame t (the agent's units at R Hz, frame level): the LM reads ``embed(agent token t - 1) + user_weight *
adapter(user features of frame t - 1)`` and predicts the agent's token at t: the agent's units are predicted with a
one-frame delay against the user (NeMo: audio channel shifted one frame). Turn-level alignment (``turn_markers``):
the agent's unit at the first frame of each of its turns is replaced by ``agent_bos`` and at the frame where the turn
ends by ``agent_eos`` (NeMo replaces the codes at its text BOS / EOS frames by speech bos / eos), so the model says
when it takes and gives up the turn.

Data: a `textless build-duplex-s2s` set (user and agent streams, 0.64 s before the agent answers, barge-ins that cut
the agent 0.64 s after the user's onset; `read_duplex_s2s`). Each conversation is prepared once (cached like
train-lslm's splits): the agent channel's units (``units_tokenizer``) and the user channel's listening features
(``listening``), both at the units' frame rate; the conversation is cut into windows of ``context`` frames on dGSLM's
grid (starts 0, context, ...; the last one moved back to end with the conversation); a window that reaches the
conversation's end ends with ``eos``. The rest (loss, validation, schedule, resume) is train-lslm's.

Evaluation (`speak_along`, `conversation_scores`): the agent's channel generated for a whole conversation while the
recorded user plays (no prompt); the agent's speech = frames whose unit is not a silence unit (``agent_bos`` counts
as speech, ``agent_eos`` as silence), IPUs with the 200 ms rule; against the timeline's user segments: barge-in success
and latency, false alarms, first-response latency (`textless.dialogue.interaction`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.dialogue.duplex_s2s_data import read_duplex_s2s
from textless.dialogue.interaction import barge_in, false_alarms, first_response_latency
from textless.dialogue.listening import ListeningChannel
from textless.dialogue.lslm.data import LSLMItem, read_prepared, units_and_features, write_prepared
from textless.dialogue.lslm.generate import ListenSpeakSampling, listen_and_speak
from textless.dialogue.lslm.model import IRQ, ListenSpeakLM
from textless.dialogue.lslm.train import LSLMObjective, LSLMTrainConfig
from textless.dialogue.turn_taking import merge_ipus
from textless.errors import ConfigError, TextlessError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.training.engine import TrainHooks, TrainResult, end_process_group, train_objective

logger = logging.getLogger(__name__)
AGENT_BOS, AGENT_EOS = "agent_bos", "agent_eos"
USER_CHANNEL, AGENT_CHANNEL = 0, 1


@dataclass
class DuplexS2STrainConfig(LSLMTrainConfig):
    train_data: str = ""                   # a `textless build-duplex-s2s` directory
    fusion: str = "sum"                    # duplex S2S channel fusion (any ListenSpeakLM fusion works)
    context: int = 500                     # frames per training window
    turn_markers: bool = True              # agent_bos / agent_eos at the agent's turn boundaries
    output_dir: str = "outputs/duplex_s2s"
    listening: dict[str, Any] = field(default_factory=lambda: {"encoder": "mfcc"})


@dataclass
class S2SConversation:
    """A prepared conversation: agent units int64 [T], user features float32 [T, D], agent turns in frames."""

    id: str
    units: np.ndarray
    listen: np.ndarray
    turns: list[tuple[int, int]]


def prepare_conversations(directory: str | Path, split: str, tokenizer: SpeechTokenizer, channel: ListeningChannel,
                          cache: Path | None = None, set: str = "normal") -> list[S2SConversation]:
    """Every conversation of the split / set: the agent channel's units, the user channel's features (cut to the
    units' length; one frame short at most is padded with the last one) and the agent's turns in frames
    (``round(seconds * R)``); from `cache` when it holds exactly these. A conversation whose audio cannot be read is
    reported and skipped."""
    conversations = read_duplex_s2s(directory, split, set)
    rate = tokenizer.frame_rate
    key = json.dumps({"conversations": [(c.id, c.samples, c.agent_turns) for c in conversations],
                      "tokenizer": tokenizer.identity(), "listening": asdict(channel.config)}, sort_keys=True,
                     default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()
    cached = read_prepared(cache, digest, [c.id for c in conversations])
    if cached is None:
        rows = []
        for conv in conversations:
            try:
                audio = torch.from_numpy(conv.audio().astype(np.float32) / 32768.0)
            except (TextlessError, OSError, RuntimeError) as e:
                logger.warning("skipping conversation %s of %s: %s", conv.id, directory, e)
                continue
            if conv.sample_rate != tokenizer.sample_rate or conv.sample_rate != channel.sample_rate:
                raise ConfigError(f"{conv.stereo}: {conv.sample_rate} Hz; the tokenizer and listening channel read "
                                  f"{tokenizer.sample_rate} / {channel.sample_rate} Hz")
            rows.append((conv.id, *units_and_features(tokenizer, channel, audio[AGENT_CHANNEL], audio[USER_CHANNEL])))
        if cache is not None:
            write_prepared(cache, digest, rows, channel.dim)
        cached = {i: (u, f) for i, u, f in rows}
    return [S2SConversation(c.id, *cached[c.id], _frames(c.agent_turns, rate)) for c in conversations
            if c.id in cached]


def _frames(turns: list[tuple[float, float]], rate: float) -> list[tuple[int, int]]:
    return [(round(start * rate), round(end * rate)) for start, end in turns]


def turn_marks(turns: list[tuple[int, int]], num_frames: int) -> list[tuple[int, str]]:
    """(frame, agent_bos | agent_eos) of every agent turn [start, end) inside the conversation's frames."""
    marks = []
    for start, end in turns:
        if start < num_frames:
            marks.append((start, AGENT_BOS))
        if start < end < num_frames:
            marks.append((end, AGENT_EOS))
    return marks


def conversation_windows(conv: S2SConversation, context: int, markers: bool = True) -> list[LSLMItem]:
    """Windows of `context` frames on dGSLM's grid (module docstring); the last one ends the conversation."""
    total = len(conv.units)
    starts = list(range(0, max(total - context, 0) + 1, context)) or [0]
    if starts[-1] + context < total:
        starts.append(total - context)
    marks = turn_marks(conv.turns, total) if markers else []
    items = []
    for s in starts:
        e = min(s + context, total)
        inside = tuple((f - s, name) for f, name in marks if s <= f < e)
        items.append(LSLMItem(f"{conv.id}@{s}", conv.units[s:e], conv.listen[s:e], None, end=e == total,
                              marks=inside))
    return items


class DuplexS2SObjective(LSLMObjective):
    """train-lslm's objective on windows of duplex S2S conversations (see the module docstring)."""

    name = "train-duplex-s2s"
    specials = (IRQ, AGENT_BOS, AGENT_EOS)
    config: DuplexS2STrainConfig

    def check_config(self) -> None:
        super().check_config()
        if self.config.listening.get("trainable"):
            raise ConfigError("train-duplex-s2s trains with a frozen listening encoder (listening.trainable: "
                              "train-lslm only)")
        if self.config.context < 2:
            raise ConfigError(f"context must be >= 2 frames, got {self.config.context}")

    def prepare(self, tokenizer, channel, cache, progress):
        cfg = self.config
        train = prepare_conversations(cfg.train_data, cfg.train_split, tokenizer, channel,
                                      cache / f"s2s_{cfg.train_split}.npz")
        valid = prepare_conversations(cfg.train_data, cfg.valid_split, tokenizer, channel,
                                      cache / f"s2s_{cfg.valid_split}.npz") if cfg.valid_split else []
        return ([w for c in train for w in conversation_windows(c, cfg.context, cfg.turn_markers)],
                [w for c in valid for w in conversation_windows(c, cfg.context, cfg.turn_markers)])


def train_duplex_s2s(cfg: DuplexS2STrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a duplex S2S ListenSpeakLM as configured; see the module docstring."""
    return train_objective(DuplexS2SObjective(cfg), hooks)


def train_duplex_s2s_command(cfg: DuplexS2STrainConfig) -> TrainResult:
    """``textless train-duplex-s2s``: `train_duplex_s2s`, then destroy the process group it set up."""
    result = train_duplex_s2s(cfg)
    end_process_group()
    return result


# ---------------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------------


def agent_speech(tokens: np.ndarray, vocab, silence: set[int], rate: float, min_silence: float = 0.2
                 ) -> list[tuple[float, float]]:
    """The agent's IPUs (s) from its generated tokens [T] (one per frame): speech = a unit outside `silence`, or
    agent_bos; anything else is silence. Runs of speech frames, then pauses < `min_silence` merged (`merge_ipus`)."""
    lo, hi = vocab.unit_range
    tokens = np.asarray(tokens)
    is_unit = (tokens >= lo) & (tokens < hi)
    speech = (is_unit & ~np.isin(tokens - lo, sorted(silence))) | (tokens == vocab.specials.get(AGENT_BOS, -1))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
    segments = [(a / rate, b / rate) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return merge_ipus(segments, min_silence)


def conversation_scores(agent: list[tuple[float, float]], user: list[tuple[float, float]],
                        onsets: list[float]) -> dict[str, Any]:
    """Barge-in (per onset inside an agent IPU), false alarms, first-response latency of one conversation."""
    barge = [b for b in (barge_in(agent, onset) for onset in onsets) if b is not None]
    alarms, _ = false_alarms(agent, user)
    return {"barge_ins": len(barge), "barge_in_success": sum(b.success for b in barge),
            "barge_in_latencies": [b.latency for b in barge], "false_alarms": len(alarms),
            "user_turns": len(user), "first_response_latency": first_response_latency(agent, user)}


@torch.no_grad()
def speak_along(model: ListenSpeakLM, listen: list[np.ndarray], sampling: ListenSpeakSampling | None = None
                ) -> list[np.ndarray]:
    """The agent's tokens [F_b] of each conversation (one per frame of its user features [F_b, D]), generated while
    listening, no prompt, never stopping (eos and irq excluded)."""
    results = listen_and_speak(model, [np.zeros(0, np.int64)] * len(listen), listen, [len(x) for x in listen],
                               sampling, keep=(AGENT_BOS, AGENT_EOS), stops=())
    return [r.tokens for r in results]


def summarise(per_conversation: list[dict[str, Any]]) -> dict[str, Any]:
    barge = sum(c["barge_ins"] for c in per_conversation)
    latencies = [x for c in per_conversation for x in c["barge_in_latencies"]]
    first = [c["first_response_latency"] for c in per_conversation if c["first_response_latency"] is not None]
    turns = sum(c["user_turns"] for c in per_conversation)
    return {"conversations": len(per_conversation), "barge_ins": barge,
            "barge_in_success": sum(c["barge_in_success"] for c in per_conversation) / barge if barge else None,
            "barge_in_latency_mean": float(np.mean(latencies)) if latencies else None,
            "false_alarm_rate": sum(c["false_alarms"] for c in per_conversation) / turns if turns else None,
            "first_response_latency_mean": float(np.mean(first)) if first else None,
            "first_response_answered": len(first) / len(per_conversation) if per_conversation else None}


__all__ = ["AGENT_BOS", "AGENT_EOS", "DuplexS2SObjective", "DuplexS2STrainConfig", "S2SConversation",
           "agent_speech", "conversation_scores", "conversation_windows", "prepare_conversations", "speak_along",
           "summarise", "train_duplex_s2s", "train_duplex_s2s_command", "turn_marks"]

