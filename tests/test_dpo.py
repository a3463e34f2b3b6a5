"""`textless dpo` (textless.preference.dpo / train): the math against TRL's DPOTrainer, LoRA, the reference model,
training through the engine, exact resume after SIGKILL, input checks."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from kill_fixtures import kill_after_checkpoint
from safetensors.torch import load_file

from textless.data.identity import UnitIdentity, UnitMismatchError
from textless.errors import ConfigError
from textless.lm.model import UnitLM
from textless.lm.vocab import UnitVocab
from textless.preference.data import Pair, PreferenceData, read_pairs, write_pairs
from textless.preference.dpo import (
    PreferenceBatch,
    batch_loss,
    collate_pairs,
    dpo_loss,
    precompute_ref_logps,
    reference_logps,
    sequence_logps,
)
from textless.preference.train import (
    ADAPTER_FILE,
    REFERENCE_DIR,
    DPOConfig,
    dpo,
    dpo_steps,
    load_dpo_result,
    lora_config,
    lora_targets,
)
from textless.training.checkpoint import MODEL_DIR, list_checkpoints

REPO = Path(__file__).resolve().parents[1]
K = 20
TOKENIZER = {"name": "test-km"}


def tiny_lm(seed: int = 0) -> UnitLM:
    torch.manual_seed(seed)
    return UnitLM.from_scratch("tiny", UnitVocab.default(K), tokenizer=TOKENIZER, frame_rate=50.0,
                               deduplicated=False)


def make_pairs(n: int, seed: int, vocab_size: int = K) -> list[Pair]:
    """Learnable preferences: chosen continuations use the low half of the units, rejected ones the high half."""
    rng = np.random.default_rng(seed)
    half = vocab_size // 2
    pairs = []
    for i in range(n):
        prompt = rng.integers(0, vocab_size, int(rng.integers(1, 8))).tolist()
        chosen = rng.integers(0, half, int(rng.integers(1, 9))).tolist()
        rejected = rng.integers(half, vocab_size, int(rng.integers(1, 9))).tolist()
        pairs.append(Pair(id=f"p{i}", prompt_id=f"q{i}", prompt_units=prompt, chosen_units=chosen,
                          rejected_units=rejected))
    return pairs


def write_dataset(path: Path, pairs: list[Pair], vocab_size: int = K, name: str = "test-km") -> Path:
    units = UnitIdentity(tokenizer={"name": name}, vocab_size=vocab_size, frame_rate=50.0, deduplicated=False)
    return write_pairs(path, PreferenceData(units=units, pairs=pairs, source={"test": True}))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(policy dir, train pairs dir, valid pairs dir)."""
    root = tmp_path_factory.mktemp("dpo")
    policy = tiny_lm(0).save_pretrained(root / "policy")
    return policy, write_dataset(root / "train", make_pairs(24, 1)), write_dataset(root / "valid", make_pairs(8, 2))


def config(setup, out, **kw) -> DPOConfig:
    policy, train_dir, valid_dir = setup
    base = {"policy": str(policy), "pairs": str(train_dir), "valid_pairs": str(valid_dir), "output_dir": str(out),
            "batch_size": 4, "max_steps": 6, "eval_every": 3, "save_every": 2, "log_every": 1, "progress": False,
            "tensorboard": False, "seed": 3, "lr": 1e-3}
    base.update(kw)
    return DPOConfig(**base)


# ----------------------------------------------------------------------------------------------------------------
# the math
# ----------------------------------------------------------------------------------------------------------------


def test_collate_layout_matches_trl_collator():
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    vocab = UnitVocab.default(K)
    pairs = make_pairs(5, 7)
    for max_length in (None, 6):
        ours = collate_pairs(pairs, vocab, max_length)
        examples = [trl_example(p, vocab) for p in pairs]
        theirs = DataCollatorForPreference(pad_token_id=vocab.pad_id, max_length=max_length)(examples)
        for key in ("input_ids", "attention_mask", "completion_mask"):
            assert torch.equal(getattr(ours, key), theirs[key]), key
    batch = collate_pairs(pairs[:1], vocab)
    row = batch.input_ids[0].tolist()
    assert row[0] == vocab.bos_id and row[len(pairs[0].prompt_units) + 1 + len(pairs[0].chosen_units)] == vocab.eos_id


def trl_example(pair: Pair, vocab: UnitVocab) -> dict:
    """slamkit's tokenisation: prompt = bos + prompt units, completions = units + eos."""
    return {"prompt_ids": [vocab.bos_id, *vocab.units_to_tokens(pair.prompt_units).tolist()],
            "chosen_ids": [*vocab.units_to_tokens(pair.chosen_units).tolist(), vocab.eos_id],
            "rejected_ids": [*vocab.units_to_tokens(pair.rejected_units).tolist(), vocab.eos_id]}


def word_level_tokenizer(vocab: UnitVocab):
    """A tiny fast tokenizer over the unit vocabulary, so that TRL accepts a processing_class."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab.size)}
    tok = Tokenizer(WordLevel(vocab=words, unk_token=f"t{vocab.pad_id}"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=f"t{vocab.pad_id}",
                                   eos_token=f"t{vocab.eos_id}", bos_token=f"t{vocab.bos_id}")


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_loss_and_gradients_equal_trl_dpo_trainer(loss_type, tmp_path):
    """Our loss and every parameter gradient == TRL's DPOTrainer.compute_loss on the same batch.

    The models run in float64, so the transformer's own rounding (~1e-16) vanishes. TRL's fused LM head
    (trl.kernels.chunked_logprob) still accumulates the log-softmax of every token in float32 whatever the model's
    dtype, so its log-probs carry float32 rounding: ~1e-7 of the log-sum-exp (~log V ~ 3) per token, summed over
    <= 17 completion tokens, i.e. <~ 1e-5 absolute per side, 1e-6 relative on the loss; the gradients flow through
    the same float32 softmax (relative error ~1e-6). The tolerances below (loss rtol 1e-5; gradients rtol 1e-4 with
    atol 1e-5 x the largest gradient) sit ~40x above what is measured (3e-7 relative on the loss, 2e-7 of the largest
    gradient) and orders below what any difference in the formula (another token scored, mean instead of sum,
    another length) would give.
    """
    from datasets import Dataset
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    class PreTokenized(DPOTrainer):  # slamkit overrides tokenisation the same way
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    ref = tiny_lm(1)
    ref.model.double()
    policy = copy.deepcopy(ref)
    with torch.no_grad():  # a policy that differs from the reference
        for p in policy.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vocab, beta = ref.vocab, 0.3
    pairs = make_pairs(4, 11)
    examples = [trl_example(p, vocab) for p in pairs]
    args = TRLConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, beta=beta, loss_type=[loss_type],
                     per_device_train_batch_size=4, max_length=None, disable_dropout=True, logging_steps=1,
                     bf16=False)  # TRL defaults to bf16, which would autocast its reference model
    trainer = PreTokenized(model=copy.deepcopy(policy.model), ref_model=copy.deepcopy(ref.model), args=args,
                           train_dataset=Dataset.from_list(examples), processing_class=word_level_tokenizer(vocab))
    trainer.model.train()
    batch = DataCollatorForPreference(pad_token_id=vocab.pad_id)(examples)
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()

    ours_batch = collate_pairs(pairs, vocab)
    policy.model.train()
    losses, metrics = batch_loss(policy.model, ours_batch, beta, loss_type, reference_logps(ref.model, ours_batch))
    loss = losses.mean()
    loss.backward()
    assert loss.dtype == torch.float64 and trl_loss.dtype == torch.float32
    torch.testing.assert_close(loss.float(), trl_loss.detach(), rtol=1e-5, atol=1e-7)
    theirs = dict(trainer.model.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in policy.model.parameters())
    assert scale > 1e-3  # a real gradient
    for name, p in policy.model.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad.to(p.grad.dtype), rtol=1e-4, atol=1e-5 * scale,
                                   msg=name)
    # the logged rewards are TRL's
    logged = trainer._metrics["train"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert float(metrics[key].mean()) == pytest.approx(logged[key][-1], rel=1e-5, abs=1e-6), key


def test_dpo_loss_formulas():
    c, r = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-3.5, -4.0])
    lengths = (torch.tensor([2, 4]), torch.tensor([1, 2]))
    delta = (c - rc) - (r - rr)
    losses, m = dpo_loss(c, r, rc, rr, 0.5, "sigmoid", lengths)
    torch.testing.assert_close(losses, torch.log1p(torch.exp(-0.5 * delta)))
    torch.testing.assert_close(dpo_loss(c, r, rc, rr, 0.5, "hinge")[0], torch.relu(1 - 0.5 * delta))
    ipo = ((c - rc) / lengths[0] - (r - rr) / lengths[1] - 1.0) ** 2
    torch.testing.assert_close(dpo_loss(c, r, rc, rr, 0.5, "ipo", lengths)[0], ipo)
    assert m["rewards/accuracies"].tolist() == [1.0, 0.0]
    torch.testing.assert_close(m["rewards/margins"], 0.5 * delta)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(c, r, rc, rr, 0.5, "kto")


def test_precomputed_reference_equals_on_the_fly():
    lm = tiny_lm(2)
    pairs = make_pairs(6, 3)
    values = precompute_ref_logps(lm, pairs, batch_size=4)
    with_ref = [copy.copy(p) for p in pairs]
    for p, (c, r) in zip(with_ref, values):
        p.ref_chosen_logps, p.ref_rejected_logps = c, r
    policy = tiny_lm(5)
    batch = collate_pairs(with_ref, lm.vocab, with_ref=True)
    pre, _ = batch_loss(policy.model, batch, 0.1, "sigmoid")
    fly, _ = batch_loss(policy.model, batch, 0.1, "sigmoid", reference_logps(lm.model, batch))
    # other batch compositions pad to other lengths: float32 rounding of the attention sums only
    torch.testing.assert_close(pre, fly, rtol=1e-5, atol=1e-6)


def test_sequence_logps_scores_only_the_completion():
    lm = tiny_lm(3)
    pair = make_pairs(1, 4)[0]
    batch = collate_pairs([pair], lm.vocab)
    logps, lengths = sequence_logps(lm.model, batch)
    assert lengths.tolist() == [len(pair.chosen_units) + 1, len(pair.rejected_units) + 1]
    ids = batch.input_ids[0, : int(batch.attention_mask[0].sum())]
    with torch.no_grad():
        logits = lm.model(input_ids=ids[None]).logits[0].log_softmax(-1)
    start = len(pair.prompt_units) + 1
    expected = sum(float(logits[t - 1, ids[t]]) for t in range(start, len(ids)))
    assert float(logps[0]) == pytest.approx(expected, rel=1e-5)
    assert isinstance(batch, PreferenceBatch) and batch.num_pairs == 1


# ----------------------------------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------------------------------


def test_lora_merge_and_adapter_round_trip(tmp_path):
    from peft import PeftModel, get_peft_model

    lm = tiny_lm(4)
    base = copy.deepcopy(lm.model)
    assert lora_targets(lm.model) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    with pytest.raises(ConfigError, match="lm_head"):
        lora_targets(lm.model, ["q_proj", "lm_head"])
    with pytest.raises(ConfigError, match="fc1"):
        lora_targets(lm.model, ["fc1"])
    peft = get_peft_model(lm.model, lora_config(DPOConfig(lora=True), lm.model))
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter do something
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    assert {n for n, p in peft.named_parameters() if p.requires_grad} == {n for n, _ in peft.named_parameters()
                                                                          if "lora_" in n}
    ids = collate_pairs(make_pairs(3, 5), lm.vocab).input_ids
    peft.eval()
    with torch.no_grad():
        unmerged = peft(input_ids=ids).logits
        plain = base(input_ids=ids).logits
        merged = copy.deepcopy(peft).merge_and_unload()(input_ids=ids).logits
    assert not torch.allclose(unmerged, plain, atol=1e-3)
    # W + BA computed once vs x W + (x A) B: float32 rounding (~1e-7 relative) through 2 layers
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    peft.save_pretrained(str(tmp_path / "adapter"))
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, unmerged, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# training through the engine
# ----------------------------------------------------------------------------------------------------------------


def test_dpo_trains_and_logs_rewards(setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    # the training pairs as the validation set: preference accuracy on what is trained
    cfg = config(setup, out, max_steps=12, eval_every=12, save_every=12, tensorboard=True, lr=3e-3, beta=0.5,
                 valid_pairs=str(setup[1]))
    result = dpo(cfg)
    assert result.step == 12 and result.stopped_by == "max_steps"
    first = {k: v[0] for k, v in result.history.items()}
    # step 1: the policy is the reference, so every reward is 0 and the loss is log 2
    assert first["loss"] == pytest.approx(np.log(2), abs=1e-6) and first["rewards/margins"] == pytest.approx(0)
    last = {k: v[-1] for k, v in result.valid_history.items()}
    assert last["loss"] < 0.5 and last["rewards/accuracies"] >= 0.9 and last["rewards/margins"] > 0
    assert result.extra["pairs_seen"] == 12 * 4
    tags = EventAccumulator(str(result.tensorboard_dir)).Reload().Tags()["scalars"]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert f"train/{key}" in tags and f"valid/{key}" in tags
    final = UnitLM.from_pretrained(result.final_model)
    assert final.tokenizer == TOKENIZER and load_dpo_result(result.final_model).vocab == final.vocab


def test_epochs_set_the_steps_and_precomputed_reference_matches_frozen(setup, tmp_path, logs):
    assert dpo_steps(24, 1.0, 4) == 6 and dpo_steps(25, 1.0, 4) == 7 and dpo_steps(24, 0.5, 8) == 2
    frozen = dpo(config(setup, tmp_path / "frozen", max_steps=None, epochs=0.5, grad_accum=2, batch_size=2))
    assert frozen.step == 3 and frozen.stopped_by == "epochs"
    pre = dpo(config(setup, tmp_path / "pre", max_steps=None, epochs=0.5, grad_accum=2, batch_size=2,
                     reference="precomputed"))
    np.testing.assert_allclose(pre.history["loss"], frozen.history["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pre.valid_history["rewards/margins"], frozen.valid_history["rewards/margins"],
                               rtol=1e-4, atol=1e-6)
    stored = read_pairs(tmp_path / "pre" / REFERENCE_DIR / "train")
    assert stored.ref["model"] and all(p.ref_chosen_logps is not None for p in stored.pairs)
    # a dataset that carries the same model's log-probs is used as is
    logs.clear()
    again = dpo(config(setup, tmp_path / "again", max_steps=None, epochs=0.5, grad_accum=2, batch_size=2,
                       reference="precomputed", pairs=str(tmp_path / "pre" / REFERENCE_DIR / "train")))
    assert again.history["loss"] == pre.history["loss"]
    assert sum("computing the reference log-probs" in line for line in logs) == 1  # the valid pairs only


def test_units_that_do_not_fit_the_policy_are_refused(setup, tmp_path):
    bad = write_dataset(tmp_path / "bad", make_pairs(4, 9, vocab_size=K + 5), vocab_size=K + 5)
    with pytest.raises(UnitMismatchError, match=f"preference dataset '{bad}'.*vocab_size|vocab_size.*'{bad}'"):
        dpo(config(setup, tmp_path / "o", pairs=str(bad)))
    other = write_dataset(tmp_path / "other", make_pairs(4, 9), name="other-km")
    with pytest.raises(UnitMismatchError, match="tokenizer"):
        dpo(config(setup, tmp_path / "o", valid_pairs=str(other)))
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_recipe_composes():
    from textless.config import compose

    cfg = compose(DPOConfig, "dpo", ["pairs=p", "policy=starter"], "dpo")
    assert isinstance(cfg, DPOConfig) and (cfg.pairs, cfg.policy) == ("p", "starter")
    assert (cfg.loss_type, cfg.beta, cfg.lr, cfg.clip, cfg.epochs, cfg.max_steps) == ("sigmoid", 0.1, 5e-5, 0.5, 1.0,
                                                                                       None)


def test_config_errors(setup, tmp_path):
    for kw, match in [({"pairs": ""}, "pairs is required"), ({"policy": ""}, "policy is required"),
                      ({"reference": "online"}, "reference"), ({"loss_type": "kto"}, "loss_type"),
                      ({"beta": 0.0}, "beta"), ({"lora": True, "lora_target_modules": ["lm_head"]}, "lm_head"),
                      ({"max_length": 5000}, "positions"), ({"epochs": 0}, "epochs")]:
        with pytest.raises(ConfigError, match=match):
            dpo(config(setup, tmp_path / "e", **kw))


# ----------------------------------------------------------------------------------------------------------------
# exact resume after SIGKILL
# ----------------------------------------------------------------------------------------------------------------


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if (path / ADAPTER_FILE).exists() else "model.safetensors"
    return load_file(path / name)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_exact_resume_after_sigkill(setup, tmp_path, lora):
    """Uninterrupted N steps == (run killed by SIGKILL after checkpoint k) + the same command again, bit for bit."""
    N, k = 5, 2
    kw = {"max_steps": N, "save_every": 2, "eval_every": 3, "lora": lora, "merge_lora": False, "lora_dropout": 0.1,
          "grad_accum": 2, "batch_size": 2}
    reference = dpo(config(setup, tmp_path / "ref", **kw))
    out = tmp_path / "killed"
    cfg = config(setup, out, **kw)
    assert kill_after_checkpoint(cfg, k, "textless.preference.train:dpo", tmp_path / "killed.stderr") == -signal.SIGKILL
    assert not (out / "final").exists() and [p.name for p in list_checkpoints(out)] == [f"step-{k:07d}"]
    if lora:
        assert (out / "checkpoints" / f"step-{k:07d}" / MODEL_DIR / "adapter_config.json").is_file()
    resumed = dpo(cfg)
    assert resumed.resumed_from == k
    assert resumed.history == reference.history and resumed.valid_history == reference.valid_history
    a, b = final_weights(reference.final_model), final_weights(resumed.final_model)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    if lora:  # final/ holds the adapter; load_dpo_result merges it onto the base policy
        assert (resumed.final_model / ADAPTER_FILE).is_file()
        merged = load_dpo_result(resumed.final_model)
        ids = collate_pairs(make_pairs(2, 6), merged.vocab).input_ids
        base = UnitLM.from_pretrained(setup[0])
        with torch.no_grad():
            assert not torch.allclose(merged.model(input_ids=ids).logits, base.model(input_ids=ids).logits)


# ----------------------------------------------------------------------------------------------------------------
# torchrun
# ----------------------------------------------------------------------------------------------------------------
_DDP_RUN = textwrap.dedent("""
    import json, os, sys
    from textless.preference.train import DPOConfig, dpo_command
    result = dpo_command(DPOConfig(**json.loads(sys.argv[1])))
    with open(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({"history": result.history, "valid": result.valid_history, "step": result.step}, f)
""")


@pytest.mark.parametrize("strategy,lora", [("ddp", False), pytest.param("fsdp", False, marks=pytest.mark.slow),
                                           ("ddp", True)], ids=["ddp", "fsdp", "ddp-lora"])
def test_two_processes_match_one_with_twice_the_batch(setup, tmp_path, strategy, lora):
    """torchrun, 2 CPU processes (gloo): the same losses, rewards and final weights as one process with 2x the
    batch (each step sees the same pairs; the loss is the pair mean over both ranks)."""
    kw = {"max_steps": 4, "save_every": 2, "eval_every": 2, "lora": lora, "batch_size": 2, "grad_accum": 2}
    out = tmp_path / strategy
    cfg = config(setup, out, strategy=strategy, **kw)
    script = tmp_path / "run.py"
    script.write_text(_DDP_RUN)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           json.dumps(cfg.__dict__), str(tmp_path)]
    proc = subprocess.run(cmd, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] and ranks[0]["step"] == 4
    single = dpo(config(setup, tmp_path / "single", **{**kw, "batch_size": 4}))
    for key in ("loss", "rewards/margins", "rewards/accuracies"):
        np.testing.assert_allclose(ranks[0]["history"][key], single.history[key], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ranks[0]["valid"][key], single.valid_history[key], rtol=1e-4, atol=1e-6)
    # Weights: the two runs sum the same gradients in another order (float32 rounding, ~1e-7 relative). Adam divides
    # each gradient by its running RMS, so for an element whose gradient is near zero that rounding can move the
    # normalised update by a fair part of one step, whose size is at most lr. Allow 5 % of one step (measured on 2
    # CPUs: 1.6 % at worst); a real bug (a rank's pairs missing, a wrong average) moves weights by whole steps.
    a, b = final_weights(out / "final"), final_weights(single.final_model)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 0.05 * cfg.lr, f"final weights differ by up to {worst:.3g} (> 5 % of lr {cfg.lr})"
