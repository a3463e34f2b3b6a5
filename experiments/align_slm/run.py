"""The Align-SLM experiment on the starter: one or two curriculum iterations with the offline judges, per seed.

    python -m experiments.align_slm.run --seeds 0 1      # ~30 min per seed on 2 CPU cores

Starting model: the starter unit LM (3.7M parameters, 11 minutes of TTS speech). Per seed, `textless align` with
the offline judges (Whisper-base ASR; SmolLM2-135M-Instruct as the text LM and as the LLM judge; repetition, length,
silence) and the default rule (llm/expected + 0.5 x text_lm/logprob), `--iterations` iterations of pairs from
`--prompts` training prompts x `--samples` continuations, full-parameter DPO (sigmoid, beta 0.1), and the evaluation
before and after each iteration: the judge score of held-out continuations (``bundled:valid``, 15 prompts of the
training voices, 3 continuations each) and the offline sWUGGY / sBLIMP-style set ``seen``. Writes
``benchmarks/results/align_experiment.json`` (every iteration of every seed) and ``align_experiment.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "align_experiment")
    parser.add_argument("--output", type=Path, default=RESULTS / "align_experiment.json")
    args = parser.parse_args(argv)

    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.jobs.align import AlignConfig, run_align, summary_curves
    from textless.jobs.preference_pairs import PairsConfig
    from textless.preference.train import DPOConfig
    from textless.utils.log import enable_cli_logging
    from textless.utils.plots import plot_curves

    enable_cli_logging()

    runs = {}
    for seed in args.seeds:
        cfg = AlignConfig(
            lm="starter", prompts="bundled:train", eval_prompts="bundled:valid", output_dir=str(args.work / f"seed{seed}"),
            iterations=args.iterations, schedule={"min_margin": [0.5, 1.0]}, eval_samples=3, progress=False,
            pairs=PairsConfig(max_prompts=args.prompts, num_samples=args.samples, max_new_tokens=args.max_new_tokens,
                              seed=1000 * seed, progress=False),
            dpo=DPOConfig(lr=args.lr, epochs=args.epochs, batch_size=8, seed=seed, eval_every=1000, save_every=1000,
                          progress=False, tensorboard=False))
        summary = run_align(cfg)
        runs[f"seed{seed}"] = summary["iterations"]
        print(summary["table"], flush=True)

    curves = [c for name, rows in runs.items() for c in summary_curves(rows, label=name)]
    plot_curves(curves, args.output.with_suffix(".png"), title="Align-SLM on the starter: before (0) and after")
    report = {"format": "textless.benchmarks.align_experiment", "version": 1, "machine": machine_info("cpu"),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "runs": runs}
    write_results(args.output, json.loads(json.dumps(report, default=str)))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
