"""The `textless` command.

Subcommands live in `COMMANDS` (a registry: each entry adds its arguments and runs). Commands that take a config
compose it with Hydra (`textless.config.compose`): dataclass defaults <- recipe YAML (``--config``, default
``textless/recipes/<command>.yaml``) <- ``key=value`` overrides. User errors exit with status 2 and a one-line
``textless: error: ...`` message; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textless import __version__
from textless.errors import ConfigError, TextlessError


@dataclass
class Command:
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose epilog (the config keys) is read only when the help is printed."""

    def __init__(self, *args, schema: str | None = None, **kw):
        super().__init__(*args, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
        self.schema = schema

    def format_help(self) -> str:
        if self.schema is not None and self.epilog is None:
            from textless.schema import describe_fields

            self.epilog = "keys (key=default, then what it is; set them as key=value):\n" + describe_fields(self.schema)
        return super().format_help()


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="RECIPE",
                        help="a recipe that ships with textless (twist, gslm, lm_tiny, ...) or a YAML path")
    parser.add_argument("--print-config", action="store_true", help="print the composed config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides, e.g. frame_rate=25")


def configured(command: str, schema: str, job: str) -> Callable[[argparse.Namespace], int]:
    """`run` of a config-driven command: compose the dataclass `schema` with Hydra and call `job` on it.

    `schema` and `job` are ``"module:name"`` strings, imported only when the command runs (a fast `--help`); the
    override keys are checked against the schema's source first (`textless.schema`), before torch is imported.
    """

    def load(spec: str):
        module, name = spec.split(":")
        return getattr(importlib.import_module(module), name)

    def run(args: argparse.Namespace) -> int:
        from textless.config import compose, to_yaml
        from textless.schema import check_overrides

        check_overrides(schema, command, args.overrides)
        cfg = compose(load(schema), command, args.overrides, args.config)
        if args.print_config:
            print(to_yaml(cfg), end="")
        else:
            load(job)(cfg)  # jobs report per-item failures themselves and complete the rest
        return 0

    run.schema = schema  # type: ignore[attr-defined]  # --help lists its keys
    return run


# ---------------------------------------------------------------------------------------------------------- info
def _resynth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="an audio file, or a dataset (directory, manifest, bundled:<split>)")
    parser.add_argument("output", help="the output wav file (for a file input) or directory")
    parser.add_argument("--pipeline", help="a speech pipeline directory (default: the starter pipeline)")
    parser.add_argument("--tokenizer", help="a tokenizer bundle (with --vocoder, instead of --pipeline)")
    parser.add_argument("--vocoder", help="a vocoder: textless, fairseq CodeHiFiGAN or speechbrain checkpoint")
    parser.add_argument("--speaker", help="voice of a multi-speaker vocoder (name or id)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--restart", action="store_true",
                        help="a dataset: redo it, replacing the files an earlier run wrote (other files stay)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load a fairseq vocoder checkpoint that pickles more than tensors (only a file you trust)")


def _run_resynth(args: argparse.Namespace) -> int:
    from textless.jobs.resynth import build_pipeline, resynthesize

    pipeline = build_pipeline(args.pipeline, args.tokenizer, args.vocoder, args.device, trust_pickle=args.trust_pickle)
    resynthesize(args.input, args.output, pipeline=pipeline, speaker=args.speaker, restart=args.restart)
    return 0  # a dataset's per-file failures are reported and skipped; a single file's failure raised


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="an audio directory, a manifest (.tsv/.jsonl/fairseq .tsv) or a unit dataset")
    parser.add_argument("--durations", action="store_true", help="read audio headers to fill unknown durations")


def _run_info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if (path / "meta.json").exists():
        from textless.data.units import read_units
        from textless.eval.unit_stats import unit_statistics

        units = read_units(path)
        meta = units.meta
        stats = unit_statistics(units, meta.frame_rate, meta.vocab_size)
        print(f"unit dataset {path} ({units.encoding}): tokenizer {meta.tokenizer.get('name', '?')}, "
              f"vocabulary {meta.vocab_size}, {meta.frame_rate:g} Hz, "
              f"{'deduplicated' if meta.deduplicated else 'frame-level'}")
        for key, value in stats.to_dict().items():
            print(f"  {key:18s} {value:,.3f}" if isinstance(value, float) else f"  {key:18s} {value:,}")
        return 0
    from textless.data.manifest import load_manifest

    manifest = load_manifest(path)
    if args.durations:
        manifest = manifest.with_durations()
    total = manifest.total_duration
    print(f"audio dataset {path}: {len(manifest)} utterances, {len(manifest.speakers)} speakers, "
          + (f"{total / 3600:.3f} h" if total is not None else "duration unknown (use --durations)"))
    return 0


# ------------------------------------------------------------------------------------------------------ manifest
def _manifest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="audio directory or manifest")
    parser.add_argument("output", help="manifest to write (.tsv or .jsonl)")
    parser.add_argument("--no-durations", action="store_true", help="do not read audio headers for durations")


def _run_manifest(args: argparse.Namespace) -> int:
    from textless.data.manifest import load_manifest

    manifest = load_manifest(args.source)
    if not args.no_durations:
        manifest = manifest.with_durations()
    manifest.save(args.output)
    print(f"wrote {args.output}: {len(manifest)} utterances")
    return 0


# --------------------------------------------------------------------------------------------------------- units
def _units_arguments(parser: argparse.ArgumentParser) -> None:
    from textless.data.convert import REGISTRY

    formats = sorted(REGISTRY)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("import", help="anchor unit file -> textless unit dataset")
    p.add_argument("format", choices=formats)
    p.add_argument("source", help="the .km / gslm lines / slamkit features.jsonl file; dgslm: the prefix "
                                  "(dir/train for dir/train.unitA + dir/train.unitB)")
    p.add_argument("output", help="unit dataset directory to create")
    p.add_argument("--frame-rate", type=float, metavar="HZ",
                   help="unit frame rate in Hz (default: the format's usual rate)")
    p.add_argument("--vocab-size", type=int, metavar="K", help="number of units (default: from dict.km.txt or max + 1)")
    p.add_argument("--deduplicate", action="store_true", help="run-length encode frame-level units on import")
    p.add_argument("--manifest", dest="manifest_tsv", metavar="TSV",
                   help="fairseq_km: the parallel fairseq manifest (.tsv) for ids")
    p.add_argument("--ids", dest="ids_path", metavar="FILE", help="fairseq_km, dgslm: a file with one utterance id per line")
    p.add_argument("--dict", dest="dict_path", metavar="FILE",
                   help="fairseq_km: dict.km.txt (sets the vocabulary size)")
    p.add_argument("--encoding", choices=["jsonl", "binary"], default="binary")
    p.add_argument("--overwrite", action="store_true")
    p = sub.add_parser("export", help="textless unit dataset -> anchor unit file")
    p.add_argument("format", choices=formats)
    p.add_argument("source", help="unit dataset directory")
    p.add_argument("output", help="file to write (dgslm: the prefix)")
    p.add_argument("--ids", dest="ids_path", metavar="FILE", help="fairseq_km, dgslm: also write the ids, one per line")
    p.add_argument("--dict", dest="dict_path", metavar="FILE", help="fairseq_km: also write dict.km.txt")
    p = sub.add_parser("convert", help="re-encode a unit dataset (jsonl <-> binary)")
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--encoding", choices=["jsonl", "binary"], required=True)
    p.add_argument("--overwrite", action="store_true")


def _format_options(function, args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The options the user gave, refusing those that `function` (a format's reader/writer) does not take."""
    import inspect

    accepted = inspect.signature(function).parameters
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) not in (None, False)}
    for name in given:
        if name not in accepted:
            flag = {"manifest_tsv": "manifest", "ids_path": "ids", "dict_path": "dict"}.get(name, name)
            raise ConfigError(f"--{flag.replace('_', '-')} does not apply to format '{args.format}'")
    return given


def _run_units(args: argparse.Namespace) -> int:
    from textless.data.convert import export_units, get_format, import_units
    from textless.data.units import convert_encoding

    if args.action == "import":
        options = _format_options(get_format(args.format).read, args,
                                  ("frame_rate", "vocab_size", "deduplicate", "manifest_tsv", "ids_path", "dict_path"))
        out = import_units(args.source, args.output, args.format, encoding=args.encoding, overwrite=args.overwrite,
                           **options)
    elif args.action == "export":
        options = _format_options(get_format(args.format).write, args, ("ids_path", "dict_path"))
        out = export_units(args.source, args.output, args.format, **options)
    else:
        out = convert_encoding(args.source, args.output, args.encoding, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


COMMANDS: dict[str, Command] = {
    "demo": Command(
        help="run the main job on the bundled corpus",
        description="Tokenize the bundled corpus and print corpus and unit statistics (grows into "
                    "audio -> units -> LM continuation -> audio as the library does).",
        add_arguments=_add_config_arguments,
        run=configured("demo", "textless.jobs.demo:DemoConfig", "textless.jobs.demo:run_demo")),
    "kmeans": Command(
        help="fit k-means on encoder features and save a speech tokenizer bundle",
        description="Sample features of an SSL encoder layer (HF dir, fairseq .pt) or MFCC over a dataset, fit "
                    "k-means (faiss | torch | sklearn), optionally BPE, and save encoder reference + layer + "
                    "centroids + dedup/BPE as one tokenizer directory. init_from=km.bin trust_pickle=true imports "
                    "an anchor's k-means instead of fitting. Example: textless kmeans encoder=mfcc k=100 "
                    "output=tok/",
        add_arguments=_add_config_arguments,
        run=configured("kmeans", "textless.jobs.kmeans:KMeansJobConfig",
                       "textless.jobs.kmeans:fit_tokenizer")),
    "tokenize": Command(
        help="tokenize an audio dataset into a unit dataset (sharded, resumable)",
        description="Run a tokenizer bundle over a dataset (directory, manifest or bundled:<split>) and write a "
                    "unit dataset. Ranks come from torchrun/SLURM (or rank=/world_size=); a re-run resumes where "
                    "it stopped; unreadable files are reported and skipped. Example: textless tokenize "
                    "tokenizer=tok/ dataset=bundled:train output=units/train. dialogues=true: dataset is a "
                    "dialogue manifest (stereo files, pairs of mono files, mono + RTTM) or a directory of stereo "
                    "files, and the output a two-channel unit dataset of frame-level units.",
        add_arguments=_add_config_arguments,
        run=configured("tokenize", "textless.jobs.tokenize:TokenizeConfig",
                       "textless.jobs.tokenize:tokenize_dataset")),
    "train": Command(
        help="train a unit LM (GSLM from scratch or TWIST from a text LM); resumes automatically",
        description="Train a unit language model on binary unit datasets: packed contexts, AdamW + warmup/cosine, "
                    "clipping, grad accumulation, bf16 on GPU, token and wall-clock budgets, validation loss, "
                    "TensorBoard, atomic checkpoints with exact resume; DDP/FSDP under torchrun/accelerate. "
                    "Recipes: --config gslm | twist | lm_tiny.",
        add_arguments=_add_config_arguments,
        run=configured("train", "textless.lm.train:TrainConfig", "textless.lm.train:train_command")),
    "train-dialogue": Command(
        help="train a dGSLM (two-channel dialogue unit LM) on two-channel unit datasets; resumes automatically",
        description="Train fairseq's SpeechDLM (dGSLM) objective: windows of context frames cut from two-channel "
                    "conversations, edge-unit NLL + delayed run-duration L1 (weights 1 / 1), inverse_sqrt or "
                    "cosine schedule, grad accumulation, bf16 on GPU, validation (edge NLL / accuracy, duration L1 "
                    "/ accuracy), TensorBoard, atomic checkpoints with exact resume; DDP/FSDP under torchrun; "
                    "writes output_dir/final (a DGSLM directory). init: a preset (speech_dlm, speech_dlm_big, cpu, "
                    "tiny) or a saved DGSLM. Recipes: --config train-dialogue (default, fairseq's) | "
                    "train-dialogue-cpu.",
        add_arguments=_add_config_arguments,
        run=configured("train-dialogue", "textless.dialogue.dgslm.train:DialogueTrainConfig",
                       "textless.dialogue.dgslm.train:train_dialogue_command")),
    "train-duplex": Command(
        help="train a full-duplex unit LM (native stream fusion or time multiplexing) on two-channel unit datasets; "
             "resumes automatically",
        description="Train a DuplexLM on windows of context frames cut from two-channel conversations, each "
                    "speaker in turn as the model's voice: format=native (listen + speak streams fused per frame; "
                    "layout listen_speak | content_lead | content_follow | content_dual, FLM-Audio's monologue "
                    "stream of deduplicated units) or format=tdm (listen / speak chunks in one sequence, "
                    "controlled=true for [speak] / [listen] switches). Weighted next-token CE (per-stream weights, "
                    "delays), cosine or inverse_sqrt schedule, grad accumulation, bf16 on GPU, validation (NLL and "
                    "accuracy per speak stream, frame_nll in nats per speak frame for both formats), TensorBoard, "
                    "atomic checkpoints with exact resume; DDP/FSDP under torchrun; writes output_dir/final (a "
                    "DuplexLM directory). init: scratch (backbone preset tiny | small | 350m), a text LM "
                    "(offline:smollm2-135m, HF dir, .gguf; TWIST-style) or a saved DuplexLM. Recipes: --config "
                    "train-duplex (default, from SmolLM2-135M) | train-duplex-cpu.",
        add_arguments=_add_config_arguments,
        run=configured("train-duplex", "textless.dialogue.duplex.train:DuplexTrainConfig",
                       "textless.dialogue.duplex.train:train_duplex_command")),
    "train-lslm": Command(
        help="teach a speaking unit LM to listen while it speaks and stop with IRQ when interrupted (LSLM); "
             "resumes automatically",
        description="Train a ListenSpeakLM on a `textless build-lslm` set: the speaking audio's frame-level units "
                    "(units_tokenizer) and the listening channel's continuous features (listening.encoder: mfcc, an "
                    "HF encoder or offline:whisper-base, any layer; frozen) prepared once and cached; fusion=early | "
                    "middle | late (LSLM) | sum (duplex S2S); IRQ mu seconds after an interruption's onset, then "
                    "nothing; validation NLL and speak_nll; TensorBoard, atomic checkpoints with exact resume; writes "
                    "output_dir/final. init: scratch:<preset>, a UnitLM directory (freeze_lm=true: the projection "
                    "only) or a saved ListenSpeakLM. Recipe: --config train-lslm (default).",
        add_arguments=_add_config_arguments,
        run=configured("train-lslm", "textless.dialogue.lslm.train:LSLMTrainConfig",
                       "textless.dialogue.lslm.train:train_lslm_command")),
    "train-duplex-s2s": Command(
        help="train a duplex S2S model: a speaking unit LM summing the user's continuous features into every frame; "
             "resumes automatically",
        description="Train a ListenSpeakLM (fusion=sum: embed(agent unit) + user_weight * adapter(user features) per "
                    "frame, the agent one frame behind the user) on the agent channels of a `textless "
                    "build-duplex-s2s` set, in windows of context frames, with agent_bos / agent_eos at the agent's "
                    "turn boundaries (turn_markers); the rest as train-lslm. Recipe: --config train-duplex-s2s.",
        add_arguments=_add_config_arguments,
        run=configured("train-duplex-s2s", "textless.dialogue.lslm.duplex_s2s:DuplexS2STrainConfig",
                       "textless.dialogue.lslm.duplex_s2s:train_duplex_s2s_command")),
    "train-vocoder": Command(
        help="train a unit HiFi-GAN vocoder on a unit dataset and its audio; resumes automatically",
        description="Train a unit HiFi-GAN (fairseq CodeHiFiGAN; speechbrain MPD + MSD discriminators): random "
                    "segments of units paired with their audio, mel L1 + feature matching + LSGAN (+ duration "
                    "predictor), weight norm, bf16 on GPU, TensorBoard audio and mel figures, atomic checkpoints "
                    "with exact resume; writes output_dir/final for load_vocoder. Recipes: --config train-vocoder "
                    "(default) | vocoder_small (CPU starter).",
        add_arguments=_add_config_arguments,
        run=configured("train-vocoder", "textless.vocoders.train:VocoderTrainConfig",
                       "textless.vocoders.train:train_vocoder")),
    "generate": Command(
        help="continue speech prompts (audio or units) with a unit LM",
        description="Tokenize audio prompts (or read a unit dataset), keep the first prompt_seconds, sample "
                    "continuations (temperature, top_k, top_p, max_new_tokens, num_samples, seed; KV cache, "
                    "batched) and write a generations directory. Example: textless generate lm=outputs/lm/final "
                    "prompts=bundled:valid tokenizer=tok/",
        add_arguments=_add_config_arguments,
        run=configured("generate", "textless.jobs.generate:GenerateConfig", "textless.jobs.generate:generate")),
    "generate-dialogue": Command(
        help="continue two-channel conversations with a dGSLM (duration counters, teacher forcing, stereo audio)",
        description="Keep the first prompt_seconds of each conversation of a two-channel unit dataset, sample "
                    "max_frames more frames of both channels with fairseq's per-channel duration counters (or "
                    "teacher_force=A|B: feed one channel its recorded frames, generate the other), write the "
                    "generations as a two-channel unit dataset (resumable); vocoder= adds a stereo wav each "
                    "(channel 0 = A), reference= the turn-taking statistics against a reference dataset. Example: "
                    "textless generate-dialogue model=outputs/dgslm prompts=units/fisher_test vocoder=voc/",
        add_arguments=_add_config_arguments,
        run=configured("generate-dialogue", "textless.jobs.generate_dialogue:GenerateDialogueConfig",
                       "textless.jobs.generate_dialogue:generate_dialogues")),
    "duplex": Command(
        help="full-duplex sessions: feed recordings frame by frame to a duplex LM, write stereo (user, model) files",
        description="Each user recording (a mono file, or channel=0|1 of a stereo one; a directory, a manifest, "
                    "bundled:<split> or a dialogue builder directory with timelines) is fed frame by frame through "
                    "the streaming tokenizer (tokenizer=, default the starter), the duplex LM's generator "
                    "(temperature, top_k, top_p, seed) and the streaming vocoder (vocoder=, default the starter). "
                    "Writes per input a stereo float WAV at the vocoder's rate (channel 0 = the input exactly, "
                    "channel 1 = the model as heard live, delayed by the stated latency = tokenizer + model delay + "
                    "vocoder; compensate_latency=true aligns it with the user's frames), a timeline of both "
                    "speakers and a session JSON (latency, units, first-response latency, false alarms, barge-in, "
                    "LSLM when the input has a timeline); summary.json pools them. Bad inputs are reported and "
                    "skipped; a re-run skips the sessions done. Example: textless duplex model=outputs/duplex/final "
                    "input=recording.wav output=outputs/duplex_sessions",
        add_arguments=_add_config_arguments,
        run=configured("duplex", "textless.jobs.duplex:DuplexSessionConfig", "textless.jobs.duplex:run_duplex")),
    "preference-pairs": Command(
        help="Align-SLM preference pairs: sample, voice, transcribe and judge continuations; best vs worst",
        description="Sample num_samples continuations of each prompt (first prompt_seconds; temperature 0.8, top-k "
                    "25), vocode and transcribe them (asr=auto), score them with the judges (text-LM likelihood, "
                    "an LLM judge with a 1-5 rubric, repetition, length, silence), combine the scores (rule=) and "
                    "keep one best-vs-worst pair per prompt (selection.*: margin, thresholds, slamkit's auto-BLEU "
                    "filter). Sharded across ranks, resumable. Example: textless preference-pairs lm=starter "
                    "prompts=bundled:train output=outputs/pairs",
        add_arguments=_add_config_arguments,
        run=configured("preference-pairs", "textless.jobs.preference_pairs:PairsConfig",
                       "textless.jobs.preference_pairs:make_pairs")),
    "import-pairs": Command(
        help="import slamkit's preference jsonl (prompt/chosen/rejected wav paths) through a tokenizer",
        description="Tokenize the audio triplets of slamkit's preference jsonl ({prompt_path, chosen_path, "
                    "rejected_path} per line) with a tokenizer bundle into a preference dataset for textless dpo. "
                    "Example: textless import-pairs source=prefs.jsonl tokenizer=starter output=outputs/pairs",
        add_arguments=_add_config_arguments,
        run=configured("import-pairs", "textless.jobs.preference_pairs:ImportPairsConfig",
                       "textless.jobs.preference_pairs:import_slamkit_pairs")),
    "dpo": Command(
        help="DPO of a unit LM on preference pairs (full or LoRA); resumes automatically",
        description="Direct preference optimisation (sigmoid / IPO / hinge, beta 0.1; the loss of TRL's "
                    "DPOTrainer) of a unit LM on a preference dataset, against a frozen reference or reference "
                    "log-probs precomputed once, full fine-tuning or LoRA (merged or saved as an adapter), through "
                    "the training engine (exact resume, DDP, budgets, TensorBoard rewards / margins / accuracy). "
                    "Example: textless dpo policy=starter pairs=outputs/pairs output_dir=outputs/dpo",
        add_arguments=_add_config_arguments,
        run=configured("dpo", "textless.preference.train:DPOConfig", "textless.preference.train:dpo_command")),
    "align": Command(
        help="the Align-SLM curriculum: pairs from the current model -> DPO -> repeat; before/after evaluation",
        description="Iterate preference-pairs and dpo, raising the selection thresholds by a schedule, evaluating "
                    "the model before and after each iteration (held-out judge scores, likelihood suites); one "
                    "directory per iteration, resumable at any stage, a summary table and plot. Example: textless "
                    "align lm=starter prompts=bundled:train eval_prompts=bundled:valid output_dir=outputs/align",
        add_arguments=_add_config_arguments,
        run=configured("align", "textless.jobs.align:AlignConfig", "textless.jobs.align:run_align")),
    "eval": Command(
        help="likelihood suites: sWUGGY, sBLIMP, spoken/topic StoryCloze, SALMon (accuracy + JSON report)",
        description="Tokenize every wav of the suites' official layouts once, score them with a unit LM (mean "
                    "log-prob per token over bos + units + eos by default, as slamkit), compare each pair (ties "
                    "0.5) and aggregate as the official code (ZeroSpeech voice averaging and frequency bands). "
                    "Writes a JSON report and the ZeroSpeech 2021 submission files. Example: textless eval "
                    "suite=[swuggy,sblimp] path=/data/zr2021 pipeline=outputs/pipeline",
        add_arguments=_add_config_arguments,
        run=configured("eval", "textless.jobs.evaluate:EvalConfig", "textless.jobs.evaluate:run_eval")),
    "eval-generation": Command(
        help="ASR-based metrics of generated speech: auto-BLEU, self-BLEU, VERT, GenPPL",
        description="Transcribe the audio of a generations directory (textless generate ... vocoder=) once (cached), "
                    "then report auto-BLEU (fairseq and slamkit variants) on transcripts and units, self-BLEU, VERT "
                    "and GenPPL (slamkit and fairseq definitions) with a text LM; writes a JSON report. Example: "
                    "textless eval-generation generations=outputs/generations output=report.json",
        add_arguments=_add_config_arguments,
        run=configured("eval-generation", "textless.jobs.eval_generation:EvalGenerationConfig",
                       "textless.jobs.eval_generation:evaluate_generations")),
    "eval-tokenizer": Command(
        help="measure a tokenizer on aligned speech: ABX, phone/cluster purity, PNMI, bitrate",
        description="Run a tokenizer bundle over a dataset with phone alignments (default bundled:valid_unseen) and "
                    "report ABX within/across speakers (ZeroSpeech 2021 definition; on the encoder features and on "
                    "the units), phone purity, cluster purity, PNMI (HuBERT) and unit bitrate. Example: textless "
                    "eval-tokenizer tokenizer=tok/ dataset=bundled:valid_unseen output=report.json",
        add_arguments=_add_config_arguments,
        run=configured("eval-tokenizer", "textless.eval.tokenizer_metrics:EvalTokenizerConfig",
                       "textless.eval.tokenizer_metrics:run_eval_tokenizer")),
    "dialogue-stats": Command(
        help="dGSLM turn-taking statistics of conversations (IPU, pause, gap, overlap), against a reference",
        description="Per conversation and pooled: IPUs (speech bounded by >= 200 ms silence), pauses, gaps and "
                    "overlaps as events and seconds per minute with mean / median durations, from timelines "
                    "(a directory or a dialogue builder's manifest.jsonl), an RTTM file, a two-channel unit dataset "
                    "(silence_units=) or stereo audio (VAD per channel, vad=); with reference= the dGSLM table "
                    "(differences, Wasserstein and Jensen-Shannon distances of the durations). Writes stats.json, "
                    "timelines.png and durations.png. Example: textless dialogue-stats input=calls.rttm "
                    "duration=30 output=outputs/dialogue_stats",
        add_arguments=_add_config_arguments,
        run=configured("dialogue-stats", "textless.jobs.dialogue_stats:DialogueStatsConfig",
                       "textless.jobs.dialogue_stats:run_dialogue_stats")),
    "eval-duplex": Command(
        help="interaction metrics of a full-duplex model: LSLM, barge-in, false alarms, Full-Duplex-Bench",
        description="From each session's model output audio (VAD gives its stop times) and the user's timeline: "
                    "LSLM precision / recall / F1 of stopping when interrupted, barge-in success and latency, false "
                    "alarms, first-response latency, Full-Duplex-Bench v1 TOR / latency (word timestamps, "
                    "asr=faster-whisper) and backchannel TOR / frequency / JSD; what cannot be computed is "
                    "listed as skipped. Writes report.json. Example: textless eval-duplex "
                    "sessions=outputs/dialogues output=outputs/eval_duplex",
        add_arguments=_add_config_arguments,
        run=configured("eval-duplex", "textless.jobs.eval_duplex:EvalDuplexConfig",
                       "textless.jobs.eval_duplex:run_eval_duplex")),
    "build-benchmark": Command(
        help="build sWUGGY/sBLIMP-style sets with local TTS voices (ZeroSpeech 2021 layout)",
        description="Word / non-word pairs (CMUdict words; non-words by same-class phone substitutions with attested "
                    "trigrams, both synthesized from phones by the same voice: espeak-ng + MBROLA or festival) and "
                    "grammatical / ungrammatical template pairs (agreement, argument structure, anaphors, islands, "
                    "NPIs) read from text, written as <output>/lexical/dev and <output>/syntactic/dev (wavs + "
                    "gold.csv), deterministic for a seed. Needs the Debian TTS packages listed in "
                    "textless/recipes/build-benchmark.yaml. Example: textless build-benchmark --config "
                    "build-benchmark-unseen output=outputs/bench/unseen",
        add_arguments=_add_config_arguments,
        run=configured("build-benchmark", "textless.eval.builder.job:BuildBenchmarkConfig",
                       "textless.eval.builder.job:build_benchmark")),
    "build-dialogues": Command(
        help="build synthetic two-party conversations with exact timelines (turns, overlaps, backchannels, interruptions)",
        description="Two local TTS voices per conversation read sentences (WordNet examples, the bundled corpus or a "
                    "text file) on a seeded schedule of turns, pauses, gaps, overlaps, backchannels and (ignored) "
                    "interruptions with human-like timing (textless.dialogue.builder.TimingConfig), optionally with "
                    "noise per channel; writes <output>/stereo, mono, timelines (segments = true speech extents), "
                    "rttm, manifest.jsonl and summary.json (real-time factor). Deterministic for a seed however it "
                    "is sharded (rank=, world_size=, num_workers=); a re-run skips complete conversations. Example: "
                    "textless build-dialogues output=outputs/dialogues num_conversations=100 seconds=120",
        add_arguments=_add_config_arguments,
        run=configured("build-dialogues", "textless.jobs.build_dialogues:BuildDialoguesConfig",
                       "textless.jobs.build_dialogues:build_dialogues")),
    "build-lslm": Command(
        help="build LSLM listen-while-speaking data: TTS utterances with a noisy / interrupted listening channel",
        description="Sentences read by local TTS voices (the speaking channel, trimmed to speech) and, as long, a "
                    "listening channel with noise (p 0.5) and an interruption (p 0.5): one keyword ('honey') said "
                    "by many voices (setting=command) or many words with held-out test speakers (setting=voice, "
                    "held_out_voices=[...]), placed so that its speech starts at the recorded onset (Ma et al. "
                    "2024). Writes <output>/speaking, listening (16 kHz wav), examples.jsonl (train / valid / test, "
                    "onsets) and summary.json; nothing is tokenized. Deterministic for a seed however it is sharded; "
                    "a re-run skips complete examples. Example: textless build-lslm output=outputs/lslm "
                    "num_train=2000 num_test=1000",
        add_arguments=_add_config_arguments,
        run=configured("build-lslm", "textless.jobs.build_lslm:BuildLSLMConfig",
                       "textless.jobs.build_lslm:build_lslm")),
    "build-duplex-s2s": Command(
        help="build duplex S2S data: user / agent streams of multi-turn QA with barge-ins (and an impatient test set)",
        description="User questions and agent answers read by local TTS voices (held-out test users: "
                    "held_out_voices=[...]; agent_voice= fixes the agent) on two streams, the agent answering 0.64 s "
                    "after the user's turn, the user barging in with barge_in_prob (the agent keeps 0.64 s of "
                    "speech), turns= pairs per conversation; the test split also gets an 'impatient' copy with the "
                    "gaps before user turns halved (seed 003). source=dialogues dialogues=<dir> splits a "
                    "build-dialogues set into user / agent instead. Writes <output>/<set>/stereo (16 kHz wav, channel "
                    "0 user), timelines, manifest.jsonl (agent turns, barge-ins) and summary.json. Deterministic for a "
                    "seed however it is sharded; a re-run skips complete conversations. Example: textless "
                    "build-duplex-s2s output=outputs/duplex_s2s num_train=2000 num_test=200",
        add_arguments=_add_config_arguments,
        run=configured("build-duplex-s2s", "textless.jobs.build_duplex_s2s:BuildDuplexS2SConfig",
                       "textless.jobs.build_duplex_s2s:build_duplex_s2s")),
    "eval-resynth": Command(
        help="resynthesis quality: WER/CER of originals vs resyntheses, and their levels (silence kept silent?)",
        description="Resynthesize a dataset with transcripts (the starter pipeline, --pipeline-style pipeline=, or "
                    "tokenizer= + vocoder=), transcribe originals and resyntheses (asr=auto) and report WER / CER per "
                    "item and overall (Whisper English normaliser, digits split) with RMS level, silent-frame ratio "
                    "(20 ms frames under -60 dBFS) and the quiet floor of each. Example: textless eval-resynth "
                    "dataset=bundled:valid_unseen output=outputs/eval_resynth",
        add_arguments=_add_config_arguments,
        run=configured("eval-resynth", "textless.jobs.eval_resynth:EvalResynthConfig",
                       "textless.jobs.eval_resynth:evaluate_resynthesis")),
    "resynth": Command(
        help="resynthesize speech: audio -> units -> audio (a file or a dataset)",
        description="Tokenize audio and vocode the units back (the starter pipeline by default, or --pipeline, or "
                    "--tokenizer + --vocoder of any supported format). Example: textless resynth in.wav out.wav",
        add_arguments=_resynth_arguments, run=_run_resynth),
    "info": Command(
        help="describe an audio dataset or a unit dataset",
        description="Print size, speakers and duration of an audio dataset, or vocabulary, rate and unit "
                    "statistics (units/s, run length, entropy, bitrate) of a unit dataset.",
        add_arguments=_info_arguments, run=_run_info),
    "manifest": Command(
        help="write a TSV/JSONL manifest for an audio directory or another manifest",
        description="Scan a directory (or read a manifest, fairseq's included) and write a textless manifest "
                    "with deterministic ids and durations read from the audio headers.",
        add_arguments=_manifest_arguments, run=_run_manifest),
    "units": Command(
        help="import/export/convert unit datasets (fairseq .km, gslm, slamkit)",
        description="Lossless conversion between textless unit datasets and the anchors' unit files: fairseq .km "
                    "(+ dict.km.txt), gslm 'name|u u u' lines, slamkit features.jsonl; and jsonl <-> binary.",
        add_arguments=_units_arguments, run=_run_units),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="textless", description="Textless spoken language modeling.")
    parser.add_argument("--version", action="version", version=f"textless {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.description,
                           schema=getattr(command.run, "schema", None))
        command.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from textless.utils.log import enable_cli_logging

    enable_cli_logging()
    # no "Loading weights" bars on every model load (ours show the long work): the environment variable before
    # transformers is imported (importing it here would cost a second before a mistyped key could be reported)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    try:
        return COMMANDS[args.command].run(args) or 0
    except (TextlessError, FileExistsError) as e:  # FileExistsError: an output exists and --overwrite was not given
        if args.debug:
            raise
        message = f"{e} (pass --overwrite to replace it)" if isinstance(e, FileExistsError) else str(e)
        print(f"textless: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("textless: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
