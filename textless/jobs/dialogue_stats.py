"""`textless dialogue-stats`: turn-taking statistics of a corpus of conversations, optionally against a reference.

Writes ``<output>/stats.json`` (the corpus report, the reference's and their comparison), ``timelines.png`` (two-lane
timelines of the first `max_plots` conversations) and ``durations.png`` (event-duration histograms against the
reference), and prints the tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from textless.dialogue.vad import VADConfig
from textless.errors import ConfigError

SOURCES = ("auto", "timeline", "rttm", "audio", "units")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class DialogueStatsConfig:
    input: str = ""                          # timelines / builder dir, .rttm, unit dataset or stereo audio dir
    source: str = "auto"                     # auto | timeline | rttm | audio | units
    reference: str | None = None             # a reference corpus of the same kinds (compared: the dGSLM table)
    reference_source: str = "auto"           # auto | timeline | rttm | audio | units
    output: str = "outputs/dialogue_stats"   # directory: stats.json, timelines.png, durations.png
    duration: float | None = None            # rttm: recording seconds (default: the last segment's end)
    vad: VADConfig = field(default_factory=VADConfig)  # audio: vad.method=silero | energy | units, its options
    silence_units: list[int] = field(default_factory=list)  # units: the units of frames without speech (default:
                                                            # learned for vad.units_tokenizer, which made the units)
    min_silence: float = 0.2                 # seconds of silence that bound an IPU (dGSLM's 200 ms)
    max_plots: int = 8                       # conversations drawn in timelines.png (0: no plots)


def detect_source(path: str | Path) -> str:
    """The kind of corpus at `path` (see `DialogueStatsConfig.input`), or a `ConfigError` naming it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix == ".rttm":
            return "rttm"
        if path.suffix == ".json":
            return "timeline"
        raise ConfigError(f"{path}: a file input must be an .rttm or a timeline .json")
    if (path / "meta.json").is_file():
        return "units"
    if (path / "manifest.jsonl").is_file() or any(path.glob("*.json")) or (path / "timelines").is_dir():
        return "timeline"
    if any(p.suffix in AUDIO_SUFFIXES for p in path.iterdir()):
        return "audio"
    raise ConfigError(f"{path}: not a corpus (no manifest.jsonl, timelines *.json, meta.json or audio files)")


def _vad(cfg: DialogueStatsConfig) -> VADConfig:
    return cfg.vad


def load_corpus(path: str | Path, source: str, cfg: DialogueStatsConfig):
    """The `CorpusReport` of one input."""
    from textless.dialogue import stats

    if source not in SOURCES:
        raise ConfigError(f"source={source!r} is not one of {', '.join(SOURCES)}")
    path = Path(path)
    source = detect_source(path) if source == "auto" else source
    if source == "rttm":
        return stats.stats_from_rttm(path, cfg.duration, min_silence=cfg.min_silence)
    if source == "timeline":
        return stats.stats_from_timelines(stats.read_timeline_corpus(path), cfg.min_silence)
    if source == "units":
        from textless.dialogue.data import read_dialogues
        from textless.dialogue.vad import silence_units_of

        dataset = read_dialogues(path)
        silence = cfg.silence_units or silence_units_of(cfg.vad.units_tokenizer, dataset.meta.tokenizer)
        return stats.stats_from_units(dataset, silence, cfg.min_silence)
    if (path / "manifest.jsonl").is_file():
        rows = stats.read_builder_manifest(path)
        missing = [r["id"] for r in rows if r["audio"] is None]
        if missing:
            raise ConfigError(f"{path / 'manifest.jsonl'}: no audio path for {missing[:5]}")
        return stats.stats_from_audio([r["audio"] for r in rows], _vad(cfg), [r["id"] for r in rows],
                                      cfg.min_silence)
    files = sorted(p for p in path.iterdir() if p.suffix in AUDIO_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"{path}: no audio file ({', '.join(AUDIO_SUFFIXES)})")
    return stats.stats_from_audio(files, _vad(cfg), min_silence=cfg.min_silence)


def run_dialogue_stats(cfg: DialogueStatsConfig) -> dict:
    """Compute, write and print (see the module docstring); returns what stats.json holds."""
    from textless.dialogue.stats import compare, comparison_table, stats_table
    from textless.utils.atomic import atomic_write_text
    from textless.utils.table import format_table

    if not cfg.input:
        raise ConfigError("dialogue-stats needs input=<timelines dir | manifest dir | .rttm | units | audio dir>")
    report = load_corpus(cfg.input, cfg.source, cfg)
    reference = load_corpus(cfg.reference, cfg.reference_source, cfg) if cfg.reference else None
    comparison = compare(reference, report) if reference is not None else None
    out = Path(cfg.output)
    result = {"input": str(cfg.input), "reference_input": cfg.reference, "corpus": report.to_dict(),
              "reference": None if reference is None else reference.to_dict(),
              "comparison": None if comparison is None else comparison.to_dict(), "plots": []}
    if cfg.max_plots > 0:
        from textless.dialogue.plots import plot_duration_histograms, plot_timelines

        result["plots"] = [str(plot_timelines(report.conversations, out / "timelines.png", cfg.max_plots,
                                              cfg.min_silence)),
                           str(plot_duration_histograms(report, out / "durations.png", reference))]
    atomic_write_text(out / "stats.json", json.dumps(result, indent=1) + "\n")
    print(f"{cfg.input}: {len(report.conversations)} conversations ({report.source}), {report.minutes:.2f} minutes")
    print(format_table(*stats_table(report)))
    if comparison is not None:
        print(f"\nagainst {cfg.reference}: {len(reference.conversations)} conversations ({reference.source}), "
              f"{reference.minutes:.2f} minutes")
        print(format_table(*comparison_table(comparison)))
    print(f"wrote {out / 'stats.json'}")
    return result
