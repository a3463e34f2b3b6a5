"""`textless align`: the Align-SLM curriculum — pairs from the current model -> DPO -> a new model, repeated.

    textless align lm=starter prompts=bundled:train eval_prompts=bundled:valid iterations=2 output_dir=outputs/align

Layout (one directory per iteration; ``iter0`` is the starting model, evaluated only)::

    <output_dir>/run.json                 what the loop was started with (a re-run with other settings is refused)
    <output_dir>/iter0/eval.json          the "before" evaluation of ``lm``
    <output_dir>/iterK/pairs/             preference pairs sampled from the model of iteration K-1
                                          (`textless preference-pairs`, thresholds from ``schedule``)
    <output_dir>/iterK/dpo/               the DPO run (`textless dpo`; final/ = the new model), validated on the
                                          held-out pairs of iteration K-1's evaluation (same starting model)
    <output_dir>/iterK/eval.json          its evaluation (heldout/: the held-out continuations and their scores,
                                          likelihood.json: the suites)
    <output_dir>/summary.json, summary.png  the table across iterations and the before / after curves

Curriculum: ``schedule`` maps a field of the pair selection (`textless.preference.selection.SelectionConfig`:
``min_margin``, ``min_chosen_score``, ...) to one value per iteration (the last one repeats), so later iterations
keep only clearer preferences (Align-SLM's "harder pairs"). Each iteration samples with ``pairs.seed + K``.

Resume: every stage is a resumable job writing its output atomically (pair generation resumes after its last
journalled chunk, DPO from its last checkpoint, evaluations are redone when their report is missing); a stage whose
output is complete is skipped, so re-running the same command after a kill at any point finishes the loop with the
result an uninterrupted run gives. An iteration whose selection keeps no pair skips DPO: the model carries over (and the
summary says so).

Evaluation (before and after every iteration): ``eval_samples`` continuations of each held-out prompt
(``eval_prompts``) judged by the same judges and rule as the pairs: the combined score's mean over prompts with its
standard deviation and standard error (each prompt's score = the mean of its continuations), and each judge's mean;
the likelihood suites ``eval_suites`` on ``eval_path`` (default: the committed offline sWUGGY / sBLIMP-style set
``seen``), scored with the tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textless.errors import ConfigError
from textless.jobs.generate import is_unit_dataset
from textless.jobs.preference_pairs import PairsConfig, make_pairs, record_scores, scoring_rule
from textless.preference.data import read_pairs
from textless.preference.selection import SelectionConfig, raise_thresholds
from textless.preference.train import DPOConfig, dpo
from textless.training.config import config_dict
from textless.utils.assets import ASSETS_DIR
from textless.utils.atomic import atomic_write_text
from textless.utils.runs import resume_or_record
from textless.utils.table import format_table

logger = logging.getLogger(__name__)

DEFAULT_SUITE_PATH = str(ASSETS_DIR / "benchmarks" / "seen")
DONE_FILE = "done.json"


@dataclass
class AlignConfig:
    lm: str = "starter"                # the starting policy (unit LM directory or "starter")
    prompts: str = ""                  # training prompts: a unit dataset or audio (with tokenizer=)
    eval_prompts: str | None = None    # held-out prompts for the judge scores (null: no judge evaluation)
    tokenizer: str = "starter"         # the SpeechTokenizer bundle of the units (audio prompts, likelihood suites)
    vocoder: str = "starter"
    output_dir: str = "outputs/align"
    iterations: int = 2
    schedule: dict[str, list[float]] = field(default_factory=lambda: {"min_margin": [0.25, 0.5]})  # {selection
                                       # field: [its value at iteration 1, 2, ...]} (the last one repeats)
    pairs: PairsConfig = field(default_factory=PairsConfig)  # pair generation (lm, prompts, output: set per iteration)
    dpo: DPOConfig = field(default_factory=DPOConfig)        # DPO (policy, pairs, output_dir: set per iteration)
    eval_samples: int = 3              # continuations per held-out prompt
    eval_max_prompts: int | None = None
    eval_suites: list[str] = field(default_factory=lambda: ["swuggy", "sblimp"])  # [] for none
    eval_path: str = DEFAULT_SUITE_PATH  # the suites' directory (ZeroSpeech layout)
    device: str = "cpu"
    progress: bool = True


# settings that may change when the loop resumes (they do not change what is computed)
MUTABLE = ("progress", "output_dir")


def _iter_dir(cfg: AlignConfig, k: int) -> Path:
    return Path(cfg.output_dir) / f"iter{k}"


def _check(cfg: AlignConfig) -> None:
    if not cfg.prompts:
        raise ConfigError("align needs prompts=<unit dataset or audio> (the prompts pairs are sampled from)")
    if cfg.iterations < 1:
        raise ConfigError(f"iterations must be >= 1, got {cfg.iterations}")
    known = {f.name for f in dataclasses.fields(SelectionConfig)}
    for key, values in cfg.schedule.items():
        if key not in known:
            raise ConfigError(f"schedule: '{key}' is not a selection setting (one of {', '.join(sorted(known))})")
        if not values:
            raise ConfigError(f"schedule: '{key}' needs at least one value")
    if cfg.eval_prompts and cfg.eval_samples < 2:
        raise ConfigError(f"eval_samples must be >= 2, got {cfg.eval_samples}")


def _pairs_config(cfg: AlignConfig, lm: str, prompts: str, output: Path, **changes: Any) -> PairsConfig:
    tokenizer = None if is_unit_dataset(prompts) else cfg.tokenizer
    return dataclasses.replace(cfg.pairs, lm=lm, prompts=prompts, tokenizer=tokenizer, vocoder=cfg.vocoder,
                               output=str(output), device=cfg.device, progress=cfg.progress, **changes)


def run_align(cfg: AlignConfig) -> dict[str, Any]:
    """Run (or resume) the curriculum (see the module docstring); returns the summary."""
    _check(cfg)
    out = Path(cfg.output_dir)
    started_with = {k: v for k, v in config_dict(cfg).items() if k not in MUTABLE}
    resume_or_record(out, started_with, what=f"the alignment run in {out}",
                     how_to_restart="use a new output_dir, or delete it to start over")
    model = cfg.lm
    cache: dict = {}  # the ASR and the judges, loaded once for every pair generation and evaluation
    rows = [_evaluate_stage(cfg, model, 0, {"pairs": None}, cache)]
    for k in range(1, cfg.iterations + 1):
        directory = _iter_dir(cfg, k)
        selection = raise_thresholds(cfg.pairs.selection, k - 1, cfg.schedule)
        pairs_dir = directory / "pairs"
        if not pairs_dir.exists():
            make_pairs(_pairs_config(cfg, model, cfg.prompts, pairs_dir, selection=selection,
                                     seed=cfg.pairs.seed + k), cache)
        data = read_pairs(pairs_dir)
        extra = {"pairs": len(data), "prompts": data.source.get("prompts_total"),
                 "margin": _mean([p.margin for p in data.pairs]), "selection": asdict(selection)}
        if len(data) == 0:
            logger.warning(f"iteration {k}: the selection kept no pair; the model carries over unchanged")
            extra["dpo"] = "skipped: no pairs"
        else:
            valid = _iter_dir(cfg, k - 1) / "heldout"  # pairs of held-out prompts from the same starting model
            valid = valid if valid.is_dir() and len(read_pairs(valid)) else None
            model, extra["dpo"] = _dpo_stage(cfg, model, pairs_dir, valid, directory / "dpo")
        rows.append(_evaluate_stage(cfg, model, k, extra, cache))
    summary = _write_summary(cfg, rows)
    return summary


def _dpo_stage(cfg: AlignConfig, policy: str, pairs: Path, valid: Path | None, output: Path
               ) -> tuple[str, dict[str, Any]]:
    """Train (or resume, or skip when done) DPO; (the new model's directory, its last training metrics and, with
    held-out pairs, its last validation metrics as ``valid/<name>``)."""
    done = output / DONE_FILE
    if done.is_file():
        record = json.loads(done.read_text(encoding="utf-8"))
        return record["model"], record["metrics"]
    dpo_cfg = dataclasses.replace(cfg.dpo, policy=policy, pairs=str(pairs), output_dir=str(output),
                                  valid_pairs=None if valid is None else str(valid), merge_lora=True,
                                  progress=cfg.progress)
    result = dpo(dpo_cfg)
    last = {k: v[-1] for k, v in result.history.items() if v and k != "step"}
    last.update({f"valid/{k}": v[-1] for k, v in result.valid_history.items() if v and k != "step"})
    record = {"model": str(result.final_model), "steps": result.step, "metrics": last}
    atomic_write_text(done, json.dumps(record, indent=2))
    return record["model"], last


def _mean(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def heldout_scores(candidates: list[dict], rule) -> dict[str, Any]:
    """The judge evaluation of held-out continuations: the combined score per prompt (mean of its continuations that
    meet the rule; ``disqualified`` counts the others), then its mean, standard deviation and standard error over
    prompts; each score key's mean; how many transcripts are empty."""
    by_prompt: dict[str, list[float]] = {}
    keys: dict[str, list[float]] = {}
    for r in candidates:
        by_prompt.setdefault(r["prompt_id"], []).append(rule.combine(record_scores(r)))
        for key, value in r["scores"].items():
            keys.setdefault(key, []).append(value)
    finite = {p: [v for v in values if math.isfinite(v)] for p, values in by_prompt.items()}
    per_prompt = np.array([np.mean(v) for v in finite.values() if v], dtype=np.float64)
    disqualified = sum(len(v) - len(finite[p]) for p, v in by_prompt.items())
    n = len(per_prompt)
    std = float(np.std(per_prompt, ddof=1)) if n > 1 else 0.0
    empty = sum(1 for r in candidates if r.get("text") == "")  # the ASR heard nothing
    return {"prompts": n, "continuations": len(candidates), "disqualified": disqualified, "empty_transcripts": empty,
            "score_mean": float(np.mean(per_prompt)) if n else None,
            "score_std": std, "score_sem": std / math.sqrt(n) if n > 1 else 0.0,
            "judges": {k: _mean(v) for k, v in sorted(keys.items())}}


def _evaluate_stage(cfg: AlignConfig, model: str, k: int, extra: dict[str, Any], cache: dict) -> dict[str, Any]:
    """Evaluate `model` as iteration `k` (skipped when ``iterK/eval.json`` exists); its summary row."""
    directory = _iter_dir(cfg, k)
    report_path = directory / "eval.json"
    if report_path.is_file():
        return json.loads(report_path.read_text(encoding="utf-8"))
    row: dict[str, Any] = {"iteration": k, "model": model, **extra}
    if cfg.eval_prompts:
        heldout = directory / "heldout"
        if not heldout.exists():
            selection = dataclasses.replace(cfg.pairs.selection, min_margin=0.0, min_chosen_score=None,
                                            max_rejected_score=None)
            make_pairs(_pairs_config(cfg, model, cfg.eval_prompts, heldout, num_samples=cfg.eval_samples,
                                     max_prompts=cfg.eval_max_prompts, selection=selection,
                                     seed=cfg.pairs.seed + 10_000), cache)
        lines = (heldout / "candidates.jsonl").read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        row["heldout"] = heldout_scores(records, scoring_rule(cfg.pairs.rule))
    if cfg.eval_suites:
        from textless.jobs.evaluate import EvalConfig, run_eval

        report = run_eval(EvalConfig(suite=list(cfg.eval_suites), path=cfg.eval_path, lm=model,
                                     tokenizer=cfg.tokenizer, device=cfg.device,
                                     output=str(directory / "likelihood.json"), overwrite=True))
        row["suites"] = {f"{name}/{metric}": score["accuracy"] for name, entry in report["suites"].items()
                         for metric, score in entry["metrics"].items() if score["accuracy"] is not None}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(report_path, json.dumps(row, indent=2, default=str))
    return row


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Iterations as rows: pairs kept, DPO's last training reward accuracy and margin and its preference accuracy on
    the held-out pairs, the held-out judge score (mean ± sem over prompts) and the suites' accuracies (percent)."""
    suites = list(dict.fromkeys(k for r in rows for k in (r.get("suites") or {})))
    header = ["iter", "pairs", "DPO acc", "DPO margin", "held-out acc", "judge score"] + suites
    table = []
    for r in rows:
        dpo_metrics = r.get("dpo") if isinstance(r.get("dpo"), dict) else {}
        held = r.get("heldout")
        score = f"{held['score_mean']:.3f} ± {held['score_sem']:.3f}" if held else "-"
        table.append([r["iteration"], "-" if r.get("pairs") is None else r["pairs"],
                      _fmt(dpo_metrics.get("rewards/accuracies")), _fmt(dpo_metrics.get("rewards/margins")),
                      _fmt(dpo_metrics.get("valid/rewards/accuracies")), score]
                     + [_fmt(None if (r.get("suites") or {}).get(s) is None else 100 * r["suites"][s], 1)
                        for s in suites])
    return format_table(header, table)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline_suites(rows: list[dict[str, Any]]) -> list[str]:
    """The first metric of each suite (lexical_all, syntactic, ...): the one to plot."""
    first: dict[str, str] = {}
    for r in rows:
        for key in r.get("suites") or {}:
            first.setdefault(key.split("/")[0], key)
    return list(first.values())


# judge keys worth a panel of their own in the summary plot
PLOTTED_JUDGES = {"llm/expected": "LLM judge expected score (1-5)", "text_lm/logprob": "text-LM log-prob / token",
                  "silence/ratio": "silent share of continuations"}


def summary_curves(rows: list[dict[str, Any]], label: str | None = None) -> list:
    """The before / after curves of one run: the held-out judge score (mean ± sem over prompts), a few judges'
    means, and each suite's headline accuracy."""
    from textless.utils.plots import Curve

    xs = [r["iteration"] for r in rows]
    curves = []
    if all(r.get("heldout") and r["heldout"]["score_mean"] is not None for r in rows):
        curves.append(Curve("held-out judge score (mean ± sem)", xs, [r["heldout"]["score_mean"] for r in rows],
                            [r["heldout"]["score_sem"] for r in rows], label=label))
        for key, title in PLOTTED_JUDGES.items():
            values = [r["heldout"]["judges"].get(key) for r in rows]
            if all(v is not None for v in values):
                curves.append(Curve(title, xs, values, label=label))
    for suite in headline_suites(rows):
        ys = [100 * r["suites"][suite] if suite in (r.get("suites") or {}) else float("nan") for r in rows]
        curves.append(Curve(suite, xs, ys, ylabel="accuracy %", chance=50.0, label=label))
    return curves


def _write_summary(cfg: AlignConfig, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from textless.utils.plots import plot_curves

    out = Path(cfg.output_dir)
    summary = {"iterations": rows, "table": summary_table(rows)}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    curves = summary_curves(rows)
    if curves:
        plot_curves(curves, out / "summary.png", title="Align-SLM: before (iteration 0) and after each iteration")
    logger.info("alignment summary\n" + summary["table"])
    return summary
