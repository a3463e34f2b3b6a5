"""`textless build-lslm`: LSLM training / test data (Ma et al. 2024, seed 002 sec. 5.2-5.3), made offline with TTS.

An example is a speaking utterance (a sentence read by a speaking voice, trimmed to its speech,
`interruptions.trim_to_speech`) and a listening channel of the same length drawn by `interruptions.mix_listening`:
noise with ``mix.noise_prob`` (white / pink / tone, or ``noise_files`` recordings, at an SNR relative to the
interruption clip's speech power) and an interruption with ``mix.interrupt_prob``, placed so that the clip's SPEECH
starts at the recorded onset. Interruption clips (each trimmed to its speech, synthesized on first use):

- ``setting=command`` (the paper's command-based FDM, speaker dependent): the one ``keyword`` ("honey") spoken by
  every voice of ``interruption_voices`` (the paper: 22 voices), the same voices in every split;
- ``setting=voice`` (voice-based FDM, speaker independent): every word of ``words`` (default: the 35 words of the
  Speech Commands dataset the paper uses) by every voice; the ``held_out_voices`` speak the test split ONLY, and
  every interruption voice that is the same speaker (`Voice.name`: ``flite:slt`` and ``rhvoice:slt`` are both slt)
  is left out of train and valid. ``held_out_voices`` may be given for the command setting too (an unseen-speaker
  test); valid uses the training voices.

Splits: ``num_train`` / ``num_valid`` / ``num_test`` examples; sentence ``j`` of the sorted sentence list goes to
valid when ``j % 10 == 8``, to test when ``j % 10 == 9``, else to train (8:1:1, no sentence in two splits).

Example ``i`` of split ``s`` (id ``<s>-<i:06d>``, s = 0 train, 1 valid, 2 test) takes its speaking voice and
sentence from ``default_rng([seed, s, i, 0])`` and its listening channel from ``default_rng([seed, s, i, 1])``: the
same config gives byte-identical files however the work is split. Nothing is tokenized (the trainer tokenizes the
speaking audio with its LM's unit tokenizer, computes the listening features and places the IRQ with
`interruptions.irq_cut` from the onset).

Output (paths in the manifest relative to ``<output>``; mono 16 kHz 16-bit wav)::

    speaking/<id>.wav      the speaking utterance (its speech only)
    listening/<id>.wav     the listening channel, exactly as long; scaled by ``listening_gain`` (< 1 only when
                           noise would clip 16-bit samples; the clip sits unscaled otherwise)
    records/<id>.json      the example's manifest line (written last: marks the example complete)
    examples.jsonl         every complete example, train then valid then test: id, split, speaking, listening,
                           sample_rate, samples, seconds, text, speaking_voice, onset (s, the interruption's speech
                           start) or null, interruption ({word, voice, speaker, start (s, the clip's first sample),
                           seconds}) or null, noise ({kind, snr_db[, file]}) or null, listening_gain, seed
    summary.json           counts per split (noise / interruption fractions, voices, words), built / skipped /
                           failed, audio and wall seconds, real-time factor, stage seconds
    run.json               the settings (a re-run with other settings is refused)

Sharding, resume and failures as `textless build-dialogues`: rank r of W builds the examples at positions
``p % W == r`` of the list train, valid, test (``num_workers`` processes each); every file is written atomically,
complete examples are skipped by a re-run (``overwrite=true`` rebuilds); the rank that finds every rank's statistics
in ``.parts`` writes examples.jsonl and summary.json; an example whose synthesis fails is reported and skipped.
`textless.dialogue.lslm.examples.read_lslm_examples` reads a split back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import soundfile as sf

from textless.audio import load_audio
from textless.data.manifest import resolve_shard
from textless.dialogue.builder import NOISE_KINDS, Synthesizer, load_sentences
from textless.dialogue.interruptions import ListeningMix, mix_listening, trim_to_speech
from textless.dialogue.lslm.examples import MANIFEST, SPLITS
from textless.errors import ConfigError
from textless.eval.builder.job import EngineSynthesizer
from textless.eval.builder.tts import SAMPLE_RATE, SynthesisError, Voice
from textless.jobs.build_dialogues import FREE_VOICES, check_voices, parse_voice
from textless.utils.atomic import atomic_path, atomic_write_text
from textless.utils.runs import resume_or_record, run_digest
from textless.utils.shards import build_items, pooled, read_parts, write_part
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

LSLM_BUILD = artifact("textless.lslm_build", 1, "an LSLM data build summary")
SETTINGS = ("command", "voice")
LISTENING_NOISES = tuple(k for k in NOISE_KINDS if k != "babble")  # babble is speech: it would read as a user
# The 35 words of the Speech Commands dataset v2 (Warden 2017), the paper's voice-based interruptions.
SPEECH_COMMANDS = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
                   "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
                   "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero")
# settings that do not change the output (left out of the run record)
NOT_RECORDED = ("output", "rank", "world_size", "num_workers", "progress", "overwrite")


@dataclass
class BuildLSLMConfig:
    output: str = "outputs/lslm"
    setting: str = "command"           # command (one keyword, speaker dependent) | voice (many words, unseen test
                                       # speakers: needs held_out_voices)
    keyword: str = "honey"             # the command of setting=command
    words: list[str] = field(default_factory=lambda: list(SPEECH_COMMANDS))  # the words of setting=voice
    num_train: int = 200               # examples per split
    num_valid: int = 20
    num_test: int = 100
    seed: int = 0
    speaking_voices: list[str] = field(default_factory=lambda: list(FREE_VOICES))  # engine:voice specs reading the
                                       # sentences (one drawn per example)
    interruption_voices: list[str] = field(default_factory=lambda: list(FREE_VOICES))  # voices saying the
                                       # interruptions (train / valid; test too unless held_out_voices)
    held_out_voices: list[str] = field(default_factory=list)  # test-split interruption voices only; their speakers
                                       # never interrupt in train / valid
    text: str = "wordnet"              # sentences: wordnet | corpus:<split> | corpus:all | file:<path>
    min_words: int = 3                 # sentence length range (wordnet / corpus)
    max_words: int = 12
    noise_kinds: list[str] = field(default_factory=lambda: list(LISTENING_NOISES))  # white | pink | tone
    noise_files: list[str] = field(default_factory=list)  # noise recordings (e.g. MUSAN), drawn with noise_kinds
    mix: ListeningMix = field(default_factory=ListeningMix)  # noise / interruption probabilities (0.5 / 0.5), SNR (dB)
                                       # and onset range of the listening channel
    stretch: float = 1.0               # TTS duration stretch (< 1 speaks faster)
    rank: int | None = None            # shard of this process (default: torchrun / SLURM environment, else 0)
    world_size: int | None = None
    num_workers: int = 1               # examples built in parallel by this rank (processes)
    progress: bool = True
    overwrite: bool = False            # rebuild every example of this rank (default: skip complete ones)


def check_config(cfg: BuildLSLMConfig) -> None:
    if cfg.setting not in SETTINGS:
        raise ConfigError(f"setting must be one of {', '.join(SETTINGS)}, got {cfg.setting!r}")
    counts = (cfg.num_train, cfg.num_valid, cfg.num_test)
    if min(counts) < 0 or sum(counts) < 1:
        raise ConfigError(f"num_train, num_valid and num_test must be >= 0 and not all 0, got {counts}")
    if cfg.setting == "command" and not cfg.keyword.strip():
        raise ConfigError("keyword: give the command word of setting=command")
    if cfg.setting == "voice":
        if not cfg.words or not all(w.strip() for w in cfg.words):
            raise ConfigError(f"words: setting=voice needs a list of non-empty words, got {list(cfg.words)}")
        if not cfg.held_out_voices and cfg.num_test > 0:
            raise ConfigError("setting=voice tests on unseen speakers: give held_out_voices (e.g. "
                              "held_out_voices=[flite:slt]); their speakers interrupt only in the test split")
    for name in ("speaking_voices", "interruption_voices", "held_out_voices"):
        voices = list(getattr(cfg, name))
        if len(set(voices)) != len(voices):
            raise ConfigError(f"{name}: a voice is listed twice: {voices}")
    if not cfg.speaking_voices or not cfg.interruption_voices:
        raise ConfigError("speaking_voices and interruption_voices must not be empty")
    bad = [k for k in cfg.noise_kinds if k not in LISTENING_NOISES]
    if bad:
        raise ConfigError(f"noise_kinds: {bad} not available for the listening channel (choose from "
                          f"{', '.join(LISTENING_NOISES)}; babble is speech and would read as an interruption)")
    if cfg.mix.noise_prob > 0 and not cfg.noise_kinds and not cfg.noise_files:
        raise ConfigError("mix.noise_prob > 0 needs noise_kinds or noise_files")
    if cfg.num_workers < 1 or not cfg.stretch > 0:
        raise ConfigError(f"need num_workers >= 1 and stretch > 0, got {cfg.num_workers}, {cfg.stretch}")
    cfg.mix.check()


# ------------------------------------------------------------------------------------------------------- sources
class ClipBank(Sequence[np.ndarray]):
    """The interruption clips of one split: every (word, voice) pair, words varying fastest; a clip is synthesized
    on first use and trimmed to its speech (int16 samples at 16 kHz). Clips are cached in `cache` (shared by banks)."""

    def __init__(self, words: Sequence[str], voices: Sequence[Voice], synth: Synthesizer,
                 cache: dict[tuple[str, str], np.ndarray]):
        self.pairs = [(w, v) for v in voices for w in words]
        self.synth, self.cache = synth, cache
        self.seconds = 0.0       # wall seconds spent synthesizing

    def __len__(self) -> int:
        return len(self.pairs)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        word, voice = self.pairs[index]
        key = (word, voice.spec)
        if key not in self.cache:
            start = time.perf_counter()
            try:
                self.cache[key] = trim_to_speech(self.synth.text(voice, word))
            except (SynthesisError, OSError) as err:
                raise SynthesisError(f"interruption {word!r} by {voice.spec}: {err}") from None
            finally:
                self.seconds += time.perf_counter() - start
        return self.cache[key]


@dataclass
class Sources:
    """Everything an example is drawn from, per split."""

    speaking_voices: list[Voice]
    sentences: dict[str, list[str]]            # split -> its sentences
    words: list[str]                           # interruption words (the keyword alone for setting=command)
    clip_voices: dict[str, list[Voice]]        # split -> its interruption voices
    clips: dict[str, ClipBank]                 # split -> (word, voice) clips
    noises: list[str | np.ndarray]             # noise kinds and recordings (float, 16 kHz), for `mix_listening`
    noise_names: list[str]                     # the kind, or the recording's path


def split_sentences(sentences: Sequence[str]) -> dict[str, list[str]]:
    """Sentence j: valid when j % 10 == 8, test when j % 10 == 9, else train."""
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for j, sentence in enumerate(sentences):
        out["valid" if j % 10 == 8 else "test" if j % 10 == 9 else "train"].append(sentence)
    return out


def split_voices(cfg: BuildLSLMConfig, voices: Sequence[Voice], held_out: Sequence[Voice]) -> dict[str, list[Voice]]:
    """Interruption voices per split: train and valid = `voices` less the held-out speakers; test = `held_out`
    (or `voices` when none are held out)."""
    names = {v.name for v in held_out}
    seen = [v for v in voices if v.name not in names]
    dropped = [v.spec for v in voices if v.name in names]
    if dropped:
        logger.info(f"interruption voices {', '.join(dropped)} are held-out speakers: test split only")
    if not seen and cfg.num_train + cfg.num_valid > 0:
        raise ConfigError(f"interruption_voices: every voice is a held-out speaker ({', '.join(sorted(names))}): "
                          f"train and valid would have no interruption voice")
    return {"train": seen, "valid": seen, "test": list(held_out) or seen}


def load_noise(path: str) -> np.ndarray:
    """A noise recording as float64 at 16 kHz (mono)."""
    wav, _ = load_audio(path, SAMPLE_RATE, max_seconds=None)
    samples = wav.numpy().astype(np.float64)
    if not np.any(samples):
        raise ConfigError(f"noise_files: '{path}' is silent")
    return samples


def prepare(cfg: BuildLSLMConfig, synth: Synthesizer, engines: bool) -> Sources:
    """Parse and probe the voices, read and split the sentences, load the noise recordings."""
    speaking = [parse_voice(s) for s in cfg.speaking_voices]
    interrupting = [parse_voice(s) for s in cfg.interruption_voices]
    held_out = [parse_voice(s) for s in cfg.held_out_voices]
    unique = {v.spec: v for v in [*speaking, *interrupting, *held_out]}
    check_voices(list(unique.values()), synth, engines)
    sentences = split_sentences(load_sentences(cfg.text, cfg.min_words, cfg.max_words))
    for split, count in zip(SPLITS, (cfg.num_train, cfg.num_valid, cfg.num_test)):
        if count and not sentences[split]:
            raise ConfigError(f"text={cfg.text!r}: too few sentences for a {split} split (every 10th goes to valid "
                              f"and test; give at least 10)")
    words = [cfg.keyword] if cfg.setting == "command" else list(cfg.words)
    clip_voices = split_voices(cfg, interrupting, held_out)
    cache: dict[tuple[str, str], np.ndarray] = {}
    clips = {s: ClipBank(words, clip_voices[s], synth, cache) for s in SPLITS}
    noises: list[str | np.ndarray] = [*cfg.noise_kinds, *(load_noise(p) for p in cfg.noise_files)]
    return Sources(speaking, sentences, words, clip_voices, clips, noises, [*cfg.noise_kinds, *cfg.noise_files])


# ------------------------------------------------------------------------------------------------------ examples
def example_id(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def plan(cfg: BuildLSLMConfig) -> list[tuple[str, int]]:
    """(split, index) of every example: train, then valid, then test."""
    counts = {"train": cfg.num_train, "valid": cfg.num_valid, "test": cfg.num_test}
    return [(split, i) for split in SPLITS for i in range(counts[split])]


def example_paths(eid: str) -> dict[str, str]:
    """Paths relative to the output directory."""
    return {"speaking": f"speaking/{eid}.wav", "listening": f"listening/{eid}.wav", "record": f"records/{eid}.json"}


def read_record(output: Path, eid: str) -> dict[str, Any] | None:
    """The example's record when all its files exist (the record is written last) and the record reads, else None."""
    paths = example_paths(eid)
    if not all((output / p).is_file() for p in paths.values()):
        return None
    try:
        record = json.loads((output / paths["record"]).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("id") == eid else None


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        sf.write(tmp, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def to_int16(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """(int16 samples, gain): `audio` rounded, scaled by gain = 32767 / peak only when its peak exceeds 32767."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    gain = 1.0 if peak <= 32767 else 32767 / peak
    return np.round(audio.astype(np.float64) * gain).astype(np.int16), gain


def build_one(cfg: BuildLSLMConfig, sources: Sources, synth: Synthesizer, split: str, index: int) -> dict[str, Any]:
    """Build and write example `index` of `split`: ``{"id", "audio_seconds", "stages"}``, or ``{"id", "error"}``
    when a synthesis failed (nothing of it is written then)."""
    eid, code = example_id(split, index), SPLITS.index(split)
    output, paths = Path(cfg.output), example_paths(eid)
    draw = np.random.default_rng([cfg.seed, code, index, 0])
    voice = sources.speaking_voices[int(draw.integers(len(sources.speaking_voices)))]
    pool = sources.sentences[split]
    text = pool[int(draw.integers(len(pool)))]
    bank = sources.clips[split]
    start, clip_before = time.perf_counter(), bank.seconds
    try:
        try:
            speaking = trim_to_speech(synth.text(voice, text))
        except (SynthesisError, OSError) as err:
            raise SynthesisError(f"sentence by {voice.spec}: {err}") from None
        spoken = time.perf_counter()
        listening = mix_listening(len(speaking) / SAMPLE_RATE, SAMPLE_RATE, np.random.default_rng([cfg.seed, code,
                                  index, 1]), bank, sources.noises, cfg.mix)
    except SynthesisError as err:
        return {"id": eid, "error": f"{type(err).__name__}: {err}", "speaking_voice": voice.spec}
    mixed = time.perf_counter()
    clip_seconds = bank.seconds - clip_before
    audio, gain = to_int16(listening.audio)
    if len(audio) != len(speaking):
        raise AssertionError(f"{eid}: listening {len(audio)} samples, speaking {len(speaking)}")
    interruption = None
    if listening.onset is not None:
        assert listening.clip is not None and listening.clip_start is not None
        word, clip_voice = bank.pairs[listening.clip]
        interruption = {"word": word, "voice": clip_voice.spec, "speaker": clip_voice.name,
                        "start": listening.clip_start / SAMPLE_RATE, "seconds": len(bank[listening.clip]) / SAMPLE_RATE}
    noise = None
    if listening.noise is not None:
        noise = {"kind": listening.noise.kind, "snr_db": listening.noise.snr_db}
        if listening.noise.kind == "recording":
            noise["file"] = sources.noise_names[listening.noise.index]
    record = {"id": eid, "split": split, "speaking": paths["speaking"], "listening": paths["listening"],
              "sample_rate": SAMPLE_RATE, "samples": len(speaking), "seconds": len(speaking) / SAMPLE_RATE,
              "text": text, "speaking_voice": voice.spec, "onset": listening.onset, "interruption": interruption,
              "noise": noise, "listening_gain": gain, "seed": [cfg.seed, code, index]}
    _write_wav(output / paths["speaking"], speaking)
    _write_wav(output / paths["listening"], audio)
    atomic_write_text(output / paths["record"], json.dumps(record) + "\n")
    return {"id": eid, "audio_seconds": record["seconds"],
            "stages": {"synthesis": spoken - start, "clips": clip_seconds, "mix": mixed - spoken - clip_seconds,
                       "write": time.perf_counter() - mixed}}


# ----------------------------------------------------------------------------------------------------------- job
def build_lslm(cfg: BuildLSLMConfig, synth: Synthesizer | None = None) -> dict[str, Any]:
    """Build this rank's examples of `cfg` (skipping complete ones) and, when every rank of this run is done, write
    examples.jsonl and summary.json; returns the summary (this rank's, when another rank merges). `synth`: the TTS
    (default: the offline engines, each voice checked to be installed)."""
    wall_start = time.perf_counter()
    check_config(cfg)
    rank, world = resolve_shard(cfg.rank, cfg.world_size)
    engines = synth is None
    synth = synth or EngineSynthesizer(cfg.stretch, 0.0)
    tick = time.perf_counter()
    sources = prepare(cfg, synth, engines)
    stages = {"prepare": time.perf_counter() - tick}
    output = Path(cfg.output)
    started_with = {k: v for k, v in asdict(cfg).items() if k not in NOT_RECORDED}
    resume_or_record(output, started_with, what=f"the LSLM set {output}",
                     how_to_restart="or pass overwrite=true to rebuild it, or give another output",
                     restart=cfg.overwrite)
    mine = [item for position, item in enumerate(plan(cfg)) if position % world == rank]
    todo = [item for item in mine if cfg.overwrite or read_record(output, example_id(*item)) is None]
    logger.info(f"rank {rank}/{world}: {len(todo)} of {len(mine)} examples to build ({len(mine) - len(todo)} "
                f"complete), setting {cfg.setting}, {len(sources.words)} interruption word(s)")
    results = build_items(build_one, (cfg, sources, synth), todo, num_workers=cfg.num_workers, desc="lslm",
                          unit="ex", progress=cfg.progress)
    digest = run_digest(started_with)
    part = write_part(output, rank, world, digest, results, len(mine) - len(todo), wall_start, stages)
    merged = merge(cfg, sources, world, digest)
    return merged if merged is not None else part


def _split_summary(cfg: BuildLSLMConfig, sources: Sources, split: str, records: list[dict[str, Any]]) -> dict:
    mine = [r for r in records if r["split"] == split]
    noisy = sum(r["noise"] is not None for r in mine)
    interrupted = sum(r["onset"] is not None for r in mine)
    return {"examples": {"train": cfg.num_train, "valid": cfg.num_valid, "test": cfg.num_test}[split],
            "complete": len(mine), "noise": noisy, "interrupted": interrupted,
            "noise_fraction": round(noisy / len(mine), 4) if mine else None,
            "interruption_fraction": round(interrupted / len(mine), 4) if mine else None,
            "seconds": round(sum(r["seconds"] for r in mine), 3), "sentences": len(sources.sentences[split]),
            "interruption_voices": [v.spec for v in sources.clip_voices[split]],
            "interruption_speakers": sorted({v.name for v in sources.clip_voices[split]})}


def merge(cfg: BuildLSLMConfig, sources: Sources, world: int, digest: str) -> dict[str, Any] | None:
    """Write examples.jsonl (every complete example) and summary.json when every rank's statistics of this run
    (`digest`) are in ``.parts``; None when some rank is not done."""
    output = Path(cfg.output)
    parts = read_parts(output, world, digest, output / MANIFEST)
    if parts is None:
        return None
    records = [r for item in plan(cfg) if (r := read_record(output, example_id(*item))) is not None]
    atomic_write_text(output / MANIFEST, "".join(json.dumps(r) + "\n" for r in records))
    summary = {**LSLM_BUILD.header(), "config": asdict(cfg), "world_size": world, "setting": cfg.setting,
               "words": sources.words, "noise_prob": cfg.mix.noise_prob, "interrupt_prob": cfg.mix.interrupt_prob,
               "splits": {s: _split_summary(cfg, sources, s, records) for s in SPLITS},
               "examples": len(plan(cfg)), "complete": len(records),
               **pooled(parts, sum(r["seconds"] for r in records))}
    LSLM_BUILD.write_json(output / "summary.json", summary)
    logger.info(f"wrote {output}: {len(records)} of {len(plan(cfg))} examples, {summary['total_audio_seconds']:.1f} s "
                f"of speaking audio; this run built {summary['audio_seconds']:.1f} s in {summary['wall_seconds']:.1f} s "
                f"(real-time factor {summary['real_time_factor']})")
    return summary
