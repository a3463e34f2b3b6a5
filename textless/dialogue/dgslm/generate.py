"""Sampling two-channel dialogues from a dGSLM with fairseq's per-channel duration counters.

What it does (fairseq ``fairseq/models/speech_dlm/sequence_generator/multichannel_sequence_generator.py``, sampling
search). Each item is a conversation prompt: frame-level units int ``[2, P]`` (P frames, one channel per speaker, P
may be 0: unconditional). The model is fed the start token (``config.start_token``) and then each frame's units, one
frame of both channels per `DGSLM.step`; the logits of step t choose frame t. Frames ``0..P-1`` are the prompt's
(forced); the next N frames (``sampling.max_frames``, or per item ``frames``) are generated, except where ``force``
gives a unit (teacher forcing: ``force[b]`` int ``[2, n]``, -1 = free, e.g. one recorded channel and the other
generated, fairseq's "one-channel-conditioned" generation with pad / unk prefix tokens). The result of an item is
its units int64 ``[2, P + N]``: the prompt INCLUDED (its first P frames), then the continuation.

Duration counters (per item and channel, start at 1; the model's duration regression is in frames). At step t the
prediction is ``max(1, round(pred / duration_temperature))`` (half to even, as torch). A "repeat" is a fed token
equal to the one fed at t - 1 (no new run). Delayed variant (``config.delayed_duration``, the released model): a
repeat's prediction is replaced by 1; the counter drops by 1 where it is 1 or where the token repeated (never below
0); where it reaches 0 it takes the prediction. Non-delayed: where the previous step's counter jumped and the token
repeated, the counter is set to 2; it drops by 1 on a repeat (never below 1). Both: while the counter is not 1 the
channel COPIES its previous frame (its logits are masked to that unit); the non-delayed counter then takes the
prediction where it is 1. So a run of unit u lasts the prediction made when u is first fed (delayed) or when the unit
before it is fed (non-delayed), and a freely sampled repeat starts no counted run. The counters also run over the
prompt and forced frames, where copying never overrides the given unit (fairseq's prefix rule), so a prompt's last
run is completed to its predicted length. A model without a duration head samples every frame freely.

Sampling. Only the K unit logits are used (fairseq masks only pad and, before the end, eos: a deviation without
effect on a trained model); they are divided by ``temperature`` then cut by ``top_k`` / ``top_p``
(`textless.lm.generation.filter_logits`); temperature 0 is greedy (argmax). fairseq's defaults for dGSLM
(``sample_speech_dlm.py``): sampling, temperature 1, duration temperature 1, seed 123, 500 frames (10 s at 50 Hz;
fairseq counts the prompt in its 500, `max_frames` counts new frames only).

Determinism. Every item has its own ``torch.Generator`` seeded with ``seeds[b]`` (default ``sampling.seed + b``, b the
item's index in the call) and draws one sample per channel per step of its own timeline, so an item's result does not
depend on the other items of its batch nor on `batch_size` (up to float differences of batched matrix products,
none seen on CPU). Items of a batch run in lockstep from their own t = 0; an item whose P + N frames are done is
paused (`set_exec_mask`). ``use_cache=False`` recomputes the full forward over all fed frames at every step (slow,
O(T^2) per step; a reference for tests): the same tokens as streaming up to float ties.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from textless.dialogue.dgslm.model import CHANNELS, DGSLM, DGSLMOutput
from textless.errors import ConfigError, TextlessError
from textless.lm.generation import filter_logits


@dataclass
class DialogueSamplingConfig:
    temperature: float = 1.0           # unit logits are divided by it; 0 -> greedy
    top_k: int | None = None           # keep the k most likely units (None: all)
    top_p: float | None = None         # nucleus sampling (None: off)
    duration_temperature: float = 1.0  # predicted durations (frames) are divided by it: > 1 shorter runs
    max_frames: int = 500              # new frames per channel (500 = 10 s at 50 Hz)
    seed: int | None = 123             # item b draws from a generator seeded seed + b (None: a random seed)

    def __post_init__(self) -> None:
        checks = {
            "temperature must be >= 0": math.isfinite(self.temperature) and self.temperature >= 0,
            "top_k must be None or >= 1": self.top_k is None or self.top_k >= 1,
            "top_p must be None or in (0, 1]": self.top_p is None or 0 < self.top_p <= 1,
            "duration_temperature must be > 0": math.isfinite(self.duration_temperature)
            and self.duration_temperature > 0,
            "max_frames must be >= 0": self.max_frames >= 0,
        }
        failed = [msg for msg, ok in checks.items() if not ok]
        if failed:
            raise ConfigError(f"invalid DialogueSamplingConfig: {'; '.join(failed)} ({self})")


class DurationCounters:
    """fairseq's per-channel ``dur_counter`` for `batch_size` streams (see the module docstring).

    `update` is called once per step with the tokens fed at that step and the step's duration predictions; it returns
    where each channel must copy its previous frame. Items where `running` is False keep their state.
    """

    def __init__(self, batch_size: int, *, delayed: bool, duration_temperature: float = 1.0,
                 device: torch.device | str = "cpu"):
        self.delayed, self.duration_temperature = delayed, duration_temperature
        self.counter = torch.ones(batch_size, CHANNELS, dtype=torch.long, device=device)
        self.jumped = torch.zeros(batch_size, CHANNELS, dtype=torch.bool, device=device)
        self.previous: torch.Tensor | None = None   # tokens fed at the previous step [B, 2]

    def update(self, fed: torch.Tensor, predictions: torch.Tensor, running: torch.Tensor | None = None
               ) -> torch.Tensor:
        """fed int [B, 2], predictions float [B, 2] (frames) -> copy bool [B, 2]."""
        pred = (predictions.float() / self.duration_temperature).round().long().clamp(min=1)
        counter = self.counter
        if self.previous is not None:
            repeat = fed == self.previous
            if self.delayed:
                pred = pred.masked_fill(repeat, 1)
                counter = (counter - ((counter == 1) | repeat).long()).clamp(min=0)
            else:
                counter = counter.masked_fill(self.jumped & repeat, 2)
                counter = (counter - repeat.long()).clamp(min=1)
        if self.delayed:
            jumped = counter == 0
            counter = torch.where(jumped, pred, counter)
            copy = counter != 1
        else:
            copy = counter != 1
            jumped = counter == 1
            counter = torch.where(jumped, pred, counter)
        run = torch.ones_like(copy) if running is None else running[:, None].expand_as(copy)
        self.counter = torch.where(run, counter, self.counter)
        self.jumped = torch.where(run, jumped, self.jumped)
        self.previous = fed.clone() if self.previous is None else torch.where(run, fed, self.previous)
        return copy


def generate_dialogue(model: DGSLM, prompts: Sequence[np.ndarray | torch.Tensor], *,
                      force: Sequence[np.ndarray | torch.Tensor | None] | None = None,
                      sampling: DialogueSamplingConfig | None = None, frames: int | Sequence[int] | None = None,
                      seeds: Sequence[int] | None = None, batch_size: int = 16, use_cache: bool = True
                      ) -> list[np.ndarray]:
    """Continue each prompt (frame-level units ``[2, P_b]``) by N_b frames of both channels; returns per item the
    units int64 ``[2, P_b + N_b]``, prompt included (see the module docstring).

    force: per item None or int ``[2, n]`` (n <= N_b): the units of the first n continuation frames, -1 where free.
    frames: N_b for all items or per item (default ``sampling.max_frames``). seeds: per item (default seed + index).
    batch_size: items run together (the results do not depend on it). `TextlessError` for a prompt or force that
    does not fit (shape, unit range, P + N beyond the model's ``max_positions``).
    """
    sampling = sampling or DialogueSamplingConfig()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(prompts)
    lengths = [sampling.max_frames] * n if frames is None else [int(frames)] * n if isinstance(frames, int) \
        else [int(f) for f in frames]
    if seeds is None:
        base = sampling.seed if sampling.seed is not None else int(torch.randint(0, 2**62, ()).item())
        seeds = [base + i for i in range(n)]
    if len(lengths) != n or len(seeds) != n or (force is not None and len(force) != n):
        raise ValueError(f"{n} prompts but {len(lengths)} frame counts, {len(seeds)} seeds"
                         + ("" if force is None else f", {len(force)} forces"))
    items = [_targets(model, i, prompts[i], None if force is None else force[i], lengths[i]) for i in range(n)]
    results: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            chunk = slice(start, start + batch_size)
            results.extend(_generate_batch(model, items[chunk], list(seeds[chunk]), sampling, use_cache))
    finally:
        model.train(was_training)
    return results


def _targets(model: DGSLM, i: int, prompt, force, frames: int) -> np.ndarray:
    """Item i's given units int64 [2, P + N]: the prompt, then the forced frames, -1 where free."""
    k = model.config.num_units
    prompt = np.asarray(torch.as_tensor(prompt).cpu(), dtype=np.int64)
    if prompt.ndim != 2 or prompt.shape[0] != CHANNELS:
        raise TextlessError(f"prompt {i}: units must be [2 channels, frames], got shape {list(prompt.shape)}")
    if prompt.size and (prompt.min() < 0 or prompt.max() >= k):
        raise TextlessError(f"prompt {i}: units outside [0, {k}) (the model's units)")
    if frames < 0:
        raise TextlessError(f"prompt {i}: a negative number of frames ({frames})")
    total = prompt.shape[1] + frames
    if total > model.config.max_positions:
        raise TextlessError(f"prompt {i}: {prompt.shape[1]} prompt frames + {frames} new ones exceed the model's "
                            f"{model.config.max_positions} positions; shorten the prompt or generate fewer frames")
    given = np.full((CHANNELS, total), -1, dtype=np.int64)
    given[:, :prompt.shape[1]] = prompt
    if force is not None:
        force = np.asarray(torch.as_tensor(force).cpu(), dtype=np.int64)
        if force.ndim != 2 or force.shape[0] != CHANNELS or force.shape[1] > frames:
            raise TextlessError(f"prompt {i}: force must be [2, n <= {frames}] (-1 where free), got shape "
                                f"{list(force.shape)}")
        if force.size and (force.min() < -1 or force.max() >= k):
            raise TextlessError(f"prompt {i}: forced units outside [0, {k}) (or -1 for free frames)")
        given[:, prompt.shape[1]:prompt.shape[1] + force.shape[1]] = force
    return given


@torch.no_grad()
def _generate_batch(model: DGSLM, items: list[np.ndarray], seeds: list[int], sampling: DialogueSamplingConfig,
                    use_cache: bool) -> list[np.ndarray]:
    device, b = model.device, len(items)
    lengths = torch.tensor([g.shape[1] for g in items], device=device)
    steps, first_done = max(g.shape[1] for g in items), min(g.shape[1] for g in items)
    given = torch.full((b, CHANNELS, steps), -1, dtype=torch.long, device=device)
    for i, g in enumerate(items):
        given[i, :, :g.shape[1]] = torch.from_numpy(g)
    out = torch.zeros_like(given)
    generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    counters = DurationCounters(b, delayed=model.config.delayed_duration,
                                duration_temperature=sampling.duration_temperature, device=device) \
        if model.config.duration_prediction else None
    start = torch.full((b, CHANNELS), model.vocab.special(model.config.start_token), dtype=torch.long,
                       device=device)
    with model.streaming(b) if use_cache and steps else nullcontext():
        for t in range(steps):
            running = t < lengths
            fed = start if t == 0 else out[:, :, t - 1]
            if use_cache:
                if t and t >= first_done:  # some items are done: pause them
                    model.set_exec_mask(running)
                step = model.step(fed)
            else:
                full = model(torch.cat([start[:, :, None], out[:, :, :t]], dim=2))
                step = DGSLMOutput(full.logits[:, :, -1].float(),
                                   None if full.durations is None else full.durations[:, :, -1].float())
            sampled = _sample(step.logits[..., :model.config.num_units], sampling, generators)
            token = sampled
            if counters is not None and step.durations is not None:
                copy = counters.update(fed, step.durations, running)
                if t:
                    token = torch.where(copy, out[:, :, t - 1], sampled)
            target = given[:, :, t]
            out[:, :, t] = torch.where(target >= 0, target, token)
    return [out[i, :, :g.shape[1]].cpu().numpy() for i, g in enumerate(items)]


def _sample(logits: torch.Tensor, sampling: DialogueSamplingConfig, generators: list[torch.Generator]
            ) -> torch.Tensor:
    """Unit logits [B, 2, K] -> one unit per item and channel [B, 2]; item b draws from generators[b]."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float(), temperature=sampling.temperature, top_k=sampling.top_k,
                          top_p=sampling.top_p).softmax(-1)
    return torch.stack([torch.multinomial(probs[i], 1, generator=g)[:, 0] for i, g in enumerate(generators)])
