"""dGSLM (Nguyen et al. 2023): fairseq's SpeechDLM, the dual-tower dialogue unit LM, readable in one file.

Architecture (fairseq ``fairseq/models/speech_dlm/``; ../shared/docs/dialogue-and-preference-anchors.md, section 1).
Two channels of frame-level units (one per speaker) go through ONE stack of pre-LN transformer layers (the same
weights for both channels: "Siamese towers"); one embedding table, scaled by sqrt(d), plus fairseq's sinusoidal
positions. The first ``layers - cross_layers`` layers are plain causal decoder layers; the last ``cross_layers`` add a
cross-channel attention between self-attention and the FFN: its query is this channel's post-self-attention state
(layer-normed, pre-LN style), its keys / values the OTHER channel's post-self-attention states of the same layer as
they are, not normed (fairseq's CrossChannelTransformerDecoderLayer), under the same causal mask (so frame t
of one channel sees frames 0..t of the other, its own current step included). A final LayerNorm, then per channel the
next-unit logits (the output projection tied to the embedding) and the duration regression (``Linear(d, 1)``).

Tokens. ``input_ids`` are int64 ``[B, 2, T]`` over the vocabulary of `DialogueVocab`: the K units first (id = unit),
then bos, pad, eos, unk. Position t of channel c holds the token fed at frame t (the start token at t = 0, then the
previous frame's unit); its outputs predict the unit of frame t (logits) and, for the "delayed" variant, the duration
of the run that the unit FED at t starts (see `textless.dialogue.dgslm.targets`).

Positions are fairseq's `SinusoidalPositionalEmbedding` (half sin, half cos, frequencies exp(-i log(10000) /
(d/2 - 1))) at index ``t + position_offset`` (fairseq counts positions from padding_idx + 1 = 2), so weights imported
from fairseq (`textless.dialogue.dgslm.loader`) give fairseq's outputs exactly.

Written here rather than with transformers: no transformers architecture has a cross-channel layer; the layer keeps
fairseq's module names (``self_attn``, ``cross_channel_attn``, ``fc1``...), so an import is a key rename.
Exactly two channels: fairseq's cross layer concatenates the other channels along time under a [T, T] mask, which only
works for two.

Streaming (`textless.streaming`): ``with model.streaming(B): model.step(tokens [B, 2])`` feeds one frame of both
channels and returns that frame's outputs; a KV cache per layer (self-attention, and each channel's cross-attention
keys / values for the other), per-stream positions, exec masks and resets as `UnitLM`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from textless.data.identity import UnitIdentity, check_fits
from textless.errors import ConfigError, FormatError
from textless.streaming import StreamingError, StreamingModule, StreamingState
from textless.utils.atomic import atomic_directory
from textless.utils.versioned import artifact

DGSLM_ARTIFACT = artifact("textless.dialogue_lm", 1, "a textless dGSLM directory")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SPECIALS = ("bos", "pad", "eos", "unk")
CHANNELS = 2
ATTENTION = ("sdpa", "eager")


@dataclass
class DGSLMConfig:
    """Sizes and options. `num_units` K; the vocabulary is K + 4 (`DialogueVocab`)."""

    num_units: int = 500
    d_model: int = 512
    layers: int = 6
    cross_layers: int = 4           # the LAST layers with cross-channel attention (0: two independent towers)
    heads: int = 8
    ffn: int = 2048
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_positions: int = 6144       # frames per channel (fairseq tokens_per_sample)
    position_offset: int = 2        # fairseq's padding_idx + 1
    duration_prediction: bool = True
    delayed_duration: bool = True   # the duration of a run is predicted one step after its unit is fed
    max_duration: int = 256         # duration targets are capped here (fairseq max_target_durations)
    start_token: str = "bos"        # fed at t = 0 ("eos" for fairseq-imported models, as fairseq's LM data)
    attn_implementation: str = "sdpa"  # sdpa | eager

    def __post_init__(self) -> None:
        problems = []
        if self.num_units < 1 or self.d_model % self.heads or not 0 <= self.cross_layers <= self.layers:
            problems.append("need num_units >= 1, d_model divisible by heads and 0 <= cross_layers <= layers")
        if self.start_token not in SPECIALS:
            problems.append(f"start_token must be one of {SPECIALS}, got {self.start_token!r}")
        if self.attn_implementation not in ATTENTION:
            problems.append(f"attn_implementation must be one of {ATTENTION} (dGSLM has its own attention), got "
                            f"{self.attn_implementation!r}")
        if problems:
            raise ConfigError("DGSLMConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DGSLMConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown DGSLMConfig keys: {', '.join(unknown)}")
        return cls(**data)


# fairseq architectures (speech_dlm = the released base with --decoder-cross-layers 4), and small ones
PRESETS: dict[str, dict[str, Any]] = {
    "speech_dlm": {"d_model": 512, "layers": 6, "cross_layers": 4, "heads": 8, "ffn": 2048},
    "speech_dlm_big": {"d_model": 1024, "layers": 12, "cross_layers": 12, "heads": 16, "ffn": 4096},
    "cpu": {"d_model": 256, "layers": 4, "cross_layers": 2, "heads": 4, "ffn": 1024, "max_positions": 2048},
    "tiny": {"d_model": 32, "layers": 3, "cross_layers": 2, "heads": 4, "ffn": 64, "max_positions": 512,
             "dropout": 0.0},
}


def preset_config(name: str, num_units: int, **overrides: Any) -> DGSLMConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown dGSLM preset {name!r}; choose one of {sorted(PRESETS)}")
    return DGSLMConfig(num_units=num_units, **{**PRESETS[name], **overrides})


@dataclass(frozen=True)
class DialogueVocab:
    """Token ids: the K units, then bos, pad, eos, unk."""

    num_units: int

    @property
    def size(self) -> int:
        return self.num_units + len(SPECIALS)

    def special(self, name: str) -> int:
        return self.num_units + SPECIALS.index(name)

    @property
    def bos(self) -> int:
        return self.special("bos")

    @property
    def pad(self) -> int:
        return self.special("pad")


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int | None = 1) -> torch.Tensor:
    """fairseq's `SinusoidalPositionalEmbedding.get_embedding`: float32 ``[num_positions, dim]`` (row padding_idx 0)."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -step)
    angles = torch.arange(num_positions, dtype=torch.float)[:, None] * freqs[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    if padding_idx is not None:
        table[padding_idx] = 0
    return table


class DGSLMOutput(NamedTuple):
    logits: torch.Tensor              # float [B, 2, T, V]: next-unit logits
    durations: torch.Tensor | None    # float [B, 2, T]: run-duration regression (frames), None without the head


class Attention(nn.Module):
    """Multi-head attention with fairseq's projections (q/k/v/out, biases); queries scaled by head_dim^-0.5."""

    def __init__(self, d: int, heads: int, dropout: float, implementation: str):
        super().__init__()
        self.heads, self.head_dim, self.dropout, self.implementation = heads, d // heads, dropout, implementation
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[N, T, D] -> [N, H, T, Dh]"""
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q [N, H, Tq, Dh], k / v [N, H, Tk, Dh], mask bool broadcastable to [N, H, Tq, Tk] (True = attend)."""
        p = self.dropout if self.training else 0.0
        if self.implementation == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        else:
            scores = (q * self.head_dim ** -0.5) @ k.transpose(-1, -2)
            weights = F.dropout(scores.masked_fill(~mask, float("-inf")).softmax(-1), p, self.training)
            out = weights @ v
        return self.out_proj(out.transpose(1, 2).flatten(-2))


class DecoderLayer(nn.Module):
    """fairseq's Standard / CrossChannel TransformerDecoderLayer (pre-LN), acting on both channels at once."""

    def __init__(self, cfg: DGSLMConfig, cross: bool):
        super().__init__()
        d = cfg.d_model
        self.self_attn = Attention(d, cfg.heads, cfg.attention_dropout, cfg.attn_implementation)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.cross_channel_attn = Attention(d, cfg.heads, cfg.attention_dropout, cfg.attn_implementation) \
            if cross else None
        self.cross_channel_attn_layer_norm = nn.LayerNorm(d) if cross else None
        self.fc1, self.fc2 = nn.Linear(d, cfg.ffn), nn.Linear(cfg.ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout

    def forward(self, h: torch.Tensor, mask: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        """h [B, 2, T, D] -> [B, 2, T, D]. `mask` bool [B or 1, 1, T, S] over S key slots (S = T without a cache);
        with `cache` the new keys / values are appended to it first."""
        b, c, t, d = h.shape
        x = self.self_attn_layer_norm(h).reshape(b * c, t, d)
        attn = self.self_attn
        k, v = attn.split(attn.k_proj(x)), attn.split(attn.v_proj(x))
        if cache is not None:
            k, v = cache.extend("self", k, v)
        mask_bc = mask.repeat_interleave(c, dim=0) if mask.shape[0] > 1 else mask
        x = attn.attend(attn.split(attn.q_proj(x)), k, v, mask_bc)
        h = h + F.dropout(x.reshape(b, c, t, d), self.dropout, self.training)
        if self.cross_channel_attn is not None:
            cross = self.cross_channel_attn
            x = self.cross_channel_attn_layer_norm(h).reshape(b * c, t, d)
            raw = h.reshape(b * c, t, d)  # fairseq: keys / values are the other channel's states BEFORE the norm
            k, v = cross.split(cross.k_proj(raw)), cross.split(cross.v_proj(raw))
            if cache is not None:
                k, v = cache.extend("cross", k, v)
            x = cross.attend(cross.split(cross.q_proj(x)), _other_channel(k, b, c), _other_channel(v, b, c), mask_bc)
            h = h + F.dropout(x.reshape(b, c, t, d), self.dropout, self.training)
        x = F.relu(self.fc1(self.final_layer_norm(h)))
        x = self.fc2(F.dropout(x, self.activation_dropout, self.training))
        return h + F.dropout(x, self.dropout, self.training)


def _other_channel(z: torch.Tensor, b: int, c: int) -> torch.Tensor:
    """[B * 2, ...] -> the same rows with the two channels of each item swapped."""
    return z.unflatten(0, (b, c)).flip(1).flatten(0, 1)


class LayerCache:
    """One layer's keys / values over the streaming timeline: [B * 2, H, S, Dh] each, for self and cross attention."""

    def __init__(self) -> None:
        self.kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def extend(self, kind: str, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if kind in self.kv:
            k = torch.cat([self.kv[kind][0], k], dim=2)
            v = torch.cat([self.kv[kind][1], v], dim=2)
        self.kv[kind] = (k, v)
        return k, v


@dataclass
class DGSLMStreamingState(StreamingState):
    caches: list[LayerCache] = field(init=False)
    positions: torch.Tensor = field(init=False)   # int64 [B]: position of each stream's next frame
    valid: torch.Tensor = field(init=False)       # bool [B, S]: slot s holds a frame of stream b's current life
    num_layers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.caches = [LayerCache() for _ in range(self.num_layers)]
        self.positions = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        self.valid = torch.zeros(self.batch_size, 0, dtype=torch.bool, device=self.device)

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.positions = self.positions.masked_fill(mask, 0)
        self.valid = self.valid & ~mask[:, None]


class DGSLM(StreamingModule):
    """The dual-tower dialogue unit LM (see the module docstring). `tokenizer`: identity dict of its units' tokenizer
    (or None), `frame_rate` in Hz."""

    def __init__(self, config: DGSLMConfig, *, tokenizer: dict | None = None, frame_rate: float | None = None):
        super().__init__()
        self.config = config
        self.vocab = DialogueVocab(config.num_units)
        self.tokenizer = dict(tokenizer) if tokenizer is not None else None
        self.frame_rate = float(frame_rate) if frame_rate is not None else None
        d = config.d_model
        self.embed_tokens = nn.Embedding(self.vocab.size, d, padding_idx=self.vocab.pad)
        nn.init.normal_(self.embed_tokens.weight, 0, d ** -0.5)
        with torch.no_grad():
            self.embed_tokens.weight[self.vocab.pad].zero_()
        self.register_buffer("positions", sinusoidal_table(config.max_positions + config.position_offset + 1, d),
                             persistent=False)
        self.layers = nn.ModuleList([DecoderLayer(config, cross=i >= config.layers - config.cross_layers)
                                     for i in range(config.layers)])
        self.layer_norm = nn.LayerNorm(d)
        self.duration_head = nn.Linear(d, 1) if config.duration_prediction else None

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def units(self) -> UnitIdentity:
        """The units it models: frame-level (not deduplicated) units of its tokenizer at its frame rate."""
        return UnitIdentity(tokenizer=self.tokenizer, vocab_size=self.config.num_units, frame_rate=self.frame_rate,
                            deduplicated=False, bpe=False)

    def check_units(self, units: UnitIdentity, where: str) -> None:
        check_fits(self.units, units, consumer="the dGSLM", source=where, short="the dGSLM")

    # ----------------------------------------------------------------------------------------------------- forward
    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids [B, 2, T], positions int [B, T] -> [B, 2, T, D]"""
        x = self.embed_tokens(input_ids) * math.sqrt(self.config.d_model)
        x = x + self.positions[positions + self.config.position_offset][:, None]
        return F.dropout(x, self.config.dropout, self.training)

    def _heads(self, h: torch.Tensor) -> DGSLMOutput:
        h = self.layer_norm(h)
        logits = F.linear(h, self.embed_tokens.weight)
        durations = self.duration_head(h).squeeze(-1) if self.duration_head is not None else None
        return DGSLMOutput(logits, durations)

    def _check_ids(self, input_ids: torch.Tensor, what: str) -> None:
        if input_ids.dim() != 3 or input_ids.shape[1] != CHANNELS:
            raise ValueError(f"{what}: input_ids must be [batch, 2 channels, frames], got {tuple(input_ids.shape)}")

    def forward(self, input_ids: torch.Tensor) -> DGSLMOutput:
        """input_ids int64 [B, 2, T] (T <= max_positions) -> logits [B, 2, T, V], durations [B, 2, T]."""
        self._check_ids(input_ids, "DGSLM.forward")
        b, _, t = input_ids.shape
        if t > self.config.max_positions:
            raise ValueError(f"DGSLM.forward: {t} frames, more than max_positions={self.config.max_positions}")
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
        h = self._embed(input_ids, positions)
        mask = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()[None, None]
        for layer in self.layers:
            h = layer(h, mask)
        return self._heads(h)

    # --------------------------------------------------------------------------------------------------- streaming
    def _init_streaming_state(self, batch_size: int) -> DGSLMStreamingState:
        return DGSLMStreamingState(batch_size, self.device, num_layers=len(self.layers))

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> DGSLMOutput:
        """Feed one frame of both channels: `tokens` int [B, 2] -> logits [B, 2, V], durations [B, 2] of that frame.

        Running streams (exec mask True) advance one position; paused ones get the outputs this frame would give them
        and keep their state.
        """
        state = self._require_streaming("DGSLM.step")
        assert isinstance(state, DGSLMStreamingState)
        tokens = torch.as_tensor(tokens, device=state.device)
        if tokens.shape != (state.batch_size, CHANNELS) or tokens.dtype.is_floating_point:
            raise StreamingError(f"DGSLM.step takes one integer token per channel: shape [{state.batch_size}, 2], "
                                 f"got {tokens.dtype} {tuple(tokens.shape)}")
        if bool(((tokens < 0) | (tokens >= self.vocab.size)).any()):
            raise StreamingError(f"DGSLM.step: a token outside the vocabulary [0, {self.vocab.size})")
        run = state.exec_mask
        if bool((run & (state.positions >= self.config.max_positions)).any()):
            raise StreamingError(f"DGSLM.step: a stream has used all {self.config.max_positions} positions; reset "
                                 "it (reset_streaming) or pause it (set_exec_mask)")
        seen = torch.cat([state.valid, torch.ones_like(run)[:, None]], dim=1)   # [B, S + 1]
        h = self._embed(tokens.long()[:, :, None], state.positions[:, None])
        mask = seen[:, None, None, :]
        for layer, cache in zip(self.layers, state.caches, strict=True):
            h = layer(h, mask, cache)
        state.valid = torch.cat([state.valid, run[:, None]], dim=1)
        state.positions = state.positions + run.long()
        out = self._heads(h)
        return DGSLMOutput(out.logits[:, :, -1].float(),
                           None if out.durations is None else out.durations[:, :, -1].float())

    # ------------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """``config.json`` (format header, config, tokenizer identity, frame rate) + ``model.safetensors``."""
        path = Path(path)
        meta = {"config": self.config.to_dict(), "tokenizer": self.tokenizer, "frame_rate": self.frame_rate}
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_directory(path, overwrite=overwrite) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": DGSLM_ARTIFACT.name})
            (tmp / CONFIG_FILE).write_text(DGSLM_ARTIFACT.dumps(meta))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        attn_implementation: str | None = None) -> DGSLM:
        path = Path(path)
        meta = DGSLM_ARTIFACT.read_dir(path, CONFIG_FILE)
        try:
            config = DGSLMConfig.from_dict({**meta["config"], **({"attn_implementation": attn_implementation}
                                                                   if attn_implementation else {})})
        except (KeyError, TypeError, ConfigError) as e:
            raise FormatError(path / CONFIG_FILE, f"bad dGSLM config ({e})") from None
        model = cls(config, tokenizer=meta.get("tokenizer"), frame_rate=meta.get("frame_rate"))
        try:
            model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        except (OSError, RuntimeError, SafetensorError) as e:
            raise FormatError(path / WEIGHTS_FILE, str(e).splitlines()[0]) from None
        return model.to(device).eval()
