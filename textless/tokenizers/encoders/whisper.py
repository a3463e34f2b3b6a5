"""Whisper encoder features: waveform -> log-mel -> Whisper encoder block L, at 50 Hz.

Whisper's encoder only accepts a fixed 30 s window (3000 log-mel frames = ``max_source_positions`` x the conv
strides) and has no attention mask. Features for a shorter utterance are taken the way they usually are (Hugging
Face ``WhisperFeatureExtractor`` + encoder, openai-whisper's ``pad_or_trim``): the waveform is zero-padded to 30 s,
its log-mel is computed (HF's ``_torch_extract_fbank_features`` recipe: Hann-window STFT, n_fft 400, hop 160,
Slaney mel filters, log10, clamp to max - 8, (x + 4) / 4, per utterance), the encoder runs on all 3000 frames, and
the first ``ceil(mel_frames / 2)`` outputs are kept, with ``mel_frames = ceil(T / 160)`` (the frames HF's
``return_attention_mask`` marks as real). So ``num_frames(T) = ceil(T / 320)`` for 1 <= T <= 480000 samples at 16 kHz;
frame k covers roughly samples [320 k, 320 (k + 1)). The padded tail influences the kept frames (as in every Whisper
feature pipeline), but since each item is padded to 30 s on its own, a batch gives exactly the features of its
items encoded one by one. Longer inputs raise `TextlessError`: use `chunking.encode_long`.

Layer L = ``hidden_states[L]`` of the Hugging Face encoder (1-based block outputs, 0 = conv + positions); Whisper's
HF encoder ties ``hidden_states[num_layers]`` to ``last_hidden_state``, which includes the final
``encoder.layer_norm``, so layer L = num_layers gets that layer norm (the usual "Whisper encoder output") and
L < num_layers does not. Only blocks 1..L are run.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PretrainedConfig, WhisperFeatureExtractor, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from textless.errors import ConfigError, TextlessError
from textless.tokenizers.encoders.base import (
    SpeechEncoder,
    autocast_context,
    check_batch,
    check_dtype,
    check_layer,
    dtype_name,
    frame_mask,
)

__all__ = ["WHISPER_ARCHITECTURES", "WhisperFeatureEncoder", "load_hf_whisper", "whisper_log_mel"]

LOG_MEL_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below the per-utterance maximum


def whisper_log_mel(wavs: Tensor, mel_filters: Tensor, window: Tensor, hop_length: int) -> Tensor:
    """Whisper log-mel of each row: wavs float32 [B, N] -> [B, n_mels, N // hop_length].

    Same recipe as transformers' ``WhisperFeatureExtractor._torch_extract_fbank_features`` (centred STFT, last frame
    dropped, power spectrum, mel_filters [n_freq, n_mels], log10 floored at 1e-10, clamped to max - 8 per item,
    then (x + 4) / 4).
    """
    stft = torch.stft(wavs, window.shape[0], hop_length, window=window, return_complex=True)
    power = (stft[..., :-1].abs() ** 2).contiguous()
    mel = mel_filters.T @ power
    log_spec = torch.clamp(mel, min=LOG_MEL_FLOOR).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0


def _whisper_encoder(model: torch.nn.Module) -> WhisperEncoder:
    """The ``WhisperEncoder`` itself, or the encoder of a ``WhisperModel`` / ``WhisperForConditionalGeneration``."""
    if isinstance(model, WhisperEncoder):
        return model
    encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
    if not isinstance(encoder, WhisperEncoder):
        raise TypeError(f"expected a WhisperEncoder, WhisperModel or WhisperForConditionalGeneration, "
                        f"got {type(model).__name__}")
    return encoder


class WhisperFeatureEncoder(SpeechEncoder):
    """Block-L features of a Whisper encoder (see the module docstring for padding, frame count and layers).

    Args:
        model: a ``WhisperEncoder`` (or a ``WhisperModel`` / ``WhisperForConditionalGeneration``: its encoder is
            taken, the decoder is not kept).
        layer: 1-based block output = HF ``hidden_states[L]`` (0 = before the first block); None = the last block
            (with the final layer norm, = ``last_hidden_state``).
        source: recorded by `identity`.
        dtype: None / float32, or float16 / bfloat16 (or their names) for autocast; features are float32.
        feature_extractor: its ``sampling_rate``, ``n_fft``, ``hop_length`` and ``mel_filters`` define the log-mel;
            default ``WhisperFeatureExtractor(feature_size=config.num_mel_bins)``.
    """

    def __init__(self, model: torch.nn.Module, layer: int | None = None, source: str = "",
                 dtype: torch.dtype | None = None, feature_extractor: WhisperFeatureExtractor | None = None):
        super().__init__()
        self.encoder = _whisper_encoder(model).eval()
        config = self.encoder.config
        fe = feature_extractor or WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        if fe.feature_size != config.num_mel_bins:
            raise ConfigError(f"the feature extractor makes {fe.feature_size} mel bins but the Whisper encoder "
                              f"expects {config.num_mel_bins}")
        self.num_layers = len(self.encoder.layers)
        self.layer = check_layer(self.num_layers if layer is None else layer, self.num_layers, "whisper")
        self.source = str(source)
        self.dtype = check_dtype(dtype)
        self.hop_length = int(fe.hop_length)
        self.downsample = int(self.encoder.conv1.stride[0] * self.encoder.conv2.stride[0])
        self.mel_frames = int(config.max_source_positions) * self.downsample  # 3000
        self.max_samples = self.mel_frames * self.hop_length  # 480000 = 30 s
        self.sample_rate = int(fe.sampling_rate)
        self.frame_rate = self.sample_rate / (self.hop_length * self.downsample)
        self.dim = int(config.d_model)
        self.register_buffer("mel_filters", torch.as_tensor(fe.mel_filters, dtype=torch.float32), persistent=False)
        self.register_buffer("window", torch.hann_window(int(fe.n_fft)), persistent=False)

    def train(self, mode: bool = True) -> WhisperFeatureEncoder:
        """Inference-only: the encoder stays in eval mode."""
        return super().train(False)

    def num_frames(self, num_samples: int) -> int:
        """``ceil(ceil(T / hop) / 2)`` = ceil(T / 320) at 16 kHz, for 1 <= T <= 30 s; otherwise `TextlessError`."""
        num_samples = int(num_samples)
        if not 1 <= num_samples <= self.max_samples:
            raise TextlessError(self._bad_length(num_samples))
        return math.ceil(math.ceil(num_samples / self.hop_length) / self.downsample)

    def _bad_length(self, num_samples: int) -> str:
        if num_samples < 1:
            return "the Whisper encoder needs at least 1 sample"
        return (f"{num_samples} samples ({num_samples / self.sample_rate:.2f} s) is longer than the Whisper encoder's "
                f"{self.max_samples / self.sample_rate:g} s window: encode it with "
                f"textless.tokenizers.encoders.chunking.encode_long")

    def _feature_lengths(self, lengths: Tensor) -> Tensor:
        bad = (lengths < 1) | (lengths > self.max_samples)
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            raise TextlessError(f"batch item {index}: {self._bad_length(int(lengths[index]))}")
        mel = torch.div(lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor")
        return torch.div(mel + self.downsample - 1, self.downsample, rounding_mode="floor")

    def forward(self, wavs: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wavs float32 [B, T] (T <= 30 s), lengths int64 [B] -> (features float32 [B, F, D], lengths int64 [B])."""
        wavs, lengths = check_batch(wavs, lengths, self.device)
        feature_lengths = self._feature_lengths(lengths)
        with torch.inference_mode():
            mel = self.log_mel(wavs)
            with autocast_context(self.device, self.dtype, self.force_dtype):
                hidden = self._encode_mel(mel)
            hidden = hidden[:, : int(feature_lengths.max())].float()
            hidden = hidden * frame_mask(feature_lengths, hidden.shape[1])[..., None].to(hidden.dtype)
        return hidden.clone(), feature_lengths.clone()

    def log_mel(self, wavs: Tensor) -> Tensor:
        """[B, T] zero-padded waveforms -> [B, n_mels, 3000]: each padded with zeros to 30 s first."""
        padded = F.pad(wavs, (0, self.max_samples - wavs.shape[1]))
        return whisper_log_mel(padded, self.mel_filters, self.window, self.hop_length)

    def _encode_mel(self, mel: Tensor) -> Tensor:
        """[B, n_mels, 3000] -> [B, 1500, D]: convs, positions, blocks 1..L (+ final layer norm when L = all)."""
        encoder = self.encoder
        hidden = F.gelu(encoder.conv1(mel))
        hidden = F.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + encoder.embed_positions.weight[: hidden.shape[1]]
        for block in encoder.layers[: self.layer]:
            hidden = block(hidden, None)
        return encoder.layer_norm(hidden) if self.layer == self.num_layers else hidden

    def loader_options(self) -> dict:
        """{"dtype"}: what `load_encoder` needs besides source and layer."""
        return {"dtype": dtype_name(self.dtype)}

    def identity(self) -> dict:
        """{"name": "whisper", "source", "layer", "num_layers", "sample_rate", "frame_rate", "dim"}."""
        return {"name": "whisper", "source": self.source, "layer": self.layer, "num_layers": self.num_layers,
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "dim": self.dim}


# ------------------------------------------------------------------------------------------------ loading

WHISPER_ARCHITECTURES: dict[str, type] = {"WhisperEncoder": WhisperEncoder}
"""config ``architectures[0]`` -> class loaded from the directory; anything else loads ``WhisperModel`` (then its
encoder is kept: a ``WhisperForConditionalGeneration`` checkpoint loads into it too)."""


def _load_whisper_encoder(directory: Path, config: PretrainedConfig) -> WhisperEncoder:
    architecture = (getattr(config, "architectures", None) or [""])[0]
    model_class = WHISPER_ARCHITECTURES.get(architecture, WhisperModel)
    model = model_class.from_pretrained(directory, config=config, local_files_only=True, dtype=torch.float32)
    return _whisper_encoder(model)


def load_hf_whisper(directory: Path, config: PretrainedConfig, layer: int | None = None, *,
                    dtype: torch.dtype | None = None) -> WhisperFeatureEncoder:
    """A local Hugging Face Whisper directory (encoder-only, WhisperModel or ForConditionalGeneration)."""
    directory = Path(directory)
    if (directory / "preprocessor_config.json").is_file():
        feature_extractor = WhisperFeatureExtractor.from_pretrained(directory, local_files_only=True)
    else:
        feature_extractor = None
    encoder = _load_whisper_encoder(directory, config)
    return WhisperFeatureEncoder(encoder, layer, source=str(directory), dtype=dtype,
                                 feature_extractor=feature_extractor)
