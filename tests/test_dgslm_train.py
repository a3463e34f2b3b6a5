"""`textless train-dialogue` (textless.dialogue.dgslm.train): windows, the objective's loss against the targets
module, learning, evaluation, exact resume after SIGKILL, DDP / FSDP, the CLI and its recipes, unit checks."""

from __future__ import annotations

import json
import math
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

from textless.data.identity import UnitIdentity, UnitMismatchError
from textless.dialogue.data import Dialogue, dialogue_meta, read_dialogues, write_dialogues
from textless.dialogue.dgslm import DGSLM, preset_config
from textless.dialogue.dgslm.targets import collate, losses, window
from textless.dialogue.dgslm.train import (
    DialogueObjective,
    DialogueTrainConfig,
    WindowStream,
    evaluate_dialogue_lm,
    inverse_sqrt,
    train_dialogue,
    window_starts,
)
from textless.errors import ConfigError
from textless.training.checkpoint import list_checkpoints
from textless.utils.runs import ResumeMismatchError

REPO = Path(__file__).resolve().parents[1]
K = 8
TOKENIZER = {"name": "toy-km"}
IDENTITY = UnitIdentity(tokenizer=TOKENIZER, vocab_size=K, frame_rate=50.0, deduplicated=False, bpe=False)


def conversation(i: int, frames: int) -> Dialogue:
    """Learnable runs: channel A cycles units 0-3 (durations 2, 3, 4, ...), channel B units 4-7 in steps of 2
    (3 frames each), both starting at a conversation-dependent phase."""
    a: list[int] = []
    b: list[int] = []
    r = 0
    while len(a) < frames:
        a += [(i + r) % 4] * (2 + r % 3)
        r += 1
    r = 0
    while len(b) < frames:
        b += [4 + (i + 2 * r) % 4] * 3
        r += 1
    return Dialogue(f"conv{i}", np.array([a[:frames], b[:frames]]))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """(train, valid) two-channel datasets: 8 conversations of 40-131 frames, 3 of 20-70 frames."""
    root = tmp_path_factory.mktemp("dialogues")
    train = write_dialogues(root / "train", [conversation(i, 40 + 13 * i) for i in range(8)], dialogue_meta(IDENTITY))
    valid = write_dialogues(root / "valid", [conversation(i + 1, n) for i, n in enumerate((20, 50, 70))],
                            dialogue_meta(IDENTITY), encoding="binary")
    return train, valid


def config(data, out, **kw) -> DialogueTrainConfig:
    base = {"train_dataset": str(data[0]), "valid_dataset": str(data[1]), "init": "tiny", "output_dir": str(out),
            "context": 32, "batch_size": 4, "max_steps": 6, "lr": 3e-3, "warmup_steps": 5, "eval_every": 3,
            "save_every": 3, "log_every": 1, "progress": False, "tensorboard": False, "seed": 3}
    base.update(kw)
    return DialogueTrainConfig(**base)


def built(cfg: DialogueTrainConfig) -> DialogueObjective:
    """The objective, built as the engine builds it (one CPU process, fresh model)."""
    obj = DialogueObjective(cfg)
    obj.check_config()
    torch.manual_seed(cfg.seed)
    obj.build(SimpleNamespace(device=torch.device("cpu"), rank=0, world=1), None, None)
    obj.bind({"model": obj.model})
    return obj


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


# ----------------------------------------------------------------------------------------------------------------
# windows and the loss
# ----------------------------------------------------------------------------------------------------------------


def test_window_grid():
    assert window_starts(3, 4) == [0] and window_starts(4, 4) == [0] and window_starts(8, 4) == [0, 4]
    assert window_starts(10, 4) == [0, 4, 6]  # the last window ends with the conversation


def test_windows_are_a_pure_function_of_the_position():
    frames = [5, 30, 12, 64]
    stream = WindowStream(frames, 8, seed=1, channel_swap=0.5)
    n = len(stream)
    assert n == 1 + 4 + 2 + 8
    forward = [stream.at(p) for p in range(3 * n)]
    fresh = WindowStream(frames, 8, seed=1, channel_swap=0.5)
    assert [fresh.at(p) for p in reversed(range(3 * n))] == forward[::-1]  # any order, any instance
    for e in range(3):  # every epoch visits every window once, in its own order
        assert sorted((c, s) for c, s, _ in forward[e * n:(e + 1) * n]) == sorted(stream.windows)
    assert forward[:n] != forward[n:2 * n]
    assert 0 < sum(swap for *_, swap in forward) < 3 * n
    assert [w[:2] for w in forward] == [w[:2] for w in (WindowStream(frames, 8, 1, 0.0).at(p) for p in range(3 * n))]
    assert not any(WindowStream(frames, 8, 1, 0.0).at(p)[2] for p in range(n))
    assert [WindowStream(frames, 8, 2).at(p) for p in range(n)] != [w[:2] + (False,) for w in forward[:n]]


def test_the_batch_stream_resumes_at_any_position(data, tmp_path):
    obj = built(config(data, tmp_path / "o", channel_swap=0.5))
    stream = list(islice(obj.batches(0), 7))
    later = list(islice(obj.batches(4), 3))
    for a, b in zip(stream[4:], later):
        assert a.windows == b.windows and torch.equal(a.batch.input_ids, b.batch.input_ids)
    assert all(len(b.windows) == 4 for b in stream)


def test_channel_swap_flips_the_window_and_leaves_the_loss_unchanged(data, tmp_path):
    obj = built(config(data, tmp_path / "o", channel_swap=1.0))
    swapped = next(obj.batches(0))
    plain = built(config(data, tmp_path / "p", channel_swap=0.0))
    batch = next(plain.batches(0))
    assert [w[:2] for w in swapped.windows] == [w[:2] for w in batch.windows] and all(w[2] for w in swapped.windows)
    assert torch.equal(swapped.batch.input_ids, batch.batch.input_ids.flip(1))
    plain.model.load_state_dict(obj.model.state_dict())
    a, b = obj.loss("model", swapped, {}), plain.loss("model", batch, {})
    assert a.value.item() == pytest.approx(b.value.item(), rel=1e-5)  # the symmetric model: no effect


def test_the_objective_loss_is_targets_losses(data, tmp_path):
    obj = built(config(data, tmp_path / "o", edge_weight=0.7, duration_weight=0.3))
    item = next(obj.batches(2))
    step = obj.loss("model", item, {})
    expected, metrics = losses(obj.model(item.batch.input_ids), item.batch, 0.7, 0.3)
    assert step.value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert step.metrics["loss"] == pytest.approx(expected.item(), rel=1e-6)
    for key in ("edge_nll", "edge_accuracy", "duration_l1", "duration_accuracy"):
        assert step.metrics[key] == pytest.approx(metrics[key], rel=1e-6)
    assert obj.batch_weight(item) == 1.0  # means: weight 1 per micro-batch


def test_evaluate_dialogue_lm_gives_the_numbers_of_targets_losses(data):
    torch.manual_seed(0)
    model = DGSLM(preset_config("tiny", K), tokenizer=TOKENIZER, frame_rate=50.0).eval()
    valid = read_dialogues(data[1])
    context = 24  # conversations of 20 (shorter than a window), 50 and 70 frames
    samples = [window(d.units, s, context, model.vocab.bos) for d in valid for s in window_starts(d.num_frames,
                                                                                                 context)]
    assert len(samples) == 1 + 3 + 3
    batch = collate(samples, model.vocab, delayed=True)
    with torch.no_grad():
        _, expected = losses(model(batch.input_ids), batch)
    got = evaluate_dialogue_lm(model, valid, context, batch_size=3)
    for key in ("edge_nll", "edge_accuracy", "duration_l1", "duration_accuracy", "edges", "durations"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key
    assert got["windows"] == 7 and got["loss"] == pytest.approx(got["edge_nll"] + got["duration_l1"])
    assert not model.training


def test_inverse_sqrt_is_fairseqs():
    f = inverse_sqrt(100, 5e-4, 1e-7)
    assert f(0) * 5e-4 == pytest.approx(1e-7) and f(50) * 5e-4 == pytest.approx(1e-7 + 50 * (5e-4 - 1e-7) / 100)
    assert f(100) == 1.0 and f(400) == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------------


def test_a_tiny_model_learns_the_runs(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train_dialogue(config(data, tmp_path / "run", max_steps=60, eval_every=30, save_every=60,
                                   tensorboard=True))
    assert result.step == 60 and result.stopped_by == "max_steps"
    first, last = result.history["edge_nll"][0], result.valid_history["edge_nll"][-1]
    assert last < 0.35 * first and result.valid_history["edge_accuracy"][-1] > 0.6, (first, last)
    assert result.extra["windows_seen"] == 60 * 4
    tags = EventAccumulator(str(result.tensorboard_dir)).Reload().Tags()["scalars"]
    for key in ("loss", "edge_nll", "edge_accuracy", "duration_l1", "duration_accuracy"):
        assert f"train/{key}" in tags and f"valid/{key}" in tags
    final = DGSLM.from_pretrained(result.final_model)
    assert final.units.tokenizer == TOKENIZER and final.config.num_units == K and final.frame_rate == 50.0
    again = evaluate_dialogue_lm(final, read_dialogues(data[1]), 32, batch_size=4)
    for key in ("edge_nll", "duration_l1"):
        assert again[key] == pytest.approx(result.valid_history[key][-1], rel=1e-5)


def test_exact_resume_after_sigkill(data, tmp_path):
    """Uninterrupted N steps == (run killed by SIGKILL after the checkpoint at step k) + the same command again, bit
    for bit (dropout and channel swaps draw random numbers; two micro-batches per step)."""
    N, k = 6, 2
    kw = {"max_steps": N, "save_every": 2, "eval_every": 3, "grad_accum": 2, "batch_size": 2, "channel_swap": 0.5,
          "model": {"dropout": 0.1}}
    reference = train_dialogue(config(data, tmp_path / "ref", **kw))
    out = tmp_path / "killed"
    cfg = config(data, out, **kw)
    entry = "textless.dialogue.dgslm.train:train_dialogue"
    assert kill_after_checkpoint(cfg, k, entry, tmp_path / "killed.stderr") == -signal.SIGKILL
    assert not (out / "final").exists() and [p.name for p in list_checkpoints(out)] == [f"step-{k:07d}"]
    resumed = train_dialogue(cfg)
    assert resumed.resumed_from == k
    assert resumed.history == reference.history and resumed.valid_history == reference.valid_history
    a, b = weights(reference.final_model), weights(resumed.final_model)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert DGSLM.from_pretrained(resumed.final_model).config.dropout == 0.1
    # other model overrides cannot resume this run
    with pytest.raises(ResumeMismatchError, match="model.d_model: absent there, 64 now"):
        train_dialogue(config(data, out, **{**kw, "max_steps": N + 2, "model": {"dropout": 0.1, "d_model": 64}}))


def test_a_saved_model_must_fit_the_data(data, tmp_path):
    torch.manual_seed(0)
    other = DGSLM(preset_config("tiny", K), tokenizer={"name": "other-km"}, frame_rate=50.0)
    path = other.save_pretrained(tmp_path / "other")
    with pytest.raises(UnitMismatchError, match="tokenizer"):
        train_dialogue(config(data, tmp_path / "o", init=str(path)))
    bigger = DGSLM(preset_config("tiny", K + 2), tokenizer=TOKENIZER, frame_rate=50.0).save_pretrained(tmp_path / "b")
    with pytest.raises(UnitMismatchError, match="vocab_size"):
        train_dialogue(config(data, tmp_path / "o", init=str(bigger)))
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_continue_from_a_saved_model(data, tmp_path):
    torch.manual_seed(0)
    start = DGSLM(preset_config("tiny", K), tokenizer=TOKENIZER, frame_rate=50.0).save_pretrained(tmp_path / "m")
    obj = built(config(data, tmp_path / "o", init=str(start), model={"dropout": 0.2}))
    assert obj.model.config.dropout == 0.2
    assert all(torch.equal(v, weights(start)[k]) for k, v in obj.model.state_dict().items())
    with pytest.raises(ConfigError, match="do not fit"):
        built(config(data, tmp_path / "o", init=str(start), model={"d_model": 64, "heads": 4}))
    result = train_dialogue(config(data, tmp_path / "run", init=str(start), max_steps=2, eval_every=2))
    assert result.step == 2 and (result.final_model / "config.json").is_file()


def test_config_errors(data, tmp_path):
    for kw, match in [({"train_dataset": ""}, "train_dataset is required"), ({"init": "huge"}, "preset"),
                      ({"context": 1}, "context"), ({"context": 600}, "max_positions"),
                      ({"channel_swap": 1.5}, "channel_swap"), ({"edge_weight": 0, "duration_weight": 0}, "both"),
                      ({"schedule": "linear"}, "schedule"), ({"model": {"num_units": 9}}, "num_units"),
                      ({"model": {"cross_layers": 5}}, "cross_layers"), ({"model": {"depth": 2}}, "depth"),
                      ({"max_steps": None}, "max_steps")]:
        with pytest.raises(ConfigError, match=match):
            train_dialogue(config(data, tmp_path / "e", **kw))


# ----------------------------------------------------------------------------------------------------------------
# the command and its recipes
# ----------------------------------------------------------------------------------------------------------------


def test_recipes_compose():
    from textless.config import compose

    cfg = compose(DialogueTrainConfig, "train-dialogue", ["train_dataset=units/fisher", "model.dropout=0.2"])
    assert (cfg.init, cfg.model, cfg.context, cfg.batch_size, cfg.grad_accum) == \
        ("speech_dlm", {"cross_layers": 4, "dropout": 0.2, "attention_dropout": 0.1}, 6144, 3, 16)
    assert (cfg.lr, cfg.schedule, cfg.warmup_steps, cfg.warmup_init_lr, cfg.max_steps, cfg.clip, cfg.betas) == \
        (5e-4, "inverse_sqrt", 20000, 1e-7, 250000, 1.0, [0.9, 0.98])
    assert (cfg.edge_weight, cfg.duration_weight, cfg.delayed_duration, cfg.max_duration) == (1.0, 1.0, True, 256)
    assert cfg.context <= preset_config(cfg.init, 500, **cfg.model).max_positions
    cpu = compose(DialogueTrainConfig, "train-dialogue", ["train_dataset=u", "+model.dropout=0.0"],
                  "train-dialogue-cpu")
    assert (cpu.init, cpu.model, cpu.context, cpu.precision) == \
        ("cpu", {"d_model": 128, "ffn": 512, "dropout": 0.0}, 500, "fp32")


def test_the_command_runs_the_cpu_recipe(data, tmp_path, capsys):
    from textless.cli import main

    out = tmp_path / "run"
    argv = ["train-dialogue", "--config", "train-dialogue-cpu", f"train_dataset={data[0]}",
            f"valid_dataset={data[1]}", f"output_dir={out}", "init=tiny", "context=32", "batch_size=2", "max_steps=3",
            "eval_every=3", "save_every=3", "log_every=1", "progress=false", "tensorboard=false"]
    assert main(argv) == 0
    captured = capsys.readouterr().out
    assert "step 3/3 loss" in captured and "edge_nll" in captured and "frames/s" in captured
    model = DGSLM.from_pretrained(out / "final")
    assert model.config.num_units == K and model.config.max_duration == 256 and model.config.delayed_duration
    assert main([*argv, "init=nope"]) == 2  # a user error: one line, status 2
    assert "init must be a dGSLM preset" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# torchrun
# ----------------------------------------------------------------------------------------------------------------
_DDP_RUN = textwrap.dedent("""
    import json, os, sys
    from textless.dialogue.dgslm.train import DialogueTrainConfig, train_dialogue_command
    result = train_dialogue_command(DialogueTrainConfig(**json.loads(sys.argv[1])))
    with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"history": result.history, "valid": result.valid_history, "step": result.step}, f)
""")


@pytest.mark.parametrize("strategy", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one_with_two_micro_batches(data, tmp_path, strategy):
    """torchrun, 2 CPU processes (gloo), batch b each == one process with 2 micro-batches of b: the same windows
    (rank r holds micro-batch m * world + r) and the same gradient (the mean of the micro-batch means)."""
    kw = {"max_steps": 4, "save_every": 2, "eval_every": 2, "batch_size": 2}
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
    single = train_dialogue(config(data, tmp_path / "single", grad_accum=2, **kw))
    for key in ("loss", "edge_nll", "duration_l1"):
        np.testing.assert_allclose(ranks[0]["history"][key], single.history[key], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ranks[0]["valid"][key], single.valid_history[key], rtol=1e-4, atol=1e-6)
    a, b = weights(out / "final"), weights(single.final_model)
    # key biases have a zero gradient (softmax ignores a constant shift): Adam turns its float noise into lr steps
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a
                                        if not k.endswith("k_proj.bias"))
    assert not math.isnan(ranks[0]["valid"]["edge_accuracy"][-1])
