"""`textless eval`: run likelihood suites (sWUGGY, sBLIMP, sStoryCloze, tStoryCloze, SALMon) on a tokenizer + unit LM.

    textless eval suite=swuggy path=/data/zerospeech2021 pipeline=outputs/pipeline
    textless eval suite=[sstorycloze,tstorycloze] path="{sstorycloze: /data/sSC, tstorycloze: /data/tSC}" \\
        lm=outputs/lm/final tokenizer=outputs/tokenizers/hubert-km500 device=cuda

Prints a table of accuracies (percent) and writes a JSON report (atomic)::

    {"format": "textless.eval.likelihood", "version": 1, "lm", "tokenizer" (identity), "scoring" {score, add_bos,
     add_eos, max_tokens}, "seconds", "suites": {name: {"suite", "split", "source", "files", "pairs", "items",
     "metrics": {metric: {"accuracy" (fraction in [0, 1]), "n", "std"}}, "breakdowns": {kind: {group: {...}}},
     "notes": [...], "submission": path | null}}}

``n`` counts items (ids, stories, samples), except for ``lexical_pair_mean`` / ``syntactic_pair_mean``, slamkit's
plain mean over pairs (next to the ZeroSpeech voice-averaged ``lexical_all`` / ``syntactic``), where it counts pairs.

For the ZeroSpeech 2021 suites the official submission files are written too (``<submission_dir>/lexical/<split>.txt``,
``syntactic/<split>.txt``; default ``submission_dir``: the report path without ``.json`` + ``_zr2021``), unless
``max_items`` cut the split. Suites, their layouts and the scoring rules: `textless.eval.suites`,
`textless.eval.likelihood`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textless.errors import ConfigError
from textless.eval.likelihood import SCORES, LikelihoodScorer, ScoringConfig, evaluate_suite
from textless.eval.suites import ReadOptions, get_suite
from textless.utils.atomic import atomic_write_text
from textless.utils.table import format_table
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

REPORT = artifact("textless.eval.likelihood", 1, "a likelihood report")


@dataclass
class EvalConfig:
    suite: Any = "swuggy"              # a suite name or a list of names: swuggy sblimp sstorycloze tstorycloze salmon
    path: Any = None                   # the suite's data directory, or a mapping {suite: directory} for several
    split: str = "dev"                 # ZeroSpeech 2021 suites: dev | test (test without gold: submission only)
    pipeline: str | None = None        # a speech pipeline directory (its tokenizer and LM), or "starter"
    lm: str | None = None              # a unit LM directory (textless, TWIST or slamkit), with tokenizer=
    tokenizer: str | None = None       # a SpeechTokenizer bundle, with lm=
    attn_implementation: str | None = None
    score: str = "mean"                # mean (log-prob per token, slamkit's default) | sum
    add_bos: bool = True
    add_eos: bool = True               # slamkit scores bos + units + eos; SALMon's baseline: no bos, no eos
    max_tokens: int | None = None      # truncate sequences to this many tokens (None: too long is an error)
    batch_size: int = 8                # LM sequences per forward pass
    tokenize_batch_size: int = 16      # wavs per tokenizer call
    all_negatives: bool = False        # SALMon: every negative (mean per sample) instead of the first one
    salmon_parts: list[str] | None = None  # SALMon parts (None: all eight)
    max_items: int | None = None       # quick runs: the first N items (ids / stories / samples) of each suite
    device: str = "cpu"
    output: str = "outputs/eval/likelihood.json"
    submission_dir: str | None = None  # ZeroSpeech submission files (None: next to the report)
    overwrite: bool = False


def suite_names(value: Any) -> list[str]:
    """`EvalConfig.suite` -> a list of registered names (duplicates refused)."""
    names = [value] if isinstance(value, str) else list(value or [])
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"suite must be a suite name or a list of names, got {value!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"suite lists a suite twice: {names}")
    for name in names:
        get_suite(name)
    return names


def suite_paths(names: list[str], value: Any) -> dict[str, Path]:
    """`EvalConfig.path` -> {suite: directory}: one path for every suite, or a mapping naming each suite."""
    if isinstance(value, str):
        return {n: Path(value) for n in names}
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in names]
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise ConfigError(f"path mapping must name exactly the evaluated suites {names}"
                              + (f"; missing {missing}" if missing else "") + (f"; extra {unknown}" if unknown else ""))
        return {n: Path(value[n]) for n in names}
    raise ConfigError("eval needs path=<data directory> (or a mapping {suite: directory} for several suites)")


def load_models(cfg: EvalConfig):
    """(tokenizer, lm, {"lm": name, "tokenizer": name}) from `pipeline=` or `lm=` + `tokenizer=`."""
    if cfg.pipeline:
        if cfg.lm or cfg.tokenizer:
            raise ConfigError("give pipeline= or lm= + tokenizer=, not both")
        from textless.pipeline import SpeechPipeline, starter_pipeline

        pipe = (starter_pipeline(cfg.device, load_vocoder=False) if cfg.pipeline == "starter"
                else SpeechPipeline.from_pretrained(cfg.pipeline, device=cfg.device, load_vocoder=False))
        if pipe.lm is None:
            raise ConfigError(f"pipeline '{cfg.pipeline}' has no unit LM")
        return pipe.tokenizer, pipe.lm.eval(), {"pipeline": cfg.pipeline}
    if not cfg.lm or not cfg.tokenizer:
        raise ConfigError("eval needs pipeline=<dir> or lm=<unit LM> and tokenizer=<speech tokenizer bundle>")
    from textless.lm.loaders import load_unit_lm
    from textless.tokenizers.bundle import SpeechTokenizer

    tokenizer = SpeechTokenizer.from_pretrained(cfg.tokenizer, device=cfg.device)
    lm = load_unit_lm(cfg.lm, attn_implementation=cfg.attn_implementation).to(cfg.device).eval()
    return tokenizer, lm, {"lm": cfg.lm, "tokenizer": cfg.tokenizer}


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Read every suite (all input errors before any model work), score, aggregate, write the report; return it."""
    start = time.perf_counter()
    names = suite_names(cfg.suite)
    paths = suite_paths(names, cfg.path)
    scoring = ScoringConfig(score=cfg.score, add_bos=cfg.add_bos, add_eos=cfg.add_eos, batch_size=cfg.batch_size,
                            tokenize_batch_size=cfg.tokenize_batch_size, max_tokens=cfg.max_tokens)
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise ConfigError(f"'{output}' already exists (pass overwrite=true to replace it)")
    options = ReadOptions(split=cfg.split, salmon_parts=cfg.salmon_parts, all_negatives=cfg.all_negatives)
    datasets = {n: get_suite(n).read(paths[n], options).limited(cfg.max_items) for n in names}
    tokenizer, lm, models = load_models(cfg)
    scorer = LikelihoodScorer(tokenizer, lm, scoring,
                              where=f"tokenizer {models.get('tokenizer', models.get('pipeline'))}")
    submission_dir = Path(cfg.submission_dir) if cfg.submission_dir else output.with_name(output.stem + "_zr2021")
    suites: dict[str, Any] = {}
    for name in names:
        data, suite = datasets[name], get_suite(name)
        logger.info(f"{name}: {len(data.pairs)} pairs, {len(data.files)} files from {data.source}")
        result, scores = evaluate_suite(suite, data, scorer.score_files)
        entry = {**result.to_dict(), "source": str(data.source), "files": len(data.files), "submission": None}
        if suite.write_submission is not None and data.complete:
            entry["submission"] = str(suite.write_submission(data, scores, submission_dir))
        suites[name] = entry
    report = {**REPORT.header(), **models, "tokenizer_identity": tokenizer.identity(),
              "scoring": {"score": cfg.score, "meaning": SCORES[cfg.score], "add_bos": cfg.add_bos,
                          "add_eos": cfg.add_eos, "max_tokens": cfg.max_tokens},
              "seconds": round(time.perf_counter() - start, 3), "suites": suites}
    atomic_write_text(output, json.dumps(report, indent=2) + "\n")
    logger.info(format_report(report))
    logger.info(f"wrote {output}")
    return report


def read_report(path: str | Path) -> dict[str, Any]:
    """A report written by `run_eval` (format checked)."""
    return REPORT.read_json(path)


def headline_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, float | str, int]]:
    """(suite, split, metric, accuracy in percent or "-", n) per headline metric."""
    rows = []
    for name, entry in report["suites"].items():
        for metric, score in entry["metrics"].items():
            accuracy = "-" if score["accuracy"] is None else 100.0 * score["accuracy"]
            rows.append((name, entry.get("split") or "-", metric, accuracy, score["n"]))
    return rows


def format_report(report: Mapping[str, Any]) -> str:
    """The headline table, then the breakdowns (accuracy in percent; n = items, pairs for the *_pair_mean rows)."""
    text = format_table(["suite", "split", "metric", "accuracy %", "n"], headline_rows(report))
    detail = [(name, kind, group, "-" if s["accuracy"] is None else 100.0 * s["accuracy"], s["n"])
              for name, entry in report["suites"].items()
              for kind, groups in entry["breakdowns"].items() for group, s in groups.items()]
    if detail:
        text += "\n\n" + format_table(["suite", "by", "group", "accuracy %", "n"], detail)
    notes = [f"{name}: {note}" for name, entry in report["suites"].items() for note in entry["notes"]]
    return text + ("\n\n" + "\n".join(notes) if notes else "")

