"""Score built sets (ZeroSpeech 2021 layout) with several unit LMs over one tokenization, and the shuffled-weights
control LM.

`shuffled_lm` is the chance-level control of ``benchmarks/eval_builder.py`` and the tests: a deep copy of the LM in
which every parameter tensor's entries are randomly permuted (one ``torch.Generator`` seeded with `seed`, tensors in
``named_parameters()`` order, tied weights permuted once). It keeps the architecture, the vocabulary and every
tensor's set of values (so the scale of activations is unchanged) but none of the learned structure.

`score_sets` tokenizes every wav once (`LikelihoodScorer` of `textless.eval.likelihood`, the scoring of `textless
eval`: mean log-prob per token over bos + units + eos by default) and scores the same units with each LM, so the LMs
differ only in their weights. Scoring is deterministic (fixed files, fixed units, float64 sums of float32 logits,
identical unit sequences scored once).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from textless.eval.likelihood import LikelihoodScorer, ScoringConfig, evaluate_suite
from textless.eval.suites import ReadOptions, get_suite

logger = logging.getLogger(__name__)

SUITES = {"swuggy": "lexical", "sblimp": "syntactic"}


def shuffled_lm(lm, seed: int = 0):
    """A copy of `lm` with every parameter tensor's entries permuted (see the module docstring)."""
    control = copy.deepcopy(lm)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in control.named_parameters():
            flat = parameter.detach().reshape(-1)
            parameter.copy_(flat[torch.randperm(flat.numel(), generator=generator)].view_as(parameter))
    return control.eval()


def score_sets(roots: Mapping[str, Path], tokenizer, lms: Mapping[str, Any], split: str = "dev",
               scoring: ScoringConfig | None = None,
               units: dict[Path, Any] | None = None, suites: tuple[str, ...] = tuple(SUITES)) -> dict[str, Any]:
    """{set: {suite: {lm: SuiteResult.to_dict() + counts}}} for every set root and every suite of `suites`
    (swuggy, sblimp) whose directory exists.

    `units` (optional) is a shared {wav path: unit ids} cache: filled by the first LM's scorer and reused."""
    scoring = scoring or ScoringConfig()
    names = list(lms)
    scorers = {name: LikelihoodScorer(tokenizer, lms[name], scoring) for name in names}
    shared = units if units is not None else {}
    for scorer in scorers.values():
        scorer.units = shared
    results: dict[str, Any] = {}
    for set_name, root in roots.items():
        results[set_name] = {}
        for suite_name in suites:
            task = SUITES[suite_name]
            if not (Path(root) / task / split).is_dir():
                continue
            suite = get_suite(suite_name)
            data = suite.read(Path(root), ReadOptions(split=split))
            logger.info(f"{set_name}/{suite_name}: {len(data.pairs)} pairs, {len(data.files)} files")
            results[set_name][suite_name] = {}
            for name in names:
                result, _ = evaluate_suite(suite, data, scorers[name].score_files)
                results[set_name][suite_name][name] = {**result.to_dict(), "files": len(data.files)}
    return results


def headline(entry: Mapping[str, Any]) -> tuple[str, float, int]:
    """(metric, accuracy, n) of a suite result: lexical_all for sWUGGY, syntactic for sBLIMP."""
    metric = "lexical_all" if "lexical_all" in entry["metrics"] else "syntactic"
    score = entry["metrics"][metric]
    return metric, score["accuracy"], score["n"]
