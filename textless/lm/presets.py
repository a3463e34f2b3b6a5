"""Model configurations for unit LMs trained from scratch: ``PRESETS[name](vocab_size) -> PretrainedConfig``.

Sizes (parameters for a ~100-unit vocabulary, embeddings included; tied embeddings everywhere; context 2048):

    name         arch   layers  d     heads (kv)  ffn          params   use
    tiny         Llama   2      64     4 (4)       256 SwiGLU   ~0.1M    unit tests
    starter      OPT     4      256    4          1024 ReLU     ~3.7M    the shipped starter LM (bundled corpus, CPU)
    small        Llama  12      384    6 (6)      1024 SwiGLU   ~21M     bundled corpus, CPU benchmarks
    gslm         OPT    12      1024  16         4096 ReLU      ~152M    fairseq transformer_lm_big (GSLM ULM) sizes
    twist-350m   OPT    24      1024  16         4096 ReLU      ~303M    OPT-350M (TWIST-350M's base) exactly
    350m         Llama  24      896   14 (2)     4864 SwiGLU   ~358M    GPU benchmarks; Qwen2.5-0.5B / Slam body sizes

Llama = RoPE, RMSNorm, SwiGLU, no biases (SDPA attention by default in transformers 5). "gslm" uses OPT because
OPT is fairseq's transformer LM (learned positions, LayerNorm, ReLU FFN, pre-LN), so ``transformer_lm_big``'s
sizes mean the same parameter count (~151M body) as GSLM's ULM; "twist-350m" copies OPT-350M (post-LN,
``word_embed_proj_dim`` 512 with project_in/out). Every config gets ``vocab_size`` and the pad/bos/eos ids of the
`UnitVocab` (`build_config` / `set_vocab_fields`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from transformers import LlamaConfig, OPTConfig, PretrainedConfig

from textless.errors import ConfigError
from textless.lm.vocab import UnitVocab

MAX_POSITIONS = 2048


def _llama(vocab_size: int, *, layers: int, d: int, heads: int, kv_heads: int, ffn: int,
           rope_theta: float = 10000.0) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab_size, hidden_size=d, intermediate_size=ffn, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=MAX_POSITIONS,
                       rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
                       tie_word_embeddings=True, attention_bias=False, mlp_bias=False, initializer_range=0.02)


def _opt(vocab_size: int, *, layers: int, d: int, heads: int, ffn: int, pre_ln: bool = True,
         word_embed_proj_dim: int | None = None) -> OPTConfig:
    return OPTConfig(vocab_size=vocab_size, hidden_size=d, ffn_dim=ffn, num_hidden_layers=layers,
                     num_attention_heads=heads, max_position_embeddings=MAX_POSITIONS, do_layer_norm_before=pre_ln,
                     word_embed_proj_dim=word_embed_proj_dim or d, activation_function="relu", dropout=0.1,
                     attention_dropout=0.0, tie_word_embeddings=True, init_std=0.02)


PRESETS: dict[str, Callable[[int], PretrainedConfig]] = {
    "tiny": lambda v: _llama(v, layers=2, d=64, heads=4, kv_heads=4, ffn=256),
    "starter": lambda v: _opt(v, layers=4, d=256, heads=4, ffn=1024),
    "small": lambda v: _llama(v, layers=12, d=384, heads=6, kv_heads=6, ffn=1024),
    "gslm": lambda v: _opt(v, layers=12, d=1024, heads=16, ffn=4096),
    "twist-350m": lambda v: _opt(v, layers=24, d=1024, heads=16, ffn=4096, pre_ln=False, word_embed_proj_dim=512),
    "350m": lambda v: _llama(v, layers=24, d=896, heads=14, kv_heads=2, ffn=4864, rope_theta=1e6),
}


def set_vocab_fields(config: PretrainedConfig, vocab: UnitVocab) -> PretrainedConfig:
    """Write ``vocab_size`` and ``pad/bos/eos_token_id`` of `vocab` into `config` (in place; returned)."""
    config.vocab_size = vocab.size
    for name in ("pad", "bos", "eos"):
        setattr(config, f"{name}_token_id", vocab.specials.get(name))
    return config


def build_config(preset: str | PretrainedConfig, vocab: UnitVocab) -> PretrainedConfig:
    """A preset name (or a config, deep-copied) with `vocab`'s size and special ids."""
    if isinstance(preset, PretrainedConfig):
        config = copy.deepcopy(preset)
    elif preset in PRESETS:
        config = PRESETS[preset](vocab.size)
    else:
        raise ConfigError(f"unknown unit LM preset {preset!r}; choose one of {sorted(PRESETS)} or pass a "
                          f"transformers config")
    return set_vocab_fields(config, vocab)
