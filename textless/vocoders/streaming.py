"""`StreamingVocoder`: a `UnitVocoder` driven one unit frame at a time (a `textless.streaming.StreamingModule`).

Receptive field. The unit HiFi-GAN is a stack of non-causal convolutions, so the ``hop`` samples of frame j depend on
the frames [j - left, j + right] only; `receptive_field_sides` computes (left, right) exactly from the config (conv_pre
and conv_post: 3 frames of the 7-tap kernels; each stage's widest resblock branch; each transposed conv's taps),
e.g. (14, 14) for the starter vocoder (upsampling [8, 5, 4, 2]) and (21, 21) for the ``small`` preset at hop 320.

State, per stream: the last ``window = context + lookahead + 1`` unit frames (``frames`` int64 ``[B, window]`` or
``[B, window, C]`` with C codebooks, oldest first), the frames stepped in the current stream (``count`` ``[B]``) and
the speaker. `step(units [B])` appends one frame per stream and runs the generator over each stream's window to
return float ``[B, hop]``: the samples of frame ``count - 1 - lookahead`` (zeros while ``count <= lookahead``, and
for paused streams, whose state does not change). So the step outputs, concatenated, are the offline waveform
delayed by ``lookahead * hop`` samples; `flush` returns the last ``lookahead`` frames ``[B, lookahead * hop]`` and
starts those streams anew. Algorithmic latency: ``lookahead`` frames (`latency`, seconds).

Bound. With the defaults (context = left, lookahead = right) every sample equals ``vocoder.synthesize`` of the whole
sequence, edges included (a window that reaches the stream's start pads it exactly as the whole sequence is padded;
`flush` ends at the true end): only float rounding differs (the same convolutions run over other lengths, so their
sums may round differently), bounded by ``4 D u max|y|`` with D the convolutions on the longest path and u the unit
roundoff of the dtype (tests/test_streaming_vocoder.py: float64 and float32, zero and reflection padding; measured
~1e-8 for the starter vocoder in float32, whose tolerance is ~3e-7).
A smaller ``context`` / ``lookahead`` lowers the cost / latency and is exact only where the omitted frames do not
reach. Cost: one generator pass over ``window`` frames per step (windowed recomputation, no per-layer caches), i.e.
``window`` times offline synthesis: the starter vocoder (window 29) takes ~65 ms per 20 ms frame on one loaded CPU core.

Conditioning: multi-speaker vocoders take a fixed speaker per stream (``speaker=`` for all, `set_speakers` per
stream; kept by resets); f0-conditioned vocoders are refused (an f0 track cannot be streamed from units alone).
Units are frame-level (one per frame, no durations / duration predictor).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from textless.errors import TextlessError
from textless.streaming import StreamingError, StreamingModule, StreamingState
from textless.vocoders.generator import UnitHiFiGANConfig
from textless.vocoders.model import UnitVocoder

__all__ = ["StreamingVocoder", "VocoderStreamState", "receptive_field_sides"]

_EDGE = 3  # conv_pre / conv_post: kernel 7, 'same' padding -> 3 frames / samples each side


def receptive_field_sides(config: UnitHiFiGANConfig) -> tuple[int, int]:
    """(left, right): frames before / after frame j that the samples of frame j depend on.

    Walks back from each output sample t in [0, hop) of frame 0: conv_post (+-3 samples), per stage (last first) the
    widest resblock branch (``sum((d + 1) * (k - 1) / 2)`` samples each side: a pair of 'same' convs of dilation d
    and 1), the transposed conv (output t reads inputs ``ceil((t + p - k + 1) / u) .. floor((t + p) / u)``, p =
    (k - u) / 2), then conv_pre (+-3 frames). ``max(left, right)`` is `generator.receptive_field_frames`.
    """
    reach = max(sum((d + 1) * (k - 1) // 2 for d in ds)
                for k, ds in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))
    left = right = 0
    for t in range(config.hop):
        lo, hi = t - _EDGE, t + _EDGE
        for u, k in reversed(list(zip(config.upsample_rates, config.upsample_kernel_sizes))):
            lo, hi = lo - reach, hi + reach
            p = (k - u) // 2
            lo, hi = -((-(lo + p - k + 1)) // u), (hi + p) // u
        left, right = max(left, _EDGE - lo), max(right, hi + _EDGE)
    return left, right


@dataclass
class VocoderStreamState(StreamingState):
    """Per stream: the last `window` frames (oldest first), the frame count and the speaker (module docstring)."""

    window: int = 1
    codebooks: int = 1
    speakers: torch.Tensor | None = None            # int64 [B] ids or float [B, D] vectors; None: single speaker
    frames: torch.Tensor = field(init=False)        # int64 [B, window] (or [B, window, C])
    count: torch.Tensor = field(init=False)         # int64 [B]: frames stepped in the current stream

    def __post_init__(self) -> None:
        super().__post_init__()
        shape = (self.batch_size, self.window) + ((self.codebooks,) if self.codebooks > 1 else ())
        self.frames = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.count = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)

    def reset(self, mask: torch.Tensor) -> None:
        """New streams for the masked items (their frames dropped); their speakers are kept."""
        super().reset(mask)
        self.count = self.count.masked_fill(mask, 0)
        self.frames = self.frames.masked_fill(mask.view(-1, *([1] * (self.frames.dim() - 1))), 0)


class StreamingVocoder(StreamingModule):
    """One unit frame per stream in, ``hop`` samples of an earlier frame out (see the module docstring).

    Args:
        vocoder: a `UnitVocoder` without f0 conditioning (frame-level units; its duration predictor is not used).
        speaker: multi-speaker vocoders: the default speaker of every stream (an id, a name of ``config.speakers``,
            or a vector [D] for vector-conditioned ones); must be None for single-speaker ones.
        context / lookahead: frames of left context / look-ahead in each window (None: the receptive field's
            sides, which make the output exact).
    """

    def __init__(self, vocoder: UnitVocoder, *, speaker=None, context: int | None = None,
                 lookahead: int | None = None):
        super().__init__()
        config = vocoder.config
        if config.f0:
            raise TextlessError("this vocoder is conditioned on f0, which a unit stream does not carry: streaming "
                                "needs a vocoder without f0 (units, and a speaker if multi-speaker)")
        if config.multispkr and speaker is None:
            raise TextlessError(f"this vocoder is multi-speaker: pass speaker= (an id in [0, {config.num_speakers})"
                                f"{' or a name of ' + str(config.speakers) if config.speakers else ''}); "
                                f"set_speakers() then changes it per stream")
        if not config.multispkr and speaker is not None:
            raise TextlessError("this vocoder is single-speaker: do not pass speaker=")
        self.vocoder = vocoder
        self.left, self.right = receptive_field_sides(config)
        self.context = self.left if context is None else int(context)
        self.lookahead = self.right if lookahead is None else int(lookahead)
        if self.context < 0 or self.lookahead < 0:
            raise TextlessError(f"context and lookahead must be >= 0 frames, got {self.context} and {self.lookahead}")
        self._default_speaker = None if speaker is None else self._speaker_rows([speaker], 1)[0]

    # ------------------------------------------------------------------------------------------------ geometry
    @property
    def hop(self) -> int:
        """Output samples per unit frame."""
        return self.vocoder.hop

    @property
    def window(self) -> int:
        """Frames the generator sees per step: context + lookahead + 1."""
        return self.context + self.lookahead + 1

    @property
    def exact(self) -> bool:
        """Whether the window covers the receptive field (then streaming == offline synthesis)."""
        return self.context >= self.left and self.lookahead >= self.right

    @property
    def latency_frames(self) -> int:
        """Frames between a unit frame going in and its audio coming out (= lookahead)."""
        return self.lookahead

    @property
    def latency(self) -> float:
        """Algorithmic latency in seconds: ``lookahead * hop / sample_rate``."""
        return self.lookahead * self.hop / self.vocoder.sample_rate

    # ------------------------------------------------------------------------------------------------ speakers
    def _speaker_rows(self, speakers, n: int) -> torch.Tensor:
        """Speaker conditioning for `n` streams: int64 [n] ids or float32 [n, D] vectors."""
        config = self.vocoder.config
        if config.speaker_input == "id":
            items = [speakers] if isinstance(speakers, (str, int, np.integer)) else list(speakers)
            ids = torch.as_tensor([self.vocoder.speaker_id(s) for s in items], dtype=torch.long)
            ids = ids.expand(n) if ids.numel() == 1 else ids
            if ids.shape != (n,) or bool((ids < 0).any()) or bool((ids >= config.num_speakers).any()):
                raise TextlessError(f"speakers must be one id or {n} ids in [0, {config.num_speakers}), got "
                                    f"{ids.tolist()}")
            return ids.clone()
        vectors = torch.as_tensor(np.asarray(speakers, np.float32))
        vectors = vectors.expand(n, -1) if vectors.dim() == 1 else vectors
        if vectors.dim() != 2 or vectors.shape[0] != n:
            raise TextlessError(f"speakers must be one vector [D] or {n} vectors [{n}, D], got "
                                f"{tuple(vectors.shape)}")
        return vectors.clone()

    def set_speakers(self, speakers, mask: torch.Tensor | None = None) -> None:
        """Speaker of the masked streams (all when None): one id / name / vector, or one per stream ([B] / [B, D]).

        Frames already in a stream's window are re-voiced with the new speaker: for output equal to offline synthesis
        with one speaker, set it when the stream starts (after `reset_streaming`)."""
        state = self._state("set_speakers")
        if state.speakers is None:
            raise TextlessError("this vocoder is single-speaker: it has no speakers to set")
        mask = torch.ones(state.batch_size, dtype=torch.bool) if mask is None else self._item_mask(mask,
                                                                                                    "set_speakers")
        rows = self._speaker_rows(speakers, state.batch_size).to(state.device)
        m = mask.to(state.device).view(-1, *([1] * (rows.dim() - 1)))
        state.speakers = torch.where(m, rows, state.speakers)

    # ------------------------------------------------------------------------------------------------ streaming
    def _init_streaming_state(self, batch_size: int) -> VocoderStreamState:
        speakers = None
        if self._default_speaker is not None:
            speakers = self._default_speaker.expand(batch_size, *self._default_speaker.shape).clone()
            speakers = speakers.to(self.vocoder.device)
        return VocoderStreamState(batch_size, self.vocoder.device, window=self.window,
                                  codebooks=self.vocoder.config.num_codebooks, speakers=speakers)

    def _state(self, what: str) -> VocoderStreamState:
        state = self._require_streaming(what)
        assert isinstance(state, VocoderStreamState)
        return state

    def _check_units(self, state: VocoderStreamState, units) -> torch.Tensor:
        units = torch.as_tensor(units, device=state.device)
        c = state.codebooks
        want = (state.batch_size,) if c == 1 else (state.batch_size, c)
        if units.shape != want or units.dtype.is_floating_point or units.dtype == torch.bool:
            raise StreamingError(f"StreamingVocoder.step takes one integer unit per stream: shape {list(want)}, got "
                                 f"{units.dtype} {tuple(units.shape)}")
        units = units.long()
        run = units[state.exec_mask]
        k = self.vocoder.config.codebook_size
        if run.numel() and (bool((run < 0).any()) or bool((run >= k).any())):
            raise StreamingError(f"StreamingVocoder.step: unit ids must be in [0, {k}), got [{int(run.min())}, "
                                 f"{int(run.max())}]")
        return units

    def _synthesize(self, state: VocoderStreamState, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator over the windows of `rows` (int64 [n]): (waveforms float [n, max_len * hop], lengths [n])."""
        lengths = state.count[rows].clamp(max=state.window)
        longest = int(lengths.max())
        ids = state.frames[rows, :longest]
        mask = torch.arange(longest, device=state.device)[None, :] < lengths[:, None]
        speakers = None if state.speakers is None else state.speakers[rows]
        wav = self.vocoder.generator(ids, None if bool(mask.all()) else mask, speakers)[:, 0]
        return wav, lengths

    @torch.no_grad()
    def step(self, units: torch.Tensor) -> torch.Tensor:
        """Append one frame per stream: units int ``[B]`` (``[B, C]`` with C codebooks) -> float ``[B, hop]``, the
        samples of frame ``count - 1 - lookahead`` of each running stream (zeros before that frame exists and for
        paused streams, whose state is left unchanged)."""
        state = self._state("StreamingVocoder.step")
        units = self._check_units(state, units)
        run = state.exec_mask
        full = state.count >= state.window
        shifted = torch.where((run & full).view(-1, *([1] * (state.frames.dim() - 1))),
                              state.frames.roll(-1, dims=1), state.frames)
        position = state.count.clamp(max=state.window - 1)
        rows = torch.arange(state.batch_size, device=state.device)
        current = shifted[rows, position]
        shifted[rows, position] = torch.where(run.view(-1, *([1] * (units.dim() - 1))), units, current)
        state.frames = shifted
        state.count = state.count + run.long()

        dtype = self.vocoder.generator.conv_pre.weight.dtype
        out = torch.zeros(state.batch_size, self.hop, dtype=dtype, device=state.device)
        need = (run & (state.count > self.lookahead)).nonzero()[:, 0]
        if need.numel():
            wav, lengths = self._synthesize(state, need)
            start = (lengths - 1 - self.lookahead) * self.hop
            index = start[:, None] + torch.arange(self.hop, device=state.device)[None, :]
            out[need] = wav.gather(1, index)
        return out

    @torch.no_grad()
    def flush(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """End the masked streams (all when None; exec mask ignored): float ``[B, lookahead * hop]``, their last
        ``lookahead`` frames of delayed output (frames ``count - lookahead .. count - 1``, zeros before frame 0 and
        for the other streams). The masked streams then start anew, as after `reset_streaming`."""
        state = self._state("StreamingVocoder.flush")
        mask = torch.ones(state.batch_size, dtype=torch.bool) if mask is None else self._item_mask(mask, "flush")
        mask = mask.to(state.device)
        dtype = self.vocoder.generator.conv_pre.weight.dtype
        la, hop = self.lookahead, self.hop
        out = torch.zeros(state.batch_size, la, hop, dtype=dtype, device=state.device)
        need = (mask & (state.count > 0)).nonzero()[:, 0]
        if need.numel() and la:
            wav, lengths = self._synthesize(state, need)
            position = lengths[:, None] - la + torch.arange(la, device=state.device)[None, :]  # [n, la] in window
            index = position.clamp(min=0)[..., None] * hop + torch.arange(hop, device=state.device)
            pieces = wav.gather(1, index.reshape(len(need), -1)).reshape(len(need), la, hop)
            out[need] = pieces * (position >= 0)[..., None].to(dtype)
        state.reset(mask)
        return out.reshape(state.batch_size, la * hop)
