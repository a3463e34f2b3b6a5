"""Streaming generation on a `DuplexLM`: Moshi's LMGen for the native format, a `TDMSwitch` loop for TDM.

Native (`DuplexGenerator`)::

    with gen.streaming(B):
        out = gen.step(user_frame)     # int64 [B, n_listen] -> int64 [B, n_speak] or None
        out = gen.step(user_frame, speak_frame)   # the model's own frame t given (a prompt; -1: sample)

Step t of a stream (counted from its start or last reset) writes user frame t at delayed position t + d_k of each
listen stream, feeds the model delayed frame t (a stream's pad before its delay; a speak stream without delay
starts with its filler, since nothing predicts frame 0), samples each speak stream's token at t + 1 (pad excluded:
it is never a label; pad is forced while t + 1 < d_k) and returns the undelayed speak frame t - D (D =
``layout.max_delay``; speak streams in layout order): the model's frame aligned with user frame t - D, once all its
streams are known. So the first D steps return nothing: None when no stream has a frame, else rows of -1 for the
streams still in their first D steps and for paused ones (`set_exec_mask`; paused streams keep their state).
A model with parallel heads gives every speak stream's logits at once; with a depth decoder the streams are sampled
one after the other (layout order) through `DuplexLM.step`'s ``choose``, each conditioned on the tokens just drawn
(forced pads included) for the streams before it, as it was trained.

Prompting (Moshi's teacher forcing of its own channel): ``speak_frame`` int64 [B, n_speak] is the model side's
recorded frame t of each speak stream (-1: not given). It is written at delayed position t + d_k before step t feeds
anything: a stream without delay is fed it now in place of what step t - 1 sampled; a delayed stream's token is held
and takes the place of the sample when that position comes (a depth decoder is conditioned on it). So a session
that passes frames 0..P-1 of both sides and then only user frames continues a recorded conversation; streams of one
layout may be given while others are sampled (e.g. a content stream teacher-forced).

TDM (`TDMGenerator`)::

    with gen.streaming(B):
        units = gen.step(user_chunk)   # int64 [B, c] user units (c <= chunk_frames) -> int64 [B, c] speak units

Per chunk the forced tokens (the last sampled token, or ``<bos>`` at the start; ``<listen>``, the user units, and
``<speak>`` in the fixed format) are fed in one `DuplexLM.step_chunk`, then the model's tokens are sampled one at a
time under ``TDMSwitch.allowed()`` (controlled: ``[speak]`` / ``[listen]`` first; ``[listen]`` chunks come back as
``silence_unit``). Streams whose chunk is done are paused while the others sample. Only the last chunk of a stream
may be shorter than ``chunk_frames`` (a later step is a `StreamingError` until it is reset). Paused streams return
rows of -1. ``gen.step(user_chunk, speak_chunk)`` gives the model side's own units of the chunk (a prompt; a row of
-1 is sampled): its tokens are fed as `TDMFormat.encode` writes them, so chunks 0..P-1 given and then sampled
continue a recorded conversation exactly as a model fed its encoding would.

Sampling (`DuplexSampling`): temperature (0: greedy), top-k, top-p per speak stream (``streams`` overrides by name;
the TDM stream is "tdm"; Moshi samples text at 0.7 / top-k 25 and audio at 0.8 / top-k 250). Stream b of a session
draws from its own generator seeded ``seed + b``, once per sampled token while it runs, so its output does not
depend on the other streams of the batch (up to float differences of batched matrix products).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from textless.dialogue.duplex.model import TDM_STREAM, DuplexLM
from textless.dialogue.streams import TDMFormat, TDMSwitch
from textless.errors import ConfigError
from textless.lm.generation import filter_logits
from textless.streaming import StreamingError, StreamingModule, StreamingState

SAMPLING_KEYS = ("temperature", "top_k", "top_p")


@dataclass
class DuplexSampling:
    """Sampling of every speak stream; `streams` overrides {stream name: {temperature / top_k / top_p}}."""

    temperature: float = 1.0           # 0: greedy
    top_k: int | None = None           # None: all tokens
    top_p: float | None = None         # None: no nucleus
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int | None = 0               # stream b of a session draws from a generator seeded seed + b (None: random)

    def __post_init__(self) -> None:
        for name, override in self.streams.items():
            unknown = sorted(set(override) - set(SAMPLING_KEYS))
            if unknown:
                raise ConfigError(f"DuplexSampling.streams[{name!r}]: unknown keys {unknown} (known: {SAMPLING_KEYS})")
        for name in (None, *self.streams):
            temperature, top_k, top_p = self.for_stream(name)
            where = "DuplexSampling" + ("" if name is None else f".streams[{name!r}]")
            if not (math.isfinite(temperature) and temperature >= 0):
                raise ConfigError(f"{where}: temperature must be >= 0 (0: greedy), got {temperature}")
            if top_k is not None and top_k < 1:
                raise ConfigError(f"{where}: top_k must be None or >= 1, got {top_k}")
            if top_p is not None and not 0 < top_p <= 1:
                raise ConfigError(f"{where}: top_p must be None or in (0, 1], got {top_p}")

    def for_stream(self, name: str | None) -> tuple[float, int | None, float | None]:
        """(temperature, top_k, top_p) of a speak stream."""
        override = self.streams.get(name, {}) if name is not None else {}
        return tuple(override.get(key, getattr(self, key)) for key in SAMPLING_KEYS)  # type: ignore[return-value]


def sample(logits: torch.Tensor, allowed: torch.Tensor, settings: tuple[float, int | None, float | None],
           generators: list[torch.Generator], rows: list[int]) -> torch.Tensor:
    """Tokens int64 [B] from logits [B, V] restricted to `allowed` (bool [B, V] or [V]); only `rows` draw (one
    sample each, from their own generator); the other rows hold the argmax."""
    temperature, top_k, top_p = settings
    scores = logits.float().masked_fill(~allowed, -math.inf)
    tokens = scores.argmax(dim=-1)
    if temperature == 0:
        return tokens
    probs = filter_logits(scores, temperature=temperature, top_k=top_k, top_p=top_p).softmax(dim=-1)
    for b in rows:
        tokens[b] = torch.multinomial(probs[b], 1, generator=generators[b])[0]
    return tokens


def _check_overrides(sampling: DuplexSampling, model: DuplexLM) -> None:
    unknown = sorted(set(sampling.streams) - set(model.speak_names))
    if unknown:
        raise ConfigError(f"DuplexSampling.streams names {unknown}, not speak streams of the model "
                          f"{list(model.speak_names)}")


def _generators(batch_size: int, seed: int | None, device: torch.device) -> list[torch.Generator]:
    base = seed if seed is not None else torch.Generator().seed() % 2**62
    return [torch.Generator(device=device).manual_seed(base + b) for b in range(batch_size)]


def _check_input(tokens: Any, batch_size: int, width: str, units: int, device: torch.device,
                 what: str) -> torch.Tensor:
    tokens = torch.as_tensor(tokens, device=device)
    if tokens.dim() != 2 or tokens.shape[0] != batch_size or tokens.dtype.is_floating_point \
            or tokens.dtype == torch.bool:
        raise StreamingError(f"{what} takes integer units [{batch_size}, {width}], got {tokens.dtype} "
                             f"{tuple(tokens.shape)}")
    tokens = tokens.long()
    if bool(((tokens < 0) | (tokens >= units)).any()):
        raise StreamingError(f"{what}: user units must be in [0, {units})")
    return tokens


# ---------------------------------------------------------------------------------------------------------------------
# native
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class NativeGenState(StreamingState):
    initial: torch.Tensor | None = None                  # int64 [N, W]: a fresh stream's token buffer
    seed: int | None = None
    offsets: torch.Tensor = field(init=False)            # int64 [B]: steps of each stream's current life
    buffer: torch.Tensor = field(init=False)             # int64 [B, N, W]: delayed position p in column p % W
    given: torch.Tensor = field(init=False)              # bool [B, N, W]: a prompt token not sampled over
    generators: list[torch.Generator] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.initial is not None
        self.offsets = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        self.buffer = self.initial.expand(self.batch_size, -1, -1).clone()
        self.given = torch.zeros_like(self.buffer, dtype=torch.bool)
        self.generators = _generators(self.batch_size, self.seed, self.device)

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.offsets = self.offsets.masked_fill(mask, 0)
        self.buffer = torch.where(mask[:, None, None], self.initial, self.buffer)
        self.given = self.given & ~mask[:, None, None]


class DuplexGenerator(StreamingModule):
    """Frame-by-frame generation on a native `DuplexLM` (see the module docstring). The model streams with it."""

    def __init__(self, model: DuplexLM, sampling: DuplexSampling | None = None):
        super().__init__()
        if model.config.format != "native":
            raise ConfigError("DuplexGenerator runs a native duplex LM; use TDMGenerator for a TDM one")
        self.model = model
        self.sampling = sampling or DuplexSampling()
        _check_overrides(self.sampling, model)
        layout = self.layout = model.layout
        self.width = layout.max_delay + 2  # columns of the token buffer: enough for every delay
        self.delays = torch.tensor([s.delay for s in layout.streams])
        self.pads = torch.tensor([s.pad for s in layout.streams])

    @property
    def n_listen(self) -> int:
        return len(self.layout.listen)

    @property
    def n_speak(self) -> int:
        return len(self.layout.speak)

    def _initial(self) -> torch.Tensor:
        buffer = self.pads[:, None].repeat(1, self.width)
        for k in self.layout.speak:
            spec = self.layout.streams[k]
            if spec.delay == 0:
                buffer[k, 0] = spec.filler_id
        return buffer.to(self.model.device)

    def _init_streaming_state(self, batch_size: int) -> NativeGenState:
        return NativeGenState(batch_size, self.model.device, initial=self._initial(), seed=self.sampling.seed)

    @torch.no_grad()
    def step(self, user_frame: torch.Tensor, speak_frame: torch.Tensor | None = None) -> torch.Tensor | None:
        """user_frame int64 [B, n_listen] (units of the listen streams, layout order); speak_frame: None, or int64
        [B, n_speak] the model side's own frame t (-1: sample) -> speak frame int64 [B, n_speak] or None (module
        docstring)."""
        state = self._require_streaming("DuplexGenerator.step")
        assert isinstance(state, NativeGenState)
        layout, device, width = self.layout, state.device, self.width
        units = min((layout.streams[k].units for k in layout.listen), default=0)
        user = _check_input(user_frame, state.batch_size, f"{self.n_listen} listen streams", units, device,
                            "DuplexGenerator.step")
        if user.shape[1] != self.n_listen:
            raise StreamingError(f"DuplexGenerator.step: {user.shape[1]} user streams, the layout listens to "
                                 f"{self.n_listen}")
        delays, pads = self.delays.to(device), self.pads.to(device)
        listen, speak = list(layout.listen), list(layout.speak)
        offsets, run = state.offsets, state.exec_mask
        _write(state.buffer, listen, offsets[:, None] + delays[listen], user, run, width)
        if speak_frame is not None:
            self._give(state, self._check_speak(speak_frame, state.batch_size), run)
        column = (offsets % width)[:, None, None].expand(-1, len(layout), 1)
        frame = state.buffer.gather(2, column)[..., 0]
        frame = torch.where(offsets[:, None] < delays, pads, frame)
        rows = run.nonzero()[:, 0].tolist()
        tokens = []

        def draw(name: str, logits: torch.Tensor) -> torch.Tensor:
            """Sample speak stream `name`'s token at position t + 1 (its pad while t + 1 < its delay)."""
            k = layout.index(name)
            spec = layout.streams[k]
            allowed = torch.ones(spec.vocab_size, dtype=torch.bool, device=device)
            allowed[spec.pad] = False
            token = sample(logits, allowed, self.sampling.for_stream(name), state.generators, rows)
            column = ((offsets + 1) % width)[:, None]
            given = state.given[:, k].gather(1, column)[:, 0]
            token = torch.where(given, state.buffer[:, k].gather(1, column)[:, 0], token)
            tokens.append(torch.where(offsets + 1 < delays[k], pads[k], token))
            return tokens[-1]

        if self.model.depth is None:  # parallel heads: every stream's logits at once
            logits = self.model.step(frame)
            for k in speak:
                draw(layout.streams[k].name, logits[layout.streams[k].name])
        else:                         # the depth decoder: stream by stream, each after the ones it reads
            self.model.step(frame, draw)
        sampled = torch.stack(tokens, dim=1)                                  # [B, n_speak] at position t + 1
        next_positions = (offsets + 1)[:, None].expand(-1, len(speak))
        _write(state.buffer, speak, next_positions, sampled, run, width)
        _write(state.given, speak, next_positions, torch.zeros_like(sampled, dtype=torch.bool), run, width)
        frame_index = offsets - layout.max_delay
        column = (frame_index[:, None] + delays[speak]) % width
        out = state.buffer[:, speak].gather(2, column[..., None])[..., 0]
        ready = run & (frame_index >= 0)
        state.offsets = offsets + run.long()
        return torch.where(ready[:, None], out, -1) if bool(ready.any()) else None


    def _check_speak(self, speak_frame: Any, batch_size: int) -> torch.Tensor:
        """The given frame int64 [B, n_speak]: -1 or a token of the stream other than its pad."""
        given = torch.as_tensor(speak_frame, device=self.model.device)
        if given.shape != (batch_size, self.n_speak) or given.dtype.is_floating_point or given.dtype == torch.bool:
            raise StreamingError(f"DuplexGenerator.step: speak_frame takes integer tokens [{batch_size}, "
                                 f"{self.n_speak}] (-1: sample), got {given.dtype} {tuple(given.shape)}")
        given = given.long()
        for j, k in enumerate(self.layout.speak):
            spec, column = self.layout.streams[k], given[:, j]
            bad = (column < -1) | (column >= spec.vocab_size) | (column == spec.pad)
            if bool(bad.any()):
                raise StreamingError(f"DuplexGenerator.step: speak_frame of stream {spec.name!r} holds "
                                     f"{int(column[bad][0])}; give a token in [0, {spec.vocab_size}) other than its "
                                     f"pad {spec.pad}, or -1 to sample")
        return given

    def _give(self, state: NativeGenState, given: torch.Tensor, run: torch.Tensor) -> None:
        """Write the given speak frame t at delayed positions t + d_k (held against the sampler when d_k > 0)."""
        speak = list(self.layout.speak)
        positions = state.offsets[:, None] + self.delays.to(state.device)[speak]
        kept = state.buffer[:, speak].gather(2, (positions % self.width)[..., None])[..., 0]
        _write(state.buffer, speak, positions, torch.where(given >= 0, given, kept), run, self.width)
        _write(state.given, speak, positions, (given >= 0) & (positions > state.offsets[:, None]), run, self.width)


def _write(buffer: torch.Tensor, streams: list[int], positions: torch.Tensor, values: torch.Tensor,
           run: torch.Tensor, width: int) -> None:
    """buffer[b, streams[j], positions[b, j] % width] = values[b, j] where run[b] (in place)."""
    rows = buffer[:, streams]
    written = rows.scatter(2, (positions % width)[..., None], values[..., None])
    buffer[:, streams] = torch.where(run[:, None, None], written, rows)


# ---------------------------------------------------------------------------------------------------------------------
# time multiplexing
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TDMGenState(StreamingState):
    fmt: TDMFormat | None = None
    seed: int | None = None
    switches: list[TDMSwitch] = field(init=False)        # the grammar state of each stream
    pending: list[int | None] = field(init=False)        # its last sampled token, not fed yet
    ended: list[bool] = field(init=False)                # a short (last) chunk was fed
    generators: list[torch.Generator] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.fmt is not None
        self.switches = [TDMSwitch(self.fmt) for _ in range(self.batch_size)]
        self.pending = [None] * self.batch_size
        self.ended = [False] * self.batch_size
        self.generators = _generators(self.batch_size, self.seed, self.device)

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        for b in mask.nonzero()[:, 0].tolist():
            self.switches[b].reset()
            self.pending[b] = None
            self.ended[b] = False


class TDMGenerator(StreamingModule):
    """Chunk-by-chunk generation on a TDM `DuplexLM` (see the module docstring). The model streams with it."""

    def __init__(self, model: DuplexLM, sampling: DuplexSampling | None = None):
        super().__init__()
        if model.config.format != "tdm":
            raise ConfigError("TDMGenerator runs a TDM duplex LM; use DuplexGenerator for a native one")
        self.model = model
        self.sampling = sampling or DuplexSampling()
        _check_overrides(self.sampling, model)
        self.fmt = model.tdm

    def _init_streaming_state(self, batch_size: int) -> TDMGenState:
        return TDMGenState(batch_size, self.model.device, fmt=self.fmt, seed=self.sampling.seed)

    @torch.no_grad()
    def step(self, user_chunk: torch.Tensor, speak_chunk: torch.Tensor | None = None) -> torch.Tensor:
        """user_chunk int64 [B, c] user units (1 <= c <= chunk_frames); speak_chunk: None, or int64 [B, c] the model
        side's own units of the chunk (a row of -1: sample it) -> the speak units int64 [B, c] of that chunk (-1 rows
        for paused streams)."""
        state = self._require_streaming("TDMGenerator.step")
        assert isinstance(state, TDMGenState)
        fmt, device, batch = self.fmt, state.device, state.batch_size
        user = _check_input(user_chunk, batch, f"1..{fmt.chunk_frames}", fmt.num_units, device, "TDMGenerator.step")
        frames = user.shape[1]
        if not 1 <= frames <= fmt.chunk_frames:
            raise StreamingError(f"TDMGenerator.step: a chunk of {frames} frames; chunks hold 1 to "
                                 f"{fmt.chunk_frames} frames")
        run = state.exec_mask.clone()
        rows = run.nonzero()[:, 0].tolist()
        ended = [b for b in rows if state.ended[b]]
        if ended:
            raise StreamingError(f"TDMGenerator.step: stream {ended[0]} already had its short last chunk; reset it "
                                 f"(reset_streaming) to start a new session")
        given = self._check_speak(speak_chunk, batch, frames)
        for b in rows:
            state.ended[b] = frames < fmt.chunk_frames
        prefixes = {b: self._forced(state, b, user[b].tolist()) for b in rows}
        lengths = {len(p) for p in prefixes.values()}
        assert len(lengths) <= 1, f"TDM prefixes of different lengths {lengths}"
        out = torch.full((batch, frames), -1, dtype=torch.long)
        if not rows:
            return out.to(device)
        prefix = torch.full((batch, lengths.pop()), fmt.pad, dtype=torch.long)
        for b, tokens in prefixes.items():
            prefix[b] = torch.tensor(tokens)
        logits = self.model.step_chunk(prefix.to(device))[:, -1]
        settings = self.sampling.for_stream(TDM_STREAM)
        given_rows = [b for b in rows if given is not None and given[b, 0] >= 0]
        rows = [b for b in rows if b not in given_rows]
        count = dict.fromkeys(rows, 0)
        try:
            if given_rows:
                self._feed_given(state, given_rows, given, out)
            while rows:
                allowed = torch.ones(batch, fmt.vocab_size, dtype=torch.bool)
                for b in rows:
                    allowed[b] = state.switches[b].allowed()
                tokens = sample(logits, allowed.to(device), settings, state.generators, rows).tolist()
                for b in rows:
                    token = tokens[b]
                    state.switches[b].advance(token)
                    state.pending[b] = token
                    if fmt.num_units <= token < 2 * fmt.num_units:
                        out[b, count[b]] = token - fmt.num_units
                        count[b] += 1
                    elif token == fmt.token("[listen]"):
                        out[b] = fmt.silence_unit
                rows = [b for b in rows if _models_turn(state.switches[b])]
                if rows:
                    feed = torch.full((batch, 1), fmt.pad, dtype=torch.long)
                    feed[rows, 0] = torch.tensor([state.pending[b] for b in rows])
                    stepping = torch.zeros(batch, dtype=torch.bool)
                    stepping[rows] = True
                    self.model.set_exec_mask(stepping.to(device))
                    logits = torch.where(stepping.to(device)[:, None],
                                         self.model.step_chunk(feed.to(device))[:, -1], logits)
                    for b in rows:
                        state.pending[b] = None
        finally:
            self.model.set_exec_mask(run)
        return out.to(device)

    def _check_speak(self, speak_chunk: Any, batch_size: int, frames: int) -> torch.Tensor | None:
        """The given chunk int64 [B, c] (on the CPU): each row all -1 or all units in [0, num_units)."""
        if speak_chunk is None:
            return None
        given = torch.as_tensor(speak_chunk).cpu()
        if given.shape != (batch_size, frames) or given.dtype.is_floating_point or given.dtype == torch.bool:
            raise StreamingError(f"TDMGenerator.step: speak_chunk takes integer units [{batch_size}, {frames}] "
                                 f"(a row of -1: sample), got {given.dtype} {tuple(given.shape)}")
        given = given.long()
        sampled = (given == -1).all(dim=1)
        bad = ~sampled & ((given < 0) | (given >= self.fmt.num_units)).any(dim=1)
        if bool(bad.any()):
            b = int(bad.nonzero()[0, 0])
            raise StreamingError(f"TDMGenerator.step: speak_chunk row {b} is {given[b].tolist()}; give units in "
                                 f"[0, {self.fmt.num_units}) or a row of -1 to sample")
        return given

    def _feed_given(self, state: TDMGenState, rows: list[int], given: torch.Tensor, out: torch.Tensor) -> None:
        """Advance `rows` over the model's turn of their given chunk: `[speak]` / `[listen]` (controlled; `[listen]`
        when every unit is silence, as `TDMFormat.encode`) and the speak units, writing what the tokens decode to
        into `out`. All but the last token are fed now; the last is pending, as a sampled one would be."""
        fmt = self.fmt
        silence = set(fmt.silence_units or [fmt.silence_unit]) if fmt.controlled else set()
        feeds: dict[int, list[int]] = {}
        for b in rows:
            units = given[b].tolist()
            if fmt.controlled and set(units) <= silence:
                tokens = [fmt.token("[listen]")]
                out[b] = fmt.silence_unit
            else:
                tokens = ([fmt.token("[speak]")] if fmt.controlled else []) + [u + fmt.num_units for u in units]
                out[b] = given[b]
            for token in tokens:
                state.switches[b].advance(token)
            state.pending[b] = tokens[-1]
            feeds[b] = tokens[:-1]
        for length in sorted({len(f) for f in feeds.values()} - {0}):
            group = [b for b, f in feeds.items() if len(f) == length]
            feed = torch.full((state.batch_size, length), fmt.pad, dtype=torch.long)
            feed[group] = torch.tensor([feeds[b] for b in group])
            stepping = torch.zeros(state.batch_size, dtype=torch.bool)
            stepping[group] = True
            self.model.set_exec_mask(stepping.to(state.device))
            self.model.step_chunk(feed.to(state.device))

    def _forced(self, state: TDMGenState, b: int, units: list[int]) -> list[int]:
        """Stream b's tokens before the model's turn in this chunk (its switch advanced over them)."""
        switch = state.switches[b]
        tokens = [] if state.pending[b] is None else [state.pending[b]]
        state.pending[b] = None
        while not _models_turn(switch):
            if switch.expect is not None:
                token = switch.expect
            elif units:
                token = units.pop(0)
            else:
                switch.end_chunk()  # a short last chunk
                continue
            switch.advance(token)
            tokens.append(token)
        return tokens


def _models_turn(switch: TDMSwitch) -> bool:
    """The next token is the model's: a decision, or a speak unit."""
    return switch.expect is None and switch.state in ("deciding", "speaking")
