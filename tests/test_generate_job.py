import numpy as np
import pytest

from textless.cli import main
from textless.data.units import UnitMeta, UnitSequence, write_units
from textless.errors import TextlessError
from textless.lm.generate_job import GenerateConfig, crop_prompt, generate, read_generations
from textless.lm.model import UnitLM
from textless.lm.vocab import UnitVocab


def test_crop_prompt_keeps_whole_runs():
    seq = UnitSequence("u", np.array([5, 6, 7, 8]), np.array([2, 3, 1, 4]))
    cropped = crop_prompt(seq, 0.1, frame_rate=50.0)  # 5 frames: runs of 2 + 3
    assert cropped.units.tolist() == [5, 6] and cropped.durations.tolist() == [2, 3]
    assert crop_prompt(seq, 0.001, 50.0).units.tolist() == [5]  # at least one unit
    assert crop_prompt(seq, None, 50.0) is seq
    frames = UnitSequence("f", np.arange(10))
    assert len(crop_prompt(frames, 0.1, 50.0).units) == 5


@pytest.fixture
def lm_and_units(tmp_path):
    meta = UnitMeta(tokenizer={"name": "toy-km20"}, frame_rate=50.0, vocab_size=20, deduplicated=True)
    rng = np.random.default_rng(0)
    seqs = []
    for i in range(3):
        units = rng.integers(0, 20, 40)
        units = units[np.r_[True, units[1:] != units[:-1]]]
        seqs.append(UnitSequence(f"p{i}", units, np.full(len(units), 2)))
    units_dir = write_units(tmp_path / "units", seqs, meta)
    lm = UnitLM.from_scratch("tiny", UnitVocab.default(20), tokenizer=meta.tokenizer, frame_rate=50.0,
                             deduplicated=True)
    return lm.save_pretrained(tmp_path / "lm"), units_dir


def test_generate_writes_a_generations_artifact(tmp_path, lm_and_units):
    lm_dir, units_dir = lm_and_units
    out = generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), prompt_seconds=0.2, num_samples=2,
                                  max_new_tokens=12, prompt_multiple=None, output=str(tmp_path / "gen")),
                   log=lambda *a: None)
    meta, records = read_generations(out)
    assert meta["tokenizer"] == {"name": "toy-km20"} and meta["sampling"]["num_samples"] == 2
    assert [r["id"] for r in records] == ["p0/0", "p0/1", "p1/0", "p1/1", "p2/0", "p2/1"]
    for r in records:
        assert sum(r["prompt_durations"]) <= 10 and len(r["units"]) <= 12
        assert all(0 <= u < 20 for u in r["units"])
    # same seed, same continuations
    again = generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), prompt_seconds=0.2, num_samples=2,
                                    max_new_tokens=12, prompt_multiple=None, output=str(tmp_path / "gen2")),
                     log=lambda *a: None)
    assert read_generations(again)[1] == records


def test_generate_refuses_units_of_another_tokenizer(tmp_path, lm_and_units):
    lm_dir, _ = lm_and_units
    meta = UnitMeta(tokenizer={"name": "other-km20"}, frame_rate=50.0, vocab_size=20, deduplicated=False)
    other = write_units(tmp_path / "other", [UnitSequence("x", np.arange(10))], meta)
    with pytest.raises(TextlessError, match="expects units of tokenizer 'toy-km20'"):
        generate(GenerateConfig(lm=str(lm_dir), prompts=str(other), output=str(tmp_path / "g")))


def test_generate_cli_needs_a_tokenizer_for_audio(capsys, lm_and_units, tmp_path):
    lm_dir, _ = lm_and_units
    assert main(["generate", f"lm={lm_dir}", "prompts=bundled:valid", f"output={tmp_path / 'g'}"]) == 2
    assert "audio prompts need tokenizer=" in capsys.readouterr().err


def test_generate_from_audio_prompts(tmp_path):
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.tokenizers.encoders import load_encoder
    from textless.tokenizers.kmeans import KMeans

    centroids = np.random.default_rng(0).normal(size=(20, 39)).astype(np.float32) * 10
    tokenizer = SpeechTokenizer(load_encoder("mfcc"), KMeans.from_centroids(centroids))
    tok_dir = tokenizer.save_pretrained(tmp_path / "tok")
    lm = UnitLM.from_scratch("tiny", UnitVocab.default(20), tokenizer=tokenizer.identity(), frame_rate=100.0,
                             deduplicated=True)
    lm_dir = lm.save_pretrained(tmp_path / "lm")
    assert main(["generate", f"lm={lm_dir}", "prompts=bundled:valid", f"tokenizer={tok_dir}", "max_prompts=2",
                 "max_new_tokens=5", f"output={tmp_path / 'g'}"]) == 0
    meta, records = read_generations(tmp_path / "g")
    assert meta["frame_rate"] == 100.0 and len(records) == 2
    assert all(sum(r["prompt_durations"]) <= 300 for r in records)  # 3 s at 100 Hz
