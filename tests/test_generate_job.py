import numpy as np
import pytest

from textless.cli import main
from textless.data.identity import UnitMismatchError
from textless.data.units import UnitMeta, UnitSequence, crop_prompt, write_units
from textless.errors import ConfigError, TextlessError
from textless.jobs.generate import GenerateConfig, generate, read_generations
from textless.lm.model import UnitLM, lm_meta
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
                                  max_new_tokens=12, prompt_multiple=None, output=str(tmp_path / "gen")))
    meta, records = read_generations(out)
    assert meta["tokenizer"] == {"name": "toy-km20"} and meta["sampling"]["num_samples"] == 2
    assert [r["id"] for r in records] == ["p0/0", "p0/1", "p1/0", "p1/1", "p2/0", "p2/1"]
    for r in records:
        assert sum(r["prompt_durations"]) <= 10 and len(r["units"]) <= 12
        assert all(0 <= u < 20 for u in r["units"])
    # same seed, same continuations
    again = generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), prompt_seconds=0.2, num_samples=2,
                                    max_new_tokens=12, prompt_multiple=None, output=str(tmp_path / "gen2")))
    assert read_generations(again)[1] == records


def test_generate_refuses_units_of_another_tokenizer(tmp_path, lm_and_units):
    lm_dir, _ = lm_and_units
    meta = UnitMeta(tokenizer={"name": "other-km20"}, frame_rate=50.0, vocab_size=20, deduplicated=False)
    other = write_units(tmp_path / "other", [UnitSequence("x", np.arange(10))], meta)
    with pytest.raises(TextlessError, match="expects units of tokenizer 'toy-km20'"):
        generate(GenerateConfig(lm=str(lm_dir), prompts=str(other), output=str(tmp_path / "g")))


def _units(path, tokenizer, vocab_size=20, deduplicated=True):
    meta = UnitMeta(tokenizer=tokenizer, frame_rate=50.0, vocab_size=vocab_size, deduplicated=deduplicated)
    units = np.array([3, 5, 2, 7, 1, 0, 4])
    return write_units(path, [UnitSequence("x", units, np.ones(len(units), dtype=np.int64) if deduplicated else None)],
                       meta)


@pytest.mark.parametrize("tokenizer,vocab_size,deduplicated,match", [
    ({"name": "toy-km20", "kmeans_sha256": "ffff"}, 20, True, r"'toy-km20'.*'toy-km20' \(kmeans_sha256=ffff\)"),
    ({"name": "toy-km20"}, 20, False, "expects deduplicated units but the units are non-deduplicated"),
    ({"name": "toy-km20"}, 30, True, "the LM has 20 units but the units have vocab_size 30"),
])
def test_generate_checks_units_as_training_does(tmp_path, tokenizer, vocab_size, deduplicated, match):
    """Same name but another k-means hash, another dedup setting or another vocabulary: refused, naming the LM."""
    meta = UnitMeta(tokenizer={"name": "toy-km20", "kmeans_sha256": "0123"}, frame_rate=50.0, vocab_size=20,
                    deduplicated=True)
    lm_dir = UnitLM.from_scratch("tiny", UnitVocab.default(20), **lm_meta(meta)).save_pretrained(tmp_path / "lm")
    good = _units(tmp_path / "good", meta.tokenizer)
    generate(GenerateConfig(lm=str(lm_dir), prompts=str(good), max_new_tokens=2, output=str(tmp_path / "ok")))
    bad = _units(tmp_path / "bad", tokenizer, vocab_size, deduplicated)
    with pytest.raises(UnitMismatchError, match=match) as err:
        generate(GenerateConfig(lm=str(lm_dir), prompts=str(bad), output=str(tmp_path / "g")))
    assert f"do not fit the LM '{lm_dir}'" in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("family", ["twist", "slamkit"])
def test_generate_with_an_imported_lm_accepts_units_that_fit(tmp_path, family):
    """TWIST / slamkit checkpoints record no tokenizer: any units whose ids fit their 500 units are accepted."""
    from lm_fixtures import write_slamkit_dir, write_twist_dir

    write = write_twist_dir if family == "twist" else write_slamkit_dir
    lm_dir, _ = write(tmp_path / family)
    units = _units(tmp_path / "units", {"name": "anything-km100"}, vocab_size=100)
    out = generate(GenerateConfig(lm=str(lm_dir), prompts=str(units), max_new_tokens=6, prompt_multiple=None,
                                  temperature=0, output=str(tmp_path / "g")))
    meta, [record] = read_generations(out)
    assert meta["vocab_size"] == 500 and meta["tokenizer"] == {"name": "anything-km100"}
    assert record["prompt_units"] == [3, 5, 2, 7, 1, 0, 4] and all(0 <= u < 500 for u in record["units"])
    too_big = _units(tmp_path / "big", {"name": "anything-km1000"}, vocab_size=1000)
    with pytest.raises(UnitMismatchError, match="vocab_size 1000 \\(their ids do not fit\\)"):
        generate(GenerateConfig(lm=str(lm_dir), prompts=str(too_big), output=str(tmp_path / "g2")))


def test_generate_passes_sampling_and_attention_options(tmp_path, lm_and_units, monkeypatch):
    import textless.jobs.generate as job

    lm_dir, units_dir = lm_and_units
    seen = {}

    def spy(lm, prompts, config, **kw):
        seen.update(config=config, attn=lm.model.config._attn_implementation)
        return real(lm, prompts, config, **kw)

    real = job.generate_units
    monkeypatch.setattr(job, "generate_units", spy)
    assert main(["generate", f"lm={lm_dir}", f"prompts={units_dir}", "min_new_tokens=4", "use_cache=false",
                 "attn_implementation=eager", "max_new_tokens=6", "prompt_multiple=null", "temperature=1.0",
                 f"output={tmp_path / 'g'}"]) == 0
    assert (seen["config"].min_new_tokens, seen["config"].use_cache, seen["attn"]) == (4, False, "eager")
    meta, records = read_generations(tmp_path / "g")
    assert meta["sampling"]["min_new_tokens"] == 4 and meta["sampling"]["use_cache"] is False
    assert all(4 <= len(r["units"]) <= 6 for r in records)  # eos is not allowed before 4 new tokens
    # greedy continuations do not depend on the KV cache
    outs = [generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), temperature=0, max_new_tokens=8,
                                    use_cache=cache, output=str(tmp_path / f"c{cache}")))
            for cache in (True, False)]
    assert read_generations(outs[0])[1] == read_generations(outs[1])[1]


def test_generate_refuses_a_missing_flash_attention_package(tmp_path, lm_and_units, monkeypatch, capsys):
    import textless.lm.attention as model_module

    lm_dir, units_dir = lm_and_units
    monkeypatch.setattr(model_module, "_importable", lambda name: False)
    assert main(["generate", f"lm={lm_dir}", f"prompts={units_dir}", "attn_implementation=flash_attention_2",
                 f"output={tmp_path / 'g'}"]) == 2
    assert "'flash_attn', which is not installed" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="min_new_tokens must be >= 0"):
        generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), min_new_tokens=-1))


def test_generate_cli_needs_a_tokenizer_for_audio(capsys, lm_and_units, tmp_path):
    lm_dir, _ = lm_and_units
    from textless.data.corpus import bundled_corpus_dir

    audio = bundled_corpus_dir() / "audio"
    assert main(["generate", f"lm={lm_dir}", f"prompts={audio}", f"output={tmp_path / 'g'}"]) == 2
    assert "audio prompts need tokenizer=" in capsys.readouterr().err
    # bundled:<split> without a tokenizer is the split as the starter's units (which this toy LM does not take)
    assert main(["generate", f"lm={lm_dir}", "prompts=bundled:valid", f"output={tmp_path / 'g'}"]) == 2
    assert "expects units of tokenizer 'toy-km20'" in capsys.readouterr().err


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


def _tiny_vocoder(tmp_path, *, duration_predictor=True, multispkr=False):
    import torch

    from textless.vocoders import UnitHiFiGANConfig, UnitVocoder

    cfg = UnitHiFiGANConfig(num_embeddings=20, embedding_dim=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
                            upsample_initial_channel=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]],
                            duration_predictor=duration_predictor, multispkr=multispkr,
                            num_speakers=2 if multispkr else 0, speakers=["ann", "bob"] if multispkr else None,
                            dur_predictor_params={"encoder_embed_dim": 8, "var_pred_hidden_dim": 8},
                            sampling_rate=200)  # hop 4 at 200 Hz = 50 Hz units
    torch.manual_seed(0)
    voc = UnitVocoder.from_config(cfg, tokenizer={"name": "toy-km20"}, deduplicated=True)
    return voc.save_pretrained(tmp_path / "voc"), voc


def test_generate_writes_audio_with_a_vocoder(tmp_path, lm_and_units):
    import soundfile as sf

    lm_dir, units_dir = lm_and_units
    voc_dir, voc = _tiny_vocoder(tmp_path)
    out = generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), prompt_seconds=0.2, num_samples=2,
                                  max_new_tokens=12, prompt_multiple=None, vocoder=str(voc_dir),
                                  output=str(tmp_path / "gen")))
    _, records = read_generations(out)
    for r in records:
        prompt_wav, sr = sf.read(out / r["prompt_audio"], dtype="float32")
        assert sr == 200 and len(prompt_wav) == sum(r["prompt_durations"]) * voc.hop
        # the prompt audio is the vocoder's resynthesis of the prompt units with their durations (PCM_16)
        ref = voc.synthesize([np.asarray(r["prompt_units"])], [np.asarray(r["prompt_durations"])])[0]
        np.testing.assert_allclose(prompt_wav, ref, atol=1 / 2**15 + 1e-6)
        if not r["units"]:
            assert r["audio"] is None
            continue
        wav, _ = sf.read(out / r["audio"], dtype="float32")
        # every continuation unit lasts >= 1 predicted frame (exact counts can flip at .5 between batch layouts)
        assert len(wav) % voc.hop == 0 and len(wav) // voc.hop >= len(r["units"])
    voiced = [r["audio"] for r in records if r["audio"]]
    assert len(set(voiced)) == len(voiced) >= 4


def test_generate_vocoder_errors(tmp_path, lm_and_units):
    lm_dir, units_dir = lm_and_units
    voc_dir, _ = _tiny_vocoder(tmp_path, duration_predictor=False)
    with pytest.raises(ConfigError, match="no duration predictor"):
        generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), vocoder=str(voc_dir),
                                output=str(tmp_path / "g")))
    spk_dir, _ = _tiny_vocoder(tmp_path / "spk", multispkr=True)
    out = generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), prompt_seconds=0.2, max_new_tokens=4,
                                  prompt_multiple=None, vocoder=str(spk_dir), speaker="bob",
                                  output=str(tmp_path / "g2")))
    assert (out / "audio" / "p0.0.wav").is_file()
    with pytest.raises(TextlessError, match="unknown speaker 'zed'"):
        generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), vocoder=str(spk_dir), speaker="zed",
                                output=str(tmp_path / "g3")))


class Killed(BaseException):
    """What kill -9 looks like to the code after it: nothing more runs."""


def test_a_killed_generation_resumes_to_the_uninterrupted_output_and_refuses_other_settings(tmp_path, lm_and_units,
                                                                                            monkeypatch):
    import textless.jobs.generate as job
    from textless.utils.runs import ResumeMismatchError

    lm_dir, units_dir = lm_and_units
    common = {"lm": str(lm_dir), "prompts": str(units_dir), "prompt_seconds": 0.2, "num_samples": 2,
              "max_new_tokens": 8, "chunk_prompts": 1, "progress": False}
    whole = read_generations(generate(GenerateConfig(**common, output=str(tmp_path / "whole"))))[1]
    real, calls, kill_at = job.generate_units, [], [2]

    def killed_on_the_second_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == kill_at[0]:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(job, "generate_units", killed_on_the_second_chunk)
    out = tmp_path / "gen"
    with pytest.raises(Killed):
        generate(GenerateConfig(**common, output=str(out)))
    assert not out.exists() and (tmp_path / "gen.parts" / "chunks.jsonl").is_file()
    with pytest.raises(ResumeMismatchError, match=r"sampling.temperature: 0.8 there, 1.0 now.*restart=true"):
        generate(GenerateConfig(**{**common, "temperature": 1.0}, output=str(out)))
    calls.clear()
    kill_at[0] = None
    assert read_generations(generate(GenerateConfig(**common, output=str(out))))[1] == whole
    assert len(calls) == 2  # chunks 2 and 3 only
    assert not (tmp_path / "gen.parts").exists()


def test_generate_defaults_to_the_full_twist_budget(tmp_path, lm_and_units, logs):
    """Default: eos is never sampled, every continuation gets min(250, 3 x prompt units) new units, and the log says so."""
    lm_dir, units_dir = lm_and_units
    out = generate(GenerateConfig(lm=str(lm_dir), prompts=str(units_dir), prompt_seconds=0.2, progress=False,
                                  output=str(tmp_path / "g")))
    _, records = read_generations(out)
    assert all(len(r["units"]) == 3 * len(r["prompt_units"]) for r in records)
    assert "each continuation: min(250, 3 x prompt units) new units, eos never sampled" in "\n".join(logs)
