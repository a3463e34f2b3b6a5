"""Training checkpoints: atomic, pickle-free, exactly resumable.

Layout under ``output_dir``::

    checkpoints/step-0000100/      one directory per checkpoint, published with `atomic_directory`
        model/                     UnitLM.save_pretrained (config + safetensors + unit metadata)
        trainer_state.pt           torch.save of tensors / plain Python only (see `TRAINER_STATE_KEYS`)
        train_config.yaml          the TrainConfig of the run that wrote it (for humans)
    checkpoints/latest             "step-0000100\\n", replaced atomically after the directory is complete

``trainer_state.pt`` holds: ``step``, ``epoch``, ``tokens_seen``, ``targets_seen``, ``elapsed_seconds``,
``world_size``, ``optimizer`` and ``scheduler`` state dicts, ``rng`` (one entry per rank: python ``random``, the
global numpy generator, torch CPU and every CUDA device), ``losses`` and ``valid_losses`` (histories of
``(step, loss)``) and ``config`` (the TrainConfig as a plain dict). It is read back with
``torch.load(..., weights_only=True)``: nothing in it is unpickled as code, so a checkpoint from elsewhere cannot run
anything; numpy arrays are stored as tensors for that reason.

A writer killed midway leaves at most a hidden ``.tmp-*`` directory (removed by `cleanup_stale_temporaries` on the
next run); ``latest`` always names a complete checkpoint. When ``latest`` is missing or names a checkpoint that is
gone, the newest complete ``step-*`` directory is used.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.errors import FormatError
from textless.utils.atomic import atomic_directory, atomic_write_text, cleanup_stale_temporaries
from textless.utils.hf import quiet_progress_bars

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
MODEL_DIR = "model"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.yaml"
TRAINER_STATE_KEYS = ("step", "epoch", "tokens_seen", "targets_seen", "elapsed_seconds", "world_size", "optimizer",
                      "scheduler", "rng", "losses", "valid_losses", "config")
_NAME = re.compile(r"^step-(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


# --------------------------------------------------------------------------------------------------------------------
# RNG states as tensors / plain Python
# --------------------------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python random, numpy global, torch CPU, torch CUDA), weights_only-safe."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


def save_checkpoint(output_dir: str | Path, step: int, lm, trainer_state: dict[str, Any], config_yaml: str = "",
                    keep: int | None = 2) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, then keep only the newest `keep` (None: all).

    `lm` is a UnitLM (saved with ``save_pretrained``); `trainer_state` must hold only tensors and plain Python
    (`load_trainer_state` refuses anything else).
    """
    missing = [k for k in TRAINER_STATE_KEYS if k not in trainer_state]
    if missing:
        raise ValueError(f"trainer_state lacks {', '.join(missing)}")
    root = checkpoints_dir(output_dir)
    path = root / checkpoint_name(step)
    with atomic_directory(path, overwrite=True) as tmp, quiet_progress_bars():
        lm.save_pretrained(tmp / MODEL_DIR)
        torch.save(trainer_state, tmp / STATE_FILE)
        if config_yaml:
            (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
    atomic_write_text(root / LATEST_FILE, path.name + "\n")
    if keep is not None:
        prune_checkpoints(output_dir, keep)
    return path


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories (those holding trainer_state.pt), oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _NAME.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def prune_checkpoints(output_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` (>= 1) checkpoints; never the one `latest` names. Returns what was deleted."""
    keep = max(1, keep)
    latest = latest_checkpoint(output_dir)
    removed = []
    for p in list_checkpoints(output_dir)[:-keep]:
        if latest is not None and p.resolve() == latest.resolve():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


# --------------------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------------------


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: the one `latest` names if complete, else the newest complete one, else None."""
    root = checkpoints_dir(output_dir)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        candidate = root / name
        if _NAME.match(name) and (candidate / STATE_FILE).is_file() and (candidate / MODEL_DIR).is_dir():
            return candidate
    complete = [p for p in list_checkpoints(output_dir) if (p / MODEL_DIR).is_dir()]
    return complete[-1] if complete else None


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """trainer_state.pt of a checkpoint directory, loaded with ``weights_only=True`` (tensors, plain Python)."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FormatError(path, "missing (not a complete training checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt files have many exception types
        raise FormatError(path, f"cannot be loaded safely ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise FormatError(path, f"expected a dict, got {type(state).__name__}")
    missing = [k for k in TRAINER_STATE_KEYS if k not in state]
    if missing:
        raise FormatError(path, f"missing {', '.join(missing)}")
    return state


def clean_checkpoint_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove `.tmp-*` leftovers of a killed checkpoint writer."""
    root = checkpoints_dir(output_dir)
    return cleanup_stale_temporaries(root) if root.is_dir() else []
