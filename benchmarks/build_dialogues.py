"""Dialogue-builder throughput: `textless build-dialogues` in one process against a process pool, clean and noisy.

    python -m benchmarks.build_dialogues          # writes benchmarks/results/build_dialogues_cpu.json

Every run builds the same ``--conversations`` conversations of ``--seconds`` seconds (the shipped recipe's flite
voices and WordNet sentences, seed 0) into a fresh directory: one process (the baseline), ``--workers`` processes,
and one process with noise in both channels (white / pink / babble / tone, SNR 5-20 dB; babble is synthesized from
other voices, so it costs TTS time). Reported: wall seconds, audio seconds, the real-time factor (audio / wall), the
seconds of each stage (the job's summary.json) and each run's ratio to the baseline. The outputs of the one-process
and pool runs must be byte-identical (checked).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for sub in ("stereo", "timelines"):
        for file in sorted((directory / sub).glob("*")):
            digest.update(file.name.encode() + file.read_bytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "build_dialogues_cpu.json")
    args = parser.parse_args(argv)

    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.config import compose
    from textless.jobs.build_dialogues import BuildDialoguesConfig, build_dialogues

    runs = {"one_process": [], f"{args.workers}_workers": [f"num_workers={args.workers}"],
            "one_process_noisy": ["noise.kinds=[white,pink,babble,tone]", "noise.snr_min=5", "noise.snr_max=20"]}
    results, digests = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in runs.items():
            out = Path(tmp) / name
            cfg = compose(BuildDialoguesConfig, "build-dialogues", [
                f"output={out}", f"num_conversations={args.conversations}", f"seconds={args.seconds}",
                "audio_format=wav", "mono=false", "progress=false", *extra])
            start = time.perf_counter()
            summary = build_dialogues(cfg)
            wall = time.perf_counter() - start
            results[name] = {"wall_seconds": round(wall, 2), "audio_seconds": summary["audio_seconds"],
                             "real_time_factor": round(summary["audio_seconds"] / wall, 1),
                             "stage_seconds": summary.get("stage_seconds")}
            digests[name] = _digest(out)
            print(f"{name}: {results[name]['audio_seconds']:.0f} s of audio in {wall:.1f} s "
                  f"(x{results[name]['real_time_factor']} real time)")
    if digests["one_process"] != digests[f"{args.workers}_workers"]:
        print("the process pool wrote other bytes than one process", file=sys.stderr)
        return 1
    base = results["one_process"]["wall_seconds"]
    for run in results.values():
        run["speed_vs_one_process"] = round(base / run["wall_seconds"], 2)
    report = {"format": "textless.benchmarks.build_dialogues", "version": 1, "machine": machine_info("cpu"),
              "conversations": args.conversations, "seconds_each": args.seconds, "runs": results,
              "pool_output_identical": True}
    write_results(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
