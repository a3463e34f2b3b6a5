"""`textless dpo`: Direct Preference Optimization of a unit LM on a preference dataset (Align-SLM's training step).

The DPO objective of the training engine (`textless.training.engine`, which owns processes, DDP / FSDP, precision,
budgets, validation cadence, TensorBoard, checkpoints and exact resume). The math is `textless.preference.dpo`.

Inputs. ``pairs`` (and optionally ``valid_pairs``): preference dataset directories (`textless.preference.data`);
``policy``: the unit LM to align (any directory `textless.lm.loaders.load_unit_lm` reads, or ``starter``). The pairs'
units must fit the policy (the units contract) before anything is trained.

Recipe (slamkit's, which runs TRL's ``DPOTrainer``; ``--config dpo``): sigmoid loss, beta 0.1, AdamW lr 5e-5 with a
cosine schedule, gradient clip 0.5, one epoch, dropout disabled (TRL's default). The loss of an optimizer step is the
mean per-pair loss over every pair of the step (all micro-batches and ranks: the engine's normalisation with weight =
pairs); metrics ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies`` (pair
means) go to the history and TensorBoard (``train/...``, ``valid/...``).

Reference model (``reference``):

``frozen``       the initial policy, frozen, evaluated on every batch (full fine-tuning: a copy on the same device;
                 LoRA: the policy with its adapter disabled, as TRL does - no copy).
``precomputed``  the initial policy's log-probs, computed once before training and stored in a copy of the pairs in
                 ``output_dir/reference/{train,valid}`` (with the policy's `module_fingerprint`); a dataset that
                 already carries log-probs made by the same model (same fingerprint and max_length) is used as is.

Data order: epoch ``e`` visits the pairs in a permutation drawn from ``(seed, e)``; the stream is a pure function of
the position (micro-batch ``m`` of rank ``r`` holds stream positions ``(m * world + r) * batch_size ...``), so a
resumed run sees the same batches. ``max_steps`` None: ``ceil(pairs * epochs / (batch_size * grad_accum * world))``.

LoRA (``lora=true``): a peft adapter on the attention and MLP projections (``lora_target_modules``, default: those
the architecture has; never ``lm_head``); only the adapter trains; checkpoints hold the adapter (peft's
``save_pretrained``); ``final/`` is the merged model (``merge_lora=true``, a plain UnitLM directory) or the adapter
with ``dpo_adapter.json`` naming the base policy (`load_dpo_result` merges it either way). LoRA runs without FSDP
(DDP is fine); full fine-tuning runs under DDP or FSDP like ``textless train``.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from textless.errors import ConfigError, TextlessError
from textless.lm.attention import check_attn_implementation
from textless.lm.loaders import load_unit_lm
from textless.lm.model import UnitLM
from textless.lm.train import check_optimizer_settings, lr_lambda, param_groups, plain_unit_lm
from textless.preference.data import Pair, PreferenceData, read_pairs, write_pairs
from textless.preference.dpo import (
    DPO_LOSSES,
    REWARD_METRICS,
    PreferenceBatch,
    batch_loss,
    collate_pairs,
    pair_tokens,
    precompute_ref_logps,
    reference_logps,
)
from textless.training.checkpoint import MODEL_DIR
from textless.training.config import TrainingConfig
from textless.training.engine import TrainHooks, TrainResult, end_process_group, train_objective
from textless.training.objective import Context, Objective, OptimizerSpec, StepLoss
from textless.utils.atomic import atomic_directory
from textless.utils.hf import quiet_progress_bars
from textless.utils.runs import module_fingerprint
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

REFERENCES = ("frozen", "precomputed")
REFERENCE_DIR = "reference"                # output_dir/reference/{train,valid}: pairs with reference log-probs
ADAPTER_FILE = "dpo_adapter.json"          # final/ of an unmerged LoRA run: names the base policy
DPO_ADAPTER = artifact("textless.dpo_adapter", 1, "a DPO LoRA adapter")
METRICS = ("loss", *REWARD_METRICS)
# projection names LoRA adapts by default, when the model has them (Llama / Qwen2 / OPT / GPT-2 / GPT-NeoX families)
LORA_CANDIDATES = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "qkv_proj", "gate_proj", "up_proj",
                   "down_proj", "gate_up_proj", "fc1", "fc2", "c_attn", "c_proj", "c_fc", "query_key_value",
                   "dense_h_to_4h", "dense_4h_to_h")


@dataclass
class DPOConfig(TrainingConfig):
    pairs: str = ""                        # preference dataset directory (textless preference-pairs output)
    valid_pairs: str | None = None         # held-out preference dataset for validation metrics
    policy: str = ""                       # unit LM directory to align (any load_unit_lm family), or "starter"
    attn_implementation: str | None = None  # null (sdpa) | sdpa | eager | flash_attention_2/3
    reference: str = "frozen"              # frozen (initial policy evaluated every batch) | precomputed (once)
    loss_type: str = "sigmoid"             # sigmoid (DPO) | ipo | hinge
    beta: float = 0.1
    output_dir: str = "outputs/dpo"
    batch_size: int = 8                    # pairs per rank per micro-batch
    grad_accum: int = 1                    # micro-batches per optimizer step
    epochs: float = 1.0                    # sets max_steps when max_steps is null
    max_length: int | None = None          # tokens per row (prompt + completion); longer rows keep their start
    lr: float = 5e-5
    min_lr: float = 0.0
    warmup_fraction: float = 0.0
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip: float = 0.5                      # max gradient norm (0: none)
    disable_dropout: bool = True           # TRL's default: no dropout in the policy (nor the reference)
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None  # null: the attention / MLP projections the model has
    merge_lora: bool = True                # final/: merged UnitLM (true) or the adapter + dpo_adapter.json (false)
    eval_batches: int | None = None        # cap on validation batches per rank (null: every valid pair)
    ref_batch_size: int | None = None      # pairs per forward when precomputing reference log-probs (null: batch_size)


# ---------------------------------------------------------------------------------------------------------------------
# pieces
# ---------------------------------------------------------------------------------------------------------------------


def disable_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout of `model` in place: ``nn.Dropout`` modules and the float rates some architectures pass to
    functional dropout (OPT's ``dropout`` / ``activation_dropout``, attention's ``attention_dropout``)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("dropout", "attention_dropout", "activation_dropout", "layerdrop"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def lora_targets(model: torch.nn.Module, requested: list[str] | None = None) -> list[str]:
    """LoRA's ``target_modules``: `requested` (checked: linear layers the model has, never ``lm_head``) or the
    `LORA_CANDIDATES` the model has."""
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    if requested is None:
        found = [n for n in LORA_CANDIDATES if n in linear]
        if not found:
            raise ConfigError(f"no default LoRA target in this model (linear layers: {', '.join(linear)}); set "
                              f"lora_target_modules")
        return found
    if "lm_head" in requested:
        raise ConfigError("lora_target_modules must not include lm_head (the output layer is tied to the unit "
                          "embeddings)")
    missing = [n for n in requested if n not in linear]
    if missing:
        raise ConfigError(f"lora_target_modules {missing} are not linear layers of this model (it has: "
                          f"{', '.join(linear)})")
    return list(requested)


def lora_config(cfg: DPOConfig, model: torch.nn.Module) -> LoraConfig:
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_targets(model, cfg.lora_target_modules), bias="none",
                      task_type="CAUSAL_LM")


def dpo_steps(num_pairs: int, epochs: float, pairs_per_step: int) -> int:
    """Optimizer steps of ``epochs`` passes over ``num_pairs`` pairs: ``ceil(pairs * epochs / pairs_per_step)``."""
    return max(1, math.ceil(num_pairs * epochs / pairs_per_step))


def ref_meta(fingerprint: str, max_length: int | None) -> dict[str, Any]:
    """The ``ref`` entry of a preference dataset whose log-probs the model `fingerprint` made."""
    return {"model": fingerprint, "add_bos": True, "add_eos": True, "max_length": max_length}


def has_ref(data: PreferenceData, fingerprint: str, max_length: int | None) -> bool:
    """Whether every pair of `data` carries reference log-probs made by the model `fingerprint` at `max_length`."""
    ref = data.ref or {}
    return (ref.get("model") == fingerprint and ref.get("max_length") == max_length
            and all(p.ref_chosen_logps is not None and p.ref_rejected_logps is not None for p in data.pairs))


def load_dpo_result(path: str | Path, **kwargs: Any) -> UnitLM:
    """The aligned model of a DPO run's ``final/`` (or checkpoint model) directory as a `UnitLM`: a merged directory
    loads as any unit LM (`kwargs` go to `load_unit_lm`); an adapter directory (``dpo_adapter.json``) loads its base
    policy in float32, checks it is the model the adapter was trained on, and merges the adapter."""
    path = Path(path)
    meta_file = path / ADAPTER_FILE
    if not meta_file.is_file():
        return load_unit_lm(path, **kwargs)
    meta = DPO_ADAPTER.read_json(meta_file)
    base = load_unit_lm(meta["base_policy"], torch_dtype=torch.float32,
                        attn_implementation=kwargs.get("attn_implementation"))
    found = module_fingerprint(base.model)
    if found != meta.get("base_fingerprint"):
        raise TextlessError(f"{meta_file}: the base policy '{meta['base_policy']}' has changed since the adapter was "
                            f"trained (weights fingerprint {found}, expected {meta.get('base_fingerprint')})")
    with quiet_progress_bars():
        merged = PeftModel.from_pretrained(base.model, str(path)).merge_and_unload()
    merged.eval()
    return UnitLM(merged, base.vocab, tokenizer=base.tokenizer, frame_rate=base.frame_rate,
                  deduplicated=base.deduplicated)


# ---------------------------------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------------------------------


class DPOObjective(Objective):
    """DPO of a `UnitLM` on preference pairs (see the module docstring)."""

    name = "dpo"
    precisions = ("auto", "fp32", "no", "bf16", "fp16")
    cpu_bf16 = True
    resumable_settings = ("eval_batches", "valid_pairs", "attn_implementation", "ref_batch_size")
    input_settings = ("pairs", "policy")
    history_columns = METRICS
    valid_columns = METRICS
    config: DPOConfig

    def __init__(self, config: DPOConfig):
        super().__init__(config)
        self.fsdp = not config.lora  # LoRA: DDP only

    def check_config(self) -> None:
        cfg = self.config
        for name, what in (("pairs", "a preference dataset directory (textless preference-pairs output)"),
                           ("policy", "the unit LM to align (a unit LM directory or 'starter')")):
            if not getattr(cfg, name) or getattr(cfg, name) == "???":
                raise ConfigError(f"{name} is required: {what}")
        if cfg.reference not in REFERENCES:
            raise ConfigError(f"reference must be one of {', '.join(REFERENCES)}, got {cfg.reference!r}")
        if cfg.loss_type not in DPO_LOSSES:
            raise ConfigError(f"loss_type must be one of {', '.join(DPO_LOSSES)}, got {cfg.loss_type!r}")
        if cfg.beta <= 0:
            raise ConfigError(f"beta must be > 0, got {cfg.beta}")
        check_attn_implementation(cfg.attn_implementation)
        for name in ("batch_size", "grad_accum", "lora_rank"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        for name in ("eval_batches", "ref_batch_size"):
            value = getattr(cfg, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 (or null), got {value}")
        if cfg.max_length is not None and cfg.max_length < 2:
            raise ConfigError(f"max_length must be >= 2 (or null), got {cfg.max_length}")
        if cfg.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {cfg.epochs}")
        check_optimizer_settings(cfg)
        if cfg.lora_alpha <= 0 or not 0 <= cfg.lora_dropout < 1:
            raise ConfigError(f"need lora_alpha > 0 and 0 <= lora_dropout < 1, got {cfg.lora_alpha}, "
                              f"{cfg.lora_dropout}")
        if cfg.lora and cfg.lora_target_modules is not None and "lm_head" in cfg.lora_target_modules:
            raise ConfigError("lora_target_modules must not include lm_head")

    # -- setup --------------------------------------------------------------------------------------------------
    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        cfg = self.config
        self.ctx, self.device = ctx, ctx.device
        self.train_data = self._read(cfg.pairs, "pairs")
        self.valid_data = self._read(cfg.valid_pairs, "valid_pairs") if cfg.valid_pairs else None
        initial = load_unit_lm(cfg.policy, torch_dtype=torch.float32, attn_implementation=cfg.attn_implementation)
        # the data must match the model before anything is trained
        initial.check_units(self.train_data.units, where=f"preference dataset '{cfg.pairs}'", name="the policy")
        if self.valid_data is not None:
            initial.check_units(self.valid_data.units, where=f"preference dataset '{cfg.valid_pairs}'",
                                name="the policy")
        if cfg.disable_dropout:
            disable_dropout(initial.model)
        self.vocab = initial.vocab
        self.policy_fingerprint = module_fingerprint(initial.model)
        self._check_lengths(initial)  # (the policy stays on the CPU: the engine moves / shards it)

        self.train_pairs, self.valid_pairs = self.train_data.pairs, self.valid_data.pairs if self.valid_data else []
        if cfg.reference == "precomputed":
            self.train_pairs = self._reference_pairs(ctx, initial, self.train_data, "train")
            if self.valid_data is not None:
                self.valid_pairs = self._reference_pairs(ctx, initial, self.valid_data, "valid")

        self.ref_model = None
        if cfg.lora:
            self.lm = initial
            # peft asks transformers' deprecated is_gradient_checkpointing: not ours to fix, not the user's to see
            with quiet_progress_bars(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                if checkpoint is not None:
                    self.model = PeftModel.from_pretrained(initial.model, str(checkpoint / MODEL_DIR),
                                                           is_trainable=True)
                else:
                    self.model = get_peft_model(initial.model, lora_config(cfg, initial.model))
            self.model.to(ctx.device)
        else:
            if checkpoint is not None:
                self.lm = UnitLM.from_pretrained(checkpoint / MODEL_DIR, torch_dtype=torch.float32,
                                                 attn_implementation=cfg.attn_implementation)
                if cfg.disable_dropout:
                    disable_dropout(self.lm.model)
                ref = initial.model
            else:
                self.lm = initial
                ref = copy.deepcopy(initial.model) if cfg.reference == "frozen" else None
            if cfg.reference == "frozen":
                self.ref_model = ref.eval().requires_grad_(False).to(ctx.device)
            self.model = self.lm.model
        self.pairs_per_step = cfg.batch_size * cfg.grad_accum * ctx.world
        self.pairs_seen = 0
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def _read(self, path: str, name: str) -> PreferenceData:
        data = read_pairs(path)
        if not data.pairs:
            raise ConfigError(f"{name}: preference dataset '{path}' holds no pairs")
        return data

    def _check_lengths(self, lm: UnitLM) -> None:
        """Rows must fit the model's positions (or be cut at max_length)."""
        cfg, limit = self.config, lm.max_positions
        if limit is None:
            return
        if cfg.max_length is not None:
            if cfg.max_length > limit:
                raise ConfigError(f"max_length {cfg.max_length} exceeds the policy's {limit} positions")
            return
        for data, path in ((self.train_data, cfg.pairs), (self.valid_data, cfg.valid_pairs)):
            for pair in data.pairs if data is not None else []:
                prompt, chosen, rejected = pair_tokens(pair, self.vocab)
                longest = len(prompt) + max(len(chosen), len(rejected))
                if longest > limit:
                    raise ConfigError(f"preference dataset '{path}': pair {pair.id!r} has {longest} tokens, more "
                                      f"than the policy's {limit} positions; set max_length")

    def _reference_pairs(self, ctx: Context, initial: UnitLM, data: PreferenceData, split: str) -> list[Pair]:
        """`data`'s pairs with the initial policy's reference log-probs: the dataset's own when the same model made
        them, else a copy under output_dir/reference/<split> (computed once, by the main rank)."""
        cfg = self.config
        if has_ref(data, self.policy_fingerprint, cfg.max_length):
            return data.pairs
        directory = Path(cfg.output_dir) / REFERENCE_DIR / split

        def usable() -> PreferenceData | None:
            if not (directory / "meta.json").is_file():
                return None
            copy_ = read_pairs(directory)
            ok = copy_.fingerprint() == data.fingerprint() and has_ref(copy_, self.policy_fingerprint, cfg.max_length)
            return copy_ if ok else None

        if ctx.main and usable() is None:
            if data.ref:
                logger.info(f"{split} pairs: their reference log-probs were made by another model or max_length; "
                            f"recomputing them")
            logger.info(f"computing the reference log-probs of {len(data)} {split} pairs")
            initial.model.to(ctx.device)
            values = precompute_ref_logps(initial, data.pairs, cfg.ref_batch_size or cfg.batch_size,
                                          cfg.max_length, device=ctx.device, autocast=ctx.autocast)
            pairs = [copy.copy(p) for p in data.pairs]
            for pair, (chosen, rejected) in zip(pairs, values):
                pair.ref_chosen_logps, pair.ref_rejected_logps = chosen, rejected
            write_pairs(directory, PreferenceData(units=data.units, pairs=pairs, source=data.source,
                                                  ref=ref_meta(self.policy_fingerprint, cfg.max_length)),
                        overwrite=True)
        ctx.accelerator.wait_for_everyone()
        found = usable()
        if found is None:
            raise TextlessError(f"'{directory}': the reference log-probs do not match the pairs and the policy")
        return found.pairs

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def configure_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, OptimizerSpec]:
        cfg, model = self.config, modules["model"]
        groups = [g for g in param_groups(model, cfg.weight_decay) if g["params"]]  # LoRA: no 1-D parameters
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        self.total_steps, self.schedule_by = (cfg.max_steps, "max_steps") if cfg.max_steps is not None else (
            dpo_steps(len(self.train_pairs), cfg.epochs, self.pairs_per_step), "epochs")
        self.warmup_steps = math.ceil(cfg.warmup_fraction * self.total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(self.total_steps, self.warmup_steps,
                                                                           cfg.lr, cfg.min_lr))
        return {"model": OptimizerSpec(optimizer, scheduler, module="model", clip=cfg.clip)}

    def plan(self, ctx: Context) -> tuple[int | None, str]:
        return self.total_steps, self.schedule_by

    def describe(self, ctx: Context) -> str:
        cfg = self.config
        total = sum(p.numel() for p in self.model.parameters())
        trained = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return (f"DPO ({cfg.loss_type}, beta {cfg.beta}, reference {cfg.reference}) of {self.config.policy}: "
                f"training {trained / 1e6:.3f}M of {total / 1e6:.2f}M parameters{' (LoRA)' if cfg.lora else ''} on "
                f"{ctx.world} process(es) ({ctx.device}, {'FSDP, ' if ctx.fsdp else ''}precision {ctx.precision}); "
                f"{self.total_steps} steps of {self.pairs_per_step} pairs (from {self.schedule_by}, warmup "
                f"{self.warmup_steps}); {len(self.train_pairs)} training pairs"
                + (f", {len(self.valid_pairs)} validation pairs" if self.valid_data is not None else ""))

    # -- steps --------------------------------------------------------------------------------------------------
    @property
    def micro_batches(self) -> int:
        return self.config.grad_accum

    def _pair_at(self, position: int) -> Pair:
        """The pair at stream `position`: epoch ``position // N`` in its own seeded permutation."""
        epoch, i = divmod(position, len(self.train_pairs))
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            rng = np.random.default_rng([self.config.seed, epoch])
            self._perm_cache = (epoch, rng.permutation(len(self.train_pairs)))
        return self.train_pairs[int(self._perm_cache[1][i])]

    def batches(self, start: int) -> Iterator[PreferenceBatch]:
        cfg, ctx = self.config, self.ctx
        precomputed = cfg.reference == "precomputed"
        m = start
        while True:
            first = (m * ctx.world + ctx.rank) * cfg.batch_size
            pairs = [self._pair_at(p) for p in range(first, first + cfg.batch_size)]
            yield collate_pairs(pairs, self.vocab, cfg.max_length, with_ref=precomputed)
            m += 1

    def batch_weight(self, batch: PreferenceBatch) -> float:
        return float(batch.num_pairs)

    @torch.no_grad()
    def _reference(self, batch: PreferenceBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Reference log-probs of `batch` (None: they are in the batch)."""
        if self.config.reference == "precomputed":
            return None
        with self.ctx.autocast():
            if not self.config.lora:
                return reference_logps(self.ref_model, batch)
            training = self.model.training
            self.model.eval()  # no dropout in the reference (when disable_dropout=false)
            try:
                with self.model.disable_adapter():
                    return reference_logps(self.model, batch)
            finally:
                self.model.train(training)

    def _losses(self, model: torch.nn.Module, batch: PreferenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """(sum of the per-pair losses, metric sums) of `model` on `batch`."""
        cfg = self.config
        batch = batch.to(self.device)
        losses, metrics = batch_loss(model, batch, cfg.beta, cfg.loss_type, self._reference(batch))
        total = losses.sum()
        return total, {"loss": float(total.detach()), **{k: float(v.sum()) for k, v in metrics.items()}}

    def loss(self, phase: str, batch: PreferenceBatch, scratch: dict[str, Any]) -> StepLoss:
        total, metrics = self._losses(self.trained["model"], batch)
        return StepLoss(total, metrics)

    def after_step(self, ctx: Context, step: int, total_weight: float) -> None:
        self.pairs_seen += round(total_weight)

    def throughput(self, seconds: float) -> tuple[str, float]:
        return "pairs/s", self.pairs_per_step / max(seconds, 1e-9)

    # -- validation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, ctx: Context, writer) -> dict[str, float] | None:
        """Pair means of the loss and rewards on this rank's share of the validation pairs (every ``world``-th),
        summed over ranks. FSDP: every rank runs as many forwards as the busiest one (extras are not counted)."""
        if self.valid_data is None:
            return None
        cfg = self.config
        mine = self.valid_pairs[ctx.rank::ctx.world]
        starts = list(range(0, len(mine), cfg.batch_size))[: cfg.eval_batches]
        most = ctx.max(len(starts)) if ctx.fsdp else 0
        precomputed = cfg.reference == "precomputed"
        model = self.model
        model.eval()
        sums = dict.fromkeys(METRICS, 0.0)
        count = 0
        for start in starts:
            batch = collate_pairs(mine[start:start + cfg.batch_size], self.vocab, cfg.max_length, precomputed)
            with ctx.autocast():
                _, metrics = self._losses(model, batch)
            for k in METRICS:
                sums[k] += metrics[k]
            count += batch.num_pairs
        for _ in range(most - len(starts)):  # FSDP: the other ranks' extra forwards need this rank's shards
            with ctx.autocast():
                self._losses(model, collate_pairs(self.valid_pairs[:1], self.vocab, cfg.max_length, precomputed))
        model.train()
        values = ctx.sum([sums[k] for k in METRICS] + [float(count)])
        return {k: v / max(values[-1], 1.0) for k, v in zip(METRICS, values[:-1])}

    def valid_note(self) -> str:
        return f"({len(self.valid_pairs)} pairs)"

    # -- persistence --------------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        return {"pairs": self.train_data.fingerprint(), "policy": self.policy_fingerprint}

    def state_dict(self) -> dict[str, Any]:
        return {"pairs_seen": self.pairs_seen, "epoch": self.pairs_seen // len(self.train_pairs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pairs_seen = int(state["pairs_seen"])

    def _export(self, states: dict[str, dict[str, torch.Tensor]] | None) -> UnitLM:
        return self.lm if states is None else plain_unit_lm(self.lm, states["model"])

    def save_checkpoint_files(self, directory: Path, states) -> None:
        with quiet_progress_bars():
            if self.config.lora:
                self.model.save_pretrained(str(directory / MODEL_DIR))
            else:
                self._export(states).save_pretrained(directory / MODEL_DIR)

    def save_final(self, directory: Path, states) -> Path:
        cfg = self.config
        with quiet_progress_bars():
            if not cfg.lora:
                lm = self._export(states)
                lm.model.eval()
                lm.save_pretrained(directory, overwrite=True)
            elif cfg.merge_lora:
                merged = copy.deepcopy(self.model).merge_and_unload().eval()
                lm = self.lm
                UnitLM(merged, lm.vocab, tokenizer=lm.tokenizer, frame_rate=lm.frame_rate,
                       deduplicated=lm.deduplicated).save_pretrained(directory, overwrite=True)
            else:
                base = cfg.policy if cfg.policy == "starter" else str(Path(cfg.policy).resolve())
                with atomic_directory(directory, overwrite=True) as tmp:
                    self.model.save_pretrained(str(tmp))
                    DPO_ADAPTER.write_json(tmp / ADAPTER_FILE, {"base_policy": base,
                                                                "base_fingerprint": self.policy_fingerprint})
        return directory


def dpo(cfg: DPOConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Align (or resume aligning) a unit LM with DPO as configured; see the module docstring. Every rank of a
    torchrun job calls it; the process group stays up (`dpo_command` destroys it)."""
    return train_objective(DPOObjective(cfg), hooks)


def dpo_command(cfg: DPOConfig) -> TrainResult:
    """``textless dpo``: `dpo`, then destroy the process group it set up (the process ends next)."""
    result = dpo(cfg)
    end_process_group()
    return result


__all__ = ["ADAPTER_FILE", "DPOConfig", "DPOObjective", "disable_dropout", "dpo", "dpo_command", "dpo_steps",
           "load_dpo_result", "lora_targets"]
