"""`ListenSpeakLM`: a speaking unit LM (any `UnitLM`) that listens to the other side's continuous features.

Fusions (``FusionConfig.fusion``; LSLM, Ma et al. 2024, seed 002 section 4.3, and the duplex S2S model, seed 003):

* ``early``  - the projected listening features are added to the input embeddings;
* ``middle`` - they are added to the input of every transformer block (a forward pre-hook on each decoder layer);
* ``late``   - a projection of them to the vocabulary is added to the output logits;
* ``sum``    - duplex S2S channel fusion: ``embed(token) + user_weight * adapter(features)`` per frame (NeMo's
  ``duplex_user_channel_weight``); the same place as ``early``, with the adapter projection by default.

Shapes. ``input_ids`` int64 [B, L]; ``listen`` float [B, L, D] (D = the listening channel's feature size), aligned
with the input positions: position i (token x_i, predicting x_{i+1}) reads listening frame i - 1 of the utterance,
position 0 (``<bos>``) reads zeros - the model emits speaking frame t having heard listening frames < t (LSLM eq. 11:
P(r_t | R_{1:t-1}, S_{1:t-1}); the duplex S2S model's one-frame delay). ``listen_positions`` builds that alignment.
Frames must be at the LM's frame rate (frame-level units, not deduplicated).

Projections (``projection``): ``linear`` (LSLM: "a simple linear layer") or ``adapter`` (Linear -> GELU -> Linear,
as the duplex S2S modality adapter), both without biases and with the last layer zero-initialised: zero listening
features give exactly the plain LM (x + 0 == x in floating point), and a fresh model IS the plain LM until trained.
The features are first divided by a fixed per-dimension scale (`Projection.scale_to`: 1 / RMS over the training
data, so raw MFCC or SSL features of any magnitude train alike; zero stays zero).

Vocabulary. The speaking LM needs an ``irq`` special token (LSLM's interruption token; ``eos`` stays): `with_irq`
adds it to a `UnitLM` (the id after the units; the embedding table grows only when that id is past its size, keeping
every existing row; `with_specials` adds others, e.g. the duplex S2S agent's turn markers).

Streaming: ``with model.streaming(B): model.step(tokens [B], listen [B, D]) -> logits [B, V]``, the wrapped
`UnitLM`'s KV cache underneath (staggered, reset and paused streams as `textless.lm.streaming`); equal to `forward`.

Persistence: ``save_pretrained(dir)`` writes ``lm/`` (the `UnitLM` directory), ``fusion.safetensors`` and
``config.json`` (versioned header + `FusionConfig`); `from_pretrained` reads them back. A listening encoder trained
with the model (train-lslm ``listening.trainable``) is saved beside them (``listener/``, a Hugging Face directory)
and ``config.listening.encoder`` names it relative to the directory; `from_pretrained` resolves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from textless.errors import ConfigError, FormatError
from textless.lm.model import UnitLM
from textless.lm.vocab import UnitVocab
from textless.streaming import StreamingContainer, StreamingError
from textless.utils.atomic import atomic_directory
from textless.utils.versioned import artifact

FUSIONS = ("early", "middle", "late", "sum")
PROJECTIONS = ("linear", "adapter")
IRQ = "irq"
LSLM_ARTIFACT = artifact("textless.listen_speak_lm", 1, "a textless listen-while-speaking LM directory")
CONFIG_FILE = "config.json"
FUSION_WEIGHTS = "fusion.safetensors"
LM_DIR = "lm"


@dataclass
class FusionConfig:
    """Where and how the listening features enter the speaking LM (module docstring)."""

    fusion: str = "middle"
    listen_dim: int = 0                 # D: features per listening frame
    projection: str | None = None       # None: "adapter" for sum, "linear" otherwise
    adapter_dim: int = 256              # hidden width of the adapter
    user_weight: float = 1.0            # scale of the listening term
    listening: dict[str, Any] | None = field(default=None)  # the listening channel's config (what D means)
    prefix: str = "none"                # what it reads before <bos>: none | characters (TTS-conditioned)

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.projection is None:
            self.projection = "adapter" if self.fusion == "sum" else "linear"
        if self.projection not in PROJECTIONS:
            raise ConfigError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if not (isinstance(self.listen_dim, int) and self.listen_dim >= 1):
            raise ConfigError(f"listen_dim must be the listening features' size (>= 1), got {self.listen_dim!r}")
        if not (isinstance(self.adapter_dim, int) and self.adapter_dim >= 1):
            raise ConfigError(f"adapter_dim must be >= 1, got {self.adapter_dim!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown FusionConfig keys {unknown}")
        return cls(**data)


class Projection(nn.Module):
    """features [..., D] -> [..., out]: ``input_scale`` (a fixed per-dimension factor, 1 by default; `scale_to`
    sets 1 / RMS of training features) then a bias-free linear or adapter, last layer zero-initialised (f(0) = 0)."""

    def __init__(self, kind: str, dim: int, out: int, hidden: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, out, bias=False)] if kind == "linear" else [
            nn.Linear(dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, out, bias=False)]
        nn.init.zeros_(layers[-1].weight)
        self.net = nn.Sequential(*layers)
        self.register_buffer("input_scale", torch.ones(dim))

    def scale_to(self, features: torch.Tensor) -> None:
        """Divide every later input by the root mean square of `features` [N, D] per dimension (scaling only: zero
        stays zero, so zero features still give the plain LM)."""
        rms = features.float().pow(2).mean(dim=0).sqrt()
        self.input_scale.copy_(torch.where(rms > 1e-8, 1.0 / rms.clamp_min(1e-8), torch.ones_like(rms)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.input_scale.to(x.dtype))


def with_specials(lm: UnitLM, names: tuple[str, ...] | list[str]) -> UnitLM:
    """`lm` with the special tokens `names` it lacks (in place), each the next id after the units and specials; the
    embedding table and head grow only when an id is past the vocabulary's size (existing rows kept)."""
    vocab = lm.vocab
    specials = dict(vocab.specials)
    for name in names:
        if name not in specials:
            specials[name] = max(vocab.offset + vocab.num_units, *(i + 1 for i in specials.values()))
    if specials == dict(vocab.specials):
        return lm
    needed = max(specials.values()) + 1
    new = UnitVocab(vocab.num_units, vocab.offset, specials, size=vocab.size if needed <= vocab.size else None)
    if new.size != vocab.size:
        lm.model.resize_token_embeddings(new.size, mean_resizing=False)
    lm.vocab = new
    return lm


def with_irq(lm: UnitLM) -> UnitLM:
    """`lm` with an ``irq`` special (`with_specials`)."""
    return with_specials(lm, [IRQ])


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of an HF causal LM (Llama ``model.layers``, OPT ``model.decoder.layers``...)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith("layers") and len(module) > 0:
            return module
    raise ConfigError(f"cannot find the transformer blocks of {type(model).__name__} for middle fusion")


def listen_positions(frames: torch.Tensor, length: int) -> torch.Tensor:
    """Listening frames [B, F, D] -> the listening input of `length` positions [B, length, D]: position i reads
    frame i - 1 (position 0 and frames past F read zeros; module docstring)."""
    out = frames.new_zeros(frames.shape[0], length, frames.shape[2])
    n = max(0, min(frames.shape[1], length - 1))
    out[:, 1:n + 1] = frames[:, :n]
    return out


class ListenSpeakLM(StreamingContainer):
    """A `UnitLM` with an ``irq`` token plus a listening projection fused early / middle / late / sum."""

    def __init__(self, lm: UnitLM, config: FusionConfig):
        super().__init__()
        if IRQ not in lm.vocab.specials:
            raise ConfigError("the speaking LM has no 'irq' token: wrap it with textless.dialogue.lslm.with_irq(lm)")
        self.lm = lm
        self.config = config
        embedding = lm.model.get_input_embeddings().embedding_dim
        width = {"early": embedding, "sum": embedding, "middle": lm.model.config.hidden_size,
                 "late": lm.vocab.size}[config.fusion]
        self.projection = Projection(config.projection, config.listen_dim, width, config.adapter_dim)
        self._term: torch.Tensor | None = None  # the listening term of the running call (middle fusion)
        if config.fusion == "middle":
            for layer in decoder_layers(lm.model):
                layer.register_forward_pre_hook(self._add_to_block_input, with_kwargs=True)

    # ------------------------------------------------------------------------------------------------ fusion
    @property
    def vocab(self) -> UnitVocab:
        return self.lm.vocab

    @property
    def irq_id(self) -> int:
        return self.lm.vocab.specials[IRQ]

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def listen_term(self, listen: torch.Tensor) -> torch.Tensor:
        """listen [B, L, D] -> user_weight * projection [B, L, width] (in the LM's dtype)."""
        if listen.shape[-1] != self.config.listen_dim:
            raise ValueError(f"listening features have {listen.shape[-1]} dims, the model reads "
                             f"{self.config.listen_dim}")
        term = self.projection(listen.to(self.projection.input_scale.dtype))
        return (self.config.user_weight * term).to(self.lm.dtype)

    def _add_to_block_input(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if self._term is None:
            return None
        if args:
            return (args[0] + self._term.to(args[0].dtype), *args[1:]), kwargs
        kwargs = {**kwargs, "hidden_states": kwargs["hidden_states"] + self._term.to(kwargs["hidden_states"].dtype)}
        return args, kwargs

    @contextmanager
    def _blocks_reading(self, term: torch.Tensor) -> Iterator[None]:
        self._term = term
        try:
            yield
        finally:
            self._term = None

    def forward(self, input_ids: torch.Tensor, listen: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        """input_ids int64 [B, L], listen [B, L, D] (None: zeros, the plain LM) -> logits float [B, L, V]."""
        kwargs = {"attention_mask": attention_mask, "position_ids": position_ids}
        if listen is None:
            return self.lm.model(input_ids=input_ids, **kwargs).logits
        if listen.shape[:2] != input_ids.shape:
            raise ValueError(f"listen {tuple(listen.shape)} does not cover input_ids {tuple(input_ids.shape)}")
        term = self.listen_term(listen)
        fusion = self.config.fusion
        if fusion in ("early", "sum"):
            embeds = self.lm.model.get_input_embeddings()(input_ids) + term
            return self.lm.model(inputs_embeds=embeds, **kwargs).logits
        if fusion == "middle":
            with self._blocks_reading(term):
                return self.lm.model(input_ids=input_ids, **kwargs).logits
        return self.lm.model(input_ids=input_ids, **kwargs).logits + term.to(torch.float32)

    # ------------------------------------------------------------------------------------------------ streaming
    @torch.no_grad()
    def step(self, tokens: torch.Tensor, listen: torch.Tensor) -> torch.Tensor:
        """tokens int [B] (each stream's next token) and listen [B, D] (the frame its position reads) -> next-token
        logits float32 [B, V]."""
        self._require_streaming("ListenSpeakLM.step")
        tokens = torch.as_tensor(tokens, device=self.device)
        listen = torch.as_tensor(listen, device=self.device)
        if listen.dim() != 2 or listen.shape[0] != tokens.shape[0]:
            raise StreamingError(f"ListenSpeakLM.step: listen takes [B, {self.config.listen_dim}] for {tokens.shape[0]}"
                                 f" streams, got {tuple(listen.shape)}")
        term = self.listen_term(listen[:, None].float())
        fusion = self.config.fusion
        if fusion in ("early", "sum"):
            embeds = self.lm.model.get_input_embeddings()(tokens.long()[:, None]) + term
            return self.lm.step(tokens, inputs_embeds=embeds[:, 0])
        if fusion == "middle":
            with self._blocks_reading(term):
                return self.lm.step(tokens)
        return self.lm.step(tokens) + term[:, 0].float()

    def inference_listening(self, **overrides: Any) -> dict[str, Any]:
        """The recorded listening channel's config (`ListeningConfig` fields) for running the model: its encoder
        frozen (``trainable`` off), `overrides` applied."""
        if not self.config.listening:
            raise ConfigError("the model does not record its listening channel (config.listening)")
        return {**self.config.listening, "trainable": False, **overrides}

    # ------------------------------------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """``lm/`` + ``fusion.safetensors`` + ``config.json``, atomically."""
        path = Path(path)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.projection.state_dict().items()}
        with atomic_directory(path, overwrite=overwrite) as tmp:
            self.lm.save_pretrained(tmp / LM_DIR)
            save_file(weights, str(tmp / FUSION_WEIGHTS), metadata={"format": LSLM_ARTIFACT.name})
            (tmp / CONFIG_FILE).write_text(LSLM_ARTIFACT.dumps({"fusion": self.config.to_dict()}))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu") -> ListenSpeakLM:
        """Load a `save_pretrained` directory, in eval mode."""
        path = Path(path)
        meta = LSLM_ARTIFACT.read_dir(path, CONFIG_FILE)
        try:
            config = FusionConfig.from_dict(meta["fusion"])
        except (KeyError, TypeError, ConfigError) as e:
            raise FormatError(path / CONFIG_FILE, f"bad fusion config ({e})") from None
        listening = config.listening or {}
        if isinstance(listening.get("encoder"), str) and (path / listening["encoder"]).is_dir():
            config.listening = {**listening, "encoder": str((path / listening["encoder"]).resolve())}
        model = cls(UnitLM.from_pretrained(path / LM_DIR), config)
        try:
            model.projection.load_state_dict(load_file(str(path / FUSION_WEIGHTS)))
        except (OSError, SafetensorError, RuntimeError) as e:
            raise FormatError(path / FUSION_WEIGHTS, str(e).splitlines()[0]) from None
        return model.to(device).eval()
