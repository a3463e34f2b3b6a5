"""`textless preference-pairs`: Align-SLM's preference data from automatic feedback, and slamkit's triplets imported.

For every prompt (a unit dataset, or audio tokenized with ``tokenizer=``; cut to its first ``prompt_seconds``, 3 s as
slamkit's judge) the unit LM samples ``num_samples`` continuations (slamkit's judge: temperature 0.8, top-k 25, 150
new units); the vocoder voices the prompt and every continuation; the ASR (``asr=auto``) transcribes them (the prompt
from its resynthesis, so that prompt and continuations come through the same voice and vocoder); the judges
(`textless.preference.judges`) score each continuation; the scoring rule combines the scores and the selection
(`textless.preference.selection`) makes one best-vs-worst pair per prompt that passes the margin, the thresholds and
slamkit's repetition filter. Sampling, vocoding, ASR and judging all run batched over a chunk of prompts.

Sharding and resume: prompts run in chunks of ``chunk_prompts`` (chunk k is sampled with seed ``seed + k``, so the
output does not depend on how the work is split); rank r of W (torchrun / SLURM / ``rank=``, ``world_size=``) takes
chunks k with k % W == r and journals each finished chunk (its continuations, transcripts and scores) in
``<output>.parts/``, whose audio is written before the journal line. A killed run re-run with the same command
continues after its last journalled chunk; a run with other settings is refused with the differences
(``restart=true`` starts over). When every shard is done, the last rank selects the pairs over all continuations
and publishes the preference dataset (`textless.preference.data`) atomically, with ``candidates.jsonl`` (every
continuation and its scores) and the audio. A prompt whose vocoding, transcription or judging fails is reported
(``failures`` in meta.json, and the log) and skipped; the others complete.

The selection reads only the judged continuations, so `reselect` picks pairs again from a finished dataset's
``candidates.jsonl`` with another rule or thresholds, without sampling or judging again.

`import_slamkit_pairs`: slamkit's preference jsonl (one ``{"prompt_path", "chosen_path", "rejected_path"}`` per line)
through a tokenizer bundle into the same format (unreadable audio or lines reported and skipped).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from textless.audio import load_audio, resample, save_audio
from textless.data import resolve_shard
from textless.data.identity import UnitIdentity
from textless.data.units import UnitSequence, crop_prompt
from textless.errors import ConfigError, TextlessError
from textless.jobs.generate import GenerateConfig, load_prompts, load_vocoder_for, prompts_fingerprint
from textless.lm.generation import SamplingConfig, generate_units
from textless.preference.data import Pair, PreferenceData, read_pairs, write_pairs
from textless.preference.judges import Candidate, load_judges, score_candidates
from textless.preference.selection import RULES, ScoringRule, SelectionConfig, required_judges, select_pairs
from textless.utils.runs import module_fingerprint, parts_dir, resume_or_record, run_digest
from textless.utils.shards import ShardJournal, journals_to_merge

logger = logging.getLogger(__name__)

DEFAULT_JUDGES = ["text_lm", "llm", "repetition", "length", "silence"]
TEXT_JUDGES = {"text_lm", "llm"}


@dataclass
class PairsConfig:
    lm: str = "starter"                # the policy: a unit LM directory (textless, TWIST, slamkit) or "starter"
    prompts: str = ""                  # unit dataset dir, bundled:<split> (the starter units); or audio with tokenizer=
    tokenizer: str | None = None       # SpeechTokenizer bundle (or "starter"), for audio prompts
    prompt_seconds: float | None = 3.0  # keep the first N seconds of each prompt (slamkit's judge: 3 s)
    max_prompts: int | None = None
    num_samples: int = 5               # continuations per prompt
    temperature: float = 0.8           # slamkit's judge settings: temperature 0.8, top-k 25, 150 new units
    top_k: int | None = 25
    top_p: float | None = None
    max_new_tokens: int = 150
    prompt_multiple: float | None = None  # TWIST's rule min(max_new_tokens, k x prompt units); None: max_new_tokens
    vocoder: str = "starter"           # voices prompts and continuations (any load_vocoder format, "starter")
    speaker: str | None = None         # multi-speaker vocoder: a name or id (default: the prompt's own)
    asr: str | None = "auto"           # textless.eval.asr spec; null: no transcripts (only the unit/audio judges)
    judges: list[str] = field(default_factory=lambda: list(DEFAULT_JUDGES))  # textless.preference.judges names
    text_lm: str = "offline:smollm2-135m"   # the text_lm judge's causal LM (local HF dir, .gguf, offline:...)
    judge_lm: str = "offline:smollm2-135m"  # the llm judge's instruct LM
    judge_batch_size: int = 8
    rule: Any = "llm+text_lm"          # how scores combine: a preset (llm | text_lm | llm+text_lm: the LLM judge's
                                       # expected score + 0.5 x text-LM log-prob, since a 135M judge barely spreads)
                                       # or {weights: {key: w}, minimum: {key: v}, maximum: {key: v}}
    selection: SelectionConfig = field(default_factory=SelectionConfig)  # margins, thresholds, repetition filter
    output: str = "outputs/preference/pairs"
    save_audio: bool = True            # keep the audio of prompts and continuations in the output
    chunk_prompts: int = 8             # prompts per journalled chunk
    batch_size: int = 16               # sequences per LM / vocoder batch
    seed: int = 0
    rank: int | None = None            # default: from the environment (torchrun / SLURM), else 0
    world_size: int | None = None
    device: str = "cpu"                # cpu | cuda (under torchrun: each rank its LOCAL_RANK's GPU) | cuda:N
    progress: bool = True
    overwrite: bool = False
    restart: bool = False              # discard a partial run in <output>.parts instead of resuming it


# ------------------------------------------------------------------------------------------------------ the models
@dataclass
class _Models:
    lm: Any
    vocoder: Any
    speakers: dict[str, int] | None
    asr: Any
    judges: list
    units: UnitIdentity


def scoring_rule(spec: Any) -> ScoringRule:
    """A `ScoringRule` from a preset name (`RULES`), a mapping of its fields, or a rule."""
    if isinstance(spec, ScoringRule):
        return spec
    if isinstance(spec, str):
        if spec not in RULES:
            raise ConfigError(f"rule: unknown preset {spec!r} (presets: {', '.join(RULES)}; or give "
                              f"{{weights: {{key: weight}}, minimum: {{...}}, maximum: {{...}}}})")
        return RULES[spec]
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"weights", "minimum", "maximum"})
        if unknown:
            raise ConfigError(f"rule: unknown field(s) {', '.join(unknown)} (weights, minimum, maximum)")
        return ScoringRule(**{k: dict(v) for k, v in spec.items()})
    raise ConfigError(f"rule must be a preset name or a mapping, got {spec!r}")


def _sampling(cfg: PairsConfig) -> SamplingConfig:
    return SamplingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                          max_new_tokens=cfg.max_new_tokens, num_samples=cfg.num_samples, seed=cfg.seed,
                          stop_at_eos=False, prompt_multiple=cfg.prompt_multiple)


def _generate_config(cfg: PairsConfig) -> GenerateConfig:
    return GenerateConfig(lm=cfg.lm, prompts=cfg.prompts, tokenizer=cfg.tokenizer, max_prompts=cfg.max_prompts,
                          vocoder=cfg.vocoder, speaker=cfg.speaker, device=cfg.device)


def check_config(cfg: PairsConfig) -> None:
    if not cfg.lm or not cfg.prompts:
        raise ConfigError("preference-pairs needs lm=<unit LM> and prompts=<unit dataset or audio>")
    if not cfg.vocoder:
        raise ConfigError("preference-pairs needs vocoder=<vocoder> (the judges listen to the continuations)")
    if cfg.num_samples < 2:
        raise ConfigError(f"num_samples must be >= 2 to make a pair, got {cfg.num_samples}")
    if cfg.chunk_prompts < 1 or cfg.batch_size < 1:
        raise ConfigError("chunk_prompts and batch_size must be >= 1")
    missing = [j for j in required_judges(scoring_rule(cfg.rule), cfg.selection) if j not in cfg.judges]
    if missing:
        raise ConfigError(f"the rule and the selection read scores of judge(s) {', '.join(missing)}, which judges= "
                          f"{list(cfg.judges)} lacks (add them, or change rule= / selection.*)")
    text = sorted(TEXT_JUDGES & set(cfg.judges))
    if cfg.asr is None and text:
        raise ConfigError(f"judges {text} read transcripts: give asr= (e.g. auto) or leave them out of judges")


def load_models(cfg: PairsConfig, prompts: list[UnitSequence], units_meta, cache: dict | None = None) -> _Models:
    """The policy, vocoder, ASR and judges. `cache` (a dict the caller keeps) shares the ASR and the judges between
    calls with the same settings (the curriculum runs pair generation several times)."""
    from textless.eval.asr import load_asr
    from textless.lm.loaders import load_unit_lm

    cache = {} if cache is None else cache
    lm = load_unit_lm(cfg.lm).to(cfg.device).eval()
    lm.check_units(units_meta, where=f"prompts '{cfg.prompts}'", name=f"the LM '{cfg.lm}'")
    vocoder, speakers = load_vocoder_for(_generate_config(cfg), units_meta, [p.id for p in prompts])
    if cfg.asr and ("asr", cfg.asr, cfg.device) not in cache:
        cache["asr", cfg.asr, cfg.device] = load_asr(cfg.asr, device=cfg.device)
    asr = cache["asr", cfg.asr, cfg.device] if cfg.asr else None
    own = {"text_lm": {"model": cfg.text_lm}, "llm": {"model": cfg.judge_lm}}
    key = ("judges", tuple(cfg.judges), cfg.text_lm, cfg.judge_lm, cfg.device, cfg.judge_batch_size)
    if key not in cache:
        cache[key] = load_judges(cfg.judges, device=cfg.device, batch_size=cfg.judge_batch_size,
                                 **{name: options for name, options in own.items() if name in cfg.judges})
    return _Models(lm, vocoder, None if speakers is None else dict(zip([p.id for p in prompts], speakers)), asr,
                   cache[key], units_meta.identity)


# ------------------------------------------------------------------------------------------------------- one chunk
def _file_stem(prompt_id: str) -> str:
    return prompt_id.replace("/", "__")


def _transcribe(asr, wavs: list[np.ndarray], sample_rate: int) -> list[str]:
    if asr is None:
        return [None] * len(wavs)
    wavs = [resample(torch.from_numpy(np.ascontiguousarray(w)), sample_rate, asr.sample_rate).numpy() for w in wavs]
    return [t.strip() for t in asr.transcribe(wavs)]


class StageTimes(dict):
    """Seconds spent per stage (sampling, vocoding, asr, judging), summed over chunks."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


def _judge_prompts(models: _Models, cfg: PairsConfig, prompts: list[UnitSequence], samples: list[list[np.ndarray]],
                   audio_dir: Path | None, times: StageTimes) -> list[dict]:
    """Voice, transcribe and judge the continuations of `prompts` (batched); one record per continuation."""
    with times.stage("vocoding"):
        voiced, prompt_wavs, wavs, durations = _voice(models, cfg, prompts, samples)
    sr = models.vocoder.sample_rate
    with times.stage("asr"):
        prompt_texts = _transcribe(models.asr, prompt_wavs, sr)
        texts = [None] * len(wavs)
        for j, text in zip(voiced, _transcribe(models.asr, [wavs[j] for j in voiced], sr)):
            texts[j] = text
    if models.asr is not None:
        texts = [t if t is not None else "" for t in texts]
    flat = [(i, k, u) for i, units in enumerate(samples) for k, u in enumerate(units)]
    candidates = [Candidate(prompt_id=prompts[i].id, sample=k, prompt_units=prompts[i].units,
                            units=np.asarray(u, np.int64), prompt_text=prompt_texts[i], text=texts[j],
                            audio=wavs[j] if wavs[j] is not None else np.zeros(0, np.float32), sample_rate=sr,
                            frame_rate=models.units.frame_rate, durations=durations[j])
                  for j, (i, k, u) in enumerate(flat)]
    with times.stage("judging"):
        scores = score_candidates(models.judges, candidates)
    records = []
    for j, (i, k, u) in enumerate(flat):
        p = prompts[i]
        record = {"id": f"{p.id}/{k}", "prompt_id": p.id, "sample": k, "prompt_units": p.units.tolist(),
                  "units": np.asarray(u).tolist(), "prompt_text": prompt_texts[i], "text": texts[j],
                  "scores": scores[j]}
        if p.durations is not None:
            record["prompt_durations"] = p.durations.tolist()
        if audio_dir is not None:
            if k == 0:
                save_audio(audio_dir / f"{_file_stem(p.id)}.prompt.wav", prompt_wavs[i], sr)
            record["prompt_audio"] = f"audio/{_file_stem(p.id)}.prompt.wav"
            if wavs[j] is not None:
                save_audio(audio_dir / f"{_file_stem(p.id)}.{k}.wav", wavs[j], sr)
                record["audio"] = f"audio/{_file_stem(p.id)}.{k}.wav"
        records.append(record)
    return records


def _voice(models: _Models, cfg: PairsConfig, prompts: list[UnitSequence], samples: list[list[np.ndarray]]):
    """(indices of the non-empty continuations, prompt waveforms, continuation waveforms or None, their predicted
    durations or None), all batched."""
    vocoder = models.vocoder
    dedup = bool(models.units.deduplicated)
    spk = None if models.speakers is None else [models.speakers[p.id] for p in prompts]
    prompt_wavs = vocoder.synthesize([p.units for p in prompts],
                                     [p.durations if p.durations is not None else np.ones(len(p.units), np.int64)
                                      for p in prompts], speakers=spk, batch_size=cfg.batch_size)
    flat = [(i, u) for i, units in enumerate(samples) for u in units]
    voiced = [j for j, (_, u) in enumerate(flat) if len(u)]
    wavs: list[np.ndarray | None] = [None] * len(flat)
    durations: list[np.ndarray | None] = [None] * len(flat)
    if voiced:
        units = [flat[j][1] for j in voiced]
        durs = vocoder.predict_durations(units, batch_size=cfg.batch_size) if dedup else None
        out = vocoder.synthesize(units, durs, speakers=None if spk is None else [spk[flat[j][0]] for j in voiced],
                                 batch_size=cfg.batch_size)
        for n, j in enumerate(voiced):
            wavs[j] = out[n]
            durations[j] = None if durs is None else np.asarray(durs[n], np.int64)
    return voiced, prompt_wavs, wavs, durations


def judge_chunk(models: _Models, cfg: PairsConfig, prompts: list[UnitSequence], seed: int,
                audio_dir: Path | None, times: StageTimes | None = None) -> tuple[list[dict], list[dict]]:
    """(candidate records, failures) of one chunk of prompts: sampled together with `seed`; voiced, transcribed and
    judged together, and again one prompt at a time when that fails, so one bad prompt costs only itself. `times`
    accumulates the seconds of each stage."""
    times = StageTimes() if times is None else times
    sampling = replace(_sampling(cfg), seed=seed)
    with times.stage("sampling"):
        samples = generate_units(models.lm, [p.units for p in prompts], sampling, batch_size=cfg.batch_size)
    try:
        return _judge_prompts(models, cfg, prompts, samples, audio_dir, times), []
    except (TextlessError, RuntimeError, ValueError) as e:
        if len(prompts) == 1:
            return [], [{"id": prompts[0].id, "error": f"{type(e).__name__}: {e}"}]
        logger.warning(f"a chunk of {len(prompts)} prompts failed ({e}); retrying them one at a time")
    records, failures = [], []
    for prompt, units in zip(prompts, samples):
        try:
            records += _judge_prompts(models, cfg, [prompt], [units], audio_dir, times)
        except (TextlessError, RuntimeError, ValueError) as e:
            failures.append({"id": prompt.id, "error": f"{type(e).__name__}: {e}"})
    return records, failures


# ------------------------------------------------------------------------------------------------------ selection
def select(records: list[dict], rule: ScoringRule, selection: SelectionConfig) -> tuple[list[Pair], dict[str, str]]:
    """Pairs from judged continuation records (`textless.preference.selection.select_pairs`: best vs worst per
    prompt), and why each prompt without a pair has none."""
    scores = [record_scores(r) for r in records]
    combined = [rule.combine(s) for s in scores]
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(r["prompt_id"], []).append(i)
    chosen, skipped = select_pairs(groups, combined, scores, selection, samples=[r["sample"] for r in records])
    pairs = []
    for s in chosen:
        c, r = records[s.chosen], records[s.rejected]
        pairs.append(Pair(id=f"{s.prompt_id}/{c['sample']}-{r['sample']}", prompt_id=s.prompt_id,
                          prompt_units=c["prompt_units"], chosen_units=c["units"], rejected_units=r["units"],
                          prompt_text=c.get("prompt_text"), chosen_text=c.get("text"), rejected_text=r.get("text"),
                          prompt_audio=c.get("prompt_audio"), chosen_audio=c.get("audio"),
                          rejected_audio=r.get("audio"), chosen_scores=scores[s.chosen],
                          rejected_scores=scores[s.rejected], chosen_score=combined[s.chosen],
                          rejected_score=combined[s.rejected]))
    return pairs, skipped


def record_scores(record: dict) -> dict[str, float]:
    """A record's scores as floats (a score written as null - not finite - reads back as NaN)."""
    return {k: math.nan if v is None else float(v) for k, v in record["scores"].items()}


# ------------------------------------------------------------------------------------------------------- the job
def make_pairs(cfg: PairsConfig, cache: dict | None = None) -> Path | None:
    """Run this rank's share of the pair generation (see the module docstring); returns the output directory when
    this rank published it, else None (other shards still running). `cache`: see `load_models`."""
    check_config(cfg)
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise TextlessError(f"output '{output}' already exists (overwrite=true to replace it)")
    rank, world = resolve_shard(cfg.rank, cfg.world_size)
    if cfg.device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per rank
        cfg = replace(cfg, device=f"cuda:{int(os.environ['LOCAL_RANK'])}")
    prompts, units_meta = load_prompts(_generate_config(cfg))
    prompts = sorted((crop_prompt(p, cfg.prompt_seconds, units_meta.frame_rate) for p in prompts), key=lambda p: p.id)
    if not prompts:
        raise ConfigError(f"prompts '{cfg.prompts}' holds no prompt")
    models = load_models(cfg, prompts, units_meta, cache)
    parts = parts_dir(output)
    started_with = {"lm": module_fingerprint(models.lm.model), "prompts": prompts_fingerprint(prompts),
                    "sampling": asdict(_sampling(cfg)), "chunk_prompts": cfg.chunk_prompts, "world_size": world,
                    "vocoder": module_fingerprint(models.vocoder.generator), "speaker": cfg.speaker,
                    "asr": None if models.asr is None else models.asr.name, "judges": list(cfg.judges),
                    "text_lm": cfg.text_lm, "judge_lm": cfg.judge_lm, "save_audio": cfg.save_audio}
    resume_or_record(parts, started_with, what=f"the partial pair generation in {parts}", restart=cfg.restart,
                     how_to_restart="or pass restart=true to discard it and start over")
    journal = ShardJournal(parts, rank, world)
    if cfg.restart:
        journal.discard()
    audio_dir = parts / "audio" if cfg.save_audio else None
    if audio_dir is not None:
        audio_dir.mkdir(parents=True, exist_ok=True)
    chunks = [(k, prompts[s:s + cfg.chunk_prompts]) for k, s in enumerate(range(0, len(prompts), cfg.chunk_prompts))]
    mine = [(k, c) for k, c in chunks if k % world == rank]
    done = {r["chunk"] for r in journal.finished()}
    if done:
        logger.info(f"rank {rank}: resuming {parts}: {len(done)} of {len(mine)} chunks already done")
    bar = tqdm(total=sum(len(c) for _, c in mine), initial=sum(len(c) for k, c in mine if k in done),
               unit="prompt", desc=f"preference pairs rank {rank}/{world}", disable=not cfg.progress)
    for k, chunk in mine:
        if k in done:
            continue
        times = StageTimes()
        records, failures = judge_chunk(models, cfg, chunk, cfg.seed + k, audio_dir, times)
        for f in failures:
            logger.warning(f"prompt {f['id']} skipped: {f['error']}")
        journal.add([{"chunk": k, "records": records, "failures": failures, "seconds": dict(times)}])
        bar.update(len(chunk))
    bar.close()
    run = run_digest(started_with)
    journal.mark_done(run)
    return _merge_if_complete(cfg, parts, world, run, models.units, started_with)


def _merge_if_complete(cfg: PairsConfig, parts: Path, world: int, run: str, units: UnitIdentity,
                       started_with: dict) -> Path | None:
    output = Path(cfg.output)
    journals = journals_to_merge(parts, world, run, output)
    if journals is None:
        return None
    chunks = sorted((c for j in journals for c in j.finished()), key=lambda c: c["chunk"])
    records = [r for c in chunks for r in c["records"]]
    failures = [f for c in chunks for f in c["failures"]]
    seconds: dict[str, float] = {}
    for c in chunks:
        for stage, value in c.get("seconds", {}).items():
            seconds[stage] = round(seconds.get(stage, 0.0) + value, 3)
    pairs, skipped = select(records, scoring_rule(cfg.rule), cfg.selection)
    source = {"made_by": "textless preference-pairs", "lm": cfg.lm, "prompts": cfg.prompts,
              "prompt_seconds": cfg.prompt_seconds, "sampling": started_with["sampling"], "vocoder": cfg.vocoder,
              "asr": started_with["asr"], "judges": list(cfg.judges), "text_lm": cfg.text_lm,
              "judge_lm": cfg.judge_lm, "rule": asdict(scoring_rule(cfg.rule)), "selection": asdict(cfg.selection),
              "prompts_total": len({r["prompt_id"] for r in records}) + len(failures),
              "candidates": len(records), "failures": failures, "skipped": skipped, "stage_seconds": seconds}
    data = PreferenceData(units=units, pairs=pairs, source=source)
    extra = {"audio": parts / "audio"} if cfg.save_audio else None
    write_pairs(output, data, candidates=records, overwrite=cfg.overwrite, extra_files=extra)
    shutil.rmtree(parts, ignore_errors=True)
    logger.info(summary(data))
    logger.info("seconds per stage (all ranks): " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    logger.info(f"wrote {output}")
    return output


def summary(data: PreferenceData) -> str:
    """One paragraph: pairs kept of prompts, why the others were dropped, mean scores of chosen vs rejected."""
    src = data.source
    reasons: dict[str, int] = {}
    for why in (src.get("skipped") or {}).values():
        key = re.sub(r"[-+]?\d[\d.e+-]*", "x", why)  # "all candidates score -7.1" -> "all candidates score x"
        reasons[key] = reasons.get(key, 0) + 1
    margins = [p.margin for p in data.pairs if p.margin is not None and math.isfinite(p.margin)]
    text = (f"{len(data.pairs)} pairs from {src.get('prompts_total', '?')} prompts "
            f"({src.get('candidates', '?')} continuations, {len(src.get('failures') or [])} prompts failed)")
    if reasons:
        text += "; no pair: " + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    if margins:
        text += f"; score margin mean {np.mean(margins):.3f} (min {min(margins):.3f})"
    return text


def reselect(directory: str | Path, output: str | Path, rule: Any = None,
             selection: SelectionConfig | None = None, *, overwrite: bool = False) -> Path:
    """Select pairs again from a finished dataset's ``candidates.jsonl`` with another rule / selection (no sampling,
    no judging); the audio is shared (hard links)."""
    data = read_pairs(directory)
    path = Path(directory) / "candidates.jsonl"
    if not path.is_file():
        raise TextlessError(f"'{directory}' has no candidates.jsonl (only datasets made by preference-pairs do)")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rule = scoring_rule(rule if rule is not None else data.source["rule"])
    selection = selection or SelectionConfig(**data.source["selection"])
    pairs, skipped = select(records, rule, selection)
    source = {**data.source, "rule": asdict(rule), "selection": asdict(selection), "skipped": skipped,
              "reselected_from": str(directory)}
    extra = {"audio": Path(directory) / "audio"} if (Path(directory) / "audio").is_dir() else None
    return write_pairs(output, PreferenceData(data.units, pairs, source), candidates=records, overwrite=overwrite,
                       extra_files=extra)


# --------------------------------------------------------------------------------------------- slamkit triplets
@dataclass
class ImportPairsConfig:
    source: str = ""                   # slamkit preference jsonl: {"prompt_path", "chosen_path", "rejected_path"}
    tokenizer: str = "starter"         # the SpeechTokenizer bundle the policy's units come from
    output: str = "outputs/preference/imported"
    device: str = "cpu"
    overwrite: bool = False
    progress: bool = True


SLAMKIT_KEYS = ("prompt_path", "chosen_path", "rejected_path")


def import_slamkit_pairs(cfg: ImportPairsConfig) -> Path:
    """slamkit's preference jsonl -> a preference dataset (see the module docstring). Relative audio paths are
    relative to the jsonl's directory; lines that are not JSON, lack a key, or whose audio cannot be read or
    tokenized are reported (``failures`` in meta.json) and skipped."""
    from textless.tokenizers.bundle import SpeechTokenizer

    source = Path(cfg.source)
    if not source.is_file():
        raise ConfigError(f"source '{cfg.source}' is not a file (slamkit's preference jsonl)")
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise TextlessError(f"output '{output}' already exists (overwrite=true to replace it)")
    tokenizer = SpeechTokenizer.from_pretrained(cfg.tokenizer, device=cfg.device)
    lines = source.read_text(encoding="utf-8").splitlines()
    pairs, failures = [], []
    for n, line in enumerate(tqdm(lines, unit="line", desc="import pairs", disable=not cfg.progress), 1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            row = json.loads(line)
            missing = [k for k in SLAMKIT_KEYS if not isinstance(row, dict) or k not in row]
            if missing:
                raise TextlessError(f"missing {', '.join(missing)}")
            paths = [Path(row[k]) if Path(row[k]).is_absolute() else source.parent / row[k] for k in SLAMKIT_KEYS]
            units = []
            for path in paths:
                wav, _ = load_audio(path, tokenizer.sample_rate)
                units.append(tokenizer.encode(wav, tokenizer.sample_rate).ids.tolist())
            pairs.append(Pair(id=str(row.get("id", n)), prompt_id=str(row.get("id", n)), prompt_units=units[0],
                              chosen_units=units[1], rejected_units=units[2], prompt_audio=str(paths[0]),
                              chosen_audio=str(paths[1]), rejected_audio=str(paths[2])))
        except (ValueError, OSError, TextlessError) as e:
            failures.append({"line": n, "error": f"{type(e).__name__}: {e}"})
            logger.warning(f"{where}: skipped ({e})")
    for p in pairs:
        if not p.chosen_units or not p.rejected_units:
            failures.append({"line": p.id, "error": "an empty chosen or rejected continuation"})
    pairs = [p for p in pairs if p.chosen_units and p.rejected_units]
    data = PreferenceData(units=tokenizer.unit_identity(), pairs=pairs,
                          source={"made_by": "textless import-pairs (slamkit jsonl)", "source": str(source),
                                  "tokenizer": cfg.tokenizer, "failures": failures})
    write_pairs(output, data, overwrite=cfg.overwrite)
    logger.info(f"wrote {output}: {len(pairs)} pairs, {len(failures)} lines skipped")
    return output
