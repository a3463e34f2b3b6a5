"""TWIST checkpoints (Hassid et al. 2023, "Textually Pretrained Speech Language Models") as textless `UnitLM`s.

Format (facebookresearch/textlesslib, examples/twist/speech_lm.py and twist_generation.py). A released model
(TWIST-350M, -1.3B: ``OPTForCausalLM``; TWIST-7B, -13B: ``LlamaForCausalLM``) is a zip of a plain Hugging Face
directory: ``config.json`` + ``pytorch_model.bin`` (2023 exports; ``model.safetensors`` or a sharded ``*.index.json``
for re-uploads). The reference code loads it with ``AutoModelForCausalLM.from_pretrained(ckpt_dir)`` and reads one
non-standard config field, the integer ``offset``::

    generated = model.generate(offset + units, max_length=min(250, 3 * len(units)), do_sample=True, temperature=0.8)
    units = generated - offset

so unit ``u`` is token ``u + offset``, no bos is prepended, and the tokens below ``offset`` are the specials of the
training dictionary (fairseq order ``<s>=0 <pad>=1 </s>=2 <unk>=3``, hence offset 4 and ``vocab_size`` 504 for the
500 mHuBERT-25Hz units).

Mapping to `UnitVocab`: ``offset`` = config ``offset``; ``num_units`` = config ``num_units`` when present, else
``vocab_size - offset``; ``size`` = ``vocab_size``; specials = the config's ``pad/bos/eos/unk_token_id`` that lie below
``offset`` (ids that would fall inside the unit block are dropped with a warning: they cannot be specials).

Not in the checkpoint: the units' tokenizer. TWIST's released models all use mHuBERT-base-25Hz layer 11 with the
500-centroid k-means, deduplicated (``SpeechEncoder.by_name("mhubert-base-25hz", "kmeans", 500, deduplicate=True)``),
so `frame_rate` defaults to 25.0 Hz and `deduplicated` to True; pass other values for a TWIST-format model trained on
other units, and `tokenizer` (a textless tokenizer identity) to let `UnitLM.check_units` guard against mismatches.

Weights are read by `textless.lm.loaders.read_state_dict` (``pytorch_model.bin`` through the restricted unpickler) and
must match the config exactly (`build_causal_lm`). The config keeps its ``offset`` field, so a directory re-saved by
textless is still usable by TWIST's own ``generate_with_offset``.
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

DEFAULT_FRAME_RATE = 25.0  # mHuBERT-base-25Hz (hop 640 samples at 16 kHz)
DEFAULT_DEDUPLICATED = True
KNOWN_MODEL_TYPES = ("opt", "llama")  # what TWIST released; other causal LMs with an `offset` load too
SPECIAL_KEYS = {"pad": "pad_token_id", "bos": "bos_token_id", "eos": "eos_token_id", "unk": "unk_token_id"}
DETECTS = "config.json of a Hugging Face causal LM (TWIST: OPT / LLaMA) with an integer 'offset'"


def detect(path: str | Path) -> bool:
    """A directory whose config.json has an integer ``offset`` and is neither textless' nor slamkit's own."""
    config = peek_config(path)
    if config is None or "textless" in config or config.get("model_type") == "speech_language_model":
        return False
    return is_int(config.get("offset")) and isinstance(config.get("model_type"), str)


def _special_id(value: Any) -> int | None:
    """A config token id: an int, or the first int of a list (``eos_token_id: [2, 32000]``); None otherwise."""
    if isinstance(value, list):
        value = next((v for v in value if is_int(v)), None)
    return value if is_int(value) and value >= 0 else None


def specials_from_config(config: dict[str, Any], offset: int) -> dict[str, int]:
    """The config's pad / bos / eos / unk ids that lie below `offset` (the only place specials can be)."""
    out = {}
    for name, key in SPECIAL_KEYS.items():
        idx = _special_id(config.get(key))
        if idx is None:
            continue
        if idx < offset:
            out[name] = idx
        else:
            log.warning("TWIST config: %s %d is not below offset %d (it would be a unit token); ignored", key, idx,
                        offset)
    return out


def vocab_from_config(config: dict[str, Any], config_file: Path) -> UnitVocab:
    """`UnitVocab` of a TWIST config.json (see the module docstring); `FormatError` naming the file if invalid."""
    from textless.lm.vocab import UnitVocab, VocabError

    offset, size = config.get("offset"), config.get("vocab_size")
    if not is_int(offset) or offset < 0:
        raise FormatError(config_file, f"'offset' must be a non-negative integer (unit u = token u + offset), "
                                       f"got {offset!r}")
    if not is_int(size) or size <= offset:
        raise FormatError(config_file, f"'vocab_size' must be an integer above offset {offset}, got {size!r}")
    num_units = config.get("num_units", size - offset)
    if not is_int(num_units) or num_units < 1 or offset + num_units > size:
        raise FormatError(config_file, f"'num_units' {num_units!r} does not fit: offset {offset} + num_units must be "
                                       f"<= vocab_size {size}")
    try:
        return UnitVocab(num_units=num_units, offset=offset, specials=specials_from_config(config, offset),
                         size=size)
    except VocabError as e:
        raise FormatError(config_file, str(e)) from None


def hf_config(path: Path, raw: dict[str, Any]) -> PretrainedConfig:
    """transformers' own reading of config.json (`raw`; it converts 2023-era keys such as ``torch_dtype``)."""
    import transformers
    from transformers import CONFIG_MAPPING, AutoConfig

    config_file = path / CONFIG_FILE
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise FormatError(config_file, f"model_type {model_type!r} is not a model type transformers "
                                       f"{transformers.__version__} knows")
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise FormatError(config_file, f"transformers cannot read this config ({first_line(e)})") from None


def load(path: str | Path, *, torch_dtype: torch.dtype | str | None = None, device: str | torch.device | None = None,
         attn_implementation: str | None = None, tokenizer: dict | None = None,
         frame_rate: float | None = DEFAULT_FRAME_RATE, deduplicated: bool | None = DEFAULT_DEDUPLICATED) -> UnitLM:
    """A TWIST directory as a `UnitLM` (eval mode).

    `torch_dtype` None keeps the stored dtype; `tokenizer` / `frame_rate` / `deduplicated` describe the units (not
    recorded by TWIST; defaults: mHuBERT-25Hz, deduplicated). Raises `FormatError` naming the offending file.
    """
    from textless.lm.model import UnitLM

    path = Path(path)
    if not path.is_dir():
        raise TextlessError(f"TWIST checkpoint '{path}': not a directory")
    config_file = path / CONFIG_FILE
    raw = read_json_file(config_file)
    if "offset" not in raw:
        raise FormatError(config_file, "no 'offset' field: not a TWIST unit LM (unit u = token u + offset)")
    vocab = vocab_from_config(raw, config_file)
    config = hf_config(path, raw)
    if config.model_type not in KNOWN_MODEL_TYPES:
        log.warning("TWIST checkpoint %s has model_type %r (TWIST released %s); loading it anyway", path,
                    config.model_type, " / ".join(KNOWN_MODEL_TYPES))
    state, weights_file = read_state_dict(path)
    model = build_causal_lm(config, state, config_file=config_file, weights_file=weights_file,
                            torch_dtype=torch_dtype, attn_implementation=attn_implementation)
    return UnitLM(move(model, device), vocab, tokenizer=tokenizer, frame_rate=frame_rate, deduplicated=deduplicated)
