"""`textless train`: train a unit LM on packed unit datasets, resumably.

Recipe (slamkit's, see experiments/twist.yaml): AdamW, linear warmup over ``warmup_fraction`` of the steps then cosine
decay from ``lr`` to ``min_lr``, gradient clipping, gradient accumulation, sequence packing (`textless.lm.data`), bf16
autocast on CUDA. The loss is the token-weighted mean NLL of the optimizer step: every micro-batch's NLL *sum* is
divided by the number of predicted tokens of the whole step, all micro-batches and ranks together (counted before the
forward passes, so accumulation and DDP give exactly the gradient of the big-batch loss).

Why `accelerate`: one code path for a CPU process, ``torchrun`` on CPU (gloo) or GPUs (nccl), and bf16 autocast,
started by plain ``torchrun`` (no ``accelerate launch`` or config file needed). Only its process setup,
``prepare`` (DDP wrapping, autocast), ``no_sync``, ``backward``, ``clip_grad_norm_`` and collectives are used; the
data stream, LR schedule and checkpoints are ours, because accelerate's dataloader wrapper, its scheduler wrapper
(which steps once per process) and ``save_state`` (pickles) would break exact, pickle-free resume.
DDP is used for ``auto`` / ``ddp``.

``strategy=fsdp`` (fully sharded data parallel, for models whose weights + gradients + AdamW state do not fit on one
GPU) uses torch's FSDP2 (``torch.distributed.fsdp.fully_shard``) directly, not accelerate's FSDP plugin: accelerate
only enables FSDP for GPU jobs (so the CPU/gloo tests could not exercise it), its plugin reads its settings from
environment variables / ``accelerate launch``, and its ``prepare`` and ``save_state`` would again own the model
wrapping and the (pickled, sharded) checkpoint format. FSDP2 needs three calls: `shard_model` applies
``fully_shard`` to every transformer block (the model's ``_no_split_modules`` classes) and then to the root (the
embeddings, the final norm and the tied LM head), with ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``
when the precision is bf16 (the default on CUDA; fp32 on CPU; fp16 is refused: it would need a sharded grad scaler);
``set_requires_gradient_sync(False)`` on the intermediate micro-batches replaces DDP's ``no_sync``;
``torch.nn.utils.clip_grad_norm_`` computes the global norm of the DTensor gradients. FSDP averages gradients over
ranks as DDP does, so the loss normalisation below is the same. Every rank builds (or loads) the full model on the
CPU; rank 0's weights are broadcast before sharding (as DDP does); each rank then keeps only its shard on the
device. Checkpoints keep the same layout: `full_state_dicts` gathers the full model and optimizer state dicts on rank
0 (``get_model_state_dict`` / ``get_optimizer_state_dict``, ``full_state_dict=True, cpu_offload=True``), the model
is written by ``UnitLM.save_pretrained`` of a plain copy (`plain_unit_lm`: a normal Hugging Face directory) and the
optimizer state as plain tensors keyed by parameter name; on resume every rank loads the model directory and rank 0's
optimizer state is scattered with ``set_optimizer_state_dict(full_state_dict=True, broadcast_from_rank0=True)``.
A single process without a process group trains unsharded (there is nothing to shard over).

Weight decay applies to every parameter with 2+ dimensions (linear layers and the embedding tables, as Hugging Face's
Trainer, which slamkit uses, does) and not to 1-D ones (norm gains, biases).

Initialisation: ``init=scratch`` builds ``preset`` (a `textless.lm.presets` name or a config.json path) with random
weights, ``init=twist`` starts from the text LM ``base_model`` (`UnitLM.from_text_lm`); the vocabulary is
``UnitVocab.default(vocab_size of the units)``. When ``output_dir`` already holds a checkpoint, training resumes from
it whatever ``init`` says (``init=resume`` insists on one). The units must fit the model (`UnitLM.check_units`) before
anything is trained.

Exact resume: a checkpoint holds the model, the optimizer and scheduler states, every rank's RNG states and the data
position (the step: the packed stream is a pure function of it). Rerunning the same command with the same
``output_dir`` continues from ``checkpoints/latest``; on CPU (``torch.use_deterministic_algorithms``) the resumed
run's losses and final weights equal the uninterrupted run's bit for bit (tests/test_lm_train.py kills a run with
SIGKILL to check it).

Multi-node. Every node runs the same command under ``torchrun``, with the number of nodes, its own node index and a
common rendezvous point (a host:port every node can reach, usually node 0's)::

    torchrun --nnodes 2 --nproc-per-node 8 --node-rank 0 --rdzv-backend c10d --rdzv-endpoint node0:29500 \\
        -m textless.cli train --config twist train_dataset=/shared/units/train output_dir=/shared/runs/twist ...
    # on node 1: the same line with --node-rank 1

``--node-rank`` only counts for the static form (``--master-addr node0 --master-port 29500 --node-rank i``, which
the tests use): the c10d backend numbers the nodes itself, so global rank 0 may run on any node. torchrun sets
``WORLD_SIZE`` (all processes of all nodes), ``RANK`` (the global rank, 0 .. WORLD_SIZE - 1) and ``LOCAL_RANK`` (the
index on this node, which only picks the GPU). Everything here keys on the *global* rank (accelerate's
``process_index`` / ``is_main_process``, never LOCAL_RANK): rank r takes global batch ``s * WORLD_SIZE + r``, and
only global rank 0 writes checkpoints, ``final/``, ``train_config.yaml``, TensorBoard events and log lines (the
LOCAL_RANK 0 processes of the other nodes write nothing). Every rank reads ``output_dir`` (the checkpoint to resume
from, and ``latest`` after each save), so ``output_dir`` must be on a filesystem every node mounts at the same path
(NFS, Lustre...): at start-up rank 0 writes a probe file there and if any rank cannot see it (within
``$TEXTLESS_PROBE_WAIT_SECONDS``, default 5) the run stops with a `ConfigError`, rather than ranks silently resuming
from different states. The unit datasets must be readable at the same path on every node (shared, or identical
copies). Resuming needs the same WORLD_SIZE (nodes x processes per node).

Attention backend: ``attn_implementation`` (None = transformers' default, sdpa; eager; flash_attention_2 / 3 when
installed) is passed to the model constructors (`textless.lm.model`); an architecture that ignores restarting
position ids cannot train packed with flash attention (`textless.lm.data.packing_mode`): a `ConfigError` says so.

Budgets: ``max_steps`` / ``max_tokens`` (tokens = contexts x context_length, padding included) set the LR schedule's
length (the smaller one when both are given); ``max_seconds`` (wall clock, summed over resumed runs) may end training
earlier, after which a checkpoint and ``final/`` are written as for a normal end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.data.units import read_units
from textless.errors import ConfigError
from textless.lm.checkpoint import (
    CHECKPOINTS_DIR,
    MODEL_DIR,
    clean_checkpoint_temporaries,
    latest_checkpoint,
    load_trainer_state,
    quiet_progress_bars,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from textless.lm.data import PackedBatch, PackedUnitDataset, PackingConfig, packed_nll, packing_mode
from textless.utils.training import deterministic, prefetch

FINAL_DIR = "final"
TENSORBOARD_DIR = "tensorboard"
INITS = ("scratch", "twist", "resume")
PRECISIONS = {"auto": None, "fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}
STRATEGIES = ("auto", "ddp", "fsdp")
# Changing these between a checkpoint and its resumption changes what the run computes (a warning names them).
_TRAJECTORY_FIELDS = ("train_dataset", "context_length", "batch_size", "grad_accum", "lr", "min_lr", "warmup_fraction",
                      "weight_decay", "betas", "clip", "max_steps", "max_tokens", "seed", "precision",
                      "attn_implementation")
# how long a rank looks for rank 0's probe file in output_dir (slow shared filesystems); the environment may change it
PROBE_WAIT_ENV = "TEXTLESS_PROBE_WAIT_SECONDS"
_PROBE_WAIT_SECONDS = 5.0


@dataclass
class TrainConfig:
    train_dataset: str = ""                # unit dataset directory (textless tokenize output)
    valid_dataset: str | None = None       # unit dataset directory for the validation loss
    init: str = "scratch"                  # scratch (preset) | twist (from a text LM) | resume (needs a checkpoint)
    preset: str = "tiny"                   # scratch: tiny, small, gslm, twist-350m, 350m, or a config.json path
    base_model: str | None = None          # twist: local Hugging Face directory (or .gguf path) of the text LM
    gguf_file: str | None = None           # twist: GGUF file name inside base_model
    attn_implementation: str | None = None  # null (transformers' default: sdpa) | sdpa | eager | flash_attention_2/3
    output_dir: str = "outputs/lm"
    context_length: int = 1024
    batch_size: int = 8                    # contexts per rank per micro-batch
    grad_accum: int = 1                    # micro-batches per optimizer step
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup_fraction: float = 0.01
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    clip: float = 0.5                      # max gradient norm (0: no clipping)
    max_steps: int | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None
    eval_every: int = 100
    eval_batches: int | None = None        # cap on validation batches (None: the whole valid set)
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    precision: str = "auto"                # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    seed: int = 0
    num_workers: int = 0                   # >0: a background thread prepares this many batches ahead
    progress: bool = True
    tensorboard: bool = True
    strategy: str = "auto"                 # auto | ddp | fsdp


@dataclass
class TrainResult:
    step: int                                           # last optimizer step done
    losses: list[tuple[int, float]]                     # (step, train loss) for every step, resumed runs included
    valid_losses: list[tuple[int, float]]               # (step, token-weighted validation NLL)
    tokens_seen: int
    stopped_by: str                                     # max_steps | max_tokens | max_seconds
    output_dir: Path
    final_model: Path
    checkpoint: Path | None                             # the latest checkpoint
    resumed_from: int | None = None                     # step of the checkpoint this run started from
    tensorboard_dir: Path | None = None


class TrainHooks:
    """Callbacks for tests and integrations; every method is a no-op by default. Called on every rank."""

    def on_batch(self, step: int, batch: PackedBatch) -> None:
        """Each micro-batch of optimizer step `step` (1-based), before its forward pass."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After checkpoint `step` is complete and `latest` points to it."""


# --------------------------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------------------------


def lr_lambda(total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> Callable[[int], float]:
    """LR multiplier after `s` optimizer steps (s = 0 for the first): linear warmup, then cosine to min_lr / lr."""
    floor = min_lr / lr if lr > 0 else 0.0

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        decay = max(total_steps - warmup_steps, 1)
        progress = min(max(s - warmup_steps, 0) / decay, 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on parameters with >= 2 dims (matrices, embeddings), none on 1-D ones (norms, biases)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _schedule_steps(cfg: TrainConfig, tokens_per_step: int) -> tuple[int, str]:
    candidates = []
    if cfg.max_steps is not None:
        candidates.append((cfg.max_steps, "max_steps"))
    if cfg.max_tokens is not None:
        candidates.append((math.ceil(cfg.max_tokens / tokens_per_step), "max_tokens"))
    if not candidates:
        raise ConfigError("give max_steps or max_tokens (they set the LR schedule's length; max_seconds only stops "
                          "training early)")
    return min(candidates)


def _check_config(cfg: TrainConfig) -> None:
    if not cfg.train_dataset or cfg.train_dataset == "???":
        raise ConfigError("train_dataset is required (a unit dataset directory written by `textless tokenize`)")
    if cfg.init not in INITS:
        raise ConfigError(f"init must be one of {', '.join(INITS)}, got {cfg.init!r}")
    if cfg.init == "twist" and not cfg.base_model:
        raise ConfigError("init=twist needs base_model (a local Hugging Face text LM directory, a .gguf file or "
                          "offline:smollm2-135m)")
    from textless.lm.model import check_attn_implementation

    check_attn_implementation(cfg.attn_implementation)
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {cfg.strategy!r}")
    if cfg.strategy == "fsdp" and cfg.precision == "fp16":
        raise ConfigError("strategy=fsdp does not support precision=fp16 (it needs a sharded gradient scaler); use "
                          "bf16 or fp32")
    positive = {"context_length": cfg.context_length, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                "eval_every": cfg.eval_every, "save_every": cfg.save_every, "log_every": cfg.log_every,
                "keep_checkpoints": cfg.keep_checkpoints}
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if cfg.context_length < 2:
        raise ConfigError(f"context_length must be >= 2, got {cfg.context_length}")
    for name in ("max_steps", "max_tokens", "eval_batches"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 (or null), got {value}")
    if cfg.max_seconds is not None and cfg.max_seconds <= 0:
        raise ConfigError(f"max_seconds must be > 0 (or null), got {cfg.max_seconds}")
    if not 0 <= cfg.warmup_fraction < 1:
        raise ConfigError(f"warmup_fraction must be in [0, 1), got {cfg.warmup_fraction}")
    if cfg.lr <= 0 or cfg.min_lr < 0 or cfg.min_lr > cfg.lr:
        raise ConfigError(f"need 0 <= min_lr <= lr and lr > 0, got lr={cfg.lr} min_lr={cfg.min_lr}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {list(cfg.betas)}")
    if cfg.clip < 0:
        raise ConfigError(f"clip must be >= 0, got {cfg.clip}")


def _precision(cfg: TrainConfig) -> str:
    """accelerate's name of the precision to train in: "no" (fp32), "bf16" or "fp16"."""
    mixed = PRECISIONS[cfg.precision]
    if mixed is None:
        mixed = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return mixed


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    # under FSDP, mixed precision is FSDP's MixedPrecisionPolicy, not accelerate's autocast
    mixed = "no" if cfg.strategy == "fsdp" else _precision(cfg)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed)


# --------------------------------------------------------------------------------------------------------------------
# FSDP2 helpers (collectives: every rank calls them, in the same order)
# --------------------------------------------------------------------------------------------------------------------


def _transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks: modules of its ``_no_split_modules`` classes (HF's own list), else the
    entries of its ``layers`` ModuleList."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        blocks = [m for name, lst in model.named_modules() if name.split(".")[-1] == "layers"
                  and isinstance(lst, torch.nn.ModuleList) for m in lst]
    return blocks


def shard_model(model: torch.nn.Module, device: torch.device, precision: str = "no") -> torch.nn.Module:
    """FSDP2 in place: rank 0's weights broadcast, ``fully_shard`` on each transformer block, then on the root.

    `precision` "bf16" computes in bf16 and reduces gradients in fp32 (the sharded parameters and the optimizer stay
    fp32); "no" is fp32 throughout. Returns `model` (now an ``FSDP<Class>``; its parameters are DTensor shards).
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized():
        raise RuntimeError("shard_model needs an initialised torch.distributed process group")
    world = dist.get_world_size()
    if world > 1:  # the same start on every rank (DDP does this too); one tensor at a time through the device
        with torch.no_grad():
            for t in model.state_dict().values():
                buf = t.to(device)
                dist.broadcast(buf, src=0)
                t.copy_(buf)
    if precision == "fp16":
        raise ConfigError("strategy=fsdp does not support fp16")
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16"
          else MixedPrecisionPolicy())
    mesh = init_device_mesh(device.type, (world,))
    for block in _transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state_dicts(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model, optimizer) state dicts of a sharded model, gathered whole on rank 0's CPU (empty on other ranks).

    The optimizer state is keyed by parameter name (``state`` and ``param_groups``' ``params``): plain tensors and
    Python, so ``torch.load(weights_only=True)`` reads it back.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    options = _full_options(cpu_offload=True)
    return (get_model_state_dict(model, options=options),
            get_optimizer_state_dict(model, optimizer, options=options))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict[str, Any] | None) -> None:
    """Restore a `full_state_dicts` optimizer state: rank 0 passes it, the others may pass None / {}."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state or {},
                             options=_full_options(broadcast_from_rank0=True))


def plain_unit_lm(lm, state: dict[str, torch.Tensor]):
    """A CPU UnitLM with `lm`'s config, vocabulary and metadata and the weights `state` (a full state dict), built
    without a second random initialisation (meta device, then the tensors assigned); for ``save_pretrained``."""
    from transformers import AutoModelForCausalLM

    from textless.lm.model import UnitLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(lm.model.config)
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    model.eval()
    return UnitLM(model, lm.vocab, tokenizer=lm.tokenizer, frame_rate=lm.frame_rate, deduplicated=lm.deduplicated)


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a plain tensor is returned as is)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _build_model(cfg: TrainConfig, meta, log):
    from textless.lm.model import UnitLM, lm_meta
    from textless.lm.vocab import UnitVocab

    vocab = UnitVocab.default(meta.vocab_size)
    info = lm_meta(meta)
    if cfg.init == "twist":
        log(f"init: TWIST from text LM {cfg.base_model}" + (f" ({cfg.gguf_file})" if cfg.gguf_file else ""))
        return UnitLM.from_text_lm(cfg.base_model, vocab, gguf_file=cfg.gguf_file,
                                   attn_implementation=cfg.attn_implementation, **info)
    log(f"init: preset {cfg.preset!r} from scratch")
    return UnitLM.from_scratch(_preset(cfg.preset), vocab, attn_implementation=cfg.attn_implementation, **info)


def _preset(name: str):
    """A preset name, or a transformers config (a config.json file, or a directory holding one) for custom sizes."""
    from textless.lm.presets import PRESETS

    if name in PRESETS:
        return name
    path = Path(name)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(sorted(PRESETS))} or a transformers "
                          f"config.json")
    from transformers import AutoConfig

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return AutoConfig.for_model(data.pop("model_type"), **data)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"preset {name!r}: not a usable transformers config.json ({e})") from None


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["betas"] = [float(b) for b in d["betas"]]
    return d


def _config_yaml(cfg: TrainConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(_config_dict(cfg)))


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, log: Callable[[str], Any] = print, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a unit LM as configured; see the module docstring. Every rank of a torchrun job calls it.

    Under torchrun the process group stays up (a later `train` call reuses it); `train_command` (``textless train``)
    also destroys it before the process exits.
    """
    _check_config(cfg)
    accelerator = _make_accelerator(cfg)
    with deterministic(accelerator.device.type == "cpu"):
        result = _Trainer(cfg, accelerator, log, hooks or TrainHooks()).run()
    if accelerator.num_processes > 1:
        _settle(accelerator)
    return result


def train_command(cfg: TrainConfig, log: Callable[[str], Any] = print) -> TrainResult:
    """``textless train``: `train`, then destroy the process group it set up (the process ends next)."""
    result = train(cfg, log)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return result


def _settle(accelerator) -> None:
    """Every rank: wait for the others, then pause while gloo's worker threads release the finished collectives.

    A gloo worker thread releases a finished collective just after the waiting rank is let go, and with it the last
    references to tensors that have Python objects, which takes the GIL. If that happens while the interpreter is
    finalizing, the thread is killed inside C++ code and the process aborts after a successful run ("terminate called
    without an active exception"; core dump: ProcessGroupGloo::runLoop -> ~AsyncBarrierWork -> decref_pyobject ->
    pthread_exit). With nothing left in flight when `train` returns, exiting is safe.
    """
    accelerator.wait_for_everyone()
    time.sleep(0.2)


class _Trainer:
    def __init__(self, cfg: TrainConfig, accelerator, log: Callable[[str], Any], hooks: TrainHooks):
        self.cfg = cfg
        self.acc = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.main = accelerator.is_main_process
        self.hooks = hooks
        self._log = log
        self.out = Path(cfg.output_dir)
        self.precision = _precision(cfg)
        # FSDP needs a process group (torchrun); a lone process trains unsharded
        self.fsdp = cfg.strategy == "fsdp" and torch.distributed.is_available() and torch.distributed.is_initialized()

    def log(self, message: str) -> None:
        if not self.main:
            return
        bar = getattr(self, "bar", None)
        if self._log is print and bar is not None and not bar.disable:
            bar.write(message)  # keeps the progress bar intact
        else:
            self._log(message)

    # setup ----------------------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        self.train_units = read_units(cfg.train_dataset)
        self.valid_units = read_units(cfg.valid_dataset) if cfg.valid_dataset else None
        if self.main:
            clean_checkpoint_temporaries(self.out)
        self.acc.wait_for_everyone()
        self._check_shared_output_dir()
        checkpoint = latest_checkpoint(self.out)
        if cfg.init == "resume" and checkpoint is None:
            raise ConfigError(f"init=resume but {self.out / CHECKPOINTS_DIR} holds no complete checkpoint")
        self.state: dict[str, Any] | None = None
        self.checkpoint = checkpoint
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if checkpoint is not None:
            from textless.lm.model import UnitLM

            self.state = load_trainer_state(checkpoint)
            if self.state["world_size"] != self.world:
                raise ConfigError(f"checkpoint {checkpoint} was written by {self.state['world_size']} processes, this "
                                  f"run has {self.world}: resume with the same number of processes")
            changed = [k for k in _TRAJECTORY_FIELDS
                       if k in self.state["config"] and self.state["config"][k] != _config_dict(cfg)[k]]
            if changed:
                self.log(f"warning: resuming with different {', '.join(changed)} than checkpoint {checkpoint.name}; "
                         "the run will not reproduce an uninterrupted one")
            self.log(f"resuming from {checkpoint} (step {self.state['step']})")
            self.lm = UnitLM.from_pretrained(checkpoint / MODEL_DIR, attn_implementation=cfg.attn_implementation)
        else:
            self.lm = _build_model(cfg, self.train_units.meta, self.log)
        # the data must match the model before anything is trained
        self.lm.check_units(self.train_units.meta, where=str(cfg.train_dataset))
        if self.valid_units is not None:
            self.lm.check_units(self.valid_units.meta, where=str(cfg.valid_dataset))
        try:  # how attention is kept inside packed segments; decided before training (draws no RNG)
            self.packing_mode = packing_mode(self.lm.model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        max_pos = self.lm.max_positions
        if max_pos is not None and cfg.context_length > max_pos:
            raise ConfigError(f"context_length {cfg.context_length} exceeds the model's {max_pos} positions")
        packing = PackingConfig(context_length=cfg.context_length, seed=cfg.seed)
        try:
            self.train_data = PackedUnitDataset(self.train_units, self.lm.vocab, packing, rank=self.rank,
                                                world_size=self.world)
            self.valid_data = None
            if self.valid_units is not None:
                self.valid_data = PackedUnitDataset(
                    self.valid_units, self.lm.vocab, dataclasses.replace(packing, shuffle=False), rank=self.rank,
                    world_size=self.world)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * self.world * cfg.context_length
        self.total_steps, self.schedule_by = _schedule_steps(cfg, self.tokens_per_step)
        self.warmup_steps = math.ceil(cfg.warmup_fraction * self.total_steps)

        model = self.lm.model
        model.train()
        if cfg.strategy == "fsdp" and not self.fsdp:
            self.log("strategy=fsdp in a single process without torch.distributed: training unsharded")
        if self.fsdp:  # sharded in place (the optimizer must see the sharded parameters)
            model = shard_model(model, self.acc.device, self.precision)
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(self.total_steps, self.warmup_steps, cfg.lr, cfg.min_lr))
        if self.fsdp:
            self.model, self.optimizer = model, optimizer
        else:
            self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.step, self.tokens_seen, self.targets_seen, self.elapsed_before = 0, 0, 0, 0.0
        self.losses: list[tuple[int, float]] = []
        self.valid_losses: list[tuple[int, float]] = []
        if self.state is not None:
            if self.fsdp:  # full state on rank 0, scattered into the shards
                load_full_optimizer_state(self.model, self.optimizer, self.state["optimizer"] if self.main else None)
                self.state["optimizer"] = None
            else:
                self.optimizer.load_state_dict(self.state["optimizer"])
            self.scheduler.load_state_dict(self.state["scheduler"])
            set_rng_state(self.state["rng"][self.rank])
            self.step = int(self.state["step"])
            self.tokens_seen = int(self.state["tokens_seen"])
            self.targets_seen = int(self.state["targets_seen"])
            self.elapsed_before = float(self.state["elapsed_seconds"])
            self.losses = [(int(s), float(v)) for s, v in self.state["losses"]]
            self.valid_losses = [(int(s), float(v)) for s, v in self.state["valid_losses"]]
        else:
            # different dropout masks on different ranks (the weights were initialised identically above)
            torch.manual_seed(cfg.seed + 1 + self.rank)
        self.last_saved = self.step if self.state is not None else None

    # helpers --------------------------------------------------------------------------------------------------------
    def _sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.acc.device)
        if self.world > 1:
            t = self.acc.reduce(t, reduction="sum")
        return t.tolist()

    def _gather(self, value: Any) -> list[Any]:
        """`value` of every rank, in rank order (a collective)."""
        if self.world == 1:
            return [value]
        gathered: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def _check_shared_output_dir(self) -> None:
        """Multi-node: refuse an output_dir that is not the same directory for every rank (see the module
        docstring). Rank 0 writes a uniquely named probe file; every rank must see it."""
        if self.world == 1:
            return
        token = self._gather(uuid.uuid4().hex)[0]  # rank 0's (uuid4 does not touch the seeded RNGs)
        probe = self.out / f".textless-probe-{token}"
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            probe.write_text(f"written by rank 0 on {socket.gethostname()}\n", encoding="utf-8")
        self.acc.wait_for_everyone()
        deadline = time.monotonic() + float(os.environ.get(PROBE_WAIT_ENV, _PROBE_WAIT_SECONDS))
        while not probe.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        seen = self._gather((probe.exists(), socket.gethostname()))
        self.acc.wait_for_everyone()
        if self.main:
            probe.unlink(missing_ok=True)
        blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(seen) if not ok]
        if blind:
            raise ConfigError(f"output_dir '{self.out}' is not shared by every process: {', '.join(blind)} cannot "
                              f"see the file rank 0 wrote there. Multi-node training needs output_dir on a filesystem "
                              f"every node mounts at the same path (checkpoints are written by rank 0 and read by all)")

    def _gather_rng(self) -> list[dict[str, Any]]:
        return self._gather(rng_state())

    def _exportable(self, optimizer: bool = True):
        """(UnitLM to save, optimizer state dict) on the main process, (None, None) elsewhere; a collective under
        FSDP (the full state dicts are gathered on rank 0)."""
        if not self.fsdp:
            return (self.lm, self.optimizer.state_dict() if optimizer else None) if self.main else (None, None)
        if optimizer:
            model_state, optim_state = full_state_dicts(self.model, self.optimizer)
        else:
            from torch.distributed.checkpoint.state_dict import get_model_state_dict

            model_state, optim_state = get_model_state_dict(self.model, options=_full_options(cpu_offload=True)), None
        if not self.main:
            return None, None
        return plain_unit_lm(self.lm, model_state), optim_state

    def _save(self, elapsed: float) -> Path | None:
        rng = self._gather_rng()  # a collective: every rank
        lm, optim_state = self._exportable()  # a collective under FSDP
        path = None
        if self.main:
            state = {"step": self.step, "epoch": self.step * self.cfg.grad_accum * self.world * self.cfg.batch_size
                     // len(self.train_data), "tokens_seen": self.tokens_seen, "targets_seen": self.targets_seen,
                     "elapsed_seconds": elapsed, "world_size": self.world,
                     "optimizer": optim_state, "scheduler": self.scheduler.state_dict(), "rng": rng,
                     "losses": [list(x) for x in self.losses], "valid_losses": [list(x) for x in self.valid_losses],
                     "config": _config_dict(self.cfg)}
            path = save_checkpoint(self.out, self.step, lm, state, _config_yaml(self.cfg),
                                   keep=self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()
        path = latest_checkpoint(self.out)
        self.last_saved = self.step
        if path is not None:
            self.hooks.on_checkpoint(self.step, path)
        return path

    @torch.no_grad()
    def validate(self) -> float | None:
        if self.valid_data is None:
            return None
        # DDP: the unwrapped model (no collectives: ranks may have different batch counts). FSDP: every forward
        # gathers the shards, so every rank runs as many forwards as the busiest one (extra ones are not counted)
        model = self.model if self.fsdp else self.acc.unwrap_model(self.model)
        model.eval()
        def batches() -> Iterator[PackedBatch]:
            return self.valid_data.epoch_batches(self.cfg.batch_size, max_batches=self.cfg.eval_batches)

        most = 0
        if self.fsdp and self.world > 1:  # agreed before the first forward (each forward is a collective)
            t = torch.tensor([sum(1 for _ in batches())], dtype=torch.int64, device=self.acc.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            most = int(t.item())
        total, count, done, last = 0.0, 0, 0, None
        for batch in batches():
            with self.acc.autocast():
                nll, n = packed_nll(model, batch, self.acc.device)
            total += float(nll)
            count += n
            done, last = done + 1, batch
        for _ in range(most - done):
            packed_nll(model, last if last is not None else next(self.valid_data.batches(1)), self.acc.device)
        model.train()
        total, count = self._sum([total, count])
        return total / max(count, 1)

    # loop -------------------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self._setup()
        cfg = self.cfg
        writer = None
        if cfg.tensorboard and self.main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / TENSORBOARD_DIR))
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.yaml").write_text(_config_yaml(cfg), encoding="utf-8")
        n_params = sum(p.numel() for p in self.lm.model.parameters())  # DTensors count their global size
        attn = getattr(self.lm.model.config, "_attn_implementation", None)
        self.log(f"training {n_params / 1e6:.2f}M parameters on {self.world} process(es) ({self.acc.device}, "
                 f"{'FSDP, ' if self.fsdp else ''}precision {self.precision}, attention {attn}, packing "
                 f"{self.packing_mode}); {self.total_steps} steps of {self.tokens_per_step} tokens (schedule from "
                 f"{self.schedule_by}, warmup {self.warmup_steps}); train: {len(self.train_units)} utterances, "
                 f"{len(self.train_data)} contexts of {cfg.context_length} per epoch")
        stream, stop_prefetch = prefetch(
            self.train_data.batches(cfg.batch_size, start_step=self.step * cfg.grad_accum), cfg.num_workers)
        from tqdm.auto import tqdm

        bar = self.bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="train",
                              disable=not (cfg.progress and self.main))
        start = time.monotonic()
        stopped_by = self.schedule_by
        try:
            while self.step < self.total_steps:
                elapsed = self.elapsed_before + time.monotonic() - start
                if cfg.max_seconds is not None and self._sum([float(elapsed >= cfg.max_seconds)])[0] > 0:
                    stopped_by = "max_seconds"
                    break
                t0 = time.monotonic()
                loss, grad_norm, lr = self._train_step(stream)
                dt = time.monotonic() - t0
                self.losses.append((self.step, loss))
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                if writer is not None:
                    writer.add_scalar("train/loss", loss, self.step)
                    writer.add_scalar("train/lr", lr, self.step)
                    writer.add_scalar("train/grad_norm", grad_norm, self.step)
                    writer.add_scalar("train/tokens_per_s", self.tokens_per_step / max(dt, 1e-9), self.step)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    self.log(f"step {self.step}/{self.total_steps} loss {loss:.4f} lr {lr:.3e} "
                             f"grad_norm {grad_norm:.3f} "
                             f"tokens/s {self.tokens_per_step / max(dt, 1e-9):.0f}")
                if self.step % cfg.eval_every == 0 and self.valid_data is not None:
                    self._record_valid(writer)
                if self.step % cfg.save_every == 0:
                    self._save(self.elapsed_before + time.monotonic() - start)
            if self.valid_data is not None and (not self.valid_losses or self.valid_losses[-1][0] != self.step):
                self._record_valid(writer)
            if self.last_saved != self.step:
                self._save(self.elapsed_before + time.monotonic() - start)
        finally:
            stop_prefetch()
            bar.close()
            self.bar = None
            if writer is not None:
                writer.close()
        final = self.out / FINAL_DIR
        lm, _ = self._exportable(optimizer=False)  # a collective under FSDP
        if self.main:
            lm.model.eval()
            with quiet_progress_bars():
                lm.save_pretrained(final, overwrite=True)
            self.log(f"final model: {final}")
        self.acc.wait_for_everyone()
        return TrainResult(step=self.step, losses=self.losses, valid_losses=self.valid_losses,
                           tokens_seen=self.tokens_seen, stopped_by=stopped_by, output_dir=self.out,
                           final_model=final, checkpoint=latest_checkpoint(self.out),
                           resumed_from=None if self.state is None else int(self.state["step"]),
                           tensorboard_dir=self.out / TENSORBOARD_DIR if cfg.tensorboard else None)

    def _record_valid(self, writer) -> None:
        value = self.validate()
        if value is None:
            return
        self.valid_losses.append((self.step, value))
        self.log(f"step {self.step} valid loss {value:.4f}")
        if writer is not None:
            writer.add_scalar("valid/loss", value, self.step)

    def _train_step(self, stream: Iterator[PackedBatch]) -> tuple[float, float, float]:
        """One optimizer step; returns (train loss, gradient norm before clipping, learning rate used)."""
        cfg = self.cfg
        micro = [next(stream) for _ in range(cfg.grad_accum)]
        local_targets = sum(b.num_targets for b in micro)
        global_targets = max(self._sum([float(local_targets)])[0], 1.0)
        # DDP averages gradients over ranks: scale by world so that the result is the gradient of sum / global_targets
        scale = self.world / global_targets
        nll_total = 0.0
        for i, batch in enumerate(micro):
            self.hooks.on_batch(self.step + 1, batch)
            sync = i == len(micro) - 1
            if self.fsdp:  # FSDP's no_sync: keep unsharded gradients until the last micro-batch's backward
                self.model.set_requires_gradient_sync(sync)
            with contextlib.nullcontext() if sync or self.fsdp else self.acc.no_sync(self.model):
                nll, _ = packed_nll(self.model, batch, self.acc.device)
                self.acc.backward(nll * scale)
            nll_total += float(nll.detach())
        grad_norm = float("nan")
        if self.fsdp:  # DTensor gradients: the norms are reduced over the shards, full_tensor() replicates them
            params = list(self.model.parameters())
            if cfg.clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            grad_norm = float(_local(norm))
        elif cfg.clip > 0:
            grad_norm = float(self.acc.clip_grad_norm_(self.model.parameters(), cfg.clip))
        else:
            grads = [p.grad.detach().norm() for p in self.model.parameters() if p.grad is not None]
            grad_norm = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        self.targets_seen += int(global_targets)
        return self._sum([nll_total])[0] / global_targets, grad_norm, lr
