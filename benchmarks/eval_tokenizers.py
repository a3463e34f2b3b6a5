"""Tokenizer metrics (ABX within / across speaker, phone and cluster purity, PNMI, bitrate) of a few tokenizers on the
bundled corpus' held-out voices, in one run: which encoder, layer and k give units that carry phones.

    python -m benchmarks.eval_tokenizers                      # writes benchmarks/results/eval_tokenizers.json
    python -m benchmarks.eval_tokenizers --specs starter mfcc:100 whisper:4:200

A spec is ``starter`` (the committed starter pipeline's tokenizer), ``mfcc:<k>`` or ``whisper:<layer>:<k>`` (the
offline Whisper-base encoder). Every spec other than ``starter`` is fitted in the run with ``textless kmeans``
defaults (faiss, 100 iterations, seed 0) on ``bundled:train`` (7 voices), then measured with
``textless eval-tokenizer`` defaults on ``bundled:valid_unseen`` (57 utterances of 2 other voices; ABX on triphone
items made from the phone alignments, cosine distance; units embedded one-hot). ``position_probe`` measures how much
the features encode time position instead of content (Whisper adds an absolute position embedding). Fitting a Whisper
tokenizer takes 1-2 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_SPECS = ["starter", "mfcc:100", "whisper:2:100", "whisper:6:100", "whisper:4:50", "whisper:4:200"]


def build(spec: str, workdir: Path, log) -> tuple[str, dict]:
    """Bundle directory and a description for `spec` (fitting it if needed)."""
    from textless.jobs.kmeans import KMeansJobConfig, fit_tokenizer

    if spec == "starter":
        return str(REPO / "textless/assets/starter/tokenizer"), {"fitted_in_run": False,
                                                                  "bundle": "textless/assets/starter/tokenizer"}
    parts = spec.split(":")
    if parts[0] == "mfcc" and len(parts) == 2:
        cfg = KMeansJobConfig(encoder="mfcc", k=int(parts[1]))
    elif parts[0] == "whisper" and len(parts) == 3:
        cfg = KMeansJobConfig(encoder="offline:whisper-base", layer=int(parts[1]), k=int(parts[2]))
    else:
        raise SystemExit(f"unknown spec '{spec}' (starter | mfcc:<k> | whisper:<layer>:<k>)")
    cfg.output = str(workdir / spec.replace(":", "-"))
    cfg.progress = False
    start = time.perf_counter()
    fit_tokenizer(cfg)
    return cfg.output, {"fitted_in_run": True, "encoder": cfg.encoder, "layer": cfg.layer, "k": cfg.k,
                        "backend": cfg.backend, "fit_dataset": cfg.dataset,
                        "fit_seconds": round(time.perf_counter() - start, 1)}


def position_probe(encoder, dataset: str, shift: int = 20) -> dict[str, float]:
    """How much `encoder`'s layer encodes position rather than content: mean cosine similarity of frame i of the
    first two utterances of `dataset` (different sentences), and of frame i with frame i + `shift`."""
    import torch

    from textless.audio import load_audio
    from textless.data import load_dataset

    feats = []
    for item in list(load_dataset(dataset))[:2]:
        wav = load_audio(item.path, encoder.sample_rate)[0]
        with torch.inference_mode():
            f, _ = encoder(wav[None], torch.tensor([len(wav)]))
        feats.append(torch.nn.functional.normalize(f[0].float(), dim=-1))
    n = min(len(f) for f in feats)
    a, b = feats[0][:n], feats[1][:n]
    return {"same_position": round((a * b).sum(-1).mean().item(), 3),
            f"shifted_{shift}_frames": round((a[:-shift] * b[shift:]).sum(-1).mean().item(), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", nargs="+", default=DEFAULT_SPECS)
    parser.add_argument("--dataset", default="bundled:valid_unseen")
    parser.add_argument("--output", type=Path, default=RESULTS / "eval_tokenizers.json")
    args = parser.parse_args(argv)

    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.eval.tokenizer_metrics import EvalTokenizerConfig, evaluate_tokenizer
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.utils.table import format_table

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.specs:
            bundle, about = build(spec, Path(tmp), print)
            tokenizer = SpeechTokenizer.from_pretrained(bundle)
            metrics = evaluate_tokenizer(tokenizer, args.dataset, EvalTokenizerConfig(dataset=args.dataset))
            results[spec] = {**about, "tokenizer": metrics.tokenizer, "frame_rate": metrics.frame_rate,
                             "utterances": metrics.utterances, "abx_tokens": metrics.abx_features.tokens,
                             "headline": metrics.headline(), "eval_seconds": round(metrics.seconds, 1),
                             "position_probe": position_probe(tokenizer.encoder, args.dataset)}
            print(f"{spec}: done ({metrics.seconds:.0f} s)", flush=True)

    def pct(value):
        return None if value is None else round(100 * value, 2)

    header = ["tokenizer", "Hz", "ABX within feat %", "ABX across feat %", "ABX within units %",
              "ABX across units %", "phone pur", "cluster pur", "PNMI", "bits/s"]
    rows = []
    for spec, r in results.items():
        h = r["headline"]
        rows.append([spec, r["frame_rate"], pct(h["abx_within_features"]), pct(h["abx_across_features"]),
                     pct(h["abx_within_units"]), pct(h["abx_across_units"]), round(h["phone_purity"], 3),
                     round(h["cluster_purity"], 3), round(h["pnmi"], 3), round(h["bitrate"], 1)])
    print(format_table(header, rows))
    report = {"format": "textless.benchmarks.eval_tokenizers", "version": 1, "machine": machine_info("cpu"),
              "dataset": args.dataset,
              "protocol": "textless eval-tokenizer defaults: ABX on triphone items from the phone alignments, cosine "
                          "(angular) distance, max 10 per group, 5 X across; units one-hot at frame level; purity / "
                          "PNMI on frame labels (SIL included); bitrate of the deduplicated unit stream",
              "results": results}
    write_results(args.output, report, indent=1)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
