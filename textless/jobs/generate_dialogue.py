"""`textless generate-dialogue`: continue two-channel conversations with a dGSLM and write them as a dialogue dataset.

Prompts are a two-channel unit dataset (``prompts=<dir>``, `textless.dialogue.data`) whose units must fit the model
(`DGSLM.check_units`). Each conversation's first ``prompt_seconds`` (``round(seconds x frame_rate)`` frames, at most
the whole conversation; 0: unconditional) is the prompt. The anchors give no prompt length for the paper's
turn-taking evaluation; 10 s (500 frames at 50 Hz, the length fairseq's ``sample_speech_dlm.py`` generates) is the
default. ``num_samples`` continuations of ``max_frames`` frames per prompt are sampled with
`textless.dialogue.dgslm.generate.generate_dialogue` (fairseq's duration counters; sampling keys as in
`DialogueSamplingConfig`). ``teacher_force=A`` (or ``B``) feeds that channel the conversation's recorded frames after
the prompt and generates only the other one; the continuation then stops where the recording does (at most
``max_frames``). Generation ``(conversation c, sample k)`` draws from the seed ``seed + c x num_samples + k``, so
its result depends neither on ``batch_size`` nor on which generations a resumed run still has to do.

Output (published atomically at the end): a two-channel unit dataset (``read_dialogues``) with one conversation per
generation, id ``<conversation id>/<k>``, units = prompt + continuation, the conversation's speakers carried over;
meta.json ``extra.generation`` records the model, prompts, sampling, teacher forcing and ``prompt_frames`` (per id:
where its continuation starts). Also ``generation.json``: the settings, the generations' ids and the per-item
failures (a conversation too long for the model, nothing recorded to teacher-force, a vocoder error), which are
reported and skipped while the rest completes.

Audio (``vocoder=<dir>``, any `load_vocoder` format, or ``starter``): ``audio/<id with / as __>.wav``, stereo at the
vocoder's rate, channel 0 = channel A; each channel voiced separately from its frame-level units. A multi-speaker
vocoder voices channel A and B with ``speakers=[a, b]`` (names or ids) if given, else with the conversation's two
speakers when the vocoder knows both names, else with speaker ids 0 and 1 (fairseq's dGSLM demo uses two fixed
speakers too); a single-speaker vocoder gives both channels its one voice.

Turn-taking statistics (``reference=<two-channel unit dataset>``): the continuations (prompt frames excluded) and the
reference's conversations go through `textless.dialogue.stats.stats_from_units` with the silence units
(``silence_units=[...]``, or those learned for ``units_tokenizer``, which must be the tokenizer that made the units;
when neither is available the statistics are skipped with a warning), `compare` gives the dGSLM table: written to
``stats.json`` with ``timelines.png`` / ``durations.png`` (`textless.dialogue.plots`) and printed.

Resume. Generations are journalled in ``<output>.parts/`` (one line per finished batch, audio files beside it) with
a record of what the run was started with (model weights, prompts, sampling, teacher forcing, vocoder, speakers;
`textless.utils.runs`); a re-run with the same command skips what is done, another one is refused with the
differences (``restart=true`` discards the partial run).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from textless.dialogue.data import CHANNELS, Dialogue, DialogueDataset, dialogue_meta, read_dialogues, write_dialogues
from textless.dialogue.dgslm.generate import DialogueSamplingConfig, generate_dialogue
from textless.dialogue.dgslm.loader import load_dialogue_lm
from textless.errors import ConfigError, TextlessError
from textless.utils.atomic import atomic_directory, atomic_write_text
from textless.utils.runs import Journal, module_fingerprint, parts_dir, resume_or_record

logger = logging.getLogger(__name__)

TEACHER_FORCE = ("none", "A", "B")


@dataclass
class GenerateDialogueConfig:
    model: str = ""                    # dGSLM directory, or a fairseq SpeechDLM .pt with dict.unitA/B.txt beside it
    prompts: str = ""                  # two-channel unit dataset of conversations (the prompts)
    prompt_seconds: float = 10.0       # the first N seconds of each conversation are the prompt (0: unconditional)
    max_prompts: int | None = None     # only the first N conversations
    teacher_force: str = "none"        # none | A | B: feed that channel its recorded frames, generate the other
    output: str = "outputs/dialogues"  # a two-channel unit dataset of the generations (+ audio/, stats.json)
    temperature: float = 1.0           # unit logits divided by it (0: greedy); fairseq's dGSLM default 1
    top_k: int | None = None
    top_p: float | None = None
    duration_temperature: float = 1.0  # predicted run durations divided by it (> 1: faster speech)
    max_frames: int = 500              # new frames per generation (500 = 10 s at 50 Hz)
    num_samples: int = 1               # generations per prompt
    seed: int = 123                    # generation (c, k) draws from seed + c * num_samples + k
    batch_size: int = 8                # generations run together (and journalled together); no effect on results
    use_cache: bool = True             # streaming KV cache (false: recompute every step, slow; same tokens)
    vocoder: str | None = None         # stereo wav per generation (textless / fairseq / speechbrain vocoder, starter)
    speakers: list[str] | None = None  # multi-speaker vocoder: voices of channel A and B (names or ids)
    trust_pickle: bool = False         # allow a fairseq vocoder checkpoint that pickles more than tensors
    reference: str | None = None       # two-channel unit dataset: turn-taking statistics of the generations vs it
    silence_units: list[int] = field(default_factory=list)  # units of frames without speech (default: learned
                                                            # for units_tokenizer)
    units_tokenizer: str = "starter"   # the SpeechTokenizer bundle that made the units (to learn silence units)
    min_silence: float = 0.2           # seconds of silence that bound an IPU (dGSLM's 200 ms)
    max_plots: int = 8                 # conversations drawn in timelines.png (0: no plots)
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False
    restart: bool = False              # discard a partial run in <output>.parts instead of resuming it


@dataclass
class Item:
    """One generation to make: conversation `index` (its units [2, T]), sample `sample`, prompt frames, N frames."""

    id: str
    index: int
    sample: int
    dialogue: Dialogue
    prompt_frames: int
    frames: int
    seed: int


def sampling_config(cfg: GenerateDialogueConfig) -> DialogueSamplingConfig:
    return DialogueSamplingConfig(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                  duration_temperature=cfg.duration_temperature, max_frames=cfg.max_frames,
                                  seed=cfg.seed)


def _check(cfg: GenerateDialogueConfig) -> None:
    problems = []
    if not cfg.model or not cfg.prompts:
        problems.append("generate-dialogue needs model=<dGSLM directory> and prompts=<two-channel unit dataset>")
    if cfg.teacher_force not in TEACHER_FORCE:
        problems.append(f"teacher_force must be one of {', '.join(TEACHER_FORCE)}, got {cfg.teacher_force!r}")
    if cfg.prompt_seconds < 0 or cfg.num_samples < 1 or cfg.batch_size < 1:
        problems.append("need prompt_seconds >= 0, num_samples >= 1 and batch_size >= 1")
    if cfg.speakers is not None and len(cfg.speakers) != len(CHANNELS):
        problems.append(f"speakers= needs one voice per channel ([a, b]), got {cfg.speakers}")
    if problems:
        raise ConfigError("; ".join(problems))


def plan(cfg: GenerateDialogueConfig, dataset: DialogueDataset, max_positions: int) -> tuple[list[Item], list[dict]]:
    """(the generations to make, the failures found before generating: {"id", "error"})."""
    rate = float(dataset.meta.frame_rate)
    prompt_frames = round(cfg.prompt_seconds * rate)
    items, failures = [], []
    for c, dialogue in enumerate(dataset[: cfg.max_prompts] if cfg.max_prompts is not None else dataset):
        p = min(prompt_frames, dialogue.num_frames)
        n = cfg.max_frames if cfg.teacher_force == "none" else min(cfg.max_frames, dialogue.num_frames - p)
        for k in range(cfg.num_samples):
            gen_id = f"{dialogue.id}/{k}"
            error = None
            if p + n == 0:
                error = "nothing to generate (an empty prompt and max_frames=0)"
            elif cfg.teacher_force != "none" and n <= 0:
                error = (f"nothing recorded after the {p / rate:g} s prompt to teacher-force channel "
                         f"{cfg.teacher_force} with")
            elif p + n > max_positions:
                error = (f"{p} prompt frames + {n} new ones exceed the model's {max_positions} positions (lower "
                         f"prompt_seconds or max_frames)")
            if error:
                failures.append({"id": gen_id, "error": error})
            else:
                items.append(Item(gen_id, c, k, dialogue, p, n, cfg.seed + c * cfg.num_samples + k))
    return items, failures


def _force(cfg: GenerateDialogueConfig, item: Item) -> np.ndarray | None:
    if cfg.teacher_force == "none":
        return None
    force = np.full((len(CHANNELS), item.frames), -1, dtype=np.int64)
    c = CHANNELS.index(cfg.teacher_force)
    force[c] = item.dialogue.units[c, item.prompt_frames:item.prompt_frames + item.frames]
    return force


def prompts_fingerprint(items: list[Item]) -> str:
    """A hash of what the generations are conditioned on: ids, prompt frames and units."""
    digest = hashlib.blake2b(digest_size=8)
    for item in items:
        digest.update(f"{item.id}\0{item.prompt_frames}\0{item.frames}\0".encode())
        digest.update(np.ascontiguousarray(item.dialogue.units, dtype="<i8").tobytes())
    return digest.hexdigest()


def _batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def generate_dialogues(cfg: GenerateDialogueConfig) -> Path:
    """Generate (see the module docstring); returns the output directory."""
    _check(cfg)
    output = Path(cfg.output)
    if output.exists() and not cfg.overwrite:
        raise TextlessError(f"output '{output}' already exists (overwrite=true to replace it)")
    sampling = sampling_config(cfg)
    model = load_dialogue_lm(cfg.model, device=cfg.device)
    dataset = read_dialogues(cfg.prompts)
    if len(dataset.channels) != len(CHANNELS):
        raise ConfigError(f"prompts '{cfg.prompts}' have {len(dataset.channels)} channels; dGSLM takes 2")
    model.check_units(dataset.meta.identity, where=f"prompts '{cfg.prompts}'")
    items, failures = plan(cfg, dataset, model.config.max_positions)
    vocoder = _load_vocoder(cfg, dataset)
    reference = read_dialogues(cfg.reference) if cfg.reference else None  # a bad reference fails before generating
    parts = parts_dir(output)
    if cfg.restart and parts.exists():
        logger.info(f"restart=true: discarding the partial run in {parts}")
        shutil.rmtree(parts)
    started_with = {"model": module_fingerprint(model), "prompts": prompts_fingerprint(items),
                    "sampling": asdict(sampling), "teacher_force": cfg.teacher_force,
                    "vocoder": None if vocoder is None else module_fingerprint(vocoder.generator),
                    "speakers": cfg.speakers}
    resume_or_record(parts, started_with, what=f"the partial generation in {parts}",
                     how_to_restart="or pass restart=true to discard it and start over")
    journal = Journal(parts / "generations.jsonl")
    done = {r["id"]: r for batch in journal.read() for r in batch["records"]}
    todo = [item for item in items if item.id not in done]
    if done:
        logger.info(f"resuming {parts}: {len(done)} of {len(items)} generations already done")
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="dialogue", desc="generate-dialogue",
               disable=not cfg.progress)
    for batch in _batches(todo, cfg.batch_size):
        units = generate_dialogue(model, [item.dialogue.units[:, :item.prompt_frames] for item in batch],
                                  force=[_force(cfg, item) for item in batch], sampling=sampling,
                                  frames=[item.frames for item in batch], seeds=[item.seed for item in batch],
                                  batch_size=cfg.batch_size, use_cache=cfg.use_cache)
        records = [{"id": item.id, "conversation": item.dialogue.id, "sample": item.sample,
                    "prompt_frames": item.prompt_frames, "units": u.tolist(),
                    "speakers": None if item.dialogue.speakers is None else list(item.dialogue.speakers),
                    "audio": None} for item, u in zip(batch, units, strict=True)]
        if vocoder is not None:
            _write_audio(cfg, vocoder, records, parts)
        journal.add([{"records": records}])
        done.update((r["id"], r) for r in records)
        bar.update(len(batch))
    bar.close()
    records = [done[item.id] for item in items]
    failures += [{"id": r["id"], "error": r["audio_error"]} for r in records if r.get("audio_error")]
    for failure in failures:
        logger.warning(f"generate-dialogue: {failure['id']}: {failure['error']}")
    meta = dialogue_meta(dataset.meta, dataset.channels, extra={"generation": {
        "model": str(cfg.model), "prompts": str(cfg.prompts), "sampling": asdict(sampling),
        "teacher_force": cfg.teacher_force, "prompt_seconds": cfg.prompt_seconds,
        "prompt_frames": {r["id"]: r["prompt_frames"] for r in records}}})
    generated = [Dialogue(r["id"], np.asarray(r["units"], dtype=np.int64),
                          tuple(r["speakers"]) if r["speakers"] else None) for r in records]
    write_dialogues(parts / "dataset", generated, meta, overwrite=True)
    with atomic_directory(output, overwrite=cfg.overwrite) as tmp:
        shutil.copytree(parts / "dataset", tmp, dirs_exist_ok=True)
        if (parts / "audio").is_dir():  # hard links: the journal stays whole until the output is published
            shutil.copytree(parts / "audio", tmp / "audio", copy_function=os.link)
        summary = {"config": asdict(cfg), "generations": [r["id"] for r in records],
                   "audio": {r["id"]: r["audio"] for r in records if r["audio"]}, "failures": failures}
        (tmp / "generation.json").write_text(json.dumps(summary, indent=1) + "\n")
        if reference is not None:
            _turn_taking(cfg, read_dialogues(tmp), reference, tmp)
    shutil.rmtree(parts, ignore_errors=True)
    logger.info(f"wrote {output}: {len(records)} generations of {len({i.index for i in items})} conversations"
                + (f", {len(failures)} failures" if failures else ""))
    return output


# ---------------------------------------------------------------------------------------------------------- audio
def _load_vocoder(cfg: GenerateDialogueConfig, dataset: DialogueDataset):
    if not cfg.vocoder:
        return None
    from textless.vocoders import load_vocoder

    vocoder = load_vocoder(cfg.vocoder, device=cfg.device, trust_pickle=cfg.trust_pickle)
    vocoder.check_units(dataset.meta.identity, where=f"prompts '{cfg.prompts}'", name=f"the vocoder '{cfg.vocoder}'")
    if vocoder.config.multispkr and vocoder.config.speaker_input != "id":
        raise ConfigError(f"vocoder '{cfg.vocoder}' takes speaker vectors; generate-dialogue voices channels with "
                          "speaker ids (a vocoder with a speaker table, or a single-speaker one)")
    if cfg.speakers is not None:
        if not vocoder.config.multispkr:
            raise ConfigError(f"speakers= needs a multi-speaker vocoder; '{cfg.vocoder}' has one voice")
        for s in cfg.speakers:
            vocoder.speaker_id(_as_id(s))  # an unknown name fails before generating
    return vocoder


def channel_speakers(cfg: GenerateDialogueConfig, vocoder, conversation_speakers: list[str] | None
                     ) -> list[int] | None:
    """The vocoder speaker ids of channels A and B (None: a single-speaker vocoder); see the module docstring."""
    if not vocoder.config.multispkr:
        return None
    if cfg.speakers is not None:
        return [vocoder.speaker_id(_as_id(s)) for s in cfg.speakers]
    names = vocoder.config.speakers or []
    if conversation_speakers and all(s in names for s in conversation_speakers):
        return [names.index(s) for s in conversation_speakers]
    return [0, min(1, vocoder.config.num_speakers - 1)]


def _as_id(speaker: str | int) -> str | int:
    """A speakers= entry: an int id given as text ("3") becomes the int, a name stays."""
    return int(speaker) if isinstance(speaker, str) and speaker.isdigit() else speaker


def stereo(vocoder, units: np.ndarray, speakers: list[int] | None) -> np.ndarray:
    """Frame-level units [2, T] -> float32 [2, T * hop] at the vocoder's rate, row c = channel c voiced alone."""
    wavs = vocoder.synthesize([units[0], units[1]], speakers=speakers, deduplicated=False)
    return np.stack(wavs)


def _write_audio(cfg: GenerateDialogueConfig, vocoder, records: list[dict], parts: Path) -> None:
    from textless.audio import save_audio

    (parts / "audio").mkdir(exist_ok=True)
    for r in records:
        rel = f"audio/{r['id'].replace('/', '__')}.wav"
        try:
            wav = stereo(vocoder, np.asarray(r["units"], dtype=np.int64),
                         channel_speakers(cfg, vocoder, r["speakers"]))
            save_audio(parts / rel, wav, vocoder.sample_rate)
            r["audio"] = rel
        except (TextlessError, ValueError, OSError) as e:
            r["audio_error"] = f"audio: {e}"


# ------------------------------------------------------------------------------------------------- turn taking
@dataclass
class _Continuations:
    """The generations without their prompt frames, as `stats_from_units` reads a dataset (meta, iteration)."""

    meta: object
    dialogues: list[Dialogue]

    def __iter__(self) -> Iterator[Dialogue]:
        return iter(self.dialogues)


def continuations(generated: DialogueDataset) -> _Continuations:
    prompt_frames = generated.meta.extra["generation"]["prompt_frames"]
    return _Continuations(generated.meta, [Dialogue(d.id, d.units[:, prompt_frames[d.id]:], d.speakers)
                                           for d in generated if d.num_frames > prompt_frames[d.id]])


def _silence_units(cfg: GenerateDialogueConfig, tokenizer: dict) -> list[int] | None:
    if cfg.silence_units:
        return [int(u) for u in cfg.silence_units]
    from textless.dialogue.vad import silence_units_of

    try:
        return sorted(silence_units_of(cfg.units_tokenizer, tokenizer))
    except (TextlessError, OSError) as e:
        logger.warning(f"generate-dialogue: no turn-taking statistics (no silence units: {e}); pass "
                       "silence_units=[...]")
        return None


def _turn_taking(cfg: GenerateDialogueConfig, generated: DialogueDataset, reference_data: DialogueDataset,
                 out: Path) -> dict | None:
    """stats.json (+ plots) of the continuations against the reference; None when there are no silence units."""
    from textless.dialogue.stats import compare, comparison_table, stats_from_units, stats_table
    from textless.utils.table import format_table

    silence = _silence_units(cfg, generated.meta.tokenizer)
    if silence is None:
        return None
    report = stats_from_units(continuations(generated), silence, cfg.min_silence)
    reference = stats_from_units(reference_data, silence, cfg.min_silence)
    comparison = compare(reference, report)
    result = {"generated": str(cfg.output), "reference_input": cfg.reference, "silence_units": silence,
              "scope": "continuations (prompt frames excluded) vs the reference's whole conversations",
              "corpus": report.to_dict(), "reference": reference.to_dict(), "comparison": comparison.to_dict(),
              "plots": []}
    if cfg.max_plots > 0:
        from textless.dialogue.plots import plot_duration_histograms, plot_timelines

        plot_timelines(report.conversations, out / "timelines.png", cfg.max_plots, cfg.min_silence)
        plot_duration_histograms(report, out / "durations.png", reference)
        result["plots"] = ["timelines.png", "durations.png"]
    atomic_write_text(out / "stats.json", json.dumps(result, indent=1) + "\n")
    print(f"generations: {len(report.conversations)} continuations, {report.minutes:.2f} minutes")
    print(format_table(*stats_table(report)))
    print(f"\nagainst {cfg.reference}: {len(reference.conversations)} conversations, {reference.minutes:.2f} minutes")
    print(format_table(*comparison_table(comparison)))
    return result
