"""HiFi-GAN training losses (Kong et al. 2020, as fairseq / speech-resynthesis train CodeHiFiGAN).

Generator loss = ``adv + 2 * feature_matching + 45 * mel_l1 (+ duration_weight * duration_mse)``; discriminator loss =
LSGAN. Each is a few lines, written here rather than taken from speechbrain because speechbrain's versions differ from
the reference recipe in ways that matter: its ``MelganFeatureLoss`` *averages* over layers (HiFi-GAN sums, and the
weight 2 assumes the sum), its ``L1SpecLoss`` builds the mel with its own defaults per call, and its duration loss keeps
every run of segments with <= 2 runs (see `duration_loss`). The discriminators themselves are speechbrain's.

Discriminator outputs follow speechbrain's convention: ``scores`` is a list (one tensor [B, N_d] per sub-discriminator)
and ``feats`` a list of lists (per sub-discriminator, the activation of every layer).

Mel spectrogram (HiFi-GAN's ``mel_spectrogram``): magnitude STFT (n_fft 1024, hop 256, Hann window 1024) of the
waveform reflect-padded by (n_fft - hop) / 2 on both sides with ``center=False``, Slaney-normalised mel filters on the
Slaney scale (librosa's defaults, which HiFi-GAN uses) with 80 bands from fmin 0 to fmax = Nyquist ("fmax_for_loss":
None), then ``log(clamp(x, 1e-5))``. Mel frame m covers samples [256 m - 384, 256 m + 640) and is centred on
256 m + 128; a waveform of T samples gives T // 256 frames. Always computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MEL_WEIGHT = 45.0
FEATURE_MATCHING_WEIGHT = 2.0


class LogMel(nn.Module):
    """Waveform [B, T] or [B, 1, T] (float, any dtype) -> float32 log-mel [B, n_mels, T // hop]."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, win_length: int = 1024,
                 n_mels: int = 80, f_min: float = 0.0, f_max: float | None = None):
        super().__init__()
        import torchaudio

        self.hop_length, self.pad = hop_length, (n_fft - hop_length) // 2
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length, f_min=f_min,
            f_max=f_max, n_mels=n_mels, power=1.0, center=False, norm="slaney", mel_scale="slaney")

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.float().reshape(-1, wav.shape[-1])
        mode = "reflect" if x.shape[-1] > self.pad else "constant"  # reflection needs more samples than the pad
        x = F.pad(x.unsqueeze(1), (self.pad, self.pad), mode=mode).squeeze(1)
        return torch.log(torch.clamp(self.mel(x), min=1e-5))

    def frame_mask(self, valid_samples: torch.Tensor, num_frames: int) -> torch.Tensor:
        """bool [B, num_frames]: mel frames whose centre lies in each row's first `valid_samples` [B] samples."""
        centres = torch.arange(num_frames, device=valid_samples.device) * self.hop_length + self.hop_length // 2
        return centres[None, :] < valid_samples[:, None]


def mel_l1(mel_fake: torch.Tensor, mel_real: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |log-mel difference| over [B, n_mels, M] (only over frames where `frame_mask` [B, M] is True)."""
    diff = (mel_fake - mel_real).abs()
    if frame_mask is None:
        return diff.mean()
    weights = frame_mask[:, None, :].to(diff.dtype).expand_as(diff)
    return (diff * weights).sum() / weights.sum().clamp(min=1.0)


def feature_matching_loss(feats_real: list[list[torch.Tensor]], feats_fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """HiFi-GAN's: sum over sub-discriminators and layers of mean |real - fake| (real features are targets)."""
    return sum((r.detach().float() - g.float()).abs().mean() for fr, fg in zip(feats_real, feats_fake)
               for r, g in zip(fr, fg))


def generator_adversarial_loss(scores_fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of mean (1 - D(G(x)))^2."""
    return sum(((1 - s.float()) ** 2).mean() for s in scores_fake)


def discriminator_loss(scores_real: list[torch.Tensor], scores_fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of mean (1 - D(y))^2 + mean D(G(x))^2."""
    return sum(((1 - r.float()) ** 2).mean() + (g.float() ** 2).mean() for r, g in zip(scores_real, scores_fake))


def dc_offset_loss(fake: torch.Tensor, real: torch.Tensor, valid_samples: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |mean(fake) - mean(real)| over the batch: each segment's DC offset (mean sample value) against the real
    one's, over its first `valid_samples` [B] samples (all when None). [B, 1, T] or [B, T] waveforms.

    Not in HiFi-GAN: there the discriminators see a DC offset, but the log-mel L1 hardly does (a constant adds to the
    lowest bin only, and the log floor hides it in quiet frames). A generator trained on mel steps alone (the CPU
    recipe) keeps a constant offset of about -54 dBFS, which no frame of its "silence" gets below (issue: silence
    comes back as noise); this term removes it."""
    fake, real = fake.float().reshape(fake.shape[0], -1), real.float().reshape(real.shape[0], -1)
    if valid_samples is None:
        return (fake.mean(-1) - real.mean(-1)).abs().mean()
    mask = (torch.arange(fake.shape[-1], device=fake.device)[None, :] < valid_samples[:, None]).float()
    count = mask.sum(-1).clamp(min=1.0)
    return (((fake - real) * mask).sum(-1) / count).abs().mean()


def duration_loss(log_durations: torch.Tensor, durations: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """MSE between predicted log(1 + d) [B, R] and the runs' true log(1 + durations) [B, R] (frames), over the runs
    where `target_mask` [B, R] is True (a segment's first and last runs are excluded by the caller: the segment
    boundary cuts them). 0 (with a gradient path) when no run is a target."""
    target = torch.log1p(durations.float())
    err = (log_durations.float() - target) ** 2 * target_mask.float()
    return err.sum() / target_mask.sum().clamp(min=1)
