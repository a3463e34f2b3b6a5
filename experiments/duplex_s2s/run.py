"""The seed-003 barge-in table at small scale: a duplex S2S ListenSpeakLM (sum fusion) against the same LM without a
listening channel and the recorded agent, on a normal and an "impatient" synthetic test set.

    python -m experiments.duplex_s2s.run            # every stage resumes where it stopped
    python -m experiments.duplex_s2s.run --quick    # a smoke run on a tiny copy

Data (`textless build-duplex-s2s`, default recipe): ``--train`` / 20 / ``--test`` conversations of 3 QA pairs
(WordNet sentences; users in 7 offline voices, 2 more held out for the test split; the agent flite:slt), 0.64 s
before every answer, barge-ins on 30 % of the agent turns followed by a user turn (the agent cut 0.64 s after the
user's onset), the impatient test copy with the silences before user turns halved.

Models (`textless train-duplex-s2s`, starter units at 50 Hz for the agent channel; the user channel as MFCC
features pooled to 50 Hz through a 2-layer adapter, frozen): "sum" (seed 003's channel fusion) and "no listening"
(`vanilla`: zero features, so the same LM trained on the agent channel alone), each from scratch (preset
``--preset``) for ``--steps`` steps of 4 windows of 500 frames, with agent_bos / agent_eos turn markers.

Scores (`textless eval-duplex s2s.*`): the agent channel generated for each whole test conversation while the
recorded user plays (no prompt, temperature 1, top-p 0.99); barge-in success (stop within 1.5 s) and latency,
false alarms per user turn, first-response latency; the recorded agent scored the same way.

Writes ``benchmarks/results/duplex_s2s_experiment.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


def log(message: str) -> None:
    print(f"[s2s {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--train", type=int, default=None, help="train conversations (default 200)")
    parser.add_argument("--test", type=int, default=None, help="test conversations (default 50)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=None, help="default 1000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quick = {"work": Path("/tmp/s2s_quick"), "output": Path("/tmp/s2s_quick/duplex_s2s_experiment.json"),
             "train": 4, "test": 2, "steps": 4}
    full = {"work": REPO / "outputs" / "duplex_s2s_experiment", "output": RESULTS / "duplex_s2s_experiment.json",
            "train": 200, "test": 50, "steps": 1000}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(args)


def run(args) -> int:
    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.config import compose
    from textless.dialogue.lslm.duplex_s2s import DuplexS2STrainConfig, train_duplex_s2s
    from textless.jobs.build_duplex_s2s import BuildDuplexS2SConfig, build_duplex_s2s
    from textless.jobs.eval_duplex_s2s import S2SEvalConfig, run_eval_duplex_s2s

    began = time.perf_counter()
    data = args.work / "data"
    if not (data / "manifest.jsonl").is_file():
        log("building the conversations")
        build_duplex_s2s(compose(BuildDuplexS2SConfig, "build-duplex-s2s", [
            f"output={data}", f"num_train={args.train}", "num_valid=20" if not args.quick else "num_valid=1",
            f"num_test={args.test}", "progress=false"]))
    systems = {"sum": [], "no_listening": ["vanilla=true"]}
    results, timings = {}, {}
    for name, extra in systems.items():
        out = args.work / name
        if not (out / "final").is_dir():
            log(f"training {name}")
            start = time.perf_counter()
            train_duplex_s2s(compose(DuplexS2STrainConfig, "train-duplex-s2s", [
                f"train_data={data}", f"output_dir={out}", f"cache_dir={args.work / 'prepared'}",
                f"init=scratch:{args.preset}", f"max_steps={args.steps}", f"warmup_steps={max(1, args.steps // 10)}",
                f"eval_every={args.steps}", f"save_every={max(1, args.steps // 2)}", "progress=false",
                f"seed={args.seed}", *extra]))
            (out / "timing.json").write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}) + "\n")
        timings[name] = json.loads((out / "timing.json").read_text())
        report = args.work / f"{name}_eval" / "s2s_report.json"
        if not report.is_file():
            log(f"evaluating {name}")
            run_eval_duplex_s2s(S2SEvalConfig(model=str(out / "final"), data=str(data), seed=args.seed),
                                args.work / f"{name}_eval")
        results[name] = json.loads(report.read_text())
    table = {name: {which: {"model": r["sets"][which]["model"]} for which in r["sets"]}
             for name, r in results.items()}
    table["recording"] = {which: {"model": s["recording"]} for which, s in results["sum"]["sets"].items()}
    summary = json.loads((data / "summary.json").read_text())
    write_results(args.output, {
        "format": "textless.experiments.duplex_s2s", "version": 1, "machine": machine_info("cpu"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": summary.get("splits", summary), "table": table, "train_seconds": timings,
        "wall_seconds": round(time.perf_counter() - began, 1),
        "notes": {"speech": "the agent's speech: frames whose unit is not a starter silence unit (agent_bos counts "
                            "as speech), IPUs with the 200 ms rule; the user's from the timeline",
                  "no_listening": "vanilla=true: the same LM trained on the agent channel with zero user features: "
                                  "it cannot hear the user, so its barge-in and false-alarm numbers are chance"}})
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
