"""Full-duplex streaming cost: per-frame `step()` latency and real-time factor of native fusion vs time multiplexing
(fixed chunks and model-controlled) on one backbone, and what a 5-minute session costs with a bounded KV cache
(the ring of `DuplexLM`) against an unbounded one.

    python -m benchmarks.duplex                                  # CPU, "small" backbone: duplex_cpu.json + .png
    python -m benchmarks.duplex --full-session                   # + batch 1 run through all 5 minutes (slower)
    python -m benchmarks.duplex --quick --out /tmp/duplex.json   # smoke run (tiny sizes; the numbers mean little)
    python -m benchmarks.duplex --device cuda --backbone 350m --dtype bfloat16

Models. One backbone preset (`backbone_config`, random weights, the same weights in all three models), K units
(``--units``), 50 Hz frames (20 ms):
- ``native``: `listen_speak_layout` (listen + speak streams summed per frame, one speak head; ``--speak-delay``),
  driven by `DuplexGenerator.step(user_frame)`: one backbone call of one position per frame.
- ``tdm_fixed``: `TDMFormat` with ``--chunk-frames`` (8 = 160 ms): per chunk ``<listen> L <speak> S``, 2 c + 2 tokens
  for c frames (18 per 8 frames: 2.25 tokens per frame), driven by `TDMGenerator.step(user_chunk)`: one call for the
  forced prefix, then one call per sampled speak unit but the last (8 calls per 8-frame chunk).
- ``tdm_controlled``: the same with ``[speak]`` / ``[listen]`` decided by the model. With random weights the decision
  would be a coin flip, so a forward hook on the TDM head adds 1e4 to one of the two tags' logits (only the decision
  position allows either tag, so nothing else changes): the model speaks in a share ``--speak-share`` of the chunks
  (evenly spread; every stream of a batch decides alike). A speak chunk is 2 c + 2 tokens and c + 1 calls, a listen
  chunk c + 2 tokens and one call. In a real batch the streams decide apart, and a batch step costs a speak chunk as
  soon as one stream speaks.
Sampling: `DuplexSampling()` defaults (temperature 1, seed 0); user units uniform random.

(1) Step latency (``steps``): at batch 1 and 16 (``--batches``), the bounded models (``--context-seconds`` 60:
3000 frames native, the same seconds of fixed-TDM tokens for both TDMs: 6750), ``--warmup`` frames then
``--frames`` timed frames, each `step()` timed alone (synchronised on a GPU). Per frame: native = one step; TDM =
its chunk's time / chunk frames. Real-time factor = 20 ms / median ms per frame (> 1: faster than real time); the
goal of the issue (< 10 ms per 40 ms frame) is <= 5 ms per 20 ms frame. Per chunk: TDM's units of a chunk all come
out at the chunk's end, so its per-chunk time adds to its algorithmic latency. Algorithmic latency (what the format
imposes before any compute; the streaming tokenizer's look-ahead comes on top): native (1 + max delay) frames (the
model's frame t + 1 is sampled right after user frame t); TDM ``chunk_frames`` frames (a chunk's speech is made once
the whole user chunk is in, so the model's channel runs a chunk behind the user's).

(2) Session curve (``session``): median ms per frame at session times ``0, --every, ..., --session-seconds``
(0: right after the warm-up), ``--curve-warmup`` frames then ``--curve-frames`` timed frames each (whole chunks;
the process is warm from (1), the warm-up step allocates the ring), for two caches:
- ``bounded``: the models of (1): a ring of context + max_step - 1 slots (`DuplexLM`). A step attends to the ring's
  filled prefix only (and the keys / values grow with it), so it costs what the session holds until the ring is
  full, then the same however long the session.
- ``unbounded``: an append-only cache that keeps the whole session, emulated by a ring sized to the tokens the
  session holds at the end of the timed window (the model's ``config.context`` set to that count with
  `dataclasses.replace`, same weights): no slot is ever evicted, and attention runs over exactly the session so
  far, as in a growing cache. ``whole_session_ring`` is one more point: a ring sized to the full session (context =
  its tokens) measured at session time 0, what `DuplexLM` with ``context`` = the session length costs at the start
  (like a ring that holds as much: only the filled prefix is attended).
Fast-forward: the session is not run to each checkpoint. Each point starts a fresh streaming session, runs the warm-up
through `step()` (which allocates the ring and writes its first slots), then jumps to the checkpoint by editing the
streaming state as the skipped steps would have left it: every stream's position advanced by the skipped tokens
(native: frames; TDM: 2c + 2 per speak chunk, c + 2 per listen chunk), the ring's filled prefix set to
min(ring, tokens so far), each ring slot marked as holding the latest position congruent to it (so the window mask is
a real session's), and the prefix's keys / values grown to it and filled by tiling the warm-up's own keys / values
(their contents are not a real session's, which changes outputs, not arithmetic: a step's cost depends on the slot
count, batch and shapes, not on the values). The generator state (native offsets; TDM
grammar at a chunk boundary) is advanced alike; at start-up each model checks that a fast-forwarded session holds
the positions, slots, filled prefix and offsets of a real one (a 4-step ring, 13 steps). ``--full-session`` also runs the bounded
models at batch 1 through every frame of the session with no fast-forward (``session_real_batch_1``: median per
``--every`` window), which checks the fast-forward's timings. A cache larger than ``--max-cache-gb`` (keys +
values) is skipped and recorded as such.

Writes ``benchmarks/results/duplex_<device>.json`` (``..._quick.json`` with ``--quick``) and a ``.png`` beside it.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks.tokenize_kernels import RESULTS, machine_info, write_results
from textless.dialogue.duplex import DuplexConfig, DuplexGenerator, DuplexLM, DuplexSampling, TDMGenerator
from textless.dialogue.duplex.model import TDM_STREAM, DuplexStreamingState, backbone_config
from textless.dialogue.streams import TDMFormat, listen_speak_layout

FRAME_RATE = 50.0
FRAME_MS = 1000.0 / FRAME_RATE
GOAL_MS_PER_FRAME = 10.0 * FRAME_MS / 40.0  # the "< 10 ms per 40 ms frame", for 20 ms frames
SILENCE = 0
VARIANTS = ("native", "tdm_fixed", "tdm_controlled")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def speaks(chunk: int, share: float) -> bool:
    """Whether chunk `chunk` is a speak chunk when a share `share` of the chunks is, evenly spread."""
    return math.floor((chunk + 1) * share) > math.floor(chunk * share)


class ForcedDecision:
    """Forces a controlled TDM model's ``[speak]`` / ``[listen]`` decision: a forward hook on its head adds 1e4 to
    the chosen tag's logit. Only the decision position allows either tag, so no other sampled token changes."""

    def __init__(self, model: DuplexLM):
        fmt = model.tdm
        self.tags = {True: fmt.token("[speak]"), False: fmt.token("[listen]")}
        self.speak = True
        self.handle = model.heads[TDM_STREAM].register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output[..., self.tags[self.speak]] += 1e4
        return output


class Driver:
    """Runs one model through its generator: a step is one frame (native) or one chunk (TDM)."""

    def __init__(self, name: str, model: DuplexLM, share: float):
        self.name, self.model = name, model
        self.native = model.config.format == "native"
        self.controlled = not self.native and model.tdm.controlled
        self.chunk = 1 if self.native else model.tdm.chunk_frames
        self.share = share if self.controlled else 1.0
        sampling = DuplexSampling(seed=0)
        self.gen = DuplexGenerator(model, sampling) if self.native else TDMGenerator(model, sampling)
        self.decision = ForcedDecision(model) if self.controlled else None

    def speaks(self, step: int) -> bool:
        return self.native or speaks(step, self.share)

    def step_tokens(self, step: int) -> int:
        """Positions step `step` moves the model's state on by (TDM: the chunk's tokens; the first chunk's <bos>
        stands in for the last chunk's pending unit, fed with the next chunk)."""
        if self.native:
            return 1
        return 2 * self.chunk + 2 if self.speaks(step) else self.chunk + 2

    def tokens(self, steps: int) -> int:
        """Positions after `steps` steps from a session's start."""
        if self.native:
            return steps
        speak = math.floor(steps * self.share)
        return speak * (2 * self.chunk + 2) + (steps - speak) * (self.chunk + 2)

    @property
    def max_step(self) -> int:
        return self.model.max_step

    def cache_bytes(self, batch: int, context: int) -> int:
        c = self.model.backbone.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        slots = context + self.max_step - 1
        return 2 * c.num_hidden_layers * batch * c.num_key_value_heads * head_dim * slots * self.model.dtype.itemsize

    @contextmanager
    def session(self, batch: int, context: int | None = None):
        """A streaming session at `batch` (with the model's context set to `context` for it)."""
        saved = self.model.config
        if context is not None:
            self.model.config = replace(saved, context=context)
        try:
            with self.gen.streaming(batch):
                yield Session(self, batch)
        finally:
            self.model.config = saved
            gc.collect()
            if self.model.device.type == "cuda":
                torch.cuda.empty_cache()


class Session:
    def __init__(self, driver: Driver, batch: int):
        self.d, self.batch, self.index = driver, batch, 0
        device = driver.model.device
        g = torch.Generator().manual_seed(1)
        units = driver.model.units.vocab_size
        self.user = torch.randint(0, units, (64, batch, driver.chunk), generator=g).to(device)
        self.cuda = device.type == "cuda"

    def step(self) -> tuple[float, bool]:
        """One timed step: (seconds, whether the model spoke in it)."""
        d = self.d
        spoke = d.speaks(self.index)
        if d.decision is not None:
            d.decision.speak = spoke
        x = self.user[self.index % len(self.user)]
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        d.gen.step(x)
        if self.cuda:
            torch.cuda.synchronize()
        self.index += 1
        return time.perf_counter() - start, spoke

    def run(self, steps: int) -> list[tuple[float, bool]]:
        return [self.step() for _ in range(steps)]

    def fast_forward(self, steps: int) -> None:
        """Jump `steps` steps on, as if they had run (module docstring): positions, ring slots and filled prefix,
        generator state."""
        if steps <= 0:
            return
        d = self.d
        delta = d.tokens(self.index + steps) - d.tokens(self.index)
        state = d.model._streaming_state
        assert isinstance(state, DuplexStreamingState)
        done = int(state.positions[0])
        assert bool((state.positions == done).all()) and done > 0, "fast-forward needs a warmed-up session"
        ring, device = state.ring, state.device
        target = done + delta
        filled = min(ring, target)
        assert state.filled == min(ring, done), "fast-forward needs a session whose steps all ran"
        state.cache.reserve(filled)
        if done < filled:  # tile the slots written so far over the filled prefix
            tile = torch.arange(filled, device=device) % done
            for cache in (state.cache.keys, state.cache.values):
                for buffer in cache:
                    buffer[:, :, :filled] = buffer[:, :, :filled].index_select(2, tile)
        slots = torch.arange(ring, device=device)
        held = target - 1 - (target - 1 - slots) % ring  # the latest position p < target with p % ring == slot
        state.slot_positions = torch.where(held >= 0, held, -1).expand_as(state.slot_positions).clone()
        state.positions = torch.full_like(state.positions, target)
        state.filled = filled
        if d.native:
            gen_state = d.gen._streaming_state
            gen_state.offsets = gen_state.offsets + steps
        self.index += steps


def check_fast_forward(driver: Driver, steps: int = 13) -> None:
    """Assert that a fast-forwarded session holds what a real one does after `steps` steps: positions, ring slot
    positions (hence the window mask), filled prefix and native generator offsets, with a ring of 4 steps so that it
    wraps."""
    held = []
    for jump in (False, True):
        with driver.session(1, context=driver.tokens(4)) as s:
            s.run(2)
            if jump:
                s.fast_forward(steps - 2)
            else:
                s.run(steps - 2)
            state, gen = driver.model._streaming_state, driver.gen._streaming_state
            held.append([state.positions.clone(), state.slot_positions.clone(), torch.tensor(state.filled),
                         getattr(gen, "offsets", torch.zeros(1)).clone()])
    if not all(torch.equal(x, y) for x, y in zip(*held, strict=True)):
        raise AssertionError(f"{driver.name}: a fast-forwarded session differs from a real one: {held}")


def summary(times: list[tuple[float, bool]], frames_per_step: int) -> dict[str, Any]:
    """ms per frame and per step (median, p90) of timed steps."""
    ms = sorted(1000 * t for t, _ in times)

    def q(p: float) -> float:
        return ms[min(len(ms) - 1, round(p * (len(ms) - 1)))]

    per_frame = statistics.median(ms) / frames_per_step
    return {"steps": len(ms), "median_ms_per_frame": round(per_frame, 3),
            "p90_ms_per_frame": round(q(0.9) / frames_per_step, 3),
            "median_ms_per_step": round(statistics.median(ms), 3), "p90_ms_per_step": round(q(0.9), 3),
            "real_time_factor": round(FRAME_MS / per_frame, 2)}


def bench_steps(driver: Driver, batch: int, warmup: int, frames: int) -> dict[str, Any]:
    with driver.session(batch) as s:
        s.run(math.ceil(warmup / driver.chunk))
        times = s.run(max(1, math.ceil(frames / driver.chunk)))
    out = summary(times, driver.chunk)
    out["goal_met"] = out["median_ms_per_frame"] <= GOAL_MS_PER_FRAME
    out["stream_frames_per_s"] = round(batch * 1000 / out["median_ms_per_frame"], 1)
    if driver.controlled:
        for spoke, key in ((True, "speak_chunks"), (False, "listen_chunks")):
            part = [x for x in times if x[1] == spoke]
            if part:
                out[key] = summary(part, driver.chunk)
    return out


def bench_point(driver: Driver, batch: int, at_frames: int, warmup: int, frames: int, context: int | None,
                max_bytes: float) -> dict[str, Any]:
    """Median ms per frame over `frames` frames starting at session frame `at_frames` (fast-forwarded)."""
    c = driver.chunk
    warm_steps, steps = math.ceil(warmup / c), max(1, math.ceil(frames / c))
    start = max(at_frames // c, warm_steps)
    if context == -1:  # unbounded: every token of the session up to the end of the timed window
        context = driver.tokens(start + steps)
    used = context if context is not None else driver.model.config.context
    need = driver.cache_bytes(batch, used)
    point: dict[str, Any] = {"session_s": round(start * c / FRAME_RATE, 2), "context_tokens": used,
                             "cache_gb": round(need / 1e9, 3)}
    if need > max_bytes:
        point["skipped"] = f"the cache needs {need / 1e9:.1f} GB > --max-cache-gb"
        return point
    with driver.session(batch, context) as s:
        s.run(warm_steps)
        s.fast_forward(start - warm_steps)
        point.update(summary(s.run(steps), c))
    return point


def real_session(driver: Driver, seconds: float, every: float, warmup: int) -> list[dict[str, Any]]:
    """Batch 1, bounded model, every step of the session run (no fast-forward): median per `every` window."""
    c = driver.chunk
    window, total = round(every * FRAME_RATE / c), round(seconds * FRAME_RATE / c)
    out = []
    with driver.session(1) as s:
        s.run(math.ceil(warmup / c))
        while s.index < total:
            first = s.index
            times = s.run(min(window, total - s.index))
            out.append({"session_s": round(first * c / FRAME_RATE, 2), "until_s": round(s.index * c / FRAME_RATE, 2),
                        **summary(times, c)})
    return out


def build(args: argparse.Namespace, device: str) -> dict[str, Driver]:
    dtype = DTYPES[args.dtype]
    backbone = backbone_config(args.backbone)
    k, c = args.units, args.chunk_frames
    context_frames = round(args.context_seconds * FRAME_RATE)
    context_tokens = round(context_frames * (2 * c + 2) / c)  # the same seconds of fixed-TDM tokens
    torch.manual_seed(0)
    native = DuplexLM.from_scratch(DuplexConfig(layout=listen_speak_layout(k, SILENCE, args.speak_delay),
                                                backbone=backbone, context=context_frames, frame_rate=FRAME_RATE))
    formats = {"tdm_fixed": TDMFormat(k, chunk_frames=c),
               "tdm_controlled": TDMFormat(k, chunk_frames=c, controlled=True, silence_unit=SILENCE)}
    models = {"native": native}
    for name, fmt in formats.items():
        model = DuplexLM(DuplexConfig(format="tdm", tdm=fmt, backbone=backbone, context=context_tokens,
                                      frame_rate=FRAME_RATE))
        model.backbone.load_state_dict(native.backbone.state_dict())  # the same backbone weights
        models[name] = model
    return {name: Driver(name, m.to(device=device, dtype=dtype).eval(), args.speak_share)
            for name, m in models.items()}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = list(report["session"])
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4.5), squeeze=False)
    colors = {"native": "tab:blue", "tdm_fixed": "tab:orange", "tdm_controlled": "tab:green"}
    for ax, batch in zip(axes[0], batches, strict=True):
        for variant, caches in report["session"][batch].items():
            for cache, style in (("bounded", "-"), ("unbounded", "--")):
                points = [p for p in caches[cache] if "median_ms_per_frame" in p]
                if points:
                    ax.plot([p["session_s"] / 60 for p in points], [p["median_ms_per_frame"] for p in points],
                            style, marker="o", ms=3, color=colors[variant], label=f"{variant}, {cache}")
            ring = caches.get("whole_session_ring", {})
            if "median_ms_per_frame" in ring:
                ax.plot([0], [ring["median_ms_per_frame"]], marker="*", ms=10, color=colors[variant],
                        linestyle="none", label=f"{variant}, ring = whole session, at t = 0")
        real = report.get("session_real_batch_1", {}) if batch == "batch_1" else {}
        for variant, points in real.items():
            ax.plot([(p["session_s"] + p["until_s"]) / 120 for p in points], [p["median_ms_per_frame"] for p in points],
                    "x",
                    color=colors[variant], label=f"{variant}, bounded, every frame run")
        ax.axhline(FRAME_MS, color="grey", linestyle=":", label="real time (20 ms per frame)")
        ax.axhline(GOAL_MS_PER_FRAME, color="black", linestyle=":", label="goal (5 ms per 20 ms frame)")
        ax.set_yscale("log")
        ax.set_xlabel("session time (minutes)")
        ax.set_ylabel("median step time per 20 ms frame (ms)")
        ax.set_title(f"{batch.replace('_', ' ')}: {report['backbone']} backbone, {report['machine']['device']}")
        ax.legend(fontsize=6)
    fig.suptitle(f"Full-duplex step cost over a session: native vs TDM; bounded cache "
                 f"({report['context_seconds']:g} s) vs unbounded", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--backbone", default=None, help="backbone_config preset (default: small; tiny with --quick)")
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--chunk-frames", type=int, default=8, help="TDM chunk (8 = 160 ms)")
    parser.add_argument("--speak-delay", type=int, default=0, help="native speak stream delay (frames)")
    parser.add_argument("--speak-share", type=float, default=0.5, help="controlled TDM: share of speak chunks")
    parser.add_argument("--context-seconds", type=float, default=None, help="bounded cache (default 60)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--warmup", type=int, default=None, help="warm-up frames per session (default 48)")
    parser.add_argument("--frames", type=int, default=None, help="timed frames for (1) (default 400)")
    parser.add_argument("--session-seconds", type=float, default=None, help="(2) session length (default 300)")
    parser.add_argument("--every", type=float, default=None, help="(2) checkpoint spacing, seconds (default 30)")
    parser.add_argument("--curve-warmup", type=int, default=8, help="(2) warm-up frames per point (default 8)")
    parser.add_argument("--curve-frames", type=int, default=None, help="(2) timed frames per point (default 24)")
    parser.add_argument("--full-session", action="store_true", help="(2) also run batch 1 through every frame")
    parser.add_argument("--max-cache-gb", type=float, default=10.0, help="skip points whose keys + values exceed it")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, short session: check that everything runs")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (the .png goes beside it)")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"backbone": ("small", "tiny"), "context_seconds": (60.0, 2.0), "warmup": (48, 8),
                "frames": (200, 16), "session_seconds": (300.0, 6.0), "every": (30.0, 3.0), "curve_frames": (24, 8)}
    for key, (full, small) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, small if quick else full)
    device = args.device
    start = time.perf_counter()
    drivers = build(args, device)
    c = args.chunk_frames
    for d in drivers.values():
        check_fast_forward(d)
    report: dict[str, Any] = {
        "format": "textless.benchmarks.duplex", "version": 1, "machine": machine_info(device), "quick": quick,
        "backbone": args.backbone, "dtype": args.dtype, "parameters": drivers["native"].model.num_parameters(),
        "backbone_parameters": sum(p.numel() for p in drivers["native"].model.backbone.parameters()),
        "units": args.units, "frame_ms": FRAME_MS, "chunk_frames": c, "speak_delay": args.speak_delay,
        "speak_share": args.speak_share, "context_seconds": args.context_seconds,
        "context": {name: d.model.config.context for name, d in drivers.items()},
        "goal_ms_per_frame": GOAL_MS_PER_FRAME, "warmup_frames": args.warmup, "timed_frames": args.frames,
        "curve_warmup_frames": args.curve_warmup, "curve_timed_frames": args.curve_frames,
        "max_cache_gb": args.max_cache_gb,
        "algorithmic_latency_ms": {"native": (1 + args.speak_delay) * FRAME_MS, "tdm_fixed": c * FRAME_MS,
                                   "tdm_controlled": c * FRAME_MS},
        "tokens_per_frame": {name: round(d.tokens(40) / (40 * d.chunk), 3) for name, d in drivers.items()},
        "backbone_calls_per_frame": {"native": 1.0, "tdm_fixed": 1.0,
                                     "tdm_controlled": round((args.speak_share * (c + 1) + 1 - args.speak_share) / c,
                                                             3)},
        "fast_forward_checked": True, "steps": {}, "session": {}}
    for batch in args.batches:
        key = f"batch_{batch}"
        report["steps"][key] = {}
        for name, d in drivers.items():
            r = report["steps"][key][name] = bench_steps(d, batch, args.warmup, args.frames)
            print(f"steps {key} {name}: {r['median_ms_per_frame']} ms/frame (p90 {r['p90_ms_per_frame']}), "
                  f"{r['median_ms_per_step']} ms/step, RTF {r['real_time_factor']}", flush=True)
    max_bytes = args.max_cache_gb * 1e9
    checkpoints = [round(i * args.every * FRAME_RATE) for i in range(int(args.session_seconds / args.every) + 1)]
    session_frames = round(args.session_seconds * FRAME_RATE)
    for batch in args.batches:
        key = f"batch_{batch}"
        report["session"][key] = {}
        for name, d in drivers.items():
            curves = report["session"][key][name] = {}
            for cache, context in (("bounded", None), ("unbounded", -1)):
                curves[cache] = []
                for at in checkpoints:
                    p = bench_point(d, batch, at, args.curve_warmup, args.curve_frames, context, max_bytes)
                    curves[cache].append(p)
                    print(f"session {key} {name} {cache} t={p['session_s']} s: "
                          f"{p.get('median_ms_per_frame', p.get('skipped'))}", flush=True)
            whole = d.tokens(max(1, math.ceil(session_frames / d.chunk)))
            curves["whole_session_ring"] = bench_point(d, batch, 0, args.curve_warmup, args.curve_frames, whole,
                                                       max_bytes)
    if args.full_session:
        report["session_real_batch_1"] = {name: real_session(d, args.session_seconds, args.every, args.warmup)
                                          for name, d in drivers.items()}
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    out = args.out or RESULTS / f"duplex_{device.split(':')[0]}{'_quick' if quick else ''}.json"
    write_results(out, report)
    plot(report, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({report['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
