"""Unit language models: vocabulary layout (`vocab`), the `UnitLM` wrapper (`model`), from-scratch configs
(`presets`), text-LM initialisation (`twist`), likelihood scoring (`scoring`) and sampling (`generation`).

Names are resolved lazily: ``from textless.lm import UnitVocab`` does not import transformers; ``UnitLM`` and the
rest import it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names are resolved lazily by __getattr__
    from textless.data.identity import UnitMismatchError
    from textless.lm.generation import SamplingConfig, generate_units
    from textless.lm.model import UnitLM
    from textless.lm.presets import PRESETS
    from textless.lm.scoring import LogLikelihood, log_likelihood
    from textless.lm.twist import init_from_text_lm, load_text_lm
    from textless.lm.vocab import UnitVocab, VocabError

_EXPORTS = {
    "UnitVocab": "textless.lm.vocab",
    "VocabError": "textless.lm.vocab",
    "UnitLM": "textless.lm.model",
    "UnitMismatchError": "textless.data.identity",
    "PRESETS": "textless.lm.presets",
    "init_from_text_lm": "textless.lm.twist",
    "load_text_lm": "textless.lm.twist",
    "LogLikelihood": "textless.lm.scoring",
    "log_likelihood": "textless.lm.scoring",
    "SamplingConfig": "textless.lm.generation",
    "generate_units": "textless.lm.generation",
}

__all__ = [
    "PRESETS", "LogLikelihood", "SamplingConfig", "UnitLM", "UnitMismatchError", "UnitVocab", "VocabError",
    "generate_units", "init_from_text_lm", "load_text_lm", "log_likelihood",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'textless.lm' has no attribute {name!r}")
