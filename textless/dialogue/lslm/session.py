"""`ListeningSession`: a listen-while-speaking model from audio to audio, one listening frame at a time.

The loop, per user frame (a `textless.streaming` session of batch 1 on each part)::

    user samples --StreamingListener.push--> feature f_t --ListenSpeakGenerator.step--> unit of model frame t
        --StreamingVocoder.step--> hop samples

It has `textless.dialogue.duplex.session.DuplexSession`'s surface (``feed``, ``close``, ``latency``,
``model_frames``, ``speech_units``, ``hop``), so `textless duplex` runs either. Model frame t is aligned with user
frame t and depends on user frames < t only (`ListenSpeakGenerator`): the model adds no frame of delay
(``latency.model_frames`` 0); the listener's latency takes the tokenizer's place in `SessionLatency`. After the model
says irq (or eos) it speaks silence (``silence_unit``) to the end: ``stop_frame``. ``irq_probs``: p(irq) per frame.
``user_units``: -1 per user frame (the model hears features, not units).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from textless.dialogue.duplex.session import SessionLatency, StreamingParts, streaming_vocoder
from textless.dialogue.listening import ListeningChannel, StreamingListener
from textless.dialogue.lslm.generate import ListenSpeakGenerator, ListenSpeakSampling
from textless.dialogue.lslm.model import ListenSpeakLM
from textless.errors import ConfigError
from textless.vocoders.model import UnitVocoder
from textless.vocoders.streaming import StreamingVocoder


class ListeningSession(StreamingParts):
    """One conversation: user audio in, model audio out (see the module docstring).

    Args:
        listener: a `StreamingListener`, or the `ListeningChannel` it streams.
        model: a `ListenSpeakLM` (a generator is made with `sampling` and `silence_unit`) or a `ListenSpeakGenerator`.
        vocoder: a `StreamingVocoder`, or a `UnitVocoder` (streamed with `speaker`).
        silence_unit: what the model says once it has stopped (required with a `ListenSpeakLM`).
    """

    speak_names = ("speak",)

    def __init__(self, listener: StreamingListener | ListeningChannel, model: ListenSpeakLM | ListenSpeakGenerator,
                 vocoder: StreamingVocoder | UnitVocoder, *, silence_unit: int | None = None,
                 sampling: ListenSpeakSampling | None = None, speaker: Any = None):
        self.listener = listener if isinstance(listener, StreamingListener) else listener.streaming_listener()
        if isinstance(model, ListenSpeakGenerator):
            if sampling is not None or silence_unit is not None:
                raise ConfigError("sampling= and silence_unit= go with a ListenSpeakLM; a generator has its own")
            self.generator = model
        else:
            if silence_unit is None:
                raise ConfigError("a ListeningSession on a ListenSpeakLM needs silence_unit= (what it says once stopped)")
            self.generator = ListenSpeakGenerator(model, silence_unit, sampling)
        self.model = self.generator.model
        if self.listener.frame_rate != (self.model.lm.frame_rate or self.listener.frame_rate):
            raise ConfigError(f"the listener gives {self.listener.frame_rate} Hz frames, the model speaks "
                              f"{self.model.lm.frame_rate} Hz units")
        self.vocoder = streaming_vocoder(vocoder, speaker)
        self.latency = SessionLatency(self.listener.frame_rate, self.listener.latency, 0, self.vocoder.latency_frames)
        self.user_units: list[int] = []
        self.model_frames: list[np.ndarray] = []
        self.irq_probs: list[float] = []
        self._stop_frame: int | None = None
        self._start(self.listener, self.generator, self.vocoder)

    @property
    def sample_rate(self) -> int:
        return self.vocoder.vocoder.sample_rate

    @property
    def input_sample_rate(self) -> int:
        return self.listener.sample_rate

    @property
    def hop(self) -> int:
        return self.vocoder.hop

    @property
    def speech_units(self) -> np.ndarray:
        return np.asarray([f[0] for f in self.model_frames], dtype=np.int64)

    @property
    def stop_frame(self) -> int | None:
        return self._stop_frame if self._closed else self.generator.stop_frames[0]

    def feed(self, samples: Any) -> np.ndarray:
        """User audio float [n] (at `input_sample_rate`) -> float32 [m]: the model audio it made."""
        self._check_open("feed")
        wav = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1)
        (features,) = self.listener.push([wav])
        return self._frames(features)

    def close(self) -> np.ndarray:
        """The listener's last frames and the vocoder's tail -> float32 [m]; the parts stop streaming."""
        self._check_open("close")
        try:
            (features,) = self.listener.flush()
            pieces = [self._frames(features), self.vocoder.flush()[0].float().cpu().numpy()]
            self._stop_frame = self.generator.stop_frames[0]
            return np.concatenate(pieces).astype(np.float32, copy=False)
        finally:
            self._stop()

    def _frames(self, features: np.ndarray) -> np.ndarray:
        pieces = [np.zeros(0, np.float32)]
        device = self.model.device
        for feature in np.asarray(features, dtype=np.float32):
            unit = int(self.generator.step(torch.from_numpy(feature)[None].to(device))[0])
            self.user_units.append(-1)
            self.irq_probs.append(float(self.generator.irq_prob[0]))
            self.model_frames.append(np.asarray([unit], np.int64))
            audio = self.vocoder.step(torch.tensor([unit], dtype=torch.long, device=self.vocoder.vocoder.device))
            pieces.append(audio[0].float().cpu().numpy())
        return np.concatenate(pieces)
