"""fairseq / textlesslib CodeHiFiGAN checkpoints, read without fairseq.

Layouts: a torch file (``g_00500000``, ``hifigan_vocoder``, ``*.pt``...) holding ``{"generator": state_dict, ...}``
with the generator's hyper-parameters beside it, either as ``config.json`` (fairseq ``examples/speech_to_speech`` /
``textless_nlp`` vocoders) or as textlesslib's downloads name them: ``<name>`` (e.g.
``hubert-base-ls960-kmeans-100-hifigan``), ``<name>-config`` (JSON) and, for multi-speaker models, ``<name>-speakers``
(one speaker name per line, in id order; they become the vocoder's speaker names). The state dict uses the `UnitHiFiGAN` names
(``dict``, ``spkr``, ``conv_pre``, ``ups.i``, ``resblocks.j.convs{1,2}.n``, ``conv_post``, ``dur_predictor.*``) with
weight norm stored as ``weight_g`` / ``weight_v`` pairs, folded here (fairseq removes it at load time too).
The file is read with ``torch.load(weights_only=True)``: plain tensors in plain containers, no code runs. A checkpoint
that pickles other objects (e.g. a training state) is refused unless ``trust_pickle=True``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch

from textless.errors import FormatError, TextlessError
from textless.vocoders.generator import UnitHiFiGAN, UnitHiFiGANConfig, fold_weight_norm
from textless.vocoders.model import UnitVocoder

CONFIG = "config.json"
TEXTLESSLIB_CONFIG = "-config"      # textlesslib: <checkpoint name>-config
TEXTLESSLIB_SPEAKERS = "-speakers"  # textlesslib: <checkpoint name>-speakers
# variants whose extra modules are not implemented (their weights would not load): config key -> what it is
UNSUPPORTED = {"multistyle": "textlesslib style-conditioned (Expresso) vocoders are",
               "f0_quantizer_path": "speech-resynthesis vocoders with a VQ-VAE F0 quantizer are",
               "lambda_commit_code": "speech-resynthesis vocoders with VQ-VAE unit codes are"}


def _config_file(ckpt: Path) -> Path | None:
    """The config of checkpoint file `ckpt`: textlesslib's ``<name>-config`` beside it, else ``config.json``."""
    for config in (ckpt.with_name(ckpt.name + TEXTLESSLIB_CONFIG), ckpt.parent / CONFIG):
        if config.is_file() and config != ckpt:
            return config
    return None


def _checkpoint_file(path: Path) -> Path | None:
    """The checkpoint file of `path`: the file itself, or the one file of a directory that has a config (``config.json``
    and one non-JSON file, or ``<name>`` + ``<name>-config``)."""
    if path.is_file():
        return path if _config_file(path) is not None else None
    if not path.is_dir():
        return None
    if (path / CONFIG).is_file():
        files = [f for f in path.iterdir() if f.is_file() and f.suffix not in (".json", ".txt", ".md", ".yaml")
                 and not f.name.endswith((TEXTLESSLIB_CONFIG, TEXTLESSLIB_SPEAKERS))]
    else:
        files = [f for f in path.iterdir() if f.is_file() and f.with_name(f.name + TEXTLESSLIB_CONFIG).is_file()]
    return files[0] if len(files) == 1 else None


def detect(path: Path) -> bool:
    ckpt = _checkpoint_file(path)
    if ckpt is None:
        return False
    try:
        config = json.loads(_config_file(ckpt).read_text())
    except (ValueError, OSError):
        return False
    return isinstance(config, dict) and "upsample_rates" in config and "format" not in config


def _speaker_names(ckpt: Path, config: UnitHiFiGANConfig) -> list[str] | None:
    """textlesslib's ``<name>-speakers`` (one name per line, id order) as the config's speaker names; ids past the
    file's last line (fairseq tables have 200 rows) are named ``#<id>``."""
    path = ckpt.with_name(ckpt.name + TEXTLESSLIB_SPEAKERS)
    if not path.is_file() or not config.multispkr or config.speaker_input != "id":
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) > config.num_speakers or len(set(names)) != len(names):
        raise FormatError(path, f"{len(names)} speaker names ({len(set(names))} distinct) for a table of "
                                f"{config.num_speakers} speakers")
    return names + [f"#{i}" for i in range(len(names), config.num_speakers)]


def read_generator_state(path: Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The generator state dict of a CodeHiFiGAN checkpoint file (``["generator"]``, or the file's dict itself)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        raise FormatError(path, f"holds more than tensors ({str(e).splitlines()[0]}); if you trust the file, load it "
                                f"with trust_pickle=True") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise FormatError(path, f"not a readable torch checkpoint ({e})") from None
    state = ckpt.get("generator", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("dict.") for k in state):
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise FormatError(path, f"no CodeHiFiGAN generator state (expected a 'generator' dict with 'dict.weight'; "
                                f"found {keys})")
    return state


def load_fairseq_vocoder(path: str | Path, *, device="cpu", trust_pickle: bool = False,
                         deduplicated: bool | None = None, **_) -> UnitVocoder:
    """A CodeHiFiGAN checkpoint (file or directory) -> `UnitVocoder`. ``deduplicated`` (what `synthesize` receives by
    default) defaults to whether the model has a duration predictor."""
    path = Path(path)
    ckpt = _checkpoint_file(path)
    if ckpt is None:
        raise TextlessError(f"'{path}': expected a CodeHiFiGAN checkpoint file with {CONFIG} (or textlesslib's "
                            f"<name>{TEXTLESSLIB_CONFIG}) beside it, or their directory")
    config_path = _config_file(ckpt)
    try:
        raw = json.loads(config_path.read_text())
    except ValueError as e:
        raise FormatError(config_path, f"not JSON ({e})") from None
    unsupported = [key for key in UNSUPPORTED if isinstance(raw, dict) and raw.get(key)]
    if unsupported:
        raise FormatError(config_path, f"{unsupported[0]}: {UNSUPPORTED[unsupported[0]]} not supported")
    try:
        config = UnitHiFiGANConfig.from_fairseq_config(raw)
    except ValueError as e:  # ConfigError
        raise FormatError(config_path, str(e)) from None
    names = _speaker_names(ckpt, config)
    if names is not None:
        config.speakers = names
    state = fold_weight_norm(read_generator_state(ckpt, trust_pickle))
    generator = UnitHiFiGAN(config)
    try:
        missing, unexpected = generator.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise FormatError(ckpt, f"weights do not fit {config_path.name}: {str(e).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise FormatError(ckpt, f"weights do not fit {config_path.name}: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")
    dedup = config.duration_predictor if deduplicated is None else deduplicated
    return UnitVocoder(generator, deduplicated=dedup).to(device)
