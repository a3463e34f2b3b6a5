"""Speech tokenizers: audio (or alignments) -> discrete units.

The main entry points are importable from here (lazily, so that ``textless.tokenizers.kernels`` does not pull in
transformers)::

    from textless.tokenizers import SpeechTokenizer, KMeans, UnitBPE, load_encoder
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KMeans": "textless.tokenizers.kmeans",
    "KMeansConfig": "textless.tokenizers.kmeans",
    "OraclePhoneTokenizer": "textless.tokenizers.phones",
    "SpeechTokenizer": "textless.tokenizers.bundle",
    "UnitBPE": "textless.tokenizers.bpe",
    "Units": "textless.tokenizers.bundle",
    "encode_long": "textless.tokenizers.encoders",
    "load_encoder": "textless.tokenizers.encoders",
}

__all__ = ["KMeans", "KMeansConfig", "OraclePhoneTokenizer", "SpeechTokenizer", "UnitBPE", "Units", "encode_long",
           "load_encoder"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'textless.tokenizers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
