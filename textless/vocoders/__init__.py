"""Unit vocoders: discrete units -> waveform (unit HiFi-GAN / fairseq CodeHiFiGAN architecture)."""

from textless.vocoders.generator import UnitHiFiGAN, UnitHiFiGANConfig, fold_weight_norm, receptive_field_frames
from textless.vocoders.loaders import load_vocoder
from textless.vocoders.model import UnitVocoder
from textless.vocoders.synthesis import synthesize_long

__all__ = ["UnitHiFiGAN", "UnitHiFiGANConfig", "UnitVocoder", "fold_weight_norm", "load_vocoder",
           "receptive_field_frames", "synthesize_long"]
