"""The units contract (textless.data.identity): one identity of a unit stream and one rule, applied by every
consumer with the same error. Each consumer here is fed units of the same tokenizer name but another k-means (another
hash) and must refuse them with the same problem phrase, naming both sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textless.data.identity import UnitIdentity, UnitMismatchError, check_fits, fit_problems
from textless.data.units import UnitMeta, UnitSequence, write_units
from textless.eval.likelihood import LikelihoodScorer
from textless.jobs.generate import GenerateConfig, generate
from textless.lm.model import UnitLM
from textless.lm.train import TrainConfig, train
from textless.lm.vocab import UnitVocab
from textless.pipeline import SpeechPipeline
from textless.tokenizers import KMeans, SpeechTokenizer, load_encoder
from textless.vocoders import UnitHiFiGANConfig, UnitVocoder

K = 12


def _tokenizer(seed: int) -> SpeechTokenizer:
    centroids = np.random.default_rng(seed).normal(size=(K, 39)).astype(np.float32)  # MFCC + deltas: 39 dims
    return SpeechTokenizer(load_encoder("mfcc"), KMeans.from_centroids(centroids))


@pytest.fixture(scope="module")
def made():
    """(the tokenizer the consumers were made for, another one of the same name)."""
    ours, other = _tokenizer(0), _tokenizer(1)
    assert ours.identity()["name"] == other.identity()["name"] == "mfcc-km12"
    return ours, other


def _phrase(expected: SpeechTokenizer, given: SpeechTokenizer, consumer: str) -> str:
    e, g = expected.identity()["kmeans_sha256"], given.identity()["kmeans_sha256"]
    return (f"{consumer} expects units of tokenizer 'mfcc-km12' (kmeans_sha256={e}) but the units come from "
            f"tokenizer 'mfcc-km12' (kmeans_sha256={g})")


def _lm(tok: SpeechTokenizer) -> UnitLM:
    torch.manual_seed(0)
    identity = tok.unit_identity()
    return UnitLM.from_scratch("tiny", UnitVocab.default(K), tokenizer=identity.tokenizer,
                               frame_rate=identity.frame_rate, deduplicated=identity.deduplicated)


def _vocoder(tok: SpeechTokenizer) -> UnitVocoder:
    cfg = UnitHiFiGANConfig(num_embeddings=K, embedding_dim=8, upsample_rates=[5, 4, 4, 2],
                            upsample_kernel_sizes=[11, 8, 8, 4], upsample_initial_channel=16,
                            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]])
    return UnitVocoder.from_config(cfg, tokenizer=tok.identity(), deduplicated=True)


def _units(path, tok: SpeechTokenizer):
    rng = np.random.default_rng(3)
    seqs = []
    for i in range(40):
        units = rng.permutation(K)[: int(rng.integers(3, K))]  # no two equal neighbours
        seqs.append(UnitSequence(f"u{i}", units, rng.integers(1, 4, len(units))))
    return write_units(path, seqs, tok.unit_meta(), encoding="binary")


def test_every_consumer_refuses_another_tokenizers_units_with_the_same_error(made, tmp_path):
    ours, other = made
    theirs = _units(tmp_path / "theirs", other)
    lm_dir = _lm(ours).save_pretrained(tmp_path / "lm")
    voc_dir = _vocoder(ours).save_pretrained(tmp_path / "voc")
    failures: dict[str, str] = {}

    def refused(name: str, call) -> None:
        with pytest.raises(UnitMismatchError) as err:
            call()
        failures[name] = str(err.value)

    # a unit LM: training on them (resuming a run made for ours), generating from them, scoring them, a pipeline
    train(TrainConfig(train_dataset=str(_units(tmp_path / "ours", ours)), output_dir=str(tmp_path / "run"),
                      context_length=16, batch_size=2, max_steps=1, progress=False, tensorboard=False))
    refused("train", lambda: train(TrainConfig(train_dataset=str(theirs), output_dir=str(tmp_path / "run"),
                                               context_length=16, batch_size=2, max_steps=2, progress=False,
                                               tensorboard=False)))
    refused("generate", lambda: generate(GenerateConfig(lm=str(lm_dir), prompts=str(theirs),
                                                        output=str(tmp_path / "gen"))))
    refused("score", lambda: LikelihoodScorer(other, _lm(ours)))
    refused("pipeline LM", lambda: SpeechPipeline(other, _lm(ours), None))
    # a vocoder: in a pipeline, voicing generated units
    refused("pipeline vocoder", lambda: SpeechPipeline(other, None, _vocoder(ours)))
    refused("generate vocoder", lambda: generate(GenerateConfig(lm=str(_lm(other).save_pretrained(tmp_path / "lm2")),
                                                                prompts=str(theirs), vocoder=str(voc_dir),
                                                                output=str(tmp_path / "gen2"))))
    for name, message in failures.items():
        consumer = "the vocoder" if "vocoder" in name else "the LM"
        assert _phrase(ours, other, consumer) in message, (name, message)
        assert message.startswith("the units of ") and " do not fit " in message, (name, message)
    assert str(theirs) in failures["generate"] and str(lm_dir) in failures["generate"]
    assert str(voc_dir) in failures["generate vocoder"]
    assert not (tmp_path / "gen").exists() and not (tmp_path / "gen2").exists()


def test_the_rule_field_by_field():
    tok = {"name": "hubert-l6-km100", "kmeans_sha256": "ab"}
    known = UnitIdentity(tok, 100, 50.0, True, False)
    assert fit_problems(known, known) == []
    assert fit_problems(known, UnitIdentity({**tok, "layer": 6}, 100, 50.0, True, False)) == []  # other keys: free
    assert fit_problems(known, UnitIdentity({"name": "hubert-l6-km100"}, 100, 50.0, True, False)) == []  # no hash
    wrong = [UnitIdentity({**tok, "kmeans_sha256": "cd"}, 100, 50.0, True, False),
             UnitIdentity(tok, 50, 50.0, True, False), UnitIdentity(tok, 100, 25.0, True, False),
             UnitIdentity(tok, 100, 50.0, False, False), UnitIdentity(tok, 100, 50.0, True, True)]
    phrases = ["expects units of tokenizer", "has 100 units but the units have vocab_size 50",
               "expects 50 Hz units but the units are 25 Hz",
               "expects deduplicated units but the units are non-deduplicated",
               "expects plain units but the units are BPE tokens"]
    for given, phrase in zip(wrong, phrases, strict=True):
        (problem,) = fit_problems(known, given, "the LM")
        assert phrase in problem
    # a consumer that knows no tokenizer (an imported checkpoint): ids must fit, nothing else is compared
    imported = UnitIdentity(None, 500, None, None, None)
    assert fit_problems(imported, UnitIdentity(tok, 100, 50.0, True, False)) == []
    (problem,) = fit_problems(imported, UnitIdentity(tok, 1000, 50.0, True, False), "the LM")
    assert problem == "the LM has 500 units but the units have vocab_size 1000 (their ids do not fit)"
    with pytest.raises(UnitMismatchError, match=r"^the units of unit dataset 'a' do not fit unit LM 'b': .*; .*"):
        check_fits(known, UnitIdentity(tok, 50, 25.0, True, False), consumer="unit LM 'b'",
                   source="unit dataset 'a'")


def test_identities_round_trip_and_a_dataset_carries_its_producers(made, tmp_path):
    ours, _ = made
    identity = ours.unit_identity()
    assert UnitIdentity.from_dict(identity.to_dict()) == identity
    meta = UnitMeta.from_identity(identity, {"source": "x"})
    assert meta.identity == identity and meta.extra == {"source": "x"}
    with pytest.raises(ValueError, match="unknown: frame_rate"):
        UnitMeta.from_identity(UnitIdentity({"name": "t"}, 10, None, True, False))
    assert "tokenizer 'mfcc-km12' (kmeans_sha256=" in identity.describe() and "12 units, 100 Hz" in identity.describe()
