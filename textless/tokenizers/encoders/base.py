"""Speech encoders: waveform -> frame features, the first stage of a speech tokenizer.

Every encoder is a `SpeechEncoder` (a `torch.nn.Module`) with the same batch interface::

    features, feature_lengths = encoder(wavs, lengths)
    # wavs     float32 [B, T]  zero-padded waveforms at `encoder.sample_rate` Hz
    # lengths  int64   [B]     valid samples per item (None: all T)
    # features float32 [B, F, D], frames beyond feature_lengths[b] are 0; feature_lengths int64 [B]

Padding never changes the features of an item: a batch gives the same features as encoding each item alone (up to
float rounding). `num_frames(T)` is the exact frame count for T samples; it raises `TextlessError` when T is too short
for the encoder to produce a frame.

Encoders are built by `textless.tokenizers.encoders.registry.load_encoder(source, layer)`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from textless.audio import resample
from textless.errors import ConfigError, FormatError, TextlessError

logger = logging.getLogger(__name__)

__all__ = [
    "SpeechEncoder",
    "autocast_context",
    "check_batch",
    "check_dtype",
    "check_layer",
    "dtype_name",
    "frame_mask",
    "read_preprocessor_config",
]

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class SpeechEncoder(torch.nn.Module):
    """Base class: a batch of waveforms -> a batch of frame features (see the module docstring for shapes).

    Subclasses set `sample_rate` (Hz of the input waveform), `frame_rate` (Hz of the output frames) and `dim` (D), and
    implement `forward`, `num_frames` and `identity`. `max_samples` is the longest input accepted in one call (None:
    unbounded; Whisper: 30 s), which `chunking.encode_long` respects. `force_dtype`: autocast to a half dtype on a CPU
    without native support for it (otherwise float32 is used there: `effective_dtype`); a runtime choice, not saved.
    """

    sample_rate: int
    frame_rate: float
    dim: int
    max_samples: int | None = None
    force_dtype: bool = False

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`wavs` float32 [B, T], `lengths` int64 [B] samples -> features float32 [B, F, D], lengths int64 [B]."""
        raise NotImplementedError

    def num_frames(self, num_samples: int) -> int:
        """Exact number of output frames for `num_samples` input samples; `TextlessError` if too short."""
        raise NotImplementedError

    def identity(self) -> dict:
        """JSON-able description {"name", "source", "layer", ...} recorded in unit datasets and tokenizer bundles."""
        raise NotImplementedError

    def loader_options(self) -> dict:
        """JSON-able keyword arguments that `load_encoder(source, layer, **options)` needs to rebuild this encoder
        exactly (saved in tokenizer bundles); {} when `source` and `layer` say everything."""
        return {}

    def length_problem(self, num_samples: int) -> str | None:
        """Why a waveform of `num_samples` samples cannot be tokenized (too short for one frame), else None.

        Inputs longer than `max_samples` are fine here: `chunking.encode_long` encodes them window by window.
        """
        try:
            frames = self.num_frames(num_samples if self.max_samples is None else min(num_samples, self.max_samples))
        except TextlessError as e:
            return str(e)
        return None if frames > 0 else f"too short for the encoder ({num_samples} samples give no frame)"

    @property
    def device(self) -> torch.device:
        """Device of the encoder's parameters (or buffers); cpu when it has none."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def encode(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """One utterance: `wav` float [T] at `sample_rate` Hz (None: already `self.sample_rate`) -> features [F, D].

        The waveform is resampled with `textless.audio.resample` when the rates differ. The features are on the
        encoder's device.
        """
        wav = torch.as_tensor(wav)
        if wav.ndim != 1:
            raise ValueError(f"encode() takes one mono waveform [T], got shape {tuple(wav.shape)}")
        if sample_rate is not None:
            wav = resample(wav, sample_rate, self.sample_rate)
        features, lengths = self(wav[None].to(torch.float32))
        return features[0, : int(lengths[0])]


# ------------------------------------------------------------------------------------------------ helpers


def check_batch(wavs: Tensor, lengths: Tensor | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """Validate a padded batch; returns (wavs float32 [B, T'] on `device`, lengths int64 [B]).

    The batch is cut to T' = max(lengths) (extra padding costs nothing then) and samples beyond `lengths` are set to
    zero, so callers passing non-zero padding get the same features.
    """
    if not isinstance(wavs, Tensor) or wavs.ndim != 2 or wavs.shape[0] == 0:
        shape = tuple(wavs.shape) if isinstance(wavs, Tensor) else type(wavs).__name__
        raise ValueError(f"expected a waveform batch [B, T], got {shape}")
    wavs = wavs.to(device=device, dtype=torch.float32)
    batch, total = wavs.shape
    if lengths is None:
        return wavs, torch.full((batch,), total, dtype=torch.long, device=device)
    lengths = torch.as_tensor(lengths).to(device=device, dtype=torch.long)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape [{batch}], got {tuple(lengths.shape)}")
    if bool((lengths > total).any()) or bool((lengths < 0).any()):
        raise ValueError(f"lengths must lie in [0, {total}] (the padded length), got {lengths.tolist()}")
    longest = int(lengths.max())
    wavs = wavs[:, :longest]
    if bool((lengths < longest).any()):
        wavs = wavs * frame_mask(lengths, longest).to(wavs.dtype)
    return wavs, lengths


def frame_mask(lengths: Tensor, size: int) -> Tensor:
    """Bool [B, size]: True at positions < lengths[b]."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def check_layer(layer: Any, num_layers: int, name: str) -> int:
    """`layer` as an int in [0, num_layers], else `ConfigError` naming the model and the valid range."""
    valid = isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer <= num_layers
    if not valid:
        raise ConfigError(f"layer {layer!r} is out of range for {name}: it has {num_layers} transformer blocks, "
                          f"so layer must be an integer in 0..{num_layers} (1-based block output; 0 = before the "
                          f"first block)")
    return layer


_DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """None / float32 (full precision) or float16 / bfloat16 (autocast), as a torch dtype or its name
    ("bfloat16", ...); anything else -> ConfigError."""
    if isinstance(dtype, str) and dtype in _DTYPE_NAMES:
        dtype = _DTYPE_NAMES[dtype]
    if dtype is None or dtype == torch.float32 or dtype in _HALF_DTYPES:
        return dtype
    raise ConfigError(f"dtype must be None, float32, float16 or bfloat16, got {dtype!r}")


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """The JSON-able name of a `check_dtype` result ("bfloat16", ...; None stays None)."""
    return None if dtype is None else str(dtype).removeprefix("torch.")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: AVX512-BF16 or AMX-BF16 (x86, from /proc/cpuinfo), or the Arm
    BF16 extension. Elsewhere torch emulates bf16 matrix products with far slower code."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16", "bf16"))


def effective_dtype(device: torch.device, dtype: torch.dtype | None, force: bool = False) -> torch.dtype | None:
    """The dtype an encoder actually autocasts to on `device`: bfloat16 on a CPU without native bf16 (see
    `cpu_has_native_bf16`) falls back to float32 (None) with a warning, unless `force`; float16 on a CPU likewise
    (no CPU computes it natively for these models)."""
    if device.type == "cpu" and dtype in _HALF_DTYPES and not force:
        native = dtype == torch.bfloat16 and cpu_has_native_bf16()
        if not native:
            _warn_emulated(str(dtype).removeprefix("torch."))
            return None
    return dtype


@functools.cache
def _warn_emulated(name: str) -> None:
    logger.warning(f"this CPU has no native {name} (AVX512-BF16 / AMX for bfloat16): autocast would emulate it, "
                   f"many times slower than float32 (0.3x vs 12x real time measured on an AVX2 machine); encoding in "
                   f"float32 instead (force_dtype=true uses {name} anyway)")


def autocast_context(device: torch.device, dtype: torch.dtype | None, force: bool = False
                     ) -> contextlib.AbstractContextManager:
    """`torch.autocast(device.type, dtype)` for the half dtypes, on CUDA and on the CPU alike; a no-op otherwise.

    On the CPU, bfloat16 pays off where the processor has bf16 matrix instructions (AVX512-BF16 / AMX: HuBERT-base
    runs ~2.3x faster on a 2-core AVX512-BF16 machine, see benchmarks/results/tokenize_cpu.json) and costs 40x the
    time elsewhere, so there it falls back to float32 unless `force` (`effective_dtype`); the labels then differ
    from float32 on a small fraction of frames (measured there too).
    """
    dtype = effective_dtype(device, dtype, force)
    if dtype in _HALF_DTYPES:
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def read_preprocessor_config(directory: str | Path) -> dict:
    """The Hugging Face ``preprocessor_config.json`` of `directory` as a dict ({} when absent)."""
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FormatError(path, f"cannot read the feature extractor config: {e}") from e
