"""`textless kmeans`: sample encoder features from a dataset, fit k-means (and optionally BPE), save a tokenizer bundle.

As in the GSLM / HuBERT recipes, features come from a random subset of utterances (``sample_fraction``) and are capped at
``max_frames`` frames (a uniform reservoir sample of all frames beyond that: memory is max_frames x D x 4 bytes, twice
that while BPE training may reuse the features). Unreadable or too-short files are reported and skipped; utterances
longer than ``chunk_seconds`` are encoded in windows, as `textless tokenize` does. With ``init_from`` the
centroids are taken from an existing file instead (``.safetensors``, or an anchor ``km.bin`` with ``trust_pickle``),
which is how a released GSLM/TWIST tokenizer becomes a bundle.

Resume. The feature pass (the long part on a real corpus) ends with its sample saved in ``<output>.parts/``
(``features.npy``, with a record of the encoder, its weights, the dataset and the sampling options; max_frames x D x 4
bytes on disk). A run killed during the k-means fit, re-run with the same command, starts from that sample (with BPE,
the units of the sampled utterances are then encoded again: one more pass); a re-run with another encoder, dataset or
sampling is refused with the differences (``restart=true`` discards it). The fit options (k, backend, max_iter) may change on a re-run: a new k reuses the sampled features. A
run killed during the feature pass starts it again. The directory is removed once the bundle is written.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from textless.data import load_dataset
from textless.data.batching import Failure, iter_audio_batches
from textless.errors import ConfigError, TextlessError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders import load_encoder
from textless.tokenizers.encoders.base import dtype_name, effective_dtype
from textless.tokenizers.encoders.utterances import encode_utterances
from textless.tokenizers.kmeans import KMeans, KMeansConfig
from textless.utils.atomic import atomic_path
from textless.utils.runs import module_fingerprint, parts_dir, resume_or_record

logger = logging.getLogger(__name__)


@dataclass
class KMeansJobConfig:
    dataset: str = "bundled:train"  # audio directory, manifest, or bundled:<split>
    encoder: str = "mfcc"           # "mfcc", a Hugging Face directory, or a fairseq .pt
    layer: int | None = None        # 1-based transformer layer (fairseq output_layer); None for mfcc
    k: int = 100
    backend: str = "faiss"          # faiss | torch | sklearn
    max_iter: int = 100
    seed: int = 0
    sample_fraction: float = 1.0    # fraction of utterances whose features are used
    max_frames: int = 1_000_000     # cap on the number of feature frames (uniform subsample)
    deduplicate: bool = True
    bpe_vocab_size: int | None = None
    init_from: str | None = None    # existing centroids (.safetensors or km.bin) instead of fitting
    trust_pickle: bool = False      # allow loading a pickled km.bin (only for files you trust)
    restart: bool = False           # discard the saved feature sample of a killed run (<output>.parts) and start over
    output: str = ""                # tokenizer bundle directory to create
    batch_seconds: float = 120.0
    chunk_seconds: float = 60.0     # longer utterances are encoded in overlapping windows (bounded memory)
    device: str = "cpu"
    dtype: str | None = None        # None (float32) | bfloat16 | float16: encoder autocast
    overwrite: bool = False
    progress: bool = True


class FrameReservoir:
    """A uniform random sample of at most `capacity` rows of a stream of feature frames (reservoir sampling,
    Vitter's algorithm R, vectorised per batch): memory is capacity x D x 4 bytes whatever the stream length."""

    def __init__(self, capacity: int, seed: int):
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.rows: np.ndarray | None = None
        self.seen = 0

    def add(self, frames: np.ndarray) -> None:
        """Offer frames [N, D]; each of the `seen` frames so far stays in the sample with the same probability."""
        if self.rows is None:
            self.rows = np.empty((self.capacity, frames.shape[1]), np.float32)
        fill = min(max(self.capacity - self.seen, 0), len(frames))
        self.rows[self.seen: self.seen + fill] = frames[:fill]
        rest = frames[fill:]
        if len(rest):  # frame number n (0-based) replaces a uniform slot j <= n when j < capacity
            slots = self.rng.integers(0, np.arange(self.seen + fill, self.seen + len(frames)) + 1)
            keep = np.flatnonzero(slots < self.capacity)
            # in stream order a later frame overwrites an earlier one in the same slot: keep the last per slot
            unique_slots, last = np.unique(slots[keep][::-1], return_index=True)
            self.rows[unique_slots] = rest[keep[::-1][last]]
        self.seen += len(frames)

    def sample(self) -> np.ndarray:
        """The sampled frames [min(seen, capacity), D] float32, in slot order."""
        return np.zeros((0, 0), np.float32) if self.rows is None else self.rows[: min(self.seen, self.capacity)]


def _iter_features(cfg: KMeansJobConfig, encoder, failures: list[Failure]) -> Iterator[np.ndarray]:
    """Features [F, D] float32 of each usable sampled utterance; unreadable or too-short files go to `failures`."""
    manifest = load_dataset(cfg.dataset)
    items = list(manifest)
    if cfg.sample_fraction < 1.0:
        rng = random.Random(cfg.seed)
        items = sorted(rng.sample(items, max(1, round(len(items) * cfg.sample_fraction))), key=lambda i: i.id)
    bar = tqdm(total=len(items), unit="utt", desc="features", disable=not cfg.progress)
    for batch_items, wavs in iter_audio_batches(items, encoder.sample_rate, cfg.batch_seconds, failures.append,
                                                length_problem=encoder.length_problem):
        for feats in encode_utterances(encoder, wavs, cfg.chunk_seconds):
            yield feats.float().cpu().numpy()
        bar.update(len(batch_items))
    bar.close()


def _collect_features(cfg: KMeansJobConfig, encoder, keep_utterances: bool
                      ) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """(a uniform sample of at most `max_frames` feature frames [N, D] float32, the per-utterance features when
    `keep_utterances` and every frame fit in that budget, else None). Memory: at most 2 x max_frames x D floats."""
    failures: list[Failure] = []
    reservoir = FrameReservoir(cfg.max_frames, cfg.seed)
    per_utterance: list[np.ndarray] | None = [] if keep_utterances else None
    for feats in _iter_features(cfg, encoder, failures):
        reservoir.add(feats)
        if per_utterance is not None and reservoir.seen <= cfg.max_frames:
            per_utterance.append(feats)
        else:
            per_utterance = None
    for f in failures:
        logger.info(f"skipped {f.id}: {f.error}")
    if reservoir.seen == 0:
        raise TextlessError(f"no usable audio in '{cfg.dataset}'")
    if reservoir.seen > cfg.max_frames:
        logger.info(f"sampled {cfg.max_frames:,} of {reservoir.seen:,} feature frames")
    return np.ascontiguousarray(reservoir.sample()), per_utterance


def _resumable_features(cfg: KMeansJobConfig, encoder, keep_utterances: bool
                        ) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """`_collect_features`, or the sample a killed run with the same inputs saved in ``<output>.parts``."""
    parts = parts_dir(cfg.output)
    if cfg.restart and parts.exists():
        logger.info(f"restart=true: discarding {parts}")
        shutil.rmtree(parts)
    started_with = {"encoder": encoder.identity(), "encoder_weights": module_fingerprint(encoder),
                    "dataset": load_dataset(cfg.dataset).identity(), "seed": cfg.seed,
                    "sample_fraction": cfg.sample_fraction, "max_frames": cfg.max_frames,
                    "chunk_seconds": cfg.chunk_seconds,
                    "dtype": dtype_name(effective_dtype(encoder.device, getattr(encoder, "dtype", None),
                                                        encoder.force_dtype))}
    resume_or_record(parts, started_with, what=f"the saved feature sample in {parts}",
                     how_to_restart="or pass restart=true to discard it and start over")
    saved = parts / "features.npy"
    if saved.is_file():
        logger.info(f"resuming: the feature sample of the killed run ({saved})")
        return np.load(saved, allow_pickle=False), None
    features, per_utterance = _collect_features(cfg, encoder, keep_utterances)
    with atomic_path(saved) as tmp, open(tmp, "wb") as f:
        np.save(f, features, allow_pickle=False)
    return features, per_utterance


def _unit_sequences(cfg: KMeansJobConfig, encoder, kmeans: KMeans, per_utterance: list[np.ndarray] | None
                    ) -> list[np.ndarray]:
    """Deduplicated unit sequences of the sampled utterances (for BPE training); re-encodes when the features were
    not kept."""
    from textless.tokenizers.kernels import dedup

    feats = per_utterance if per_utterance is not None else _iter_features(cfg, encoder, [])
    return [dedup(np.asarray(kmeans.predict(f)))[0] for f in feats]


def fit_tokenizer(cfg: KMeansJobConfig) -> SpeechTokenizer:
    if not cfg.output:
        raise ConfigError("kmeans needs output=<tokenizer bundle directory>")
    if Path(cfg.output).exists() and not cfg.overwrite:
        raise TextlessError(f"output '{cfg.output}' already exists (overwrite=true to replace it)")
    if cfg.bpe_vocab_size and not cfg.deduplicate:
        raise ConfigError("bpe_vocab_size needs deduplicate=true")
    encoder = load_encoder(cfg.encoder, cfg.layer, **({"dtype": cfg.dtype} if cfg.dtype else {})).to(cfg.device)
    t0 = time.perf_counter()
    per_utterance: list[np.ndarray] | None = None
    if cfg.init_from:
        kmeans = KMeans.load(cfg.init_from, trust_pickle=cfg.trust_pickle)
        kmeans.metadata = {"encoder": cfg.encoder, "layer": cfg.layer, **kmeans.metadata, "init_from": cfg.init_from}
        logger.info(f"centroids from {cfg.init_from}: k={kmeans.centroids.shape[0]}")
    else:
        features, per_utterance = _resumable_features(cfg, encoder, keep_utterances=bool(cfg.bpe_vocab_size))
        logger.info(f"fitting k-means k={cfg.k} ({cfg.backend}) on {len(features):,} frames x {features.shape[1]} dims")
        kmeans = KMeans(KMeansConfig(k=cfg.k, backend=cfg.backend, max_iter=cfg.max_iter, seed=cfg.seed,
                                     device=cfg.device))
        kmeans.fit(features, metadata={"encoder": cfg.encoder, "layer": cfg.layer, "data": cfg.dataset})
        logger.info(f"inertia {kmeans.inertia(features):.4f} (mean squared distance), {time.perf_counter() - t0:.1f} s")
    bpe = None
    if cfg.bpe_vocab_size:
        from textless.tokenizers.bpe import BPEConfig, UnitBPE

        sequences = _unit_sequences(cfg, encoder, kmeans, per_utterance)
        bpe = UnitBPE.train(sequences, kmeans.centroids.shape[0], BPEConfig(vocab_size=cfg.bpe_vocab_size))
        logger.info(f"BPE: {bpe.vocab_size} tokens")
    tokenizer = SpeechTokenizer(encoder, kmeans, deduplicate=cfg.deduplicate, bpe=bpe, device=cfg.device)
    tokenizer.save_pretrained(cfg.output, overwrite=cfg.overwrite)
    shutil.rmtree(parts_dir(cfg.output), ignore_errors=True)
    logger.info(f"wrote tokenizer {cfg.output}: {tokenizer.identity()['name']}")
    return tokenizer
