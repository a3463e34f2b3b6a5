"""Whole tokenization throughput: audio -> HuBERT-base layer 6 -> k-means (K=500) -> dedup, against anchor baselines.

    python benchmarks/tokenize.py              # CPU: ~3 min of the bundled corpus
    python benchmarks/tokenize.py --device cuda --minutes 10
    python benchmarks/tokenize.py --kernels    # also run benchmarks/tokenize_kernels.py (assignment, dedup, fit)

Writes ``benchmarks/results/tokenize_<device>.json``. The encoder is HuBERT-base-sized (transformers' default
HubertConfig: 12 layers, 768 dims, group-norm CNN) with random weights (speed does not depend on the weights); the
k-means has K=500 float64 centroids as in real km.bin files. All pipelines see the same utterances (real speech of the
bundled corpus, 16 kHz) and report audio seconds per second (x real time):

- ``anchor_hf_full``: slamkit-style: batch 1, fp32, Hugging Face HubertModel(output_hidden_states=True) running all
  12 blocks, hidden_states[6] -> numpy -> sklearn ``predict`` -> Python dedup loop, per utterance;
- ``anchor_early_exit``: fairseq/textlesslib-style: as above but the encoder stops after block 6 (torchaudio's
  ``extract_features(num_layers=6)``, the fairseq ``output_layer`` behaviour);
- ``textless``: ``SpeechTokenizer.encode_batch`` on duration-sorted batches (early exit, exact GEMM assignment,
  numba dedup), float32;
- ``textless_bf16``: the same with ``dtype="bfloat16"``: bf16 autocast on CUDA and on a CPU with bf16 matrix
  instructions (AVX512-BF16 / AMX: see ``machine.cpu_matrix_flags``); a CPU without them falls back to float32 (the
  path that ran is recorded as ``bf16_path``);
- ``textless_bf16_forced`` (CPU without native bf16 only): bf16 autocast anyway (``force_dtype``), emulated: what
  the fallback avoids.
Each pipeline runs ``--repeats`` times, interleaved (so a slow spell of a shared machine hits all of them), and the
fastest run counts. Label agreement with ``anchor_hf_full`` is reported per utterance (identical unit sequences) and
per frame (fp32 paths must agree exactly up to float ties; bf16 changes the labels of a few frames).
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's `tokenize` (which torch imports): keep its directory behind the
# standard library on sys.path, so `import tokenize` still finds the real one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import time

import numpy as np
import torch
from tokenize_kernels import RESULTS, machine_info, python_loop_dedup, sklearn_model, write_results

from textless.audio import load_audio
from textless.data.corpus import load_bundled_corpus
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders.base import cpu_has_native_bf16, effective_dtype
from textless.tokenizers.encoders.ssl import SSLEncoder
from textless.tokenizers.kmeans import KMeans

LAYER, K = 6, 500


def corpus_audio(minutes: float) -> list[torch.Tensor]:
    wavs, total = [], 0.0
    for item in load_bundled_corpus("train"):
        if total >= minutes * 60:
            break
        wav, _ = load_audio(item.path, 16000)
        wavs.append(wav)
        total += len(wav) / 16000
    return wavs


def hubert_base(seed: int = 0):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    return HubertModel(HubertConfig()).eval()


def torchaudio_twin(hf_model):
    """torchaudio's HuBERT-base with the same weights (the fairseq-style early-exit reference)."""
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    return import_huggingface_model(hf_model).eval()


Run = tuple[float, list[tuple[list[int], list[int]]]]  # seconds, (units, durations) per utterance


def run_anchor(wavs, features_fn, km) -> Run:
    start = time.perf_counter()
    out = []
    for wav in wavs:
        with torch.inference_mode():
            feats = features_fn(wav[None]).squeeze(0).numpy()
        labels = km.predict(feats.astype(km.cluster_centers_.dtype))  # km.bin centroids are float64
        out.append(python_loop_dedup(labels.tolist()))
    return time.perf_counter() - start, out


def run_textless(wavs, tokenizer, batch_seconds: float) -> Run:
    # the batching of `textless tokenize`: sort by duration, group up to batch_seconds of audio
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
    start = time.perf_counter()
    out: dict[int, tuple[list[int], list[int]]] = {}
    batch: list[int] = []
    seconds = 0.0
    for i in order + [None]:
        if i is None or (batch and seconds + len(wavs[i]) / 16000 > batch_seconds):
            for j, units in zip(batch, tokenizer.encode_batch([wavs[j] for j in batch], 16000)):
                out[j] = (units.ids.tolist(), units.durations.tolist())
            batch, seconds = [], 0.0
        if i is not None:
            batch.append(i)
            seconds += len(wavs[i]) / 16000
    return time.perf_counter() - start, [out[i] for i in range(len(wavs))]


def agreement(a, b) -> tuple[float, float]:
    """(fraction of utterances with identical unit sequences, fraction of frames with the same label)."""
    same_utterances = sum(x[0] == y[0] for x, y in zip(a, b)) / len(a)
    frames_a = np.concatenate([np.repeat(u, d) for u, d in a])
    frames_b = np.concatenate([np.repeat(u, d) for u, d in b])
    return same_utterances, float((frames_a == frames_b).mean()) if len(frames_a) == len(frames_b) else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of bundled speech to tokenize")
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per pipeline; the fastest counts")
    parser.add_argument("--kernels", action="store_true", help="also run benchmarks/tokenize_kernels.py")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    wavs = corpus_audio(args.minutes)
    audio_seconds = sum(len(w) for w in wavs) / 16000
    rng = np.random.default_rng(0)
    hf = hubert_base().to(device)
    ta = torchaudio_twin(hubert_base()).to(device)

    def hf_full(x):
        return hf(x.to(device), output_hidden_states=True).hidden_states[LAYER].float().cpu()

    def ta_early(x):
        return ta.extract_features(x.to(device), num_layers=LAYER)[0][-1].float().cpu()

    # float64 centroids (as in km.bin) at the scale of the features: K random frames of this encoder's output
    with torch.inference_mode():
        frames = torch.cat([hf_full(w[None])[0] for w in wavs[:4]]).numpy().astype(np.float64)
    centroids = frames[rng.choice(len(frames), K, replace=False)]
    km_sklearn = sklearn_model(centroids)
    tokenizer = SpeechTokenizer(SSLEncoder(hf, LAYER), KMeans.from_centroids(centroids), device=device)
    tokenizer_bf16 = SpeechTokenizer(SSLEncoder(hf, LAYER, dtype=torch.bfloat16), tokenizer.kmeans, device=device)
    bf16_path = "autocast" if effective_dtype(device, torch.bfloat16) == torch.bfloat16 else "fallback-float32"

    results: dict = {"machine": machine_info(str(device)), "audio_seconds": round(audio_seconds, 2),
                     "utterances": len(wavs), "encoder": "HuBERT-base config, random weights", "layer": LAYER,
                     "k": K, "threads": torch.get_num_threads(), "repeats": args.repeats,
                     "cpu_native_bf16": cpu_has_native_bf16(), "bf16_path": bf16_path, "pipelines": {}}
    runners = {"anchor_hf_full": lambda w: run_anchor(w, hf_full, km_sklearn),
               "anchor_early_exit": lambda w: run_anchor(w, ta_early, km_sklearn),
               "textless": lambda w: run_textless(w, tokenizer, args.batch_seconds),
               "textless_bf16": lambda w: run_textless(w, tokenizer_bf16, args.batch_seconds)}
    if bf16_path == "fallback-float32":
        forced = SSLEncoder(hf, LAYER, dtype=torch.bfloat16)
        forced.force_dtype = True
        tokenizer_forced = SpeechTokenizer(forced, tokenizer.kmeans, device=device)
        runners["textless_bf16_forced"] = lambda w: run_textless(w[: max(1, len(w) // 8)], tokenizer_forced,
                                                                 args.batch_seconds)
    for run in runners.values():
        run(wavs[:2])  # warm-up (allocator, numba, MKL / oneDNN kernels)
    timings: dict[str, list[float]] = {name: [] for name in runners}
    units: dict = {}
    for _ in range(args.repeats):
        for name, run in runners.items():
            seconds, units[name] = run(wavs)
            timings[name].append(seconds)
    t_full, t_early = min(timings["anchor_hf_full"]), min(timings["anchor_early_exit"])
    ref = units["anchor_hf_full"]
    for name, seconds_all in timings.items():
        seconds = min(seconds_all)
        n = len(units[name])  # the forced-bf16 run sees the first utterances only
        audio = sum(len(w) for w in wavs[:n]) / 16000
        same_utterances, same_frames = agreement(units[name], ref[:n])
        results["pipelines"][name] = {
            "seconds": round(seconds, 3), "all_seconds": [round(t, 3) for t in seconds_all],
            "audio_seconds": round(audio, 2), "x_realtime": round(audio / seconds, 1),
            "speedup_vs_anchor_hf_full": round(t_full / audio_seconds * audio / seconds, 2),
            "speedup_vs_anchor_early_exit": round(t_early / audio_seconds * audio / seconds, 2),
            "utterances_identical_to_anchor_hf_full": round(same_utterances, 4),
            "frames_identical_to_anchor_hf_full": round(same_frames, 5)}
    out = RESULTS / f"tokenize_{device.type}.json"
    write_results(out, results)
    print(f"{audio_seconds:.0f} s of audio, {len(wavs)} utterances, {device}, {torch.get_num_threads()} threads")
    for name, r in results["pipelines"].items():
        print(f"  {name:20s} {r['seconds']:8.2f} s  {r['x_realtime']:7.1f}x real time  "
              f"x{r['speedup_vs_anchor_hf_full']:.2f} vs anchor_hf_full  x{r['speedup_vs_anchor_early_exit']:.2f} vs "
              f"anchor_early_exit  identical: {r['utterances_identical_to_anchor_hf_full']:.1%} of utterances, "
              f"{r['frames_identical_to_anchor_hf_full']:.2%} of frames")
    print(f"wrote {out}")
    if args.kernels:
        import tokenize_kernels

        tokenize_kernels.main(["--device", device.type])
    return 0


if __name__ == "__main__":
    sys.exit(main())
