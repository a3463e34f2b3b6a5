"""`textless train-dialogue`: dGSLM's training objective (edge units + run durations) on the training engine.

The engine (`textless.training.engine`) owns processes, DDP / FSDP, precision, budgets, validation cadence,
TensorBoard, checkpoints and exact resume; this module gives it the data stream, the loss and the model files.

Data: two-channel unit datasets (`textless.dialogue.data`, frame-level units). Training windows are `context` frames
(per channel) cut from ONE conversation (`window_starts`): a conversation of N > context frames gives
``ceil(N / context)`` windows at starts 0, context, 2 context, ..., the last one moved back to end with the
conversation (it overlaps its predecessor); a conversation of N <= context frames is one window of N frames. The grid
is fixed; what is random is the ORDER: epoch e visits every window once, in the permutation drawn from ``(seed, e)``
(`WindowStream`). fairseq (``--sample-break-mode none``) cuts blocks of 6144 frames from the concatenation of all
conversations, so a block may straddle two conversations; here a window never does. Targets and losses are
`textless.dialogue.dgslm.targets` (fairseq's edge / delayed-duration criterion, weights edge 1, duration 1, next 0).

Stream positions: micro-batch m of rank r holds stream positions ``(m * world + r) * batch_size + j``; position p is
window ``perm_e[p mod W]`` of epoch ``e = p // W`` (W windows per epoch); whether its channels are swapped is drawn
from the same generator (``channel_swap`` probability). The stream is a pure function of the position, so a resumed
run sees the same windows. Channel swap: this model is symmetric (the two towers share every weight and the
cross-attention treats both channels alike: swapping the input channels swaps the outputs, see
tests/test_dgslm_model.py), so swapping a window's channels leaves its loss and gradient unchanged up to float
summation order; it only matters for a non-symmetric variant. It is implemented (and changes nothing else) for those.

Loss: `targets.losses` of each micro-batch, already a mean (weight 1 per micro-batch), so a step's loss is the mean
over its micro-batches and ranks (not the pooled per-edge mean of the whole step). Metrics (TensorBoard
``train/...``, ``valid/...``): loss, edge_nll (nats per edge), edge_accuracy, duration_l1 (frames), duration_accuracy
(rounded prediction == target). Validation (`evaluate_dialogue_lm`): every window of ``valid_dataset``, in order, the
metrics pooled over all edges / durations (``loss`` = edge_weight * edge_nll + duration_weight * duration_l1 of the
pooled means).

Model (``init``): a preset of `textless.dialogue.dgslm.model.PRESETS` ("speech_dlm", "speech_dlm_big", "cpu",
"tiny") built for the data's units (vocabulary = the data's vocab_size, its tokenizer identity and frame rate), with
``model`` overrides (any `DGSLMConfig` field: cross_layers, d_model, dropout...); or a saved DGSLM directory to
continue from (its units must fit the data; ``model`` overrides that keep the weights' shapes, e.g. dropouts, apply).
``delayed_duration`` and ``max_duration`` are written into the model's config (generation reads them from there).

Schedule: fairseq's ``inverse_sqrt`` (linear warmup from ``warmup_init_lr`` to ``lr`` over ``warmup_steps``, then
``lr * sqrt(warmup_steps / step)``) or ``cosine`` (`textless.lm.train.lr_lambda`: warmup then cosine to ``min_lr``);
Adam(W) with weight decay on matrices only, gradient clipping. DDP and FSDP (FSDP2 on each decoder layer, then the
root; checkpoints and ``final/`` are plain DGSLM directories) as ``textless train``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from textless.dialogue.data import DialogueDataset, read_dialogues
from textless.dialogue.dgslm.model import DGSLM, PRESETS, DGSLMConfig, preset_config
from textless.dialogue.dgslm.targets import DGSLMBatch, collate, losses, window
from textless.errors import ConfigError
from textless.lm.train import lr_lambda, param_groups
from textless.training.checkpoint import MODEL_DIR
from textless.training.config import TrainingConfig
from textless.training.engine import TrainHooks, TrainResult, end_process_group, train_objective
from textless.training.objective import Context, Objective, OptimizerSpec, StepLoss
from textless.utils import runs

logger = logging.getLogger(__name__)

SCHEDULES = ("inverse_sqrt", "cosine")
METRICS = ("loss", "edge_nll", "edge_accuracy", "duration_l1", "duration_accuracy")


@dataclass
class DialogueTrainConfig(TrainingConfig):
    train_dataset: str = ""                # two-channel unit dataset directory (frame-level units)
    valid_dataset: str | None = None       # two-channel unit dataset for the validation metrics
    init: str = "speech_dlm"               # a preset (speech_dlm | speech_dlm_big | cpu | tiny) or a DGSLM directory
    model: dict[str, Any] = field(default_factory=dict)  # DGSLMConfig overrides: model.dropout=0.1 changes a
    #                                                      recipe's key, +model.d_model=256 adds one
    output_dir: str = "outputs/dgslm"
    context: int | None = None             # frames per channel per window (null: the model's max_positions)
    batch_size: int = 3                    # windows per rank per micro-batch
    grad_accum: int = 1                    # micro-batches per optimizer step
    edge_weight: float = 1.0               # weight of the edge-unit NLL (fairseq 1)
    duration_weight: float = 1.0           # weight of the duration L1 (fairseq 1)
    delayed_duration: bool = True          # predict a run's duration one step after its unit is fed (fairseq)
    max_duration: int = 256                # duration targets capped here, in frames (fairseq max_target_durations)
    channel_swap: float = 0.0              # probability of swapping a window's channels (none on this symmetric model)
    lr: float = 5e-4
    schedule: str = "inverse_sqrt"         # inverse_sqrt (fairseq) | cosine
    warmup_steps: int = 20000              # optimizer steps of linear warmup
    warmup_init_lr: float = 1e-7           # inverse_sqrt: the learning rate warmup starts from
    min_lr: float = 0.0                    # cosine: the final learning rate
    weight_decay: float = 0.0              # AdamW decay of matrices / embeddings (fairseq: 0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    clip: float = 1.0                      # max gradient norm (0: none)
    eval_batches: int | None = None        # cap on validation batches per rank (null: every window)


# ---------------------------------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------------------------------


def window_starts(frames: int, context: int) -> list[int]:
    """Start frames of a conversation's windows (see the module docstring): [0] when ``frames <= context``."""
    if frames <= context:
        return [0]
    starts = list(range(0, frames - context + 1, context))
    if starts[-1] + context < frames:
        starts.append(frames - context)
    return starts


def conversation_frames(dataset: DialogueDataset) -> np.ndarray:
    """Frames of each conversation (int64 [N]), from the dataset's index (nothing else is read)."""
    return np.diff(np.asarray(dataset.units.index, dtype=np.int64)) // len(dataset.channels)


def all_windows(frames: Sequence[int], context: int) -> list[tuple[int, int]]:
    """(conversation, start frame) of every window, conversations in order."""
    return [(i, s) for i, n in enumerate(frames) for s in window_starts(int(n), context)]


class WindowStream:
    """The training stream: ``at(position) -> (conversation, start frame, swap channels)``, a pure function of the
    position and the seed (see the module docstring)."""

    def __init__(self, frames: Sequence[int], context: int, seed: int, channel_swap: float = 0.0):
        self.windows = all_windows(frames, context)
        if not self.windows:
            raise ConfigError("the training dataset holds no conversation")
        self.seed, self.channel_swap = seed, channel_swap
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(window permutation [W], swap flags [W]) of `epoch`."""
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            perm = rng.permutation(len(self.windows))
            self._epoch = (epoch, perm, rng.random(len(self.windows)) < self.channel_swap)
        return self._epoch[1], self._epoch[2]

    def at(self, position: int) -> tuple[int, int, bool]:
        epoch, i = divmod(position, len(self.windows))
        perm, swap = self.epoch_order(epoch)
        conversation, start = self.windows[int(perm[i])]
        return conversation, start, bool(swap[i])


class DialogueBatch(NamedTuple):
    batch: DGSLMBatch
    windows: list[tuple[int, int, bool]]   # (conversation, start frame, swapped) of each row


def make_batch(dataset: DialogueDataset, windows: Sequence[tuple[int, int, bool]], context: int, model: DGSLM
               ) -> DialogueBatch:
    """The batch of `windows` (conversation, start, swapped) for `model` (its start token, delay, duration cap)."""
    cfg = model.config
    samples = []
    for conversation, start, swapped in windows:
        units = dataset[conversation].units
        samples.append(window(units[::-1] if swapped else units, start, context,
                              model.vocab.special(cfg.start_token)))
    return DialogueBatch(collate(samples, model.vocab, cfg.delayed_duration, cfg.max_duration), list(windows))


# ---------------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------------

_SUMS = ("edge_nll", "edge_accuracy", "duration_l1", "duration_accuracy", "edges", "durations", "windows")


def _metric_sums(model: torch.nn.Module, dgslm: DGSLM, dataset: DialogueDataset, windows: list[tuple[int, int]],
                 context: int, batch_size: int, device: torch.device, autocast: Callable | None,
                 pad_to: int = 0) -> list[float]:
    """Sums (per-edge / per-duration metric x count, counts, windows) over `windows`; `pad_to`: run extra forwards
    (not counted) up to this many batches (FSDP: every rank must run as many forwards)."""
    sums = dict.fromkeys(_SUMS, 0.0)
    starts = list(range(0, len(windows), batch_size))
    for b in range(max(len(starts), pad_to)):
        chunk = windows[starts[b]:starts[b] + batch_size] if b < len(starts) else windows[:1] or [(0, 0)]
        batch = make_batch(dataset, [(c, s, False) for c, s in chunk], context, dgslm).batch.to(device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            out = model(batch.input_ids)
        _, m = losses(out, batch)
        if b >= len(starts):
            continue
        sums["edges"] += m["edges"]
        sums["edge_nll"] += m["edge_nll"] * m["edges"]
        sums["edge_accuracy"] += m["edge_accuracy"] * m["edges"]
        durations = m.get("durations", 0.0)
        sums["durations"] += durations
        sums["duration_l1"] += m.get("duration_l1", 0.0) * durations
        sums["duration_accuracy"] += m.get("duration_accuracy", 0.0) * durations
        sums["windows"] += len(chunk)
    return [sums[k] for k in _SUMS]


def _metric_means(sums: Sequence[float], edge_weight: float, duration_weight: float, has_durations: bool
                  ) -> dict[str, float]:
    s = dict(zip(_SUMS, sums))
    edges, durations = max(s["edges"], 1.0), max(s["durations"], 1.0)
    out = {"edge_nll": s["edge_nll"] / edges, "edge_accuracy": s["edge_accuracy"] / edges}
    if has_durations:
        out.update(duration_l1=s["duration_l1"] / durations, duration_accuracy=s["duration_accuracy"] / durations)
    out["loss"] = edge_weight * out["edge_nll"] + duration_weight * out.get("duration_l1", 0.0)
    out.update(edges=s["edges"], durations=s["durations"], windows=s["windows"])
    return out


@torch.no_grad()
def evaluate_dialogue_lm(model: DGSLM, dataset: DialogueDataset, context: int | None = None, batch_size: int = 8, *,
                         edge_weight: float = 1.0, duration_weight: float = 1.0,
                         device: torch.device | str | None = None) -> dict[str, float]:
    """Held-out metrics of `model` over EVERY window of `dataset` (`window_starts` grid, conversations in order,
    `context` frames per channel, default the model's max_positions), pooled over all edges / durations (the same
    numbers as `targets.losses` on one batch of all windows): edge_nll (nats per edge), edge_accuracy, duration_l1
    (frames), duration_accuracy, loss (edge_weight * edge_nll + duration_weight * duration_l1), and the counts edges,
    durations, windows. The model's units must fit the dataset's."""
    model.check_units(dataset.meta.identity, where=f"dialogue dataset '{dataset.path}'")
    context = context or model.config.max_positions
    device = torch.device(device) if device is not None else model.device
    training = model.training
    model.eval()
    try:
        sums = _metric_sums(model, model, dataset, all_windows(conversation_frames(dataset), context), context,
                            batch_size, device, None)
    finally:
        model.train(training)
    return _metric_means(sums, edge_weight, duration_weight, model.duration_head is not None)


# ---------------------------------------------------------------------------------------------------------------------
# schedules and models
# ---------------------------------------------------------------------------------------------------------------------


def inverse_sqrt(warmup_steps: int, lr: float, warmup_init_lr: float) -> Callable[[int], float]:
    """fairseq's inverse_sqrt as a LambdaLR factor of `lr` after `s` optimizer steps: linear from warmup_init_lr to lr
    over warmup_steps, then ``sqrt(warmup_steps / s)``."""
    warm = max(warmup_steps, 1)

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (warmup_init_lr + (lr - warmup_init_lr) * s / warmup_steps) / lr
        return math.sqrt(warm / max(s, 1))

    return factor


def _rebuilt(model: DGSLM, config: DGSLMConfig, state: dict[str, torch.Tensor] | None = None) -> DGSLM:
    """A CPU DGSLM of `config` with `model`'s units and the weights `state` (default: `model`'s), built without
    drawing from the global RNG (a rank's RNG state must not depend on checkpoints being written)."""
    with torch.random.fork_rng(devices=[]):
        new = DGSLM(config, tokenizer=model.tokenizer, frame_rate=model.frame_rate)
    try:
        new.load_state_dict(state if state is not None else model.state_dict())
    except RuntimeError as e:
        raise ConfigError(f"the model's weights do not fit the new config: {str(e).splitlines()[0]}") from None
    return new


def _config_with(base: dict[str, Any], overrides: dict[str, Any]) -> DGSLMConfig:
    """`base` (a DGSLMConfig dict) with the ``model`` overrides and the trainer's duration settings."""
    if "num_units" in overrides:
        raise ConfigError("model.num_units is set by the data (its vocab_size); remove the override")
    return DGSLMConfig.from_dict({**base, **overrides})


# ---------------------------------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------------------------------


class WindowObjective(Objective):
    """What the two-channel window trainers (train-dialogue, train-duplex) share: the optimisation settings' checks,
    reading the two-channel datasets, frames counted per step (``self._frames``, added by ``loss``) for the
    throughput and ``frames_seen``, windows per step, and each rank's share of the validation windows."""

    def check_optimization(self) -> None:
        """`ConfigError` for a bad schedule, learning rates, warmup, clipping, decay, betas or budget."""
        cfg = self.config
        if cfg.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
        if cfg.lr <= 0 or not 0 <= cfg.warmup_init_lr <= cfg.lr or not 0 <= cfg.min_lr <= cfg.lr:
            raise ConfigError(f"need lr > 0 and warmup_init_lr, min_lr in [0, lr]; got lr={cfg.lr} "
                              f"warmup_init_lr={cfg.warmup_init_lr} min_lr={cfg.min_lr}")
        if cfg.warmup_steps < 0 or cfg.clip < 0 or cfg.weight_decay < 0:
            raise ConfigError("warmup_steps, clip and weight_decay must be >= 0")
        if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(cfg.betas)}")
        if cfg.max_steps is None and (cfg.schedule == "cosine" or cfg.max_seconds is None):
            raise ConfigError("give max_steps (or, with schedule=inverse_sqrt, max_seconds)")

    def read_data(self, needs: str) -> None:
        """``train_data`` / ``valid_data``: the configured two-channel datasets (`needs`: why two, for the error)."""
        cfg = self.config
        self.train_data = read_dialogues(cfg.train_dataset)
        self.valid_data = read_dialogues(cfg.valid_dataset) if cfg.valid_dataset else None
        for data, path in ((self.train_data, cfg.train_dataset), (self.valid_data, cfg.valid_dataset)):
            if data is not None and len(data.channels) != 2:
                raise ConfigError(f"dialogue dataset '{path}' has {len(data.channels)} channels; {needs}")

    def after_step(self, ctx: Context, step: int, total_weight: float) -> None:
        self._step_frames, self._frames = self._frames * ctx.world, 0
        self.frames_seen += self._step_frames
        self.windows_seen += self.windows_per_step

    def throughput(self, seconds: float) -> tuple[str, float]:
        return "frames/s", self._step_frames / max(seconds, 1e-9)

    def rank_windows(self, ctx: Context) -> tuple[list, int]:
        """(this rank's validation windows: every world-th, capped at eval_batches batches; the batch count every
        rank must run: the busiest rank's under FSDP, else 0)."""
        cfg = self.config
        mine = self.valid_windows[ctx.rank::ctx.world]
        if cfg.eval_batches is not None:
            mine = mine[: cfg.eval_batches * cfg.batch_size]
        return mine, ctx.max(math.ceil(len(mine) / cfg.batch_size)) if ctx.fsdp else 0


class DialogueObjective(WindowObjective):
    """dGSLM's edge + duration loss on windows of two-channel conversations (see the module docstring)."""

    name = "train-dialogue"
    precisions = ("auto", "fp32", "no", "bf16", "fp16")
    cpu_bf16 = True
    fsdp = True
    resumable_settings = ("valid_dataset", "eval_batches")
    input_settings = ("train_dataset",)
    history_columns = METRICS
    valid_columns = METRICS
    config: DialogueTrainConfig

    def check_config(self) -> None:
        cfg = self.config
        if not cfg.train_dataset or cfg.train_dataset == "???":
            raise ConfigError("train_dataset is required (a two-channel unit dataset directory)")
        if cfg.init not in PRESETS and not (Path(cfg.init) / "config.json").is_file():
            raise ConfigError(f"init must be a dGSLM preset ({', '.join(PRESETS)}) or a saved DGSLM directory, got "
                              f"{cfg.init!r}")
        if cfg.context is not None and cfg.context < 2:
            raise ConfigError(f"context must be >= 2 frames (or null), got {cfg.context}")
        for name in ("batch_size", "grad_accum", "max_duration"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.eval_batches is not None and cfg.eval_batches < 1:
            raise ConfigError(f"eval_batches must be >= 1 (or null), got {cfg.eval_batches}")
        if not 0 <= cfg.channel_swap <= 1:
            raise ConfigError(f"channel_swap is a probability in [0, 1], got {cfg.channel_swap}")
        if cfg.edge_weight < 0 or cfg.duration_weight < 0 or cfg.edge_weight + cfg.duration_weight == 0:
            raise ConfigError(f"need edge_weight, duration_weight >= 0, not both 0; got {cfg.edge_weight}, "
                              f"{cfg.duration_weight}")
        self.check_optimization()

    # -- setup --------------------------------------------------------------------------------------------------
    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        cfg = self.config
        self.ctx, self.device = ctx, ctx.device
        self.read_data("dGSLM models two")
        if state is not None:  # nested keys only one side has are not compared by the engine
            old = (state.get("config") or {}).get("model") or {}
            runs.refuse(f"checkpoint {checkpoint}", runs.differences({"model": old}, {"model": dict(cfg.model)},
                                                                     one_sided=True),
                        "pass restart=true to start over, or use a new output_dir")
        if checkpoint is not None:
            self.model = DGSLM.from_pretrained(checkpoint / MODEL_DIR)
        elif cfg.init in PRESETS:
            meta = self.train_data.meta
            config = _config_with(preset_config(cfg.init, meta.vocab_size).to_dict(),
                                  {**cfg.model, "delayed_duration": cfg.delayed_duration,
                                   "max_duration": cfg.max_duration})
            self.model = DGSLM(config, tokenizer=meta.tokenizer, frame_rate=meta.frame_rate)
        else:
            saved = DGSLM.from_pretrained(cfg.init)
            overrides = {**cfg.model, "delayed_duration": cfg.delayed_duration, "max_duration": cfg.max_duration}
            config = _config_with(saved.config.to_dict(), overrides)
            self.model = saved if config == saved.config else _rebuilt(saved, config)
        # the data must fit the model before anything is trained
        self.model.check_units(self.train_data.meta.identity, where=f"dialogue dataset '{cfg.train_dataset}'")
        if self.valid_data is not None:
            self.model.check_units(self.valid_data.meta.identity, where=f"dialogue dataset '{cfg.valid_dataset}'")
        limit = self.model.config.max_positions
        self.context = cfg.context or limit
        if self.context > limit:
            raise ConfigError(f"context {self.context} exceeds the model's max_positions {limit}")
        self.stream = WindowStream(conversation_frames(self.train_data), self.context, cfg.seed, cfg.channel_swap)
        self.valid_windows = (all_windows(conversation_frames(self.valid_data), self.context)
                              if self.valid_data is not None else [])
        self.windows_per_step = cfg.batch_size * cfg.grad_accum * ctx.world
        self.frames_seen = self.windows_seen = 0
        self._frames = self._step_frames = self._measured = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def configure_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, OptimizerSpec]:
        cfg = self.config
        optimizer = torch.optim.AdamW(param_groups(modules["model"], cfg.weight_decay), lr=cfg.lr,
                                      betas=tuple(cfg.betas))
        if cfg.schedule == "inverse_sqrt":
            factor = inverse_sqrt(cfg.warmup_steps, cfg.lr, cfg.warmup_init_lr)
        else:
            factor = lr_lambda(cfg.max_steps, cfg.warmup_steps, cfg.lr, cfg.min_lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"model": OptimizerSpec(optimizer, scheduler, module="model", clip=cfg.clip)}

    def describe(self, ctx: Context) -> str:
        cfg, mc = self.config, self.model.config
        n_params = sum(p.numel() for p in self.model.parameters())
        return (f"training a dGSLM of {n_params / 1e6:.2f}M parameters ({mc.layers} layers, {mc.cross_layers} "
                f"cross, d {mc.d_model}) on {ctx.world} process(es) ({ctx.device}, {'FSDP, ' if ctx.fsdp else ''}"
                f"precision {ctx.precision}); steps of {self.windows_per_step} windows of {self.context} frames, "
                f"{cfg.schedule} lr {cfg.lr} warmup {cfg.warmup_steps}; train: {len(self.train_data)} "
                f"conversations, {len(self.stream)} windows per epoch"
                + (f"; valid: {len(self.valid_windows)} windows" if self.valid_data is not None else ""))

    # -- steps --------------------------------------------------------------------------------------------------
    @property
    def micro_batches(self) -> int:
        return self.config.grad_accum

    def batches(self, start: int) -> Iterator[DialogueBatch]:
        cfg, ctx = self.config, self.ctx
        m = start
        while True:
            first = (m * ctx.world + ctx.rank) * cfg.batch_size
            yield make_batch(self.train_data, [self.stream.at(p) for p in range(first, first + cfg.batch_size)],
                             self.context, self.model)
            m += 1

    def loss(self, phase: str, batch: DialogueBatch, scratch: dict[str, Any]) -> StepLoss:
        cfg = self.config
        data = batch.batch.to(self.device)
        out = self.trained["model"](data.input_ids)
        value, metrics = losses(out, data, cfg.edge_weight, cfg.duration_weight)
        if out.durations is not None and not cfg.duration_weight:
            value = value + 0.0 * out.durations.sum()  # DDP: every parameter takes part in the graph
        self._frames += data.frames
        return StepLoss(value, {"loss": float(value.detach()), **{k: metrics[k] for k in METRICS if k in metrics}})

    # -- validation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, ctx: Context, writer) -> dict[str, float] | None:
        """`evaluate_dialogue_lm`'s metrics, each rank on every world-th window, summed over ranks (FSDP: every rank
        runs as many forwards as the busiest one)."""
        if self.valid_data is None:
            return None
        cfg = self.config
        mine, most = self.rank_windows(ctx)
        self.model.eval()
        sums = _metric_sums(self.model, self.model, self.valid_data, mine, self.context, cfg.batch_size, ctx.device,
                            ctx.autocast, pad_to=most)
        self.model.train()
        means = _metric_means(ctx.sum(sums), cfg.edge_weight, cfg.duration_weight,
                              self.model.config.duration_prediction)
        self._measured = int(means["windows"])
        return {k: means[k] for k in METRICS if k in means}

    def valid_note(self) -> str:
        return f"({self._measured} of {len(self.valid_windows)} windows)"

    # -- persistence --------------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        return {"train_dataset": self.train_data.units.fingerprint()}

    def state_dict(self) -> dict[str, Any]:
        return {"frames_seen": self.frames_seen, "windows_seen": self.windows_seen,
                "epoch": self.windows_seen // len(self.stream)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames_seen, self.windows_seen = int(state["frames_seen"]), int(state["windows_seen"])

    def _export(self, states: dict[str, dict[str, torch.Tensor]] | None) -> DGSLM:
        return self.model if states is None else _rebuilt(self.model, self.model.config, states["model"])

    def save_checkpoint_files(self, directory: Path, states) -> None:
        self._export(states).save_pretrained(directory / MODEL_DIR)

    def save_final(self, directory: Path, states) -> Path:
        model = self._export(states)
        training = model.training
        model.eval().save_pretrained(directory, overwrite=True)
        model.train(training)
        return directory


def train_dialogue(cfg: DialogueTrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a dGSLM as configured; see the module docstring. Every rank of a torchrun job calls it; the
    process group stays up (`train_dialogue_command` destroys it)."""
    return train_objective(DialogueObjective(cfg), hooks)


def train_dialogue_command(cfg: DialogueTrainConfig) -> TrainResult:
    """``textless train-dialogue``: `train_dialogue`, then destroy the process group it set up."""
    result = train_dialogue(cfg)
    end_process_group()
    return result


__all__ = ["DialogueBatch", "DialogueObjective", "DialogueTrainConfig", "WindowObjective", "WindowStream",
           "all_windows", "evaluate_dialogue_lm", "inverse_sqrt", "make_batch", "train_dialogue",
           "train_dialogue_command", "window_starts"]
