"""speechbrain unit HiFi-GAN checkpoints (``speechbrain.inference.vocoders.UnitHIFIGAN`` directories), read without
running their hyperparams file.

Layout: ``hyperparams.yaml`` (HyperPyYAML) whose ``generator`` is ``!new:speechbrain.lobes.models.HifiGAN.
UnitHifiganGenerator`` with its keyword arguments (often ``!ref <key>`` to top-level keys), and ``generator.ckpt``,
the generator's state dict (``torch.save``). HyperPyYAML can execute code (``!new:``, ``!apply:``, ``!name:``), so the
file is parsed here with a YAML loader that turns every tag into inert data and resolves plain ``!ref <key>``
references itself; nothing is imported or called.

How the generator maps onto `UnitHiFiGAN` (see its module docstring): reflection padding, no LayerNorm in the duration
predictor, speaker vectors concatenated as they are (``in_channels - embedding_dim`` dims, L2-normalised with
``normalize_speaker_embeddings``), ``pooling_type`` (default "attention") over codebooks, and row 0 of the embedding
reserved for padding: speechbrain's ``UnitHIFIGAN`` adds 1 to every unit, so ``unit_offset=1``. With several codebooks
(k-means of several SSL layers, ``vocab_size = layers x K + 1``) the number of codebooks is the length of a top-level
``layer`` list when the file has one, else the ``num_codebooks`` argument (default 1).
Key names: ``unit_embedding`` -> ``dict``, ``var_predictor`` -> ``dur_predictor``, speechbrain's conv wrappers'
``.conv.`` level dropped, weight norm folded.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from textless.errors import ConfigError, FormatError, TextlessError
from textless.vocoders.generator import UnitHiFiGAN, UnitHiFiGANConfig, fold_weight_norm
from textless.vocoders.model import UnitVocoder

HPARAMS = "hyperparams.yaml"
CKPT = "generator.ckpt"
GENERATOR_CLASS = "speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator"


class _Tagged:
    """A HyperPyYAML tag (``!new:...``, ``!ref`` ...) kept as data: its name and its node's value."""

    def __init__(self, tag: str, value: Any):
        self.tag, self.value = tag, value


class _InertLoader(yaml.SafeLoader):
    """SafeLoader that represents every ``!tag`` as `_Tagged` instead of constructing anything."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return _Tagged(node.tag, value)


_InertLoader.add_multi_constructor("!", _tagged)

_REF = re.compile(r"^<([^<>]+)>$")


def read_hparams(path: Path) -> dict[str, Any]:
    """The top-level mapping of a HyperPyYAML file, tags kept as `_Tagged` (never executed)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_InertLoader)  # inert: tags become data
    except (yaml.YAMLError, OSError) as e:
        raise FormatError(path, f"cannot parse ({e})") from None
    if not isinstance(data, dict):
        raise FormatError(path, "expected a mapping at the top level")
    return data


def _resolve(value: Any, top: dict[str, Any], path: Path, depth: int = 0) -> Any:
    """Replace ``!ref <key>`` by the top-level value (recursively, in lists and dicts too)."""
    if depth > 20:
        raise FormatError(path, "!ref references nest too deep (a cycle?)")
    if isinstance(value, _Tagged) and value.tag == "!ref":
        match = _REF.match(str(value.value).strip())
        if not match or match.group(1) not in top:
            raise FormatError(path, f"unsupported or unknown reference !ref {value.value!r}")
        return _resolve(top[match.group(1)], top, path, depth + 1)
    if isinstance(value, list):
        return [_resolve(v, top, path, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, top, path, depth + 1) for k, v in value.items()}
    return value


def generator_kwargs(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the ``UnitHifiganGenerator`` keyword arguments, the whole top-level mapping) of a hyperparams file."""
    top = read_hparams(path)
    gen = top.get("generator")
    if not isinstance(gen, _Tagged) or gen.tag != f"!new:{GENERATOR_CLASS}":
        found = gen.tag if isinstance(gen, _Tagged) else type(gen).__name__
        raise FormatError(path, f"'generator' is not a !new:{GENERATOR_CLASS} (found {found})")
    kwargs = _resolve(gen.value or {}, top, path)
    if not isinstance(kwargs, dict):
        raise FormatError(path, "the generator's arguments must be a mapping")
    return kwargs, top


def config_from_speechbrain(kw: dict[str, Any], num_codebooks: int = 1, path: Path = Path(HPARAMS)
                            ) -> UnitHiFiGANConfig:
    """`UnitHiFiGANConfig` of speechbrain ``UnitHifiganGenerator(**kw)`` (its defaults where `kw` is silent)."""
    def need(cond: bool, what: str) -> None:
        if not cond:
            raise FormatError(path, f"unsupported speechbrain generator: {what}")

    need(int(kw.get("out_channels", 1)) == 1, "out_channels must be 1")
    need(str(kw.get("resblock_type", "1")) == "1", "only resblock_type '1' (fairseq's) is supported")
    need(int(kw.get("cond_channels", 0)) == 0, "cond_channels (global conditioning) is not supported")
    need(not kw.get("skip_token_embedding", False), "skip_token_embedding (continuous input) is not supported")
    emb = int(kw.get("embedding_dim", 128))
    in_channels = int(kw["in_channels"])
    multispkr = bool(kw.get("multi_speaker", False))
    need(multispkr or in_channels == emb, f"in_channels {in_channels} != embedding_dim {emb} without multi_speaker")
    try:
        return UnitHiFiGANConfig(
            num_embeddings=int(kw.get("vocab_size", 100)), embedding_dim=emb, model_in_dim=in_channels,
            upsample_rates=kw["upsample_factors"], upsample_kernel_sizes=kw["upsample_kernel_sizes"],
            upsample_initial_channel=int(kw["upsample_initial_channel"]), resblock="1",
            resblock_kernel_sizes=kw["resblock_kernel_sizes"], resblock_dilation_sizes=kw["resblock_dilation_sizes"],
            multispkr=multispkr, speaker_vector_dim=in_channels - emb if multispkr else None,
            normalize_speaker=bool(kw.get("normalize_speaker_embeddings", False)),
            duration_predictor=bool(kw.get("duration_predictor", False)),
            dur_predictor_params={"encoder_embed_dim": emb,
                                  "var_pred_hidden_dim": int(kw.get("var_pred_hidden_dim", 128)),
                                  "var_pred_kernel_size": int(kw.get("var_pred_kernel_size", 3)),
                                  "var_pred_dropout": float(kw.get("var_pred_dropout", 0.5))},
            padding_mode="reflect", dur_predictor_layer_norm=False, conv_post_bias=bool(kw.get("conv_post_bias", True)),
            num_codebooks=num_codebooks, unit_offset=1, pooling=str(kw.get("pooling_type", "attention")),
            attn_dim=int(kw.get("attn_dim", 128)), extra={"source_format": "speechbrain"})
    except (KeyError, ConfigError) as e:
        raise FormatError(path, f"cannot build the generator config: {e}") from None


def state_from_speechbrain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """speechbrain generator state dict -> `UnitHiFiGAN` names (weight norm folded)."""
    renamed = {}
    for key, value in state.items():
        key = key.replace("unit_embedding.", "dict.", 1).replace("var_predictor.", "dur_predictor.", 1)
        renamed[key.replace(".conv.", ".")] = value
    return fold_weight_norm(renamed)


def detect(path: Path) -> bool:
    return path.is_dir() and (path / HPARAMS).is_file() and (path / CKPT).is_file()


def load_speechbrain_vocoder(path: str | Path, *, device="cpu", num_codebooks: int | None = None,
                             deduplicated: bool | None = None, **_) -> UnitVocoder:
    """A speechbrain unit HiFi-GAN directory -> `UnitVocoder` (units in [0, K), speechbrain's +1 applied inside)."""
    path = Path(path)
    if not detect(path):
        raise TextlessError(f"'{path}' is not a speechbrain vocoder directory (needs {HPARAMS} and {CKPT})")
    kwargs, top = generator_kwargs(path / HPARAMS)
    if num_codebooks is None:
        layers = _resolve(top.get("layer"), top, path / HPARAMS)
        num_codebooks = len(layers) if isinstance(layers, list) else 1
    config = config_from_speechbrain(kwargs, num_codebooks, path / HPARAMS)
    try:
        raw = torch.load(path / CKPT, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError) as e:
        raise FormatError(path / CKPT, f"not a plain torch state dict ({str(e).splitlines()[0]})") from None
    generator = UnitHiFiGAN(config)
    try:
        missing, unexpected = generator.load_state_dict(state_from_speechbrain(raw), strict=False)
    except RuntimeError as e:
        raise FormatError(path / CKPT, f"weights do not fit {HPARAMS}: {str(e).splitlines()[-1].strip()}") from None
    if config.pooling == "attention" and config.num_codebooks == 1:  # pooling over one codebook is the identity
        missing = [k for k in missing if not k.startswith("attn_pooling.")]
    if missing or unexpected:
        raise FormatError(path / CKPT, f"weights do not fit {HPARAMS}: missing {missing[:5]}, "
                                       f"unexpected {unexpected[:5]}")
    dedup = config.duration_predictor if deduplicated is None else deduplicated
    return UnitVocoder(generator, deduplicated=dedup).to(device)
