"""`textless train`: the unit-LM objective of the training engine (packed next-unit NLL).

Recipe (slamkit's, see the ``twist`` recipe): AdamW, linear warmup over ``warmup_fraction`` of the steps then cosine
decay from ``lr`` to ``min_lr``, gradient clipping, gradient accumulation, sequence packing (`textless.lm.data`), bf16
autocast on CUDA. The loss is the token-weighted mean NLL of the optimizer step: every micro-batch's NLL *sum* over
its targets, divided by the number of targets of the whole step, all micro-batches and ranks together (the engine's
loss normalisation, `textless.training.objective`). Processes, DDP / FSDP, precision, budgets, validation cadence,
TensorBoard, checkpoints and exact resume are the engine's (`textless.training.engine`).

Weight decay applies to every parameter with 2+ dimensions (linear layers and the embedding tables, as Hugging Face's
Trainer, which slamkit uses, does) and not to 1-D ones (norm gains, biases).

Initialisation: ``init=scratch`` builds ``preset`` (a `textless.lm.presets` name or a config.json path) with random
weights, ``init=twist`` starts from the text LM ``base_model`` (`UnitLM.from_text_lm`); the vocabulary is
``UnitVocab.default(vocab_size of the units)``. When ``output_dir`` already holds a checkpoint, training resumes from
it whatever ``init`` says (``init=resume`` insists on one). The units must fit the model (the units contract,
`textless.data.identity`) before anything is trained.

FSDP: every rank builds (or loads) the full model on the CPU; rank 0's weights are broadcast before sharding; each
rank keeps its shard. Checkpoints and ``final/`` are plain `UnitLM` directories (`plain_unit_lm` of the gathered
state) and the optimizer state is stored by parameter name.

Attention backend: ``attn_implementation`` (None = transformers' default, sdpa; eager; flash_attention_2 / 3 when
installed) is passed to the model constructors (`textless.lm.model`); an architecture that ignores restarting
position ids cannot train packed with flash attention (`textless.lm.data.packing_mode`): a `ConfigError` says so.

Budgets: ``max_steps`` / ``max_tokens`` (tokens = contexts x context_length, padding included) set the LR schedule's
length (the smaller one when both are given); ``max_seconds`` (wall clock, summed over resumed runs) may end training
earlier. Multi-node: see `textless.training.engine` (every node runs the same ``torchrun ... -m textless.cli train``
command; ``output_dir`` on a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textless.data.units import read_units
from textless.errors import ConfigError
from textless.lm.attention import check_attn_implementation
from textless.lm.data import PackedBatch, PackedUnitDataset, PackingConfig, packed_nll, packing_mode
from textless.lm.model import UnitLM, lm_meta
from textless.lm.presets import PRESETS
from textless.lm.vocab import UnitVocab
from textless.training.checkpoint import MODEL_DIR
from textless.training.config import TrainingConfig
from textless.training.engine import TrainHooks, TrainResult, end_process_group, train_objective
from textless.training.objective import Context, Objective, OptimizerSpec, StepLoss
from textless.utils.hf import quiet_progress_bars

logger = logging.getLogger(__name__)

INITS = ("scratch", "twist", "resume")


@dataclass
class TrainConfig(TrainingConfig):
    train_dataset: str = ""                # unit dataset directory (textless tokenize output)
    valid_dataset: str | None = None       # unit dataset directory for the validation loss
    init: str = "scratch"                  # scratch (preset) | twist (from a text LM) | resume (needs a checkpoint)
    preset: str = "tiny"                   # scratch: tiny, small, gslm, twist-350m, 350m, or a config.json path
    base_model: str | None = None          # twist: local Hugging Face directory (or .gguf path) of the text LM
    gguf_file: str | None = None           # twist: GGUF file name inside base_model
    attn_implementation: str | None = None  # null (transformers' default: sdpa) | sdpa | eager | flash_attention_2/3
    output_dir: str = "outputs/lm"
    context_length: int = 1024
    batch_size: int = 8                    # contexts per rank per micro-batch
    grad_accum: int = 1                    # micro-batches per optimizer step
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup_fraction: float = 0.01
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    clip: float = 0.5                      # max gradient norm (0: no clipping)
    max_tokens: int | None = None          # tokens (contexts x context_length): sets the schedule like max_steps
    eval_batches: int | None = None        # cap on validation batches (None: the whole valid set)
    num_workers: int = 0                   # >0: a background thread prepares this many batches ahead


# --------------------------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------------------------


def lr_lambda(total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> Callable[[int], float]:
    """LR multiplier after `s` optimizer steps (s = 0 for the first): linear warmup, then cosine to min_lr / lr."""
    floor = min_lr / lr if lr > 0 else 0.0

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        decay = max(total_steps - warmup_steps, 1)
        progress = min(max(s - warmup_steps, 0) / decay, 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on parameters with >= 2 dims (matrices, embeddings), none on 1-D ones (norms, biases)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def check_optimizer_settings(cfg) -> None:
    """`ConfigError` for invalid AdamW / schedule settings (``lr``, ``min_lr``, ``warmup_fraction``, ``betas``,
    ``clip``) of a trainer config."""
    if not 0 <= cfg.warmup_fraction < 1:
        raise ConfigError(f"warmup_fraction must be in [0, 1), got {cfg.warmup_fraction}")
    if cfg.lr <= 0 or cfg.min_lr < 0 or cfg.min_lr > cfg.lr:
        raise ConfigError(f"need 0 <= min_lr <= lr and lr > 0, got lr={cfg.lr} min_lr={cfg.min_lr}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {list(cfg.betas)}")
    if cfg.clip < 0:
        raise ConfigError(f"clip must be >= 0, got {cfg.clip}")


def schedule_steps(cfg: TrainConfig, tokens_per_step: int) -> tuple[int, str]:
    """(optimizer steps of the LR schedule, which budget set it): the smaller of max_steps and max_tokens."""
    candidates = []
    if cfg.max_steps is not None:
        candidates.append((cfg.max_steps, "max_steps"))
    if cfg.max_tokens is not None:
        candidates.append((math.ceil(cfg.max_tokens / tokens_per_step), "max_tokens"))
    if not candidates:
        raise ConfigError("give max_steps or max_tokens (they set the LR schedule's length; max_seconds only stops "
                          "training early)")
    return min(candidates)


def plain_unit_lm(lm: UnitLM, state: dict[str, torch.Tensor]) -> UnitLM:
    """A CPU UnitLM with `lm`'s config, vocabulary and metadata and the weights `state` (a full state dict), built
    without a second random initialisation (meta device, then the tensors assigned); for ``save_pretrained``."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(lm.model.config)
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    model.eval()
    return UnitLM(model, lm.vocab, tokenizer=lm.tokenizer, frame_rate=lm.frame_rate, deduplicated=lm.deduplicated)


def _preset(name: str):
    """A preset name, or a transformers config (a config.json file, or a directory holding one) for custom sizes."""
    if name in PRESETS:
        return name
    path = Path(name)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(sorted(PRESETS))} or a transformers "
                          f"config.json")
    from transformers import AutoConfig

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return AutoConfig.for_model(data.pop("model_type"), **data)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"preset {name!r}: not a usable transformers config.json ({e})") from None


# --------------------------------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------------------------------


class UnitLMObjective(Objective):
    """Next-unit NLL of a `UnitLM` on packed contexts (see the module docstring)."""

    name = "train"
    precisions = ("auto", "fp32", "no", "bf16", "fp16")
    cpu_bf16 = True
    fsdp = True
    # the data position is the step, and these change only what is measured or how fast, or are read only by a
    # fresh run (init, base_model): they may differ when a run resumes; a new max_tokens sets a new schedule length
    resumable_settings = ("max_tokens", "eval_batches", "num_workers", "valid_dataset", "attn_implementation", "init",
                          "base_model", "gguf_file")
    input_settings = ("train_dataset",)
    history_columns = ("loss",)
    valid_columns = ("loss",)
    config: TrainConfig

    def check_config(self) -> None:
        cfg = self.config
        if not cfg.train_dataset or cfg.train_dataset == "???":
            raise ConfigError("train_dataset is required (a unit dataset directory written by `textless tokenize`)")
        if cfg.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {cfg.init!r}")
        if cfg.init == "twist" and not cfg.base_model:
            raise ConfigError("init=twist needs base_model (a local Hugging Face text LM directory, a .gguf file or "
                              "offline:smollm2-135m)")
        check_attn_implementation(cfg.attn_implementation)
        for name in ("context_length", "batch_size", "grad_accum"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.context_length < 2:
            raise ConfigError(f"context_length must be >= 2, got {cfg.context_length}")
        for name in ("max_tokens", "eval_batches"):
            value = getattr(cfg, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or null), got {value}")
        check_optimizer_settings(cfg)
        if cfg.max_steps is None and cfg.max_tokens is None:
            raise ConfigError("give max_steps or max_tokens (they set the LR schedule's length; max_seconds only "
                              "stops training early)")

    # -- setup --------------------------------------------------------------------------------------------------
    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        cfg = self.config
        self.train_units = read_units(cfg.train_dataset)
        self.valid_units = read_units(cfg.valid_dataset) if cfg.valid_dataset else None
        if cfg.init == "resume" and checkpoint is None:
            raise ConfigError(f"init=resume but {Path(cfg.output_dir) / 'checkpoints'} holds no complete checkpoint")
        if checkpoint is not None:
            self.lm = UnitLM.from_pretrained(checkpoint / MODEL_DIR, attn_implementation=cfg.attn_implementation)
        else:
            self.lm = self._fresh_model(ctx)
        # the data must match the model before anything is trained
        self.lm.check_units(self.train_units.meta, where=f"unit dataset '{cfg.train_dataset}'")
        if self.valid_units is not None:
            self.lm.check_units(self.valid_units.meta, where=f"unit dataset '{cfg.valid_dataset}'")
        try:  # how attention is kept inside packed segments; decided before training (draws no RNG)
            self.packing_mode = packing_mode(self.lm.model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        max_pos = self.lm.max_positions
        if max_pos is not None and cfg.context_length > max_pos:
            raise ConfigError(f"context_length {cfg.context_length} exceeds the model's {max_pos} positions")
        packing = PackingConfig(context_length=cfg.context_length, seed=cfg.seed)
        try:
            self.train_data = PackedUnitDataset(self.train_units, self.lm.vocab, packing, rank=ctx.rank,
                                                world_size=ctx.world)
            self.valid_data = None
            if self.valid_units is not None:
                self.valid_data = PackedUnitDataset(self.valid_units, self.lm.vocab,
                                                    dataclasses.replace(packing, shuffle=False), rank=ctx.rank,
                                                    world_size=ctx.world)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.device = ctx.device
        self.tokens_per_step = cfg.batch_size * cfg.grad_accum * ctx.world * cfg.context_length
        self.tokens_seen = self.targets_seen = 0

    def _fresh_model(self, ctx: Context) -> UnitLM:
        cfg = self.config
        meta = self.train_units.meta
        vocab, info = UnitVocab.default(meta.vocab_size), lm_meta(meta)
        say = logger.info if ctx.main else logger.debug
        if cfg.init == "twist":
            say(f"init: TWIST from text LM {cfg.base_model}" + (f" ({cfg.gguf_file})" if cfg.gguf_file else ""))
            return UnitLM.from_text_lm(cfg.base_model, vocab, gguf_file=cfg.gguf_file,
                                       attn_implementation=cfg.attn_implementation, **info)
        say(f"init: preset {cfg.preset!r} from scratch")
        return UnitLM.from_scratch(_preset(cfg.preset), vocab, attn_implementation=cfg.attn_implementation, **info)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.lm.model}

    def configure_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, OptimizerSpec]:
        cfg, model = self.config, modules["model"]
        self.total_steps, self.schedule_by = schedule_steps(cfg, self.tokens_per_step)
        warmup = math.ceil(cfg.warmup_fraction * self.total_steps)
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.total_steps, warmup, cfg.lr,
                                                                           cfg.min_lr))
        self.warmup_steps = warmup
        return {"model": OptimizerSpec(optimizer, scheduler, module="model", clip=cfg.clip)}

    def plan(self, ctx: Context) -> tuple[int | None, str]:
        return self.total_steps, self.schedule_by

    def describe(self, ctx: Context) -> str:
        cfg = self.config
        n_params = sum(p.numel() for p in self.lm.model.parameters())  # DTensors count their global size
        attn = getattr(self.lm.model.config, "_attn_implementation", None)
        return (f"training {n_params / 1e6:.2f}M parameters on {ctx.world} process(es) ({ctx.device}, "
                f"{'FSDP, ' if ctx.fsdp else ''}precision {ctx.precision}, attention {attn}, packing "
                f"{self.packing_mode}); {self.total_steps} steps of {self.tokens_per_step} tokens (schedule from "
                f"{self.schedule_by}, warmup {self.warmup_steps}); train: {len(self.train_units)} utterances, "
                f"{len(self.train_data)} contexts of {cfg.context_length} per epoch")

    # -- steps --------------------------------------------------------------------------------------------------
    @property
    def micro_batches(self) -> int:
        return self.config.grad_accum

    def batches(self, start: int) -> Iterator[PackedBatch]:
        return self.train_data.batches(self.config.batch_size, start_step=start)

    def prefetch(self) -> int:
        return self.config.num_workers

    def batch_weight(self, batch: PackedBatch) -> float:
        return float(batch.num_targets)

    def loss(self, phase: str, batch: PackedBatch, scratch: dict[str, Any]) -> StepLoss:
        nll, _ = packed_nll(self.trained["model"], batch, self.device)
        return StepLoss(nll, {"loss": float(nll.detach())})

    def after_step(self, ctx: Context, step: int, total_weight: float) -> None:
        self.tokens_seen += self.tokens_per_step
        self.targets_seen += int(total_weight)

    def throughput(self, seconds: float) -> tuple[str, float]:
        return "tokens/s", self.tokens_per_step / max(seconds, 1e-9)

    # -- validation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, ctx: Context, writer) -> dict[str, float] | None:
        """Token-weighted validation NLL. DDP: the unwrapped model (no collectives: ranks may have different batch
        counts). FSDP: every forward gathers the shards, so every rank runs as many forwards as the busiest one
        (extra ones are not counted)."""
        if self.valid_data is None:
            return None
        cfg = self.config
        model = self.lm.model
        model.eval()

        def batches() -> Iterator[PackedBatch]:
            return self.valid_data.epoch_batches(cfg.batch_size, max_batches=cfg.eval_batches)

        most = ctx.max(sum(1 for _ in batches())) if ctx.fsdp else 0  # agreed before the first forward
        total, count, done, last = 0.0, 0, 0, None
        for batch in batches():
            with ctx.autocast():
                nll, n = packed_nll(model, batch, ctx.device)
            total += float(nll)
            count += n
            done, last = done + 1, batch
        for _ in range(most - done):
            packed_nll(model, last if last is not None else next(self.valid_data.batches(1)), ctx.device)
        model.train()
        total, count = ctx.sum([total, count])
        return {"loss": total / max(count, 1)}

    # -- persistence --------------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        return {"train_dataset": self.train_units.fingerprint()}  # the validation set may change on resume

    def state_dict(self) -> dict[str, Any]:
        cfg = self.config
        epoch = self.tokens_seen // cfg.context_length // max(len(self.train_data), 1)
        return {"tokens_seen": self.tokens_seen, "targets_seen": self.targets_seen, "epoch": epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tokens_seen, self.targets_seen = int(state["tokens_seen"]), int(state["targets_seen"])

    def upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Version 1 (textless <= 0.1's own loop): histories as (step, loss) lists."""
        from textless.training.checkpoint import columns_to_tensors

        state = dict(state)
        losses, valid = state.pop("losses"), state.pop("valid_losses")
        state["history"] = columns_to_tensors({"step": [float(s) for s, _ in losses], "loss": [v for _, v in losses]})
        state["valid_history"] = columns_to_tensors({"step": [float(s) for s, _ in valid],
                                                     "loss": [v for _, v in valid]})
        return state

    def _export(self, states: dict[str, dict[str, torch.Tensor]] | None) -> UnitLM:
        return self.lm if states is None else plain_unit_lm(self.lm, states["model"])

    def save_checkpoint_files(self, directory: Path, states) -> None:
        with quiet_progress_bars():
            self._export(states).save_pretrained(directory / MODEL_DIR)

    def save_final(self, directory: Path, states) -> Path:
        lm = self._export(states)
        lm.model.eval()
        with quiet_progress_bars():
            lm.save_pretrained(directory, overwrite=True)
        return directory


def train(cfg: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a unit LM as configured; see the module docstring. Every rank of a torchrun job calls it.

    Under torchrun the process group stays up (a later `train` call reuses it); `train_command` (``textless train``)
    also destroys it before the process exits.
    """
    return train_objective(UnitLMObjective(cfg), hooks)


def train_command(cfg: TrainConfig) -> TrainResult:
    """``textless train``: `train`, then destroy the process group it set up (the process ends next)."""
    result = train(cfg)
    end_process_group()
    return result
