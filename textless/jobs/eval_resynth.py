"""`textless eval-resynth`: how well a tokenizer + vocoder keep speech: a dataset with transcripts is resynthesized,
then the originals and their resyntheses are transcribed and scored, and their levels compared.

    textless eval-resynth                                         # the starter pipeline on bundled:valid_unseen
    textless eval-resynth dataset=my.tsv tokenizer=tok/ vocoder=voc/ output=outputs/eval_resynth

Per item and over the corpus: WER and CER of the original's transcript and of the resynthesis' transcript against
the reference transcript (the manifest's ``transcript`` column), after the Whisper English normaliser with digits
split (`textless.eval.wer`; the report names it); and each signal's level: overall RMS dBFS, the fraction of 20 ms
frames under -60 dBFS (silence) and the 5th-percentile frame level (`textless.eval.levels`). The resyntheses are
kept in ``<output>/audio`` (`textless.jobs.resynth`: resumable, per-file failures reported and skipped); the ASR is
``asr=auto`` unless named, and its transcripts are cached in ``<output>/transcripts.json``. Writes
``<output>/report.json`` (atomically) and prints the table.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from textless.audio import load_audio
from textless.data import load_dataset
from textless.data.manifest import Manifest
from textless.errors import ConfigError, TextlessError
from textless.eval.asr import load_asr
from textless.eval.generative.transcribe import TranscriptCache, transcribe_files
from textless.eval.levels import levels
from textless.eval.wer import DEFAULT_NORMALIZER, NORMALIZERS, error_rate
from textless.jobs.resynth import build_pipeline, resynthesize
from textless.utils.atomic import atomic_write_text
from textless.utils.table import format_table
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

REPORT = artifact("textless.eval.resynth", 1, "a resynthesis report")


@dataclass
class EvalResynthConfig:
    dataset: str = "bundled:valid_unseen"   # audio with transcripts: directory, manifest or bundled:<split>
    pipeline: str | None = None              # a pipeline directory (default: the starter pipeline)
    tokenizer: str | None = None             # or a tokenizer bundle + a vocoder (any supported format)
    vocoder: str | None = None
    speaker: str | None = None               # multi-speaker vocoder: a name or id (default: each item's own, else
    #                                          the pipeline's default voice)
    asr: str = "auto"                        # auto | faster-whisper | offline:whisper-base | pocketsphinx | a dir
    normalizer: str = DEFAULT_NORMALIZER     # whisper-digits | whisper | basic (textless.eval.wer)
    max_items: int | None = None
    output: str = "outputs/eval_resynth"
    device: str = "cpu"
    restart: bool = False                    # discard resyntheses of an earlier run with another pipeline
    trust_pickle: bool = False


def evaluate_resynthesis(cfg: EvalResynthConfig) -> dict:
    """Resynthesize, transcribe and score `cfg.dataset` (see the module docstring); returns the report."""
    items = [item for item in load_dataset(cfg.dataset)][: cfg.max_items]
    missing = [item.id for item in items if not item.transcript]
    if missing:
        raise ConfigError(f"dataset '{cfg.dataset}': {len(missing)} items have no transcript (e.g. {missing[0]}); "
                          f"eval-resynth needs a transcript column")
    if not items:
        raise TextlessError(f"no audio in '{cfg.dataset}'")
    NORMALIZERS.get(cfg.normalizer)  # an unknown name fails now, not after the resynthesis
    out = Path(cfg.output)
    pipeline = build_pipeline(cfg.pipeline, cfg.tokenizer, cfg.vocoder, cfg.device, trust_pickle=cfg.trust_pickle)
    asr = load_asr(cfg.asr, device=cfg.device)
    source = cfg.dataset
    if cfg.max_items is not None:  # a subset: a manifest of the chosen items
        source = str(Manifest(items).save(out / "items.tsv"))
    failures = resynthesize(source, str(out / "audio"), pipeline=pipeline, speaker=cfg.speaker, restart=cfg.restart)
    failed = {f["id"] for f in failures}
    done = [item for item in items if item.id not in failed]
    if not done:
        raise TextlessError(f"no item of '{cfg.dataset}' could be resynthesized ({len(failures)} failures)")
    files = {"original": [Path(item.path) for item in done],
             "resynthesis": [out / "audio" / f"{item.id}.wav" for item in done]}
    cache = TranscriptCache(out / "transcripts.json")
    heard = {kind: transcribe_files([[f] for f in paths], asr, asr.name, directory=out, cache=cache)[0]
             for kind, paths in files.items()}
    rows = []
    for i, item in enumerate(done):
        rows.append({"id": item.id, "speaker": item.speaker, "transcript": item.transcript,
                     **{f"{kind}_transcript": heard[kind][i] for kind in files},
                     **{f"{kind}_wer": error_rate([item.transcript], [heard[kind][i]], "word", cfg.normalizer).rate
                        for kind in files},
                     **{f"{kind}_levels": levels(load_audio(files[kind][i], asr.sample_rate)[0].numpy(),
                                                 asr.sample_rate).to_dict() for kind in files}})
    refs = [r["transcript"] for r in rows]
    summary = {}
    for kind in files:
        hyps = [r[f"{kind}_transcript"] for r in rows]
        summary[kind] = {"wer": error_rate(refs, hyps, "word", cfg.normalizer).to_dict(),
                         "cer": error_rate(refs, hyps, "char", cfg.normalizer).to_dict(),
                         **{key: float(np.mean([r[f"{kind}_levels"][key] for r in rows]))
                            for key in ("rms_dbfs", "silent_ratio", "quiet_floor_dbfs")}}
    report = {**REPORT.header(), "config": asdict(cfg), "asr": asr.name, "normalizer": cfg.normalizer,
              "tokenizer": pipeline.tokenizer.unit_identity().describe(), "items": len(rows),
              "failures": failures, "summary": summary, "per_item": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    logger.info(format_report(report))
    logger.info(f"wrote {out / 'report.json'}")
    return report


def format_report(report: dict) -> str:
    rows = [[kind, 100 * s["wer"]["rate"], 100 * s["cer"]["rate"], s["rms_dbfs"], 100 * s["silent_ratio"],
             s["quiet_floor_dbfs"]] for kind, s in report["summary"].items()]
    table = format_table(["audio", "WER %", "CER %", "RMS dBFS", "silent frames %", "5th pct dBFS"], rows)
    return (f"{report['items']} items, ASR {report['asr']}, normalizer {report['normalizer']}; silent = 20 ms frames "
            f"under -60 dBFS\n{table}")
