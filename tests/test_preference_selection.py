"""textless.preference.selection: scoring rules, best-vs-worst pairs, skip reasons, the curriculum schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from textless.errors import ConfigError
from textless.preference.judges import Candidate
from textless.preference.selection import (
    RULES,
    ScoringRule,
    SelectedPair,
    SelectionConfig,
    raise_thresholds,
    required_judges,
    select_candidate_pairs,
    select_pairs,
)

NAN = float("nan")


def test_combine_is_the_weighted_sum():
    rule = ScoringRule({"llm/expected": 1.0, "text_lm/logprob": 0.5})
    assert rule.combine({"llm/expected": 3.5, "text_lm/logprob": -2.0, "other/x": 9.0}) == 3.5 + 0.5 * -2.0
    assert ScoringRule({"a/x": -2.0, "b/y": 0.25}).combine({"a/x": 1.5, "b/y": 8.0}) == -3.0 + 2.0
    assert ScoringRule().weights == {"llm/expected": 1.0} and RULES["llm"].weights == {"llm/expected": 1.0}


def test_requirements_and_nan_disqualify():
    rule = ScoringRule({"llm/expected": 1.0}, minimum={"length/words": 3}, maximum={"silence/ratio": 0.5})
    ok = {"llm/expected": 4.0, "length/words": 3.0, "silence/ratio": 0.5}
    assert rule.combine(ok) == 4.0 and rule.failures(ok) == []
    assert rule.combine({**ok, "silence/ratio": 0.75}) == -math.inf
    assert rule.failures({**ok, "silence/ratio": 0.75, "length/words": 2.0}) == ["length/words 2 < 3",
                                                                                 "silence/ratio 0.75 > 0.5"]
    assert rule.failures({**ok, "llm/expected": NAN}) == ["llm/expected is nan"]
    assert rule.failures({**ok, "length/words": NAN}) == ["length/words nan < 3"]  # NaN fails a requirement
    assert rule.keys == ["llm/expected", "length/words", "silence/ratio"]
    assert rule.judges == ["llm", "length", "silence"]


def test_missing_key_names_the_judge():
    with pytest.raises(ConfigError, match=r"needs the score 'llm/expected', given by the judge 'llm': add that judge "
                                          r"\(scores present: text_lm/logprob\)"):
        ScoringRule().combine({"text_lm/logprob": -1.0})
    with pytest.raises(ConfigError, match="at least one"):
        ScoringRule({})
    with pytest.raises(ConfigError, match="finite"):
        ScoringRule({"a/x": math.inf})
    assert required_judges(ScoringRule(maximum={"silence/ratio": 0.5}), SelectionConfig()) == ["llm", "silence",
                                                                                             "repetition"]
    assert required_judges(ScoringRule(), SelectionConfig(max_prompt_chosen_auto_bleu=None)) == ["llm"]


def _scores(bleus):
    return [{"repetition/prompt_text_auto_bleu": b} for b in bleus]


def test_best_vs_worst_with_exact_reasons():
    combined = [3.0, 4.5, 1.0, 2.0,      # p1: chosen 1, rejected 2
                2.0, 2.0,                # p2: tie
                5.0,                     # p3: alone
                3.0, 1.25,               # p4: margin 1.75 < 2
                2.5, 1.0,                # p5: chosen too low
                4.0, 1.5,                # p6: rejected too high
                4.0, 1.0,                # p7: chosen repeats itself
                -math.inf, -math.inf,    # p8: all disqualified
                4.0, -math.inf]          # p9: rejected disqualified -> margin inf
    bleus = [0.0] * len(combined)
    bleus[13] = 0.4
    groups = {"p1": [0, 1, 2, 3], "p2": [4, 5], "p3": [6], "p4": [7, 8], "p5": [9, 10], "p6": [11, 12],
              "p7": [13, 14], "p8": [15, 16], "p9": [17, 18], "p10": []}
    config = SelectionConfig(min_margin=2.0, min_chosen_score=3.0, max_rejected_score=1.25)
    pairs, reasons = select_pairs(groups, combined, _scores(bleus), config)
    assert pairs == [SelectedPair("p1", 1, 2, 3.5), SelectedPair("p9", 17, 18, math.inf)]
    assert reasons == {
        "p2": "chosen score 2 < min_chosen_score 3",
        "p3": "1 candidate(s), need at least 2",
        "p4": "margin 1.75 < min_margin 2",
        "p5": "chosen score 2.5 < min_chosen_score 3",
        "p6": "rejected score 1.5 > max_rejected_score 1.25",
        "p7": "chosen repetition/prompt_text_auto_bleu 0.4 >= 0.3",
        "p8": "no candidate meets the scoring rule",
        "p10": "0 candidate(s), need at least 2",
    }
    # without thresholds: the tie is its own reason; the filter can be turned off
    pairs, reasons = select_pairs(groups, combined, _scores(bleus), SelectionConfig(max_prompt_chosen_auto_bleu=None))
    assert reasons["p2"] == "all candidates score 2" and "p7" not in reasons
    assert SelectedPair("p4", 7, 8, 1.75) in pairs and SelectedPair("p7", 13, 14, 3.0) in pairs


def test_auto_bleu_filter_bound_is_strict_and_missing_key_is_an_error():
    pairs, reasons = select_pairs({"p": [0, 1]}, [2.0, 1.0], _scores([0.3, 0.0]), SelectionConfig())
    assert pairs == [] and reasons == {"p": "chosen repetition/prompt_text_auto_bleu 0.3 >= 0.3"}
    pairs, _ = select_pairs({"p": [0, 1]}, [2.0, 1.0], _scores([0.2999, 0.9]), SelectionConfig())
    assert pairs == [SelectedPair("p", 0, 1, 1.0)]  # only the chosen side is filtered
    _, reasons = select_pairs({"p": [0, 1]}, [2.0, 1.0], _scores([NAN, 0.0]), SelectionConfig())
    assert reasons == {"p": "chosen repetition/prompt_text_auto_bleu nan >= 0.3"}
    with pytest.raises(ConfigError, match="given by the judge 'repetition'"):
        select_pairs({"p": [0, 1]}, [2.0, 1.0], [{}, {}], SelectionConfig())


def test_ties_break_on_the_lowest_sample():
    combined = [2.0, 3.0, 3.0, 1.0, 1.0]
    pairs, _ = select_pairs({"p": [0, 1, 2, 3, 4]}, combined, _scores([0] * 5), SelectionConfig())
    assert pairs == [SelectedPair("p", 1, 3, 2.0)]
    # sample numbers, not positions, decide: position 2 is sample 0, position 4 is sample 1
    pairs, _ = select_pairs({"p": [0, 1, 2, 3, 4]}, combined, _scores([0] * 5), SelectionConfig(),
                            samples=[4, 3, 0, 2, 1])
    assert pairs == [SelectedPair("p", 2, 4, 2.0)]


def test_several_pairs_per_prompt():
    combined = [5.0, 1.0, 2.0, 4.5, 3.0]
    config = SelectionConfig(min_margin=1.0, pairs_per_prompt=3)
    pairs, reasons = select_pairs({"p": range(5)}, combined, _scores([0] * 5), config)
    assert pairs == [SelectedPair("p", 0, 1, 4.0), SelectedPair("p", 0, 2, 3.0), SelectedPair("p", 0, 4, 2.0)]
    assert reasons == {}
    pairs, _ = select_pairs({"p": range(5)}, combined, _scores([0] * 5), SelectionConfig(min_margin=2.5,
                                                                                         pairs_per_prompt=3))
    assert [p.rejected for p in pairs] == [1, 2]  # 5 - 3 = 2 < 2.5 drops the third
    pairs, _ = select_pairs({"p": [0, 1]}, [2.0, 1.0], _scores([0, 0]), SelectionConfig(pairs_per_prompt=4))
    assert pairs == [SelectedPair("p", 0, 1, 1.0)]
    with pytest.raises(ConfigError, match="pairs_per_prompt"):
        SelectionConfig(pairs_per_prompt=0)


def _candidate(prompt, sample):
    return Candidate(prompt, sample, np.zeros(3, np.int64), np.zeros(4, np.int64), "p", "t")


def test_select_candidate_pairs_groups_by_prompt():
    candidates = [_candidate("b", 1), _candidate("a", 0), _candidate("b", 0), _candidate("a", 1), _candidate("c", 0)]
    scores = [{"llm/expected": e, "repetition/prompt_text_auto_bleu": 0.0, "silence/ratio": s}
              for e, s in [(4.0, 0.0), (2.0, 0.0), (4.0, 0.0), (3.0, 0.9), (1.0, 0.0)]]
    rule = ScoringRule({"llm/expected": 1.0}, maximum={"silence/ratio": 0.5})
    pairs, reasons, combined = select_candidate_pairs(candidates, scores, rule, SelectionConfig())
    assert combined == [4.0, 2.0, 4.0, -math.inf, 1.0]
    # b: the tie at 4.0 goes to sample 0 (position 2); a: sample 1 is disqualified by silence -> rejected
    assert pairs == [SelectedPair("a", 1, 3, math.inf)]
    assert reasons == {"b": "all candidates score 4", "c": "1 candidate(s), need at least 2"}


def test_raise_thresholds_schedule():
    base = SelectionConfig(min_margin=0.25, max_rejected_score=2.0)
    schedule = {"min_margin": [0.5, 1.0, 1.5], "min_chosen_score": [None, 3.0]}
    steps = [raise_thresholds(base, i, schedule) for i in range(4)]
    assert [s.min_margin for s in steps] == [0.5, 1.0, 1.5, 1.5]
    assert [s.min_chosen_score for s in steps] == [None, 3.0, 3.0, 3.0]
    assert all(s.max_rejected_score == 2.0 and s.max_prompt_chosen_auto_bleu == 0.3 for s in steps)
    assert base.min_margin == 0.25  # not modified
    with pytest.raises(ConfigError, match="unknown selection field 'min_marign'"):
        raise_thresholds(base, 0, {"min_marign": [1.0]})
    with pytest.raises(ConfigError, match="non-empty list"):
        raise_thresholds(base, 0, {"min_margin": []})
    with pytest.raises(ConfigError, match=">= 0"):
        raise_thresholds(base, -1, schedule)
    with pytest.raises(ConfigError, match="min_margin must be >= 0"):
        raise_thresholds(base, 0, {"min_margin": [-1.0]})
