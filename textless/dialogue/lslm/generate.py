"""Speaking while listening with a `ListenSpeakLM`, and LSLM's interaction and speaking-cost scores.

`listen_and_speak`: B streams in lock-step under the streaming protocol. Position 0 feeds ``<bos>`` (listening
zeros), position i >= 1 the unit of frame i - 1 with listening frame i - 1; positions 1..P are the prompt's units (P
frames, teacher-forced), after that each stream feeds what it sampled. The logits at position i choose the token of
frame i among the units, ``eos`` and ``irq`` (temperature, top-k, top-p; LSLM samples with top-p 0.99 at temperature
1); a stream stops at ``eos``, at ``irq`` (its stop frame is i: it spoke frames [0, i)) or after ``max_frames``
frames, and is paused while the others go on. ``irq_prob`` [steps] is p(irq) at every position from P on (LSLM Fig. 4:
`plot_irq`). Each stream draws from its own generator seeded ``seed + b``. Options: a prefix of tokens before ``<bos>``
(the TTS-conditioned setting's characters), other stop tokens, and specials said as a frame's token without stopping
(the duplex S2S turn markers).

`ListenSpeakGenerator`: the same model frame by frame under the streaming protocol (a session's generator): one
listening frame in, one speaking unit out, silence once it has stopped.

Scores (`interaction_scores`): an item's stop time is its IRQ frame / R (None when it ended with eos or the frame
budget), scored with `textless.dialogue.interaction.lslm_outcome` against its onset: TP / FN / FP / TN, precision,
recall, F1. `speaking_nll`: nats per target token (units and the final eos / irq) of teacher-forced items, with their
listening features or with zeros in their place (the plain LM's view: LSLM's "vanilla" comparison).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from textless.dialogue.interaction import LSLM_MU, LSLMScores, lslm_scores
from textless.dialogue.lslm.data import IGNORE, LSLMItem, collate
from textless.dialogue.lslm.model import IRQ, ListenSpeakLM
from textless.lm.generation import filter_logits
from textless.streaming import StreamingError, StreamingModule, StreamingState


@dataclass
class ListenSpeakSampling:
    temperature: float = 1.0       # 0: greedy
    top_k: int | None = None
    top_p: float | None = 0.99     # LSLM section 5.3
    seed: int = 0                  # stream b draws from a generator seeded seed + b


@dataclass
class ListenSpeakResult:
    units: np.ndarray              # int64 [n]: the units it spoke (prompt included; `keep` tokens left out)
    stop: str                      # "irq" | "eos" | "length"
    stop_frame: int                # frames spoken when it stopped (= len(tokens))
    irq_prob: np.ndarray           # float32 [steps]: p(irq) at positions P, P + 1, ...
    tokens: np.ndarray             # int64 [n]: its token per frame (units and `keep` specials)


@torch.no_grad()
def listen_and_speak(model: ListenSpeakLM, prompts: list[np.ndarray], listen: list[np.ndarray],
                     max_frames: list[int], sampling: ListenSpeakSampling | None = None, *,
                     stops: tuple[str, ...] = ("eos", IRQ), keep: tuple[str, ...] = (),
                     prefixes: list[np.ndarray] | None = None) -> list[ListenSpeakResult]:
    """prompts: per stream the prompt's units [P_b]; listen: its listening features [F_b, D] (frames past F_b read
    zeros); max_frames: frames it may speak in all -> one result per stream (module docstring). `stops`: the special
    tokens that end a stream (default eos and irq; none: it speaks max_frames frames); `keep`: specials it may also
    say as a frame's token and goes on (the duplex S2S turn markers); `prefixes`: per stream the prefix tokens fed
    before its ``<bos>`` (with listening zeros; `textless.dialogue.lslm.data.prefix_tokens`)."""
    sampling = sampling or ListenSpeakSampling()
    vocab, device = model.vocab, model.device
    b_size = len(prompts)
    lo, hi = vocab.unit_range
    allowed = torch.zeros(vocab.size, dtype=torch.bool, device=device)
    allowed[lo:hi] = True
    stop_ids = {vocab.specials[name]: name for name in stops}
    allowed[[*stop_ids, *(vocab.specials[name] for name in keep)]] = True
    generators = [torch.Generator(device=device).manual_seed(sampling.seed + b) for b in range(b_size)]
    spoken = [vocab.units_to_tokens(np.asarray(p, np.int64)).tolist() for p in prompts]
    plen = [len(p) for p in spoken]
    heads = [[int(t) for t in p] + [vocab.bos_id] for p in (prefixes or [np.zeros(0, np.int64)] * b_size)]
    start = [len(h) - 1 for h in heads]     # the position of each stream's <bos>
    irq_probs: list[list[float]] = [[] for _ in range(b_size)]
    ended: list[str | None] = [None] * b_size
    dim = model.config.listen_dim
    frames = [torch.as_tensor(np.asarray(x, np.float32)) for x in listen]
    horizon = max(m + s for m, s in zip(max_frames, start, strict=True)) + 1
    with model.streaming(b_size):
        for step in range(horizon):
            running = [b for b in range(b_size) if ended[b] is None]
            if not running:
                break
            tokens = torch.full((b_size,), vocab.pad_id, dtype=torch.long)
            feats = torch.zeros(b_size, dim)
            for b in running:
                i = step - start[b]             # the stream's position counted from its <bos>
                tokens[b] = heads[b][step] if i <= 0 else spoken[b][i - 1]
                if 1 <= i <= len(frames[b]):
                    feats[b] = frames[b][i - 1]
            mask = torch.zeros(b_size, dtype=torch.bool)
            mask[running] = True
            model.set_exec_mask(mask.to(device))
            logits = model.step(tokens.to(device), feats.to(device)).float().masked_fill(~allowed, -math.inf)
            probs = logits.softmax(dim=-1)
            choice = filter_logits(logits, temperature=max(sampling.temperature, 1e-6), top_k=sampling.top_k,
                                   top_p=sampling.top_p).softmax(dim=-1)
            for b in running:
                i = step - start[b]
                if i < plen[b]:
                    continue  # the prefix, <bos>, or the prompt's frame i: given
                if len(spoken[b]) >= max_frames[b]:
                    ended[b] = "length"
                    continue
                irq_probs[b].append(float(probs[b, vocab.specials[IRQ]]))
                if sampling.temperature == 0:
                    token = int(logits[b].argmax())
                else:
                    token = int(torch.multinomial(choice[b], 1, generator=generators[b])[0])
                if token in stop_ids:
                    ended[b] = stop_ids[token]
                else:
                    spoken[b].append(token)
    out = []
    for b in range(b_size):
        tokens = np.asarray(spoken[b], np.int64)
        units = vocab.tokens_to_units(tokens[(tokens >= lo) & (tokens < hi)])
        out.append(ListenSpeakResult(units, ended[b] or "length", len(tokens), np.asarray(irq_probs[b], np.float32),
                                     tokens))
    return out


def stop_time(result: ListenSpeakResult, frame_rate: float) -> float | None:
    """When the model stopped early (s): its IRQ frame / R; None when it ended with eos or the frame budget."""
    return result.stop_frame / frame_rate if result.stop == "irq" else None


def interaction_scores(results: list[ListenSpeakResult], onsets: list[float | None], frame_rate: float,
                       mu: float = LSLM_MU) -> LSLMScores:
    """LSLM's TP / FN / FP / TN, precision, recall and F1 of generated items against their onsets."""
    return lslm_scores([(onset, stop_time(r, frame_rate)) for r, onset in zip(results, onsets, strict=True)], mu)


@torch.no_grad()
def speaking_nll(model: ListenSpeakLM, items: list[LSLMItem], frame_rate: float, *, listening: bool = True,
                 batch_size: int = 8) -> float:
    """Nats per target token of teacher-forced `items` (module docstring); ``listening=False``: zeros in place of
    their features (the plain LM's view)."""
    total, count = 0.0, 0
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size], model.vocab, frame_rate,
                        prefix=model.config.prefix).to(model.device)
        logits = model(batch.input_ids, batch.listen if listening else torch.zeros_like(batch.listen))
        total += float(F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE,
                                       reduction="sum"))
        count += int((batch.labels != IGNORE).sum())
    return total / max(count, 1)


def plot_irq(result: ListenSpeakResult, prompt_frames: int, frame_rate: float, onset: float | None,
             path: str | Path, mu: float = 0.5) -> Path:
    """LSLM Fig. 4: log10 p(irq) over time (s) from the prompt's end, the onset and onset + 2 mu marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = (prompt_frames + np.arange(len(result.irq_prob))) / frame_rate
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.semilogy(times, np.maximum(result.irq_prob, 1e-12), label="p(IRQ)")
    if onset is not None:
        ax.axvline(onset, color="tab:red", label="interruption onset")
        ax.axvspan(onset, onset + 2 * mu, color="tab:red", alpha=0.1, label="[onset, onset + 2 mu]")
    if result.stop == "irq":
        ax.axvline(result.stop_frame / frame_rate, color="black", linestyle="--", label="IRQ sampled")
    ax.set_xlabel("seconds from the utterance's start")
    ax.set_ylabel("probability")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# frame by frame, under the streaming protocol
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class ListenSpeakState(StreamingState):
    seed: int = 0
    dim: int = 0
    bos: int = 0
    tokens: torch.Tensor = field(init=False)       # int64 [B]: each stream's token of its last frame (bos at first)
    heard: torch.Tensor = field(init=False)        # float32 [B, D]: the listening frame its next position reads
    stopped: torch.Tensor = field(init=False)      # bool [B]: said eos / irq (speaks silence from then on)
    stop_frame: list[int | None] = field(init=False)
    frames: list[int] = field(init=False)          # frames returned per stream
    generators: list[torch.Generator] = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.tokens = torch.full((self.batch_size,), self.bos, dtype=torch.long, device=self.device)
        self.heard = torch.zeros(self.batch_size, self.dim, device=self.device)
        self.stopped = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        self.stop_frame = [None] * self.batch_size
        self.frames = [0] * self.batch_size
        self.generators = [torch.Generator(device=self.device).manual_seed(self.seed + b)
                           for b in range(self.batch_size)]

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.tokens = torch.where(mask, self.bos, self.tokens)
        self.heard = torch.where(mask[:, None], 0.0, self.heard)
        self.stopped = self.stopped & ~mask
        for b in mask.nonzero()[:, 0].tolist():
            self.stop_frame[b], self.frames[b] = None, 0


class ListenSpeakGenerator(StreamingModule):
    """One listening frame in, one speaking frame out (a session's generator; the model streams with it).

    ``step(feature [B, D]) -> units int64 [B]``: step t returns each stream's unit of frame t, sampled at the position
    that reads listening frame t - 1 (the one the previous step gave; zeros at t = 0) with its token of frame t - 1,
    as in training: frame t never depends on listening frame t. A stream that says eos or irq has stopped: it returns
    `silence_unit` from then on (``stop_frame`` records when) and its model is no longer stepped. ``irq_prob``: the
    last step's p(irq) per stream. Sampling as `listen_and_speak`; stream b draws from a generator seeded seed + b.
    """

    def __init__(self, model: ListenSpeakLM, silence_unit: int, sampling: ListenSpeakSampling | None = None):
        super().__init__()
        lo, hi = model.vocab.unit_range
        if not 0 <= silence_unit < hi - lo:
            raise ValueError(f"silence_unit {silence_unit} is outside the model's units [0, {hi - lo})")
        self.model = model
        self.silence_unit = silence_unit
        self.sampling = sampling or ListenSpeakSampling()
        self.irq_prob: torch.Tensor | None = None

    def _init_streaming_state(self, batch_size: int) -> ListenSpeakState:
        return ListenSpeakState(batch_size, self.model.device, seed=self.sampling.seed,
                                dim=self.model.config.listen_dim, bos=self.model.vocab.bos_id)

    @torch.no_grad()
    def step(self, feature: torch.Tensor) -> torch.Tensor:
        state = self._require_streaming("ListenSpeakGenerator.step")
        assert isinstance(state, ListenSpeakState)
        feature = torch.as_tensor(feature, dtype=torch.float32, device=state.device)
        if feature.shape != (state.batch_size, state.dim):
            raise StreamingError(f"ListenSpeakGenerator.step takes listening features [{state.batch_size}, "
                                 f"{state.dim}], got {tuple(feature.shape)}")
        vocab = self.model.vocab
        lo, hi = vocab.unit_range
        run = state.exec_mask & ~state.stopped
        self.model.set_exec_mask(run)
        logits = self.model.step(state.tokens, state.heard).float()
        self.model.set_exec_mask(state.exec_mask)
        allowed = torch.zeros(vocab.size, dtype=torch.bool, device=state.device)
        allowed[lo:hi] = True
        allowed[[vocab.eos_id, vocab.specials[IRQ]]] = True
        logits = logits.masked_fill(~allowed, -math.inf)
        self.irq_prob = logits.softmax(dim=-1)[:, vocab.specials[IRQ]]
        s = self.sampling
        if s.temperature == 0:
            tokens = logits.argmax(dim=-1)
        else:
            probs = filter_logits(logits, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p).softmax(dim=-1)
            tokens = logits.argmax(dim=-1)
            for b in run.nonzero()[:, 0].tolist():
                tokens[b] = torch.multinomial(probs[b], 1, generator=state.generators[b])[0]
        ends = run & ((tokens == vocab.eos_id) | (tokens == vocab.specials[IRQ]))
        for b in ends.nonzero()[:, 0].tolist():
            state.stop_frame[b] = state.frames[b]
        state.stopped = state.stopped | ends
        speaking = run & ~ends
        units = torch.where(speaking, tokens - lo, self.silence_unit)
        state.tokens = torch.where(speaking, tokens, state.tokens)
        state.heard = torch.where(state.exec_mask[:, None], feature, state.heard)
        for b in state.exec_mask.nonzero()[:, 0].tolist():
            state.frames[b] += 1
        return torch.where(state.exec_mask, units, -1)

    @property
    def stop_frames(self) -> list[int | None]:
        """Per stream, the frame at which it said eos / irq (None: still speaking)."""
        state = self._require_streaming("ListenSpeakGenerator.stop_frames")
        assert isinstance(state, ListenSpeakState)
        return list(state.stop_frame)
