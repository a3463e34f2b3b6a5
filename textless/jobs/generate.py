"""`textless generate`: continue speech prompts with a unit LM and write a generations artifact.

Prompts are a unit dataset (``prompts=<dir>``), or audio (a file, a directory/manifest, or ``bundled:<split>``)
tokenized with ``tokenizer=<bundle>``. The prompts' units must fit the LM exactly as for training
(`UnitLM.check_units`: same tokenizer name and hashes, vocabulary size, dedup flag); an imported TWIST / slamkit LM
(no tokenizer recorded) accepts any units whose ids fit its vocabulary. Each prompt is cut to its first
``prompt_seconds`` (counted in frames, so deduplicated units keep whole runs). The LM samples ``num_samples``
continuations per prompt (TWIST's defaults: temperature 0.8 and min(250, 3 x prompt length) new units - eos is not
sampled unless ``stop_at_eos=true``, so a continuation is as long as its budget, not the 0.2-2 s a tiny LM's early
eos gives; the job logs the rule it applies; sampling options as in `textless.lm.generation.SamplingConfig`, plus
``attn_implementation`` for loading the LM). ``lm=starter`` / ``tokenizer=starter`` / ``vocoder=starter`` name the
shipped starter.

Resume. Prompts run in chunks of ``chunk_prompts``, each with its own seed (``seed + chunk index``), journalled in
``<output>.parts/`` with a record of what the run was started with (LM weights, prompts, sampling, vocoder, speakers;
`textless.utils.runs`). A killed run re-run with the same command continues after its last finished chunk and gives
exactly the output of an uninterrupted run; a re-run with anything else is refused with the differences
(``restart=true`` discards the partial run). The output is published atomically at the end.

Output directory (atomic)::

    meta.json           {"format": "textless.generations", "version": 1, "lm", "tokenizer", "frame_rate",
                         "deduplicated", "vocab_size", "sampling": {...}}
    generations.jsonl   {"id": "<prompt id>/<k>", "prompt_id", "sample": k, "prompt_units": [...],
                         "prompt_durations": [...] | absent, "units": [...]}

With ``vocoder=<dir>`` (any format `textless.vocoders.load_vocoder` reads) each record also gets audio, written into
the same directory: ``audio/<prompt id>.prompt.wav`` (the cropped prompt, resynthesized from its units and
durations) and ``audio/<prompt id>.<k>.wav`` (continuation k; its durations come from the vocoder's duration
predictor), with ``"prompt_audio"`` / ``"audio"`` paths (relative) in the record (``"audio": null`` for an empty
continuation). ``speaker=`` picks the voice of a
multi-speaker vocoder (a name or id; default: each prompt's own speaker when the vocoder knows it, else the first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from textless.data.units import UnitMeta, UnitSequence, crop_prompt, read_units
from textless.errors import ConfigError, TextlessError
from textless.lm.generation import SamplingConfig, generate_units
from textless.utils.atomic import atomic_directory
from textless.utils.runs import Journal, module_fingerprint, parts_dir, resume_or_record
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

GENERATIONS = artifact("textless.generations", 1, "a generations directory")


@dataclass
class GenerateConfig:
    lm: str = ""                       # UnitLM directory, or "starter" (TWIST / slamkit directories are imported)
    attn_implementation: str | None = None  # null (transformers' default: sdpa) | sdpa | eager | flash_attention_2/3
    prompts: str = ""                  # unit dataset dir, bundled:<split> (the starter units); or audio with tokenizer=
    tokenizer: str | None = None       # SpeechTokenizer bundle (or "starter"), for audio prompts
    prompt_seconds: float | None = 3.0  # keep the first N seconds of each prompt (None: all of it)
    max_prompts: int | None = None
    output: str = "outputs/generations"
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int = 250          # with prompt_multiple (TWIST): min(max_new_tokens, 3 x prompt units)
    min_new_tokens: int = 0            # eos is not allowed before this many new tokens
    prompt_multiple: float | None = 3.0
    stop_at_eos: bool = False          # false: every continuation gets its full budget; true: stop at a sampled eos
    num_samples: int = 1
    seed: int = 0
    batch_size: int = 16
    chunk_prompts: int = 64            # prompts per journalled chunk (a killed run resumes after the last chunk)
    use_cache: bool = True             # KV cache (false: recompute every step; same greedy results, slower)
    vocoder: str | None = None         # write audio too (UnitVocoder / fairseq / speechbrain checkpoint, "starter")
    speaker: str | None = None         # multi-speaker vocoder: a speaker name or id (default: the prompt's own)
    trust_pickle: bool = False         # allow a fairseq vocoder checkpoint that pickles more than tensors
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False
    restart: bool = False              # discard a partial run in <output>.parts instead of resuming it


def _audio_prompts(cfg: GenerateConfig) -> tuple[list[UnitSequence], UnitMeta]:
    from textless.audio import load_audio
    from textless.data import load_dataset
    from textless.data.manifest import AudioItem
    from textless.tokenizers.bundle import SpeechTokenizer

    if not cfg.tokenizer:
        raise ConfigError("audio prompts need tokenizer=<speech tokenizer bundle>")
    tokenizer = SpeechTokenizer.from_pretrained(cfg.tokenizer, device=cfg.device)
    path = Path(cfg.prompts)
    items = [AudioItem(path.stem, path)] if path.is_file() and path.suffix not in (".tsv", ".jsonl") \
        else list(load_dataset(cfg.prompts))
    sequences = []
    for item in items[: cfg.max_prompts]:
        wav, _ = load_audio(item.path, tokenizer.sample_rate)
        units = tokenizer.encode(wav, tokenizer.sample_rate)
        sequences.append(UnitSequence(item.id, units.ids, units.durations))
    return sequences, tokenizer.unit_meta()


def is_unit_dataset(spec: str) -> bool:
    """Whether `spec` names a unit dataset: a directory with a meta.json, or ``bundled:<split>`` (the bundled corpus
    as the starter's units; with a ``tokenizer=`` it is read as audio instead)."""
    return spec.startswith("bundled:") or (Path(spec) / "meta.json").exists()


def load_prompts(cfg: GenerateConfig) -> tuple[list[UnitSequence], UnitMeta]:
    """(prompt sequences, what their units are) from a unit dataset, or from audio and a tokenizer bundle."""
    if is_unit_dataset(cfg.prompts) and not (cfg.prompts.startswith("bundled:") and cfg.tokenizer):
        units = read_units(cfg.prompts)
        sequences = [units[i] for i in range(min(len(units), cfg.max_prompts or len(units)))]
        return sequences, units.meta
    return _audio_prompts(cfg)


def sampling_config(cfg: GenerateConfig) -> SamplingConfig:
    """The job's `SamplingConfig` (validated there: `ConfigError` for out-of-range values)."""
    return SamplingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                          max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                          num_samples=cfg.num_samples, seed=cfg.seed, use_cache=cfg.use_cache,
                          stop_at_eos=cfg.stop_at_eos, prompt_multiple=cfg.prompt_multiple)


def _prompts_name(cfg: GenerateConfig) -> str:
    return cfg.prompts if cfg.tokenizer is None else f"{cfg.prompts} tokenized with {cfg.tokenizer}"


def prompts_fingerprint(prompts: list[UnitSequence]) -> str:
    """A hash of the (cropped) prompts' ids, units and durations: what the continuations are conditioned on."""
    digest = hashlib.blake2b(digest_size=8)
    for p in prompts:
        digest.update(p.id.encode() + b"\0")
        digest.update(np.ascontiguousarray(p.units, dtype="<i8").tobytes())
        if p.durations is not None:
            digest.update(np.ascontiguousarray(p.durations, dtype="<i8").tobytes())
    return digest.hexdigest()


def _budget_note(sampling: SamplingConfig) -> str:
    budget = (f"min({sampling.max_new_tokens}, {sampling.prompt_multiple:g} x prompt units)"
              if sampling.prompt_multiple is not None else f"{sampling.max_new_tokens}")
    eos = ("stopping at a sampled eos" + (f" after {sampling.min_new_tokens}" if sampling.min_new_tokens else "")
           if sampling.stop_at_eos else "eos never sampled (stop_at_eos=true allows it)")
    return f"each continuation: {budget} new units, {eos}"


def generate(cfg: GenerateConfig) -> Path:
    """Continue the prompts (see the module docstring); returns the output directory."""
    from textless.lm.loaders import load_unit_lm

    if not cfg.lm or not cfg.prompts:
        raise ConfigError("generate needs lm=<unit LM directory> and prompts=<unit dataset or audio>")
    if cfg.chunk_prompts < 1:
        raise ConfigError(f"chunk_prompts must be >= 1, got {cfg.chunk_prompts}")
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise TextlessError(f"output '{output}' already exists (overwrite=true to replace it)")
    sampling = sampling_config(cfg)
    lm = load_unit_lm(cfg.lm, attn_implementation=cfg.attn_implementation).to(cfg.device).eval()
    prompts, units_meta = load_prompts(cfg)
    lm.check_units(units_meta, where=f"prompts '{_prompts_name(cfg)}'", name=f"the LM '{cfg.lm}'")
    prompts = [crop_prompt(p, cfg.prompt_seconds, units_meta.frame_rate) for p in prompts]
    vocoder, speakers = load_vocoder_for(cfg, units_meta, [p.id for p in prompts])
    parts = parts_dir(output)
    if cfg.restart and parts.exists():
        logger.info(f"restart=true: discarding the partial run in {parts}")
        shutil.rmtree(parts)
    started_with = {"lm": module_fingerprint(lm.model), "prompts": prompts_fingerprint(prompts),
                    "sampling": asdict(sampling), "batch_size": cfg.batch_size, "chunk_prompts": cfg.chunk_prompts,
                    "vocoder": None if vocoder is None else module_fingerprint(vocoder.generator),
                    "speakers": speakers}
    resume_or_record(parts, started_with, what=f"the partial generation in {parts}",
                     how_to_restart="or pass restart=true to discard it and start over")
    journal = Journal(parts / "chunks.jsonl")
    done = {c["chunk"]: c["records"] for c in journal.read()}
    chunks = range(0, len(prompts), cfg.chunk_prompts)
    if done:
        logger.info(f"resuming {parts}: {len(done)} of {len(chunks)} chunks of prompts already done")
    logger.info(_budget_note(sampling))
    bar = tqdm(total=len(prompts), unit="prompt", desc="generate", disable=not cfg.progress)
    bar.update(sum(min(cfg.chunk_prompts, len(prompts) - start) for start in chunks if start // cfg.chunk_prompts
                   in done))
    for index, start in enumerate(chunks):
        if index in done:
            continue
        chunk = prompts[start:start + cfg.chunk_prompts]
        # one seed per chunk: a resumed run draws exactly what an uninterrupted one would
        chunk_sampling = replace(sampling, seed=None if sampling.seed is None else sampling.seed + index)
        outputs = generate_units(lm, [p.units for p in chunk], chunk_sampling, batch_size=cfg.batch_size)
        records = [_record(prompt, k, units) for prompt, samples in zip(chunk, outputs)
                   for k, units in enumerate(samples)]
        if vocoder is not None:
            _write_audio(vocoder, records, None if speakers is None else speakers[start:start + len(chunk)], parts,
                         cfg.batch_size, units_meta.deduplicated)
        journal.add([{"chunk": index, "records": records}])
        done[index] = records
        bar.update(len(chunk))
    bar.close()
    meta = {**GENERATIONS.header(), "lm": str(cfg.lm), "tokenizer": units_meta.tokenizer,
            "frame_rate": units_meta.frame_rate, "deduplicated": units_meta.deduplicated,
            "vocab_size": lm.vocab.num_units, "sampling": asdict(sampling), "prompt_seconds": cfg.prompt_seconds,
            "chunk_prompts": cfg.chunk_prompts}
    records = [r for index in sorted(done) for r in done[index]]
    with atomic_directory(output, overwrite=cfg.overwrite) as tmp:
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if (parts / "audio").is_dir():  # hard links: the journal stays whole until the output is published
            shutil.copytree(parts / "audio", tmp / "audio", copy_function=os.link)
        with open(tmp / "generations.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
    shutil.rmtree(parts, ignore_errors=True)
    logger.info(f"wrote {output}: {len(records)} continuations of {len(prompts)} prompts")
    return output


def _record(prompt: UnitSequence, sample: int, units: np.ndarray) -> dict:
    record = {"id": f"{prompt.id}/{sample}", "prompt_id": prompt.id, "sample": sample,
              "prompt_units": prompt.units.tolist(), "units": np.asarray(units).tolist()}
    if prompt.durations is not None:
        record["prompt_durations"] = prompt.durations.tolist()
    return record


def load_vocoder_for(cfg: GenerateConfig, units_meta: UnitMeta, prompt_ids: list[str]):
    """(vocoder or None, a speaker id per prompt or None); checks the vocoder takes these units."""
    if not cfg.vocoder:
        return None, None
    from textless.vocoders import load_vocoder

    vocoder = load_vocoder(cfg.vocoder, device=cfg.device, trust_pickle=cfg.trust_pickle)
    vocoder.check_units(units_meta.identity, where=f"prompts '{_prompts_name(cfg)}'",
                        name=f"the vocoder '{cfg.vocoder}'")
    if units_meta.deduplicated and vocoder.generator.dur_predictor is None:
        raise ConfigError(f"vocoder '{cfg.vocoder}' has no duration predictor, so it cannot voice the deduplicated "
                          f"units the LM generates")
    if not vocoder.config.multispkr:
        return vocoder, None
    if cfg.speaker is not None:
        return vocoder, [vocoder.speaker_id(cfg.speaker)] * len(prompt_ids)
    names = vocoder.config.speakers or []
    own = _prompt_speakers(cfg, prompt_ids)
    return vocoder, [names.index(own[i]) if own.get(i) in names else 0 for i in prompt_ids]


def _prompt_speakers(cfg: GenerateConfig, prompt_ids: list[str]) -> dict[str, str]:
    """Speaker of each prompt id when the prompts come from an audio dataset (or a unit dataset whose source is one)."""
    from textless.data import load_dataset

    source = cfg.prompts
    if (Path(cfg.prompts) / "meta.json").exists():
        source = read_units(cfg.prompts).meta.extra.get("source")
    try:
        return {item.id: item.speaker for item in load_dataset(source) if item.speaker} if source else {}
    except (TextlessError, OSError):
        return {}


def _write_audio(vocoder, records: list[dict], speakers: list[int] | None, out: Path, batch_size: int,
                 deduplicated: bool) -> None:
    """Synthesize each record's prompt (once per prompt) and continuation into ``out/audio``."""
    from textless.audio import save_audio

    (out / "audio").mkdir(exist_ok=True)
    by_prompt = {r["prompt_id"]: i for i, r in enumerate(records) if r["sample"] == 0}
    order = list(by_prompt)
    spk = None if speakers is None else dict(zip(order, speakers))

    def names(prompt_id: str) -> str:
        return prompt_id.replace("/", "__")

    prompt_wavs = vocoder.synthesize(
        [np.asarray(records[by_prompt[p]]["prompt_units"]) for p in order],
        [np.asarray(records[by_prompt[p]].get("prompt_durations", np.ones(len(records[by_prompt[p]]["prompt_units"]),
                                                                           np.int64))) for p in order],
        speakers=None if spk is None else [spk[p] for p in order], batch_size=batch_size)
    for p, wav in zip(order, prompt_wavs):
        rel = f"audio/{names(p)}.prompt.wav"
        save_audio(out / rel, wav, vocoder.sample_rate)
        for r in records:
            if r["prompt_id"] == p:
                r["prompt_audio"] = rel
    voiced = [r for r in records if r["units"]]  # an empty continuation (eos first) gets "audio": null
    wavs = vocoder.synthesize([np.asarray(r["units"], np.int64) for r in voiced],
                              speakers=None if spk is None else [spk[r["prompt_id"]] for r in voiced],
                              batch_size=batch_size, deduplicated=deduplicated)
    for r in records:
        r["audio"] = None
    for r, wav in zip(voiced, wavs):
        rel = f"audio/{names(r['prompt_id'])}.{r['sample']}.wav"
        save_audio(out / rel, wav, vocoder.sample_rate)
        r["audio"] = rel


def read_generations(path: str | Path) -> tuple[dict, list[dict]]:
    """(meta, records) of a generations directory."""
    path = Path(path)
    meta = GENERATIONS.read_dir(path, "meta.json")
    records = [json.loads(line) for line in (path / "generations.jsonl").read_text().splitlines() if line.strip()]
    return meta, records
