"""Peak memory of resynthesis (audio -> units -> audio) against the input's length.

    python -m benchmarks.resynth_memory                       # 1, 10, 30, 120 minutes; the starter pipeline, CPU
    python -m benchmarks.resynth_memory --minutes 1 10        # a quick run

Each measurement runs in a fresh process (its peak resident memory, ``ru_maxrss``, is its own) on a WAV file made by
concatenating the bundled corpus' utterances to the given length:
- ``streamed``: `SpeechPipeline.resynthesize_file` (what ``textless resynth`` does): the file is read window by window,
  tokenized window by window, vocoded in windows and written piece by piece;
- ``whole`` (the baseline, what ``textless resynth`` did before): the whole waveform loaded, tokenized, and vocoded
  in one call; run only up to ``--whole-max`` minutes (its memory grows by ~270 MB per minute of audio).
Also reported: the same process importing textless and loading the pipeline without resynthesizing (``idle``), and the
seconds each run took. Writes ``benchmarks/results/resynth_memory_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.tokenize_kernels import RESULTS, machine_info, write_results

CHILD = r"""
import json, resource, sys, time
mode, src, dst = sys.argv[1:4]
import torch
torch.set_num_threads(2)
from textless.audio import load_audio, save_audio
from textless.pipeline import starter_pipeline
pipeline = starter_pipeline(load_lm=False)
start = time.perf_counter()
if mode == "streamed":
    pipeline.resynthesize_file(src, dst)
elif mode == "whole":
    wav, sr = load_audio(src, max_seconds=None)
    units = pipeline.tokenizer.encode(wav, sr)
    ids, durations = pipeline.tokenizer.to_units(units)
    (audio,) = pipeline.vocoder.synthesize([ids], [durations], speakers=pipeline._speaker(None))
    save_audio(dst, audio, pipeline.sample_rate)
seconds = time.perf_counter() - start
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))
"""


def make_input(path: Path, minutes: float) -> None:
    """A 16 kHz mono WAV of `minutes`, the bundled utterances one after another (written block by block)."""
    from textless.audio import AudioWriter, load_audio
    from textless.data.corpus import load_bundled_corpus

    wavs = [load_audio(item.path)[0].numpy() for split in ("train", "valid") for item in load_bundled_corpus(split)]
    need = int(minutes * 60 * 16000)
    with AudioWriter(path, 16000, subtype="PCM_16") as out:
        i = 0
        while out.samples < need:
            wav = wavs[i % len(wavs)][: need - out.samples]
            out.write(wav)
            i += 1


def measure(mode: str, src: Path, dst: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(dst)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} on {src}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30, 120])
    parser.add_argument("--whole-max", type=float, default=10, help="run the whole-sequence baseline up to this")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        idle = measure("idle", tmp_path / "none", tmp_path / "none.wav")
        print(f"idle (imports + starter pipeline): {idle['peak_mb']:.0f} MB", flush=True)
        for minutes in args.minutes:
            src = tmp_path / f"in_{minutes:g}.wav"
            make_input(src, minutes)
            row = {"minutes": minutes}
            for mode in ("streamed", "whole"):
                if mode == "whole" and minutes > args.whole_max:
                    continue
                t0 = time.perf_counter()
                result = measure(mode, src, tmp_path / f"out_{mode}.wav")
                row[mode] = {**result, "wall_seconds": time.perf_counter() - t0,
                             "real_time_factor": minutes * 60 / result["seconds"]}
                print(f"{minutes:g} min {mode}: peak {result['peak_mb']:.0f} MB, {result['seconds']:.1f} s", flush=True)
            rows.append(row)
            src.unlink()
    streamed = [(r["minutes"], r["streamed"]["peak_mb"]) for r in rows]
    slope = float(np.polyfit(*zip(*streamed), 1)[0]) if len(streamed) > 1 else None
    whole = [(r["minutes"], r["whole"]["peak_mb"]) for r in rows if "whole" in r]
    whole_slope = float(np.polyfit(*zip(*whole), 1)[0]) if len(whole) > 1 else None
    results = {"machine": machine_info("cpu"), "pipeline": "starter (offline Whisper-base L4 k-means 100 + small "
               "unit HiFi-GAN)", "idle_peak_mb": idle["peak_mb"], "rows": rows,
               "streamed_mb_per_minute": slope, "whole_mb_per_minute": whole_slope}
    write_results(RESULTS / "resynth_memory_cpu.json", results)
    print(f"streamed: {slope:+.2f} MB per minute of audio" if slope is not None else "")
    if whole_slope is not None:
        print(f"whole (baseline): {whole_slope:+.1f} MB per minute of audio")


if __name__ == "__main__":
    main()
