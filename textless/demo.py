"""The main job on the embedded default, run by `make demo` / `textless demo`.

At this stage of the library it reads the bundled corpus (decoding every file, as a tokenizer would), tokenizes it with
the oracle phone tokenizer (frame-level phones from the alignments; the topline learned units are compared against),
writes each split as a unit dataset (binary encoding for ``train``, JSONL for the others) and prints a summary of the
corpus and of the units. Later stages grow it into audio -> units -> LM continuation -> audio.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from textless.audio import load_audio
from textless.data.corpus import SPLITS, load_bundled_alignments, load_bundled_corpus
from textless.data.units import UnitWriter, read_units
from textless.errors import TextlessError
from textless.eval.unit_stats import unit_statistics
from textless.tokenizers.phones import OraclePhoneTokenizer
from textless.utils.atomic import atomic_write_text
from textless.utils.table import format_table


@dataclass
class DemoConfig:
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    output_dir: str = "outputs/demo"
    sample_rate: int = 16000
    frame_rate: float = 50.0
    deduplicate: bool = True
    overwrite: bool = True
    progress: bool = True


def run_demo(cfg: DemoConfig, log=print) -> dict:
    """Run the demo; returns the summary that is also written to ``<output_dir>/summary.json``."""
    unknown = [s for s in cfg.splits if s not in SPLITS]
    if unknown:
        raise TextlessError(f"unknown split(s) {unknown}; the bundled corpus has {list(SPLITS)}")
    out = Path(cfg.output_dir)
    tokenizer = OraclePhoneTokenizer(frame_rate=cfg.frame_rate, deduplicate=cfg.deduplicate)
    alignments = load_bundled_alignments()
    summary: dict = {"tokenizer": tokenizer.identity(), "splits": {}, "failures": []}
    corpus_rows, unit_rows = [], []
    for split in cfg.splits:
        manifest = load_bundled_corpus(split)
        t0 = time.perf_counter()
        seconds_read, failures, no_alignment = 0.0, [], 0
        encoding = "binary" if split == "train" else "jsonl"
        with UnitWriter(out / "units" / split, tokenizer.meta(), encoding=encoding, overwrite=cfg.overwrite) as writer:
            for item in tqdm(manifest, desc=f"tokenize {split}", unit="utt", disable=not cfg.progress):
                try:
                    wav, _ = load_audio(item.path, cfg.sample_rate)
                except TextlessError as e:  # report, skip, keep going
                    failures.append({"id": item.id, "error": str(e)})
                    continue
                seconds = wav.shape[-1] / cfg.sample_rate
                seconds_read += seconds
                if item.id not in alignments:
                    no_alignment += 1
                    continue
                writer.add(tokenizer.encode(alignments[item.id], duration=seconds))
        elapsed = time.perf_counter() - t0
        units = read_units(out / "units" / split)
        stats = unit_statistics(units, cfg.frame_rate, tokenizer.vocab_size) if len(units) else None
        summary["failures"] += failures
        summary["splits"][split] = {
            "utterances": len(manifest), "speakers": len(manifest.speakers), "minutes": seconds_read / 60,
            "without_alignment": no_alignment, "failed": len(failures), "seconds_to_process": elapsed,
            "units": stats.to_dict() if stats else None, "unit_dataset": str(out / "units" / split),
        }
        corpus_rows.append([split, len(manifest), len(manifest.speakers), seconds_read / 60, no_alignment,
                            len(failures), seconds_read / max(elapsed, 1e-9)])
        if stats:
            unit_rows.append([split, stats.utterances, stats.units, stats.units_per_second, stats.mean_run_frames,
                              stats.used_units, stats.entropy_bits, stats.bitrate])
    log("Bundled corpus (16 kHz FLAC, TTS voices; see textless/assets/corpus/README.md)")
    log(format_table(["split", "utts", "speakers", "minutes", "no-align", "failed", "x realtime"], corpus_rows))
    log("")
    log(f"Units: oracle phones at {cfg.frame_rate:g} Hz, vocabulary {tokenizer.vocab_size}, "
        f"{'deduplicated' if cfg.deduplicate else 'frame-level'} (utterances without alignments are skipped)")
    log(format_table(["split", "utts", "units", "units/s", "frames/unit", "used", "H bits", "bitrate b/s"], unit_rows))
    for failure in summary["failures"]:
        log(f"skipped {failure['id']}: {failure['error']}")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log(f"\nwrote {out / 'units'}/<split> and {out / 'summary.json'}")
    return summary
