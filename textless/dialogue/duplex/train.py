"""`textless train-duplex`: a `DuplexLM` (native fusion or time multiplexing) trained on two-channel unit data.

The engine (`textless.training.engine`) owns processes, DDP / FSDP, precision, budgets, validation cadence,
TensorBoard, checkpoints and exact resume; this module gives it the data stream, the loss and the model files. It
follows `textless.dialogue.dgslm.train` (whose window grid it imports).

Examples. Windows are `context` frames cut from ONE conversation on dGSLM's grid (`window_starts`: starts 0, context,
..., the last one moved back to end with the conversation; a conversation of N <= context frames is one window of N
frames), and EVERY window appears twice: once with channel 0 as the model's voice (speak) and channel 1 listened
to, once the other way round (`DuplexWindowStream`: each speaker in turn). Epoch e visits every (window, speak
channel) once, in the permutation drawn from ``(seed, e)``; micro-batch m of rank r holds stream positions
``(m * world + r) * batch_size + j`` (a pure function of the position, so a resumed run sees the same examples).

* native (``format: native``): the window's streams are `dialogue_streams` of the whole conversation (so an IPU's
  content that began before the window is where a long session would have it) cut to the window, then
  `StreamLayout.delay`ed: int64 ``[N, F + D]`` (F window frames, D the layout's max delay). Layouts: `listen_speak`
  (listen + speak frames) and the content layouts of FLM-Audio's natural monologue (`content_layout`: listen,
  content = the deduplicated units of each IPU of the speak channel padded with "wait" (weight 0.01), speak):
  ``content_lead`` (content from the IPU's first frame on, like TTS text), ``content_follow`` (from its last frame,
  like ASR) and ``content_dual``: FLM-Audio's dual training, each (window, speak channel) drawn as lead or follow
  with probability 1/2 from the same ``(seed, epoch)`` generator. The two modes share every table and head and
  nothing tells the model which one a window uses, so a dual model learns the mixture (FLM-Audio alternates the
  modes across training stages instead: run ``content_follow``, then ``content_lead`` with init = the first run's
  final model); its saved layout says "lead", and validation uses lead. ``streams`` overrides fields of a stream by
  name (delay, loss_weight, filler_weight: Moshi's per-stream delays, FLM-Audio's weights).
* tdm (``format: tdm``): the window's frames `TDMFormat.encode`d (fixed chunks of ``chunk_frames``, or
  ``controlled``: the model says ``[speak]`` / ``[listen]``): ``<bos>`` + about ``2 F + 2 F / chunk_frames`` tokens.

Silence: ``silence_units`` (a list) or, when empty, the set `textless.dialogue.vad.silence_units_of` learns for
``units_tokenizer`` (which must be the tokenizer that made the units: its k-means hash is checked). They make the
IPUs of the content stream and the ``[listen]`` decision of controlled TDM; ``silence_unit`` (null: the most
frequent silence unit of the training data) is the listen / speak filler and what a ``[listen]`` chunk decodes to.

Loss (`duplex_losses`). The model reads position t and predicts position t + 1, so the labels are shifted by one:
native logits of stream k at t against ``labels[:, k, t + 1]`` with ``weights[:, k, t + 1]`` (`StreamLayout.labels`:
listen streams, delay pads and padding carry no loss; filler labels carry ``filler_weight``); tdm logits at s against
the `TDMFormat.encode` labels / weights at s + 1 (speak units and switch tokens 1, listen units
``listen_loss_weight``, tags 0). A micro-batch's loss is ``sum(w * CE) / sum(w)`` over all its speak streams and
positions (the weighted mean of the micro-batch, weight 1 per micro-batch): a step's loss is the mean over its
micro-batches and ranks. Batches are right-padded (each stream's pad / ``<pad>``, weight 0). A model with a depth
decoder (``depth_layers`` > 0) reads the whole window, as position t is teacher-forced with the speak tokens at t + 1
(`model_inputs`); its last position, which has no next frame, is not scored.

Metrics (TensorBoard ``train/...``, ``valid/...``): loss; per speak stream ``<stream>_nll`` (nats per label,
unweighted, every label that is not IGNORE) and ``<stream>_accuracy`` (argmax == label); ``frame_nll``: nats per
frame of the frame-level speak channel, comparable across formats: native, the NLL of the frame-level speak
stream(s) (source "speak"; several such streams would add their NLLs per frame) over the frames it predicts (with
speak delay 0 the window's first frame is never predicted: nothing precedes it); tdm, the NLL of the speak units and
switch tokens over the window's frames (a ``[listen]`` token covers its whole silent chunk, which it decodes to
``silence_unit``: controlled TDM scores a channel in which silence units are merged; fixed TDM predicts a chunk's
speak units after hearing the whole chunk, up to ``chunk_frames - 1`` frames of look-ahead that native fusion does
not have). Validation (`evaluate_duplex_lm`): every (window, speak channel) of ``valid_dataset``, in order, pooled.

Model (``init``): ``scratch`` (a ``backbone`` preset of `backbone_config`, with ``model`` overrides of its config
fields); a text LM (TWIST-style, `DuplexLM.from_text_lm`: ``offline:smollm2-135m``, a local Hugging Face directory or
a ``.gguf``: every transformer weight kept, new stream tables and heads); or a saved DuplexLM directory, continued
with the format / layout this config describes (its tables and heads must have the same shapes). The units are the
data's (tokenizer identity, vocabulary, frame rate); ``model_context`` is the model's attention window in steps
(native frames, tdm tokens; null: the saved model's, else 3000). ``depth_layers`` > 0 (native; new models: scratch or
a text LM) predicts the speak streams through a depth decoder of ``depth_layers`` layers, width ``depth_dim`` and
``depth_heads`` heads (Moshi's depformer, `DuplexLM`) instead of parallel heads; a saved DuplexLM keeps its own.

Schedule: ``cosine`` (`textless.lm.train.lr_lambda`) or fairseq's ``inverse_sqrt`` (as train-dialogue); AdamW with
weight decay on matrices only, gradient clipping. DDP and FSDP (FSDP2 on each decoder layer, then the root;
checkpoints and ``final/`` are plain DuplexLM directories) as ``textless train``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from textless.dialogue.data import DialogueDataset
from textless.dialogue.dgslm.train import (
    WindowObjective,
    WindowStream,
    all_windows,
    conversation_frames,
    inverse_sqrt,
)
from textless.dialogue.duplex.model import (
    BACKBONE_PRESETS,
    CONFIG_FILE,
    DEPTH_DIM,
    DEPTH_HEADS,
    DUPLEX_ARTIFACT,
    TDM_STREAM,
    DuplexConfig,
    DuplexLM,
    backbone_config,
    check_depth,
)
from textless.dialogue.streams import (
    IGNORE,
    StreamLayout,
    TDMFormat,
    content_layout,
    dialogue_streams,
    listen_speak_layout,
)
from textless.errors import ConfigError, TextlessError
from textless.lm.attention import check_attn_implementation
from textless.lm.train import lr_lambda, param_groups
from textless.training.checkpoint import MODEL_DIR
from textless.training.config import TrainingConfig
from textless.training.engine import TrainHooks, TrainResult, end_process_group, train_objective
from textless.training.objective import Context, OptimizerSpec, StepLoss
from textless.utils import runs

logger = logging.getLogger(__name__)

FORMATS = ("native", "tdm")
LAYOUTS = ("listen_speak", "content_lead", "content_follow", "content_dual")
STREAM_OVERRIDES = ("delay", "loss_weight", "filler_weight")
CONTENT_SOURCES = ("lead", "follow")
DEFAULT_MODEL_CONTEXT = 3000


@dataclass
class DuplexTrainConfig(TrainingConfig):
    train_dataset: str = ""                # two-channel unit dataset directory (frame-level units)
    valid_dataset: str | None = None       # two-channel unit dataset for the validation metrics
    init: str = "scratch"                  # scratch | a text LM (offline:smollm2-135m, HF dir, .gguf) | a DuplexLM dir
    backbone: str = "small"                # scratch: backbone preset (tiny | small | 350m: rotary Llama configs)
    model: dict[str, Any] = field(default_factory=dict)  # scratch: backbone config overrides (model.hidden_size=128
    #                                                      changes a recipe's key, +model.hidden_size=128 adds one)
    gguf_file: str | None = None           # a text LM init: the GGUF file inside its directory
    attn_implementation: str | None = None  # null (sdpa) | sdpa | eager
    format: str = "native"                 # native (streams fused per frame) | tdm (time multiplexing)
    layout: str = "listen_speak"           # native: listen_speak | content_lead | content_follow | content_dual
    streams: dict[str, Any] = field(default_factory=dict)  # native: per-stream overrides {name: {delay, loss_weight,
    #                                                        filler_weight}}, e.g. +streams.speak.delay=1
    chunk_frames: int = 8                  # tdm: frames per chunk (8 = 160 ms at 50 Hz)
    controlled: bool = False               # tdm: the model emits [speak] / [listen] per chunk
    listen_loss_weight: float = 0.0        # tdm: loss weight of the listen units
    silence_units: list[int] = field(default_factory=list)  # units of frames without speech (default: learned for
    #                                                          units_tokenizer)
    units_tokenizer: str = "starter"       # the SpeechTokenizer bundle that made the units (to learn silence units)
    silence_unit: int | None = None        # filler / [listen] unit (null: the data's most frequent silence unit)
    min_silence: float = 0.2               # seconds: shorter pauses do not split an IPU (content layouts)
    model_context: int | None = None       # the model's attention window in steps (null: a saved model's, else 3000)
    depth_layers: int = 0                  # native, new models: 0 = parallel heads, else a depth decoder's layers
    depth_dim: int = DEPTH_DIM             # its width
    depth_heads: int = DEPTH_HEADS         # its attention heads
    output_dir: str = "outputs/duplex"
    context: int = 500                     # frames per window (tdm: encoded into the window's token sequence)
    batch_size: int = 4                    # windows per rank per micro-batch
    grad_accum: int = 1                    # micro-batches per optimizer step
    lr: float = 5e-4
    schedule: str = "cosine"               # cosine (warmup, cosine to min_lr) | inverse_sqrt (fairseq)
    warmup_steps: int = 500                # optimizer steps of linear warmup
    warmup_init_lr: float = 1e-7           # inverse_sqrt: the learning rate warmup starts from
    min_lr: float = 0.0                    # cosine: the final learning rate
    weight_decay: float = 0.1              # AdamW decay of matrices / embeddings
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    clip: float = 1.0                      # max gradient norm (0: none)
    eval_batches: int | None = None        # cap on validation batches per rank (null: every window)


# ---------------------------------------------------------------------------------------------------------------------
# layouts and examples
# ---------------------------------------------------------------------------------------------------------------------


def build_layout(layout: str, num_units: int, silence_unit: int, streams: dict[str, Any] | None = None
                 ) -> StreamLayout:
    """The native `StreamLayout` of a `DuplexTrainConfig.layout` name for `num_units` units (content_dual: lead,
    see the module docstring), with the per-stream `streams` overrides applied."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "listen_speak":
        base = listen_speak_layout(num_units, silence_unit)
    else:
        mode = "follow" if layout == "content_follow" else "lead"
        base = content_layout(num_units, silence_unit, num_units, mode)
    overrides = dict(streams or {})
    unknown = sorted(set(overrides) - set(base.names))
    if unknown:
        raise ConfigError(f"streams: no stream {', '.join(map(repr, unknown))} in layout {layout!r} (its streams: "
                          f"{', '.join(base.names)})")
    specs = []
    for spec in base.streams:
        change = overrides.get(spec.name) or {}
        if not isinstance(change, dict):
            raise ConfigError(f"streams.{spec.name} must be a mapping of {', '.join(STREAM_OVERRIDES)}, got "
                              f"{change!r}")
        bad = sorted(set(change) - set(STREAM_OVERRIDES))
        if bad:
            raise ConfigError(f"streams.{spec.name}: cannot override {', '.join(bad)} (only "
                              f"{', '.join(STREAM_OVERRIDES)})")
        specs.append(replace(spec, **change))
    return StreamLayout(tuple(specs))


def with_content_mode(layout: StreamLayout, mode: str) -> StreamLayout:
    """`layout` with its content streams (source lead / follow) in `mode` ("lead" or "follow")."""
    return StreamLayout(tuple(replace(s, source=mode) if s.source in CONTENT_SOURCES else s for s in layout.streams))


def has_content(layout: StreamLayout) -> bool:
    return any(s.source in CONTENT_SOURCES for s in layout.streams)


class DuplexWindowStream(WindowStream):
    """The training stream: ``at(position) -> (conversation, start frame, speak channel, follow)``, every window once
    per speak channel per epoch; `follow`: the window's content stream is built in follow mode (drawn with
    probability `follow_probability`, 0.5 for content_dual; the base class's per-window coin, its channel swap)."""

    def __init__(self, frames: Sequence[int], context: int, seed: int, follow_probability: float = 0.0):
        super().__init__(frames, context, seed, channel_swap=follow_probability)
        self.windows = [(c, s, channel) for c, s in self.windows for channel in (0, 1)]

    def at(self, position: int) -> tuple[int, int, int, bool]:  # type: ignore[override]
        epoch, i = divmod(position, len(self.windows))
        perm, follow = self.epoch_order(epoch)
        conversation, start, channel = self.windows[int(perm[i])]
        return conversation, start, channel, bool(follow[i])


def eval_windows(dataset: DialogueDataset, context: int) -> list[tuple[int, int, int, bool]]:
    """Every (conversation, start, speak channel, follow=False) of `dataset`, in order."""
    return [(c, s, channel, False) for c, s in all_windows(conversation_frames(dataset), context) for channel in (0, 1)]


class DuplexBatch(NamedTuple):
    """Right-padded examples: native tokens / labels int64 ``[B, N, L]`` (delayed), weights float32 ``[B, N, L]``;
    tdm ``[B, L]``; `frames` int64 ``[B]``: window frames of each row; `windows`: (conversation, start, speak
    channel, follow) of each row."""

    tokens: torch.Tensor
    labels: torch.Tensor
    weights: torch.Tensor
    frames: torch.Tensor
    windows: list[tuple[int, int, int, bool]]

    def to(self, device: torch.device | str) -> DuplexBatch:
        return self._replace(tokens=self.tokens.to(device), labels=self.labels.to(device),
                             weights=self.weights.to(device), frames=self.frames.to(device))


class Examples:
    """Windows of a dialogue dataset -> `DuplexBatch` for `config` (a `DuplexConfig`); see the module docstring.
    `silence_units`: needed by content layouts (their IPUs)."""

    def __init__(self, config: DuplexConfig, silence_units: Sequence[int] | None = None,
                 min_silence: float = 0.2):
        self.format = config.format
        if self.format == "native":
            layout = self.layout = config.stream_layout
            # a window drawn as follow (content_dual) uses the follow variant; other layouts are their own variants
            self.layouts = {False: layout, True: with_content_mode(layout, "follow")}
            if has_content(layout) and silence_units is None:
                raise ConfigError("a content layout needs the silence units (its IPUs)")
        else:
            self.tdm = config.tdm_format
        self.silence_units = sorted(int(u) for u in silence_units) if silence_units is not None else []
        self.min_silence = min_silence

    def example(self, units: np.ndarray, start: int, frames: int, channel: int, follow: bool, frame_rate: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens, labels, weights) of one window: native [N, F + D], tdm [S]."""
        if self.format == "tdm":
            window = units[:, start:start + frames]
            return self.tdm.encode(window[1 - channel], window[channel])
        layout = self.layouts[follow]
        streams = dialogue_streams(units, channel, layout, silence_units=self.silence_units,
                                   min_silence=self.min_silence, frame_rate=frame_rate)
        delayed = layout.delay(streams[:, start:start + frames])
        labels, weights = layout.labels(delayed)
        return delayed, labels, weights

    def pads(self) -> np.ndarray:
        """The input token that pads each stream: native int64 [N, 1], tdm [1]."""
        if self.format == "tdm":
            return np.array([self.tdm.pad], np.int64)
        return np.array([[s.pad] for s in self.layout.streams], np.int64)

    def batch(self, dataset: DialogueDataset, windows: Sequence[tuple[int, int, int, bool]], context: int
              ) -> DuplexBatch:
        rows, frames = [], []
        for conversation, start, channel, follow in windows:
            units = dataset[conversation].units
            n = min(context, units.shape[1] - start)
            rows.append(self.example(units, start, n, channel, follow, dataset.meta.frame_rate))
            frames.append(n)
        length = max(r[0].shape[-1] for r in rows)
        pads = self.pads()
        tokens, labels, weights = [], [], []
        for t, y, w in rows:
            extra = length - t.shape[-1]
            width = [(0, 0)] * (t.ndim - 1) + [(0, extra)]
            tokens.append(np.concatenate([t, np.broadcast_to(pads, (*t.shape[:-1], extra))], axis=-1))
            labels.append(np.pad(y, width, constant_values=IGNORE))
            weights.append(np.pad(w, width, constant_values=0.0))
        return DuplexBatch(torch.from_numpy(np.stack(tokens)), torch.from_numpy(np.stack(labels)),
                           torch.from_numpy(np.stack(weights).astype(np.float32)),
                           torch.tensor(frames, dtype=torch.long), list(windows))


# ---------------------------------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------------------------------


def model_inputs(batch: DuplexBatch, model: DuplexLM | None = None) -> torch.Tensor:
    """What the model reads: every position but the last (nothing follows it to be predicted); the whole window for
    a `model` with a depth decoder (position t reads the speak tokens at t + 1; `duplex_losses` drops the last)."""
    if model is not None and model.depth is not None:
        return batch.tokens
    return batch.tokens[..., :-1]


def duplex_losses(model: DuplexLM, logits: dict[str, torch.Tensor], batch: DuplexBatch
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, sums) of `model`'s `logits` (of `model_inputs(batch)`) against `batch` (labels shifted by one: see the
    module docstring). loss = ``sum(w * CE) / sum(w)``; sums: ``weighted`` (sum of w * CE), ``weight``, per speak
    stream ``<s>_nll`` / ``<s>_correct`` / ``<s>_labels``, and ``frame_nll`` / ``frames``."""
    labels, weights = batch.labels[..., 1:], batch.weights[..., 1:]
    scored = labels.shape[-1]
    if model.depth is not None and any(s.shape[1] != scored + 1 for s in logits.values()):
        raise ValueError("a DuplexLM with a depth decoder reads the whole window (model_inputs(batch, model)): its "
                         "position t is teacher-forced with the speak tokens at t + 1")
    logits = {name: scores[:, :scored] for name, scores in logits.items()}  # a whole window's last position: unscored
    sums: dict[str, float] = {}
    weighted = None
    weight = weights.new_zeros(())
    frame_nll = 0.0
    frames = 0.0
    if model.config.format == "tdm":
        k = model.tdm.num_units
        switches = torch.tensor([model.tdm.token("[speak]"), model.tdm.token("[listen]")], device=labels.device)
        rows = {TDM_STREAM: (labels, weights)}
        frame_masks = {TDM_STREAM: ((labels >= k) & (labels < 2 * k)) | torch.isin(labels, switches)}
        frames = float(batch.frames.sum())
    else:
        layout = model.layout
        rows = {name: (labels[:, layout.index(name)], weights[:, layout.index(name)]) for name in logits}
        speech = [name for name in logits if layout[name].resolved_source == "speak"]
        frame_masks = {name: rows[name][0] != IGNORE for name in speech}
        frames = float(frame_masks[speech[0]].sum()) if speech else 0.0
    for name, scores in logits.items():
        y, w = rows[name]
        ce = F.cross_entropy(scores.float().transpose(1, 2), y, ignore_index=IGNORE, reduction="none")  # [B, T]
        term = (ce * w).sum()
        weighted = term if weighted is None else weighted + term
        weight = weight + w.sum()
        valid = y != IGNORE
        sums[f"{name}_nll"] = float(ce.detach()[valid].sum())
        sums[f"{name}_correct"] = float((scores.detach().argmax(-1) == y)[valid].sum())
        sums[f"{name}_labels"] = float(valid.sum())
        if name in frame_masks:
            frame_nll += float(ce.detach()[frame_masks[name]].sum())
    assert weighted is not None
    sums.update(weighted=float(weighted.detach()), weight=float(weight), frame_nll=frame_nll, frames=frames)
    return weighted / weight.clamp_min(1e-12), sums


def metric_names(model: DuplexLM) -> tuple[str, ...]:
    """History / validation columns: loss, <speak stream>_nll and _accuracy, frame_nll."""
    return ("loss", *[f"{s}_{m}" for s in model.speak_names for m in ("nll", "accuracy")], "frame_nll")


def metric_means(model: DuplexLM, sums: dict[str, float]) -> dict[str, float]:
    """`duplex_losses` sums (possibly pooled over batches) -> the metrics of `metric_names`."""
    out = {"loss": sums["weighted"] / max(sums["weight"], 1e-12)}
    for s in model.speak_names:
        labels = max(sums[f"{s}_labels"], 1.0)
        out[f"{s}_nll"] = sums[f"{s}_nll"] / labels
        out[f"{s}_accuracy"] = sums[f"{s}_correct"] / labels
    out["frame_nll"] = sums["frame_nll"] / max(sums["frames"], 1.0)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------------


def _sum_keys(model: DuplexLM) -> list[str]:
    return ["weighted", "weight", "frame_nll", "frames", "windows",
            *[f"{s}_{m}" for s in model.speak_names for m in ("nll", "correct", "labels")]]


def _metric_sums(model: DuplexLM, examples: Examples, dataset: DialogueDataset,
                 windows: list[tuple[int, int, int, bool]], context: int, batch_size: int, device: torch.device,
                 autocast: Callable | None, pad_to: int = 0) -> list[float]:
    """`duplex_losses` sums of `model` over `windows` (in `_sum_keys` order); `pad_to`: run extra forwards (not
    counted) up to this many batches (FSDP: every rank runs as many)."""
    keys = _sum_keys(model)
    total = dict.fromkeys(keys, 0.0)
    starts = list(range(0, len(windows), batch_size))
    for b in range(max(len(starts), pad_to)):
        chunk = windows[starts[b]:starts[b] + batch_size] if b < len(starts) else windows[:1] or [(0, 0, 0, False)]
        batch = examples.batch(dataset, chunk, context).to(device)
        with autocast() if autocast is not None else contextlib.nullcontext():
            logits = model(model_inputs(batch, model))
        _, sums = duplex_losses(model, logits, batch)
        if b >= len(starts):
            continue
        for k, v in sums.items():
            total[k] += v
        total["windows"] += len(chunk)
    return [total[k] for k in keys]


@torch.no_grad()
def evaluate_duplex_lm(model: DuplexLM, dataset: DialogueDataset, context: int | None = None, batch_size: int = 8,
                       *, silence_units: Sequence[int] | None = None, min_silence: float = 0.2,
                       device: torch.device | str | None = None) -> dict[str, float]:
    """Held-out metrics of `model` over EVERY window of `dataset` (dGSLM's `window_starts` grid of `context` frames,
    default the model's attention context) with each channel in turn as the speak channel, in order, pooled over all
    labels: loss (the weighted training loss), ``<stream>_nll`` / ``<stream>_accuracy`` per speak stream, and
    ``frame_nll``: nats per frame of the speak channel, the same unit for native and TDM models (module docstring);
    counts ``frames`` and ``windows`` (window x speak channel). `silence_units`: needed by a content layout. The
    model's units must fit the dataset's."""
    model.check_units(dataset.meta.identity, where=f"dialogue dataset '{dataset.path}'")
    context = context or model.config.context
    device = torch.device(device) if device is not None else model.device
    examples = Examples(model.config, silence_units, min_silence)
    training = model.training
    model.eval()
    try:
        values = _metric_sums(model, examples, dataset, eval_windows(dataset, context), context, batch_size,
                              device, None)
    finally:
        model.train(training)
    sums = dict(zip(_sum_keys(model), values))
    return {**metric_means(model, sums), "frames": sums["frames"], "windows": sums["windows"]}


# ---------------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------------


def is_duplex_dir(path: str | Path) -> bool:
    """Whether `path` is a saved DuplexLM directory (its config.json carries the duplex LM header)."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == DUPLEX_ARTIFACT.name
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def rebuilt(config: DuplexConfig, state: dict[str, torch.Tensor], attn_implementation: str | None = None
            ) -> DuplexLM:
    """A CPU DuplexLM of `config` with the weights `state`, built without drawing from the global RNG (a rank's RNG
    state must not depend on checkpoints being written)."""
    with torch.random.fork_rng(devices=[]):
        model = DuplexLM(config, attn_implementation=attn_implementation)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"the model's weights do not fit the new config: {str(e).splitlines()[0]}") from None
    return model


def most_frequent(dataset: DialogueDataset, candidates: Sequence[int]) -> int:
    """The unit of `candidates` that occurs most often in `dataset` (ties: the smallest)."""
    counts = np.zeros(dataset.meta.vocab_size, np.int64)
    for seq in dataset.units:
        counts += np.bincount(np.asarray(seq.units, np.int64).reshape(-1), minlength=len(counts))[:len(counts)]
    candidates = sorted(int(u) for u in candidates)
    return candidates[int(np.argmax(counts[candidates]))]


# ---------------------------------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------------------------------


class DuplexObjective(WindowObjective):
    """Weighted next-token CE of a DuplexLM on windows of two-channel conversations (see the module docstring)."""

    name = "train-duplex"
    precisions = ("auto", "fp32", "no", "bf16", "fp16")
    cpu_bf16 = True
    fsdp = True
    resumable_settings = ("valid_dataset", "eval_batches", "attn_implementation")
    input_settings = ("train_dataset",)
    history_columns: tuple[str, ...] = ("loss",)
    valid_columns: tuple[str, ...] = ("loss",)
    config: DuplexTrainConfig

    def check_config(self) -> None:
        cfg = self.config
        if not cfg.train_dataset or cfg.train_dataset == "???":
            raise ConfigError("train_dataset is required (a two-channel unit dataset directory)")
        if cfg.init != "scratch" and not cfg.init.startswith("offline:") and not Path(cfg.init).exists():
            raise ConfigError(f"init must be 'scratch', a text LM (offline:smollm2-135m, a local Hugging Face "
                              f"directory or .gguf file) or a saved DuplexLM directory; {cfg.init!r} does not exist")
        if cfg.init == "scratch" and cfg.backbone not in BACKBONE_PRESETS:
            raise ConfigError(f"backbone must be one of {', '.join(BACKBONE_PRESETS)}, got {cfg.backbone!r}")
        if cfg.model and cfg.init != "scratch":
            raise ConfigError(f"model overrides the backbone preset of init=scratch; init={cfg.init!r} brings its own "
                              f"backbone (remove model: {dict(cfg.model)})")
        check_attn_implementation(cfg.attn_implementation)
        if cfg.format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
        check_depth(cfg.depth_layers, cfg.depth_dim, cfg.depth_heads, cfg.format, "train-duplex")
        if cfg.format == "native":
            build_layout(cfg.layout, 2, 0, cfg.streams)  # names and overrides, before any data is read
        elif cfg.streams:
            raise ConfigError("streams overrides native streams; a tdm model has none (use listen_loss_weight)")
        else:
            TDMFormat(2, cfg.chunk_frames, silence_unit=0, listen_loss_weight=cfg.listen_loss_weight)
        if cfg.context < 2:
            raise ConfigError(f"context must be >= 2 frames, got {cfg.context}")
        if cfg.model_context is not None and cfg.model_context < 1:
            raise ConfigError(f"model_context must be >= 1 step (or null), got {cfg.model_context}")
        for name in ("batch_size", "grad_accum"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.eval_batches is not None and cfg.eval_batches < 1:
            raise ConfigError(f"eval_batches must be >= 1 (or null), got {cfg.eval_batches}")
        if cfg.min_silence < 0:
            raise ConfigError(f"min_silence must be >= 0 seconds, got {cfg.min_silence}")
        self.check_optimization()

    # -- setup --------------------------------------------------------------------------------------------------
    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        cfg = self.config
        self.ctx, self.device = ctx, ctx.device
        self.read_data("a duplex LM models two")
        if state is not None:  # nested keys only one side has are not compared by the engine
            old = state.get("config") or {}
            recorded = {k: old.get(k) or {} for k in ("model", "streams")}
            runs.refuse(f"checkpoint {checkpoint}",
                        runs.differences(recorded, {"model": dict(cfg.model), "streams": dict(cfg.streams)},
                                         one_sided=True),
                        "pass restart=true to start over, or use a new output_dir")
        self.silence = self._silence_units()
        if checkpoint is not None:
            self.model = DuplexLM.from_pretrained(checkpoint / MODEL_DIR, attn_implementation=cfg.attn_implementation)
        else:
            self.model = self._fresh_model()
        # the data must fit the model before anything is trained
        self.model.check_units(self.train_data.meta.identity, where=f"dialogue dataset '{cfg.train_dataset}'")
        if self.valid_data is not None:
            self.model.check_units(self.valid_data.meta.identity, where=f"dialogue dataset '{cfg.valid_dataset}'")
        self.examples = Examples(self.model.config, self.silence, cfg.min_silence)
        dual = cfg.format == "native" and cfg.layout == "content_dual"
        self.stream = DuplexWindowStream(conversation_frames(self.train_data), cfg.context, cfg.seed,
                                         0.5 if dual else 0.0)
        self.valid_windows = eval_windows(self.valid_data, cfg.context) if self.valid_data is not None else []
        self.history_columns = self.valid_columns = metric_names(self.model)
        self.windows_per_step = cfg.batch_size * cfg.grad_accum * ctx.world
        self.frames_seen = self.windows_seen = 0
        self._frames = self._step_frames = self._measured = 0

    def _silence_units(self) -> list[int] | None:
        """The silence units (config, else learned for units_tokenizer), or None when nothing needs them."""
        cfg = self.config
        content = cfg.format == "native" and cfg.layout != "listen_speak"
        if not (content or (cfg.format == "tdm" and cfg.controlled) or cfg.silence_unit is None):
            return None
        k = self.train_data.meta.vocab_size
        if cfg.silence_units:
            bad = [u for u in cfg.silence_units if not 0 <= u < k]
            if bad:
                raise ConfigError(f"silence_units {bad} are outside the data's units [0, {k})")
            return sorted({int(u) for u in cfg.silence_units})
        from textless.dialogue.vad import silence_units_of

        try:
            with torch.random.fork_rng(devices=[]):  # loading a tokenizer must not change the model's init
                return sorted(silence_units_of(cfg.units_tokenizer, self.train_data.meta.tokenizer))
        except (TextlessError, OSError) as e:
            raise ConfigError(f"no silence units ({e}); pass silence_units=[...]") from None

    def _formats(self) -> tuple[StreamLayout | None, TDMFormat | None]:
        """(native layout, None) or (None, TDM format) for the data's units, as configured."""
        cfg = self.config
        k = self.train_data.meta.vocab_size
        silence_unit = cfg.silence_unit
        if silence_unit is None:
            assert self.silence is not None
            if not self.silence:
                raise ConfigError("the silence units are empty: give silence_unit or silence_units")
            silence_unit = most_frequent(self.train_data, self.silence)
        elif not 0 <= silence_unit < k:
            raise ConfigError(f"silence_unit {silence_unit} is outside the data's units [0, {k})")
        if cfg.format == "native":
            return build_layout(cfg.layout, k, silence_unit, cfg.streams), None
        return None, TDMFormat(k, cfg.chunk_frames, cfg.controlled, silence_unit, cfg.listen_loss_weight,
                               tuple(self.silence) if self.silence else None)

    def _depth(self) -> dict[str, int]:
        cfg = self.config
        return {"depth_layers": cfg.depth_layers, "depth_dim": cfg.depth_dim, "depth_heads": cfg.depth_heads}

    def _duplex_config(self, backbone: dict[str, Any], context: int, depth: dict[str, int]) -> DuplexConfig:
        layout, tdm = self._formats()
        meta = self.train_data.meta
        return DuplexConfig(format=self.config.format, layout=layout, tdm=tdm, backbone=backbone, context=context,
                            tokenizer=meta.tokenizer, frame_rate=meta.frame_rate, **depth)

    def _fresh_model(self) -> DuplexLM:
        cfg = self.config
        context = cfg.model_context or DEFAULT_MODEL_CONTEXT
        if cfg.init == "scratch":
            logger.info("init: backbone preset %r from scratch", cfg.backbone)
            try:
                backbone = backbone_config(cfg.backbone, **cfg.model)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"model overrides of backbone {cfg.backbone!r}: {e}") from None
            return DuplexLM.from_scratch(self._duplex_config(backbone, context, self._depth()),
                                         attn_implementation=cfg.attn_implementation)
        if is_duplex_dir(cfg.init):
            logger.info("init: the saved duplex LM %s", cfg.init)
            saved = DuplexLM.from_pretrained(cfg.init, attn_implementation=cfg.attn_implementation)
            saved.check_units(self.train_data.meta.identity, where=f"dialogue dataset '{cfg.train_dataset}'")
            saved_depth = {key: getattr(saved.config, key) for key in self._depth()}
            if cfg.depth_layers and self._depth() != saved_depth:
                raise ConfigError(f"init {cfg.init} has its own depth decoder ({saved_depth}); a saved DuplexLM keeps "
                                  f"it (remove depth_layers / depth_dim / depth_heads)")
            config = self._duplex_config(saved.config.backbone, cfg.model_context or saved.config.context,
                                         saved_depth)
            return rebuilt(config, saved.state_dict(), cfg.attn_implementation)
        logger.info("init: TWIST-style from the text LM %s", cfg.init)
        layout, tdm = self._formats()
        meta = self.train_data.meta
        return DuplexLM.from_text_lm(cfg.init, layout=layout, tdm=tdm, context=context, tokenizer=meta.tokenizer,
                                     frame_rate=meta.frame_rate, gguf_file=cfg.gguf_file,
                                     attn_implementation=cfg.attn_implementation, **self._depth())

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def configure_optimizers(self, modules: dict[str, torch.nn.Module]) -> dict[str, OptimizerSpec]:
        cfg = self.config
        optimizer = torch.optim.AdamW(param_groups(modules["model"], cfg.weight_decay), lr=cfg.lr,
                                      betas=tuple(cfg.betas))
        if cfg.schedule == "inverse_sqrt":
            factor = inverse_sqrt(cfg.warmup_steps, cfg.lr, cfg.warmup_init_lr)
        else:
            factor = lr_lambda(cfg.max_steps, cfg.warmup_steps, cfg.lr, cfg.min_lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"model": OptimizerSpec(optimizer, scheduler, module="model", clip=cfg.clip)}

    def describe(self, ctx: Context) -> str:
        cfg, mc = self.config, self.model.config
        n_params = sum(p.numel() for p in self.model.parameters())
        if mc.format == "native":
            what = f"layout {cfg.layout}: streams {', '.join(self.model.layout.names)}"
            if self.model.depth is not None:
                what += f"; depth decoder of {mc.depth_layers} layers, d {mc.depth_dim}"
        else:
            tdm = self.model.tdm
            what = f"{'controlled' if tdm.controlled else 'fixed'} chunks of {tdm.chunk_frames} frames"
        return (f"training a {mc.format} duplex LM of {n_params / 1e6:.2f}M parameters ({what}; attention context "
                f"{mc.context}) on {ctx.world} process(es) ({ctx.device}, {'FSDP, ' if ctx.fsdp else ''}precision "
                f"{ctx.precision}); steps of {self.windows_per_step} windows of {cfg.context} frames, {cfg.schedule} "
                f"lr {cfg.lr} warmup {cfg.warmup_steps}; train: {len(self.train_data)} conversations, "
                f"{len(self.stream)} windows x speak channel per epoch"
                + (f"; valid: {len(self.valid_windows)} windows x speak channel" if self.valid_data else ""))

    # -- steps --------------------------------------------------------------------------------------------------
    @property
    def micro_batches(self) -> int:
        return self.config.grad_accum

    def batches(self, start: int) -> Iterator[DuplexBatch]:
        cfg, ctx = self.config, self.ctx
        m = start
        while True:
            first = (m * ctx.world + ctx.rank) * cfg.batch_size
            windows = [self.stream.at(p) for p in range(first, first + cfg.batch_size)]
            yield self.examples.batch(self.train_data, windows, cfg.context)
            m += 1

    def loss(self, phase: str, batch: DuplexBatch, scratch: dict[str, Any]) -> StepLoss:
        batch = batch.to(self.device)
        logits = self.trained["model"](model_inputs(batch, self.model))
        value, sums = duplex_losses(self.model, logits, batch)
        self._frames += int(batch.frames.sum())
        return StepLoss(value, metric_means(self.model, sums))

    # -- validation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, ctx: Context, writer) -> dict[str, float] | None:
        """`evaluate_duplex_lm`'s metrics, each rank on every world-th window, summed over ranks (FSDP: every rank
        runs as many forwards as the busiest one)."""
        if self.valid_data is None:
            return None
        cfg = self.config
        mine, most = self.rank_windows(ctx)
        self.model.eval()  # FSDP shards it in place: the same module
        values = _metric_sums(self.model, self.examples, self.valid_data, mine, cfg.context,
                              cfg.batch_size, ctx.device, ctx.autocast, pad_to=most)
        self.model.train()
        sums = dict(zip(_sum_keys(self.model), ctx.sum(values)))
        self._measured = int(sums["windows"])
        return metric_means(self.model, sums)

    def valid_note(self) -> str:
        return f"({self._measured} of {len(self.valid_windows)} windows x speak channel)"

    # -- persistence --------------------------------------------------------------------------------------------
    def inputs(self) -> dict[str, str]:
        return {"train_dataset": self.train_data.units.fingerprint()}

    def state_dict(self) -> dict[str, Any]:
        return {"frames_seen": self.frames_seen, "windows_seen": self.windows_seen,
                "epoch": self.windows_seen // len(self.stream)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frames_seen, self.windows_seen = int(state["frames_seen"]), int(state["windows_seen"])

    def _export(self, states: dict[str, dict[str, torch.Tensor]] | None) -> DuplexLM:
        return self.model if states is None else rebuilt(self.model.config, states["model"])

    def save_checkpoint_files(self, directory: Path, states) -> None:
        self._export(states).save_pretrained(directory / MODEL_DIR)

    def save_final(self, directory: Path, states) -> Path:
        model = self._export(states)
        training = model.training
        model.eval().save_pretrained(directory, overwrite=True)
        model.train(training)
        return directory


def train_duplex(cfg: DuplexTrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train (or resume) a DuplexLM as configured; see the module docstring. Every rank of a torchrun job calls it;
    the process group stays up (`train_duplex_command` destroys it)."""
    return train_objective(DuplexObjective(cfg), hooks)


def train_duplex_command(cfg: DuplexTrainConfig) -> TrainResult:
    """``textless train-duplex``: `train_duplex`, then destroy the process group it set up."""
    result = train_duplex(cfg)
    end_process_group()
    return result


__all__ = ["DuplexBatch", "DuplexObjective", "DuplexTrainConfig", "DuplexWindowStream", "Examples", "build_layout",
           "duplex_losses", "evaluate_duplex_lm", "model_inputs", "train_duplex", "train_duplex_command"]
