"""The streaming protocol: step-wise models that keep an explicit per-stream state between calls.

What it is. A `StreamingModule` processes a batch of B independent streams one step at a time (one token, one frame)
and keeps whatever it needs between steps (a KV cache, convolution buffers, positions) in a `StreamingState` stored
on the module as ``_streaming_state``: None when the module is not streaming, a state object while it is. Streaming is
switched on for the module AND every `StreamingModule` below it (except detached ones and what lies below them)::

    with model.streaming(batch_size=B):      # states created (`_init_streaming_state`) ... and cleared on exit
        for x in chunks:                      # x: [B, ...], one step of every stream
            y = model.step(x)

Shapes. Every state has ``batch_size`` B, ``device`` and ``exec_mask`` (bool ``[B]``, True = the item consumes this
step's input). Per-item controls take bool ``[B]`` masks on any device:

* ``reset_streaming(mask)``: masked items start a new stream (their state is re-initialised; others are untouched);
* ``set_exec_mask(mask)``: items where the mask is False are PAUSED: the next steps leave their state unchanged (as
  if those steps never happened); each model documents what it outputs for them. Reset items run again;
* ``get_streaming_state()``: ``{name: snapshot}`` for the module ("") and its streaming descendants (dotted names as
  in ``named_modules``); snapshots are deep copies, independent of later steps; ``set_streaming_state(snap)``
  restores them (copying again, so one snapshot can be restored many times: rollback, branching, resampling).

Errors. Misuse (stepping or resetting while not streaming, entering twice, restoring a snapshot of another batch size
or another set of modules) raises `StreamingError`, a `TextlessError` that is also a `RuntimeError`.

Implementing it. Subclass `StreamingState` (a dataclass: extra tensors are ``field(init=False)``, created in
``__post_init__``, re-initialised for the masked items in ``reset``) and return it from ``_init_streaming_state``;
``step`` reads the state with ``_require_streaming`` and must honour ``exec_mask``::

    @dataclass
    class SumState(StreamingState):
        total: torch.Tensor = field(init=False)                      # [B, D]
        def __post_init__(self):
            super().__post_init__()
            self.total = torch.zeros(self.batch_size, 4, device=self.device)
        def reset(self, mask):                                       # mask: bool [B]
            super().reset(mask)
            self.total = self.total.masked_fill(mask[:, None], 0.0)

    class RunningSum(StreamingModule):
        def _init_streaming_state(self, batch_size):
            return SumState(batch_size, torch.device("cpu"))
        def step(self, x):                                           # x: [B, 4] -> running sums [B, 4]
            state = self._require_streaming("RunningSum.step")
            state.total = torch.where(state.exec_mask[:, None], state.total + x, state.total)
            return state.total

Update state fields by assignment (new tensors) or in place, as you like: snapshots are deep copies either way.

Differences from kyutai's moshi (``moshi/modules/streaming.py``, the model for this protocol), and why:

* ``get_streaming_state`` returns deep copies and ``set_streaming_state`` installs copies; moshi hands out and installs
  the live state objects, so a "snapshot" keeps advancing with later steps. Copies make rollback / branching safe.
* ``set_streaming_state`` also refuses a snapshot of another batch size or state type, not only other names.
* Misuse raises `StreamingError` with a message (moshi uses ``assert``, which ``python -O`` removes), and entering
  streaming checks every module first, so a failed entry leaves nothing half-initialised.
* No CUDA-graph capture of ``set_exec_mask`` and no ``__enter__``/``__exit__`` hooks on states: textless captures
  no CUDA graphs; add them when a model needs them.
* ``_init_streaming_state`` raises NotImplementedError instead of being an ``abc`` abstract method, so a class like
  ``UnitLM`` keeps nn.Module's plain metaclass; `StreamingContainer` is the stateless parent for composite models.
* The streaming descendants are found by walking the module tree once, when streaming starts, and remembered for the
  session (a 12-layer transformers model takes ~150 us to walk; ``set_exec_mask`` runs every step): modules added
  during a session join the next one. ``stop_streaming()`` ends a ``streaming_forever`` session.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self

import torch

from textless.errors import TextlessError

logger = logging.getLogger(__name__)

class StreamingError(TextlessError, RuntimeError):
    """The streaming protocol was misused (not streaming, entered twice, a snapshot that does not fit...)."""


@dataclass
class StreamingState:
    """Per-stream state of one module: `batch_size` streams on `device`; `exec_mask` bool ``[B]`` (all True at start).

    Subclasses add their tensors as ``field(init=False)`` created in ``__post_init__`` and extend `reset`.
    """

    batch_size: int
    device: torch.device
    exec_mask: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise StreamingError(f"batch_size must be >= 1, got {self.batch_size}")
        self.device = torch.device(self.device)
        self.exec_mask = torch.ones(self.batch_size, dtype=torch.bool, device=self.device)

    def reset(self, mask: torch.Tensor) -> None:
        """Re-initialise the items where `mask` (bool ``[B]``, on `device`) is True; they execute again."""
        self.exec_mask = self.exec_mask | mask

    def snapshot(self) -> Self:
        """A deep copy: every tensor cloned, so later steps on either copy do not show in the other."""
        return copy.deepcopy(self)


class StreamingModule(torch.nn.Module):
    """Mixin for modules that run step by step with an explicit per-stream state (see the module docstring)."""

    _streaming_state: StreamingState | None = None  # None iff not streaming
    _streaming_detached: bool = False
    _streaming_session: list[tuple[str, StreamingModule]] | None = None  # members, on the module streaming() was on

    # ------------------------------------------------------------------------------------------------ implementers
    def _init_streaming_state(self, batch_size: int) -> StreamingState:
        """A fresh state for `batch_size` streams (every item at its start)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _init_streaming_state")

    def _require_streaming(self, what: str = "this call") -> StreamingState:
        """The current state, or `StreamingError` saying how to start streaming."""
        state = self._streaming_state
        if state is None:
            raise StreamingError(f"{what} needs streaming mode: use `with module.streaming(batch_size): ...` (or "
                                 f"module.streaming_forever(batch_size)) on {type(self).__name__}")
        return state

    # ------------------------------------------------------------------------------------------------ sessions
    @property
    def is_streaming(self) -> bool:
        return self._streaming_state is not None

    def set_streaming_detached(self, detached: bool) -> None:
        """True: a parent's streaming calls skip this module and its subtree; only calls on it directly reach it
        (e.g. an inner model that streams over another axis, or with its own batch size)."""
        self._streaming_detached = bool(detached)

    def _streaming_members(self) -> list[tuple[str, StreamingModule]]:
        """(name, module) for this module ("") and its streaming descendants, skipping detached subtrees."""
        if self._streaming_session is not None:
            return self._streaming_session
        members: list[tuple[str, StreamingModule]] = []

        def visit(name: str, module: torch.nn.Module) -> None:
            if isinstance(module, StreamingModule):
                if name and module._streaming_detached:
                    return
                members.append((name, module))
            for child_name, child in module.named_children():
                visit(f"{name}.{child_name}" if name else child_name, child)

        visit("", self)
        return members

    def _start_streaming(self, batch_size: int) -> list[tuple[str, StreamingModule]]:
        members = self._streaming_members()
        busy = [name or type(self).__name__ for name, module in members if module.is_streaming]
        if busy:
            raise StreamingError(f"already streaming: {busy} (leave the current `streaming()` block, or call "
                                 f"stop_streaming(), before starting another)")
        try:
            for _, module in members:
                module._streaming_state = module._init_streaming_state(batch_size)
        except BaseException:
            _clear(members)
            raise
        self._streaming_session = members
        logger.debug("%s: streaming %d stream(s) through %d module(s)", type(self).__name__, batch_size,
                     len(members))
        return members

    def _end_streaming(self, members: list[tuple[str, StreamingModule]]) -> None:
        _clear(members)
        self._streaming_session = None

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        """Streaming mode for `batch_size` streams inside the block; every state is cleared on exit."""
        members = self._start_streaming(batch_size)
        try:
            yield
        finally:
            self._end_streaming(members)

    def streaming_forever(self, batch_size: int) -> None:
        """Enter streaming mode without a block; `stop_streaming` leaves it."""
        self._start_streaming(batch_size)

    def stop_streaming(self) -> None:
        """Clear the state of this module and its (non-detached) streaming descendants; a no-op when not streaming."""
        self._end_streaming(self._streaming_members())

    # ------------------------------------------------------------------------------------------------ per item
    def _for_each_state(self, what: str, fn: Callable[[str, StreamingState], None]) -> None:
        for name, module in self._streaming_members():
            fn(name, module._require_streaming(f"{what} ({name or type(self).__name__})"))

    def _item_mask(self, mask: Any, what: str) -> torch.Tensor:
        """`mask` as a bool ``[B]`` tensor (B of this module's state), or StreamingError."""
        state = self._require_streaming(what)
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool or mask.shape != (state.batch_size,):
            raise StreamingError(f"{what}: the mask must be a bool tensor of shape [{state.batch_size}] (one entry per "
                                 f"stream), got {mask.dtype} {tuple(mask.shape)}")
        return mask

    def reset_streaming(self, mask: torch.Tensor | None = None) -> None:
        """Start new streams for the items where `mask` (bool ``[B]``) is True; None resets every item."""
        state = self._require_streaming("reset_streaming")
        mask = torch.ones(state.batch_size, dtype=torch.bool) if mask is None else self._item_mask(mask,
                                                                                                    "reset_streaming")
        self._for_each_state("reset_streaming", lambda _, s: s.reset(mask.to(s.device)))

    def set_exec_mask(self, mask: torch.Tensor) -> None:
        """From the next step on, items where `mask` (bool ``[B]``) is False are paused (their state is kept)."""
        mask = self._item_mask(mask, "set_exec_mask")

        def assign(_: str, s: StreamingState) -> None:
            s.exec_mask = mask.to(s.device, copy=True)

        self._for_each_state("set_exec_mask", assign)

    # ------------------------------------------------------------------------------------------------ snapshots
    def get_streaming_state(self) -> dict[str, StreamingState]:
        """``{name: deep copy of its state}`` for this module ("") and its streaming descendants."""
        out: dict[str, StreamingState] = {}
        self._for_each_state("get_streaming_state", lambda name, s: out.__setitem__(name, s.snapshot()))
        return out

    def set_streaming_state(self, snapshot: dict[str, StreamingState]) -> None:
        """Restore a `get_streaming_state` result (copies are installed: `snapshot` stays reusable).

        Must be streaming with the same batch size and the same streaming modules; checked before anything changes.
        """
        members = self._streaming_members()
        names = {name for name, _ in members}
        if set(snapshot) != names:
            missing, extra = sorted(names - set(snapshot)), sorted(set(snapshot) - names)
            raise StreamingError(f"set_streaming_state: the snapshot is of another set of modules (missing: "
                                 f"{missing}, unexpected: {extra})")
        for name, module in members:
            current = module._require_streaming(f"set_streaming_state ({name or type(self).__name__})")
            saved = snapshot[name]
            if type(saved) is not type(current):
                raise StreamingError(f"set_streaming_state: {name or 'the module'!r} holds a "
                                     f"{type(current).__name__}, the snapshot a {type(saved).__name__}")
            if saved.batch_size != current.batch_size:
                raise StreamingError(f"set_streaming_state: the snapshot has batch size {saved.batch_size}, the "
                                     f"module streams {current.batch_size} items (snapshots restore into a session "
                                     f"of the same batch size)")
        for name, module in members:
            module._streaming_state = snapshot[name].snapshot()


class StreamingContainer(StreamingModule):
    """A stateless streaming parent (composite models): its state holds only the exec mask; children do the work."""

    def _init_streaming_state(self, batch_size: int) -> StreamingState:
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()), None)
        return StreamingState(batch_size, tensor.device if tensor is not None else torch.device("cpu"))


def _clear(members: list[tuple[str, StreamingModule]]) -> None:
    for _, module in members:
        module._streaming_state = None
