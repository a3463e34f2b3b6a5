"""DPO optimizer-step throughput: `textless dpo` (the engine's DPO objective) vs TRL's ``DPOTrainer``.

    python -m benchmarks.dpo_step                                   # CPU: small preset (21M Llama), batch 4 pairs
    python -m benchmarks.dpo_step --device cuda --preset 350m --batch 8 --steps 30

Writes ``benchmarks/results/dpo_step_<device>.json``. Both trainers get the same policy (same init, a frozen copy as
the reference), the same pairs (random units of fixed lengths, so every batch has the same shape whatever the order:
``--prompt`` units of prompt, ``--continuation`` units per side), the same batch of pairs per step, AdamW at lr 5e-5
with a cosine schedule, gradient clipping 0.5, sigmoid loss with beta 0.1, dropout off, the same precision (fp32 on
CPU, bf16 autocast on CUDA). TRL tokenisation is overridden as slamkit does (pre-tokenised ``prompt_ids`` /
``chosen_ids`` / ``rejected_ids`` columns: bos + prompt units, units + eos). The time of `--warmup` steps is excluded:
`--steps` steps after them are timed (from the start of step warmup+1 to the start of step warmup+steps+1).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.tokenize_kernels import RESULTS, machine_info, write_results
from textless.data.identity import UnitIdentity
from textless.lm.model import UnitLM
from textless.lm.vocab import UnitVocab
from textless.preference.data import Pair, PreferenceData, write_pairs
from textless.preference.dpo import pair_tokens
from textless.preference.train import DPOConfig, dpo
from textless.training.engine import TrainHooks

K = 500
TOKENIZER = {"name": "random"}


def random_pairs(n: int, prompt: int, continuation: int, seed: int = 0) -> list[Pair]:
    rng = np.random.default_rng(seed)
    return [Pair(id=f"p{i}", prompt_id=f"q{i}", prompt_units=rng.integers(0, K, prompt).tolist(),
                 chosen_units=rng.integers(0, K, continuation).tolist(),
                 rejected_units=rng.integers(0, K, continuation).tolist()) for i in range(n)]


def policy(preset: str) -> UnitLM:
    torch.manual_seed(0)
    return UnitLM.from_scratch(preset, UnitVocab.default(K), tokenizer=TOKENIZER, frame_rate=25.0,
                               deduplicated=False)


class StepTimer(TrainHooks):
    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps, self.start, self.end = warmup, steps, None, None

    def on_batch(self, step: int, batch) -> None:
        if step == self.warmup + 1 and self.start is None:
            self.start = time.perf_counter()
        if step == self.warmup + self.steps + 1 and self.end is None:
            self.end = time.perf_counter()


def bench_textless(pairs_dir: Path, policy_dir: Path, out: Path, args, device) -> dict:
    timer = StepTimer(args.warmup, args.steps)
    cfg = DPOConfig(pairs=str(pairs_dir), policy=str(policy_dir), output_dir=str(out), batch_size=args.batch,
                    max_steps=args.warmup + args.steps + 1, save_every=10**9, eval_every=10**9, log_every=10**9,
                    progress=False, tensorboard=False, precision="auto")
    dpo(cfg, hooks=timer)
    seconds = timer.end - timer.start
    pairs = args.steps * args.batch
    return {"seconds": round(seconds, 3), "pairs": pairs, "pairs_per_s": round(pairs / seconds, 3)}


def bench_trl(pairs: list[Pair], lm: UnitLM, out: Path, args, device) -> dict:
    from datasets import Dataset
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    class PreTokenized(DPOTrainer):  # slamkit's override: the unit tokens are given
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    vocab = lm.vocab
    rows = []
    for pair in pairs:
        prompt, chosen, rejected = pair_tokens(pair, vocab)
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    words = {f"t{i}": i for i in range(vocab.size)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab=words, unk_token="t0")),
                                        pad_token=f"t{vocab.pad_id}", eos_token=f"t{vocab.eos_id}")
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            times.append(time.perf_counter())

    targs = TRLConfig(output_dir=str(out), per_device_train_batch_size=args.batch,
                      max_steps=args.warmup + args.steps + 1, learning_rate=5e-5, lr_scheduler_type="cosine",
                      max_grad_norm=0.5, beta=0.1, loss_type=["sigmoid"], report_to=[], save_strategy="no",
                      logging_strategy="no", dataloader_num_workers=0, bf16=device.type == "cuda",
                      use_cpu=device.type == "cpu", disable_tqdm=True, max_length=None, disable_dropout=True)
    trainer = PreTokenized(model=copy.deepcopy(lm.model), ref_model=copy.deepcopy(lm.model), args=targs,
                           train_dataset=Dataset.from_list(rows), processing_class=tokenizer, callbacks=[Clock()])
    trainer.train()
    seconds = times[args.warmup + args.steps] - times[args.warmup]
    n = args.steps * args.batch
    return {"seconds": round(seconds, 3), "pairs": n, "pairs_per_s": round(n / seconds, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--prompt", type=int, default=50, help="prompt units")
    parser.add_argument("--continuation", type=int, default=100, help="units per continuation")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results: dict = {"machine": machine_info(str(device)), "args": vars(args)}
    lm = policy(args.preset)
    pairs = random_pairs((args.warmup + args.steps + 2) * args.batch, args.prompt, args.continuation)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        policy_dir = lm.save_pretrained(tmp / "policy")
        units = UnitIdentity(tokenizer=TOKENIZER, vocab_size=K, frame_rate=25.0, deduplicated=False)
        pairs_dir = write_pairs(tmp / "pairs", PreferenceData(units=units, pairs=pairs))
        ours = bench_textless(pairs_dir, policy_dir, tmp / "ours", args, device)
        trl = bench_trl(pairs, lm, tmp / "trl", args, device)
    results["parameters"] = lm.num_parameters()
    results["tokens_per_row"] = 1 + args.prompt + args.continuation + 1
    results["dpo_step"] = {"textless": ours, "trl_dpo_trainer": trl,
                           "speedup_vs_trl": round(ours["pairs_per_s"] / trl["pairs_per_s"], 3)}
    path = RESULTS / f"dpo_step_{device.type}.json"
    write_results(path, results)
    print(f"{args.preset} ({results['parameters'] / 1e6:.1f}M parameters), {device}, batch {args.batch} pairs of "
          f"{results['tokens_per_row']} tokens per side")
    print(f"  textless dpo {ours['pairs_per_s']} pairs/s, TRL DPOTrainer {trl['pairs_per_s']} pairs/s "
          f"(x{results['dpo_step']['speedup_vs_trl']})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
