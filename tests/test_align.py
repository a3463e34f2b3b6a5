"""`textless align` end to end on the bundled corpus (tiny: the starter, real ASR and judges, one iteration), killed
in the middle and resumed; and the pieces of its report."""

from __future__ import annotations

import json
import math

import pytest

from textless.cli import main
from textless.errors import ConfigError
from textless.jobs import align
from textless.jobs.align import AlignConfig, heldout_scores, run_align, summary_table
from textless.lm.model import UnitLM
from textless.preference.data import read_pairs
from textless.preference.selection import ScoringRule
from textless.utils.assets import STARTER_DIR

TINY = ["prompts=bundled:train", "eval_prompts=bundled:valid", "eval_max_prompts=2", "eval_samples=2",
        "iterations=1", "schedule={min_margin: [0.0]}", "pairs.max_prompts=3", "pairs.num_samples=2",
        "pairs.max_new_tokens=20", "dpo.max_steps=2", "dpo.batch_size=2", "dpo.lr=1e-3", "eval_suites=[swuggy]",
        "progress=false"]


class Killed(BaseException):
    """What kill -9 looks like to the code after it: nothing more runs."""


def test_heldout_scores_are_means_over_prompts_with_their_spread():
    rule = ScoringRule({"a/x": 1.0}, maximum={"a/bad": 0.5})
    records = [{"prompt_id": "p", "scores": {"a/x": 1.0, "a/bad": 0.0}},
               {"prompt_id": "p", "scores": {"a/x": 3.0, "a/bad": 0.0}},
               {"prompt_id": "q", "scores": {"a/x": 6.0, "a/bad": 0.0}},
               {"prompt_id": "q", "scores": {"a/x": 9.0, "a/bad": 1.0}}]  # disqualified: left out of q's mean
    out = heldout_scores(records, rule)
    assert out["prompts"] == 2 and out["disqualified"] == 1 and out["score_mean"] == 4.0  # (2 + 6) / 2
    assert out["empty_transcripts"] == 0
    assert out["score_std"] == pytest.approx(math.sqrt(8)) and out["score_sem"] == pytest.approx(2.0)
    assert out["judges"]["a/x"] == pytest.approx(19 / 4)


def test_summary_table_has_a_row_per_iteration():
    rows = [{"iteration": 0, "pairs": None, "heldout": {"score_mean": 1.0, "score_sem": 0.5},
             "suites": {"swuggy/lexical_all": 0.5}},
            {"iteration": 1, "pairs": 3, "dpo": {"rewards/accuracies": 0.75, "rewards/margins": 0.2},
             "heldout": {"score_mean": 1.5, "score_sem": 0.25}, "suites": {"swuggy/lexical_all": 0.625}}]
    lines = summary_table(rows).splitlines()
    assert lines[0].split() == ["iter", "pairs", "DPO", "acc", "DPO", "margin", "held-out", "acc", "judge", "score",
                                "swuggy/lexical_all"]
    assert lines[2].split() == ["0", "-", "-", "-", "-", "1.000", "±", "0.500", "50.0"]
    assert lines[3].split() == ["1", "3", "0.750", "0.200", "-", "1.500", "±", "0.250", "62.5"]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="needs prompts="):
        run_align(AlignConfig(output_dir=str(tmp_path / "a")))
    with pytest.raises(ConfigError, match="schedule: 'margin' is not a selection setting"):
        run_align(AlignConfig(prompts="bundled:train", schedule={"margin": [1.0]}, output_dir=str(tmp_path / "b")))


@pytest.mark.slow
def test_a_tiny_align_run_killed_in_dpo_resumes_and_finishes(tmp_path, monkeypatch):
    out = tmp_path / "align"
    real_dpo, real_pairs = align.dpo, align.make_pairs

    def killed(cfg, *args, **kwargs):
        raise Killed

    monkeypatch.setattr(align, "dpo", killed)
    with pytest.raises(Killed):
        main(["align", *TINY, f"output_dir={out}"])
    assert (out / "iter0" / "eval.json").is_file() and (out / "iter1" / "pairs" / "pairs.jsonl").is_file()
    before = json.loads((out / "iter0" / "eval.json").read_text())

    calls = []
    monkeypatch.setattr(align, "dpo", real_dpo)
    monkeypatch.setattr(align, "make_pairs", lambda cfg, cache=None: calls.append(cfg.output) or real_pairs(cfg, cache))
    assert main(["align", *TINY, "dpo.lr=0.1", f"output_dir={out}"]) == 2  # another setting: refused
    assert main(["align", *TINY, f"output_dir={out}"]) == 0
    assert calls == [str(out / "iter1" / "heldout")]  # the pairs and the "before" evaluation were not redone

    summary = json.loads((out / "summary.json").read_text())
    rows = summary["iterations"]
    assert [r["iteration"] for r in rows] == [0, 1] and rows[0] == before
    after = rows[1]
    assert after["pairs"] >= 1 and after["dpo"]["rewards/accuracies"] is not None
    if read_pairs(out / "iter0" / "heldout").pairs:  # DPO was validated on the held-out pairs of the "before" run
        assert 0.0 <= after["dpo"]["valid/rewards/accuracies"] <= 1.0
    for row in rows:
        assert row["heldout"]["prompts"] == 2 and row["heldout"]["continuations"] == 4
        assert set(row["heldout"]["judges"]) >= {"llm/expected", "text_lm/logprob", "repetition/text_auto_bleu",
                                                 "length/seconds", "silence/ratio"}
        assert 0.0 <= row["suites"]["swuggy/lexical_all"] <= 1.0
    assert (out / "summary.png").stat().st_size > 0
    new = UnitLM.from_pretrained(after["model"])
    old = UnitLM.from_pretrained(STARTER_DIR / "lm")
    changed = [n for n, p in new.model.state_dict().items() if not p.equal(old.model.state_dict()[n])]
    assert changed  # DPO moved the weights
