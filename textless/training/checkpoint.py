"""Training checkpoints: atomic, pickle-free, exactly resumable; one layout for every objective.

Layout under ``output_dir``::

    checkpoints/step-0000100/      one directory per checkpoint, published with `atomic_directory`
        trainer_state.pt           the engine's state + the objective's (tensors / plain Python only)
        train_config.yaml          the run's config (for humans)
        model/ ...                 whatever the objective saves (a UnitLM directory; a vocoder directory plus its
                                   training-form generator and discriminator weights; ...)
    checkpoints/latest             "step-0000100\\n", replaced atomically after the directory is complete

``trainer_state.pt`` (format ``textless.trainer_state``, version 2) holds ``step``, ``elapsed_seconds``,
``world_size``, ``rng`` (one entry per rank: python ``random``, the global numpy generator, torch CPU and every CUDA
device), ``config`` (the run's config as a plain dict), ``inputs`` (fingerprints of the data the run reads),
``history`` / ``valid_history`` (metric columns as float64 tensors), one ``optimizer`` / ``scheduler`` state per
optimizer (``optimizer`` and ``scheduler`` for an objective with one; ``optimizer_<name>`` / ``scheduler_<name>``
for several) and the objective's own keys. Version-1 files (the separate LM and vocoder loops of earlier textless)
carry no format key; each objective's ``upgrade_state`` converts them. The file is read back with
``torch.load(..., weights_only=True)``: nothing in it is unpickled as code, so a checkpoint from elsewhere cannot run
anything; numpy arrays are stored as tensors for that reason.

A writer killed midway leaves at most a hidden ``.tmp-*`` directory (removed by `clean_checkpoint_temporaries` on
the next run); ``latest`` always names a complete checkpoint. When ``latest`` is missing or names a checkpoint that
is gone, the newest complete ``step-*`` directory is used.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.errors import FormatError
from textless.utils.atomic import atomic_directory, atomic_write_text, cleanup_stale_temporaries
from textless.utils.versioned import artifact

CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest"
MODEL_DIR = "model"
STATE_FILE = "trainer_state.pt"
CONFIG_FILE = "train_config.yaml"
TRAINER_STATE = artifact("textless.trainer_state", 2, "a training checkpoint state")
ENGINE_STATE_KEYS = ("step", "elapsed_seconds", "world_size", "rng", "config", "history", "valid_history")
_NAME = re.compile(r"^step-(\d{7,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


# --------------------------------------------------------------------------------------------------------------------
# RNG states and metric columns as tensors / plain Python
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


def columns_to_tensors(columns: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    """Metric columns -> float64 tensors (exact for the float32 / float64 values they hold)."""
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in columns.items()}


def columns_from_tensors(columns: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {k: [float(x) for x in v.tolist()] for k, v in columns.items()}


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


def save_checkpoint(output_dir: str | Path, step: int, state: dict[str, Any], write_files: Callable[[Path], None],
                    config_yaml: str = "", keep: int | None = 2) -> Path:
    """Write checkpoint `step` atomically (`write_files(directory)` adds the objective's files, then the state),
    point `latest` at it, then keep only the newest `keep` (None: all)."""
    missing = [k for k in ENGINE_STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"trainer state lacks {', '.join(missing)}")
    root = checkpoints_dir(output_dir)
    path = root / checkpoint_name(step)
    with atomic_directory(path, overwrite=True) as tmp:
        write_files(tmp)
        torch.save({**TRAINER_STATE.header(), **state}, tmp / STATE_FILE)
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
        if _NAME.match(name) and (candidate / STATE_FILE).is_file():
            return candidate
    complete = list_checkpoints(output_dir)
    return complete[-1] if complete else None


def load_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    """trainer_state.pt of a checkpoint directory, loaded with ``weights_only=True`` (tensors, plain Python); a
    version-1 file (no format key) is returned as it is, for the objective to upgrade."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FormatError(path, "missing (not a complete training checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt files have many exception types
        raise FormatError(path, f"cannot be loaded safely ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise FormatError(path, f"expected a dict, got {type(state).__name__}")
    if "format" in state:
        TRAINER_STATE.check(state, path)
    return state


def clean_checkpoint_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove `.tmp-*` leftovers of a killed checkpoint writer."""
    root = checkpoints_dir(output_dir)
    return cleanup_stale_temporaries(root) if root.is_dir() else []
