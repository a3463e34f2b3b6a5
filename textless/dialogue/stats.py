"""Turn-taking statistics of a corpus of two-party conversations, and the dGSLM-style comparison of two corpora.

A corpus comes from one of three sources, each giving every conversation's two channels of speech segments
(seconds), from which `textless.dialogue.turn_taking` computes IPUs, pauses, gaps and overlaps:

* ground truth: `Timeline` objects / files (`stats_from_timelines`, `read_timeline_corpus` for a directory of
  ``*.json`` or a dialogue builder's output, ``manifest.jsonl`` + ``timelines/<id>.json``) or an RTTM file
  (`stats_from_rttm`: one conversation per file id, channel order = the first speaker to speak unless given);
* audio (`stats_from_audio`): stereo files, or pairs of per-channel files, through `textless.dialogue.vad`
  (``speech_segments`` on each channel; the VAD parameters are recorded in the report);
* two-channel units (`stats_from_units`): a `textless.dialogue.data` dataset through ``unit_speech_segments``
  (speech = frames whose unit is not a silence unit).

`compare` makes the table the dGSLM paper reports (reference corpus vs generated one): per statistic the two
values, their difference (generated - reference) and relative difference (difference / reference, None when the
reference is 0), and per event kind two distances between the duration distributions: the 1-D Wasserstein distance
(seconds, `scipy.stats.wasserstein_distance`) and the Jensen-Shannon distance (`scipy.spatial.distance.jensenshannon`,
base 2, so in [0, 1]) of histograms with 200 ms bins ``[0, 0.2), [0.2, 0.4), ...`` up to the first multiple of
200 ms above both corpora's longest event, each normalised to sum 1. Everything is a JSON-serialisable dataclass.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from textless.dialogue.timeline import (
    InvalidTimelineError,
    Timeline,
    read_rttm,
    read_timeline,
    timeline_from_segments,
)
from textless.dialogue.turn_taking import KINDS, MIN_SILENCE, Interval, TurnTakingStats, corpus_stats, turn_taking_stats
from textless.errors import TextlessError

HIST_BIN = 0.2          # seconds: bin width of the duration histograms of the Jensen-Shannon distance
JSD_BASE = 2.0          # logarithm base of the Jensen-Shannon distance (in [0, 1])
MEASURES = ("per_minute", "seconds_per_minute", "mean_duration", "median_duration")


@dataclass
class ConversationStats:
    id: str
    duration: float                                  # seconds (the per-minute denominator)
    speakers: tuple[str, str]                        # channel order
    segments: tuple[list[Interval], list[Interval]]  # each channel's speech segments (seconds), before IPU merging
    stats: TurnTakingStats


@dataclass
class CorpusReport:
    source: str                      # "timeline" | "rttm" | "audio" | "units"
    conversations: list[ConversationStats]
    corpus: TurnTakingStats          # pooled over the conversations (`corpus_stats`)
    vad: dict | None = None          # audio / units: how speech was found
    min_silence: float = MIN_SILENCE

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def minutes(self) -> float:
        return self.corpus.minutes


def conversation_stats(conversation_id: str, a: Sequence[Interval], b: Sequence[Interval], duration: float,
                       speakers: tuple[str, str] = ("A", "B"), min_silence: float = MIN_SILENCE) -> ConversationStats:
    """Statistics of one conversation whose channels speak in `a` and `b` (seconds) over `duration` seconds."""
    a, b = sorted((float(s), float(e)) for s, e in a), sorted((float(s), float(e)) for s, e in b)
    return ConversationStats(conversation_id, float(duration), (str(speakers[0]), str(speakers[1])), (a, b),
                             turn_taking_stats(a, b, duration, min_silence))


def _report(source: str, conversations: list[ConversationStats], vad: dict | None = None,
            min_silence: float = MIN_SILENCE) -> CorpusReport:
    if not conversations:
        raise TextlessError(f"no conversation to compute statistics on ({source})")
    return CorpusReport(source, conversations, corpus_stats([c.stats for c in conversations]), vad, min_silence)


# ----------------------------------------------------------------------------------------- ground truth (timelines)
def stats_from_timelines(timelines: Sequence[Timeline], min_silence: float = MIN_SILENCE,
                         source: str = "timeline") -> CorpusReport:
    """Statistics of conversations given as timelines (channel order = ``timeline.speakers``)."""
    return _report(source, [conversation_stats(t.conversation_id, t.channel(0), t.channel(1), t.duration, t.speakers,
                                               min_silence) for t in timelines], min_silence=min_silence)


def stats_from_rttm(path: str | Path, durations: Mapping[str, float] | float | None = None,
                    speakers: Mapping[str, Sequence[str]] | None = None,
                    min_silence: float = MIN_SILENCE) -> CorpusReport:
    """Statistics of the conversations of an RTTM file (one per file id, in file order). `durations`: seconds per
    file id, or one number for all (default: the last segment's end; pass the recording's length: an RTTM usually
    stops at the last speech). `speakers`: the channel order per file id (default: the first to speak first)."""
    files = read_rttm(path)
    if not files:
        raise InvalidTimelineError(f"{path}: no SPEAKER line")
    timelines = []
    for file_id, segments in files.items():
        duration = durations if not isinstance(durations, Mapping) else durations.get(file_id)
        try:
            timelines.append(timeline_from_segments(file_id, segments, duration,
                                                    None if speakers is None else speakers.get(file_id)))
        except InvalidTimelineError as e:
            raise InvalidTimelineError(f"{path}: {e}") from None
    return stats_from_timelines(timelines, min_silence, source="rttm")


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TextlessError(f"{path}:{number}: not JSON: {e}") from None
    return rows


def _manifest_path(directory: Path, row: dict, keys: Sequence[str]) -> Path | None:
    for key in keys:
        if row.get(key):
            p = Path(row[key])
            return p if p.is_absolute() else directory / p
    return None


TIMELINE_KEYS = ("timeline", "timeline_path")
AUDIO_KEYS = ("stereo", "audio", "wav", "audio_path", "wav_path", "path")


def read_builder_manifest(directory: str | Path) -> list[dict]:
    """The rows of a dialogue builder's ``manifest.jsonl`` with ``id`` and resolved ``timeline`` / ``audio`` paths
    (None when the row has none; relative paths are relative to the directory)."""
    directory = Path(directory)
    path = directory / "manifest.jsonl"
    rows = []
    for number, row in enumerate(_jsonl(path), 1):
        if "id" not in row:
            raise TextlessError(f"{path}:{number}: a manifest row needs an 'id'")
        timeline = _manifest_path(directory, row, TIMELINE_KEYS)
        if timeline is None and (directory / "timelines" / f"{row['id']}.json").is_file():
            timeline = directory / "timelines" / f"{row['id']}.json"
        rows.append({**row, "id": str(row["id"]), "timeline": timeline,
                     "audio": _manifest_path(directory, row, AUDIO_KEYS)})
    return rows


def read_timeline_corpus(path: str | Path) -> list[Timeline]:
    """Timelines of a builder output directory (``manifest.jsonl``; its ``timelines/``), or of every ``*.json`` of
    a directory (``timelines/`` inside it when it has one), or of one timeline file."""
    path = Path(path)
    if path.is_file():
        return [read_timeline(path)]
    if (path / "manifest.jsonl").is_file():
        rows = read_builder_manifest(path)
        missing = [r["id"] for r in rows if r["timeline"] is None]
        if missing:
            raise TextlessError(f"{path / 'manifest.jsonl'}: no timeline for {missing[:5]}")
        return [read_timeline(r["timeline"]) for r in rows]
    folder = path / "timelines" if (path / "timelines").is_dir() else path
    files = sorted(folder.glob("*.json"))
    if not files:
        raise TextlessError(f"{path}: no timeline (*.json) and no manifest.jsonl")
    return [read_timeline(f) for f in files]


# ------------------------------------------------------------------------------------------------------------ audio
def _vad_config(vad):
    from textless.dialogue.vad import VADConfig

    return VADConfig() if vad is None else vad


def stats_from_audio(files: Sequence[str | Path | tuple[str | Path, str | Path]], vad=None,
                     ids: Sequence[str] | None = None, min_silence: float = MIN_SILENCE) -> CorpusReport:
    """Statistics of recorded conversations: each item a stereo file (channel 0 / 1 = speaker A / B) or a pair of
    mono files (one per speaker), speech found by ``vad.speech_segments`` on each channel with `vad` (a
    `textless.dialogue.vad.VADConfig`; default its defaults). Duration = the audio's length; ids = the file stems
    unless given. The VAD parameters are recorded in the report."""
    from textless.audio import load_audio
    from textless.dialogue.vad import speech_segments

    vad = _vad_config(vad)
    conversations = []
    for i, item in enumerate(files):
        if isinstance(item, (tuple, list)):
            channels = []
            for f in item:
                wav, rate = load_audio(f, max_seconds=None)
                channels.append(wav.numpy())
            name = Path(item[0]).stem
            if len(channels) != 2 or len(channels[0]) != len(channels[1]):
                raise TextlessError(f"{item[0]}, {item[1]}: per-channel files must be two of the same length")
        else:
            wav, rate = load_audio(item, mono=False, max_seconds=None)
            if wav.ndim != 2 or wav.shape[0] != 2:
                raise TextlessError(f"{item}: a conversation needs a stereo file (one speaker per channel), got "
                                    f"{1 if wav.ndim == 1 else wav.shape[0]} channel(s)")
            channels, name = [wav[0].numpy(), wav[1].numpy()], Path(item).stem
        segments = [speech_segments(c, rate, vad) for c in channels]
        conversations.append(conversation_stats(ids[i] if ids else name, *segments, len(channels[0]) / rate,
                                                min_silence=min_silence))
    return _report("audio", conversations, vad.to_dict(), min_silence)


# ------------------------------------------------------------------------------------------------------------ units
def stats_from_units(dataset, silence_units: Sequence[int], min_silence: float = MIN_SILENCE) -> CorpusReport:
    """Statistics of a two-channel unit dataset (a path or a `textless.dialogue.data.DialogueDataset`; frame-level
    units ``[2, T]`` at ``meta.frame_rate`` Hz): speech = frames whose unit is not in `silence_units`
    (``vad.unit_speech_segments``); duration = ``T / frame_rate`` seconds."""
    from textless.dialogue.vad import unit_speech_segments

    if isinstance(dataset, (str, Path)):
        from textless.dialogue.data import read_dialogues

        dataset = read_dialogues(dataset)
    silence = {int(u) for u in silence_units}
    if not silence:
        raise TextlessError("unit statistics need the silence units (silence_units=[...]): the units of frames "
                            "without speech")
    rate = float(dataset.meta.frame_rate)
    conversations = []
    for record in dataset:
        units = np.asarray(record.units)
        if units.ndim != 2 or units.shape[0] != 2:
            raise TextlessError(f"conversation {record.id!r}: needs 2 channels of units, got shape {list(units.shape)}")
        segments = [unit_speech_segments(units[c], rate, silence) for c in (0, 1)]
        speakers = tuple(record.speakers) if getattr(record, "speakers", None) else ("A", "B")
        conversations.append(conversation_stats(record.id, *segments, units.shape[1] / rate, speakers, min_silence))
    return _report("units", conversations, {"method": "units", "silence_units": sorted(silence),
                                            "frame_rate": rate}, min_silence)


# ------------------------------------------------------------------------------------------------------- comparison
def measure(stats: TurnTakingStats, kind: str, name: str) -> float | None:
    """One statistic of a kind: per_minute, seconds_per_minute, mean_duration / median_duration (seconds; None
    without events)."""
    k = getattr(stats, kind)
    if name in ("per_minute", "seconds_per_minute"):
        return float(getattr(k, name))
    if not k.durations:
        return None
    return float(statistics.fmean(k.durations) if name == "mean_duration" else statistics.median(k.durations))


@dataclass
class ComparisonRow:
    kind: str                        # ipu | pause | gap | overlap
    measure: str                     # per_minute | seconds_per_minute | mean_duration | median_duration
    reference: float | None
    generated: float | None
    difference: float | None         # generated - reference
    relative: float | None           # difference / reference (None when the reference is 0 or missing)


@dataclass
class Distance:
    kind: str
    wasserstein: float | None        # seconds; None when a side has no event
    jensen_shannon: float | None     # base 2, 200 ms bins; None when a side has no event
    bins: int = 0                    # number of histogram bins used


@dataclass
class Comparison:
    rows: list[ComparisonRow]
    distances: list[Distance]
    bin_seconds: float = HIST_BIN
    jsd_base: float = JSD_BASE
    reference_minutes: float = 0.0
    generated_minutes: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def histogram(durations: Sequence[float], bins: int, width: float = HIST_BIN) -> np.ndarray:
    """Counts of `durations` (seconds) in `bins` bins ``[i * width, (i + 1) * width)``, normalised to sum 1
    (the last bin also takes a duration equal to its right edge)."""
    edges = np.arange(bins + 1) * width
    counts, _ = np.histogram(np.asarray(durations, dtype=float), bins=edges)
    return counts / counts.sum()


def duration_distance(reference: Sequence[float], generated: Sequence[float], width: float = HIST_BIN,
                      base: float = JSD_BASE) -> Distance:
    """Wasserstein and Jensen-Shannon distances between two lists of event durations (seconds), see the module
    docstring; ``kind`` is left empty."""
    if not len(reference) or not len(generated):
        return Distance("", None, None, 0)
    longest = max(max(reference), max(generated))
    bins = max(1, math.floor(longest / width + 1e-9) + 1)  # the first bin edge strictly above the longest event
    p, q = histogram(reference, bins, width), histogram(generated, bins, width)
    return Distance("", float(wasserstein_distance(reference, generated)), float(jensenshannon(p, q, base=base)), bins)


def compare(reference: CorpusReport | TurnTakingStats, generated: CorpusReport | TurnTakingStats) -> Comparison:
    """The dGSLM table: reference vs generated statistics and duration distances per event kind."""
    ref = reference.corpus if isinstance(reference, CorpusReport) else reference
    gen = generated.corpus if isinstance(generated, CorpusReport) else generated
    rows = []
    for kind in KINDS:
        for name in MEASURES:
            r, g = measure(ref, kind, name), measure(gen, kind, name)
            diff = None if r is None or g is None else g - r
            rows.append(ComparisonRow(kind, name, r, g, diff, None if diff is None or not r else diff / r))
    distances = []
    for kind in KINDS:
        d = duration_distance(getattr(ref, kind).durations, getattr(gen, kind).durations)
        d.kind = kind
        distances.append(d)
    notes = [] if ref.min_silence == gen.min_silence else [
        f"the corpora use different IPU silences ({ref.min_silence} s vs {gen.min_silence} s)"]
    return Comparison(rows, distances, reference_minutes=ref.minutes, generated_minutes=gen.minutes, notes=notes)


def stats_table(report: CorpusReport) -> tuple[list[str], list[list[object]]]:
    """(headers, rows) of a corpus's statistics for `textless.utils.table.format_table`."""
    rows = []
    for kind in KINDS:
        k = getattr(report.corpus, kind)
        mean, median = (measure(report.corpus, kind, m) for m in ("mean_duration", "median_duration"))
        rows.append([kind, k.count, k.seconds, k.per_minute, k.seconds_per_minute,
                     "-" if mean is None else mean, "-" if median is None else median])
    return ["event", "count", "seconds", "per min", "s per min", "mean s", "median s"], rows


def comparison_table(comparison: Comparison) -> tuple[list[str], list[list[object]]]:
    """(headers, rows) of a comparison: one row per statistic, then one per distance."""
    def cell(v: float | None) -> object:
        return "-" if v is None else v

    rows: list[list[object]] = [[f"{r.kind} {r.measure}", cell(r.reference), cell(r.generated), cell(r.difference),
                                 "-" if r.relative is None else f"{100 * r.relative:+.1f}%"] for r in comparison.rows]
    rows += [[f"{d.kind} wasserstein s", "", "", cell(d.wasserstein), ""] for d in comparison.distances]
    rows += [[f"{d.kind} JS distance", "", "", cell(d.jensen_shannon), ""] for d in comparison.distances]
    return ["statistic", "reference", "generated", "difference", "relative"], rows
