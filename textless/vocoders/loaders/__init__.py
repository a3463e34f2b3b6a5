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

from collections.abc import Callable
from pathlib import Path

from textless.errors import TextlessError
from textless.vocoders.model import CONFIG_FILE, FORMAT_NAME, UnitVocoder

VocoderLoader = Callable[..., UnitVocoder]
VOCODER_FORMATS: dict[str, tuple[Callable[[Path], bool], VocoderLoader]] = {}


def register_vocoder_format(name: str, detector: Callable[[Path], bool]) -> Callable[[VocoderLoader], VocoderLoader]:
    """Decorator: register ``loader(path, **kw) -> UnitVocoder`` for format `name`, recognised by `detector`."""

    def decorator(loader: VocoderLoader) -> VocoderLoader:
        VOCODER_FORMATS[name] = (detector, loader)
        return loader

    return decorator


def _is_textless(path: Path) -> bool:
    import json

    config = path / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT_NAME
    except (ValueError, OSError):
        return False


@register_vocoder_format("textless", _is_textless)
def _load_textless(path: Path, *, device="cpu", **_) -> UnitVocoder:
    return UnitVocoder.from_pretrained(path, device=device)


def _register_families() -> None:
    # imported for their @register_vocoder_format side effect, after "textless" (detection order)
    from textless.vocoders.loaders import fairseq, speechbrain  # noqa: F401


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
    """A `UnitVocoder` (eval mode, weight norm folded) from any registered checkpoint format."""
    path = Path(path)
    name = format or detect_vocoder_format(path)
    if name not in VOCODER_FORMATS:
        raise TextlessError(f"unknown vocoder format {name!r} (known: {', '.join(VOCODER_FORMATS)})")
    return VOCODER_FORMATS[name][1](path, **kw).eval()


_register_families()

__all__ = ["VOCODER_FORMATS", "detect_vocoder_format", "load_vocoder", "register_vocoder_format"]
