"""Duplex S2S data (textless build-duplex-s2s, textless.jobs.build_duplex_s2s; reader textless.dialogue.duplex_s2s_data):
the agent answers exactly 0.64 s after the user's turn, a barge-in leaves exactly 0.64 s of agent speech after the
user's onset, each channel is silent outside its role's segments, the impatient test copy halves the gaps before user
turns, held-out user voices speak only in test, the dialogues source splits roles, determinism, resume, failures, the
reader and its errors, the CLI and its recipe.

Tests with real speech run flite (fast, skipped where it is missing, failing under TEXTLESS_REQUIRE_TTS=1:
`conftest.require_tts`); the others use a fake synthesizer (a square wave whose length follows the text).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import require_tts

from textless.cli import main
from textless.dialogue.builder import load_dialogues
from textless.dialogue.duplex_s2s_data import SETS, SPLITS, DuplexS2SConversation, read_duplex_s2s
from textless.dialogue.interruptions import AGENT, USER
from textless.dialogue.timeline import Segment, Timeline
from textless.errors import ConfigError, FormatError, TextlessError
from textless.eval.builder.tts import ENGINES, SAMPLE_RATE, SynthesisError, Voice
from textless.jobs.build_dialogues import BuildDialoguesConfig, build_dialogues
from textless.jobs.build_duplex_s2s import BuildDuplexS2SConfig, build_duplex_s2s, dialogue_agent_turns

SR = SAMPLE_RATE
HAS_FLITE = not ENGINES["flite"].missing()
LEAD = KEEP = round(0.64 * SR)           # samples: the agent's lead silence and the speech kept after a barge-in
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


def _cfg(out: Path, **kw) -> BuildDuplexS2SConfig:
    """Users kal16 / awb (train, valid) and rms (test only), agent slt; every other turn change a barge-in."""
    base = {"output": str(out), "num_train": 3, "num_valid": 1, "num_test": 3, "turns": 3,
            "voices": ["flite:kal16", "flite:awb"], "held_out_voices": ["flite:rms"], "agent_voice": "flite:slt",
            "barge_in_prob": 0.5, "text": "corpus:all", "progress": False}
    return BuildDuplexS2SConfig(**{**base, **kw})


def _fake_cfg(out: Path, **kw) -> BuildDuplexS2SConfig:
    fake = {"voices": ["flite:a", "flite:b"], "held_out_voices": [], "agent_voice": "",
            "agent_voices": ["flite:c", "flite:d", "flite:e"]}
    return _cfg(out, **{**fake, **kw})


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and ".parts" not in p.parts
            and p.name not in ("summary.json", "run.json")}


def _all(directory: Path) -> list[DuplexS2SConversation]:
    return [c for split in SPLITS for which in SETS for c in read_duplex_s2s(directory, split, which)]


def _samples(seconds: float) -> int:
    return round(seconds * SR)


def _pairs(timeline: Timeline) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((user start, end), (agent start, end)) samples of every QA pair, in order."""
    users = [(_samples(a), _samples(b)) for a, b in timeline.channel(USER)]
    agents = [(_samples(a), _samples(b)) for a, b in timeline.channel(AGENT)]
    assert len(users) == len(agents)
    return list(zip(users, agents))


@pytest.fixture(scope="module")
def tts_set(tmp_path_factory) -> tuple[BuildDuplexS2SConfig, dict]:
    """A tiny set read by flite: 3 train, 1 valid, 3 test conversations (+ 3 impatient copies) of 3 QA pairs."""
    require_tts(HAS_FLITE, "flite is not installed")
    cfg = _cfg(tmp_path_factory.mktemp("duplex") / "tts")
    return cfg, build_duplex_s2s(cfg)


# ---------------------------------------------------------------------------------------------- real speech (flite)
def test_layout_reader_and_agent_turns(tts_set):
    cfg, summary = tts_set
    out = Path(cfg.output)
    counts = {"train": 3, "valid": 1, "test": 3}
    for split in SPLITS:
        for which in SETS:
            conversations = read_duplex_s2s(out, split, which)
            expected = counts[split] if which == "normal" or split == "test" else 0
            assert [c.id for c in conversations] == [f"{split}-{i:06d}" for i in range(expected)]
            for c in conversations:
                audio, timeline = c.audio(), c.load_timeline()
                assert audio.shape == (2, c.samples) and c.sample_rate == SR and c.seconds == c.samples / SR
                assert c.stereo.is_absolute() and c.stereo.parent.parent.name == which
                assert timeline.speakers == (USER, AGENT) and timeline.conversation_id == c.id
                assert _samples(timeline.duration) == c.samples
                # the agent turns: exactly the agent's timeline segments (after any cut), one per QA pair
                assert c.agent_turns == timeline.channel(AGENT) and len(c.agent_turns) == cfg.turns
                assert c.barge_ins == len(timeline.interruptions) and c.agent_voice == "flite:slt"
    assert summary["built"] == summary["complete"] == 7 and summary["records"] == 10 and summary["failures"] == []
    barge_ins = sum(c.barge_ins for c in _all(out))
    assert 0 < barge_ins < 10 * (cfg.turns - 1)    # both kinds of turn change are in the set
    assert summary["splits"]["test"]["impatient"]["complete"] == 3 and "impatient" not in summary["splits"]["train"]


def test_each_channel_is_silent_outside_its_roles_segments(tts_set):
    cfg, _ = tts_set
    for c in _all(Path(cfg.output)):
        audio, timeline = c.audio(), c.load_timeline()
        for channel, role in enumerate((USER, AGENT)):
            inside = np.zeros(c.samples, bool)
            for start, end in timeline.channel(role):
                inside[_samples(start):_samples(end)] = True
                assert audio[channel, _samples(start)] != 0      # each turn is trimmed to its speech
            assert np.all(audio[channel, ~inside] == 0)
            assert np.any(audio[channel, inside] != 0)
        # where only the agent speaks, the user's channel is silent, and vice versa
        user = np.zeros(c.samples, bool)
        for start, end in timeline.channel(USER):
            user[_samples(start):_samples(end)] = True
        assert np.all(audio[0, ~user] == 0) and not np.all(audio[1, ~user] == 0)


def test_the_agent_answers_064_s_after_the_user_and_stops_064_s_after_a_barge_in(tts_set):
    cfg, _ = tts_set
    seen = {"barge_in": 0, "gap": 0}
    for c in _all(Path(cfg.output)):
        audio, timeline = c.audio(), c.load_timeline()
        pairs = _pairs(timeline)
        onsets = {_samples(i.onset): i for i in timeline.interruptions}
        for k, ((user_start, user_end), (agent_start, agent_end)) in enumerate(pairs):
            # to the sample: the agent's first sample is 0.64 s after the user's last one, silence between
            assert agent_start - user_end == LEAD
            assert audio[1, agent_start] != 0 and np.all(audio[1, user_end:agent_start] == 0)
            if k + 1 == len(pairs):
                continue
            next_user = pairs[k + 1][0][0]
            if next_user < agent_end:
                # barge-in: the user starts inside the agent's turn, the agent keeps 0.64 s of speech after it
                seen["barge_in"] += 1
                interruption = onsets[next_user]
                assert (interruption.interrupter, interruption.interrupted) == (USER, AGENT)
                assert agent_end - next_user == KEEP and _samples(interruption.stop) == agent_end
                assert np.any(audio[1, next_user:agent_end] != 0)
                assert np.all(audio[1, agent_end:pairs[k + 1][1][0]] == 0)
                seg = next(s for s in timeline.segments if s.speaker == AGENT and _samples(s.start) == agent_start)
                assert seg.text.endswith("-")
            else:
                seen["gap"] += 1
                assert next_user - agent_end >= _samples(cfg.gap_min) // (2 if c.set == "impatient" else 1)
    assert seen["barge_in"] and seen["gap"]


def test_the_impatient_copy_halves_the_gaps_before_user_turns(tts_set):
    cfg, _ = tts_set
    out = Path(cfg.output)
    normal, impatient = read_duplex_s2s(out, "test"), read_duplex_s2s(out, "test", "impatient")
    assert [c.id for c in normal] == [c.id for c in impatient] and len(normal) == 3
    halved = 0
    for a, b in zip(normal, impatient):
        records = [json.loads((c.stereo.parent.parent / "records" / f"{c.id}.json").read_text()) for c in (a, b)]
        assert records[0]["texts"] == records[1]["texts"] and a.user_voice == b.user_voice
        assert a.barge_ins == b.barge_ins
        pa, pb = _pairs(a.load_timeline()), _pairs(b.load_timeline())
        for k in range(len(pa) - 1):
            (ua, aa), (ub, ab) = pa[k], pb[k]
            # the same clips: equal lengths of every turn
            assert ua[1] - ua[0] == ub[1] - ub[0] and aa[1] - aa[0] == ab[1] - ab[0]
            gap_a, gap_b = pa[k + 1][0][0] - aa[1], pb[k + 1][0][0] - ab[1]
            if gap_a >= 0:
                assert gap_b == gap_a // 2
                halved += 1
            else:   # the same barge-in: at the same place in the agent's turn
                assert pa[k + 1][0][0] - aa[0] == pb[k + 1][0][0] - ab[0]
        assert b.seconds <= a.seconds
    assert halved


def test_held_out_user_voices_speak_only_in_test(tts_set):
    cfg, summary = tts_set
    users: dict[tuple[str, str], set] = {}
    for c in _all(Path(cfg.output)):
        users.setdefault((c.split, c.set), set()).add(c.user_voice)
    assert users[("test", "normal")] == users[("test", "impatient")] == {"flite:rms"}
    assert users[("train", "normal")] | users[("valid", "normal")] <= {"flite:kal16", "flite:awb"}
    assert summary["splits"]["test"]["normal"]["user_voices"] == ["flite:rms"]


def test_same_config_same_bytes_and_resume_skips_complete_conversations(tts_set, tmp_path):
    cfg, _ = tts_set
    out = tmp_path / "again"
    build_duplex_s2s(_cfg(out))
    reference = _digest(Path(cfg.output))
    assert len(reference) == 3 * 10 + 1 and _digest(out) == reference
    (out / "normal" / "stereo" / "train-000001.wav").unlink()
    (out / "impatient" / "records" / "test-000002.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (out / "normal" / "stereo").iterdir()
            if "train-000001" not in p.name and "test-000002" not in p.name}
    summary = build_duplex_s2s(_cfg(out))
    assert (summary["built"], summary["skipped"]) == (2, 5)
    assert _digest(out) == reference
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    with pytest.raises(ConfigError, match="barge_in_prob"):
        build_duplex_s2s(_cfg(out, barge_in_prob=0.2))


def test_the_cli_command_builds_from_its_recipe(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    out = tmp_path / "cli"
    assert main(["build-duplex-s2s", f"output={out}", "num_train=1", "num_valid=0", "num_test=1", "turns=2",
                 "text=corpus:all", "voices=[flite:kal16]", "held_out_voices=[flite:awb]", "progress=false"]) == 0
    (test,) = read_duplex_s2s(out, "test", "impatient")
    assert (test.user_voice, test.agent_voice) == ("flite:awb", "flite:slt")   # the recipe's agent
    config = json.loads((out / "summary.json").read_text())["config"]
    assert config["barge_in_prob"] == 0.3 and config["agent_lead"] == config["barge_in_keep"] == 0.64


@pytest.mark.slow
def test_a_process_pool_gives_the_same_bytes(tmp_path):
    require_tts(HAS_FLITE, "flite is not installed")
    small = {"num_train": 2, "num_valid": 0, "num_test": 2, "turns": 2}
    build_duplex_s2s(_cfg(tmp_path / "serial", **small))
    build_duplex_s2s(_cfg(tmp_path / "pool", num_workers=2, **small))
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "pool")


# ---------------------------------------------------------------------------------------------- fake synthesizer
def test_sharded_builds_equal_one_build_and_the_seed_changes_the_set(tmp_path):
    build_duplex_s2s(_fake_cfg(tmp_path / "one"), FakeSynth())
    for rank in (1, 0):
        summary = build_duplex_s2s(_fake_cfg(tmp_path / "sharded", rank=rank, world_size=2), FakeSynth())
    assert summary["complete"] == 7 and summary["world_size"] == 2
    build_duplex_s2s(_fake_cfg(tmp_path / "other", seed=1), FakeSynth())
    assert _digest(tmp_path / "one") == _digest(tmp_path / "sharded")
    assert (tmp_path / "one" / "manifest.jsonl").read_text() != (tmp_path / "other" / "manifest.jsonl").read_text()


def test_drawn_agent_voices_differ_from_the_user_and_failures_are_skipped(tmp_path, logs):
    cfg = _fake_cfg(tmp_path / "drawn", num_train=12, num_valid=0, num_test=0, turns=2)
    summary = build_duplex_s2s(cfg, FakeSynth(fail=("d",)))
    conversations = read_duplex_s2s(cfg.output, "train")
    failed = {f["id"] for f in summary["failures"]}
    assert failed and len(conversations) == 12 - len(failed) and not failed & {c.id for c in conversations}
    assert {c.agent_voice for c in conversations} == {"flite:c", "flite:e"}
    assert {c.user_voice for c in conversations} == {"flite:a", "flite:b"}
    assert all("by flite:d" in f["error"] for f in summary["failures"])
    assert any("failed and was skipped" in line for line in logs)
    # the same user voice and agent speaker is refused
    with pytest.raises(ConfigError, match="no agent voice of another speaker"):
        build_duplex_s2s(_fake_cfg(tmp_path / "x", voices=["flite:c"], agent_voice="flite:c"), FakeSynth())


def test_config_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="held-out speaker"):
        build_duplex_s2s(_fake_cfg(tmp_path / "x", held_out_voices=["flite:c"], agent_voice="flite:c"), FakeSynth())
    with pytest.raises(ConfigError, match="dialogues="):
        build_duplex_s2s(_fake_cfg(tmp_path / "x", source="dialogues"), FakeSynth())
    with pytest.raises(ConfigError, match="user_speaker"):
        build_duplex_s2s(_fake_cfg(tmp_path / "x", source="dialogues", dialogues="d", user_speaker="C"))
    with pytest.raises(ConfigError, match="barge_in_prob"):
        build_duplex_s2s(_fake_cfg(tmp_path / "x", barge_in_prob=1.5), FakeSynth())
    with pytest.raises(ConfigError, match="listed twice"):
        build_duplex_s2s(_fake_cfg(tmp_path / "x", voices=["flite:a", "flite:a"]), FakeSynth())
    assert not (tmp_path / "x").exists()


def test_the_dialogues_source_splits_roles(tmp_path):
    dialogues = tmp_path / "dialogues"
    build_dialogues(BuildDialoguesConfig(output=str(dialogues), num_conversations=10, seconds=8.0,
                                         voices=["flite:a", "flite:b"], text="corpus:all", mono=False,
                                         progress=False), FakeSynth())
    entries = {e.id: e for e in load_dialogues(dialogues)}
    out = tmp_path / "split"
    summary = build_duplex_s2s(BuildDuplexS2SConfig(output=str(out), source="dialogues", dialogues=str(dialogues),
                                                    user_speaker="B", progress=False))
    assert summary["complete"] == 10 and summary["failures"] == []
    by_split = {s: read_duplex_s2s(out, s) for s in SPLITS}
    assert [len(by_split[s]) for s in SPLITS] == [8, 1, 1] and read_duplex_s2s(out, "test", "impatient") == []
    for split, conversations in by_split.items():
        for c in conversations:
            record = json.loads((out / "normal" / "records" / f"{c.id}.json").read_text())
            entry = entries[record["dialogue"]]
            assert split == {8: "valid", 9: "test"}.get(int(entry.id[-1]), "train")
            original, audio = entry.audio(), c.audio()
            assert np.array_equal(audio[0], original[1]) and np.array_equal(audio[1], original[0])  # B = user
            timeline, source = c.load_timeline(), entry.timeline()
            assert timeline.channel(USER) == source.channel("B") and timeline.channel(AGENT) == source.channel("A")
            assert (c.user_voice, c.agent_voice) == (entry.record["speakers"]["B"], entry.record["speakers"]["A"])
            agent = [(s.start, s.end) for s in timeline.segments if s.speaker == AGENT and s.kind != "backchannel"]
            assert bool(agent) == bool(c.agent_turns)
            if agent:
                assert c.agent_turns[0][0] == agent[0][0] and c.agent_turns[-1][1] == max(e for _, e in agent)
            assert all(any(a <= s and e <= b for a, b in c.agent_turns) for s, e in agent)
            assert c.barge_ins == sum(i.interrupter == USER and not i.ignored for i in timeline.interruptions)
    merged = sum(len(c.agent_turns) < sum(s.speaker == AGENT and s.kind != "backchannel"
                                          for s in c.load_timeline().segments) for c in by_split["train"])
    assert merged    # IPUs of one agent turn are one turn
    # a random user speaker per conversation
    mixed = tmp_path / "random"
    build_duplex_s2s(BuildDuplexS2SConfig(output=str(mixed), source="dialogues", dialogues=str(dialogues),
                                          user_speaker="random", progress=False))
    speakers = [json.loads(line)["user_speaker"] for line in (mixed / "manifest.jsonl").read_text().splitlines()]
    assert set(speakers) == {"A", "B"}


def test_dialogue_agent_turns_merge_ipus_until_the_user_takes_the_floor():
    segments = [Segment(AGENT, 0.0, 1.0), Segment(USER, 0.5, 0.8, kind="backchannel"), Segment(AGENT, 1.2, 2.0),
                Segment(USER, 2.5, 3.0), Segment(AGENT, 3.5, 4.0), Segment(USER, 3.8, 4.5, kind="interruption"),
                Segment(AGENT, 5.0, 5.5), Segment(AGENT, 6.0, 6.5, kind="backchannel")]
    timeline = Timeline("t", 7.0, (USER, AGENT), segments)
    assert dialogue_agent_turns(timeline) == [(0.0, 2.0), (3.5, 4.0), (5.0, 5.5)]


def test_the_reader_names_the_manifest_when_it_is_broken(tmp_path):
    cfg = _fake_cfg(tmp_path / "set", num_train=2, num_valid=1, num_test=1, turns=2)
    build_duplex_s2s(cfg, FakeSynth())
    manifest = tmp_path / "set" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    assert len(lines) == 5
    with pytest.raises(ConfigError, match="split"):
        read_duplex_s2s(tmp_path / "set", "dev")
    with pytest.raises(ConfigError, match="set"):
        read_duplex_s2s(tmp_path / "set", "test", "rushed")

    def broken(line: str, number: int, pattern: str) -> None:
        manifest.write_text("\n".join([*lines[:number - 1], line, *lines[number:]]) + "\n")
        with pytest.raises(FormatError, match=rf"{re.escape(str(manifest))}:{number}: {pattern}"):
            read_duplex_s2s(tmp_path / "set", "train")

    broken("{not json", 2, "invalid JSON")
    record = json.loads(lines[0])
    broken(json.dumps({k: v for k, v in record.items() if k != "agent_turns"}), 1, "missing key 'agent_turns'")
    broken(json.dumps({**record, "agent_turns": [[1.0]]}), 1, "'agent_turns' must be a list of")
    broken(json.dumps({**record, "agent_turns": [[1.0, 1e6]]}), 1, "agent turn .* is not inside")
    broken(json.dumps({**record, "set": "rushed"}), 1, "unknown set 'rushed'")
    broken(json.dumps({**record, "samples": "many"}), 1, "'samples' has the wrong type")
    manifest.write_text("\n".join(lines) + "\n")
    (tmp_path / "set" / "normal" / "stereo" / "valid-000000.wav").unlink()
    with pytest.raises(FormatError, match=r"manifest\.jsonl:3: stereo file .*valid-000000\.wav"):
        read_duplex_s2s(tmp_path / "set", "valid")
    shutil.rmtree(tmp_path / "set")
    with pytest.raises(TextlessError, match=r"manifest\.jsonl' does not exist"):
        read_duplex_s2s(tmp_path / "set", "train")
