"""`textless build-duplex-s2s`: duplex S2S training / evaluation conversations (seed 003, sec. 4.1-4.2 and 5.2), made
offline with TTS voices or split from a dialogue set.

``source=tts``: a conversation is ``turns`` QA pairs, a user "question" and an agent "answer" (sentences of the
split's pool), each read by its voice and trimmed to its speech (`interruptions.trim_to_speech`), composed by
`interruptions.compose_duplex`: user and agent streams of equal length, the agent answering ``agent_lead`` = 0.64 s
after the user's turn ends; after an agent turn the next user turn either barges in (``barge_in_prob``; the agent
keeps ``barge_in_keep`` = 0.64 s of speech after the user's onset, then silence) or starts a gap of
``[gap_min, gap_max]`` s after the agent's end. The user voice is drawn per conversation from ``voices`` (train,
valid) or ``held_out_voices`` (test, when given: their speakers never speak in train / valid, in either role); the
agent voice is the fixed ``agent_voice`` or, when empty, drawn per conversation from ``agent_voices`` (a speaker other
than the user's). The test split also gets an ``impatient`` copy of every conversation (``impatient=true``): the same
voices, sentences and draws with the gaps before user turns halved (seed 003's "Impatient" set; `compose_duplex`
keeps the draws aligned, so the two copies differ only there).

``source=dialogues``: the conversations of a `textless build-dialogues` set (``dialogues=<dir>``), the speaker
``user_speaker`` (A, B, or ``random`` per conversation) as the user and the other as the agent
(`interruptions.split_roles`); conversation j of its manifest goes to valid when ``j % 10 == 8``, to test when
``j % 10 == 9``, else to train, at most ``num_<split>`` per split; no impatient copy (its gaps are not drawn here).

Splits: sentence j of the sorted sentence list goes to valid when ``j % 10 == 8``, to test when ``j % 10 == 9``, else
to train (`build_lslm.split_sentences`). Conversation ``i`` of split ``s`` (id ``<s>-<i:06d>``; s = 0 train, 1 valid,
2 test) takes its voices and sentences (tts) or its user speaker (dialogues, ``random``) from
``default_rng([seed, s, i, 0])`` and its barge-ins and gaps from ``default_rng([seed, s, i, 1])`` (the same
generator state for both copies): the same config gives byte-identical files however the work is split.

Output (paths in the manifest relative to ``<output>``; ``<set>`` = normal | impatient; 16 kHz 16-bit wav)::

    <set>/stereo/<id>.wav      channel 0 = user, channel 1 = agent (zeros where the role is silent)
    <set>/timelines/<id>.json  `textless.dialogue.timeline` (speakers user, agent; a segment per turn, an
                               interruption per barge-in)
    <set>/records/<id>.json    the conversation's manifest line (written last: marks it complete)
    manifest.jsonl             every complete conversation, train, valid, test (normal then impatient): id, split,
                               set, source, stereo, timeline, sample_rate, samples, seconds, agent_turns ([start,
                               end] s of every agent turn after any barge-in cut: the turn-level alignment target),
                               barge_ins, user_voice, agent_voice, texts, seed (and dialogue, user_speaker for
                               source=dialogues); `textless.dialogue.duplex_s2s_data.read_duplex_s2s` reads it
    summary.json               per split and set: conversations, barge-ins, agent turns, seconds, voices; built /
                               skipped / failed, audio and wall seconds, real-time factor, stage seconds
    run.json                   the settings (a re-run with other settings is refused)

Sharding, resume and failures as `textless build-dialogues`: rank r of W builds the conversations at positions
``p % W == r`` of the list train, valid, test (``num_workers`` processes each); every file is written atomically,
complete conversations (every set's files and record) are skipped by a re-run (``overwrite=true`` rebuilds); the rank
that finds every rank's statistics in ``.parts`` writes manifest.jsonl and summary.json; a conversation whose
synthesis (or dialogue audio) fails is reported and skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from textless.data.manifest import resolve_shard
from textless.dialogue.builder import SPEAKERS, DialogueEntry, Synthesizer, load_dialogues, load_sentences
from textless.dialogue.duplex_s2s_data import MANIFEST, SETS, SPLITS
from textless.dialogue.interruptions import (
    AGENT,
    AGENT_LEAD_SILENCE,
    BARGE_IN_KEEP,
    USER,
    DuplexConversation,
    DuplexRecipe,
    QATurn,
    compose_duplex,
    split_roles,
    trim_to_speech,
)
from textless.dialogue.timeline import Timeline, write_timeline
from textless.errors import ConfigError, TextlessError
from textless.eval.builder.job import EngineSynthesizer
from textless.eval.builder.tts import SAMPLE_RATE, SynthesisError, Voice
from textless.jobs.build_dialogues import FREE_VOICES, check_voices, parse_voice
from textless.jobs.build_lslm import split_sentences
from textless.utils.atomic import atomic_path, atomic_write_text
from textless.utils.runs import resume_or_record, run_digest
from textless.utils.shards import build_items, pooled, read_parts, write_part
from textless.utils.versioned import artifact

logger = logging.getLogger(__name__)

DUPLEX_S2S_BUILD = artifact("textless.duplex_s2s_build", 1, "a duplex S2S data build summary")
SOURCES = ("tts", "dialogues")
RANDOM_USER = "random"
# settings that do not change the output (left out of the run record)
NOT_RECORDED = ("output", "rank", "world_size", "num_workers", "progress", "overwrite")


@dataclass
class BuildDuplexS2SConfig:
    output: str = "outputs/duplex_s2s"
    source: str = "tts"                # tts (QA pairs read by TTS voices) | dialogues (a build-dialogues set)
    num_train: int = 200               # conversations per split (source=dialogues: at most)
    num_valid: int = 20
    num_test: int = 50
    turns: int = 3                     # QA pairs per conversation (source=tts)
    seed: int = 0
    voices: list[str] = field(default_factory=lambda: list(FREE_VOICES))  # user voices (engine:voice; one drawn per
                                       # conversation): train / valid, and test unless held_out_voices
    held_out_voices: list[str] = field(default_factory=list)  # test-split user voices only; their speakers are
                                       # left out of train / valid (user and agent)
    agent_voice: str = ""              # the one agent voice; empty: one drawn per conversation from agent_voices
    agent_voices: list[str] = field(default_factory=lambda: list(FREE_VOICES))
    text: str = "wordnet"              # sentences: wordnet | corpus:<split> | corpus:all | file:<path>
    min_words: int = 3                 # sentence length range (wordnet / corpus)
    max_words: int = 12
    agent_lead: float = AGENT_LEAD_SILENCE  # s from a user turn's end to the agent's answer (seed 003: 0.64)
    barge_in_prob: float = 0.3         # per agent turn followed by a user turn: the user barges in
    barge_in_keep: float = BARGE_IN_KEEP  # s of agent speech kept after the user's barge-in onset (0.64)
    barge_in_earliest: float = 0.0     # s after the agent's start: the earliest barge-in onset
    gap_min: float = 0.5               # s of silence from an agent turn's end to the next user turn
    gap_max: float = 2.0
    lead_in: float = 0.0               # s of silence before the first user turn
    tail: float = 0.0                  # s of silence after the last speech
    impatient: bool = True             # also an impatient copy of every test conversation (gaps halved; source=tts)
    dialogues: str = ""                # source=dialogues: the directory of a `textless build-dialogues` set
    user_speaker: str = "A"            # source=dialogues: the speaker (A | B | random) that becomes the user
    stretch: float = 1.0               # TTS duration stretch (< 1 speaks faster)
    rank: int | None = None            # shard of this process (default: torchrun / SLURM environment, else 0)
    world_size: int | None = None
    num_workers: int = 1               # conversations built in parallel by this rank (processes)
    progress: bool = True
    overwrite: bool = False            # rebuild every conversation of this rank (default: skip complete ones)


def recipe(cfg: BuildDuplexS2SConfig, impatient: bool = False) -> DuplexRecipe:
    """The `compose_duplex` timing of `cfg` (samples at 16 kHz)."""
    return DuplexRecipe(rate=SAMPLE_RATE, agent_lead=cfg.agent_lead, barge_in_keep=cfg.barge_in_keep,
                        barge_in_prob=cfg.barge_in_prob, barge_in_earliest=cfg.barge_in_earliest,
                        gap_min=cfg.gap_min, gap_max=cfg.gap_max, impatient=impatient, lead_in=cfg.lead_in,
                        tail=cfg.tail)


def check_config(cfg: BuildDuplexS2SConfig) -> None:
    if cfg.source not in SOURCES:
        raise ConfigError(f"source must be one of {', '.join(SOURCES)}, got {cfg.source!r}")
    counts = (cfg.num_train, cfg.num_valid, cfg.num_test)
    if min(counts) < 0 or sum(counts) < 1:
        raise ConfigError(f"num_train, num_valid and num_test must be >= 0 and not all 0, got {counts}")
    if cfg.num_workers < 1 or not cfg.stretch > 0:
        raise ConfigError(f"need num_workers >= 1 and stretch > 0, got {cfg.num_workers}, {cfg.stretch}")
    if cfg.source == "dialogues":
        if not cfg.dialogues:
            raise ConfigError("source=dialogues needs dialogues=<directory of a `textless build-dialogues` set>")
        if cfg.user_speaker not in (*SPEAKERS, RANDOM_USER):
            raise ConfigError(f"user_speaker must be one of {', '.join((*SPEAKERS, RANDOM_USER))}, got "
                              f"{cfg.user_speaker!r}")
        return
    if cfg.turns < 1:
        raise ConfigError(f"turns must be >= 1, got {cfg.turns}")
    for name in ("voices", "held_out_voices", "agent_voices"):
        voices = list(getattr(cfg, name))
        if len(set(voices)) != len(voices):
            raise ConfigError(f"{name}: a voice is listed twice: {voices}")
    if not cfg.voices:
        raise ConfigError("voices: give at least one user voice")
    if not cfg.agent_voice and not cfg.agent_voices:
        raise ConfigError("give agent_voice (one agent voice) or agent_voices (one drawn per conversation)")
    recipe(cfg).check()


# ------------------------------------------------------------------------------------------------------- sources
@dataclass
class Sources:
    """Everything a conversation is drawn from."""

    user_voices: dict[str, list[Voice]]        # split -> its user voices
    agent_voices: list[Voice]                  # the fixed agent voice alone, or the drawn ones
    sentences: dict[str, list[str]]            # split -> its sentences
    dialogues: dict[str, list[DialogueEntry]]  # source=dialogues: split -> its conversations
    dialogues_digest: str | None               # sha256 of the dialogue set's manifest


def _speakers(voices: list[Voice]) -> set[str]:
    return {v.name for v in voices}


def split_dialogues(cfg: BuildDuplexS2SConfig, entries: list[DialogueEntry]) -> dict[str, list[DialogueEntry]]:
    """Conversation j of the dialogue manifest: valid when j % 10 == 8, test when j % 10 == 9, else train; at most
    ``num_<split>`` per split."""
    out: dict[str, list[DialogueEntry]] = {s: [] for s in SPLITS}
    for j, entry in enumerate(entries):
        out["valid" if j % 10 == 8 else "test" if j % 10 == 9 else "train"].append(entry)
    limits = {"train": cfg.num_train, "valid": cfg.num_valid, "test": cfg.num_test}
    return {s: out[s][:limits[s]] for s in SPLITS}


def prepare(cfg: BuildDuplexS2SConfig, synth: Synthesizer | None, engines: bool) -> Sources:
    """Parse and probe the voices and split them (held-out speakers: test users only), read and split the sentences;
    for source=dialogues, read and split the dialogue set."""
    if cfg.source == "dialogues":
        entries = load_dialogues(cfg.dialogues)
        digest = hashlib.sha256((Path(cfg.dialogues) / "manifest.jsonl").read_bytes()).hexdigest()
        return Sources({}, [], {}, split_dialogues(cfg, entries), digest)
    assert synth is not None
    users = [parse_voice(s) for s in cfg.voices]
    held_out = [parse_voice(s) for s in cfg.held_out_voices]
    agents = [parse_voice(cfg.agent_voice)] if cfg.agent_voice else [parse_voice(s) for s in cfg.agent_voices]
    hidden = _speakers(held_out)
    seen = [v for v in users if v.name not in hidden]
    dropped = [v.spec for v in users if v.name in hidden]
    if dropped:
        logger.info(f"user voices {', '.join(dropped)} are held-out speakers: test split only")
    if not seen and cfg.num_train + cfg.num_valid > 0:
        raise ConfigError(f"voices: every voice is a held-out speaker ({', '.join(sorted(hidden))}): train and valid "
                          f"would have no user voice")
    if cfg.agent_voice and agents[0].name in hidden:
        raise ConfigError(f"agent_voice '{cfg.agent_voice}' is a held-out speaker: held-out speakers speak only as "
                          f"test users")
    agents = [v for v in agents if v.name not in hidden]
    user_voices = {"train": seen, "valid": seen, "test": held_out or seen}
    for split, voices in user_voices.items():
        for voice in voices:
            if not any(a.name != voice.name for a in agents):
                raise ConfigError(f"user voice '{voice.spec}' ({split}) has no agent voice of another speaker "
                                  f"(agent_voice / agent_voices less the held-out speakers: "
                                  f"{', '.join(a.spec for a in agents) or 'none'})")
    unique = {v.spec: v for v in [*users, *held_out, *agents]}
    check_voices(list(unique.values()), synth, engines)
    sentences = split_sentences(load_sentences(cfg.text, cfg.min_words, cfg.max_words))
    for split, count in zip(SPLITS, (cfg.num_train, cfg.num_valid, cfg.num_test)):
        if count and len(sentences[split]) < 2:
            raise ConfigError(f"text={cfg.text!r}: too few sentences for a {split} split (every 10th goes to valid "
                              f"and test; give at least 20)")
    return Sources(user_voices, agents, sentences, {}, None)


# -------------------------------------------------------------------------------------------------- conversations
def conversation_id(split: str, index: int) -> str:
    return f"{split}-{index:06d}"


def plan(cfg: BuildDuplexS2SConfig, sources: Sources) -> list[tuple[str, int]]:
    """(split, index) of every conversation: train, then valid, then test."""
    if cfg.source == "dialogues":
        counts = {s: len(sources.dialogues[s]) for s in SPLITS}
    else:
        counts = {"train": cfg.num_train, "valid": cfg.num_valid, "test": cfg.num_test}
    return [(split, i) for split in SPLITS for i in range(counts[split])]


def conversation_sets(cfg: BuildDuplexS2SConfig, split: str) -> tuple[str, ...]:
    """The sets a conversation of `split` is written in."""
    return SETS if split == "test" and cfg.impatient and cfg.source == "tts" else SETS[:1]


def conversation_paths(cid: str, which: str) -> dict[str, str]:
    """Paths of one set's copy, relative to the output directory."""
    return {"stereo": f"{which}/stereo/{cid}.wav", "timeline": f"{which}/timelines/{cid}.json",
            "record": f"{which}/records/{cid}.json"}


def read_record(output: Path, cid: str, which: str) -> dict[str, Any] | None:
    """One set's record of a conversation when all its files exist (the record is written last) and it reads."""
    paths = conversation_paths(cid, which)
    if not all((output / p).is_file() for p in paths.values()):
        return None
    try:
        record = json.loads((output / paths["record"]).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("id") == cid and record.get("set") == which else None


def is_complete(cfg: BuildDuplexS2SConfig, split: str, index: int) -> bool:
    cid = conversation_id(split, index)
    return all(read_record(Path(cfg.output), cid, s) is not None for s in conversation_sets(cfg, split))


@dataclass
class Drawn:
    """What conversation i of a split is made of (source=tts)."""

    user_voice: Voice
    agent_voice: Voice
    texts: list[tuple[str, str]]               # (question, answer) per turn


def draw(cfg: BuildDuplexS2SConfig, sources: Sources, split: str, index: int) -> Drawn:
    """Voices and sentences of a conversation from ``default_rng([seed, s, i, 0])``: the user voice, the agent voice
    (when drawn: a speaker other than the user's), then a question and an answer per turn."""
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split), index, 0])
    users = sources.user_voices[split]
    user = users[int(rng.integers(len(users)))]
    agents = [v for v in sources.agent_voices if v.name != user.name]
    agent = agents[0] if cfg.agent_voice else agents[int(rng.integers(len(agents)))]
    pool = sources.sentences[split]
    texts = [(pool[int(rng.integers(len(pool)))], pool[int(rng.integers(len(pool)))]) for _ in range(cfg.turns)]
    return Drawn(user, agent, texts)


def dialogue_agent_turns(timeline: Timeline) -> list[tuple[float, float]]:
    """The agent's turns of a split dialogue (s): its segments other than backchannels, merged while no user segment
    (other than a backchannel) starts between one's start and the next's start."""
    agent = sorted((s for s in timeline.segments if s.speaker == AGENT and s.kind != "backchannel"),
                   key=lambda s: s.start)
    onsets = [s.start for s in timeline.segments if s.speaker == USER and s.kind != "backchannel"]
    turns: list[tuple[float, float]] = []
    previous = None
    for seg in agent:
        if previous is not None and not any(previous < u <= seg.start for u in onsets):
            turns[-1] = (turns[-1][0], max(turns[-1][1], seg.end))
        else:
            turns.append((seg.start, seg.end))
        previous = seg.start
    return turns


def _write_wav(path: Path, stereo: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        sf.write(tmp, stereo.T, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def _write(output: Path, cid: str, which: str, conv: DuplexConversation, record: dict[str, Any]) -> None:
    """One set's files; the record last."""
    paths = conversation_paths(cid, which)
    _write_wav(output / paths["stereo"], conv.stereo)
    write_timeline(output / paths["timeline"], conv.timeline)
    atomic_write_text(output / paths["record"], json.dumps(record) + "\n")


def _record(cid: str, split: str, which: str, source: str, conv: DuplexConversation,
            agent_turns: list[tuple[float, float]], barge_ins: int, user_voice: str | None, agent_voice: str | None,
            seed: list[int], **extra: Any) -> dict[str, Any]:
    paths = conversation_paths(cid, which)
    samples = len(conv.user)
    return {"id": cid, "split": split, "set": which, "source": source, "stereo": paths["stereo"],
            "timeline": paths["timeline"], "sample_rate": SAMPLE_RATE, "samples": samples,
            "seconds": samples / SAMPLE_RATE, "agent_turns": [list(t) for t in agent_turns], "barge_ins": barge_ins,
            "user_voice": user_voice, "agent_voice": agent_voice, **extra, "seed": seed}


class DialogueError(TextlessError):
    """A conversation of the dialogue set that cannot be used (its audio or timeline)."""


def _from_dialogue(cfg: BuildDuplexS2SConfig, entry: DialogueEntry, cid: str,
                   rng: np.random.Generator) -> tuple[DuplexConversation, str]:
    """(the user / agent conversation, the user's speaker name) of one dialogue."""
    try:
        audio, timeline = entry.audio(), entry.timeline()
    except (OSError, RuntimeError, KeyError, TextlessError) as err:
        raise DialogueError(f"dialogue {entry.id}: {err}") from None
    if entry.record.get("sample_rate") != SAMPLE_RATE:
        raise DialogueError(f"dialogue {entry.id}: sample rate {entry.record.get('sample_rate')} Hz, expected "
                            f"{SAMPLE_RATE} Hz")
    user = SPEAKERS[int(rng.integers(2))] if cfg.user_speaker == RANDOM_USER else cfg.user_speaker
    try:
        conv = split_roles(audio, timeline, user)
    except ValueError as err:
        raise DialogueError(f"dialogue {entry.id}: {err}") from None
    conv.timeline = dataclasses.replace(conv.timeline, conversation_id=cid)
    return conv, user


def build_one(cfg: BuildDuplexS2SConfig, sources: Sources, synth: Synthesizer | None, split: str,
              index: int) -> dict[str, Any]:
    """Build and write conversation `index` of `split` (every set): ``{"id", "audio_seconds", "stages"}``, or
    ``{"id", "error"}`` when a synthesis or the dialogue failed (nothing of it is written then)."""
    cid, code = conversation_id(split, index), SPLITS.index(split)
    output = Path(cfg.output)
    seed = [cfg.seed, code, index]
    start = time.perf_counter()
    if cfg.source == "dialogues":
        entry = sources.dialogues[split][index]
        try:
            conv, user = _from_dialogue(cfg, entry, cid, np.random.default_rng([*seed, 0]))
        except DialogueError as err:
            return {"id": cid, "error": f"{type(err).__name__}: {err}"}
        read = time.perf_counter()
        voices = entry.record.get("speakers") or {}
        other = SPEAKERS[1 - SPEAKERS.index(user)]
        barge_ins = sum(i.interrupter == USER and i.interrupted == AGENT and not i.ignored
                        for i in conv.timeline.interruptions)
        record = _record(cid, split, "normal", cfg.source, conv, dialogue_agent_turns(conv.timeline), barge_ins,
                         voices.get(user), voices.get(other), seed, dialogue=entry.id, user_speaker=user)
        _write(output, cid, "normal", conv, record)
        return {"id": cid, "audio_seconds": record["seconds"],
                "stages": {"read": read - start, "write": time.perf_counter() - read}}
    assert synth is not None
    drawn = draw(cfg, sources, split, index)
    turns = []
    try:
        for question, answer in drawn.texts:
            clips = []
            for voice, text in ((drawn.user_voice, question), (drawn.agent_voice, answer)):
                try:
                    clips.append(trim_to_speech(synth.text(voice, text)))
                except (SynthesisError, OSError) as err:
                    raise SynthesisError(f"{text!r} by {voice.spec}: {err}") from None
            turns.append(QATurn(clips[0], clips[1], question, answer))
        spoken = time.perf_counter()
        copies = {}
        for which in conversation_sets(cfg, split):
            try:
                copies[which] = compose_duplex(turns, recipe(cfg, which == "impatient"),
                                               np.random.default_rng([*seed, 1]), conversation_id=cid)
            except ValueError as err:
                raise SynthesisError(f"cannot compose: {err}") from None
    except SynthesisError as err:
        return {"id": cid, "error": f"{type(err).__name__}: {err}",
                "voices": [drawn.user_voice.spec, drawn.agent_voice.spec]}
    composed = time.perf_counter()
    audio = 0.0
    for which, conv in copies.items():
        agent_turns = [(t.agent_start / SAMPLE_RATE, t.agent_end / SAMPLE_RATE) for t in conv.turns]
        barge_ins = sum(t.barge_in is not None for t in conv.turns)
        record = _record(cid, split, which, cfg.source, conv, agent_turns, barge_ins, drawn.user_voice.spec,
                         drawn.agent_voice.spec, seed, texts=[list(t) for t in drawn.texts])
        _write(output, cid, which, conv, record)
        audio += record["seconds"]
    return {"id": cid, "audio_seconds": audio,
            "stages": {"synthesis": spoken - start, "compose": composed - spoken,
                       "write": time.perf_counter() - composed}}


# ----------------------------------------------------------------------------------------------------------- job
def build_duplex_s2s(cfg: BuildDuplexS2SConfig, synth: Synthesizer | None = None) -> dict[str, Any]:
    """Build this rank's conversations of `cfg` (skipping complete ones) and, when every rank of this run is done,
    write manifest.jsonl and summary.json; returns the summary (this rank's, when another rank merges). `synth`: the
    TTS (default: the offline engines, each voice checked to be installed; not used for source=dialogues)."""
    wall_start = time.perf_counter()
    check_config(cfg)
    rank, world = resolve_shard(cfg.rank, cfg.world_size)
    engines = synth is None
    if cfg.source == "tts":
        synth = synth or EngineSynthesizer(cfg.stretch, 0.0)
    tick = time.perf_counter()
    sources = prepare(cfg, synth, engines)
    stages = {"prepare": time.perf_counter() - tick}
    output = Path(cfg.output)
    started_with = {k: v for k, v in asdict(cfg).items() if k not in NOT_RECORDED}
    if sources.dialogues_digest is not None:
        started_with["dialogues_manifest_sha256"] = sources.dialogues_digest
    resume_or_record(output, started_with, what=f"the duplex S2S set {output}",
                     how_to_restart="or pass overwrite=true to rebuild it, or give another output",
                     restart=cfg.overwrite)
    mine = [item for position, item in enumerate(plan(cfg, sources)) if position % world == rank]
    todo = [item for item in mine if cfg.overwrite or not is_complete(cfg, *item)]
    logger.info(f"rank {rank}/{world}: {len(todo)} of {len(mine)} conversations to build ({len(mine) - len(todo)} "
                f"complete), source {cfg.source}")
    results = build_items(build_one, (cfg, sources, synth), todo, num_workers=cfg.num_workers, desc="duplex-s2s",
                          unit="conv", progress=cfg.progress)
    digest = run_digest(started_with)
    part = write_part(output, rank, world, digest, results, len(mine) - len(todo), wall_start, stages)
    merged = merge(cfg, sources, world, digest)
    return merged if merged is not None else part


def _set_summary(planned: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    turns = sum(len(r["agent_turns"]) for r in records)
    changes = sum(max(len(r["agent_turns"]) - 1, 0) for r in records)   # agent turns followed by a user turn
    return {"conversations": planned, "complete": len(records),
            "barge_ins": sum(r["barge_ins"] for r in records), "agent_turns": turns,
            "barge_in_fraction": round(sum(r["barge_ins"] for r in records) / changes, 4) if changes else None,
            "seconds": round(sum(r["seconds"] for r in records), 3),
            "user_voices": sorted({r["user_voice"] for r in records if r["user_voice"]}),
            "agent_voices": sorted({r["agent_voice"] for r in records if r["agent_voice"]})}


def merge(cfg: BuildDuplexS2SConfig, sources: Sources, world: int, digest: str) -> dict[str, Any] | None:
    """Write manifest.jsonl (every complete conversation) and summary.json when every rank's statistics of this run
    (`digest`) are in ``.parts``; None when some rank is not done."""
    output = Path(cfg.output)
    parts = read_parts(output, world, digest, output / MANIFEST)
    if parts is None:
        return None
    items = plan(cfg, sources)
    records = [r for split, i in items if is_complete(cfg, split, i) for which in conversation_sets(cfg, split)
               if (r := read_record(output, conversation_id(split, i), which)) is not None]
    atomic_write_text(output / MANIFEST, "".join(json.dumps(r) + "\n" for r in records))
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        planned = sum(s == split for s, _ in items)
        sets = conversation_sets(cfg, split)
        splits[split] = {which: _set_summary(planned, [r for r in records if r["split"] == split
                                                            and r["set"] == which]) for which in sets}
    summary = {**DUPLEX_S2S_BUILD.header(), "config": asdict(cfg), "world_size": world, "source": cfg.source,
               "splits": splits, "conversations": len(items), "complete": sum(is_complete(cfg, *i) for i in items),
               "records": len(records), **pooled(parts, sum(r["seconds"] for r in records))}
    DUPLEX_S2S_BUILD.write_json(output / "summary.json", summary)
    logger.info(f"wrote {output}: {summary['complete']} of {len(items)} conversations ({len(records)} records with "
                f"the impatient copies), {summary['total_audio_seconds']:.1f} s; this run built "
                f"{summary['audio_seconds']:.1f} s in {summary['wall_seconds']:.1f} s (real-time factor "
                f"{summary['real_time_factor']})")
    return summary
