"""slamkit checkpoints (Slam, "Slamming: Training a Speech Language Model on One GPU in a Day"; TWIST-style recipes
trained with slamkit) as textless `UnitLM`s.

Format (slp-rl/slamkit: slamkit/model/unit_lm.py ``UnitLM`` / ``UnitLMConfig``, slamkit/tokeniser/unit_tokeniser.py
``UnitTokeniser``). slamkit's ``UnitLM`` is a ``PreTrainedModel`` that holds the base causal LM (Qwen2.5-0.5B for
Slam, OPT for its TWIST recipe) as ``self.lm``, resized to the unit vocabulary; ``save_pretrained`` writes

* ``config.json``: ``model_type "speech_language_model"``, ``architectures ["UnitLM"]``, ``vocab_size`` (502 for
  500 units), ``base_model_name`` (a hub name: slamkit re-reads it at load time, we never do), ``base_config`` (the
  base LM's full config dict, keys of the transformers 4.x that saved it: ``torch_dtype``, ``rope_theta``...; its
  ``vocab_size`` may still be the *text* vocabulary since the LM is resized after the config was copied, so the
  top-level ``vocab_size`` is authoritative), ``twist_init``, ``use_cache``, ``tie_word_embeddings`` (when False),
  and the recipe's extra keys (``dropout``, Slam's ``rope_theta`` 10000, which also reach ``base_config``);
* ``model.safetensors`` (or a sharded index): every tensor under the ``lm.`` prefix (``lm.model.layers.0...``). With
  tied embeddings only one of ``lm.model.embed_tokens.weight`` / ``lm.lm_head.weight`` is stored, depending on the
  transformers version that saved it; either is accepted;
* ``tokeniser_config.json`` (``UnitTokeniser.save_pretrained``): ``{"dedup", "bos_eos_token_id", "pad_token_id",
  "num_units", "load_fe"}``. slamkit's training scripts do not write it (they rebuild the tokeniser from the hydra
  config), so trainer checkpoints and some uploads lack it.

Token layout (``UnitTokeniser._init_text_tokeniser``): pad 0, bos = eos = ``bos_eos_token_id`` (1), unit u = token
``u + max(pad, bos, eos) + 1`` = ``u + 2``; a sequence is ``bos units eos``. Without tokeniser_config.json the pad /
bos / eos ids are read from ``base_config`` (slamkit sets them to 0 / 1 / 1) and ``num_units = vocab_size - offset``.
Interleaved speech-text checkpoints (SIMS: tokeniser_config.json with ``text_tokeniser_path``) are refused.

Not in the checkpoint: the frame rate. Slam and slamkit's recipes use mHuBERT-base-25Hz layer 11 with 500 k-means
units (config/tokeniser/unit_hubert_25.yaml), so `frame_rate` defaults to 25.0 Hz; ``deduplicated`` defaults to the
tokeniser's ``dedup`` (True when unknown: slamkit's default). The result is a plain ``Qwen2ForCausalLM`` (etc.) with
``vocab_size`` rows and ``use_cache`` switched on (slamkit saves the training-time False).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from textless.errors import FormatError, TextlessError
from textless.lm.loaders.base import (
    CONFIG_FILE,
    build_causal_lm,
    first_line,
    is_int,
    move,
    peek_config,
    read_json_file,
    read_state_dict,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from textless.lm.model import UnitLM
    from textless.lm.vocab import UnitVocab

log = logging.getLogger(__name__)

MODEL_TYPE = "speech_language_model"
PREFIX = "lm."
TOKENISER_FILE = "tokeniser_config.json"
DEFAULT_FRAME_RATE = 25.0  # mHuBERT-base-25Hz (hop 640 samples at 16 kHz)
DEFAULT_DEDUPLICATED = True  # UnitTokeniser(dedup=True) and every slamkit tokeniser config
SLAMKIT_SPECIALS = {"pad": 0, "bos": 1, "eos": 1}  # UnitLMConfig / UnitTokeniser defaults
_INTERLEAVED_KEYS = ("text_tokeniser_path", "interleave_method", "interleave_span", "interleave_prob")
DETECTS = f"config.json with model_type {MODEL_TYPE!r} and a 'base_config' object (slamkit UnitLM)"


def detect(path: str | Path) -> bool:
    """A directory whose config.json says ``model_type: "speech_language_model"`` with a ``base_config`` object."""
    config = peek_config(path)
    return config is not None and config.get("model_type") == MODEL_TYPE and isinstance(config.get("base_config"),
                                                                                         dict)


# ---------------------------------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------------------------------


def _int_field(data: dict[str, Any], key: str, file: Path, minimum: int = 0) -> int:
    value = data.get(key)
    if not is_int(value) or value < minimum:
        raise FormatError(file, f"'{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def read_tokeniser_config(path: Path) -> dict[str, Any] | None:
    """tokeniser_config.json as ``{"pad", "bos_eos", "num_units", "dedup"}``, or None when the file is absent."""
    file = path / TOKENISER_FILE
    if not file.exists():
        return None
    data = read_json_file(file)
    interleaved = [k for k in _INTERLEAVED_KEYS if k in data]
    if interleaved:
        raise FormatError(file, f"an interleaved speech-text tokeniser ({', '.join(interleaved)}): only unit LMs "
                                f"(speech units alone) can be loaded")
    dedup = data.get("dedup", DEFAULT_DEDUPLICATED)
    if not isinstance(dedup, bool):
        raise FormatError(file, f"'dedup' must be true or false, got {dedup!r}")
    return {"pad": _int_field(data, "pad_token_id", file), "bos_eos": _int_field(data, "bos_eos_token_id", file),
            "num_units": _int_field(data, "num_units", file, minimum=1), "dedup": dedup}


def _base_specials(base_config: dict[str, Any]) -> dict[str, int]:
    """pad / bos / eos from base_config (slamkit writes its own ids there), slamkit's defaults where absent."""
    out = {}
    for name, default in SLAMKIT_SPECIALS.items():
        value = base_config.get(f"{name}_token_id")
        out[name] = value if is_int(value) and value >= 0 else default
    return out


def vocab_for(config: dict[str, Any], tokeniser: dict[str, Any] | None, path: Path) -> UnitVocab:
    """`UnitVocab` from config.json (+ tokeniser_config.json when present), slamkit's layout rules."""
    from textless.lm.vocab import UnitVocab, VocabError

    config_file = path / CONFIG_FILE
    size = _int_field(config, "vocab_size", config_file, minimum=2)
    if tokeniser is not None:
        specials = {"pad": tokeniser["pad"], "bos": tokeniser["bos_eos"], "eos": tokeniser["bos_eos"]}
    else:
        log.info("%s has no %s: special ids from base_config, num_units from vocab_size", path, TOKENISER_FILE)
        specials = _base_specials(config["base_config"])
    offset = max(specials.values()) + 1  # UnitTokeniser: units right after the highest special id
    num_units = tokeniser["num_units"] if tokeniser is not None else size - offset
    blame = path / TOKENISER_FILE if tokeniser is not None else config_file
    if num_units < 1 or offset + num_units > size:
        raise FormatError(blame, f"{num_units} units after offset {offset} do not fit vocab_size {size} "
                                 f"(from {CONFIG_FILE})")
    try:
        return UnitVocab(num_units=num_units, offset=offset, specials=specials, size=size)
    except VocabError as e:
        raise FormatError(blame, str(e)) from None


# ---------------------------------------------------------------------------------------------------------------------
# Base model
# ---------------------------------------------------------------------------------------------------------------------


def base_hf_config(config: dict[str, Any], vocab: UnitVocab, config_file: Path) -> PretrainedConfig:
    """The base LM's transformers config: ``base_config`` with the unit vocabulary size and special ids."""
    import transformers
    from transformers import CONFIG_MAPPING

    base = dict(config["base_config"])
    model_type = base.pop("model_type", None)
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise FormatError(config_file, f"base_config.model_type {model_type!r} is not a model type transformers "
                                       f"{transformers.__version__} knows")
    base.update(vocab_size=vocab.size, pad_token_id=vocab.pad_id, bos_token_id=vocab.bos_id,
                eos_token_id=vocab.eos_id, use_cache=True)
    if isinstance(config.get("tie_word_embeddings"), bool):
        base["tie_word_embeddings"] = config["tie_word_embeddings"]
    try:
        return CONFIG_MAPPING[model_type].from_dict(base)
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(config_file, f"base_config cannot be read by transformers ({first_line(e)})") from None


def strip_prefix(state: dict[str, torch.Tensor], weights_file: Path, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """``lm.model.x`` -> ``model.x``; `FormatError` naming `weights_file` if any tensor lies outside `prefix`."""
    outside = [k for k in state if not k.startswith(prefix)]
    if outside:
        shown = ", ".join(repr(k) for k in sorted(outside)[:5]) + (f" (+{len(outside) - 5} more)"
                                                                  if len(outside) > 5 else "")
        raise FormatError(weights_file, f"weights {shown} are not under the {prefix!r} prefix (slamkit's UnitLM keeps "
                                        f"the base LM as .{prefix.rstrip('.')})")
    return {k[len(prefix):]: v for k, v in state.items()}


def load(path: str | Path, *, torch_dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
         attn_implementation: str | None = None, tokenizer: dict | None = None,
         frame_rate: float | None = DEFAULT_FRAME_RATE, deduplicated: bool | None = None) -> UnitLM:
    """A slamkit ``UnitLM`` directory as a textless `UnitLM` (eval mode).

    `torch_dtype` None keeps the stored dtype (Slam: bfloat16). `deduplicated` None takes tokeniser_config.json's
    ``dedup`` (True without it); `frame_rate` defaults to mHuBERT-25Hz's 25.0. Raises `FormatError` naming the file.
    """
    from textless.lm.model import UnitLM

    path = Path(path)
    if not path.is_dir():
        raise TextlessError(f"slamkit checkpoint '{path}': not a directory")
    config_file = path / CONFIG_FILE
    config = read_json_file(config_file)
    if config.get("model_type") != MODEL_TYPE:
        raise FormatError(config_file, f"model_type is {config.get('model_type')!r}, not {MODEL_TYPE!r}: not a "
                                       f"slamkit UnitLM")
    if not isinstance(config.get("base_config"), dict):
        raise FormatError(config_file, "'base_config' (the base LM's config) must be an object")
    tokeniser = read_tokeniser_config(path)
    vocab = vocab_for(config, tokeniser, path)
    hf_config = base_hf_config(config, vocab, config_file)
    state, weights_file = read_state_dict(path)
    model = build_causal_lm(hf_config, strip_prefix(state, weights_file), config_file=config_file,
                            weights_file=weights_file, torch_dtype=torch_dtype,
                            attn_implementation=attn_implementation)
    if deduplicated is None:
        deduplicated = tokeniser["dedup"] if tokeniser is not None else DEFAULT_DEDUPLICATED
    return UnitLM(move(model, device), vocab, tokenizer=tokenizer, frame_rate=frame_rate, deduplicated=deduplicated)
