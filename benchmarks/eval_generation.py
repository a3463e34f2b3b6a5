"""Generative metrics of the starter pipeline: continue held-out prompts, vocode, transcribe, score.

    python -m benchmarks.eval_generation                 # writes benchmarks/results/eval_generation.json

Runs, all on the first 3 s of every ``bundled:valid_unseen`` utterance (57 prompts of 2 held-out voices), one
continuation each (75 to 150 new units, ~2.5-5 s; no end-of-utterance before 75), voiced by the starter vocoder as ``awb``:

* ``starter T=0.7`` and ``starter T=1.0``: the starter unit LM (`textless generate` defaults otherwise);
* ``shuffled T=1.0``: the same LM with every parameter tensor's entries permuted (the control of
  `benchmarks/eval_builder.py`): units with no sequential structure learned.

Each run is scored by `textless eval-generation` with the offline Whisper-base run by transformers (``asr=
offline:whisper-base``; the default ``auto`` prefers faster-whisper when installed) and SmolLM2-135M GenPPL,
on the continuation alone (``include_prompt=false``) so that the prompt's real words do not count for the LM.
About 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STARTER = REPO / "textless" / "assets" / "starter"
RUNS = {"starter T=0.7": ("starter", 0.7), "starter T=1.0": ("starter", 1.0), "shuffled T=1.0": ("shuffled", 1.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default="bundled:valid_unseen")
    parser.add_argument("--max-prompts", type=int, default=None)
    parser.add_argument("--max-new-tokens", type=int, default=150)
    parser.add_argument("--min-new-tokens", type=int, default=75)
    parser.add_argument("--output", type=Path, default=RESULTS / "eval_generation.json")
    args = parser.parse_args(argv)

    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.eval.builder.scoring import shuffled_lm
    from textless.jobs.eval_generation import EvalGenerationConfig, evaluate_generations
    from textless.jobs.generate import GenerateConfig, generate
    from textless.lm.model import UnitLM
    from textless.utils.table import format_table

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        lms = {"starter": str(STARTER / "lm")}
        shuffled_lm(UnitLM.from_pretrained(lms["starter"])).save_pretrained(Path(tmp) / "shuffled")
        lms["shuffled"] = str(Path(tmp) / "shuffled")
        for name, (lm, temperature) in RUNS.items():
            start = time.perf_counter()
            out = Path(tmp) / f"gen-{lm}-{temperature}"
            generate(GenerateConfig(lm=lms[lm], prompts=args.prompts, tokenizer=str(STARTER / "tokenizer"),
                                    vocoder=str(STARTER / "vocoder"), speaker="awb", prompt_seconds=3.0,
                                    max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens,
                                    min_new_tokens=min(args.min_new_tokens, args.max_new_tokens),
                                    temperature=temperature, seed=0, output=str(out)))
            report = evaluate_generations(EvalGenerationConfig(generations=str(out), output=str(out / "report.json"),
                                                               asr="offline:whisper-base", include_prompt=False)).to_dict()
            results[name] = {"lm": lm, "temperature": temperature, "records": report["records"],
                             "empty_transcripts": report["empty_transcripts"], "metrics": report["metrics"],
                             "mean_words": round(sum(len(r["transcript"].split()) for r in report["per_record"])
                                                 / max(1, report["records"]), 1),
                             "examples": [r["transcript"] for r in report["per_record"][:5]],
                             "seconds": round(time.perf_counter() - start, 1)}
            print(f"{name}: done ({results[name]['seconds']:.0f} s)", flush=True)

    def mean(run: dict, where: str, key: str) -> float:
        value = run["metrics"][where][key]  # MeanSem as a dict, or a corpus-level float (self-BLEU, VERT)
        return round(100 * (value["mean"] if isinstance(value, dict) else value), 2)

    rows = [[name, mean(r, "transcripts", "auto_bleu_fairseq_arithmetic"), mean(r, "transcripts", "auto_bleu_slamkit"),
             mean(r, "transcripts", "self_bleu_fairseq_arithmetic"), mean(r, "transcripts", "vert_arithmetic"),
             mean(r, "units", "auto_bleu_fairseq_arithmetic"), round(r["metrics"]["genppl_slamkit"]["value"], 1),
             round(r["metrics"]["genppl_fairseq"]["median"], 1), r["mean_words"], r["empty_transcripts"], r["records"]]
            for name, r in results.items()]
    print(format_table(["run", "auto-BLEU2 fs", "auto-BLEU sk", "self-BLEU2", "VERT", "units auto-BLEU2",
                        "GenPPL sk", "GenPPL fs median", "words", "empty", "n"], rows))
    report = {"format": "textless.benchmarks.eval_generation", "version": 1, "machine": machine_info("cpu"),
              "prompts": args.prompts, "prompt_seconds": 3.0, "max_new_tokens": args.max_new_tokens,
              "min_new_tokens": args.min_new_tokens,
              "pipeline": "textless/assets/starter (vocoder speaker awb)",
              "scoring": "textless eval-generation, asr=offline:whisper-base, include_prompt=false (continuations "
                         "only); metrics x1 (fractions), per-record values in the eval-generation report",
              "runs": results}
    write_results(args.output, report, indent=1)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
