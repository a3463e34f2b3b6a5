"""The training engine (textless.training) with a toy objective: accumulation, phases, budgets, TensorBoard, exact
resume, the resume rules (changed settings apply or stop the run, restart=true starts over), and the checkpoints of
textless <= 0.1's own loops resuming under the engine with the old code's numbers."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from textless.errors import ConfigError
from textless.training import (
    Context,
    Objective,
    OptimizerSpec,
    StepLoss,
    TrainHooks,
    TrainingConfig,
    load_trainer_state,
    train_objective,
)
from textless.training.checkpoint import CHECKPOINTS_DIR, LATEST_FILE, list_checkpoints
from textless.utils.runs import ResumeMismatchError

TESTS = Path(__file__).resolve().parent
LEGACY = TESTS / "data" / "legacy_checkpoints"


# ------------------------------------------------------------------------------------------------ a toy objective
@dataclass
class ToyConfig(TrainingConfig):
    lr: float = 0.05
    batch_size: int = 4
    micro_batches: int = 1
    two_phases: bool = False        # a second optimizer on a second module, stepped only on even steps
    dataset_seed: int = 0
    dropout: float = 0.2


class Toy(Objective):
    """Linear regression y = x @ w (+ dropout on x): batches are a pure function of the micro-batch number."""

    name = "toy"
    history_columns = ("loss", "aux")
    valid_columns = ("loss",)
    resumable_settings = ()
    input_settings = ("dataset_seed",)

    def build(self, ctx: Context, checkpoint: Path | None, state: dict[str, Any] | None) -> None:
        gen = torch.Generator().manual_seed(self.config.dataset_seed)
        self.x = torch.randn(64, 5, generator=gen)
        self.y = self.x @ torch.randn(5, 1, generator=gen)
        self.model = torch.nn.Sequential(torch.nn.Dropout(self.config.dropout), torch.nn.Linear(5, 1))
        self.aux = torch.nn.Linear(5, 1)
        if checkpoint is not None:
            self.model.load_state_dict(load_file(checkpoint / "model.safetensors"))
            self.aux.load_state_dict(load_file(checkpoint / "aux.safetensors"))

    def modules(self):
        return {"model": self.model, "aux": self.aux}

    def configure_optimizers(self, modules):
        adamw = torch.optim.AdamW(modules["model"].parameters(), lr=self.config.lr)
        specs = {"model": OptimizerSpec(adamw, torch.optim.lr_scheduler.LambdaLR(adamw, lambda s: 0.9 ** s),
                                        module="model", clip=1.0)}
        if self.config.two_phases:
            opt = torch.optim.SGD(modules["aux"].parameters(), lr=self.config.lr)
            specs["aux"] = OptimizerSpec(opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), module="aux")
        return specs

    @property
    def micro_batches(self) -> int:
        return self.config.micro_batches

    def batches(self, start: int):
        n = self.config.batch_size
        i = start
        while True:
            rows = torch.arange(i * n, (i + 1) * n) % len(self.x)
            yield rows
            i += 1

    def batch_weight(self, rows) -> float:
        return float(len(rows))

    def phases(self, step: int) -> list[str]:
        return ["model", "aux"] if self.config.two_phases and step % 2 == 0 else ["model"]

    def loss(self, phase: str, rows, scratch):
        module = self.trained[phase]
        err = ((module(self.x[rows]) - self.y[rows]) ** 2).sum()
        return StepLoss(err, {"loss" if phase == "model" else "aux": float(err.detach())})

    @torch.no_grad()
    def evaluate(self, ctx, writer):
        self.model.eval()
        value = float(((self.model(self.x) - self.y) ** 2).mean())
        self.model.train()
        return {"loss": value}

    def inputs(self) -> dict[str, str]:
        return {"dataset_seed": f"data-{self.config.dataset_seed}"}

    def save_checkpoint_files(self, directory: Path, states) -> None:
        save_file(self.model.state_dict(), str(directory / "model.safetensors"))
        save_file(self.aux.state_dict(), str(directory / "aux.safetensors"))

    def save_final(self, directory: Path, states) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.save_checkpoint_files(directory, states)
        return directory


def toy(out: Path, **kw) -> ToyConfig:
    base = {"output_dir": str(out), "max_steps": 6, "eval_every": 3, "save_every": 2, "log_every": 1,
            "progress": False, "tensorboard": False, "seed": 1}
    return ToyConfig(**{**base, **kw})


def run(cfg: ToyConfig, hooks: TrainHooks | None = None):
    return train_objective(Toy(cfg), hooks)


class StopAfter(TrainHooks):
    def __init__(self, step: int):
        self.step = step

    def on_checkpoint(self, step: int, path: Path) -> None:
        if step == self.step:
            raise KeyboardInterrupt


# ------------------------------------------------------------------------------------------------ the loop
def test_histories_checkpoints_and_final(tmp_path, logs):
    result = run(toy(tmp_path, tensorboard=True))
    assert result.step == 6 and result.stopped_by == "max_steps" and result.resumed_from is None
    assert result.history["step"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and result.valid_history["step"] == [3.0, 6.0]
    assert all(math.isnan(v) for v in result.history["aux"])  # no optimizer named it
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000004", "step-0000006"]
    state = load_trainer_state(result.checkpoint)
    assert state["format"] == "textless.trainer_state" and state["version"] == 2
    assert state["step"] == 6 and state["world_size"] == 1 and state["inputs"] == {"dataset_seed": "data-0"}
    assert state["scheduler"]["last_epoch"] == 6 and state["optimizer"]["state"]  # one optimizer: plain keys
    assert state["history"]["loss"].dtype == torch.float64 and state["history"]["loss"].tolist() == \
        result.history["loss"]
    assert any(line.startswith("step 2/6 loss") and "grad_norm" in line for line in logs)
    assert any(line.startswith("step 3 valid loss") for line in logs)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/seconds_per_step", "valid/loss"} <= \
        set(events.Tags()["scalars"])
    lrs = [e.value for e in events.Scalars("train/lr")]
    np.testing.assert_allclose(lrs, [0.05 * 0.9 ** s for s in range(6)], rtol=1e-6)  # scheduler: once per step


def test_loss_is_normalised_by_the_step_weight(tmp_path):
    """4 rows in one micro-batch == 2 micro-batches of 2 rows: the same losses and weights (no dropout, so the
    comparison is of the arithmetic alone; float32 sums in another order: 1e-6 relative)."""
    one = run(toy(tmp_path / "a", dropout=0.0, max_steps=4, eval_every=100))
    two = run(toy(tmp_path / "b", dropout=0.0, max_steps=4, eval_every=100, batch_size=2, micro_batches=2))
    np.testing.assert_allclose(two.history["loss"], one.history["loss"], rtol=1e-6)
    wa, wb = load_file(tmp_path / "a/final/model.safetensors"), load_file(tmp_path / "b/final/model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-6, atol=1e-7) for k in wa)


def test_phases_step_only_the_optimizers_they_name(tmp_path):
    result = run(toy(tmp_path, two_phases=True))
    aux = result.history["aux"]
    assert [math.isnan(v) for v in aux] == [False, True, False, True, False, True]  # steps 0, 2, 4 (0-based)
    state = load_trainer_state(result.checkpoint)
    assert {"optimizer_model", "optimizer_aux", "scheduler_model", "scheduler_aux"} <= set(state)
    assert state["scheduler_aux"]["last_epoch"] == 6  # every scheduler steps every step


def test_budgets(tmp_path):
    timed = run(toy(tmp_path / "t", max_steps=None, max_seconds=1e-9))
    assert timed.step == 0 and timed.stopped_by == "max_seconds" and (timed.final_model / "model.safetensors").is_file()
    with pytest.raises(ConfigError, match="max_steps must be >= 1"):
        run(toy(tmp_path / "bad", max_steps=0))
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
        run(toy(tmp_path / "bad", precision="fp8"))


# ------------------------------------------------------------------------------------------------ resume
def test_interrupted_run_resumes_bit_for_bit(tmp_path, logs):
    """Dropout draws from the RNG: the RNG states, optimizer, scheduler and data position must all come back."""
    reference = run(toy(tmp_path / "ref", two_phases=True))
    with pytest.raises(KeyboardInterrupt):
        run(toy(tmp_path / "cut", two_phases=True), StopAfter(4))
    assert not (tmp_path / "cut" / "final").exists()
    resumed = run(toy(tmp_path / "cut", two_phases=True))
    assert resumed.resumed_from == 4 and any("resuming from" in line for line in logs)
    for name in reference.history:
        np.testing.assert_array_equal(resumed.history[name], reference.history[name])
    assert resumed.valid_history == reference.valid_history
    for f in ("model.safetensors", "aux.safetensors"):
        a, b = load_file(tmp_path / "ref/final" / f), load_file(tmp_path / "cut/final" / f)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_changed_settings_stop_the_run_with_every_difference(tmp_path):
    run(toy(tmp_path, max_steps=2))
    with pytest.raises(ResumeMismatchError) as err:
        run(toy(tmp_path, max_steps=4, lr=0.1, batch_size=8))
    message = str(err.value)
    assert "batch_size: 4 there, 8 now" in message and "lr: 0.05 there, 0.1 now" in message
    assert "restart=true" in message and f"checkpoint {tmp_path / 'checkpoints' / 'step-0000002'}" in message
    with pytest.raises(ResumeMismatchError, match=r"dataset_seed \(contents\): 'data-0' there, 'data-1' now"):
        run(toy(tmp_path, max_steps=4, dataset_seed=1))  # an input named by input_settings: its fingerprint


def test_resumable_settings_apply_and_restart_starts_over(tmp_path, logs):
    run(toy(tmp_path, max_steps=2))
    longer = run(toy(tmp_path, max_steps=4, log_every=2, eval_every=4))
    assert longer.resumed_from == 2 and longer.step == 4 and longer.history["step"] == [1.0, 2.0, 3.0, 4.0]
    assert any("resuming with changed settings" in line and "max_steps: 2 there, 4 now" in line for line in logs)
    fresh = run(toy(tmp_path, max_steps=3, lr=0.1, restart=True))
    assert fresh.resumed_from is None and fresh.history["step"] == [1.0, 2.0, 3.0]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000002", "step-0000003"]


# ------------------------------------------------------------------------------------------------ legacy layouts
def _legacy_into(kind: str, out: Path) -> None:
    """The step-2 checkpoint written by textless <= 0.1, placed as `out`'s latest checkpoint."""
    root = out / CHECKPOINTS_DIR
    root.mkdir(parents=True)
    shutil.copytree(LEGACY / kind / "step-0000002", root / "step-0000002")
    (root / LATEST_FILE).write_text("step-0000002\n")


@pytest.fixture
def legacy_helpers(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    import test_lm_train
    import test_vocoder_train

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as when the fixtures were made
    yield test_lm_train, test_vocoder_train
    torch.set_num_threads(before)


# The references were computed by the old loops on one machine; CPUs of other vector widths sum in another order, so
# a few float32 ulps (relative 1e-7 each) may differ per reduction and grow over 2 Adam steps: 1e-4 relative bounds
# that with room, while any change of what is computed (an LR, a loss term, the data position) moves these losses by
# 1e-3 or more.
RTOL = 1e-4


def test_a_unit_lm_checkpoint_of_the_old_loop_resumes(tmp_path, legacy_helpers):
    tl, _ = legacy_helpers
    reference = json.loads((LEGACY / "lm" / "reference.json").read_text())
    data = tl.make_units(tmp_path / "train", 150, seed=1), tl.make_units(tmp_path / "valid", 20, seed=2)
    cfg = tl.config(data, tmp_path / "old", max_steps=4, save_every=2, eval_every=2)
    _legacy_into("lm", tmp_path / "old")
    resumed = tl.train(cfg)
    assert resumed.resumed_from == 2
    np.testing.assert_allclose([v for _, v in resumed.losses], [v for _, v in reference["losses"]], rtol=RTOL)
    np.testing.assert_allclose([v for _, v in resumed.valid_losses], [v for _, v in reference["valid_losses"]],
                               rtol=RTOL)
    assert [s for s, _ in resumed.losses] == [1, 2, 3, 4]
    # and a fresh run of today's engine computes what the old loop computed
    fresh = tl.train(tl.config(data, tmp_path / "new", max_steps=4, save_every=2, eval_every=2))
    np.testing.assert_allclose([v for _, v in fresh.losses], [v for _, v in reference["losses"]], rtol=RTOL)


def test_a_vocoder_checkpoint_of_the_old_loop_resumes(tmp_path, legacy_helpers):
    _, tv = legacy_helpers
    reference = json.loads((LEGACY / "vocoder" / "reference.json").read_text())
    rng = np.random.default_rng(0)  # the corpus make_legacy.py wrote (the same as test_vocoder_train's)
    train = {f"u{i:02d}": (tv.random_frames(rng, int(rng.integers(80, 200))), ["bob", "alice"][i % 2], 0)
             for i in range(8)}
    valid = {f"v{i:02d}": (tv.random_frames(rng, int(rng.integers(80, 200))), ["bob", "alice"][i % 2], 0)
             for i in range(3)}
    corpus = tv.write_corpus(tmp_path / "train", train), tv.write_corpus(tmp_path / "valid", valid)
    _legacy_into("vocoder", tmp_path / "old")
    resumed = tv.train_vocoder(tv.config(corpus, tmp_path / "old", max_steps=4, save_every=2, eval_every=2))
    assert resumed.resumed_from == 2
    for name, values in reference["history"].items():
        np.testing.assert_allclose(resumed.history[name], values, rtol=RTOL, err_msg=name)  # NaN == NaN
    for name, values in reference["valid_history"].items():
        np.testing.assert_allclose(resumed.valid_history[name], values, rtol=RTOL, err_msg=name)
    fresh = tv.train_vocoder(tv.config(corpus, tmp_path / "new", max_steps=4, save_every=2, eval_every=2))
    for name, values in reference["history"].items():
        np.testing.assert_allclose(fresh.history[name], values, rtol=RTOL, err_msg=name)


def test_engine_keeps_no_objective_import(tmp_path):
    """The engine is generic: nothing under textless.training imports a stage."""
    import ast

    for f in (TESTS.parent / "textless" / "training").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("textless.lm", "textless.vocoders", "textless.tokenizers")), f
