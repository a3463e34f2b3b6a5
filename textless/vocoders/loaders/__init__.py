"""Vocoder checkpoint loaders: one module per checkpoint family, found through a registry.

    load_vocoder(path)            # detects the format
    load_vocoder(path, "fairseq") # or names it

Formats (``VOCODER_FORMATS``, tried in order by `detect_vocoder_format`):

* ``textless``: a `UnitVocoder.save_pretrained` directory (``config.json`` with ``"format": "textless.vocoder"``);
* ``fairseq``: a fairseq / textlesslib CodeHiFiGAN checkpoint: a torch file whose dict holds ``"generator"`` (a
  state dict, weight norm as ``weight_g`` / ``weight_v``) and the ``config.json`` beside it, or textlesslib's
  ``<name>-config`` (+ ``<name>-speakers``) (or the directory holding them); see `loaders.fairseq`;
* ``speechbrain``: a speechbrain unit HiFi-GAN directory (``hyperparams.yaml`` + ``generator.ckpt``); see
  `loaders.speechbrain`.

A loader is ``loader(path: Path, **kw) -> UnitVocoder``; a detector ``detector(path: Path) -> bool``. New families
plug in with `register_vocoder_format`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from textless.errors import TextlessError
from textless.utils.assets import starter_part
from textless.utils.registry import Registry
from textless.vocoders.loaders import fairseq, speechbrain
from textless.vocoders.model import CONFIG_FILE, FORMAT_NAME, UnitVocoder

VocoderLoader = Callable[..., UnitVocoder]
Detector = Callable[[Path], bool]
VOCODER_FORMATS: Registry[tuple[Detector, VocoderLoader]] = Registry("vocoder format")


def register_vocoder_format(name: str, detector: Detector) -> Callable[[VocoderLoader], VocoderLoader]:
    """Decorator: register ``loader(path, **kw) -> UnitVocoder`` for format `name`, recognised by `detector`."""

    def decorator(loader: VocoderLoader) -> VocoderLoader:
        VOCODER_FORMATS.register(name, (detector, loader))
        return loader

    return decorator


def _is_textless(path: Path) -> bool:
    config = path / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT_NAME
    except (ValueError, OSError):
        return False


def _load_textless(path: Path, *, device="cpu", **_) -> UnitVocoder:
    return UnitVocoder.from_pretrained(path, device=device)


# detection order: textless, fairseq, speechbrain
VOCODER_FORMATS.register("textless", (_is_textless, _load_textless))
VOCODER_FORMATS.register("fairseq", (fairseq.detect, fairseq.load_fairseq_vocoder))
VOCODER_FORMATS.register("speechbrain", (speechbrain.detect, speechbrain.load_speechbrain_vocoder))


def detect_vocoder_format(path: str | Path) -> str:
    """The registered format of `path`; `TextlessError` listing the formats when none matches."""
    path = Path(path)
    if not path.exists():
        raise TextlessError(f"vocoder '{path}' does not exist")
    for name, (detector, _) in VOCODER_FORMATS.items():
        if detector(path):
            return name
    raise TextlessError(f"'{path}' is not a vocoder checkpoint of a known format ({', '.join(VOCODER_FORMATS)}): "
                        f"expected a textless vocoder directory, a fairseq CodeHiFiGAN checkpoint with its "
                        f"config.json, or a speechbrain directory with hyperparams.yaml + generator.ckpt")


def load_vocoder(path: str | Path, format: str | None = None, **kw) -> UnitVocoder:
    """A `UnitVocoder` (eval mode, weight norm folded) from any registered checkpoint format (``"starter"``: the
    starter pipeline's)."""
    path = starter_part(path, "vocoder")
    name = format or detect_vocoder_format(path)
    return VOCODER_FORMATS.get(name)[1](path, **kw).eval()


__all__ = ["VOCODER_FORMATS", "detect_vocoder_format", "load_vocoder", "register_vocoder_format"]
