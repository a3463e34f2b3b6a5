"""`textless build-dialogues`: synthetic two-party conversations with exact timelines (`textless.dialogue.builder`).

Conversation ``i`` (id ``dlg-<i:06d>``) takes all its randomness from the seed and its index: its two voices from
``default_rng([seed, i, 0])`` (two distinct voices of the list; speaker A on channel 0), its schedule from
``default_rng([seed, i, 1])``, its noise settings from ``default_rng([seed, i, 2])`` and noise samples from
``default_rng([seed, i, 3])``. The same config therefore gives byte-identical files however the work is split.

Output (paths in the manifest are relative to ``<output>``; ``audio_format`` wav or flac, 16 kHz, 16-bit)::

    stereo/<id>.<fmt>          2 channels, channel 0 = speaker A
    mono/<id>.A.<fmt>, .B.<fmt>  each speaker alone (``mono=true``)
    timelines/<id>.json        `textless.dialogue.timeline` ground truth (segments = true speech extents)
    rttm/<id>.rttm             the same segments as RTTM
    manifest.jsonl             one line per conversation: id, stereo, mono, timeline, rttm, format, sample_rate,
                               duration (s), speakers (A/B -> voice spec), voices (A/B -> voice name), seed, noise
    summary.json               built / skipped / failed, audio seconds, wall seconds, real-time factor (audio s /
                               wall s) and seconds per stage, over all ranks of the last run

Sharding and resume: rank r of W (``rank=``/``world_size=``, or torchrun / SLURM variables) builds the conversations
with i % W == r, ``num_workers`` at a time (a process pool). Every file is written atomically, the timeline last: a
conversation whose files all exist is complete and skipped by a re-run (``overwrite=true`` rebuilds). A re-run with
other settings is refused (``run.json`` records them). Each rank writes its statistics to ``<output>/.parts/``; the
rank that finds every rank's statistics of this run writes manifest.jsonl (every complete conversation) and
summary.json. A conversation that fails (a voice the engine cannot read) is reported and skipped.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from textless.data.manifest import resolve_shard
from textless.dialogue.builder import (
    BACKCHANNELS,
    INTERJECTIONS,
    SPEAKERS,
    NoiseConfig,
    Synthesizer,
    TimingConfig,
    add_noise,
    build_conversation,
    draw_noise,
    load_sentences,
    noise_signal,
)
from textless.dialogue.timeline import InvalidTimelineError, read_timeline, timeline_to_rttm, write_timeline
from textless.errors import ConfigError, TextlessError
from textless.eval.builder.job import EngineSynthesizer
from textless.eval.builder.tts import ENGINES, SAMPLE_RATE, SynthesisError, Voice
from textless.utils.atomic import atomic_path, atomic_write_text
from textless.utils.runs import resume_or_record, run_digest
from textless.utils.shards import build_items, pooled, read_parts, write_part
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

DIALOGUE_BUILD = artifact("textless.dialogue_build", 1, "a dialogue build summary")
AUDIO_FORMATS = ("wav", "flac")
FREE_VOICES = ["flite:kal16", "flite:awb", "flite:rms", "flite:slt"]  # CMU flite voices: free for any use
PROBE_TEXT = "okay"
# settings that do not change the output (left out of the run record)
NOT_RECORDED = ("output", "rank", "world_size", "num_workers", "progress", "overwrite")


@dataclass
class BuildDialoguesConfig:
    output: str = "outputs/dialogues"
    num_conversations: int = 4
    seconds: float = 60.0              # target length of each conversation (s): turns are added until speech reaches it
    seed: int = 0
    voices: list[str] = field(default_factory=lambda: list(FREE_VOICES))  # engine:voice specs; 2 drawn per conversation
    text: str = "wordnet"              # sentences: wordnet | corpus:<split> | corpus:all | file:<path> (one per line)
    min_words: int = 3                 # sentence length range (wordnet / corpus)
    max_words: int = 12
    backchannels: list[str] = field(default_factory=lambda: list(BACKCHANNELS))
    interjections: list[str] = field(default_factory=lambda: list(INTERJECTIONS))  # ignored-interruption phrases
    timing: TimingConfig = field(default_factory=TimingConfig)  # gaps, overlaps, pauses, backchannels, interruptions
    noise: NoiseConfig = field(default_factory=NoiseConfig)      # per-channel noise (none by default)
    stretch: float = 1.0               # TTS duration stretch (< 1 speaks faster)
    audio_format: str = "wav"          # wav | flac (stereo and mono files)
    mono: bool = True                  # also write each speaker's channel alone
    rank: int | None = None            # shard of this process (default: torchrun / SLURM environment, else 0)
    world_size: int | None = None
    num_workers: int = 1               # conversations built in parallel by this rank (processes)
    progress: bool = True
    overwrite: bool = False            # rebuild every conversation of this rank (default: skip complete ones)


def conversation_id(index: int) -> str:
    return f"dlg-{index:06d}"


def check_config(cfg: BuildDialoguesConfig) -> None:
    if cfg.num_conversations < 1 or not cfg.seconds > 0:
        raise ConfigError("num_conversations must be >= 1 and seconds > 0")
    if len(cfg.voices) < 2 or len(set(cfg.voices)) != len(cfg.voices):
        raise ConfigError(f"voices: give at least two distinct voices, got {list(cfg.voices)}")
    if cfg.audio_format not in AUDIO_FORMATS:
        raise ConfigError(f"audio_format must be one of {', '.join(AUDIO_FORMATS)}, got {cfg.audio_format!r}")
    if cfg.num_workers < 1:
        raise ConfigError(f"num_workers must be >= 1, got {cfg.num_workers}")
    if not cfg.backchannels or not cfg.interjections:
        raise ConfigError("backchannels and interjections must not be empty")
    cfg.timing.check()
    cfg.noise.check()


# ---------------------------------------------------------------------------------------------------------- voices
def parse_voice(spec: str) -> Voice:
    try:
        return Voice.parse(spec)
    except TextlessError as err:
        raise ConfigError(f"voice '{spec}': {err}") from None


def installed_voices(engine: str) -> set[str] | None:
    """The voices an engine has installed, for engines that fall back to a default voice on an unknown name instead
    of failing (flite, RHVoice); None for the others (they fail on an unknown voice, caught by the probe)."""
    if engine == "flite":
        out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
        return set(out.partition(":")[2].split())
    if engine == "rhvoice":
        roots = [Path("/usr/share/RHVoice/voices"), Path("/usr/local/share/RHVoice/voices")]
        return {p.name for root in roots if root.is_dir() for p in root.iterdir()}
    return None


def check_voices(voices: Sequence[Voice], synth: Synthesizer, engines: bool) -> None:
    """Every voice speaks: with `engines` (the real TTS), its engine is installed and knows the voice; then it reads
    a probe word. `ConfigError` naming the voice otherwise."""
    for voice in voices:
        if engines:
            ENGINES[voice.engine].require()
            known = installed_voices(voice.engine)
            if known is not None and voice.voice not in known and not Path(voice.voice).is_file():
                raise ConfigError(f"voice '{voice.spec}': {voice.engine} has no voice '{voice.voice}' (installed: "
                                  f"{', '.join(sorted(known)) or 'none'})")
        try:
            synth.text(voice, PROBE_TEXT)
        except (SynthesisError, OSError) as err:
            raise ConfigError(f"voice '{voice.spec}' cannot speak: {err}") from None


# ------------------------------------------------------------------------------------------------ one conversation
def conversation_voices(cfg: BuildDialoguesConfig, voices: Sequence[Voice], index: int) -> tuple[Voice, Voice]:
    first, second = np.random.default_rng([cfg.seed, index, 0]).choice(len(voices), 2, replace=False)
    return voices[int(first)], voices[int(second)]


def conversation_paths(cfg: BuildDialoguesConfig, cid: str) -> dict[str, Any]:
    """Paths relative to the output directory."""
    ext = cfg.audio_format
    return {"stereo": f"stereo/{cid}.{ext}",
            "mono": {s: f"mono/{cid}.{s}.{ext}" for s in SPEAKERS} if cfg.mono else None,
            "timeline": f"timelines/{cid}.json", "rttm": f"rttm/{cid}.rttm"}


def _files(paths: dict[str, Any]) -> list[str]:
    return [paths["stereo"], *(paths["mono"] or {}).values(), paths["rttm"], paths["timeline"]]


def is_complete(cfg: BuildDialoguesConfig, index: int) -> bool:
    """Every file of conversation `index` exists (written atomically, the timeline last) and the timeline reads."""
    output, paths = Path(cfg.output), conversation_paths(cfg, conversation_id(index))
    if not all((output / f).is_file() for f in _files(paths)):
        return False
    try:
        read_timeline(output / paths["timeline"])
    except InvalidTimelineError:
        return False
    return True


def manifest_record(cfg: BuildDialoguesConfig, voices: Sequence[Voice], index: int, duration: float) -> dict:
    cid = conversation_id(index)
    pair = conversation_voices(cfg, voices, index)
    return {"id": cid, **conversation_paths(cfg, cid), "format": cfg.audio_format, "sample_rate": SAMPLE_RATE,
            "duration": duration, "speakers": {s: v.spec for s, v in zip(SPEAKERS, pair)},
            "voices": {s: v.name for s, v in zip(SPEAKERS, pair)}, "seed": [cfg.seed, index],
            "noise": dict(zip(SPEAKERS, draw_noise(cfg.noise, np.random.default_rng([cfg.seed, index, 2]))))}


def _write_audio(path: Path, samples: np.ndarray, audio_format: str) -> None:
    with atomic_path(path) as tmp:
        sf.write(tmp, samples, SAMPLE_RATE, subtype="PCM_16", format=audio_format.upper())


def build_one(cfg: BuildDialoguesConfig, voices: Sequence[Voice], sentences: Sequence[str], synth: Synthesizer,
              index: int) -> dict[str, Any]:
    """Build and write conversation `index`: ``{"id", "audio_seconds", "stages"}``, or ``{"id", "error"}`` when its
    synthesis failed (nothing of it is written then)."""
    cid = conversation_id(index)
    output, paths = Path(cfg.output), conversation_paths(cfg, cid)
    pair = conversation_voices(cfg, voices, index)
    start = time.perf_counter()
    try:
        conv = build_conversation(cid, pair, sentences, synth, np.random.default_rng([cfg.seed, index, 1]),
                                  cfg.seconds, cfg.timing, cfg.backchannels, cfg.interjections)
        built = time.perf_counter()
        channels = conv.channels
        noise = draw_noise(cfg.noise, np.random.default_rng([cfg.seed, index, 2]))
        if any(noise):
            rng = np.random.default_rng([cfg.seed, index, 3])
            others = [v for v in voices if v not in pair] or list(pair)

            def babble() -> list[np.ndarray]:
                return [np.concatenate([synth.text(others[k % len(others)],
                                                   sentences[int(rng.integers(len(sentences)))]) for _ in range(3)])
                        for k in range(cfg.noise.babble_talkers)]

            channels = channels.copy()
            for channel, spec in enumerate(noise):
                if spec is not None:
                    signal = noise_signal(spec["kind"], channels.shape[1], rng, babble)
                    channels[channel] = add_noise(channels[channel], conv.timeline.channel(channel), signal,
                                                  spec["snr_db"])
    except (SynthesisError, OSError) as err:
        return {"id": cid, "error": f"{type(err).__name__}: {err}", "voices": [v.spec for v in pair]}
    mixed = time.perf_counter()
    _write_audio(output / paths["stereo"], channels.T, cfg.audio_format)
    for channel, speaker in enumerate(SPEAKERS):
        if paths["mono"]:
            _write_audio(output / paths["mono"][speaker], channels[channel], cfg.audio_format)
    atomic_write_text(output / paths["rttm"], timeline_to_rttm(conv.timeline))
    write_timeline(output / paths["timeline"], conv.timeline)
    return {"id": cid, "audio_seconds": conv.timeline.duration,
            "stages": {"synthesis": conv.synthesis_seconds, "schedule": built - start - conv.synthesis_seconds,
                       "noise": mixed - built, "write": time.perf_counter() - mixed}}


# ------------------------------------------------------------------------------------------------------------- job
def build_dialogues(cfg: BuildDialoguesConfig, synth: Synthesizer | None = None) -> dict[str, Any]:
    """Build this rank's conversations of `cfg` (skipping complete ones) and, when every rank of this run is done,
    write manifest.jsonl and summary.json; returns the summary (this rank's, when another rank merges)."""
    wall_start = time.perf_counter()
    check_config(cfg)
    rank, world = resolve_shard(cfg.rank, cfg.world_size)
    stages: dict[str, float] = {}
    tick = time.perf_counter()
    voices = [parse_voice(s) for s in cfg.voices]
    engines = synth is None
    synth = synth or EngineSynthesizer(cfg.stretch, 0.0)
    check_voices(voices, synth, engines)
    stages["voices"] = time.perf_counter() - tick
    tick = time.perf_counter()
    sentences = load_sentences(cfg.text, cfg.min_words, cfg.max_words)
    stages["text"] = time.perf_counter() - tick
    output = Path(cfg.output)
    started_with = {k: v for k, v in asdict(cfg).items() if k not in NOT_RECORDED}
    resume_or_record(output, started_with, what=f"the dialogue set {output}",
                     how_to_restart="or pass overwrite=true to rebuild it, or give another output",
                     restart=cfg.overwrite)
    mine = [i for i in range(cfg.num_conversations) if i % world == rank]
    todo = [i for i in mine if cfg.overwrite or not is_complete(cfg, i)]
    logger.info(f"rank {rank}/{world}: {len(todo)} of {len(mine)} conversations to build "
                f"({len(mine) - len(todo)} complete), {len(sentences)} sentences from {cfg.text}")
    results = build_items(build_one, (cfg, voices, sentences, synth), todo, num_workers=cfg.num_workers,
                          desc="dialogues", unit="conv", progress=cfg.progress)
    digest = run_digest(started_with)
    part = write_part(output, rank, world, digest, results, len(mine) - len(todo), wall_start, stages)
    merged = merge(cfg, voices, world, digest)
    return merged if merged is not None else part


def merge(cfg: BuildDialoguesConfig, voices: Sequence[Voice], world: int, digest: str) -> dict[str, Any] | None:
    """Write manifest.jsonl (every complete conversation, by id) and summary.json when every rank's statistics of
    this run (`digest`) are in ``.parts``; None when some rank is not done. Idempotent: a second merging rank writes
    the same manifest."""
    output = Path(cfg.output)
    parts = read_parts(output, world, digest, output / "manifest.jsonl")
    if parts is None:
        return None
    records = [manifest_record(cfg, voices, i, read_timeline(output / f"timelines/{conversation_id(i)}.json").duration)
               for i in range(cfg.num_conversations) if is_complete(cfg, i)]
    atomic_write_text(output / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    summary = {**DIALOGUE_BUILD.header(), "config": asdict(cfg), "world_size": world,
               "conversations": cfg.num_conversations, "complete": len(records),
               **pooled(parts, sum(r["duration"] for r in records))}
    DIALOGUE_BUILD.write_json(output / "summary.json", summary)
    logger.info(f"wrote {output}: {len(records)} of {cfg.num_conversations} conversations, "
                f"{summary['total_audio_seconds']:.1f} s of audio; this run built {summary['audio_seconds']:.1f} s in "
                f"{summary['wall_seconds']:.1f} s "
                f"(real-time factor {summary['real_time_factor']})")
    return summary
