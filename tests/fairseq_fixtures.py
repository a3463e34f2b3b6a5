"""Tiny fairseq HuBERT / wav2vec 2.0 checkpoints in the exact layout fairseq writes, built without fairseq.

fairseq (`checkpoint_utils` / `Trainer.state_dict`) saves `{"args", "cfg", "model", "criterion", "optimizer_history",
"task_state", "extra_state"}` with `torch.save`. Depending on its version `cfg` is

* an OmegaConf `DictConfig` built from fairseq's dataclasses (`FairseqConfig` with `model`, `task`, `common`, ...): its
  node metadata references fairseq classes (`object_type=HubertConfig`) and `ChoiceEnum` members ("dictconfig");
* `OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)`, plain dicts (fairseq after May 2021, "dict");
* absent, with `args` an `argparse.Namespace` of flat fields instead (fairseq before hydra, "namespace"; we also save
  these with torch's legacy non-zip serialization, like the 2020 wav2vec 2.0 releases).

To pickle fairseq classes by reference, `fake_fairseq_modules()` puts stand-in modules (`fairseq.dataclass.constants`,
`fairseq.dataclass.configs`, `fairseq.models.hubert.hubert`, `fairseq.models.wav2vec.wav2vec2`, ...) into `sys.modules`
while saving and removes them afterwards, so the loader meets unknown classes as on a machine without fairseq. The
dataclasses below carry fairseq's real field names and defaults (fairseq/models/hubert/hubert.py,
fairseq/models/wav2vec/wav2vec2.py, fairseq/tasks/hubert_pretraining.py, fairseq/dataclass/configs.py). One deviation:
fairseq's `ChoiceEnum` names every enum class "Choices"; pickle needs one module attribute per class, so ours are named
after their constant (EXTRACTOR_MODE_CHOICES...). The loader does not look at the name.

State dicts use fairseq's key names and shapes (module registration order) with small dimensions: convolution dims 32
with the real kernel/stride layout, embed 64, 4 heads, FFN 128, 2-3 layers, conv_pos 16 in 4 groups, and the
pre-training heads (`mask_emb`, `label_embs_concat`, `final_proj`, wav2vec 2.0's `quantizer` / `project_q`).
"""

import argparse
import contextlib
import dataclasses
import enum
import sys
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple  # noqa: UP035 - fairseq's annotations, which OmegaConf reads

import numpy as np
import torch
from omegaconf import II, MISSING, OmegaConf

CONSTANTS = "fairseq.dataclass.constants"
_REGISTRY: dict[str, dict[str, Any]] = {}  # fake module name -> {attribute: object}


def _register(module: str, name: str, obj: Any) -> Any:
    obj.__module__ = module
    obj.__qualname__ = name
    _REGISTRY.setdefault(module, {})[name] = obj
    return obj


def _in(module: str):
    def deco(cls):
        return _register(module, cls.__name__, cls)

    return deco


class StrEnum(enum.Enum):
    """fairseq.dataclass.constants.StrEnum: an Enum whose str() is its value."""

    def __str__(self) -> str:
        return self.value


_register(CONSTANTS, "StrEnum", StrEnum)


def ChoiceEnum(choices: list[str], name: str) -> type[enum.Enum]:
    return _register(CONSTANTS, name, StrEnum(name, {c: c for c in choices}, module=CONSTANTS, qualname=name))


EXTRACTOR_MODE_CHOICES = ChoiceEnum(["default", "layer_norm"], "EXTRACTOR_MODE_CHOICES")
MASKING_DISTRIBUTION_CHOICES = ChoiceEnum(["static", "uniform", "normal", "poisson"], "MASKING_DISTRIBUTION_CHOICES")
LAYER_TYPE_CHOICES = ChoiceEnum(["transformer", "conformer", "trf_adp"], "LAYER_TYPE_CHOICES")
ACTIVATION_CHOICES = ChoiceEnum(["relu", "gelu", "gelu_fast", "gelu_accurate", "tanh", "linear"], "ACTIVATION_CHOICES")
LOG_FORMAT_CHOICES = ChoiceEnum(["json", "none", "simple", "tqdm"], "LOG_FORMAT_CHOICES")
DDP_BACKEND_CHOICES = ChoiceEnum(["c10d", "fully_sharded", "legacy_ddp", "no_c10d", "pytorch_ddp", "slowmo"],
                                 "DDP_BACKEND_CHOICES")

# --------------------------------------------------------------------------------------------------------------------
# fairseq dataclasses (field names and defaults as in fairseq; help metadata left out)
# --------------------------------------------------------------------------------------------------------------------


@_in("fairseq.dataclass.configs")
@dataclass
class FairseqDataclass:
    _name: Optional[str] = None  # noqa: UP045


@_in("fairseq.dataclass.configs")
@dataclass
class CommonConfig(FairseqDataclass):
    no_progress_bar: bool = False
    log_interval: int = 100
    log_format: Optional[LOG_FORMAT_CHOICES] = None  # noqa: UP045
    seed: int = 1
    cpu: bool = False
    tpu: bool = False
    fp16: bool = False
    memory_efficient_fp16: bool = False
    fp16_init_scale: int = 128


@_in("fairseq.dataclass.configs")
@dataclass
class DistributedTrainingConfig(FairseqDataclass):
    distributed_world_size: int = 1
    distributed_backend: Optional[str] = None  # noqa: UP045
    ddp_backend: DDP_BACKEND_CHOICES = "pytorch_ddp"


@_in("fairseq.dataclass.configs")
@dataclass
class DatasetConfig(FairseqDataclass):
    num_workers: int = 1
    max_tokens: Optional[int] = None  # noqa: UP045
    batch_size: Optional[int] = None  # noqa: UP045
    valid_subset: str = "valid"


@_in("fairseq.dataclass.configs")
@dataclass
class OptimizationConfig(FairseqDataclass):
    max_epoch: int = 0
    max_update: int = 0
    clip_norm: float = 0.0
    update_freq: List[int] = field(default_factory=lambda: [1])  # noqa: UP006
    lr: List[float] = field(default_factory=lambda: [0.25])  # noqa: UP006


@_in("fairseq.dataclass.configs")
@dataclass
class CheckpointConfig(FairseqDataclass):
    save_dir: str = "checkpoints"
    restore_file: str = "checkpoint_last.pt"
    save_interval_updates: int = 0
    keep_last_epochs: int = -1


@_in("fairseq.dataclass.configs")
@dataclass
class FairseqConfig(FairseqDataclass):
    common: CommonConfig = field(default_factory=CommonConfig)
    distributed_training: DistributedTrainingConfig = field(default_factory=DistributedTrainingConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    model: Any = MISSING
    task: Any = None
    criterion: Any = None
    optimizer: Any = None
    lr_scheduler: Any = None


@dataclass
class _EncoderFields(FairseqDataclass):
    """Fields HubertConfig and Wav2Vec2Config share (same names, same defaults)."""

    extractor_mode: EXTRACTOR_MODE_CHOICES = "default"
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: ACTIVATION_CHOICES = "gelu"
    layer_type: LAYER_TYPE_CHOICES = "transformer"
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    dropout_features: float = 0.0
    final_dim: int = 0
    layer_norm_first: bool = False
    conv_bias: bool = False
    logit_temp: float = 0.1
    target_glu: bool = False
    feature_grad_mult: float = 1.0
    mask_length: int = 10
    mask_prob: float = 0.65
    mask_selection: MASKING_DISTRIBUTION_CHOICES = "static"
    mask_other: float = 0
    no_mask_overlap: bool = False
    mask_min_space: int = 1
    mask_channel_length: int = 10
    mask_channel_prob: float = 0.0
    mask_channel_selection: MASKING_DISTRIBUTION_CHOICES = "static"
    mask_channel_other: float = 0
    no_mask_channel_overlap: bool = False
    mask_channel_min_space: int = 1
    conv_pos: int = 128
    conv_pos_groups: int = 16
    latent_temp: Tuple[float, float, float] = (2, 0.5, 0.999995)  # noqa: UP006
    checkpoint_activations: bool = False
    required_seq_len_multiple: int = 2
    depthwise_conv_kernel_size: int = 31
    attn_type: str = ""
    pos_enc_type: str = "abs"
    fp16: bool = False


@_in("fairseq.models.hubert.hubert")
@dataclass
class HubertConfig(_EncoderFields):
    label_rate: float = II("task.label_rate")
    conv_feature_layers: str = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
    untie_final_proj: bool = False
    conv_pos_batch_norm: bool = False
    skip_masked: bool = False
    skip_nomask: bool = False


@_in("fairseq.models.wav2vec.wav2vec2")
@dataclass
class Wav2Vec2Config(_EncoderFields):
    conv_feature_layers: str = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
    quantize_targets: bool = False
    quantize_input: bool = False
    same_quantizer: bool = False
    quantizer_depth: int = 1
    quantizer_factor: int = 3
    latent_vars: int = 320
    latent_groups: int = 2
    latent_dim: int = 0
    require_same_masks: bool = True
    mask_dropout: float = 0.0
    mask_channel_before: bool = False
    num_negatives: int = 100
    negatives_from_everywhere: bool = False
    cross_sample_negatives: int = 0
    codebook_negatives: int = 0
    pos_conv_depth: int = 1
    max_positions: int = 100000
    crop_seq_to_multiple: int = 1


@_in("fairseq.models.wav2vec.wav2vec2_asr")
@dataclass
class Wav2Vec2CtcConfig(FairseqDataclass):
    w2v_path: str = MISSING
    no_pretrained_weights: bool = False
    dropout_input: float = 0.0
    final_dropout: float = 0.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    apply_mask: bool = False
    mask_length: int = 10
    mask_prob: float = 0.5
    mask_channel_prob: float = 0.0
    layerdrop: float = 0.0
    normalize: bool = II("task.normalize")
    data: str = II("task.data")
    w2v_args: Any = None
    blank_weight: float = 0
    blank_mode: str = "add"


@_in("fairseq.tasks.hubert_pretraining")
@dataclass
class HubertPretrainingConfig(FairseqDataclass):
    data: str = MISSING
    fine_tuning: bool = False
    labels: List[str] = field(default_factory=lambda: ["ltr"])  # noqa: UP006
    label_dir: Optional[str] = None  # noqa: UP045
    label_rate: float = -1.0
    sample_rate: int = 16_000
    normalize: bool = False
    enable_padding: bool = False
    max_keep_size: Optional[int] = None  # noqa: UP045
    max_sample_size: Optional[int] = None  # noqa: UP045
    min_sample_size: Optional[int] = None  # noqa: UP045
    single_target: Optional[bool] = False  # noqa: UP045
    random_crop: Optional[bool] = True  # noqa: UP045
    pad_audio: Optional[bool] = False  # noqa: UP045


@_in("fairseq.tasks.audio_pretraining")
@dataclass
class AudioPretrainingConfig(FairseqDataclass):
    data: str = MISSING
    labels: Optional[str] = None  # noqa: UP045
    binarized_dataset: bool = False
    sample_rate: int = 16_000
    normalize: bool = False
    enable_padding: bool = False
    max_sample_size: Optional[int] = None  # noqa: UP045
    min_sample_size: Optional[int] = None  # noqa: UP045
    num_batch_buckets: int = 0
    tpu: bool = II("common.tpu")
    seed: int = II("common.seed")


@_in("fairseq.tasks.audio_finetuning")
@dataclass
class AudioFinetuningConfig(AudioPretrainingConfig):
    eval_wer: bool = False
    autoregressive: bool = False


@_in("fairseq.data.dictionary")
class Dictionary:
    """fairseq.data.dictionary.Dictionary (pickled in HuBERT's task_state by its __dict__)."""

    def __init__(self, bos="<s>", pad="<pad>", eos="</s>", unk="<unk>"):
        self.bos_word, self.unk_word, self.pad_word, self.eos_word = bos, unk, pad, eos
        self.symbols: list[str] = []
        self.count: list[int] = []
        self.indices: dict[str, int] = {}
        specials = (bos, pad, eos, unk)
        self.bos_index, self.pad_index, self.eos_index, self.unk_index = (self.add_symbol(s) for s in specials)
        self.nspecial = len(self.symbols)

    def add_symbol(self, word: str, n: int = 1) -> int:
        self.indices[word] = len(self.symbols)
        self.symbols.append(word)
        self.count.append(n)
        return self.indices[word]


@contextlib.contextmanager
def fake_fairseq_modules() -> Iterator[None]:
    """Install the stand-in fairseq modules in `sys.modules` for the duration of the block, then remove them."""
    names = set(_REGISTRY)
    for name in list(names):
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))
    saved = {name: sys.modules.get(name) for name in names}
    try:
        for name in sorted(names):
            module = types.ModuleType(name)
            module.__dict__.update(_REGISTRY.get(name, {}))
            sys.modules[name] = module
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:  # pragma: no cover - fairseq is never installed here
                sys.modules[name] = previous


# --------------------------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------------------------

HUBERT_CONV = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"  # fairseq's HuBERT default, narrower
WAV2VEC2_CONV = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"  # fairseq's wav2vec 2.0 default spelling
CONV_LAYERS = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
SMALL = {"encoder_embed_dim": 64, "encoder_ffn_embed_dim": 128, "encoder_attention_heads": 4, "conv_pos": 16,
         "conv_pos_groups": 4, "dropout": 0.0, "attention_dropout": 0.0}


@dataclass(frozen=True)
class Variant:
    kind: str  # "hubert" | "wav2vec2"
    model: dict
    normalize: bool
    cfg_format: str  # "dictconfig" | "dict" | "namespace"
    finetuned: bool = False
    num_classes: tuple[int, ...] = (504,)  # HuBERT: one dictionary per label set (4 specials + 500 units)


VARIANTS: dict[str, Variant] = {
    # HuBERT-base-like: default extractor (group norm on conv 0), post-LN, final_dim 256, no waveform normalisation
    # (label_rate is left to its default, the interpolation ${task.label_rate})
    "hubert_base": Variant("hubert", dict(SMALL, encoder_layers=3, conv_feature_layers=HUBERT_CONV, final_dim=32),
                           normalize=False, cfg_format="dictconfig"),
    # HuBERT-large-style: layer_norm extractor, pre-LN (layer_norm_first), conv bias, normalize=True
    "hubert_large_style": Variant("hubert", dict(SMALL, encoder_layers=2, conv_feature_layers=HUBERT_CONV,
                                                 extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True,
                                                 final_dim=48), normalize=True, cfg_format="dict"),
    # wav2vec 2.0 pre-training (quantizer heads), older flat-args checkpoint in legacy serialization
    "wav2vec2_base": Variant("wav2vec2", dict(SMALL, encoder_layers=2, conv_feature_layers=WAV2VEC2_CONV, final_dim=16,
                                              latent_vars=8, latent_groups=2, quantize_targets=True),
                             normalize=False, cfg_format="dictconfig"),
    # the same HuBERT-base-like model, as a pre-hydra checkpoint: flat argparse.Namespace, no cfg
    "hubert_base_args": Variant("hubert", dict(SMALL, encoder_layers=3, conv_feature_layers=HUBERT_CONV, final_dim=32,
                                               label_rate=50.0), normalize=False, cfg_format="namespace"),
    # wav2vec 2.0 CTC fine-tuned from wav2vec2_base (w2v_encoder.w2v_model. prefix, nested w2v_args)
    "wav2vec2_ctc": Variant("wav2vec2", dict(SMALL, encoder_layers=2, conv_feature_layers=WAV2VEC2_CONV, final_dim=16,
                                             latent_vars=8, latent_groups=2, quantize_targets=True),
                            normalize=False, cfg_format="dictconfig", finetuned=True),
}


# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------


def model_dataclass(variant: Variant) -> _EncoderFields:
    cls = HubertConfig if variant.kind == "hubert" else Wav2Vec2Config
    return cls(_name=variant.kind, **variant.model)


def task_dataclass(variant: Variant) -> FairseqDataclass:
    if variant.kind == "hubert":
        return HubertPretrainingConfig(_name="hubert_pretraining", data="/checkpoint/librispeech/960h",
                                       labels=["km"], label_rate=50.0, normalize=variant.normalize)
    return AudioPretrainingConfig(_name="audio_pretraining", data="/checkpoint/librispeech/960h",
                                  normalize=variant.normalize)


def _fairseq_config(model: Any, task: Any, criterion: dict) -> Any:
    """The DictConfig hydra composes for a training run (FairseqConfig with model/task/criterion/optimizer)."""
    optimizer = {"_name": "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06, "weight_decay": 0.01,
                 "lr": "${optimization.lr}"}
    lr_scheduler = {"_name": "polynomial_decay", "warmup_updates": 32000, "total_num_update": 400000}
    return OmegaConf.structured(FairseqConfig(
        model=model, task=task, criterion=criterion, optimizer=optimizer, lr_scheduler=lr_scheduler,
        common=CommonConfig(log_format="json", fp16=True), optimization=OptimizationConfig(max_update=400000,
                                                                                          lr=[0.0005])))


def pretraining_dictconfig(variant: Variant) -> Any:
    criterion = {"_name": "hubert" if variant.kind == "hubert" else "wav2vec", "pred_masked_weight": 1.0}
    return _fairseq_config(model_dataclass(variant), task_dataclass(variant), criterion)


def finetuning_dictconfig(variant: Variant) -> Any:
    """wav2vec_ctc: cfg.model is Wav2Vec2CtcConfig whose w2v_args is the whole pre-training config."""
    inner = pretraining_dictconfig(dataclasses.replace(variant, finetuned=False))
    task = AudioFinetuningConfig(_name="audio_finetuning", data="/checkpoint/librispeech/100h",
                                 normalize=variant.normalize, labels="ltr")
    model = OmegaConf.structured(Wav2Vec2CtcConfig(_name="wav2vec_ctc", w2v_path="/checkpoint/wav2vec_small.pt"))
    model.w2v_args = inner
    return _fairseq_config(model, task, {"_name": "ctc", "zero_infinity": True})


def namespace_args(variant: Variant) -> argparse.Namespace:
    """A pre-hydra `args`: one flat Namespace with model and task fields, `arch` and `task` naming them."""
    flat = OmegaConf.to_container(OmegaConf.structured(task_dataclass(variant)), resolve=False, enum_to_str=True)
    flat.update(OmegaConf.to_container(OmegaConf.structured(model_dataclass(variant)), resolve=False,
                                       enum_to_str=True))
    flat = {k: v for k, v in flat.items() if k != "_name" and not (isinstance(v, str) and v.startswith("${"))}
    flat.update(arch=variant.kind, task=task_dataclass(variant)._name, criterion="hubert", optimizer="adam",
                lr=[0.0005], seed=1, fp16=True, label_rate=50.0)
    return argparse.Namespace(**flat)


# --------------------------------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------------------------------


class _Weights:
    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, *shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen) * scale

    def linear(self, sd: dict, name: str, n_out: int, n_in: int) -> None:
        sd[f"{name}.weight"] = self.randn(n_out, n_in, scale=n_in**-0.5)
        sd[f"{name}.bias"] = self.randn(n_out, scale=0.02)

    def norm(self, sd: dict, name: str, dim: int) -> None:
        sd[f"{name}.weight"] = 1.0 + self.randn(dim, scale=0.1)
        sd[f"{name}.bias"] = self.randn(dim, scale=0.1)


def _model_fields(variant: Variant) -> dict:
    return dataclasses.asdict(model_dataclass(variant))


def _conv_layers(variant: Variant) -> list[tuple[int, int, int]]:
    assert variant.model["conv_feature_layers"] in (HUBERT_CONV, WAV2VEC2_CONV)
    return CONV_LAYERS


def _feature_extractor(sd: dict, w: _Weights, cfg: dict, conv_layers: list) -> None:
    in_dim = 1
    for i, (dim, kernel, _stride) in enumerate(conv_layers):
        sd[f"feature_extractor.conv_layers.{i}.0.weight"] = w.randn(dim, in_dim, kernel, scale=(in_dim * kernel)**-0.5)
        if cfg["conv_bias"]:
            sd[f"feature_extractor.conv_layers.{i}.0.bias"] = w.randn(dim, scale=0.02)
        if str(cfg["extractor_mode"]) == "layer_norm":  # Sequential(conv, Dropout, Sequential(T, LayerNorm, T), GELU)
            w.norm(sd, f"feature_extractor.conv_layers.{i}.2.1", dim)
        elif i == 0:  # "default": Sequential(conv, Dropout, Fp32GroupNorm(dim, dim), GELU) on the first layer only
            w.norm(sd, "feature_extractor.conv_layers.0.2", dim)
        in_dim = dim


def _encoder(sd: dict, w: _Weights, cfg: dict) -> None:
    dim, ffn = cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"]
    k, groups = cfg["conv_pos"], cfg["conv_pos_groups"]
    # weight_norm(dim=2) replaced `weight` by weight_g (1, 1, k) and weight_v, registered after `bias`
    sd["encoder.pos_conv.0.bias"] = w.randn(dim, scale=0.02)
    sd["encoder.pos_conv.0.weight_g"] = 0.5 + w.randn(1, 1, k, scale=0.1).abs()
    sd["encoder.pos_conv.0.weight_v"] = w.randn(dim, dim // groups, k)
    for i in range(cfg["encoder_layers"]):
        prefix = f"encoder.layers.{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            w.linear(sd, f"{prefix}.self_attn.{proj}", dim, dim)
        w.norm(sd, f"{prefix}.self_attn_layer_norm", dim)
        w.linear(sd, f"{prefix}.fc1", ffn, dim)
        w.linear(sd, f"{prefix}.fc2", dim, ffn)
        w.norm(sd, f"{prefix}.final_layer_norm", dim)
    w.norm(sd, "encoder.layer_norm", dim)


def fairseq_state_dict(variant: Variant, seed: int = 0) -> OrderedDict:
    """The pre-training model's `state_dict()` with fairseq's key names, shapes and order."""
    cfg, w, sd = _model_fields(variant), _Weights(seed), OrderedDict()
    conv_layers = _conv_layers(variant)
    embed, dim = conv_layers[-1][0], cfg["encoder_embed_dim"]
    final_dim = cfg["final_dim"] if cfg["final_dim"] > 0 else dim
    sd["mask_emb"] = w.randn(dim).uniform_(generator=w.gen)
    if variant.kind == "hubert":
        sd["label_embs_concat"] = w.randn(sum(variant.num_classes), final_dim)
    _feature_extractor(sd, w, cfg, conv_layers)
    w.linear(sd, "post_extract_proj", dim, embed)
    if variant.kind == "wav2vec2":  # GumbelVectorQuantizer(dim=embed, num_vars, groups, vq_dim=final_dim) + project_q
        groups, num_vars = cfg["latent_groups"], cfg["latent_vars"]
        sd["quantizer.vars"] = w.randn(1, groups * num_vars, final_dim // groups)
        w.linear(sd, "quantizer.weight_proj", groups * num_vars, embed)
        w.linear(sd, "project_q", final_dim, final_dim)
    _encoder(sd, w, cfg)
    w.norm(sd, "layer_norm", embed)
    w.linear(sd, "final_proj", final_dim, dim)
    return sd


def finetuned_state_dict(variant: Variant, vocab: int = 32, seed: int = 0) -> OrderedDict:
    """Wav2VecEncoder: the pre-training model minus its heads under `w2v_encoder.w2v_model.`, plus the CTC `proj`."""
    pre = fairseq_state_dict(dataclasses.replace(variant, finetuned=False), seed)
    heads = ("quantizer.", "project_q.", "final_proj.", "target_glu.")
    sd = OrderedDict((f"w2v_encoder.w2v_model.{k}", v) for k, v in pre.items() if not k.startswith(heads))
    _Weights(seed + 1).linear(sd, "w2v_encoder.proj", vocab, variant.model["encoder_embed_dim"])
    return sd


# --------------------------------------------------------------------------------------------------------------------
# Whole checkpoints
# --------------------------------------------------------------------------------------------------------------------


def _cfg_and_args(variant: Variant) -> tuple[Any, Any]:
    if variant.cfg_format == "namespace":
        return None, namespace_args(variant)
    cfg = finetuning_dictconfig(variant) if variant.finetuned else pretraining_dictconfig(variant)
    if variant.cfg_format == "dict":
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return cfg, None


def checkpoint_dict(variant: Variant, seed: int = 0) -> dict:
    """Everything fairseq's Trainer.state_dict() puts in a checkpoint (must be built inside fake_fairseq_modules)."""
    cfg, args = _cfg_and_args(variant)
    model = finetuned_state_dict(variant, seed=seed) if variant.finetuned else fairseq_state_dict(variant, seed)
    dictionary = Dictionary()
    for unit in range(variant.num_classes[0] - 4):
        dictionary.add_symbol(str(unit))
    first_key = next(iter(model))
    return {
        "args": args,
        "cfg": cfg,
        "model": model,
        "criterion": None,
        "optimizer_history": [{
            "criterion_name": "HubertCriterion" if variant.kind == "hubert" else "Wav2vecCriterion",
            "optimizer_name": "FairseqAdam",
            "lr_scheduler_state": {"best": 3.25},
            "num_updates": 400000,
        }],
        "last_optimizer_state": {"state": {0: {"step": 400000, "exp_avg": torch.zeros_like(model[first_key])}},
                                 "param_groups": [{"lr": 0.0005, "betas": (0.9, 0.98), "params": [0]}]},
        "task_state": {"dictionaries": [dictionary]} if variant.kind == "hubert" else {},
        "extra_state": {
            "epoch": 37,
            "best": 3.25,
            "train_iterator": {"epoch": 37, "iterations_in_epoch": 0, "shuffle": True},
            "metrics": {"train": OrderedDict([("loss", {"priority": 0, "val": np.float64(3.25)})])},
            "previous_training_time": np.float64(123456.5),
        },
    }


def write_fairseq_checkpoint(path: str | Path, variant: Variant | str, seed: int = 0,
                             edit: Callable[[dict], None] | None = None) -> Path:
    """torch.save a fairseq-layout checkpoint; the fake fairseq modules are gone again when this returns.

    `edit(state)` may change the checkpoint dict before it is saved (to make broken checkpoints).
    """
    variant = VARIANTS[variant] if isinstance(variant, str) else variant
    path = Path(path)
    with fake_fairseq_modules():
        state = checkpoint_dict(variant, seed)
        if edit is not None:
            edit(state)
        legacy = variant.cfg_format == "namespace"  # pre-1.6 torch wrote the non-zip format
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert "fairseq" not in sys.modules
    return path


def torchaudio_reference(variant: Variant, seed: int = 0) -> torch.nn.Module:
    """The same weights in torchaudio's Wav2Vec2Model, loaded through torchaudio's own fairseq key mapping."""
    from torchaudio.models import wav2vec2_model
    from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict

    cfg = _model_fields(variant)
    model = wav2vec2_model(
        extractor_mode="layer_norm" if cfg["extractor_mode"] == "layer_norm" else "group_norm",
        extractor_conv_layer_config=_conv_layers(variant),
        extractor_conv_bias=cfg["conv_bias"],
        encoder_embed_dim=cfg["encoder_embed_dim"],
        encoder_projection_dropout=cfg["dropout_input"],
        encoder_pos_conv_kernel=cfg["conv_pos"],
        encoder_pos_conv_groups=cfg["conv_pos_groups"],
        encoder_num_layers=cfg["encoder_layers"],
        encoder_num_heads=cfg["encoder_attention_heads"],
        encoder_attention_dropout=cfg["attention_dropout"],
        encoder_ff_interm_features=cfg["encoder_ffn_embed_dim"],
        encoder_ff_interm_dropout=cfg["activation_dropout"],
        encoder_dropout=cfg["dropout"],
        encoder_layer_norm_first=cfg["layer_norm_first"],
        encoder_layer_drop=cfg["encoder_layerdrop"],
        aux_num_out=None,
    )
    converted = _convert_state_dict(fairseq_state_dict(dataclasses.replace(variant, finetuned=False), seed))
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert not missing and set(unexpected) <= {"label_embs_concat"}, (missing, unexpected)
    return model.eval()
