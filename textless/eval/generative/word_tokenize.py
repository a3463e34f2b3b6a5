"""Word tokenizers for the text side of the generative metrics, in a registry (`WORD_TOKENIZERS`).

* ``"whitespace"``: ``text.split()``, what fairseq's ``self_auto_bleu.py`` does with an ASR transcript.
* ``"normalized"``: `textless.eval.wer.normalize_text` then ``split()``: lower-case words without punctuation, i.e. a
  Whisper transcript turned into what fairseq's letter ASR (wav2vec2 + KenLM) prints. The fairseq-variant metrics of
  `textless eval-generation` use it, so Whisper's case and punctuation do not create or hide repetitions.
* ``"treebank"``: slamkit's tokenizer, ``nltk.tokenize.NLTKWordTokenizer().tokenize(text)`` on the whole transcript.
  When `nltk` is importable it is used as is (exact). Otherwise a built-in approximation with the same main rules
  (`treebank_words`): ``, : ; ? ! ( ) [ ] { } < > $ % & @ # * -- ...`` and dashes become tokens; ONLY the final
  period of the text is split off (NLTK's word tokenizer expects one sentence, and slamkit gives it the whole
  transcript, so "York. Please" keeps "York."); double quotes become ````` / ``''``, an opening single quote is
  split off; the clitics 's 'm 'd 're 've 'll n't and "cannot gonna wanna gotta gimme lemme" are split. Rarer NLTK
  rules (unicode quotes, "'tis", "d'ye") are not reproduced. Install `nltk` for bit-exact slamkit numbers.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from functools import lru_cache

from textless.eval.wer import normalize_text
from textless.utils.registry import Registry

WORD_TOKENIZERS: Registry[Callable[[str], list[str]]] = Registry("word tokenizer")


def register_word_tokenizer(name: str) -> Callable:
    """Decorator: add ``fn(text) -> list[str]`` to `WORD_TOKENIZERS` under `name`."""
    return WORD_TOKENIZERS.register(name)


@register_word_tokenizer("whitespace")
def whitespace_words(text: str) -> list[str]:
    return text.split()


@register_word_tokenizer("normalized")
def normalized_words(text: str) -> list[str]:
    return normalize_text(text).split()


_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r'^"'), " `` "),                                  # opening double quote
    (re.compile(r'([ (\[{<])"'), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)'(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), "' "),  # opening single quote, not a clitic
    (re.compile(r'([^.])(\.)([\])}>"\']*)\s*$'), r"\1 \2 \3 "),   # the final period only
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),                     # , and : unless inside a number
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&?!*\u2012-\u2015]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[\]\[(){}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
    (re.compile(r'"'), " '' "),                                    # any other double quote closes
]
_CLITICS = [re.compile(r"([^' ])('[sSmMdD]|') "), re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) ")]
_SPLIT_WORDS = [re.compile(rf"(?i)\b({a})({b})\b") for a, b in
                [("can", "not"), ("gim", "me"), ("gon", "na"), ("got", "ta"), ("lem", "me"), ("wan", "na")]]


def treebank_words(text: str) -> list[str]:
    """The built-in approximation of NLTK's ``NLTKWordTokenizer`` (see the module docstring)."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    text = " " + re.sub(r"\s+", " ", text) + " "
    for pattern in _CLITICS:
        text = pattern.sub(r"\1 \2 ", text)
    for pattern in _SPLIT_WORDS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


@lru_cache(maxsize=1)
def _nltk_tokenizer():
    if importlib.util.find_spec("nltk") is None:
        return None
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


@register_word_tokenizer("treebank")
def slamkit_words(text: str) -> list[str]:
    """slamkit's word tokens: NLTK's ``NLTKWordTokenizer`` when installed, else `treebank_words`."""
    nltk = _nltk_tokenizer()
    return nltk.tokenize(text) if nltk is not None else treebank_words(text)


def word_tokenizer(name: str) -> Callable[[str], list[str]]:
    """The registered tokenizer `name` (a `ConfigError` lists the known ones)."""
    return WORD_TOKENIZERS.get(name)
