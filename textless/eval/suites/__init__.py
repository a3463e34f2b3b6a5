"""Likelihood suites (a registry): each reads its official on-disk layout into scored pairs and aggregates them.

=============  ==========================================================  =====================================
name           data directory (`path`)                                     headline metrics
=============  ==========================================================  =====================================
swuggy         ZeroSpeech 2021 root (``lexical/<split>/*.wav + gold.csv``)  lexical_all, lexical_invocab,
                                                                           lexical_oov (+ by frequency, length);
                                                                           lexical_pair_mean (slamkit's mean)
sblimp         ZeroSpeech 2021 root (``syntactic/<split>/...``)             syntactic (+ by type, subtype);
                                                                           syntactic_pair_mean (slamkit's mean)
sstorycloze    flat folder of ``<id>_correct/_incorrect.wav`` or            sstorycloze
               ``<id>_0/_1.wav``
tstorycloze    same layout                                                  tstorycloze
salmon         SALMon root (``<part>/sample_<i>_<j>.wav``, 8 parts)         one accuracy per part
=============  ==========================================================  =====================================

Each family's module documents its layout, pairing and scoring and how they match the anchor (``zerospeech``,
``storycloze``, ``salmon``). Add a suite by writing a reader and an aggregator and registering a `Suite` here.
"""

from __future__ import annotations

from textless.eval.suites.base import (
    Pair,
    ReadOptions,
    Score,
    Suite,
    SuiteData,
    SuiteResult,
    pair_outcomes,
)
from textless.eval.suites.salmon import aggregate_salmon, read_salmon
from textless.eval.suites.storycloze import aggregate_storycloze, reader
from textless.eval.suites.zerospeech import (
    aggregate_lexical,
    aggregate_syntactic,
    read_lexical,
    read_syntactic,
    write_lexical_submission,
    write_syntactic_submission,
)
from textless.utils.registry import Registry

SUITES: Registry[Suite] = Registry("likelihood suite")
for _suite in (
    Suite("swuggy", "ZeroSpeech 2021 sWUGGY: words vs non-words (lexical)", read_lexical, aggregate_lexical,
                    write_lexical_submission),
    Suite("sblimp", "ZeroSpeech 2021 sBLIMP: grammatical vs ungrammatical sentences (syntactic)",
                    read_syntactic, aggregate_syntactic, write_syntactic_submission),
    Suite("sstorycloze", "Spoken StoryCloze: true vs original wrong ending", reader("sstorycloze"),
                         aggregate_storycloze),
    Suite("tstorycloze", "Topic StoryCloze: true vs random other story's ending",
                         reader("tstorycloze"), aggregate_storycloze),
    Suite("salmon", "SALMon: acoustic consistency / alignment, eight parts", read_salmon, aggregate_salmon),
):
    SUITES.register(_suite.name, _suite)


def get_suite(name: str) -> Suite:
    return SUITES.get(name)


__all__ = ["SUITES", "Pair", "ReadOptions", "Score", "Suite", "SuiteData", "SuiteResult", "get_suite",
           "pair_outcomes"]
