"""The LSLM tables at small scale (seed 002, tables 2-3): early / middle / late fusion x clean / noisy listening channel,
command-based and voice-based, next to a vanilla speaking LM; and the per-frame step cost of each fusion.

    python -m experiments.lslm.run              # every stage resumes where it stopped
    python -m experiments.lslm.run --quick      # a smoke run on a tiny copy of everything

Data (`textless build-lslm`, ``--work``/<setting>): flite speaking voices reading WordNet sentences; the listening
channel silent, or with white / pink / tone noise (p 0.5, 0-20 dB against the interruption's speech power) and / or
an interruption (p 0.5, its speech onset uniform over the utterance up to 0.5 s before its end). Command: "honey" in
the 14 offline voices (speaker dependent); voice: the 35 Speech Commands words, three voices held out for the test
split (speaker independent). ``--train`` / 40 / ``--test`` utterances.

Models (`textless train-lslm`, starter units at 50 Hz, frame level; MFCC listening features pooled to 50 Hz, frozen):
a vanilla speaking LM (preset ``--preset`` from scratch, no listening, every utterance to its eos) for
``--vanilla-steps``, then each fusion initialised from the vanilla LM (LSLM's "+": load and continue) for
``--steps`` (linear projection, its input divided by the training features' RMS, lr 5e-4 as the paper, batch 8).

Scores (`textless eval-duplex lslm.*`, test split): LSLM precision / recall / F1 over all / clean / noisy listening
(0.5 s teacher-forced prompt, then the model speaks up to the utterance's length, top-p 0.99); the speaking figure is
the NLL (nats per target token) of the non-interrupted test utterances with the listening channel, by condition (no
WER: a speech continuation has no reference text). Step cost: `ListenSpeakLM.step` at batch 1 on random weights of
the preset "small" (12 layers, d 384) for each fusion, against `UnitLM.step`.

Writes ``benchmarks/results/lslm_experiment.json`` and ``.png`` (p(IRQ) over time of one interrupted test utterance
per fusion, LSLM Fig. 4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
FUSIONS = ("early", "middle", "late")
SETTINGS = {"command": [],
            "voice": ["setting=voice", "held_out_voices=[rhvoice:clb,mbrola:us2,pico:en-US]"]}


def log(message: str) -> None:
    print(f"[lslm {time.strftime('%H:%M:%S')}] {message}", flush=True)


def build(args, setting: str) -> Path:
    from textless.config import compose
    from textless.jobs.build_lslm import BuildLSLMConfig, build_lslm

    out = args.work / setting
    if not (out / "examples.jsonl").is_file():
        log(f"building the {setting} set")
        cfg = compose(BuildLSLMConfig, "build-lslm", [
            f"output={out}", f"num_train={args.train}", f"num_valid={args.valid}", f"num_test={args.test}",
            "progress=false", *SETTINGS[setting]])
        build_lslm(cfg)
    return out


def train(args, setting: str, data: Path, name: str, **overrides) -> Path:
    from textless.config import compose
    from textless.dialogue.lslm.train import LSLMTrainConfig, train_lslm

    out = args.work / f"{setting}_{name}"
    if not (out / "final").is_dir():
        log(f"training {setting} {name}")
        fields = {"train_data": str(data), "output_dir": str(out), "cache_dir": str(args.work / f"{setting}_prepared"),
                  "progress": "false", "tensorboard": "true", "seed": str(args.seed), **overrides}
        start = time.perf_counter()
        train_lslm(compose(LSLMTrainConfig, "train-lslm", [f"{k}={v}" for k, v in fields.items()]))
        (out / "timing.json").write_text(json.dumps({"seconds": round(time.perf_counter() - start, 1)}) + "\n")
    return out / "final"


def evaluate(args, setting: str, data: Path, name: str, model: Path) -> dict:
    from textless.jobs.eval_lslm import LSLMEvalConfig, run_eval_lslm

    out = args.work / f"{setting}_{name}_eval"
    report = out / "lslm_report.json"
    if not report.is_file():
        log(f"evaluating {setting} {name}")
        run_eval_lslm(LSLMEvalConfig(model=str(model), data=str(data), split="test", seed=args.seed, plots=0,
                                     prompt_seconds=0.5, cache_dir=str(args.work / f"{setting}_prepared")), out)
    return json.loads(report.read_text())


def step_cost(steps: int) -> dict:
    """Median ms per `step` at batch 1 over `steps` steps (after 10 warm-up steps) for each fusion and the plain LM."""
    from textless.dialogue.lslm import FusionConfig, ListenSpeakLM, with_irq
    from textless.lm import UnitLM, UnitVocab

    torch.manual_seed(0)
    lm = with_irq(UnitLM.from_scratch("small", UnitVocab.default(100))).eval()
    features = torch.randn(steps + 10, 1, 39)
    tokens = torch.randint(3, 103, (steps + 10, 1))
    out: dict = {"model": "small preset (Llama, 12 layers, d 384), random weights, 39-dim listening features",
                 "steps": steps}

    def timed(step) -> float:
        times = []
        for t in range(steps + 10):
            start = time.perf_counter()
            step(t)
            if t >= 10:
                times.append((time.perf_counter() - start) * 1000)
        return round(statistics.median(times), 2)

    with lm.streaming(1):
        out["plain"] = timed(lambda t: lm.step(tokens[t]))
    for fusion in (*FUSIONS, "sum"):
        model = ListenSpeakLM(lm, FusionConfig(fusion=fusion, listen_dim=39)).eval()
        with model.streaming(1):
            out[fusion] = timed(lambda t, m=model: m.step(tokens[t], features[t]))
        for layer in getattr(lm.model.model, "layers", []):  # drop middle fusion's hooks before the next model
            layer._forward_pre_hooks.clear()
    return out


def plot(args, reports: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textless.dialogue.lslm import ListenSpeakLM
    from textless.dialogue.lslm.generate import ListenSpeakSampling, listen_and_speak

    fig, axes = plt.subplots(len(FUSIONS), 1, figsize=(8, 2.2 * len(FUSIONS)), sharex=True)
    for ax, fusion in zip(axes, FUSIONS, strict=True):
        model = ListenSpeakLM.from_pretrained(args.work / f"command_{fusion}" / "final")
        items = reports["items"]
        item = next(i for i in items if i.onset is not None and i.onset >= 1.0 and not i.noisy)  # heard after the prompt
        rate = reports["rate"]
        prompt = int(0.5 * rate)
        result = listen_and_speak(model, [item.units[:prompt]], [item.listen], [len(item.units)],
                                  ListenSpeakSampling(seed=args.seed))[0]
        times = (prompt + np.arange(len(result.irq_prob))) / rate
        ax.semilogy(times, np.maximum(result.irq_prob, 1e-12))
        ax.axvline(item.onset, color="tab:red")
        ax.axvspan(item.onset, item.onset + 1.0, color="tab:red", alpha=0.1)
        if result.stop == "irq":
            ax.axvline(result.stop_frame / rate, color="black", linestyle="--")
        ax.set_ylabel(f"{fusion}\np(IRQ)")
    axes[0].set_title(f"command, {item.id} (first clean test item interrupted after 1 s): onset (red), "
                      "[onset, onset + 1 s], IRQ (dashed)", fontsize=8)
    axes[-1].set_xlabel("seconds from the utterance's start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--train", type=int, default=None, help="train utterances per setting (default 600)")
    parser.add_argument("--valid", type=int, default=40)
    parser.add_argument("--test", type=int, default=None, help="test utterances per setting (default 200)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vanilla-steps", type=int, default=None, help="default 1200")
    parser.add_argument("--steps", type=int, default=None, help="per fusion, from the vanilla LM; default 1500")
    parser.add_argument("--cost-steps", type=int, default=None, help="timed steps per fusion; default 200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quick = {"work": Path("/tmp/lslm_quick"), "output": Path("/tmp/lslm_quick/lslm_experiment.json"), "train": 12,
             "test": 8, "vanilla_steps": 4, "steps": 4, "cost_steps": 5}
    full = {"work": REPO / "outputs" / "lslm_experiment", "output": RESULTS / "lslm_experiment.json", "train": 600,
            "test": 200, "vanilla_steps": 1200, "steps": 1500, "cost_steps": 200}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.valid = min(args.valid, 4)
    if args.threads:
        torch.set_num_threads(args.threads)
    return run(args)


def run(args) -> int:
    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.dialogue.listening import ListeningChannel, ListeningConfig
    from textless.dialogue.lslm.train import prepare_split
    from textless.tokenizers.bundle import SpeechTokenizer

    began = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    common = {"max_steps": args.steps, "warmup_steps": max(1, args.steps // 10), "eval_every": args.steps,
              "save_every": max(1, args.steps // 2), "batch_size": 8}
    tables: dict = {}
    timings: dict = {}
    plot_items: dict = {}
    for setting in SETTINGS:
        data = build(args, setting)
        vanilla = train(args, setting, data, "vanilla", init=f"scratch:{args.preset}", vanilla="true",
                        **{**common, "max_steps": args.vanilla_steps, "eval_every": args.vanilla_steps,
                           "warmup_steps": max(1, args.vanilla_steps // 10),
                           "save_every": max(1, args.vanilla_steps // 2)})
        rows = {"vanilla": evaluate(args, setting, data, "vanilla", vanilla)}
        for fusion in FUSIONS:
            model = train(args, setting, data, fusion, init=str(vanilla / "lm"), fusion=fusion, **common)
            rows[fusion] = evaluate(args, setting, data, fusion, model)
        tables[setting] = {name: {"interaction": r["interaction"], "speaking_nll": r["speaking_nll"]}
                           for name, r in rows.items()}
        timings[setting] = {name: json.loads((args.work / f"{setting}_{name}" / "timing.json").read_text())
                            for name in ("vanilla", *FUSIONS)
                            if (args.work / f"{setting}_{name}" / "timing.json").is_file()}
        if setting == "command":
            tokenizer = SpeechTokenizer.from_pretrained("starter")
            channel = ListeningChannel(ListeningConfig(encoder="mfcc", frame_rate=tokenizer.frame_rate))
            plot_items = {"items": prepare_split(data, "test", tokenizer, channel,
                                                 args.work / "command_prepared" / "test.npz"),
                          "rate": tokenizer.frame_rate}
    log("step cost")
    cost = step_cost(args.cost_steps)
    plot(args, plot_items, args.output.with_suffix(".png"))
    summary = json.loads((args.work / "command" / "summary.json").read_text())
    report = {"format": "textless.experiments.lslm", "version": 1, "machine": machine_info("cpu"),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "data": {s: json.loads((args.work / s / "summary.json").read_text())["splits"] for s in SETTINGS},
              "tables": tables, "step_cost_ms": cost, "train_seconds": timings,
              "wall_seconds": round(time.perf_counter() - began, 1),
              "notes": {"speaking": "speaking_nll: nats per target token (units + eos) of the test utterances without "
                                    "interruption, teacher-forced; with_listening uses their listening features "
                                    "(clean: silence; noisy: noise), without_listening zeros (the plain LM's view).",
                        "interaction": "precision / recall / F1 of LSLM section 6.1 (a hit: IRQ within [onset, "
                                       "onset + 1 s]); vanilla has no listening channel, its IRQ rows are its "
                                       "untrained IRQ token's",
                        "voices": summary.get("splits", {}).get("test", {}).get("voices")}}
    write_results(args.output, report)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
