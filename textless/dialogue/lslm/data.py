"""LSLM training examples and batches: speaking units + listening features -> (inputs, labels, listening input).

One item is an utterance of frame-level speaking units ``units`` int64 [T] (the LM's units, frame rate R Hz), the
listening channel's features ``listen`` float32 [F, D] at the same rate (`textless.dialogue.listening`; F >= T
frames cover the utterance) and the interruption onset (seconds from the utterance's start, or None). The target
sequence is `textless.dialogue.interruptions.lslm_targets`: the units of frames [0, n) then IRQ when the onset + mu
falls inside the utterance (n = `irq_cut`), else all units then EOS. As token ids::

    tokens    = <bos> u_0 ... u_{n-1} <irq|eos>           (L + 1 tokens)
    input_ids = tokens[:-1], labels = tokens[1:]          (L each)
    listen[i] = listening frame i - 1 (zeros at i = 0)    (`listen_positions`: frame t is emitted having heard < t)

Prefix (LSLM's TTS-conditioned setting, optional): ``prefix="characters"`` puts the characters of the item's text
before ``<bos>`` as ``chr:<c>`` tokens (no labels, no listening), so the LM says a given sentence. A window of a
longer stream (``end`` False: duplex S2S conversations) has no final marker; ``marks`` put special tokens
in place of units at given frames (the duplex S2S agent's turn boundaries). Batches right-pad with ``pad`` (label -100, listening zeros). The loss is the NLL summed over labels (the engine's
token-weighted mean).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textless.dialogue.interaction import LSLM_MU
from textless.dialogue.interruptions import lslm_targets
from textless.dialogue.lslm.model import IRQ, listen_positions
from textless.lm.vocab import UnitVocab
from textless.utils.atomic import atomic_write_bytes

IGNORE = -100


@dataclass
class LSLMItem:
    """One utterance: speaking units int64 [T], listening features float32 [F, D] (F >= T), onset s or None."""

    id: str
    units: np.ndarray
    listen: np.ndarray
    onset: float | None
    noisy: bool = False       # noise in the listening channel (for clean / noisy scores)
    end: bool = True          # the utterance ends here: its targets end with eos / irq (False: a window of a longer one)
    marks: tuple[tuple[int, str], ...] = ()  # (frame, special token name): the token there instead of the unit
    text: str = ""            # what is said (the prefix of the TTS-conditioned setting)
    audio: np.ndarray | None = None  # float32 [S]: the listening audio (a trainable listening encoder reads it)


@dataclass
class LSLMBatch:
    input_ids: torch.Tensor   # int64 [B, L]
    labels: torch.Tensor      # int64 [B, L], IGNORE on padding
    listen: torch.Tensor      # float32 [B, L, D]
    interrupted: torch.Tensor  # bool [B]: the target ends with IRQ
    audio: torch.Tensor | None = None          # float32 [B, S]: listening audio (zero-padded), with_audio batches
    audio_lengths: torch.Tensor | None = None  # int64 [B] samples
    spans: torch.Tensor | None = None          # int64 [B, 2]: (position reading frame 0, frames read)

    def to(self, device: torch.device | str) -> LSLMBatch:
        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.to(device)

        return LSLMBatch(self.input_ids.to(device), self.labels.to(device), self.listen.to(device),
                         self.interrupted.to(device), move(self.audio), move(self.audio_lengths), move(self.spans))

    @property
    def targets(self) -> int:
        return int((self.labels != IGNORE).sum())


PREFIXES = ("none", "characters")
CHARACTERS = "abcdefghijklmnopqrstuvwxyz' "


def prefix_specials(prefix: str) -> tuple[str, ...]:
    """The special tokens a prefix needs: ``chr:<c>`` per character of `CHARACTERS` (none: ())."""
    if prefix not in PREFIXES:
        raise ValueError(f"prefix must be one of {PREFIXES}, got {prefix!r}")
    return () if prefix == "none" else tuple(f"chr:{c}" for c in CHARACTERS)


def prefix_tokens(text: str, vocab: UnitVocab) -> np.ndarray:
    """The character prefix of `text`: lower-cased, characters outside `CHARACTERS` dropped, runs of spaces merged,
    each character's ``chr:<c>`` token. int64 [C]."""
    chars = " ".join("".join(c for c in text.lower() if c in CHARACTERS).split())
    return np.array([vocab.specials[f"chr:{c}"] for c in chars], np.int64)


def item_prefix(item: LSLMItem, vocab: UnitVocab, prefix: str) -> np.ndarray:
    """The prefix tokens of an item (empty for prefix "none")."""
    return prefix_tokens(item.text, vocab) if prefix == "characters" else np.zeros(0, np.int64)


def item_tokens(item: LSLMItem, vocab: UnitVocab, frame_rate: float, mu: float = LSLM_MU) -> np.ndarray:
    """<bos> + the item's target tokens (module docstring), int64 [L + 1]."""
    units = vocab.units_to_tokens(np.asarray(item.units, np.int64))
    for frame, name in item.marks:
        units[frame] = vocab.specials[name]
    targets = lslm_targets(units, item.onset, frame_rate, vocab.specials[IRQ], vocab.eos_id, mu) if item.end \
        else units
    return np.concatenate([[vocab.bos_id], targets]).astype(np.int64)


def collate(items: list[LSLMItem], vocab: UnitVocab, frame_rate: float, mu: float = LSLM_MU,
            prefix: str = "none", with_audio: bool = False) -> LSLMBatch:
    """Right-padded batch of `items` (module docstring); with a `prefix` (C tokens before ``<bos>``: no label,
    listening zeros) the speaking sequence starts at position C. `with_audio`: also the items' listening audio and
    where its frames go (``spans``: position C + 1 reads frame 0, for L - C - 1 frames), for features computed later
    (`place_features`)."""
    tokens = [item_tokens(item, vocab, frame_rate, mu) for item in items]
    prefixes = [item_prefix(item, vocab, prefix) for item in items]
    length = max(len(t) + len(c) for t, c in zip(tokens, prefixes, strict=True)) - 1
    dim = items[0].listen.shape[1]
    ids = torch.full((len(items), length), vocab.pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    listen = torch.zeros(len(items), length, dim)
    for b, (item, t, c) in enumerate(zip(items, tokens, prefixes, strict=True)):
        n, k = len(t) - 1, len(c)
        if item.listen.shape[0] < n - 1:
            raise ValueError(f"item {item.id}: {item.listen.shape[0]} listening frames for {len(item.units)} "
                             f"speaking frames")
        sequence = np.concatenate([c, t])
        ids[b, :k + n] = torch.from_numpy(sequence[:-1])
        labels[b, k:k + n] = torch.from_numpy(t[1:])
        listen[b, k:k + n] = listen_positions(torch.from_numpy(np.asarray(item.listen, np.float32))[None], n)[0]
    interrupted = torch.tensor([int(t[-1]) == vocab.specials[IRQ] for t in tokens])
    if not with_audio:
        return LSLMBatch(ids, labels, listen, interrupted)
    missing = [item.id for item in items if item.audio is None]
    if missing:
        raise ValueError(f"items {missing[:3]} carry no listening audio")
    lengths = torch.tensor([len(item.audio) for item in items])
    audio = torch.zeros(len(items), int(lengths.max()))
    for b, item in enumerate(items):
        audio[b, :len(item.audio)] = torch.from_numpy(np.asarray(item.audio, np.float32))
    spans = torch.tensor([[len(c) + 1, len(t) - 2] for t, c in zip(tokens, prefixes, strict=True)])
    return LSLMBatch(ids, labels, listen, interrupted, audio, lengths, spans)


def place_features(features: torch.Tensor, spans: torch.Tensor, length: int) -> torch.Tensor:
    """Listening features [B, F, D] -> the listening input [B, length, D] of a batch: row b's frames 0..n-1 at
    positions s..s+n-1 for ``spans[b] = (s, n)`` (frames past F read zeros), zeros elsewhere (differentiable)."""
    rows = []
    for b, (start, count) in enumerate(spans.tolist()):
        count = max(0, min(count, features.shape[1], length - start))
        pad_after = length - start - count
        rows.append(torch.nn.functional.pad(features[b, :count], (0, 0, start, pad_after)))
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------------------------------
# prepared streams: units + listening features, and their cache
# ---------------------------------------------------------------------------------------------------------------------


def units_and_features(tokenizer: Any, channel: Any, speaking: torch.Tensor, listening: torch.Tensor
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Frame-level units int64 [T] of `speaking` and listening features float32 [T, D] of `listening` (waveforms at
    the tokenizer's / channel's rate, the same length): features cut to T; one frame short at most (rounding at
    the end) is padded with the last one."""
    units = tokenizer.frame_labels_batch([speaking])[0].astype(np.int64)
    with torch.no_grad():
        feats = channel(listening[None])[0][0].numpy()
    if feats.shape[0] < len(units):
        feats = np.concatenate([feats, np.repeat(feats[-1:], len(units) - feats.shape[0], axis=0)])
    return units, feats[:len(units)].astype(np.float32)


def write_prepared(path: Path, digest: str, rows: list[tuple[str, np.ndarray, np.ndarray]], dim: int) -> None:
    """Cache (atomically) prepared rows (id, units [T], features [T, D]) under `digest` (what they were made from)."""
    buffer = io.BytesIO()
    np.savez(buffer, digest=np.array(digest), lengths=np.array([len(u) for _, u, _ in rows], np.int64),
             ids=np.array([i for i, _, _ in rows], dtype=str),
             units=np.concatenate([u for _, u, _ in rows]) if rows else np.zeros(0, np.int64),
             listen=np.concatenate([f for _, _, f in rows]) if rows else np.zeros((0, dim), np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def read_prepared(path: Path | None, digest: str, ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """{id: (units, features)} from a `write_prepared` cache made under `digest`; None when there is none (or it
    was made from something else). A cache without ids (written before ids were kept) holds `ids` in order."""
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        if str(data["digest"]) != digest:
            return None
        bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
        held = data["ids"] if "ids" in data.files else ids
        units, listen = data["units"], data["listen"]
        return {str(i): (units[a:b], listen[a:b]) for i, a, b in zip(held, bounds[:-1], bounds[1:], strict=True)}
