"""`textless eval-generation`: ASR-based metrics of a generations directory (`textless generate ... vocoder=`).

Steps: load the ASR (``asr=auto``, the default: faster-whisper with the offline Whisper-base, else the same model
with transformers, else pocketsphinx; the engine picked and why is logged and reported, and the transcript cache is
named after it, so transcripts of one engine are never reused for another), transcribe every record's audio once
(`transcribe.transcribe_records`, cached), then compute

* on the transcripts: auto-BLEU2 fairseq (arithmetic and geometric) and self-BLEU2 on the `normalize_text` words
  (what fairseq's letter ASR prints), auto-BLEU slamkit (bigrams) on slamkit's word tokens of the raw transcript,
  VERT (both means);
* on the unit sequences (prompt units + continuation units with ``include_prompt``, else the continuation): the same
  repetition metrics, the units being the tokens;
* GenPPL, slamkit's and fairseq's definitions, with the text LM ``text_lm``;

print a table and write a JSON report atomically (``output``): the config, the metrics, and per record its
transcript and scores. Definitions: `textless.eval.generative.bleu` and `textless.eval.generative.perplexity`.

Note: self-BLEU compares every record with all others, as fairseq does with one continuation per prompt. With
``num_samples > 1`` and ``include_prompt``, samples of one prompt share its words, which raises self-BLEU (and VERT);
use ``include_prompt=false`` to measure the diversity of the continuations alone.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from textless.errors import ConfigError, TextlessError
from textless.eval.generative.bleu import MeanSem, RepetitionMetrics, repetition_metrics
from textless.eval.generative.perplexity import DEFAULT_TEXT_LM, GenPPL, asr_perplexity, load_text_scorer
from textless.eval.generative.transcribe import TranscriptCache, transcribe_records
from textless.utils.atomic import atomic_write_text
from textless.utils.table import format_table
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

REPORT = artifact("textless.eval.generation", 1, "a generation report", legacy_names=("textless.generation_report",))
AUTO_CACHE = "auto"


@dataclass
class EvalGenerationConfig:
    generations: str = ""              # a generations directory written by `textless generate` with vocoder=
    output: str = "outputs/generation_report.json"
    # textless.eval.asr.load_asr spec: auto (faster-whisper, else offline:whisper-base, else pocketsphinx) |
    # faster-whisper | offline:whisper-base | pocketsphinx | a Whisper directory
    asr: str = "auto"
    text_lm: str = DEFAULT_TEXT_LM     # GenPPL text LM: offline:<name>, a local HF directory or a .gguf file
    # token before (and, for fairseq, after) each scored text; null: the LM's default (perplexity module docstring).
    # Quote it for Hydra: text_lm_boundary="'<|endoftext|>'"
    text_lm_boundary: str | None = None
    include_prompt: bool = True        # transcribe prompt + continuation (slamkit's default) or the continuation only
    # auto: <generations>/transcripts/<engine>.json, named after the engine that runs (asr=auto resolved); null: no
    # cache; a path (its keys hold the engine, so engines never share transcripts)
    transcript_cache: str | None = AUTO_CACHE
    max_records: int | None = None
    asr_batch_size: int = 8
    lm_batch_size: int = 8
    device: str = "cpu"


def _cache_path(cfg: EvalGenerationConfig, asr_name: str) -> Path | None:
    """The transcript cache of `cfg` for the engine `asr_name` (the loaded engine's name, never ``auto``)."""
    if cfg.transcript_cache is None or cfg.transcript_cache == "":
        return None
    if cfg.transcript_cache == AUTO_CACHE:
        return Path(cfg.generations) / "transcripts" / (re.sub(r"[^A-Za-z0-9._-]+", "_", asr_name).strip("_") + ".json")
    return Path(cfg.transcript_cache)


def load_records(cfg: EvalGenerationConfig) -> tuple[dict, list[dict]]:
    """(meta, records) of the generations directory; refuses one without records or without audio."""
    from textless.jobs.generate import read_generations

    directory = Path(cfg.generations)
    if not cfg.generations:
        raise ConfigError("eval-generation needs generations=<directory written by textless generate with vocoder=>")
    if not (directory / "meta.json").is_file() or not (directory / "generations.jsonl").is_file():
        raise TextlessError(f"'{directory}' is not a generations directory (no meta.json / generations.jsonl): "
                            f"write one with textless generate ... vocoder=<dir>")
    meta, records = read_generations(directory)
    records = records[: cfg.max_records]
    if not records:
        raise TextlessError(f"'{directory / 'generations.jsonl'}': no records")
    if not any(r.get("audio") or r.get("prompt_audio") for r in records):
        raise TextlessError(f"'{directory / 'generations.jsonl'}': no audio in the records (generated without a "
                            f"vocoder); rerun textless generate with vocoder=<dir>")
    return meta, records


def record_units(record: dict, include_prompt: bool) -> list[int]:
    """The unit sequence matching the transcript: prompt + continuation, or the continuation only."""
    return (list(record["prompt_units"]) if include_prompt else []) + list(record["units"])


@dataclass
class GenerationReport:
    config: EvalGenerationConfig
    records: list[dict]
    transcripts: list[str]
    on_transcripts: RepetitionMetrics
    on_units: RepetitionMetrics
    genppl: GenPPL
    empty_transcripts: int
    transcription: dict

    def to_dict(self) -> dict:
        per_record = []
        for i, (r, text) in enumerate(zip(self.records, self.transcripts)):
            row = {"id": r.get("id"), "transcript": text}
            row.update({f"transcripts/{k}": v[i] for k, v in self.on_transcripts.per_item.items()})
            row.update({f"units/{k}": v[i] for k, v in self.on_units.per_item.items()})
            row["nll_slamkit"] = self.genppl.slamkit.per_sample_nll[i]
            row["ppl_fairseq"] = self.genppl.fairseq.per_sample_ppl[i]
            per_record.append(row)
        return _finite({**REPORT.header(), "config": asdict(self.config),
                "records": len(self.records), "empty_transcripts": self.empty_transcripts,
                "transcription": self.transcription,
                "metrics": {"transcripts": self.on_transcripts.to_dict(), "units": self.on_units.to_dict(),
                            **self.genppl.to_dict()},
                "per_record": per_record})


def _finite(value):
    """`value` with every nan / inf float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _pct(value: MeanSem | float) -> str:
    if isinstance(value, MeanSem):
        return "nan" if math.isnan(value.mean) else f"{100 * value.mean:.2f} ± {100 * value.sem:.2f}"
    return "nan" if math.isnan(value) else f"{100 * value:.2f}"


_TABLE_ROWS = [  # (label, RepetitionMetrics attribute, anchor)
    ("auto-BLEU2 fairseq arithmetic", "auto_bleu_fairseq_arithmetic", "fairseq self_auto_bleu.py"),
    ("auto-BLEU2 fairseq geometric", "auto_bleu_fairseq_geometric", "fairseq self_auto_bleu.py"),
    ("auto-BLEU slamkit (bigrams)", "auto_bleu_slamkit", "slamkit calc_auto_bleu"),
    ("self-BLEU2 fairseq arithmetic", "self_bleu_fairseq_arithmetic", "fairseq self_auto_bleu.py"),
    ("self-BLEU2 fairseq geometric", "self_bleu_fairseq_geometric", "fairseq self_auto_bleu.py"),
    ("VERT arithmetic", "vert_arithmetic", "GSLM paper: sqrt(self x auto)"),
    ("VERT geometric", "vert_geometric", "GSLM paper: sqrt(self x auto)"),
]


def format_report(report: GenerationReport) -> str:
    """The printed table: repetition metrics x100 (mean ± SEM) on transcripts and units, then GenPPL."""
    rows = [[label, _pct(getattr(report.on_transcripts, key)), _pct(getattr(report.on_units, key)), anchor]
            for label, key, anchor in _TABLE_ROWS]
    s, f = report.genppl.slamkit, report.genppl.fairseq
    rows.append(["GenPPL slamkit exp(mean NLL)", f"{s.value:.2f}", "", "slamkit asr_perplexity"])
    rows.append(["GenPPL fairseq mean ppl", f"{f.mean:.2f} ± {f.sem:.2f}", "", "fairseq ppx.py"])
    rows.append(["GenPPL fairseq median ppl", f"{f.median:.2f}", "", "fairseq ppx.py"])
    cfg = report.config
    head = (f"{cfg.generations}: {len(report.records)} records, ASR {report.transcription.get('asr', cfg.asr)}, "
            f"text LM {cfg.text_lm}, "
            f"{'prompt + continuation' if cfg.include_prompt else 'continuation only'}, "
            f"{report.empty_transcripts} empty transcripts")
    return head + "\n" + format_table(["metric", "transcripts (x100)", "units (x100)", "as in"], rows)


def evaluate_generations(cfg: EvalGenerationConfig) -> GenerationReport:
    """Run the whole evaluation (see the module docstring); returns the report after writing it."""
    from textless.eval.asr import load_asr

    _, records = load_records(cfg)
    asr = load_asr(cfg.asr, device=cfg.device, batch_size=cfg.asr_batch_size)
    asr_name = getattr(asr, "name", cfg.asr)
    transcription = {"asr": asr_name, "asr_selection": getattr(asr, "selection", None)}
    transcripts, stats = transcribe_records(cfg.generations, records, asr, asr_name,
                                            include_prompt=cfg.include_prompt,
                                            cache=TranscriptCache(_cache_path(cfg, asr_name)),
                                            batch_size=cfg.asr_batch_size)
    del asr
    empty = sum(not t.strip() for t in transcripts)
    if empty == len(transcripts):
        raise TextlessError(f"'{cfg.generations}': the ASR '{asr_name}' returned an empty transcript for all "
                            f"{len(transcripts)} records (is the vocoded audio speech? try include_prompt=true or "
                            f"another asr=)")
    if empty:
        logger.warning(f"{empty} of {len(transcripts)} transcripts are empty: they count 0 in auto-BLEU and are left "
                       f"out of GenPPL")
    on_transcripts = repetition_metrics(transcripts, fairseq_tokenizer="normalized", slamkit_tokenizer="treebank")
    on_units = repetition_metrics([record_units(r, cfg.include_prompt) for r in records])
    scorer = load_text_scorer(cfg.text_lm, device=cfg.device, batch_size=cfg.lm_batch_size,
                              boundary_token=cfg.text_lm_boundary)
    genppl = asr_perplexity(transcripts, scorer)
    report = GenerationReport(cfg, records, transcripts, on_transcripts, on_units, genppl, empty,
                              {**transcription, **asdict(stats)})
    atomic_write_text(cfg.output, json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    logger.info(format_report(report))
    logger.info(f"wrote {cfg.output}")
    return report
