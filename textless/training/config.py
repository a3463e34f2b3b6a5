"""The settings every trainer shares (`TrainingConfig`); each objective's config extends it with its own fields."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from textless.errors import ConfigError

STRATEGIES = ("auto", "ddp", "fsdp")
# accelerate's mixed-precision names; "auto" is resolved by the engine (bf16 on a CUDA device that supports it)
PRECISIONS = {"auto": None, "fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}
# settings that may change when a run resumes: they do not change what is computed, or they apply from the resumed
# step on (a longer budget, another cadence of validation / checkpoints / logs)
RESUMABLE_SETTINGS = ("output_dir", "max_steps", "max_seconds", "eval_every", "save_every", "keep_checkpoints",
                      "log_every", "progress", "tensorboard", "restart")


@dataclass
class TrainingConfig:
    output_dir: str = "outputs/train"
    max_steps: int | None = None           # optimizer steps (the budget; see each trainer for the others)
    max_seconds: float | None = None       # wall clock, summed over resumed runs: stop (and save) after it
    eval_every: int = 100                  # steps between validations (and at the end)
    save_every: int = 100                  # steps between checkpoints (and at the end)
    keep_checkpoints: int = 2
    log_every: int = 10
    precision: str = "auto"                # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    strategy: str = "auto"                 # auto | ddp | fsdp (under torchrun)
    seed: int = 0
    progress: bool = True
    tensorboard: bool = True
    restart: bool = False                  # discard output_dir's checkpoints and start over (else: resume)


def check_training_config(cfg: TrainingConfig, precisions: tuple[str, ...]) -> None:
    """`ConfigError` for invalid shared settings."""
    if cfg.precision not in precisions:
        raise ConfigError(f"precision must be one of {', '.join(precisions)}, got {cfg.precision!r}")
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {cfg.strategy!r}")
    if cfg.strategy == "fsdp" and cfg.precision == "fp16":
        raise ConfigError("strategy=fsdp does not support precision=fp16 (it needs a sharded gradient scaler); use "
                          "bf16 or fp32")
    for name in ("eval_every", "save_every", "log_every", "keep_checkpoints"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1 (or null), got {cfg.max_steps}")
    if cfg.max_seconds is not None and cfg.max_seconds <= 0:
        raise ConfigError(f"max_seconds must be > 0 (or null), got {cfg.max_seconds}")


def config_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain Python (tuples as lists), for checkpoints and YAML."""
    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def config_yaml(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(config_dict(cfg)))
