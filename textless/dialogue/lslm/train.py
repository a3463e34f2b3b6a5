"""`textless train-lslm`: a speaking unit LM taught to listen while it speaks (LSLM, seed 002 sections 4.3 and 5.3).

Data: a `textless build-lslm` directory (speaking utterances, listening channels with noise and interruptions drawn
with probability 0.5 each, onsets; `read_lslm_examples`). Before training each split is prepared once and cached
in ``<output_dir>/prepared/<split>.npz`` (reused when the same examples, tokenizer and listening channel come
again): the speaking audio's frame-level units from ``units_tokenizer`` (the LM's units: same k-means, same frame
rate, no deduplication) and the listening audio's features from the `ListeningChannel` of ``listening`` (a frozen
encoder; any layer; MFCC as a baseline), pooled to the units' frame rate. With ``listening.trainable`` (an SSL
encoder: LSLM's "continued training", table 4) the features are recomputed from the listening audio in every step
and the encoder trains with the LM; it is saved beside the model (``listener/``). Examples and targets:
`textless.dialogue.lslm.data` (IRQ at ``mu`` after the onset, then nothing; else eos).

Model (``init``): a saved `UnitLM` directory (the speaking LM, e.g. trained by ``textless train`` on frame-level
units: LSLM's "pre-trained" rows of table 4), ``scratch:<preset>`` (a `textless.lm.presets` preset on the units of
``units_tokenizer``), or a saved `ListenSpeakLM` directory (continued). `with_irq` adds the IRQ token; the fusion
(``fusion`` early / middle / late / sum, ``projection``, ``adapter_dim``, ``user_weight``) starts as the plain LM
(zero-initialised last projection layer; its input scale is 1 / RMS of the training features).
``freeze_lm`` trains the projection only (table 4's fixed rows).
``prefix=characters`` puts the sentence's characters before ``<bos>`` (LSLM's TTS-conditioned setting; the model
records it). ``vanilla`` trains the baseline without a listening channel (zero features, so the projection stays zero and the model
is the plain LM; every utterance ends with eos): its ``final/lm`` is a UnitLM that the LSLMs can start from.

Loss: NLL summed over target tokens (units, eos / irq), token-weighted over the step. Validation: the same NLL on
``valid_split``, and ``speak_nll`` on its non-interrupted examples (the speaking channel's cost). AdamW (the paper:
lr 5e-4, no weight decay, warm-up then cosine), gradient clipping, TensorBoard, exact resume after SIGKILL, DDP.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from textless.audio import load_audio
from textless.data.identity import UnitIdentity
from textless.dialogue.interaction import LSLM_MU
from textless.dialogue.listening import ListeningChannel, ListeningConfig
from textless.dialogue.lslm.data import (
    IGNORE,
    LSLMBatch,
    LSLMItem,
    collate,
    place_features,
    prefix_specials,
    read_prepared,
    units_and_features,
    write_prepared,
)
from textless.dialogue.lslm.examples import read_lslm_examples
from textless.dialogue.lslm.model import CONFIG_FILE, IRQ, LSLM_ARTIFACT, FusionConfig, ListenSpeakLM, with_specials
from textless.errors import ConfigError, TextlessError
from textless.lm.model import UnitLM
from textless.lm.train import lr_lambda, param_groups
from textless.lm.vocab import UnitVocab
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders.ssl import SSLEncoder
from textless.training.checkpoint import MODEL_DIR
from textless.training.config import TrainingConfig
from textless.training.engine import TrainHooks, TrainResult, end_process_group, train_objective
from textless.training.objective import Context, Objective, OptimizerSpec, StepLoss

logger = logging.getLogger(__name__)
PREPARED = "prepared"


@dataclass
class LSLMTrainConfig(TrainingConfig):
    train_data: str = ""                   # a `textless build-lslm` directory
    train_split: str = "train"
    valid_split: str | None = "valid"      # null: no validation
    init: str = "scratch:tiny"             # a UnitLM dir | scratch:<preset> | a ListenSpeakLM dir
    units_tokenizer: str = "starter"       # the SpeechTokenizer of the LM's units (frame level)
    listening: dict[str, Any] = field(default_factory=lambda: {"encoder": "mfcc"})  # ListeningConfig fields
    fusion: str = "middle"                 # early | middle | late | sum
    projection: str | None = None          # linear | adapter (null: adapter for sum, else linear)
    adapter_dim: int = 256
    user_weight: float = 1.0
    freeze_lm: bool = False                # train the projection only
    vanilla: bool = False                  # the plain speaking LM baseline: no listening, no IRQ (LSLM's "Vanilla")
    cache_dir: str | None = None           # prepared splits (null: output_dir/prepared); runs may share one
    prefix: str = "none"                   # none | characters: the sentence's characters before <bos> (LSLM's TTS)
    mu: float = LSLM_MU                    # s: IRQ target this long after the onset
    output_dir: str = "outputs/lslm"
    batch_size: int = 8                    # utterances per rank per micro-batch
    grad_accum: int = 1
    lr: float = 5e-4
    min_lr: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.0              # LSLM: none
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    clip: float = 1.0


# ---------------------------------------------------------------------------------------------------------------------
# preparation
# ---------------------------------------------------------------------------------------------------------------------


def prepare_split(directory: str | Path, split: str, tokenizer: SpeechTokenizer, channel: ListeningChannel,
                  cache: Path | None = None, progress: bool = False, keep_audio: bool = False) -> list[LSLMItem]:
    """The split's items: speaking units [T] and listening features [F, D] (F >= T, cut to T) of every example,
    from `cache` when it holds exactly these (examples, tokenizer, listening channel), written there otherwise. An
    example whose audio cannot be read is reported and skipped. `keep_audio`: the items also carry their listening
    audio (a trainable listening encoder reads it; not cached)."""
    examples = read_lslm_examples(directory, split)
    key = json.dumps({"examples": [(e.id, e.samples, e.onset) for e in examples],
                      "tokenizer": tokenizer.identity(), "listening": asdict(channel.config)}, sort_keys=True,
                     default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()
    cached = read_prepared(cache, digest, [e.id for e in examples])
    heard: dict[str, np.ndarray] = {}  # listening audio read while preparing (keep_audio)
    if cached is None:
        rows = []
        for ex in tqdm(examples, desc=f"prepare {split}", disable=not progress, unit="utt"):
            try:
                speaking, _ = load_audio(ex.speaking, tokenizer.sample_rate)
                listening, _ = load_audio(ex.listening, channel.sample_rate)
            except (TextlessError, OSError, RuntimeError) as e:
                logger.warning("skipping example %s of %s: %s", ex.id, directory, e)
                continue
            rows.append((ex.id, *units_and_features(tokenizer, channel, speaking, listening)))
            if keep_audio:
                heard[ex.id] = listening.numpy()
        if cache is not None:
            write_prepared(cache, digest, rows, channel.dim)
        cached = {i: (u, f) for i, u, f in rows}
    items = [LSLMItem(e.id, *cached[e.id], e.onset, e.noise_kind is not None, text=e.text)
             for e in examples if e.id in cached]
    if keep_audio:
        paths = {e.id: e.listening for e in examples}
        items = [replace(i, audio=heard[i.id] if i.id in heard else load_audio(paths[i.id], channel.sample_rate)[0]
                         .numpy()) for i in items]
    return items


def is_lslm_dir(path: str | Path) -> bool:
    config = Path(path) / CONFIG_FILE
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == LSLM_ARTIFACT.name
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------------------------------
# objective
# ---------------------------------------------------------------------------------------------------------------------


LISTENER_DIR = "listener"
TRAINABLE_ENCODERS = (SSLEncoder,)


class ListeningSpeaker(torch.nn.Module):
    """The trained module when the listening encoder trains too: features from the batch's audio, then the LM."""

    def __init__(self, model: ListenSpeakLM, channel: ListeningChannel):
        super().__init__()
        self.model, self.channel = model, channel

    def forward(self, batch: LSLMBatch) -> torch.Tensor:
        features, _ = self.channel(batch.audio, batch.audio_lengths)
        listen = place_features(features, batch.spans, batch.input_ids.shape[1])
        return self.model(batch.input_ids, listen)


def save_ssl_encoder(encoder: SSLEncoder, directory: Path) -> None:
    """A trained SSL encoder as a Hugging Face directory `load_encoder` reads back (weights, config, and the
    preprocessor settings its features depend on)."""
    directory.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": encoder.normalize, "sampling_rate": encoder.sample_rate}) + "\n")


class LSLMObjective(Objective):
    """Next-token NLL of a ListenSpeakLM on LSLM examples (see the module docstring)."""

    name = "train-lslm"
    precisions = ("auto", "fp32", "no", "bf16")
    cpu_bf16 = True
    resumable_settings = ("valid_split",)
    input_settings = ("train_data",)
    history_columns = ("loss",)
    valid_columns = ("loss", "speak_nll")
    config: LSLMTrainConfig

    def check_config(self) -> None:
        cfg = self.config
        if not cfg.train_data or cfg.train_data == "???":
            raise ConfigError("train_data is required (a `textless build-lslm` directory)")
        if not (cfg.init.startswith("scratch:") or Path(cfg.init).is_dir()):
            raise ConfigError(f"init must be scratch:<preset>, a UnitLM directory or a ListenSpeakLM directory; "
                              f"{cfg.init!r} is none")
        FusionConfig(fusion=cfg.fusion, listen_dim=1, projection=cfg.projection, adapter_dim=cfg.adapter_dim)
        try:
            prefix_specials(cfg.prefix)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        ListeningConfig(**cfg.listening)
        for name in ("batch_size", "grad_accum"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.mu < 0 or cfg.lr <= 0 or not 0 <= cfg.min_lr <= cfg.lr or cfg.warmup_steps < 0 or cfg.clip < 0:
            raise ConfigError("need mu >= 0, lr > 0, 0 <= min_lr <= lr, warmup_steps >= 0 and clip >= 0")
        if cfg.max_steps is None:
            raise ConfigError("give max_steps")

    # -- setup --------------------------------------------------------------------------------------------------
    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        cfg = self.config
        self.ctx, self.device = ctx, ctx.device
        with torch.random.fork_rng(devices=[]):  # loading the tokenizer / encoder must not change the model's init
            tokenizer = SpeechTokenizer.from_pretrained(cfg.units_tokenizer)
            channel = ListeningChannel(ListeningConfig(**{"frame_rate": tokenizer.frame_rate, **cfg.listening}))
            cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.output_dir) / PREPARED
            self.train_items, self.valid_items = self.prepare(tokenizer, channel, cache, cfg.progress and ctx.main)
        if not self.train_items:
            raise ConfigError(f"{cfg.train_data}: split {cfg.train_split!r} holds no example")
        if cfg.vanilla:  # zero features (the projection gets no gradient) and every utterance spoken to its end
            self.train_items, self.valid_items = ([replace(i, listen=np.zeros_like(i.listen), onset=None) for i in items]
                                                  for items in (self.train_items, self.valid_items))
        self.frame_rate = tokenizer.frame_rate
        fusion = FusionConfig(fusion=cfg.fusion, listen_dim=channel.dim, projection=cfg.projection,
                              adapter_dim=cfg.adapter_dim, user_weight=cfg.user_weight,
                              listening={**asdict(channel.config)}, prefix=cfg.prefix)
        self.trainable = channel.config.trainable
        if self.trainable and type(channel.encoder) not in TRAINABLE_ENCODERS:
            raise ConfigError(f"listening.trainable: train-lslm trains SSL encoders (HuBERT / wav2vec2 / WavLM "
                              f"directories), not {type(channel.encoder).__name__}")
        if checkpoint is not None:
            self.model = ListenSpeakLM.from_pretrained(checkpoint / MODEL_DIR)
            if self.trainable:  # the encoder as trained so far
                channel = ListeningChannel(ListeningConfig(**{**self.model.config.listening, "trainable": True}))
        elif is_lslm_dir(cfg.init):
            self.model = ListenSpeakLM.from_pretrained(cfg.init)
        else:
            if cfg.init.startswith("scratch:"):
                lm = UnitLM.from_scratch(cfg.init.split(":", 1)[1], UnitVocab.default(tokenizer.num_units),
                                         tokenizer=tokenizer.identity(), frame_rate=tokenizer.frame_rate,
                                         deduplicated=False)
            else:
                lm = UnitLM.from_pretrained(cfg.init)
            self.model = ListenSpeakLM(with_specials(lm, self.specials + prefix_specials(cfg.prefix)), fusion)
            frames = torch.from_numpy(np.concatenate([i.listen for i in self.train_items]))
            if frames.abs().sum() > 0:  # a vanilla run has zero features: keep the scale 1
                self.model.projection.scale_to(frames)
        if self.model.config.prefix != cfg.prefix:
            raise ConfigError(f"the model reads prefix {self.model.config.prefix!r}, the config asks for "
                              f"{cfg.prefix!r}")
        frame_units = UnitIdentity(tokenizer=tokenizer.identity(), vocab_size=tokenizer.num_units,
                                   frame_rate=tokenizer.frame_rate, deduplicated=False)
        self.model.lm.check_units(frame_units, where=f"frame-level units of {cfg.units_tokenizer!r}")
        missing = [name for name in self.specials if name not in self.model.vocab.specials]
        if missing:
            raise ConfigError(f"the model's vocabulary has no {missing} token(s); start from a UnitLM or from scratch")
        if self.model.config.listen_dim != channel.dim:
            raise ConfigError(f"the model reads {self.model.config.listen_dim}-dim listening features, the listening "
                              f"channel gives {channel.dim}")
        if cfg.freeze_lm:
            self.model.lm.requires_grad_(False)
        self.model.train()
        self.listener = channel
        self.module: torch.nn.Module = ListeningSpeaker(self.model, channel) if self.trainable else self.model
        self.items_per_step = cfg.batch_size * cfg.grad_accum * ctx.world
        self.seen = 0
        self._targets = self._step_targets = 0
        self._epoch_order: tuple[int | None, np.ndarray | None] = (None, None)

    #: special tokens the speaking LM needs
    specials: tuple[str, ...] = (IRQ,)

    def prepare(self, tokenizer: SpeechTokenizer, channel: ListeningChannel, cache: Path, progress: bool
                ) -> tuple[list[LSLMItem], list[LSLMItem]]:
        """(train items, valid items) of the configured data (`prepare_split`)."""
        cfg = self.config
        audio = channel.config.trainable
        train = prepare_split(cfg.train_data, cfg.train_split, tokenizer, channel, cache / f"{cfg.train_split}.npz",
                              progress, keep_audio=audio)
        valid = prepare_split(cfg.train_data, cfg.valid_split, tokenizer, channel, cache / f"{cfg.valid_split}.npz",
                              keep_audio=audio) if cfg.valid_split else []
        return train, valid

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.module}

    def configure_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, OptimizerSpec]:
        cfg = self.config
        optimizer = torch.optim.AdamW(param_groups(modules["model"], cfg.weight_decay), lr=cfg.lr,
                                      betas=tuple(cfg.betas))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                      lr_lambda(cfg.max_steps, cfg.warmup_steps, cfg.lr, cfg.min_lr))
        return {"model": OptimizerSpec(optimizer, scheduler, module="model", clip=cfg.clip)}

    def describe(self, ctx: Context) -> str:
        cfg, fc = self.config, self.model.config
        interrupted = sum(i.onset is not None for i in self.train_items)
        return (f"training a ListenSpeakLM ({fc.fusion} fusion, {fc.projection} projection of {fc.listen_dim}-dim "
                f"{fc.listening.get('encoder') if fc.listening else '?'} features; "
                f"{sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters"
                f"{', LM frozen' if cfg.freeze_lm else ''}) on {ctx.world} process(es) ({ctx.device}); "
                f"{len(self.train_items)} train utterances ({interrupted} interrupted), "
                f"{len(self.valid_items)} valid; steps of {self.items_per_step} utterances")

    # -- steps --------------------------------------------------------------------------------------------------
    @property
    def micro_batches(self) -> int:
        return self.config.grad_accum

    def _order(self, epoch: int) -> np.ndarray:
        """The item permutation of `epoch` (drawn once per epoch)."""
        if self._epoch_order[0] != epoch:
            self._epoch_order = (epoch, np.random.default_rng([self.config.seed, epoch]).permutation(
                len(self.train_items)))
        return self._epoch_order[1]

    def batches(self, start: int) -> Iterator[LSLMBatch]:
        cfg, ctx, n = self.config, self.ctx, len(self.train_items)
        m = start
        while True:
            first = (m * ctx.world + ctx.rank) * cfg.batch_size
            items = []
            for p in range(first, first + cfg.batch_size):
                epoch, i = divmod(p, n)
                items.append(self.train_items[int(self._order(epoch)[i])])
            yield collate(items, self.model.vocab, self.frame_rate, cfg.mu, cfg.prefix, self.trainable)
            m += 1

    def batch_weight(self, batch: LSLMBatch) -> float:
        return float(batch.targets)

    def loss(self, phase: str, batch: LSLMBatch, scratch: dict[str, Any]) -> StepLoss:
        batch = batch.to(self.device)
        logits = self.trained["model"](batch) if self.trainable else self.trained["model"](batch.input_ids,
                                                                                           batch.listen)
        value = F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE,
                                reduction="sum")
        self._targets += batch.targets
        return StepLoss(value, {"loss": float(value.detach())})

    def after_step(self, ctx: Context, step: int, total_weight: float) -> None:
        self._step_targets, self._targets = int(total_weight), 0
        self.seen += self.items_per_step

    def throughput(self, seconds: float) -> tuple[str, float]:
        return "targets/s", self._step_targets / max(seconds, 1e-9)

    # -- validation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, ctx: Context, writer) -> dict[str, float] | None:
        if not self.valid_items:
            return None
        self.module.eval()
        sums = [0.0, 0.0, 0.0, 0.0]  # nll, targets, clean nll, clean targets
        mine = self.valid_items[ctx.rank::ctx.world]
        for start in range(0, len(mine), self.config.batch_size):
            batch = collate(mine[start:start + self.config.batch_size], self.model.vocab, self.frame_rate,
                            self.config.mu, self.config.prefix, self.trainable).to(self.device)
            with ctx.autocast():
                logits = self.module(batch) if self.trainable else self.model(batch.input_ids, batch.listen)
            nll = F.cross_entropy(logits.float().transpose(1, 2), batch.labels, ignore_index=IGNORE,
                                  reduction="none").sum(dim=1)
            counts = (batch.labels != IGNORE).sum(dim=1)
            clean = ~batch.interrupted
            sums[0] += float(nll.sum())
            sums[1] += float(counts.sum())
            sums[2] += float(nll[clean].sum())
            sums[3] += float(counts[clean].sum())
        self.module.train()
        total = ctx.sum(sums)
        return {"loss": total[0] / max(total[1], 1), "speak_nll": total[2] / max(total[3], 1)}

    # -- persistence --------------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        ids = [(i.id, len(i.units), i.onset) for i in self.train_items]
        return {"train_data": hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])

    def _export(self, states: dict[str, dict[str, torch.Tensor]] | None) -> None:
        if states is not None:
            self.module.load_state_dict(states["model"])

    def _save(self, directory: Path, overwrite: bool = False) -> None:
        """The model, and a trained listening encoder beside it (``listener/``, named relative in its config)."""
        model = self.model
        if not self.trainable:
            model.save_pretrained(directory, overwrite=overwrite)
            return
        listening = model.config.listening
        model.config.listening = {**listening, "encoder": LISTENER_DIR}
        try:
            model.save_pretrained(directory, overwrite=overwrite)
        finally:
            model.config.listening = listening
        save_ssl_encoder(self.listener.encoder, directory / LISTENER_DIR)

    def save_checkpoint_files(self, directory: Path, states) -> None:
        self._export(states)
        self._save(directory / MODEL_DIR)

    def save_final(self, directory: Path, states) -> Path:
        self._export(states)
        training = self.module.training
        self.module.eval()
        self._save(directory, overwrite=True)
        self.module.train(training)
        return directory


def train_lslm(cfg: LSLMTrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a ListenSpeakLM as configured; see the module docstring."""
    return train_objective(LSLMObjective(cfg), hooks)


def train_lslm_command(cfg: LSLMTrainConfig) -> TrainResult:
    """``textless train-lslm``: `train_lslm`, then destroy the process group it set up."""
    result = train_lslm(cfg)
    end_process_group()
    return result


__all__ = ["LSLMObjective", "LSLMTrainConfig", "prepare_split", "train_lslm", "train_lslm_command"]
