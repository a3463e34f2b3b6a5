"""The DPO math: batches of preference pairs, sequence log-probabilities, the losses (Rafailov et al., 2023).

Tokenisation (slamkit's, which runs TRL's ``DPOTrainer``): the prompt is ``bos + prompt units`` and each completion
``continuation units + eos`` (units become tokens through the `UnitVocab`); a row is ``prompt + completion``, only the
completion tokens are scored. A batch holds every pair twice, ``[chosen; rejected]`` (rows ``0..B-1`` are the chosen
sides, ``B..2B-1`` the rejected ones), right-padded with ``vocab.pad_id`` (`collate_pairs`, the same rows as TRL's
``DataCollatorForPreference``, with its ``keep_start`` truncation at ``max_length``).

A side's log-probability is the SUM over its completion tokens of ``log p(token | everything before)``
(`sequence_logps`), in nats. With ``Δ = (logp_c - ref_c) - (logp_r - ref_r)`` the per-pair losses (`DPO_LOSSES`) are

    sigmoid   -log σ(β Δ)                                              (DPO)
    hinge     relu(1 - β Δ)                                            (SLiC)
    ipo       ((logratio_c / len_c - logratio_r / len_r) - 1 / (2 β))²  (IPO, length-normalised as TRL does)

where ``len`` counts a side's completion tokens (eos included). Rewards (logged): ``β (logp - ref)`` of each side,
their margin, and whether the chosen reward is the larger (accuracy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from textless.lm.vocab import UnitVocab
from textless.preference.data import Pair

#: metric names of `dpo_loss` (per pair), in logging order
REWARD_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


@dataclass
class PreferenceBatch:
    """Padded ``[chosen; rejected]`` rows of ``B`` pairs.

    ``input_ids`` int64 ``[2B, T]`` (pad = ``vocab.pad_id``), ``attention_mask`` int64 ``[2B, T]`` (1 = real token),
    ``completion_mask`` int64 ``[2B, T]`` (1 = a completion token, scored), ``ref_chosen_logps`` /
    ``ref_rejected_logps`` float ``[B]`` when the pairs carry precomputed reference log-probs, else None.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    ref_chosen_logps: torch.Tensor | None = None
    ref_rejected_logps: torch.Tensor | None = None

    @property
    def num_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    def to(self, device: torch.device | str) -> PreferenceBatch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return PreferenceBatch(move(self.input_ids), move(self.attention_mask), move(self.completion_mask),
                               move(self.ref_chosen_logps), move(self.ref_rejected_logps))


def pair_tokens(pair: Pair, vocab: UnitVocab) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) token ids: ``bos + prompt units``, ``chosen units + eos``, ``rejected units + eos``."""
    prompt = [vocab.bos_id, *vocab.units_to_tokens(pair.prompt_units).tolist()]
    chosen = [*vocab.units_to_tokens(pair.chosen_units).tolist(), vocab.eos_id]
    rejected = [*vocab.units_to_tokens(pair.rejected_units).tolist(), vocab.eos_id]
    return prompt, chosen, rejected


def collate_pairs(pairs: Sequence[Pair], vocab: UnitVocab, max_length: int | None = None,
                  with_ref: bool = False) -> PreferenceBatch:
    """The `PreferenceBatch` of `pairs` (see the module docstring); rows longer than `max_length` tokens keep their
    start. `with_ref`: also the pairs' ``ref_chosen_logps`` / ``ref_rejected_logps`` (which must all be set)."""
    rows, masks = [], []
    for side in (1, 2):  # chosen rows, then rejected rows
        for pair in pairs:
            tokens = pair_tokens(pair, vocab)
            prompt, completion = tokens[0], tokens[side]
            row, mask = prompt + completion, [0] * len(prompt) + [1] * len(completion)
            if max_length is not None:
                row, mask = row[:max_length], mask[:max_length]
            rows.append(row)
            masks.append(mask)
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), vocab.pad_id, dtype=np.int64)
    attention = np.zeros((len(rows), width), dtype=np.int64)
    completion = np.zeros((len(rows), width), dtype=np.int64)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        ids[i, :len(row)] = row
        attention[i, :len(row)] = 1
        completion[i, :len(mask)] = mask
    ref_c = ref_r = None
    if with_ref:
        ref_c = torch.tensor([p.ref_chosen_logps for p in pairs], dtype=torch.float32)
        ref_r = torch.tensor([p.ref_rejected_logps for p in pairs], dtype=torch.float32)
    return PreferenceBatch(torch.from_numpy(ids), torch.from_numpy(attention), torch.from_numpy(completion),
                           ref_c, ref_r)


def sequence_logps(model: torch.nn.Module, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probs of each row's completion tokens, float32 ``[2B]`` (float64 for a float64 model); completion
    token counts, int64 ``[2B]``) of `model` (a causal LM returning ``.logits`` ``[2B, T, V]``) on `batch` (on the
    model's device). The prompt is not scored; padding never is."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    logits = out.logits[:, :-1]
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()  # bf16 / fp16 autocast: the log-softmax in float32
    targets = batch.input_ids[:, 1:]
    scored = batch.completion_mask[:, 1:].bool()
    token_logps = -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # [2B, T-1]
    logps = torch.where(scored, token_logps, torch.zeros_like(token_logps)).sum(dim=1)
    return logps, batch.completion_mask.sum(dim=1)


# ---------------------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------------------

LossFn = Callable[[torch.Tensor, torch.Tensor, float, torch.Tensor, torch.Tensor], torch.Tensor]


def sigmoid_loss(chosen_logratios, rejected_logratios, beta, chosen_lengths, rejected_lengths):
    """DPO: ``-log σ(β Δ)`` per pair."""
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))


def hinge_loss(chosen_logratios, rejected_logratios, beta, chosen_lengths, rejected_lengths):
    """SLiC: ``relu(1 - β Δ)`` per pair."""
    return torch.relu(1 - beta * (chosen_logratios - rejected_logratios))


def ipo_loss(chosen_logratios, rejected_logratios, beta, chosen_lengths, rejected_lengths):
    """IPO with per-token log-ratios (TRL's normalisation): ``(lr_c / len_c - lr_r / len_r - 1 / (2β))²``."""
    delta = (chosen_logratios / chosen_lengths.clamp(min=1).to(chosen_logratios.dtype)
             - rejected_logratios / rejected_lengths.clamp(min=1).to(rejected_logratios.dtype))
    return (delta - 1 / (2 * beta)) ** 2


#: loss_type -> per-pair loss ``f(chosen_logratios [B], rejected_logratios [B], beta, len_c [B], len_r [B]) -> [B]``
DPO_LOSSES: dict[str, LossFn] = {"sigmoid": sigmoid_loss, "hinge": hinge_loss, "ipo": ipo_loss}


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, loss_type: str = "sigmoid",
             lengths: tuple[torch.Tensor, torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(per-pair losses ``[B]``, per-pair metrics `REWARD_METRICS` ``[B]`` without gradient).

    Log-probs are summed completion log-probs ``[B]`` (nats); `lengths` = (chosen, rejected) completion token counts
    ``[B]`` (needed by ``ipo``). The batch loss is the mean of the per-pair losses (TRL's).
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {', '.join(DPO_LOSSES)}")
    if lengths is None:
        if loss_type == "ipo":
            raise ValueError("loss_type=ipo needs the completion lengths")
        ones = torch.ones_like(policy_chosen)
        lengths = (ones, ones)
    ref_chosen = ref_chosen.to(policy_chosen.dtype)
    ref_rejected = ref_rejected.to(policy_rejected.dtype)
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    losses = DPO_LOSSES[loss_type](chosen_logratios, rejected_logratios, beta, lengths[0], lengths[1])
    chosen_rewards = beta * chosen_logratios.detach()
    rejected_rewards = beta * rejected_logratios.detach()
    metrics = {"rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
               "rewards/margins": chosen_rewards - rejected_rewards,
               "rewards/accuracies": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype)}
    return losses, metrics


def batch_loss(model: torch.nn.Module, batch: PreferenceBatch, beta: float, loss_type: str,
               ref_logps: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`dpo_loss` of `model` on `batch`: the reference log-probs from `ref_logps` or from the batch's precomputed
    ones. Returns (per-pair losses ``[B]``, per-pair metrics)."""
    logps, lengths = sequence_logps(model, batch)
    chosen, rejected = logps.chunk(2)
    if ref_logps is None:
        if batch.ref_chosen_logps is None:
            raise ValueError("no reference log-probs: give ref_logps or a batch collated with_ref")
        ref_logps = (batch.ref_chosen_logps, batch.ref_rejected_logps)
    return dpo_loss(chosen, rejected, ref_logps[0], ref_logps[1], beta, loss_type, lengths.chunk(2))


@torch.no_grad()
def reference_logps(model: torch.nn.Module, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed completion log-probs ``[B]`` of a frozen `model`, without gradient."""
    logps, _ = sequence_logps(model, batch)
    chosen, rejected = logps.detach().chunk(2)
    return chosen, rejected


@torch.no_grad()
def precompute_ref_logps(lm, pairs: Sequence[Pair], batch_size: int, max_length: int | None = None,
                         device: torch.device | str | None = None, autocast=None) -> list[tuple[float, float]]:
    """(chosen, rejected) reference log-probs of every pair under `lm` (a `UnitLM`; put in eval mode, no gradient),
    in order, `batch_size` pairs per forward. `autocast`: a context-manager factory for the forwards (e.g. the
    engine's), else none."""
    import contextlib

    model = lm.model
    was_training = model.training
    model.eval()
    device = device if device is not None else lm.device
    out: list[tuple[float, float]] = []
    try:
        for start in range(0, len(pairs), batch_size):
            batch = collate_pairs(pairs[start:start + batch_size], lm.vocab, max_length).to(device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                chosen, rejected = reference_logps(model, batch)
            out.extend(zip(chosen.float().cpu().tolist(), rejected.float().cpu().tolist()))
    finally:
        model.train(was_training)
    return out
