"""Likelihood suites (`textless.eval.suites`), the scoring engine (`textless.eval.likelihood`) and `textless eval`.

Fixtures are built here in each official layout (short synthetic wavs + gold.csv with the official columns). The
aggregation tests use hand-made file scores, so every expected number is computed by hand in the test.
"""

import json
import math
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from textless.cli import main
from textless.data.identity import UnitMismatchError
from textless.errors import FormatError, TextlessError
from textless.eval.likelihood import LikelihoodScorer, ScoringConfig, evaluate_suite
from textless.eval.suites import SUITES, ReadOptions, get_suite, pair_outcomes
from textless.eval.suites.salmon import PARTS
from textless.eval.suites.zerospeech import frequency_band, read_submission
from textless.jobs.evaluate import EvalConfig, read_report, run_eval
from textless.lm.model import UnitLM
from textless.lm.vocab import UnitVocab

SR = 16000
LEXICAL_HEADER = "id,filename,voice,frequency,word,phones,length,correct\n"
SYNTACTIC_HEADER = "filename,id,voice,type,subtype,transcription,correct\n"


def write_wav(path, seed: int, seconds: float = 0.3):
    """A short deterministic signal: a sine (even seeds) or noise (odd seeds), different per seed."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wav = 0.3 * np.sin(2 * np.pi * (200 + 90 * seed) * t) if seed % 2 == 0 else 0.2 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), SR)
    return path


def fake_scores(mapping):
    """A `score_files` that gives each file the score of its stem (the hand-made numbers)."""
    return lambda files: {f: float(mapping[f.stem]) for f in files}


# ----------------------------------------------------------------------------------------------- sWUGGY (lexical)
# (id, frequency, length, voice -> (word score, non-word score)); outcomes by hand: per voice 1 / 0.5 / 0.
LEXICAL = [
    ("w1", 0, 3, {"A": (-1.0, -2.0), "B": (-3.0, -2.0)}),    # oov: 1, 0       -> 0.5
    ("w2", 3, 4, {"A": (-1.0, -2.0), "B": (-2.0, -2.0)}),    # 1-5: 1, tie 0.5 -> 0.75
    ("w5", 1, 4, {"A": (-1.0, -5.0), "B": (-1.0, -5.0)}),    # 1-5: 1, 1       -> 1.0
    ("w3", 5, 5, {"A": (-1.0, -2.0), "B": (-0.5, -2.0)}),    # 5 is in "6-20" (right-open bins) -> 1.0
    ("w4", 150, 3, {"A": (-4.0, -2.0), "B": (-4.0, -1.0)}),  # >100: 0, 0      -> 0.0
]


def lexical_split(root, split="dev", gold=True, entries=LEXICAL):
    """ZeroSpeech 2021 ``lexical/<split>``; non-word rows listed in REVERSE order (positional pairing would fail)."""
    directory = root / "lexical" / split
    words, non_words, scores, seed = [], [], {}, 0
    for wid, freq, length, voices in entries:
        for voice, (sw, snw) in voices.items():
            for stem, score, correct, rows in ((f"{wid}{voice}w", sw, 1, words), (f"{wid}{voice}n", snw, 0, non_words)):
                write_wav(directory / f"{stem}.wav", seed)
                seed += 1
                scores[stem] = score
                word = wid if correct else ""
                rows.append(f"{wid},{stem},{voice},{freq if correct else ''},{word},p h o,{length},{correct}\n")
    if gold:
        (directory / "gold.csv").write_text(LEXICAL_HEADER + "".join(words) + "".join(reversed(non_words)))
    return directory, scores


def test_frequency_bands_are_right_open():
    assert [frequency_band(f) for f in (0, 1, 4, 5, 19, 20, 99, 100, 10**6)] == [
        "oov", "1-5", "1-5", "6-20", "6-20", "21-100", "21-100", ">100", ">100"]


def test_lexical_pairs_on_voice_and_id_and_averages_voices(tmp_path):
    _, scores = lexical_split(tmp_path)
    data = SUITES["swuggy"].read(tmp_path, ReadOptions())
    assert data.split == "dev" and len(data.pairs) == 10 and len(data.files) == 20 and data.items == [
        "w1", "w2", "w5", "w3", "w4"]
    for pair in data.pairs:  # word and non-word of the same (voice, id), whatever the row order
        assert pair.positive.stem[:-1] == pair.negative.stem[:-1] and pair.positive.stem.endswith("w")
    result, _ = evaluate_suite(SUITES["swuggy"], data, fake_scores(scores))
    m = result.metrics
    assert m["lexical_all"].accuracy == pytest.approx((0.5 + 0.75 + 1.0 + 1.0 + 0.0) / 5) and m["lexical_all"].n == 5
    # count-weighted over the non-oov bands: 1-5 (n=2, 0.875), 6-20 (n=1, 1.0), >100 (n=1, 0.0); 21-100 empty
    assert m["lexical_invocab"].accuracy == pytest.approx((2 * 0.875 + 1.0 + 0.0) / 4) and m["lexical_invocab"].n == 4
    assert m["lexical_invocab"].accuracy != pytest.approx((0.875 + 1.0 + 0.0) / 3)  # not the unweighted band mean
    assert m["lexical_invocab"].accuracy != m["lexical_all"].accuracy
    assert m["lexical_oov"].accuracy == 0.5 and m["lexical_oov"].n == 1
    bands = result.breakdowns["frequency"]
    assert list(bands) == ["oov", "1-5", "6-20", "21-100", ">100"]
    assert (bands["1-5"].accuracy, bands["1-5"].n) == (0.875, 2) and bands["1-5"].std == pytest.approx(
        np.std([0.75, 1.0], ddof=1))
    assert (bands["21-100"].accuracy, bands["21-100"].n) == (None, 0)
    assert {k: (v.accuracy, v.n) for k, v in result.breakdowns["length"].items()} == {
        "3": (0.25, 2), "4": (0.875, 2), "5": (1.0, 1)}


def test_lexical_submission_file_has_the_official_format(tmp_path):
    directory, scores = lexical_split(tmp_path)
    data = SUITES["swuggy"].read(tmp_path, ReadOptions())
    _, file_scores = evaluate_suite(SUITES["swuggy"], data, fake_scores(scores))
    path = SUITES["swuggy"].write_submission(data, file_scores, tmp_path / "sub")
    assert path == tmp_path / "sub" / "lexical" / "dev.txt"
    lines = path.read_text().splitlines()
    assert len(lines) == 20 and all(len(line.split(" ")) == 2 for line in lines)
    assert read_submission(path) == scores  # every wav stem once, the score as a float
    assert {line.split(" ")[0] for line in lines} == {p.stem for p in directory.glob("*.wav")}


def test_test_split_without_gold_is_scored_for_submission_only(tmp_path):
    lexical_split(tmp_path, "test", gold=False)
    data = SUITES["swuggy"].read(tmp_path, ReadOptions(split="test"))
    assert not data.has_gold and data.pairs == [] and len(data.files) == 20
    result, scores = evaluate_suite(SUITES["swuggy"], data, fake_scores({p.stem: -1.0 for p in data.files}))
    assert result.metrics == {} and "no gold.csv" in result.notes[0]
    assert SUITES["swuggy"].write_submission(data, scores, tmp_path / "sub").name == "test.txt"
    lexical_split(tmp_path / "other", "dev", gold=False)
    with pytest.raises(TextlessError, match="gold.csv' is missing"):
        SUITES["swuggy"].read(tmp_path / "other", ReadOptions())


def drop_file(directory, stem):
    """Remove a wav and its gold row: its pair loses one side."""
    (directory / f"{stem}.wav").unlink()
    lines = (directory / "gold.csv").read_text().splitlines(keepends=True)
    (directory / "gold.csv").write_text("".join(line for line in lines if f",{stem}," not in line))


@pytest.mark.parametrize("edit,match", [
    (lambda d: (d / "gold.csv").write_text((d / "gold.csv").read_text().replace("frequency", "freq")),
     r"gold.csv:1: missing column\(s\) frequency"),
    (lambda d: write_wav(d / "stray.wav", 99), r"1 wav\(s\) in .* are not in gold.csv: stray.wav"),
    (lambda d: (d / "w2Bn.wav").unlink(), r"1 gold row\(s\) have no wav .*: w2Bn.wav"),
    (lambda d: drop_file(d, "w4Bn"), r"gold.csv:\d+: voice='B' id='w4' has no non-word row"),
    (lambda d: (d / "gold.csv").write_text((d / "gold.csv").read_text().replace(",1\n", ",yes\n", 1)),
     r"gold.csv:2: 'correct' must be 1 or 0, got 'yes'"),
])
def test_lexical_reader_names_file_and_problem(tmp_path, edit, match):
    directory, _ = lexical_split(tmp_path)
    edit(directory)
    with pytest.raises(FormatError, match=match):
        SUITES["swuggy"].read(tmp_path, ReadOptions())


def test_zerospeech_root_errors(tmp_path):
    with pytest.raises(TextlessError, match="not a ZeroSpeech 2021 dataset root: .*lexical/dev' is missing"):
        SUITES["swuggy"].read(tmp_path, ReadOptions())
    with pytest.raises(TextlessError, match="split must be one of dev, test"):
        SUITES["sblimp"].read(tmp_path, ReadOptions(split="train"))


# --------------------------------------------------------------------------------------------- sBLIMP (syntactic)
# (type, subtype, id, voice, correct score, incorrect score). Id "1" is reused by two subtypes.
SYNTACTIC = [
    ("morphology", "anaphor", "1", "A", -1.0, -2.0),  # 1
    ("morphology", "anaphor", "1", "B", -2.0, -1.0),  # 0   -> item 0.5
    ("morphology", "det_noun", "1", "A", -1.0, -1.0),  # tie -> item 0.5 (one voice)
    ("syntax", "island", "2", "A", -1.0, -3.0),       # 1
    ("syntax", "island", "2", "B", -1.0, -3.0),       # 1   -> item 1.0
]


def syntactic_split(root):
    directory = root / "syntactic" / "dev"
    good, bad, scores = [], [], {}
    for k, (typ, sub, sid, voice, sc, si) in enumerate(SYNTACTIC):
        for stem, score, correct, rows in ((f"s{k}c", sc, 1, good), (f"s{k}i", si, 0, bad)):
            write_wav(directory / f"{stem}.wav", 2 * k + correct)
            scores[stem] = score
            rows.append(f"{stem},{sid},{voice},{typ},{sub},a sentence {k},{correct}\n")
    (directory / "gold.csv").write_text(SYNTACTIC_HEADER + "".join(good) + "".join(reversed(bad)))
    return directory, scores


def test_syntactic_pairs_on_keys_and_averages_voices_per_type_subtype_id(tmp_path):
    _, scores = syntactic_split(tmp_path)
    data = SUITES["sblimp"].read(tmp_path, ReadOptions())
    assert [(p.positive.stem, p.negative.stem) for p in data.pairs] == [(f"s{k}c", f"s{k}i") for k in range(5)]
    assert data.items == ["morphology/anaphor/1", "morphology/det_noun/1", "syntax/island/2"]
    result, _ = evaluate_suite(SUITES["sblimp"], data, fake_scores(scores))
    assert result.metrics["syntactic"].accuracy == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert result.metrics["syntactic"].n == 3 and result.pairs == 5
    by_type = result.breakdowns["type"]
    assert (by_type["morphology"].accuracy, by_type["morphology"].n, by_type["syntax"].accuracy) == (0.5, 2, 1.0)
    assert set(result.breakdowns["subtype"]) == {"morphology/anaphor", "morphology/det_noun", "syntax/island"}


# ids with 3, 1 and 2 voices: the ZeroSpeech mean over ids and slamkit's plain mean over pairs differ
UNEVEN_VOICES = [
    ("u1", 0, 3, {"A": (-1.0, -2.0), "B": (-1.0, -2.0), "C": (-3.0, -2.0)}),  # 1, 1, 0 -> 2/3
    ("u2", 3, 4, {"A": (-2.0, -1.0)}),                                        # 0       -> 0
    ("u3", 50, 4, {"A": (-1.0, -1.0), "B": (-1.0, -3.0)}),                    # 0.5, 1  -> 0.75
]


def test_pair_mean_is_slamkits_plain_mean_over_pairs(tmp_path):
    from textless.jobs.evaluate import format_report, headline_rows

    _, scores = lexical_split(tmp_path, entries=UNEVEN_VOICES)
    data = SUITES["swuggy"].read(tmp_path, ReadOptions())
    lexical, _ = evaluate_suite(SUITES["swuggy"], data, fake_scores(scores))
    # ZeroSpeech: voices averaged per id, then ids: (2/3 + 0 + 3/4) / 3 = 17/36; slamkit: 6 pairs 1 1 0 0 .5 1 -> 7/12
    assert (lexical.metrics["lexical_all"].accuracy, lexical.metrics["lexical_all"].n) == (pytest.approx(17 / 36), 3)
    pair_mean = lexical.metrics["lexical_pair_mean"]
    assert (pair_mean.accuracy, pair_mean.n) == (pytest.approx(7 / 12), 6)
    # sample std (ddof 1) of the pair outcomes: squared deviations 3 x (5/12)^2 + 2 x (7/12)^2 + (1/12)^2 = 174/144
    assert pair_mean.std == pytest.approx(math.sqrt(174 / 144 / 5))
    assert lexical.metrics["lexical_all"].accuracy != pytest.approx(pair_mean.accuracy)

    # sBLIMP fixture: anaphor/1 has 2 voices, det_noun/1 one, island/2 two; pairs 1 0 .5 1 1
    _, syntactic_scores = syntactic_split(tmp_path)
    syntactic, _ = evaluate_suite(SUITES["sblimp"], SUITES["sblimp"].read(tmp_path, ReadOptions()),
                                  fake_scores(syntactic_scores))
    assert (syntactic.metrics["syntactic"].accuracy, syntactic.metrics["syntactic"].n) == (pytest.approx(2 / 3), 3)
    assert (syntactic.metrics["syntactic_pair_mean"].accuracy, syntactic.metrics["syntactic_pair_mean"].n) == (
        pytest.approx(3.5 / 5), 5)

    # equal voice counts (the LEXICAL fixture, 2 voices per id): the two aggregations agree
    _, even_scores = lexical_split(tmp_path / "even")
    even, _ = evaluate_suite(SUITES["swuggy"], SUITES["swuggy"].read(tmp_path / "even", ReadOptions()),
                             fake_scores(even_scores))
    assert even.metrics["lexical_pair_mean"].accuracy == pytest.approx(even.metrics["lexical_all"].accuracy)

    # JSON report entry and printed table: one more headline row each, n = pairs
    report = {"suites": {"swuggy": lexical.to_dict(), "sblimp": syntactic.to_dict()}}
    assert json.loads(json.dumps(report))["suites"]["swuggy"]["metrics"]["lexical_pair_mean"] == {
        "accuracy": pytest.approx(7 / 12), "n": 6, "std": pytest.approx(math.sqrt(174 / 720))}
    rows = headline_rows(report)
    assert ("swuggy", "dev", "lexical_pair_mean", pytest.approx(100 * 7 / 12), 6) in rows
    assert ("sblimp", "dev", "syntactic_pair_mean", pytest.approx(70.0), 5) in rows
    assert re.search(r"swuggy\s+dev\s+lexical_pair_mean\s+58\.33\s+6\n", format_report(report))


def test_syntactic_reader_errors(tmp_path):
    directory, _ = syntactic_split(tmp_path)
    gold = (directory / "gold.csv").read_text()
    (directory / "gold.csv").write_text(gold.replace("s1i,1,B,", "s1i,1,A,"))
    with pytest.raises(FormatError, match=r"two incorrect rows for type='morphology' subtype='anaphor' id='1' "
                                          r"voice='A' \(lines \d+ and \d+\)"):
        SUITES["sblimp"].read(tmp_path, ReadOptions())
    (directory / "gold.csv").write_text(gold.replace("subtype,", "sub,"))
    with pytest.raises(FormatError, match=r"missing column\(s\) subtype"):
        SUITES["sblimp"].read(tmp_path, ReadOptions())


def test_pair_outcomes_count_ties_half():
    assert pair_outcomes(np.array([-1.0, -2.0, -3.0]), np.array([-2.0, -2.0, -1.0])).tolist() == [1.0, 0.5, 0.0]


# --------------------------------------------------------------------------------------------------- StoryCloze
def storycloze_dir(root, names):
    for k, name in enumerate(names):
        write_wav(root / f"{name}.wav", k)
    return root


@pytest.mark.parametrize("names,positives", [
    (["1_correct", "1_incorrect", "0_incorrect", "0_correct", "10_correct", "10_incorrect"],
     ["0_correct", "1_correct", "10_correct"]),
    (["2_1", "2_0", "007_0", "007_1"], ["2_0", "007_0"]),
])
def test_storycloze_labels_come_from_names(tmp_path, names, positives):
    storycloze_dir(tmp_path / "sSC", names)
    data = SUITES["sstorycloze"].read(tmp_path / "sSC", ReadOptions())
    assert [p.positive.stem for p in data.pairs] == positives  # integer id order, positive from the name
    assert all(p.negative.stem.split("_")[0] == p.positive.stem.split("_")[0] for p in data.pairs)
    result, _ = evaluate_suite(SUITES["sstorycloze"], data, fake_scores(
        {n: (-1.0 if n in positives else -2.0) for n in names}))
    assert result.metrics["sstorycloze"].accuracy == 1.0 and result.metrics["sstorycloze"].n == len(positives)


@pytest.mark.parametrize("names,match", [
    (["0_correct", "0_incorrect", "1_0", "1_1"], "mixes StoryCloze naming conventions"),
    (["0_a", "0_b"], r"0_a.wav: not a StoryCloze file name \(accepted: labels: <id>_correct.wav"),
    (["0_correct", "0_incorrect", "1_correct"], r"1 story has one side missing: 1 \(only 1_correct.wav\)"),
    (["1_0", "01_0", "1_1"], "story 1 has two positive files"),
    ([], "no .wav files"),
])
def test_storycloze_refuses_ambiguous_folders(tmp_path, names, match):
    (tmp_path / "d").mkdir()
    storycloze_dir(tmp_path / "d", names)
    with pytest.raises(TextlessError, match=match):
        SUITES["tstorycloze"].read(tmp_path / "d", ReadOptions())


# ------------------------------------------------------------------------------------------------------- SALMon
def salmon_root(root, negatives=1):
    for p, part in enumerate(PARTS):
        for i in range(2):
            for j in range(1 + negatives):
                write_wav(root / part / f"sample_{i}_{j}.wav", p + i + j)
    return root


def test_salmon_reads_all_parts_and_scores_per_part(tmp_path):
    root = salmon_root(tmp_path / "salmon", negatives=2)
    data = SUITES["salmon"].read(root, ReadOptions())
    assert len(data.pairs) == 16 and len(data.files) == 32  # positive vs FIRST negative only
    assert {(p.positive.stem, p.negative.stem) for p in data.pairs} == {("sample_0_0", "sample_0_1"),
                                                                     ("sample_1_0", "sample_1_1")}
    scores = {f: (-1.0 if f.stem.endswith("_0") else -2.0) for f in data.files}
    scores.update({f: -1.0 for f in data.files if f.parent.name == "rir_consistency" and f.stem == "sample_1_1"})
    result, _ = evaluate_suite(SUITES["salmon"], data, lambda files: {f: scores[f] for f in files})
    assert list(result.metrics) == list(PARTS)
    assert result.metrics["rir_consistency"].accuracy == 0.75 and result.metrics["bg_alignment"].accuracy == 1.0
    every = SUITES["salmon"].read(root, ReadOptions(all_negatives=True, salmon_parts=["gender_consistency"]))
    assert len(every.pairs) == 4 and every.items == ["gender_consistency/0", "gender_consistency/1"]


def test_salmon_errors(tmp_path):
    root = salmon_root(tmp_path / "salmon")
    write_wav(root / "bg_alignment" / "sample_7_1.wav", 1)
    with pytest.raises(TextlessError, match=r"no positive \(sample_<i>_0.wav\) for sample_7"):
        SUITES["salmon"].read(root, ReadOptions())
    (root / "bg_alignment" / "sample_7_1.wav").rename(root / "bg_alignment" / "neg7.wav")
    with pytest.raises(FormatError, match="neg7.wav: not a SALMon file name"):
        SUITES["salmon"].read(root, ReadOptions())
    (root / "bg_alignment" / "neg7.wav").unlink()
    for f in (root / "speaker_consistency").iterdir():
        f.unlink()
    (root / "speaker_consistency").rmdir()
    with pytest.raises(TextlessError, match="missing part.s. speaker_consistency"):
        SUITES["salmon"].read(root, ReadOptions())
    assert len(SUITES["salmon"].read(root, ReadOptions(salmon_parts=["bg_alignment"])).pairs) == 2


def test_unknown_suite():
    with pytest.raises(TextlessError, match="unknown likelihood suite 'wuggy'"):
        get_suite("wuggy")


# ------------------------------------------------------------------------------------------ engine with a tiny LM
@pytest.fixture(scope="module")
def tokenizer():
    from textless.tokenizers import KMeans, SpeechTokenizer, load_encoder

    encoder = load_encoder("mfcc")
    t = np.arange(SR) / SR
    rng = np.random.default_rng(0)
    wavs = [0.3 * np.sin(2 * np.pi * f * t) for f in (200, 470, 900)] + [0.2 * rng.standard_normal(SR)]
    feats = np.concatenate([encoder.encode(torch.tensor(w, dtype=torch.float32)).numpy() for w in wavs])
    return SpeechTokenizer(encoder, KMeans(k=8, backend="torch", max_iter=20, seed=0).fit(feats))


@pytest.fixture(scope="module")
def tiny_lm(tokenizer):
    torch.manual_seed(0)
    return UnitLM.from_scratch("tiny", UnitVocab.default(8), tokenizer=tokenizer.identity(), frame_rate=100.0,
                               deduplicated=True)


def direct_log_likelihood(lm, units):
    """log P(units, eos | bos) summed and per token, from one unbatched forward pass (the slamkit convention)."""
    tokens = torch.tensor([[lm.vocab.bos_id, *(np.asarray(units) + lm.vocab.offset), lm.vocab.eos_id]])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(tokens).logits[0, :-1].float(), -1)
    total = logp.gather(-1, tokens[0, 1:, None]).sum().item()
    return total, total / (tokens.shape[1] - 1)


@pytest.mark.parametrize("score", ["mean", "sum"])
def test_engine_matches_direct_likelihoods_and_ties_identical_units(tmp_path, tokenizer, tiny_lm, score):
    """3 stories: two real pairs, and one whose two sides are the same audio (identical units -> exactly 0.5)."""
    d = tmp_path / "sSC"
    write_wav(d / "0_correct.wav", 2, 0.4)
    write_wav(d / "0_incorrect.wav", 1, 0.5)
    write_wav(d / "1_correct.wav", 3, 0.3)
    write_wav(d / "1_incorrect.wav", 4, 0.4)
    write_wav(d / "2_correct.wav", 6, 0.3)
    (d / "2_incorrect.wav").write_bytes((d / "2_correct.wav").read_bytes())
    data = SUITES["sstorycloze"].read(d, ReadOptions())
    scorer = LikelihoodScorer(tokenizer, tiny_lm, ScoringConfig(score=score, batch_size=2, tokenize_batch_size=2))
    result, scores = evaluate_suite(SUITES["sstorycloze"], data, scorer.score_files)
    from textless.audio import load_audio

    expected = {}
    for f in data.files:
        units = tokenizer.encode(load_audio(f, SR)[0], SR).ids
        assert np.array_equal(scorer.units[f], units)
        total, mean = direct_log_likelihood(tiny_lm, units)
        expected[f] = mean if score == "mean" else total
        assert scores[f] == pytest.approx(expected[f], abs=1e-4)
    by_hand = [0.5 * (expected[p.positive] == expected[p.negative]) + (expected[p.positive] > expected[p.negative])
               for p in data.pairs[:2]] + [0.5]
    assert scores[data.pairs[2].positive] == scores[data.pairs[2].negative]
    assert result.metrics["sstorycloze"].accuracy == pytest.approx(sum(by_hand) / 3)


def test_engine_names_the_file_it_cannot_score(tmp_path, tokenizer, tiny_lm):
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(40, np.float32), SR)
    with pytest.raises(TextlessError, match="short.wav': cannot be tokenized"):
        LikelihoodScorer(tokenizer, tiny_lm).score_files([short])
    one = write_wav(tmp_path / "one.wav", 2)
    scorer = LikelihoodScorer(tokenizer, tiny_lm, ScoringConfig(add_bos=False, add_eos=False))
    scorer.units[one] = np.array([3])  # a cached one-unit sequence: no target without bos / eos
    with pytest.raises(TextlessError, match="one.wav': gives 1 unit.s., 1 token.s. .*nothing to score"):
        scorer.score_files([one])


def test_engine_refuses_units_the_lm_does_not_take(tokenizer):
    other = UnitLM.from_scratch("tiny", UnitVocab.default(8), tokenizer={"name": "hubert-l6-km8"}, deduplicated=True)
    with pytest.raises(UnitMismatchError, match="expects units of tokenizer 'hubert-l6-km8'"):
        LikelihoodScorer(tokenizer, other)


# ----------------------------------------------------------------------------------------------------------- CLI
def test_cli_end_to_end_writes_table_report_and_submission(tmp_path, tokenizer, tiny_lm, capsys):
    tok_dir = tokenizer.save_pretrained(tmp_path / "tok")
    lm_dir = tiny_lm.save_pretrained(tmp_path / "lm")
    zr, _ = lexical_split(tmp_path / "zr2021")
    storycloze_dir(tmp_path / "sSC", ["0_0", "0_1", "1_0", "1_1"])
    out = tmp_path / "eval" / "report.json"
    args = ["eval", "suite=[swuggy,sstorycloze]", f"path={{swuggy: {tmp_path / 'zr2021'}, sstorycloze: {tmp_path / 'sSC'}}}",
            f"lm={lm_dir}", f"tokenizer={tok_dir}", f"output={out}", "batch_size=4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "lexical_invocab" in printed and "sstorycloze" in printed and "frequency" in printed
    report = read_report(out)
    assert report["scoring"]["score"] == "mean" and report["scoring"]["add_eos"] is True
    lexical = report["suites"]["swuggy"]
    assert lexical["pairs"] == 10 and lexical["files"] == 20 and lexical["metrics"]["lexical_all"]["n"] == 5
    assert 0.0 <= lexical["metrics"]["lexical_all"]["accuracy"] <= 1.0
    submission = read_submission(lexical["submission"])
    assert set(submission) == {p.stem for p in zr.glob("*.wav")}
    assert report["suites"]["sstorycloze"]["submission"] is None
    assert main(args) == 2 and "already exists (pass overwrite=true" in capsys.readouterr().err
    quick = run_eval(EvalConfig(suite="swuggy", path=str(tmp_path / "zr2021"), lm=str(lm_dir), tokenizer=str(tok_dir),
                                output=str(tmp_path / "quick.json"), max_items=2))
    assert quick["suites"]["swuggy"]["items"] == 2 and quick["suites"]["swuggy"]["submission"] is None
    assert json.loads((tmp_path / "quick.json").read_text())["suites"]["swuggy"]["pairs"] == 4


def test_cli_tstorycloze_and_salmon_accuracies_follow_the_lm_scores(tmp_path, tokenizer, tiny_lm, capsys):
    """`textless eval suite=[tstorycloze,salmon]` on official layouts; every expected outcome comes from the LM's
    log-likelihoods computed directly (or is an exact 0.5 tie: the two sides are the same audio)."""
    from textless.audio import load_audio

    tok_dir = tokenizer.save_pretrained(tmp_path / "tok")
    lm_dir = tiny_lm.save_pretrained(tmp_path / "lm")
    tsc = tmp_path / "tSC"  # slamkit naming; story 1's wrong ending is the very same audio
    write_wav(tsc / "0_0.wav", 2, 0.4)
    write_wav(tsc / "0_1.wav", 1, 0.5)
    write_wav(tsc / "1_0.wav", 4, 0.3)
    (tsc / "1_1.wav").write_bytes((tsc / "1_0.wav").read_bytes())
    write_wav(tsc / "2_0.wav", 3, 0.3)
    write_wav(tsc / "2_1.wav", 6, 0.4)
    salmon = tmp_path / "salmon"
    for p, part in enumerate(PARTS):  # sample 0: two different recordings; sample 1: positive == negative
        write_wav(salmon / part / "sample_0_0.wav", 2 * p, 0.3)
        write_wav(salmon / part / "sample_0_1.wav", 2 * p + 1, 0.4)
        write_wav(salmon / part / "sample_1_0.wav", 2 * p + 3, 0.3)
        (salmon / part / "sample_1_1.wav").write_bytes((salmon / part / "sample_1_0.wav").read_bytes())
    # a second negative identical to the positive: only the FIRST negative counts (official), so no tie from it
    (salmon / "bg_alignment" / "sample_0_2.wav").write_bytes((salmon / "bg_alignment" / "sample_0_0.wav").read_bytes())
    out = tmp_path / "report.json"
    assert main(["eval", "suite=[tstorycloze,salmon]", f"path={{tstorycloze: {tsc}, salmon: {salmon}}}",
                 f"lm={lm_dir}", f"tokenizer={tok_dir}", f"output={out}", "batch_size=4"]) == 0
    printed = capsys.readouterr().out

    def score(path):  # slamkit's default: mean log-prob per token over bos + units + eos
        return direct_log_likelihood(tiny_lm, tokenizer.encode(load_audio(path, SR)[0], SR).ids)[1]

    def outcome(positive, negative):
        if positive.read_bytes() == negative.read_bytes():
            return 0.5
        s_pos, s_neg = score(positive), score(negative)
        assert abs(s_pos - s_neg) > 1e-3, (positive, negative)  # far from a tie: batching cannot flip it
        return float(s_pos > s_neg)

    report = read_report(out)
    story = report["suites"]["tstorycloze"]
    expected = (outcome(tsc / "0_0.wav", tsc / "0_1.wav") + 0.5 + outcome(tsc / "2_0.wav", tsc / "2_1.wav")) / 3
    assert (story["pairs"], story["items"], story["files"], story["submission"]) == (3, 3, 6, None)
    assert story["metrics"]["tstorycloze"]["accuracy"] == pytest.approx(expected)
    assert story["metrics"]["tstorycloze"]["n"] == 3
    parts = report["suites"]["salmon"]
    assert (parts["pairs"], parts["items"], parts["files"]) == (16, 16, 32)  # sample_0_2 is not scored
    assert list(parts["metrics"]) == list(PARTS)
    won = {part: outcome(salmon / part / "sample_0_0.wav", salmon / part / "sample_0_1.wav") for part in PARTS}
    assert {part: (m["accuracy"], m["n"]) for part, m in parts["metrics"].items()} == {
        part: (pytest.approx((won[part] + 0.5) / 2), 2) for part in PARTS}
    assert 0.0 < sum(won.values()) < len(PARTS)  # the fixture has won and lost pairs, not one outcome everywhere
    assert "bg_alignment" in printed and "tstorycloze" in printed and "first negative (official)" in printed


def test_cli_config_errors(tmp_path, capsys):
    assert main(["eval", "suite=swuggy"]) == 2
    assert "eval needs path=" in capsys.readouterr().err
    assert main(["eval", "suite=[swuggy,salmon]", "path={swuggy: /x}"]) == 2
    assert "missing ['salmon']" in capsys.readouterr().err
    assert main(["eval", "suite=swuggy", "score=max", f"path={tmp_path}"]) == 2
    assert "score must be one of mean, sum" in capsys.readouterr().err


def test_plot_compares_reports(tmp_path):
    from benchmarks.plot_eval import metric_table, plot_reports

    def report(acc):
        return {"format": "textless.eval.likelihood", "version": 1, "suites": {"swuggy": {
            "metrics": {"lexical_all": {"accuracy": acc, "n": 5, "std": None}},
            "breakdowns": {"frequency": {"oov": {"accuracy": None, "n": 0, "std": None}}}}}}

    paths = []
    for name, acc in (("a", 0.5), ("b", 0.75)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report(acc)))
    names, table = metric_table([report(0.5), report(0.75)], breakdowns=True)
    assert names == ["swuggy: lexical_all", "swuggy frequency=oov"]
    assert table[:, 0].tolist() == [50.0, 75.0] and np.isnan(table[:, 1]).all()
    assert plot_reports(paths, tmp_path / "cmp.png").stat().st_size > 0
