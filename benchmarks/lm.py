"""Unit-LM throughput: training tokens/s (textless train vs a plain Hugging Face Trainer) and generation tokens/s.

    python -m benchmarks.lm                       # CPU: small preset, short runs
    python -m benchmarks.lm --device cuda --preset 350m --context 1024 --batch 8 --steps 30

Writes ``benchmarks/results/lm_<device>.json``. Both trainers get the same model (same init), the same packed contexts
(textless.lm.data.PackedUnitDataset over random units, with their restarting position ids), the same batch size,
optimizer (AdamW, betas 0.9 / 0.95, weight decay 0.1, clipping 0.5), peak learning rate and precision; the schedules
differ in shape only (textless: 1 % warmup, cosine to ``min_lr``; Trainer: 1 warmup step, cosine to 0), which does not
change the cost of a step. The time of a warm-up run is excluded by timing `--steps` steps after `--warmup` steps.
Generation: batch 1 and 16, with and without the KV cache, `--new-tokens` new units after a 50-unit prompt.
On CUDA, model FLOPs utilisation = 6 x parameters x tokens/s / peak bf16 FLOP/s (`--peak-tflops`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.tokenize_kernels import RESULTS, machine_info, write_results
from textless.data.units import UnitMeta, UnitSequence, write_units
from textless.lm.data import PackedUnitDataset, PackingConfig
from textless.lm.generation import SamplingConfig, generate_units
from textless.lm.model import UnitLM
from textless.lm.train import TrainConfig, TrainHooks, train
from textless.lm.vocab import UnitVocab

K = 500


def random_units(path: Path, tokens: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    seqs, total, i = [], 0, 0
    while total < tokens:
        n = int(rng.integers(100, 400))
        seqs.append(UnitSequence(f"u{i:06d}", rng.integers(0, K, n)))
        total += n
        i += 1
    meta = UnitMeta(tokenizer={"name": "random"}, frame_rate=25.0, vocab_size=K, deduplicated=False)
    return write_units(path, seqs, meta, encoding="binary")


class StepTimer(TrainHooks):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_batch(self, step: int, batch) -> None:
        if step == self.warmup + 1 and self.start is None:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def bench_textless(units: Path, out: Path, args, device) -> dict:
    timer = StepTimer(args.warmup)
    cfg = TrainConfig(train_dataset=str(units), preset=args.preset, output_dir=str(out), context_length=args.context,
                      batch_size=args.batch, max_steps=args.warmup + args.steps + 1, save_every=10**9,
                      eval_every=10**9, log_every=10**9, progress=False, tensorboard=False, lr=1e-4)
    train(cfg, hooks=timer)
    seconds = timer.end - timer.start  # steps warmup+1 .. warmup+steps (the last on_batch starts the last step)
    tokens = args.steps * args.batch * args.context
    return {"seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def bench_hf_trainer(units: Path, out: Path, args, device) -> dict:
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from textless.data.units import read_units

    ds = read_units(units)
    vocab = UnitVocab.default(K)
    packed = PackedUnitDataset(ds, vocab, PackingConfig(context_length=args.context))
    rows = []
    for batch in packed.batches(1):
        rows.append({"input_ids": batch.input_ids[0].tolist(), "labels": batch.labels[0].tolist(),
                     "position_ids": batch.position_ids[0].tolist()})
        if len(rows) >= (args.warmup + args.steps + 1) * args.batch:
            break
    torch.manual_seed(0)
    lm = UnitLM.from_scratch(args.preset, vocab)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            times.append(time.perf_counter())

    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=args.batch,
                              max_steps=args.warmup + args.steps + 1, learning_rate=1e-4, lr_scheduler_type="cosine",
                              warmup_steps=1, weight_decay=0.1, adam_beta2=0.95, max_grad_norm=0.5, report_to=[],
                              save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
                              bf16=device.type == "cuda", use_cpu=device.type == "cpu", disable_tqdm=True,
                              remove_unused_columns=False)
    trainer = Trainer(model=lm.model, args=targs, train_dataset=Dataset.from_list(rows), callbacks=[Clock()])
    trainer.train()
    seconds = times[args.warmup + args.steps] - times[args.warmup]
    tokens = args.steps * args.batch * args.context
    return {"seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def bench_generation(args, device) -> dict:
    torch.manual_seed(0)
    lm = UnitLM.from_scratch(args.preset, UnitVocab.default(K)).to(device).eval()
    rng = np.random.default_rng(0)
    out = {}
    for batch in (1, 16):
        prompts = [rng.integers(0, K, 50) for _ in range(batch)]
        for cache in (True, False):
            cfg = SamplingConfig(temperature=1.0, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 use_cache=cache, stop_at_eos=False)
            generate_units(lm, prompts[:1], SamplingConfig(max_new_tokens=4), batch_size=batch)  # warm-up
            start = time.perf_counter()
            generate_units(lm, prompts, cfg, batch_size=batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            out[f"batch{batch}_{'kv_cache' if cache else 'no_cache'}"] = {
                "seconds": round(seconds, 3), "new_tokens": batch * args.new_tokens,
                "tokens_per_s": round(batch * args.new_tokens / seconds, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100 SXM: 989)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results: dict = {"machine": machine_info(str(device)), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        units = random_units(tmp / "units", (args.warmup + args.steps + 2) * args.batch * args.context * 2)
        ours = bench_textless(units, tmp / "ours", args, device)
        hf = bench_hf_trainer(units, tmp / "hf", args, device)
    params = UnitLM.from_scratch(args.preset, UnitVocab.default(K)).num_parameters()
    results["parameters"] = params
    results["train"] = {"textless": ours, "hf_trainer": hf,
                        "speedup_vs_hf_trainer": round(ours["tokens_per_s"] / hf["tokens_per_s"], 3)}
    if device.type == "cuda":
        for r in (ours, hf):
            r["mfu"] = round(6 * params * r["tokens_per_s"] / (args.peak_tflops * 1e12), 4)
    results["generation"] = bench_generation(args, device)
    path = RESULTS / f"lm_{device.type}.json"
    write_results(path, results)
    print(f"{args.preset} ({params / 1e6:.1f}M parameters), {device}, context {args.context}, batch {args.batch}")
    print(f"  train: textless {ours['tokens_per_s']} tok/s, HF Trainer {hf['tokens_per_s']} tok/s "
          f"(x{results['train']['speedup_vs_hf_trainer']})")
    for name, r in results["generation"].items():
        print(f"  generate {name}: {r['tokens_per_s']} tok/s")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
