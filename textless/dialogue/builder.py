"""Synthetic two-party conversations with exact timing: a seeded schedule of turns, pauses, gaps, overlaps,
backchannels and interruptions, rendered with the offline TTS voices of `textless.eval.builder.tts`.

Schedule (`draw_turn`, `Placer`). A conversation is a sequence of turns, the speakers alternating. A turn
(`TurnPlan`) is one or more IPUs (one sentence each) separated by within-speaker pauses; it starts ``gap`` seconds
after the other speaker's previous turn ended (a negative gap is an overlap at the turn change). During a turn the
other speaker may produce a backchannel ("uh huh", "yeah", ...) or break in (`Interrupt`): in an interruption the
current speaker stops ``reaction`` seconds after the other's onset (its audio is cut there, the text of the cut IPU
keeps the same fraction of its words and ends with "-", and its later IPUs are dropped) and the other's next turn
starts at the onset; in an ignored interruption the other says a short phrase ("wait") and the current speaker keeps
going (false-alarm material). Every time is placed in samples (16 kHz), so the timeline is exact.

Timeline = audio. Each IPU is synthesized (`finish`: 16 kHz int16, peak -1 dBFS) and reduced to its speech extent
(`speech_extent`: first to last sample whose magnitude is above the RMS of the loudest 10 ms frame minus 45 dB,
`finish`'s trim threshold); only that extent is written, at the scheduled start. A segment of the `Timeline` is
therefore exactly the span from its first to its last non-silent sample; without noise every sample outside the
segments of a channel is exactly 0. A speaker's own speech never overlaps itself (at least ``min_pause`` apart,
longer than dGSLM's 200 ms IPU threshold, so every scheduled IPU stays an IPU of `turn_taking`).

Noise (`NoiseConfig`, `add_noise`): optionally per channel, white, pink, babble (other voices of the list reading
sentences, summed) or tones, at an SNR drawn from a range relative to that channel's speech power; all generated
here with numpy from the seed.

The schedule, the noise and the sentence reader are hand-written: no package builds conversations with turn-level
timing ground truth from a TTS (dialogue simulators such as those of the dGSLM paper re-use recorded corpora).
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from textless.data.corpus import SPLITS, bundled_corpus_dir
from textless.dialogue.timeline import Interruption, Segment, Timeline, read_timeline
from textless.errors import ConfigError, TextlessError
from textless.eval.builder.tts import SAMPLE_RATE, SILENCE_DB, SynthesisError, Voice

SPEAKERS = ("A", "B")       # timeline speaker names; channel 0 = A
BACKCHANNELS = ("uh huh", "um hum", "yeah", "right", "okay", "I see", "sure", "yep")  # flite spells "mm-hmm" out
INTERJECTIONS = ("wait", "but", "hold on", "sorry", "well", "no but", "actually")    # ignored-interruption phrases
NOISE_KINDS = ("white", "pink", "babble", "tone")
WORDNET_DIR = Path("/usr/share/wordnet")
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "dialogues"


@dataclass
class TimingConfig:
    """Timing distributions of the schedule (seconds). Defaults are approximate literature values, not fits:

    - between-speaker gaps: Heldner & Edlund (2010), "Pauses, gaps and overlaps in conversations", J. Phonetics 38:
      most speaker changes within a few hundred ms of the end of the previous turn, the gap distribution peaking
      around 200 ms, roughly 40 % of speaker changes overlapping (`overlap_prob`), pauses within a speaker longer
      than gaps; Levinson & Torreira (2015), Front. Psychol. 6:731: a modal gap of about 200 ms across languages.
      Here a gap is lognormal (median 0.3 s, sigma 0.6: mode 0.3 exp(-0.36) = 0.21 s, mean 0.36 s) and an overlap
      lognormal (median 0.25 s) capped at half of the shorter of the two IPUs involved.
    - within-speaker pauses: lognormal, median 0.5 s, at least `min_pause` (0.25 s: above dGSLM's 200 ms IPU rule).
    - backchannels: about 19 % of Switchboard utterances are backchannels (Jurafsky et al. 1997, SWBD-DAMSL;
      Stolcke et al. 2000); here one backchannel in 30 % of turns.
    - stopping after an interruption: most overlaps are resolved within one or two syllables (Schegloff 2000,
      "Overlapping talk", Language in Society 29), i.e. a reaction time of about 0.2-1 s (uniform here).
    - interruptions (10 % of turns, 40 % of them ignored) and IPUs per turn (mean 1.8) are our choices.
    """

    gap_median: float = 0.3           # s, lognormal median of a gap at a speaker change
    gap_sigma: float = 0.6            # lognormal shape of gaps
    max_gap: float = 2.0              # s, longest gap
    overlap_prob: float = 0.4         # chance that a speaker change overlaps (negative gap)
    overlap_median: float = 0.25      # s, lognormal median of an overlap
    overlap_sigma: float = 0.6        # lognormal shape of overlaps
    max_overlap_fraction: float = 0.5  # an overlap is at most this fraction of the shorter of the two IPUs
    pause_median: float = 0.5         # s, lognormal median of a pause between two IPUs of a turn
    pause_sigma: float = 0.4          # lognormal shape of pauses
    max_pause: float = 1.5            # s, longest pause
    min_pause: float = 0.25           # s, shortest silence between two stretches of one speaker's speech
    ipus_per_turn: float = 1.8        # mean IPUs per turn (geometric, at least 1)
    max_ipus_per_turn: int = 4        # most IPUs in a turn
    backchannel_prob: float = 0.3     # chance of a backchannel by the listener during a turn
    interruption_prob: float = 0.1    # chance that the listener breaks in during a turn
    ignored_fraction: float = 0.4     # of those break-ins, the fraction the speaker ignores (keeps talking)
    reaction_min: float = 0.2         # s, shortest time from the interrupter's onset to the speaker's stop
    reaction_max: float = 1.0         # s, longest such time
    lead_in: float = 0.5              # s of silence before the first turn
    tail: float = 0.5                 # s of silence after the last speech

    def check(self) -> None:
        for name in ("gap_median", "overlap_median", "pause_median", "ipus_per_turn"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"timing.{name} must be > 0, got {getattr(self, name)}")
        for name in ("overlap_prob", "backchannel_prob", "interruption_prob", "ignored_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"timing.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.reaction_min <= self.reaction_max:
            raise ConfigError(f"timing: need 0 < reaction_min <= reaction_max, got {self.reaction_min}, "
                              f"{self.reaction_max}")
        if self.min_pause < 0 or self.lead_in < 0 or self.tail < 0 or self.max_ipus_per_turn < 1:
            raise ConfigError("timing: min_pause, lead_in and tail must be >= 0 and max_ipus_per_turn >= 1")


@dataclass
class NoiseConfig:
    kinds: list[str] = field(default_factory=list)  # noise kinds to draw from (white, pink, babble, tone); [] = none
    prob: float = 1.0                 # chance that a channel gets noise (when kinds is not empty)
    snr_min: float = 10.0             # dB, speech power (over the channel's segments) / noise power, drawn uniformly
    snr_max: float = 30.0             # dB
    babble_talkers: int = 4           # voices summed in babble (the list's other voices first)

    def check(self) -> None:
        unknown = [k for k in self.kinds if k not in NOISE_KINDS]
        if unknown:
            raise ConfigError(f"noise.kinds: unknown kind(s) {unknown} (choose from {', '.join(NOISE_KINDS)})")
        if not self.snr_min <= self.snr_max or not 0 <= self.prob <= 1 or self.babble_talkers < 1:
            raise ConfigError("noise: need snr_min <= snr_max, 0 <= prob <= 1 and babble_talkers >= 1")


class Synthesizer(Protocol):
    """Text -> int16 samples at 16 kHz (`textless.eval.builder.job.EngineSynthesizer`; tests pass fakes)."""

    def text(self, voice: Voice, text: str) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------------------------ clips
def speech_extent(samples: np.ndarray, silence_db: float = SILENCE_DB,
                  sample_rate: int = SAMPLE_RATE) -> tuple[int, int, float]:
    """(first, end, threshold): the half-open sample range from the first to the last sample whose magnitude is
    above `threshold` = RMS of the loudest 10 ms frame x 10^(silence_db / 20) (`finish`'s trim rule, per sample)."""
    x = np.abs(samples.astype(np.float64))
    hop = sample_rate // 100
    usable = len(x) // hop * hop
    frames = x[:usable].reshape(-1, hop) if usable else x[None, :]
    threshold = math.sqrt(float((frames ** 2).mean(axis=1).max())) * 10 ** (silence_db / 20)
    loud = np.flatnonzero(x > threshold)
    if len(loud) == 0:
        raise SynthesisError("the clip is silent")
    return int(loud[0]), int(loud[-1]) + 1, threshold


@dataclass(frozen=True)
class Clip:
    """One IPU's audio: int16 samples, exactly its speech extent (first and last sample above `threshold`)."""

    text: str
    audio: np.ndarray
    threshold: float      # the magnitude under which a sample counts as silence (of the whole synthesized clip)

    @classmethod
    def from_samples(cls, text: str, samples: np.ndarray) -> Clip:
        first, end, threshold = speech_extent(samples)
        return cls(text, samples[first:end], threshold)

    @property
    def length(self) -> int:
        """Samples."""
        return len(self.audio)

    def cut(self, samples: int) -> Clip:
        """The clip stopped after `samples` samples (no fade: a fade would move the speech end off the cut), its end
        trimmed back to the last sample above the threshold; the text keeps the same fraction of its words + "-"."""
        loud = np.flatnonzero(np.abs(self.audio[:samples].astype(np.float64)) > self.threshold)
        end = int(loud[-1]) + 1  # the clip's first sample is above the threshold
        words = self.text.split()
        kept = " ".join(words[:round(len(words) * end / self.length)])
        return Clip(kept + "-", self.audio[:end], self.threshold)


# --------------------------------------------------------------------------------------------------------- schedule
@dataclass
class Interrupt:
    """The listener breaks in during IPU `ipu` of a turn, `offset` seconds after that IPU's speech start."""

    ipu: int                 # index of the IPU (in the turn) during which the listener starts
    offset: float            # s from that IPU's start to the listener's onset
    reaction: float = 0.5    # s from the onset until the speaker stops (unused when ignored)
    ignored: bool = False    # the speaker keeps going; the listener says `text` and stops
    text: str = ""           # ignored: the listener's phrase ("wait"); otherwise the listener's next turn


@dataclass
class TurnPlan:
    """One turn, every random choice made (seconds)."""

    speaker: int                                     # 0 or 1 (the channel)
    texts: list[str]                                 # one IPU per sentence
    gap: float = 0.0                                 # s from the other's previous turn end to this turn's start
                                                     # (negative: overlap); ignored for the first turn (lead_in) and
                                                     # after an interruption (the turn starts at the onset)
    pauses: list[float] = field(default_factory=list)  # s of silence between consecutive IPUs
    backchannel: str | None = None                   # the listener's backchannel during this turn
    backchannel_offset: float = 0.0                  # s from this turn's start to the backchannel's start
    interrupt: Interrupt | None = None               # the listener breaks in during this turn


@dataclass
class Placed:
    speaker: int
    start: int       # samples
    clip: Clip
    kind: str

    @property
    def end(self) -> int:
        return self.start + self.clip.length


class Placer:
    """Places turns one after the other, in samples. Clamps: a speaker's speech starts at least `min_pause` after
    its own previous speech ends (so a turn may start later than its gap says)."""

    def __init__(self, timing: TimingConfig, sample_rate: int = SAMPLE_RATE):
        self.timing, self.rate = timing, sample_rate
        self.placed: list[Placed] = []
        self.interruptions: list[Interruption] = []
        self.free: list[int | None] = [None, None]   # end sample of each speaker's latest speech
        self.last_turn: Placed | None = None         # the last IPU of the previous turn
        self.pending_onset: int | None = None        # the next turn starts here (it interrupted the previous one)

    def samples(self, seconds: float) -> int:
        return round(seconds * self.rate)

    def earliest(self, speaker: int) -> int:
        """The first sample at which `speaker` may start speaking again."""
        own = self.free[speaker]
        return 0 if own is None else own + self.samples(self.timing.min_pause)

    @property
    def end(self) -> int:
        """End sample of the latest speech."""
        return max((p.end for p in self.placed), default=0)

    def ipu_starts(self, plan: TurnPlan, lengths: Sequence[int]) -> list[int]:
        """Start samples of the turn's IPUs (before any cut)."""
        if self.last_turn is None:
            start = self.samples(self.timing.lead_in)
        elif self.pending_onset is not None:
            start = self.pending_onset
        else:
            start = self.last_turn.end + self.samples(plan.gap)
        starts = [max(start, self.earliest(plan.speaker), 0)]
        for length, pause in zip(lengths, plan.pauses):
            starts.append(starts[-1] + length + self.samples(pause))
        return starts

    def _place(self, speaker: int, start: int, clip: Clip, kind: str) -> Placed:
        own = self.free[speaker]
        if own is not None and start < own:
            raise ValueError(f"speaker {SPEAKERS[speaker]}: speech at sample {start} overlaps its own speech (until "
                             f"{own})")
        placed = Placed(speaker, start, clip, kind)
        self.placed.append(placed)
        self.free[speaker] = placed.end
        return placed

    def add_turn(self, plan: TurnPlan, clip: Callable[[int, str], Clip]) -> None:
        """Place `plan`; `clip(speaker, text)` gives the audio of a text in a speaker's voice."""
        if len(plan.pauses) != len(plan.texts) - 1 or not plan.texts:
            raise ValueError(f"a turn of {len(plan.texts)} IPUs needs {len(plan.texts) - 1} pauses, got "
                             f"{len(plan.pauses)}")
        speaker, listener = plan.speaker, 1 - plan.speaker
        clips = [clip(speaker, t) for t in plan.texts]
        starts = self.ipu_starts(plan, [c.length for c in clips])
        first_kind = "interruption" if self.pending_onset is not None else "turn"
        if plan.backchannel:
            start = max(starts[0] + self.samples(plan.backchannel_offset), self.earliest(listener))
            self._place(listener, start, clip(listener, plan.backchannel), "backchannel")
        onset, cut_at = None, None
        if plan.interrupt is not None:
            cut = plan.interrupt
            if not 0 <= cut.ipu < len(clips):
                raise ValueError(f"interrupt.ipu {cut.ipu} is not an IPU of a {len(clips)}-IPU turn")
            onset = max(starts[cut.ipu] + self.samples(cut.offset), self.earliest(listener))
            if cut.ignored:
                self._place(listener, onset, clip(listener, cut.text), "ignored_interruption")
                self.interruptions.append(Interruption(SPEAKERS[listener], SPEAKERS[speaker], onset / self.rate,
                                                       None, True))
                onset = None
            else:
                cut_at = onset + self.samples(cut.reaction) - starts[cut.ipu]
                if not 0 < cut_at < clips[cut.ipu].length:
                    raise ValueError(f"the interruption's stop (sample {cut_at} of the IPU) is not inside the "
                                     f"interrupted IPU ({clips[cut.ipu].length} samples)")
                clips = clips[:cut.ipu] + [clips[cut.ipu].cut(cut_at)]
        placed = [self._place(speaker, s, c, first_kind if k == 0 else "turn")
                  for k, (s, c) in enumerate(zip(starts, clips))]
        if onset is not None:
            self.interruptions.append(Interruption(SPEAKERS[listener], SPEAKERS[speaker], onset / self.rate,
                                                   placed[-1].end / self.rate, False))
        self.pending_onset = onset
        self.last_turn = placed[-1]

    def timeline(self, conversation_id: str) -> Timeline:
        duration = (self.end + self.samples(self.timing.tail)) / self.rate
        segments = [Segment(SPEAKERS[p.speaker], p.start / self.rate, p.end / self.rate, p.clip.text, p.kind)
                    for p in sorted(self.placed, key=lambda p: (p.start, p.speaker))]
        return Timeline(conversation_id, duration, SPEAKERS, segments, list(self.interruptions))

    def channels(self) -> np.ndarray:
        """(2, samples) int16: each clip at its start, zeros elsewhere."""
        out = np.zeros((2, self.end + self.samples(self.timing.tail)), dtype=np.int16)
        for p in self.placed:
            out[p.speaker, p.start:p.end] = p.clip.audio
        return out


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(rng.lognormal(math.log(median), sigma))


def draw_turn(placer: Placer, speaker: int, rng: np.random.Generator, timing: TimingConfig,
              sentences: Sequence[str], clip: Callable[[int, str], Clip],
              backchannels: Sequence[str] = BACKCHANNELS, interjections: Sequence[str] = INTERJECTIONS) -> TurnPlan:
    """A turn of `speaker` drawn from `timing`, given what is placed so far (durations come from the clips)."""
    rate, listener = placer.rate, 1 - speaker
    count = min(int(rng.geometric(1 / max(timing.ipus_per_turn, 1.0))), timing.max_ipus_per_turn)
    texts = [sentences[int(rng.integers(len(sentences)))] for _ in range(count)]
    clips = [clip(speaker, t) for t in texts]
    gap = 0.0
    if placer.last_turn is not None:
        if rng.random() < timing.overlap_prob:
            cap = timing.max_overlap_fraction * min(placer.last_turn.clip.length, clips[0].length) / rate
            gap = -min(_lognormal(rng, timing.overlap_median, timing.overlap_sigma), cap)
        else:
            gap = min(_lognormal(rng, timing.gap_median, timing.gap_sigma), timing.max_gap)
    pauses = [min(max(_lognormal(rng, timing.pause_median, timing.pause_sigma), timing.min_pause), timing.max_pause)
              for _ in range(count - 1)]
    plan = TurnPlan(speaker, texts, gap, pauses)
    starts = placer.ipu_starts(plan, [c.length for c in clips])
    turn_end = starts[-1] + clips[-1].length
    earliest = placer.earliest(listener)
    limit = turn_end      # the listener's backchannel ends before this
    if rng.random() < timing.interruption_prob:
        ignored = bool(rng.random() < timing.ignored_fraction)
        reaction = float(rng.uniform(timing.reaction_min, timing.reaction_max))
        text = interjections[int(rng.integers(len(interjections)))] if ignored else ""
        need = clip(listener, text).length + placer.samples(0.1) if ignored else placer.samples(reaction + 0.2)
        windows = [(j, max(s + placer.samples(0.3), earliest), s + c.length - need)
                   for j, (s, c) in enumerate(zip(starts, clips))]
        windows = [w for w in windows if w[1] < w[2]]
        if windows:
            j, low, high = windows[int(rng.integers(len(windows)))]
            onset = int(low + rng.random() * (high - low))
            plan.interrupt = Interrupt(j, (onset - starts[j]) / rate, reaction, ignored, text)
            limit = onset
    if rng.random() < timing.backchannel_prob:
        text = backchannels[int(rng.integers(len(backchannels)))]
        low = max(starts[0] + placer.samples(0.5), earliest)
        high = limit - placer.samples(timing.min_pause) - clip(listener, text).length
        if low < high:
            plan.backchannel = text
            plan.backchannel_offset = (int(low + rng.random() * (high - low)) - starts[0]) / rate
    return plan


@dataclass
class Conversation:
    timeline: Timeline
    channels: np.ndarray                     # (2, samples) int16, channel 0 = speaker A
    synthesis_seconds: float = 0.0           # wall seconds spent in TTS


def build_conversation(conversation_id: str, voices: Sequence[Voice], sentences: Sequence[str], synth: Synthesizer,
                       rng: np.random.Generator, seconds: float, timing: TimingConfig | None = None,
                       backchannels: Sequence[str] = BACKCHANNELS,
                       interjections: Sequence[str] = INTERJECTIONS) -> Conversation:
    """A conversation of about `seconds` seconds (turns are added until the speech reaches `seconds`; an
    interrupted last turn gets the interrupter's turn) between `voices[0]` (A) and `voices[1]` (B)."""
    timing = timing or TimingConfig()
    if not sentences:
        raise ConfigError("no sentences to read")
    cache: dict[tuple[int, str], Clip] = {}
    spent = [0.0]

    def clip(speaker: int, text: str) -> Clip:
        if (speaker, text) not in cache:
            start = time.perf_counter()
            cache[speaker, text] = Clip.from_samples(text, synth.text(voices[speaker], text))
            spent[0] += time.perf_counter() - start
        return cache[speaker, text]

    placer = Placer(timing)
    speaker = int(rng.integers(2))
    while placer.end < placer.samples(seconds) or placer.pending_onset is not None:
        placer.add_turn(draw_turn(placer, speaker, rng, timing, sentences, clip, backchannels, interjections), clip)
        speaker = 1 - speaker
    return Conversation(placer.timeline(conversation_id), placer.channels(), spent[0])


# ------------------------------------------------------------------------------------------------------------ noise
def draw_noise(cfg: NoiseConfig, rng: np.random.Generator) -> list[dict[str, Any] | None]:
    """Per channel: None (clean) or ``{"kind", "snr_db"}``."""
    out: list[dict[str, Any] | None] = []
    for _ in SPEAKERS:
        if not cfg.kinds or rng.random() >= cfg.prob:
            out.append(None)
            continue
        kind = cfg.kinds[int(rng.integers(len(cfg.kinds)))]
        out.append({"kind": kind, "snr_db": round(float(rng.uniform(cfg.snr_min, cfg.snr_max)), 2)})
    return out


def noise_signal(kind: str, length: int, rng: np.random.Generator,
                 babble: Callable[[], list[np.ndarray]] | None = None, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """`length` samples of unit-RMS noise: white (Gaussian), pink (1/f power, shaped in the frequency domain),
    tone (a 50-1000 Hz fundamental and 3 harmonics, random phases: hum / whine) or babble (the clips of
    `babble()`, each looped from a random point, summed)."""
    if kind == "white":
        x = rng.standard_normal(length)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(length))
        f = np.arange(len(spectrum), dtype=np.float64)
        spectrum[1:] /= np.sqrt(f[1:])
        spectrum[0] = 0
        x = np.fft.irfft(spectrum, n=length)
    elif kind == "tone":
        f0 = rng.uniform(50, 1000)
        t = np.arange(length) / sample_rate
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 5))
    elif kind == "babble":
        if babble is None:
            raise ConfigError("babble noise needs voices to synthesize it")
        x = np.zeros(length)
        for talker in babble():
            talker = talker.astype(np.float64)
            x += np.resize(np.roll(talker, -int(rng.integers(len(talker)))), length) / (talker.std() + 1e-12)
    else:
        raise ConfigError(f"unknown noise kind {kind!r} (choose from {', '.join(NOISE_KINDS)})")
    x = np.asarray(x, dtype=np.float64)
    return x / (np.sqrt((x ** 2).mean()) + 1e-12)


def add_noise(channel: np.ndarray, segments: Sequence[tuple[float, float]], noise: np.ndarray, snr_db: float,
              sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """int16 channel + unit-RMS `noise` scaled so that speech power (mean square over `segments`, seconds) / noise
    power = `snr_db`; rounded and clipped to int16."""
    x = channel.astype(np.float64)
    inside = np.zeros(len(x), dtype=bool)
    for start, end in segments:
        inside[round(start * sample_rate):round(end * sample_rate)] = True
    power = float((x[inside] ** 2).mean()) if inside.any() else 1.0
    mixed = x + noise[:len(x)] * math.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(np.round(mixed), -32768, 32767).astype(np.int16)


# -------------------------------------------------------------------------------------------------------- sentences
_WORD = re.compile(r"^[A-Za-z]+(?:['-][A-Za-z]+)*[,.?!]?$")


def clean_sentence(raw: str, min_words: int, max_words: int) -> str | None:
    """A readable sentence (capitalised, plain words, one final punctuation mark) or None."""
    tokens = raw.split()
    if not min_words <= len(tokens) <= max_words or not tokens[0][0].isupper():
        return None
    if not all(_WORD.match(t) for t in tokens) or any(t[-1] in ".?!" for t in tokens[:-1]):
        return None
    if any(any(c.isupper() for c in t[1:]) for t in tokens):
        return None  # acronyms
    text = " ".join(tokens).rstrip(",")
    return text if text[-1] in ".?!" else text + "."


def load_sentences(source: str, min_words: int = 3, max_words: int = 12) -> list[str]:
    """Sentences, deduplicated and sorted: ``wordnet`` (WordNet 3.0 example sentences, Debian ``wordnet-base``;
    read here, as no package in the environment parses the data files), ``corpus:<split>`` / ``corpus:all`` (the
    bundled corpus' transcripts), ``file:<path>`` or a path (one sentence per line, used as written)."""
    kind, _, argument = source.partition(":")
    found: list[str] = []
    if source == "wordnet":
        if not (WORDNET_DIR / "data.noun").is_file():
            raise TextlessError(f"WordNet is not installed ({WORDNET_DIR}/data.noun missing): apt-get install "
                                f"wordnet-base, or give text=corpus:all / text=file:<path>")
        for pos in ("noun", "verb", "adj", "adv"):
            for line in (WORDNET_DIR / f"data.{pos}").read_text(encoding="latin-1").splitlines():
                if not line.startswith("  ") and "|" in line:
                    found += [s for raw in re.findall(r'"([^"]*)"', line.split("|", 1)[1])
                              if (s := clean_sentence(raw.strip(), min_words, max_words))]
    elif kind == "corpus":
        splits = SPLITS if argument == "all" else (argument,)
        for split in splits:
            path = bundled_corpus_dir() / f"{split}.tsv"
            if not path.is_file():
                raise ConfigError(f"text={source!r}: no bundled-corpus split '{split}' (splits: {', '.join(SPLITS)}, "
                                  f"all)")
            with path.open(encoding="utf-8") as f:
                found += [r["transcript"] for r in csv.DictReader(f, delimiter="\t")
                          if min_words <= len(r["transcript"].split()) <= max_words]
    else:
        path = Path(argument if kind == "file" else source)
        if not path.is_file():
            raise ConfigError(f"text={source!r}: no such file (give wordnet, corpus:<split>|all or file:<path>)")
        found = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    sentences = sorted({s for s in found if '"' not in s and "\\" not in s})
    if not sentences:
        raise ConfigError(f"text={source!r} gives no sentences of {min_words}-{max_words} words")
    return sentences


# ------------------------------------------------------------------------------------------------------ shipped set
def default_dialogues() -> Path:
    """The directory of the dialogue set that ships with textless (``textless/assets/dialogues``)."""
    if not (ASSETS_DIR / "manifest.jsonl").is_file():
        raise TextlessError(f"the bundled dialogue set is missing ({ASSETS_DIR}); regenerate it with the command in "
                            f"textless/recipes/build-dialogues.yaml")
    return ASSETS_DIR


@dataclass(frozen=True)
class DialogueEntry:
    """One conversation of a built set: its manifest line (paths relative to `root`)."""

    root: Path
    record: dict[str, Any]

    @property
    def id(self) -> str:
        return self.record["id"]

    def audio(self) -> np.ndarray:
        """(2, samples) int16 at `record["sample_rate"]` Hz, channel 0 = speaker A (wav or flac, `record["format"]`)."""
        import soundfile as sf

        data, rate = sf.read(self.root / self.record["stereo"], dtype="int16", always_2d=True)
        if rate != self.record["sample_rate"] or data.shape[1] != 2:
            raise TextlessError(f"{self.record['stereo']}: expected 2 channels at {self.record['sample_rate']} Hz, "
                                f"got {data.shape[1]} at {rate}")
        return np.ascontiguousarray(data.T)

    def channel(self, speaker: str | int) -> np.ndarray:
        """One speaker's int16 channel (from the mono file when written, else cut from the stereo file)."""
        import soundfile as sf

        name = SPEAKERS[speaker] if isinstance(speaker, int) else speaker
        mono = self.record.get("mono")
        if mono:
            return sf.read(self.root / mono[name], dtype="int16")[0]
        return self.audio()[SPEAKERS.index(name)]

    def timeline(self) -> Timeline:
        return read_timeline(self.root / self.record["timeline"])


def load_dialogues(directory: str | Path | None = None) -> list[DialogueEntry]:
    """The conversations of a set built by `textless build-dialogues` (default: the shipped set)."""
    root = Path(directory) if directory is not None else default_dialogues()
    path = root / "manifest.jsonl"
    if not path.is_file():
        raise TextlessError(f"{root}: not a dialogue set (no manifest.jsonl)")
    return [DialogueEntry(root, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
