"""What a training task plugs into the `Engine`: its config fields, its models and data, its losses, its optimizers.

A trainer is one `Objective` subclass (the unit-LM NLL in `textless.lm.train`, the vocoder GAN in
`textless.vocoders.train`, ...). The engine owns everything else: the process group, precision, DDP / FSDP wrapping,
gradient accumulation, loss normalisation, clipping, optimizer and scheduler steps, budgets, validation cadence,
TensorBoard, the progress bar, logging, checkpoints and exact resume.

One optimizer step (`Engine`): the objective's ``micro_batches`` micro-batches are drawn from its batch stream (a
pure function of the position, so resuming continues the same stream), every rank's ``batch_weight`` is summed, and
for each optimizer ``phases(step)`` names, in order: the objective's ``loss(phase, batch, scratch)`` of each
micro-batch is back-propagated scaled by ``world_size / total weight`` (DDP averages over ranks, so the gradient is
that of ``sum of losses / total weight``), the gradients of that optimizer's module are clipped, and it steps. Then
every scheduler steps once. ``scratch`` is one dict per micro-batch shared by the phases of a step (a GAN keeps the
generator's output there for the discriminator phase and the generator phase).

Loss units. ``loss(...).value`` and every entry of ``.metrics`` are SUMS in the units of ``batch_weight``: an LM
returns the NLL summed over its targets with weight = number of targets, so the step's loss is the token-weighted
mean; an objective whose losses are already batch means returns them with weight 1 per micro-batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textless.training.config import TrainingConfig


@dataclass
class OptimizerSpec:
    """One optimizer of an objective: what it updates (`module`, a key of `Objective.modules()`), its LR
    `scheduler` (stepped once per training step, also on steps that skip this optimizer), and the max gradient norm `clip` of its module (0: none)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    module: str
    clip: float = 0.0


@dataclass
class StepLoss:
    """A micro-batch's loss for one phase: `value` is back-propagated; `metrics` are logged (both sums, see the
    module docstring)."""

    value: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Context:
    """What the engine tells an objective: where it runs and how to talk to the other ranks."""

    accelerator: Any                # accelerate.Accelerator (process setup, autocast, collectives)
    rank: int
    world: int
    main: bool                       # global rank 0
    fsdp: bool                       # modules are FSDP2-sharded
    precision: str                   # accelerate's name: "no" (fp32) | "bf16" | "fp16"
    output_dir: Path
    step: int = 0                    # optimizer steps done

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def autocast(self):
        return self.accelerator.autocast()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            t = self.accelerator.reduce(t, reduction="sum")
        return t.tolist()

    def max(self, value: int) -> int:
        """Maximum over ranks."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t.item())


class Objective:
    """Base class of a training task; see the module docstring. Methods without a default must be implemented."""

    #: progress-bar label and the name in log lines
    name: str = "train"
    #: precisions the objective accepts (``auto`` = bf16 on a CUDA device that supports it, else fp32)
    precisions: tuple[str, ...] = ("auto", "fp32", "bf16")
    #: whether bf16 may autocast on a CPU (the LM: yes; the vocoder GAN: no)
    cpu_bf16: bool = False
    #: whether it can run under torchrun with DDP / FSDP
    distributed: bool = True
    fsdp: bool = False
    #: config fields that may differ when a run resumes (they apply from the resumed step on), besides the engine's
    resumable_settings: tuple[str, ...] = ()
    #: config fields that name inputs: compared through `inputs()` fingerprints, not as strings, when resuming
    input_settings: tuple[str, ...] = ()
    #: metric columns of the training history (besides "step") and of the validation history
    history_columns: tuple[str, ...] = ("loss",)
    valid_columns: tuple[str, ...] = ("loss",)

    def __init__(self, config: TrainingConfig):
        self.config = config

    # -- config -------------------------------------------------------------------------------------------------
    def check_config(self) -> None:
        """Raise `ConfigError` for invalid objective-specific settings (before anything is loaded)."""

    def device_request(self) -> str:
        """"auto", "cpu", "cuda" or "cuda:N": where a single process runs (torchrun ranks use their LOCAL_RANK)."""
        return "auto"

    # -- setup --------------------------------------------------------------------------------------------------
    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        """Read the data and build the models: fresh (the global RNGs were seeded with ``config.seed``) or from
        `checkpoint` (with its upgraded trainer `state`)."""
        raise NotImplementedError

    def modules(self) -> dict[str, torch.nn.Module]:
        """The trained modules, unwrapped (the engine moves, wraps and shards them)."""
        raise NotImplementedError

    def configure_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, OptimizerSpec]:
        """Optimizers over the (possibly sharded) `modules`; the engine restores their state when resuming."""
        raise NotImplementedError

    def bind(self, modules: dict[str, torch.nn.Module]) -> None:
        """The modules as the engine prepared them (DDP-wrapped, sharded, or as they were): use these for the
        training forward passes."""
        self.trained = modules

    def plan(self, ctx: Context) -> tuple[int | None, str]:
        """(number of optimizer steps the run lasts or None for "until max_seconds", what set it)."""
        if self.config.max_steps is not None:
            return self.config.max_steps, "max_steps"
        return None, "max_seconds"

    def describe(self, ctx: Context) -> str:
        """The start-up log line."""
        return ""

    # -- data and steps -----------------------------------------------------------------------------------------
    @property
    def micro_batches(self) -> int:
        """Micro-batches per optimizer step (gradient accumulation)."""
        return 1

    def batches(self, start: int) -> Iterator[Any]:
        """This rank's micro-batches from micro-batch number `start` on (a pure function of the position)."""
        raise NotImplementedError

    def prefetch(self) -> int:
        """Batches a background thread prepares ahead (0: inline)."""
        return 0

    def batch_weight(self, batch: Any) -> float:
        """How much `batch` counts in the step's loss (see the module docstring)."""
        return 1.0

    def phases(self, step: int) -> list[str]:
        """Names of the optimizers to step at (0-based) `step`, in order (default: all, in declaration order)."""
        return list(self.optimizer_names)

    def loss(self, phase: str, batch: Any, scratch: dict[str, Any]) -> StepLoss:
        raise NotImplementedError

    def after_step(self, ctx: Context, step: int, total_weight: float) -> None:
        """Called on every rank after optimizer step `step` (1-based): counters and the like."""

    def throughput(self, seconds: float) -> tuple[str, float]:
        """(name, value) of the step's speed for the log line and TensorBoard, e.g. ("tokens/s", 51200.0)."""
        return "s/step", seconds

    # -- validation ---------------------------------------------------------------------------------------------
    def evaluate(self, ctx: Context, writer) -> dict[str, float] | None:
        """Validation metrics (every rank calls it; return the same values on each), or None without validation
        data. `writer` is the TensorBoard SummaryWriter on the main rank (None elsewhere or when disabled)."""
        return None

    def valid_note(self) -> str:
        """Appended to the validation log line (e.g. how many utterances were measured)."""
        return ""

    # -- persistence --------------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        """Fingerprints of the inputs named by `input_settings` (compared when resuming)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Extra trainer state (tensors and plain Python only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`'s keys from a (upgraded) trainer state."""

    def upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A version-1 trainer state (no format key) in the current layout (see `textless.training.checkpoint`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot resume a version-1 checkpoint")

    def save_checkpoint_files(self, directory: Path, states: dict[str, dict[str, torch.Tensor]] | None) -> None:
        """Write the models into a checkpoint `directory` (main rank). `states`: full state dicts gathered from
        sharded modules (FSDP), else None (save the live modules)."""
        raise NotImplementedError

    def save_final(self, directory: Path, states: dict[str, dict[str, torch.Tensor]] | None) -> Path:
        """Write the final model(s) to `directory` (main rank); returns it."""
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------------------------------------
    optimizer_names: tuple[str, ...] = ()
