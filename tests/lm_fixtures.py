"""Tiny unit-LM checkpoints in the exact on-disk layouts of TWIST and slamkit, built without either code base.

TWIST (facebookresearch/textlesslib, examples/twist/speech_lm.py): a released model is a zip of a plain Hugging Face
directory that ``AutoModelForCausalLM.from_pretrained(ckpt_dir)`` loads (``OPTForCausalLM`` for TWIST-350M/1.3B,
``LlamaForCausalLM`` for TWIST-7B/13B). Its config.json has one extra integer, ``offset``; generation feeds
``offset + units`` and returns ``generated - offset`` (no bos is prepended). The checkpoints were converted from fairseq,
whose dictionaries put ``<s>=0 <pad>=1 </s>=2 <unk>=3`` before the symbols, hence ``offset`` 4 and
``vocab_size = 500 + 4`` for the k=500 mHuBERT-25Hz units. `write_twist_dir` saves a random tiny model with
``save_pretrained`` and then rewrites config.json the way a 2023 (transformers 4.28) export reads: ``torch_dtype``
instead of ``dtype``, the OPT export's ``prefix``/``_remove_final_layer_norm`` keys, ``transformers_version`` 4.28.1,
plus ``offset``. ``weights="bin"`` writes ``pytorch_model.bin`` (``torch.save`` of the state dict, as 2023 exports
did) instead of ``model.safetensors``.

slamkit (slp-rl/slamkit, slamkit/model/unit_lm.py ``UnitLM``/``UnitLMConfig``; slamkit/tokeniser/unit_tokeniser.py):
``UnitLM`` is a ``PreTrainedModel`` wrapping the base causal LM as ``self.lm`` (so every weight is saved under ``lm.``)
and ``save_pretrained`` writes (transformers 4.4x, ``use_diff=True`` with ``is_composition=True``):

* config.json: ``model_type: "speech_language_model"``, ``architectures: ["UnitLM"]``, ``base_model_name``,
  ``base_config`` (the base LM's *full* ``to_dict()``, minus ``transformers_version``; its ``vocab_size`` is the text
  vocabulary because the LM is resized only after the config was copied, and its pad/bos/eos are slamkit's 0/1/1),
  ``vocab_size`` (502 = 500 units + pad + bos/eos), ``twist_init``, ``use_cache``, ``trust_remote_code``,
  ``use_safetensors``, ``max_position_embeddings``, ``tie_word_embeddings`` only when it is False (True is the
  PretrainedConfig default, so the diff drops it), ``torch_dtype``, ``transformers_version``, and the extra
  ``config_args`` of the hydra recipe (``dropout``, ``attention_dropout``, ``layerdrop``, Slam's ``rope_theta``), which
  also reach ``base_config``;
* model.safetensors: ``lm.model.…`` / ``lm.lm_head.weight``; with tied embeddings only ONE of the pair is stored —
  which one depends on the transformers version that saved it (older versions kept the alphabetically first name,
  ``lm.lm_head.weight``; newer ones drop the declared tied key and keep ``lm.model.embed_tokens.weight``);
* tokeniser_config.json (``UnitTokeniser.save_pretrained``): ``{"dedup", "bos_eos_token_id", "pad_token_id",
  "num_units", "load_fe"}``; slamkit's training scripts do not write it, so a trainer checkpoint may lack it.
  Units are tokens ``u + max(pad, bos, eos) + 1`` = ``u + 2``; a sequence is ``bos units eos`` with bos = eos = 1.

Nothing here imports textless: the fixtures stand for files written by other programs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig, PreTrainedModel

NUM_UNITS = 500
TWIST_OFFSET = 4  # fairseq dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3, then the units
SLAMKIT_OFFSET = 2  # pad 0, bos = eos 1, then the units

# ---------------------------------------------------------------------------------------------------------- helpers


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _randomize(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """Non-trivial weights everywhere (HF init leaves biases at 0 and norms at 1, which hides key mix-ups)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 else 0.0))
    return model.eval()


def token_ids(vocab_size: int, length: int = 12, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Random token ids covering the whole vocabulary range (specials included)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, length), generator=g)


# ------------------------------------------------------------------------------------------------------------- TWIST


def tiny_opt(vocab_size: int = NUM_UNITS + TWIST_OFFSET, seed: int = 0) -> PreTrainedModel:
    """A random 2-layer OPTForCausalLM with OPT-350M's peculiarities (post-LN, project_in/out) at toy size."""
    config = OPTConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=16, do_layer_norm_before=False,
                       pad_token_id=1, bos_token_id=2, eos_token_id=2, dropout=0.0, attention_dropout=0.0)
    return _randomize(AutoModelForCausalLM.from_config(config), seed)


def tiny_llama(vocab_size: int = NUM_UNITS + TWIST_OFFSET, seed: int = 0) -> PreTrainedModel:
    """A random 2-layer LlamaForCausalLM (untied head, grouped-query attention) at toy size."""
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return _randomize(AutoModelForCausalLM.from_config(config), seed)


_LEGACY_OPT_KEYS = {"_remove_final_layer_norm": False, "prefix": "</s>", "enable_bias": True,
                    "layer_norm_elementwise_affine": True}


def _legacy_config(config: dict[str, Any], offset: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    """config.json as a 2023 (transformers 4.28) export wrote it, plus TWIST's ``offset``."""
    out = dict(config)
    out.pop("dtype", None)
    out["torch_dtype"] = "float32"
    out["transformers_version"] = "4.28.1"
    out["_name_or_path"] = "facebook/opt-350m" if out.get("model_type") == "opt" else "huggyllama/llama-7b"
    if out.get("model_type") == "opt":
        out.update(_LEGACY_OPT_KEYS)
    elif "rope_parameters" in out:  # 4.28's LlamaConfig had no rope settings at all (theta 10000 implied)
        out.pop("rope_parameters")
    if offset is not None:
        out["offset"] = offset
    out.update(extra)
    return out


def write_twist_dir(path: str | Path, arch: Literal["opt", "llama"] = "opt", *, offset: int | None = TWIST_OFFSET,
                    weights: Literal["safetensors", "bin"] = "safetensors", seed: int = 0,
                    extra_config: dict[str, Any] | None = None) -> tuple[Path, PreTrainedModel]:
    """A TWIST-layout directory; returns it and the in-memory model it was saved from.

    `offset=None` leaves ``offset`` out (a plain HF LM, not a TWIST checkpoint); `extra_config` is merged into
    config.json last (to add e.g. ``num_units`` or to break things).
    """
    path = Path(path)
    model = (tiny_opt if arch == "opt" else tiny_llama)(seed=seed)
    model.save_pretrained(path)
    if weights == "bin":
        (path / "model.safetensors").unlink()
        state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}  # clone: untie shared storage
        torch.save(state, path / "pytorch_model.bin")
    config_path = path / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    _write_json(config_path, _legacy_config(config, offset, extra_config or {}))
    return path, model


# ----------------------------------------------------------------------------------------------------------- slamkit

# PretrainedConfig.to_dict() of transformers 4.4x: the common attributes every config carried, with their defaults.
_V4_COMMON: dict[str, Any] = {
    "return_dict": True, "output_hidden_states": False, "output_attentions": False, "torchscript": False,
    "use_bfloat16": False, "tf_legacy_loss": False, "pruned_heads": {}, "chunk_size_feed_forward": 0,
    "is_encoder_decoder": False, "is_decoder": False, "cross_attention_hidden_size": None,
    "add_cross_attention": False, "tie_encoder_decoder": False, "max_length": 20, "min_length": 0,
    "do_sample": False, "early_stopping": False, "num_beams": 1, "num_beam_groups": 1, "diversity_penalty": 0.0,
    "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0, "repetition_penalty": 1.0,
    "length_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None,
    "num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "finetuning_task": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "tokenizer_class": None, "prefix": None, "sep_token_id": None, "decoder_start_token_id": None,
    "task_specific_params": None, "problem_type": None,
}

# The hydra recipe's config_args that are not UnitLMConfig parameters (config/model/default.yaml, slam.yaml): they go
# to PretrainedConfig(**kwargs) (top level) and to AutoConfig.from_pretrained(base_model_name, **kwargs) (base_config).
_RECIPE_EXTRAS: dict[str, Any] = {"dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0, "rope_theta": 10000}


def slamkit_base_config(base: Literal["qwen2", "llama"] = "qwen2", *, text_vocab_size: int = 1000,
                        tie_word_embeddings: bool = True, dtype: str = "float32") -> dict[str, Any]:
    """The ``base_config`` dict slamkit writes (a tiny Qwen2.5- or Llama-shaped LM, transformers 4.4x keys)."""
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[base]
    out = dict(_V4_COMMON)
    out.update({
        "_name_or_path": "Qwen/Qwen2.5-0.5B" if base == "qwen2" else "meta-llama/Llama-3.2-1B",
        "architectures": [arch], "model_type": base, "torch_dtype": dtype, "tie_word_embeddings": tie_word_embeddings,
        "vocab_size": text_vocab_size, "max_position_embeddings": 128, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "silu",
        "initializer_range": 0.02, "rms_norm_eps": 1e-6, "use_cache": False, "rope_scaling": None,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 1,
    })
    if base == "qwen2":
        out.update({"use_sliding_window": False, "sliding_window": None, "max_window_layers": 2})
    else:
        out.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1, "head_dim": 8})
    out.update(_RECIPE_EXTRAS)
    return out


def slamkit_config(base_config: dict[str, Any], vocab_size: int = NUM_UNITS + SLAMKIT_OFFSET,
                   dtype: str = "float32") -> dict[str, Any]:
    """The top-level config.json of a slamkit ``UnitLM`` (``to_diff_dict`` of ``UnitLMConfig``)."""
    out: dict[str, Any] = {
        "architectures": ["UnitLM"], "model_type": "speech_language_model", "base_config": base_config,
        "base_model_name": base_config["_name_or_path"], "vocab_size": vocab_size, "twist_init": True,
        "use_cache": False, "trust_remote_code": None, "use_safetensors": None,
        "max_position_embeddings": base_config["max_position_embeddings"], "torch_dtype": dtype,
        "transformers_version": "4.48.3",
    }
    if not base_config["tie_word_embeddings"]:
        out["tie_word_embeddings"] = False
    out.update(_RECIPE_EXTRAS)
    return out


def tokeniser_config(num_units: int = NUM_UNITS, dedup: bool = True) -> dict[str, Any]:
    """``UnitTokeniser.save_pretrained``'s tokeniser_config.json (load_fe is always written False)."""
    return {"dedup": dedup, "bos_eos_token_id": 1, "pad_token_id": 0, "num_units": num_units, "load_fe": False}


def slamkit_base_model(base_config: dict[str, Any], vocab_size: int, seed: int = 0,
                       dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The base causal LM slamkit wraps, resized to the unit vocabulary, random weights."""
    from transformers import AutoConfig

    cfg = dict(base_config)
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    config.vocab_size = vocab_size
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return _randomize(model, seed).to(dtype)


def write_slamkit_dir(path: str | Path, base: Literal["qwen2", "llama"] = "qwen2", *, num_units: int = NUM_UNITS,
                      tie_word_embeddings: bool = True, tied_key: Literal["embed", "lm_head"] = "embed",
                      with_tokeniser_config: bool = True, dedup: bool = True, prefix: str = "lm.",
                      dtype: torch.dtype = torch.float32, seed: int = 0,
                      base_overrides: dict[str, Any] | None = None,
                      config_overrides: dict[str, Any] | None = None) -> tuple[Path, PreTrainedModel]:
    """A slamkit ``UnitLM.save_pretrained`` directory; returns it and the base LM (un-prefixed) it holds.

    `tied_key`: which of the tied pair the safetensors file keeps (see the module docstring). `prefix` other than
    ``"lm."`` makes a malformed file; `base_overrides` / `config_overrides` are merged into ``base_config`` / the
    top-level config.json last.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    dtype_name = str(dtype).removeprefix("torch.")
    vocab_size = num_units + SLAMKIT_OFFSET
    base_config = slamkit_base_config(base, tie_word_embeddings=tie_word_embeddings, dtype=dtype_name)
    base_config.update(base_overrides or {})
    model = slamkit_base_model(base_config, vocab_size, seed, dtype)
    state = {f"{prefix}{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if tie_word_embeddings:
        state.pop(f"{prefix}model.embed_tokens.weight" if tied_key == "lm_head" else f"{prefix}lm_head.weight")
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = slamkit_config(base_config, vocab_size, dtype_name)
    config.update(config_overrides or {})
    _write_json(path / "config.json", config)
    _write_json(path / "generation_config.json", {"_from_model_config": True, "transformers_version": "4.48.3",
                                                  "use_cache": False})
    if with_tokeniser_config:
        (path / "tokeniser_config.json").write_text(json.dumps(tokeniser_config(num_units, dedup)), encoding="utf-8")
    return path, model


def reshard_safetensors(directory: str | Path, shards: int = 2) -> Path:
    """Split ``model.safetensors`` into ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, as
    ``save_pretrained`` does for models above ``max_shard_size``; returns the index."""
    from safetensors.torch import load_file

    directory = Path(directory)
    single = directory / "model.safetensors"
    state = load_file(str(single))
    names = sorted(state)
    weight_map, total = {}, 0
    for i in range(shards):
        shard_name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[i::shards]}
        save_file(part, str(directory / shard_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard_name))
        total += sum(t.numel() * t.element_size() for t in part.values())
    single.unlink()
    index = directory / "model.safetensors.index.json"
    _write_json(index, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return index
