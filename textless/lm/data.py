"""Packed training batches for unit LMs, read straight from a unit dataset (the binary memmap is never loaded whole).

Token stream. Utterance `u` becomes ``[bos] + (units + offset) + [eos]`` (``vocab.encode``; bos/eos per
`PackingConfig`). Epoch `e` visits the utterances in the order ``np.random.default_rng(seed + e).permutation(N)``
(identity order when ``shuffle`` is false) and concatenates them into one stream of ``T`` tokens; ``T`` is the same in
every epoch, so every epoch holds the same number ``C`` of contexts of exactly ``context_length`` (``L``) tokens:
``C = T // L`` with ``drop_last`` (the tail of each epoch, a different one each epoch, is dropped), else
``ceil(T / L)`` with the last context of each epoch padded.

Segments, positions and labels. A *segment* is the part of one utterance that falls inside one context. An utterance
longer than the room left in a context is split: its head ends the context, its tail opens the next one(s).
- ``position_ids`` restart at 0 at the start of every segment, including the tail of a split utterance (so positions
  stay in ``[0, L)``, within the model's position range, and the tail is modelled as a fresh bos-less sequence: it
  could not attend to its head anyway, which lives in another context).
- Attention never crosses a segment boundary (`packed_forward`). Most transformers 5 models (Llama, Qwen2, ...)
  turn position ids that restart into a block-diagonal causal mask for the sdpa, eager and flash backends
  (``masking_utils.find_packed_sequence_indices``) when ``attention_mask=None`` AND ``use_cache=False``: models
  default to ``use_cache=True`` (from their config), which creates an empty cache and silently *disables* that
  detection. Some architectures never hand ``position_ids`` to the mask builder (OPT: the "gslm" / "twist-350m"
  presets, TWIST checkpoints); for them `packed_forward` passes an explicit 4-D block-diagonal causal mask (bool
  for sdpa, additive float for eager; flash-attention cannot take one). `packing_mode` decides which, once per
  model, by checking what the model actually does on a two-segment probe.
- ``labels`` equal ``input_ids`` (transformers shifts them: ``labels[t]`` is predicted from position ``t - 1``) except
  ``-100`` where a token has no predecessor in its own segment: the first token of every segment (the bos of an
  utterance, or the first token of a split tail - the previous token belongs to another utterance or another context)
  and every padding token. So the packed sum of per-token NLL equals the sum over the segments run one by one.
- Padding (only the last context of an epoch, without ``drop_last``) is ``pad_id`` tokens forming their own segment
  (positions 0, 1, ...) with labels -100: they change no real token's output and add nothing to the loss.

Batches and ranks. Contexts are numbered globally across epochs (``c = epoch * C + k``). Global batch ``b`` holds
contexts ``[b * B, (b + 1) * B)`` (a batch may straddle two epochs); rank ``r`` at step ``s`` takes global batch
``s * world_size + r``. A step is therefore a pure function of ``(s, r)``: ``batches(start_step=s)`` starts there in
O(N) (one permutation and one cumulative sum of the index offsets) without building any skipped context, which is the
data position a checkpoint stores for exact resume.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from textless.data.units import UnitDataset

IGNORE_INDEX = -100


@dataclass
class PackingConfig:
    context_length: int = 1024  # tokens per context (L)
    add_bos: bool = True
    add_eos: bool = True
    seed: int = 0               # epoch e shuffles with np.random.default_rng(seed + e)
    drop_last: bool = False     # drop the partial last context of each epoch (else pad it)
    shuffle: bool = True        # False: every epoch in dataset order (validation)


@dataclass
class PackedBatch:
    """One rank's batch: `input_ids`, `position_ids`, `labels` int64 `[B, L]` (see the module docstring).

    `epoch` is the epoch of the batch's first context, `step` the rank-local batch index (``batches``) or the batch
    number within the epoch (``epoch_batches``), `contexts` the global context indices of the rows.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    epoch: int
    step: int
    contexts: list[int]

    @property
    def num_targets(self) -> int:
        """Tokens whose prediction counts in the loss (labels != -100 after the shift)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())


class PackedUnitDataset:
    """A deterministic, resumable stream of packed contexts over a `UnitDataset` (binary memmap or jsonl).

    Only the index offsets are read up front; units are sliced from the memmap context by context.
    """

    def __init__(self, units: UnitDataset, vocab, config: PackingConfig | None = None, *, rank: int = 0,
                 world_size: int = 1):
        self.units = units
        self.vocab = vocab
        self.config = config or PackingConfig()
        if self.config.context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {self.config.context_length}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.rank = rank
        self.world_size = world_size
        self._index = np.asarray(units.index, dtype=np.int64)
        extra = int(self.config.add_bos) + int(self.config.add_eos)
        self.lengths = np.diff(self._index) + extra  # tokens per utterance, int64 [N]
        self.tokens_per_epoch = int(self.lengths.sum())
        L = self.config.context_length
        if len(self.lengths) == 0:
            raise ValueError(f"unit dataset {units.path} holds no utterance")
        self.contexts_per_epoch = (self.tokens_per_epoch // L if self.config.drop_last
                                   else math.ceil(self.tokens_per_epoch / L))
        if self.contexts_per_epoch == 0:
            raise ValueError(f"unit dataset {units.path} holds {self.tokens_per_epoch} tokens, fewer than one context "
                             f"of {L} (use a smaller context_length or drop_last=false)")
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        """Contexts per epoch (C)."""
        return self.contexts_per_epoch

    # ---------------------------------------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """The utterance order of `epoch`, int64 `[N]`."""
        return self._epoch(epoch)[0]

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(order, cumulative token ends in that order), cached for the last two epochs used."""
        if epoch in self._epochs:
            self._epochs.move_to_end(epoch)
            return self._epochs[epoch]
        n = len(self.lengths)
        if self.config.shuffle:
            order = np.random.default_rng(self.config.seed + epoch).permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        ends = np.cumsum(self.lengths[order])
        self._epochs[epoch] = (order, ends)
        while len(self._epochs) > 2:
            self._epochs.popitem(last=False)
        return order, ends

    def _utterance_tokens(self, j: int) -> np.ndarray:
        a, b = int(self._index[j]), int(self._index[j + 1])
        units = np.asarray(self.units.units_array[a:b], dtype=np.int64)
        tokens = np.asarray(self.vocab.encode(units, bos=self.config.add_bos, eos=self.config.add_eos),
                            dtype=np.int64)
        if len(tokens) != self.lengths[j]:
            raise AssertionError(f"vocab.encode gave {len(tokens)} tokens for utterance {j}, expected "
                                 f"{self.lengths[j]}")
        return tokens

    def context(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Global context `c` as (input_ids, position_ids, labels), int64 `[L]` each."""
        L = self.config.context_length
        epoch, k = divmod(int(c), self.contexts_per_epoch)
        order, ends = self._epoch(epoch)
        lo, hi = k * L, min((k + 1) * L, self.tokens_per_epoch)
        input_ids = np.full(L, self.vocab.pad_id, dtype=np.int64)
        position_ids = np.empty(L, dtype=np.int64)
        labels = np.full(L, IGNORE_INDEX, dtype=np.int64)
        i = int(np.searchsorted(ends, lo, side="right"))  # first utterance that ends after lo
        filled = 0
        while i < len(order) and filled < hi - lo:
            j = int(order[i])
            start = int(ends[i]) - int(self.lengths[j])
            a, b = max(lo - start, 0), min(hi - start, int(self.lengths[j]))
            piece = self._utterance_tokens(j)[a:b]
            n = len(piece)
            input_ids[filled:filled + n] = piece
            position_ids[filled:filled + n] = np.arange(n)
            labels[filled + 1:filled + n] = piece[1:]
            filled += n
            i += 1
        position_ids[filled:] = np.arange(L - filled)  # padding: a segment of its own, labels -100
        return input_ids, position_ids, labels

    def _batch(self, contexts: list[int], step: int) -> PackedBatch:
        rows = [self.context(c) for c in contexts]
        stack = [torch.from_numpy(np.stack([r[f] for r in rows])) for f in range(3)]
        return PackedBatch(stack[0], stack[1], stack[2], epoch=contexts[0] // self.contexts_per_epoch, step=step,
                           contexts=list(contexts))

    # ---------------------------------------------------------------------------------------------------------------
    def global_batch_contexts(self, batch_size: int, step: int) -> list[int]:
        """Global context indices of this rank's batch at rank-local `step` (pure arithmetic, nothing is read)."""
        b = step * self.world_size + self.rank
        return list(range(b * batch_size, (b + 1) * batch_size))

    def batches(self, batch_size: int, *, start_step: int = 0) -> Iterator[PackedBatch]:
        """An endless stream of this rank's batches, starting at rank-local `start_step` (see the module docstring)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        step = start_step
        while True:
            yield self._batch(self.global_batch_contexts(batch_size, step), step)
            step += 1

    def epoch_batches(self, batch_size: int, epoch: int = 0, max_batches: int | None = None) -> Iterator[PackedBatch]:
        """This rank's share of one epoch (validation): global batches r, r + W, ... of the epoch's C contexts.

        The last batch may be short. `max_batches` caps the number of *global* batches considered.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        first = epoch * self.contexts_per_epoch
        num = math.ceil(self.contexts_per_epoch / batch_size)
        if max_batches is not None:
            num = min(num, max_batches)
        for b in range(self.rank, num, self.world_size):
            lo = b * batch_size
            hi = min(lo + batch_size, self.contexts_per_epoch)
            yield self._batch(list(range(first + lo, first + hi)), b)


# --------------------------------------------------------------------------------------------------------------------
# Running a model on packed batches
# --------------------------------------------------------------------------------------------------------------------

_MODE_ATTR = "_textless_packing_mode"


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Segment index of every token, int64 `[B, L]`: a new segment starts wherever the position is 0."""
    return (position_ids == 0).long().cumsum(-1)


def packed_attention_mask(position_ids: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Block-diagonal causal mask `[B, 1, L, L]` from restarting position ids.

    Boolean (True = may attend) when `dtype` is None, else additive (0 or the dtype's minimum) in `dtype`.
    """
    seg = segment_ids(position_ids)
    L = seg.shape[-1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seg.device).tril()
    allowed = (seg[:, :, None] == seg[:, None, :]) & causal
    allowed = allowed[:, None]
    if dtype is None:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside DDP / accelerate / UnitLM wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "model") and hasattr(model, "vocab") and isinstance(model.model, torch.nn.Module):
            model = model.model
        else:
            return model


def packing_mode(model: torch.nn.Module) -> str:
    """How `model` keeps packed segments apart: "position_ids" (its mask builder does it) or "mask" (explicit 4-D).

    Decided once per model (cached on it) by a probe: two 3-token segments packed in one row must give the second
    segment the logits it gets alone. Runs in eval mode under no_grad (no RNG is drawn).
    """
    hf = _hf_model(model)
    mode = getattr(hf, _MODE_ATTR, None)
    if mode is not None:
        return mode
    impl = getattr(getattr(hf, "config", None), "_attn_implementation", None)
    emb = hf.get_input_embeddings().weight
    vocab = emb.shape[0]
    first = torch.tensor([[vocab - 1, vocab - 2, vocab - 3]], device=emb.device) % vocab
    second = torch.tensor([[vocab - 4, vocab - 5, vocab - 6]], device=emb.device) % vocab
    pos = torch.tensor([[0, 1, 2, 0, 1, 2]], device=emb.device)
    was_training = hf.training
    hf.eval()
    try:
        with torch.no_grad():
            alone = hf(input_ids=second, use_cache=False).logits.float()
            packed = hf(input_ids=torch.cat([first, second], 1), position_ids=pos, use_cache=False).logits.float()
            leaky = hf(input_ids=torch.cat([first, second], 1), use_cache=False).logits.float()
    finally:
        hf.train(was_training)
    err = float((packed[:, 3:] - alone).abs().max())
    leak = float((leaky[:, 3:] - alone).abs().max())
    mode = "position_ids" if leak > 0 and err < 0.05 * leak else "mask"
    if mode == "mask" and impl is not None and "flash" in str(impl):
        raise ValueError(f"{type(hf).__name__} with attn_implementation={impl!r} cannot keep packed sequences apart "
                         f"(it ignores restarting position ids and flash attention takes no 4-D mask); "
                         f"use sdpa or eager")
    setattr(hf, _MODE_ATTR, mode)
    return mode


def packed_forward(model: torch.nn.Module, batch: PackedBatch, device: torch.device | str | None = None):
    """Run a causal LM (HF model, UnitLM, or a DDP wrapper of either) on a packed batch; returns its output.

    Attention stays inside segments (see `packing_mode`); positions restart per segment; no cache is built.
    """
    hf = _hf_model(model)
    if device is None:
        device = hf.get_input_embeddings().weight.device
    input_ids = batch.input_ids.to(device)
    position_ids = batch.position_ids.to(device)
    kwargs: dict = {"input_ids": input_ids, "position_ids": position_ids, "use_cache": False}
    if packing_mode(hf) == "mask":
        impl = getattr(hf.config, "_attn_implementation", "sdpa")
        if impl == "sdpa":
            kwargs["attention_mask"] = packed_attention_mask(position_ids)
        else:
            kwargs["attention_mask"] = packed_attention_mask(position_ids, torch.float32)
    if model is not hf and hasattr(model, "vocab"):  # a UnitLM: call its HF model (same parameters)
        model = hf
    return model(**kwargs)


def packed_nll(model: torch.nn.Module, batch: PackedBatch, device: torch.device | str | None = None
               ) -> tuple[torch.Tensor, int]:
    """(sum of next-token NLL over the batch's targets, number of targets) for a packed batch.

    Per-token NLL is computed in fp32 from the logits and summed in fp64 (a 0-d float64 tensor, differentiable).
    """
    out = packed_forward(model, batch, device)
    logits = out.logits[:, :-1].float()
    targets = batch.labels[:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                            ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(dtype=torch.float64), int((targets != IGNORE_INDEX).sum())
