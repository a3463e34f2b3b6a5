"""Align-SLM preference pairs: combine judge scores into one number per candidate, then pick best vs worst.

Scoring (`ScoringRule`): ``combine(scores) = sum_k weights[k] * scores[k]`` over the weighted keys (judge score keys
such as ``"llm/expected"``, see `textless.preference.judges`). A candidate is *disqualified* (combined score -inf:
it ranks below every other candidate, so it can be the rejected side but never the chosen one) when

* a weighted value is NaN (e.g. ``llm/score`` of an answer that did not parse), or
* a ``minimum`` / ``maximum`` requirement fails (``value < minimum[k]`` / ``value > maximum[k]``; a NaN value fails),
  e.g. ``maximum={"silence/ratio": 0.5}`` or ``minimum={"length/words": 3}``.

A key missing from a candidate's scores is a `ConfigError` naming the judge that gives it (the part before "/").

Default rule (`DEFAULT_WEIGHTS`): ``{"llm/expected": 1.0}``, Align-SLM's feedback (an LLM judge of the
transcripts, its best variant in the paper), read as the expected 1-5 score rather than the greedy integer: it is
defined for every candidate (no parse failures) and continuous (integer scores tie constantly, and a tied best and
worst give no pair). With the offline SmolLM2-135M judge the spread is small (measured: ~2.7 for an empty
continuation vs ~2.95 for a fluent relevant one), so with that judge ``RULES["text_lm"]`` (``text_lm/logprob``,
several nats of spread) or ``RULES["llm+text_lm"]`` separate candidates more; use a larger instruct judge
(``llm={"model": ...}``) for the Align-SLM setting.

Selection (`select_pairs`, `SelectionConfig`), per prompt, over its candidates (indices into the score lists):

1. fewer than 2 candidates -> skipped;
2. chosen = the highest combined score, ties -> the lowest sample index; if it is disqualified -> skipped;
3. ``min_chosen_score``: chosen must reach it;
4. rejected = the lowest combined score among the others, ties -> the lowest sample index (with
   ``pairs_per_prompt = k``: the k lowest, each paired with the same chosen);
5. ``max_rejected_score``: rejected must not exceed it;
6. margin = chosen - rejected must be > 0 (a tie teaches nothing) and >= ``min_margin``;
7. slamkit's repetition filter: the chosen's ``repetition/prompt_text_auto_bleu`` must be
   < ``max_prompt_chosen_auto_bleu`` (0.3; None turns it off; NaN = no transcript fails). As in slamkit, a prompt
   whose best candidate fails is dropped (the next-best is not tried).

The first failing step gives the prompt's skip reason (exact strings in `select_pairs`). The margin of a pair whose
rejected side is disqualified is +inf.

Curriculum (`raise_thresholds`): a schedule ``{"min_margin": [0.5, 1.0, 1.5], ...}`` gives, per field, the value at
iteration i (0-based; past the end the last value repeats).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

from textless.errors import ConfigError
from textless.preference.judges import Candidate

DEFAULT_WEIGHTS: dict[str, float] = {"llm/expected": 1.0}
FILTER_KEY = "repetition/prompt_text_auto_bleu"
SLAMKIT_MAX_AUTO_BLEU = 0.3


def judge_of(key: str) -> str:
    """The judge that gives a score key: the part before the first "/"."""
    return key.split("/", 1)[0]


def _get(scores: Mapping[str, float], key: str, what: str) -> float:
    try:
        return float(scores[key])
    except KeyError:
        have = ", ".join(sorted(scores)) or "none"
        raise ConfigError(f"{what} needs the score '{key}', given by the judge '{judge_of(key)}': add that judge "
                          f"(scores present: {have})") from None


@dataclass
class ScoringRule:
    """Weighted sum of score keys, with hard requirements (module docstring). Weights may be negative."""

    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError("a scoring rule needs at least one weighted score key")
        for k, w in self.weights.items():
            if not math.isfinite(w):
                raise ConfigError(f"scoring rule: weight of '{k}' must be finite, got {w}")

    @property
    def keys(self) -> list[str]:
        """Every score key the rule reads (weights, then requirements)."""
        return list(dict.fromkeys([*self.weights, *self.minimum, *self.maximum]))

    @property
    def judges(self) -> list[str]:
        """The judges whose scores the rule reads."""
        return list(dict.fromkeys(judge_of(k) for k in self.keys))

    def failures(self, scores: Mapping[str, float]) -> list[str]:
        """Why a candidate is disqualified (empty: it is not), e.g. ``["silence/ratio 0.8 > 0.5"]``."""
        out = []
        for k in self.weights:
            if math.isnan(_get(scores, k, "the scoring rule")):
                out.append(f"{k} is nan")
        for k, low in self.minimum.items():
            v = _get(scores, k, "the scoring rule")
            if not v >= low:
                out.append(f"{k} {v:.4g} < {low:g}")
        for k, high in self.maximum.items():
            v = _get(scores, k, "the scoring rule")
            if not v <= high:
                out.append(f"{k} {v:.4g} > {high:g}")
        return out

    def combine(self, scores: Mapping[str, float]) -> float:
        """``sum weights[k] * scores[k]``, or -inf for a disqualified candidate; a missing key is a `ConfigError`."""
        if self.failures(scores):
            return -math.inf
        return float(sum(w * _get(scores, k, "the scoring rule") for k, w in self.weights.items()))


RULES: dict[str, ScoringRule] = {
    "llm": ScoringRule({"llm/expected": 1.0}),
    "text_lm": ScoringRule({"text_lm/logprob": 1.0}),
    # one point of judge score ~ two nats per token of text-LM likelihood
    "llm+text_lm": ScoringRule({"llm/expected": 1.0, "text_lm/logprob": 0.5}),
}


@dataclass
class SelectionConfig:
    """Thresholds of `select_pairs` (scores are combined scores; None = no threshold)."""

    min_margin: float = 0.0
    min_chosen_score: float | None = None
    max_rejected_score: float | None = None
    max_prompt_chosen_auto_bleu: float | None = SLAMKIT_MAX_AUTO_BLEU
    pairs_per_prompt: int = 1

    def __post_init__(self) -> None:
        if self.pairs_per_prompt < 1:
            raise ConfigError(f"pairs_per_prompt must be >= 1, got {self.pairs_per_prompt}")
        if self.min_margin is None or not self.min_margin >= 0:
            raise ConfigError(f"min_margin must be >= 0, got {self.min_margin}")

    @property
    def keys(self) -> list[str]:
        """Score keys the selection reads besides the combined score."""
        return [FILTER_KEY] if self.max_prompt_chosen_auto_bleu is not None else []


class SelectedPair(NamedTuple):
    prompt_id: str
    chosen: int      # index into the score lists
    rejected: int
    margin: float    # combined chosen - combined rejected (> 0; +inf when the rejected is disqualified)


def required_judges(rule: ScoringRule, config: SelectionConfig) -> list[str]:
    """The judges whose scores `rule` and `config` read, in order."""
    return list(dict.fromkeys([*rule.judges, *(judge_of(k) for k in config.keys)]))


def select_pairs(candidates_by_prompt: Mapping[str, Sequence[int]], combined: Sequence[float],
                 scores: Sequence[Mapping[str, float]], config: SelectionConfig,
                 samples: Sequence[int] | None = None) -> tuple[list[SelectedPair], dict[str, str]]:
    """Best-vs-worst pairs per prompt (module docstring) -> (pairs in prompt order, {prompt_id: skip reason}).

    candidates_by_prompt: prompt id -> indices into `combined` / `scores` / `samples`; combined: each candidate's
    combined score (`ScoringRule.combine`, -inf = disqualified); scores: each candidate's judge scores (read for the
    repetition filter); samples: each candidate's sample index for tie-breaking (None: the index itself).

    Skip reasons: ``"1 candidate(s), need at least 2"``, ``"no candidate meets the scoring rule"``,
    ``"chosen score 2.5 < min_chosen_score 3"``, ``"rejected score 2.5 > max_rejected_score 2"``,
    ``"all candidates score 3"`` (margin 0), ``"margin 0.2 < min_margin 0.5"``,
    ``"chosen repetition/prompt_text_auto_bleu 0.4 >= 0.3"`` (numbers with 4 significant digits).
    With ``pairs_per_prompt > 1`` a prompt's reason is that of its first (best vs worst) pair, given only when it
    yields no pair at all.
    """
    def sample_of(i: int) -> int:
        return samples[i] if samples is not None else i

    pairs: list[SelectedPair] = []
    reasons: dict[str, str] = {}
    for prompt_id, members in candidates_by_prompt.items():
        members = list(members)
        if len(members) < 2:
            reasons[prompt_id] = f"{len(members)} candidate(s), need at least 2"
            continue
        ranked = sorted(members, key=lambda i: (-combined[i], sample_of(i)))
        chosen = ranked[0]
        best = combined[chosen]
        if best == -math.inf:
            reasons[prompt_id] = "no candidate meets the scoring rule"
            continue
        if config.min_chosen_score is not None and best < config.min_chosen_score:
            reasons[prompt_id] = f"chosen score {best:.4g} < min_chosen_score {config.min_chosen_score:g}"
            continue
        worst_first = sorted(members, key=lambda i: (combined[i], sample_of(i)))
        rejects = [i for i in worst_first if i != chosen][: config.pairs_per_prompt]
        found, first_reason = [], None
        for rejected in rejects:
            reason = _pair_reason(best, combined[rejected], chosen, scores, config)
            if reason is None:
                found.append(SelectedPair(prompt_id, chosen, rejected, best - combined[rejected]))
            elif first_reason is None:
                first_reason = reason
        if found:
            pairs.extend(found)
        else:
            reasons[prompt_id] = first_reason or "no pair"
    return pairs, reasons


def _pair_reason(best: float, worst: float, chosen: int, scores: Sequence[Mapping[str, float]],
                 config: SelectionConfig) -> str | None:
    if config.max_rejected_score is not None and worst > config.max_rejected_score:
        return f"rejected score {worst:.4g} > max_rejected_score {config.max_rejected_score:g}"
    margin = best - worst
    if not margin > 0:
        return f"all candidates score {best:.4g}"
    if margin < config.min_margin:
        return f"margin {margin:.4g} < min_margin {config.min_margin:g}"
    if config.max_prompt_chosen_auto_bleu is not None:
        value = _get(scores[chosen], FILTER_KEY, "the repetition filter (max_prompt_chosen_auto_bleu)")
        if not value < config.max_prompt_chosen_auto_bleu:
            return f"chosen {FILTER_KEY} {value:.4g} >= {config.max_prompt_chosen_auto_bleu:g}"
    return None


def select_candidate_pairs(candidates: Sequence[Candidate], scores: Sequence[Mapping[str, float]],
                           rule: ScoringRule, config: SelectionConfig
                           ) -> tuple[list[SelectedPair], dict[str, str], list[float]]:
    """`select_pairs` over `Candidate` objects grouped by ``prompt_id`` (first-appearance order, ties broken by
    ``sample``) -> (pairs with indices into `candidates`, skip reasons, combined scores)."""
    if len(scores) != len(candidates):
        raise ConfigError(f"{len(scores)} score rows for {len(candidates)} candidates")
    combined = [rule.combine(s) for s in scores]
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault(c.prompt_id, []).append(i)
    pairs, reasons = select_pairs(groups, combined, scores, config, samples=[c.sample for c in candidates])
    return pairs, reasons, combined


def raise_thresholds(config: SelectionConfig, iteration: int,
                     schedule: Mapping[str, Sequence[float | None]]) -> SelectionConfig:
    """`config` with each scheduled field set to ``schedule[field][min(iteration, len - 1)]`` (curriculum step).

    iteration: 0-based curriculum iteration. Fields not in `schedule` keep their value. An unknown field, an empty
    list or a negative iteration is a `ConfigError`.
    """
    if iteration < 0:
        raise ConfigError(f"curriculum iteration must be >= 0, got {iteration}")
    known = {f.name for f in fields(SelectionConfig)}
    changes = {}
    for name, values in schedule.items():
        if name not in known:
            raise ConfigError(f"curriculum schedule: unknown selection field '{name}' (known: "
                              f"{', '.join(sorted(known))})")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(f"curriculum schedule: '{name}' needs a non-empty list of values, got {values!r}")
        changes[name] = values[min(iteration, len(values) - 1)]
    return replace(config, **changes)
