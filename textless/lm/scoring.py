"""Log-likelihood of unit sequences under a `UnitLM` (sWUGGY / sBLIMP / StoryCloze style scoring).

Convention (slamkit's, the default everywhere in textless: `textless eval` and `UnitLM.log_likelihood` alike). A unit
sequence ``u_1..u_L`` becomes tokens ``x = [bos] + (u + offset) + [eos]`` (bos with ``add_bos``, eos with
``add_eos``; both on by default). EVERY token after the first is scored given all tokens before it:

    sum = sum_{t >= 1} log P(x_t | x_<t)        (natural log, float64)
    num_tokens = len(x) - 1                     (= L + add_eos with add_bos; L - 1 + add_eos without)
    mean = sum / num_tokens                     (per-token; slamkit's default score is -mean, the mean NLL)

So with ``add_bos`` every unit is scored, ``P(u_1 | bos) P(u_2 | bos u_1) ...``; without it the first unit is only
context. ``add_eos`` adds exactly one term, ``log P(eos | x)``. A sequence with nothing to score raises.

Length. ``max_tokens`` (if given) keeps the FIRST ``max_tokens`` tokens of ``x`` (bos included; a truncated
sequence loses its eos). Without it, a sequence longer than the model's position range
(``max_position_embeddings`` / ``n_positions``) raises `TextlessError`.

Batching. Sequences are sorted by length (longest first), cut into batches of ``batch_size``, RIGHT-padded with an
attention mask (padded positions are never scored) and the results put back in input order. Logits are converted
to float32 before ``log_softmax`` whatever the model's dtype; the model runs in eval mode under
``torch.inference_mode`` (its train/eval mode is restored afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from textless.errors import TextlessError

if TYPE_CHECKING:
    from textless.lm.model import UnitLM


@dataclass
class LogLikelihood:
    """Per-sequence scores, all ``[B]`` in input order: `sum` / `mean` float64, `num_tokens` int64."""

    sum: np.ndarray
    mean: np.ndarray
    num_tokens: np.ndarray


def log_likelihood(lm: UnitLM, sequences: Sequence[np.ndarray], *, batch_size: int = 32, add_bos: bool = True,
                   add_eos: bool = True, max_tokens: int | None = None) -> LogLikelihood:
    """Score unit sequences (units, NOT token ids); see the module docstring for the exact convention."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokens = [_tokens(lm, seq, i, add_bos, add_eos, max_tokens) for i, seq in enumerate(sequences)]
    sums = np.zeros(len(tokens), dtype=np.float64)
    order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
    with _eval_mode(lm), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            sums[idx] = _score_batch(lm, [tokens[i] for i in idx])
    counts = np.array([len(t) - 1 for t in tokens], dtype=np.int64)
    return LogLikelihood(sum=sums, mean=sums / np.maximum(counts, 1), num_tokens=counts)


def _tokens(lm: UnitLM, units: np.ndarray, index: int, add_bos: bool, add_eos: bool,
            max_tokens: int | None) -> np.ndarray:
    tokens = lm.vocab.encode(units, bos=add_bos, eos=add_eos)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    limit = lm.max_positions
    if limit is not None and len(tokens) > limit:
        raise TextlessError(f"sequence {index} is {len(tokens)} tokens long but the model covers {limit} positions; "
                            f"pass max_tokens (<= {limit}) to truncate it")
    if len(tokens) < 2:
        raise TextlessError(f"sequence {index} has nothing to score ({len(tokens)} token(s) after adding bos/eos "
                            f"and truncating; at least 2 are needed)")
    return tokens


def _score_batch(lm: UnitLM, batch: list[np.ndarray]) -> np.ndarray:
    """Summed log-prob of tokens 1.. of each (right-padded) row -> float64 ``[B]``."""
    input_ids, attention_mask = pad_rows(batch, pad_id=lm.vocab.specials.get("pad", 0), device=lm.device)
    logits = lm(input_ids, attention_mask=attention_mask, use_cache=False).logits  # [B, T, V]
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)                   # [B, T-1, V]
    targets = input_ids[:, 1:]
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)                # [B, T-1]
    picked = picked.masked_fill(attention_mask[:, 1:] == 0, 0.0)
    return picked.double().sum(-1).cpu().numpy()


def pad_rows(rows: Sequence[np.ndarray], *, pad_id: int, device: torch.device | str = "cpu",
             left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> (``input_ids`` int64 ``[B, T]``, ``attention_mask`` int64 ``[B, T]``, 0 on padding), padded
    on the right (on the left with `left=True`, as HF generation wants); T is the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.as_tensor(np.asarray(row, dtype=np.int64))
        mask[i, span] = 1
    return ids.to(device), mask.to(device)


@contextmanager
def _eval_mode(module: torch.nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
