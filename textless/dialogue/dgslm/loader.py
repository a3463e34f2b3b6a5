"""`load_dialogue_lm`: a textless dGSLM directory, or a fairseq SpeechDLM checkpoint + its dictionaries, as a `DGSLM`.

fairseq checkpoints (``checkpoint_best.pt``, the released ``speech_dlm_base.pt``) are read without fairseq through the
restricted unpickler (`textless.utils.safe_pickle`): ``cfg`` (fairseq >= 0.10: ``cfg.model`` / ``cfg.task``; OmegaConf
or plain dicts) or the flat ``args`` of older fairseq. The criterion section is not needed and not interpreted: the
released checkpoint names a criterion the public fairseq does not have (``duration_cross_multichannel_cross_entropy``,
fairseq issue 5041), which is why it does not load with fairseq itself; it loads here.

Dictionaries. ``dict.unitA.txt`` / ``dict.unitB.txt`` (fairseq `Dictionary` files, by default beside the checkpoint;
they must be equal) list the unit symbols in dictionary order, which is fairseq's embedding order after the four
specials (bos 0, pad 1, eos 2, unk 3) and is NOT unit order (fairseq sorts by count). The loader permutes the embedding
rows so that token id = unit id (`DialogueVocab`: units 0..K-1, then bos, pad, eos, unk); the dictionary must hold
every unit 0..K-1. The model is fed fairseq's start token (eos) at t = 0 (``config.start_token = "eos"``), as fairseq's
language-model data starts every block with eos.

Supported: fairseq's ``speech_dlm`` architecture with sinusoidal positions, scaled embeddings, shared input / output
embeddings, ReLU, duration prediction on or off, main-channel prediction only (``main_and_cross_weights`` "1,0", as
the released model). Anything else is refused with the setting named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from textless.data.convert import read_fairseq_symbols
from textless.dialogue.dgslm.model import CONFIG_FILE, DGSLM, SPECIALS, DGSLMConfig
from textless.errors import FormatError
from textless.utils.safe_pickle import plain_config, safe_torch_load

DICT_NAMES = ("dict.unitA.txt", "dict.unitB.txt")
_IGNORED = ("decoder.version", "decoder.embed_positions._float_tensor")


def load_dialogue_lm(path: str | Path, *, dict_dir: str | Path | None = None, device: str | torch.device = "cpu",
                     tokenizer: dict | None = None, frame_rate: float | None = 50.0,
                     attn_implementation: str | None = None) -> DGSLM:
    """A `DGSLM` from a textless directory (`DGSLM.from_pretrained`) or a fairseq checkpoint file (+ the dictionaries
    in `dict_dir`, default the checkpoint's directory; `tokenizer` / `frame_rate` describe its units: dGSLM's released
    model = Fisher HuBERT, layer 12, k-means 500, 50 Hz)."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return DGSLM.from_pretrained(path, device=device, attn_implementation=attn_implementation)
    if not path.is_file():
        raise FormatError(path, "neither a textless dGSLM directory nor a fairseq checkpoint file")
    state = safe_torch_load(path)
    model_cfg, task_cfg = _configs(path, state)
    symbols = _dictionary(Path(dict_dir) if dict_dir is not None else path.parent)
    config = _config(path, model_cfg, task_cfg, len(symbols), attn_implementation)
    model = DGSLM(config, tokenizer=tokenizer, frame_rate=frame_rate)
    try:
        model.load_state_dict(_state_dict(path, state["model"], symbols))
    except RuntimeError as e:  # missing / unexpected keys, shapes
        raise FormatError(path, f"weights do not fit a SpeechDLM of this config: {str(e).splitlines()[0]} "
                                f"{' '.join(str(e).split())[:300]}") from None
    return model.to(device).eval()


def _configs(path: Path, state: Any) -> tuple[dict, dict]:
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise FormatError(path, "expected a fairseq checkpoint: a dict with 'model' (the state dict) and 'cfg' or "
                                "'args'")
    if state.get("cfg") is not None:
        cfg = plain_config(state["cfg"])
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise FormatError(path, "the checkpoint's 'cfg' has no 'model' section")
        return cfg["model"], cfg.get("task") or {}
    args = plain_config(state.get("args"))
    if not isinstance(args, dict):
        raise FormatError(path, "the checkpoint has neither 'cfg' nor 'args'")
    return {**args, "_name": args.get("arch")}, args


def _dictionary(directory: Path) -> list[int]:
    """Unit symbols in fairseq dictionary order (both channels' dictionaries, which must be equal)."""
    paths = [directory / name for name in DICT_NAMES]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FormatError(missing[0], "missing: a fairseq dGSLM checkpoint needs dict.unitA.txt and dict.unitB.txt "
                                      "(the dictionaries it was trained with; pass dict_dir= where they are)")
    symbols = [read_fairseq_symbols(p) for p in paths]
    if symbols[0] != symbols[1]:
        raise FormatError(paths[1], f"differs from {paths[0].name}: SpeechDLM shares one dictionary over channels")
    absent = sorted(set(range(max(symbols[0]) + 1)) - set(symbols[0]))
    if absent:
        raise FormatError(paths[0], f"lacks units {absent[:10]}: textless needs every unit 0..{max(symbols[0])}")
    return symbols[0]


def _get(cfg: dict, name: str, default: Any) -> Any:
    value = cfg.get(name)
    return default if value is None else value


def _flag(value: Any) -> bool:
    return str(value).lower() not in ("false", "0", "none", "")


def _config(path: Path, model: dict, task: dict, num_units: int, attn_implementation: str | None) -> DGSLMConfig:
    name = model.get("_name") or model.get("arch")
    if name not in ("speech_dlm", "speech_dlm_big", None):
        raise FormatError(path, f"not a SpeechDLM checkpoint (model '{name}')")
    big = name == "speech_dlm_big"
    unsupported = {
        "decoder_learned_pos": _get(model, "decoder_learned_pos", False),
        "no_token_positional_embeddings": _get(model, "no_token_positional_embeddings", False),
        "layernorm_embedding": _get(model, "layernorm_embedding", False),
        "no_scale_embedding": _get(model, "no_scale_embedding", False),
        "no_decoder_final_norm": _get(model, "no_decoder_final_norm", False),
        "activation_fn != relu": _get(model, "activation_fn", "relu") != "relu",
        "share_decoder_input_output_embed off": not _get(model, "share_decoder_input_output_embed", True),
    }
    weights = str(_get(model, "main_and_cross_weights", "1,0")).split(",")
    unsupported["cross-channel prediction (main_and_cross_weights)"] = len(weights) > 1 and float(weights[1]) != 0
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise FormatError(path, f"unsupported SpeechDLM settings: {', '.join(bad)}")
    d = _get(model, "decoder_embed_dim", 1024 if big else 512)
    for dim in ("decoder_input_dim", "decoder_output_dim"):
        if _get(model, dim, d) != d:
            raise FormatError(path, f"{dim} {model[dim]} differs from decoder_embed_dim {d} (not supported)")
    layers = _get(model, "decoder_layers", 12 if big else 6)
    cross = _get(model, "decoder_cross_layers", layers)
    duration = _flag(_get(model, "duration_prediction", _get(task, "duration_prediction", True)))
    delayed = _flag(_get(model, "delayed_duration_target", _get(task, "delayed_duration_target", True)))
    positions = _get(model, "max_target_positions", _get(task, "max_target_positions",
                                                         _get(task, "tokens_per_sample", 1024)))
    return DGSLMConfig(num_units=num_units, d_model=d, layers=layers, cross_layers=layers if cross < 0 else cross,
                       heads=_get(model, "decoder_attention_heads", 16 if big else 8),
                       ffn=_get(model, "decoder_ffn_embed_dim", 4096 if big else 2048),
                       dropout=_get(model, "dropout", 0.1), attention_dropout=_get(model, "attention_dropout", 0.0),
                       activation_dropout=_get(model, "activation_dropout", 0.0) or _get(model, "relu_dropout", 0.0),
                       max_positions=positions, duration_prediction=duration, delayed_duration=delayed,
                       max_duration=_get(task, "max_target_durations", 256) or 256, start_token="eos",
                       attn_implementation=attn_implementation or "sdpa")


def _state_dict(path: Path, fairseq: dict, symbols: list[int]) -> dict[str, torch.Tensor]:
    """fairseq names and dictionary order -> `DGSLM` names and unit order."""
    state = {k.removeprefix("decoder."): v for k, v in fairseq.items() if k not in _IGNORED}
    embed = state.pop("embed_tokens.weight", None)
    if embed is None or embed.shape[0] != len(SPECIALS) + len(symbols):
        raise FormatError(path, f"decoder.embed_tokens.weight has {None if embed is None else embed.shape[0]} rows, "
                                f"the dictionaries {len(SPECIALS)} specials + {len(symbols)} units")
    head = state.pop("output_projection.0.weight", None)
    if head is not None and not torch.equal(head, embed):
        raise FormatError(path, "output_projection.0 is not the embedding (untied heads are not supported)")
    ours = torch.empty_like(embed)
    ours[torch.tensor(symbols)] = embed[len(SPECIALS):]     # row of unit u = fairseq row 4 + its dictionary index
    ours[len(symbols):] = embed[:len(SPECIALS)]            # bos, pad, eos, unk: the same order after the units
    out = {"embed_tokens.weight": ours}
    for key, value in state.items():
        if key.startswith("output_duration_prediction.0."):
            key = "duration_head." + key.removeprefix("output_duration_prediction.0.")
        elif key.startswith(("output_projection.", "output_duration_prediction.")):
            raise FormatError(path, f"unexpected head {key} (cross-channel prediction heads are not supported)")
        out[key] = value
    return out
