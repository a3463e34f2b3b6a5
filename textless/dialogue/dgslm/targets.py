"""dGSLM's training targets and losses: edge units at run starts and run durations (fairseq SpeechDLM's criterion).

Targets (fairseq ``fairseq/data/speech_dlm_dataset.py``). A training window of T frames of one channel: the model is
fed ``input[t]`` (the start token at the conversation's first frame, else the previous frame's unit) and ``target[t]``
is the unit of frame t. The runs of ``target`` (``unique_consecutive``) give, per run r: its start index ``edge[r]``
(a window starts a run at index 0), its unit, and its duration in frames; the last run's duration continues into the
frames after the window (fairseq reads them from the next block), and every duration is capped at `max_duration`
(fairseq ``max_target_durations``, 256).

Losses (fairseq ``speech_dlm_criterion.py`` with its defaults: edge weight 1, duration weight 1, next-unit weight 0).
Edge: the NLL of ``logits[edge[r]]`` for the run's unit. Duration: L1 between the raw regression and the duration, at
``edge[r]`` or, with ``delayed`` (fairseq's default and the released model's), at ``edge[r] + 1``, the step at which
the run's unit has been fed (a run whose ``edge + 1`` falls outside the window has no duration target). Each is
averaged over the channel's runs in the batch, then the channels are averaged (fairseq: loss / count * ntokens per
channel, divided by the total ntokens; both channels have the same ntokens). One deviation: fairseq flattens the batch
before adding 1 to the edge indices, so the last run of a sample gets its duration predicted at the first position of
the NEXT sample; here runs never reach into another sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from textless.dialogue.dgslm.model import CHANNELS, DGSLMOutput, DialogueVocab

MAX_DURATION = 256


@dataclass
class Runs:
    """One channel's run targets in a window: start index, unit and duration (frames) of each run, all int64 [R]."""

    starts: np.ndarray
    units: np.ndarray
    durations: np.ndarray


def run_targets(target: np.ndarray, following: np.ndarray | None = None, max_duration: int = MAX_DURATION) -> Runs:
    """Runs of `target` (frame-level units [T]); the last run extends into `following` (the frames after the window,
    [F]), every duration capped at `max_duration`."""
    target = np.asarray(target, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], target[1:] != target[:-1])))
    durations = np.diff(np.concatenate((starts, [len(target)])))
    if following is not None and len(following):
        following = np.asarray(following, dtype=np.int64)
        changes = np.flatnonzero(following != target[-1])
        durations[-1] += changes[0] if len(changes) else len(following)
    return Runs(starts, target[starts], np.minimum(durations, max_duration))


def window(conversation: np.ndarray, start: int, length: int, start_token: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training window of frames ``[start, start + length)`` of a conversation (units int [2, N]):
    (input ids [2, L], targets [2, L], the frames that follow [2, N - start - L]); L = min(length, N - start)."""
    conversation = np.asarray(conversation, dtype=np.int64)
    target = conversation[:, start:start + length]
    first = np.full((CHANNELS, 1), start_token) if start == 0 else conversation[:, start - 1:start]
    return np.concatenate([first, target[:, :-1]], axis=1), target, conversation[:, start + target.shape[1]:]


@dataclass
class DGSLMBatch:
    """A padded batch: input_ids int64 [B, 2, T] (right-padded with pad); flat indices into [B, 2, T] positions."""

    input_ids: torch.Tensor
    edge_index: torch.Tensor      # int64 [E]: flat position (b * 2 + c) * T + t of each run start
    edge_unit: torch.Tensor       # int64 [E]
    edge_channel: torch.Tensor    # int64 [E]
    dur_index: torch.Tensor       # int64 [D]: flat position of each duration prediction
    dur_target: torch.Tensor      # float32 [D]
    dur_channel: torch.Tensor     # int64 [D]
    frames: int                   # non-pad frames per channel, summed over the batch

    def to(self, device: torch.device | str) -> DGSLMBatch:
        return DGSLMBatch(*(getattr(self, f).to(device) for f in ("input_ids", "edge_index", "edge_unit",
                                                                  "edge_channel", "dur_index", "dur_target",
                                                                  "dur_channel")), self.frames)


def collate(samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], vocab: DialogueVocab, delayed: bool = True,
            max_duration: int = MAX_DURATION) -> DGSLMBatch:
    """Samples of `window` -> a batch with every channel's run targets (see the module docstring)."""
    width = max(s[0].shape[1] for s in samples)
    ids = np.full((len(samples), CHANNELS, width), vocab.pad, dtype=np.int64)
    edges: list[list[np.ndarray]] = [[], [], []]
    durs: list[list[np.ndarray]] = [[], [], []]
    for b, (inputs, target, following) in enumerate(samples):
        length = inputs.shape[1]
        ids[b, :, :length] = inputs
        for c in range(CHANNELS):
            runs = run_targets(target[c], following[c], max_duration)
            base = (b * CHANNELS + c) * width
            edges[0].append(base + runs.starts)
            edges[1].append(runs.units)
            edges[2].append(np.full(len(runs.starts), c))
            at = runs.starts + 1 if delayed else runs.starts
            keep = at < length
            durs[0].append(base + at[keep])
            durs[1].append(runs.durations[keep])
            durs[2].append(np.full(int(keep.sum()), c))
    return DGSLMBatch(torch.from_numpy(ids), _cat(edges[0]), _cat(edges[1]), _cat(edges[2]), _cat(durs[0]),
                      _cat(durs[1], torch.float32), _cat(durs[2]), sum(s[0].shape[1] for s in samples))


def _cat(parts: list[np.ndarray], dtype: torch.dtype = torch.long) -> torch.Tensor:
    return torch.as_tensor(np.concatenate(parts), dtype=dtype)


def losses(out: DGSLMOutput, batch: DGSLMBatch, edge_weight: float = 1.0, duration_weight: float = 1.0
           ) -> tuple[torch.Tensor, dict[str, float]]:
    """(training loss, metrics): the weighted channel mean of the per-channel mean edge NLL and duration L1;
    metrics: edge_nll (nats), edge_accuracy, duration_l1 (frames), duration_accuracy (rounded prediction exact),
    and the counts they average over."""
    logits = out.logits.flatten(0, 2).float()[batch.edge_index]
    nll = F.cross_entropy(logits, batch.edge_unit, reduction="none")
    loss = edge_weight * _channel_mean(nll, batch.edge_channel)
    nll, logits = nll.detach(), logits.detach()  # metrics only from here
    metrics = {"edge_nll": float(nll.mean()) if len(nll) else 0.0, "edges": float(len(nll)),
               "edge_accuracy": float((logits.argmax(-1) == batch.edge_unit).float().mean()) if len(nll) else 0.0}
    if out.durations is not None and duration_weight:
        pred = out.durations.flatten().float()[batch.dur_index]
        l1 = (pred - batch.dur_target).abs()
        loss = loss + duration_weight * _channel_mean(l1, batch.dur_channel)
        pred, l1 = pred.detach(), l1.detach()
        metrics.update(duration_l1=float(l1.mean()) if len(l1) else 0.0, durations=float(len(l1)),
                       duration_accuracy=float((pred.round() == batch.dur_target).float().mean()) if len(l1) else 0.0)
    return loss, metrics


def _channel_mean(values: torch.Tensor, channel: torch.Tensor) -> torch.Tensor:
    sums = torch.zeros(CHANNELS, device=values.device).index_add(0, channel, values)
    counts = torch.bincount(channel, minlength=CHANNELS).clamp(min=1)
    return (sums / counts).mean()
