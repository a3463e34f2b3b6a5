"""Token streams of a full-duplex unit LM: the native multi-stream layout (Moshi / FLM-Audio) and time multiplexing.

Native layout. A `StreamLayout` holds N streams, one token per stream per frame (50 Hz for the starter units).
Stream k's vocabulary is its `units` content ids, then its `specials` (always "pad"). Undelayed tokens are int64
``[B, N, T]`` (frame t of every stream); `delay` writes stream k at ``[d_k, d_k + T)`` of ``[B, N, T + D]``
(D = max delay) with its pad before and after; `undelay` is its exact inverse. Model convention: at step t the
backbone reads ``sum_k emb_k(delayed[:, k, t])`` and predicts ``delayed[:, k, t + 1]`` for every speak stream k;
`labels` gives the labels at their own positions (the loss shifts them by one): IGNORE for listen streams, for the
pads that `delay` added and for ZERO inputs; weights 0 there, `filler_weight` where the label is the filler, else
`loss_weight`. IGNORE (-100) is a label only; ZERO (-1) is an input whose embedding is exactly 0 (a stream absent
from an example); neither is a stream's pad, a real token with a learned embedding.

Dialogue examples (`dialogue_streams`). Units int ``[2, T]`` frame-level; one channel is the model's voice
(speak), the other is listened to. IPUs of the speak channel = runs of non-silence frames merged over silences
shorter than ``min_silence`` seconds (`unit_speech_segments` + `merge_ipus`: the 200 ms rule). The content stream of
`content_layout` holds each IPU's deduplicated units (frames [s, e) run-length collapsed, short pauses' silence units
kept; or a `content` function of them, e.g. BPE) and "wait" elsewhere. Lead: an IPU's content starts at its first
frame s (ahead of the frame-level speech, like TTS text); follow: at its last frame e - 1 (after the speech, like
ASR). A content that has not ended when the next IPU's anchor comes pushes the next one later (order kept); content
that would run past frame T is CUT (it is lost, not moved earlier).

Time multiplexing (`TDMFormat`). One vocabulary: listen units [0, K), speak units [K, 2K), then ``<listen>``
``<speak>`` ``[speak]`` ``[listen]`` ``<bos>`` ``<pad>`` (2K .. 2K + 5). Frames are cut into chunks of
`chunk_frames` (the last may be shorter). Fixed: ``<bos>`` then per chunk ``<listen> L_c <speak> S_c``; controlled:
per chunk ``<listen> L_c`` then ``[speak] S_c`` when the speak channel has a non-silence frame in the chunk, else
``[listen]`` (decoded as `silence_unit` frames). Loss on the speak units and the switch tokens (weight 1), on the
listen units with `listen_loss_weight`, never on tags. `TDMSwitch` is the grammar as a state machine, for sampling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from textless.dialogue.turn_taking import MIN_SILENCE, merge_ipus
from textless.dialogue.vad import unit_speech_segments
from textless.errors import ConfigError

IGNORE = -100   # label: no loss here
ZERO = -1       # input: embedding exactly 0 (Moshi's zero_token_id)
ROLES = ("listen", "speak")
SOURCES = ("listen", "speak", "lead", "follow", "absent")
Tokens = Any    # np.ndarray or torch.Tensor of integers


def _unknown(cls: type, data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class StreamSpec:
    """One token stream. role: "listen" (input only) or "speak" (predicted by its own head); ids [0, units) are
    content, then `specials` in order; delay in frames; filler: what fills time with nothing to say (a special's
    name or a unit id); filler_weight: loss weight of filler labels (None: loss_weight); source: what
    `dialogue_streams` writes here ("listen" / "speak": that channel's frames, "lead" / "follow": the speak
    channel's IPU content, "absent": ZERO; None: the channel of the role)."""

    name: str
    role: str
    units: int
    specials: tuple[str, ...] = ("pad",)
    delay: int = 0
    filler: str | int = "pad"
    loss_weight: float = 1.0
    filler_weight: float | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "specials", tuple(self.specials))
        where = f"stream {self.name!r}"
        if self.role not in ROLES:
            raise ConfigError(f"{where}: role must be one of {ROLES}, got {self.role!r}")
        if not _is_int(self.units) or self.units < 1:
            raise ConfigError(f"{where}: units must be an integer >= 1, got {self.units!r}")
        if "pad" not in self.specials or len(set(self.specials)) != len(self.specials):
            raise ConfigError(f"{where}: specials must be distinct names including 'pad', got {self.specials}")
        if not _is_int(self.delay) or self.delay < 0:
            raise ConfigError(f"{where}: delay must be an integer >= 0 frames, got {self.delay!r}")
        if isinstance(self.filler, str) and self.filler not in self.specials:
            raise ConfigError(f"{where}: filler {self.filler!r} is not one of its specials {self.specials}")
        if not isinstance(self.filler, str) and not (_is_int(self.filler) and 0 <= self.filler < self.units):
            raise ConfigError(f"{where}: filler must be a special's name or a unit in [0, {self.units}), "
                              f"got {self.filler!r}")
        if not self.loss_weight >= 0 or (self.filler_weight is not None and not self.filler_weight >= 0):
            raise ConfigError(f"{where}: loss weights must be >= 0, got {self.loss_weight}, {self.filler_weight}")
        if self.source is not None and self.source not in SOURCES:
            raise ConfigError(f"{where}: source must be one of {SOURCES} or None, got {self.source!r}")

    @property
    def vocab_size(self) -> int:
        return self.units + len(self.specials)

    def token(self, name: str) -> int:
        """The id of the special `name`."""
        if name not in self.specials:
            raise KeyError(f"stream {self.name!r} has no special {name!r} (specials: {self.specials})")
        return self.units + self.specials.index(name)

    @property
    def pad(self) -> int:
        return self.token("pad")

    @property
    def filler_id(self) -> int:
        return self.token(self.filler) if isinstance(self.filler, str) else int(self.filler)

    @property
    def resolved_source(self) -> str:
        """`source`, with None resolved to the role's channel."""
        return self.source if self.source is not None else self.role

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "specials": list(self.specials)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamSpec:
        _unknown(cls, data)
        return cls(**data)


def _as_tokens(tokens: Tokens, what: str) -> Tokens:
    """int64 numpy array or integer torch tensor (kept on its device)."""
    if isinstance(tokens, torch.Tensor):
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"{what}: tokens must be integers, got {tokens.dtype}")
        return tokens.long()
    array = np.asarray(tokens)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{what}: tokens must be integers, got {array.dtype}")
    return array.astype(np.int64, copy=False)


def _full(like: Tokens, shape: tuple[int, ...], value: float, dtype: Any = None) -> Tokens:
    if isinstance(like, torch.Tensor):
        return torch.full(shape, value, dtype=dtype or like.dtype, device=like.device)
    return np.full(shape, value, dtype=dtype or like.dtype)


@dataclass(frozen=True)
class StreamLayout:
    """N streams read together at every frame (see the module docstring for the delayed layout)."""

    streams: tuple[StreamSpec, ...]

    def __post_init__(self) -> None:
        streams = tuple(s if isinstance(s, StreamSpec) else StreamSpec.from_dict(s) for s in self.streams)
        object.__setattr__(self, "streams", streams)
        names = [s.name for s in streams]
        if len(set(names)) != len(names):
            raise ConfigError(f"stream names must be distinct, got {names}")
        if not any(s.role == "speak" for s in streams):
            raise ConfigError(f"a layout needs at least one speak stream, got roles {[s.role for s in streams]}")

    def __len__(self) -> int:
        return len(self.streams)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.streams)

    @property
    def max_delay(self) -> int:
        return max(s.delay for s in self.streams)

    @property
    def speak(self) -> tuple[int, ...]:
        """Indices of the speak streams (in layout order)."""
        return tuple(k for k, s in enumerate(self.streams) if s.role == "speak")

    @property
    def listen(self) -> tuple[int, ...]:
        return tuple(k for k, s in enumerate(self.streams) if s.role == "listen")

    def index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"no stream {name!r} in the layout (streams: {self.names})")
        return self.names.index(name)

    def __getitem__(self, name: str) -> StreamSpec:
        return self.streams[self.index(name)]

    def check(self, tokens: Tokens, what: str = "tokens") -> Tokens:
        """`tokens` [..., N, T] as int64, after checking that stream k holds ids in [0, vocab_k) or ZERO."""
        tokens = _as_tokens(tokens, what)
        if tokens.ndim < 2 or tokens.shape[-2] != len(self):
            raise ValueError(f"{what}: expected shape [..., {len(self)} streams, frames], got {list(tokens.shape)}")
        for k, spec in enumerate(self.streams):
            row = tokens[..., k, :]
            bad = ((row < 0) & (row != ZERO)) | (row >= spec.vocab_size)
            if bad.any():
                value = int(row[bad].reshape(-1)[0])
                raise ValueError(f"{what}: stream {spec.name!r} holds token {value}, outside [0, {spec.vocab_size}) "
                                 f"and not ZERO ({ZERO})")
        return tokens

    def delay(self, tokens: Tokens) -> Tokens:
        """int64 [..., N, T] -> [..., N, T + max_delay]: stream k at [d_k, d_k + T), its pad elsewhere."""
        tokens = self.check(tokens)
        frames, extra = tokens.shape[-1], self.max_delay
        out = _full(tokens, (*tokens.shape[:-1], frames + extra), 0)
        for k, spec in enumerate(self.streams):
            out[..., k, :] = spec.pad
            out[..., k, spec.delay:spec.delay + frames] = tokens[..., k, :]
        return out

    def undelay(self, delayed: Tokens) -> Tokens:
        """[..., N, T'] -> [..., N, T' - max_delay]: the exact inverse of `delay`."""
        delayed = _as_tokens(delayed, "delayed tokens")
        if delayed.ndim < 2 or delayed.shape[-2] != len(self) or delayed.shape[-1] < self.max_delay:
            raise ValueError(f"delayed tokens: expected shape [..., {len(self)} streams, >= {self.max_delay} "
                             f"frames], got {list(delayed.shape)}")
        frames = delayed.shape[-1] - self.max_delay
        out = _full(delayed, (*delayed.shape[:-1], frames), 0)
        for k, spec in enumerate(self.streams):
            out[..., k, :] = delayed[..., k, spec.delay:spec.delay + frames]
        return out

    def labels(self, delayed: Tokens) -> tuple[Tokens, Tokens]:
        """(labels int64 [..., N, T'], weights float32 [..., N, T']) of delayed tokens: see the module docstring."""
        delayed = _as_tokens(delayed, "delayed tokens")
        if delayed.ndim < 2 or delayed.shape[-2] != len(self) or delayed.shape[-1] < self.max_delay:
            raise ValueError(f"delayed tokens: expected shape [..., {len(self)} streams, >= {self.max_delay} "
                             f"frames], got {list(delayed.shape)}")
        frames = delayed.shape[-1] - self.max_delay
        labels = _full(delayed, tuple(delayed.shape), IGNORE)
        is_torch = isinstance(delayed, torch.Tensor)
        weights = _full(delayed, tuple(delayed.shape), 0.0, torch.float32 if is_torch else np.float32)
        for k in self.speak:
            spec = self.streams[k]
            span = slice(spec.delay, spec.delay + frames)
            row = delayed[..., k, span]
            real = row != ZERO
            filler = spec.loss_weight if spec.filler_weight is None else spec.filler_weight
            weight = _full(delayed, tuple(row.shape), spec.loss_weight, weights.dtype)
            weight[row == spec.filler_id] = filler
            weight[~real] = 0.0
            label = row.clone() if is_torch else row.copy()
            label[~real] = IGNORE
            labels[..., k, span] = label
            weights[..., k, span] = weight
        return labels, weights

    def to_dict(self) -> dict[str, Any]:
        return {"streams": [s.to_dict() for s in self.streams]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamLayout:
        _unknown(cls, data)
        return cls(tuple(StreamSpec.from_dict(s) for s in data["streams"]))


# ------------------------------------------------------------------------------------------------ shipped layouts
def listen_speak_layout(num_units: int, silence_unit: int, speak_delay: int = 0) -> StreamLayout:
    """Streams "listen" (the other channel's frames) and "speak" (the model's frames), dGSLM-style in one tower."""
    return StreamLayout((
        StreamSpec("listen", "listen", num_units, ("pad",), 0, filler=silence_unit),
        StreamSpec("speak", "speak", num_units, ("pad",), speak_delay, filler=silence_unit),
    ))


CONTENT_MODES = ("lead", "follow")


def content_layout(num_units: int, silence_unit: int, content_units: int, mode: str = "lead", *,
                   content_delay: int = 0, speak_delay: int = 0, content_weight: float = 1.0,
                   wait_weight: float = 0.01) -> StreamLayout:
    """Streams "listen" (frames), "content" (speak: the speak channel's IPU content, `content_units` ids, specials
    ("pad", "wait"), filler "wait" weighted `wait_weight` as FLM-Audio) and "speak" (frames). `mode`: "lead" or
    "follow" (module docstring)."""
    if mode not in CONTENT_MODES:
        raise ConfigError(f"content mode must be one of {CONTENT_MODES}, got {mode!r}")
    return StreamLayout((
        StreamSpec("listen", "listen", num_units, ("pad",), 0, filler=silence_unit),
        StreamSpec("content", "speak", content_units, ("pad", "wait"), content_delay, filler="wait",
                   loss_weight=content_weight, filler_weight=wait_weight, source=mode),
        StreamSpec("speak", "speak", num_units, ("pad",), speak_delay, filler=silence_unit),
    ))


# ------------------------------------------------------------------------------------------------ dialogue examples
def ipu_frames(units: np.ndarray, silence_units: Iterable[int], min_silence: float = MIN_SILENCE,
               frame_rate: float = 50, min_speech_frames: int = 1) -> list[tuple[int, int]]:
    """[start, stop) frames of the IPUs of one channel's frame-level units [T] (the 200 ms rule)."""
    segments = unit_speech_segments(units, frame_rate, silence_units, min_speech_frames)
    return [(round(s * frame_rate), round(e * frame_rate)) for s, e in merge_ipus(segments, min_silence)]


def place_content(contents: Sequence[np.ndarray], anchors: Sequence[int], num_frames: int, filler: int
                  ) -> np.ndarray:
    """int64 [num_frames]: content i written from max(anchors[i], end of content i - 1) on, `filler` elsewhere;
    whatever would pass `num_frames` is cut."""
    out = np.full(num_frames, filler, np.int64)
    free = 0
    for content, anchor in zip(contents, anchors, strict=True):
        start = max(int(anchor), free)
        stop = min(start + len(content), num_frames)
        if start < stop:
            out[start:stop] = content[:stop - start]
        free = start + len(content)
    return out


def _dedup(units: np.ndarray) -> np.ndarray:
    return units[np.concatenate(([True], units[1:] != units[:-1]))] if len(units) else units


def _check_units(ids: np.ndarray, spec: StreamSpec) -> np.ndarray:
    bad = (ids < 0) | (ids >= spec.units)
    if bad.any():
        raise ValueError(f"stream {spec.name!r} ({spec.resolved_source}) gets id {int(ids[bad][0])}, outside its "
                         f"units [0, {spec.units})")
    return ids


def dialogue_streams(units: np.ndarray, speak_channel: int, layout: StreamLayout, *, silence_units: Iterable[int],
                     min_silence: float = MIN_SILENCE, frame_rate: float = 50, min_speech_frames: int = 1,
                     content: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Undelayed tokens int64 [N, T] of a conversation (units int [2, T], frame-level) in which `speak_channel` is
    the model's voice and the other channel is listened to; each stream filled as its `source` says. `content` maps
    an IPU's deduplicated units to content ids (e.g. BPE; None: the units themselves)."""
    units = np.asarray(units)
    if units.ndim != 2 or units.shape[0] != 2 or units.dtype.kind not in "iu":
        raise ValueError(f"dialogue_streams takes integer units [2 channels, frames], got {units.dtype} "
                         f"{list(units.shape)}")
    if speak_channel not in (0, 1):
        raise ValueError(f"speak_channel must be 0 or 1, got {speak_channel!r}")
    units = units.astype(np.int64)
    channels = {"speak": units[speak_channel], "listen": units[1 - speak_channel]}
    frames = units.shape[1]
    silence = frozenset(int(u) for u in silence_units)
    out = np.full((len(layout), frames), ZERO, np.int64)
    for k, spec in enumerate(layout.streams):
        source = spec.resolved_source
        if source in channels:
            row = _check_units(channels[source], spec)
        elif source in CONTENT_MODES:
            ipus = ipu_frames(channels["speak"], silence, min_silence, frame_rate, min_speech_frames)
            contents = [_dedup(channels["speak"][s:e]) for s, e in ipus]
            if content is not None:
                contents = [np.asarray(content(c), np.int64).reshape(-1) for c in contents]
            anchors = [s if source == "lead" else e - 1 for s, e in ipus]
            for c in contents:
                _check_units(c, spec)
            row = place_content(contents, anchors, frames, spec.filler_id)
        else:  # absent
            continue
        out[k] = row
    return out


# ------------------------------------------------------------------------------------------- time multiplexing
TDM_TAGS = ("<listen>", "<speak>", "[speak]", "[listen]", "<bos>", "<pad>")


@dataclass(frozen=True)
class TDMFormat:
    """One token sequence interleaving chunks of the listen and speak channels (module docstring). num_units: K;
    chunk_frames: frames per chunk (8 = 160 ms at 50 Hz); silence_unit: what a `[listen]` chunk decodes to
    (required when controlled); silence_units: the units that count as silence for `[listen]` (None:
    {silence_unit})."""

    num_units: int
    chunk_frames: int = 8
    controlled: bool = False
    silence_unit: int | None = None
    listen_loss_weight: float = 0.0
    silence_units: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.silence_units is not None:
            object.__setattr__(self, "silence_units", tuple(sorted(int(u) for u in self.silence_units)))
        if not _is_int(self.num_units) or self.num_units < 1:
            raise ConfigError(f"TDM num_units must be an integer >= 1, got {self.num_units!r}")
        if not _is_int(self.chunk_frames) or self.chunk_frames < 1:
            raise ConfigError(f"TDM chunk_frames must be an integer >= 1, got {self.chunk_frames!r}")
        if self.controlled and self.silence_unit is None:
            raise ConfigError("a controlled TDM format needs silence_unit (what a [listen] chunk decodes to)")
        for unit in ([] if self.silence_unit is None else [self.silence_unit]) + list(self.silence_units or ()):
            if not (_is_int(unit) and 0 <= unit < self.num_units):
                raise ConfigError(f"TDM silence unit {unit!r} is outside [0, {self.num_units})")
        if not self.listen_loss_weight >= 0:
            raise ConfigError(f"TDM listen_loss_weight must be >= 0, got {self.listen_loss_weight}")

    @property
    def vocab_size(self) -> int:
        return 2 * self.num_units + len(TDM_TAGS)

    def token(self, name: str) -> int:
        """The id of a tag: one of `TDM_TAGS`."""
        if name not in TDM_TAGS:
            raise KeyError(f"no TDM tag {name!r} (tags: {TDM_TAGS})")
        return 2 * self.num_units + TDM_TAGS.index(name)

    @property
    def bos(self) -> int:
        return self.token("<bos>")

    @property
    def pad(self) -> int:
        return self.token("<pad>")

    def token_name(self, token: int) -> str:
        """A token for messages: "listen unit u", "speak unit u" or the tag."""
        k = self.num_units
        if 0 <= token < k:
            return f"listen unit {token}"
        if k <= token < 2 * k:
            return f"speak unit {token - k}"
        if 2 * k <= token < self.vocab_size:
            return TDM_TAGS[token - 2 * k]
        return f"outside the vocabulary [0, {self.vocab_size})"

    def chunk_boundaries(self, num_frames: int) -> list[tuple[int, int]]:
        """[start, stop) frames of the chunks of `num_frames` frames (the last one may be shorter)."""
        return [(s, min(s + self.chunk_frames, num_frames)) for s in range(0, num_frames, self.chunk_frames)]

    def _frames(self, units: Any, what: str) -> np.ndarray:
        units = np.asarray(units)
        if units.ndim != 1 or units.dtype.kind not in "iu":
            raise ValueError(f"TDM {what}: expected integer units [frames], got {units.dtype} {list(units.shape)}")
        bad = (units < 0) | (units >= self.num_units)
        if bad.any():
            raise ValueError(f"TDM {what}: unit {int(units[bad][0])} is outside [0, {self.num_units})")
        return units.astype(np.int64)

    def encode(self, listen: np.ndarray, speak: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames [T] of both channels -> (tokens int64 [S], labels int64 [S] (IGNORE where weight 0),
        weights float32 [S])."""
        listen, speak = self._frames(listen, "listen"), self._frames(speak, "speak")
        if len(listen) != len(speak):
            raise ValueError(f"TDM encode: {len(listen)} listen frames but {len(speak)} speak frames")
        silence = np.array(self.silence_units or [self.silence_unit]) if self.controlled else None
        pieces: list[tuple[np.ndarray | list[int], float]] = [([self.bos], 0.0)]
        for start, stop in self.chunk_boundaries(len(listen)):
            pieces += [([self.token("<listen>")], 0.0), (listen[start:stop], self.listen_loss_weight)]
            chunk = speak[start:stop] + self.num_units
            if not self.controlled:
                pieces += [([self.token("<speak>")], 0.0), (chunk, 1.0)]
            elif np.isin(speak[start:stop], silence).all():
                pieces.append(([self.token("[listen]")], 1.0))
            else:
                pieces += [([self.token("[speak]")], 1.0), (chunk, 1.0)]
        tokens = np.concatenate([np.asarray(p, np.int64) for p, _ in pieces])
        weights = np.concatenate([np.full(len(p), w, np.float32) for p, w in pieces])
        return tokens, np.where(weights > 0, tokens, IGNORE), weights

    def decode(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens [S] (trailing `<pad>` allowed) -> (listen int64 [T], speak int64 [T]); ValueError if malformed."""
        tokens = np.asarray(tokens).reshape(-1)
        end = len(tokens)
        while end and tokens[end - 1] == self.pad:
            end -= 1
        switch = TDMSwitch(self)
        listen: list[int] = []
        speak: list[int] = []
        short = False  # a chunk shorter than chunk_frames was seen: it must be the last one
        for i, token in enumerate(tokens[:end].tolist()):
            try:
                unit = 0 <= token < self.num_units
                if switch.state == "listening" and switch.expect is None and switch.heard and not unit:
                    switch.end_chunk()
                    short = True
                elif short and token == self.token("<listen>"):
                    raise ValueError(f"only the last chunk may be shorter than {self.chunk_frames} frames")
                state = switch.state
                switch.advance(token)
            except ValueError as e:
                raise ValueError(f"TDM decode, token {i}: {e}") from None
            if state == "listening" and token < self.num_units:
                listen.append(token)
            elif state == "speaking" and self.num_units <= token < 2 * self.num_units:
                speak.append(token - self.num_units)
            elif token == self.token("[listen]"):
                speak += [self.silence_unit] * switch.last_heard
        if switch.state != "listening" or switch.expect is None:
            raise ValueError(f"TDM decode: the sequence ends inside a chunk ({switch.describe()})")
        return np.array(listen, np.int64), np.array(speak, np.int64)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["silence_units"] = None if self.silence_units is None else list(self.silence_units)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TDMFormat:
        _unknown(cls, data)
        return cls(**data)


SWITCH_STATES = ("start", "listening", "deciding", "speaking")


class TDMSwitch:
    """The grammar of one TDM sequence as a state machine. States: "start" (only `<bos>`) -> "listening" (the
    `<listen>` tag, then `left` user units) -> "deciding" (controlled: only `[speak]` / `[listen]`) -> "speaking"
    (fixed: the `<speak>` tag first; `left` speak units, as many as were heard) -> "listening"; `[listen]` goes back
    to "listening" at once. `expect` is the tag required next (None: units or a decision)."""

    def __init__(self, fmt: TDMFormat):
        self.fmt = fmt
        self.reset()

    def reset(self) -> None:
        self.state = "start"
        self.expect: int | None = self.fmt.bos
        self.left = 0          # units left in this phase
        self.heard = 0         # user units heard in this chunk so far
        self.last_heard = 0    # user units of the last completed listening phase

    def describe(self) -> str:
        if self.expect is not None:
            return f"state {self.state!r}, expecting {self.fmt.token_name(self.expect)}"
        if self.state == "deciding":
            return "state 'deciding', expecting [speak] or [listen]"
        who = "user" if self.state == "listening" else "speak"
        return f"state {self.state!r}, {self.left} {who} units left"

    def allowed(self) -> torch.Tensor:
        """bool [vocab_size]: the tokens legal next."""
        k = self.fmt.num_units
        mask = torch.zeros(self.fmt.vocab_size, dtype=torch.bool)
        if self.expect is not None:
            mask[self.expect] = True
        elif self.state == "listening":
            mask[:k] = True
        elif self.state == "deciding":
            mask[[self.fmt.token("[speak]"), self.fmt.token("[listen]")]] = True
        else:
            mask[k:2 * k] = True
        return mask

    def legal(self, token: int) -> bool:
        """`allowed()[token]`, without building the mask."""
        k = self.fmt.num_units
        if self.expect is not None:
            return token == self.expect
        if self.state == "listening":
            return 0 <= token < k
        if self.state == "deciding":
            return token in (self.fmt.token("[speak]"), self.fmt.token("[listen]"))
        return k <= token < 2 * k

    def advance(self, token: int) -> None:
        """Take `token`; ValueError naming the state and the token if it is illegal here."""
        token = int(token)
        if not self.legal(token):
            raise ValueError(f"illegal token {token} ({self.fmt.token_name(token)}) in {self.describe()}")
        if self.expect is not None:
            if self.state == "start":
                self._next_chunk()
            elif self.state == "listening":
                self.expect, self.left, self.heard = None, self.fmt.chunk_frames, 0
            else:  # speaking, after the <speak> tag
                self.expect, self.left = None, self.last_heard
        elif self.state == "listening":
            self.heard += 1
            self.left -= 1
            if self.left == 0:
                self._listened()
        elif self.state == "deciding":
            if token == self.fmt.token("[speak]"):
                self.state, self.left = "speaking", self.last_heard
            else:
                self._next_chunk()
        else:
            self.left -= 1
            if self.left == 0:
                self._next_chunk()

    def end_chunk(self) -> None:
        """End the current listening phase early (a short last chunk): at least one user unit must be heard."""
        if self.state != "listening" or self.expect is not None or self.heard == 0:
            raise ValueError(f"end_chunk: no chunk with heard user units to end in {self.describe()}")
        self._listened()

    def _listened(self) -> None:
        self.last_heard, self.heard, self.left = self.heard, 0, 0
        if self.fmt.controlled:
            self.state = "deciding"
        else:
            self.state, self.expect = "speaking", self.fmt.token("<speak>")

    def _next_chunk(self) -> None:
        self.state, self.expect, self.left = "listening", self.fmt.token("<listen>"), 0
