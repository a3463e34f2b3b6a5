"""`textless demo mode=train`: build every stage from scratch on the bundled corpus (the starter pipeline's recipe in
miniature, CPU minutes):
1. fit a speech tokenizer on the bundled corpus' training split (encoder features -> k-means -> dedup);
2. tokenize every split into unit datasets (`textless tokenize`'s job) and print unit statistics (frame rate, units
   per second, run lengths, entropy, bitrate) next to the oracle-phone topline (frame-level phones from alignments);
3. train a small unit LM on the training units (`textless train`'s loop, recipe textless/recipes/lm_tiny.yaml sizes);
4. continue a held-out prompt with it (`textless generate`'s job) and report the validation loss.
(`textless train-vocoder` is the vocoder stage; it needs far more CPU time than a demo has.)
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from textless.data.corpus import SPLITS, load_bundled_alignments, load_bundled_corpus
from textless.data.units import UnitWriter, read_units
from textless.errors import TextlessError
from textless.eval.unit_stats import UnitStats, unit_statistics
from textless.jobs.kmeans import KMeansJobConfig, fit_tokenizer
from textless.jobs.tokenize import TokenizeConfig, tokenize_dataset
from textless.tokenizers.phones import OraclePhoneTokenizer
from textless.utils.atomic import atomic_write_text
from textless.utils.table import format_table

logger = logging.getLogger(__name__)


def _oracle_units(split: str, out: Path, tokenizer: OraclePhoneTokenizer) -> Path:
    alignments = load_bundled_alignments()
    path = out / "oracle_phones" / split
    with UnitWriter(path, tokenizer.meta(), encoding="jsonl", overwrite=True) as writer:
        for item in load_bundled_corpus(split):
            if item.id in alignments:
                writer.add(tokenizer.encode(alignments[item.id], duration=item.duration))
    return path


def _stats_row(name: str, split: str, frame_rate: float, vocab: int, stats: UnitStats) -> list:
    return [name, split, f"{frame_rate:g}", vocab, stats.utterances, stats.units_per_second, stats.mean_run_frames,
            stats.used_units, stats.entropy_bits, stats.bitrate]


def _train_and_continue(cfg, out: Path, timings: dict[str, float]) -> dict:
    from textless.jobs.generate import GenerateConfig, generate, read_generations
    from textless.lm.train import TrainConfig, train

    t0 = time.perf_counter()
    result = train(TrainConfig(train_dataset=str(out / "units" / "train"), valid_dataset=str(out / "units" / "valid"),
                               preset=cfg.lm_preset, output_dir=str(out / "lm"), context_length=cfg.lm_context,
                               batch_size=8, lr=cfg.lm_lr, min_lr=cfg.lm_lr / 20, max_steps=cfg.lm_steps,
                               eval_every=max(1, cfg.lm_steps // 3), save_every=cfg.lm_steps, log_every=10**9,
                               seed=cfg.seed, progress=cfg.progress, tensorboard=True))
    timings["train_lm"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    generations = generate(GenerateConfig(lm=str(result.final_model), prompts=str(out / "units" / "valid"),
                                          prompt_seconds=cfg.prompt_seconds, max_prompts=1, seed=cfg.seed,
                                          output=str(out / "generations"), overwrite=True))
    timings["generate"] = time.perf_counter() - t0
    _, records = read_generations(generations)
    first = records[0]
    valid = result.valid_losses[-1][1] if result.valid_losses else float("nan")
    logger.info("")
    logger.info(f"Unit LM ({cfg.lm_preset}, {result.step} steps, {result.tokens_seen:,} tokens): validation loss "
                f"{valid:.3f} nats/unit (uniform over the units: {np.log(cfg.k):.3f})")
    prompt = " ".join(map(str, first["prompt_units"]))
    logger.info(f"prompt {first['prompt_id']} (first {cfg.prompt_seconds:g} s): {prompt}")
    logger.info(f"continuation ({len(first['units'])} units): {' '.join(map(str, first['units']))}")
    return {"final_model": str(result.final_model), "steps": result.step, "valid_loss": valid,
            "generations": str(generations), "continuation": first["units"]}


def run_training_demo(cfg) -> dict:
    """Run the from-scratch demo (`textless.jobs.demo.DemoConfig`); returns the summary also written to
    ``<output_dir>/summary.json``."""
    unknown = [s for s in cfg.splits if s not in SPLITS]
    if unknown:
        raise TextlessError(f"unknown split(s) {unknown}; the bundled corpus has {list(SPLITS)}")
    out = Path(cfg.output_dir)
    timings: dict[str, float] = {}
    manifests = {split: load_bundled_corpus(split) for split in cfg.splits}
    logger.info("Bundled corpus (16 kHz FLAC, TTS voices; see textless/assets/corpus/README.md)")
    logger.info(format_table(["split", "utterances", "speakers", "minutes"],
                     [[s, len(m), len(m.speakers), m.total_duration / 60] for s, m in manifests.items()]))

    t0 = time.perf_counter()
    tokenizer = fit_tokenizer(KMeansJobConfig(dataset="bundled:train", encoder=cfg.encoder, layer=cfg.layer, k=cfg.k,
                                              backend=cfg.backend, output=str(out / "tokenizer"), overwrite=True,
                                              progress=cfg.progress))
    timings["fit_tokenizer"] = time.perf_counter() - t0

    summary: dict = {"tokenizer": tokenizer.identity(), "splits": {}, "timings_s": timings}
    oracle = OraclePhoneTokenizer(frame_rate=cfg.oracle_frame_rate)
    rows = []
    for split in cfg.splits:
        t0 = time.perf_counter()
        result = tokenize_dataset(TokenizeConfig(dataset=f"bundled:{split}", tokenizer=str(out / "tokenizer"),
                                                 output=str(out / "units" / split), overwrite=True,
                                                 progress=cfg.progress))
        timings[f"tokenize_{split}"] = time.perf_counter() - t0
        units = read_units(result.output)
        stats = unit_statistics(units, units.meta.frame_rate, units.meta.vocab_size)
        oracle_stats = unit_statistics(read_units(_oracle_units(split, out, oracle)), oracle.frame_rate,
                                       oracle.vocab_size)
        rows.append(_stats_row(tokenizer.identity()["name"], split, tokenizer.frame_rate, tokenizer.vocab_size,
                               stats))
        rows.append(_stats_row("oracle-phones", split, oracle.frame_rate, oracle.vocab_size, oracle_stats))
        summary["splits"][split] = {"units": stats.to_dict(), "oracle_phones": oracle_stats.to_dict(),
                                    "failures": units.meta.extra.get("failures", []),
                                    "x_realtime": stats.seconds / timings[f"tokenize_{split}"]}
    logger.info("")
    logger.info("Units (deduplicated; oracle-phones = frame-level phones from the alignments, aligned utterances only)")
    logger.info(format_table(["tokenizer", "split", "Hz", "vocab", "utts", "units/s", "frames/unit", "used", "H bits",
                      "bitrate b/s"], rows))
    if cfg.lm_steps > 0 and {"train", "valid"} <= set(cfg.splits):
        summary["lm"] = _train_and_continue(cfg, out, timings)
    logger.info("")
    logger.info("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    logger.info(f"wrote {out / 'tokenizer'}, {out / 'units'}/<split> and {out / 'summary.json'}")
    return summary
