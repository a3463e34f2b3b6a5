"""Generate (or enlarge) textless's bundled English speech corpus from offline TTS engines.

The corpus is synthetic: WordNet example sentences read by distinct TTS voices (flite, festival, RHVoice, SVOX Pico; with
``--voices all`` also MBROLA driven by espeak-ng: non-commercial), saved as 16 kHz mono 16-bit FLAC with transcripts, speaker ids, phone alignments
(normalised to 39 stress-less ARPAbet phones + ``SIL``) for the engines that report timings, and word alignments for
festival. Splits are by utterance *and* by speaker: ``train``, ``valid`` (about 8 % held-out utterances of the training
speakers) and ``valid_unseen`` (every utterance of two held-out speakers). Every sentence is used once.

Output layout (read by ``textless.data.corpus``)::

    <out>/README.md  speakers.json  alignments.jsonl  train.tsv  valid.tsv  valid_unseen.tsv
    <out>/audio/<speaker>/<speaker>_<0000>.flac

The result is deterministic for a given ``--seed``: sentences are shuffled once and dealt round-robin to the voices,
every voice reads its own sentences in order until it has ``--minutes`` / (number of voices), and per-utterance
speaking-rate jitter is seeded by the sentence's position. A larger ``--minutes`` therefore keeps every utterance of a
smaller run (same ids, texts and audio) and appends new ones; only the ``valid`` selection is redrawn.

What must be installed (Debian 12 "bookworm")
---------------------------------------------
Enable the ``contrib`` and ``non-free`` components: in ``/etc/apt/sources.list.d/debian.sources`` set
``Components: main contrib non-free`` (for both the main and the security entries), then::

    apt-get update
    apt-get install flite festival festvox-kdlpc16k festvox-don espeak-ng mbrola mbrola-us1 mbrola-us2 \\
        mbrola-en1 rhvoice rhvoice-english libttspico-utils wordnet-base

(festival pulls in festlex-cmu, festlex-oald and festlex-poslex; flite ships the kal16/awb/rms/slt voices.)
Python >= 3.11 with ``numpy``, ``soundfile``, ``torch`` and ``torchaudio`` (the project's ``.venv`` has them).

Usage (from the repository root; well under a minute on 2 cores)::

    .venv/bin/python experiments/data/make_corpus.py                  # the bundled corpus (15 min, seed 0)
    .venv/bin/python experiments/data/make_corpus.py --minutes 60 --out /tmp/corpus60
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "textless" / "assets" / "corpus"

DEFAULT_MINUTES = 15.0
DEFAULT_EDGE_SILENCE = 0.2  # seconds of silence kept at most at each edge of an utterance
SAMPLE_RATE = 16_000
PEAK_DBFS = -1.0  # peaks stay below this
SPEECH_LEVEL_DBFS = -26.0  # active speech level (RMS of the speech frames), as a typical close-talk recording
PAD_SECONDS = (0.1, 0.4)  # silence added before and after each utterance (uniform; seeded per utterance)
NOISE_FLOOR_DBFS = (-80.0, -66.0)  # white noise under the whole utterance, its level drawn per utterance
SIZE_LIMIT_BYTES = 20_000_000  # the whole bundled corpus directory must stay under 20 MB
VALID_FRACTION = 0.08
MIN_WORDS, MAX_WORDS = 6, 18
MIN_SECONDS, MAX_SECONDS = 2.0, 8.0  # utterances outside this range (after edge trimming) are skipped
RATE_JITTER = 0.08  # duration stretch drawn uniformly from [1 - RATE_JITTER, 1 + RATE_JITTER]
SILENCE_DB = -45.0  # frames this far below the loudest 10 ms frame count as silence when trimming the edges
MAX_CLIPPED_FRACTION = 1e-3  # raw engine output with more full-scale samples than this is refused
SECONDS_PER_WORD = (0.15, 1.0)  # sanity range: outside it the engine probably misread or truncated the text
MAX_TRAILING_AUDIO = 0.15  # seconds the engine's audio may run past its last phone (labelled SIL)
MBROLA_LEADING_SILENCE_MS = 150
WORDNET_DIR = Path("/usr/share/wordnet")

Segment = tuple[float, float, str]

# ----------------------------------------------------------------------------------------------------------------------
# Phone sets. Everything is normalised to 39 stress-less ARPAbet phones plus SIL (textless.data.alignments.PHONES).
# ----------------------------------------------------------------------------------------------------------------------

SIL = "SIL"
ARPABET = frozenset((
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH", "K",
    "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
))
PHONES = ARPABET | {SIL}

_ARPA_LOWER = {p.lower(): p for p in ARPABET}

# CMU "radio" phones of flite (cmulex) and festival's ked_diphone (festlex-cmu).
RADIO_TO_ARPA: dict[str, str] = {
    **_ARPA_LOWER,
    "ax": "AH", "axr": "ER", "dx": "T", "el": "L", "em": "M", "en": "N", "nx": "N", "hv": "HH",
    "pau": SIL, "h#": SIL, "brth": SIL,
}

# SAMPA consonants shared by espeak-ng's MBROLA voices.
_SAMPA_CONSONANTS: dict[str, str] = {
    "_": SIL,
    "p": "P", "p_h": "P", "t": "T", "t_h": "T", "k": "K", "k_h": "K", "b": "B", "d": "D", "g": "G", "4": "T",
    "f": "F", "v": "V", "T": "TH", "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH",
    "tS": "CH", "dZ": "JH", "m": "M", "n": "N", "n-": "N", "N": "NG", "l": "L", "5": "L", "r": "R", "w": "W", "j": "Y",
}

# espeak-ng's American-English MBROLA voices (mb-us1, mb-us2).
MBROLA_US_TO_ARPA: dict[str, str] = {
    **_SAMPA_CONSONANTS,
    "i": "IY", "I": "IH", "EI": "EY", "E": "EH", "{": "AE", "A": "AA", "A~": "AA", "O": "AO", "@U": "OW", "U": "UH",
    "u": "UW", "V": "AH", "@": "AH", "r=": "ER", "AI": "AY", "aU": "AW", "OI": "OY",
}

# espeak-ng's British-English MBROLA voice (mb-en1).
MBROLA_EN_TO_ARPA: dict[str, str] = {
    **_SAMPA_CONSONANTS,
    "i:": "IY", "I": "IH", "eI": "EY", "e": "EH", "{": "AE", "A:": "AA", "A~": "AA", "Q": "AA", "O:": "AO",
    "@U": "OW", "U": "UH", "u:": "UW", "V": "AH", "@": "AH", "3:": "ER", "aI": "AY", "aU": "AW", "OI": "OY",
    "I@": "IH", "e@": "EH", "U@": "UH",
}

for _table in (RADIO_TO_ARPA, MBROLA_US_TO_ARPA, MBROLA_EN_TO_ARPA):
    assert set(_table.values()) <= PHONES, set(_table.values()) - PHONES


# ----------------------------------------------------------------------------------------------------------------------
# Voices and engines
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Voice:
    speaker: str  # short lowercase speaker id (also the directory and utterance-id prefix)
    engine: str  # key of ENGINES
    voice: str  # the engine's name for the voice
    sex: str  # "M" or "F"
    phone_map: Mapping[str, str] | None = None  # engine phone -> ARPAbet; None: the engine gives no timings
    held_out: bool = False  # True: every utterance goes to valid_unseen

    @property
    def aligned(self) -> bool:
        return self.phone_map is not None

    @property
    def split(self) -> str:
        return "valid_unseen" if self.held_out else "train"


# One entry per distinct person. Avoided duplicates: slt is also festival's cmu_us_slt_arctic_hts and an RHVoice voice,
# kal is also festival's kal_diphone; mbrola us3 is left out because its database lacks diphones espeak-ng asks for.
# don gets no alignments: festival's old diphone module drifts up to ~0.15 s away from the segment times it reports.
# The default ("free") set: voices whose licences allow any use, commercial included (see LICENCES); held out: slt and
# rms (both aligned, for ABX on valid_unseen). "all" adds the non-commercial ones (MBROLA's us1 / us2 / en1, and don,
# whose festival voice reads through the non-commercial OALD lexicon), holding out slt and us2 instead.
_FREE_VOICES: tuple[Voice, ...] = (
    Voice("kal", "flite", "kal16", "M", RADIO_TO_ARPA),
    Voice("awb", "flite", "awb", "M", RADIO_TO_ARPA),
    Voice("rms", "flite", "rms", "M", RADIO_TO_ARPA, held_out=True),
    Voice("slt", "flite", "slt", "F", RADIO_TO_ARPA, held_out=True),
    Voice("ked", "festival", "ked_diphone", "M", RADIO_TO_ARPA),
    Voice("alan", "rhvoice", "alan", "M"),
    Voice("bdl", "rhvoice", "bdl", "M"),
    Voice("clb", "rhvoice", "clb", "F"),
    Voice("picous", "pico", "en-US", "F"),
)
_NON_COMMERCIAL_VOICES: tuple[Voice, ...] = (
    Voice("don", "festival", "don_diphone", "M"),
    Voice("us1", "mbrola", "us1", "F", MBROLA_US_TO_ARPA),
    Voice("us2", "mbrola", "us2", "M", MBROLA_US_TO_ARPA, held_out=True),
    Voice("en1", "mbrola", "en1", "M", MBROLA_EN_TO_ARPA),
)
VOICE_SETS: dict[str, tuple[Voice, ...]] = {
    "free": _FREE_VOICES,
    "all": tuple(replace(v, held_out=False) if v.speaker == "rms" else v for v in _FREE_VOICES)
    + _NON_COMMERCIAL_VOICES,
}
VOICE_BY_SPEAKER = {v.speaker: v for v in _FREE_VOICES + _NON_COMMERCIAL_VOICES}


@dataclass
class RawSynthesis:
    """What an engine produced: a wav file plus timings in the engine's own time axis and phone symbols."""

    wav: Path
    phones: list[Segment] | None = None
    words: list[Segment] | None = None


def _run(cmd: Sequence[str], cwd: Path, stdin: str | None = None) -> str:
    proc = subprocess.run(list(cmd), check=False, cwd=cwd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _segments_from_ends(ends: Sequence[tuple[float, str]]) -> list[Segment]:
    """Contiguous segments from (end time, label) pairs; the first starts at 0."""
    segments, start = [], 0.0
    for end, label in ends:
        segments.append((start, end, label))
        start = end
    return segments


def synth_flite(voice: Voice, text: str, stretch: float, work: Path) -> RawSynthesis:
    wav = work / "out.wav"
    out = _run(["flite", "-voice", voice.voice, "--setf", f"duration_stretch={stretch:.4f}", "-psdur",
                "-t", text, "-o", str(wav)], work)
    ends = [(float(end), phone) for phone, end in (tok.rsplit(":", 1) for tok in out.split())]
    return RawSynthesis(wav, phones=_segments_from_ends(ends))


_FESTIVAL_SCRIPT = """\
(voice_{voice})
(set! after_synth_hooks nil)
(Parameter.set 'Duration_Stretch {stretch:.4f})
(set! utt (SynthText "{text}"))
(utt.save.wave utt "out.wav" 'riff)
(utt.save.segs utt "segs.txt")
(set! fd (fopen "words.txt" "w"))
(mapcar
  (lambda (w)
    (format fd "%s\\t%s\\t%s\\n"
      (item.feat w "R:SylStructure.daughter1.daughter1.R:Segment.segment_start")
      (item.feat w "R:SylStructure.daughtern.daughtern.R:Segment.end")
      (item.name w)))
  (utt.relation.items utt 'Word))
(fclose fd)
"""


def synth_festival(voice: Voice, text: str, stretch: float, work: Path) -> RawSynthesis:
    # No after-synthesis hooks: don's rescales by 1.6 and clips; the level is normalised later anyway.
    assert '"' not in text and "\\" not in text, text
    (work / "synth.scm").write_text(_FESTIVAL_SCRIPT.format(voice=voice.voice, stretch=stretch, text=text))
    _run(["festival", "-b", "synth.scm"], work)
    seg_lines = (work / "segs.txt").read_text().splitlines()
    seg_lines = seg_lines[seg_lines.index("#") + 1 :]  # after the header (don's pause phone is also called "#")
    ends = [(float(end), phone) for end, _, phone in (line.split() for line in seg_lines if line.strip())]
    words = []
    for line in (work / "words.txt").read_text().splitlines():
        start, end, word = line.split("\t")
        words.append((float(start), float(end), word.lower()))
    return RawSynthesis(work / "out.wav", phones=_segments_from_ends(ends), words=words)


def _read_pho(pho: str) -> list[tuple[float, str]]:
    """(end time, phone) pairs of an MBROLA .pho file (durations in ms)."""
    ends, t = [], 0.0
    for line in pho.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(";"):
            continue
        t += float(fields[1]) / 1000.0
        ends.append((t, fields[0]))
    return ends


def synth_mbrola(voice: Voice, text: str, stretch: float, work: Path) -> RawSynthesis:
    # espeak-ng writes the .pho (phones, durations, pitch); mbrola renders exactly those durations.
    speed = round(175 / stretch)  # espeak-ng's default speed is 175 words per minute
    pho = _run(["espeak-ng", "-v", f"mb-{voice.voice}", "-s", str(speed), "-q", "--pho", text], work)
    pho = f"_\t{MBROLA_LEADING_SILENCE_MS}\n{pho}"  # espeak-ng starts right on the first phone; the others do not
    (work / "in.pho").write_text(pho)
    proc = subprocess.run(["mbrola", f"/usr/share/mbrola/{voice.voice}/{voice.voice}", "in.pho", "out.wav"],
                          check=False, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0 or "unknown" in proc.stderr.lower():  # a replaced diphone breaks audio/timing agreement
        raise RuntimeError(f"mbrola {voice.voice} failed on {text!r}: {proc.stderr.strip()[-500:]}")
    return RawSynthesis(work / "out.wav", phones=_segments_from_ends(_read_pho(pho)))


def synth_rhvoice(voice: Voice, text: str, stretch: float, work: Path) -> RawSynthesis:
    rate = round(100 / stretch)  # percent of the normal rate
    _run(["RHVoice-test", "-p", voice.voice, "-r", str(rate), "-o", "out.wav"], work, stdin=text + "\n")
    return RawSynthesis(work / "out.wav")


def synth_pico(voice: Voice, text: str, stretch: float, work: Path) -> RawSynthesis:
    level = round(100 / stretch)
    _run(["pico2wave", "-l", voice.voice, "-w", "out.wav", f"<speed level='{level}'>{text}</speed>"], work)
    return RawSynthesis(work / "out.wav")


Engine = Callable[[Voice, str, float, Path], RawSynthesis]
ENGINES: dict[str, Engine] = {
    "flite": synth_flite,
    "festival": synth_festival,
    "mbrola": synth_mbrola,
    "rhvoice": synth_rhvoice,
    "pico": synth_pico,
}

_COMMON_NOTES = ("Each row is a different person: slt (also festival `cmu_us_slt_arctic_hts` and RHVoice `slt`) and "
                 "kal (also festival\n`kal_diphone`) are used once. flite and festival (ked) report the segment "
                 "times they synthesised (pauses agree\nwith the audio to within a few tens of ms). RHVoice and Pico "
                 "give no timings. Word alignments come from festival (ked) only.")
VOICE_NOTES = {
    "free": _COMMON_NOTES,
    "all": _COMMON_NOTES + ("\n\nMBROLA us3 was left out (its database lacks diphones espeak-ng produces). The MBROLA "
                            "voices read the phones\nand durations espeak-ng computes (`espeak-ng -v mb-<voice> --pho` "
                            "piped to `mbrola`, with 150 ms of leading silence\nadded), so their alignments are exact. "
                            "don has no alignments because festival's old diphone module drifts up\nto ~0.15 s from "
                            "the times it reports; its source audio is 10 kHz (upsampled)."),
}
LICENCE_SUMMARY = {
    "free": "Every voice here may be used for any purpose, commercial included (keep the notices above). The "
            "non-commercial voices (MBROLA's us1, us2, en1 and festival's don) are left out; `--voices all` adds them.",
    "all": "Because of the MBROLA voices (us1, us2, en1) and the OALD lexicon behind don, use this corpus as a whole "
           "for research and other non-commercial purposes only.",
}

# Licence notes for README.md (from /usr/share/doc/<package>/copyright).
LICENCES: dict[str, str] = {
    "flite": "flite 2.2 (Debian `flite`/`libflite1`) and its voices kal16, awb, rms, slt: CMU/Flite licence, a "
             "BSD-style free licence (use, modify and redistribute, also commercially, keeping the copyright notice).",
    "festival": "festival 2.5 with `festvox-kdlpc16k` (ked; `--voices all` adds `festvox-don`, don): Festival/CSTR "
                "(University of Edinburgh) BSD-style free licence. ked uses the CMU lexicon (free); don uses the "
                "OALD lexicon (`festlex-oald`), which is **free for non-commercial use only**.",
    "mbrola": "MBROLA (`mbrola`, AGPL-3+) rendering phones from espeak-ng (GPL-3+). The diphone databases "
              "`mbrola-us1`, `mbrola-us2` (Babel Technologies / FPMs) may be used only with the MBROLA program and "
              "may not be sold or incorporated into any product that is sold without the owner's permission; "
              "`mbrola-en1` (Edinburgh's Roger database) is redistributable with its notice and likewise tied to "
              "MBROLA's terms. Treat the MBROLA-voiced audio (us1, us2, en1) as **non-commercial**.",
    "rhvoice": "RHVoice 1.8 (`rhvoice`, `rhvoice-english`, Debian non-free): LGPL-2.1+ (the English voices alan, "
               "bdl, clb are built from the CMU ARCTIC recordings, free licence).",
    "pico": "SVOX Pico (`libttspico-utils`, Debian non-free): Apache-2.0 code; the language data (`libttspico-data`) "
            "is distributed as Apache-2.0 but without source, hence non-free; redistributable.",
}


# ----------------------------------------------------------------------------------------------------------------------
# Sentences
# ----------------------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"^[A-Za-z]+(?:['-][A-Za-z]+)*[,.?!]?$")
_ABBREVIATIONS = frozenset(("mr", "mrs", "ms", "dr", "st", "jr", "sr", "etc", "vs", "ok"))


def _clean_sentence(raw: str) -> str | None:
    """The transcript for a WordNet example, or None if it does not pass the filters."""
    tokens = raw.split()
    if not MIN_WORDS <= len(tokens) <= MAX_WORDS or not tokens[0][0].isupper():
        return None  # lower-case examples are mostly fragments ("a wobbly chair"), capitalised ones are sentences
    for i, tok in enumerate(tokens):
        word = tok.rstrip(",.?!")
        if not _WORD.match(tok):
            return None
        if tok[-1] in ".?!" and i != len(tokens) - 1:
            return None  # several sentences, or an abbreviation
        if any(c.isupper() for c in word[1:]) or word.lower() in _ABBREVIATIONS:
            return None  # all-caps / mixed-case words are mostly acronyms
        if len(word) == 1 and word not in ("a", "A", "I"):
            return None
    text = " ".join(tokens).rstrip(",")
    return text if text[-1] in ".?!" else text + "."


def load_sentences(seed: int) -> list[str]:
    """Deduplicated, filtered WordNet example sentences in a seeded random order."""
    by_key: dict[str, str] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET_DIR / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            for raw in re.findall(r'"([^"]*)"', line.split("|", 1)[1]):
                text = _clean_sentence(raw.strip())
                if text is not None:
                    by_key.setdefault(re.sub(r"[^a-z ]", "", text.lower()), text)
    sentences = sorted(by_key.values())
    random.Random(seed).shuffle(sentences)
    return sentences


# ----------------------------------------------------------------------------------------------------------------------
# Audio and alignment processing (runs in the worker processes)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    speaker: str
    position: int  # index of the sentence in the speaker's pool
    text: str
    seed: int


@dataclass
class Synthesized:
    job: Job
    audio: np.ndarray | None = None  # int16, 16 kHz mono
    phones: list[Segment] | None = None  # ARPAbet, seconds in the saved audio
    words: list[Segment] | None = None
    skipped: str | None = None  # reason the utterance is not used

    @property
    def duration(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / SAMPLE_RATE


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _stretch(job: Job) -> float:
    rng = random.Random(f"{job.seed}:{job.speaker}:{job.position}")
    return 1.0 + rng.uniform(-RATE_JITTER, RATE_JITTER)


def _load_mono_16k(path: Path) -> tuple[torch.Tensor, float]:
    """Audio as float32 mono at 16 kHz, and the fraction of full-scale (clipped) samples in the raw file."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    _require(len(data) > 0, f"{path} is empty")
    clipped = float(np.mean(np.abs(data) >= 32766 / 32768))  # festival clamps at +-32766
    audio = torch.from_numpy(data.mean(axis=1))
    if rate != SAMPLE_RATE:
        audio = torchaudio.functional.resample(audio, rate, SAMPLE_RATE)
    return audio, clipped


def _speech_bounds(audio: torch.Tensor, keep: float) -> tuple[int, int]:
    """Sample range [start, end) of the audio after trimming edge silence down to at most `keep` seconds."""
    hop = SAMPLE_RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    level = 10 * torch.log10(frames.pow(2).mean(dim=1) + 1e-12)
    loud = torch.nonzero(level > level.max() + SILENCE_DB).flatten()
    margin = round(keep * SAMPLE_RATE)
    start = max(0, int(loud[0]) * hop - margin)
    end = min(len(audio), (int(loud[-1]) + 1) * hop + margin)
    return start, end


def _speech_level(audio: torch.Tensor) -> float:
    """Active speech level in dBFS: the RMS of the 10 ms frames within 45 dB of the loudest one."""
    hop = SAMPLE_RATE // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    power = frames.pow(2).mean(dim=1)
    active = power[10 * torch.log10(power + 1e-12) > 10 * torch.log10(power.max() + 1e-12) + SILENCE_DB]
    return float(10 * torch.log10(active.mean() + 1e-12))


def _to_int16(audio: torch.Tensor, job: Job) -> np.ndarray:
    """Speech at SPEECH_LEVEL_DBFS (peaks kept under PEAK_DBFS), between pads of silence, over a noise floor: the
    level and the silence of a quiet recording rather than of a TTS engine (peak-normalised speech and digital
    silence taught the starter vocoder to resynthesize recordings too loud and their silence as noise)."""
    gain_db = min(SPEECH_LEVEL_DBFS - _speech_level(audio), PEAK_DBFS - 20 * math.log10(float(audio.abs().max())))
    rng = np.random.default_rng(random.Random(f"{job.seed}:{job.speaker}:{job.position}:level").getrandbits(64))
    pads = [np.zeros(round(rng.uniform(*PAD_SECONDS) * SAMPLE_RATE), np.float32) for _ in range(2)]
    speech = np.concatenate([pads[0], audio.numpy() * 10 ** (gain_db / 20), pads[1]])
    noise_db = rng.uniform(*NOISE_FLOOR_DBFS)
    speech += rng.standard_normal(len(speech)).astype(np.float32) * 10 ** (noise_db / 20)
    return np.round(np.clip(speech, -1, 1) * 32767).astype(np.int16), len(pads[0])


def map_phones(segments: list[Segment], table: Mapping[str, str], speaker: str) -> list[Segment]:
    unknown = sorted({label for _, _, label in segments if label not in table})
    if unknown:
        raise ValueError(f"{speaker}: no ARPAbet mapping for engine phone(s) {unknown}; extend the phone table")
    return [(start, end, table[label]) for start, end, label in segments]


def check_engine_timing(phones: Sequence[Segment], audio_seconds: float, what: str) -> None:
    """The engine's timings must describe its audio: only trailing silence may be cut short or run over."""
    speech_end = max(end for _, end, label in phones if label != SIL)
    _require(speech_end <= audio_seconds + 0.01,
             f"{what}: audio ends at {audio_seconds:.3f} s, before the speech ({speech_end:.3f} s)")
    _require(audio_seconds <= phones[-1][1] + MAX_TRAILING_AUDIO,
             f"{what}: audio runs {audio_seconds - phones[-1][1]:.3f} s past the last phone")


def realign_phones(segments: list[Segment], offset: float, duration: float) -> list[Segment]:
    """Contiguous phones on the saved file's time axis: shifted by -offset, clipped, rounded, SIL runs merged."""
    total = round(duration, 4)
    phones: list[list] = []
    previous = 0.0
    for _, engine_end, label in segments:
        end = round(min(max(engine_end - offset, 0.0), duration), 4)
        if end <= previous:
            continue  # fell into the trimmed edges, or zero length after rounding
        if phones and label == SIL and phones[-1][2] == SIL:
            phones[-1][1] = end
        else:
            phones.append([previous, end, label])
        previous = end
    _require(bool(phones), "no phones left after trimming")
    if previous < total:  # the engine's last phone ends before the audio does
        if phones[-1][2] == SIL or total - previous < 0.02:
            phones[-1][1] = total
        else:
            phones.append([previous, total, SIL])
    return [(start, end, label) for start, end, label in phones]


def realign_words(words: list[Segment], offset: float, duration: float) -> list[Segment]:
    out = []
    for engine_start, engine_end, word in words:
        start = round(min(max(engine_start - offset, 0.0), duration), 4)
        end = round(min(max(engine_end - offset, 0.0), duration), 4)
        if end > start:
            out.append((start, end, word))
    return out


def check_alignment(phones: Sequence[Segment], words: Sequence[Segment] | None, duration: float, uid: str) -> None:
    """The alignment invariants every utterance must satisfy (the loader relies on them)."""
    _require(phones[0][0] == 0.0, f"{uid}: phones do not start at 0")
    for (_, prev_end, _), (start, _, _) in itertools.pairwise(phones):
        _require(start == prev_end, f"{uid}: phones not contiguous at {start}")
    for start, end, label in phones:
        _require(start < end, f"{uid}: empty or reversed phone {label} at {start}")
        _require(label in PHONES, f"{uid}: phone {label} outside the ARPAbet+SIL set")
    _require(abs(phones[-1][1] - duration) <= 1e-3, f"{uid}: phones end at {phones[-1][1]}, audio at {duration}")
    _require(any(label != SIL for _, _, label in phones), f"{uid}: only silence")
    for start, end, word in words or ():
        _require(0.0 <= start < end <= duration + 1e-3, f"{uid}: bad word segment {word} {start}-{end}")


def synthesize(job: Job, edge_silence: float) -> Synthesized:
    """Run the engine for one sentence and return the processed 16 kHz int16 audio with its alignments."""
    voice = VOICE_BY_SPEAKER[job.speaker]
    with tempfile.TemporaryDirectory(prefix="make_corpus_") as tmp:
        raw = ENGINES[voice.engine](voice, job.text, _stretch(job), Path(tmp))
        audio, clipped = _load_mono_16k(raw.wav)
    if clipped > MAX_CLIPPED_FRACTION:
        return Synthesized(job, skipped=f"clipped ({clipped:.2%} full-scale samples)")
    start, end = _speech_bounds(audio, edge_silence)
    samples, pad = _to_int16(audio[start:end], job)
    result = Synthesized(job, audio=samples)
    seconds_per_word = result.duration / len(job.text.split())
    if not MIN_SECONDS <= result.duration <= MAX_SECONDS:
        return Synthesized(job, skipped=f"duration {result.duration:.2f} s")
    if not SECONDS_PER_WORD[0] <= seconds_per_word <= SECONDS_PER_WORD[1]:
        return Synthesized(job, skipped=f"{seconds_per_word:.2f} s per word")
    if voice.phone_map is not None:
        _require(raw.phones is not None, f"{voice.engine} gave no phone timings")
        phones = map_phones(raw.phones, voice.phone_map, voice.speaker)
        check_engine_timing(phones, len(audio) / SAMPLE_RATE, f"{voice.speaker} {job.text!r}")
        offset = (start - pad) / SAMPLE_RATE
        result.phones = realign_phones(phones, offset, result.duration)
        result.words = realign_words(raw.words, offset, result.duration) if raw.words else None
        check_alignment(result.phones, result.words, result.duration, f"{job.speaker}:{job.position}")
    return result


def _init_worker() -> None:
    torch.set_num_threads(1)


def _synthesize_job(args: tuple[Job, float]) -> Synthesized:
    return synthesize(*args)


# ----------------------------------------------------------------------------------------------------------------------
# Selection: every voice reads its own sentences in order until it has its share of the minutes
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class SpeakerProgress:
    voice: Voice
    pool: list[str]  # this voice's sentences, in reading order
    target: float  # seconds
    results: list[Synthesized] = field(default_factory=list)  # for pool[:len(results)]
    selected: list[Synthesized] = field(default_factory=list)
    done: bool = False

    def update(self) -> None:
        """Select the longest prefix of usable utterances whose total is closest to the target."""
        self.selected, total, self.done = [], 0.0, False
        for result in self.results:
            if result.skipped:
                continue
            if total + result.duration / 2 >= self.target:
                self.done = True
                return
            self.selected.append(result)
            total += result.duration

    def next_jobs(self, seed: int, expected_seconds: float = 3.5) -> list[Job]:
        if self.done:
            return []
        missing = self.target - sum(r.duration for r in self.selected)
        count = max(2, round(missing / expected_seconds * 1.15) + 1)
        first = len(self.results)
        if first + count > len(self.pool):
            raise RuntimeError(f"{self.voice.speaker}: ran out of sentences; lower --minutes")
        return [Job(self.voice.speaker, i, self.pool[i], seed) for i in range(first, first + count)]


def synthesize_all(sentences: list[str], minutes: float, seed: int, workers: int, edge_silence: float,
                   voices: Sequence[Voice]) -> list[SpeakerProgress]:
    target = minutes * 60 / len(voices)
    progress = [SpeakerProgress(v, sentences[i :: len(voices)], target) for i, v in enumerate(voices)]
    by_speaker = {p.voice.speaker: p for p in progress}
    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        while not all(p.done for p in progress):
            jobs = [job for p in progress for job in p.next_jobs(seed)]
            print(f"synthesizing {len(jobs)} utterances ...", file=sys.stderr, flush=True)
            for result in pool.map(_synthesize_job, [(job, edge_silence) for job in jobs], chunksize=2):
                p = by_speaker[result.job.speaker]
                assert result.job.position == len(p.results)
                p.results.append(result)
            for p in progress:
                p.update()
    for p in progress:
        for r in p.results[: len(p.selected) + 1]:
            if r.skipped:
                print(f"  skipped {p.voice.speaker} #{r.job.position}: {r.skipped} ({r.job.text!r})", file=sys.stderr)
    return progress


# ----------------------------------------------------------------------------------------------------------------------
# Writing the corpus
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str
    path: str  # relative to the corpus directory
    duration: float
    transcript: str
    split: str


def assign_splits(progress: list[SpeakerProgress], seed: int) -> list[tuple[Utterance, Synthesized]]:
    out = []
    for p in progress:
        n = len(p.selected)
        valid: set[int] = set()
        if not p.voice.held_out:
            n_valid = max(1, round(VALID_FRACTION * n))
            valid = set(random.Random(f"{seed}:valid:{p.voice.speaker}").sample(range(n), n_valid))
        for i, result in enumerate(p.selected):
            uid = f"{p.voice.speaker}_{i:04d}"
            split = p.voice.split if i not in valid else "valid"
            path = f"audio/{p.voice.speaker}/{uid}.flac"
            utt = Utterance(uid, p.voice.speaker, path, result.duration, result.job.text, split)
            out.append((utt, result))
    return out


def write_manifest(path: Path, utterances: list[Utterance]) -> None:
    lines = ["id\tpath\tduration\tspeaker\ttranscript"]
    for u in sorted(utterances, key=lambda u: u.id):
        lines.append(f"{u.id}\t{u.path}\t{u.duration:.3f}\t{u.speaker}\t{u.transcript}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_alignments(path: Path, items: list[tuple[Utterance, Synthesized]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for utt, result in sorted(items, key=lambda item: item[0].id):
            if result.phones is None:
                continue
            record: dict = {"id": utt.id, "phones": [list(s) for s in result.phones]}
            if result.words:
                record["words"] = [list(s) for s in result.words]
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def write_speakers(path: Path, voices: Sequence[Voice]) -> None:
    speakers = {v.speaker: {"engine": v.engine, "voice": v.voice, "sex": v.sex, "alignments": v.aligned,
                            "split": v.split} for v in voices}
    path.write_text(json.dumps(speakers, indent=2) + "\n", encoding="utf-8")


def _minutes(utterances: list[Utterance]) -> float:
    return sum(u.duration for u in utterances) / 60


def _command(args: argparse.Namespace) -> str:
    command = f"python experiments/data/make_corpus.py --minutes {args.minutes:g} --seed {args.seed}"
    if args.edge_silence != DEFAULT_EDGE_SILENCE:
        command += f" --edge-silence {args.edge_silence:g}"
    if args.voices != "free":
        command += f" --voices {args.voices}"
    if Path(args.out).resolve() != DEFAULT_OUT:
        command += f" --out {args.out}"
    return command


def render_readme(utterances: list[Utterance], args: argparse.Namespace, size_bytes: int) -> str:
    voices = VOICE_SETS[args.voices]
    splits = ("train", "valid", "valid_unseen")
    voice_rows = []
    for v in voices:
        mine = [u for u in utterances if u.speaker == v.speaker]
        voice_rows.append(f"| `{v.speaker}` | {v.engine} | {v.voice} | {v.sex} | {'yes' if v.aligned else 'no'} | "
                          f"{len(mine)} | {_minutes(mine):.2f} | {v.split} |")
    split_rows = []
    for s in splits:
        mine = [u for u in utterances if u.split == s]
        split_rows.append(f"| {s} | {len({u.speaker for u in mine})} | {len(mine)} | {_minutes(mine):.2f} |")
    split_rows.append(f"| **total** | {len(voices)} | {len(utterances)} | {_minutes(utterances):.2f} |")
    engines = sorted({v.engine for v in voices}, key=list(ENGINES).index)
    licence_lines = [f"- **{e}**: {LICENCES[e]}" for e in engines]
    return f"""# Bundled speech corpus

About {_minutes(utterances):.0f} minutes of synthetic English speech from {len(voices)} distinct TTS voices,
for tests, `make demo` and small experiments (nothing is downloaded).

- Audio: 16 kHz mono FLAC (16-bit PCM) made to sound like a quiet recording rather than a TTS engine: active speech
  level {SPEECH_LEVEL_DBFS:g} dBFS (peaks under {PEAK_DBFS:g} dBFS), the engine's edge silence trimmed to at most
  {args.edge_silence:g} s, then {PAD_SECONDS[0]:g}-{PAD_SECONDS[1]:g} s of silence added at each end and white noise
  at {NOISE_FLOOR_DBFS[0]:g} to {NOISE_FLOOR_DBFS[1]:g} dBFS under the whole utterance (drawn per utterance);
  speaking rate jittered by up to ±{RATE_JITTER:.0%} per utterance; {MIN_SECONDS:g}-{MAX_SECONDS:g} s per utterance.
- Texts: WordNet 3.0 example sentences ({MIN_WORDS}-{MAX_WORDS} words); every sentence is used once in the whole corpus.
- Size: {size_bytes / 1e6:.1f} MB in total.

Generated by `experiments/data/make_corpus.py` (its docstring lists the Debian and Python packages it needs):

```
{_command(args)}
```

The same command reproduces the same files; a larger `--minutes` keeps every existing utterance and adds new ones.

## Splits

Split by speaker as well as by utterance: `valid` holds out ~{VALID_FRACTION:.0%} of the utterances of the training
speakers; `valid_unseen` holds every utterance of speakers that never occur in `train`/`valid`.

| split | speakers | utterances | minutes |
|---|---|---|---|
{chr(10).join(split_rows)}

## Voices

| speaker | engine | voice | sex | alignments | utterances | minutes | split |
|---|---|---|---|---|---|---|---|
{chr(10).join(voice_rows)}

{VOICE_NOTES[args.voices]}

## Files

- `audio/<speaker>/<id>.flac`; id = `<speaker>_<4-digit index>`.
- `train.tsv`, `valid.tsv`, `valid_unseen.tsv`: UTF-8 TSV with header `id path duration speaker transcript`; `path`
  relative to this directory, `duration` = frames / 16000 in seconds (3 decimals); rows sorted by id.
- `alignments.jsonl`: one line per utterance of an aligned voice,
  `{{"id": ..., "phones": [[start_s, end_s, "AH"], ...], "words": [[start_s, end_s, "word"], ...]}}` (`words` only for
  ked, from festival). Times in seconds from the start of the FLAC, 4 decimals. Phones are contiguous, start at 0
  and end at the file's duration; labels are the 39 stress-less ARPAbet phones plus `SIL` (engine phones mapped by
  the tables in the script: CMU radio phones for flite and festival, SAMPA for MBROLA; flaps map to `T`).
- `speakers.json`: `{{speaker: {{"engine", "voice", "sex", "alignments", "split"}}}}`.

## Licences

The audio was produced with the following engines and voices (see `/usr/share/doc/<package>/copyright`):

{chr(10).join(licence_lines)}
- **Texts**: WordNet 3.0 example sentences (`wordnet-base`), WordNet 3.0 licence (free, keep the Princeton notice).

{LICENCE_SUMMARY[args.voices]}
"""


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) + sum(
        d.stat().st_size for d in [path, *path.rglob("*")] if d.is_dir())


def write_corpus(out: Path, items: list[tuple[Utterance, Synthesized]], args: argparse.Namespace) -> int:
    """Write everything into a temporary sibling directory, then swap it in place of `out`; returns the size."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}.", dir=out.parent))
    try:
        for utt, result in items:
            path = tmp / utt.path
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, result.audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        utterances = [u for u, _ in items]
        for split in ("train", "valid", "valid_unseen"):
            write_manifest(tmp / f"{split}.tsv", [u for u in utterances if u.split == split])
        write_alignments(tmp / "alignments.jsonl", items)
        write_speakers(tmp / "speakers.json", VOICE_SETS[args.voices])
        (tmp / "README.md").write_text(render_readme(utterances, args, 0), encoding="utf-8")
        size = directory_size(tmp)
        (tmp / "README.md").write_text(render_readme(utterances, args, size), encoding="utf-8")
        size = directory_size(tmp)
        if out.exists():
            old = out.with_name(f".tmp-{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return size


def verify_corpus(out: Path) -> None:
    """Re-read what was written and check the corpus-wide invariants."""
    ids, texts, split_speakers = set(), set(), {}
    for split in ("train", "valid", "valid_unseen"):
        lines = (out / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        _require(lines[0] == "id\tpath\tduration\tspeaker\ttranscript", f"{split}.tsv: bad header")
        rows = [line.split("\t") for line in lines[1:]]
        _require([r[0] for r in rows] == sorted(r[0] for r in rows), f"{split}.tsv: rows not sorted by id")
        for uid, path, duration, _speaker, transcript in rows:
            info = sf.info(out / path)
            _require(info.samplerate == SAMPLE_RATE and info.channels == 1 and info.subtype == "PCM_16",
                     f"{path}: not 16 kHz mono PCM_16")
            _require(f"{info.frames / SAMPLE_RATE:.3f}" == duration, f"{path}: duration mismatch")
            _require(uid not in ids and transcript.lower() not in texts, f"{uid}: duplicate id or text")
            ids.add(uid)
            texts.add(transcript.lower())
        split_speakers[split] = {r[3] for r in rows}
    _require(split_speakers["valid"] <= split_speakers["train"], "valid has speakers that are not in train")
    _require(not split_speakers["valid_unseen"] & split_speakers["train"], "valid_unseen speakers occur in train")
    for line in (out / "alignments.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        speaker = record["id"].rsplit("_", 1)[0]
        duration = sf.info(out / "audio" / speaker / f"{record['id']}.flac").frames / SAMPLE_RATE
        check_alignment([tuple(s) for s in record["phones"]], record.get("words"), duration, record["id"])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="total minutes of speech (equal share per voice)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus directory (replaced)")
    parser.add_argument("--seed", type=int, default=0, help="sentence order, rate jitter and valid selection")
    parser.add_argument("--workers", type=int, default=2, help="parallel synthesis processes")
    parser.add_argument("--edge-silence", type=float, default=DEFAULT_EDGE_SILENCE,
                        help="max seconds of the engine's silence kept at each edge of an utterance")
    parser.add_argument("--voices", choices=sorted(VOICE_SETS), default="free",
                        help="free: voices whose licences allow any use; all: also the non-commercial ones")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    tools = {"flite": ("flite",), "festival": ("festival",), "mbrola": ("espeak-ng", "mbrola"),
             "rhvoice": ("RHVoice-test",), "pico": ("pico2wave",)}
    for tool in sorted({t for v in VOICE_SETS[args.voices] for t in tools[v.engine]}):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed; see the docstring of {Path(__file__).name} for the packages")
    sentences = load_sentences(args.seed)
    print(f"{len(sentences)} candidate sentences", file=sys.stderr)
    progress = synthesize_all(sentences, args.minutes, args.seed, args.workers, args.edge_silence,
                              VOICE_SETS[args.voices])
    items = assign_splits(progress, args.seed)
    size = write_corpus(args.out, items, args)
    verify_corpus(args.out)
    utterances = [u for u, _ in items]
    for split in ("train", "valid", "valid_unseen"):
        mine = [u for u in utterances if u.split == split]
        print(f"{split:13s} {len(mine):4d} utterances {_minutes(mine):6.2f} min", file=sys.stderr)
    print(f"total         {len(utterances):4d} utterances {_minutes(utterances):6.2f} min, {size / 1e6:.2f} MB "
          f"in {args.out}", file=sys.stderr)
    if size >= SIZE_LIMIT_BYTES and args.out.resolve() == DEFAULT_OUT:
        print(f"WARNING: {size / 1e6:.2f} MB is over the {SIZE_LIMIT_BYTES / 1e6:.0f} MB budget of the bundled corpus; "
              "lower --edge-silence or --minutes", file=sys.stderr)


if __name__ == "__main__":
    main()
