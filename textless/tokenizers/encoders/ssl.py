"""Self-supervised speech encoders (HuBERT, wav2vec 2.0, WavLM) from Hugging Face modules, with early exit.

Layer convention (fairseq's 1-based ``output_layer``): layer L = the output of transformer block L = Hugging Face
``hidden_states[L]`` (index 0 = after CNN + feature projection + positional conv, before the first block).
Layer 0 is allowed and gives those pre-transformer features (including ``encoder.layer_norm`` for post-LN models,
as in ``hidden_states[0]``). Only blocks 1..L are run, like fairseq's ``output_layer`` (HuBERT-base, 10 s, 2 CPU
cores: layer 6 in 0.57 s vs 0.83 s for all 12 blocks; the CNN is a fixed share of the cost).

The forward pass is written here from the Hugging Face submodules (``feature_extractor.conv_layers``,
``feature_projection``, ``encoder.pos_conv_embed``, ``encoder.layer_norm``, ``encoder.layers``) rather than by
calling ``model(...)``, for the early exit and for exact padding invariance:

* ``feat_extract_norm == "group"`` models (HuBERT-base, wav2vec2-base) normalise each channel of the first conv
  layer over TIME (a GroupNorm with one group per channel), so zero padding would change every frame. That layer
  uses a masked GroupNorm here: mean and variance over each item's valid conv-output frames only.
* padded frames are zeroed before the positional convolution (same as the zero padding the conv sees at the end of
  an unpadded input), and the transformer blocks get an attention mask hiding them (the Hugging Face 4D mask from
  ``create_bidirectional_mask`` for HuBERT / wav2vec2, the 2D key-padding mask for WavLM, which also passes its
  relative ``position_bias`` from block to block);
* output frames beyond ``feature_lengths`` are set to 0.

A batch therefore gives the same features as encoding each item alone (to float rounding, ~1e-6).

Two encoder flavours, chosen by ``config.do_stable_layer_norm``:

* post-LN (False; HuBERT-base, wav2vec2-base): ``encoder.layer_norm`` after the positional conv, before block 1;
* pre-LN "stable layer norm" (True; the large models): ``encoder.layer_norm`` only after the last block. An explicit
  layer L never gets that final layer norm, even for L = num_layers (fairseq parity: its ``output_layer=L`` path never
  applies it; in transformers 5 ``hidden_states[L]`` is the raw block output too). ``layer=None`` is the model's
  final output: the last block followed by ``encoder.layer_norm``, as fairseq's ``extract_features(output_layer=None)``
  and Hugging Face's ``last_hidden_state`` (the identity then records ``layer: None`` and ``final_layer_norm: True``,
  so a bundle rebuilds the same encoder). For post-LN models ``layer=None`` and ``layer=num_layers`` are the same.

Frame count: the conv arithmetic ``n -> floor((n - kernel) / stride) + 1`` over the conv layers, for HuBERT
``floor((T - 400) / 320) + 1`` for T >= 400 samples (50 Hz at 16 kHz); shorter inputs raise `TextlessError`.

``normalize=True`` (fairseq ``task.normalize``, wav2vec2-large style) layer-normalises each waveform over its valid
samples (``F.layer_norm`` over the unpadded part, eps 1e-5, no affine) before the CNN.

Precision: ``dtype=torch.bfloat16 / float16`` (or their names) runs the model under ``torch.autocast`` on the
encoder's device, CUDA or CPU (see `base.autocast_context` for when that pays off on a CPU); the default float32
gives the reference features. Features are returned as float32.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import HubertModel, PretrainedConfig, PreTrainedModel, Wav2Vec2Model, WavLMModel
from transformers.masking_utils import create_bidirectional_mask

from textless.errors import TextlessError
from textless.tokenizers.encoders.base import (
    SpeechEncoder,
    autocast_context,
    check_batch,
    check_dtype,
    check_layer,
    dtype_name,
    frame_mask,
    read_preprocessor_config,
)

__all__ = ["SSL_MODEL_CLASSES", "SSLEncoder", "conv_min_samples", "conv_output_length", "load_hf_ssl"]

WAVEFORM_NORM_EPS = 1e-5
"""eps of the per-utterance waveform layer norm (fairseq: ``F.layer_norm(wav, wav.shape)``)."""

SSL_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "hubert": HubertModel,
    "wav2vec2": Wav2Vec2Model,
    "wavlm": WavLMModel,
}
"""Hugging Face ``model_type`` -> the bare model class loaded from a directory."""


# ------------------------------------------------------------------------------------------------ frame arithmetic


def conv_output_length(num_samples, kernels: Sequence[int], strides: Sequence[int]):
    """Frames after the conv stack (no padding): ``n -> floor((n - k) / s) + 1`` per layer. int or int64 Tensor."""
    n = num_samples
    for kernel, stride in zip(kernels, strides, strict=True):
        n = (n - kernel) // stride + 1
    return n


def conv_min_samples(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Fewest input samples that give one output frame (400 for the HuBERT / wav2vec2 CNN)."""
    n = 1
    for kernel, stride in zip(reversed(kernels), reversed(strides), strict=True):
        n = (n - 1) * stride + kernel
    return n


# ------------------------------------------------------------------------------------------------ padded-batch ops


def masked_layer_norm(wavs: Tensor, lengths: Tensor, eps: float = WAVEFORM_NORM_EPS) -> Tensor:
    """Per-item layer norm over the valid samples: [B, T] -> [B, T] (padding stays 0).

    Equals ``F.layer_norm(wav[:n], (n,), eps=eps)`` for each item (biased variance, no affine).
    """
    mask = frame_mask(lengths, wavs.shape[1]).to(wavs.dtype)
    count = lengths.clamp(min=1).to(wavs.dtype)[:, None]
    mean = (wavs * mask).sum(dim=1, keepdim=True) / count
    centred = (wavs - mean) * mask
    var = (centred * centred).sum(dim=1, keepdim=True) / count
    return centred * torch.rsqrt(var + eps)


def masked_group_norm(x: Tensor, valid: Tensor, norm: nn.GroupNorm) -> Tensor:
    """`norm` with statistics over each item's first valid[b] frames only: x [B, C, F], valid int64 [B] frames.

    Each item's valid part goes through the fused GroupNorm kernel on its own, so the result is bitwise what the
    item gives unbatched (and ~5x faster than masked arithmetic over the padded batch, which is memory-bound at the
    first conv layer's 3.2 kHz frame rate). Frames beyond `valid` keep their (finite) inputs: callers never read them.
    """
    out = x.clone()
    for b, n in enumerate(valid.tolist()):
        out[b, :, :n] = norm(x[b : b + 1, :, :n])[0]
    return out


def run_conv_layer(layer: nn.Module, x: Tensor, valid: Tensor) -> Tensor:
    """One Hugging Face conv feature layer on a padded batch; GroupNorm layers use `masked_group_norm`.

    x: [B, C_in, N] -> [B, C_out, N']; valid: int64 [B] output frames of each item.
    """
    norm = getattr(layer, "layer_norm", None)
    if not isinstance(norm, nn.GroupNorm):
        return layer(x)
    y = layer.conv(x)
    y = norm(y) if bool((valid == y.shape[-1]).all()) else masked_group_norm(y, valid, norm)
    return layer.activation(y)


# ------------------------------------------------------------------------------------------------ transformer blocks


def run_standard_blocks(blocks: Sequence[nn.Module], h: Tensor, valid: Tensor | None, config: PretrainedConfig) -> Tensor:
    """HuBERT / wav2vec2 blocks: ``block(h, attention_mask=4D mask)``; `valid` bool [B, F] (None: no padding)."""
    mask = None if valid is None else create_bidirectional_mask(config=config, inputs_embeds=h, attention_mask=valid)
    for block in blocks:
        h = block(h, attention_mask=mask)
    return h


def run_wavlm_blocks(blocks: Sequence[nn.Module], h: Tensor, valid: Tensor | None, config: PretrainedConfig) -> Tensor:
    """WavLM blocks: 2D key-padding mask, and the relative ``position_bias`` computed by block 1 is passed on.

    HF WavLM hands torch's ``multi_head_attention_forward`` a bool key-padding mask with a float ``attn_mask`` (the
    gated position bias); torch's deprecation warning about the mixed types is silenced here.
    """
    position_bias = None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)
        for block in blocks:
            h, position_bias = block(h, attention_mask=valid, position_bias=position_bias)
    return h


BlockRunner = Callable[[Sequence[nn.Module], Tensor, "Tensor | None", PretrainedConfig], Tensor]

BLOCK_RUNNERS: dict[str, BlockRunner] = {
    "hubert": run_standard_blocks,
    "wav2vec2": run_standard_blocks,
    "wavlm": run_wavlm_blocks,
}
"""``model_type`` -> how its transformer blocks are called (mask format, state passed between blocks)."""


# ------------------------------------------------------------------------------------------------ the encoder


class SSLEncoder(SpeechEncoder):
    """Features of transformer block `layer` of a HuBERT / wav2vec2 / WavLM model (see the module docstring).

    Args:
        model: a bare ``HubertModel``, ``Wav2Vec2Model`` or ``WavLMModel`` (put in eval mode; only blocks 1..layer
            are ever run).
        layer: layer L = the output of transformer block L = HF ``hidden_states[L]`` (fairseq ``output_layer``,
            1-based; 0 = pre-transformer features). None = the model's final output: the last block, followed by
            the final ``encoder.layer_norm`` for pre-LN models (HF ``last_hidden_state``).
        normalize: layer-normalise each waveform over its valid samples first (fairseq ``task.normalize``).
        source: where the model came from (recorded by `identity`; `load_encoder(source, layer)` rebuilds it).
        dtype: None / float32, or float16 / bfloat16 (or their names) for autocast.
        sample_rate: input rate in Hz (16000 for every released model).

    `forward`: wavs float32 [B, T] (zero-padded) at `sample_rate`, lengths int64 [B] -> features float32 [B, F, D]
    (F = frames of the longest item, padded frames 0), feature_lengths int64 [B].
    """

    def __init__(self, model: PreTrainedModel, layer: int | None, normalize: bool = False, source: str = "",
                 dtype: torch.dtype | None = None, sample_rate: int = 16000):
        super().__init__()
        model = getattr(model, "base_model", model)  # e.g. HubertForCTC -> its HubertModel
        config = model.config
        self.model_type = str(config.model_type)
        if self.model_type not in BLOCK_RUNNERS:
            raise TextlessError(f"unsupported self-supervised model type '{self.model_type}' "
                                f"(supported: {', '.join(sorted(BLOCK_RUNNERS))})")
        self.model = model.eval()
        self.num_layers = len(model.encoder.layers)
        self.layer = check_layer(self.num_layers if layer is None else layer, self.num_layers, self.model_type)
        self.normalize = bool(normalize)
        self.source = str(source)
        self.dtype = check_dtype(dtype)
        self.pre_layer_norm = bool(config.do_stable_layer_norm)
        self.final_layer_norm = layer is None and self.pre_layer_norm
        self.kernels = tuple(int(k) for k in config.conv_kernel)
        self.strides = tuple(int(s) for s in config.conv_stride)
        self.min_samples = conv_min_samples(self.kernels, self.strides)
        self.sample_rate = int(sample_rate)
        self.frame_rate = self.sample_rate / math.prod(self.strides)
        self.dim = int(config.hidden_size)
        self._run_blocks = BLOCK_RUNNERS[self.model_type]

    def train(self, mode: bool = True) -> SSLEncoder:
        """Encoders are inference-only: the model stays in eval mode (no dropout) whatever `mode` is."""
        return super().train(False)

    # -------------------------------------------------------------------------------------------- frame counts

    def num_frames(self, num_samples: int) -> int:
        """Exact output frames for `num_samples` samples (HuBERT: floor((T - 400) / 320) + 1); too short -> error."""
        num_samples = int(num_samples)
        if num_samples < self.min_samples:
            raise TextlessError(self._too_short(num_samples))
        return int(conv_output_length(num_samples, self.kernels, self.strides))

    def _too_short(self, num_samples: int) -> str:
        return (f"{num_samples} samples is too short for the {self.model_type} encoder: it needs at least "
                f"{self.min_samples} samples ({1000 * self.min_samples / self.sample_rate:g} ms at "
                f"{self.sample_rate} Hz) for one frame")

    def _feature_lengths(self, lengths: Tensor) -> Tensor:
        short = lengths < self.min_samples
        if bool(short.any()):
            index = int(short.nonzero()[0, 0])
            raise TextlessError(f"batch item {index}: {self._too_short(int(lengths[index]))}")
        return conv_output_length(lengths, self.kernels, self.strides)

    # -------------------------------------------------------------------------------------------- forward

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wavs float32 [B, T] at `sample_rate` Hz, lengths int64 [B] -> (features float32 [B, F, D], int64 [B])."""
        wavs, lengths = check_batch(wavs, lengths, self.device)
        feature_lengths = self._feature_lengths(lengths)
        with torch.inference_mode(), autocast_context(self.device, self.dtype, self.force_dtype):
            features = self._features(wavs, lengths, feature_lengths)
        # clone() outside inference mode: callers get ordinary tensors they may modify in place
        return features.float().clone(), feature_lengths.clone()

    def _features(self, wavs: Tensor, lengths: Tensor, feature_lengths: Tensor) -> Tensor:
        if self.normalize:
            wavs = masked_layer_norm(wavs, lengths)
        extracted = self._conv_features(wavs, lengths).transpose(1, 2)  # [B, F, C]
        hidden = self.model.feature_projection(extracted)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden  # wav2vec2 / WavLM also return the normed input
        valid = frame_mask(feature_lengths, hidden.shape[1])
        padded = not bool(valid.all())
        if padded:
            hidden = hidden * valid[..., None].to(hidden.dtype)
        hidden = self._encoder_input(hidden)
        blocks = self.model.encoder.layers[: self.layer]
        hidden = self._run_blocks(blocks, hidden, valid if padded else None, self.model.config)
        if self.final_layer_norm:
            hidden = self.model.encoder.layer_norm(hidden)
        return hidden * valid[..., None].to(hidden.dtype) if padded else hidden

    def _conv_features(self, wavs: Tensor, lengths: Tensor) -> Tensor:
        """[B, T] -> [B, C, F] through the conv stack; GroupNorm statistics over valid frames only."""
        x = wavs[:, None]
        valid = lengths
        layers = self.model.feature_extractor.conv_layers
        for layer, kernel, stride in zip(layers, self.kernels, self.strides, strict=True):
            valid = (valid - kernel) // stride + 1
            x = run_conv_layer(layer, x, valid)
        return x

    def _encoder_input(self, hidden: Tensor) -> Tensor:
        """Positional conv (+ ``encoder.layer_norm`` for post-LN models): HF ``hidden_states[0]``."""
        encoder = self.model.encoder
        hidden = hidden + encoder.pos_conv_embed(hidden)
        return hidden if self.pre_layer_norm else encoder.layer_norm(hidden)

    def loader_options(self) -> dict:
        """{"normalize", "dtype"}: what `load_encoder` needs besides source and layer."""
        return {"normalize": self.normalize, "dtype": dtype_name(self.dtype)}

    def identity(self) -> dict:
        """{"name": model_type, "source", "layer", "num_layers", "normalize", "sample_rate", "frame_rate", "dim"}."""
        identity = {"name": self.model_type, "source": self.source,
                    "layer": None if self.final_layer_norm else self.layer, "num_layers": self.num_layers,
                    "normalize": self.normalize, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                    "dim": self.dim}
        if self.final_layer_norm:
            identity["final_layer_norm"] = True
        return identity


# ------------------------------------------------------------------------------------------------ loading


def load_hf_ssl(directory: Path, config: PretrainedConfig, layer: int | None = None, *, normalize: bool | None = None,
                dtype: torch.dtype | None = None) -> SSLEncoder:
    """A local Hugging Face HuBERT / wav2vec2 / WavLM directory -> `SSLEncoder` (float32 weights, eval mode).

    `normalize` None reads ``do_normalize`` from ``preprocessor_config.json`` (what the HF feature extractor does),
    False when that file is absent. The sample rate is its ``sampling_rate`` (default 16000).
    """
    model_class = SSL_MODEL_CLASSES[config.model_type]
    model = model_class.from_pretrained(directory, config=config, local_files_only=True, dtype=torch.float32)
    preprocessor = read_preprocessor_config(directory)
    if normalize is None:
        normalize = bool(preprocessor.get("do_normalize", False))
    sample_rate = int(preprocessor.get("sampling_rate", 16000))
    return SSLEncoder(model, layer, normalize=normalize, source=str(directory), dtype=dtype, sample_rate=sample_rate)
