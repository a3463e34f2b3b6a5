"""Tokenizer metrics: ABX (features and units), phone / cluster purity, PNMI and unit bitrate on aligned speech.

Purity and PNMI follow HuBERT (fairseq ``examples/hubert/measure_teacher_quality.py``): with ``p(y, z)`` the joint
distribution of frame phones y and frame units z (before dedup, both at the tokenizer's frame rate, each utterance
truncated to the shorter of its two label sequences),

* phone purity   = ``sum_z max_y p(y, z)`` (fairseq's "ref pur": how well each unit predicts a phone);
* cluster purity = ``sum_y max_z p(y, z)`` (fairseq's "hyp pur");
* PNMI           = ``I(y; z) / H(y)``, with ``I = sum p(y,z) logger.info(p(y,z) / (p(y) p(z)) + 1e-8)`` and
  ``H(p) = -sum p logger.info(p + 1e-8)`` (natural logs, fairseq's smoothing constants included). Phones or units that never
  occur are left out of the table (fairseq gives NaN for them; every other value is unchanged).

Frame phones come from the alignments (`Alignment.frame_labels`: the phone at each frame's centre
``(i + 0.5) / frame_rate``, SIL included, as fairseq's frame labels include silence).

`evaluate_tokenizer` runs a `SpeechTokenizer` (any encoder + k-means: ``SpeechTokenizer(encoder, kmeans)``) over a
dataset with alignments (the bundled corpus by default) and gathers all of it in `TokenizerMetrics`; ``textless
eval-tokenizer`` is its command line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from textless.data.alignments import PHONES, Alignment, load_alignments
from textless.data.units import UnitSequence
from textless.errors import ConfigError, TextlessError
from textless.eval.abx import ABXResult, abx_error_rates, make_items, read_item_file, unit_features
from textless.eval.unit_stats import UnitStats, unit_statistics
from textless.utils.assets import starter_part

logger = logging.getLogger(__name__)

UNIT_EMBEDDINGS = ("onehot", "centroids")


# --------------------------------------------------------------------------------------------- purity and PNMI
@dataclass
class PurityStats:
    phone_purity: float
    cluster_purity: float
    pnmi: float            # I(phone; unit) / H(phone)
    mutual_info: float     # I(phone; unit), nats
    phone_entropy: float   # H(phone), nats
    unit_entropy: float    # H(unit), nats
    frames: int            # frames counted (after truncation)
    frames_dropped: int    # frames cut by the truncation to the shorter sequence
    phones_seen: int
    units_seen: int

    def to_dict(self) -> dict:
        return asdict(self)


def contingency(phone_frames: Iterable[np.ndarray], unit_frames: Iterable[np.ndarray], num_phones: int,
                num_units: int) -> tuple[np.ndarray, int]:
    """Joint counts int64 ``[num_phones, num_units]`` of per-utterance frame labels (int ``[T]`` each, paired in
    order), each pair truncated to the shorter; also returns the number of frames the truncation dropped."""
    counts = np.zeros(num_phones * num_units, dtype=np.int64)
    dropped = 0
    for n, (y, z) in enumerate(zip(phone_frames, unit_frames, strict=True)):
        y, z = np.asarray(y, dtype=np.int64), np.asarray(z, dtype=np.int64)
        size = min(len(y), len(z))
        dropped += abs(len(y) - len(z))
        y, z = y[:size], z[:size]
        if size and (y.min() < 0 or y.max() >= num_phones or z.min() < 0 or z.max() >= num_units):
            raise TextlessError(f"utterance {n}: labels outside [0, {num_phones}) phones x [0, {num_units}) units")
        counts += np.bincount(y * num_units + z, minlength=num_phones * num_units)
    return counts.reshape(num_phones, num_units), dropped


def purity_from_counts(counts: np.ndarray, frames_dropped: int = 0) -> PurityStats:
    """Phone purity, cluster purity and PNMI of a phone x unit count table ``[Y, Z]`` (rows = phones)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if counts.ndim != 2 or total <= 0:
        raise TextlessError("purity needs a non-empty phone x unit count table")
    counts = counts[counts.sum(1) > 0][:, counts.sum(0) > 0]
    p_xy = counts / total
    p_x = p_xy.sum(axis=1, keepdims=True)   # phones
    p_y = p_xy.sum(axis=0, keepdims=True)   # units
    mi = float((p_xy * np.log(p_xy / (p_x @ p_y) + 1e-8)).sum())
    h_x = float(-(p_x * np.log(p_x + 1e-8)).sum())
    h_y = float(-(p_y * np.log(p_y + 1e-8)).sum())
    return PurityStats(phone_purity=float(p_xy.max(axis=0).sum()), cluster_purity=float(p_xy.max(axis=1).sum()),
                       pnmi=mi / h_x if h_x > 0 else float("nan"), mutual_info=mi, phone_entropy=h_x,
                       unit_entropy=h_y, frames=int(total), frames_dropped=frames_dropped,
                       phones_seen=counts.shape[0], units_seen=counts.shape[1])


def purity(phone_frames: Iterable[np.ndarray], unit_frames: Iterable[np.ndarray], num_phones: int = len(PHONES),
           num_units: int | None = None) -> PurityStats:
    """`purity_from_counts` of the `contingency` of frame phones (ids into `PHONES` by default) and frame units."""
    phone_frames, unit_frames = list(phone_frames), list(unit_frames)
    if num_units is None:
        num_units = 1 + max((int(np.max(z)) for z in unit_frames if len(z)), default=0)
    counts, dropped = contingency(phone_frames, unit_frames, num_phones, num_units)
    return purity_from_counts(counts, dropped)


# ------------------------------------------------------------------------------------------------- the report
@dataclass
class TokenizerMetrics:
    """Everything `evaluate_tokenizer` measured. ABX values are error fractions in [0, 1] (None when not run)."""

    tokenizer: str
    dataset: str
    utterances: int
    frame_rate: float             # Hz of the unit frames
    num_units: int                # k of the k-means
    unit_embedding: str           # how ABX on units embeds the frames: onehot | centroids
    abx_features: ABXResult | None
    abx_units: ABXResult | None
    purity: PurityStats
    unit_stats: UnitStats         # of the tokenizer's output stream (dedup / BPE as configured)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0          # wall time

    def headline(self) -> dict[str, float | None]:
        """The usual numbers, flat: ABX error rates (fractions), purities, PNMI and bitrate (bits/s)."""
        def abx(result: ABXResult | None, mode: str) -> float | None:
            return None if result is None else getattr(result, mode)

        return {"abx_within_features": abx(self.abx_features, "within"),
                "abx_across_features": abx(self.abx_features, "across"),
                "abx_within_units": abx(self.abx_units, "within"), "abx_across_units": abx(self.abx_units, "across"),
                "phone_purity": self.purity.phone_purity, "cluster_purity": self.purity.cluster_purity,
                "pnmi": self.purity.pnmi, "bitrate": self.unit_stats.bitrate,
                "units_per_second": self.unit_stats.units_per_second}

    def to_dict(self) -> dict:
        return {"headline": self.headline(), **asdict(self)}

    def table(self) -> str:
        from textless.utils.table import format_table

        rows = []
        for key, value in self.headline().items():
            if value is None:
                rows.append([key, "-"])
            elif key.startswith("abx"):
                rows.append([key + " (%)", f"{100 * value:.2f}"])
            else:
                rows.append([key, f"{value:.3f}" if key != "bitrate" else f"{value:.1f}"])
        return format_table(["metric", "value"], rows)


@dataclass
class EvalTokenizerConfig:
    tokenizer: str = ""                      # SpeechTokenizer bundle directory
    dataset: str = "bundled:valid_unseen"    # bundled:<split>, a manifest or an audio directory (needs speakers)
    alignments: str | None = None            # alignments.jsonl (default: the bundled corpus's for bundled:<split>)
    item_file: str | None = None             # an .item file for ABX (default: triphone items made from the alignments)
    output: str | None = None                # report JSON to write
    abx: bool = True
    abx_distance: str = "cosine"             # cosine (angular, the benchmark's) | euclidean
    unit_embedding: str = "onehot"           # ABX on units: onehot | centroids
    max_size_group: int = 10
    max_x_across: int = 5
    seed: int = 0
    limit: int | None = None                 # at most this many utterances (in manifest order)
    batch_seconds: float = 120.0
    device: str = "cpu"


def _alignments_for(dataset: str, path: str | None) -> dict[str, Alignment]:
    if path:
        return load_alignments(path)
    if dataset.startswith("bundled:"):
        from textless.data.corpus import load_bundled_alignments

        return load_bundled_alignments()
    raise ConfigError(f"dataset '{dataset}' needs alignments=<alignments.jsonl> (phone alignments per utterance)")


def _encode(tokenizer, items, cfg: EvalTokenizerConfig):
    """Features float32 ``[F, D]`` and k-means labels int64 ``[F]`` per utterance id, plus failures."""
    import torch

    from textless.data.batching import iter_audio_batches
    from textless.tokenizers.encoders.utterances import encode_utterances

    failures: list[dict] = []
    feats: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}

    def fail(failure) -> None:
        failures.append(failure.to_dict())
        logger.info(f"failed {failure.id}: {failure.error}")

    with torch.inference_mode():
        for batch_items, wavs in iter_audio_batches(items, tokenizer.sample_rate, cfg.batch_seconds, fail,
                                                    length_problem=tokenizer.encoder.length_problem):
            for item, f in zip(batch_items, encode_utterances(tokenizer.encoder, wavs)):
                f = f.float().cpu().numpy()
                feats[item.id] = f
                labels[item.id] = np.asarray(tokenizer.kmeans.predict(f), dtype=np.int64)
    return feats, labels, failures


def evaluate_tokenizer(tokenizer, dataset: str = "bundled:valid_unseen",
                       config: EvalTokenizerConfig | None = None) -> TokenizerMetrics:
    """Run `tokenizer` (a `SpeechTokenizer` or a bundle path) over the aligned utterances of `dataset` and measure it.

    ABX on features uses the encoder's output (the tokenizer's layer) at the tokenizer's frame rate; ABX on units
    embeds the frame-level k-means labels (`config.unit_embedding`, see `textless.eval.abx`). Only utterances with
    an alignment are used (and, for ABX, a speaker). Files that cannot be read are reported in ``failures``.
    `config` gives the other options; its ``tokenizer`` and ``dataset`` fields are not read here. All features of
    the dataset are held in memory (float32 ``[frames, D]`` per utterance, plus the one-hot units ``[frames, k]``).
    """
    from textless.data import load_dataset
    from textless.tokenizers.bundle import SpeechTokenizer

    cfg = config or EvalTokenizerConfig(dataset=dataset)
    if cfg.unit_embedding not in UNIT_EMBEDDINGS:
        raise ConfigError(f"unknown unit_embedding '{cfg.unit_embedding}' (choose from {', '.join(UNIT_EMBEDDINGS)})")
    start = time.perf_counter()
    if not isinstance(tokenizer, SpeechTokenizer):
        tokenizer = SpeechTokenizer.from_pretrained(tokenizer, device=cfg.device)
    manifest = load_dataset(dataset)
    alignments = _alignments_for(dataset, cfg.alignments)
    items = [item for item in manifest if item.id in alignments]
    if not items:
        raise TextlessError(f"no utterance of '{dataset}' ({len(manifest)}) has an alignment")
    if cfg.limit is not None:
        items = items[: cfg.limit]
    logger.info(f"encoding {len(items)} aligned utterances of {dataset} ({len(manifest) - len(items)} others left out)")
    feats, labels, failures = _encode(tokenizer, items, cfg)
    ids = [item.id for item in items if item.id in feats]  # manifest order
    if not ids:
        raise TextlessError(f"no utterance of '{dataset}' could be encoded ({len(failures)} failures)")
    feats = {uid: feats[uid] for uid in ids}
    labels = {uid: labels[uid] for uid in ids}
    rate = tokenizer.frame_rate

    phones = [alignments[uid].frame_labels(rate) for uid in ids]
    pur = purity(phones, [labels[uid] for uid in ids], len(PHONES), tokenizer.num_units)
    sequences = []
    for uid in ids:
        units = tokenizer.units_from_labels(labels[uid])
        sequences.append(UnitSequence(uid, units.ids, units.durations))
    stats = unit_statistics(sequences, rate, tokenizer.vocab_size)

    abx_feats = abx_units = None
    if cfg.abx:
        if cfg.item_file:
            abx_items = read_item_file(cfg.item_file)
        else:
            by_id = {item.id: item for item in items}
            missing = [uid for uid in ids if not by_id[uid].speaker]
            if missing:
                raise TextlessError(f"ABX needs speakers: '{missing[0]}' of {dataset} has none (give the manifest a "
                                    "speaker column, or pass abx=false)")
            abx_items = make_items({uid: alignments[uid] for uid in ids}, {uid: by_id[uid].speaker for uid in ids})
        kw = {"frame_shift": 1 / rate, "distance": cfg.abx_distance, "max_size_group": cfg.max_size_group,
              "max_x_across": cfg.max_x_across, "seed": cfg.seed}
        logger.info(f"ABX on {len(abx_items)} items: encoder features")
        abx_feats = abx_error_rates(feats, abx_items, **kw)
        logger.info(f"ABX on units ({cfg.unit_embedding})")
        centroids = tokenizer.kmeans.centroids if cfg.unit_embedding == "centroids" else None
        abx_units = abx_error_rates(unit_features(labels, tokenizer.num_units, centroids), abx_items, **kw)

    return TokenizerMetrics(tokenizer=tokenizer.identity()["name"], dataset=dataset, utterances=len(ids),
                            frame_rate=rate, num_units=tokenizer.num_units, unit_embedding=cfg.unit_embedding,
                            abx_features=abx_feats, abx_units=abx_units, purity=pur, unit_stats=stats,
                            failures=failures, seconds=time.perf_counter() - start)


def run_eval_tokenizer(cfg: EvalTokenizerConfig) -> TokenizerMetrics:
    """`textless eval-tokenizer`: evaluate, print the table, write the JSON report to ``output`` (if set)."""
    if not cfg.tokenizer:
        raise ConfigError("eval-tokenizer needs tokenizer=<bundle directory>")
    if not starter_part(cfg.tokenizer, "tokenizer").is_dir():
        raise ConfigError(f"tokenizer '{cfg.tokenizer}' is not a directory (a speech tokenizer bundle)")
    metrics = evaluate_tokenizer(cfg.tokenizer, cfg.dataset, cfg)
    logger.info(f"{metrics.tokenizer} on {metrics.dataset}: {metrics.utterances} utterances, {metrics.seconds:.1f} s")
    logger.info(metrics.table())
    if cfg.output:
        from textless.utils.atomic import atomic_write_text

        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg.output, json.dumps(metrics.to_dict(), indent=2) + "\n")
        logger.info(f"wrote {cfg.output}")
    return metrics
