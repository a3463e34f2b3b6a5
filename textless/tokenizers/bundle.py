"""SpeechTokenizer: encoder + layer + k-means + dedup + optional BPE, saved as one directory.

Layout of a bundle directory (``save_pretrained`` / ``from_pretrained``)::

    tokenizer.json        {"format": "textless.speech_tokenizer", "version": 1,
                           "encoder": {"source", "layer", "options" (loader keywords), "identity"}, "deduplicate": bool,
                           "sample_rate": Hz, "frame_rate": Hz, "vocab_size": K or BPE size}
    kmeans.safetensors    centroids [K, D] + metadata (see textless.tokenizers.kmeans)
    bpe/                  optional UnitBPE (textless.tokenizers.bpe)
    encoder/              optional copy of a Hugging Face encoder directory (``embed_encoder=True``)

The encoder is stored by reference (its ``source``: "mfcc", a Hugging Face directory or a fairseq ``.pt``) unless it was
embedded; a relative reference is resolved against the bundle directory first, then the working directory.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from textless.audio import LazyWaveform, resample
from textless.data.identity import UnitIdentity
from textless.data.units import UnitMeta
from textless.data.units import dedup as dedup_numpy
from textless.errors import AudioError, TextlessError
from textless.tokenizers.encoders import SpeechEncoder, load_encoder
from textless.tokenizers.encoders.chunking import iter_encode_long
from textless.tokenizers.encoders.utterances import DEFAULT_CHUNK_SECONDS, encode_utterances, longest_whole
from textless.tokenizers.kernels import dedup
from textless.tokenizers.kmeans import KMeans
from textless.utils.assets import starter_part
from textless.utils.atomic import atomic_directory
from textless.utils.hf import quiet_progress_bars
from textless.utils.versioned import artifact

# Fewer frames than this (80 s at 50 Hz) are labelled by the torch implementation of `kernels.assign` and deduplicated
# by numpy: the same labels and units without numba's compile on first use (~6 s, once per machine) or the load of
# its compiled cache (~0.8 s in every new process), either of which costs more than a short file's whole assignment.
SMALL_INPUT_FRAMES = 4096

TOKENIZER = artifact("textless.speech_tokenizer", 1, "a speech tokenizer bundle")


@dataclass
class Units:
    """Units of one utterance: ``ids`` int64 [L]; ``durations`` int64 [L] frames per unit (None if not deduplicated).

    With BPE, ``ids`` are BPE tokens, ``durations`` the frames each token covers and ``unit_durations`` the frames of
    each deduplicated unit, so `SpeechTokenizer.to_units` gives back the units and their durations losslessly.
    """

    ids: np.ndarray
    durations: np.ndarray | None = None
    unit_durations: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


class SpeechTokenizer:
    """Waveform -> units. `encode(wav, sample_rate)` for one utterance, `encode_batch` for many (padded batches)."""

    def __init__(self, encoder: SpeechEncoder, kmeans: KMeans, deduplicate: bool = True, bpe=None,
                 device: str | torch.device = "cpu"):
        if kmeans.centroids.shape[1] != encoder.dim:
            raise TextlessError(f"k-means centroids have dimension {kmeans.centroids.shape[1]} but the encoder "
                                f"{encoder.identity().get('name')} gives {encoder.dim}-d features")
        if bpe is not None and not deduplicate:
            raise TextlessError("BPE over units needs deduplicate=True")
        self.encoder = encoder.to(device)
        self.kmeans = kmeans
        self.deduplicate = deduplicate
        self.bpe = bpe
        self.device = torch.device(device)

    # ------------------------------------------------------------------------------------------------ properties
    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.encoder.frame_rate

    @property
    def num_units(self) -> int:
        """k of the k-means (the base unit vocabulary)."""
        return int(self.kmeans.centroids.shape[0])

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary of `encode`'s ids: BPE tokens if a BPE is attached, else k."""
        return self.bpe.vocab_size if self.bpe is not None else self.num_units

    def identity(self) -> dict:
        """What produced the units: recorded in unit datasets and checked by unit LMs."""
        digest = hashlib.sha256(np.ascontiguousarray(self.kmeans.centroids).tobytes()).hexdigest()[:16]
        enc = self.encoder.identity()
        layer = f"-l{enc['layer']}" if enc.get("layer") is not None else ""
        identity = {"name": f"{enc.get('name', 'encoder')}{layer}-km{self.num_units}",
                    "encoder": enc, "kmeans_sha256": digest, "num_units": self.num_units,
                    "deduplicate": self.deduplicate}
        if self.bpe is not None:
            identity["bpe_vocab_size"] = self.bpe.vocab_size
            identity["name"] += f"-bpe{self.bpe.vocab_size}"
        return identity

    def unit_identity(self) -> UnitIdentity:
        """What `encode` produces: the units contract (`textless.data.identity`) every consumer checks."""
        return UnitIdentity(tokenizer=self.identity(), vocab_size=self.vocab_size, frame_rate=self.frame_rate,
                            deduplicated=self.deduplicate, bpe=self.bpe is not None)

    def unit_meta(self, extra: dict | None = None) -> UnitMeta:
        """The meta.json of a unit dataset written from `encode`'s output."""
        return UnitMeta.from_identity(self.unit_identity(), extra)

    # ---------------------------------------------------------------------------------------------------- encode
    def _to_tensor(self, wav, sample_rate: int) -> torch.Tensor:
        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.ndim != 1:
            raise TextlessError(f"expected a mono waveform [T], got shape {tuple(wav.shape)}")
        return resample(wav, sample_rate, self.sample_rate)

    def units_from_labels(self, labels: np.ndarray) -> Units:
        """Frame labels -> (deduplicated, BPE-encoded) units."""
        if not self.deduplicate:
            return Units(labels.astype(np.int64))
        units, durations = (dedup_numpy if len(labels) < SMALL_INPUT_FRAMES else dedup)(labels)
        if self.bpe is None:
            return Units(units, durations)
        encoded = self.bpe.encode(units, durations)
        return Units(encoded.tokens, encoded.token_durations, encoded.unit_durations)

    def to_units(self, units: Units) -> tuple[np.ndarray, np.ndarray | None]:
        """`encode`'s output -> (unit ids [L], durations [L] or None): BPE tokens are decoded back to the units."""
        if self.bpe is None:
            return units.ids, units.durations
        return self.bpe.decode(units.ids), units.unit_durations

    def _predict(self, feats: torch.Tensor) -> np.ndarray:
        if feats.is_cuda:
            labels = self.kmeans.predict(feats)
        else:
            labels = self.kmeans.predict(feats.numpy(), device="cpu" if len(feats) < SMALL_INPUT_FRAMES else None)
        return labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels

    def frame_labels_batch(self, wavs: Sequence[torch.Tensor],
                           chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> list[np.ndarray]:
        """k-means labels per frame for already-resampled waveforms [T].

        How the waveforms go through the encoder (one by one on the CPU, padded batches on a GPU; the features of
        all of them assigned at once): `encoders.utterances.encode_utterances`. Waveforms longer than
        `chunk_seconds` go through `frame_labels_long` (windows, labels per window: bounded memory).
        """
        limit = longest_whole(self.encoder, chunk_seconds)
        out: list[np.ndarray | None] = [None] * len(wavs)
        for i in (i for i, w in enumerate(wavs) if len(w) > limit):
            out[i] = self.frame_labels_long(wavs[i], chunk_seconds)
        short = [i for i, w in enumerate(wavs) if len(w) <= limit]
        if short:
            feats = encode_utterances(self.encoder, [wavs[i] for i in short], chunk_seconds)
            labels = self._predict(torch.cat(feats))
            bounds = np.cumsum([0] + [len(f) for f in feats])
            for i, (a, b) in zip(short, pairwise(bounds)):
                out[i] = labels[a:b]
        return out  # type: ignore[return-value]

    def frame_labels_long(self, wav, chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> np.ndarray:
        """k-means labels per frame of one long waveform at the encoder's rate: a tensor [T] or a `LazyWaveform`
        (read window by window from its file). Encoded in windows (`encoders.chunking`) whose features are assigned
        and dropped one window at a time: memory does not grow with the length beyond the labels themselves."""
        windows = iter_encode_long(self.encoder, wav, chunk_seconds=chunk_seconds, out_device=self.encoder.device)
        return np.concatenate([self._predict(f) for f in windows])  # assigned where encoded (GPU: on the GPU)

    def encode_file(self, path, chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> Units:
        """`Units` of an audio file of any length, read window by window (`textless.audio.LazyWaveform`): neither the
        waveform nor its features are ever held whole."""
        wav = LazyWaveform(path, self.sample_rate)
        problem = self.encoder.length_problem(len(wav))
        if problem:
            raise AudioError(path, f"cannot be tokenized: {problem}")
        return self.units_from_labels(self.frame_labels_long(wav, chunk_seconds))

    def encode(self, wav, sample_rate: int) -> Units:
        """One waveform ([T] float, any rate) -> `Units`."""
        return self.encode_batch([wav], sample_rate)[0]

    def encode_batch(self, wavs: Sequence, sample_rate: int) -> list[Units]:
        """Several waveforms (same rate) -> `Units` each; identical to calling `encode` one by one.

        A waveform too short for one encoder frame raises `TextlessError` naming its index.
        """
        if not wavs:
            return []
        tensors = [self._to_tensor(w, sample_rate) for w in wavs]
        for i, wav in enumerate(tensors):
            problem = self.encoder.length_problem(len(wav))
            if problem:
                raise TextlessError(f"waveform {i}: {problem}")
        return [self.units_from_labels(labels) for labels in self.frame_labels_batch(tensors)]

    # ---------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path, *, embed_encoder: bool = False, overwrite: bool = False) -> Path:
        path = Path(path)
        enc = self.encoder.identity()
        config = {
                  "encoder": {"source": str(enc.get("source", "")), "layer": enc.get("layer"),
                              "options": self.encoder.loader_options(), "identity": enc},
                  "deduplicate": self.deduplicate, "sample_rate": self.sample_rate, "frame_rate": self.frame_rate,
                  "num_units": self.num_units, "vocab_size": self.vocab_size, "bpe": self.bpe is not None}
        with atomic_directory(path, overwrite=overwrite) as tmp:
            self.kmeans.save(tmp / "kmeans.safetensors")
            if self.bpe is not None:
                self.bpe.save(tmp / "bpe")
            if embed_encoder:
                source = Path(config["encoder"]["source"])
                if not source.is_dir():
                    raise TextlessError(f"embed_encoder=True needs a Hugging Face encoder directory, got '{source}'")
                shutil.copytree(source, tmp / "encoder")
                config["encoder"]["source"] = "encoder"
            (tmp / "tokenizer.json").write_text(TOKENIZER.dumps(config))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu", force_dtype: bool = False,
                        **encoder_kw) -> SpeechTokenizer:
        """Load a bundle; the encoder is rebuilt with its saved options (e.g. ``normalize``, ``dtype``, MFCC sizes),
        which `encoder_kw` may override (e.g. ``dtype="bfloat16"`` to run a float32 bundle in bf16). A half dtype on
        a CPU without native support falls back to float32 (with a warning) unless `force_dtype`."""
        from textless.tokenizers.bpe import UnitBPE

        path = starter_part(path, "tokenizer")
        config = TOKENIZER.read_dir(path, "tokenizer.json")
        source = config["encoder"]["source"]
        if source != "mfcc" and not Path(source).is_absolute() and (path / source).exists():
            source = str(path / source)
        options = {**config["encoder"].get("options", {}), **encoder_kw}
        with quiet_progress_bars():
            encoder = load_encoder(source, config["encoder"].get("layer"), **options)
        encoder.force_dtype = force_dtype
        kmeans = KMeans.load(path / "kmeans.safetensors")
        bpe = UnitBPE.load(path / "bpe") if config.get("bpe") else None
        return cls(encoder, kmeans, deduplicate=config["deduplicate"], bpe=bpe, device=device)
