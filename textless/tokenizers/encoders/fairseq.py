"""fairseq HuBERT / wav2vec 2.0 checkpoints (`.pt`) -> Hugging Face `HubertModel` / `Wav2Vec2Model`, without fairseq.

A fairseq checkpoint is a pickled dict: `model` (the state dict) plus the architecture, as `cfg` (hydra era: an
OmegaConf `DictConfig`, or since mid-2021 the same as plain dicts; `cfg.model`, `cfg.task`) or `args` (before hydra:
one flat `argparse.Namespace`). It also pickles fairseq objects (`Dictionary` in `task_state`, dataclass and enum
references in the DictConfig's metadata), so it is read with `textless.utils.safe_pickle.safe_torch_load`, which stubs
them.

Steps: `read_fairseq_checkpoint` (config normalised to plain dicts, fine-tuned CTC checkpoints unwrapped to their
pre-trained encoder) -> `hf_config_from_fairseq` (architecture) -> `hf_state_dict_from_fairseq` (key renaming; the
pre-training / CTC heads are dropped by an explicit list and any other unknown key is an error) -> `load_fairseq_model`
(strict `load_state_dict`, eval mode).

Layers: fairseq's `output_layer=L` (1-based) is `hidden_states[L]` of the Hugging Face model. With transformers 5 this
holds for every L, including the last layer of pre-LN (`layer_norm_first`) models: `hidden_states[-1]` is the last
layer's raw output, as fairseq returns it for an explicit `output_layer`; only `last_hidden_state` has the encoder's
final layer norm applied (fairseq applies it only when no output layer is given). Hugging Face models do not normalise
the waveform: when `normalize` is True (large / layer_norm models), callers apply `F.layer_norm(wav, wav.shape)` per
utterance first, as fairseq's data pipeline does.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from textless.errors import FormatError
from textless.utils.safe_pickle import plain_config, safe_torch_load

if TYPE_CHECKING:
    import transformers

    from textless.tokenizers.encoders.base import SpeechEncoder

Kind = Literal["hubert", "wav2vec2"]

# --------------------------------------------------------------------------------------------------------------------
# What the checkpoint may say
# --------------------------------------------------------------------------------------------------------------------

# cfg.model._name / args.arch -> kind; fine-tuned names are unwrapped to the pre-training config first
MODEL_KINDS: dict[str, Kind] = {"hubert": "hubert", "wav2vec2": "wav2vec2"}
FINETUNED_MODELS = frozenset({"hubert_ctc", "wav2vec_ctc", "hubert_seq2seq", "wav2vec_seq2seq"})
TASK_KINDS: dict[str, Kind] = {"hubert_pretraining": "hubert", "audio_pretraining": "wav2vec2"}

# Defaults of fairseq's HubertConfig / Wav2Vec2Config for the fields we read (older checkpoints lack newer fields)
FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "conv_pos_batch_norm": False,
    "pos_conv_depth": 1,
    "quantize_input": False,
    "mask_prob": 0.65,
    "mask_length": 10,
    "mask_channel_prob": 0.0,
    "mask_channel_length": 10,
}

FEAT_EXTRACT_NORM = {"default": "group", "layer_norm": "layer"}  # fairseq extractor_mode -> HF feat_extract_norm
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new", "tanh": "tanh",
               "linear": "linear", "swish": "swish"}  # fairseq activation_fn -> HF hidden_act (gelu_new = tanh approx.)

# --------------------------------------------------------------------------------------------------------------------
# State-dict key mapping (fairseq -> Hugging Face), first full match wins
# --------------------------------------------------------------------------------------------------------------------

_CONV = r"feature_extractor\.conv_layers"
_LAYER = r"encoder\.layers\.(\d+)"
KEY_RULES: list[tuple[str, str]] = [
    (rf"{_CONV}\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (rf"{_CONV}\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.layer_norm.\1"),  # "default": GroupNorm
    (rf"{_CONV}\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),  # "layer_norm"
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (rf"{_LAYER}\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (rf"{_LAYER}\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (rf"{_LAYER}\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (rf"{_LAYER}\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (rf"{_LAYER}\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"mask_emb", "masked_spec_embed"),
]
# fairseq wraps pos_conv in weight_norm(dim=2) (weight_g, weight_v); transformers 5 uses the parametrization API, whose
# original0 / original1 are g / v. Checkpoints with conv_pos_batch_norm (HuBERT only) have BatchNorm1d then the conv.
_WN = "encoder.pos_conv_embed.conv.parametrizations.weight"
POS_CONV_RULES: dict[str, list[tuple[str, str]]] = {
    "weight_norm": [
        (r"encoder\.pos_conv\.0\.bias", "encoder.pos_conv_embed.conv.bias"),
        (r"encoder\.pos_conv\.0\.weight_g", f"{_WN}.original0"),
        (r"encoder\.pos_conv\.0\.weight_v", f"{_WN}.original1"),
        (r"encoder\.pos_conv\.0\.parametrizations\.weight\.original([01])", rf"{_WN}.original\1"),
    ],
    "batch_norm": [
        (r"encoder\.pos_conv\.0\.(weight|bias|running_mean|running_var|num_batches_tracked)",
         r"encoder.pos_conv_embed.batch_norm.\1"),
        (r"encoder\.pos_conv\.1\.(weight|bias)", r"encoder.pos_conv_embed.conv.\1"),
    ],
}
# Parameters with no counterpart in an encoder: pre-training heads and the CTC output layer (`w2v_encoder.proj`)
DROPPED_KEYS: list[str] = [
    r"final_proj\.(weight|bias)",
    r"label_embs_concat",
    r"target_glu\.0\.(weight|bias)",
    r"quantizer\.(vars|weight_proj(\.\d+)*\.(weight|bias))",
    r"input_quantizer\.(vars|weight_proj(\.\d+)*\.(weight|bias))",
    r"project_q\.(weight|bias)",
    r"project_inp\.(weight|bias)",
    r"proj\.(weight|bias)",
    r"decoder\..+",  # seq2seq fine-tuning: the text decoder
]
# Old fairseq attention stored q, k, v stacked in one projection (fairseq's own upgrade splits it the same way)
FUSED_IN_PROJ = re.compile(r"(encoder\.layers\.\d+\.self_attn\.)in_proj_(weight|bias)")
FINETUNED_PREFIXES = {"w2v_encoder.w2v_model.": "", "w2v_encoder.": ""}  # longest first

MAX_CONV_LAYERS = 64
MAX_CONV_VALUE = 1_000_000


@dataclass
class FairseqCheckpoint:
    """A fairseq HuBERT / wav2vec 2.0 checkpoint with its configuration as plain Python data.

    `model_cfg` is the encoder's architecture (`cfg.model`, the flat `args`, or for a fine-tuned checkpoint the
    embedded pre-training `w2v_args` model config); `task_cfg` the matching (pre-training) task config; `state_dict`
    the parameters with fairseq names (a fine-tuned checkpoint's `w2v_encoder.w2v_model.` / `w2v_encoder.` prefixes
    removed, so its CTC layer is `proj.*`). `extra` holds a fine-tuned checkpoint's own model / task configs.
    """

    kind: Kind
    model_cfg: dict[str, Any]
    task_cfg: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    normalize: bool
    source: str = ""
    finetuned: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        """A model-config field, with fairseq's default when the checkpoint predates it."""
        value = self.model_cfg.get(name)
        return FAIRSEQ_DEFAULTS.get(name) if value is None else value


# --------------------------------------------------------------------------------------------------------------------
# conv_feature_layers: a Python expression, evaluated on a whitelist
# --------------------------------------------------------------------------------------------------------------------


def _eval_conv_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if not 0 < node.value <= MAX_CONV_VALUE:
            raise ValueError(f"integer {node.value} out of range")
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_eval_conv_node(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        return _conv_binop(node.op, _eval_conv_node(node.left), _eval_conv_node(node.right))
    raise ValueError(f"'{type(node).__name__}' is not allowed (only lists, tuples, integers, + and *)")


def _conv_binop(op: ast.operator, left: Any, right: Any) -> Any:
    if isinstance(op, ast.Add):
        if type(left) is not type(right):
            raise TypeError("'+' needs two lists, two tuples or two integers")
        result = left + right
    else:
        if isinstance(left, int) and isinstance(right, list | tuple):
            left, right = right, left
        if not (isinstance(left, list | tuple | int) and isinstance(right, int)) or isinstance(right, bool):
            raise TypeError("'*' needs a list (or tuple, or integer) times an integer")
        if isinstance(left, list | tuple) and len(left) * right > MAX_CONV_LAYERS:
            raise ValueError(f"more than {MAX_CONV_LAYERS} layers")
        result = left * right
    if isinstance(result, int) and result > MAX_CONV_VALUE:
        raise ValueError(f"integer {result} out of range")
    if isinstance(result, list | tuple) and len(result) > MAX_CONV_LAYERS:
        raise ValueError(f"more than {MAX_CONV_LAYERS} layers")
    return result


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """fairseq's `conv_feature_layers` ("[(512,10,5)] + [(512,3,2)] * 4 + ...") as [(dim, kernel, stride), ...].

    fairseq `eval`s this string; here it is parsed with `ast` and only list / tuple / int literals, `+` and `*` are
    evaluated. Raises ValueError / TypeError (with the reason) for anything else.
    """
    if not isinstance(spec, str):
        raise TypeError(f"expected a string, got {type(spec).__name__}")
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a Python expression ({exc.msg})") from None
    layers = _eval_conv_node(tree.body)
    if not isinstance(layers, list) or not layers:
        raise ValueError("expected a non-empty list of (dim, kernel, stride) tuples")
    if not all(isinstance(layer, tuple | list) and len(layer) == 3 and all(isinstance(v, int) for v in layer)
               for layer in layers):
        raise ValueError("every layer must be a (dim, kernel, stride) triple of integers")
    return [tuple(layer) for layer in layers]


# --------------------------------------------------------------------------------------------------------------------
# Reading the checkpoint
# --------------------------------------------------------------------------------------------------------------------


def _check_layout(path: Path, state: Any) -> None:
    expected = ("expected a fairseq checkpoint: a dict with 'model' (the state dict) and 'cfg' (newer fairseq) or "
                "'args' (older fairseq)")
    if not isinstance(state, dict):
        raise FormatError(path, f"{expected}; got a {type(state).__name__}")
    if "model" in state and (state.get("cfg") is not None or state.get("args") is not None):
        if not isinstance(state["model"], dict):
            raise FormatError(path, f"{expected}; 'model' is a {type(state['model']).__name__}")
        return
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FormatError(path, f"{expected}; this is a bare state dict ({len(state)} tensors) without the "
                                "architecture, e.g. a Hugging Face or torchaudio export")
    raise FormatError(path, f"{expected}; got keys {sorted(map(str, state))[:10]}")


def _split_config(path: Path, state: dict) -> tuple[dict, dict]:
    """(model config, task config) as plain dicts, from `cfg` or from the flat `args`."""
    if state.get("cfg") is not None:
        cfg = plain_config(state["cfg"])
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise FormatError(path, "the checkpoint's 'cfg' has no 'model' section")
        return cfg["model"], cfg.get("task") or {}
    args = plain_config(state["args"])
    if not isinstance(args, dict):
        raise FormatError(path, f"the checkpoint's 'args' is a {type(state['args']).__name__}, not a Namespace")
    return {**args, "_name": args.get("arch")}, {**args, "_name": args.get("task")}


def _unwrap_finetuned(path: Path, model_cfg: dict, task_cfg: dict) -> tuple[dict, dict]:
    """(model config, task config) of the pre-trained encoder inside a fine-tuned checkpoint.

    A CTC / seq2seq model embeds its encoder's pre-training config as `w2v_args` (cfg-style or flat args).
    """
    inner = model_cfg.get("w2v_args")
    if not isinstance(inner, dict):
        w2v_path = model_cfg.get("w2v_path")
        raise FormatError(path, f"fine-tuned '{model_cfg.get('_name')}' checkpoint without the pre-training config "
                                f"(w2v_args is empty; fairseq would read it from w2v_path={w2v_path!r})")
    inner = plain_config(inner)  # resolve the inner config's own interpolations
    if isinstance(inner.get("model"), dict):
        return inner["model"], inner.get("task") or task_cfg
    return {**inner, "_name": inner.get("arch")}, {**inner, "_name": inner.get("task")}


def _detect_kind(path: Path, model_cfg: dict, task_cfg: dict, state_dict: dict) -> Kind:
    name = model_cfg.get("_name")
    if name in MODEL_KINDS:
        return MODEL_KINDS[name]
    if name is None and task_cfg.get("_name") in TASK_KINDS:
        return TASK_KINDS[task_cfg["_name"]]
    if name is None and "label_embs_concat" in state_dict:
        return "hubert"
    raise FormatError(path, f"unsupported fairseq model '{name}' (task '{task_cfg.get('_name')}'): this loader reads "
                            f"{sorted(MODEL_KINDS)} and their fine-tuned forms {sorted(FINETUNED_MODELS)}")


def _strip_finetuned_prefix(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        for prefix, replacement in FINETUNED_PREFIXES.items():
            if key.startswith(prefix):
                key = replacement + key[len(prefix):]
                break
        out[key] = value
    return out


def read_fairseq_checkpoint(path: str | Path) -> FairseqCheckpoint:
    """Read a fairseq HuBERT / wav2vec 2.0 checkpoint (pre-trained or CTC fine-tuned) without fairseq.

    Raises `FormatError` for files that are not fairseq checkpoints of a supported model and `UnsafePickleError` for
    pickles that ask to call code.
    """
    path = Path(path)
    state = safe_torch_load(path)
    _check_layout(path, state)
    model_cfg, task_cfg = _split_config(path, state)
    state_dict, extra = dict(state["model"]), {}
    finetuned = model_cfg.get("_name") in FINETUNED_MODELS or "w2v_args" in model_cfg
    if finetuned:  # the encoder's own config / task; the fine-tuning ones are kept in `extra`
        outer_model = {k: v for k, v in model_cfg.items() if k != "w2v_args"}
        extra = {"finetuning_model_cfg": outer_model, "finetuning_task_cfg": task_cfg}
        model_cfg, inner_task = _unwrap_finetuned(path, model_cfg, task_cfg)
        normalize = task_cfg.get("normalize", inner_task.get("normalize"))  # fairseq asserts that they agree
        task_cfg = inner_task
        state_dict = _strip_finetuned_prefix(state_dict)
    else:
        normalize = task_cfg.get("normalize")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise FormatError(path, f"'model' entries that are not tensors: {bad[:5]}")
    if not isinstance(normalize, bool | None):
        raise FormatError(path, f"task.normalize is {normalize!r}, expected true or false")
    kind = _detect_kind(path, model_cfg, task_cfg, state_dict)
    return FairseqCheckpoint(kind=kind, model_cfg=model_cfg, task_cfg=task_cfg, state_dict=state_dict,
                             normalize=bool(normalize), source=str(path), finetuned=finetuned, extra=extra)


# --------------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------------


def _lookup(table: dict[str, str], value: Any, what: str, ckpt: FairseqCheckpoint) -> str:
    if str(value) not in table:
        raise FormatError(ckpt.source, f"unsupported {what} '{value}' (supported: {sorted(table)})")
    return table[str(value)]


def _check_supported(ckpt: FairseqCheckpoint) -> None:
    checks = {
        "layer_type": (ckpt.get("layer_type"), "transformer"),
        "pos_conv_depth": (ckpt.get("pos_conv_depth"), 1),
        "quantize_input": (bool(ckpt.get("quantize_input")), False),
    }
    for name, (value, supported) in checks.items():
        if value != supported:
            raise FormatError(ckpt.source, f"unsupported {name}={value!r} (only {supported!r} has a Hugging Face "
                                           "HuBERT / wav2vec 2.0 equivalent)")
    if ckpt.kind == "wav2vec2" and ckpt.get("conv_pos_batch_norm"):
        raise FormatError(ckpt.source, "conv_pos_batch_norm is only supported for HuBERT checkpoints")


def conv_layers_of(ckpt: FairseqCheckpoint) -> list[tuple[int, int, int]]:
    """The checkpoint's convolutional feature extractor as [(dim, kernel, stride), ...]."""
    spec = ckpt.get("conv_feature_layers")
    try:
        return parse_conv_feature_layers(spec)
    except (ValueError, TypeError) as exc:
        raise FormatError(ckpt.source, f"cannot read conv_feature_layers {spec!r}: {exc}") from None


def hf_config_from_fairseq(ckpt: FairseqCheckpoint) -> transformers.HubertConfig | transformers.Wav2Vec2Config:
    """The Hugging Face config with the checkpoint's architecture (fairseq field -> HF field, see the table below)."""
    import transformers

    _check_supported(ckpt)
    conv = conv_layers_of(ckpt)
    common = {
        "hidden_size": int(ckpt.get("encoder_embed_dim")),
        "num_hidden_layers": int(ckpt.get("encoder_layers")),
        "num_attention_heads": int(ckpt.get("encoder_attention_heads")),
        "intermediate_size": int(ckpt.get("encoder_ffn_embed_dim")),
        "hidden_act": _lookup(ACTIVATIONS, ckpt.get("activation_fn"), "activation_fn", ckpt),
        "hidden_dropout": float(ckpt.get("dropout")),
        "attention_dropout": float(ckpt.get("attention_dropout")),
        "activation_dropout": float(ckpt.get("activation_dropout")),
        "feat_proj_dropout": float(ckpt.get("dropout_input")),
        "layerdrop": float(ckpt.get("encoder_layerdrop")),
        "feat_extract_norm": _lookup(FEAT_EXTRACT_NORM, ckpt.get("extractor_mode"), "extractor_mode", ckpt),
        "feat_extract_activation": "gelu",  # fairseq's ConvFeatureExtractionModel always uses nn.GELU
        "conv_dim": [c[0] for c in conv],
        "conv_kernel": [c[1] for c in conv],
        "conv_stride": [c[2] for c in conv],
        "conv_bias": bool(ckpt.get("conv_bias")),
        "num_conv_pos_embeddings": int(ckpt.get("conv_pos")),
        "num_conv_pos_embedding_groups": int(ckpt.get("conv_pos_groups")),
        "do_stable_layer_norm": bool(ckpt.get("layer_norm_first")),
        "layer_norm_eps": 1e-5,  # fairseq LayerNorm / Fp32GroupNorm default
        "mask_time_prob": float(ckpt.get("mask_prob")),
        "mask_time_length": int(ckpt.get("mask_length")),
        "mask_feature_prob": float(ckpt.get("mask_channel_prob")),
        "mask_feature_length": int(ckpt.get("mask_channel_length")),
    }
    if ckpt.kind == "hubert":
        return transformers.HubertConfig(**common, feat_proj_layer_norm=True,
                                         conv_pos_batch_norm=bool(ckpt.get("conv_pos_batch_norm")))
    return transformers.Wav2Vec2Config(**common)


# --------------------------------------------------------------------------------------------------------------------
# State dict
# --------------------------------------------------------------------------------------------------------------------


def _key_rules(ckpt: FairseqCheckpoint) -> list[tuple[re.Pattern, str]]:
    pos_conv = "batch_norm" if ckpt.kind == "hubert" and ckpt.get("conv_pos_batch_norm") else "weight_norm"
    return [(re.compile(pattern), target) for pattern, target in KEY_RULES + POS_CONV_RULES[pos_conv]]


_DROPPED = [re.compile(pattern) for pattern in DROPPED_KEYS]


def map_fairseq_key(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    """The Hugging Face name of a fairseq parameter; None for a dropped head; KeyError if unknown."""
    if any(pattern.fullmatch(key) for pattern in _DROPPED):
        return None
    for pattern, target in rules:
        if pattern.fullmatch(key):
            return pattern.sub(target, key)
    raise KeyError(key)


def _split_fused_in_proj(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        match = FUSED_IN_PROJ.fullmatch(key)
        if match is None:
            out[key] = value
            continue
        for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
            out[f"{match.group(1)}{name}.{match.group(2)}"] = part
    return out


def hf_state_dict_from_fairseq(ckpt: FairseqCheckpoint,
                               config: transformers.PretrainedConfig | None = None) -> dict[str, torch.Tensor]:
    """The checkpoint's encoder parameters under Hugging Face names.

    Pre-training / CTC heads (`DROPPED_KEYS`) are dropped; any other key without a rule raises `FormatError` naming
    it. `mask_emb` becomes `masked_spec_embed` when the HF model has one (mask_prob or mask_channel_prob > 0). A model
    whose extractor width equals the encoder width has no `post_extract_proj` in fairseq: it gets an identity here.
    """
    config = config or hf_config_from_fairseq(ckpt)
    rules = _key_rules(ckpt)
    out: dict[str, torch.Tensor] = {}
    for key, value in _split_fused_in_proj(ckpt.state_dict).items():
        try:
            target = map_fairseq_key(key, rules)
        except KeyError:
            raise FormatError(ckpt.source, f"unexpected key '{key}' in the model state dict (no Hugging Face "
                                           f"{ckpt.kind} parameter corresponds to it)") from None
        if target is not None:
            out[target] = value
    if not (config.mask_time_prob > 0 or config.mask_feature_prob > 0):
        out.pop("masked_spec_embed", None)
    if "feature_projection.projection.weight" not in out and config.conv_dim[-1] == config.hidden_size:
        out["feature_projection.projection.weight"] = torch.eye(config.hidden_size)
        out["feature_projection.projection.bias"] = torch.zeros(config.hidden_size)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def _load_strict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise FormatError(source, f"checkpoint does not match its own config: missing {missing[:8]}, "
                                  f"unexpected {unexpected[:8]}")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise FormatError(source, f"checkpoint does not match its own config: {exc}") from None


def load_fairseq_model(path: str | Path) -> tuple[transformers.PreTrainedModel, bool]:
    """(Hugging Face HubertModel / Wav2Vec2Model in eval mode, whether to layer-normalise the waveform first)."""
    import transformers

    ckpt = read_fairseq_checkpoint(path)
    config = hf_config_from_fairseq(ckpt)
    state_dict = hf_state_dict_from_fairseq(ckpt, config)
    model_cls = transformers.HubertModel if ckpt.kind == "hubert" else transformers.Wav2Vec2Model
    model = model_cls(config)
    _load_strict(model, state_dict, ckpt.source)
    return model.eval(), ckpt.normalize


def load_fairseq_encoder(source: str | Path, layer: int | None = None, **kw: Any) -> SpeechEncoder:
    """An `SSLEncoder` over block `layer` (1-based, fairseq's output_layer; None = last) of a fairseq checkpoint.

    The waveform normalisation follows the checkpoint (`task.normalize`) unless `normalize=` is passed explicitly.
    """
    from textless.tokenizers.encoders.ssl import SSLEncoder  # lazily: only this entry point needs it

    model, normalize = load_fairseq_model(source)
    kw.setdefault("normalize", normalize)
    return SSLEncoder(model, layer, source=str(source), **kw)
