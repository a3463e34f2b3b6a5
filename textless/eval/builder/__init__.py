"""Offline benchmark builder: sWUGGY- and sBLIMP-style minimal pairs synthesized with local TTS voices and written in
the official ZeroSpeech 2021 layouts (``<root>/lexical/<split>/*.wav + gold.csv``, ``<root>/syntactic/<split>/...``),
so `textless eval suite=[swuggy,sblimp] path=<root>` scores them like the real sets.

Modules (each small, each documented):

=============  ========================================================================================================
lexicon        ARPAbet phone classes, a pronunciation lexicon (CMUdict), word vocabularies and corpus word counts
nonwords       the non-word rule: same-class phone substitutions whose boundary-padded trigrams are all attested
templates      a small grammatical lexicon and sBLIMP-style templates (agreement, argument structure, anaphors,
               islands, NPI licensing): grammatical / ungrammatical pairs differing by one token
tts            voices and engines (a registry): text input and phone input (espeak-ng + MBROLA, festival), audio
               post-processing (16 kHz mono 16-bit PCM, edges trimmed, peak-normalised)
layout         stable random-looking file names and the official gold.csv files
job            `textless build-benchmark`: the config and the whole build
=============  ========================================================================================================
"""

from textless.eval.builder.lexicon import PHONE_CLASSES, Pronouncer, load_cmudict, phone_class
from textless.eval.builder.nonwords import NonWordRule, Phonotactics, make_nonword
from textless.eval.builder.templates import TEMPLATES, GrammarLexicon, MinimalPair, VocabularyPolicy

__all__ = ["PHONE_CLASSES", "TEMPLATES", "GrammarLexicon", "MinimalPair", "NonWordRule", "Phonotactics", "Pronouncer",
           "VocabularyPolicy", "load_cmudict", "make_nonword", "phone_class"]
