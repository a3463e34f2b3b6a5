"""UnitVocoder: a `UnitHiFiGAN` generator plus what it expects of its input units, saved as one directory.

Layout (``save_pretrained`` / ``from_pretrained``, written atomically)::

    config.json         {"format": "textless.vocoder", "version": 1, "generator": UnitHiFiGANConfig.to_dict(),
                         "tokenizer": identity dict of the unit tokenizer or null, "frame_rate": Hz,
                         "deduplicated": bool}
    model.safetensors   the generator's state dict (weight norm folded; names = fairseq CodeHiFiGAN keys)

``deduplicated`` says what `synthesize` receives by default: True -> deduplicated units (runs of one unit collapsed),
expanded with given durations or else the model's duration predictor; False -> frame-level units (one per frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from textless.data.identity import UnitIdentity, check_fits
from textless.errors import FormatError, TextlessError
from textless.utils.atomic import atomic_directory
from textless.utils.versioned import artifact
from textless.vocoders.generator import UnitHiFiGAN, UnitHiFiGANConfig, fold_weight_norm

VOCODER = artifact("textless.vocoder", 1, "a textless vocoder directory")
FORMAT_NAME = VOCODER.name
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class UnitVocoder(nn.Module):
    """Units -> waveform. ``frame_rate`` is the unit rate in Hz (sampling_rate / hop, e.g. 50 or 25)."""

    def __init__(self, generator: UnitHiFiGAN, *, tokenizer: dict | None = None, frame_rate: float | None = None,
                 deduplicated: bool = False):
        super().__init__()
        self.generator = generator
        self.tokenizer = dict(tokenizer) if tokenizer is not None else None
        self.frame_rate = float(frame_rate if frame_rate is not None else self.config.sampling_rate / generator.hop)
        self.deduplicated = bool(deduplicated)

    @classmethod
    def from_config(cls, config: UnitHiFiGANConfig, **meta) -> UnitVocoder:
        return cls(UnitHiFiGAN(config), **meta)

    @property
    def config(self) -> UnitHiFiGANConfig:
        return self.generator.config

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def hop(self) -> int:
        """Output samples per unit frame."""
        return self.generator.hop

    @property
    def device(self) -> torch.device:
        return self.generator.conv_pre.weight.device

    @property
    def units(self) -> UnitIdentity:
        """The units it voices (`textless.data.identity`): ids below its codebook size, of its tokenizer when it
        records one, at its frame rate; plain units (not BPE), frame-level or deduplicated alike (durations expand
        them)."""
        return UnitIdentity(tokenizer=self.tokenizer, vocab_size=self.config.codebook_size,
                            frame_rate=self.frame_rate, bpe=False)

    def check_units(self, units: UnitIdentity, where: str, name: str = "the vocoder") -> None:
        """`check_fits` (the one units rule) of `units` from `where` against this vocoder."""
        check_fits(self.units, units, consumer=name, source=where, short="the vocoder")

    # ---------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        path = Path(path)
        meta = {"generator": self.config.to_dict(),
                "tokenizer": self.tokenizer, "frame_rate": self.frame_rate, "deduplicated": self.deduplicated}
        state = {k: v.detach().cpu().contiguous() for k, v in self.generator.state_dict().items()}
        if any(".parametrizations." in k for k in state):  # saved in the inference (folded) form
            state = fold_weight_norm(state)
        with atomic_directory(path, overwrite=overwrite) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
            (tmp / CONFIG_FILE).write_text(VOCODER.dumps(meta))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu") -> UnitVocoder:
        path = Path(path)
        config_path = path / CONFIG_FILE
        meta = VOCODER.read_dir(path, CONFIG_FILE)
        try:
            config = UnitHiFiGANConfig.from_dict(meta["generator"])
        except (KeyError, TypeError) as e:
            raise FormatError(config_path, f"bad generator config ({e})") from None
        generator = UnitHiFiGAN(config)
        try:
            missing, unexpected = generator.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=False)
        except (OSError, RuntimeError, SafetensorError) as e:  # missing or unreadable file, shape mismatch
            raise FormatError(path / WEIGHTS_FILE, str(e).splitlines()[0]) from None
        if missing or unexpected:
            raise FormatError(path / WEIGHTS_FILE, f"weights do not fit the config: missing {missing[:5]}, "
                                                   f"unexpected {unexpected[:5]}")
        vocoder = cls(generator, tokenizer=meta.get("tokenizer"), frame_rate=meta.get("frame_rate"),
                      deduplicated=meta.get("deduplicated", False))
        return vocoder.to(device).eval()

    # ------------------------------------------------------------------------------------------------ synthesis
    def _check_units(self, u: np.ndarray, i: int) -> None:
        k, c = self.config.codebook_size, self.config.num_codebooks
        if (c == 1 and u.ndim != 1) or (c > 1 and (u.ndim != 2 or u.shape[1] != c)):
            want = "1-D [L]" if c == 1 else f"[L, {c}] (one unit per codebook)"
            raise TextlessError(f"units[{i}] must be {want}, got shape {u.shape}")
        if len(u) and (u.min() < 0 or u.max() >= k):
            raise TextlessError(f"units[{i}] has unit ids outside [0, {k}) (min {u.min()}, max {u.max()}): "
                                f"these units were not made for this vocoder")

    @torch.no_grad()
    def _batch_size(self, batch_size: int | None) -> int:
        """None ("auto"): 16 on a GPU, 1 on the CPU, where padded batches of these convolutions run slower than one
        utterance at a time (benchmarks/results/vocoder_cpu.json: more memory traffic, no better matrix use)."""
        if batch_size is None:
            return 1 if self.device.type == "cpu" else 16
        if batch_size < 1:
            raise TextlessError(f"batch_size must be >= 1, got {batch_size}")
        return batch_size

    def predict_durations(self, units: Sequence[np.ndarray], *, batch_size: int | None = None) -> list[np.ndarray]:
        """Deduplicated units -> predicted durations (int64 frames, >= 1) each, batched with padding masks."""
        if self.generator.dur_predictor is None:
            raise TextlessError("deduplicated units need durations: pass durations=..., this vocoder has no "
                                "duration predictor")
        units = [np.asarray(u, dtype=np.int64) for u in units]
        for i, u in enumerate(units):
            self._check_units(u, i)
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(units)
        for batch in _batches([len(u) for u in units], self._batch_size(batch_size)):
            ids, mask = self._pad([units[i] for i in batch])
            dur = self.generator.predict_durations(ids, mask).cpu().numpy()
            for row, i in enumerate(batch):
                out[i] = dur[row, : len(units[i])]
        return out

    @torch.no_grad()
    def synthesize(self, units: Sequence[np.ndarray], durations: Sequence[np.ndarray] | None = None,
                   speakers=None, f0: Sequence[np.ndarray] | None = None, *, batch_size: int | None = None,
                   deduplicated: bool | None = None) -> list[np.ndarray]:
        """Units of several utterances -> float32 waveforms [T_i] at `sample_rate` Hz, T_i = frames_i * hop.

        units: int arrays [L_i]. With ``durations`` (int arrays [L_i], frames per unit) each unit is repeated that
        many frames. Without, deduplicated units (``deduplicated``, default: the vocoder's setting) go through the
        duration predictor (TextlessError if there is none) and frame-level units are used as they are.
        speakers: None, one id (or name, see ``config.speakers``) for all, or one per utterance (multi-speaker
            vocoders); vectors [D] / [N, D] for vocoders that take speaker vectors.
        f0: per utterance, float [F_i] or [C, F_i] with frames_i % F_i == 0 (f0 vocoders).
        Utterances are sorted by length and run ``batch_size`` at a time (None: 16 on a GPU, 1 on the CPU) with
        padding masks; each output equals
        synthesising that utterance alone (see `UnitHiFiGAN.forward`).
        """
        units = [np.asarray(u).astype(np.int64, copy=False) for u in units]
        for i, u in enumerate(units):
            self._check_units(u, i)
        deduplicated = self.deduplicated if deduplicated is None else deduplicated
        if durations is None and deduplicated:
            durations = self.predict_durations(units, batch_size=batch_size)
        if durations is not None:
            if len(durations) != len(units):
                raise TextlessError(f"{len(durations)} duration arrays for {len(units)} unit sequences")
            frames = []
            for i, (u, d) in enumerate(zip(units, durations)):
                d = np.asarray(d).astype(np.int64)
                if d.shape != u.shape or (d < 0).any():
                    raise TextlessError(f"durations[{i}] must be non-negative ints of the units' shape {u.shape}, "
                                        f"got shape {d.shape}")
                frames.append(np.repeat(u, d, axis=0))
        else:
            frames = units
        speakers = self._speakers(speakers, len(frames))
        if f0 is not None and len(f0) != len(frames):
            raise TextlessError(f"{len(f0)} f0 arrays for {len(frames)} unit sequences")

        out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(frames)
        for batch in _batches([len(f) for f in frames], self._batch_size(batch_size)):
            ids, mask = self._pad([frames[i] for i in batch])
            spk = None if speakers is None else torch.as_tensor(np.stack([speakers[i] for i in batch])).to(self.device)
            f0_batch = None if f0 is None else self._pad_f0([f0[i] for i in batch], [len(frames[i]) for i in batch])
            wav = self.generator(ids, mask, spk, f0_batch)[:, 0].float().cpu().numpy()
            for row, i in enumerate(batch):
                out[i] = wav[row, : len(frames[i]) * self.hop].copy()
        return out

    def _pad(self, seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ids [B, n(, C)], mask [B, n]); the mask is None when nothing is padded (no masking work at all)."""
        n = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), n, *seqs[0].shape[1:]), np.int64)
        mask = np.zeros((len(seqs), n), bool)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = s
            mask[row, : len(s)] = True
        ids_t = torch.from_numpy(ids).to(self.device)
        return ids_t, None if mask.all() else torch.from_numpy(mask).to(self.device)

    def _pad_f0(self, f0s: list, n_frames: list[int]) -> torch.Tensor:
        """Repeat each f0 to its utterance's frame count (fairseq's rule), then right-pad: [B, C, max frames]."""
        rows = []
        for f, n in zip(f0s, n_frames):
            f = np.asarray(f, np.float32)
            f = f[None] if f.ndim == 1 else f
            if f.shape[-1] == 0 or n % f.shape[-1]:
                raise TextlessError(f"f0 of {f.shape[-1]} steps does not divide the {n} unit frames")
            rows.append(np.repeat(f, n // f.shape[-1], axis=1))
        out = np.zeros((len(rows), rows[0].shape[0], max(n_frames)), np.float32)
        for row, f in enumerate(rows):
            out[row, :, : f.shape[1]] = f
        return torch.from_numpy(out).to(self.device)

    def speaker_id(self, speaker) -> int:
        """A speaker id from an int or a name of ``config.speakers``."""
        names = self.config.speakers or []
        if isinstance(speaker, str):
            if speaker not in names:
                raise TextlessError(f"unknown speaker {speaker!r}; this vocoder knows {names or 'no names'}")
            return names.index(speaker)
        return int(speaker)

    def _speakers(self, speakers, n: int):
        if not self.config.multispkr:
            if speakers is not None:
                raise TextlessError("this vocoder is single-speaker: do not pass speakers")
            return None
        if speakers is None:
            raise TextlessError("this vocoder is multi-speaker: pass speakers (one id, or one per utterance)")
        if self.config.speaker_input != "id":  # vectors
            arr = np.asarray(speakers, np.float32)
            arr = np.broadcast_to(arr, (n, arr.shape[-1])) if arr.ndim == 1 else arr
            if arr.shape[0] != n:
                raise TextlessError(f"speakers must be one vector or {n} vectors, got shape {arr.shape}")
            return list(arr)
        items = [speakers] if isinstance(speakers, (str, int, np.integer)) else list(speakers)
        arr = np.asarray([self.speaker_id(s) for s in items], np.int64)
        arr = np.broadcast_to(arr, (n,)) if arr.size == 1 else arr
        if len(arr) != n or (arr < 0).any() or (arr >= self.config.num_speakers).any():
            raise TextlessError(f"speakers must be {n} ids in [0, {self.config.num_speakers})")
        return list(arr)

    def extra_repr(self) -> str:
        name = self.tokenizer.get("name") if self.tokenizer else None
        return f"tokenizer={name!r}, frame_rate={self.frame_rate}, dedup={self.deduplicated}, hop={self.hop}"


def _batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices of non-empty items, sorted by length (descending), cut into batches."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: -lengths[i])
    return [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
