"""The listening channel of listen-while-speaking models: continuous encoder features of the user's audio, one vector
per frame of the model's speaking units, offline (training) and streaming (sessions).

LSLM (Ma et al. 2024) feeds the listening channel through a streaming SSL encoder whose continuous features go through
a projection into the LM; NeMo's duplex speech-to-speech model sums the user's streaming encoder features into the
LM input every frame. `ListeningChannel` gives those features; the projection and the fusion belong to the LM.

Frames. The encoder runs at ``encoder.frame_rate`` (MFCC 100 Hz, HuBERT / wav2vec2 / WavLM / Whisper 50 Hz), which
must be ``ratio`` times the output `frame_rate` for an integer ``ratio`` >= 1: output frame i is the mean of encoder
frames ``[i ratio, (i + 1) ratio)``, and an utterance of F_enc encoder frames gives ``F_enc // ratio`` output frames
(an incomplete last group is dropped). Offline, `ListeningChannel.forward` pools ``encoder(wavs, lengths)``; waveforms
too short for one encoder frame give 0 frames instead of an error.

Streaming. `StreamingListener` pools the features of a `textless.tokenizers.streaming.StreamingEncoder` (the windows
of `StreamingTokenizer`, with blocks of ``ratio`` encoder frames: one encoder window per output frame); an output
frame is final when its ``ratio`` encoder frames are, i.e. ``latency = ((lookahead + ratio - 1) hop + span) /
sample_rate`` seconds after its first sample (MFCC at 50 Hz with the defaults: 75 ms; Whisper / HuBERT at 50 Hz:
lookahead + one 20 ms frame). With MFCC the streaming features equal the offline ones (the defaults cover the deltas'
reach); attention encoders see only their window (see `textless.tokenizers.streaming`).

Training. ``trainable=False`` freezes the encoder (no gradient, eval mode, forward under ``no_grad``); ``trainable=True``
lets gradients flow into it (LSLM's "continued training" ablation) through a differentiable path of the encoder's
forward (HuBERT / wav2vec2 / WavLM and Whisper: `DIFFERENTIABLE_ENCODERS`). The encoders run in eval mode either way
(no dropout: `SSLEncoder` and `WhisperFeatureEncoder` are inference modules). Streaming is inference only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from textless.errors import ConfigError
from textless.streaming import StreamingModule, StreamingState
from textless.tokenizers.encoders.base import SpeechEncoder, autocast_context, check_batch, frame_mask
from textless.tokenizers.encoders.chunking import frame_geometry
from textless.tokenizers.encoders.registry import load_encoder
from textless.tokenizers.encoders.ssl import SSLEncoder
from textless.tokenizers.encoders.whisper import WhisperFeatureEncoder
from textless.tokenizers.streaming import StreamingEncoder

__all__ = ["DIFFERENTIABLE_ENCODERS", "ListenerStreamState", "ListeningChannel", "ListeningConfig",
           "StreamingListener", "frame_ratio", "mean_pool"]

RATE_TOLERANCE = 1e-6  # relative: encoder frame rates such as 16000 / 320 are floats


@dataclass
class ListeningConfig:
    """The listening channel.

    Attributes:
        encoder: any source `load_encoder` accepts ("mfcc", a Hugging Face directory, "offline:whisper-base", ...).
        layer: the encoder layer (`load_encoder`'s ``layer``; None: its default; must be None for MFCC).
        frame_rate: output frames per second (Hz), the speaking units' rate; the encoder's frame rate must be an
            integer multiple of it.
        trainable: False: the encoder is frozen; True: gradients flow into it.
        left_context: seconds of past audio in each streaming window (None: `StreamingEncoder`'s default).
        lookahead: encoder frames of look-ahead in each streaming window (None: `StreamingEncoder`'s default).
    """

    encoder: str = "mfcc"
    layer: int | None = None
    frame_rate: float = 50.0
    trainable: bool = False
    left_context: float | None = None
    lookahead: int | None = None


def frame_ratio(encoder_rate: float, frame_rate: float) -> int:
    """Encoder frames per output frame (an integer >= 1); `ConfigError` naming both rates otherwise."""
    if not frame_rate > 0:
        raise ConfigError(f"the listening frame_rate must be > 0 Hz, got {frame_rate}")
    ratio = round(encoder_rate / frame_rate)
    if ratio < 1 or abs(ratio * frame_rate - encoder_rate) > RATE_TOLERANCE * encoder_rate:
        raise ConfigError(f"the encoder's frame rate ({encoder_rate:g} Hz) must be an integer multiple of the "
                          f"listening frame_rate ({frame_rate:g} Hz): output frames are means of whole groups of "
                          f"encoder frames")
    return ratio


def mean_pool(features: Tensor, ratio: int) -> Tensor:
    """Means of consecutive groups of `ratio` frames: [..., N, D] -> [..., N // ratio, D] (a last partial group is
    dropped)."""
    count = features.shape[-2] // ratio
    kept = features[..., : count * ratio, :]
    return kept.reshape(*kept.shape[:-2], count, ratio, kept.shape[-1]).mean(dim=-2)


# ------------------------------------------------------------------------------------------------ differentiable paths


def _ssl_features(encoder: SSLEncoder, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """`SSLEncoder.forward` without inference mode: features [B, F, D] that carry gradients, lengths [B]."""
    wavs, lengths = check_batch(wavs, lengths, encoder.device)
    feature_lengths = encoder._feature_lengths(lengths)
    with autocast_context(encoder.device, encoder.dtype, encoder.force_dtype):
        features = encoder._features(wavs, lengths, feature_lengths)
    return features.float(), feature_lengths


def _whisper_features(encoder: WhisperFeatureEncoder, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """`WhisperFeatureEncoder.forward` without inference mode (the log-mel needs no gradient)."""
    wavs, lengths = check_batch(wavs, lengths, encoder.device)
    feature_lengths = encoder._feature_lengths(lengths)
    with torch.no_grad():
        mel = encoder.log_mel(wavs)
    with autocast_context(encoder.device, encoder.dtype, encoder.force_dtype):
        hidden = encoder._encode_mel(mel)
    hidden = hidden[:, : int(feature_lengths.max())].float()
    return hidden * frame_mask(feature_lengths, hidden.shape[1])[..., None].to(hidden.dtype), feature_lengths


DIFFERENTIABLE_ENCODERS: dict[type, Callable[..., tuple[Tensor, Tensor]]] = {
    SSLEncoder: _ssl_features,
    WhisperFeatureEncoder: _whisper_features,
}
"""Encoder class -> ``fn(encoder, wavs [B, T], lengths [B]) -> (features [B, F, D], lengths [B])`` equal to its
forward but differentiable with respect to its parameters (``trainable=True``)."""


def _differentiable(encoder: SpeechEncoder) -> Callable[..., tuple[Tensor, Tensor]] | None:
    return next((fn for cls, fn in DIFFERENTIABLE_ENCODERS.items() if isinstance(encoder, cls)), None)


# ------------------------------------------------------------------------------------------------ offline


class ListeningChannel(torch.nn.Module):
    """The user's waveform -> continuous features at `frame_rate` (see the module docstring).

    Args:
        config: the `ListeningConfig`.
        encoder: use this encoder (tests, a shared one) instead of ``load_encoder(config.encoder, config.layer)``.
            It is frozen (``requires_grad_(False)``) or unfrozen in place according to ``config.trainable``.

    Attributes: `dim` (D), `frame_rate` (Hz of the output frames), `sample_rate` (Hz of the input), `ratio` (encoder
    frames per output frame), `min_samples` (fewest samples giving one encoder frame), `encoder`.
    """

    def __init__(self, config: ListeningConfig, encoder: SpeechEncoder | None = None):
        super().__init__()
        self.config = config
        self.encoder = load_encoder(config.encoder, config.layer) if encoder is None else encoder
        self.ratio = frame_ratio(self.encoder.frame_rate, config.frame_rate)
        self.dim = int(self.encoder.dim)
        self.frame_rate = float(config.frame_rate)
        self.sample_rate = int(self.encoder.sample_rate)
        self.min_samples = frame_geometry(self.encoder).receptive
        self.trainable = bool(config.trainable)
        if self.trainable:
            if _differentiable(self.encoder) is None:
                raise ConfigError(f"trainable=True needs an encoder with a differentiable forward (supported: "
                                  f"{', '.join(cls.__name__ for cls in DIFFERENTIABLE_ENCODERS)}), got "
                                  f"{type(self.encoder).__name__} ({self.encoder.identity().get('name')})")
            self.encoder.requires_grad_(True)
        else:
            self.encoder.requires_grad_(False)
        self.encoder.eval()
        self._latency = self.streaming_listener().latency  # also checks left_context / lookahead now

    def train(self, mode: bool = True) -> ListeningChannel:
        """The module's mode; the encoder stays in eval mode (frozen, or an inference-only encoder)."""
        super().train(mode)
        self.encoder.eval()
        return self

    @property
    def latency(self) -> float:
        """Seconds from an output frame's first sample until the streaming listener returns it."""
        return self._latency

    def num_frames(self, num_samples: int) -> int:
        """Output frames for `num_samples` samples: ``encoder.num_frames(T) // ratio``, 0 when too short for one
        encoder frame."""
        num_samples = int(num_samples)
        return 0 if num_samples < self.min_samples else self.encoder.num_frames(num_samples) // self.ratio

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wavs float [B, T] at `sample_rate` Hz (zero-padded), lengths int [B] samples (None: all T) -> (features
        float32 [B, F, D] at `frame_rate`, frames past an item's length 0; frame lengths int64 [B]), on the
        encoder's device. F = the most output frames of an item (`num_frames`)."""
        if wavs.ndim != 2:
            raise ValueError(f"expected a waveform batch [B, T], got shape {tuple(wavs.shape)}")
        batch, device = wavs.shape[0], self.encoder.device
        lengths = torch.full((batch,), wavs.shape[1], dtype=torch.long) if lengths is None \
            else torch.as_tensor(lengths).to(torch.long)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape [{batch}], got {tuple(lengths.shape)}")
        valid = (lengths >= self.min_samples).cpu()
        if not bool(valid.any()):
            return (torch.zeros(batch, 0, self.dim, device=device),
                    torch.zeros(batch, dtype=torch.long, device=device))
        rows = valid.nonzero()[:, 0]
        every = bool(valid.all())
        features, feature_lengths = self._encode(wavs if every else wavs[rows.to(wavs.device)],
                                                 lengths if every else lengths[rows.to(lengths.device)])
        pooled = mean_pool(features, self.ratio)
        out_lengths = torch.div(feature_lengths, self.ratio, rounding_mode="floor")
        pooled = pooled * frame_mask(out_lengths, pooled.shape[1])[..., None].to(pooled.dtype)
        if every:
            return pooled, out_lengths
        full = pooled.new_zeros(batch, pooled.shape[1], self.dim).index_copy(0, rows.to(device), pooled)
        full_lengths = torch.zeros(batch, dtype=torch.long, device=device).index_copy(0, rows.to(device), out_lengths)
        return full, full_lengths

    def _encode(self, wavs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder features [B, F_enc, D] and lengths [B]: through the differentiable path when trainable."""
        if self.trainable:
            return _differentiable(self.encoder)(self.encoder, wavs, lengths)  # type: ignore[misc]
        with torch.no_grad():
            return self.encoder(wavs, lengths)

    def streaming_listener(self) -> StreamingListener:
        """A `StreamingListener` over this channel's encoder (its windows from the config)."""
        return StreamingListener(self.encoder, ratio=self.ratio, left_context=self.config.left_context,
                                 lookahead=self.config.lookahead)


# ------------------------------------------------------------------------------------------------ streaming


@dataclass
class ListenerStreamState(StreamingState):
    """Per stream (lists of B): ``pending`` float32 [m, D], m < ratio: final encoder frames of the next output frame;
    ``emitted``: output frames returned."""

    pending: list = field(init=False)
    emitted: list = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.pending = [None] * self.batch_size
        self.emitted = [0] * self.batch_size

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        for b in mask.nonzero()[:, 0].tolist():
            self.pending[b], self.emitted[b] = None, 0


class StreamingListener(StreamingModule):
    """Audio pushed in pieces -> final listening features: `StreamingEncoder` features (blocks of `ratio` frames)
    mean-pooled by groups of `ratio` (see the module docstring). Paused streams (`set_exec_mask`) ignore their input.

    Args:
        encoder: the `SpeechEncoder` (referenced, not registered as a submodule).
        ratio: encoder frames per output frame.
        left_context: seconds of past audio per window (None: `StreamingEncoder`'s default).
        lookahead: encoder frames of look-ahead per window (None: `StreamingEncoder`'s default).
    """

    def __init__(self, encoder: SpeechEncoder, *, ratio: int = 1, left_context: float | None = None,
                 lookahead: int | None = None):
        super().__init__()
        if int(ratio) < 1:
            raise ConfigError(f"ratio must be an integer >= 1, got {ratio}")
        self.ratio = int(ratio)
        self.stream = StreamingEncoder(encoder, left_context=left_context, lookahead=lookahead,
                                       block_frames=self.ratio)
        self.dim = int(encoder.dim)

    @property
    def sample_rate(self) -> int:
        return self.stream.sample_rate

    @property
    def frame_rate(self) -> float:
        """Output frames per second (the encoder's frame rate / ratio)."""
        return self.stream.frame_rate / self.ratio

    @property
    def latency_samples(self) -> int:
        """Samples from an output frame's first sample to its output: ``(lookahead + ratio - 1) hop + span``."""
        return self.stream.latency_samples

    @property
    def latency(self) -> float:
        """Algorithmic latency in seconds (`latency_samples` / sample rate)."""
        return self.latency_samples / self.sample_rate

    def _init_streaming_state(self, batch_size: int) -> ListenerStreamState:
        return ListenerStreamState(batch_size, torch.device("cpu"))

    def _state(self, what: str) -> ListenerStreamState:
        state = self._require_streaming(what)
        assert isinstance(state, ListenerStreamState)
        return state

    @property
    def frames_emitted(self) -> list[int]:
        """Output frames returned so far per stream."""
        return list(self._state("frames_emitted").emitted)

    def push(self, samples: Sequence | Tensor) -> list[np.ndarray]:
        """Append audio: per stream float [T_b] at `sample_rate` (list of B, or a tensor [B, T]) -> per stream
        float32 [n_b, D]: the output frames that became final, in order."""
        state = self._state("StreamingListener.push")
        return [self._pool(state, b, f) for b, f in enumerate(self.stream.push(samples))]

    def flush(self, mask: Tensor | None = None) -> list[np.ndarray]:
        """End the masked streams (all when None): their remaining output frames (float32 [n_b, D]; an incomplete
        last group of encoder frames is dropped, as offline), [0, D] for the others; the masked streams then start
        anew."""
        state = self._state("StreamingListener.flush")
        mask = torch.ones(state.batch_size, dtype=torch.bool) if mask is None else self._item_mask(mask, "flush")
        mask = mask.cpu()
        tails = self.stream.flush(mask)
        out = [self._pool(state, b, f) if m else np.zeros((0, self.dim), np.float32)
               for b, (f, m) in enumerate(zip(tails, mask.tolist()))]
        state.reset(mask)
        return out

    def _pool(self, state: ListenerStreamState, b: int, frames: np.ndarray) -> np.ndarray:
        """Stream b's new encoder frames [n, D] + its pending ones -> its complete output frames [n', D]."""
        if state.pending[b] is not None:
            frames = np.concatenate([state.pending[b], frames])
        count = len(frames) // self.ratio
        state.pending[b] = frames[count * self.ratio:] if len(frames) > count * self.ratio else None
        state.emitted[b] += count
        return mean_pool(torch.from_numpy(np.ascontiguousarray(frames)), self.ratio).numpy()
