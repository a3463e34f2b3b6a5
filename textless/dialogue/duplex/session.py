"""`DuplexSession`: a full-duplex conversation from audio to audio, one user frame at a time.

The loop, per user frame (a `textless.streaming` session of batch 1 on each part)::

    user samples --StreamingTokenizer.push--> frame label u_t --generator.step--> model frame --StreamingVocoder.step--> hop samples

    session = DuplexSession(tokenizer, model, vocoder, on_frame=callback)
    audio = session.feed(samples)        # float [n] at tokenizer.sample_rate -> float32 [m] new model audio
    audio = session.close()              # the rest (tokenizer flush, model drain, vocoder flush)

`feed` takes the user's audio in pieces of any size (one frame's samples per call behind a microphone or a socket;
the labels, hence the whole output, do not depend on how the audio was cut) at the tokenizer's sample rate, mono.
It returns the model audio made by the frames that became final, at the vocoder's rate. The concatenation of every
`feed` and `close` output (the *model stream*) is the vocoder's streamed output: ``vocoder_frames`` frames of zeros,
then the audio of model frames 0, 1, ... (``(M + vocoder_frames) * hop`` samples for M model frames).

Generators. Native (`DuplexGenerator`): one step per user frame; step t returns the model frame t - D (D =
``layout.max_delay``), nothing during the first D steps; `close` steps D more times on the listen stream's filler
(silence), so every user frame has its model frame (M = T user frames). The vocoder voices the speak stream named
"speak" (the frame-level units). TDM (`TDMGenerator`): user frames are buffered into chunks of ``chunk_frames`` and
each full chunk is one step returning that chunk's model frames; `close` runs the last, shorter chunk.

Latency (`SessionLatency`, algorithmic: compute time excluded). Model frame j is the model's frame aligned with user
frame j (as in the two-channel training data). It can be played ``total`` seconds after user frame j starts::

    total = tokenizer.latency + (model_frames + vocoder_frames) / frame_rate

* tokenizer: its label of frame j comes ``(lookahead + block_frames - 1) hop + span`` samples after the frame's
  first sample (`StreamingTokenizer.latency`);
* model: native ``max_delay`` frames (frame j comes out at step j + D); TDM ``chunk_frames - 1`` (a chunk's first
  frame waits for its last one);
* vocoder: ``lookahead`` frames (`StreamingVocoder.latency_frames`).

So a listener hears model frame j at ``j / frame_rate + total`` seconds from the start of the input: the model stream
starts ``tokenizer + model_frames / frame_rate`` seconds after the input (`SessionLatency.stream_offset`; its own
first ``vocoder_frames`` are the vocoder's latency). To align model frame j with user frame j instead (no latency:
what the model "meant"), drop the stream's first ``vocoder_frames * hop`` samples.

Callback. ``on_frame(user_units, model_units, model_audio)`` once per generator step (TDM: once per frame of a chunk,
when the chunk is done): ``user_units`` int64 [n_listen] the user frame just fed (None for the drain steps of
`close`); ``model_units`` int64 [n_speak] the model frame that came out (None while none does: the first D native
steps), every speak stream in layout order (TDM: [1]); ``model_audio`` float32 [hop] the vocoder samples this frame
made (the audio of the model frame ``vocoder_frames`` earlier; zeros before it exists; empty when no model frame
came out). Each has its own delay (see Latency).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import torch

from textless.data.identity import UnitIdentity
from textless.dialogue.duplex.generate import DuplexGenerator, DuplexSampling, TDMGenerator
from textless.dialogue.duplex.model import DuplexLM
from textless.errors import ConfigError
from textless.streaming import StreamingError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.streaming import StreamingTokenizer
from textless.vocoders.model import UnitVocoder
from textless.vocoders.streaming import StreamingVocoder

__all__ = ["DuplexSession", "FrameCallback", "SessionLatency", "StreamingParts", "frame_identity", "streaming_vocoder"]

AUDIO_STREAM = "speak"  # the speak stream the vocoder voices (native layouts)

FrameCallback = Callable[[np.ndarray | None, np.ndarray | None, np.ndarray], None]


@dataclass(frozen=True)
class SessionLatency:
    """The algorithmic latency of a session (module docstring): seconds, frames at `frame_rate` Hz."""

    frame_rate: float       # Hz: user and model frames
    tokenizer: float        # s: a user frame's start -> its label
    model_frames: int       # frames: native max_delay, TDM chunk_frames - 1
    vocoder_frames: int     # frames: the vocoder's look-ahead

    @property
    def model(self) -> float:
        return self.model_frames / self.frame_rate

    @property
    def vocoder(self) -> float:
        return self.vocoder_frames / self.frame_rate

    @property
    def total(self) -> float:
        """Seconds from user frame j's start to model frame j's audio."""
        return self.tokenizer + self.model + self.vocoder

    @property
    def stream_offset(self) -> float:
        """Seconds from the input's start to the model stream's first sample (its vocoder latency excluded)."""
        return self.tokenizer + self.model

    def to_dict(self) -> dict[str, float]:
        return {"frame_rate": self.frame_rate, "tokenizer": self.tokenizer, "model_frames": self.model_frames,
                "model": self.model, "vocoder_frames": self.vocoder_frames, "vocoder": self.vocoder,
                "total": self.total}


def frame_identity(tokenizer: SpeechTokenizer) -> UnitIdentity:
    """What a `StreamingTokenizer` of `tokenizer` emits: its k-means labels, frame-level, no BPE."""
    return UnitIdentity(tokenizer=tokenizer.identity(), vocab_size=tokenizer.num_units,
                        frame_rate=tokenizer.frame_rate, deduplicated=False, bpe=False)


def streaming_vocoder(vocoder: StreamingVocoder | UnitVocoder, speaker: Any = None) -> StreamingVocoder:
    """A `UnitVocoder` streamed exactly (a multi-speaker one with `speaker`, default its first), or the given
    `StreamingVocoder` (which has its speaker already: `speaker` must be None)."""
    if isinstance(vocoder, StreamingVocoder):
        if speaker is not None:
            raise ConfigError("speaker= goes with a UnitVocoder; a StreamingVocoder has its speaker already")
        return vocoder
    if vocoder.config.multispkr and speaker is None:
        speaker = (vocoder.config.speakers or [0])[0]
    return StreamingVocoder(vocoder, speaker=speaker)


class StreamingParts:
    """The lifetime of a session's streaming parts: every part streams one stream from `_start` until `_stop`
    (`close`, or leaving the session's ``with`` block); a part can serve one session at a time."""

    _parts: tuple = ()
    _closed = False

    def _start(self, *parts: Any) -> None:
        self._parts, self._closed = parts, False
        started = []
        try:
            for part in parts:
                part.streaming_forever(1)
                started.append(part)
        except BaseException:
            for part in started:
                part.stop_streaming()
            raise

    def _check_open(self, what: str) -> None:
        if self._closed:
            name = type(self).__name__
            raise StreamingError(f"{name}.{what}: the session is closed (start a new {name})")

    def _stop(self) -> None:
        self._closed = True
        for part in self._parts:
            part.stop_streaming()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            self._stop()


class DuplexSession(StreamingParts):
    """One conversation: user audio in, model audio out (see the module docstring).

    Args:
        tokenizer: a `StreamingTokenizer`, or a `SpeechTokenizer` (streamed with its defaults).
        model: a `DuplexLM` (a generator is made with `sampling`) or a `DuplexGenerator` / `TDMGenerator`.
        vocoder: a `StreamingVocoder`, or a `UnitVocoder` (streamed exactly, with `speaker`; a multi-speaker one
            defaults to its first speaker).
        sampling: the generator's sampling when `model` is a `DuplexLM` (default `DuplexSampling()`, seed 0).
        on_frame: called once per generator step (module docstring).

    The three parts stream from construction to `close` (a part can serve one session at a time); use the session
    as a context manager to end their streaming if the loop fails.
    """

    def __init__(self, tokenizer: StreamingTokenizer | SpeechTokenizer, model: DuplexLM | DuplexGenerator | TDMGenerator,
                 vocoder: StreamingVocoder | UnitVocoder, *, sampling: DuplexSampling | None = None,
                 speaker: Any = None, on_frame: FrameCallback | None = None):
        self.tokenizer = tokenizer if isinstance(tokenizer, StreamingTokenizer) else StreamingTokenizer(tokenizer)
        self.generator = _generator(model, sampling)
        self.vocoder = streaming_vocoder(vocoder, speaker)
        self.on_frame = on_frame
        self.model: DuplexLM = self.generator.model
        where = f"the streaming tokenizer ({self.tokenizer.tokenizer.identity().get('name')})"
        units = frame_identity(self.tokenizer.tokenizer)
        self.model.check_units(units, where)
        self.vocoder.vocoder.check_units(units, where)
        self.tdm = isinstance(self.generator, TDMGenerator)
        if self.tdm:
            self.chunk = self.generator.fmt.chunk_frames
            self.speak_index, model_frames, self.drain_unit = 0, self.chunk - 1, None
        else:
            layout = self.generator.layout
            if len(layout.listen) != 1:
                raise ConfigError(f"a duplex session feeds one user channel; the layout listens to "
                                  f"{len(layout.listen)} streams")
            names = [layout.streams[k].name for k in layout.speak]
            if AUDIO_STREAM not in names and len(names) > 1:
                raise ConfigError(f"a native layout with several speak streams needs one named {AUDIO_STREAM!r} "
                                  f"(the frame-level units the vocoder voices), got {names}")
            self.speak_index = names.index(AUDIO_STREAM) if AUDIO_STREAM in names else 0
            self.speak_spec = layout.streams[layout.speak[self.speak_index]]
            listen = layout.streams[layout.listen[0]]
            self.drain_unit = listen.filler_id if listen.filler_id < listen.units else 0
            model_frames = layout.max_delay
        self.latency = SessionLatency(self.tokenizer.frame_rate, self.tokenizer.latency, model_frames,
                                      self.vocoder.latency_frames)
        self.user_units: list[int] = []                 # the labels fed, in order
        self.model_frames: list[np.ndarray] = []        # int64 [n_speak] per model frame
        self._pending: list[int] = []                   # TDM: user units of the chunk being filled
        self._start(self.tokenizer, self.generator, self.vocoder)

    # ------------------------------------------------------------------------------------------------ geometry
    @property
    def input_sample_rate(self) -> int:
        """Hz of the audio `feed` takes (the tokenizer's)."""
        return self.tokenizer.sample_rate

    @property
    def sample_rate(self) -> int:
        """Hz of the model audio (the vocoder's)."""
        return self.vocoder.vocoder.sample_rate

    @property
    def hop(self) -> int:
        """Model audio samples per frame."""
        return self.vocoder.hop

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def speak_names(self) -> tuple[str, ...]:
        """The model's speak streams (a model frame's order)."""
        return tuple(self.model.speak_names)

    @property
    def speech_units(self) -> np.ndarray:
        """int64 [M]: the units the vocoder voiced, one per model frame so far."""
        return np.asarray([f[self.speak_index] for f in self.model_frames], dtype=np.int64)

    # ------------------------------------------------------------------------------------------------ the loop
    def feed(self, samples: Any) -> np.ndarray:
        """User audio float [n] (any n >= 0, at `input_sample_rate`) -> float32 [m]: the model audio it made."""
        self._check_open("feed")
        wav = torch.as_tensor(np.asarray(samples, dtype=np.float32) if not isinstance(samples, torch.Tensor)
                              else samples).detach().to("cpu", torch.float32)
        if wav.dim() != 1:
            raise StreamingError(f"DuplexSession.feed takes mono samples [n], got shape {tuple(wav.shape)}")
        (labels,) = self.tokenizer.push([wav])
        return self._frames(labels)

    def close(self) -> np.ndarray:
        """End the session: the last labels, the model's last frames and the vocoder's tail -> float32 [m]. The parts
        stop streaming (they can serve a new session)."""
        self._check_open("close")
        try:
            (labels,) = self.tokenizer.flush()
            pieces = [self._frames(labels)]
            if self.tdm and self._pending:
                pieces.append(self._tdm_chunk())
            for _ in range(0 if self.tdm else self.latency.model_frames):
                pieces.append(self._native_step(None))
            pieces.append(self.vocoder.flush()[0].float().cpu().numpy())
            return np.concatenate(pieces).astype(np.float32, copy=False)
        finally:
            self._stop()

    def _frames(self, labels: np.ndarray) -> np.ndarray:
        pieces = [np.zeros(0, np.float32)]
        for u in np.asarray(labels, dtype=np.int64).tolist():
            self.user_units.append(u)
            if self.tdm:
                self._pending.append(u)
                if len(self._pending) == self.chunk:
                    pieces.append(self._tdm_chunk())
            else:
                pieces.append(self._native_step(u))
        return np.concatenate(pieces)

    def _native_step(self, unit: int | None) -> np.ndarray:
        """One generator step on user unit `unit` (None: the drain filler) -> the vocoder's samples."""
        device = self.model.device
        fed = self.drain_unit if unit is None else unit
        out = self.generator.step(torch.tensor([[fed]], dtype=torch.long, device=device))
        user = None if unit is None else np.asarray([unit], np.int64)
        if out is None:
            audio = np.zeros(0, np.float32)
            if self.on_frame is not None:
                self.on_frame(user, None, audio)
            return audio
        frame = out[0].cpu().numpy().astype(np.int64)
        return self._voice(user, frame)

    def _tdm_chunk(self) -> np.ndarray:
        """One TDM step on the pending chunk -> the vocoder's samples of its frames."""
        chunk, self._pending = self._pending, []
        out = self.generator.step(torch.tensor([chunk], dtype=torch.long, device=self.model.device))
        units = out[0].cpu().numpy().astype(np.int64)
        return np.concatenate([self._voice(np.asarray([u], np.int64), units[i: i + 1])
                               for i, u in enumerate(chunk)])

    def _voice(self, user: np.ndarray | None, frame: np.ndarray) -> np.ndarray:
        """Record model frame `frame` [n_speak], step the vocoder on its speech unit -> float32 [hop]."""
        self.model_frames.append(frame)
        unit = int(frame[self.speak_index])
        if not self.tdm and unit >= self.speak_spec.units:  # a special of the speak stream: voiced as its filler
            unit = self.speak_spec.filler_id if self.speak_spec.filler_id < self.speak_spec.units else self.drain_unit
        device = self.vocoder.vocoder.device
        audio = self.vocoder.step(torch.tensor([unit], dtype=torch.long, device=device))[0]
        audio = audio.float().cpu().numpy()
        if self.on_frame is not None:
            self.on_frame(user, frame, audio)
        return audio


def _generator(model: DuplexLM | DuplexGenerator | TDMGenerator, sampling: DuplexSampling | None
               ) -> DuplexGenerator | TDMGenerator:
    if isinstance(model, (DuplexGenerator, TDMGenerator)):
        if sampling is not None:
            raise ConfigError("sampling= goes with a DuplexLM; a generator has its sampling already")
        return model
    if not isinstance(model, DuplexLM):
        raise TypeError(f"DuplexSession takes a DuplexLM, DuplexGenerator or TDMGenerator, got {type(model).__name__}")
    return (TDMGenerator if model.config.format == "tdm" else DuplexGenerator)(model, sampling)
