"""Vocoder training checkpoints: atomic, pickle-free, exactly resumable (the layout of `textless.lm.checkpoint`).

Layout under ``output_dir``::

    checkpoints/step-0000100/         one directory per checkpoint, published with `atomic_directory`
        model/                        UnitVocoder.save_pretrained: weight norm folded, loadable by `load_vocoder`
        generator.safetensors         the generator in its training form (weight norm as g / v parametrizations)
        discriminator.safetensors     the discriminator (its weight / spectral norm parameters and buffers)
        trainer_state.pt              torch.save of tensors / plain Python only (`TRAINER_STATE_KEYS`)
        train_config.yaml             the VocoderTrainConfig of the run that wrote it (for humans)
    checkpoints/latest                "step-0000100\\n", replaced atomically after the directory is complete

Both generator forms are kept: ``model/`` so that any checkpoint can be listened to, the unfolded one because
folding (g * v / ||v||) rounds, so resuming from ``model/`` would not reproduce the uninterrupted run.
``trainer_state.pt`` holds ``step``, ``elapsed_seconds``, the two optimizers' and schedulers' state dicts, ``rng``
(python, numpy, torch CPU and CUDA states), ``history`` / ``valid_history`` (loss columns as float64 tensors) and
``config``; it is read with ``torch.load(weights_only=True)``, so nothing in it runs code. Pointer handling, pruning
and stale-temporary cleanup are `textless.lm.checkpoint`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from textless.errors import FormatError
from textless.lm.checkpoint import (
    LATEST_FILE,
    MODEL_DIR,
    STATE_FILE,
    checkpoint_name,
    checkpoints_dir,
    clean_checkpoint_temporaries,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    rng_state,
    set_rng_state,
)
from textless.utils.atomic import atomic_directory, atomic_write_text

GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
CONFIG_FILE = "train_config.yaml"
TRAINER_STATE_KEYS = ("step", "elapsed_seconds", "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d", "rng",
                      "history", "valid_history", "samples_logged", "config")

__all__ = ["DISCRIMINATOR_FILE", "GENERATOR_FILE", "MODEL_DIR", "TRAINER_STATE_KEYS", "clean_checkpoint_temporaries",
           "columns_from_tensors", "columns_to_tensors", "latest_checkpoint", "list_checkpoints",
           "load_training_checkpoint", "rng_state", "save_training_checkpoint", "set_rng_state"]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def columns_to_tensors(columns: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    """Loss history columns -> float64 tensors (exact for the float32 losses they hold)."""
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in columns.items()}


def columns_from_tensors(columns: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {k: [float(x) for x in v.tolist()] for k, v in columns.items()}


def save_training_checkpoint(output_dir: str | Path, step: int, vocoder, discriminator: torch.nn.Module,
                             trainer_state: dict[str, Any], config_yaml: str = "", keep: int | None = 2) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `keep` (None: all).

    `vocoder` is the `UnitVocoder` whose generator is being trained (weight norm on); `trainer_state` must hold only
    tensors and plain Python (see `TRAINER_STATE_KEYS`).
    """
    missing = [k for k in TRAINER_STATE_KEYS if k not in trainer_state]
    if missing:
        raise ValueError(f"trainer_state lacks {', '.join(missing)}")
    root = checkpoints_dir(output_dir)
    path = root / checkpoint_name(step)
    with atomic_directory(path, overwrite=True) as tmp:
        vocoder.save_pretrained(tmp / MODEL_DIR)
        save_file(_state(vocoder.generator), str(tmp / GENERATOR_FILE))
        save_file(_state(discriminator), str(tmp / DISCRIMINATOR_FILE))
        torch.save(trainer_state, tmp / STATE_FILE)
        if config_yaml:
            (tmp / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
    atomic_write_text(root / LATEST_FILE, path.name + "\n")
    if keep is not None:
        prune_checkpoints(output_dir, keep)
    return path


def load_training_checkpoint(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                                              dict[str, torch.Tensor]]:
    """(trainer state, generator training weights, discriminator weights) of a checkpoint directory; the state is
    read with ``weights_only=True``. `FormatError` naming the file for anything missing or unreadable."""
    checkpoint = Path(checkpoint)
    path = checkpoint / STATE_FILE
    if not path.is_file():
        raise FormatError(path, "missing (not a complete vocoder training checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt files have many exception types
        raise FormatError(path, f"cannot be loaded safely ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(state, dict) or any(k not in state for k in TRAINER_STATE_KEYS):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise FormatError(path, f"not a vocoder trainer state (expected keys {', '.join(TRAINER_STATE_KEYS)}, "
                                f"found {have})")
    weights = []
    for name in (GENERATOR_FILE, DISCRIMINATOR_FILE):
        try:
            weights.append(load_file(str(checkpoint / name)))
        except Exception as e:  # noqa: BLE001 - OSError, SafetensorError (an Exception subclass)
            raise FormatError(checkpoint / name, f"cannot be read ({str(e).splitlines()[0]})") from None
    return state, weights[0], weights[1]
