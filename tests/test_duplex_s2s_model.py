"""Duplex S2S on ListenSpeakLM: turn markers and windows, the agent's speech from its tokens and the seed-003 scores
on hand-made cases, training on a built set (exact resume after SIGKILL), and eval-duplex s2s.* end to end."""

import json
import signal

import numpy as np
import pytest
import torch
from kill_fixtures import kill_after_checkpoint
from test_build_duplex_s2s import FakeSynth, _fake_cfg

from textless.audio import load_audio
from textless.data.corpus import load_bundled_corpus
from textless.dialogue.lslm import ListenSpeakLM
from textless.dialogue.lslm.data import item_tokens
from textless.dialogue.lslm.duplex_s2s import (
    AGENT_BOS,
    AGENT_EOS,
    DuplexS2STrainConfig,
    S2SConversation,
    agent_speech,
    conversation_scores,
    conversation_windows,
    train_duplex_s2s,
    turn_marks,
)
from textless.dialogue.lslm.model import with_specials
from textless.jobs.build_duplex_s2s import build_duplex_s2s
from textless.lm import UnitLM, UnitVocab
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders.mfcc import MFCCEncoder
from textless.tokenizers.kmeans import KMeans
from textless.training.checkpoint import list_checkpoints

RATE = 50.0


def test_turn_marks_and_windows():
    conv = S2SConversation("c", np.arange(12) % 5, np.ones((12, 2), np.float32), [(2, 6), (9, 12)])
    assert turn_marks(conv.turns, 12) == [(2, AGENT_BOS), (6, AGENT_EOS), (9, AGENT_BOS)]  # the end at 12 is outside
    windows = conversation_windows(conv, 5)
    assert [w.id for w in windows] == ["c@0", "c@5", "c@7"] and [w.end for w in windows] == [False, False, True]
    assert [w.marks for w in windows] == [((2, AGENT_BOS),), ((1, AGENT_EOS), (4, AGENT_BOS)), ((2, AGENT_BOS),)]
    assert np.array_equal(windows[2].units, conv.units[7:]) and windows[1].listen.shape == (5, 2)
    vocab = with_specials(UnitLM.from_scratch("tiny", UnitVocab.default(5)), ["irq", AGENT_BOS, AGENT_EOS]).vocab
    tokens = item_tokens(windows[0], vocab, RATE)
    units = (conv.units[:5] + vocab.offset).tolist()
    units[2] = vocab.specials[AGENT_BOS]
    assert tokens.tolist() == [vocab.bos_id, *units]                      # no eos: the conversation goes on
    assert item_tokens(windows[2], vocab, RATE)[-1] == vocab.eos_id
    assert [w.marks for w in conversation_windows(conv, 5, markers=False)] == [(), (), ()]


def test_agent_speech_and_the_seed_003_scores():
    vocab = with_specials(UnitLM.from_scratch("tiny", UnitVocab.default(5)), ["irq", AGENT_BOS, AGENT_EOS]).vocab
    bos, eos, u = vocab.specials[AGENT_BOS], vocab.specials[AGENT_EOS], vocab.offset
    # 50 Hz: silence (unit 0) 10 frames, bos + 49 speech frames (1 s), eos, silence 9 frames, speech 30, silence 20
    tokens = np.array([u] * 10 + [bos] + [u + 3] * 49 + [eos] + [u] * 9 + [u + 2] * 30 + [u] * 20)
    assert agent_speech(tokens, vocab, {0}, RATE) == [(0.2, 1.2), (1.4, 2.0)]  # a 0.2 s pause splits (200 ms rule)
    assert agent_speech(tokens, vocab, {0}, RATE, min_silence=0.25) == [(0.2, 2.0)]
    agent = [(0.2, 1.2), (1.4, 2.0)]
    user = [(0.0, 0.15), (1.0, 1.3)]
    scores = conversation_scores(agent, user, [0.0, 1.0])
    assert scores["barge_ins"] == 1 and scores["barge_in_success"] == 1
    assert scores["barge_in_latencies"] == [pytest.approx(0.2)]          # the agent stopped at 1.2 s, 0.2 s late
    assert scores["false_alarms"] == 0 and scores["first_response_latency"] == pytest.approx(0.05)
    # the agent starting at 1.4 s while the user speaks on until 1.6 s (> 0.1 s later): a false alarm
    assert conversation_scores(agent, [(1.3, 1.6)], [])["false_alarms"] == 1
    assert conversation_scores(agent, [(1.3, 1.45)], [])["false_alarms"] == 0  # the user stops within 0.1 s


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A fake-voice build-duplex-s2s set and an MFCC tokenizer."""
    root = tmp_path_factory.mktemp("s2s")
    build_duplex_s2s(_fake_cfg(root / "data", num_train=3, num_valid=1, num_test=2, turns=2), synth=FakeSynth())
    speech = [load_audio(item.path, 16000)[0] for item in list(load_bundled_corpus("valid"))[:4]]
    encoder = MFCCEncoder()
    feats = torch.cat([encoder.encode(w) for w in speech]).numpy()
    SpeechTokenizer(encoder, KMeans(k=16, backend="torch", max_iter=10, seed=0).fit(feats),
                    deduplicate=False).save_pretrained(root / "tok")
    return root / "data", root / "tok"


def config(data, out, **kw):
    directory, tok = data
    fields = {"train_data": str(directory), "units_tokenizer": str(tok), "listening": {"encoder": "mfcc",
              "frame_rate": 100.0}, "output_dir": str(out), "max_steps": 4, "batch_size": 2, "context": 200,
              "warmup_steps": 1, "eval_every": 2, "save_every": 2, "log_every": 1, "progress": False,
              "tensorboard": False, "precision": "fp32", "adapter_dim": 16, **kw}
    return DuplexS2STrainConfig(**fields)


def test_training_resumes_exactly_after_sigkill(data, tmp_path):
    N, k = 4, 2
    reference = train_duplex_s2s(config(data, tmp_path / "ref"))
    out = tmp_path / "killed"
    cfg = config(data, out)
    entry = "textless.dialogue.lslm.duplex_s2s:train_duplex_s2s"
    assert kill_after_checkpoint(cfg, k, entry, tmp_path / "killed.stderr") == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(out)] == [f"step-{k:07d}"]
    resumed = train_duplex_s2s(cfg)
    assert resumed.resumed_from == k and resumed.history == reference.history
    a = ListenSpeakLM.from_pretrained(reference.final_model).state_dict()
    model = ListenSpeakLM.from_pretrained(out / "final")
    b = model.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a) and N == resumed.step
    assert model.config.fusion == "sum" and model.config.projection == "adapter"
    assert {AGENT_BOS, AGENT_EOS, "irq"} <= set(model.vocab.specials)


def test_eval_duplex_scores_normal_and_impatient_sets(data, tmp_path, capsys):
    from textless.cli import main

    directory, tok = data
    run = train_duplex_s2s(config(data, tmp_path / "run", max_steps=2))
    out = tmp_path / "eval"
    argv = ["eval-duplex", f"output={out}", f"s2s.model={run.final_model}", f"s2s.data={directory}",
            f"s2s.units_tokenizer={tok}"]
    assert main(argv) == 0
    assert "impatient: 2 conversations" in capsys.readouterr().out
    report = json.loads((out / "s2s_report.json").read_text())
    assert set(report["sets"]) == {"normal", "impatient"}
    for result in report["sets"].values():
        assert result["model"]["conversations"] == 2 and result["recording"]["conversations"] == 2
        assert result["recording"]["first_response_answered"] == 1.0     # the recorded agent always answers
    assert main(["eval-duplex", f"output={out}", f"s2s.model={run.final_model}"]) == 2
    assert "s2s.data" in capsys.readouterr().err


def test_an_unreadable_conversation_is_reported_and_skipped(data, tmp_path, logs):
    import shutil

    from textless.dialogue.duplex_s2s_data import read_duplex_s2s
    from textless.dialogue.listening import ListeningChannel, ListeningConfig
    from textless.dialogue.lslm.duplex_s2s import prepare_conversations

    directory, tok = data
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    broken = read_duplex_s2s(copy, "train")[1]
    broken.stereo.write_bytes(b"not a wav")
    tokenizer = SpeechTokenizer.from_pretrained(tok)
    channel = ListeningChannel(ListeningConfig(encoder="mfcc", frame_rate=100.0))
    convs = prepare_conversations(copy, "train", tokenizer, channel, tmp_path / "c.npz")
    assert broken.id not in [c.id for c in convs] and len(convs) == 2
    assert any(f"skipping conversation {broken.id}" in line for line in logs)
    cached = prepare_conversations(copy, "train", tokenizer, channel, tmp_path / "c.npz")
    assert [c.id for c in cached] == [c.id for c in convs] and all(
        np.array_equal(a.units, b.units) for a, b in zip(convs, cached, strict=True))
