"""Pair-generation throughput: the batched `textless preference-pairs` chunk against a naive loop, same models.

    python -m benchmarks.preference_pairs          # writes benchmarks/results/preference_pairs_cpu.json

Both runs make the same work: ``--prompts`` prompts (the first 3 s of ``bundled:valid``) x ``--samples``
continuations of ``--max-new-tokens`` units from the starter LM (temperature 0.8, top-k 25), voiced by the starter
vocoder, transcribed by ``asr=auto`` and scored by every judge (text-LM likelihood and the LLM judge with the offline
SmolLM2-135M, repetition, length, silence).

* batched: `judge_chunk` over all prompts at once (sampling, vocoding, ASR and judging batched, ``--batch-size``);
* naive: one continuation at a time through the same code with batch size 1 (sample one, voice it, transcribe it,
  judge it, next).

Reported: continuations per second of each, the ratio, and the seconds of each stage (`StageTimes`). Model loading is
not counted (it is the same for both).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", type=Path, default=RESULTS / "preference_pairs_cpu.json")
    args = parser.parse_args(argv)

    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.data.units import crop_prompt
    from textless.jobs.generate import load_prompts
    from textless.jobs.preference_pairs import PairsConfig, StageTimes, _generate_config, judge_chunk, load_models
    from textless.utils.table import format_table

    cfg = PairsConfig(prompts="bundled:valid", max_prompts=args.prompts, num_samples=args.samples,
                      max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, judge_batch_size=args.batch_size,
                      progress=False)
    prompts, meta = load_prompts(_generate_config(cfg))
    prompts = [crop_prompt(p, cfg.prompt_seconds, meta.frame_rate) for p in prompts]
    models = load_models(cfg, prompts, meta)
    n = len(prompts) * args.samples
    # warm-up (first calls allocate, compile kernels, fill caches): one prompt, discarded
    judge_chunk(models, dataclasses.replace(cfg, num_samples=2), prompts[:1], 99, None)

    runs = {}
    times = StageTimes()
    start = time.perf_counter()
    records, failures = judge_chunk(models, cfg, prompts, 0, None, times)
    runs["batched"] = {"seconds": time.perf_counter() - start, "stages": dict(times), "records": len(records)}
    print(f"batched: {runs['batched']['seconds']:.1f} s", flush=True)

    one = dataclasses.replace(cfg, num_samples=1, batch_size=1)
    for judge in models.judges:
        if hasattr(judge, "batch_size"):
            judge.batch_size = 1
    times = StageTimes()
    start = time.perf_counter()
    count = 0
    for i, prompt in enumerate(prompts):
        for k in range(args.samples):
            count += len(judge_chunk(models, one, [prompt], 1000 * i + k, None, times)[0])
    runs["naive"] = {"seconds": time.perf_counter() - start, "stages": dict(times), "records": count}
    print(f"naive: {runs['naive']['seconds']:.1f} s", flush=True)

    for run in runs.values():
        run["continuations_per_s"] = run["records"] / run["seconds"]
        run["seconds"] = round(run["seconds"], 2)
        run["stages"] = {k: round(v, 2) for k, v in run["stages"].items()}
    ratio = runs["batched"]["continuations_per_s"] / runs["naive"]["continuations_per_s"]
    stages = list(runs["batched"]["stages"])
    print(format_table(["run", "continuations/s", *[f"{s} s" for s in stages], "total s"],
                       [[name, round(r["continuations_per_s"], 3), *[r["stages"].get(s) for s in stages], r["seconds"]]
                        for name, r in runs.items()]))
    print(f"batched / naive: {ratio:.2f}x")
    report = {"format": "textless.benchmarks.preference_pairs", "version": 1, "machine": machine_info("cpu"),
              "prompts": len(prompts), "samples_per_prompt": args.samples, "continuations": n,
              "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "asr": models.asr.name,
              "judges": [j.name for j in models.judges], "runs": runs, "speedup_batched_over_naive": round(ratio, 2),
              "failures": failures}
    write_results(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
