"""The one training engine: every trainer of textless is an `Objective` run by `train_objective`.

What the engine does for every objective (see `textless.training.objective` for what an objective provides):

* **Processes.** One code path for a CPU process, ``torchrun`` on CPUs (gloo) or GPUs (nccl), single- or multi-node,
  through `accelerate` (process setup, ``prepare`` for DDP wrapping and autocast, ``no_sync``, ``backward``,
  collectives; started by plain ``torchrun``, no ``accelerate launch`` or config file). The data stream, LR schedules
  and checkpoints are ours: accelerate's dataloader wrapper, its scheduler wrapper (which steps once per process)
  and ``save_state`` (pickles) would break exact, pickle-free resume. ``strategy=fsdp`` shards the objective's
  modules with FSDP2 (`textless.training.distributed`). Every rank keys on its *global* rank; only rank 0 writes
  checkpoints, ``final/``, ``train_config.yaml``, TensorBoard events and log lines. Multi-node: every node runs the
  same command under torchrun; ``output_dir`` must be on a filesystem every node mounts at the same path (checked at
  start-up), the data readable at the same path on every node, and resuming needs the same WORLD_SIZE.
* **Precision.** ``auto`` = bf16 autocast on a CUDA device that supports it, else fp32; under FSDP mixed precision is
  FSDP's ``MixedPrecisionPolicy`` instead of autocast.
* **A step.** Gradient accumulation over the objective's micro-batches, loss normalisation by the step's total weight
  over all micro-batches and ranks (counted before the forward passes: accumulation and DDP give exactly the gradient
  of the big-batch loss), one or several optimizers in phases (a GAN steps its discriminator, then its generator),
  gradient clipping per optimizer, one scheduler step per optimizer step.
* **Budgets.** ``max_steps`` (and whatever else the objective's ``plan`` counts, e.g. tokens), ``max_seconds`` of
  wall clock summed over resumed runs; the run ends with a checkpoint and ``final/`` either way.
* **Validation** every ``eval_every`` steps and at the end; **TensorBoard** (``tensorboard/``): every metric, each
  optimizer's learning rate and gradient norm, the speed; **a progress bar** and a log line every ``log_every``
  steps.
* **Checkpoints and exact resume** (`textless.training.checkpoint`): the model(s), every optimizer and scheduler,
  every rank's RNG states, the data position (the step) and the histories; rerunning the same command continues from
  the latest checkpoint and on CPU (``torch.use_deterministic_algorithms``) the resumed run's losses and final weights
  equal the uninterrupted run's bit for bit. A run resumes only what it was started with: the inputs (fingerprints)
  and every setting must be the same, except those that can change (`RESUMABLE_SETTINGS` and the objective's):
  anything else stops the run with the list of differences; ``restart=true`` starts over.

The run ends with a barrier and a short pause so that nothing is in flight when it returns (`settle`); the process
group stays up for later runs in the same processes (``textless`` commands destroy it before exiting).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from textless.errors import ConfigError
from textless.training.checkpoint import (
    CHECKPOINTS_DIR,
    clean_checkpoint_temporaries,
    columns_from_tensors,
    columns_to_tensors,
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from textless.training.config import PRECISIONS, RESUMABLE_SETTINGS, check_training_config, config_dict, config_yaml
from textless.training.distributed import (
    check_shared_output_dir,
    full_model_state,
    full_optimizer_state,
    gather_objects,
    load_full_optimizer_state,
    local_value,
    settle,
    shard_model,
)
from textless.training.objective import Context, Objective, OptimizerSpec
from textless.training.threads import deterministic, prefetch
from textless.utils import runs

logger = logging.getLogger(__name__)

FINAL_DIR = "final"
RESTART_HINT = "pass restart=true to start over, or use a new output_dir"
SPEED_TAGS = {"s/step": "seconds_per_step", "tokens/s": "tokens_per_s"}  # TensorBoard names of the speed units
TENSORBOARD_DIR = "tensorboard"


class TrainHooks:
    """Callbacks for tests and integrations; every method is a no-op by default. Called on every rank."""

    def on_batch(self, step: int, batch: Any) -> None:
        """Each micro-batch of optimizer step `step` (1-based), before its forward pass."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After checkpoint `step` is complete and `latest` points to it."""


@dataclass
class TrainResult:
    step: int                                        # last optimizer step done
    history: dict[str, list[float]]                  # "step" + the objective's metric columns, resumed runs included
    valid_history: dict[str, list[float]]            # "step" + validation metrics
    stopped_by: str                                  # max_steps | max_seconds | what the objective's plan names
    output_dir: Path
    final_model: Path
    checkpoint: Path | None                          # the latest checkpoint
    resumed_from: int | None = None                  # step of the checkpoint this run started from
    tensorboard_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the objective's counters (e.g. tokens_seen)

    def _pairs(self, columns: dict[str, list[float]], key: str) -> list[tuple[int, float]]:
        return [(int(s), v) for s, v in zip(columns["step"], columns.get(key, []))]

    @property
    def losses(self) -> list[tuple[int, float]]:
        """(step, train loss) of every step (objectives with a "loss" column)."""
        return self._pairs(self.history, "loss")

    @property
    def valid_losses(self) -> list[tuple[int, float]]:
        """(step, validation loss) (objectives with a "loss" validation column)."""
        return self._pairs(self.valid_history, "loss")

    @property
    def tokens_seen(self) -> int:
        return int(self.extra.get("tokens_seen", 0))


def resolve_precision(precision: str) -> str:
    """accelerate's name of the precision to train in: "no" (fp32), "bf16" or "fp16"."""
    mixed = PRECISIONS[precision]
    if mixed is None:
        mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return mixed


def train_objective(objective: Objective, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) `objective` as its config says. Every rank of a torchrun job calls it."""
    cfg = objective.config
    check_training_config(cfg, objective.precisions)
    objective.check_config()
    accelerator = _make_accelerator(objective)
    with deterministic(accelerator.device.type == "cpu"):
        result = _Run(objective, accelerator, hooks or TrainHooks()).run()
    if accelerator.num_processes > 1:
        settle(accelerator.wait_for_everyone)
    return result


def end_process_group() -> None:
    """Destroy the process group a training run set up (commands call it before the process exits)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _make_accelerator(objective: Objective):
    from accelerate import Accelerator

    cfg = objective.config
    request = objective.device_request()
    if request not in ("auto", "cpu"):
        try:
            device = torch.device(request)
        except RuntimeError as e:
            raise ConfigError(f"device {request!r}: {e}") from None
        if device.type != "cuda":
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {request!r}")
        if not torch.cuda.is_available():
            raise ConfigError(f"device {request!r} requested but CUDA is not available")
        if device.index is not None:
            torch.cuda.set_device(device.index)
    cpu = request == "cpu" or not torch.cuda.is_available()
    precision = resolve_precision(cfg.precision)
    if cpu and precision == "bf16" and PRECISIONS[cfg.precision] is not None and not objective.cpu_bf16:
        raise ConfigError(f"precision={cfg.precision} autocasts on CUDA only for {objective.name}; this run is on the "
                          f"CPU (use fp32 or auto)")
    # under FSDP, mixed precision is FSDP's MixedPrecisionPolicy, not accelerate's autocast
    return Accelerator(cpu=cpu, mixed_precision="no" if cfg.strategy == "fsdp" else precision)


class _Run:
    def __init__(self, objective: Objective, accelerator, hooks: TrainHooks):
        self.obj, self.cfg, self.acc, self.hooks = objective, objective.config, accelerator, hooks
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.main = accelerator.is_main_process
        self.out = Path(self.cfg.output_dir)
        self.precision = resolve_precision(self.cfg.precision)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.fsdp = self.cfg.strategy == "fsdp" and distributed  # a lone process trains unsharded
        self.ctx = Context(accelerator=accelerator, rank=self.rank, world=self.world, main=self.main, fsdp=self.fsdp,
                           precision=self.precision, output_dir=self.out)
        self.bar = None

    def log(self, message: str, level: int = logging.INFO) -> None:
        if self.main:
            logger.log(level, message)

    # setup ----------------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        obj, cfg = self.obj, self.cfg
        if self.world > 1 and not obj.distributed:
            raise ConfigError(f"{obj.name} runs in one process; this job has {self.world} (run it without torchrun)")
        if self.fsdp and not obj.fsdp:
            raise ConfigError(f"{obj.name} does not support strategy=fsdp; use auto or ddp")
        if cfg.strategy == "fsdp" and not self.fsdp:
            self.log("strategy=fsdp in a single process without torch.distributed: training unsharded")
        if self.main:
            if cfg.restart and (self.out / CHECKPOINTS_DIR).exists():
                self.log(f"restart=true: removing the checkpoints in {self.out / CHECKPOINTS_DIR}")
                shutil.rmtree(self.out / CHECKPOINTS_DIR)
            clean_checkpoint_temporaries(self.out)
        self.acc.wait_for_everyone()
        check_shared_output_dir(self.out, self.world, self.main, self.acc.wait_for_everyone)
        self.checkpoint = latest_checkpoint(self.out)
        self.state: dict[str, Any] | None = None
        if self.checkpoint is not None:
            self.state = load_trainer_state(self.checkpoint)
            if "format" not in self.state:
                self.state = obj.upgrade_state(self.state)
            if self.state["world_size"] != self.world:
                raise ConfigError(f"checkpoint {self.checkpoint} was written by {self.state['world_size']} "
                                  f"processes, this run has {self.world}: resume with the same number of processes")
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if self.state is not None:
            self._check_settings()
        obj.build(self.ctx, self.checkpoint, self.state)
        if self.state is not None:
            self._check_inputs()
            self.log(f"resuming from {self.checkpoint} (step {self.state['step']})")

        modules = obj.modules()
        for module in modules.values():
            module.train()
        if self.fsdp:  # sharded in place (the optimizer must see the sharded parameters)
            modules = {name: shard_model(m, self.acc.device, self.precision) for name, m in modules.items()}
        specs = obj.configure_optimizers(modules)
        obj.optimizer_names = tuple(specs)
        if not self.fsdp:
            prepared = self.acc.prepare(*modules.values(), *(s.optimizer for s in specs.values()))
            prepared = prepared if isinstance(prepared, tuple) else (prepared,)
            wrapped = dict(zip(modules, prepared[: len(modules)]))
            for spec, opt in zip(specs.values(), prepared[len(modules):]):
                spec.optimizer = opt
        else:
            wrapped = modules
        self.modules, self.wrapped, self.specs = modules, wrapped, specs
        obj.bind(wrapped)
        self.total_steps, self.schedule_by = obj.plan(self.ctx)
        self.step, self.elapsed_before = 0, 0.0
        self.history: dict[str, list[float]] = {k: [] for k in ("step", *obj.history_columns)}
        self.valid_history: dict[str, list[float]] = {k: [] for k in ("step", *obj.valid_columns)}
        if self.state is not None:
            self._restore(self.state)
        else:
            # different dropout masks on different ranks (the weights were initialised identically above)
            torch.manual_seed(cfg.seed + 1 + self.rank)
        self.last_saved = self.step if self.state is not None else None

    def _state_key(self, kind: str, name: str) -> str:
        return kind if len(self.specs) == 1 else f"{kind}_{name}"

    def _restore(self, state: dict[str, Any]) -> None:
        for name, spec in self.specs.items():
            saved = state[self._state_key("optimizer", name)]
            if self.fsdp:  # full state on rank 0, scattered into the shards
                load_full_optimizer_state(self.modules[spec.module], spec.optimizer, saved if self.main else None)
            else:
                spec.optimizer.load_state_dict(saved)
            spec.scheduler.load_state_dict(state[self._state_key("scheduler", name)])
        set_rng_state(state["rng"][self.rank])
        self.step = self.ctx.step = int(state["step"])
        self.elapsed_before = float(state["elapsed_seconds"])
        self.history = columns_from_tensors(state["history"])
        self.valid_history = columns_from_tensors(state["valid_history"])
        self.obj.load_state_dict(state)

    def _check_settings(self) -> None:
        """The resumed run must be the same run: the same settings but those that may change (before anything is
        built, so that the message lists every difference rather than the first weight that does not fit)."""
        obj, old = self.obj, self.state["config"]
        now = config_dict(self.cfg)
        mutable = set(RESUMABLE_SETTINGS) | set(obj.resumable_settings)
        changes = runs.differences(old, now, ignore=mutable | set(obj.input_settings))
        runs.refuse(f"checkpoint {self.checkpoint}", changes, RESTART_HINT)
        applied = runs.differences(old, now, ignore=set(now) - mutable)
        if applied:
            self.log(f"resuming with changed settings, applied from step {self.state['step']}: "
                     f"{runs.describe(applied)}")

    def _check_inputs(self) -> None:
        """...and the same inputs (their fingerprints; checkpoints of textless <= 0.1 recorded none)."""
        recorded = self.state.get("inputs") or {}
        changes = [(f"{k} (contents)", recorded[k], v) for k, v in self.obj.inputs().items()
                   if k in recorded and recorded[k] != v]
        runs.refuse(f"checkpoint {self.checkpoint}", changes, RESTART_HINT)

    # checkpoints ----------------------------------------------------------------------------------------------------
    def _full_states(self) -> dict[str, dict[str, torch.Tensor]] | None:
        """Full model state dicts under FSDP (a collective; on rank 0), else None (the live modules are saved)."""
        if not self.fsdp:
            return None
        return {name: full_model_state(m) for name, m in self.modules.items()}

    def _optimizer_states(self) -> dict[str, Any]:
        states = {}
        for name, spec in self.specs.items():
            if self.fsdp:
                states[name] = full_optimizer_state(self.modules[spec.module], spec.optimizer)
            else:
                states[name] = spec.optimizer.state_dict() if self.main else None
        return states

    def _save(self, elapsed: float) -> Path | None:
        rng = gather_objects(rng_state(), self.world)  # collectives: every rank
        # the models first: gathering a model's state reshards FSDP parameters that a forward pass without backward
        # (validation) left unsharded, which the optimizer's parameter names are then resolved against
        models = self._full_states()
        optimizers = self._optimizer_states()
        if self.main:
            state = {"step": self.step, "elapsed_seconds": elapsed, "world_size": self.world, "rng": rng,
                     "config": config_dict(self.cfg), "inputs": self.obj.inputs(),
                     "history": columns_to_tensors(self.history),
                     "valid_history": columns_to_tensors(self.valid_history), **self.obj.state_dict()}
            for name, spec in self.specs.items():
                state[self._state_key("optimizer", name)] = optimizers[name]
                state[self._state_key("scheduler", name)] = spec.scheduler.state_dict()
            save_checkpoint(self.out, self.step, state, lambda d: self.obj.save_checkpoint_files(d, models),
                            config_yaml(self.cfg), keep=self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()
        path = latest_checkpoint(self.out)
        self.last_saved = self.step
        if path is not None:
            self.hooks.on_checkpoint(self.step, path)
        return path

    # loop -----------------------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self._setup()
        cfg, obj = self.cfg, self.obj
        writer = None
        if cfg.tensorboard and self.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / TENSORBOARD_DIR))
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.yaml").write_text(config_yaml(cfg), encoding="utf-8")
        self.log(obj.describe(self.ctx))
        per_step = obj.micro_batches
        stream, stop_prefetch = prefetch(obj.batches(self.step * per_step), obj.prefetch())
        self.bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc=obj.name,
                        disable=not (cfg.progress and self.main))
        start = time.monotonic()
        stopped_by = self.schedule_by
        last_evaluated = None
        try:
            while self.total_steps is None or self.step < self.total_steps:
                elapsed = self.elapsed_before + time.monotonic() - start
                if cfg.max_seconds is not None and self.ctx.sum([float(elapsed >= cfg.max_seconds)])[0] > 0:
                    stopped_by = "max_seconds"
                    break
                t0 = time.monotonic()
                metrics, info = self._train_step(stream)
                self._record(metrics, info, time.monotonic() - t0, writer)
                if self.step % cfg.eval_every == 0:
                    self._evaluate(writer)
                    last_evaluated = self.step
                if self.step % cfg.save_every == 0:
                    self._save(self.elapsed_before + time.monotonic() - start)
            done = self.valid_history["step"] and self.valid_history["step"][-1] == self.step
            if last_evaluated != self.step and not done:
                self._evaluate(writer)
            if self.last_saved != self.step:
                self._save(self.elapsed_before + time.monotonic() - start)
        finally:
            stop_prefetch()
            self.bar.close()
            self.bar = None
            if writer is not None:
                writer.close()
        final = self.out / FINAL_DIR
        states = self._full_states()  # a collective under FSDP
        if self.main:
            obj.save_final(final, states)
            self.log(f"final model: {final}")
        self.acc.wait_for_everyone()
        return TrainResult(step=self.step, history=self.history, valid_history=self.valid_history,
                           stopped_by=stopped_by, output_dir=self.out, final_model=final,
                           checkpoint=latest_checkpoint(self.out),
                           resumed_from=None if self.state is None else int(self.state["step"]),
                           tensorboard_dir=self.out / TENSORBOARD_DIR if cfg.tensorboard else None,
                           extra=obj.state_dict())

    def _evaluate(self, writer) -> None:
        values = self.obj.evaluate(self.ctx, writer)
        if values is None:
            return
        row = {"step": float(self.step), **values}
        for k in self.valid_history:
            self.valid_history[k].append(row.get(k, math.nan))
        note = self.obj.valid_note()
        self.log(f"step {self.step} valid " + " ".join(f"{k} {v:.4f}" for k, v in values.items())
                 + (f" {note}" if note else ""))
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(f"valid/{k}", v, self.step)

    def _record(self, metrics: dict[str, float], info: dict[str, float], dt: float, writer) -> None:
        row = {"step": float(self.step), **metrics}
        for k in self.history:
            self.history[k].append(row.get(k, math.nan))
        speed_name, speed = self.obj.throughput(dt)
        lr = info[f"lr_{self.obj.optimizer_names[0]}"]
        first = next(iter(metrics))
        self.bar.update(1)
        self.bar.set_postfix({first: f"{metrics[first]:.4f}", "lr": f"{lr:.2e}"})
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"train/{k}", v, self.step)
            single = len(self.specs) == 1
            for k, v in info.items():
                writer.add_scalar(f"train/{k.rsplit('_', 1)[0] if single else k}", v, self.step)
            if not single:
                writer.add_scalar("train/lr", lr, self.step)  # the first optimizer's
            writer.add_scalar(f"train/{SPEED_TAGS.get(speed_name, speed_name.replace('/', '_per_'))}", speed,
                              self.step)
        if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
            total = f"/{self.total_steps}" if self.total_steps is not None else ""
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            single = len(self.specs) == 1
            norms = " ".join(f"{'grad_norm' if single else k} {v:.3f}" for k, v in info.items()
                             if k.startswith("grad_norm"))
            rate = f"{speed:.0f}" if speed >= 100 else f"{speed:.2f}"
            self.log(f"step {self.step}{total} {shown} lr {lr:.3e} {norms} {speed_name} {rate}")

    def _micro_context(self, phase_modules: list[torch.nn.Module], sync: bool):
        """DDP's no_sync on the intermediate micro-batches (FSDP: `set_requires_gradient_sync` instead)."""
        if self.fsdp:
            for m in phase_modules:
                m.set_requires_gradient_sync(sync)
            return contextlib.nullcontext()
        if sync or self.world == 1:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for m in phase_modules:
            stack.enter_context(self.acc.no_sync(m))
        return stack

    def _train_step(self, stream: Iterator[Any]) -> tuple[dict[str, float], dict[str, float]]:
        """One optimizer step; returns (metrics: the step's weighted means, info: lr and gradient norm per
        optimizer)."""
        obj = self.obj
        micro = [next(stream) for _ in range(obj.micro_batches)]
        for batch in micro:
            self.hooks.on_batch(self.step + 1, batch)
        local = sum(obj.batch_weight(b) for b in micro)
        total = max(self.ctx.sum([float(local)])[0], 1e-12)
        # DDP averages gradients over ranks: scale by world so that the result is the gradient of sum / total
        scale = self.world / total
        sums: dict[str, float] = {}
        info: dict[str, float] = {}
        scratch: list[dict[str, Any]] = [{} for _ in micro]
        for phase in obj.phases(self.step):
            spec = self.specs[phase]
            module = self.wrapped[spec.module]
            for i, batch in enumerate(micro):
                with self._micro_context([module], i == len(micro) - 1):
                    loss = obj.loss(phase, batch, scratch[i])
                    self.acc.backward(loss.value * scale)
                for k, v in loss.metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
            info[f"lr_{phase}"] = float(spec.optimizer.param_groups[0]["lr"])
            info[f"grad_norm_{phase}"] = self._clip(spec)
            spec.optimizer.step()
            spec.optimizer.zero_grad(set_to_none=True)
        for name, spec in self.specs.items():
            info.setdefault(f"lr_{name}", float(spec.optimizer.param_groups[0]["lr"]))
            spec.scheduler.step()
        self.step += 1
        self.ctx.step = self.step
        obj.after_step(self.ctx, self.step, total)
        keys = [k for k in obj.history_columns if k in sums] + [k for k in sums if k not in obj.history_columns]
        values = self.ctx.sum([sums[k] for k in keys])
        return {k: v / total for k, v in zip(keys, values)}, info

    def _clip(self, spec: OptimizerSpec) -> float:
        """Total L2 norm of the optimizer's module's gradients before clipping; clips to ``spec.clip`` when > 0."""
        params = [p for p in self.modules[spec.module].parameters() if p.requires_grad]
        if self.fsdp:  # DTensor gradients: the norms are reduced over the shards, full_tensor() replicates them
            if spec.clip > 0:
                return float(local_value(torch.nn.utils.clip_grad_norm_(params, spec.clip)))
            grads = [p.grad for p in params if p.grad is not None]
            return float(local_value(torch.nn.utils.get_total_norm(grads))) if grads else 0.0
        if spec.clip > 0:
            return float(self.acc.clip_grad_norm_(params, spec.clip))
        grads = [p.grad for p in params if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
