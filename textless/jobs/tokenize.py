"""`textless tokenize`: an audio dataset -> a unit dataset, sharded across ranks, resumable, failure-tolerant.

Each rank (torchrun's RANK/WORLD_SIZE, SLURM, or ``rank=``/``world_size=``) tokenizes its shard of the id-sorted
manifest and appends finished utterances to its own journal ``<output>.parts/part-RRRRR-of-WWWWW.jsonl``, flushed and
fsynced after every batch. A re-run reads the journal (dropping a torn last line left by a kill) and skips what is done;
it resumes only what was started with the same tokenizer (identity and k-means hash), the same dataset (its ids) and
the same output-changing options, recorded in ``<output>.parts/run.json``: anything else is refused with the list of
differences (``restart=true`` discards the partial run: every rank drops its own journal).
Files that cannot be read or encoded are listed in ``...failures.jsonl`` and skipped; the rest completes.
When every shard is complete, the rank that finishes last (guarded by a lock file) merges the journals into the final
unit dataset with one atomic directory rename, so ``<output>`` is either absent or complete, and removes ``.parts``.

``dialogues=true``: `dataset` is a dialogue manifest or a directory of stereo files (`textless.dialogue.ingest`:
stereo files, pairs of mono files, mono + RTTM) and the output is a two-channel unit dataset
(`textless.dialogue.data`): each channel tokenized on its own, frame-level k-means units (not deduplicated, no BPE,
as dGSLM), the channels' speakers recorded. Same sharding, journals, resume and failure report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from textless.data import load_dataset, resolve_shard
from textless.data.batching import Failure, iter_audio_batches
from textless.data.identity import UnitIdentity
from textless.data.units import UnitSequence, UnitWriter
from textless.dialogue.data import Dialogue, dialogue_meta, write_dialogues
from textless.dialogue.ingest import load_dialogue_audio, read_dialogue_manifest
from textless.errors import ConfigError, TextlessError
from textless.tokenizers.bundle import SpeechTokenizer, Units
from textless.tokenizers.encoders.base import dtype_name, effective_dtype
from textless.utils.runs import parts_dir, resume_or_record, run_digest
from textless.utils.shards import ShardJournal, journals_to_merge

logger = logging.getLogger(__name__)


@dataclass
class TokenizeConfig:
    dataset: str = "bundled:train"  # audio directory, manifest, or bundled:<split>
    tokenizer: str = "starter"      # SpeechTokenizer bundle directory, or "starter" (the shipped one)
    output: str = ""                # unit dataset directory to create
    encoding: str = "binary"        # jsonl | binary
    batch_seconds: float = 120.0    # audio seconds per encoder batch
    chunk_seconds: float = 60.0     # longer utterances are encoded in overlapping windows (bounded memory)
    max_seconds: float = 36000.0    # files longer than this are refused (reported as failures)
    device: str = "cpu"
    dtype: str | None = None        # None (the bundle's, float32 by default) | bfloat16 | float16: encoder autocast
    force_dtype: bool = False       # autocast even on a CPU without native bf16 (else float32 there, with a warning)
    rank: int | None = None         # default: from the environment (torchrun / SLURM), else 0
    world_size: int | None = None
    retry_failed: bool = False      # re-attempt utterances listed as failures by an earlier run
    restart: bool = False           # discard a partial run (<output>.parts) instead of resuming it
    overwrite: bool = False
    progress: bool = True
    dialogues: bool = False         # dataset is a dialogue manifest / directory of stereo files: two-channel units


@dataclass
class TokenizeResult:
    output: Path | None             # the unit dataset, or None if other shards are still running
    done: int                       # utterances in this shard's journal
    failures: list[dict]


def _record(item_id: str, units: Units) -> dict:
    record = {"id": item_id, "units": units.ids.tolist()}
    if units.durations is not None:
        record["durations"] = units.durations.tolist()
    return record


def tokenize_dataset(cfg: TokenizeConfig) -> TokenizeResult:
    if not cfg.tokenizer or not cfg.output:
        raise ConfigError("tokenize needs tokenizer=<bundle dir> and output=<unit dataset dir>")
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise TextlessError(f"output '{output}' already exists (overwrite=true to replace it)")
    rank, world = resolve_shard(cfg.rank, cfg.world_size)
    tokenizer = SpeechTokenizer.from_pretrained(cfg.tokenizer, device=cfg.device, force_dtype=cfg.force_dtype,
                                                **({"dtype": cfg.dtype} if cfg.dtype else {}))
    if cfg.dialogues:
        return _tokenize_dialogues(cfg, tokenizer, rank, world, output)
    dataset = load_dataset(cfg.dataset)
    manifest = dataset.shard(rank, world)
    parts = parts_dir(output)
    dtype = effective_dtype(tokenizer.device, getattr(tokenizer.encoder, "dtype", None), cfg.force_dtype)
    started_with = {"tokenizer": tokenizer.unit_identity().describe(), "dataset": dataset.identity(),
                    "world_size": world, "dtype": dtype_name(dtype), "chunk_seconds": cfg.chunk_seconds,
                    "max_seconds": cfg.max_seconds}
    resume_or_record(parts, started_with, what=f"the partial tokenization in {parts}", restart=cfg.restart,
                     how_to_restart="or pass restart=true to discard it and start over")
    journal = ShardJournal(parts, rank, world)
    if cfg.restart:
        journal.discard()
    finished = {r["id"] for r in journal.finished()}
    failed = {r["id"] for r in journal.failures()} - finished
    skip = finished if cfg.retry_failed else finished | failed
    todo = [item for item in manifest if item.id not in skip]
    if finished or failed:
        logger.info(f"rank {rank}: resuming: {len(finished)} of {len(manifest)} utterances already done, "
                    f"{len(failed)} failed "
                    f"earlier ({'retrying them' if cfg.retry_failed else 'retry_failed=true retries them'})")
    new_failures: list[dict] = []

    def on_error(failure: Failure) -> None:
        new_failures.append(failure.to_dict())
        journal.add_failures([failure.to_dict()])

    known = all(item.duration is not None for item in todo)  # a directory of files has no durations up front
    bar = tqdm(total=sum(item.duration for item in todo) if known else None, desc=f"tokenize rank {rank}/{world}",
               disable=not cfg.progress,
               bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s of audio [{elapsed}<{remaining}]" if known
               else "{desc}: {n:.1f} s of audio [{elapsed}]")
    for items, wavs in iter_audio_batches(todo, tokenizer.sample_rate, cfg.batch_seconds, on_error,
                                          max_seconds=cfg.max_seconds, length_problem=tokenizer.encoder.length_problem):
        labels = tokenizer.frame_labels_batch(wavs, cfg.chunk_seconds)
        journal.add([_record(item.id, tokenizer.units_from_labels(lab)) for item, lab in zip(items, labels)])
        bar.update(sum(len(w) for w in wavs) / tokenizer.sample_rate)
    bar.close()
    run = run_digest(started_with)
    journal.mark_done(run)
    for failure in new_failures:
        logger.info(f"failed {failure['id']}: {failure['error']}")
    done = len(journal.finished())
    merged = _merge_if_complete(parts, world, output, tokenizer, cfg, run)
    return TokenizeResult(output=merged, done=done, failures=journal.failures())


def _merge_if_complete(parts: Path, world: int, output: Path, tokenizer: SpeechTokenizer,
                       cfg: TokenizeConfig, run: str) -> Path | None:
    journals = journals_to_merge(parts, world, run, output)
    if journals is None:
        return None
    records = sorted((r for j in journals for r in j.finished()), key=lambda r: r["id"])
    done = {r["id"] for r in records}
    failures = [f for j in journals for f in j.failures() if f["id"] not in done]
    meta = tokenizer.unit_meta({"source": str(cfg.dataset), "failures": failures, "world_size": world})
    with UnitWriter(output, meta, encoding=cfg.encoding, overwrite=cfg.overwrite) as writer:
        for r in records:
            durations = np.asarray(r["durations"], dtype=np.int64) if "durations" in r else None
            writer.add(UnitSequence(r["id"], np.asarray(r["units"], dtype=np.int64), durations))
    shutil.rmtree(parts, ignore_errors=True)
    logger.info(f"wrote {output}: {len(records)} utterances, {len(failures)} failed")
    return output


# ------------------------------------------------------------------------------------------------------ dialogues
def frame_identity(tokenizer: SpeechTokenizer) -> UnitIdentity:
    """The identity of a tokenizer's frame-level k-means units (no dedup, no BPE): what dialogue datasets hold."""
    identity = {k: v for k, v in tokenizer.identity().items() if k != "bpe_vocab_size"}
    identity["name"] = identity["name"].split("-bpe")[0]
    identity["deduplicate"] = False
    return UnitIdentity(tokenizer=identity, vocab_size=tokenizer.num_units, frame_rate=tokenizer.frame_rate,
                        deduplicated=False, bpe=False)


def _tokenize_dialogues(cfg: TokenizeConfig, tokenizer: SpeechTokenizer, rank: int, world: int,
                        output: Path) -> TokenizeResult:
    sources = read_dialogue_manifest(cfg.dataset)
    shard = sources[rank::world]
    parts = parts_dir(output)
    dtype = effective_dtype(tokenizer.device, getattr(tokenizer.encoder, "dtype", None), cfg.force_dtype)
    listing = "\n".join(json.dumps(s.describe(), sort_keys=True) for s in sources)
    started_with = {"tokenizer": frame_identity(tokenizer).describe(), "dialogues": str(Path(cfg.dataset).resolve()),
                    "conversations": hashlib.blake2b(listing.encode(), digest_size=6).hexdigest(),
                    "world_size": world, "dtype": dtype_name(dtype), "chunk_seconds": cfg.chunk_seconds,
                    "max_seconds": cfg.max_seconds}
    resume_or_record(parts, started_with, what=f"the partial tokenization in {parts}", restart=cfg.restart,
                     how_to_restart="or pass restart=true to discard it and start over")
    journal = ShardJournal(parts, rank, world)
    if cfg.restart:
        journal.discard()
    finished = {r["id"] for r in journal.finished()}
    failed = {r["id"] for r in journal.failures()} - finished
    skip = finished if cfg.retry_failed else finished | failed
    todo = [s for s in shard if s.id not in skip]
    if finished or failed:
        logger.info(f"rank {rank}: resuming: {len(finished)} of {len(shard)} conversations already done, "
                    f"{len(failed)} failed earlier")
    bar = tqdm(total=len(todo), desc=f"tokenize dialogues rank {rank}/{world}", unit="conversation",
               disable=not cfg.progress)
    for source in todo:
        try:
            audio, speakers = load_dialogue_audio(source, tokenizer.sample_rate, cfg.max_seconds)
            for channel in audio:
                problem = tokenizer.encoder.length_problem(len(channel))
                if problem:
                    raise TextlessError(f"{source.paths[0]}: cannot be tokenized: {problem}")
            labels = tokenizer.frame_labels_batch([torch.from_numpy(np.ascontiguousarray(c)) for c in audio],
                                                  cfg.chunk_seconds)
        except TextlessError as err:
            failure = {"id": source.id, "path": str(source.paths[0]), "error": str(err)}
            journal.add_failures([failure])
            logger.info(f"failed {source.id}: {err}")
        else:
            journal.add([{"id": source.id, "units": [lab.astype(np.int64).tolist() for lab in labels],
                          "speakers": speakers, "source": source.describe()}])
        bar.update(1)
    bar.close()
    run = run_digest(started_with)
    journal.mark_done(run)
    done_here = len(journal.finished())
    journals = journals_to_merge(parts, world, run, output)
    if journals is None:
        return TokenizeResult(output=None, done=done_here, failures=journal.failures())
    records = sorted((r for j in journals for r in j.finished()), key=lambda r: r["id"])
    done = {r["id"] for r in records}
    failures = [f for j in journals for f in j.failures() if f["id"] not in done]
    meta = dialogue_meta(frame_identity(tokenizer), extra={
        "source": str(cfg.dataset), "failures": failures, "world_size": world,
        "sources": {r["id"]: r["source"] for r in records}})
    write_dialogues(output, (Dialogue(r["id"], np.asarray(r["units"]), tuple(r["speakers"])) for r in records),
                    meta, encoding=cfg.encoding, overwrite=cfg.overwrite)
    shutil.rmtree(parts, ignore_errors=True)
    logger.info(f"wrote {output}: {len(records)} conversations, {len(failures)} failed")
    return TokenizeResult(output=output, done=done_here, failures=failures)
