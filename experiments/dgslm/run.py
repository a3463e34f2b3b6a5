"""The dGSLM experiment at small scale: turn-taking of (a) the corpus, (b) dGSLM, (c) dGSLM without cross-channel
attention, (d) a single-channel unit LM of the mixed audio.

    python -m experiments.dgslm.run                 # ~1 h on 2 idle CPU cores; every stage resumes where it stopped

Data: `textless build-dialogues` (flite voices, WordNet sentences, the builder's default timing), ``--conversations``
conversations of ``--seconds`` s, the last ``--valid`` held out; the starter tokenizer (offline Whisper-base layer 4,
k-means 100, 50 Hz) on each channel, frame-level units (`textless tokenize dialogues=true`). Models: (b) and (c)
`textless train-dialogue` from the CPU recipe (d 128, 4 layers; (c) with ``cross_layers=0``: two towers that never
see each other), (d) a `UnitLM` (preset "tiny"-sized OPT as the CPU dGSLM) on frame-level units of the mono mix, each
trained for the same ``--train-steps`` steps on the same number of frames per step (dGSLM: 2 windows x 2
channels x 500 frames; the mono LM: 4 windows x 500 frames), so a loaded machine changes the time, not the budget. Generation: the first ``--prompt-seconds`` of each held-out
conversation as the prompt, ``--continue-seconds`` of continuation, ``--samples`` samples (temperature 1).
Statistics: speech = frames whose unit is not one of the starter tokenizer's silence units (`textless.dialogue.vad`),
IPUs with the 200 ms rule, pauses / gaps / overlaps per minute (dGSLM's definitions) over the continuations only; for
(a), the same span of the held-out conversations. (d) has one channel: all its speech counts as one speaker, so it has
no gaps and no overlaps by construction. Also the held-out edge NLL / accuracy and duration error of (b) and (c).
Writes ``benchmarks/results/dgslm_experiment.json`` and ``dgslm_experiment.png`` (one continuation per system).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
KINDS = ("ipu", "pause", "gap", "overlap")


def build_data(args, work: Path) -> tuple[Path, Path]:
    from textless.dialogue.data import read_dialogues, write_dialogues
    from textless.jobs.build_dialogues import BuildDialoguesConfig, build_dialogues
    from textless.jobs.tokenize import TokenizeConfig, tokenize_dataset

    audio = work / "dialogues"
    if not (audio / "summary.json").is_file():
        build_dialogues(BuildDialoguesConfig(output=str(audio), num_conversations=args.conversations,
                                             seconds=args.seconds, seed=args.seed, mono=False, progress=False))
    units = work / "units"
    if not units.is_dir():
        tokenize_dataset(TokenizeConfig(dataset=str(audio / "manifest.jsonl"), tokenizer="starter",
                                        output=str(units), dialogues=True, progress=False))
    train, valid = work / "train", work / "valid"
    if not valid.is_dir():
        ds = read_dialogues(units)
        conversations = list(ds)
        write_dialogues(train, conversations[:-args.valid], ds.meta, encoding="binary", overwrite=True)
        write_dialogues(valid, conversations[-args.valid:], ds.meta, encoding="binary", overwrite=True)
    return train, valid


def train_dgslm(args, work: Path, train: Path, valid: Path, name: str, cross_layers: int) -> Path:
    from textless.config import compose
    from textless.dialogue.dgslm.train import DialogueTrainConfig, train_dialogue

    out = work / name
    if not (out / "final").is_dir():
        cfg = compose(DialogueTrainConfig, "train-dialogue", [
            f"train_dataset={train}", f"valid_dataset={valid}", f"output_dir={out}", f"+model.cross_layers={cross_layers}",
            f"max_steps={args.train_steps}", "warmup_steps=100", "eval_every=500",
            "save_every=200", f"seed={args.seed}"], "train-dialogue-cpu")
        train_dialogue(cfg)
    return out / "final"


def mono_units(work: Path, split: Path, name: str) -> Path:
    """Frame-level units of the mono mix (channel sum) of each conversation, as a one-stream unit dataset."""
    from textless.data.units import UnitMeta, UnitSequence, write_units
    from textless.dialogue.data import read_dialogues
    from textless.tokenizers.bundle import SpeechTokenizer

    out = work / f"mono_{name}"
    if out.is_dir():
        return out
    tokenizer = SpeechTokenizer.from_pretrained("starter")
    manifest = {json.loads(line)["id"]: json.loads(line) for line in
                (work / "dialogues" / "manifest.jsonl").read_text().splitlines()}
    from textless.audio import load_audio

    seqs = []
    for conv in read_dialogues(split):
        wav, _ = load_audio(work / "dialogues" / manifest[conv.id]["stereo"], tokenizer.sample_rate)
        labels = tokenizer.frame_labels_batch([wav])[0]
        seqs.append(UnitSequence(conv.id, labels.astype(np.int64)))
    identity = tokenizer.identity() | {"deduplicate": False, "mix": "mono sum of both channels"}
    meta = UnitMeta(identity, tokenizer.frame_rate, tokenizer.num_units, deduplicated=False)
    return write_units(out, seqs, meta, encoding="binary")


def train_mono(args, work: Path, train: Path, valid: Path) -> Path:
    from textless.config import compose
    from textless.lm.train import TrainConfig
    from textless.lm.train import train as train_lm

    out = work / "mono_lm"
    if not (out / "final").is_dir():
        # the CPU dGSLM's size as an OPT unit LM (d 128, 4 layers, FFN 512, 4 heads)
        preset = work / "mono_preset.json"
        from transformers import OPTConfig

        OPTConfig(hidden_size=128, ffn_dim=512, num_hidden_layers=4, num_attention_heads=4,
                  max_position_embeddings=2048, do_layer_norm_before=True, word_embed_proj_dim=128,
                  activation_function="relu", tie_word_embeddings=True).to_json_file(preset)
        cfg = compose(TrainConfig, "train", [
            f"train_dataset={mono_units(work, train, 'train')}", f"valid_dataset={mono_units(work, valid, 'valid')}",
            f"output_dir={out}", "init=scratch", f"preset={preset}", "context_length=500", "batch_size=4",
            f"max_steps={args.train_steps}", "eval_every=500", "save_every=200",
            f"seed={args.seed}", "lr=1e-3", "precision=fp32"], "lm_tiny")
        train_lm(cfg)
    return out / "final"


def generations(args, work: Path, valid: Path, systems: dict[str, Path]) -> dict[str, list[np.ndarray]]:
    """Per system, the continuations [channels, frames] (prompt frames removed) of every held-out prompt x sample."""
    from textless.dialogue.data import read_dialogues
    from textless.dialogue.dgslm import DialogueSamplingConfig, generate_dialogue, load_dialogue_lm
    from textless.lm.generation import SamplingConfig, generate_units
    from textless.lm.model import UnitLM

    cache = work / "generations.npz"
    if cache.is_file():
        stored = np.load(cache)
        return {s: [stored[k] for k in sorted(stored.files) if k.startswith(s + "/")] for s in [*systems, "mono"]}
    ds = read_dialogues(valid)
    rate = ds.meta.frame_rate
    prompt, new = round(args.prompt_seconds * rate), round(args.continue_seconds * rate)
    prompts = [conv.units[:, :prompt] for conv in ds]
    out: dict[str, list[np.ndarray]] = {}
    for name, path in systems.items():
        model = load_dialogue_lm(path)
        items = [p for p in prompts for _ in range(args.samples)]
        seeds = [args.seed + i for i in range(len(items))]
        made = generate_dialogue(model, items, sampling=DialogueSamplingConfig(max_frames=new, seed=args.seed),
                                 seeds=seeds)
        out[name] = [g[:, prompt:] for g in made]
    lm = UnitLM.from_pretrained(systems_mono(work))
    mixes = [mono.units[:prompt] for mono in _mono_dataset(work, "valid")]
    sampled = generate_units(lm, mixes, SamplingConfig(temperature=1.0, max_new_tokens=new, num_samples=args.samples,
                                                       seed=args.seed, stop_at_eos=False))
    out["mono"] = [s[None, :] for per_prompt in sampled for s in per_prompt]
    np.savez(cache, **{f"{s}/{i:04d}": g for s, gens in out.items() for i, g in enumerate(gens)})
    return out


def systems_mono(work: Path) -> Path:
    return work / "mono_lm" / "final"


def _mono_dataset(work: Path, name: str):
    from textless.data.units import read_units

    return read_units(work / f"mono_{name}")


def statistics(args, valid: Path, gens: dict[str, list[np.ndarray]]) -> dict:
    from textless.dialogue.data import read_dialogues
    from textless.dialogue.stats import conversation_stats
    from textless.dialogue.turn_taking import corpus_stats
    from textless.dialogue.vad import silence_units_of, unit_speech_segments

    ds = read_dialogues(valid)
    rate = ds.meta.frame_rate
    silence = silence_units_of("starter", ds.meta.tokenizer)
    prompt, new = round(args.prompt_seconds * rate), round(args.continue_seconds * rate)
    runs = {"corpus": [conv.units[:, prompt:prompt + new] for conv in ds], **gens}
    table = {}
    for name, items in runs.items():
        stats = []
        for i, units in enumerate(items):
            segments = [unit_speech_segments(row, rate, silence) for row in units]
            if len(segments) == 1:
                segments.append([])
            stats.append(conversation_stats(f"{name}-{i}", *segments, units.shape[1] / rate).stats)
        pooled = corpus_stats(stats)
        table[name] = {k: {"per_minute": round(getattr(pooled, k).per_minute, 2),
                           "seconds_per_minute": round(getattr(pooled, k).seconds_per_minute, 2),
                           "mean_seconds": round(float(np.mean(getattr(pooled, k).durations)), 3)
                           if getattr(pooled, k).durations else None} for k in KINDS}
        table[name]["minutes"] = round(pooled.minutes, 2)
        table[name]["speech_fraction_per_channel"] = round(pooled.ipu.seconds / (pooled.minutes * 60) / len(items[0]),
                                                           3)
    return table


def plot(gens: dict[str, list[np.ndarray]], valid: Path, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from textless.dialogue.data import read_dialogues
    from textless.dialogue.vad import silence_units_of

    ds = read_dialogues(valid)
    rate = ds.meta.frame_rate
    silence = np.array(sorted(silence_units_of("starter", ds.meta.tokenizer)))
    prompt, new = round(args.prompt_seconds * rate), round(args.continue_seconds * rate)
    rows = {"corpus": ds[0].units[:, prompt:prompt + new], **{k: v[0] for k, v in gens.items()}}
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 1.1 * len(rows) + 0.6), sharex=True)
    for ax, (name, units) in zip(axes, rows.items(), strict=True):
        speech = ~np.isin(units, silence)
        for c, row in enumerate(speech):
            ax.fill_between(np.arange(len(row)) / rate, c, c + 0.8 * row, step="post",
                            color=("tab:blue", "tab:orange")[c])
        ax.set_yticks([0.4, 1.4][:len(speech)], ["A", "B"][:len(speech)])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("seconds of continuation")
    fig.suptitle("speech (non-silence units) per channel: first held-out prompt, first sample")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--valid", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--prompt-seconds", type=float, default=10.0)
    parser.add_argument("--continue-seconds", type=float, default=20.0)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "dgslm_experiment")
    parser.add_argument("--output", type=Path, default=RESULTS / "dgslm_experiment.json")
    args = parser.parse_args(argv)

    from benchmarks.tokenize_kernels import machine_info, write_results
    from textless.dialogue.data import read_dialogues
    from textless.dialogue.dgslm import load_dialogue_lm
    from textless.dialogue.dgslm.train import evaluate_dialogue_lm

    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    train, valid = build_data(args, args.work)
    systems = {"dgslm": train_dgslm(args, args.work, train, valid, "dgslm", cross_layers=2),
               "no_cross": train_dgslm(args, args.work, train, valid, "no_cross", cross_layers=0)}
    train_mono(args, args.work, train, valid)
    gens = generations(args, args.work, valid, systems)
    heldout = {name: {k: round(v, 4) for k, v in evaluate_dialogue_lm(load_dialogue_lm(path), read_dialogues(valid),
                                                                      context=500).items()}
               for name, path in systems.items()}
    table = statistics(args, valid, gens)
    plot(gens, valid, args, args.output.with_suffix(".png"))
    corpus = read_dialogues(train)
    report = {"format": "textless.experiments.dgslm", "version": 1, "machine": machine_info("cpu"),
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "train_hours": round(corpus.hours, 3), "heldout": heldout, "turn_taking": table}
    write_results(args.output, report)
    print(json.dumps({"heldout": heldout, "turn_taking": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
