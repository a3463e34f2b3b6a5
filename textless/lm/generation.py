"""Sampling unit continuations from a `UnitLM` (GSLM / TWIST "continuation" generation).

Inputs and outputs. ``prompts`` are unit sequences (int ``[L_i]``, may be empty: unconditional generation). Each
prompt becomes ``[bos] + (units + offset)``; the result is, per prompt, ``num_samples`` continuations: int64 unit
arrays ``[N_ij]`` (prompt excluded, specials stripped, cut before the first eos), ``N_ij <= max_new(i)``.

Length. ``max_new(i) = max_new_tokens``, or with ``prompt_multiple`` set (TWIST: 3.0 with max_new_tokens 250)
``min(max_new_tokens, floor(prompt_multiple * L_i))`` new tokens (eos included when it is sampled). A prompt whose
tokens plus ``max_new(i)`` exceed the model's position range raises `TextlessError`.

Sampling. Only unit tokens - and eos when ``stop_at_eos``, once ``min_new_tokens`` tokens exist - can be produced:
every other logit (pad, bos, other specials, unused rows) is set to -inf BEFORE temperature, top-k and top-p are
applied, in that order, by the pure function `filter_logits`: top-k keeps the k highest logits (ties with the k-th
kept), top-p the fewest most likely tokens whose probability (after temperature and top-k) reaches ``top_p`` (at least
one). textless' own processor list does all of it: transformers' own warpers are switched off and the model's
``generation_config`` is replaced by a clean one for the call, so no checkpoint default leaks in. ``temperature``
0 means greedy (argmax over the allowed tokens).

Batching and determinism. Prompt x sample rows are sorted by (max_new, length), cut into batches of ``batch_size``
rows, LEFT-padded with an attention mask (positions follow the mask) and run through ``model.generate``. With
``seed`` set, torch's RNG is seeded once per call inside ``torch.random.fork_rng`` (the caller's RNG state is left
untouched): results are reproducible for the same prompts, config and batch_size. Greedy results do not depend on
batch_size nor on ``use_cache`` (up to float ties).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import GenerationConfig
from transformers.generation import LogitsProcessor, LogitsProcessorList

from textless.errors import ConfigError, TextlessError
from textless.lm.scoring import pad_rows
from textless.lm.vocab import UnitVocab

if TYPE_CHECKING:
    from textless.lm.model import UnitLM


@dataclass
class SamplingConfig:
    temperature: float = 0.8          # 0 -> greedy
    top_k: int | None = None          # keep the k most likely tokens (None: all)
    top_p: float | None = None        # nucleus sampling (None: off)
    max_new_tokens: int = 250
    min_new_tokens: int = 0           # eos is forbidden before this many new tokens
    num_samples: int = 1              # continuations per prompt
    seed: int | None = 0              # None: use (and advance) torch's global RNG
    use_cache: bool = True
    stop_at_eos: bool = True          # False: eos is never sampled, every row gets max_new tokens
    prompt_multiple: float | None = None  # TWIST: max_new = min(max_new_tokens, floor(prompt_multiple * L))

    def __post_init__(self) -> None:
        checks = {
            "temperature must be >= 0": math.isfinite(self.temperature) and self.temperature >= 0,
            "top_k must be None or >= 1": self.top_k is None or self.top_k >= 1,
            "top_p must be None or in (0, 1]": self.top_p is None or 0 < self.top_p <= 1,
            "max_new_tokens must be >= 0": self.max_new_tokens >= 0,
            "min_new_tokens must be >= 0": self.min_new_tokens >= 0,
            "num_samples must be >= 1": self.num_samples >= 1,
            "prompt_multiple must be None or > 0": self.prompt_multiple is None or self.prompt_multiple > 0,
        }
        failed = [msg for msg, ok in checks.items() if not ok]
        if failed:
            raise ConfigError(f"invalid SamplingConfig: {'; '.join(failed)} ({self})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def max_new_for(self, prompt_len: int) -> int:
        """New-token budget of a prompt of `prompt_len` units (see the module docstring)."""
        if self.prompt_multiple is None:
            return self.max_new_tokens
        return min(self.max_new_tokens, math.floor(self.prompt_multiple * prompt_len))


@dataclass
class PromptRow:
    prompt: int        # index of the prompt
    sample: int        # index of the sample
    tokens: np.ndarray  # [bos] + prompt tokens
    max_new: int


class UnitOnlyLogitsProcessor(LogitsProcessor):
    """Sets to -inf every logit that is not a unit token (eos stays allowed with `allow_eos`, from the
    `min_new_tokens`-th new token on). `prompt_len` is the (padded) input width of the batch."""

    def __init__(self, vocab: UnitVocab, *, allow_eos: bool, prompt_len: int, min_new_tokens: int = 0):
        self.vocab = vocab
        self.allow_eos = allow_eos
        self.prompt_len = prompt_len
        self.min_new_tokens = min_new_tokens
        self._masks: dict[tuple[int, bool, torch.device], torch.Tensor] = {}

    def _allowed(self, width: int, eos: bool, device: torch.device) -> torch.Tensor:
        key = (width, eos, device)
        if key not in self._masks:
            allowed = torch.zeros(width, dtype=torch.bool, device=device)
            allowed[slice(*self.vocab.unit_range)] = True
            if eos:
                allowed[self.vocab.eos_id] = True
            self._masks[key] = allowed
        return self._masks[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        eos = self.allow_eos and input_ids.shape[1] - self.prompt_len >= self.min_new_tokens
        return scores.masked_fill(~self._allowed(scores.shape[-1], eos, scores.device), -math.inf)


def filter_logits(scores: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Sampling logits ``[..., V]`` from `scores` ``[..., V]``: divided by `temperature` (> 0), then -inf outside the
    `top_k` highest (ties with the k-th kept), then -inf outside the nucleus: the fewest most likely tokens whose
    probability reaches `top_p` (at least one). None (or top_p 1) switches a filter off; `scores` is not modified.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (0 means greedy: no filtering), got {temperature}")
    out = scores / temperature if temperature != 1.0 else scores
    if top_k is not None and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        ordered, order = torch.sort(out, dim=-1, descending=True)
        probs = ordered.float().softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens
        drop = before >= top_p
        drop[..., 0] = False
        out = out.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), -math.inf)
    return out


class FilterLogitsWarper(LogitsProcessor):
    """`filter_logits` as a transformers logits processor (after `UnitOnlyLogitsProcessor`)."""

    def __init__(self, temperature: float, top_k: int | None, top_p: float | None):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return filter_logits(scores, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


def generate_units(lm: UnitLM, prompts: Sequence[np.ndarray], config: SamplingConfig, *,
                   batch_size: int = 16) -> list[list[np.ndarray]]:
    """Per prompt, `config.num_samples` unit continuations (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = prompt_rows(lm, prompts, config)
    results: list[list[np.ndarray]] = [[np.zeros(0, dtype=np.int64)] * config.num_samples for _ in prompts]
    todo = sorted((r for r in rows if r.max_new > 0), key=lambda r: (r.max_new, len(r.tokens)), reverse=True)
    with _seeded(config.seed, lm.device), _clean_generation_config(lm, config), torch.inference_mode():
        was_training = lm.training
        lm.eval()
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start:start + batch_size]
                for row, units in zip(batch, _generate_batch(lm, batch, config), strict=True):
                    results[row.prompt][row.sample] = units
        finally:
            lm.train(was_training)
    return results


def prompt_rows(lm: UnitLM, prompts: Sequence[np.ndarray], config: SamplingConfig) -> list[PromptRow]:
    """One row per prompt x sample: [bos] + prompt tokens and its new-token budget; `TextlessError` when a prompt
    and its budget exceed the model's positions."""
    limit = lm.max_positions
    rows = []
    for i, prompt in enumerate(prompts):
        tokens = lm.vocab.encode(prompt, bos=True)
        max_new = config.max_new_for(len(tokens) - 1)
        if limit is not None and len(tokens) + max_new > limit:
            raise TextlessError(f"prompt {i}: {len(tokens)} tokens + {max_new} new ones exceed the model's {limit} "
                                f"positions; shorten the prompt or lower max_new_tokens")
        rows.extend(PromptRow(i, s, tokens, max_new) for s in range(config.num_samples))
    return rows


def _generate_batch(lm: UnitLM, batch: list[PromptRow], config: SamplingConfig) -> list[np.ndarray]:
    vocab = lm.vocab
    pad_id = vocab.specials.get("pad", vocab.eos_id)
    input_ids, attention_mask = pad_rows([r.tokens for r in batch], pad_id=pad_id, device=lm.device, left=True)
    width = input_ids.shape[1]
    processors = _processors(vocab, config, width)
    out = lm.model.generate(input_ids=input_ids, attention_mask=attention_mask, logits_processor=processors,
                            generation_config=_hf_config(vocab, config, max(r.max_new for r in batch), pad_id))
    new = out[:, width:].cpu().numpy()
    return [_postprocess(vocab, tokens[:row.max_new], config.stop_at_eos) for row, tokens in zip(batch, new,
                                                                                                 strict=True)]


def _processors(vocab: UnitVocab, config: SamplingConfig, prompt_len: int) -> LogitsProcessorList:
    procs: list[LogitsProcessor] = [UnitOnlyLogitsProcessor(vocab, allow_eos=config.stop_at_eos,
                                                            prompt_len=prompt_len,
                                                            min_new_tokens=config.min_new_tokens)]
    if not config.greedy:
        procs.append(FilterLogitsWarper(config.temperature, config.top_k, config.top_p))
    return LogitsProcessorList(procs)


def _hf_config(vocab: UnitVocab, config: SamplingConfig, max_new: int, pad_id: int) -> GenerationConfig:
    """transformers' own warpers OFF (temperature 1, top_k 0, top_p 1 when sampling; greedy uses none): textless'
    processor list does it all."""
    warpers_off = {} if config.greedy else {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    return GenerationConfig(max_new_tokens=max_new, do_sample=not config.greedy, num_beams=1, num_return_sequences=1,
                            use_cache=config.use_cache, pad_token_id=pad_id, bos_token_id=vocab.specials.get("bos"),
                            eos_token_id=vocab.eos_id if config.stop_at_eos else None, **warpers_off)


def _postprocess(vocab: UnitVocab, tokens: np.ndarray, stop_at_eos: bool) -> np.ndarray:
    """New tokens ``[N]`` -> units: cut before the first eos; anything else must be a unit (strict: a special
    here would be a bug of the logits processor)."""
    if stop_at_eos:
        hits = np.flatnonzero(tokens == vocab.eos_id)
        if hits.size:
            tokens = tokens[: hits[0]]
    return vocab.tokens_to_units(tokens, strict=True)


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    if seed is None:
        yield
        return
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def _clean_generation_config(lm: UnitLM, config: SamplingConfig) -> Iterator[None]:
    """Swap the model's generation_config for a blank one (pad/bos/eos only) for the duration of the call."""
    model = lm.model
    saved = model.generation_config
    vocab = lm.vocab
    model.generation_config = GenerationConfig(pad_token_id=vocab.specials.get("pad", vocab.eos_id),
                                               bos_token_id=vocab.specials.get("bos"),
                                               eos_token_id=vocab.eos_id if config.stop_at_eos else None)
    try:
        yield
    finally:
        model.generation_config = saved
