"""Helpers shared by the unit-LM checkpoint loaders (`textless.lm.loaders`): reading config.json and weights
(safetensors, ``pytorch_model.bin`` through the restricted unpickler, sharded indexes), dtypes, and building a
transformers model from a config and a state dict with every key checked."""


from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from textless.errors import FormatError, TextlessError
from textless.utils.safe_pickle import safe_torch_load

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, BIN_FILE, BIN_INDEX)  # preference order, as transformers
_SHOWN_KEYS = 5  # how many offending weight names an error message lists


# ---------------------------------------------------------------------------------------------------------------------
# Shared helpers (used by the family modules)
# ---------------------------------------------------------------------------------------------------------------------


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; `FormatError` naming it when missing, unreadable or not an object."""
    if not path.is_file():
        raise FormatError(path, "missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(path, f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise FormatError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def peek_config(path: str | Path) -> dict[str, Any] | None:
    """config.json of directory `path` as a dict, or None (no directory / file, invalid JSON): for ``detect``."""
    try:
        return read_json_file(Path(path) / CONFIG_FILE) if Path(path).is_dir() else None
    except (FormatError, OSError):
        return None


def is_int(value: Any) -> bool:
    """A JSON integer (bools excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def find_weights(directory: Path) -> Path:
    """The weight file (or shard index) of an HF directory, in transformers' order of preference."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FormatError(directory, f"no weights: expected one of {', '.join(WEIGHT_FILES)}")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FormatError(path, f"not a readable safetensors file ({e})") from None


def _load_pickled(path: Path) -> dict[str, torch.Tensor]:
    state = safe_torch_load(path)  # restricted unpickler: UnsafePickleError / FormatError on anything suspicious
    if not isinstance(state, Mapping):
        raise FormatError(path, f"expected a state dict (name -> tensor), got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise FormatError(path, f"expected a state dict (name -> tensor); entries {_show(map(str, bad))} are not")
    return dict(state)


def _load_one(path: Path) -> dict[str, torch.Tensor]:
    return _load_safetensors(path) if path.name.endswith(".safetensors") else _load_pickled(path)


def _load_sharded(index: Path) -> dict[str, torch.Tensor]:
    weight_map = read_json_file(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
        raise FormatError(index, "'weight_map' must be a non-empty object (weight name -> shard file name)")
    state: dict[str, torch.Tensor] = {}
    for shard_name in sorted(set(weight_map.values())):
        shard = index.parent / shard_name
        if Path(shard_name).name != shard_name or not shard.is_file():
            raise FormatError(index, f"shard {shard_name!r} is missing")
        state.update(_load_one(shard))
    absent = [k for k in weight_map if k not in state]
    if absent:
        raise FormatError(index, f"weights {_show(absent)} are listed but not in their shards")
    return state


def read_state_dict(directory: str | Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of an HF-style directory and the file they came from (the index for sharded checkpoints)."""
    weights = find_weights(Path(directory))
    state = _load_sharded(weights) if weights.name.endswith(".index.json") else _load_one(weights)
    if not state:
        raise FormatError(weights, "holds no tensors")
    return state, weights


def _show(names: Any, quote: bool = True) -> str:
    """The first few of `names` (sorted), and how many more there are."""
    names = sorted(names)
    more = f" (+{len(names) - _SHOWN_KEYS} more)" if len(names) > _SHOWN_KEYS else ""
    return ", ".join(repr(n) if quote else str(n) for n in names[:_SHOWN_KEYS]) + more


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (transformers' messages run to pages)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def resolve_dtype(torch_dtype: torch.dtype | str | None, state: Mapping[str, torch.Tensor]) -> torch.dtype:
    """`torch_dtype` as a torch dtype; None / "auto": the dtype of the stored floating-point weights."""
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype is None or torch_dtype == "auto":
        for tensor in state.values():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32
    dtype = getattr(torch, str(torch_dtype).removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise TextlessError(f"unknown torch_dtype {torch_dtype!r} (use e.g. torch.float32, 'bfloat16' or None)")
    return dtype


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (we turn what they say into exceptions)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def causal_lm_class(config: PretrainedConfig, config_file: Path) -> type[PreTrainedModel]:
    """The transformers causal-LM class for `config` (e.g. OPTConfig -> OPTForCausalLM)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        raise FormatError(config_file, f"model_type {config.model_type!r} has no causal-LM class in transformers "
                                       f"{transformers.__version__}") from None


def build_causal_lm(config: PretrainedConfig, state: dict[str, torch.Tensor], *, config_file: Path,
                    weights_file: Path, torch_dtype: torch.dtype | str | None = None,
                    attn_implementation: str | None = None) -> PreTrainedModel:
    """The causal LM of `config` holding exactly the tensors of `state` (eval mode).

    Every parameter / persistent buffer must come from `state` (tied weights may be stored once, under either name;
    transformers re-ties them) and every tensor of `state` must be used: otherwise `FormatError` naming
    `weights_file`.
    """
    from textless.lm.attention import attn_kwargs

    cls = causal_lm_class(config, config_file)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(torch_dtype, state), **attn_kwargs(attn_implementation)}
    with _quiet_transformers():
        model, info = cls.from_pretrained(None, config=config, state_dict=state, output_loading_info=True,
                                          ignore_mismatched_sizes=True, **kwargs)
    problems = []
    if info.get("unexpected_keys"):
        problems.append(f"unknown weight keys {_show(info['unexpected_keys'])}")
    if info.get("missing_keys"):
        problems.append(f"missing weight keys {_show(info['missing_keys'])}")
    if info.get("mismatched_keys"):
        shapes = [_mismatch_text(m) for m in info["mismatched_keys"]]
        problems.append(f"weights whose shape does not match {config_file.name}: {_show(shapes, quote=False)}")
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"])))
    if problems:
        raise FormatError(weights_file, f"does not fit the {cls.__name__} described by {config_file.name}: "
                                        + "; ".join(problems))
    return model.eval()


def _mismatch_text(entry: Any) -> str:
    if isinstance(entry, tuple) and len(entry) == 3:
        key, stored, expected = entry
        return f"{key} (stored {tuple(stored)}, expected {tuple(expected)})"
    return str(entry)


def move(model: PreTrainedModel, device: str | torch.device | None) -> PreTrainedModel:
    """`model` on `device` (unchanged when None)."""
    return model if device is None else model.to(device)
