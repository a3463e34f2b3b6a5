"""`UnitLM`: a Hugging Face causal LM over unit tokens, plus what it needs to know about its units.

Shapes. ``input_ids`` / ``attention_mask`` / ``position_ids`` / ``labels`` are int64 ``[B, T]`` token ids (see
`textless.lm.vocab` for the unit <-> token layout); ``forward`` returns the wrapped model's output (``logits``
``[B, T, vocab.size]``, ``loss`` when ``labels`` are given: transformers shifts them, ``labels[t]`` is predicted at
position ``t - 1``, ``-100`` is ignored).

Checkpoint format. A plain Hugging Face model directory (``config.json`` + ``model.safetensors`` [+
``generation_config.json``]) that any ``AutoModelForCausalLM.from_pretrained`` reads; textless' own metadata sits
INSIDE ``config.json`` under the key ``"textless"``::

    "textless": {"format": "textless.unit_lm", "version": 1, "vocab": UnitVocab.to_dict(), "tokenizer": {...} | null,
                 "frame_rate": float | null, "deduplicated": bool | null}

Directories without that key (TWIST / slamkit / GSLM releases) are read by `textless.lm.loaders`.

Initialisations: `UnitLM.from_scratch` (GSLM: random weights from a `textless.lm.presets` config) and
`UnitLM.from_text_lm` (TWIST: every transformer weight of a text LM, fresh unit embeddings; `textless.lm.twist`).

Attention backend. Every constructor (and `textless.lm.loaders`) takes ``attn_implementation``: None keeps
transformers' default (``"sdpa"``), or ``"sdpa"`` / ``"eager"`` / ``"flash_attention_2"`` / ``"flash_attention_3"``
(`textless.lm.attention`); a flash backend whose package is not importable is a `ConfigError` before any model is
built (`check_attn_implementation`). The choice lives on the loaded model (``model.config._attn_implementation``),
not in the checkpoint: a directory reloads with the default unless asked otherwise. Packed training with a flash
backend needs an architecture that keeps packed segments apart through restarting position ids (Llama, Qwen2...):
flash attention takes no 4-D mask, so `textless.lm.data.packing_mode` refuses it for the others (OPT).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from textless.data.identity import UnitIdentity, check_fits
from textless.data.units import UnitMeta
from textless.errors import FormatError, TextlessError
from textless.lm.attention import attn_kwargs, check_attn_implementation
from textless.lm.streaming import StreamingUnitLM
from textless.lm.vocab import UnitVocab, VocabError
from textless.utils.atomic import atomic_directory, atomic_write_text
from textless.utils.hf import quiet_progress_bars
from textless.utils.versioned import artifact

if TYPE_CHECKING:
    from textless.lm.generation import SamplingConfig
    from textless.lm.scoring import LogLikelihood

CONFIG_KEY = "textless"
UNIT_LM = artifact("textless.unit_lm", 1, "a textless unit LM")
CONFIG_FILE = "config.json"
_LOADERS_HINT = ("it may be a TWIST / slamkit / GSLM checkpoint or a plain text LM: import it with textless.lm.loaders "
                 "(or build a unit LM from a text LM with UnitLM.from_text_lm)")


class UnitLM(StreamingUnitLM):
    """A causal LM over unit tokens (`model`: any `AutoModelForCausalLM`) and its unit metadata.

    `tokenizer` is the identity dict of the unit tokenizer it was trained on (`UnitMeta.tokenizer`), `frame_rate`
    (Hz, before deduplication) and `deduplicated` describe its units; all three may be None (unknown).
    """

    def __init__(self, model: PreTrainedModel, vocab: UnitVocab, tokenizer: dict | None = None,
                 frame_rate: float | None = None, deduplicated: bool | None = None):
        super().__init__()
        _check_model_vocab(model, vocab)
        self.model = model
        self.vocab = vocab
        self.tokenizer = dict(tokenizer) if tokenizer is not None else None
        self.frame_rate = float(frame_rate) if frame_rate is not None else None
        self.deduplicated = bool(deduplicated) if deduplicated is not None else None

    # ------------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_scratch(cls, preset: str | PretrainedConfig, vocab: UnitVocab, *, tokenizer: dict | None = None,
                     frame_rate: float | None = None, deduplicated: bool | None = None,
                     attn_implementation: str | None = None) -> UnitLM:
        """GSLM-style: random weights (the architecture's own init; seed with `torch.manual_seed`).

        `preset` is a name in `textless.lm.presets.PRESETS` or a config (its vocabulary fields are overwritten);
        `attn_implementation`: see the module docstring.
        """
        from textless.lm.presets import build_config

        config = build_config(preset, vocab)
        model = AutoModelForCausalLM.from_config(config, **attn_kwargs(attn_implementation))
        return cls(model, vocab, tokenizer=tokenizer, frame_rate=frame_rate, deduplicated=deduplicated)

    @classmethod
    def from_text_lm(cls, source: str | Path | PreTrainedModel, vocab: UnitVocab, *, gguf_file: str | None = None,
                     torch_dtype: torch.dtype = torch.float32, tokenizer: dict | None = None,
                     frame_rate: float | None = None, deduplicated: bool | None = None,
                     attn_implementation: str | None = None) -> UnitLM:
        """TWIST-style: keep every transformer weight of a text LM, replace the vocabulary-bound tensors.

        `source`: a loaded model (modified IN PLACE and wrapped; `attn_implementation` is switched on it when given)
        or a text LM source of `textless.lm.twist.load_text_lm` (a local HF directory, a ``.gguf`` file, or
        ``offline:smollm2-135m``).
        """
        from textless.lm.twist import init_from_text_lm, load_text_lm

        if isinstance(source, PreTrainedModel):
            base = source
            if check_attn_implementation(attn_implementation):
                base.set_attn_implementation(attn_implementation)
        else:
            base = load_text_lm(source, gguf_file=gguf_file, torch_dtype=torch_dtype,
                                attn_implementation=attn_implementation)
        model = init_from_text_lm(base, vocab)
        return cls(model, vocab, tokenizer=tokenizer, frame_rate=frame_rate, deduplicated=deduplicated)

    # ------------------------------------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        """The ``"textless"`` entry of config.json."""
        return {**UNIT_LM.header(), "vocab": self.vocab.to_dict(), "tokenizer": self.tokenizer,
                "frame_rate": self.frame_rate, "deduplicated": self.deduplicated}

    def save_pretrained(self, path: str | Path, *, overwrite: bool = False, safe_serialization: bool = True) -> Path:
        """Write an HF model directory at `path` (atomically) with the textless metadata inside config.json."""
        path = Path(path)
        meta = self.metadata()
        with atomic_directory(path, overwrite=overwrite) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=safe_serialization)
            config_file = tmp / CONFIG_FILE
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config[CONFIG_KEY] = meta
            atomic_write_text(config_file, json.dumps(config, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, torch_dtype: torch.dtype | str | None = None,
                        device: str | torch.device | None = None, attn_implementation: str | None = None) -> UnitLM:
        """Load a directory written by `save_pretrained`.

        `torch_dtype` None keeps the dtype recorded in the checkpoint (transformers 5's "auto"); `device` moves the
        model after loading; `attn_implementation`: see the module docstring. Raises `TextlessError` for a directory
        without textless metadata (see `_LOADERS_HINT`).
        """
        path = Path(path)
        meta = read_metadata(path)
        kwargs: dict[str, Any] = {"dtype": torch_dtype if torch_dtype is not None else "auto",
                                  "local_files_only": True, **attn_kwargs(attn_implementation)}
        try:
            with quiet_progress_bars():
                model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as e:
            files = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
            raise FormatError(path, f"cannot load the model's weights ({', '.join(files) or 'no weight file'}): "
                                    f"{type(e).__name__}: {_first_sentence(str(e))}") from e
        if device is not None:
            model = model.to(device)
        model.eval()
        return cls(model, meta["vocab"], tokenizer=meta["tokenizer"], frame_rate=meta["frame_rate"],
                   deduplicated=meta["deduplicated"])

    # ------------------------------------------------------------------------------------------------ checks
    @property
    def units(self) -> UnitIdentity:
        """The units this LM reads and writes (`textless.data.identity`); an imported TWIST / slamkit model knows
        no tokenizer, so it takes any units whose ids fit its vocabulary."""
        known = self.tokenizer is not None  # an imported checkpoint's frame rate is its family's default, not a fact
        return UnitIdentity(tokenizer=self.tokenizer, vocab_size=self.vocab.num_units,
                            frame_rate=self.frame_rate if known else None, deduplicated=self.deduplicated)

    def check_units(self, units: UnitMeta | UnitIdentity, where: str = "", name: str = "this unit LM") -> None:
        """`check_fits` (the one units rule) of `units` (a dataset's meta or an identity) against this LM;
        `where` names the units' source in the message, `name` the LM."""
        given = units.identity if isinstance(units, UnitMeta) else units
        check_fits(self.units, given, consumer=name, source=where or "the unit dataset", short="the LM")

    # ------------------------------------------------------------------------------------------------ running
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        """Passthrough to `self.model` (see the module docstring for shapes)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          labels=labels, **kwargs)

    def log_likelihood(self, sequences: Sequence[np.ndarray], **kwargs: Any) -> LogLikelihood:
        """`textless.lm.scoring.log_likelihood(self, sequences, ...)`."""
        from textless.lm.scoring import log_likelihood

        return log_likelihood(self, sequences, **kwargs)

    def generate_units(self, prompts: Sequence[np.ndarray], config: SamplingConfig | None = None,
                       **kwargs: Any) -> list[list[np.ndarray]]:
        """`textless.lm.generation.generate_units(self, prompts, config, ...)` (default `SamplingConfig()`)."""
        from textless.lm.generation import SamplingConfig, generate_units

        return generate_units(self, prompts, config if config is not None else SamplingConfig(), **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_positions(self) -> int | None:
        """Longest sequence (tokens) the model's positions cover, or None when unbounded / unknown."""
        return max_positions(self.model.config)

    def num_parameters(self, *, trainable_only: bool = False) -> int:
        """Parameters counted once each (tied embeddings count once)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        name = self.tokenizer.get("name") if self.tokenizer else None
        return f"vocab={self.vocab}, tokenizer={name!r}, frame_rate={self.frame_rate}, dedup={self.deduplicated}"


# ---------------------------------------------------------------------------------------------------------------------
# helpers (also used by textless.lm.loaders / train)
# ---------------------------------------------------------------------------------------------------------------------


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Parse the ``"textless"`` entry of ``path/config.json``; ``vocab`` comes back as a `UnitVocab`."""
    path = Path(path)
    config_file = path / CONFIG_FILE
    if not path.is_dir():
        raise TextlessError(f"unit LM '{path}': not a directory")
    if not config_file.is_file():
        raise FormatError(config_file, "missing: not a Hugging Face model directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(config_file, f"invalid JSON ({e})") from None
    if not isinstance(config, dict) or CONFIG_KEY not in config:
        raise TextlessError(f"unit LM '{path}': config.json has no {CONFIG_KEY!r} entry, so it was not written by "
                            f"textless; {_LOADERS_HINT}")
    return _parse_metadata(config[CONFIG_KEY], config_file)


def _parse_metadata(meta: Any, config_file: Path) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise FormatError(config_file, f"{CONFIG_KEY!r} must be an object")
    # textless <= 0.1 wrote only {"format_version": 1}
    UNIT_LM.check(meta if "format" in meta else {"format": UNIT_LM.name, **meta}, config_file)
    try:
        vocab = UnitVocab.from_dict(meta.get("vocab"))
    except VocabError as e:
        raise FormatError(config_file, f"{CONFIG_KEY}.vocab: {e}") from None
    tokenizer = meta.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, dict):
        raise FormatError(config_file, f"{CONFIG_KEY}.tokenizer must be an object or null")
    return {"vocab": vocab, "tokenizer": tokenizer, "frame_rate": meta.get("frame_rate"),
            "deduplicated": meta.get("deduplicated")}


def lm_meta(meta: UnitMeta) -> dict[str, Any]:
    """`UnitMeta` -> the keyword arguments (tokenizer, frame_rate, deduplicated) of the UnitLM constructors."""
    return {"tokenizer": dict(meta.tokenizer), "frame_rate": meta.frame_rate, "deduplicated": meta.deduplicated}


def max_positions(config: PretrainedConfig) -> int | None:
    """``max_position_embeddings`` (Llama, OPT, Qwen2) or ``n_positions`` (GPT-2), else None."""
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _check_model_vocab(model: PreTrainedModel, vocab: UnitVocab) -> None:
    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"UnitLM wraps a transformers PreTrainedModel, got {type(model).__name__}")
    if not isinstance(vocab, UnitVocab):
        raise TypeError(f"vocab must be a UnitVocab, got {type(vocab).__name__}")
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < vocab.size:
        raise TextlessError(f"the model has {rows} embedding rows but the vocabulary needs {vocab.size}")


def _first_sentence(message: str) -> str:
    """The first sentence of a library's (often multi-paragraph) error message."""
    return message.strip().splitlines()[0].split(". ")[0][:300] if message.strip() else "(no message)"
