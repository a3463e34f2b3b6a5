"""Voice activity per channel: where one speaker speaks in their own channel of a conversation.

`speech_segments(wave, sample_rate, cfg)` gives the ``(start, end)`` seconds of speech of ONE channel (half-open, sorted,
disjoint); `conversation_segments` does it for both channels of a two-channel recording and `channel_ipus` turns those
into IPUs with `turn_taking.merge_ipus` (the 200 ms rule lives there only). Methods (`VADS`, chosen by
``VADConfig.method``):

``silero``
    Silero VAD 6 (MIT, bundled weights, offline): speech probability per 32 ms window (512 samples at 16 kHz; other
    rates are resampled to 16 kHz). Its defaults are changed so that IPU boundaries are not smeared:
    ``speech_pad_ms=0`` (silero's 30 ms pad widens every segment on both sides, so a 250 ms pause would read 190 ms and
    be merged under the 200 ms rule; silero already reports ends late, see below), ``min_silence_duration_ms=100``
    (shorter than 200 ms, so every pause that separates IPUs reaches `merge_ipus`), ``min_speech_duration_ms=100``
    (silero drops 250 ms by default: that would lose short backchannels such as "yeah"). Measured on the bundled corpus
    (TTS speech, 1 s of digital silence + -70 dBFS noise around it, truth = first / last non-silence phone): starts
    0.04 s late on average, ends 0.07 s late (one window is 0.032 s).
``energy``
    Frame energy against a threshold, numpy only. Hand-written rather than taken from a package because what it must
    guarantee is exact and small: with frames of ``energy_frame_ms`` every ``energy_hop_ms`` (the frame a multiple of
    the hop), a frame is *active* when its level ``10 log10(mean square)`` (dBFS: 0 = a full-scale square wave) is at
    least the threshold (``energy_threshold_db`` below the loudest frame, or absolute dBFS with
    ``energy_reference="dbfs"``; never below ``energy_floor_dbfs``), and a hop-long block of samples is speech when
    every frame that covers it is active. So for a burst whose power is at least 10 log10(frame / hop) dB (6 dB with
    the defaults) over the threshold, on a background under it, each edge is found within one hop (a frame that
    covers one hop of the burst is active; a frame that covers none is not). When a frame touching the burst by a
    single sample is already active (nearly always with a -40 dB relative threshold), the segment starts on the hop
    boundary at or before the burst's first sample and ends on the one at or after its last: exact when the edge is on
    the hop grid, and a silence reads up to two hops short. With the defaults (20 ms frames, 5 ms hop) a hop is 5 ms;
    a 1 ms hop resolves the 200 ms IPU rule to the millisecond.
    Measured on the bundled corpus as for silero: starts 0.009 s late and ends 0.001 s late on average. `webrtcvad`
    and similar packages decide on fixed 10-30 ms frames with a model, with no stated edge accuracy, and silero is a
    neural network: neither can be exact on a synthetic signal, nor cheap on hours of audio.
``units``
    A tokenizer's frame-level units: frames whose unit is in a learned set of *silence units* are silence
    (`learn_silence_units`, `silence_units_for`, `unit_speech_segments`). For the starter tokenizer (Whisper-base
    layer 4, k-means 100, 50 Hz) 30 of the 100 units are silence units, and 98.4 % of the held-out corpus frames
    (valid + valid_unseen, two unseen voices) are classed as their alignment says (silence 98.2 %, speech 98.5 %).

Times are seconds, rates Hz, frames at the tokenizer's frame rate; ``VADConfig.to_dict()`` goes into every report.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from textless.audio import resample
from textless.dialogue.turn_taking import MIN_SILENCE, merge_ipus
from textless.errors import ConfigError, TextlessError
from textless.utils.registry import Registry

if TYPE_CHECKING:
    from textless.tokenizers.bundle import SpeechTokenizer

Interval = tuple[float, float]
VADMethod = Callable[[np.ndarray, int, "VADConfig"], list[Interval]]

VADS: Registry[VADMethod] = Registry("VAD method")

SILERO_RATE = 16000            # Hz: silero's rate (its window: 512 samples = 32 ms)
SILERO_WINDOW = 512 / SILERO_RATE
ENERGY_REFERENCES = ("max", "dbfs")
# Known silence for `silence_units_for`: digital silence (None) and white noise at these dBFS levels (the bundled
# corpus' noise floor is -80 to -66 dBFS; -60 dBFS is `textless.eval.levels`' silence threshold).
SILENCE_NOISE_DBFS: tuple[float | None, ...] = (None, -80.0, -70.0, -60.0)


@dataclass
class VADConfig:
    """How `speech_segments` finds speech. Silero's parameters keep silero's names (milliseconds); see the module
    docstring for why the defaults differ from silero's."""

    method: str = "silero"
    # silero
    threshold: float = 0.5                 # speech probability to start a segment
    neg_threshold: float | None = None     # probability under which a segment may end (None: threshold - 0.15)
    min_speech_duration_ms: int = 100      # shorter segments are dropped
    min_silence_duration_ms: int = 100     # silences shorter than this do not end a segment
    speech_pad_ms: int = 0                 # widening of each segment on both sides
    # energy
    energy_frame_ms: float = 20.0
    energy_hop_ms: float = 5.0             # edges are found to within one hop
    energy_threshold_db: float = -40.0     # dB relative to the loudest frame ("max") or absolute dBFS ("dbfs")
    energy_reference: str = "max"
    energy_floor_dbfs: float = -60.0       # frames under this level are never speech (a channel of noise only)
    energy_hangover_ms: float = 0.0        # each segment's end held this long (bridging shorter silences)
    energy_min_speech_ms: float = 0.0      # shorter segments are dropped
    # units
    units_tokenizer: str = "starter"       # a SpeechTokenizer bundle directory, or "starter"
    units_silence: list[int] | None = None  # the silence units; None: learned by `silence_units_for` (cached)
    units_min_speech_frames: int = 1       # shorter runs of speech frames are dropped

    def __post_init__(self) -> None:
        VADS.get(self.method)  # an unknown method fails here, with the registry's message
        if self.energy_reference not in ENERGY_REFERENCES:
            raise ConfigError(f"energy_reference must be one of {ENERGY_REFERENCES}, got {self.energy_reference!r}")
        if self.units_silence is not None:
            self.units_silence = sorted(int(u) for u in self.units_silence)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VADConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown VADConfig keys: {', '.join(unknown)}")
        return cls(**data)


def speech_segments(wave: np.ndarray, sample_rate: int, cfg: VADConfig | None = None) -> list[Interval]:
    """(start, end) seconds of speech in one channel: `wave` float [samples] at `sample_rate` Hz."""
    cfg = cfg or VADConfig()
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"speech_segments takes one channel [samples], got shape {wave.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
    if len(wave) == 0:
        return []
    return VADS.get(cfg.method)(wave, sample_rate, cfg)


def _channels(stereo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stereo = np.asarray(stereo)
    if stereo.ndim == 2 and stereo.shape[0] == 2:
        return stereo[0], stereo[1]
    if stereo.ndim == 2 and stereo.shape[1] == 2:
        return stereo[:, 0], stereo[:, 1]
    raise ValueError(f"expected a two-channel recording [2, samples] or [samples, 2], got shape {stereo.shape}")


def conversation_segments(stereo: np.ndarray, sample_rate: int,
                          cfg: VADConfig | None = None) -> tuple[list[Interval], list[Interval]]:
    """Speech segments (seconds) of channel 0 and channel 1 of a recording [2, samples] or [samples, 2]."""
    left, right = _channels(stereo)
    return speech_segments(left, sample_rate, cfg), speech_segments(right, sample_rate, cfg)


def channel_ipus(stereo: np.ndarray, sample_rate: int, cfg: VADConfig | None = None,
                 min_silence: float = MIN_SILENCE) -> tuple[list[Interval], list[Interval]]:
    """IPUs (seconds) of both channels: `conversation_segments` merged by `turn_taking.merge_ipus`."""
    a, b = conversation_segments(stereo, sample_rate, cfg)
    return merge_ipus(a, min_silence), merge_ipus(b, min_silence)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) indices of the runs of True in a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


# ----------------------------------------------------------------------------------------------------------- energy
@VADS.register("energy")
def energy_segments(wave: np.ndarray, sample_rate: int, cfg: VADConfig) -> list[Interval]:
    """The frame energy VAD (module docstring): hop-long blocks whose covering frames are all active."""
    hop = round(cfg.energy_hop_ms * sample_rate / 1000)               # samples
    per_frame = round(cfg.energy_frame_ms / cfg.energy_hop_ms) if cfg.energy_hop_ms > 0 else 0  # hops per frame
    if hop < 1 or per_frame < 1 or not math.isclose(per_frame * cfg.energy_hop_ms, cfg.energy_frame_ms):
        raise ConfigError(f"energy VAD: energy_frame_ms ({cfg.energy_frame_ms}) must be a multiple of energy_hop_ms "
                          f"({cfg.energy_hop_ms}), and the hop at least one sample at {sample_rate} Hz")
    frame = per_frame * hop
    blocks = math.ceil(len(wave) / hop)
    padded = np.zeros((blocks + per_frame - 1) * hop, np.float64)
    padded[:len(wave)] = wave
    block_energy = np.square(padded).reshape(-1, hop).sum(axis=1)
    frame_energy = np.lib.stride_tricks.sliding_window_view(block_energy, per_frame).sum(axis=1)[:blocks]
    level = 10 * np.log10(np.maximum(frame_energy / frame, 1e-30))   # dBFS per frame i = samples [i hop, i hop + frame)
    reference = float(level.max()) if cfg.energy_reference == "max" else 0.0
    active = level >= max(reference + cfg.energy_threshold_db, cfg.energy_floor_dbfs)
    covered = np.concatenate((np.ones(per_frame - 1, bool), active))  # block b is covered by frames b-per_frame+1..b
    speech = np.lib.stride_tricks.sliding_window_view(covered, per_frame).all(axis=1)
    hold = math.ceil(cfg.energy_hangover_ms * sample_rate / 1000 / hop)
    shortest = cfg.energy_min_speech_ms * sample_rate / 1000
    runs: list[list[int]] = []  # samples
    for start, stop in _runs(speech):
        start, stop = start * hop, min((stop + hold) * hop, len(wave))
        if runs and start <= runs[-1][1]:
            runs[-1][1] = stop
        else:
            runs.append([start, stop])
    return [(s / sample_rate, e / sample_rate) for s, e in runs if e - s >= shortest]


# ----------------------------------------------------------------------------------------------------------- silero
_SILERO_LOCK = threading.Lock()  # the model keeps a recurrent state between windows: one caller at a time


@functools.cache
def silero_model() -> Any:
    """Silero VAD's TorchScript model, loaded once per process (from the package's bundled weights)."""
    from silero_vad import load_silero_vad

    return load_silero_vad()


@VADS.register("silero")
def silero_segments(wave: np.ndarray, sample_rate: int, cfg: VADConfig) -> list[Interval]:
    """Silero VAD with `cfg`'s parameters, on `wave` resampled to 16 kHz."""
    from silero_vad import get_speech_timestamps

    audio = resample(torch.from_numpy(wave), sample_rate, SILERO_RATE)
    with _SILERO_LOCK, torch.no_grad():
        stamps = get_speech_timestamps(
            audio, silero_model(), threshold=cfg.threshold, neg_threshold=cfg.neg_threshold,
            sampling_rate=SILERO_RATE, min_speech_duration_ms=cfg.min_speech_duration_ms,
            min_silence_duration_ms=cfg.min_silence_duration_ms, speech_pad_ms=cfg.speech_pad_ms)
    duration = len(wave) / sample_rate
    return [(s["start"] / SILERO_RATE, min(s["end"] / SILERO_RATE, duration)) for s in stamps]


# ------------------------------------------------------------------------------------------------------------ units
def learn_silence_units(units_per_utterance: Iterable[np.ndarray], silence_masks: Iterable[np.ndarray],
                        min_fraction: float = 0.5, min_frames: int = 1) -> set[int]:
    """The units that mostly mean silence: unit u is a silence unit when at least `min_fraction` of the frames
    labelled u (over all utterances; at least `min_frames` of them) lie in known silence. Inputs are pairs of
    frame-level (NOT deduplicated) unit sequences [frames] and boolean masks [frames] (True = known silence)."""
    seen: Counter[int] = Counter()
    silent: Counter[int] = Counter()
    for i, (units, mask) in enumerate(zip(units_per_utterance, silence_masks, strict=True)):
        units, mask = np.asarray(units).reshape(-1), np.asarray(mask, bool).reshape(-1)
        if len(units) != len(mask):
            raise ValueError(f"utterance {i}: {len(units)} unit frames but a silence mask of {len(mask)} frames")
        seen.update(units.tolist())
        silent.update(units[mask].tolist())
    return {int(u) for u, n in seen.items() if n >= min_frames and silent[u] >= min_fraction * n}


def unit_speech_segments(units: np.ndarray, frame_rate: float, silence_units: Iterable[int],
                         min_speech_frames: int = 1) -> list[Interval]:
    """(start, end) seconds of the runs of speech frames (unit not in `silence_units`) of a frame-level unit sequence
    [frames] at `frame_rate` Hz (frame i = [i / rate, (i + 1) / rate)); runs under `min_speech_frames` are dropped."""
    speech = ~np.isin(np.asarray(units).reshape(-1), np.fromiter(silence_units, np.int64))
    return [(a / frame_rate, b / frame_rate) for a, b in _runs(speech) if b - a >= min_speech_frames]


def _known_silence(seconds: float, sample_rate: int, noise_dbfs: Sequence[float | None]) -> list[torch.Tensor]:
    """`seconds` of digital silence (None) or white noise at each dBFS level (RMS), fixed seed."""
    rng = np.random.default_rng(0)
    n = round(seconds * sample_rate)
    return [torch.from_numpy(np.zeros(n, np.float32) if level is None
                             else (rng.standard_normal(n) * 10 ** (level / 20)).astype(np.float32))
            for level in noise_dbfs]


def _bundled_frame_units(tokenizer: SpeechTokenizer, split: str) -> dict[str, np.ndarray] | None:
    """Frame-level units of a bundled split as shipped beside the starter, when `tokenizer` made them; else None."""
    from textless.data.corpus import bundled_units_dir
    from textless.data.units import read_units

    try:
        ds = read_units(bundled_units_dir(split))
    except (TextlessError, OSError):  # missing or unreadable: encode the audio instead
        return None
    ours, theirs = tokenizer.unit_identity().tokenizer, ds.meta.tokenizer
    same = (ours.get("name") == theirs.get("name") and ours.get("kmeans_sha256") == theirs.get("kmeans_sha256")
            and ds.meta.frame_rate == tokenizer.frame_rate and ds.meta.deduplicated and not ds.meta.bpe)
    return {seq.id: seq.expand() for seq in ds} if same else None


def silence_units_for(tokenizer: SpeechTokenizer, splits: Sequence[str] = ("train",), *,
                      noise_dbfs: Sequence[float | None] = SILENCE_NOISE_DBFS, noise_seconds: float = 2.0,
                      min_fraction: float = 0.5, min_frames: int = 1, reuse_bundled_units: bool = True) -> set[int]:
    """Learn `tokenizer`'s silence units (`learn_silence_units`) from known silence: `noise_seconds` of digital
    silence / white noise at each of `noise_dbfs`, and the bundled corpus utterances of `splits` that have phone
    alignments (frames whose centre lies in a ``SIL`` phone are silence). With `reuse_bundled_units`, a split whose
    shipped units were made by this very tokenizer (same name and k-means hash) is read instead of re-encoded (the
    same labels, checked by the tests); other tokenizers encode the audio (about 7x real time on 2 CPU cores)."""
    from textless.audio import load_audio
    from textless.data.corpus import load_bundled_alignments, load_bundled_corpus

    rate, frame_rate = tokenizer.sample_rate, tokenizer.frame_rate
    units = list(tokenizer.frame_labels_batch(_known_silence(noise_seconds, rate, noise_dbfs))) if noise_dbfs else []
    masks = [np.ones(len(u), bool) for u in units]
    alignments = load_bundled_alignments()
    for split in splits:
        items = [item for item in load_bundled_corpus(split) if item.id in alignments]
        shipped = _bundled_frame_units(tokenizer, split) if reuse_bundled_units else None
        if shipped is not None and all(item.id in shipped for item in items):
            labels = [shipped[item.id] for item in items]
        else:
            labels = tokenizer.frame_labels_batch([load_audio(item.path, rate)[0] for item in items])
        for item, frames in zip(items, labels):
            units.append(frames)
            masks.append(alignments[item.id].frame_labels(frame_rate, len(frames)) == 0)  # 0 = SIL
    return learn_silence_units(units, masks, min_fraction, min_frames)


@functools.cache
def _tokenizer(spec: str) -> SpeechTokenizer:
    from textless.tokenizers.bundle import SpeechTokenizer

    return SpeechTokenizer.from_pretrained(spec)


@functools.cache
def _learned_silence(spec: str) -> frozenset[int]:
    return frozenset(silence_units_for(_tokenizer(spec)))


def silence_units_of(spec: str, units_tokenizer: dict | None = None) -> frozenset[int]:
    """The silence units `silence_units_for` learns for the tokenizer `spec` (cached per process). With
    `units_tokenizer` (a unit dataset's ``meta.tokenizer``), a tokenizer whose k-means did not make those units is
    refused: its silence set would mean nothing for them."""
    if units_tokenizer is not None:
        mine = _tokenizer(spec).identity().get("kmeans_sha256")
        theirs = units_tokenizer.get("kmeans_sha256")
        if mine != theirs:
            raise TextlessError(f"the units were made by {units_tokenizer.get('name')!r} (k-means {theirs}), not by "
                                f"the tokenizer {spec!r} (k-means {mine}): give vad.units_tokenizer= the tokenizer "
                                "that made them, or the silence units")
    return _learned_silence(spec)


@VADS.register("units")
def units_segments(wave: np.ndarray, sample_rate: int, cfg: VADConfig) -> list[Interval]:
    """Speech = frames whose unit (of `cfg.units_tokenizer`, loaded once per process) is not a silence unit
    (`cfg.units_silence`, or the set `silence_units_for` learns for that tokenizer, cached per process)."""
    tokenizer = _tokenizer(cfg.units_tokenizer)
    silence = cfg.units_silence if cfg.units_silence is not None else _learned_silence(cfg.units_tokenizer)
    audio = resample(torch.from_numpy(wave), sample_rate, tokenizer.sample_rate)
    if tokenizer.encoder.length_problem(len(audio)):
        return []  # shorter than one frame
    labels = tokenizer.frame_labels_batch([audio])[0]
    return unit_speech_segments(labels, tokenizer.frame_rate, silence, cfg.units_min_speech_frames)
