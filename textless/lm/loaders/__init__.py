"""Load unit LMs saved by other code bases (TWIST, slamkit) as textless `UnitLM`s; a registry with auto-detection.

Families, tried in this order by `load_unit_lm` (each has ``detect(path) -> bool``, cheap and never raising, and
``load(path, **kw) -> UnitLM``):

``textless``  a directory written by `UnitLM.save_pretrained` (config.json carries a ``"textless"`` entry).
``twist``     a TWIST release: a plain Hugging Face OPT / LLaMA directory whose config.json has an integer ``offset``
              (unit u = token u + offset); see `textless.lm.loaders.twist`.
``slamkit``   a slamkit ``UnitLM`` directory: config.json with ``model_type "speech_language_model"`` and a nested
              ``base_config``, weights under ``lm.``, optional tokeniser_config.json; see `textless.lm.loaders.slamkit`.

`import_unit_lm` converts a TWIST / slamkit checkpoint once into textless' own format (a plain HF directory with the
unit metadata inside config.json), which `UnitLM.from_pretrained` then reads directly.

Keyword arguments every loader accepts: ``torch_dtype`` (None keeps the dtype the weights are stored in),
``device``, ``attn_implementation`` (None, "sdpa", "eager", "flash_attention_2" / "_3": see `textless.lm.model`;
`load_unit_lm` checks it before reading anything), and the unit metadata ``tokenizer`` (identity dict, see
`UnitLM`), ``frame_rate`` and ``deduplicated`` (for TWIST / slamkit these are not in the checkpoint: see each module
for its default; for a textless directory a value given here replaces the saved one).

Weights. The TWIST / slamkit loaders read the tensors themselves (`read_state_dict`: ``model.safetensors``,
``pytorch_model.bin`` — through `textless.utils.safe_pickle.safe_torch_load`, never a plain unpickler — or a sharded
``*.index.json``) and hand them to transformers (`build_causal_lm`: the architecture's own class,
``from_pretrained(None, config=..., state_dict=...)``), which ties embeddings, re-creates non-persistent buffers and
reports key mismatches; any missing, unexpected or mis-shaped key is a `FormatError` naming the weight file. (Why
not ``from_pretrained(directory)``: transformers 5 would read ``pytorch_model.bin`` with ``torch.load(weights_only=
True)``, which is safe but not our unpickler, and slamkit's ``lm.`` prefix needs rewriting anyway.) When the requested
dtype equals the stored one the model's parameters share the tensors read from disk, so peak memory is about one copy
of the weights.

Extending: add a module with ``detect`` / ``load`` / ``DETECTS`` and register it in `LOADERS` (order = priority).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from textless.errors import TextlessError
from textless.lm.attention import check_attn_implementation
from textless.lm.loaders import slamkit, twist
from textless.lm.loaders.base import (
    BIN_FILE,
    BIN_INDEX,
    CONFIG_FILE,
    SAFETENSORS_FILE,
    SAFETENSORS_INDEX,
    build_causal_lm,
    find_weights,
    first_line,
    peek_config,
    read_json_file,
    read_state_dict,
    resolve_dtype,
)
from textless.lm.model import CONFIG_KEY, UnitLM
from textless.utils.assets import starter_part
from textless.utils.registry import Registry

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loader:
    """One checkpoint family: `detect` (cheap, never raises), `load`, and what `detect` checks (for errors)."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., UnitLM]
    checks: str


def _textless_detect(path: Path) -> bool:
    config = peek_config(path)
    return config is not None and CONFIG_KEY in config


def _textless_load(path: str | Path, *, torch_dtype: torch.dtype | str | None = None,
                   device: str | torch.device | None = None, attn_implementation: str | None = None,
                   tokenizer: dict | None = None, frame_rate: float | None = None,
                   deduplicated: bool | None = None) -> UnitLM:
    """`UnitLM.from_pretrained`; `tokenizer` / `frame_rate` / `deduplicated` given here replace the saved ones."""
    lm = UnitLM.from_pretrained(path, torch_dtype=torch_dtype, device=device,
                                attn_implementation=attn_implementation)
    if tokenizer is not None:
        lm.tokenizer = dict(tokenizer)
    if frame_rate is not None:
        lm.frame_rate = float(frame_rate)
    if deduplicated is not None:
        lm.deduplicated = bool(deduplicated)
    return lm


LOADERS: Registry[Loader] = Registry("unit LM family")
LOADERS.register("textless", Loader("textless", _textless_detect, _textless_load,
                                    "config.json with a 'textless' entry (written by UnitLM.save_pretrained)"))
LOADERS.register("twist", Loader("twist", twist.detect, twist.load, twist.DETECTS))
LOADERS.register("slamkit", Loader("slamkit", slamkit.detect, slamkit.load, slamkit.DETECTS))


def detect_family(path: str | Path) -> str | None:
    """Name of the first registered family whose `detect` accepts `path`, else None."""
    path = Path(path)
    for name, loader in LOADERS.items():
        if loader.detect(path):
            return name
    return None


def load_unit_lm(path: str | Path, *, family: str | None = None, **kwargs: Any) -> UnitLM:
    """Load a unit LM from any registered family (auto-detected unless `family` names one).

    `kwargs` go to the family's loader (see the module docstring). Raises `TextlessError` listing what was checked
    when no family recognises `path`.
    """
    check_attn_implementation(kwargs.get("attn_implementation"))  # a missing flash package fails fast
    path = starter_part(path, "lm")
    if family is not None:
        return LOADERS.get(family).load(path, **kwargs)
    if not path.exists():
        raise TextlessError(f"unit LM '{path}': no such file or directory")
    if not path.is_dir():
        raise TextlessError(f"unit LM '{path}': not a directory (unit LM checkpoints are Hugging Face-style "
                            f"directories)")
    found = detect_family(path)
    if found is None:
        checked = "; ".join(f"{name}: {loader.checks}" for name, loader in LOADERS.items())
        raise TextlessError(f"unit LM '{path}': not a recognised unit LM checkpoint. Checked, in order: {checked}. "
                            f"A plain text LM can be turned into a unit LM with UnitLM.from_text_lm")
    log.info("loading %s as a %s checkpoint", path, found)
    return LOADERS.get(found).load(path, **kwargs)


def import_unit_lm(src: str | Path, dst: str | Path, *, overwrite: bool = False, **kwargs: Any) -> Path:
    """Convert a checkpoint of any family (auto-detected) into textless' format at `dst` (written atomically).

    `kwargs` go to `load_unit_lm` (``family``, ``torch_dtype``, unit metadata...). Returns `dst`.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise TextlessError(f"'{dst}' already exists (pass overwrite=True to replace it)")
    if dst.resolve() == src.resolve():
        raise TextlessError(f"'{dst}': cannot import a checkpoint onto itself; choose another destination")
    lm = load_unit_lm(src, **kwargs)
    return lm.save_pretrained(dst, overwrite=overwrite)


__all__ = [
    "BIN_FILE", "BIN_INDEX", "CONFIG_FILE", "LOADERS", "SAFETENSORS_FILE", "SAFETENSORS_INDEX", "Loader",
    "build_causal_lm", "detect_family", "find_weights", "first_line", "import_unit_lm", "load_unit_lm", "peek_config",
    "read_json_file", "read_state_dict", "resolve_dtype",
]
