"""LSLM data (textless build-lslm, textless.jobs.build_lslm): both channels as long, the interruption's speech at the
recorded onset, the command / voice settings (held-out test speakers), the drawn probabilities, determinism, resume,
failures, sharding, the reader and its errors, the CLI and its recipe.

Tests with real speech run flite (fast, skipped where it is missing, failing under TEXTLESS_REQUIRE_TTS=1:
`conftest.require_tts`); the others use a fake synthesizer (a square wave whose length follows the text).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import require_tts

from textless.cli import main
from textless.dialogue.builder import load_sentences, speech_extent
from textless.dialogue.interruptions import ListeningMix, trim_to_speech
from textless.dialogue.lslm.examples import SPLITS, LSLMExample, read_lslm_examples
from textless.errors import ConfigError, FormatError, TextlessError
from textless.eval.builder.job import EngineSynthesizer
from textless.eval.builder.tts import ENGINES, SAMPLE_RATE, SynthesisError, Voice
from textless.jobs.build_lslm import BuildLSLMConfig, build_lslm, split_sentences

SR = SAMPLE_RATE
HAS_FLITE = not ENGINES["flite"].missing()
FLITE = ["flite:kal16", "flite:awb", "flite:rms", "flite:slt"]
WORDS = ["yes", "stop", "left", "house", "marvin", "seven"]
AMPLITUDE = 1000


class FakeSynth:
    """A square wave (period 40 samples) of 400 samples per character between 400 zeros; `fail` voices raise on
    every text but the probe ("okay")."""

    def __init__(self, fail: tuple[str, ...] = ()):
        self.fail = fail

    def text(self, voice: Voice, text: str) -> np.ndarray:
        if voice.voice in self.fail and text != "okay":
            raise SynthesisError(f"cannot read {text!r}")
        n = len(text) * 400
        wave = np.where((np.arange(n) // 20) % 2 == 0, AMPLITUDE, -AMPLITUDE).astype(np.int16)
        return np.concatenate([np.zeros(400, np.int16), wave, np.zeros(400, np.int16)])


def _cfg(out: Path, **kw) -> BuildLSLMConfig:
    base = {"output": str(out), "num_train": 8, "num_valid": 3, "num_test": 5, "speaking_voices": FLITE[:2],
            "interruption_voices": FLITE, "text": "corpus:all", "progress": False}
    return BuildLSLMConfig(**{**base, **kw})


def _fake_cfg(out: Path, **kw) -> BuildLSLMConfig:
    fake = {"speaking_voices": ["flite:a", "flite:b"], "interruption_voices": ["flite:c", "flite:d", "flite:e"]}
    return _cfg(out, **{**fake, **kw})


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()
            and (p.parent.name in ("speaking", "listening", "records") or p.name == "examples.jsonl")}


def _all(directory: Path) -> list[LSLMExample]:
    return [e for split in SPLITS for e in read_lslm_examples(directory, split)]


@pytest.fixture(scope="module")
def command_set(tmp_path_factory) -> tuple[BuildLSLMConfig, dict]:
    """A tiny command-setting set read by flite (16 examples)."""
    require_tts(HAS_FLITE, "flite is not installed")
    cfg = _cfg(tmp_path_factory.mktemp("lslm") / "command")
    return cfg, build_lslm(cfg)


# ---------------------------------------------------------------------------------------------- real speech (flite)
def test_command_set_layout_lengths_and_keyword(command_set):
    cfg, summary = command_set
    out = Path(cfg.output)
    pools = split_sentences(load_sentences("corpus:all", cfg.min_words, cfg.max_words))
    counts = {"train": 8, "valid": 3, "test": 5}
    for split in SPLITS:
        examples = read_lslm_examples(out, split)
        assert [e.id for e in examples] == [f"{split}-{i:06d}" for i in range(counts[split])]
        for e in examples:
            speaking, rate = sf.read(e.speaking, dtype="int16")
            listening, listening_rate = sf.read(e.listening, dtype="int16")
            assert rate == listening_rate == e.sample_rate == SR and speaking.ndim == listening.ndim == 1
            assert len(listening) == len(speaking) == e.samples and e.seconds == e.samples / SR
            assert speaking[0] != 0 and speaking[-1] != 0          # trimmed to its speech
            assert e.speaking.is_absolute() and e.speaking_voice in cfg.speaking_voices
            assert e.text in pools[split]                          # no sentence in two splits
            if e.interrupted:
                assert e.interruption_word == "honey" and e.interruption_voice in FLITE
                assert 0 <= e.onset <= e.seconds - cfg.mix.end_margin
            else:
                assert e.interruption_word is None and e.interruption_voice is None
            assert e.noise_kind is None or (e.noise_kind in cfg.noise_kinds and 0 <= e.snr_db <= 20)
    assert summary["built"] == summary["complete"] == 16 and summary["failures"] == []
    assert summary["words"] == ["honey"] and summary["real_time_factor"] > 1
    for split in SPLITS:
        examples = read_lslm_examples(out, split)
        assert summary["splits"][split]["complete"] == counts[split]
        assert summary["splits"][split]["interrupted"] == sum(e.interrupted for e in examples)


def test_the_onset_is_where_the_interruption_speech_starts(command_set):
    cfg, _ = command_set
    synth = EngineSynthesizer(cfg.stretch, 0.0)
    clean = [e for e in _all(Path(cfg.output)) if e.interrupted and e.noise_kind is None]
    assert clean, "the set should hold a clean interrupted example (seed 0)"
    for e in clean:
        listening = sf.read(e.listening, dtype="int16")[0]
        clip = trim_to_speech(synth.text(Voice.parse(e.interruption_voice), "honey"))
        first = speech_extent(clip)[0]
        start, onset = round(e.interruption_start * SR), round(e.onset * SR)
        assert start + first == onset and e.interruption_seconds == len(clip) / SR
        # the clip sits unscaled at its start (its tail cut at the end), silence elsewhere
        lo, hi = max(start, 0), min(start + len(clip), len(listening))
        placed = np.zeros_like(listening)
        placed[lo:hi] = clip[lo - start:hi - start]
        assert np.array_equal(listening, placed) and e.listening_gain == 1.0
        # the speech detector finds the onset in the listening channel itself (within 1 ms: frame grid)
        assert abs(speech_extent(listening)[0] - onset) <= SR // 1000


def test_same_config_same_bytes_and_resume_skips_complete_examples(command_set, tmp_path):
    cfg, _ = command_set
    again = _cfg(tmp_path / "again")
    build_lslm(again)
    reference = _digest(Path(cfg.output))
    assert len(reference) == 3 * 16 + 1 and _digest(tmp_path / "again") == reference
    out = tmp_path / "again"
    (out / "listening" / "train-000002.wav").unlink()
    (out / "records" / "test-000001.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "speaking").iterdir()
            if "train-000002" not in p.name and "test-000001" not in p.name}
    summary = build_lslm(again)
    assert (summary["built"], summary["skipped"]) == (2, 14)
    assert _digest(out) == reference
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    with pytest.raises(ConfigError, match="keyword"):
        build_lslm(_cfg(out, keyword="stop"))


def test_voice_setting_uses_many_words_and_held_out_speakers_only_in_test(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    cfg = _cfg(tmp_path / "voice", setting="voice", words=WORDS, held_out_voices=["flite:slt"], num_train=10,
               num_test=6, mix=ListeningMix(noise_prob=0.5, interrupt_prob=1.0))
    summary = build_lslm(cfg)
    voices = {split: {e.interruption_voice for e in read_lslm_examples(cfg.output, split)} for split in SPLITS}
    words = {e.interruption_word for e in _all(Path(cfg.output))}
    assert all(e.interrupted for e in _all(Path(cfg.output)))   # every utterance is longer than mu
    assert voices["test"] == {"flite:slt"}
    assert voices["train"] | voices["valid"] <= {"flite:kal16", "flite:awb", "flite:rms"}
    assert len(words) > 2 and words <= set(WORDS)
    assert summary["splits"]["test"]["interruption_speakers"] == ["slt"]
    assert "slt" not in summary["splits"]["train"]["interruption_speakers"]


def test_the_cli_command_builds_from_its_recipe(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    out = tmp_path / "cli"
    assert main(["build-lslm", f"output={out}", "num_train=2", "num_valid=1", "num_test=1", "text=corpus:all",
                 "speaking_voices=[flite:slt]", "interruption_voices=[flite:kal16,flite:awb]", "progress=false"]) == 0
    assert [e.id for e in read_lslm_examples(out, "test")] == ["test-000000"]
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["interruption_voices"] == ["flite:kal16", "flite:awb"]
    assert config["mix"]["noise_prob"] == 0.5 and config["noise_kinds"] == ["white", "pink", "tone"]  # the recipe's


@pytest.mark.slow
def test_a_process_pool_gives_the_same_bytes(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    build_lslm(_cfg(tmp_path / "serial", num_train=4, num_valid=1, num_test=2))
    build_lslm(_cfg(tmp_path / "pool", num_train=4, num_valid=1, num_test=2, num_workers=2))
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "pool")


# ---------------------------------------------------------------------------------------------- fake synthesizer
def test_drawn_noise_and_interruptions_follow_the_configured_probabilities(tmp_path):
    cfg = _fake_cfg(tmp_path / "half", num_train=200, num_valid=0, num_test=0)
    summary = build_lslm(cfg, FakeSynth())
    examples = read_lslm_examples(cfg.output, "train")
    noisy = sum(e.noise_kind is not None for e in examples) / len(examples)
    interrupted = sum(e.interrupted for e in examples) / len(examples)
    assert 0.4 <= noisy <= 0.6 and 0.4 <= interrupted <= 0.6   # binomial(200, 0.5): +-2.8 sd
    train = summary["splits"]["train"]
    assert (train["noise_fraction"], train["interruption_fraction"]) == (noisy, interrupted)
    assert (summary["noise_prob"], summary["interrupt_prob"]) == (0.5, 0.5)
    assert {e.noise_kind for e in examples} == {None, "white", "pink", "tone"}
    # the extremes
    noise_only = _fake_cfg(tmp_path / "noise", mix=ListeningMix(noise_prob=1.0, interrupt_prob=0.0, snr_min=5.0,
                                                                 snr_max=6.0))
    build_lslm(noise_only, FakeSynth())
    assert all(e.noise_kind is not None and 5 <= e.snr_db <= 6 and not e.interrupted for e in _all(tmp_path / "noise"))
    noise = tmp_path / "hum.wav"
    sf.write(noise, np.sin(np.arange(8000) * 0.3).astype(np.float32), 8000)
    speech_only = _fake_cfg(tmp_path / "speech", mix=ListeningMix(noise_prob=0.0, interrupt_prob=1.0))
    build_lslm(speech_only, FakeSynth())
    assert all(e.interrupted and e.noise_kind is None for e in _all(tmp_path / "speech"))
    recorded = _fake_cfg(tmp_path / "file", noise_kinds=[], noise_files=[str(noise)],
                         mix=ListeningMix(noise_prob=1.0))
    build_lslm(recorded, FakeSynth())
    assert {(e.noise_kind, e.noise_file) for e in _all(tmp_path / "file")} == {("recording", str(noise))}


def test_sharded_builds_equal_one_build_and_the_seed_changes_the_set(tmp_path):
    build_lslm(_fake_cfg(tmp_path / "one"), FakeSynth())
    for rank in (1, 0):
        build_lslm(_fake_cfg(tmp_path / "sharded", rank=rank, world_size=2), FakeSynth())
    build_lslm(_fake_cfg(tmp_path / "other", seed=1), FakeSynth())
    one = _digest(tmp_path / "one")
    assert one == _digest(tmp_path / "sharded")
    assert (tmp_path / "one" / "examples.jsonl").read_text() != (tmp_path / "other" / "examples.jsonl").read_text()


def test_failing_voices_are_reported_and_their_examples_skipped(tmp_path, logs):
    cfg = _fake_cfg(tmp_path / "fail", num_train=12)
    summary = build_lslm(cfg, FakeSynth(fail=("a", "d")))
    examples = _all(tmp_path / "fail")
    failed = {f["id"] for f in summary["failures"]}
    assert failed and len(examples) == 20 - len(failed) and not failed & {e.id for e in examples}
    assert all(e.speaking_voice != "flite:a" and e.interruption_voice != "flite:d" for e in examples)
    errors = " ".join(f["error"] for f in summary["failures"])
    assert "sentence by flite:a" in errors and "by flite:d" in errors
    assert any("failed and was skipped" in line for line in logs)


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="held_out_voices"):
        build_lslm(_fake_cfg(tmp_path / "x", setting="voice"), FakeSynth())
    with pytest.raises(ConfigError, match="babble"):
        build_lslm(_fake_cfg(tmp_path / "x", noise_kinds=["babble"]), FakeSynth())
    with pytest.raises(ConfigError, match="setting"):
        build_lslm(_fake_cfg(tmp_path / "x", setting="keyword"), FakeSynth())
    with pytest.raises(ConfigError, match="held-out speaker"):   # kal16 and kal: one speaker
        build_lslm(_fake_cfg(tmp_path / "x", interruption_voices=["flite:kal16"], held_out_voices=["flite:kal"]),
                   FakeSynth())
    with pytest.raises(ConfigError, match="listed twice"):
        build_lslm(_fake_cfg(tmp_path / "x", speaking_voices=["flite:a", "flite:a"]), FakeSynth())
    assert not (tmp_path / "x").exists()


def test_the_reader_names_the_manifest_when_it_is_broken(tmp_path):
    cfg = _fake_cfg(tmp_path / "set", num_train=3, num_valid=1, num_test=1)
    build_lslm(cfg, FakeSynth())
    manifest = tmp_path / "set" / "examples.jsonl"
    lines = manifest.read_text().splitlines()
    with pytest.raises(ConfigError, match="split"):
        read_lslm_examples(tmp_path / "set", "dev")
    manifest.write_text("\n".join([lines[0], "{not json", *lines[2:]]) + "\n")
    with pytest.raises(FormatError, match=r"examples\.jsonl:2: invalid JSON"):
        read_lslm_examples(tmp_path / "set", "test")
    record = json.loads(lines[1])
    del record["onset"]
    manifest.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    with pytest.raises(FormatError, match=r"examples\.jsonl:2: missing key 'onset'"):
        read_lslm_examples(tmp_path / "set", "train")
    manifest.write_text("\n".join(lines) + "\n")
    (tmp_path / "set" / "listening" / "valid-000000.wav").unlink()
    with pytest.raises(FormatError, match=r"examples\.jsonl:4: listening audio .*valid-000000\.wav"):
        read_lslm_examples(tmp_path / "set", "valid")
    shutil.rmtree(tmp_path / "set")
    with pytest.raises(TextlessError, match=r"examples\.jsonl' does not exist"):
        read_lslm_examples(tmp_path / "set", "train")
