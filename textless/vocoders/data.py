"""Training data for unit vocoders: (frame-level units, waveform) segments drawn from a unit dataset and its audio.

Pairing. Every utterance of the unit dataset is matched by id to the audio dataset it was tokenized from (a
directory, a manifest or ``bundled:<split>``; `textless tokenize` records it as ``meta.extra["source"]``). Ids without
audio are reported in one warning line and skipped; so are utterances whose audio header cannot be read and those
whose audio length (from the manifest, else the file header) differs from their unit frames by more than
``max_mismatch_seconds`` (a wrong audio dataset or frame rate would otherwise train on misaligned pairs).

Alignment. Deduplicated units are expanded with their durations to F frames. Unit frame t is paired with samples
[t * hop, (t + 1) * hop) of the audio at the vocoder's sampling rate (``hop = sampling_rate / frame_rate``), so the
waveform is made exactly F * hop samples long: zero-padded at the end when shorter, cut when longer. Encoders count
frames differently and this rule absorbs both: HuBERT / wav2vec2 give F = floor((T - 400) / 320) + 1 frames for T
samples at 16 kHz, so the audio is 80 to 399 samples longer than F * 320 and its tail is cut; Whisper-style encoders
give F = ceil(T / 320), so up to 319 zero samples are appended. (fairseq's speech-resynthesis instead trims both to
min(T // hop, F) frames, dropping the last unit in the Whisper case; padding keeps every unit.)

Segments. A training example is ``segment_frames`` consecutive frames (default 28 = 8960 samples at hop 320,
fairseq's segment_size) and their samples. Segments are drawn uniformly over all segment positions of the dataset:
utterance i offers max(F_i - S + 1, 1) start frames and every (utterance, start) pair is equally likely, so long
utterances are not under-sampled (per-utterance sampling would be). The draw for optimizer step ``step`` uses only
``numpy.random.default_rng([seed, step])``: a pure function of (seed, step), so a resumed run sees exactly the
batches of an uninterrupted one. Utterances shorter than a segment are kept, not skipped: their segment is the whole
utterance, right-padded with unit 0 and zero samples, and ``mask`` marks the valid frames (the generator zeroes the
padding and the trainer's mel loss ignores it). Skipping them would lose every short utterance of a corpus.

Duration targets. Each segment's frames (valid part) are run-length encoded; the first and last run of a segment
are cut by its boundary, so they are not targets (`segment_runs`).

Memory. Waveforms are loaded lazily (`textless.audio.load_audio`, resampled to the vocoder rate) and kept in an LRU
cache bounded by ``cache_mb`` megabytes of float32 samples (default 2048: 9 h of 16 kHz audio). The bundled 15-minute
corpus (58 MB) therefore stays in memory after its first pass, while a 1000-hour corpus streams from disk with
bounded memory; nothing is read before it is needed. The cache never changes what a batch holds.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textless.data.manifest import AudioItem, Manifest
from textless.data.units import UnitDataset, dedup
from textless.errors import AudioError, ConfigError
from textless.vocoders.presets import hop_for

logger = logging.getLogger(__name__)

DEFAULT_SEGMENT_FRAMES = 28


def segment_runs(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame-level units of one segment [S] -> (run units [R], run durations [R] in frames, is_target bool [R]).

    ``is_target`` is False for the first and the last run (the segment boundary may cut them), so a segment with
    fewer than 3 runs has no duration target.
    """
    units, durations = dedup(np.asarray(frames))
    target = np.ones(len(units), bool)
    target[:1] = False
    target[-1:] = False
    return units, durations, target


@dataclass
class SegmentBatch:
    """A batch of B segments of S frames (hop samples each). Padded positions hold 0."""

    ids: list[str]
    starts: np.ndarray                 # int64 [B]: first frame of each segment in its utterance
    units: torch.Tensor                # int64 [B, S]: frame-level units
    mask: torch.Tensor                 # bool [B, S]: valid frames (a prefix of each row)
    audio: torch.Tensor                # float32 [B, 1, S * hop]: the paired samples in [-1, 1]
    speakers: torch.Tensor | None      # int64 [B] speaker ids (multi-speaker), else None
    run_units: torch.Tensor            # int64 [B, R]: each segment's deduplicated units
    run_durations: torch.Tensor        # int64 [B, R]: frames per run inside the segment
    run_mask: torch.Tensor             # bool [B, R]: valid runs
    run_targets: torch.Tensor          # bool [B, R]: runs that are duration targets (not first / last)
    hop: int

    @property
    def valid_samples(self) -> torch.Tensor:
        """int64 [B]: valid samples per row."""
        return self.mask.sum(1) * self.hop

    @property
    def full(self) -> bool:
        """Whether no row is padded (then the generator needs no mask)."""
        return bool(self.mask.all())

    def to(self, device: torch.device | str) -> SegmentBatch:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return SegmentBatch(**moved)


@dataclass
class _Utterance:
    id: str
    index: int                 # position in the unit dataset
    item: AudioItem
    num_frames: int


def _frames_per_utterance(units: UnitDataset) -> np.ndarray:
    """int64 [N]: frames of every utterance, vectorised (durations summed per utterance when deduplicated)."""
    index = np.asarray(units.index, dtype=np.int64)
    if units.durations_array is None:
        return np.diff(index)
    return np.add.reduceat(np.asarray(units.durations_array, dtype=np.int64), index[:-1])


def _examples(ids: list[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


class VocoderSegments:
    """Unit / audio pairs of one unit dataset; see the module docstring.

    units: an opened unit dataset (`read_units`); audio: its audio dataset (`textless.data.load_dataset`);
    sampling_rate: the vocoder's rate in Hz; segment_frames: frames per training segment.
    """

    def __init__(self, units: UnitDataset, audio: Manifest, *, sampling_rate: int, segment_frames: int =
                 DEFAULT_SEGMENT_FRAMES, seed: int = 0, cache_mb: float = 2048.0, max_mismatch_seconds: float = 0.1):
        self.units = units
        self.sampling_rate = int(sampling_rate)
        self.frame_rate = units.meta.frame_rate
        self.hop = hop_for(self.sampling_rate, self.frame_rate, f"unit dataset '{units.path}'")
        self.segment_frames = int(segment_frames)
        self.seed = int(seed)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_bytes, self._cache_limit = 0, int(cache_mb * 2**20)
        self.utterances = self._match(audio, max_mismatch_seconds)
        self.speaker_ids: np.ndarray | None = None
        self._index()

    # ---------------------------------------------------------------------------------------------------- pairing
    def _match(self, audio: Manifest, max_mismatch: float) -> list[_Utterance]:
        frames = _frames_per_utterance(self.units)
        by_id = {item.id: item for item in audio}
        missing, unreadable, mismatched, found = [], [], [], []
        for j, utt_id in enumerate(self.units.ids):
            item = by_id.get(utt_id)
            if item is None:
                missing.append(utt_id)
                continue
            seconds = item.duration
            if seconds is None:
                from textless.audio import audio_info

                try:
                    seconds = audio_info(item.path).duration
                except AudioError as e:
                    unreadable.append(f"{utt_id} ({e.reason})")
                    continue
            expected = frames[j] / self.frame_rate
            if abs(seconds - expected) > max_mismatch:
                mismatched.append(f"{utt_id} ({seconds:.2f} s of audio, {frames[j]} frames = {expected:.2f} s)")
                continue
            found.append(_Utterance(utt_id, j, item, int(frames[j])))
        where = f"unit dataset '{self.units.path}'"
        source = audio.source or "the audio dataset"
        if missing:
            logger.warning(f"{len(missing)} of {len(self.units)} utterances of {where} have no audio in {source} "
                           f"and are skipped: {_examples(missing)}")
        if unreadable:
            logger.warning(f"{len(unreadable)} utterances of {where} have unreadable audio and are skipped: "
                           f"{_examples(unreadable, 3)}")
        if mismatched:
            logger.warning(f"{len(mismatched)} utterances of {where} are skipped: their audio and unit lengths "
                           f"differ by more than {max_mismatch:g} s (wrong audio dataset or frame rate?): "
                           f"{_examples(mismatched, 3)}")
        if not found:
            raise ConfigError(f"no utterance of {where} has usable audio in {source} (matched by id): set "
                              f"audio_dataset to the audio these units were made from")
        return found

    def speaker_names(self) -> tuple[list[str], list[str]]:
        """(sorted speaker names of the usable utterances, ids of utterances without a speaker label)."""
        names = sorted({u.item.speaker for u in self.utterances if u.item.speaker is not None})
        return names, [u.id for u in self.utterances if u.item.speaker is None]

    def use_speakers(self, names: list[str]) -> None:
        """Speaker id of each utterance = position of its speaker in `names`; utterances of other (or no) speakers
        are reported in one warning line and skipped (`ConfigError` when none is left)."""
        position = {name: i for i, name in enumerate(names)}
        unknown = [u.id for u in self.utterances if u.item.speaker not in position]
        if unknown:
            logger.warning(f"{len(unknown)} utterances of unit dataset '{self.units.path}' have a speaker the "
                           f"vocoder does not know (or none) and are skipped: {_examples(unknown)}")
        self.utterances = [u for u in self.utterances if u.item.speaker in position]
        if not self.utterances:
            raise ConfigError(f"no utterance of unit dataset '{self.units.path}' has one of the vocoder's speakers "
                              f"({_examples(names)})")
        self.speaker_ids = np.array([position[u.item.speaker] for u in self.utterances], dtype=np.int64)
        self._cache.clear()
        self._cache_bytes = 0
        self._index()

    def _index(self) -> None:
        self.num_frames = np.array([u.num_frames for u in self.utterances], dtype=np.int64)
        self.windows = np.maximum(self.num_frames - self.segment_frames + 1, 1)
        self.window_ends = np.cumsum(self.windows)

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def ids(self) -> list[str]:
        return [u.id for u in self.utterances]

    @property
    def seconds(self) -> float:
        return float(self.num_frames.sum()) / self.frame_rate

    # ---------------------------------------------------------------------------------------------------- content
    def frames(self, i: int) -> np.ndarray:
        """int64 [F_i]: the frame-level units of utterance i."""
        return self.units[self.utterances[i].index].expand()

    def deduplicated(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(units [L], durations [L]) of utterance i, run-length encoded (the duration predictor's view)."""
        return dedup(self.frames(i))

    def waveform(self, i: int) -> np.ndarray:
        """float32 [F_i * hop]: utterance i's audio at the vocoder rate, cut or zero-padded to its frames."""
        with self._lock:  # the trainer's prefetch thread and its evaluation may both read
            wav = self._cache.get(i)
            if wav is not None:
                self._cache.move_to_end(i)
                return wav
        from textless.audio import load_audio

        utt = self.utterances[i]
        loaded = load_audio(utt.item.path, self.sampling_rate, max_seconds=None)[0].numpy()
        n = utt.num_frames * self.hop
        wav = np.zeros(n, np.float32)
        wav[: min(n, len(loaded))] = loaded[:n]
        with self._lock:
            if i not in self._cache:
                self._cache[i] = wav
                self._cache_bytes += wav.nbytes
            while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cache_bytes -= old.nbytes
        return wav

    def segment(self, i: int, start: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Utterance i from frame `start`: (units [S] zero-padded, valid frames, samples [S * hop] zero-padded)."""
        s, hop = self.segment_frames, self.hop
        frames = self.frames(i)[start: start + s]
        n = len(frames)
        units = np.zeros(s, np.int64)
        units[:n] = frames
        audio = np.zeros(s * hop, np.float32)
        audio[: n * hop] = self.waveform(i)[start * hop: (start + n) * hop]
        return units, n, audio

    def draw(self, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(utterance indices [B], start frames [B]) for optimizer step `step`: uniform over all segment positions,
        from ``default_rng([seed, step])`` only."""
        rng = np.random.default_rng([self.seed, int(step)])
        k = rng.integers(0, int(self.window_ends[-1]), size=batch_size)
        utts = np.searchsorted(self.window_ends, k, side="right")
        starts = k - (self.window_ends[utts] - self.windows[utts])
        return utts.astype(np.int64), starts.astype(np.int64)

    def batch(self, step: int, batch_size: int) -> SegmentBatch:
        """The training batch of optimizer step `step` (a pure function of seed and step)."""
        utts, starts = self.draw(step, batch_size)
        return self.collate([self.segment(int(i), int(s)) for i, s in zip(utts, starts)],
                            ids=[self.utterances[int(i)].id for i in utts], starts=starts,
                            speakers=None if self.speaker_ids is None else self.speaker_ids[utts])

    def collate(self, segments: list[tuple[np.ndarray, int, np.ndarray]], ids: list[str], starts: np.ndarray,
                speakers: np.ndarray | None) -> SegmentBatch:
        b, s = len(segments), self.segment_frames
        runs = [segment_runs(units[:n]) for units, n, _ in segments]
        r = max(len(u) for u, _, _ in runs)
        run_units, run_durations = np.zeros((b, r), np.int64), np.zeros((b, r), np.int64)
        run_mask, run_targets = np.zeros((b, r), bool), np.zeros((b, r), bool)
        for row, (u, d, t) in enumerate(runs):
            run_units[row, : len(u)], run_durations[row, : len(u)] = u, d
            run_mask[row, : len(u)], run_targets[row, : len(u)] = True, t
        mask = np.arange(s)[None, :] < np.array([n for _, n, _ in segments])[:, None]
        return SegmentBatch(
            ids=ids, starts=np.asarray(starts, np.int64),
            units=torch.from_numpy(np.stack([u for u, _, _ in segments])), mask=torch.from_numpy(mask),
            audio=torch.from_numpy(np.stack([a for _, _, a in segments]))[:, None, :],
            speakers=None if speakers is None else torch.from_numpy(np.asarray(speakers, np.int64)),
            run_units=torch.from_numpy(run_units), run_durations=torch.from_numpy(run_durations),
            run_mask=torch.from_numpy(run_mask), run_targets=torch.from_numpy(run_targets), hop=self.hop)

    def fixed_indices(self, n: int) -> list[int]:
        """`n` utterance indices spread evenly over the dataset (in its order): a fixed listening / plotting set."""
        if n <= 0:
            return []
        return sorted({round(float(x)) for x in np.linspace(0, len(self) - 1, min(n, len(self)))})


def describe(segments: VocoderSegments) -> str:
    hours = segments.seconds / 3600
    return (f"{len(segments)} utterances ({hours:.2f} h), {segments.frame_rate:g} Hz units, hop {segments.hop}, "
            f"{segments.segment_frames}-frame segments ({segments.segment_frames * segments.hop} samples)")


def audio_source(units: UnitDataset, override: str | None) -> str:
    """The audio dataset spec of `units`: `override`, else the ``extra.source`` that tokenize recorded."""
    if override:
        return override
    source = units.meta.extra.get("source") if isinstance(units.meta.extra, dict) else None
    if not source:
        raise ConfigError(f"unit dataset '{units.path}' does not record its audio (no extra.source in "
                          f"{Path(units.path) / 'meta.json'}): set audio_dataset to the audio it was tokenized from")
    return str(source)

