"""The main job on the embedded default, run by `make demo` / `textless demo`.

At this stage of the library: fit a speech tokenizer on the bundled corpus' training split (encoder features ->
k-means -> dedup), tokenize every split into unit datasets with `textless tokenize`'s job, and print corpus and unit
statistics (frame rate, units per second, run lengths, entropy, bitrate) next to the oracle-phone topline (frame-level
phones from the alignments). Later stages grow it into audio -> units -> LM continuation -> audio.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from textless.data.corpus import SPLITS, load_bundled_alignments, load_bundled_corpus
from textless.data.units import UnitWriter, read_units
from textless.errors import TextlessError
from textless.eval.unit_stats import UnitStats, unit_statistics
from textless.tokenizers.fit_job import KMeansJobConfig, fit_tokenizer
from textless.tokenizers.phones import OraclePhoneTokenizer
from textless.tokenizers.tokenize_job import TokenizeConfig, tokenize_dataset
from textless.utils.atomic import atomic_write_text
from textless.utils.table import format_table


@dataclass
class DemoConfig:
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    output_dir: str = "outputs/demo"
    encoder: str = "mfcc"            # "mfcc", a Hugging Face directory or a fairseq .pt
    layer: int | None = None
    k: int = 100
    backend: str = "faiss"
    oracle_frame_rate: float = 50.0
    progress: bool = True


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


def run_demo(cfg: DemoConfig, log=print) -> dict:
    """Run the demo; returns the summary that is also written to ``<output_dir>/summary.json``."""
    unknown = [s for s in cfg.splits if s not in SPLITS]
    if unknown:
        raise TextlessError(f"unknown split(s) {unknown}; the bundled corpus has {list(SPLITS)}")
    out = Path(cfg.output_dir)
    timings: dict[str, float] = {}
    manifests = {split: load_bundled_corpus(split) for split in cfg.splits}
    log("Bundled corpus (16 kHz FLAC, TTS voices; see textless/assets/corpus/README.md)")
    log(format_table(["split", "utterances", "speakers", "minutes"],
                     [[s, len(m), len(m.speakers), m.total_duration / 60] for s, m in manifests.items()]))

    t0 = time.perf_counter()
    tokenizer = fit_tokenizer(KMeansJobConfig(dataset="bundled:train", encoder=cfg.encoder, layer=cfg.layer, k=cfg.k,
                                              backend=cfg.backend, output=str(out / "tokenizer"), overwrite=True,
                                              progress=cfg.progress), log=log)
    timings["fit_tokenizer"] = time.perf_counter() - t0

    summary: dict = {"tokenizer": tokenizer.identity(), "splits": {}, "timings_s": timings}
    oracle = OraclePhoneTokenizer(frame_rate=cfg.oracle_frame_rate)
    rows = []
    for split in cfg.splits:
        t0 = time.perf_counter()
        result = tokenize_dataset(TokenizeConfig(dataset=f"bundled:{split}", tokenizer=str(out / "tokenizer"),
                                                 output=str(out / "units" / split), overwrite=True,
                                                 progress=cfg.progress), log=log)
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
    log("")
    log("Units (deduplicated; oracle-phones = frame-level phones from the alignments, aligned utterances only)")
    log(format_table(["tokenizer", "split", "Hz", "vocab", "utts", "units/s", "frames/unit", "used", "H bits",
                      "bitrate b/s"], rows))
    log("")
    log("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log(f"wrote {out / 'tokenizer'}, {out / 'units'}/<split> and {out / 'summary.json'}")
    return summary
