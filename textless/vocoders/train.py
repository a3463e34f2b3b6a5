"""`textless train-vocoder`: train a unit HiFi-GAN (fairseq's CodeHiFiGAN) on a unit dataset and its audio, resumably.

Recipe (HiFi-GAN V1 / speech-resynthesis, the defaults here): generator and discriminator each with AdamW (lr 2e-4,
betas (0.8, 0.99), weight decay 0.01), both learning rates multiplied by ``lr_decay`` = 0.999 every ``decay_every``
optimizer steps (HiFi-GAN decays once per epoch; counting steps keeps the schedule independent of the dataset size),
batches of ``batch_size`` random segments of ``segment_frames`` unit frames (`textless.vocoders.data`). One step:

1. ``fake = G(units)``; 2. discriminator: LSGAN loss on D(real) and D(fake.detach()), its own optimizer step;
3. generator: ``45 * mel L1 + 2 * feature matching + LSGAN adversarial (+ duration MSE)`` with the discriminator's
   parameters frozen (its backward pass computes input gradients only, no weight gradients) and the real features
   taken without gradient.

The first ``mel_only_steps`` steps skip 2. and the adversarial terms (mel + duration only): the generator learns the
spectral envelope first, at about 1/40 of a GAN step's cost on a CPU (see the speeds below).
The discriminator is speechbrain's (``hifigan`` = multi-period (periods 2, 3, 5, 7, 11) + multi-scale (3 scales),
``mpd`` or ``msd`` alone; more with `register_discriminator`); the losses are `textless.vocoders.losses`.

The generator trains with weight norm (`UnitHiFiGAN.apply_weight_norm`, as fairseq) and is saved folded
(``final/`` and each checkpoint's ``model/`` load with `load_vocoder`). Its config comes from the ``preset`` and the
unit dataset (`textless.vocoders.presets`): ``num_embeddings`` = the units' vocabulary, the upsampling from their frame
rate, a duration predictor when they are deduplicated (``duration_predictor``), and speaker embeddings when the audio
manifest names speakers (``multispkr``: sorted names -> ids, stored as ``config.speakers``, so synthesis takes names).
``final/`` carries the unit dataset's tokenizer identity, frame rate and deduplicated flag.

Precision: ``auto`` = bf16 autocast for the generator and discriminator forward passes on CUDA (when supported),
fp32 on CPU; the mel spectrograms, the losses and the optimizers are always fp32. ``bf16`` on a CPU is refused.

Validation (every ``eval_every`` steps and at the end): mel L1 of whole validation utterances resynthesised from their
frame-level units (batched `UnitVocoder.synthesize`), averaged over utterances (at most ``max_valid_utterances``,
spread evenly), and the duration predictor's MSE on log(1 + duration) of all their runs. TensorBoard (``tensorboard/``)
gets every loss, both learning rates, gradient norms and seconds per step, and for ``num_valid_samples`` fixed
utterances (validation set, else training set) the resynthesised audio, the real audio (once) and a figure of real vs
generated log-mel.

Batches are made by `VocoderSegments.batch` in a background thread (``prefetch`` batches ahead) rather than by a
torch DataLoader: a batch is a pure function of (seed, step), so a thread that computes steps s, s + 1, ... needs no
sampler state to save, and worker processes would only add start-up time and copies of the audio cache.

Exact resume: a checkpoint (`textless.vocoders.checkpoint`) holds both networks in training form, both optimizers
and schedulers, the RNG states and the step; batches are a pure function of (seed, step). Re-running the same command
continues from ``checkpoints/latest``, and on CPU (``torch.use_deterministic_algorithms``) the resumed run's losses and
weights equal the uninterrupted run's bit for bit. Checkpoints are large: the hifigan discriminator has 70.7 M
parameters, so discriminator + its AdamW state is ~850 MB per checkpoint (``keep_checkpoints`` bounds the count).

CPU speed (2 idle cores, ``small`` preset, batch 8 of 28-frame segments at hop 320, fp32): a mel-only step takes
0.15 s, a GAN step 6.5 s, nearly all of it the discriminator's forward and backward passes; hence ``mel_only_steps``
(experiments/vocoder_small.yaml). On a GPU use the default recipe (experiments/train-vocoder.yaml).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.data.units import UnitDataset, read_units
from textless.errors import ConfigError, FormatError, TextlessError
from textless.utils.training import deterministic, prefetch
from textless.vocoders.checkpoint import (
    MODEL_DIR,
    clean_checkpoint_temporaries,
    columns_from_tensors,
    columns_to_tensors,
    latest_checkpoint,
    load_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from textless.vocoders.data import DEFAULT_SEGMENT_FRAMES, SegmentBatch, VocoderSegments, audio_source, describe
from textless.vocoders.generator import UnitHiFiGAN, UnitHiFiGANConfig
from textless.vocoders.losses import (
    FEATURE_MATCHING_WEIGHT,
    MEL_WEIGHT,
    LogMel,
    discriminator_loss,
    duration_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1,
)
from textless.vocoders.model import UnitVocoder
from textless.vocoders.presets import GeneratorOverrides, generator_config

FINAL_DIR = "final"
TENSORBOARD_DIR = "tensorboard"
PRECISIONS = ("auto", "fp32", "bf16")
MEL_N_FFT = 1024
# Changing these between a checkpoint and its resumption changes what the run computes (a warning names them).
_TRAJECTORY_FIELDS = ("train_dataset", "audio_dataset", "preset", "generator", "sampling_rate", "multispkr",
                      "duration_predictor", "discriminator", "segment_frames", "batch_size", "lr", "betas",
                      "weight_decay", "lr_decay", "decay_every", "grad_clip", "mel_weight", "feature_matching_weight",
                      "duration_weight", "mel_only_steps", "seed", "precision")


def _speechbrain(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from speechbrain.lobes.models import HifiGAN

        return getattr(HifiGAN, name)()

    return build


# name -> factory of a module mapping waveforms [B, 1, T] to (scores: list of [B, N], feats: list of lists of tensors)
DISCRIMINATORS: dict[str, Callable[[], torch.nn.Module]] = {
    "hifigan": _speechbrain("HifiganDiscriminator"),   # MPD + MSD, as HiFi-GAN / CodeHiFiGAN
    "mpd": _speechbrain("MultiPeriodDiscriminator"),
    "msd": _speechbrain("MultiScaleDiscriminator"),
}


def register_discriminator(name: str, factory: Callable[[], torch.nn.Module]) -> None:
    """Make ``discriminator=name`` build `factory()` (speechbrain's output convention, see `DISCRIMINATORS`)."""
    DISCRIMINATORS[name] = factory


@dataclass
class VocoderTrainConfig:
    train_dataset: str = ""                  # unit dataset directory (textless tokenize output)
    valid_dataset: str | None = None         # unit dataset for validation (mel L1, listening samples)
    audio_dataset: str | None = None         # train audio (dir, manifest, bundled:<split>); default: units' source
    valid_audio_dataset: str | None = None   # default: the valid units' source, else audio_dataset
    output_dir: str = "outputs/vocoder"
    preset: str = "hifigan_v1"               # hifigan_v1 (fairseq CodeHiFiGAN) | small (CPU starter)
    generator: GeneratorOverrides = field(default_factory=GeneratorOverrides)
    sampling_rate: int = 16000
    multispkr: bool | None = None            # null: when the audio manifest names >= 2 speakers
    duration_predictor: bool | None = None   # null: when the units are deduplicated
    discriminator: str = "hifigan"           # hifigan (MPD + MSD) | mpd | msd
    segment_frames: int = DEFAULT_SEGMENT_FRAMES  # frames per training segment (28 x 320 = 8960 samples)
    batch_size: int = 16
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.01               # torch AdamW's default, which HiFi-GAN uses
    lr_decay: float = 0.999                  # both learning rates x lr_decay every decay_every steps
    decay_every: int = 1000
    grad_clip: float = 0.0                   # max gradient norm for each network (0: none, as HiFi-GAN)
    mel_weight: float = MEL_WEIGHT
    feature_matching_weight: float = FEATURE_MATCHING_WEIGHT
    duration_weight: float = 1.0
    mel_only_steps: int = 0                  # first steps without the discriminator (mel + duration losses)
    max_steps: int | None = None
    max_seconds: float | None = None         # wall clock, summed over resumed runs
    eval_every: int = 1000
    save_every: int = 5000
    keep_checkpoints: int = 2
    log_every: int = 100
    seed: int = 0
    precision: str = "auto"                  # auto (bf16 autocast on CUDA, else fp32) | fp32 | bf16
    device: str = "auto"                     # auto (cuda when available) | cpu | cuda | cuda:N
    num_valid_samples: int = 4               # utterances rendered to TensorBoard (audio + mel figure)
    max_valid_utterances: int | None = 100   # cap on utterances for the validation metric (null: all)
    cache_mb: float = 2048.0                 # LRU cache of decoded training audio
    prefetch: int = 2                        # batches prepared ahead by a background thread (0: inline)
    progress: bool = True
    tensorboard: bool = True


@dataclass
class VocoderTrainResult:
    step: int                                  # optimizer steps done
    history: dict[str, list[float]]            # columns "step", "mel", "gen", ["dur"], "disc", "adv", "fm" (NaN
    #                                            where a loss was not computed: mel-only steps)
    valid_history: dict[str, list[float]]      # columns "step", "mel_l1", ["dur_mse"]
    stopped_by: str                            # max_steps | max_seconds
    output_dir: Path
    final_model: Path
    checkpoint: Path | None
    resumed_from: int | None = None
    tensorboard_dir: Path | None = None


class VocoderTrainHooks:
    """Callbacks for tests and integrations; no-ops by default."""

    def on_batch(self, step: int, batch: SegmentBatch) -> None:
        """Before optimizer step `step` (1-based) runs on `batch`."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """After checkpoint `step` is complete and `latest` points to it."""


# --------------------------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------------------------


def _check_config(cfg: VocoderTrainConfig) -> None:
    if not cfg.train_dataset or cfg.train_dataset == "???":
        raise ConfigError("train_dataset is required (a unit dataset directory written by `textless tokenize`)")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.discriminator not in DISCRIMINATORS:
        raise ConfigError(f"discriminator must be one of {', '.join(DISCRIMINATORS)}, got {cfg.discriminator!r}")
    if cfg.max_steps is None and cfg.max_seconds is None:
        raise ConfigError("give max_steps and/or max_seconds (the training budget)")
    positive = {"segment_frames": cfg.segment_frames, "batch_size": cfg.batch_size, "decay_every": cfg.decay_every,
                "eval_every": cfg.eval_every, "save_every": cfg.save_every, "log_every": cfg.log_every,
                "keep_checkpoints": cfg.keep_checkpoints, "sampling_rate": cfg.sampling_rate}
    for name, value in positive.items():
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    for name in ("max_steps", "max_valid_utterances"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 (or null), got {value}")
    if cfg.max_seconds is not None and cfg.max_seconds <= 0:
        raise ConfigError(f"max_seconds must be > 0 (or null), got {cfg.max_seconds}")
    if cfg.lr <= 0 or not 0 < cfg.lr_decay <= 1:
        raise ConfigError(f"need lr > 0 and 0 < lr_decay <= 1, got lr={cfg.lr} lr_decay={cfg.lr_decay}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {list(cfg.betas)}")
    for name in ("weight_decay", "grad_clip", "mel_weight", "feature_matching_weight", "duration_weight",
                 "mel_only_steps", "num_valid_samples", "prefetch", "seed"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.cache_mb <= 0:
        raise ConfigError(f"cache_mb must be > 0, got {cfg.cache_mb}")


def _device(cfg: VocoderTrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(cfg.device)
    except RuntimeError as e:
        raise ConfigError(f"device {cfg.device!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device!r} requested but CUDA is not available")
    return device


def _bf16(cfg: VocoderTrainConfig, device: torch.device) -> bool:
    if cfg.precision == "bf16":
        if device.type != "cuda":
            raise ConfigError(f"precision=bf16 autocasts on CUDA only; this run is on {device} (use fp32 or auto)")
        return True
    return cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def _config_dict(cfg: VocoderTrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["betas"] = [float(b) for b in d["betas"]]
    return d


def _config_yaml(cfg: VocoderTrainConfig) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(_config_dict(cfg)))


def _read_units(path: str, what: str) -> UnitDataset:
    units = read_units(path)
    if units.meta.bpe:
        raise ConfigError(f"{what} '{path}' holds BPE tokens; a vocoder needs the units themselves (tokenize without "
                          f"BPE)")
    return units


def _load_audio(spec: str, units: UnitDataset, given: bool):
    from textless.data import load_dataset

    try:
        return load_dataset(spec)
    except TextlessError as e:
        origin = "audio_dataset" if given else f"extra.source of {Path(units.path) / 'meta.json'}"
        raise ConfigError(f"audio dataset '{spec}' (from {origin}) for unit dataset '{units.path}' cannot be "
                          f"loaded: {e}. Set audio_dataset to the audio these units were tokenized from") from None


def _check_same_units(train: UnitDataset, valid: UnitDataset) -> None:
    a, b = train.meta, valid.meta
    for key in ("vocab_size", "frame_rate", "deduplicated"):
        if getattr(a, key) != getattr(b, key):
            raise ConfigError(f"valid_dataset '{valid.path}' has {key} {getattr(b, key)}, train_dataset "
                              f"'{train.path}' has {getattr(a, key)}: they must come from the same tokenizer")
    if a.tokenizer.get("name") != b.tokenizer.get("name"):
        raise ConfigError(f"valid_dataset '{valid.path}' was made by tokenizer {b.tokenizer.get('name')!r}, "
                          f"train_dataset by {a.tokenizer.get('name')!r}")




def _grad_norm(params: list[torch.nn.Parameter], clip: float) -> float:
    """Total L2 norm of the gradients (before clipping); clips to `clip` when > 0."""
    if clip > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, clip))
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _mel_figure(real: np.ndarray, fake: np.ndarray, title: str):
    """A matplotlib figure with the real (top) and generated (bottom) log-mel [n_mels, M]."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=80)
    axes = fig.subplots(2, 1, sharex=True)
    lo, hi = float(min(real.min(), fake.min())), float(max(real.max(), fake.max()))
    for ax, mel, name in zip(axes, (real, fake), ("real", "generated")):
        im = ax.imshow(mel, origin="lower", aspect="auto", interpolation="none", vmin=lo, vmax=hi)
        ax.set_ylabel(f"{name}\nmel bin")
    axes[0].set_title(title)
    axes[1].set_xlabel("mel frame (256 samples)")
    fig.colorbar(im, ax=list(axes), label="log magnitude")
    return fig


# --------------------------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------------------------


def train_vocoder(cfg: VocoderTrainConfig, log: Callable[[str], Any] = print,
                  hooks: VocoderTrainHooks | None = None) -> VocoderTrainResult:
    """Train (or resume) a unit vocoder as configured; see the module docstring."""
    _check_config(cfg)
    device = _device(cfg)
    with deterministic(device.type == "cpu"):
        return _Trainer(cfg, device, log, hooks or VocoderTrainHooks()).run()


class _Trainer:
    def __init__(self, cfg: VocoderTrainConfig, device: torch.device, log: Callable[[str], Any],
                 hooks: VocoderTrainHooks):
        self.cfg, self.device, self.hooks, self._log = cfg, device, hooks, log
        self.bf16 = _bf16(cfg, device)
        self.out = Path(cfg.output_dir)
        self.bar = None

    def log(self, message: str) -> None:
        if self._log is print and self.bar is not None and not self.bar.disable:
            self.bar.write(message)
        else:
            self._log(message)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    # setup --------------------------------------------------------------------------------------------------------
    def _data(self) -> UnitHiFiGANConfig:
        cfg = self.cfg
        units = _read_units(cfg.train_dataset, "train_dataset")
        self.meta = units.meta
        where = f"unit dataset '{units.path}'"
        dur = cfg.duration_predictor if cfg.duration_predictor is not None else self.meta.deduplicated
        shape = {"sampling_rate": cfg.sampling_rate, "frame_rate": self.meta.frame_rate,
                 "num_units": self.meta.vocab_size, "duration_predictor": dur, "where": where}
        hop = generator_config(cfg.preset, cfg.generator, speakers=None, **shape).hop  # config errors before I/O
        if cfg.segment_frames * hop < MEL_N_FFT:
            raise ConfigError(f"segment_frames {cfg.segment_frames} x hop {hop} = {cfg.segment_frames * hop} samples "
                              f"is shorter than the mel loss window ({MEL_N_FFT} samples): raise segment_frames")
        audio = _load_audio(audio_source(units, cfg.audio_dataset), units, bool(cfg.audio_dataset))
        self.train = VocoderSegments(units, audio, sampling_rate=cfg.sampling_rate, segment_frames=cfg.segment_frames,
                                     seed=cfg.seed, cache_mb=cfg.cache_mb, log=self.log)
        names, unlabeled = self.train.speaker_names()
        multispkr = cfg.multispkr if cfg.multispkr is not None else len(names) >= 2 and not unlabeled
        if multispkr and (unlabeled or not names):
            raise ConfigError(f"multispkr=true needs a speaker for every utterance, but {len(unlabeled)} utterances "
                              f"of '{audio.source}' have none (e.g. {', '.join(unlabeled[:3])}): add a speaker "
                              f"column to the manifest or set multispkr=false")
        if multispkr:
            self.train.use_speakers(names)
        speakers = names if multispkr else None
        gen = generator_config(cfg.preset, cfg.generator, speakers=speakers, **shape)
        self.valid = None
        if cfg.valid_dataset:
            vunits = _read_units(cfg.valid_dataset, "valid_dataset")
            _check_same_units(units, vunits)
            spec = cfg.valid_audio_dataset or vunits.meta.extra.get("source") or cfg.audio_dataset
            vaudio = _load_audio(audio_source(vunits, spec), vunits, bool(cfg.valid_audio_dataset))
            self.valid = VocoderSegments(vunits, vaudio, sampling_rate=cfg.sampling_rate,
                                         segment_frames=cfg.segment_frames, seed=cfg.seed, cache_mb=cfg.cache_mb,
                                         log=self.log)
            if speakers is not None:
                self.valid.use_speakers(speakers)
        return gen

    def _setup(self) -> None:
        cfg = self.cfg
        gen_config = self._data()
        clean_checkpoint_temporaries(self.out)
        self.checkpoint = latest_checkpoint(self.out)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        generator = UnitHiFiGAN(gen_config).apply_weight_norm()
        self.discriminator = DISCRIMINATORS[cfg.discriminator]()
        self.state = None
        if self.checkpoint is not None:
            self.state, g_weights, d_weights = load_training_checkpoint(self.checkpoint)
            self._check_resumable(gen_config)
            try:
                generator.load_state_dict(g_weights)
                self.discriminator.load_state_dict(d_weights)
            except RuntimeError as e:
                raise ConfigError(f"checkpoint {self.checkpoint} does not fit this run's networks "
                                  f"({str(e).splitlines()[0]}); use a new output_dir") from None
            self.log(f"resuming from {self.checkpoint} (step {self.state['step']})")
        self.vocoder = UnitVocoder(generator, tokenizer=self.meta.tokenizer, frame_rate=self.meta.frame_rate,
                                   deduplicated=self.meta.deduplicated).to(self.device).train()
        self.generator = generator
        self.discriminator.to(self.device).train()
        self.mel = LogMel(cfg.sampling_rate).to(self.device)
        self.mel_cpu = LogMel(cfg.sampling_rate)
        adamw = {"lr": cfg.lr, "betas": tuple(cfg.betas), "weight_decay": cfg.weight_decay}
        self.opt_g = torch.optim.AdamW(generator.parameters(), **adamw)
        self.opt_d = torch.optim.AdamW(self.discriminator.parameters(), **adamw)
        decay, every = cfg.lr_decay, cfg.decay_every
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lambda s: decay ** (s // every))
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lambda s: decay ** (s // every))
        self.step, self.elapsed_before, self.samples_logged = 0, 0.0, False
        self.history: dict[str, list[float]] = {k: [] for k in self._columns()}
        self.valid_history: dict[str, list[float]] = {k: [] for k in self._valid_columns()}
        if self.state is not None:
            s = self.state
            self.opt_g.load_state_dict(s["optimizer_g"])
            self.opt_d.load_state_dict(s["optimizer_d"])
            self.sched_g.load_state_dict(s["scheduler_g"])
            self.sched_d.load_state_dict(s["scheduler_d"])
            set_rng_state(s["rng"])
            self.step, self.elapsed_before = int(s["step"]), float(s["elapsed_seconds"])
            self.samples_logged = bool(s["samples_logged"])
            self.history = columns_from_tensors(s["history"])
            self.valid_history = columns_from_tensors(s["valid_history"])
        else:
            torch.manual_seed(cfg.seed + 1)  # the training stream (dropout), apart from the initialisation
        self.last_saved = self.step if self.state is not None else None

    def _check_resumable(self, gen_config: UnitHiFiGANConfig) -> None:
        saved_path = self.checkpoint / MODEL_DIR / "config.json"
        try:
            saved = UnitHiFiGANConfig.from_dict(json.loads(saved_path.read_text())["generator"]).to_dict()
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise FormatError(saved_path, f"cannot read the checkpoint's generator config ({e})") from None
        now = gen_config.to_dict()
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            raise ConfigError(f"checkpoint {self.checkpoint} was trained with a different generator "
                              f"({', '.join(changed)} differ, e.g. {changed[0]}: {saved.get(changed[0])!r} there, "
                              f"{now.get(changed[0])!r} now): resume with the same data and generator settings, or "
                              f"use a new output_dir")
        old = self.state["config"]
        differ = [k for k in _TRAJECTORY_FIELDS if k in old and old[k] != _config_dict(self.cfg)[k]]
        if differ:
            self.log(f"warning: resuming with different {', '.join(differ)} than checkpoint {self.checkpoint.name}; "
                     "the run will not reproduce an uninterrupted one")

    def _columns(self) -> list[str]:
        dur = ["dur"] if self.generator_has_dur else []
        return ["step", "mel", *dur, "gen", "disc", "adv", "fm"]

    def _valid_columns(self) -> list[str]:
        return ["step", "mel_l1", *(["dur_mse"] if self.generator_has_dur else [])]

    @property
    def generator_has_dur(self) -> bool:
        return self.generator.dur_predictor is not None

    # one step -----------------------------------------------------------------------------------------------------
    def _train_step(self, batch: SegmentBatch) -> tuple[dict[str, float], dict[str, float]]:
        """One optimizer step of both networks; returns (losses, diagnostics)."""
        cfg, G, D = self.cfg, self.generator, self.discriminator
        gan = self.step >= cfg.mel_only_steps
        mask = None if batch.full else batch.mask
        real = batch.audio
        lr = float(self.opt_g.param_groups[0]["lr"])
        with self._autocast():
            fake = G(batch.units, mask, batch.speakers).float()
        losses: dict[str, float] = {}
        info = {"lr": lr}
        if gan:
            D.requires_grad_(True)
            with self._autocast():
                scores_real, _ = D(real)
                scores_fake, _ = D(fake.detach())
            loss_d = discriminator_loss(scores_real, scores_fake)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            info["grad_norm_d"] = _grad_norm(list(D.parameters()), cfg.grad_clip)
            self.opt_d.step()
            losses["disc"] = float(loss_d.detach())
        mel_real, mel_fake = self.mel(real), self.mel(fake)
        frame_mask = None if batch.full else self.mel.frame_mask(batch.valid_samples, mel_real.shape[-1])
        loss_mel = mel_l1(mel_fake, mel_real, frame_mask)
        total = cfg.mel_weight * loss_mel
        losses["mel"] = float(loss_mel.detach())
        if self.generator_has_dur:
            loss_dur = duration_loss(G.log_durations(batch.run_units, batch.run_mask), batch.run_durations,
                                     batch.run_targets)
            total = total + cfg.duration_weight * loss_dur
            losses["dur"] = float(loss_dur.detach())
        if gan:
            D.requires_grad_(False)  # gradients flow through D to the generator only
            with self._autocast():
                with torch.no_grad():
                    _, feats_real = D(real)
                scores_fake, feats_fake = D(fake)
            adv = generator_adversarial_loss(scores_fake)
            fm = feature_matching_loss(feats_real, feats_fake)
            total = total + adv + cfg.feature_matching_weight * fm
            losses["adv"], losses["fm"] = float(adv.detach()), float(fm.detach())
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        info["grad_norm_g"] = _grad_norm(list(G.parameters()), cfg.grad_clip)
        self.opt_g.step()
        losses["gen"] = float(total.detach())
        with warnings.catch_warnings():  # mel-only steps: the discriminator's scheduler moves without its optimizer
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.sched_g.step()
            self.sched_d.step()
        self.step += 1
        return losses, info

    # evaluation ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _synthesize(self, data: VocoderSegments, indices: list[int]) -> list[np.ndarray]:
        speakers = None if data.speaker_ids is None else [int(data.speaker_ids[i]) for i in indices]
        return self.vocoder.synthesize([data.frames(i) for i in indices], speakers=speakers,
                                       batch_size=self.cfg.batch_size, deduplicated=False)

    def _mel_l1(self, real: np.ndarray, fake: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        mr, mf = self.mel_cpu(torch.from_numpy(real)[None]), self.mel_cpu(torch.from_numpy(fake)[None])
        return float(mel_l1(mf, mr)), mr[0].numpy(), mf[0].numpy()

    @torch.no_grad()
    def _duration_mse(self, data: VocoderSegments, indices: list[int]) -> float:
        """MSE of log(1 + duration) over every run of whole utterances (none is cut)."""
        total, count = 0.0, 0
        for s in range(0, len(indices), self.cfg.batch_size):
            runs = [data.deduplicated(i) for i in indices[s: s + self.cfg.batch_size]]
            n = max(len(u) for u, _ in runs)
            units = torch.zeros(len(runs), n, dtype=torch.long)
            durations = torch.zeros(len(runs), n, dtype=torch.long)
            mask = torch.zeros(len(runs), n, dtype=torch.bool)
            for row, (u, d) in enumerate(runs):
                units[row, : len(u)], durations[row, : len(u)], mask[row, : len(u)] = (
                    torch.from_numpy(u), torch.from_numpy(d), True)
            pred = self.generator.log_durations(units.to(self.device), mask.to(self.device)).float().cpu()
            total += float((((pred - torch.log1p(durations.float())) ** 2) * mask).sum())
            count += int(mask.sum())
        return total / max(count, 1)

    def _evaluate(self, writer) -> None:
        cfg = self.cfg
        self.generator.eval()
        try:
            if self.valid is not None:
                cap = cfg.max_valid_utterances or len(self.valid)
                indices = self.valid.fixed_indices(cap)
                wavs = self._synthesize(self.valid, indices)
                value = float(np.mean([self._mel_l1(self.valid.waveform(i), w)[0] for i, w in zip(indices, wavs)]))
                row = {"step": float(self.step), "mel_l1": value}
                if self.generator_has_dur:
                    row["dur_mse"] = self._duration_mse(self.valid, indices)
                for k in self.valid_history:
                    self.valid_history[k].append(row[k])
                self.log(f"step {self.step} valid " + " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step")
                         + f" ({len(indices)} utterances)")
                if writer is not None:
                    for k, v in row.items():
                        if k != "step":
                            writer.add_scalar(f"valid/{k}", v, self.step)
            if writer is not None and cfg.num_valid_samples > 0:
                self._write_samples(writer)
        finally:
            self.generator.train()

    def _write_samples(self, writer) -> None:
        data = self.valid if self.valid is not None else self.train
        indices = data.fixed_indices(self.cfg.num_valid_samples)
        sr = self.cfg.sampling_rate
        for i, wav in zip(indices, self._synthesize(data, indices)):
            real = data.waveform(i)
            value, mel_real, mel_fake = self._mel_l1(real, wav)
            tag = f"samples/{data.utterances[i].id}"
            writer.add_audio(f"{tag}/generated", torch.from_numpy(wav)[None], self.step, sample_rate=sr)
            if not self.samples_logged:
                writer.add_audio(f"{tag}/real", torch.from_numpy(real)[None], self.step, sample_rate=sr)
            writer.add_figure(f"{tag}/mel", _mel_figure(mel_real, mel_fake, f"step {self.step}, mel L1 {value:.3f}"),
                              self.step)
        self.samples_logged = True

    # checkpoints --------------------------------------------------------------------------------------------------
    def _save(self, elapsed: float) -> Path:
        state = {"step": self.step, "elapsed_seconds": elapsed, "optimizer_g": self.opt_g.state_dict(),
                 "optimizer_d": self.opt_d.state_dict(), "scheduler_g": self.sched_g.state_dict(),
                 "scheduler_d": self.sched_d.state_dict(), "rng": rng_state(),
                 "history": columns_to_tensors(self.history), "valid_history": columns_to_tensors(self.valid_history),
                 "samples_logged": self.samples_logged, "config": _config_dict(self.cfg)}
        path = save_training_checkpoint(self.out, self.step, self.vocoder, self.discriminator, state,
                                        _config_yaml(self.cfg), keep=self.cfg.keep_checkpoints)
        self.last_saved = self.step
        self.hooks.on_checkpoint(self.step, path)
        return path

    # loop ---------------------------------------------------------------------------------------------------------
    def _record(self, losses: dict[str, float], info: dict[str, float], dt: float, writer) -> None:
        row = {"step": float(self.step), **losses}
        for k in self.history:
            self.history[k].append(row.get(k, math.nan))
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(mel=f"{losses['mel']:.3f}", s_per_step=f"{dt:.2f}")
        if writer is not None:
            for k, v in losses.items():
                writer.add_scalar(f"train/{k}", v, self.step)
            for k, v in info.items():
                writer.add_scalar(f"train/{k}", v, self.step)
            writer.add_scalar("train/lr_d", float(self.opt_d.param_groups[0]["lr"]), self.step)
            writer.add_scalar("train/seconds_per_step", dt, self.step)
        if self.step % self.cfg.log_every == 0 or self.step == self.cfg.max_steps:
            shown = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
            self.log(f"step {self.step}{f'/{self.cfg.max_steps}' if self.cfg.max_steps else ''} {shown} "
                     f"lr {info['lr']:.3e} {dt:.2f} s/step")

    def run(self) -> VocoderTrainResult:
        self._setup()
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "train_config.yaml").write_text(_config_yaml(cfg), encoding="utf-8")
        writer = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / TENSORBOARD_DIR))
        g_params = sum(p.numel() for p in self.generator.parameters())
        d_params = sum(p.numel() for p in self.discriminator.parameters())
        c = self.generator.config
        self.log(f"training a unit vocoder: generator {g_params / 1e6:.2f}M parameters (preset {cfg.preset}, "
                 f"{c.num_embeddings} units, upsample {c.upsample_rates}, "
                 f"{f'{c.num_speakers} speakers' if c.multispkr else 'single speaker'}, duration predictor "
                 f"{'on' if self.generator_has_dur else 'off'}), discriminator {cfg.discriminator} "
                 f"{d_params / 1e6:.1f}M, on {self.device} ({'bf16' if self.bf16 else 'fp32'}); train: "
                 f"{describe(self.train)}" + (f"; valid: {len(self.valid)} utterances" if self.valid else ""))
        batches = (self.train.batch(s, cfg.batch_size) for s in itertools.count(self.step))
        stream, stop_prefetch = prefetch(batches, cfg.prefetch, name="textless-vocoder-batches")
        from tqdm.auto import tqdm

        self.bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", desc="train-vocoder",
                        disable=not cfg.progress)
        start = time.monotonic()
        stopped_by = "max_steps"
        evaluated = None
        try:
            while cfg.max_steps is None or self.step < cfg.max_steps:
                if cfg.max_seconds is not None and self.elapsed_before + time.monotonic() - start >= cfg.max_seconds:
                    stopped_by = "max_seconds"
                    break
                batch = next(stream)
                self.hooks.on_batch(self.step + 1, batch)
                t0 = time.monotonic()
                losses, info = self._train_step(batch.to(self.device))
                self._record(losses, info, time.monotonic() - t0, writer)
                if self.step % cfg.eval_every == 0:
                    self._evaluate(writer)
                    evaluated = self.step
                if self.step % cfg.save_every == 0:
                    self._save(self.elapsed_before + time.monotonic() - start)
            if evaluated != self.step and (not self.valid_history["step"] or
                                           self.valid_history["step"][-1] != self.step):
                self._evaluate(writer)
            if self.last_saved != self.step:
                self._save(self.elapsed_before + time.monotonic() - start)
        finally:
            stop_prefetch()
            self.bar.close()
            self.bar = None
            if writer is not None:
                writer.close()
        final = self.vocoder.save_pretrained(self.out / FINAL_DIR, overwrite=True)
        self.log(f"final vocoder: {final}")
        return VocoderTrainResult(step=self.step, history=self.history, valid_history=self.valid_history,
                                  stopped_by=stopped_by, output_dir=self.out, final_model=final,
                                  checkpoint=latest_checkpoint(self.out),
                                  resumed_from=None if self.state is None else int(self.state["step"]),
                                  tensorboard_dir=self.out / TENSORBOARD_DIR if cfg.tensorboard else None)
