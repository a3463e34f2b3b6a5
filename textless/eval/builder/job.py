"""`textless build-benchmark`: sWUGGY- and sBLIMP-style sets from local TTS voices, in the official ZeroSpeech 2021
layout (`textless.eval.builder.layout`), deterministic for a seed.

    textless build-benchmark output=outputs/bench/seen                      # recipe textless/recipes/build-benchmark.yaml
    textless build-benchmark --config build-benchmark-unseen output=outputs/bench/unseen

Lexical (sWUGGY-style): words are drawn (seeded shuffle) from `words` (minus `exclude_words`), kept if CMUdict has
them with `min_phones`..`max_phones` phones, their count in `words` is at least `min_frequency`, their pronunciation
is new to the set and the non-word rule of `textless.eval.builder.nonwords` gives a non-word no other item uses; the
word and its non-word are both synthesized FROM PHONES by the same voice (phone-input engines only), and a word any
of whose items fails (`SynthesisError`, e.g. a missing MBROLA diphone) is replaced by the next word. ``frequency`` is
the word's count in `frequency_corpus` (0 = OOV).

Syntactic (sBLIMP-style): `textless.eval.builder.templates.generate_pairs` under the `sentence_vocabulary` policy
(seen / unseen / any, relative to `sentence_reference`); both sentences of a pair are read from text by the same
voice.

Voices: item ``i`` is read by `voices_per_item` voices, taken in turn from the voice list (``i*k .. i*k+k-1`` modulo
the list; 0 = every voice reads every item). `voice_split` checks the voices against the bundled corpus: ``train``
(every voice is a training speaker of the corpus), ``held_out`` (none is: held-out voices), ``any``.

Writes ``<output>/{lexical,syntactic}/<split>/*.wav + gold.csv`` and ``<output>/build.json`` (config, voices, words
and non-words, counts, seconds of audio, what was skipped), atomically (the whole directory appears at once).
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from textless.errors import ConfigError
from textless.eval.builder.layout import (
    LEXICAL_COLUMNS,
    SYNTACTIC_COLUMNS,
    LexicalRow,
    SyntacticRow,
    gold_csv,
    stable_name,
    write_wav,
)
from textless.eval.builder.lexicon import Pron, Pronouncer, load_cmudict, union_counts, word_counts
from textless.eval.builder.nonwords import NonWordRule, Phonotactics, make_nonword
from textless.eval.builder.templates import VocabularyPolicy, generate_pairs
from textless.eval.builder.tts import ENGINES, SAMPLE_RATE, SynthesisError, Voice, synthesize_phones, synthesize_text
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

TASKS = ("lexical", "syntactic")
BENCHMARK_BUILD = artifact("textless.benchmark_build", 1, "a benchmark build summary")
VOICE_SPLITS = ("any", "train", "held_out")


@dataclass
class BuildBenchmarkConfig:
    output: str = "outputs/benchmark"
    split: str = "dev"                      # the layout's split directory (dev: gold.csv is written, as official)
    seed: int = 0
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    voices_per_item: int = 1                # voices reading each item (taken in turn from the list); 0 = all
    voice_split: str = "any"                # any | train (corpus training speakers only) | held_out (none of them)
    # lexical (sWUGGY-style)
    lexical_pairs: int = 60
    lexical_voices: list[str] = field(default_factory=lambda: ["corpus:ked"])
    words: str = "corpus:train"             # vocabulary source (corpus:<split>, file:<path>, wordnet:<n>, cmudict)
    exclude_words: list[str] = field(default_factory=list)  # sources whose words are never used (e.g. corpus:all)
    frequency_corpus: str = "corpus:train"  # `frequency` = count of the word here (0 = OOV)
    min_frequency: int = 0                  # keep words whose count in `words` is at least this
    min_phones: int = 3
    max_phones: int = 7
    min_trigram_count: int = 10             # non-word rule: every boundary-padded trigram seen this often in CMUdict
    single_max_length: int = 4              # non-word rule: one substitution up to this length, two above
    # syntactic (sBLIMP-style)
    syntactic_pairs: int = 36
    syntactic_voices: list[str] = field(default_factory=lambda: ["corpus:awb", "corpus:clb", "corpus:ked"])
    sentence_vocabulary: str = "seen"       # seen | unseen | any (relative to sentence_reference)
    sentence_reference: list[str] = field(default_factory=lambda: ["corpus:train"])
    # audio
    stretch: float = 1.0                    # duration stretch (< 1 speaks faster)
    edge_silence: float = 0.05              # seconds of silence kept at each end
    overwrite: bool = False


class Synthesizer(Protocol):
    """What the builder needs from TTS (tests pass a fake one): int16 samples at 16 kHz."""

    def phones(self, voice: Voice, pron: Pron) -> np.ndarray: ...

    def text(self, voice: Voice, text: str) -> np.ndarray: ...


@dataclass
class EngineSynthesizer:
    """The real engines of `textless.eval.builder.tts`, each call in a fresh temporary directory."""

    stretch: float = 1.0
    edge_silence: float = 0.05

    def phones(self, voice: Voice, pron: Pron) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="textless_tts_") as work:
            return synthesize_phones(voice, pron, Path(work), self.stretch, self.edge_silence)

    def text(self, voice: Voice, text: str) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="textless_tts_") as work:
            return synthesize_text(voice, text, Path(work), self.stretch, self.edge_silence)


# ---------------------------------------------------------------------------------------------------------- checks
def parse_voices(specs: Sequence[str], voice_split: str, what: str, phone_input: bool = False) -> list[Voice]:
    if not specs:
        raise ConfigError(f"{what}: give at least one voice")
    voices = [Voice.parse(s) for s in specs]
    names = [v.name for v in voices]
    if len(set(names)) != len(names):
        raise ConfigError(f"{what}: a voice is listed twice ({', '.join(names)})")
    if voice_split not in VOICE_SPLITS:
        raise ConfigError(f"voice_split must be one of {', '.join(VOICE_SPLITS)}, got '{voice_split}'")
    for voice in voices:
        split = voice.corpus_split()
        if voice_split == "train" and split != "train":
            raise ConfigError(f"{what}: voice {voice.spec} ({voice.name}) is not a training speaker of the bundled "
                              f"corpus (voice_split=train)")
        if voice_split == "held_out" and split == "train":
            raise ConfigError(f"{what}: voice {voice.spec} ({voice.name}) is a training speaker of the bundled "
                              f"corpus (voice_split=held_out)")
        if phone_input and not voice.takes_phones:
            raise ConfigError(f"{what}: voice {voice.spec} cannot read phones (phone-input engines: "
                              f"{', '.join(n for n, e in ENGINES.items() if e.phones)}); words and non-words must "
                              f"go through the same phone-input path")
    return voices


def voices_for(index: int, voices: Sequence[Voice], per_item: int) -> list[Voice]:
    """The voices reading item `index` (see the module docstring)."""
    if per_item < 0:
        raise ConfigError(f"voices_per_item must be >= 0, got {per_item}")
    k = len(voices) if per_item == 0 else min(per_item, len(voices))
    return [voices[(index * k + j) % len(voices)] for j in range(k)]


# ---------------------------------------------------------------------------------------------------------- lexical
@dataclass
class LexicalItem:
    id: str
    word: str
    pron: Pron
    nonword: Pron
    frequency: int
    voices: list[str]


def select_words(cfg: BuildBenchmarkConfig, pronouncer: Pronouncer) -> list[str]:
    """Candidate words in the seeded order they are tried."""
    counts = word_counts(cfg.words)
    excluded = union_counts(cfg.exclude_words)
    words = sorted(w for w, n in counts.items() if n >= cfg.min_frequency and w.isascii() and w.isalpha()
                   and w not in excluded and w in pronouncer and cfg.min_phones <= len(pronouncer.first(w)) <= cfg.max_phones)
    random.Random(f"{cfg.seed}:words").shuffle(words)
    return words


def build_lexical(cfg: BuildBenchmarkConfig, directory: Path, synth: Synthesizer,
                  pronouncer: Pronouncer | None = None) -> dict[str, Any]:
    """Write ``directory`` (wavs + gold.csv) and return a summary (items, skipped words, seconds of audio)."""
    pronouncer = pronouncer or load_cmudict()
    voices = parse_voices(cfg.lexical_voices, cfg.voice_split, "lexical_voices", phone_input=True)
    rule = NonWordRule(cfg.min_trigram_count, cfg.single_max_length)
    phonotactics = Phonotactics.from_pronouncer(pronouncer)
    frequencies = word_counts(cfg.frequency_corpus)
    directory.mkdir(parents=True)
    rows: list[LexicalRow] = []
    items: list[LexicalItem] = []
    skipped: dict[str, str] = {}
    used: set[tuple[str, ...]] = set()
    seconds = 0.0
    for word in select_words(cfg, pronouncer):
        if len(items) == cfg.lexical_pairs:
            break
        pron = pronouncer.first(word)
        key = tuple(p.rstrip("012") for p in pron)
        if key in used:
            skipped[word] = "same pronunciation as a word already used"
            continue
        nonword = make_nonword(pron, rule, phonotactics, pronouncer, random.Random(f"{cfg.seed}:{word}"), used)
        if nonword is None:
            skipped[word] = "no non-word satisfies the rule"
            continue
        item_id = f"lex{len(items) + 1:04d}"
        readers = voices_for(len(items), voices, cfg.voices_per_item)
        try:
            audio = {(v.name, c): synth.phones(v, p) for v in readers for c, p in ((1, pron), (0, nonword))}
        except SynthesisError as e:
            skipped[word] = str(e)
            continue
        for (name, correct), samples in audio.items():
            filename = stable_name(cfg.seed, "lexical", item_id, name, correct)
            write_wav(directory / f"{filename}.wav", samples, SAMPLE_RATE)
            seconds += len(samples) / SAMPLE_RATE
            rows.append(LexicalRow(item_id, filename, name, frequencies.get(word, 0), word if correct else "",
                                   pron if correct else nonword, correct))
        used.update((key, tuple(p.rstrip("012") for p in nonword)))
        items.append(LexicalItem(item_id, word, pron, nonword, frequencies.get(word, 0), [v.name for v in readers]))
    if len(items) < cfg.lexical_pairs:
        raise ConfigError(f"only {len(items)} of {cfg.lexical_pairs} lexical items could be made from '{cfg.words}' "
                          f"(skipped {len(skipped)} words; widen min_phones/max_phones or the vocabulary)")
    (directory / "gold.csv").write_text(gold_csv(rows, LEXICAL_COLUMNS), encoding="utf-8")
    logger.info(f"lexical: {len(items)} items, {len(rows)} wavs, {seconds:.1f} s of audio ({len(skipped)} words skipped)")
    return {"items": len(items), "pairs": len(rows) // 2, "wavs": len(rows), "seconds": round(seconds, 2),
            "voices": [v.to_dict() for v in voices], "skipped_words": skipped,
            "words": [asdict(i) for i in items]}


# -------------------------------------------------------------------------------------------------------- syntactic
def build_syntactic(cfg: BuildBenchmarkConfig, directory: Path, synth: Synthesizer) -> dict[str, Any]:
    voices = parse_voices(cfg.syntactic_voices, cfg.voice_split, "syntactic_voices")
    policy = VocabularyPolicy(cfg.sentence_vocabulary, frozenset(union_counts(cfg.sentence_reference)))
    generation = generate_pairs(cfg.syntactic_pairs, cfg.seed, policy)
    directory.mkdir(parents=True)
    rows: list[SyntacticRow] = []
    seconds = 0.0
    for index, pair in enumerate(generation.pairs):
        item_id = f"syn{index + 1:04d}"
        for voice in voices_for(index, voices, cfg.voices_per_item):
            for correct, text in ((1, pair.good_text), (0, pair.bad_text)):
                samples = synth.text(voice, text)
                filename = stable_name(cfg.seed, "syntactic", item_id, voice.name, correct)
                write_wav(directory / f"{filename}.wav", samples, SAMPLE_RATE)
                seconds += len(samples) / SAMPLE_RATE
                rows.append(SyntacticRow(filename, item_id, voice.name, pair.type, pair.subtype, text, correct))
    (directory / "gold.csv").write_text(gold_csv(rows, SYNTACTIC_COLUMNS), encoding="utf-8")
    subtypes: dict[str, int] = {}
    for pair in generation.pairs:
        subtypes[f"{pair.type}/{pair.subtype}"] = subtypes.get(f"{pair.type}/{pair.subtype}", 0) + 1
    logger.info(f"syntactic: {len(generation.pairs)} items, {len(rows)} wavs, {seconds:.1f} s of audio"
                + (f" (templates skipped: {', '.join(generation.skipped)})" if generation.skipped else ""))
    return {"items": len(generation.pairs), "pairs": len(rows) // 2, "wavs": len(rows), "seconds": round(seconds, 2),
            "voices": [v.to_dict() for v in voices], "subtypes": subtypes, "skipped_templates": generation.skipped,
            "policy": cfg.sentence_vocabulary}


# ------------------------------------------------------------------------------------------------------------- job
BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {"lexical": build_lexical, "syntactic": build_syntactic}


def build_benchmark(cfg: BuildBenchmarkConfig, synth: Synthesizer | None = None) -> dict[str, Any]:
    """Build every task of `cfg.tasks` into `cfg.output` (atomically) and return the build summary."""
    from textless.utils.atomic import atomic_directory

    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown or not cfg.tasks:
        raise ConfigError(f"tasks must be a non-empty list of {', '.join(TASKS)}, got {list(cfg.tasks)}")
    if Path(cfg.output).exists() and not cfg.overwrite:
        raise ConfigError(f"'{cfg.output}' already exists (pass overwrite=true to replace it)")
    if synth is None:
        needed = {Voice.parse(s).engine for t, specs in (("lexical", cfg.lexical_voices),
                                                        ("syntactic", cfg.syntactic_voices))
                  if t in cfg.tasks for s in specs}
        for engine in sorted(needed):
            ENGINES[engine].require()
        synth = EngineSynthesizer(cfg.stretch, cfg.edge_silence)
    start = time.perf_counter()
    summary: dict[str, Any] = {**BENCHMARK_BUILD.header(), "config": asdict(cfg),
                               "sample_rate": SAMPLE_RATE, "tasks": {}}
    with atomic_directory(cfg.output, overwrite=cfg.overwrite) as tmp:
        for task in cfg.tasks:
            summary["tasks"][task] = BUILDERS[task](cfg, tmp / task / cfg.split, synth)
        summary["seconds"] = round(time.perf_counter() - start, 1)
        (tmp / "build.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    size = sum(f.stat().st_size for f in Path(cfg.output).rglob("*") if f.is_file())
    logger.info(f"wrote {cfg.output} ({size / 1e6:.2f} MB)")
    return summary
