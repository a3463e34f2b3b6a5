"""`DuplexLM`: a full-duplex unit LM on a Hugging Face backbone, in two formats on the same class.

native (Moshi / FLM-Audio fusion; `textless.dialogue.streams.StreamLayout`): N token streams per frame, in delayed
coordinates. At frame t the backbone reads ``sum_k emb_k(tokens[:, k, t])`` (one table per stream, so a listen token
never touches a speak table; ZERO -> exactly 0) and each speak stream's own head predicts its token at t + 1::

    forward(tokens int64 [B, N, T]) -> {speak stream name: logits [B, T, V_k]}

Depth decoder (``config.depth_layers`` > 0; Moshi's depformer): instead of parallel heads, a small causal transformer
(its own ``depth_dim`` / ``depth_heads``) runs per frame over the speak streams in layout order: for the frame that
position t predicts, its input j is ``linear_j(h_t)`` plus the embedding (a depth table of stream j - 1) of speak
stream j - 1's token at t + 1 (nothing for j = 0), and its output j feeds stream j's head. So stream j's logits
depend on the tokens of streams < j of the predicted frame, never on the others'. `forward` teacher-forces them
from ``tokens[:, speak, t + 1]``; the last position has no next frame and reads nothing there (as ZERO): its stream 0
logits are exact, the later streams' are not conditioned on the frame and are not to be scored (train-duplex feeds
the whole window and scores positions 0..T-2). Streaming, ``step(frame, choose)`` decodes stream by stream: each
stream's logits go to ``choose`` (the sampler), whose tokens condition the next stream (`depth_logits`: one stream).

tdm (time multiplexing; `TDMFormat`): one sequence, one table and one head over the TDM vocabulary::

    forward(tokens int64 [B, S]) -> {"tdm": logits [B, S, V]}

Backbone. The base model of an HF causal LM (``AutoModel.from_config``: LlamaModel...) fed ``inputs_embeds``; its
text token table is dropped (``config.backbone`` records ``vocab_size`` 1). It must be rotary (Llama, Qwen2...):
positions are relative, so a bounded KV cache is exact as a sliding window. `from_scratch` builds one from
``config.backbone``; `from_text_lm` keeps every transformer weight of a text LM bit-identical (TWIST; new stream
tables and heads, initialised by the backbone's ``_init_weights``).

Attention window. Every step attends to the last ``config.context`` steps, itself included (native: frames, tdm:
tokens), in `forward` (a sliding-window mask once T > context) and in streaming alike, so they agree at any length.

Streaming (`textless.streaming`): ``with model.streaming(B): model.step(frame [B, N])`` (native) or
``model.step_chunk(tokens [B, L])`` (tdm) equals the teacher-forced `forward` (up to float rounding), per stream
staggered, reset (`reset_streaming`) or paused (`set_exec_mask`: the outputs of these tokens, state kept; with a
depth decoder, given the same tokens of the predicted frame through ``choose``). The KV
cache is a ring of ``ring = context + max_step - 1`` slots per stream (Moshi's RingKVCache; max_step: 1 native, the
longest TDM prefix ``chunk_frames + 3``): the step at position p goes to slot p % ring, a paused stream's too (it
only overwrites steps that no later step can see, and its slots are not marked as held). The ring costs what it
holds, not its capacity: with n the steps run since the session started or every stream was last reset (native:
frames, tdm: tokens; paused steps count), a step attends to the filled prefix of ``min(n, ring)`` slots, so it
costs O(min(n, context)) however long the session, and the keys / values grow with that prefix (amortised
doubling: fewer than twice the largest prefix so far, kept across resets) up to the bound of
``2 * layers * B * kv_heads * head_dim * (context + max_step - 1)`` values. Positions count on (RoPE, float32
angles). sdpa or eager attention only (a 4-D mask).

Persistence: ``config.json`` (versioned header ``textless.duplex_lm`` + `DuplexConfig`) and ``model.safetensors``,
written atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from textless.data.identity import UnitIdentity, check_fits
from textless.dialogue.streams import ZERO, StreamLayout, TDMFormat
from textless.errors import ConfigError, FormatError, TextlessError
from textless.lm.attention import attn_kwargs, check_attn_implementation
from textless.lm.streaming import _cache_kwarg, _check_full_attention
from textless.streaming import StreamingError, StreamingModule, StreamingState
from textless.utils.atomic import atomic_directory
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

DUPLEX_ARTIFACT = artifact("textless.duplex_lm", 1, "a textless duplex LM directory")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMATS = ("native", "tdm")
TDM_STREAM = "tdm"                       # the name of the TDM table / head / logits
MASK_ATTENTION = ("sdpa", "eager")       # backends that take our 4-D window mask
BACKBONE_PRESETS = ("tiny", "small", "350m")  # the rotary (Llama) presets of textless.lm.presets
DEPTH_DIM = 256                          # default width / heads of a depth decoder (Moshi: 1024 / 16 on d 4096)
DEPTH_HEADS = 4


def backbone_config(preset: str = "small", **overrides: Any) -> dict[str, Any]:
    """A Llama preset of `textless.lm.presets` (tiny d64 / small d384 / 350m d896) as a backbone dict; `overrides`
    set config fields (e.g. ``hidden_size=32``)."""
    from textless.lm.presets import PRESETS

    if preset not in BACKBONE_PRESETS:
        raise ConfigError(f"unknown duplex backbone preset {preset!r}; choose one of {BACKBONE_PRESETS} (rotary "
                          f"Llama configs) or pass a transformers config dict")
    data = PRESETS[preset](256).to_dict()  # a placeholder vocabulary, dropped below
    if {"hidden_size", "num_attention_heads"} & set(overrides):
        data.pop("head_dim")  # derived again from the new sizes unless given
    data.update(overrides, **NO_VOCABULARY)
    return _backbone_dict(AutoConfig.for_model(data.pop("model_type"), **data))


# the backbone's own token table is not used: its config keeps no text vocabulary
NO_VOCABULARY = {"vocab_size": 1, "pad_token_id": None, "bos_token_id": None, "eos_token_id": None,
                 "tie_word_embeddings": False}


def _backbone_dict(config: PretrainedConfig) -> dict[str, Any]:
    return {**config.to_dict(), **NO_VOCABULARY}


@dataclass
class DuplexConfig:
    """What a `DuplexLM` is. `layout` (a `StreamLayout` dict) for format "native", `tdm` (a `TDMFormat` dict) for
    "tdm"; `backbone`: an HF config dict (`backbone_config`); `context`: steps each step attends to (native
    frames, tdm tokens; 3000 = 60 s at 50 Hz); `tokenizer` / `frame_rate` (Hz): the identity of its units;
    `depth_layers` (native only): 0 = parallel heads, else the layers of a depth decoder of width `depth_dim` with
    `depth_heads` attention heads (configs saved before these keys load as parallel heads)."""

    format: str = "native"
    layout: dict[str, Any] | None = None
    tdm: dict[str, Any] | None = None
    backbone: dict[str, Any] = field(default_factory=backbone_config)
    context: int = 3000
    tokenizer: dict[str, Any] | None = None
    frame_rate: float | None = None
    depth_layers: int = 0
    depth_dim: int = DEPTH_DIM
    depth_heads: int = DEPTH_HEADS

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"DuplexConfig: format must be one of {FORMATS}, got {self.format!r}")
        wanted, other = ("layout", "tdm") if self.format == "native" else ("tdm", "layout")
        if getattr(self, wanted) is None or getattr(self, other) is not None:
            raise ConfigError(f"DuplexConfig: format {self.format!r} needs `{wanted}` (and no `{other}`)")
        if isinstance(self.layout, StreamLayout):
            self.layout = self.layout.to_dict()
        if isinstance(self.tdm, TDMFormat):
            self.tdm = self.tdm.to_dict()
        if isinstance(self.backbone, PretrainedConfig):
            self.backbone = _backbone_dict(self.backbone)
        if not isinstance(self.backbone, dict) or "model_type" not in self.backbone:
            raise ConfigError("DuplexConfig: backbone must be a transformers config dict (with 'model_type')")
        self.backbone = json.loads(json.dumps({**self.backbone, **NO_VOCABULARY}))  # as config.json gives it back
        if isinstance(self.context, bool) or not isinstance(self.context, int) or self.context < 1:
            raise ConfigError(f"DuplexConfig: context must be an integer >= 1 (steps), got {self.context!r}")
        if self.format == "native":
            StreamLayout.from_dict(self.layout)
        else:
            TDMFormat.from_dict(self.tdm)
        check_depth(self.depth_layers, self.depth_dim, self.depth_heads, self.format, "DuplexConfig")

    @property
    def stream_layout(self) -> StreamLayout:
        if self.layout is None:
            raise ConfigError(f"a {self.format!r} duplex LM has no stream layout")
        return StreamLayout.from_dict(self.layout)

    @property
    def tdm_format(self) -> TDMFormat:
        if self.tdm is None:
            raise ConfigError(f"a {self.format!r} duplex LM has no TDM format")
        return TDMFormat.from_dict(self.tdm)

    def backbone_config(self) -> PretrainedConfig:
        data = dict(self.backbone)
        model_type = data.pop("model_type")
        try:
            return AutoConfig.for_model(model_type, **data)
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(f"DuplexConfig: bad backbone config ({e})") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DuplexConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown DuplexConfig keys: {', '.join(unknown)}")
        return cls(**data)


def check_depth(layers: Any, dim: Any, heads: Any, format: str = "native", where: str = "DuplexConfig") -> None:
    """`ConfigError` unless (depth_layers, depth_dim, depth_heads) describe parallel heads (layers 0) or a depth
    decoder of a native model."""
    for name, value, least in (("depth_layers", layers, 0), ("depth_dim", dim, 1), ("depth_heads", heads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: {name} must be an integer >= {least}, got {value!r}")
    if dim % heads:
        raise ConfigError(f"{where}: depth_dim {dim} is not a multiple of depth_heads {heads}")
    if layers and format != "native":
        raise ConfigError(f"{where}: a depth decoder predicts the speak streams of a native frame; a {format!r} model "
                          f"has one stream (use depth_layers 0)")


# ---------------------------------------------------------------------------------------------------------------------
# the depth decoder
# ---------------------------------------------------------------------------------------------------------------------


class DepthDecoder(nn.Module):
    """Moshi's depformer over the speak streams of one frame (module docstring): per speak stream an input projection
    of the backbone state and a table of its tokens (the next stream's input; none for the last stream), and causal
    pre-norm transformer layers shared by the streams. `vocabs`: {speak stream: vocabulary}, in layout order. Its
    output heads are the model's `heads` (``depth_dim`` -> the stream's vocabulary)."""

    def __init__(self, dim: int, vocabs: dict[str, int], layers: int, depth_dim: int, heads: int, **kw: Any):
        super().__init__()
        names = list(vocabs)
        self.inputs = nn.ModuleDict({name: nn.Linear(dim, depth_dim, bias=False, **kw) for name in names})
        self.embeddings = nn.ModuleDict({name: nn.Embedding(vocabs[name], depth_dim, **kw) for name in names[:-1]})
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(depth_dim, heads, 4 * depth_dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True, **kw) for _ in range(layers))
        self.norm = nn.LayerNorm(depth_dim, **kw)

    def forward(self, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """hidden [..., D] (backbone states), previous int64 [..., j] (the tokens of the first j speak streams of the
        predicted frame; ZERO: nothing) -> the states [..., j + 1, depth_dim] of the first j + 1 streams."""
        names = list(self.inputs)
        x = [self.inputs[names[0]](hidden)]
        for i in range(previous.shape[-1]):
            x.append(self.inputs[names[i + 1]](hidden) + _lookup(self.embeddings[names[i]], previous[..., i]))
        x = torch.stack(x, dim=-2)
        lead, (n, width) = x.shape[:-2], x.shape[-2:]
        x = x.reshape(-1, n, width)
        mask = nn.Transformer.generate_square_subsequent_mask(n, device=x.device, dtype=x.dtype)
        for layer in self.layers:
            x = layer(x, src_mask=mask, is_causal=True)
        return self.norm(x).reshape(*lead, n, width)


def _lookup(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """table(ids), with ZERO -> exactly 0."""
    return table(ids.clamp(min=0)) * (ids != ZERO)[..., None].to(table.weight.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# streaming state: a ring KV cache per stream
# ---------------------------------------------------------------------------------------------------------------------


class RingKVCache:
    """Keys / values of every layer, ``[B, kv_heads, capacity, head_dim]`` each: allocated at the first step and
    grown (amortised doubling, zeros appended) as the attended prefix grows, up to ``slots``.

    The backbone's attention layers call `update` with the step's keys / values ``[B, kv_heads, L, head_dim]``:
    they are written at ``write`` (int64 ``[B, L]``, every entry < ``length``) and the first ``length`` slots are
    returned (views), to be read under the caller's mask; both are set by the caller before the step."""

    def __init__(self, num_layers: int, slots: int):
        self.slots = slots
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.write: torch.Tensor | None = None
        self.length = 0

    @property
    def capacity(self) -> int:
        """Slots allocated (per stream and layer; 0 before the first step)."""
        return max((0 if k is None else k.shape[2] for k in self.keys), default=0)

    def reserve(self, length: int) -> None:
        """Grow the allocated layers' buffers to hold at least `length` slots (capped at ``slots``)."""
        for layer_idx, k in enumerate(self.keys):
            if k is not None and k.shape[2] < length:
                self._grow(layer_idx, length)

    def _grow(self, layer_idx: int, length: int) -> None:
        size = min(self.slots, max(length, 2 * self.keys[layer_idx].shape[2]))
        for buffers in (self.keys, self.values):
            old = buffers[layer_idx]
            new = old.new_zeros(*old.shape[:2], size, old.shape[3])
            new[:, :, :old.shape[2]] = old
            buffers[layer_idx] = new

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.write is not None and 0 < self.length <= self.slots
        if self.keys[layer_idx] is None:
            b, h, _, d = keys.shape
            self.keys[layer_idx] = keys.new_zeros(b, h, self.length, d)
            self.values[layer_idx] = values.new_zeros(b, h, self.length, values.shape[-1])
        elif self.keys[layer_idx].shape[2] < self.length:
            self._grow(layer_idx, self.length)
        ring_k = self.keys[layer_idx][:, :, :self.length]
        ring_v = self.values[layer_idx][:, :, :self.length]
        index = self.write[:, None, :, None]
        ring_k.scatter_(2, index.expand_as(keys), keys)
        ring_v.scatter_(2, index.expand_as(values), values)
        return ring_k, ring_v


@dataclass
class DuplexStreamingState(StreamingState):
    """Slots ``[0, ring)`` hold each stream's last ``ring`` steps (step at position p in slot p % ring); only the
    prefix ``[0, filled)`` may hold any (every stream's position is <= filled), and only it is attended to and
    allocated (`RingKVCache`)."""

    num_layers: int = 0
    ring: int = 1
    cache: RingKVCache = field(init=False)
    positions: torch.Tensor = field(init=False)       # int64 [B]: position of each stream's next step
    slot_positions: torch.Tensor = field(init=False)  # int64 [B, ring]: position held by a slot (-1: none)
    filled: int = field(init=False)                   # min(ring, steps run since every stream was at position 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cache = RingKVCache(self.num_layers, self.ring)
        self.positions = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        self.slot_positions = torch.full((self.batch_size, self.ring), -1, dtype=torch.long, device=self.device)
        self.filled = 0

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.positions = self.positions.masked_fill(mask, 0)
        self.slot_positions = self.slot_positions.masked_fill(mask[:, None], -1)
        if bool(mask.all()):  # every stream starts again: the ring is empty (its buffers are kept for reuse)
            self.filled = 0


def window_mask(query_positions: torch.Tensor, key_positions: torch.Tensor, context: int,
                dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``[B, 1, L, S]`` (0 = attend, dtype's min = not): a query at position p sees the keys at
    positions (p - context, p]; key positions < 0 are empty. query_positions int ``[B, L]``, key_positions ``[B, S]``."""
    delta = query_positions[:, :, None] - key_positions[:, None, :]
    seen = (key_positions[:, None, :] >= 0) & (delta >= 0) & (delta < context)
    mask = torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill(~seen, torch.finfo(dtype).min)
    return mask[:, None]


# ---------------------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------------------


class DuplexLM(StreamingModule):
    """A full-duplex unit LM (see the module docstring). `backbone`: an HF base model to use as is (`from_text_lm`);
    None builds one from ``config.backbone``."""

    def __init__(self, config: DuplexConfig, backbone: PreTrainedModel | None = None, *,
                 attn_implementation: str | None = None):
        super().__init__()
        self.config = config
        if backbone is None:
            backbone = AutoModel.from_config(config.backbone_config(), **attn_kwargs(attn_implementation))
        elif check_attn_implementation(attn_implementation):
            backbone.set_attn_implementation(attn_implementation)
        _check_backbone(backbone)
        dim = backbone.get_input_embeddings().embedding_dim
        backbone.set_input_embeddings(None)
        for key, value in NO_VOCABULARY.items():
            setattr(backbone.config, key, value)
        self.backbone = backbone
        self.dim = dim
        if config.format == "native":
            layout = self.layout = config.stream_layout
            vocabs = {s.name: s.vocab_size for s in layout.streams}
            speak = [layout.streams[k].name for k in layout.speak]
            self.max_step = 1
        else:
            self.tdm = config.tdm_format
            vocabs = {TDM_STREAM: self.tdm.vocab_size}
            speak = [TDM_STREAM]
            self.max_step = self.tdm.chunk_frames + 3  # the longest TDM prefix: pending / <bos>, <listen>, units, tag
        kw = {"device": _device_of(backbone), "dtype": _dtype_of(backbone)}
        self.embeddings = nn.ModuleDict({name: nn.Embedding(v, dim, **kw) for name, v in vocabs.items()})
        self.depth: DepthDecoder | None = None
        new = [*self.embeddings.values()]
        if config.depth_layers:
            self.depth = DepthDecoder(dim, {name: vocabs[name] for name in speak}, config.depth_layers,
                                      config.depth_dim, config.depth_heads, **kw)
            new += [*self.depth.inputs.values(), *self.depth.embeddings.values()]
        head_dim = dim if self.depth is None else config.depth_dim
        self.heads = nn.ModuleDict({name: nn.Linear(head_dim, vocabs[name], bias=False, **kw) for name in speak})
        for module in (*new, *self.heads.values()):
            backbone._init_weights(module)
        self.register_buffer("vocab_sizes", torch.tensor(list(vocabs.values())), persistent=False)

    # ------------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_scratch(cls, config: DuplexConfig, *, attn_implementation: str | None = None) -> DuplexLM:
        """Random weights (the backbone architecture's own init; seed with `torch.manual_seed`)."""
        return cls(config, attn_implementation=attn_implementation)

    @classmethod
    def from_text_lm(cls, source: str | Path | PreTrainedModel, *, layout: StreamLayout | None = None,
                     tdm: TDMFormat | None = None, context: int = 3000, tokenizer: dict | None = None,
                     frame_rate: float | None = None, gguf_file: str | None = None,
                     torch_dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
                     depth_layers: int = 0, depth_dim: int = DEPTH_DIM, depth_heads: int = DEPTH_HEADS) -> DuplexLM:
        """TWIST-style: the text LM's transformer (every weight kept bit-identical), new stream tables and heads
        (and a new depth decoder with `depth_layers` > 0).

        `source`: a loaded causal LM (its base model is taken over) or a source of `textless.lm.twist.load_text_lm`
        (a local HF directory, a ``.gguf`` file, ``offline:smollm2-135m``). Give `layout` (native) or `tdm`.
        """
        from textless.lm.twist import load_text_lm

        check_depth(depth_layers, depth_dim, depth_heads, "native" if tdm is None else "tdm", "DuplexLM.from_text_lm")
        if isinstance(source, PreTrainedModel):
            text_lm = source
        else:
            text_lm = load_text_lm(source, gguf_file=gguf_file, torch_dtype=torch_dtype,
                                   attn_implementation=attn_implementation)
        backbone = text_lm.base_model
        if backbone is text_lm:
            raise TextlessError(f"{type(text_lm).__name__} is not a causal LM with a base model")
        config = DuplexConfig(format="native" if tdm is None else "tdm", layout=layout, tdm=tdm,
                              backbone=_backbone_dict(backbone.config), context=context, tokenizer=tokenizer,
                              frame_rate=frame_rate, depth_layers=depth_layers, depth_dim=depth_dim,
                              depth_heads=depth_heads)
        return cls(config, backbone, attn_implementation=attn_implementation)

    # ------------------------------------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """``config.json`` (versioned header + config) and ``model.safetensors``, atomically."""
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_directory(path, overwrite=overwrite) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": DUPLEX_ARTIFACT.name})
            (tmp / CONFIG_FILE).write_text(DUPLEX_ARTIFACT.dumps({"config": self.config.to_dict()}))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        attn_implementation: str | None = None) -> DuplexLM:
        """Load a `save_pretrained` directory (weights in their saved dtype), in eval mode."""
        path = Path(path)
        meta = DUPLEX_ARTIFACT.read_dir(path, CONFIG_FILE)
        try:
            config = DuplexConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ConfigError) as e:
            raise FormatError(path / CONFIG_FILE, f"bad duplex LM config ({e})") from None
        try:
            weights = load_file(str(path / WEIGHTS_FILE))
        except (OSError, SafetensorError) as e:
            raise FormatError(path / WEIGHTS_FILE, str(e).splitlines()[0]) from None
        model = cls(config, attn_implementation=attn_implementation)
        dtype = next(iter(weights.values())).dtype
        try:
            model.to(dtype).load_state_dict(weights)
        except RuntimeError as e:
            raise FormatError(path / WEIGHTS_FILE, str(e).splitlines()[0]) from None
        return model.to(device).eval()

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.vocab_sizes.device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.heads.values())).weight.dtype

    @property
    def speak_names(self) -> tuple[str, ...]:
        """The streams it predicts, in layout order (tdm: ("tdm",))."""
        return tuple(self.heads)

    @property
    def units(self) -> UnitIdentity:
        """The units it listens to: frame-level units of its tokenizer at its frame rate."""
        if self.config.format == "native":
            num_units = self.layout.streams[self.layout.listen[0]].units if self.layout.listen else None
        else:
            num_units = self.tdm.num_units
        return UnitIdentity(tokenizer=self.config.tokenizer, vocab_size=num_units, frame_rate=self.config.frame_rate,
                            deduplicated=False, bpe=False)

    def check_units(self, units: UnitIdentity, where: str) -> None:
        check_fits(self.units, units, consumer="the duplex LM", source=where, short="the duplex LM")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        config = self.config
        depth = f", depth decoder {config.depth_layers} x d{config.depth_dim}" if self.depth is not None else ""
        return f"format={config.format}, context={config.context}, streams={list(self.embeddings)}{depth}"

    # ------------------------------------------------------------------------------------------------ forward
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """native int [B, N, T] / tdm int [B, T] -> the backbone's input [B, T, D]: the sum of the streams' embeddings
        (ZERO -> exactly 0)."""
        tokens = self._check_tokens(tokens)
        if self.config.format == "tdm":
            tokens = tokens[:, None]
        x = None
        for k, table in enumerate(self.embeddings.values()):
            e = _lookup(table, tokens[:, k])
            x = e if x is None else x + e
        return x

    def logits(self, hidden: torch.Tensor, next_tokens: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """hidden [B, T, D] -> {speak stream: logits [B, T, V_k]}. With a depth decoder, `next_tokens` int64
        [B, n_speak, T]: the speak streams' tokens of the frame each position predicts (stream j's logits read those
        of streams < j; ZERO or None: nothing)."""
        if self.depth is None:
            return {name: head(hidden) for name, head in self.heads.items()}
        if next_tokens is None:
            previous = torch.full((*hidden.shape[:2], len(self.heads) - 1), ZERO, device=hidden.device)
        else:
            previous = next_tokens[:, :-1].transpose(1, 2)                    # [B, T, n_speak - 1]
        states = self.depth(hidden, previous)                                 # [B, T, n_speak, depth_dim]
        return {name: head(states[..., j, :]) for j, (name, head) in enumerate(self.heads.items())}

    def depth_logits(self, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The depth decoder's logits of one speak stream: hidden [B, D] (a frame's backbone state), previous int64
        [B, j] (the tokens of speak streams 0..j-1 of the predicted frame) -> float32 logits [B, V_j] of speak
        stream j. (It recomputes the j + 1 positions: the decoder is a few layers over a few streams.)"""
        if self.depth is None:
            raise ConfigError("DuplexLM.depth_logits: this model predicts with parallel heads (depth_layers 0)")
        previous = torch.as_tensor(previous, device=self.device).long()
        if previous.dim() != 2 or previous.shape[0] != hidden.shape[0] or previous.shape[1] >= len(self.heads):
            raise ValueError(f"DuplexLM.depth_logits: previous must be int64 [{hidden.shape[0]}, j < "
                             f"{len(self.heads)}] tokens, got {tuple(previous.shape)}")
        j = previous.shape[1]
        states = self.depth(hidden, previous)                                 # [B, j + 1, depth_dim]
        return self.heads[self.speak_names[j]](states[:, j]).float()

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """native tokens int64 [B, N, T] (delayed) / tdm int64 [B, S] -> {speak stream: logits [B, T, V_k]}; step t
        predicts the stream's token at t + 1 and attends to the last ``context`` steps. A depth decoder reads the
        speak tokens at t + 1 from `tokens` (nothing at the last step: module docstring)."""
        x = self.embed(tokens)
        b, t = x.shape[:2]
        positions = torch.arange(t, device=x.device).expand(b, t)
        mask = None
        if t > self.config.context:
            self._check_mask_attention("a forward pass longer than context")
            mask = window_mask(positions[:1], positions[:1], self.config.context, x.dtype)
        out = self.backbone(inputs_embeds=x, position_ids=positions, attention_mask=mask, use_cache=False)
        if self.depth is None:
            return self.logits(out.last_hidden_state)
        speak = torch.as_tensor(tokens, device=self.device).long()[:, list(self.layout.speak)]  # checked by embed
        next_tokens = torch.cat([speak[..., 1:], torch.full_like(speak[..., :1], ZERO)], dim=-1)
        return self.logits(out.last_hidden_state, next_tokens)

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = torch.as_tensor(tokens, device=self.device)
        streams = len(self.embeddings)
        native = self.config.format == "native"
        shape_ok = tokens.dim() == 3 and tokens.shape[1] == streams if native else tokens.dim() == 2
        if not shape_ok or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            want = f"[batch, {streams} streams, frames]" if native else "[batch, tokens]"
            raise ValueError(f"DuplexLM ({self.config.format}): tokens must be integers {want}, got {tokens.dtype} "
                             f"{tuple(tokens.shape)}")
        tokens = tokens.long()
        sizes = self.vocab_sizes[:, None] if native else self.vocab_sizes[0]
        bad = ((tokens < 0) & (tokens != ZERO)) | (tokens >= sizes)
        if bool(bad.any()):
            where = bad.nonzero()[0].tolist()
            name = list(self.embeddings)[where[1] if native else 0]
            raise ValueError(f"DuplexLM: stream {name!r} got token {int(tokens[tuple(where)])}, outside [0, "
                             f"{self.embeddings[name].num_embeddings}) and not ZERO ({ZERO})")
        return tokens

    def _check_mask_attention(self, what: str) -> None:
        implementation = self.backbone.config._attn_implementation
        if implementation not in MASK_ATTENTION:
            raise ConfigError(f"{what} needs a windowed attention mask, which {implementation!r} attention does not "
                              f"take; use attn_implementation 'sdpa' or 'eager'")

    # ------------------------------------------------------------------------------------------------ streaming
    def _init_streaming_state(self, batch_size: int) -> DuplexStreamingState:
        self._check_mask_attention("streaming")
        if self.training:
            logger.warning("streaming %s in training mode (dropout is active); call .eval() first",
                           type(self).__name__)
        return DuplexStreamingState(batch_size, self.device, num_layers=self.backbone.config.num_hidden_layers,
                                    ring=self.config.context + self.max_step - 1)

    @torch.no_grad()
    def step(self, frame: torch.Tensor,
             choose: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """native: one frame of every stream, int64 [B, N] (delayed coordinates) -> {speak stream: float32 logits
        [B, V_k]} for the next frame. Paused streams get the logits of this frame and keep their state.

        With a depth decoder the speak streams are decoded one after the other (layout order): ``choose(name,
        logits [B, V])`` gets each stream's logits and returns its tokens int64 [B] of the next frame (sampled, or
        the data's to teacher-force), on which the later streams' logits are conditioned; without `choose`, the
        argmax. Parallel heads do not call `choose`."""
        if self.config.format != "native":
            raise StreamingError("DuplexLM.step takes one frame of a native model; a TDM model steps by step_chunk")
        self._require_streaming("DuplexLM.step")
        frame = torch.as_tensor(frame, device=self.device)
        if frame.dim() != 2:
            raise StreamingError(f"DuplexLM.step takes one frame [batch, {len(self.embeddings)} streams], got "
                                 f"{tuple(frame.shape)}")
        hidden = self._advance(self.embed(frame[:, :, None]))
        if self.depth is None:
            return {name: logits[:, -1].float() for name, logits in self.logits(hidden).items()}
        hidden = hidden[:, -1]
        previous = torch.empty(hidden.shape[0], 0, dtype=torch.long, device=self.device)
        out = {}
        for j, name in enumerate(self.speak_names):
            out[name] = logits = self.depth_logits(hidden, previous)
            tokens = logits.argmax(dim=-1) if choose is None else choose(name, logits)
            if j + 1 < len(self.speak_names):
                previous = torch.cat([previous, torch.as_tensor(tokens, device=self.device).long()[:, None]], dim=1)
        return out

    @torch.no_grad()
    def step_chunk(self, tokens: torch.Tensor) -> torch.Tensor:
        """tdm: L tokens of every stream, int64 [B, L] -> float32 logits [B, L, V] (position i predicts token i + 1).
        Chunks longer than ``max_step`` run in pieces. Paused streams get the logits of these tokens, state kept."""
        if self.config.format != "tdm":
            raise StreamingError("DuplexLM.step_chunk steps a TDM model; a native model steps one frame by step")
        state = self._require_streaming("DuplexLM.step_chunk")
        tokens = torch.as_tensor(tokens, device=self.device)
        if tokens.dim() != 2 or tokens.shape[0] != state.batch_size or tokens.shape[1] < 1:
            raise StreamingError(f"DuplexLM.step_chunk takes tokens [{state.batch_size}, L >= 1], got "
                                 f"{tuple(tokens.shape)}")
        x = self.embed(tokens)
        pieces = [self._advance(x[:, i:i + self.max_step]) for i in range(0, x.shape[1], self.max_step)]
        return self.logits(torch.cat(pieces, dim=1))[TDM_STREAM].float()

    def _advance(self, x: torch.Tensor) -> torch.Tensor:
        """Run the backbone on x [B, L, D] (L <= max_step) over the ring cache -> hidden [B, L, D]."""
        state = self._require_streaming("DuplexLM.step")
        assert isinstance(state, DuplexStreamingState)
        if x.shape[0] != state.batch_size:
            raise StreamingError(f"DuplexLM: {x.shape[0]} streams in a step, {state.batch_size} in the session")
        run = state.exec_mask
        steps = x.shape[1]
        positions = state.positions[:, None] + torch.arange(steps, device=state.device)  # [B, L]
        # every position is < filled + L: the slots written this step lie in the attended prefix [0, length)
        length = min(state.ring, state.filled + steps)
        write = positions % state.ring
        held = state.slot_positions[:, :length]
        slot_positions = held.scatter(1, write, positions)                     # [B, length] after this step
        mask = window_mask(positions, slot_positions, self.config.context, x.dtype)
        state.cache.write, state.cache.length = write, length
        # a step (paused or failed too) overwrites only slots that no later step can see: it writes positions
        # [p, p + L) over [p - ring, p + L - ring), all <= p - context as L <= max_step
        out = self.backbone(inputs_embeds=x, position_ids=positions, attention_mask=mask, use_cache=True,
                            **{_cache_kwarg(type(self.backbone)): state.cache})
        state.slot_positions[:, :length] = torch.where(run[:, None], slot_positions, held)
        state.positions = state.positions + run.long() * steps
        state.filled = length
        return out.last_hidden_state


def _check_backbone(backbone: PreTrainedModel) -> None:
    if not isinstance(backbone, PreTrainedModel):
        raise TypeError(f"DuplexLM's backbone is a transformers PreTrainedModel, got {type(backbone).__name__}")
    if not hasattr(backbone, "rotary_emb"):
        raise ConfigError(f"DuplexLM needs a rotary backbone (Llama, Qwen2...: relative positions make its bounded "
                          f"cache a sliding window); {type(backbone).__name__} has none")
    try:
        _check_full_attention(backbone.config)
    except StreamingError as e:
        raise ConfigError(f"DuplexLM applies its own attention window: {e}") from None


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype
