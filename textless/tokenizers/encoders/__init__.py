"""Speech encoders: waveform -> frame features (MFCC, HuBERT / wav2vec2 / WavLM, Whisper): the interface in `base`,
the kinds and their loaders in `registry`."""

from textless.tokenizers.encoders.base import SpeechEncoder
from textless.tokenizers.encoders.chunking import encode_long, iter_encode_long
from textless.tokenizers.encoders.mfcc import MFCCEncoder
from textless.tokenizers.encoders.registry import ENCODER_LOADERS, HF_MODEL_LOADERS, load_encoder, source_kind
from textless.tokenizers.encoders.ssl import SSLEncoder
from textless.tokenizers.encoders.whisper import WhisperFeatureEncoder

__all__ = [
    "ENCODER_LOADERS",
    "HF_MODEL_LOADERS",
    "MFCCEncoder",
    "SSLEncoder",
    "SpeechEncoder",
    "WhisperFeatureEncoder",
    "encode_long",
    "iter_encode_long",
    "load_encoder",
    "source_kind",
]
