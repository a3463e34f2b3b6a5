"""Features of many utterances: the one place that decides how waveforms go through an encoder.

Used by `SpeechTokenizer.encode_batch`, `textless tokenize` and `textless kmeans`, so the three give the same features
for the same audio:

* an utterance longer than ``chunk_seconds`` (or than the encoder's `max_samples`, Whisper's 30 s) is encoded in
  overlapping windows (`chunking.encode_long`: bounded memory; see there how its features differ);
* the others go through the encoder as one zero-padded batch on a GPU, and one by one on the CPU: batching does not
  make the CPU's matrix products more efficient at these sizes, while a padded batch's first-layer CNN activations
  (512 channels at 3.2 kHz for HuBERT) overflow the caches. Padding never changes the features (`SpeechEncoder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from textless.tokenizers.encoders.base import SpeechEncoder
from textless.tokenizers.encoders.chunking import encode_long

__all__ = ["DEFAULT_CHUNK_SECONDS", "encode_utterances", "longest_whole"]

DEFAULT_CHUNK_SECONDS = 60.0


def longest_whole(encoder: SpeechEncoder, chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> float:
    """Samples up to which a waveform goes through the encoder whole; longer ones are encoded in windows."""
    limit = chunk_seconds * encoder.sample_rate
    return limit if encoder.max_samples is None else min(limit, encoder.max_samples)


def encode_utterances(encoder: SpeechEncoder, wavs: Sequence[Tensor],
                      chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> list[Tensor]:
    """Mono waveforms [T_i] at ``encoder.sample_rate`` -> features float32 [F_i, D] each, on the encoder's device.

    Check each length with ``encoder.length_problem`` first: a waveform too short for one frame raises
    `TextlessError`.
    """
    device = encoder.device
    limit = longest_whole(encoder, chunk_seconds)
    out: list[Tensor | None] = [None] * len(wavs)
    short = [i for i, w in enumerate(wavs) if len(w) <= limit]
    for i in (i for i, w in enumerate(wavs) if len(w) > limit):
        out[i] = encode_long(encoder, wavs[i].to(device), chunk_seconds=chunk_seconds)
    if short and device.type == "cpu":
        for i in short:
            feats, lengths = encoder(wavs[i][None].to(device))
            out[i] = feats[0, : int(lengths[0])]
    elif short:
        lengths = torch.tensor([len(wavs[i]) for i in short], dtype=torch.long)
        batch = torch.nn.utils.rnn.pad_sequence([wavs[i] for i in short], batch_first=True)
        padded, feat_lengths = encoder(batch.to(device), lengths.to(device))
        for row, (i, n) in enumerate(zip(short, feat_lengths.tolist())):
            out[i] = padded[row, :n]
    return out  # type: ignore[return-value]
