"""Unit HiFi-GAN ("CodeHiFiGAN"): frame-level discrete units -> waveform.

The architecture is fairseq's ``CodeGenerator`` (``fairseq/models/text_to_speech/codehifigan.py`` on top of
``hifigan.py``), rewritten here with padding masks so that a padded batch gives exactly the one-by-one outputs.
Parameter names equal fairseq's state-dict keys (after weight norm is folded, see `fold_weight_norm`)::

    dict.weight                         [K, E]            unit embedding (E = embedding_dim, 128)
    spkr.weight                         [S, E]            speaker embedding (multispkr) or Linear [E, D] (+ spkr.bias)
    conv_pre.{weight,bias}              Conv1d(model_in_dim -> C, k=7, zero 'same' padding)
    ups.{i}.{weight,bias}               ConvTranspose1d(C/2^i -> C/2^(i+1), k_i, stride u_i, padding (k_i-u_i)//2)
    resblocks.{i*R+r}.convs1.{n}        Conv1d(k_r, dilation d_r[n], 'same'), convs2.{n}: Conv1d(k_r, dilation 1)
    conv_post.{weight,bias}             Conv1d(C/2^U -> 1, k=7, 'same')
    dur_predictor.conv1.0, .ln1, .conv2.0, .ln2, .proj     FastSpeech2 VariancePredictor

Forward: x = concat(dict(units), spkr(speaker) repeated over frames, f0 repeated to the frame rate) in fairseq's
order (``examples/speech_to_speech``: speaker, then the other features), or units, f0, speaker with
``f0_before_speaker`` (textlesslib's and speech-resynthesis' CodeGenerator: the order of every released F0 vocoder;
the fairseq loader sets it for configs with ``f0``). Quantised F0 (``f0_quant_num_bin``, textlesslib): integer bins
embedded by ``f0_quant_embed.weight`` [bins, E]. Then [B, model_in_dim, L] -> conv_pre -> for each stage: leaky_relu(0.1) -> ups[i] (length x u_i) -> mean of the R
resblocks -> leaky_relu(0.01, torch's default slope, as fairseq) -> conv_post -> tanh -> [B, 1, L * hop] samples.
A resblock ("1", the only type fairseq has) is: for (c1, c2): x = x + c2(lrelu(c1(lrelu(x)))).

Batching: every conv in fairseq zero-pads its input ("same" padding), so a padded batch equals one-by-one synthesis
when every padded position is exactly zero at the input of every conv. `UnitHiFiGAN.forward` therefore multiplies
by the valid-position mask after every conv / transposed conv (inside the resblocks after *each* conv, because the
second conv of a pair would otherwise see the first conv's bias in the padding). For a transposed conv with
padding (k-u)//2 and k-u even, output t in [0, u*L) only receives input frames < L, so padded (zero) inputs add
nothing there; outputs at t >= u*L are then masked. Hence the `(k - u)` even requirement (true for all published
configs; it also makes the output exactly u*L long).

speechbrain's ``UnitHifiganGenerator`` is the same network with a few switches, all config fields here (defaults =
fairseq): ``padding_mode="reflect"`` (its "same" convs reflect instead of zero-padding; done per item of a batch by
`SameConv1d`, so batching stays exact), ``dur_predictor_layer_norm=False`` (its predictor has no LayerNorms),
``speaker_vector_dim`` (a speaker embedding vector concatenated as is, optionally L2-normalised, instead of an id),
``conv_post_bias``, and multi-codebook input: ``num_codebooks`` units per frame (e.g. k-means of several SSL layers)
embedded at rows ``unit_offset + codebook * codebook_size + unit`` and pooled over codebooks (``pooling`` "sum" or
"attention": softmax weights from a 2-layer MLP); speechbrain reserves row 0 for padding (``unit_offset=1``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from textless.errors import ConfigError

LRELU_SLOPE = 0.1

_DEFAULT_DUR_PARAMS = {"encoder_embed_dim": 128, "var_pred_hidden_dim": 128, "var_pred_kernel_size": 3,
                       "var_pred_dropout": 0.5}


@dataclass
class UnitHiFiGANConfig:
    """Hyper-parameters; field names are fairseq's ``config.json`` keys, so a real config maps 1:1.

    ``model_in_dim`` (conv_pre input channels) defaults to ``embedding_dim`` (+ ``embedding_dim`` with ``multispkr``,
    + 1 with ``f0``, + ``embedding_dim`` with ``f0`` and ``f0_quant_num_bin``); with ``f0`` the f0 conditioning has
    ``model_in_dim - embedding_dim - speaker dim`` channels (`f0_channels`: 1 for a raw/normalised F0 track, more for
    e.g. F0-quantiser embeddings). ``f0_quant_num_bin > 0`` (fairseq's quantised-F0 variant): the f0 input is
    integer bins in ``[0, f0_quant_num_bin)``, embedded by ``f0_quant_embed`` into ``embedding_dim`` channels.
    ``duration_predictor`` is True when fairseq's ``dur_predictor_params`` is present. ``code_hop_size`` is the
    number of output samples per unit frame (= prod(upsample_rates): 320 for 50 Hz units at 16 kHz, 640 for 25 Hz).
    Keys of a fairseq config that do not shape the generator (data options such as ``f0_stats``, ``segment_size``)
    are kept in ``extra`` and written back by `to_dict`.
    """

    num_embeddings: int = 100
    embedding_dim: int = 128
    model_in_dim: int | None = None
    upsample_rates: list = field(default_factory=lambda: [5, 4, 4, 2, 2])
    upsample_kernel_sizes: list = field(default_factory=lambda: [11, 8, 8, 4, 4])
    upsample_initial_channel: int = 512
    resblock: str = "1"
    resblock_kernel_sizes: list = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    multispkr: bool = False
    num_speakers: int = 0
    embedder_params: dict | None = None  # fairseq: speaker given as a d-vector -> spkr = Linear(embedder_dim, E)
    embedder_dim: int = 256
    f0: bool = False
    f0_quant_num_bin: int = 0             # fairseq: > 0 -> f0 given as bins, f0_quant_embed = Embedding(n, E)
    f0_before_speaker: bool = False       # conv_pre input order: units, f0, speaker (textlesslib) vs units, speaker, f0
    duration_predictor: bool = False
    dur_predictor_params: dict = field(default_factory=lambda: dict(_DEFAULT_DUR_PARAMS))
    sampling_rate: int = 16000
    code_hop_size: int | None = None
    # speechbrain variants (see the module docstring); the defaults are fairseq's
    padding_mode: str = "zeros"          # "zeros" | "reflect"
    dur_predictor_layer_norm: bool = True
    speaker_vector_dim: int | None = None  # speaker given as a raw vector of this size (concatenated)
    normalize_speaker: bool = False        # L2-normalise that vector first
    conv_post_bias: bool = True
    num_codebooks: int = 1
    unit_offset: int = 0
    pooling: str = "none"                # "none" | "sum" | "attention" (over codebooks)
    attn_dim: int = 128
    speakers: list | None = None         # optional speaker names, index = speaker id (set by training)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.upsample_rates = [int(u) for u in self.upsample_rates]
        self.upsample_kernel_sizes = [int(k) for k in self.upsample_kernel_sizes]
        self.resblock_kernel_sizes = [int(k) for k in self.resblock_kernel_sizes]
        self.resblock_dilation_sizes = [[int(d) for d in ds] for ds in self.resblock_dilation_sizes]
        self.resblock = str(self.resblock)
        self.dur_predictor_params = {**_DEFAULT_DUR_PARAMS, **(self.dur_predictor_params or {})}
        if self.model_in_dim is None:
            f0_dim = (self.embedding_dim if self.f0_quant_num_bin > 0 else 1) if self.f0 else 0
            self.model_in_dim = self.embedding_dim + self.speaker_dim + f0_dim
        hop = math.prod(self.upsample_rates)
        if self.code_hop_size is None:
            self.code_hop_size = hop
        self.validate()

    @property
    def speaker_dim(self) -> int:
        """Channels the speaker conditioning adds (fairseq: embedding_dim when multispkr; a raw vector's size)."""
        if not self.multispkr:
            return 0
        return self.speaker_vector_dim if self.speaker_vector_dim is not None else self.embedding_dim

    @property
    def speaker_input(self) -> str:
        """What a speaker is at the input: "id" (embedding table), "dvector" (Linear) or "vector" (as is)."""
        if self.speaker_vector_dim is not None:
            return "vector"
        return "dvector" if self.embedder_params is not None else "id"

    @property
    def codebook_size(self) -> int:
        """Units per codebook (the k of the k-means): unit ids are in [0, codebook_size)."""
        return (self.num_embeddings - self.unit_offset) // self.num_codebooks

    @property
    def f0_channels(self) -> int:
        return self.model_in_dim - self.embedding_dim - self.speaker_dim

    @property
    def hop(self) -> int:
        """Output samples per input frame = prod(upsample_rates)."""
        return math.prod(self.upsample_rates)

    def validate(self) -> None:
        if self.resblock != "1":
            raise ConfigError(f"vocoder resblock type {self.resblock!r} is not supported (fairseq has only '1')")
        if self.padding_mode not in ("zeros", "reflect"):
            raise ConfigError(f"padding_mode must be 'zeros' or 'reflect', got {self.padding_mode!r}")
        if self.pooling not in ("none", "sum", "attention"):
            raise ConfigError(f"pooling must be 'none', 'sum' or 'attention', got {self.pooling!r}")
        if self.num_codebooks < 1 or (self.num_codebooks > 1 and self.pooling == "none"):
            raise ConfigError(f"{self.num_codebooks} codebooks need pooling 'sum' or 'attention'")
        if self.unit_offset < 0 or self.codebook_size < 1 or (
                self.num_embeddings - self.unit_offset) % self.num_codebooks:
            raise ConfigError(f"num_embeddings {self.num_embeddings} - unit_offset {self.unit_offset} must be a "
                              f"positive multiple of num_codebooks {self.num_codebooks}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ConfigError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ConfigError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if u < 1 or k < u or (k - u) % 2:
                raise ConfigError(f"upsample kernel {k} with rate {u}: need kernel >= rate and an even difference "
                                  f"(else the output is not rate x input long)")
        if any(k % 2 == 0 for k in self.resblock_kernel_sizes):
            raise ConfigError("resblock_kernel_sizes must be odd ('same' padding)")
        if self.dur_predictor_params["var_pred_kernel_size"] % 2 == 0:
            raise ConfigError("dur_predictor_params.var_pred_kernel_size must be odd")
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ConfigError("upsample_initial_channel must be divisible by 2 ** len(upsample_rates)")
        if self.code_hop_size != self.hop:
            raise ConfigError(f"code_hop_size {self.code_hop_size} != prod(upsample_rates) {self.hop}")
        if self.multispkr and self.speaker_input == "id" and self.num_speakers < 1:
            raise ConfigError("multispkr needs num_speakers >= 1")
        if self.speakers is not None and (not self.multispkr or len(self.speakers) != self.num_speakers):
            raise ConfigError(f"speakers names ({len(self.speakers)}) need multispkr with num_speakers equal to "
                              f"their number ({self.num_speakers})")
        if self.f0 and self.f0_quant_num_bin > 0 and self.f0_channels != self.embedding_dim:
            raise ConfigError(f"quantised f0 ({self.f0_quant_num_bin} bins) adds embedding_dim {self.embedding_dim} "
                              f"channels, but model_in_dim {self.model_in_dim} leaves {self.f0_channels}")
        if self.f0 and self.f0_channels < 1:
            raise ConfigError(f"model_in_dim {self.model_in_dim} leaves no channel for f0")
        if not self.f0 and self.f0_channels != 0:
            raise ConfigError(f"model_in_dim {self.model_in_dim} != embedding_dim + speaker channels "
                              f"({self.embedding_dim + self.speaker_dim}) and f0 is off")

    @classmethod
    def from_fairseq_config(cls, cfg: dict) -> UnitHiFiGANConfig:
        """A fairseq CodeHiFiGAN ``config.json`` dict -> config (unknown keys go to ``extra``)."""
        names = {f.name for f in fields(cls)} - {"extra", "duration_predictor"}
        known = {k: v for k, v in cfg.items() if k in names}
        extra = {k: v for k, v in cfg.items() if k not in names and k != "duration_predictor"}
        dur = cfg.get("dur_predictor_params")
        known["duration_predictor"] = bool(dur) or bool(cfg.get("duration_predictor", False))
        # the released F0 vocoders (speech-resynthesis, textlesslib) put f0 before the speaker at conv_pre's input
        known.setdefault("f0_before_speaker", bool(cfg.get("f0")))
        if not dur:
            known.pop("dur_predictor_params", None)
        if "num_speakers" not in known and cfg.get("multispkr") and not cfg.get("embedder_params"):
            known["num_speakers"] = 200  # fairseq's default
        return cls(**known, extra=extra)

    def to_dict(self) -> dict:
        """JSON-able dict in fairseq's key layout (``dur_predictor_params`` only with a duration predictor)."""
        d = asdict(self)
        extra = d.pop("extra")
        if not d.pop("duration_predictor"):
            d.pop("dur_predictor_params")
        return {**extra, **d}

    @classmethod
    def from_dict(cls, d: dict) -> UnitHiFiGANConfig:
        """Inverse of `to_dict`."""
        return cls.from_fairseq_config(d)


# ------------------------------------------------------------------------------------------------------- layers
def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded time steps: x [B, C, T], mask [B, T] bool (None = all valid)."""
    return x if mask is None else x * mask.unsqueeze(1).to(x.dtype)


def _length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def _reflect_index(size: int, pad: int, lengths: torch.Tensor) -> torch.Tensor:
    """int64 [B, size + 2 pad]: for padded position t (t - pad in the item's frame) the source frame when item b's
    valid frames [0, lengths[b]) are reflection-padded by `pad` on both sides (torch's "reflect": edge not repeated)."""
    t = torch.arange(-pad, size + pad, device=lengths.device)[None, :]
    last = (lengths - 1)[:, None]
    idx = torch.where(t < 0, -t, t)
    idx = torch.where(idx > last, 2 * last - idx, idx)
    return idx.clamp(0, max(size - 1, 0))


class SameConv1d(nn.Conv1d):
    """Stride-1 Conv1d whose output has the input's length, zero- or reflection-padded (``padding_mode`` "zeros" /
    "reflect") at each item's own edges: x [B, C, T] with lengths [B] (None = all T) -> [B, C', T]. Positions past an
    item's length are not masked here (callers mask). Reflection needs lengths > padding (speechbrain's rule)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, bias: bool = True,
                 padding_mode: str = "zeros"):
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=bias,
                         padding=pad if padding_mode == "zeros" else 0)
        self.same_pad = pad
        self.reflect = padding_mode == "reflect"

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if not self.reflect or self.same_pad == 0:
            return super().forward(x)
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[2], device=x.device)
        if bool((lengths <= self.same_pad).any()):
            raise ValueError(f"reflection padding by {self.same_pad} needs more than {self.same_pad} frames per item, "
                             f"got lengths {lengths.tolist()}")
        idx = _reflect_index(x.shape[2], self.same_pad, lengths)
        return super().forward(x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1)))


class ResBlock(nn.Module):
    """HiFi-GAN residual block type "1": pairs (dilated conv, conv) with leaky ReLUs and a residual per pair."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], padding_mode: str = "zeros"):
        super().__init__()
        self.convs1 = nn.ModuleList(SameConv1d(channels, channels, kernel_size, dilation=d, padding_mode=padding_mode)
                                    for d in dilations)
        self.convs2 = nn.ModuleList(SameConv1d(channels, channels, kernel_size, padding_mode=padding_mode)
                                    for _ in dilations)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = _masked(c1(F.leaky_relu(x, LRELU_SLOPE), lengths), mask)
            xt = _masked(c2(F.leaky_relu(xt, LRELU_SLOPE), lengths), mask)
            x = x + xt
        return x


class VariancePredictor(nn.Module):
    """FastSpeech2 variance predictor (fairseq ``fastspeech2.VariancePredictor``), used for log(1 + duration).

    x [B, L, E] -> (conv -> ReLU -> LayerNorm -> dropout) x 2 -> Linear -> [B, L]. Masked like the generator.
    speechbrain's has no LayerNorms (``layer_norm=False``) and reflection-padded convs.
    """

    def __init__(self, encoder_embed_dim: int, var_pred_hidden_dim: int, var_pred_kernel_size: int,
                 var_pred_dropout: float, layer_norm: bool = True, padding_mode: str = "zeros", **_):
        super().__init__()
        k = var_pred_kernel_size
        # fairseq hard-codes padding=1 for conv2; identical for the kernel size 3 every config uses.
        self.conv1 = nn.Sequential(SameConv1d(encoder_embed_dim, var_pred_hidden_dim, k, padding_mode=padding_mode),
                                   nn.ReLU())
        self.conv2 = nn.Sequential(SameConv1d(var_pred_hidden_dim, var_pred_hidden_dim, k, padding_mode=padding_mode),
                                   nn.ReLU())
        self.ln1 = nn.LayerNorm(var_pred_hidden_dim) if layer_norm else nn.Identity()
        self.ln2 = nn.LayerNorm(var_pred_hidden_dim) if layer_norm else nn.Identity()
        self.proj = nn.Linear(var_pred_hidden_dim, 1)
        self.dropout = var_pred_dropout

    def _conv(self, conv: nn.Sequential, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """[B, L, C] -> [B, L, C']: conv (+ ReLU) over the masked input."""
        lengths = None if mask is None else mask.sum(1)
        return conv[1](conv[0](_masked(x.transpose(1, 2), mask), lengths)).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = F.dropout(self.ln1(self._conv(self.conv1, x, mask)), self.dropout, self.training)
        x = F.dropout(self.ln2(self._conv(self.conv2, x, mask)), self.dropout, self.training)
        return self.proj(x).squeeze(2)


# ---------------------------------------------------------------------------------------------------- generator
class UnitHiFiGAN(nn.Module):
    """The unit HiFi-GAN generator. Built without weight norm (inference form); `apply_weight_norm` for training."""

    def __init__(self, config: UnitHiFiGANConfig):
        super().__init__()
        self.config = c = config
        ch = c.upsample_initial_channel
        pad = c.padding_mode
        self.dict = nn.Embedding(c.num_embeddings, c.embedding_dim)
        if c.pooling == "attention":
            self.attn_pooling = nn.Sequential(nn.Linear(c.embedding_dim, c.attn_dim), nn.ReLU(),
                                              nn.Linear(c.attn_dim, 1, bias=False))
        if c.multispkr and c.speaker_input == "id":
            self.spkr = nn.Embedding(c.num_speakers, c.embedding_dim)
        elif c.multispkr and c.speaker_input == "dvector":
            self.spkr = nn.Linear(c.embedder_dim, c.embedding_dim)
        if c.f0 and c.f0_quant_num_bin > 0:
            self.f0_quant_embed = nn.Embedding(c.f0_quant_num_bin, c.embedding_dim)
        self.dur_predictor = (VariancePredictor(**c.dur_predictor_params, layer_norm=c.dur_predictor_layer_norm,
                                                padding_mode=pad) if c.duration_predictor else None)
        self.conv_pre = SameConv1d(c.model_in_dim, ch, 7, padding_mode=pad)
        self.ups = nn.ModuleList(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2)
                                 for i, (u, k) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)))
        self.resblocks = nn.ModuleList(ResBlock(ch // 2 ** (i + 1), k, d, pad) for i in range(len(self.ups))
                                       for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes))
        self.conv_post = SameConv1d(ch // 2 ** len(self.ups), 1, 7, bias=c.conv_post_bias, padding_mode=pad)
        self._init_weights()

    def _init_weights(self):
        # fairseq/HiFi-GAN: N(0, 0.01) for the upsampling / resblock / post convs (conv_pre keeps torch's default).
        for m in [*self.ups, *self.resblocks.modules(), self.conv_post]:
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.normal_(m.weight, 0.0, 0.01)

    @property
    def hop(self) -> int:
        return self.config.hop

    # --------------------------------------------------------------------------------------------- conditioning
    def _check_units(self, units: torch.Tensor, mask: torch.Tensor | None) -> None:
        c = self.config
        if units.dim() != (2 if c.num_codebooks == 1 else 3) or (c.num_codebooks > 1 and
                                                                  units.shape[2] != c.num_codebooks):
            want = "[B, L]" if c.num_codebooks == 1 else f"[B, L, {c.num_codebooks}]"
            raise ValueError(f"units must be {want} for this vocoder, got shape {tuple(units.shape)}")
        valid = units if mask is None else units[mask]
        if valid.numel() and (valid.min() < 0 or valid.max() >= c.codebook_size):
            raise ValueError(f"unit ids must be in [0, {c.codebook_size}), got "
                             f"[{int(valid.min())}, {int(valid.max())}]")

    def embed_units(self, units: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit ids [B, L] (or [B, L, C] codebooks) -> embeddings [B, L, E] (pooled over codebooks)."""
        c = self.config
        self._check_units(units, mask)
        if mask is not None:
            units = units.masked_fill(~(mask if units.dim() == 2 else mask[..., None]), 0)
        if c.num_codebooks == 1 and units.dim() == 2:
            units = units[..., None]
        offsets = c.unit_offset + c.codebook_size * torch.arange(units.shape[2], device=units.device)
        emb = self.dict(units + offsets)  # [B, L, C, E]
        if c.pooling == "attention":
            emb = emb * torch.softmax(self.attn_pooling(emb), dim=2)
        return emb.sum(2)

    @staticmethod
    def _repeat_to(signal: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, C, L'] -> [B, C, frames] by repeating each step frames // L' times (fairseq's `_upsample`)."""
        if frames % signal.shape[2]:
            raise ValueError(f"conditioning of length {signal.shape[2]} does not divide {frames} frames")
        return signal.repeat_interleave(frames // signal.shape[2], dim=2)

    def _speaker(self, speakers: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Speaker conditioning [B, speaker_dim] from ids [B] or vectors [B, D]."""
        c = self.config
        if speakers is None:
            raise ValueError("this vocoder is multi-speaker: pass speakers")
        if c.speaker_input == "id":
            return self.spkr(speakers.reshape(-1))
        vectors = speakers.reshape(batch, -1).to(self.dict.weight.dtype)
        if c.speaker_input == "dvector":
            return self.spkr(vectors)
        if vectors.shape[1] != c.speaker_vector_dim:
            raise ValueError(f"speaker vectors must have {c.speaker_vector_dim} dims, got {vectors.shape[1]}")
        return F.normalize(vectors, dim=1) if c.normalize_speaker else vectors

    def _inputs(self, units, mask, speakers, f0) -> torch.Tensor:
        c = self.config
        x = self.embed_units(units, mask).transpose(1, 2)  # [B, E, L]
        speaker = f0_part = None
        if c.multispkr:
            speaker = self._speaker(speakers, units.shape[0]).unsqueeze(2).expand(-1, -1, units.shape[1])
        if c.f0:
            if f0 is None:
                raise ValueError("this vocoder is conditioned on f0: pass f0")
            if c.f0_quant_num_bin > 0:  # bins [B, L'] (or [B, 1, L']) -> [B, E, L'] (padding holds bin 0)
                f0 = f0[:, 0] if f0.dim() == 3 and f0.shape[1] == 1 else f0
                bins = f0.long()
                if bins.dim() != 2 or not torch.equal(bins.to(f0.dtype), f0):
                    raise ValueError(f"this vocoder takes quantised f0: integer bins [B, L'], got {f0.dtype} "
                                     f"{tuple(f0.shape)}")
                if bins.min() < 0 or bins.max() >= c.f0_quant_num_bin:
                    raise ValueError(f"f0 bins must be in [0, {c.f0_quant_num_bin}), got {int(bins.min())}.."
                                     f"{int(bins.max())}")
                f0 = self.f0_quant_embed(bins).transpose(1, 2)
            f0 = f0.to(x.dtype)
            f0 = f0.unsqueeze(1) if f0.dim() == 2 else f0
            if f0.shape[1] != c.f0_channels:
                raise ValueError(f"f0 has {f0.shape[1]} channels, the vocoder expects {c.f0_channels}")
            f0_part = self._repeat_to(f0, units.shape[1])
        conditions = [f0_part, speaker] if c.f0_before_speaker else [speaker, f0_part]
        parts = [x] + [part for part in conditions if part is not None]
        return _masked(torch.cat(parts, dim=1), mask)

    # ------------------------------------------------------------------------------------------------- forward
    def forward(self, units: torch.Tensor, unit_mask: torch.Tensor | None = None,
                speakers: torch.Tensor | None = None, f0: torch.Tensor | None = None) -> torch.Tensor:
        """Frame-level units -> waveform.

        units: int64 [B, L] unit ids per frame (already duration-expanded; [B, L, C] with C codebooks),
        right-padded; unit_mask: bool [B, L], True on valid frames (a prefix of each row; None = all valid);
        speakers: int64 [B] speaker ids (float [B, D] vectors for "dvector" / "vector" speaker input), multispkr only;
        f0: float [B, L'] or [B, C, L'] with L % L' == 0 (repeated L // L' times, as fairseq), f0 models only;
            integer bins [B, L'] (as floats or ints) for quantised-f0 models.
        Returns float [B, 1, L * hop] samples at ``sampling_rate`` Hz in [-1, 1]; row b is valid for its first
        len_b * hop samples (the rest is zero-conditioned padding).
        """
        lengths = None
        if unit_mask is not None:
            lengths = unit_mask.sum(1)
            if not torch.equal(unit_mask, _length_mask(lengths, units.shape[1])):
                raise ValueError("unit_mask must mark a prefix of each row (right padding)")
        mask = unit_mask
        x = _masked(self.conv_pre(self._inputs(units, mask, speakers, f0), lengths), mask)
        n = len(self.config.resblock_kernel_sizes)
        for i, (up, u) in enumerate(zip(self.ups, self.config.upsample_rates)):
            if lengths is not None:
                lengths = lengths * u
                mask = _length_mask(lengths, x.shape[2] * u)
            x = _masked(up(F.leaky_relu(x, LRELU_SLOPE)), mask)
            x = sum(self.resblocks[i * n + j](x, mask, lengths) for j in range(n)) / n
        x = torch.tanh(self.conv_post(F.leaky_relu(x), lengths))  # default slope 0.01 here, as fairseq
        return _masked(x, mask)

    def log_durations(self, units: torch.Tensor, unit_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The duration predictor's output d = log(1 + duration) [B, L] for deduplicated units [B, L] (differentiable;
        the training target)."""
        if self.dur_predictor is None:
            raise ValueError("this vocoder has no duration predictor")
        return self.dur_predictor(self.embed_units(units, unit_mask), unit_mask)

    @torch.no_grad()
    def predict_durations(self, units: torch.Tensor, unit_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Deduplicated units int64 [B, L] (+ bool mask) -> durations int64 [B, L] in frames (0 on padding).

        As fairseq's CodeGenerator: the predictor sees the unit embeddings ``dict(units)`` (no speaker / f0),
        outputs d = log(1 + duration), and duration = clamp(torch.round(exp(d) - 1), min=1) (round half to even).
        """
        dur = torch.clamp(torch.round(torch.exp(self.log_durations(units, unit_mask)) - 1).long(), min=1)
        return dur if unit_mask is None else dur.masked_fill(~unit_mask, 0)

    # --------------------------------------------------------------------------------------------- weight norm
    def _wn_modules(self):
        yield self.conv_pre
        yield from self.ups
        for rb in self.resblocks:
            yield from rb.convs1
            yield from rb.convs2
        yield self.conv_post

    def apply_weight_norm(self) -> UnitHiFiGAN:
        """Add weight normalisation (torch parametrizations, dim 0) to every generator conv, as fairseq trains."""
        for m in self._wn_modules():
            nn.utils.parametrizations.weight_norm(m)
        return self

    def remove_weight_norm(self) -> UnitHiFiGAN:
        """Fold the weight norm back into plain ``weight`` tensors (no-op where there is none)."""
        for m in self._wn_modules():
            if nn.utils.parametrize.is_parametrized(m, "weight"):
                nn.utils.parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        return self


def fold_weight_norm(state_dict: dict[str, torch.Tensor], dim: int = 0) -> dict[str, torch.Tensor]:
    """Replace weight-norm pairs by plain weights: ``X.weight_g`` + ``X.weight_v`` (fairseq / old torch
    ``weight_norm``) or ``X.parametrizations.weight.original0/1`` (torch parametrizations) -> ``X.weight`` =
    g * v / ||v||, the norm taken over every dim but `dim` (torch's default 0, which fairseq uses for convs and
    transposed convs alike). Other entries are returned unchanged (a new dict; tensors are not copied)."""
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        for g_suffix, v_suffix in ((".weight_g", ".weight_v"),
                                   (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if key.endswith(g_suffix):
                pairs.setdefault(key[: -len(g_suffix)], {})["g"] = value
                break
            if key.endswith(v_suffix):
                pairs.setdefault(key[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value
    for prefix, p in pairs.items():
        if set(p) != {"g", "v"}:
            raise KeyError(f"{prefix}: weight norm needs both g and v, found only {sorted(p)}")
        v = p["v"].float()
        other = [d for d in range(v.dim()) if d != dim]
        out[f"{prefix}.weight"] = (v * (p["g"].float() / v.norm(dim=other, keepdim=True))).to(p["v"].dtype)
    return out


def receptive_field_frames(config: UnitHiFiGANConfig) -> int:
    """Frames of context each side that determine every output sample of a frame (generator, not the predictor).

    Computed exactly by walking back from one output sample through conv_post, each stage's resblocks (the widest
    branch: sum over pairs of (d_n + 1) * (k - 1) / 2 samples), each transposed conv (output t reads inputs
    ceil((t + p - k + 1) / u) .. floor((t + p) / u)) and conv_pre, taking the worst case over the hop samples of a
    frame. Windowed synthesis with at least this much real context on both sides equals whole synthesis.
    """
    stage_reach = [max(sum((d + 1) * (k - 1) // 2 for d in ds) for k, ds in
                       zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))] * len(config.upsample_rates)
    worst = 0
    for t in range(config.hop):  # output samples of frame 0
        lo, hi = t - 3, t + 3  # conv_post
        for u, k, reach in reversed(list(zip(config.upsample_rates, config.upsample_kernel_sizes, stage_reach))):
            lo, hi = lo - reach, hi + reach
            p = (k - u) // 2
            lo, hi = -((-(lo + p - k + 1)) // u), (hi + p) // u
        lo, hi = lo - 3, hi + 3  # conv_pre
        worst = max(worst, -lo, hi)
    return worst
