"""`textless train-vocoder`: train a unit HiFi-GAN (fairseq's CodeHiFiGAN) on a unit dataset and its audio, resumably.

Recipe (HiFi-GAN V1 / speech-resynthesis, the defaults here): generator and discriminator each with AdamW (lr 2e-4,
betas (0.8, 0.99), weight decay 0.01), both learning rates multiplied by ``lr_decay`` = 0.999 every ``decay_every``
optimizer steps (HiFi-GAN decays once per epoch; counting steps keeps the schedule independent of the dataset size),
batches of ``batch_size`` random segments of ``segment_frames`` unit frames (`textless.vocoders.data`). One step:

1. ``fake = G(units)``; 2. discriminator: LSGAN loss on D(real) and D(fake.detach()), its own optimizer step;
3. generator: ``45 * mel L1 + 2 * feature matching + LSGAN adversarial (+ duration MSE) (+ dc_weight * DC offset)``
   (the DC term is not HiFi-GAN's and is off by default: `textless.vocoders.losses.dc_offset_loss`) with the discriminator's
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

The loop, budgets, TensorBoard scalars, checkpoints and exact resume are the training engine's
(`textless.training.engine`); this module is the GAN objective plugged into it: two optimizers stepped in phases
(discriminator ``d``, then generator ``g``; mel-only steps have the ``g`` phase only), the generator's output kept
between the phases. A checkpoint holds, besides the engine's state, ``model/`` (the folded `UnitVocoder`, loadable
by `load_vocoder`), ``generator.safetensors`` (the training form: weight norm as g / v parametrizations; folding
rounds, so resuming from ``model/`` would not reproduce the uninterrupted run) and ``discriminator.safetensors``.
Batches are a pure function of (seed, step), so on CPU the resumed run's losses and weights equal the uninterrupted
run's bit for bit. One process only (the GAN's discriminator runs several forward passes per backward pass, which
DDP does not allow without extra care). Checkpoints are large: the hifigan discriminator has 70.7 M
parameters, so discriminator + its AdamW state is ~850 MB per checkpoint (``keep_checkpoints`` bounds the count).

CPU speed (2 idle cores, ``small`` preset, batch 8 of 28-frame segments at hop 320, fp32): a mel-only step takes
0.15 s, a GAN step 6.5 s, nearly all of it the discriminator's forward and backward passes; hence ``mel_only_steps``
(textless/recipes/vocoder_small.yaml). On a GPU use the default recipe (textless/recipes/train-vocoder.yaml).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from textless.data.identity import check_fits
from textless.data.units import UnitDataset, read_units
from textless.errors import ConfigError, FormatError, TextlessError
from textless.training.checkpoint import MODEL_DIR
from textless.training.config import TrainingConfig
from textless.training.engine import TrainHooks, TrainResult, train_objective
from textless.training.objective import Context, Objective, OptimizerSpec, StepLoss
from textless.utils.registry import Registry
from textless.vocoders.data import DEFAULT_SEGMENT_FRAMES, SegmentBatch, VocoderSegments, audio_source, describe
from textless.vocoders.generator import UnitHiFiGAN, UnitHiFiGANConfig
from textless.vocoders.losses import (
    FEATURE_MATCHING_WEIGHT,
    MEL_WEIGHT,
    LogMel,
    dc_offset_loss,
    discriminator_loss,
    duration_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1,
)
from textless.vocoders.model import UnitVocoder
from textless.vocoders.presets import GeneratorOverrides, generator_config

logger = logging.getLogger(__name__)

MEL_N_FFT = 1024
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
# what a vocoder trainer state holds (the engine's keys with two optimizers, plus samples_logged)
TRAINER_STATE_KEYS = ("step", "elapsed_seconds", "optimizer_g", "optimizer_d", "scheduler_g", "scheduler_d", "rng",
                      "history", "valid_history", "samples_logged", "config")

# name -> factory of a module mapping waveforms [B, 1, T] to (scores: list of [B, N], feats: list of lists of tensors)
DISCRIMINATORS: Registry[Callable[[], torch.nn.Module]] = Registry("discriminator")


def _speechbrain(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from speechbrain.lobes.models import HifiGAN

        return getattr(HifiGAN, name)()

    return build


DISCRIMINATORS.register("hifigan", _speechbrain("HifiganDiscriminator"))  # MPD + MSD, as HiFi-GAN / CodeHiFiGAN
DISCRIMINATORS.register("mpd", _speechbrain("MultiPeriodDiscriminator"))
DISCRIMINATORS.register("msd", _speechbrain("MultiScaleDiscriminator"))


def register_discriminator(name: str, factory: Callable[[], torch.nn.Module]) -> None:
    """Make ``discriminator=name`` build `factory()` (speechbrain's output convention, see `DISCRIMINATORS`)."""
    DISCRIMINATORS.register(name, factory, replace=True)


@dataclass
class VocoderTrainConfig(TrainingConfig):
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
    dc_weight: float = 0.0                   # |segment mean - real mean| term (0: HiFi-GAN's losses only); the
    #                                          mel-only CPU recipe needs it (see textless.vocoders.losses.dc_offset_loss)
    mel_only_steps: int = 0                  # first steps without the discriminator (mel + duration losses)
    eval_every: int = 1000
    save_every: int = 5000
    log_every: int = 100
    device: str = "auto"                     # auto (cuda when available) | cpu | cuda | cuda:N
    num_valid_samples: int = 4               # utterances rendered to TensorBoard (audio + mel figure)
    max_valid_utterances: int | None = 100   # cap on utterances for the validation metric (null: all)
    cache_mb: float = 2048.0                 # LRU cache of decoded training audio
    prefetch: int = 2                        # batches prepared ahead by a background thread (0: inline)


VocoderTrainHooks = TrainHooks
VocoderTrainResult = TrainResult


# --------------------------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------------------------


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


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------------------------------


class VocoderObjective(Objective):
    """The unit HiFi-GAN: discriminator phase ``d`` then generator phase ``g`` (see the module docstring)."""

    name = "train-vocoder"
    precisions = ("auto", "fp32", "bf16")
    distributed = False
    # what is measured (validation data and samples) or how fast may change on resume; the training units and audio
    # are compared by content (`inputs`), not by path
    resumable_settings = ("device", "num_valid_samples", "max_valid_utterances", "cache_mb", "prefetch",
                          "valid_dataset", "valid_audio_dataset")
    input_settings = ("train_dataset", "audio_dataset")
    history_columns = ("mel", "dur", "dc", "gen", "disc", "adv", "fm")
    valid_columns = ("mel_l1", "dur_mse")
    config: VocoderTrainConfig

    def check_config(self) -> None:
        cfg = self.config
        if not cfg.train_dataset or cfg.train_dataset == "???":
            raise ConfigError("train_dataset is required (a unit dataset directory written by `textless tokenize`)")
        if cfg.discriminator not in DISCRIMINATORS:
            DISCRIMINATORS.get(cfg.discriminator)  # the registry's error names the known ones
        if cfg.max_steps is None and cfg.max_seconds is None:
            raise ConfigError("give max_steps and/or max_seconds (the training budget)")
        positive = {"segment_frames": cfg.segment_frames, "batch_size": cfg.batch_size,
                    "decay_every": cfg.decay_every, "sampling_rate": cfg.sampling_rate}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if cfg.max_valid_utterances is not None and cfg.max_valid_utterances < 1:
            raise ConfigError(f"max_valid_utterances must be >= 1 (or null), got {cfg.max_valid_utterances}")
        if cfg.lr <= 0 or not 0 < cfg.lr_decay <= 1:
            raise ConfigError(f"need lr > 0 and 0 < lr_decay <= 1, got lr={cfg.lr} lr_decay={cfg.lr_decay}")
        if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {list(cfg.betas)}")
        for name in ("weight_decay", "grad_clip", "mel_weight", "feature_matching_weight", "duration_weight",
                     "dc_weight",
                     "mel_only_steps", "num_valid_samples", "prefetch", "seed"):
            if getattr(cfg, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(cfg, name)}")
        if cfg.cache_mb <= 0:
            raise ConfigError(f"cache_mb must be > 0, got {cfg.cache_mb}")

    def device_request(self) -> str:
        return self.config.device

    # -- setup --------------------------------------------------------------------------------------------------
    def _data(self) -> UnitHiFiGANConfig:
        cfg = self.config
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
        self.train_audio_identity = audio.identity()
        self.train = VocoderSegments(units, audio, sampling_rate=cfg.sampling_rate, segment_frames=cfg.segment_frames,
                                     seed=cfg.seed, cache_mb=cfg.cache_mb)
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
            check_fits(units.meta.identity, vunits.meta.identity, consumer=f"train_dataset '{units.path}'",
                       source=f"valid_dataset '{vunits.path}'", short="the training data")
            spec = cfg.valid_audio_dataset or vunits.meta.extra.get("source") or cfg.audio_dataset
            vaudio = _load_audio(audio_source(vunits, spec), vunits, bool(cfg.valid_audio_dataset))
            self.valid = VocoderSegments(vunits, vaudio, sampling_rate=cfg.sampling_rate,
                                         segment_frames=cfg.segment_frames, seed=cfg.seed, cache_mb=cfg.cache_mb)
            if speakers is not None:
                self.valid.use_speakers(speakers)
        return gen

    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        cfg = self.config
        gen_config = self._data()
        generator = UnitHiFiGAN(gen_config).apply_weight_norm()
        self.discriminator = DISCRIMINATORS.get(cfg.discriminator)()
        if checkpoint is not None:
            weights = []
            for name in (GENERATOR_FILE, DISCRIMINATOR_FILE):
                try:
                    weights.append(load_file(str(checkpoint / name)))
                except Exception as e:  # noqa: BLE001 - OSError, SafetensorError (an Exception subclass)
                    raise FormatError(checkpoint / name, f"cannot be read ({str(e).splitlines()[0]})") from None
            try:
                generator.load_state_dict(weights[0])
                self.discriminator.load_state_dict(weights[1])
            except RuntimeError as e:
                raise ConfigError(f"checkpoint {checkpoint} does not fit this run's networks "
                                  f"({str(e).splitlines()[0]}); use a new output_dir") from None
        self.device = ctx.device
        self.ctx = ctx
        self.vocoder = UnitVocoder(generator, tokenizer=self.meta.tokenizer, frame_rate=self.meta.frame_rate,
                                   deduplicated=self.meta.deduplicated).to(ctx.device).train()
        self.generator = generator
        self.discriminator.to(ctx.device).train()
        self.mel = LogMel(cfg.sampling_rate).to(ctx.device)
        self.mel_cpu = LogMel(cfg.sampling_rate)
        self.samples_logged = False
        unused = ({"dur", "dur_mse"} if not self.has_dur else set()) | ({"dc"} if cfg.dc_weight == 0 else set())
        self.history_columns = tuple(c for c in type(self).history_columns if c not in unused)
        self.valid_columns = tuple(c for c in type(self).valid_columns if c not in unused)

    @property
    def has_dur(self) -> bool:
        return self.generator.dur_predictor is not None

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def configure_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, OptimizerSpec]:
        cfg = self.config
        adamw = {"lr": cfg.lr, "betas": tuple(cfg.betas), "weight_decay": cfg.weight_decay}
        decay, every = cfg.lr_decay, cfg.decay_every
        specs = {}
        for name, module in (("g", "generator"), ("d", "discriminator")):
            opt = torch.optim.AdamW(modules[module].parameters(), **adamw)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: decay ** (s // every))
            specs[name] = OptimizerSpec(opt, sched, module=module, clip=cfg.grad_clip)
        return specs

    def describe(self, ctx: Context) -> str:
        cfg, c = self.config, self.generator.config
        g_params = sum(p.numel() for p in self.generator.parameters())
        d_params = sum(p.numel() for p in self.discriminator.parameters())
        return (f"training a unit vocoder: generator {g_params / 1e6:.2f}M parameters (preset {cfg.preset}, "
                f"{c.num_embeddings} units, upsample {c.upsample_rates}, "
                f"{f'{c.num_speakers} speakers' if c.multispkr else 'single speaker'}, duration predictor "
                f"{'on' if self.has_dur else 'off'}), discriminator {cfg.discriminator} {d_params / 1e6:.1f}M, on "
                f"{ctx.device} ({'bf16' if ctx.precision == 'bf16' else 'fp32'}); train: {describe(self.train)}"
                + (f"; valid: {len(self.valid)} utterances" if self.valid else ""))

    # -- steps --------------------------------------------------------------------------------------------------
    def batches(self, start: int) -> Iterator[SegmentBatch]:
        step = start
        while True:
            yield self.train.batch(step, self.config.batch_size)
            step += 1

    def prefetch(self) -> int:
        return self.config.prefetch

    def phases(self, step: int) -> list[str]:
        # mel-only steps: the discriminator's scheduler still moves with the step (the engine steps every scheduler)
        return ["d", "g"] if step >= self.config.mel_only_steps else ["g"]

    def _fake(self, batch: SegmentBatch, scratch: dict[str, Any]) -> torch.Tensor:
        if "fake" not in scratch:
            batch = scratch.setdefault("batch", batch.to(self.device))
            mask = None if batch.full else batch.mask
            scratch["fake"] = self.trained["generator"](batch.units, mask, batch.speakers).float()
        return scratch["fake"]

    def loss(self, phase: str, batch: SegmentBatch, scratch: dict[str, Any]) -> StepLoss:
        cfg = self.config
        fake = self._fake(batch, scratch)
        batch = scratch["batch"]
        D, real = self.trained["discriminator"], batch.audio
        if phase == "d":
            self.discriminator.requires_grad_(True)
            scores_real, _ = D(real)
            scores_fake, _ = D(fake.detach())
            loss_d = discriminator_loss(scores_real, scores_fake)
            scratch["gan"] = True
            return StepLoss(loss_d, {"disc": float(loss_d.detach())})
        mel_real, mel_fake = self.mel(real), self.mel(fake)
        frame_mask = None if batch.full else self.mel.frame_mask(batch.valid_samples, mel_real.shape[-1])
        loss_mel = mel_l1(mel_fake, mel_real, frame_mask)
        total = cfg.mel_weight * loss_mel
        metrics = {"mel": float(loss_mel.detach())}
        if self.has_dur:
            loss_dur = duration_loss(self.generator.log_durations(batch.run_units, batch.run_mask),
                                     batch.run_durations, batch.run_targets)
            total = total + cfg.duration_weight * loss_dur
            metrics["dur"] = float(loss_dur.detach())
        if cfg.dc_weight > 0:
            loss_dc = dc_offset_loss(fake, real, None if batch.full else batch.valid_samples)
            total = total + cfg.dc_weight * loss_dc
            metrics["dc"] = float(loss_dc.detach())
        if scratch.get("gan"):
            self.discriminator.requires_grad_(False)  # gradients flow through D to the generator only
            with torch.no_grad():
                _, feats_real = D(real)
            scores_fake, feats_fake = D(fake)
            adv = generator_adversarial_loss(scores_fake)
            fm = feature_matching_loss(feats_real, feats_fake)
            total = total + adv + cfg.feature_matching_weight * fm
            metrics["adv"], metrics["fm"] = float(adv.detach()), float(fm.detach())
        metrics["gen"] = float(total.detach())
        return StepLoss(total, metrics)

    def throughput(self, seconds: float) -> tuple[str, float]:
        return "s/step", seconds

    # -- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _synthesize(self, data: VocoderSegments, indices: list[int]) -> list[np.ndarray]:
        speakers = None if data.speaker_ids is None else [int(data.speaker_ids[i]) for i in indices]
        return self.vocoder.synthesize([data.frames(i) for i in indices], speakers=speakers,
                                       batch_size=self.config.batch_size, deduplicated=False)

    def _mel_l1(self, real: np.ndarray, fake: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        mr, mf = self.mel_cpu(torch.from_numpy(real)[None]), self.mel_cpu(torch.from_numpy(fake)[None])
        return float(mel_l1(mf, mr)), mr[0].numpy(), mf[0].numpy()

    @torch.no_grad()
    def _duration_mse(self, data: VocoderSegments, indices: list[int]) -> float:
        """MSE of log(1 + duration) over every run of whole utterances (none is cut)."""
        total, count = 0.0, 0
        for s in range(0, len(indices), self.config.batch_size):
            runs = [data.deduplicated(i) for i in indices[s: s + self.config.batch_size]]
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

    def evaluate(self, ctx: Context, writer) -> dict[str, float] | None:
        """Mel L1 of whole validation utterances (and the duration MSE); listening samples to TensorBoard."""
        cfg = self.config
        self.generator.eval()
        try:
            values = None
            if self.valid is not None:
                indices = self.valid.fixed_indices(cfg.max_valid_utterances or len(self.valid))
                wavs = self._synthesize(self.valid, indices)
                values = {"mel_l1": float(np.mean([self._mel_l1(self.valid.waveform(i), w)[0]
                                                   for i, w in zip(indices, wavs)]))}
                if self.has_dur:
                    values["dur_mse"] = self._duration_mse(self.valid, indices)
                self._valid_count = len(indices)
            if writer is not None and cfg.num_valid_samples > 0:
                self._write_samples(writer)
            return values
        finally:
            self.generator.train()

    def valid_note(self) -> str:
        return f"({self._valid_count} utterances)"

    def _write_samples(self, writer) -> None:
        data = self.valid if self.valid is not None else self.train
        indices = data.fixed_indices(self.config.num_valid_samples)
        sr, step = self.config.sampling_rate, self.ctx.step
        for i, wav in zip(indices, self._synthesize(data, indices)):
            real = data.waveform(i)
            value, mel_real, mel_fake = self._mel_l1(real, wav)
            tag = f"samples/{data.utterances[i].id}"
            writer.add_audio(f"{tag}/generated", torch.from_numpy(wav)[None], step, sample_rate=sr)
            if not self.samples_logged:
                writer.add_audio(f"{tag}/real", torch.from_numpy(real)[None], step, sample_rate=sr)
            writer.add_figure(f"{tag}/mel", _mel_figure(mel_real, mel_fake, f"step {step}, mel L1 {value:.3f}"), step)
        self.samples_logged = True

    # -- persistence --------------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        return {"train_dataset": self.train.units.fingerprint(), "audio_dataset": self.train_audio_identity}

    def state_dict(self) -> dict[str, Any]:
        return {"samples_logged": self.samples_logged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples_logged = bool(state["samples_logged"])

    def upgrade_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Version 1 (textless <= 0.1's own loop): one process, its RNG state not in a per-rank list."""
        missing = [k for k in TRAINER_STATE_KEYS if k not in state]
        if missing:
            raise FormatError("trainer_state.pt", f"not a vocoder trainer state (missing {', '.join(missing)})")
        return {**state, "rng": [state["rng"]], "world_size": 1}

    def save_checkpoint_files(self, directory: Path, states) -> None:
        self.vocoder.save_pretrained(directory / MODEL_DIR)
        save_file(_state(self.generator), str(directory / GENERATOR_FILE))
        save_file(_state(self.discriminator), str(directory / DISCRIMINATOR_FILE))

    def save_final(self, directory: Path, states) -> Path:
        return self.vocoder.save_pretrained(directory, overwrite=True)


def train_vocoder(cfg: VocoderTrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a unit vocoder as configured; see the module docstring."""
    with warnings.catch_warnings():  # mel-only steps: the discriminator's scheduler moves without its optimizer
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        return train_objective(VocoderObjective(cfg), hooks)
