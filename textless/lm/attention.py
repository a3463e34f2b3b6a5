"""Attention backends of unit LMs: which ``attn_implementation`` values exist and whether one can be used here.

None keeps transformers' default (``"sdpa"``); ``"sdpa"`` / ``"eager"`` are built into torch;
``"flash_attention_2"`` / ``"flash_attention_3"`` need their packages. A flash backend whose package is not
importable is a `ConfigError` before any model is built. The choice lives on the loaded model
(``model.config._attn_implementation``), not in the checkpoint.
"""

from __future__ import annotations

import importlib.util

from textless.errors import ConfigError

# attn_implementation values -> the package a backend needs (None: built into torch)
ATTN_IMPLEMENTATIONS: dict[str, str | None] = {"sdpa": None, "eager": None, "flash_attention_2": "flash_attn",
                                               "flash_attention_3": "flash_attn_interface"}
_ATTN_INSTALL = {"flash_attn": "pip install flash-attn --no-build-isolation",
                 "flash_attn_interface": "build FlashAttention-3 from the hopper/ directory of "
                                         "github.com/Dao-AILab/flash-attention"}


def check_attn_implementation(name: str | None) -> str | None:
    """`name` if it is a usable ``attn_implementation`` (None / "" -> None: transformers' default, sdpa).

    Raises `ConfigError` for an unknown name, or a flash backend whose package (``flash_attn`` for
    flash_attention_2, ``flash_attn_interface`` for flash_attention_3) is not importable.
    """
    if not name:
        return None
    if name not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)} (or null for "
                          f"transformers' default, sdpa), got {name!r}")
    package = ATTN_IMPLEMENTATIONS[name]
    if package is not None and not _importable(package):
        raise ConfigError(f"attn_implementation={name!r} needs the Python package '{package}', which is not "
                          f"installed ({_ATTN_INSTALL[package]}); use 'sdpa' (the default) or 'eager' instead")
    return name


def attn_kwargs(name: str | None) -> dict[str, str]:
    """``{"attn_implementation": name}`` for transformers' loaders, ``{}`` for the default (checked first)."""
    name = check_attn_implementation(name)
    return {"attn_implementation": name} if name else {}


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False
