"""`textless train-duplex` (textless.dialogue.duplex.train): the example stream (both speak channels, lead / follow
draws), the loss against a hand computation (weights and the one-step shift, native and TDM), learning in every
format, evaluation in nats per speak frame, text-LM and saved-model inits, exact resume after SIGKILL, the CLI and its
recipes, config errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from kill_fixtures import kill_after_checkpoint
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from textless.data.identity import UnitIdentity, UnitMismatchError
from textless.dialogue.data import Dialogue, dialogue_meta, read_dialogues, write_dialogues
from textless.dialogue.duplex import DuplexConfig, DuplexLM, backbone_config
from textless.dialogue.duplex.train import (
    DuplexObjective,
    DuplexTrainConfig,
    DuplexWindowStream,
    duplex_losses,
    evaluate_duplex_lm,
    model_inputs,
    train_duplex,
)
from textless.dialogue.streams import IGNORE, TDMFormat, listen_speak_layout
from textless.errors import ConfigError
from textless.training.checkpoint import list_checkpoints
from textless.utils.runs import ResumeMismatchError

REPO = Path(__file__).resolve().parents[1]
K = 8
SILENCE = [0]
TOKENIZER = {"name": "toy-km"}
IDENTITY = UnitIdentity(tokenizer=TOKENIZER, vocab_size=K, frame_rate=50.0, deduplicated=False, bpe=False)
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2}
DEPTH = {"depth_layers": 1, "depth_dim": 32, "depth_heads": 2}


def conversation(i: int, frames: int) -> Dialogue:
    """Turns of 10 frames: A speaks (units 1-3, runs of 2) in even turns, B (units 4-7, runs of 3) in odd ones, with
    a 2-frame overlap and a conversation-dependent phase; silence is unit 0."""
    a, b = np.zeros(frames, np.int64), np.zeros(frames, np.int64)
    for t in range(frames):
        turn, pos = divmod(t + 3 * i, 10)
        if turn % 2 == 0 or pos >= 8:
            a[t] = 1 + (pos // 2 + turn) % 3
        if turn % 2 == 1 or pos < 2 and turn:
            b[t] = 4 + (pos // 3 + turn) % 4
    return Dialogue(f"conv{i}", np.stack([a, b]))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """(train, valid) two-channel datasets: 6 conversations of 40-115 frames, 2 of 30 and 60 frames."""
    root = tmp_path_factory.mktemp("dialogues")
    train = write_dialogues(root / "train", [conversation(i, 40 + 15 * i) for i in range(6)], dialogue_meta(IDENTITY))
    valid = write_dialogues(root / "valid", [conversation(i + 7, n) for i, n in enumerate((30, 60))],
                            dialogue_meta(IDENTITY), encoding="binary")
    return train, valid


def config(data, out, **kw) -> DuplexTrainConfig:
    base = {"train_dataset": str(data[0]), "valid_dataset": str(data[1]), "init": "scratch", "backbone": "tiny",
            "model": dict(TINY), "silence_units": SILENCE, "output_dir": str(out), "context": 24, "batch_size": 4,
            "max_steps": 6, "lr": 3e-3, "warmup_steps": 3, "eval_every": 3, "save_every": 3, "log_every": 1,
            "progress": False, "tensorboard": False, "seed": 3}
    base.update(kw)
    return DuplexTrainConfig(**base)


def built(cfg: DuplexTrainConfig) -> DuplexObjective:
    """The objective, built as the engine builds it (one CPU process, fresh model)."""
    obj = DuplexObjective(cfg)
    obj.check_config()
    torch.manual_seed(cfg.seed)
    obj.build(SimpleNamespace(device=torch.device("cpu"), rank=0, world=1), None, None)
    obj.bind({"model": obj.model})
    return obj


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def one_conversation(tmp_path: Path, a: list[int], b: list[int]) -> Path:
    return write_dialogues(tmp_path / "one", [Dialogue("c", np.array([a, b]))], dialogue_meta(IDENTITY))


# ----------------------------------------------------------------------------------------------------------------
# the example stream
# ----------------------------------------------------------------------------------------------------------------


def test_every_window_appears_once_per_speak_channel_per_epoch():
    frames = [5, 30, 12]
    stream = DuplexWindowStream(frames, 8, seed=1, follow_probability=0.5)
    n = len(stream)
    assert n == 2 * (1 + 4 + 2)
    seen = [stream.at(p) for p in range(3 * n)]
    for e in range(3):
        epoch = sorted((c, s, ch) for c, s, ch, _ in seen[e * n:(e + 1) * n])
        assert epoch == sorted(stream.windows) and {ch for *_, ch in epoch} == {0, 1}
    assert seen[:n] != seen[n:2 * n]
    assert 0 < sum(f for *_, f in seen) < 3 * n  # lead / follow drawn per example
    fresh = DuplexWindowStream(frames, 8, seed=1, follow_probability=0.5)
    assert [fresh.at(p) for p in reversed(range(3 * n))] == seen[::-1]  # a pure function of the position
    assert not any(DuplexWindowStream(frames, 8, 1).at(p)[3] for p in range(n))


def test_both_channels_are_the_speak_stream_in_turn(data, tmp_path):
    obj = built(config(data, tmp_path / "o"))
    batches = list(islice(obj.batches(0), 2 * len(obj.stream) // 4 + 1))
    examples = [(w, batch.tokens[j]) for batch in batches for j, w in enumerate(batch.windows)]
    assert {w[2] for w, _ in examples} == {0, 1}
    train = read_dialogues(data[0])
    listen, speak = obj.model.layout.index("listen"), obj.model.layout.index("speak")
    for (conversation, start, channel, _), tokens in examples:
        units = train[conversation].units[:, start:start + 24]
        n = units.shape[1]
        assert torch.equal(tokens[speak, :n], torch.from_numpy(units[channel]))
        assert torch.equal(tokens[listen, :n], torch.from_numpy(units[1 - channel]))
    later = list(islice(obj.batches(3), 2))  # the stream resumes at any micro-batch
    assert all(a.windows == b.windows and torch.equal(a.tokens, b.tokens) for a, b in zip(batches[3:5], later))


def test_content_dual_draws_lead_and_follow_from_one_model_layout(data, tmp_path):
    obj = built(config(data, tmp_path / "o", layout="content_dual"))
    assert obj.model.layout["content"].source == "lead"  # the saved layout; follow windows use its variant
    batch = next(obj.batches(0))
    assert any(w[3] for w in batch.windows) or any(w[3] for w in next(obj.batches(1)).windows)
    content = obj.model.layout.index("content")
    train = read_dialogues(data[0])
    for j, (conversation, start, channel, follow) in enumerate(batch.windows):
        # the whole conversation's content stream, cut to the window, as the model's layout in that mode builds it
        layout = obj.examples.layouts[follow]
        assert layout["content"].source == ("follow" if follow else "lead")
        tokens, _, _ = obj.examples.example(train[conversation].units, start, 24, channel, follow, 50.0)
        assert torch.equal(batch.tokens[j, content, :tokens.shape[-1]], torch.from_numpy(tokens[content]))


# ----------------------------------------------------------------------------------------------------------------
# the loss
# ----------------------------------------------------------------------------------------------------------------


def _ce(logits: torch.Tensor, label: int) -> float:
    return float(-torch.log_softmax(logits.detach().double(), -1)[label])


def test_native_loss_is_the_hand_computation(tmp_path):
    """listen_speak, speak delay 1 and silence (the filler) weighted 0.5: the model reads delayed frame t and is
    scored on delayed frame t + 1 of the speak stream."""
    a, b = [1, 0, 2, 2, 0], [0, 3, 0, 0, 4]
    path = one_conversation(tmp_path, a, b)
    cfg = config((path, None), tmp_path / "o", valid_dataset=None, silence_unit=0,
                 streams={"speak": {"delay": 1, "filler_weight": 0.5}})
    obj = built(cfg)
    batch = obj.examples.batch(read_dialogues(path), [(0, 0, 0, False)], 24)
    pad = K  # each stream's pad: the first special after the units
    assert batch.tokens[0].tolist() == [[0, 3, 0, 0, 4, pad], [pad, 1, 0, 2, 2, 0]]  # listen = B, speak = A late
    logits = obj.model(batch.tokens[:, :, :-1])["speak"][0]  # [5, K + 1]
    speak_labels = [1, 0, 2, 2, 0]                           # delayed speak frames 1..5
    w = [1.0, 0.5, 1.0, 1.0, 0.5]
    expected = sum(wt * _ce(logits[t], y) for t, (y, wt) in enumerate(zip(speak_labels, w))) / sum(w)
    step = obj.loss("model", batch, {})
    assert step.value.item() == pytest.approx(expected, rel=1e-5)
    assert step.metrics["loss"] == pytest.approx(expected, rel=1e-5)
    nll = sum(_ce(logits[t], y) for t, y in enumerate(speak_labels)) / 5
    assert step.metrics["speak_nll"] == pytest.approx(nll, rel=1e-5)
    assert step.metrics["frame_nll"] == pytest.approx(nll, rel=1e-5)  # all 5 speak frames are predicted
    hits = sum(int(logits[t].argmax()) == y for t, y in enumerate(speak_labels)) / 5
    assert step.metrics["speak_accuracy"] == pytest.approx(hits)
    assert obj.batch_weight(batch) == 1.0  # a weighted mean per micro-batch
    # channel 1 speaks: the roles swap
    swapped = obj.examples.batch(read_dialogues(path), [(0, 0, 1, False)], 24)
    assert swapped.tokens[0].tolist() == [[1, 0, 2, 2, 0, pad], [pad, 0, 3, 0, 0, 4]]


def test_tdm_loss_is_the_hand_computation(tmp_path):
    """Fixed chunks of 2 frames, listen units weighted 0.25: token s predicts token s + 1; tags carry no loss."""
    a, b = [1, 0, 2, 2, 0], [0, 3, 0, 0, 4]
    path = one_conversation(tmp_path, a, b)
    obj = built(config((path, None), tmp_path / "o", valid_dataset=None, format="tdm", chunk_frames=2,
                       listen_loss_weight=0.25, silence_unit=0))
    fmt = obj.model.tdm
    batch = obj.examples.batch(read_dialogues(path), [(0, 0, 0, False)], 24)
    L, S, BOS = fmt.token("<listen>"), fmt.token("<speak>"), fmt.bos
    tokens = [BOS, L, 0, 3, S, K + 1, K + 0, L, 0, 0, S, K + 2, K + 2, L, 4, S, K + 0]
    assert batch.tokens[0].tolist() == tokens
    logits = obj.model(batch.tokens[:, :-1])["tdm"][0]
    weight = {i: 0.25 for i in (2, 3, 8, 9, 14)} | {i: 1.0 for i in (5, 6, 11, 12, 16)}
    expected = sum(w * _ce(logits[i - 1], tokens[i]) for i, w in weight.items()) / sum(weight.values())
    step = obj.loss("model", batch, {})
    assert step.value.item() == pytest.approx(expected, rel=1e-5)
    speak = [i for i, w in weight.items() if w == 1.0]
    assert step.metrics["frame_nll"] == pytest.approx(sum(_ce(logits[i - 1], tokens[i]) for i in speak) / 5, rel=1e-5)
    assert step.metrics["tdm_nll"] == pytest.approx(sum(_ce(logits[i - 1], tokens[i]) for i in weight) / 10,
                                                    rel=1e-5)


def test_controlled_tdm_scores_the_switch_tokens(tmp_path):
    a, b = [1, 2, 0, 0, 0, 3], [0, 0, 4, 4, 0, 0]
    path = one_conversation(tmp_path, a, b)
    obj = built(config((path, None), tmp_path / "o", valid_dataset=None, format="tdm", chunk_frames=2,
                       controlled=True))
    fmt = obj.model.tdm
    assert fmt.silence_unit == 0 and fmt.silence_units == (0,)
    batch = obj.examples.batch(read_dialogues(path), [(0, 0, 0, False)], 24)
    L, SP, LI = fmt.token("<listen>"), fmt.token("[speak]"), fmt.token("[listen]")
    assert batch.tokens[0].tolist() == [fmt.bos, L, 0, 0, SP, K + 1, K + 2, L, 4, 4, LI, L, 0, 0, SP, K + 0, K + 3]
    scored = [i for i, y in enumerate(batch.labels[0].tolist()) if y != IGNORE]
    assert scored == [4, 5, 6, 10, 14, 15, 16]
    step = obj.loss("model", batch, {})
    logits = obj.model(batch.tokens[:, :-1])["tdm"][0]
    nll = sum(_ce(logits[i - 1], int(batch.tokens[0, i])) for i in scored)
    assert step.metrics["frame_nll"] == pytest.approx(nll / 6, rel=1e-5)  # 6 frames: [listen] covers its chunk


def test_padding_and_several_rows_keep_the_per_row_computation(data, tmp_path):
    obj = built(config(data, tmp_path / "o", layout="content_lead", streams={"speak": {"delay": 2}}))
    batch = next(obj.batches(0))
    full = obj.loss("model", batch, {})
    total = weight = 0.0
    for j in range(len(batch.windows)):
        row = batch._replace(tokens=batch.tokens[j:j + 1], labels=batch.labels[j:j + 1],
                             weights=batch.weights[j:j + 1], frames=batch.frames[j:j + 1])
        _, sums = duplex_losses(obj.model, obj.model(model_inputs(row)), row)
        total, weight = total + sums["weighted"], weight + sums["weight"]
    assert full.value.item() == pytest.approx(total / weight, rel=1e-5)
    wait = obj.model.layout["content"].token("wait")
    content = batch.labels[:, obj.model.layout.index("content")]
    at_wait = batch.weights[:, obj.model.layout.index("content")][content == wait]
    assert len(at_wait) and torch.allclose(at_wait, torch.tensor(0.01))


# ----------------------------------------------------------------------------------------------------------------
# training and evaluation
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"layout": "content_dual"}, {"format": "tdm"},
                                {"format": "tdm", "controlled": True}, {"layout": "content_lead", **DEPTH}],
                         ids=["native", "content_dual", "tdm", "tdm_controlled", "depth_decoder"])
def test_every_format_learns_the_turns(data, tmp_path, kw):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train_duplex(config(data, tmp_path / "run", max_steps=40, eval_every=20, save_every=40,
                                 tensorboard=True, **kw))
    assert result.step == 40 and result.stopped_by == "max_steps"
    assert result.extra["windows_seen"] == 40 * 4
    loss = result.history["loss"]
    assert np.mean(loss[-5:]) < 0.6 * np.mean(loss[:5]), (loss[:5], loss[-5:])
    final = DuplexLM.from_pretrained(result.final_model)
    valid = result.valid_history["frame_nll"]  # untrained: about log(vocabulary of the speak head) nats per frame
    assert valid[-1] < valid[0] and valid[-1] < 0.75 * np.log(final.heads[final.speak_names[-1]].out_features), valid
    assert final.config.tokenizer == TOKENIZER and final.config.frame_rate == 50.0
    again = evaluate_duplex_lm(final, read_dialogues(data[1]), 24, batch_size=3, silence_units=SILENCE)
    for key in ("loss", "frame_nll"):
        assert again[key] == pytest.approx(result.valid_history[key][-1], rel=1e-5)
    tags = EventAccumulator(str(result.tensorboard_dir)).Reload().Tags()["scalars"]
    for key in ("loss", "frame_nll", *(f"{s}_{m}" for s in final.speak_names for m in ("nll", "accuracy"))):
        assert f"train/{key}" in tags and f"valid/{key}" in tags


def test_evaluate_counts_speak_frames_alike_in_both_formats(data, tmp_path):
    valid = read_dialogues(data[1])  # 30 + 60 frames: windows of 24 at 0, 6 | 0, 24, 36; both channels
    frames = 2 * 5 * 24
    torch.manual_seed(0)
    tdm = DuplexLM.from_scratch(DuplexConfig(format="tdm", tdm=TDMFormat(K, 4), tokenizer=TOKENIZER, frame_rate=50.0,
                                             backbone=backbone_config("tiny", **TINY)))
    got = evaluate_duplex_lm(tdm, valid, 24)
    assert got["windows"] == 10 and got["frames"] == frames  # every frame of every window
    for delay, lost in ((0, 10), (1, 0)):  # delay 0: the first frame of a window is never predicted
        native = DuplexLM.from_scratch(DuplexConfig(layout=listen_speak_layout(K, 0, delay),
                                                    backbone=backbone_config("tiny", **TINY), tokenizer=TOKENIZER,
                                                    frame_rate=50.0))
        got = evaluate_duplex_lm(native, valid, 24, batch_size=4)
        assert got["frames"] == frames - lost and got["frame_nll"] == pytest.approx(got["speak_nll"])
        assert 0.5 * np.log(K + 1) < got["frame_nll"] < 2 * np.log(K + 1)  # untrained: about uniform
    with pytest.raises(ConfigError, match="silence units"):
        evaluate_duplex_lm(DuplexLM.from_scratch(DuplexConfig(layout=_content(), backbone=backbone_config("tiny"),
                                                              tokenizer=TOKENIZER, frame_rate=50.0)), valid)


def _content():
    from textless.dialogue.streams import content_layout

    return content_layout(K, 0, K)


def test_init_from_a_text_lm_keeps_its_transformer(data, tmp_path):
    torch.manual_seed(1)
    text = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    text.save_pretrained(tmp_path / "text_lm")
    obj = built(config(data, tmp_path / "o", init=str(tmp_path / "text_lm"), model={}, format="tdm"))
    backbone = obj.model.backbone.state_dict()
    for name, value in text.model.state_dict().items():
        if not name.startswith("embed_tokens"):
            assert torch.equal(backbone[name], value), name
    assert obj.model.config.format == "tdm" and obj.model.tdm.num_units == K
    result = train_duplex(config(data, tmp_path / "run", init=str(tmp_path / "text_lm"), model={}, max_steps=2,
                                 eval_every=2))
    assert result.step == 2 and DuplexLM.from_pretrained(result.final_model).config.backbone["hidden_size"] == 32


def test_continue_a_saved_model_in_another_mode(data, tmp_path):
    first = train_duplex(config(data, tmp_path / "lead", layout="content_lead", max_steps=2, eval_every=2))
    saved = weights(first.final_model)
    obj = built(config(data, tmp_path / "o", init=str(first.final_model), model={}, layout="content_follow"))
    assert obj.model.layout["content"].source == "follow"
    assert all(torch.equal(v, saved[k]) for k, v in obj.model.state_dict().items())
    with pytest.raises(ConfigError, match="do not fit"):  # a layout with other tables
        built(config(data, tmp_path / "o", init=str(first.final_model), model={}, layout="listen_speak"))
    other = DuplexLM.from_scratch(DuplexConfig(layout=listen_speak_layout(K + 2, 0), tokenizer=TOKENIZER,
                                               frame_rate=50.0, backbone=backbone_config("tiny", **TINY)))
    path = other.save_pretrained(tmp_path / "bigger")
    with pytest.raises(UnitMismatchError, match="vocab_size"):
        train_duplex(config(data, tmp_path / "x", init=str(path), model={}, silence_unit=0))


def test_exact_resume_after_sigkill(data, tmp_path):
    """Uninterrupted N steps == (run killed by SIGKILL after the checkpoint at step k) + the same command again, bit
    for bit (attention dropout and the lead / follow draws; two micro-batches per step)."""
    N, k = 6, 2
    kw = {"max_steps": N, "save_every": 2, "eval_every": 3, "grad_accum": 2, "batch_size": 2,
          "layout": "content_dual", "model": {**TINY, "attention_dropout": 0.1}}
    reference = train_duplex(config(data, tmp_path / "ref", **kw))
    out = tmp_path / "killed"
    cfg = config(data, out, **kw)
    entry = "textless.dialogue.duplex.train:train_duplex"
    assert kill_after_checkpoint(cfg, k, entry, tmp_path / "killed.stderr") == -signal.SIGKILL
    assert not (out / "final").exists() and [p.name for p in list_checkpoints(out)] == [f"step-{k:07d}"]
    resumed = train_duplex(cfg)
    assert resumed.resumed_from == k
    assert resumed.history == reference.history and resumed.valid_history == reference.valid_history
    a, b = weights(reference.final_model), weights(resumed.final_model)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert resumed.extra["windows_seen"] == N * 4
    # other overrides cannot resume this run
    with pytest.raises(ResumeMismatchError, match="streams.speak: absent there"):
        train_duplex(config(data, out, **{**kw, "max_steps": N + 2, "streams": {"speak": {"delay": 1}}}))


def test_config_errors(data, tmp_path):
    for kw, match in [({"train_dataset": ""}, "train_dataset is required"),
                      ({"init": "nowhere/model"}, "does not exist"),
                      ({"backbone": "huge"}, "backbone must be one of"),
                      ({"init": "offline:smollm2-135m"}, "model overrides the backbone preset"),
                      ({"format": "mixed"}, "format must be one of"),
                      ({"layout": "content"}, "layout must be one of"),
                      ({"streams": {"text": {"delay": 1}}}, "no stream 'text'"),
                      ({"streams": {"speak": {"units": 3}}}, "cannot override units"),
                      ({"streams": {"speak": {"delay": -1}}}, "delay"),
                      ({"format": "tdm", "streams": {"speak": {"delay": 1}}}, "a tdm model has none"),
                      ({"format": "tdm", "chunk_frames": 0}, "chunk_frames"),
                      ({"context": 1}, "context"), ({"model_context": 0}, "model_context"),
                      ({"schedule": "linear"}, "schedule"), ({"max_steps": None}, "max_steps"),
                      ({"silence_units": [K]}, "outside the data's units"),
                      ({"silence_unit": K + 1}, "outside the data's units")]:
        with pytest.raises(ConfigError, match=match):
            train_duplex(config(data, tmp_path / "e", **kw))
    with pytest.raises(ConfigError, match="silence_units"):  # learned silence needs the tokenizer that made them
        train_duplex(config(data, tmp_path / "e", silence_units=[], units_tokenizer=str(tmp_path / "no_tokenizer")))


# ----------------------------------------------------------------------------------------------------------------
# the command and its recipes
# ----------------------------------------------------------------------------------------------------------------


def test_recipes_compose(capsys):
    from textless.cli import main
    from textless.config import compose

    cfg = compose(DuplexTrainConfig, "train-duplex", ["train_dataset=units/d", "+streams.speak.delay=1"])
    assert (cfg.init, cfg.format, cfg.layout, cfg.streams, cfg.context, cfg.model_context) == \
        ("offline:smollm2-135m", "native", "listen_speak", {"speak": {"delay": 1}}, 1500, 3000)
    assert (cfg.batch_size, cfg.grad_accum, cfg.lr, cfg.schedule, cfg.max_steps, cfg.silence_units) == \
        (8, 4, 5e-4, "cosine", 20000, [])
    cpu = compose(DuplexTrainConfig, "train-duplex", ["train_dataset=u", "format=tdm", "controlled=true"],
                  "train-duplex-cpu")
    assert (cpu.init, cpu.backbone, cpu.model, cpu.context, cpu.precision, cpu.format, cpu.controlled) == \
        ("scratch", "tiny", {}, 250, "fp32", "tdm", True)
    assert main(["train-duplex", "--print-config", "train_dataset=u"]) == 0
    assert "init: offline:smollm2-135m" in capsys.readouterr().out
    assert main(["train-duplex", "--config", "train-duplex-cpu", "--print-config", "train_dataset=u",
                 "+model.hidden_size=128"]) == 0
    assert "hidden_size: 128" in capsys.readouterr().out


def test_the_command_runs_the_cpu_recipe(data, tmp_path, capsys):
    from textless.cli import main

    out = tmp_path / "run"
    argv = ["train-duplex", "--config", "train-duplex-cpu", f"train_dataset={data[0]}", f"valid_dataset={data[1]}",
            f"output_dir={out}", "silence_units=[0]", "context=24", "batch_size=2", "max_steps=3", "eval_every=3",
            "save_every=3", "log_every=1", "progress=false", "tensorboard=false"]
    assert main(argv) == 0
    captured = capsys.readouterr().out
    assert "step 3/3 loss" in captured and "speak_nll" in captured and "frame_nll" in captured
    assert "frames/s" in captured
    model = DuplexLM.from_pretrained(out / "final")
    assert model.config.format == "native" and model.layout.names == ("listen", "speak")
    assert main([*argv, "init=nope"]) == 2  # a user error: one line, status 2
    assert "init must be 'scratch'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# torchrun
# ----------------------------------------------------------------------------------------------------------------
_DDP_RUN = textwrap.dedent("""
    import json, os, sys
    from textless.dialogue.duplex.train import DuplexTrainConfig, train_duplex_command
    result = train_duplex_command(DuplexTrainConfig(**json.loads(sys.argv[1])))
    with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"history": result.history, "valid": result.valid_history, "step": result.step}, f)
""")


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one_with_two_micro_batches(data, tmp_path, strategy):
    """torchrun, 2 CPU processes (gloo), batch b each == one process with 2 micro-batches of b: the same examples
    (rank r holds micro-batch m * world + r) and the same gradient (the mean of the micro-batch means)."""
    kw = {"max_steps": 4, "save_every": 2, "eval_every": 2, "batch_size": 2, "layout": "content_dual"}
    out = tmp_path / strategy
    cfg = config(data, out, strategy=strategy, **kw)
    script = tmp_path / "run.py"
    script.write_text(_DDP_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           json.dumps(cfg.__dict__), str(tmp_path)]
    proc = subprocess.run(cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["step"] == 4
    single = train_duplex(config(data, tmp_path / "single", grad_accum=2, **kw))
    for key in ("loss", "speak_nll", "content_nll", "frame_nll"):
        np.testing.assert_allclose(ranks[0]["history"][key], single.history[key], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ranks[0]["valid"][key], single.valid_history[key], rtol=1e-4, atol=1e-6)
    a, b = weights(out / "final"), weights(single.final_model)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


# ----------------------------------------------------------------------------------------------------------------
# a depth decoder
# ----------------------------------------------------------------------------------------------------------------


def test_a_depth_decoder_reads_the_whole_window_and_scores_all_but_its_last_position(data, tmp_path):
    obj = built(config(data, tmp_path / "o", layout="content_lead", streams={"speak": {"delay": 1}}, **DEPTH))
    model = obj.model
    assert model.depth is not None and model.config.depth_layers == 1 and model.speak_names == ("content", "speak")
    batch = next(obj.batches(0))
    assert model_inputs(batch, model) is batch.tokens
    with torch.no_grad():
        logits = model(batch.tokens)
    total = weight = 0.0
    for name in model.speak_names:  # position t against labels t + 1; the last position (no next frame) unscored
        k = model.layout.index(name)
        y, w = batch.labels[:, k, 1:], batch.weights[:, k, 1:]
        ce = torch.nn.functional.cross_entropy(logits[name][:, :-1].transpose(1, 2), y, ignore_index=IGNORE,
                                               reduction="none")
        total, weight = total + float((ce * w).sum()), weight + float(w.sum())
    step = obj.loss("model", batch, {})
    assert step.value.item() == pytest.approx(total / weight, rel=1e-5)
    with pytest.raises(ValueError, match="reads the whole window"):
        duplex_losses(model, model(model_inputs(batch)), batch)
    # a parallel-heads model reads the window without its last position, as before
    parallel = built(config(data, tmp_path / "p", layout="content_lead"))
    assert parallel.model.depth is None and torch.equal(model_inputs(batch, parallel.model), batch.tokens[..., :-1])


def test_a_saved_depth_decoder_is_kept(data, tmp_path):
    first = train_duplex(config(data, tmp_path / "lead", layout="content_lead", max_steps=2, eval_every=2, **DEPTH))
    saved = weights(first.final_model)
    assert any(k.startswith("depth.") for k in saved)
    obj = built(config(data, tmp_path / "o", init=str(first.final_model), model={}, layout="content_follow"))
    assert obj.model.config.depth_layers == 1 and obj.model.config.depth_dim == 32
    assert all(torch.equal(v, saved[k]) for k, v in obj.model.state_dict().items())
    with pytest.raises(ConfigError, match="has its own depth decoder"):
        built(config(data, tmp_path / "o", init=str(first.final_model), model={}, layout="content_follow",
                     depth_layers=2, depth_dim=32, depth_heads=2))


def test_depth_config_keys(data, tmp_path):
    from textless.config import compose

    cpu = compose(DuplexTrainConfig, "train-duplex", ["train_dataset=u", "layout=content_dual", "depth_layers=2"],
                  "train-duplex-cpu")
    assert (cpu.depth_layers, cpu.depth_dim, cpu.depth_heads) == (2, 64, 4)
    assert compose(DuplexTrainConfig, "train-duplex", ["train_dataset=u"], "train-duplex-cpu").depth_layers == 0
    for kw, match in [({"format": "tdm", "depth_layers": 1}, "a 'tdm' model has one stream"),
                      ({"depth_layers": 1, "depth_dim": 30, "depth_heads": 4}, "not a multiple"),
                      ({"depth_layers": -1}, "depth_layers must be")]:
        with pytest.raises(ConfigError, match=match):
            train_duplex(config(data, tmp_path / "e", **kw))
