"""The duplex comparison no anchor has run: native fusion vs fixed-chunk TDM vs model-controlled TDM vs dGSLM, on the
same synthetic two-channel data and budget.

    python -m experiments.duplex.run            # after `python -m experiments.dgslm.run`; every stage resumes
    python -m experiments.duplex.run --quick    # end-to-end smoke run on a tiny copy of the data (see --quick)

About 25-35 min on 2 CPU cores, most of it training (measured with one thread while another job used the other
core: 0.5 s per step native, 1.2-1.5 s per step TDM). Give ``--threads 1`` when another job shares the cores: two
jobs of two threads each on two cores ran this 10x slower.

Data and dGSLM: the dGSLM experiment's (``--dgslm-work``, default outputs/dgslm_experiment: its train / valid
two-channel unit datasets of synthetic conversations tokenized by the starter tokenizer, their builder timelines, and
its trained dGSLM ``dgslm/final``); nothing there is written. Cases of (3) also use ``--case-conversations`` extra
held-out conversations built here with another seed (the 4 held-out conversations hold only ~5 interruptions).

Models (``--work``, default outputs/duplex_experiment): three `DuplexLM`s trained by `train_duplex` from the CPU recipe
(train-duplex-cpu) on the same train split, each for ``--train-steps`` steps (default 400, as the dGSLM) of the same
frames as the dGSLM: 4 examples of 500 frames per step, an example being one (window, speak channel), where the dGSLM
takes 2 windows x 2 channels; the same-size backbone (Llama d 128, 4 layers, 4 heads, FFN 512, as the CPU dGSLM's d 128
/ 4 layers / FFN 512; parameter counts in the JSON): native ``listen_speak`` fusion, fixed TDM (chunks of 8 frames =
160 ms) and controlled TDM (the model says [speak] / [listen] per chunk). Cosine lr 3e-3 (the CPU recipe) with the
dGSLM run's 100 warmup steps. Attention window: the training window (native 499 frames, TDM 1126 tokens = one
500-frame window), so generation past 10 s is the sliding window the models were trained for; the dGSLM has absolute
positions and sees the whole clip (positions past 500 were never trained).

Measured on the held-out split:
1. NLL. `evaluate_duplex_lm` ``frame_nll`` (nats per speak frame) of the three duplex models on every 500-frame window
   x speak channel; the dGSLM's own `evaluate_dialogue_lm` edge NLL (nats per run start, the quantity it is trained
   on); and, to put them side by side honestly, an edge-conditional NLL on identical frames for native, fixed TDM and
   dGSLM (see `edge_nll`). No per-frame NLL for the dGSLM: its run lengths come from a duration regression (a point
   estimate, not a distribution), so it assigns no likelihood to a frame sequence.
2. Turn-taking. Each system hears channel A of a held-out conversation (the recording) and generates channel B for
   ``--continue-seconds`` after a ``--prompt-seconds`` prompt of both channels (rounded down to whole TDM chunks);
   ``--samples`` samples (temperature 1). IPUs / pauses / gaps / overlaps per minute of the continuations (unit VAD
   with the starter silence units, the 200 ms rule, as experiments/dgslm/run.py) against the recording's same span.
3. Full-Duplex-Bench-style cases cut from held-out timelines (`find_cases`), the model taking either channel's role:
   a prompt of ``--prompt-seconds`` before the event, then ``--case-seconds`` generated while the user channel plays
   the recording. TOR here is from the model's unit-VAD speech only: TOR 1 iff its speech in the scored window spans
   >= 1 s (Full-Duplex-Bench also calls a short output with > 3 words a turn, and no words at all TOR 0: without ASR
   neither can be checked, so babble counts as speech). Latencies in frames as aligned with the user, plus TDM's
   algorithmic wait (a chunk's frames come out when the chunk is complete).

Writes ``benchmarks/results/duplex_experiment.json`` (+ ``.png``: one continuation per system) via
`benchmarks.tokenize_kernels.write_results`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
KINDS = ("ipu", "pause", "gap", "overlap")
DUPLEX = {  # name -> train-duplex overrides
    "native": ["format=native", "layout=listen_speak"],
    "tdm_fixed": ["format=tdm", "controlled=false"],
    "tdm_controlled": ["format=tdm", "controlled=true"],
}
SYSTEMS = (*DUPLEX, "dgslm")
BACKBONE = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
            "intermediate_size": 512}
CASE_KINDS = ("pause", "backchannel", "listen_backchannel", "turn_taking", "interruption")


class Missing(Exception):
    """An input of the dGSLM experiment is not there."""


def log(message: str) -> None:
    print(f"[duplex {time.strftime('%H:%M:%S')}] {message}", flush=True)


def cached(path: Path, make):
    """JSON at `path`, made by `make()` (with its wall time under "seconds") when missing."""
    if path.is_file():
        return json.loads(path.read_text())
    start = time.perf_counter()
    value = make()
    value["seconds"] = round(time.perf_counter() - start, 1)
    from textless.utils.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(value, indent=1) + "\n")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------------------


def dgslm_inputs(dgslm_work: Path) -> dict[str, Path]:
    paths = {"train": dgslm_work / "train", "valid": dgslm_work / "valid",
             "timelines": dgslm_work / "dialogues" / "timelines", "dgslm": dgslm_work / "dgslm" / "final"}
    missing = [f"{k} ({p})" for k, p in paths.items() if not p.exists()]
    if missing:
        raise Missing(f"the dGSLM experiment's outputs are missing: {', '.join(missing)}. Run `python -m "
                      f"experiments.dgslm.run` first (or pass --dgslm-work); this experiment reuses its data and its "
                      f"trained dGSLM")
    return paths


def case_data(args, work: Path) -> tuple[Path, Path] | None:
    """Extra held-out conversations for the cases (units, timelines), built with another seed; None if not asked."""
    if args.case_conversations <= 0:
        return None
    from textless.jobs.build_dialogues import BuildDialoguesConfig, build_dialogues
    from textless.jobs.tokenize import TokenizeConfig, tokenize_dataset

    audio, units = work / "case_dialogues", work / "case_units"
    if not (audio / "summary.json").is_file():
        log(f"building {args.case_conversations} extra held-out conversations for the cases")
        build_dialogues(BuildDialoguesConfig(output=str(audio), num_conversations=args.case_conversations,
                                             seconds=args.seconds, seed=args.seed + 1000, mono=False, progress=False))
    if not units.is_dir():
        tokenize_dataset(TokenizeConfig(dataset=str(audio / "manifest.jsonl"), tokenizer="starter",
                                        output=str(units), dialogues=True, progress=False))
    return units, audio / "timelines"


# ---------------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------------


def tdm_tokens(frames: int, chunk: int) -> int:
    """Tokens of a fixed-TDM window of `frames` frames: <bos>, then per chunk <listen> L <speak> S."""
    return 1 + 2 * frames + 2 * math.ceil(frames / chunk)


def train_duplex_models(args, work: Path, train: Path) -> dict[str, Path]:
    from textless.config import compose
    from textless.dialogue.duplex.train import DuplexTrainConfig, train_duplex

    out = {}
    for name, overrides in DUPLEX.items():
        directory = work / name
        final = directory / "final"
        timing = directory / "timing.json"
        if final.is_dir() and timing.is_file() and json.loads(timing.read_text())["steps"] != args.train_steps:
            raise Missing(f"{final} was trained for {json.loads(timing.read_text())['steps']} steps, not "
                          f"{args.train_steps}: use another --work")
        if not final.is_dir():
            tdm = name.startswith("tdm")
            model_context = tdm_tokens(args.context, args.chunk_frames) - 1 if tdm else args.context - 1
            cfg = compose(DuplexTrainConfig, "train-duplex", [
                f"train_dataset={train}", f"output_dir={directory}", "backbone=tiny",
                *[f"+model.{k}={v}" for k, v in BACKBONE.items()], *overrides,
                f"chunk_frames={args.chunk_frames}", f"model_context={model_context}", f"context={args.context}",
                "batch_size=4", "grad_accum=1", f"max_steps={args.train_steps}",
                f"warmup_steps={max(1, args.train_steps // 4)}", "eval_every=1000000",
                f"save_every={max(1, args.train_steps // 2)}", f"seed={args.seed}", f"progress={str(not args.quiet).lower()}"],
                "train-duplex-cpu")
            log(f"training {name} for {args.train_steps} steps")
            start = time.perf_counter()
            train_duplex(cfg)
            seconds = time.perf_counter() - start
            (directory / "timing.json").write_text(json.dumps(
                {"seconds": round(seconds, 1), "steps": args.train_steps,
                 "seconds_per_step": round(seconds / max(args.train_steps, 1), 3),
                 "note": "wall time of this (possibly resumed) train_duplex call"}) + "\n")
        out[name] = final
    return out


def load_systems(paths: dict[str, Path], dgslm_path: Path) -> dict:
    from textless.dialogue.dgslm import load_dialogue_lm
    from textless.dialogue.duplex import DuplexLM

    systems = {name: DuplexLM.from_pretrained(path) for name, path in paths.items()}
    systems["dgslm"] = load_dialogue_lm(dgslm_path)
    for model in systems.values():
        model.eval()
    return systems


def describe(systems: dict) -> dict:
    out = {}
    for name, model in systems.items():
        count = sum(p.numel() for p in model.parameters())
        if name == "dgslm":
            c = model.config
            what = f"dGSLM d {c.d_model}, {c.layers} layers ({c.cross_layers} cross-channel), {c.heads} heads, FFN {c.ffn}"
        else:
            b = model.config.backbone
            fmt = "native listen_speak" if model.config.format == "native" else \
                f"{'controlled' if model.tdm.controlled else 'fixed'} TDM, chunks of {model.tdm.chunk_frames}"
            what = (f"{fmt}; Llama d {b['hidden_size']}, {b['num_hidden_layers']} layers, {b['num_attention_heads']} "
                    f"heads, FFN {b['intermediate_size']} (SwiGLU); attention window {model.config.context} steps")
        out[name] = {"parameters": count, "model": what}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# (1) held-out NLL
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def edge_nll(name: str, model, dataset, context: int) -> dict:
    """Edge-conditional NLL: at every frame t >= 1 of a 500-frame window (`window_starts` grid) where the speak
    channel's unit changes (u_t != u_{t-1}), -log p(u_t | u_t != u_{t-1}, both channels' frames before t), i.e. the
    model's unit distribution at t renormalised over the K - 1 units other than u_{t-1}; each channel in turn the
    speak channel; pooled over all such frames (the same frames for every system). The dGSLM is trained on exactly
    this event (its edge loss; it also sees frame start - 1 as its first input); native and TDM models predict every
    frame, so this conditions their distribution on "a change happens here". Fixed TDM also hears its chunk's listen
    frames (up to 7 frames of look-ahead). Controlled TDM is left out: a silent chunk's units are not predicted."""
    from textless.dialogue.dgslm.targets import window
    from textless.dialogue.dgslm.train import all_windows, conversation_frames
    from textless.dialogue.duplex.train import Examples

    k = dataset.meta.vocab_size
    rate = dataset.meta.frame_rate
    total, count = 0.0, 0
    examples = Examples(model.config) if name != "dgslm" else None
    for conv, start in all_windows(conversation_frames(dataset), context):
        units = dataset[conv].units.astype(np.int64)
        n = min(context, units.shape[1] - start)
        logits_dgslm = None
        if name == "dgslm":
            inputs, _, _ = window(units, start, n, model.vocab.special(model.config.start_token))
            logits_dgslm = model(torch.from_numpy(inputs)[None]).logits[0].float()  # [2, n, V]
        for c in (0, 1):
            speak = units[c, start:start + n]
            edges = np.flatnonzero(speak[1:] != speak[:-1]) + 1
            if not len(edges):
                continue
            if name == "dgslm":
                scores = logits_dgslm[c, edges, :k]
            elif model.config.format == "native":
                tokens, _, _ = examples.example(units, start, n, c, False, rate)
                logits = model(torch.from_numpy(tokens)[None, :, :-1])["speak"][0].float()
                scores = logits[edges - 1, :k]
            else:
                tokens, _, _ = model.tdm.encode(units[1 - c, start:start + n], speak)
                positions = np.flatnonzero((tokens >= k) & (tokens < 2 * k))  # one speak unit per frame, in order
                assert len(positions) == n, (len(positions), n)
                logits = model(torch.from_numpy(tokens)[None, :-1])["tdm"][0].float()
                scores = logits[positions[edges] - 1, k:2 * k]
            scores = scores.clone()
            rows = torch.arange(len(edges))
            scores[rows, torch.from_numpy(speak[edges - 1])] = -math.inf
            nll = -torch.log_softmax(scores, dim=-1)[rows, torch.from_numpy(speak[edges])]
            total += float(nll.sum())
            count += len(edges)
    return {"edge_conditional_nll": round(total / max(count, 1), 4), "edges": count}


def heldout_nll(args, systems: dict, valid_path: Path) -> dict:
    from textless.dialogue.data import read_dialogues
    from textless.dialogue.dgslm.train import evaluate_dialogue_lm
    from textless.dialogue.duplex.train import evaluate_duplex_lm

    valid = read_dialogues(valid_path)
    out: dict = {"frame_nll": {}, "dgslm_edge_nll": {}, "edge_conditional": {}}
    for name, model in systems.items():
        log(f"held-out NLL: {name}")
        if name == "dgslm":
            metrics = evaluate_dialogue_lm(model, valid, context=args.context)
            out["dgslm_edge_nll"] = {k: round(float(v), 4) for k, v in metrics.items()}
        else:
            metrics = evaluate_duplex_lm(model, valid, context=args.context, batch_size=4)
            out["frame_nll"][name] = {k: round(float(v), 4) for k, v in metrics.items()}
        if name != "tdm_controlled":
            out["edge_conditional"][name] = edge_nll(name, model, valid, args.context)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# teacher-forced generation: the user channel is the recording, the model channel is the prompt then sampled
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_native(model, clips: np.ndarray, model_channel: np.ndarray, prompt: int, seed: int) -> np.ndarray:
    """clips int [B, 2, T]; the model speaks channel model_channel[b] from frame `prompt` on -> its units [B, T].
    `DuplexGenerator` hears the recorded user channel throughout and is given its own recorded frames before
    `prompt` (its prompt), then samples."""
    from textless.dialogue.duplex.generate import DuplexGenerator, DuplexSampling

    if model.layout.max_delay or model.layout.names != ("listen", "speak"):
        raise NotImplementedError("this experiment runs the listen_speak layout without delays")
    b, _, t_total = clips.shape
    rows = np.arange(b)
    user = torch.from_numpy(clips[rows, 1 - model_channel].astype(np.int64))
    out = clips[rows, model_channel].astype(np.int64)
    gen = DuplexGenerator(model, DuplexSampling(temperature=1.0, seed=seed))
    with gen.streaming(b):
        for t in range(t_total):
            given = torch.from_numpy(out[:, t:t + 1]) if t < prompt else None
            out[:, t] = gen.step(user[:, t:t + 1], given)[:, 0].numpy()
    return out


@torch.no_grad()
def generate_tdm(model, clips: np.ndarray, model_channel: np.ndarray, prompt: int, seed: int) -> np.ndarray:
    """As `generate_native` for a TDM model, through `TDMGenerator` chunk by chunk (prompt and continuation in whole
    chunks)."""
    from textless.dialogue.duplex.generate import DuplexSampling, TDMGenerator

    chunk = model.tdm.chunk_frames
    b, _, t_total = clips.shape
    if prompt % chunk or (t_total - prompt) % chunk:
        raise ValueError(f"prompt and continuation must be whole chunks of {chunk} frames")
    rows = np.arange(b)
    user = torch.from_numpy(clips[rows, 1 - model_channel].astype(np.int64))
    out = clips[rows, model_channel].astype(np.int64)
    gen = TDMGenerator(model, DuplexSampling(temperature=1.0, seed=seed))
    with gen.streaming(b):
        for start in range(0, t_total, chunk):
            given = torch.from_numpy(out[:, start:start + chunk]) if start < prompt else None
            out[:, start:start + chunk] = gen.step(user[:, start:start + chunk], given).numpy()
    return out


def generate_dgslm(model, clips: np.ndarray, model_channel: np.ndarray, prompt: int, seed: int) -> np.ndarray:
    """`generate_dialogue` with the user channel teacher-forced (fairseq's one-channel-conditioned generation)."""
    from textless.dialogue.dgslm import DialogueSamplingConfig, generate_dialogue

    b, _, t_total = clips.shape
    forces = []
    for i in range(b):
        force = np.full((2, t_total - prompt), -1, np.int64)
        force[1 - model_channel[i]] = clips[i, 1 - model_channel[i], prompt:]
        forces.append(force)
    made = generate_dialogue(model, [clips[i, :, :prompt] for i in range(b)], force=forces,
                             sampling=DialogueSamplingConfig(max_frames=t_total - prompt, seed=seed),
                             seeds=[seed + i for i in range(b)], batch_size=b)
    return np.stack([m[model_channel[i]] for i, m in enumerate(made)])


def generate(name: str, model, clips: np.ndarray, model_channel: np.ndarray, prompt: int, seed: int,
             batch: int = 16) -> np.ndarray:
    """The model channel [B, T] of every clip, in batches of `batch` clips."""
    fn = generate_dgslm if name == "dgslm" else generate_native if model.config.format == "native" else generate_tdm
    parts = [fn(model, clips[i:i + batch], model_channel[i:i + batch], prompt, seed + i)
             for i in range(0, len(clips), batch)]
    return np.concatenate(parts)


# ---------------------------------------------------------------------------------------------------------------------
# (2) turn-taking statistics
# ---------------------------------------------------------------------------------------------------------------------


def speech_ipus(row: np.ndarray, rate: float, silence) -> list[tuple[float, float]]:
    from textless.dialogue.turn_taking import merge_ipus
    from textless.dialogue.vad import unit_speech_segments

    return merge_ipus(unit_speech_segments(row, rate, silence))


def continuations(args, work: Path, systems: dict, valid_path: Path, prompt: int, new: int) -> dict:
    from textless.dialogue.data import read_dialogues

    cache = work / "continuations.npz"
    key = json.dumps({"prompt": prompt, "new": new, "samples": args.samples, "seed": args.seed,
                      "train_steps": args.train_steps})
    if cache.is_file():
        stored = np.load(cache)
        if str(stored["key"]) == key:
            return {k: stored[k] for k in stored.files if k != "key"}
        log(f"{cache} was made with other settings: generating again")
    valid = read_dialogues(valid_path)
    convs = [c for c in valid if c.units.shape[1] >= prompt + new]
    if len(convs) < len(valid):
        log(f"turn-taking: {len(valid) - len(convs)} held-out conversation(s) shorter than prompt + continuation")
    clips = np.stack([c.units[:, :prompt + new].astype(np.int64) for c in convs for _ in range(args.samples)])
    channel = np.ones(len(clips), np.int64)  # the model speaks channel B, listens to A
    out = {"recording": clips}
    for name, model in systems.items():
        log(f"turn-taking continuations: {name} ({len(clips)} x {new} frames)")
        start = time.perf_counter()
        out[name] = generate(name, model, clips, channel, prompt, args.seed)
        out[f"seconds/{name}"] = np.array(time.perf_counter() - start)
    np.savez(cache, key=np.array(key), **out)
    return out


def turn_taking_table(args, gens: dict, rate: float, silence, prompt: int, new: int) -> dict:
    from textless.dialogue.stats import conversation_stats
    from textless.dialogue.turn_taking import corpus_stats

    clips = gens["recording"]
    span = slice(prompt, prompt + new)
    runs = {"corpus": [clips[i, :, span] for i in range(0, len(clips), args.samples)]}
    for name in SYSTEMS:
        runs[name] = [np.stack([clips[i, 0, span], gens[name][i, span]]) for i in range(len(clips))]
    table = {}
    for name, items in runs.items():
        stats, b_speech, b_ipus = [], 0.0, []
        for i, units in enumerate(items):
            segments = [speech_ipus(row, rate, silence) for row in units]
            stats.append(conversation_stats(f"{name}-{i}", *segments, units.shape[1] / rate).stats)
            b_speech += sum(e - s for s, e in segments[1])
            b_ipus += [e - s for s, e in segments[1]]
        pooled = corpus_stats(stats)
        row = {k: {"per_minute": round(getattr(pooled, k).per_minute, 2),
                   "seconds_per_minute": round(getattr(pooled, k).seconds_per_minute, 2),
                   "mean_seconds": round(float(np.mean(getattr(pooled, k).durations)), 3)
                   if getattr(pooled, k).durations else None} for k in KINDS}
        row["minutes"] = round(pooled.minutes, 2)
        row["b_speech_fraction"] = round(b_speech / (pooled.minutes * 60), 3)
        row["b_ipus_per_minute"] = round(len(b_ipus) / pooled.minutes, 2)
        row["b_mean_ipu_seconds"] = round(float(np.mean(b_ipus)), 3) if b_ipus else None
        table[name] = row
    return table


# ---------------------------------------------------------------------------------------------------------------------
# (3) Full-Duplex-Bench-style cases
# ---------------------------------------------------------------------------------------------------------------------


def _silent(segments, start: float, end: float) -> bool:
    return not any(s < end and e > start for s, e in segments)


def find_cases(timeline, conv_units: np.ndarray, rate: float, silence, prompt_s: float, case_s: float,
               source: str) -> list[dict]:
    """Candidate cases of one conversation (times in seconds of the recording; `event` is where generation starts,
    `end` where the scored window ends). The model is speaker m, the user the other one (both roles are used):

    * pause: two consecutive user IPUs of one turn (the model's speaker silent from 0.5 s before the first one's end
      to the second one's end): event = the pause onset, window up to the end of the user's next IPU (at most
      case_s). The user keeps the turn: TOR 0 wanted.
    * backchannel: a user backchannel that starts while the model's speaker speaks: event = its onset. The model
      should keep talking: its stop rate should stay at the recording's (whose speaker never stops for it).
    * listen_backchannel (Full-Duplex-Bench's backchannel task): the user holds the turn and the recorded listener
      (the model's speaker) backchannelled in it: event = 1.5 s before the recorded backchannel (not before the
      user's turn start), model's speaker silent 0.5 s before; window up to the user's turn end (at most case_s).
      TOR 0 wanted; backchannels (speech segments < 1 s) welcome.
    * turn_taking: a user IPU after which the model's speaker takes the turn (a gap, no overlap; model's speaker
      silent in the last 0.5 s of the IPU; user silent for case_s after it): event = the user IPU's end, window
      case_s. TOR 1 wanted, latency = first model speech - event.
    * interruption: the user interrupts the model's speaker, who stopped (timeline interruption, not ignored): event
      = the onset; the model speaking in the recording's last prompt frame (unit VAD). It should stop: stop latency
      = end of its IPU running at the onset - onset.
    """
    speakers = timeline.speakers
    duration = conv_units.shape[1] / rate
    cases = []

    def add(kind, m, event, end, **extra):
        if event >= prompt_s and event + case_s <= duration:
            cases.append({"kind": kind, "source": source, "conversation": timeline.conversation_id,
                          "model_channel": m, "event": round(event, 4), "end": round(min(end, event + case_s), 4),
                          **extra})

    for m in (0, 1):
        u = 1 - m
        user = sorted((s for s in timeline.segments if s.speaker == speakers[u]), key=lambda s: s.start)
        model_all = timeline.channel(m)
        model_turns = sorted((s for s in timeline.segments if s.speaker == speakers[m]
                              and s.kind in ("turn", "interruption")), key=lambda s: s.start)
        user_ipus = [s for s in user if s.kind in ("turn", "interruption")]
        recorded_model = speech_ipus(conv_units[m], rate, silence)

        def speaking_before(t: float, recorded=recorded_model) -> bool:
            """The recording's unit VAD has the model's speaker speaking in the frame before time t."""
            frame = round(t * rate)
            return any(s * rate <= frame - 1 < e * rate for s, e in recorded)

        for a, b in itertools.pairwise(user_ipus):
            if b.kind == "turn" and b.start > a.end and _silent(model_all, a.end - 0.5, b.end) \
                    and _silent([(s.start, s.end) for s in user if s.kind not in ("turn", "interruption")],
                                a.end, b.start):
                add("pause", m, a.end, b.end, pause=round(b.start - a.end, 3))
        for bc in (s for s in user if s.kind == "backchannel"):
            if any(s.start + 0.1 <= bc.start < s.end for s in model_turns) and speaking_before(bc.start):
                add("backchannel", m, bc.start, bc.start + case_s)
        for bc in (s for s in timeline.segments if s.speaker == speakers[m] and s.kind == "backchannel"):
            holding = [s for s in user_ipus if s.start <= bc.start]
            if not holding:
                continue
            # the user's turn that holds the backchannel: its IPUs back to the last model turn before it
            last_model = max((s.end for s in model_turns if s.end <= bc.start), default=0.0)
            turn = [s for s in user_ipus if s.start >= last_model - 1e-9 and s.start <= bc.start]
            later = [s for s in user_ipus if s.start > bc.start
                     and _silent([(t.start, t.end) for t in model_turns], bc.start, s.start)]
            if not turn:
                continue
            turn_end = max([s.end for s in turn + later])
            event = max(turn[0].start, bc.start - 1.5)
            if _silent(model_all, event - 0.5, event) and _silent([(t.start, t.end) for t in model_turns], event,
                                                                    turn_end):
                add("listen_backchannel", m, event, turn_end, recorded_backchannel=round(bc.start - event, 3))
        for a in user_ipus:
            nxt_model = [s for s in model_turns if s.start >= a.end - 1e-9]
            nxt_user = [s for s in user if s.start > a.start]
            if not nxt_model:
                continue
            first = nxt_model[0]
            if _silent(model_all, a.end - 0.5, a.end) and _silent(model_all, a.end, first.start) \
                    and (not nxt_user or nxt_user[0].start >= a.end + case_s):
                add("turn_taking", m, a.end, a.end + case_s, recorded_latency=round(first.start - a.end, 3))
        for x in timeline.interruptions:
            if x.ignored or x.interrupter != speakers[u] or x.interrupted != speakers[m]:
                continue
            if speaking_before(x.onset):
                add("interruption", m, x.onset, x.onset + case_s, recorded_stop=round(x.stop - x.onset, 3))
    return cases


def select_cases(cases: list[dict], per_kind: int) -> list[dict]:
    """At most `per_kind` cases of each kind, evenly spread over the candidates (in conversation / time order)."""
    out = []
    for kind in CASE_KINDS:
        pool = [c for c in cases if c["kind"] == kind]
        if len(pool) > per_kind:
            pool = [pool[i] for i in np.linspace(0, len(pool) - 1, per_kind).round().astype(int)]
        out += pool
    return out


def build_cases(args, pools: list[tuple[str, Path, Path]], rate: float, silence, prompt: int, gen_frames: int
                ) -> tuple[list[dict], np.ndarray]:
    """(cases, clips int [N, 2, prompt + gen_frames]): each case's recording from prompt frames before the event."""
    from textless.dialogue.data import read_dialogues
    from textless.dialogue.timeline import read_timeline

    found, units = [], {}
    for source, units_path, timelines in pools:
        for conv in read_dialogues(units_path):
            units[(source, conv.id)] = conv.units.astype(np.int64)
            found += find_cases(read_timeline(timelines / f"{conv.id}.json"), units[(source, conv.id)], rate,
                                silence, prompt / rate, gen_frames / rate, source)
    cases = select_cases(found, args.cases)
    clips = []
    for case in cases:
        frame = round(case["event"] * rate)
        case["frame"] = frame
        clips.append(units[(case["source"], case["conversation"])][:, frame - prompt:frame + gen_frames])
    counts = {k: f"{sum(c['kind'] == k for c in cases)} of {sum(c['kind'] == k for c in found)}" for k in CASE_KINDS}
    log(f"cases (used of found): {counts}")
    return cases, np.stack(clips) if clips else np.zeros((0, 2, prompt + gen_frames), np.int64)


def case_generations(args, work: Path, systems: dict, pools, rate: float, silence, prompt: int, gen_frames: int):
    cache = work / "cases.npz"
    key = json.dumps({"prompt": prompt, "frames": gen_frames, "cases": args.cases, "seed": args.seed,
                      "case_conversations": args.case_conversations, "train_steps": args.train_steps})
    if cache.is_file():
        stored = np.load(cache)
        if str(stored["key"]) == key:
            return json.loads((work / "cases.json").read_text()), {k: stored[k] for k in stored.files if k != "key"}
        log(f"{cache} was made with other settings: generating again")
    cases, clips = build_cases(args, pools, rate, silence, prompt, gen_frames)
    channel = np.array([c["model_channel"] for c in cases], np.int64)
    out = {"recording": clips[np.arange(len(clips)), channel]}
    for name, model in systems.items():
        log(f"cases: {name} ({len(clips)} clips)")
        start = time.perf_counter()
        out[name] = generate(name, model, clips, channel, prompt, args.seed, batch=32)
        out[f"seconds/{name}"] = np.array(time.perf_counter() - start)
    out["user"] = clips[np.arange(len(clips)), 1 - channel]
    (work / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    np.savez(cache, key=np.array(key), **out)
    return cases, out


def tdm_wait(system: str, frame: int, prompt: int, chunk: int, systems: dict) -> int:
    """Frames that a clip frame waits before it can come out: TDM, until its chunk's last frame (the session's
    `chunk_frames - 1` at most); native and dGSLM: 0 (step t's output is frame t + 1)."""
    if system in ("recording", "dgslm") or systems[system].config.format == "native":
        return 0
    return chunk - 1 - (frame - prompt) % chunk


def score_case(case: dict, row: np.ndarray, rate: float, silence, prompt: int, wait) -> dict:
    """Metrics of one case from the model channel's units (the clip: prompt recording + generated)."""
    from textless.dialogue.interaction import (
        BARGE_IN_SUCCESS,
        LSLM_MU,
        backchannel_metrics,
        backchannel_turn_over,
        response_latency,
        turn_over,
    )
    from textless.dialogue.turn_taking import MIN_SILENCE

    ipus = speech_ipus(row, rate, silence)
    event = prompt / rate
    end = event + (case["end"] - case["event"])
    clip_end = len(row) / rate
    inside = [(max(s, event), min(e, end)) for s, e in ipus if e > event and s < end]
    inside = [(s, e) for s, e in inside if e > s]
    out: dict = {}
    if case["kind"] in ("pause", "turn_taking"):
        words = [(inside[0][0], inside[-1][1], "")] if inside else []  # duration only: one pseudo-word
        out["tor"] = turn_over(words)
        if case["kind"] == "turn_taking" and out["tor"]:
            latency = response_latency(words, event)
            out["latency"] = round(latency, 3)
            out["latency_emitted"] = round(latency + wait(round(inside[0][0] * rate)) / rate, 3)
    elif case["kind"] == "listen_backchannel":
        metrics = backchannel_metrics([(s - event, e - event) for s, e in inside], end - event)
        out["tor"] = backchannel_turn_over([(s - event, e - event) for s, e in inside], [])  # no words: duration only
        out["fdb_backchannels_per_second"] = round(metrics.frequency, 3)  # their rule: segments <= 3 s
        out["short_segments"] = sum(e - s < 1.0 for s, e in inside)  # < 1 s: TOR-0 segments, backchannel-like
    else:  # backchannel, interruption: the model's IPU running at the event
        running = [(s, e) for s, e in ipus if s < event <= e]
        stop = running[0][1] if running else event
        censored = clip_end - stop < MIN_SILENCE - 1e-9  # no 200 ms of silence after it in the clip: not a stop yet
        latency = stop - event
        out["stopped_in_window"] = not censored
        out["stop_latency"] = None if censored else round(latency, 3)
        out["stop_latency_emitted"] = None if censored else round(latency + wait(round(stop * rate)) / rate, 3)
        out["stopped_within_1s"] = (not censored) and latency <= 2 * LSLM_MU  # LSLM's hit
        out["stopped_within_1_5s"] = (not censored) and latency <= BARGE_IN_SUCCESS  # duplex S2S barge-in success
    return out


def case_table(args, cases: list[dict], gens: dict, systems: dict, rate: float, silence, prompt: int) -> dict:
    def mean(values):
        values = [v for v in values if v is not None]
        return round(float(np.mean(values)), 3) if values else None

    def median(values):
        values = [v for v in values if v is not None]
        return round(float(np.median(values)), 3) if values else None

    table: dict = {}
    per_case: dict = {}
    for name in ("recording", *SYSTEMS):
        scored = [score_case(c, gens[name][i], rate, silence, prompt,
                             lambda f, name=name: tdm_wait(name, f, prompt, args.chunk_frames, systems))
                  for i, c in enumerate(cases)]
        per_case[name] = scored
        rows = {}
        for kind in CASE_KINDS:
            s = [x for x, c in zip(scored, cases, strict=True) if c["kind"] == kind]
            if not s:
                rows[kind] = {"cases": 0}
                continue
            row: dict = {"cases": len(s)}
            if kind in ("pause", "turn_taking", "listen_backchannel"):
                row["tor"] = mean([x["tor"] for x in s])
            if kind == "turn_taking":
                row["latency_mean"] = mean([x.get("latency") for x in s])
                row["latency_median"] = median([x.get("latency") for x in s])
                row["latency_emitted_mean"] = mean([x.get("latency_emitted") for x in s])
            if kind == "listen_backchannel":
                row["fdb_backchannels_per_second"] = mean([x["fdb_backchannels_per_second"] for x in s])
                row["cases_with_short_segment"] = mean([float(x["short_segments"] > 0) for x in s])
            if kind in ("backchannel", "interruption"):
                row["stopped_within_1s"] = mean([float(x["stopped_within_1s"]) for x in s])
                row["stopped_within_1_5s"] = mean([float(x["stopped_within_1_5s"]) for x in s])
                row["stopped_in_window"] = mean([float(x["stopped_in_window"]) for x in s])
                row["stop_latency_median"] = median([x["stop_latency"] for x in s])
                row["stop_latency_emitted_median"] = median([x["stop_latency_emitted"] for x in s])
            if name == "recording" and kind in ("turn_taking", "interruption"):  # the builder's exact times
                key = "recorded_latency" if kind == "turn_taking" else "recorded_stop"
                row[f"timeline_{key}_median"] = median([c[key] for c in cases if c["kind"] == kind])
            rows[kind] = row
        table[name] = rows
    return {"summary": table, "per_case": per_case}


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------


def plot(gens: dict, rate: float, silence, prompt: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    silence = np.array(sorted(silence))
    clip = gens["recording"][0]
    rows = {"corpus": clip[:, prompt:]} | {name: np.stack([clip[0, prompt:], gens[name][0, prompt:]])
                                          for name in SYSTEMS}
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 1.1 * len(rows) + 0.6), sharex=True)
    for ax, (name, units) in zip(axes, rows.items(), strict=True):
        speech = ~np.isin(units, silence)
        for c, row in enumerate(speech):
            ax.fill_between(np.arange(len(row)) / rate, c, c + 0.8 * row, step="post",
                            color=("tab:blue", "tab:orange")[c])
        ax.set_yticks([0.4, 1.4], ["A", "B"])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("seconds of continuation (A: the recording, heard; B: generated)")
    fig.suptitle("speech (non-silence units) per channel: first held-out conversation, first sample")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


NOTES = {
    "budget": "Same train split, same steps, same speak frames per step (4 x 500; the dGSLM's 2 windows x 2 channels "
              "x 500), backbones of d 128 / 4 layers (parameter counts under models). Not the same: optimizer and "
              "schedule (duplex: the CPU recipe's AdamW, cosine lr 3e-3, warmup 100; dGSLM: its recipe's fairseq "
              "inverse_sqrt lr 1e-3, warmup 100, dropout 0.1), architecture (Llama RoPE / SwiGLU vs fairseq "
              "sinusoidal / ReLU with cross-channel attention), and the training loss (duplex: every speak frame; "
              "dGSLM: run starts + durations). TDM models see every frame twice (listen + speak tokens), so a step "
              "costs them about 2.5x the native compute.",
    "nll": "frame_nll (evaluate_duplex_lm) is nats per frame of the speak channel given both channels' past; for "
           "fixed TDM given also its chunk's listen frames (up to 7 frames of look-ahead), for controlled TDM in a "
           "channel whose silent chunks are one [listen] token (silence units merged): the three are comparable "
           "only with those caveats. The dGSLM's edge_nll (evaluate_dialogue_lm) is nats per run start (it does "
           "not score frames inside a run: those come from its duration regression), a different quantity, not a "
           "column of the same table; it has no per-frame likelihood. edge_conditional puts native, fixed TDM and "
           "dGSLM on the same frames and the same event (see experiments/duplex/run.py edge_nll).",
    "turn_taking": "Channel A is the recording in every row (heard, teacher-forced); only B differs. Per minute of "
                   "the continuations, pooled; corpus = the recording's same span, once per conversation (the "
                   "systems have --samples samples each). Unit VAD with the starter silence units, 200 ms rule.",
    "cases": "Windows of --case-seconds after the event (3 s): a later answer cannot reach TOR 1. A stop needs "
             "200 ms of silence after it inside the window. TOR: pause / turn_taking 1 iff the span from the model's "
             "first to last speech in the window is >= 1 s (turn_over with one pseudo-word); listen_backchannel 1 "
             "iff one of its speech segments is >= 1 s (their backchannel-task rule). TOR from speech duration only (no ASR: Full-Duplex-Bench's word count is not applied, and "
             "speech-like babble without words counts as speech). Latencies are aligned with the user's frames; "
             "*_emitted adds TDM's wait for its chunk to complete (native and dGSLM: none). Stop latencies are "
             "None when the model still spoke at the end of the generated window (stopped_in_window false). "
             "'recording' scores the recorded speaker of the model's role on the same clips (the reference; "
             "its timeline_* are the builder's exact times, the unit VAD adds ~0.05 s). A clip starts mid-"
             "conversation: the dGSLM reads its start token there, which it only saw at conversation starts in "
             "training (the duplex models train on windows that start anywhere). Few interruptions (see cases): "
             "their rates move by 1/n per case.",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dgslm-work", type=Path, default=None, help="the dGSLM experiment's work directory")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--train-steps", type=int, default=None, help="default 400 (--quick: 6)")
    parser.add_argument("--context", type=int, default=500, help="frames per training / evaluation window")
    parser.add_argument("--chunk-frames", type=int, default=8)
    parser.add_argument("--prompt-seconds", type=float, default=None, help="default 10 (--quick: 4)")
    parser.add_argument("--continue-seconds", type=float, default=None, help="default 20 (--quick: 4)")
    parser.add_argument("--case-seconds", type=float, default=3.0)
    parser.add_argument("--samples", type=int, default=None, help="default 3 (--quick: 1)")
    parser.add_argument("--cases", type=int, default=None, help="most cases per kind; default 32 (--quick: 2)")
    parser.add_argument("--case-conversations", type=int, default=None,
                        help="extra held-out conversations built for the cases; default 8 (--quick: 0)")
    parser.add_argument("--seconds", type=float, default=90.0, help="length of those conversations")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny budgets; --dgslm-work /tmp/duplex_quick/dgslm (make it with "
                             "experiments.dgslm.run's build_data / train_dgslm on a few short conversations), work and "
                             "output under /tmp/duplex_quick")
    parser.add_argument("--quiet", action="store_true", help="no training progress bars")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 when another job shares the cores)")
    args = parser.parse_args(argv)
    quick = {"dgslm_work": Path("/tmp/duplex_quick/dgslm"), "work": Path("/tmp/duplex_quick/work"),
             "output": Path("/tmp/duplex_quick/duplex_experiment.json"), "train_steps": 6, "prompt_seconds": 4.0,
             "continue_seconds": 4.0, "samples": 1, "cases": 2, "case_conversations": 0}
    full = {"dgslm_work": REPO / "outputs" / "dgslm_experiment", "work": REPO / "outputs" / "duplex_experiment",
            "output": RESULTS / "duplex_experiment.json", "train_steps": 400, "prompt_seconds": 10.0,
            "continue_seconds": 20.0, "samples": 3, "cases": 32, "case_conversations": 8}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    try:
        inputs = dgslm_inputs(args.dgslm_work)
        args.work.mkdir(parents=True, exist_ok=True)
        return run(args, inputs, began)
    except Missing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args, inputs: dict[str, Path], began: float) -> int:
    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.dialogue.data import read_dialogues
    from textless.dialogue.vad import silence_units_of

    torch.manual_seed(args.seed)
    valid = read_dialogues(inputs["valid"])
    rate = valid.meta.frame_rate
    silence = sorted(silence_units_of("starter", valid.meta.tokenizer))
    chunk = args.chunk_frames
    prompt = int(args.prompt_seconds * rate) // chunk * chunk
    new = math.ceil(args.continue_seconds * rate / chunk) * chunk
    case_frames = math.ceil(args.case_seconds * rate / chunk) * chunk
    timings: dict = {}

    paths = train_duplex_models(args, args.work, inputs["train"])
    for name in DUPLEX:
        timing = args.work / name / "timing.json"
        timings[f"train_{name}"] = json.loads(timing.read_text()) if timing.is_file() else None
    systems = load_systems(paths, inputs["dgslm"])
    models = describe(systems)

    nll = cached(args.work / "nll.json", lambda: heldout_nll(args, systems, inputs["valid"]))
    timings["nll"] = nll.pop("seconds")

    gens = continuations(args, args.work, systems, inputs["valid"], prompt, new)
    timings["continuations"] = {k.split("/")[1]: round(float(v), 1) for k, v in gens.items() if k.startswith("seconds/")}
    table = turn_taking_table(args, gens, rate, silence, prompt, new)
    plot(gens, rate, silence, prompt, args.output.with_suffix(".png"))

    pools = [("valid", inputs["valid"], inputs["timelines"])]
    extra = case_data(args, args.work)
    if extra is not None:
        pools.append(("extra", *extra))
    cases, case_gens = case_generations(args, args.work, systems, pools, rate, silence, prompt, case_frames)
    timings["cases"] = {k.split("/")[1]: round(float(v), 1) for k, v in case_gens.items() if k.startswith("seconds/")}
    scored = case_table(args, cases, case_gens, systems, rate, silence, prompt)
    timings["this_call_seconds"] = round(time.perf_counter() - began, 1)

    report = {
        "format": "textless.experiments.duplex", "version": 1, "machine": machine_info("cpu"),
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "prompt_frames": prompt, "continue_frames": new, "case_frames": case_frames,
                     "frames_per_step": "4 x 500 speak frames (duplex) = 2 windows x 2 channels x 500 (dGSLM)"},
        "train_hours": round(read_dialogues(inputs["train"]).hours, 3),
        "models": models, "timings": timings,
        "heldout_nll": nll, "turn_taking": table,
        "cases": {"list": cases, **scored}, "notes": NOTES,
    }
    write_results(args.output, report)
    print(json.dumps({"models": models, "heldout_nll": nll, "turn_taking": table, "cases": scored["summary"],
                      "timings": timings}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
