"""How the starter pipeline keeps real recorded speech it never saw: silence, level and intelligibility.

Issue 12, item 4: on held-out real speech no 20 ms frame of a resynthesis was under -60 dBFS where 12-30 % of the
originals' frames are, and resynthesis was ~10 dB louder. This script measures, for every real recording available
offline (`../shared/docs/offline-assets.md`), the original and its starter resynthesis: RMS level (dBFS), the share
of silent 20 ms frames (< -60 dBFS) and the 5th-percentile frame level (`textless.eval.levels`), and, for the five
LibriVox sentences that come with transcripts, WER / CER through `textless eval-resynth` (Whisper-base, Whisper's
English normaliser).

Recordings (none of them is in the bundled corpus):
- PyPI `moonshine-voice` 0.1.5 wheel: two_cities.wav (one reader), endgame_nagg_nell.wav, beckett.wav;
- PyPI `pyannote-audio` 4.0.7 wheel: sample.wav (a two-speaker phone call);
- Debian `pocketsphinx-testdata`: 5 LibriVox sentences (Sense and Sensibility) with transcripts.
The wheels are fetched with ``pip download`` into ``--cache`` unless they are already there.

    .venv/bin/python experiments/starter/real_speech.py          # -> benchmarks/results/starter_real_speech.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from textless.audio import load_audio, save_audio
from textless.data.manifest import AudioItem, Manifest
from textless.eval.levels import levels
from textless.jobs.eval_resynth import EvalResynthConfig, evaluate_resynthesis
from textless.pipeline import starter_pipeline
from textless.utils.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
WHEELS = {"moonshine-voice==0.1.5": ("moonshine_voice/assets/", ("two_cities", "endgame_nagg_nell", "beckett")),
          "pyannote-audio==4.0.7": ("pyannote/audio/sample/", ("sample",))}
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def fetch_recordings(cache: Path) -> list[Path]:
    """The wheels' recordings, extracted into ``cache/audio`` (downloaded with pip when missing)."""
    audio = cache / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    found = []
    for requirement, (folder, names) in WHEELS.items():
        stem = requirement.split("==")[0].replace("-", "_")
        wheels = sorted(cache.glob(f"{stem}-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d",
                            str(cache), requirement], check=True)
            wheels = sorted(cache.glob(f"{stem}-*.whl"))
        with zipfile.ZipFile(wheels[-1]) as z:
            for name in names:
                target = audio / f"{name}.wav"
                if not target.exists():
                    target.write_bytes(z.read(f"{folder}{name}.wav"))
                found.append(target)
    return found


def librivox_manifest(path: Path) -> Path | None:
    """A manifest of the LibriVox sentences with their transcripts (None without pocketsphinx-testdata)."""
    lines = (LIBRIVOX / "transcription").read_text().splitlines() if LIBRIVOX.is_dir() else []
    items = []
    for line in lines:
        match = re.fullmatch(r"<s> (.*) </s> \((\S+)\)", line.strip())
        if match and (LIBRIVOX / f"{match.group(2)}.wav").exists():
            items.append(AudioItem(match.group(2), LIBRIVOX / f"{match.group(2)}.wav", transcript=match.group(1)))
    return Manifest(items).save(path) if items else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "real_speech")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "starter_real_speech.json")
    args = parser.parse_args()
    pipeline = starter_pipeline(load_lm=False)
    files = fetch_recordings(args.cache) + sorted(LIBRIVOX.glob("*.wav"))
    rows = []
    for path in files:
        wav, _ = load_audio(path, 16000)
        out, _ = pipeline.resynthesize(wav, 16000)
        save_audio(args.cache / "resynthesis" / path.name, out, pipeline.vocoder.sample_rate)
        original, resynthesis = levels(wav.numpy(), 16000), levels(out, pipeline.vocoder.sample_rate)
        rows.append({"file": path.name, "seconds": round(len(wav) / 16000, 2),
                     "original": original.to_dict(), "resynthesis": resynthesis.to_dict()})
        print(f"{path.name[:40]:40s} RMS {original.rms_dbfs:6.1f} -> {resynthesis.rms_dbfs:6.1f} dBFS   silent "
              f"{original.silent_ratio:5.1%} -> {resynthesis.silent_ratio:5.1%}   5th pct "
              f"{original.quiet_floor_dbfs:6.1f} -> {resynthesis.quiet_floor_dbfs:6.1f} dBFS")
    report = {"pipeline": "starter (textless/assets/starter)", "device": f"cpu ({platform.processor() or 'x86_64'})",
              "silence_threshold_dbfs": -60.0, "frame_ms": 20, "recordings": rows,
              "mean": {side: {key: float(np.mean([r[side][key] for r in rows]))
                              for key in ("rms_dbfs", "silent_ratio", "quiet_floor_dbfs")}
                       for side in ("original", "resynthesis")}}
    manifest = librivox_manifest(args.cache / "librivox.tsv")
    if manifest is not None:
        wer = evaluate_resynthesis(EvalResynthConfig(dataset=str(manifest), asr="offline:whisper-base",
                                                     output=str(args.cache / "eval_resynth"), restart=True))
        report["librivox"] = {k: wer[k] for k in ("asr", "normalizer", "items", "summary")}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
