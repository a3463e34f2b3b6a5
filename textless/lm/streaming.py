"""`UnitLM` as a `textless.streaming.StreamingModule`: one token per stream per `step`, and sampling on top of it.

State (`UnitLMStreamingState`). All B streams share one TIMELINE of cache slots: each `step` appends slot S (the
step's index since the timeline began) to a transformers ``DynamicCache`` (per layer K/V ``[B, kv_heads, S, head]``)
for every stream, and records per stream ``valid[b, S]`` (bool ``[B, S]``: the slot holds a token of stream b's
CURRENT life) and ``positions[b]`` (int64 ``[B]``: tokens in its current life = the position id of its next token).
A step runs the model on ``tokens[:, None]`` with ``position_ids = positions[:, None]`` and the 2-D attention mask
``valid + [this slot]``, so each stream attends exactly to its own tokens at their own positions: its logits equal a
full forward pass over its sequence (``lm.model(input_ids=seq[None]).logits[0, t]``, up to float rounding), however
the streams are staggered, paused or reset. Positions are explicit for every architecture; OPT (learned positions)
takes them as ``position_ids`` in transformers 5, and the positions it would derive from the mask (cumsum - 1) are
the same ones anyway.

Per stream. ``reset_streaming(mask)`` starts new lives (position 0, every earlier slot masked out for them).
A stream PAUSED by ``set_exec_mask`` keeps its cache view and position: its token is run as if it were the next one
(so its logits are "what feeding this token would give", a free look-ahead) but nothing is recorded. A stream
cannot pass the model's ``max_positions`` (`StreamingError`, raised before anything changes; reset it first).

Growth. The timeline grows by one slot per step, paused and reset streams included: memory is
``2 * layers * B * kv_heads * head_dim * S`` values and a step's attention costs O(S). `compact_streaming` drops the
slots no stream still uses (after resets / pauses of every stream), copying the whole cache once (O(S) memory
traffic): call it now and then (e.g. every few hundred steps, or after resets), not every step. The timeline after
compaction is at least the longest current life, at most the sum of all lives.

Limits. Full attention only: sliding-window models (Mistral, Qwen2 with ``use_sliding_window``) are refused, since
their window would count timeline slots, not positions. Tested with the sdpa and eager attention backends. `step`
runs without gradients; call ``lm.eval()`` first (dropout) - streaming a model in training mode logs a warning. An
exception raised inside the model rolls the cache back to the last complete step.

Sampling. `prefill` feeds token sequences (all streams from the same step, shorter ones paused when done) and
returns each stream's next-token logits; `sample_continuation` samples from the current state with the allowed-token
rule of `textless.lm.generation` (units only; eos once ``min_new_tokens`` exist, with ``stop_at_eos``) and
`filter_logits`, feeding every sampled token back (the state then holds prompt + continuation, eos included);
`sample_streaming` is the `generate_units` counterpart: the same inputs and outputs, and the same greedy
(temperature 0) output. Sampled outputs use their own random stream (a ``torch.Generator`` seeded with
``config.seed``, one draw per stream and step), so they differ from `generate_units`' for the same seed; a snapshot
(``get_streaming_state``) restored before sampling again with an equally seeded generator repeats a continuation.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from transformers import DynamicCache

from textless.errors import TextlessError
from textless.streaming import StreamingError, StreamingModule, StreamingState

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    from textless.lm.generation import SamplingConfig
    from textless.lm.vocab import UnitVocab

logger = logging.getLogger(__name__)

TokenSequence = np.ndarray | torch.Tensor | Sequence[int]


@dataclass
class UnitLMStreamingState(StreamingState):
    """KV cache over the shared timeline, per-stream positions and slot validity (see the module docstring)."""

    cache: DynamicCache = field(init=False)       # per layer K/V [B, kv_heads, S, head_dim]
    positions: torch.Tensor = field(init=False)   # int64 [B]: position id of each stream's next token
    valid: torch.Tensor = field(init=False)       # bool [B, S]: slot s holds a token of stream b's current life

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cache = DynamicCache()
        self.positions = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        self.valid = torch.zeros(self.batch_size, 0, dtype=torch.bool, device=self.device)

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.positions = self.positions.masked_fill(mask, 0)
        self.valid = self.valid & ~mask[:, None]

    @property
    def num_slots(self) -> int:
        """S: slots on the timeline (cache length)."""
        return self.valid.shape[1]


class StreamingUnitLM(StreamingModule):
    """The streaming half of `UnitLM` (mixed into it): `step`, `compact_streaming`."""

    if TYPE_CHECKING:
        model: PreTrainedModel
        vocab: UnitVocab
        max_positions: int | None
        device: torch.device

    def _init_streaming_state(self, batch_size: int) -> UnitLMStreamingState:
        _check_full_attention(self.model.config)
        if self.training:
            logger.warning("streaming %s in training mode (dropout is active); call .eval() first",
                           type(self).__name__)
        return UnitLMStreamingState(batch_size, self.device)

    def _lm_state(self, what: str) -> UnitLMStreamingState:
        state = self._require_streaming(what)
        assert isinstance(state, UnitLMStreamingState)
        return state

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one token per stream: `tokens` int ``[B]`` -> next-token logits float32 ``[B, vocab.size]``.

        Running streams (exec mask True) advance by one position; paused ones get the logits this token would give
        them, and keep their state. Raises `StreamingError` when not streaming, for a token outside the vocabulary,
        or when a running stream has used all ``max_positions``. `inputs_embeds` (``[B, embedding dim]``, optional)
        is fed to the model in place of the tokens' embeddings (a model that adds something to them: LSLM fusion).
        """
        state = self._lm_state("UnitLM.step")
        tokens = torch.as_tensor(tokens, device=state.device)
        if tokens.shape != (state.batch_size,) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise StreamingError(f"UnitLM.step takes one integer token per stream: shape [{state.batch_size}], got "
                                 f"{tokens.dtype} {tuple(tokens.shape)}")
        tokens = tokens.long()
        self._check_step(state, tokens)
        run = state.exec_mask
        slots = state.num_slots
        seen = torch.cat([state.valid, torch.ones_like(run)[:, None]], dim=1)  # own stream + this token
        kwargs = {_cache_kwarg(type(self.model)): state.cache}
        try:
            inputs = {"input_ids": tokens[:, None]} if inputs_embeds is None else {"inputs_embeds": inputs_embeds[:, None]}
            out = self.model(**inputs, attention_mask=seen.long(), position_ids=state.positions[:, None],
                             use_cache=True, **kwargs)
        except BaseException:
            _select_slots(state.cache, torch.arange(slots, device=state.device))  # drop a half-written slot
            raise
        state.valid = torch.cat([state.valid, run[:, None]], dim=1)
        state.positions = state.positions + run.long()
        return out.logits[:, -1].float()

    def _check_step(self, state: UnitLMStreamingState, tokens: torch.Tensor) -> None:
        """One device sync for both checks; the diagnosis only runs when something is wrong."""
        limit = self.max_positions
        bad_token = (tokens < 0) | (tokens >= self.vocab.size)
        full = state.exec_mask & (state.positions >= limit) if limit is not None else torch.zeros_like(bad_token)
        if not bool((bad_token | full).any()):
            return
        if bool(bad_token.any()):
            b = int(bad_token.nonzero()[0, 0])
            raise StreamingError(f"UnitLM.step: stream {b} got token {int(tokens[b])}, outside the vocabulary's "
                                 f"[0, {self.vocab.size})")
        b = int(full.nonzero()[0, 0])
        raise StreamingError(f"UnitLM.step: stream {b} has used all {limit} positions of the model; reset it "
                             f"(reset_streaming) or pause it (set_exec_mask) before stepping")

    def compact_streaming(self) -> int:
        """Drop the timeline slots no stream uses any more (copies the cache once); returns how many were dropped."""
        state = self._lm_state("compact_streaming")
        keep = state.valid.any(dim=0)
        dropped = int((~keep).sum())
        if dropped:
            index = keep.nonzero()[:, 0]
            _select_slots(state.cache, index)
            state.valid = state.valid[:, index]
            logger.debug("compacted the streaming timeline: dropped %d slot(s), %d left", dropped, state.num_slots)
        return dropped


# ---------------------------------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------------------------------


class Continuation(NamedTuple):
    units: list[np.ndarray]  # per stream: int64 units [N_b] (eos and anything after it left out)
    logits: torch.Tensor     # float32 [B, vocab.size]: next-token logits once every sampled token was fed


def prefill(lm: StreamingUnitLM, sequences: Sequence[TokenSequence]) -> torch.Tensor:
    """Feed ``sequences[b]`` (token ids ``[L_b]``, ``L_b >= 1``) to stream b; returns float32 ``[B, vocab.size]``,
    each stream's logits after its last token.

    Every stream starts at the same step and is paused once its sequence is done; the exec mask in force before the
    call is restored afterwards. The tokens extend each stream's current life (reset first for a fresh one).
    """
    state = lm._require_streaming("prefill")
    if len(sequences) != state.batch_size:
        raise StreamingError(f"prefill: {len(sequences)} sequence(s) for {state.batch_size} stream(s)")
    rows = [torch.as_tensor(np.asarray(s), dtype=torch.long).reshape(-1) for s in sequences]
    lengths = torch.tensor([len(r) for r in rows], device=state.device)
    if int(lengths.min()) == 0:
        raise ValueError("prefill: every sequence needs at least one token (its logits come from its last token)")
    grid = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for b, row in enumerate(rows):
        grid[b, :len(row)] = row
    grid = grid.to(state.device)
    saved = state.exec_mask.clone()
    logits: torch.Tensor | None = None
    try:
        for t in range(grid.shape[1]):
            lm.set_exec_mask(lengths > t)
            out = lm.step(grid[:, t])
            logits = out if logits is None else torch.where((lengths - 1 == t)[:, None], out, logits)
    finally:
        lm.set_exec_mask(saved)
    assert logits is not None
    return logits


def sample_continuation(lm: StreamingUnitLM, logits: torch.Tensor, config: SamplingConfig, *,
                        max_new: int | Sequence[int] | None = None,
                        generator: torch.Generator | None = None) -> Continuation:
    """Sample one continuation per stream from the current state and its next-token `logits` ``[B, vocab.size]``.

    `max_new`: new tokens per stream (eos included; default ``config.max_new_tokens``; ``config.num_samples`` and
    ``prompt_multiple`` are `sample_streaming`'s business). Streams stop at eos (with ``config.stop_at_eos``) or at
    their budget, and are paused from then on; every sampled token is fed. `generator` (on the model's device)
    drives the sampling, torch's global RNG when None; temperature 0 is greedy. The exec mask is restored afterwards.
    Raises `TextlessError` when a budget would pass the model's positions.
    """
    from textless.lm.generation import filter_logits

    state = lm._require_streaming("sample_continuation")
    vocab, batch = lm.vocab, state.batch_size
    if logits.shape != (batch, vocab.size):
        raise StreamingError(f"sample_continuation: logits must be [{batch}, {vocab.size}], got {tuple(logits.shape)}")
    budget = torch.as_tensor(config.max_new_tokens if max_new is None else max_new, dtype=torch.long)
    budget = budget.expand(batch).to(state.device) if budget.ndim == 0 else budget.to(state.device)
    if budget.shape != (batch,) or bool((budget < 0).any()):
        raise ValueError(f"max_new must be an int >= 0 or one per stream ({batch}), got {max_new!r}")
    limit = lm.max_positions
    if limit is not None and bool((state.positions + budget > limit).any()):
        b = int((state.positions + budget > limit).nonzero()[0, 0])
        raise TextlessError(f"stream {b}: {int(state.positions[b])} tokens + {int(budget[b])} new ones exceed the "
                            f"model's {limit} positions; shorten the prompt or lower max_new_tokens")
    eos = vocab.eos_id if config.stop_at_eos else None
    units_allowed = torch.zeros(vocab.size, dtype=torch.bool, device=state.device)
    units_allowed[slice(*vocab.unit_range)] = True
    count = torch.zeros(batch, dtype=torch.long, device=state.device)
    done = budget == 0
    history: list[torch.Tensor] = []
    ran: list[torch.Tensor] = []
    saved = state.exec_mask.clone()
    try:
        while not bool(done.all()):
            allowed = units_allowed.expand(batch, -1).clone()
            if eos is not None:
                allowed[:, eos] = count >= config.min_new_tokens
            scores = logits.masked_fill(~allowed, -math.inf)
            if config.greedy:
                tokens = scores.argmax(dim=-1)
            else:
                probs = filter_logits(scores, temperature=config.temperature, top_k=config.top_k,
                                      top_p=config.top_p).softmax(dim=-1)
                tokens = torch.multinomial(probs, 1, generator=generator)[:, 0]
            active = ~done
            lm.set_exec_mask(active)
            logits = torch.where(active[:, None], lm.step(tokens), logits)
            history.append(tokens)
            ran.append(active)
            count = count + active.long()
            done = done | (count >= budget)
            if eos is not None:
                done = done | (active & (tokens == eos))
    finally:
        lm.set_exec_mask(saved)
    if not history:
        return Continuation([np.zeros(0, dtype=np.int64) for _ in range(batch)], logits)
    tokens_np = torch.stack(history, dim=1).cpu().numpy()
    ran_np = torch.stack(ran, dim=1).cpu().numpy()
    return Continuation([_to_units(vocab, row[keep], eos) for row, keep in zip(tokens_np, ran_np, strict=True)],
                        logits)


def sample_streaming(lm: StreamingUnitLM, prompts: Sequence[np.ndarray], config: SamplingConfig | None = None, *,
                     batch_size: int = 16, generator: torch.Generator | None = None) -> list[list[np.ndarray]]:
    """`textless.lm.generation.generate_units` through `step`: per prompt (units ``[L_i]``), ``config.num_samples``
    unit continuations (same length rules, same greedy output).

    Prompt x sample rows run `batch_size` streams at a time (each batch one streaming session: the model must not be
    streaming already). `generator` defaults to a fresh one seeded with ``config.seed`` (None: torch's global RNG).
    """
    from textless.lm.generation import SamplingConfig, prompt_rows

    config = config if config is not None else SamplingConfig()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = [r for r in prompt_rows(lm, prompts, config) if r.max_new > 0]
    results = [[np.zeros(0, dtype=np.int64)] * config.num_samples for _ in prompts]
    if generator is None and config.seed is not None:
        generator = torch.Generator(device=lm.device).manual_seed(config.seed)
    was_training = lm.training
    lm.eval()
    try:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            with lm.streaming(len(batch)):
                logits = prefill(lm, [r.tokens for r in batch])
                cont = sample_continuation(lm, logits, config, max_new=[r.max_new for r in batch], generator=generator)
            for row, units in zip(batch, cont.units, strict=True):
                results[row.prompt][row.sample] = units
    finally:
        lm.train(was_training)
    return results


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def _to_units(vocab: UnitVocab, tokens: np.ndarray, eos: int | None) -> np.ndarray:
    """Sampled tokens ``[N]`` -> units: cut before the first eos (when stopping at eos); the rest are units."""
    if eos is not None:
        hits = np.flatnonzero(tokens == eos)
        if hits.size:
            tokens = tokens[: hits[0]]
    return vocab.tokens_to_units(tokens, strict=True)


@functools.cache
def _cache_kwarg(model_class: type) -> str:
    """The forward() keyword of the KV cache: ``cache`` (recent transformers 5) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _check_full_attention(config: PretrainedConfig) -> None:
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None:
        windowed = sorted({t for t in layer_types if t != "full_attention"})
    else:
        on = getattr(text, "sliding_window", None) is not None and getattr(text, "use_sliding_window", True)
        windowed = ["sliding_window"] if on else []
    if windowed:
        raise StreamingError(f"streaming needs full attention in every layer; this {text.model_type} model has "
                             f"{windowed} layers (their window would count timeline slots, not positions)")


def _select_slots(cache: Any, index: torch.Tensor) -> None:
    """Keep the timeline slots `index` (int64 ``[S']``) in every layer of a DynamicCache (in place)."""
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        if keys is not None and keys.numel():
            layer.keys = keys.index_select(-2, index)
            layer.values = layer.values.index_select(-2, index)
