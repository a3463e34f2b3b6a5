"""TWIST init from the real SmolLM2-135M vs the same architecture from scratch, same units and token budget.

    python -m benchmarks.lm_twist_vs_scratch --units outputs/exp/units --steps 50

The units are the bundled corpus tokenized by a tokenizer trained on it (the recorded run used the offline
Whisper-base encoder, layer 4, k-means 100: `textless kmeans encoder=<offline whisper-base> layer=4 k=100` then
`textless tokenize` per split). Both runs use `textless train` with identical settings except the initialisation:
``init=twist base_model=<SmolLM2 dir>`` vs ``init=scratch preset=<SmolLM2's config.json>``. Validation loss (mean NLL
per unit, nats) is measured on held-out utterances of the training speakers (``valid``) during training and, at the
end, also on held-out speakers (``valid_unseen``). Writes ``benchmarks/results/lm_twist_vs_scratch.json`` and
``lm_twist_vs_scratch.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.tokenize_kernels import RESULTS, machine_info, write_results
from textless.data.units import read_units
from textless.lm.model import UnitLM
from textless.lm.offline import offline_smollm2_dir
from textless.lm.train import TrainConfig, train


def unseen_loss(final_model: Path, units_dir: Path) -> float:
    lm = UnitLM.from_pretrained(final_model)
    units = read_units(units_dir)
    scores = lm.log_likelihood([seq.units for seq in units], add_eos=True, batch_size=8)
    return float(-scores.sum.sum() / scores.num_tokens.sum())


def run(name: str, args, extra: dict, out: Path) -> dict:
    cfg = TrainConfig(train_dataset=str(args.units / "train"), valid_dataset=str(args.units / "valid"),
                      output_dir=str(out / name), context_length=args.context, batch_size=args.batch,
                      lr=args.lr, min_lr=args.lr / 10, warmup_fraction=0.1, max_steps=args.steps,
                      eval_every=args.eval_every, save_every=args.steps, log_every=10**9, progress=False,
                      tensorboard=True, seed=0, **extra)
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    return {"valid_losses": result.valid_losses, "train_losses": result.losses, "tokens": result.tokens_seen,
            "seconds": round(seconds, 1), "valid_unseen_loss": unseen_loss(result.final_model,
                                                                          args.units / "valid_unseen")}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results["runs"].items():
        steps, losses = zip(*r["valid_losses"])
        tokens = [s * results["tokens_per_step"] / 1000 for s in steps]
        ax.plot(tokens, losses, marker="o", label=f"{name} (unseen speakers at end: {r['valid_unseen_loss']:.2f})")
    ax.axhline(np.log(results["num_units"]), color="grey", linestyle=":", label="uniform over units")
    ax.set_xlabel("training tokens (thousands)")
    ax.set_ylabel("validation NLL (nats / unit)")
    ax.set_title("SmolLM2-135M: TWIST init vs from scratch\n(bundled corpus, Whisper-base L4 k=100 units, CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=Path, default=Path("outputs/exp/units"))
    parser.add_argument("--out", type=Path, default=Path("outputs/exp/lm"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-every", type=int, default=10)
    args = parser.parse_args(argv)
    base = offline_smollm2_dir()
    meta = read_units(args.units / "train").meta
    results = {"machine": machine_info("cpu"), "base_model": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized)",
               "units": meta.tokenizer.get("name"), "num_units": meta.vocab_size, "args": {
                   k: str(v) for k, v in vars(args).items()},
               "tokens_per_step": args.context * args.batch, "runs": {}}
    results["runs"]["twist"] = run("twist", args, {"init": "twist", "base_model": str(base)}, args.out)
    results["runs"]["scratch"] = run("scratch", args, {"init": "scratch", "preset": str(base / "config.json")},
                                     args.out)
    write_results(RESULTS / "lm_twist_vs_scratch.json", results)
    plot(results, RESULTS / "lm_twist_vs_scratch.png")
    for name, r in results["runs"].items():
        print(f"{name}: valid {r['valid_losses'][-1][1]:.3f}, unseen speakers {r['valid_unseen_loss']:.3f}, "
              f"{r['tokens']:,} tokens in {r['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
