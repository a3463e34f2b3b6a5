"""Offline TTS voices for the benchmark builder: a registry of engines, text input and phone input.

Engines (Debian 12 packages; MBROLA, RHVoice and pico need the ``contrib`` and ``non-free`` components, see
`ENGINES` and textless/recipes/build-benchmark.yaml):

==========  =====================  =====================================================  ================================
engine      voices (examples)      text input                                             phone input
==========  =====================  =====================================================  ================================
mbrola      us1 us2 us3 en1        espeak-ng ``-v mb-<voice> --pho`` -> ``mbrola``        espeak-ng ``[[phonemes]]``
festival    ked_diphone,           ``SynthText``                                          a lexicon entry for a neutral
            cmu_us_slt_arctic_hts                                                         token (`festival_entry`)
flite       kal16 awb rms slt      ``flite -t``                                           -
rhvoice     alan bdl clb slt       ``RHVoice-test``                                       -
pico        en-US                  ``pico2wave``                                          -
==========  =====================  =====================================================  ================================

Phone input (`Engine.phones`) renders an exact ARPAbet pronunciation (with stress): espeak-ng computes durations
and pitch for the given phonemes and MBROLA renders them; festival gets the phones as the lexicon entry of one fixed
made-up token (syllabified by maximal onset, `syllabify`), so a word and its non-word take the same path through the
same prosody models, and neither the engine's lexicon nor its letter-to-sound rules can tell them apart. Each phone
synthesis returns the phones the engine reports having rendered (mapped back to ARPAbet); `check_rendered` compares
them with the request, so a silently replaced phone or a missing MBROLA diphone fails loudly (`SynthesisError`).

Audio (`finish`): mono, resampled to 16 kHz, edge silence trimmed to `edge_silence` seconds (frames 45 dB below the
loudest 10 ms frame count as silence), peak-normalised to -1 dBFS, 16-bit PCM.

Voices are written ``engine:voice`` (gold.csv ``voice`` column: the bundled corpus' speaker name when the corpus has
that voice, else a short name, see `Voice.parse`), or ``corpus:<speaker>`` for a voice of the bundled corpus.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textless.errors import ConfigError, TextlessError
from textless.eval.builder.lexicon import ONSETS, VOWELS, Pron, stress, strip_stress
from textless.utils.registry import Registry

SAMPLE_RATE = 16_000
PEAK_DBFS = -1.0
SILENCE_DB = -45.0


class SynthesisError(TextlessError):
    """An engine failed on one item, or rendered other phones than asked."""


# ---------------------------------------------------------------------------------------------------- phone maps
# ARPAbet -> espeak-ng English phoneme mnemonics (phoneme input [[...]]); vowels by stress: (stressed, unstressed).
ESPEAK_CONSONANTS = {
    "B": "b", "CH": "tS", "D": "d", "DH": "D", "F": "f", "G": "g", "HH": "h", "JH": "dZ", "K": "k", "L": "l",
    "M": "m", "N": "n", "NG": "N", "P": "p", "R": "r", "S": "s", "SH": "S", "T": "t", "TH": "T", "V": "v", "W": "w",
    "Y": "j", "Z": "z", "ZH": "Z",
}
ESPEAK_VOWELS = {
    "AA": ("A:", "A:"), "AE": ("a", "a"), "AH": ("V", "@"), "AO": ("O:", "O:"), "AW": ("aU", "aU"),
    "AY": ("aI", "aI"), "EH": ("E", "E"), "ER": ("3:", "3"), "EY": ("eI", "eI"), "IH": ("I", "I"),
    "IY": ("i:", "i"), "OW": ("oU", "oU"), "OY": ("OI", "OI"), "UH": ("U", "U"), "UW": ("u:", "u:"),
}
# MBROLA (SAMPA) phones espeak-ng writes in its .pho output -> ARPAbet; "_" is silence.
_MBROLA_CONSONANTS = {
    "p": "P", "p_h": "P", "t": "T", "t_h": "T", "k": "K", "k_h": "K", "b": "B", "d": "D", "g": "G", "4": "T",
    "f": "F", "v": "V", "T": "TH", "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH", "tS": "CH",
    "dZ": "JH", "m": "M", "n": "N", "n-": "N", "N": "NG", "l": "L", "5": "L", "r": "R", "w": "W", "j": "Y",
}
MBROLA_TO_ARPA = {
    "us": {**_MBROLA_CONSONANTS, "i": "IY", "I": "IH", "EI": "EY", "E": "EH", "{": "AE", "A": "AA", "O": "AO",
           "@U": "OW", "U": "UH", "u": "UW", "V": "AH", "@": "AH", "r=": "ER", "AI": "AY", "aU": "AW", "OI": "OY"},
    "en": {**_MBROLA_CONSONANTS, "i:": "IY", "i": "IY", "I": "IH", "eI": "EY", "e": "EH", "{": "AE", "A:": "AA",
           "Q": "AA", "O:": "AO", "@U": "OW", "U": "UH", "u:": "UW", "V": "AH", "@": "AH", "3:": "ER", "aI": "AY",
           "aU": "AW", "OI": "OY", "I@": "IH", "e@": "EH", "U@": "UH"},
}
# festival / flite CMU "radio" phones -> ARPAbet ("pau" is silence)
RADIO_TO_ARPA = {**{p.lower(): p for p in (*ESPEAK_CONSONANTS, *ESPEAK_VOWELS)},
                 "ax": "AH", "axr": "ER", "dx": "T", "el": "L", "em": "M", "en": "N", "nx": "N", "hv": "HH"}
SILENCES = {"_", "pau", "h#", "brth", "#"}

def syllabify(pron: Pron) -> list[Pron]:
    """Syllables of a pronunciation: each vowel is a nucleus; the consonants between two vowels go to the next
    syllable as far as they form a legal onset (`ONSETS`), the rest close the previous one."""
    nuclei = [i for i, p in enumerate(pron) if strip_stress(p) in VOWELS]
    if not nuclei:
        raise ValueError(f"pronunciation {' '.join(pron)} has no vowel")
    starts = [0]
    for left, right in itertools.pairwise(nuclei):
        cluster = [strip_stress(p) for p in pron[left + 1:right]]
        split = len(cluster)
        for k in range(len(cluster) + 1):
            if k == len(cluster) or tuple(cluster[k:]) in ONSETS:
                split = k
                break
        starts.append(left + 1 + split)
    bounds = [*starts, len(pron)]
    return [tuple(pron[a:b]) for a, b in itertools.pairwise(bounds)]


def espeak_phonemes(pron: Pron) -> str:
    """ARPAbet with stress -> espeak-ng phoneme input (``[[...]]``): ``'`` before a primary-stressed vowel, ``,``
    before a secondary one."""
    out = []
    for phone in pron:
        base, digit = strip_stress(phone), stress(phone)
        if base in ESPEAK_VOWELS:
            out.append({"1": "'", "2": ","}.get(digit, "") + ESPEAK_VOWELS[base][0 if digit in ("1", "2") else 1])
        else:
            out.append(ESPEAK_CONSONANTS[base])
    return "".join(out)


def festival_entry(token: str, pron: Pron) -> str:
    """A festival lexicon entry (Scheme) giving `token` the syllabified pronunciation `pron` (AH0 as ``ax``, as in
    festival's CMU lexicon)."""
    syllables = []
    for syllable in syllabify(pron):
        phones, level = [], "0"
        for phone in syllable:
            base, digit = strip_stress(phone), stress(phone)
            phones.append("ax" if (base, digit) == ("AH", "0") else base.lower())
            if digit in ("1", "2"):
                level = "1"
        syllables.append(f"(({' '.join(phones)}) {level})")
    return f'(lex.add.entry (list "{token}" nil (quote ({" ".join(syllables)}))))'


# Allophones an engine may render instead of the requested phone: (requested, rendered) -> condition on the
# request (the requested phone with stress, the next requested phone or "").
ALLOPHONES: dict[tuple[str, str], Callable[[str, str], bool]] = {
    ("ER", "AH"): lambda phone, after: stress(phone) == "0",      # non-rhotic voices (en1): unstressed ER as schwa
    ("IY", "IH"): lambda phone, after: stress(phone) == "0",      # unstressed "happy" vowel (en1)
    ("N", "NG"): lambda phone, after: strip_stress(after) in ("K", "G"),  # place assimilation before a velar
}


def check_rendered(requested: Pron, rendered: Sequence[str], what: str) -> None:
    """The engine rendered the requested phones (stress-less ARPAbet), up to `ALLOPHONES` and an ``R`` after ``ER``
    that the request does not have (festival splits r-coloured vowels)."""
    want = [strip_stress(p) for p in requested]
    got: list[str] = []
    for phone in rendered:
        if phone == "R" and got and got[-1] == "ER" and (len(got) >= len(want) or want[len(got)] != "R"):
            continue  # the engine's own R after an r-coloured vowel
        got.append(phone)
    nexts = [*requested[1:], ""]
    ok = len(got) == len(want) and all(
        g == w or ((w, g) in ALLOPHONES and ALLOPHONES[(w, g)](r, n))
        for g, w, r, n in zip(got, want, requested, nexts))
    if not ok:
        raise SynthesisError(f"{what}: asked for {' '.join(want)}, the engine rendered {' '.join(rendered)}")


# --------------------------------------------------------------------------------------------------------- engines
def _run(cmd: Sequence[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), check=False, cwd=cwd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SynthesisError(f"{cmd[0]} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return proc


def _pho_phones(pho: str) -> list[str]:
    return [line.split()[0] for line in pho.splitlines() if line.strip() and not line.startswith(";")]


def _mbrola_render(voice: str, pho: str, work: Path) -> Path:
    (work / "in.pho").write_text(pho)
    database = Path("/usr/share/mbrola") / voice / voice
    proc = _run(["mbrola", str(database), "in.pho", "out.wav"], work)
    if "unknown" in proc.stderr.lower() or "not found" in proc.stderr.lower():
        raise SynthesisError(f"mbrola {voice}: missing diphone(s): {proc.stderr.strip()[-300:]}")
    return work / "out.wav"


def _mbrola_table(voice: str) -> Mapping[str, str]:
    return MBROLA_TO_ARPA["en" if voice.startswith("en") else "us"]


def mbrola_text(voice: str, text: str, stretch: float, work: Path) -> Path:
    pho = _run(["espeak-ng", "-v", f"mb-{voice}", "-s", str(round(175 / stretch)), "-q", "--pho", text], work).stdout
    return _mbrola_render(voice, pho, work)


def mbrola_phones(voice: str, pron: Pron, stretch: float, work: Path) -> tuple[Path, list[str]]:
    pho = _run(["espeak-ng", "-v", f"mb-{voice}", "-s", str(round(175 / stretch)), "-q", "--pho",
                f"[[{espeak_phonemes(pron)}]]"], work).stdout
    table = _mbrola_table(voice)
    unknown = sorted({p for p in _pho_phones(pho) if p not in table and p not in SILENCES})
    if unknown:
        raise SynthesisError(f"mbrola {voice}: espeak-ng produced phone(s) {unknown} with no ARPAbet mapping")
    rendered = [table[p] for p in _pho_phones(pho) if p not in SILENCES]
    return _mbrola_render(voice, pho, work), rendered


_FESTIVAL = """(voice_{voice})
(set! after_synth_hooks nil)
(Parameter.set 'Duration_Stretch {stretch:.4f})
{entry}
(set! utt (SynthText "{text}"))
(utt.save.wave utt "out.wav" 'riff)
(utt.save.segs utt "segs.txt")
"""
FESTIVAL_TOKEN = "zobak"  # the one made-up token every phone-input item is spelled as (never in festival's lexicon)


def _festival(voice: str, text: str, stretch: float, work: Path, entry: str = "") -> tuple[Path, list[str]]:
    if '"' in text or "\\" in text:
        raise SynthesisError(f"festival: the text may not contain quotes or backslashes: {text!r}")
    (work / "synth.scm").write_text(_FESTIVAL.format(voice=voice, stretch=stretch, entry=entry, text=text))
    proc = _run(["festival", "-b", "synth.scm"], work)
    if not (work / "out.wav").is_file():
        raise SynthesisError(f"festival {voice}: no audio written ({proc.stderr.strip()[-300:]})")
    lines = (work / "segs.txt").read_text().splitlines()
    names = [line.split()[-1] for line in lines[lines.index("#") + 1:] if line.strip()]
    unknown = sorted({n for n in names if n not in RADIO_TO_ARPA and n not in SILENCES})
    if unknown:
        raise SynthesisError(f"festival {voice}: segment(s) {unknown} with no ARPAbet mapping")
    return work / "out.wav", [RADIO_TO_ARPA[n] for n in names if n not in SILENCES]


def festival_text(voice: str, text: str, stretch: float, work: Path) -> Path:
    return _festival(voice, text, stretch, work)[0]


def festival_phones(voice: str, pron: Pron, stretch: float, work: Path) -> tuple[Path, list[str]]:
    return _festival(voice, FESTIVAL_TOKEN, stretch, work, festival_entry(FESTIVAL_TOKEN, pron))


def flite_text(voice: str, text: str, stretch: float, work: Path) -> Path:
    _run(["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.4f}", "-t", text, "-o", "out.wav"], work)
    return work / "out.wav"


def rhvoice_text(voice: str, text: str, stretch: float, work: Path) -> Path:
    _run(["RHVoice-test", "-p", voice, "-r", str(round(100 / stretch)), "-o", "out.wav"], work, stdin=text + "\n")
    return work / "out.wav"


def pico_text(voice: str, text: str, stretch: float, work: Path) -> Path:
    _run(["pico2wave", "-l", voice, "-w", "out.wav", f"<speed level='{round(100 / stretch)}'>{text}</speed>"], work)
    return work / "out.wav"


@dataclass(frozen=True)
class Engine:
    """A TTS engine: `text(voice, text, stretch, workdir) -> wav`; `phones(voice, pron, stretch, workdir) ->
    (wav, rendered ARPAbet phones)` when it takes phone input; the programs it runs and their Debian packages."""

    name: str
    programs: tuple[str, ...]
    packages: tuple[str, ...]
    text: Callable[[str, str, float, Path], Path]
    phones: Callable[[str, Pron, float, Path], tuple[Path, list[str]]] | None = None

    def missing(self) -> list[str]:
        return [p for p in self.programs if shutil.which(p) is None]

    def require(self) -> None:
        if self.missing():
            raise TextlessError(f"TTS engine '{self.name}' is not installed (missing {', '.join(self.missing())}); "
                                f"on Debian: apt-get install {' '.join(self.packages)}")


ENGINES: Registry[Engine] = Registry("TTS engine")
for _engine in (
    Engine("mbrola", ("espeak-ng", "mbrola"), ("espeak-ng", "mbrola", "mbrola-us1", "mbrola-us2", "mbrola-en1"),
           mbrola_text, mbrola_phones),
    Engine("festival", ("festival",), ("festival", "festvox-kdlpc16k", "festvox-us-slt-hts"), festival_text,
           festival_phones),
    Engine("flite", ("flite",), ("flite",), flite_text),
    Engine("rhvoice", ("RHVoice-test",), ("rhvoice", "rhvoice-english"), rhvoice_text),
    Engine("pico", ("pico2wave",), ("libttspico-utils",), pico_text),
):
    ENGINES.register(_engine.name, _engine)


def get_engine(name: str) -> Engine:
    return ENGINES.get(name)


# ---------------------------------------------------------------------------------------------------------- voices
def _corpus_speakers() -> dict[str, dict]:
    from textless.data.corpus import load_bundled_speakers

    return load_bundled_speakers()


_SHORT_NAME = re.compile(r"^(?:cmu_us_)?(?P<name>[a-z0-9]+?)(?:_arctic_hts|_diphone|16)?$")


@dataclass(frozen=True)
class Voice:
    name: str    # the gold.csv `voice` column
    engine: str  # a key of ENGINES
    voice: str   # the engine's voice name

    @classmethod
    def parse(cls, spec: str) -> Voice:
        """``engine:voice`` or ``corpus:<speaker>``; the name is the corpus speaker using that engine voice if any,
        else the voice's short name (``cmu_us_slt_arctic_hts`` -> ``slt``)."""
        kind, _, voice = spec.partition(":")
        if not voice:
            raise ConfigError(f"voice '{spec}' must be written engine:voice (e.g. mbrola:us1) or corpus:<speaker>")
        speakers = _corpus_speakers()
        if kind == "corpus":
            if voice not in speakers:
                raise ConfigError(f"voice '{spec}': the bundled corpus has no speaker '{voice}' (speakers: "
                                  f"{', '.join(speakers)})")
            info = speakers[voice]
            return cls(voice, info["engine"], info["voice"])
        get_engine(kind)
        for name, info in speakers.items():
            if (info["engine"], info["voice"]) == (kind, voice):
                return cls(name, kind, voice)
        match = _SHORT_NAME.match(voice.lower())
        return cls(match.group("name") if match else re.sub(r"[^a-z0-9]", "", voice.lower()), kind, voice)

    @property
    def spec(self) -> str:
        return f"{self.engine}:{self.voice}"

    @property
    def takes_phones(self) -> bool:
        return get_engine(self.engine).phones is not None

    def corpus_split(self) -> str | None:
        """The bundled-corpus split of this voice's person (train / valid_unseen), None if not in the corpus."""
        info = _corpus_speakers().get(self.name)
        return info["split"] if info else None

    def to_dict(self) -> dict:
        return {"name": self.name, "engine": self.engine, "voice": self.voice, "corpus_split": self.corpus_split()}


# ------------------------------------------------------------------------------------------------------- synthesis
def _load_mono(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    if len(data) == 0:
        raise SynthesisError(f"{path}: the engine wrote an empty file")
    return data.mean(axis=1), rate


def finish(path: Path, edge_silence: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """An engine's wav -> int16 mono at `sample_rate`, edges trimmed to `edge_silence` s, peak at -1 dBFS."""
    import torch

    from textless.audio import resample

    audio, rate = _load_mono(path)
    audio = resample(torch.from_numpy(audio), rate, sample_rate).numpy()
    hop = sample_rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    if len(frames) == 0:
        raise SynthesisError(f"{path}: shorter than 10 ms")
    level = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() + SILENCE_DB)
    margin = round(edge_silence * sample_rate)
    start, end = max(0, int(loud[0]) * hop - margin), min(len(audio), (int(loud[-1]) + 1) * hop + margin)
    audio = audio[start:end]
    peak = float(np.abs(audio).max())
    if peak <= 0:
        raise SynthesisError(f"{path}: silent")
    return np.round(audio * (10 ** (PEAK_DBFS / 20) / peak) * 32767).astype(np.int16)


def synthesize_text(voice: Voice, text: str, work: Path, stretch: float = 1.0,
                    edge_silence: float = 0.05) -> np.ndarray:
    """`text` read by `voice` -> int16 16 kHz samples."""
    engine = get_engine(voice.engine)
    return finish(engine.text(voice.voice, text, stretch, work), edge_silence)


def synthesize_phones(voice: Voice, pron: Pron, work: Path, stretch: float = 1.0,
                      edge_silence: float = 0.05) -> np.ndarray:
    """The exact pronunciation `pron` read by `voice` (phone input, checked with `check_rendered`)."""
    engine = get_engine(voice.engine)
    if engine.phones is None:
        raise ConfigError(f"voice {voice.spec}: engine '{engine.name}' takes no phone input (phone-input engines: "
                          f"{', '.join(n for n, e in ENGINES.items() if e.phones)})")
    wav, rendered = engine.phones(voice.voice, pron, stretch, work)
    check_rendered(pron, rendered, f"{voice.spec} {' '.join(pron)}")
    return finish(wav, edge_silence)

