"""Unit vocoder speed (real-time factor) and resynthesis intelligibility (Whisper-base WER).

    python -m benchmarks.vocoder                   # CPU: speed of the fairseq-size and starter generators + WER
    python -m benchmarks.vocoder --device cuda --skip-wer

Speed: 16 utterances of deduplicated units (2-6 s, random units, durations 1-3 frames), duration prediction included,
fastest of ``--repeats`` interleaved runs, for two generators with the same random-weight architecture as the
fairseq CodeHiFiGAN release (512 channels, hop 320, duration predictor) and as the shipped starter vocoder:
- ``reference_loop``: the anchors' way: one utterance at a time, duration predictor then generator on an unpadded
  batch of one (fairseq's / textlesslib's CodeHiFiGANVocoder run batch size 1 only);
- ``textless_batch1`` and ``textless_batch16``: `UnitVocoder.synthesize` with padding masks (equal outputs).
Real-time factor = audio seconds / wall seconds (x real time).

Intelligibility: `textless eval-resynth` of the starter pipeline on held-out bundled utterances (``valid``: held-out
sentences of the training voices, in their own voice; ``valid_unseen``: held-out voices, in the vocoder's default
voice); the offline Whisper-base transcribes originals and resyntheses; corpus-level WER / CER against the reference
transcripts after Whisper's English normaliser, and the silent-frame ratio and level of both.
Writes ``benchmarks/results/vocoder_<device>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from benchmarks.tokenize_kernels import RESULTS, machine_info, write_results
from textless.vocoders import UnitHiFiGANConfig, UnitVocoder

FAIRSEQ_SIZE = {"num_embeddings": 100, "duration_predictor": True}
STARTER_SIZE = {"num_embeddings": 100, "duration_predictor": True, "upsample_initial_channel": 128,
                "multispkr": True, "num_speakers": 8}


def utterances(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    units, durations = [], []
    for _ in range(n):
        frames = int(rng.uniform(2, 6) * 50)
        d = rng.integers(1, 4, frames)
        d = d[: np.searchsorted(np.cumsum(d), frames) + 1]
        u = rng.integers(0, 100, len(d))
        u[1:][u[1:] == u[:-1]] = (u[1:][u[1:] == u[:-1]] + 1) % 100  # deduplicated: no equal neighbours
        units.append(u)
        durations.append(d)
    return units, durations


def reference_loop(voc: UnitVocoder, units: list[np.ndarray], speakers) -> float:
    """Batch size 1, no masks: predict durations, expand, generate (the anchors' CodeHiFiGANVocoder flow)."""
    gen = voc.generator
    samples = 0
    with torch.inference_mode():
        for u in units:
            ids = torch.as_tensor(u)[None].to(voc.device)
            dur = gen.predict_durations(ids)
            frames = torch.repeat_interleave(ids, dur[0], dim=1)
            spk = None if speakers is None else torch.tensor([0], device=voc.device)
            samples += gen(frames, speakers=spk).shape[-1]
    return samples / voc.sample_rate


def bench_speed(name: str, config: dict, device: torch.device, n: int, repeats: int) -> dict:
    torch.manual_seed(0)
    voc = UnitVocoder.from_config(UnitHiFiGANConfig(**config), deduplicated=True).to(device).eval()
    units, _ = utterances(n)
    speakers = 0 if voc.config.multispkr else None
    runners = {"reference_loop": lambda: reference_loop(voc, units, speakers),
               "textless_batch1": lambda: sum(map(len, voc.synthesize(units, speakers=speakers, batch_size=1))),
               "textless_batch16": lambda: sum(map(len, voc.synthesize(units, speakers=speakers, batch_size=16)))}
    for run in runners.values():  # warm-up
        run()
    times: dict[str, list[float]] = {k: [] for k in runners}
    audio_seconds = 0.0
    for _ in range(repeats):
        for key, run in runners.items():
            start = time.perf_counter()
            out = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[key].append(time.perf_counter() - start)
            if key == "reference_loop":
                audio_seconds = out
    ref = min(times["reference_loop"])
    params = sum(p.numel() for p in voc.generator.parameters())
    result = {"parameters": params, "utterances": n, "audio_seconds": round(audio_seconds, 2), "runs": {}}
    for key, ts in times.items():
        result["runs"][key] = {"seconds": round(min(ts), 3), "all_seconds": [round(t, 3) for t in ts],
                               "x_realtime": round(audio_seconds / min(ts), 2),
                               "speedup_vs_reference_loop": round(ref / min(ts), 2)}
    print(f"{name} ({params / 1e6:.2f}M parameters), {audio_seconds:.0f} s of audio:")
    for key, r in result["runs"].items():
        print(f"  {key:18s} {r['seconds']:7.2f} s  {r['x_realtime']:7.1f}x real time  "
              f"x{r['speedup_vs_reference_loop']:.2f} vs reference_loop")
    return result


def bench_wer(device: str, max_utterances: int) -> dict:
    """`textless eval-resynth` of the starter pipeline on both held-out splits (WER / CER after Whisper's English
    normaliser, silent-frame ratio and level of the originals and the resyntheses)."""
    from textless.jobs.eval_resynth import EvalResynthConfig, evaluate_resynthesis

    out = {"pipeline": "textless starter (Whisper-base L4 k-means 100 -> small unit HiFi-GAN)", "splits": {}}
    for split in ("valid", "valid_unseen"):
        report = evaluate_resynthesis(EvalResynthConfig(
            dataset=f"bundled:{split}", asr="offline:whisper-base", max_items=max_utterances, device=device,
            output=f"outputs/benchmarks/eval_resynth_{split}", restart=True))
        out["asr"], out["normalizer"] = report["asr"], report["normalizer"]
        out["splits"][split] = {"utterances": report["items"],
                                "speakers": sorted({r["speaker"] for r in report["per_item"]}),
                                **report["summary"],
                                "examples": [{k: r[k] for k in ("id", "transcript", "original_transcript",
                                                                "resynthesis_transcript")}
                                             for r in report["per_item"][:5]]}
        s = out["splits"][split]
        print(f"  {split}: WER original {s['original']['wer']['rate']:.1%}, resynthesized "
              f"{s['resynthesis']['wer']['rate']:.1%} ({report['items']} utterances, {report['normalizer']})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wer-utterances", type=int, default=40, help="per split")
    parser.add_argument("--skip-wer", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = {"machine": machine_info(str(device)), "args": vars(args), "speed": {}}
    results["speed"]["fairseq_size"] = bench_speed("fairseq CodeHiFiGAN size", FAIRSEQ_SIZE, device,
                                                   args.utterances, args.repeats)
    results["speed"]["starter_size"] = bench_speed("starter size", STARTER_SIZE, device, args.utterances,
                                                   args.repeats)
    if not args.skip_wer:
        results["wer"] = bench_wer(args.device, args.wer_utterances)
    path = RESULTS / f"vocoder_{device.type}.json"
    write_results(path, results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
