"""`textless kmeans`: sample encoder features from a dataset, fit k-means (and optionally BPE), save a tokenizer bundle.

As in the GSLM / HuBERT recipes, features come from a random subset of utterances (``sample_fraction``) and are capped at
``max_frames`` frames (uniformly subsampled beyond that: memory is max_frames x D x 4 bytes). With ``init_from`` the
centroids are taken from an existing file instead (``.safetensors``, or an anchor ``km.bin`` with ``trust_pickle``),
which is how a released GSLM/TWIST tokenizer becomes a bundle.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from textless.data import load_dataset
from textless.data.batching import Failure, iter_audio_batches
from textless.errors import ConfigError, TextlessError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders import load_encoder
from textless.tokenizers.kmeans import KMeans, KMeansConfig


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
    output: str = ""                # tokenizer bundle directory to create
    batch_seconds: float = 120.0
    device: str = "cpu"
    overwrite: bool = False
    progress: bool = True


def _collect_features(cfg: KMeansJobConfig, encoder, log) -> tuple[np.ndarray, list[np.ndarray], list[Failure]]:
    """Sampled features [N, D] float32 plus the per-utterance features (for BPE training)."""
    manifest = load_dataset(cfg.dataset)
    items = list(manifest)
    if cfg.sample_fraction < 1.0:
        rng = random.Random(cfg.seed)
        items = sorted(rng.sample(items, max(1, round(len(items) * cfg.sample_fraction))), key=lambda i: i.id)
    failures: list[Failure] = []
    per_utterance: list[np.ndarray] = []
    bar = tqdm(total=len(items), unit="utt", desc="features", disable=not cfg.progress)
    for batch_items, wavs in iter_audio_batches(items, encoder.sample_rate, cfg.batch_seconds, failures.append):
        lengths = torch.tensor([len(w) for w in wavs])
        batch = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        feats, feat_lengths = encoder(batch.to(cfg.device), lengths.to(cfg.device))
        per_utterance += [feats[i, : int(n)].float().cpu().numpy() for i, n in enumerate(feat_lengths)]
        bar.update(len(batch_items))
    bar.close()
    for f in failures:
        log(f"skipped {f.id}: {f.error}")
    if not per_utterance:
        raise TextlessError(f"no usable audio in '{cfg.dataset}'")
    features = np.concatenate(per_utterance)
    if len(features) > cfg.max_frames:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(features), cfg.max_frames, replace=False))
        features = features[keep]
    return np.ascontiguousarray(features, dtype=np.float32), per_utterance, failures


def fit_tokenizer(cfg: KMeansJobConfig, log=print) -> SpeechTokenizer:
    if not cfg.output:
        raise ConfigError("kmeans needs output=<tokenizer bundle directory>")
    if Path(cfg.output).exists() and not cfg.overwrite:
        raise TextlessError(f"output '{cfg.output}' already exists (overwrite=true to replace it)")
    encoder = load_encoder(cfg.encoder, cfg.layer).to(cfg.device)
    t0 = time.perf_counter()
    per_utterance: list[np.ndarray] = []
    if cfg.init_from:
        kmeans = KMeans.load(cfg.init_from, trust_pickle=cfg.trust_pickle)
        log(f"centroids from {cfg.init_from}: k={kmeans.centroids.shape[0]}")
    else:
        features, per_utterance, _ = _collect_features(cfg, encoder, log)
        log(f"fitting k-means k={cfg.k} ({cfg.backend}) on {len(features):,} frames x {features.shape[1]} dims")
        kmeans = KMeans(KMeansConfig(k=cfg.k, backend=cfg.backend, max_iter=cfg.max_iter, seed=cfg.seed,
                                     device=cfg.device))
        kmeans.fit(features, metadata={"encoder": cfg.encoder, "layer": cfg.layer, "data": cfg.dataset})
        log(f"inertia {kmeans.inertia(features):.4f} (mean squared distance), {time.perf_counter() - t0:.1f} s")
    bpe = None
    if cfg.bpe_vocab_size:
        from textless.tokenizers.bpe import BPEConfig, UnitBPE
        from textless.tokenizers.kernels import dedup

        if not cfg.deduplicate:
            raise ConfigError("bpe_vocab_size needs deduplicate=true")
        if not per_utterance:
            features, per_utterance, _ = _collect_features(cfg, encoder, log)
        sequences = [dedup(np.asarray(kmeans.predict(f)))[0] for f in per_utterance]
        bpe = UnitBPE.train(sequences, kmeans.centroids.shape[0], BPEConfig(vocab_size=cfg.bpe_vocab_size))
        log(f"BPE: {bpe.vocab_size} tokens")
    tokenizer = SpeechTokenizer(encoder, kmeans, deduplicate=cfg.deduplicate, bpe=bpe, device=cfg.device)
    tokenizer.save_pretrained(cfg.output, overwrite=cfg.overwrite)
    log(f"wrote tokenizer {cfg.output}: {tokenizer.identity()['name']}")
    return tokenizer
