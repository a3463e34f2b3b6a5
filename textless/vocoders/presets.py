"""Generator presets for `textless train-vocoder`, and the upsampling that matches a unit frame rate.

A preset fixes the generator's width and residual blocks; the upsampling stack is then chosen from the unit dataset's
frame rate, because the generator must emit exactly ``hop = sampling_rate / frame_rate`` samples per unit frame:

==========  =================  ===================  ==================================================
hop         upsample_rates     upsample_kernels     typical units (16 kHz)
==========  =================  ===================  ==================================================
160         [5, 4, 4, 2]       [11, 8, 8, 4]        100 Hz (MFCC)
320         [5, 4, 4, 2, 2]    [11, 8, 8, 4, 4]     50 Hz (HuBERT, GSLM): fairseq CodeHiFiGAN
640         [5, 4, 4, 4, 2]    [11, 8, 8, 8, 4]     25 Hz (mHuBERT-25Hz, TWIST / Slam)
==========  =================  ===================  ==================================================

Presets:

* ``hifigan_v1``: fairseq's CodeHiFiGAN (HiFi-GAN V1 + unit embedding): 512 initial channels, resblock kernels
  [3, 7, 11], dilations [[1, 3, 5]] x 3, embedding 128, duration predictor 128 wide (13.3 M generator parameters at
  hop 320).
* ``small``: the CPU starter: the same blocks with 128 initial channels (about 1 M parameters; about 4x cheaper per
  forward/backward than ``hifigan_v1``). The last stage has only 128 / 2^5 = 4 channels at hop 320, which costs
  quality; it is meant for quick experiments, not for release.

`GeneratorOverrides` changes any of these per run (``generator.upsample_initial_channel=256`` on the command line);
explicit ``upsample_rates`` must multiply to the hop (and need matching ``upsample_kernel_sizes``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from textless.errors import ConfigError
from textless.vocoders.generator import UnitHiFiGANConfig

_RESBLOCKS = {"resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]]}
PRESETS: dict[str, dict] = {
    "hifigan_v1": {"upsample_initial_channel": 512, "embedding_dim": 128, **_RESBLOCKS},
    "small": {"upsample_initial_channel": 128, "embedding_dim": 128, **_RESBLOCKS},
}
# hop (samples per unit frame) -> (upsample_rates, upsample_kernel_sizes); kernel = 2 x rate (+1 for odd rates),
# HiFi-GAN's rule, which keeps kernel - rate even as the generator needs
UPSAMPLING: dict[int, tuple[list[int], list[int]]] = {
    160: ([5, 4, 4, 2], [11, 8, 8, 4]),
    320: ([5, 4, 4, 2, 2], [11, 8, 8, 4, 4]),
    640: ([5, 4, 4, 4, 2], [11, 8, 8, 8, 4]),
}


@dataclass
class GeneratorOverrides:
    """Generator fields that override the preset (None: the preset's / the hop table's value)."""

    upsample_initial_channel: int | None = None
    embedding_dim: int | None = None
    upsample_rates: list[int] | None = None
    upsample_kernel_sizes: list[int] | None = None
    resblock_kernel_sizes: list[int] | None = None
    resblock_dilation_sizes: list[list[int]] | None = None
    dur_predictor_hidden_dim: int | None = None    # default: embedding_dim (fairseq: 128)
    dur_predictor_dropout: float | None = None     # default 0.5 (fairseq)
    padding_mode: str | None = None                # "zeros" (fairseq, default) | "reflect" (speechbrain)

    def given(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def hop_for(sampling_rate: int, frame_rate: float, where: str = "the unit dataset") -> int:
    """Samples per unit frame; `ConfigError` naming both rates when it is not a whole number."""
    hop = sampling_rate / frame_rate
    if hop < 1 or not math.isclose(hop, round(hop), rel_tol=0, abs_tol=1e-6):
        raise ConfigError(f"frame rate {frame_rate:g} Hz of {where} does not divide the vocoder's sampling rate "
                          f"{sampling_rate} Hz into a whole number of samples per frame ({hop:.3f})")
    return round(hop)


def generator_config(preset: str, overrides: GeneratorOverrides | None, *, sampling_rate: int, frame_rate: float,
                     num_units: int, duration_predictor: bool, speakers: list[str] | None,
                     where: str = "the unit dataset") -> UnitHiFiGANConfig:
    """The generator config for `num_units` units at `frame_rate` Hz -> `sampling_rate` Hz audio.

    `speakers`: sorted speaker names (multi-speaker, one embedding row each) or None (single speaker).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown vocoder preset {preset!r}: use one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **(overrides.given() if overrides else {})}
    hop = hop_for(sampling_rate, frame_rate, where)
    if "upsample_rates" in values:
        if "upsample_kernel_sizes" not in values:
            raise ConfigError("generator.upsample_rates needs generator.upsample_kernel_sizes too")
        if math.prod(values["upsample_rates"]) != hop:
            raise ConfigError(f"generator.upsample_rates {values['upsample_rates']} multiply to "
                              f"{math.prod(values['upsample_rates'])}, but frame rate {frame_rate:g} Hz of {where} at "
                              f"sampling rate {sampling_rate} Hz needs {hop} samples per frame")
    elif hop in UPSAMPLING:
        values["upsample_rates"], values["upsample_kernel_sizes"] = (list(x) for x in UPSAMPLING[hop])
    else:
        raise ConfigError(f"frame rate {frame_rate:g} Hz of {where} at sampling rate {sampling_rate} Hz needs hop "
                          f"{hop}, which has no preset upsampling (supported hops: "
                          f"{', '.join(map(str, UPSAMPLING))}); give generator.upsample_rates and "
                          f"generator.upsample_kernel_sizes")
    emb = values["embedding_dim"]
    dur = {"encoder_embed_dim": emb, "var_pred_hidden_dim": values.pop("dur_predictor_hidden_dim", None) or emb,
           "var_pred_kernel_size": 3, "var_pred_dropout": values.pop("dur_predictor_dropout", 0.5)}
    try:
        return UnitHiFiGANConfig(num_embeddings=num_units, sampling_rate=sampling_rate,
                                 duration_predictor=duration_predictor, dur_predictor_params=dur,
                                 multispkr=speakers is not None, num_speakers=len(speakers) if speakers else 0,
                                 speakers=speakers, **values)
    except ConfigError as e:
        raise ConfigError(f"vocoder preset {preset!r} with the given generator overrides: {e}") from None
