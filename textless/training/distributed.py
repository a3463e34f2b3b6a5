"""Process-group helpers of the training engine: FSDP2 sharding and full-state gathering, the shared-output-dir
probe of multi-node jobs, and the settle-before-exit barrier. Every function here is a collective: every rank calls
it, in the same order.

FSDP2 (``torch.distributed.fsdp.fully_shard``) is used directly rather than through accelerate's FSDP plugin:
accelerate only enables FSDP for GPU jobs (so CPU/gloo tests could not exercise it), reads its settings from
environment variables / ``accelerate launch``, and its ``prepare`` / ``save_state`` would own the model wrapping and
the (pickled, sharded) checkpoint format. Three calls are needed: `shard_model` applies ``fully_shard`` to every
transformer block (the model's ``_no_split_modules`` classes) and then to the root, with
``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` for bf16 (fp16 is refused: it would need a sharded
grad scaler); ``set_requires_gradient_sync(False)`` on the intermediate micro-batches replaces DDP's ``no_sync``;
``torch.nn.utils.clip_grad_norm_`` computes the global norm of the DTensor gradients. Checkpoints keep the plain
layout: `full_model_state` and `full_optimizer_state` gather the full state dicts on rank 0 (``full_state_dict=True,
cpu_offload=True``), and on resume `load_full_optimizer_state` scatters rank 0's optimizer state into the shards.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from textless.errors import ConfigError

# how long a rank looks for rank 0's probe file in output_dir (slow shared filesystems); the environment may change it
PROBE_WAIT_ENV = "TEXTLESS_PROBE_WAIT_SECONDS"
_PROBE_WAIT_SECONDS = 5.0


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
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
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


def _full_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A sharded model's state dict, gathered whole on rank 0's CPU (empty on other ranks)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options(cpu_offload=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A sharded model's optimizer state, gathered whole on rank 0's CPU and keyed by parameter name (empty on other
    ranks): plain tensors and Python, so ``torch.load(weights_only=True)`` reads it back."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict[str, Any] | None) -> None:
    """Restore a `full_optimizer_state` state: rank 0 passes it, the others may pass None / {}."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state or {},
                             options=_full_options(broadcast_from_rank0=True))


def local_value(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a plain tensor is returned as is)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def gather_objects(value: Any, world: int) -> list[Any]:
    """`value` of every rank, in rank order."""
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def check_shared_output_dir(out: Path, world: int, main: bool, barrier) -> None:
    """Multi-node: refuse an output_dir that is not the same directory for every rank. Rank 0 writes a uniquely
    named probe file there; every rank must see it within ``$TEXTLESS_PROBE_WAIT_SECONDS`` (default 5)."""
    if world == 1:
        return
    token = gather_objects(uuid.uuid4().hex, world)[0]  # rank 0's (uuid4 does not touch the seeded RNGs)
    probe = out / f".textless-probe-{token}"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text(f"written by rank 0 on {socket.gethostname()}\n", encoding="utf-8")
    barrier()
    deadline = time.monotonic() + float(os.environ.get(PROBE_WAIT_ENV, _PROBE_WAIT_SECONDS))
    while not probe.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = gather_objects((probe.exists(), socket.gethostname()), world)
    barrier()
    if main:
        probe.unlink(missing_ok=True)
    blind = [f"rank {r} on {host}" for r, (ok, host) in enumerate(seen) if not ok]
    if blind:
        raise ConfigError(f"output_dir '{out}' is not shared by every process: {', '.join(blind)} cannot see the file "
                          f"rank 0 wrote there. Multi-node training needs output_dir on a filesystem every node "
                          f"mounts at the same path (checkpoints are written by rank 0 and read by all)")


def settle(barrier) -> None:
    """Every rank: wait for the others, then pause while gloo's worker threads release the finished collectives.

    A gloo worker thread releases a finished collective just after the waiting rank is let go, and with it the last
    references to tensors that have Python objects, which takes the GIL. If that happens while the interpreter is
    finalizing, the thread is killed inside C++ code and the process aborts after a successful run ("terminate called
    without an active exception"; core dump: ProcessGroupGloo::runLoop -> ~AsyncBarrierWork -> decref_pyobject ->
    pthread_exit). With nothing left in flight when training returns, exiting is safe.
    """
    barrier()
    time.sleep(0.2)
