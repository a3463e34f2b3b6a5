"""Speech encoders: waveform -> frame features (MFCC, HuBERT / wav2vec2 / WavLM, Whisper), see `base`.

Importing this package registers the "mfcc" and "huggingface" kinds and the hubert / wav2vec2 / wavlm / whisper
model types; the "fairseq" kind (``encoders/fairseq.py``) is imported on first use by `load_encoder`.
"""

from textless.tokenizers.encoders.base import (
    ENCODER_LOADERS,
    HF_MODEL_LOADERS,
    SpeechEncoder,
    load_encoder,
    register_encoder,
    register_hf_model_type,
    source_kind,
)
from textless.tokenizers.encoders.chunking import encode_long, iter_encode_long
from textless.tokenizers.encoders.mfcc import MFCCEncoder
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
    "register_encoder",
    "register_hf_model_type",
    "source_kind",
]
