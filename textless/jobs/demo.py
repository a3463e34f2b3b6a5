"""The main job on the embedded default, run by `make demo` / `textless demo`.

``mode=starter`` (default): the whole chain with the starter pipeline that ships with textless (offline Whisper-base
layer 4 + k-means 100 units, a small unit LM and a small unit HiFi-GAN, all trained on the bundled corpus):

1. the prompt: the first ``prompt_seconds`` of a held-out bundled utterance (or ``prompt=<audio file>``);
2. tokenize it (audio -> deduplicated units), vocode the units back (the resynthesis);
3. continue the units with the unit LM (TWIST sampling: temperature 0.8, up to 3 x the prompt length) and vocode
   prompt + continuation as one sequence (the prompt's own durations, predicted ones for the new units);
4. write ``prompt.wav``, ``resynthesis.wav``, ``continuation.wav``, ``units.json`` and ``demo.png`` (waveforms and
   spectrograms with unit boundaries; a red line where the continuation starts) under ``output_dir``, transcribe the
   three with the offline Whisper-base (``transcribe=false`` skips it), and print per-stage timings;
5. tokenize a bundled split (``corpus_split``, default the held-out utterances of the training voices) and report the
   tokenizer's frame rate and the units' statistics (units/s, frames per unit, entropy, bitrate).

``mode=train``: build the stages from scratch instead (`textless.jobs.demo_train`).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textless.data.corpus import SPLITS
from textless.errors import ConfigError
from textless.utils.atomic import atomic_write_text
from textless.utils.table import format_table

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    mode: str = "starter"            # starter | train
    output_dir: str = "outputs/demo"
    seed: int = 0
    progress: bool = True
    # starter mode
    prompt: str | None = None        # an audio file; default: a held-out bundled utterance (bundled:valid)
    prompt_seconds: float = 3.0
    speaker: str | None = None       # vocoder voice (default: the prompt's speaker if the vocoder knows it)
    temperature: float = 0.8
    max_new_tokens: int = 250
    min_new_tokens: int = 50         # no end-of-utterance before this many units (~1.8 s)
    transcribe: bool = True          # Whisper-base transcripts of the three wav files
    corpus_split: str | None = "valid"  # tokenize this bundled split and report its unit statistics (null: skip)
    device: str = "cpu"
    # train mode (textless.jobs.demo_train)
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    encoder: str = "mfcc"
    layer: int | None = None
    k: int = 100
    backend: str = "faiss"
    oracle_frame_rate: float = 50.0
    lm_preset: str = "tiny"
    lm_steps: int = 300
    lm_context: int = 256
    lm_lr: float = 3e-3


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


CLEAR_VOICES = ("awb", "bdl", "rms", "kal", "clb")  # flite CMU ARCTIC voices: Whisper-base hears them best


def _default_prompt():
    """A held-out utterance (bundled valid split) of a clear training voice, with a transcript and >= 4 s of audio."""
    from textless.data.corpus import load_bundled_corpus

    items = [i for i in load_bundled_corpus("valid") if i.transcript and (i.duration or 0) >= 4.0]
    return min(items, key=lambda i: (CLEAR_VOICES.index(i.speaker) if i.speaker in CLEAR_VOICES else 99, i.id))


def _boundaries(durations: np.ndarray, frame_rate: float, offset: float = 0.0) -> list[float]:
    return list(offset + np.cumsum(durations)[:-1] / frame_rate)


def corpus_unit_statistics(tok, split: str, batch_size: int = 8):
    """Tokenize the bundled `split` with `tok` (a SpeechTokenizer) -> `UnitStats` of its units."""
    from textless.audio import load_audio
    from textless.data.corpus import load_bundled_corpus
    from textless.data.units import UnitSequence
    from textless.eval.unit_stats import unit_statistics

    items = list(load_bundled_corpus(split))
    sequences = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        wavs = [load_audio(item.path, tok.sample_rate)[0] for item in batch]
        for item, units in zip(batch, tok.encode_batch(wavs, tok.sample_rate)):
            sequences.append(UnitSequence(item.id, units.ids, units.durations))
    return unit_statistics(sequences, tok.frame_rate, tok.vocab_size)


def run_starter_demo(cfg: DemoConfig) -> dict:
    from textless.audio import load_audio, save_audio
    from textless.lm.generation import SamplingConfig, generate_units
    from textless.pipeline import starter_pipeline
    from textless.utils.plots import SpeechPanel, plot_speech

    out = Path(cfg.output_dir)
    timer = _Timer()
    with timer("load models"):
        pipeline = starter_pipeline(device=cfg.device)
    tok, lm, voc = pipeline.tokenizer, pipeline.lm, pipeline.vocoder
    item = None if cfg.prompt else _default_prompt()
    source = Path(cfg.prompt) if cfg.prompt else item.path
    with timer("read audio"):
        wav, _ = load_audio(source, tok.sample_rate)
        prompt = wav[: int(cfg.prompt_seconds * tok.sample_rate)].numpy()
    speaker = cfg.speaker or (item.speaker if item is not None else None)
    with timer("tokenize"):
        units = tok.encode(prompt, tok.sample_rate)
    with timer("vocode"):
        resynthesis = pipeline.vocode(units.ids, units.durations, speaker)
    sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                              min_new_tokens=cfg.min_new_tokens, seed=cfg.seed)
    with timer("generate (unit LM)"):
        new = generate_units(lm, [units.ids], sampling)[0][0]
    with timer("vocode"):
        new_durations = voc.predict_durations([new])[0] if len(new) else np.zeros(0, np.int64)
        all_units = np.concatenate([units.ids, new])
        all_durations = np.concatenate([units.durations, new_durations])
        continuation = pipeline.vocode(all_units, all_durations, speaker)
    sr = voc.sample_rate
    files = {"prompt": out / "prompt.wav", "resynthesis": out / "resynthesis.wav",
             "continuation": out / "continuation.wav"}
    with timer("write"):
        save_audio(files["prompt"], prompt, tok.sample_rate)
        save_audio(files["resynthesis"], resynthesis, sr)
        save_audio(files["continuation"], continuation, sr)
        atomic_write_text(out / "units.json", json.dumps({
            "prompt_units": units.ids.tolist(), "prompt_durations": units.durations.tolist(),
            "continuation_units": new.tolist(), "continuation_durations": new_durations.tolist()}))
    prompt_end = units.durations.sum() / tok.frame_rate
    with timer("plot"):
        plot_speech([SpeechPanel(f"prompt ({source.name}, first {cfg.prompt_seconds:g} s)", prompt, tok.sample_rate,
                                 _boundaries(units.durations, tok.frame_rate)),
                     SpeechPanel(f"resynthesis: {len(units.ids)} units ({tok.identity()['name']}) -> vocoder",
                                 resynthesis, sr, _boundaries(units.durations, tok.frame_rate)),
                     SpeechPanel(f"continuation: prompt + {len(new)} generated units (after the red line)",
                                 continuation, sr, _boundaries(all_durations, tok.frame_rate), marker=prompt_end)],
                    out / "demo.png", title="textless starter pipeline: audio -> units -> unit LM -> audio")
    transcripts = {}
    if cfg.transcribe:
        from textless.eval.asr import load_asr

        with timer("transcribe (Whisper-base)"):
            asr = load_asr("offline:whisper-base", device=cfg.device)
            texts = asr.transcribe([prompt, resynthesis, continuation])
        transcripts = dict(zip(files, texts))
    corpus_stats = None
    if cfg.corpus_split:
        with timer(f"tokenize bundled:{cfg.corpus_split}"):
            corpus_stats = corpus_unit_statistics(tok, cfg.corpus_split)
    seconds = len(prompt) / tok.sample_rate
    logger.info(f"prompt: {source} (first {seconds:.1f} s){'; speaker ' + speaker if speaker else ''}")
    if item is not None and item.transcript:
        logger.info(f"  reference transcript: {item.transcript}")
    logger.info(f"units: {len(units.ids)} deduplicated units from {units.durations.sum()} frames at "
                f"{tok.frame_rate:g} Hz "
                f"({len(units.ids) / seconds:.1f} units/s, tokenizer {tok.identity()['name']})")
    logger.info(f"continuation: {len(new)} new units ({new_durations.sum() / tok.frame_rate:.1f} s), "
                f"temperature {cfg.temperature:g}, seed {cfg.seed}")
    for name, text in transcripts.items():
        logger.info(f"  Whisper-base hears in {name}.wav: {text!r}")
    if corpus_stats is not None:
        st = corpus_stats
        logger.info(f"bundled:{cfg.corpus_split} through {tok.identity()['name']} ({tok.frame_rate:g} Hz frames, "
                    f"{tok.vocab_size} units):")
        header = ["utts", "seconds", "units/s", "frames/unit", "used units", "entropy bits", "bitrate b/s"]
        logger.info(format_table(header,
                         [[st.utterances, st.seconds, st.units_per_second, st.mean_run_frames, st.used_units,
                           st.entropy_bits, st.bitrate]]))
    logger.info(format_table(["stage", "seconds"], [[k, v] for k, v in timer.seconds.items()]))
    logger.info(f"wrote {', '.join(str(f) for f in files.values())}, {out / 'units.json'} and {out / 'demo.png'}")
    if pipeline.notes:
        logger.info(f"note: {pipeline.notes}")
    summary = {"prompt": str(source), "speaker": speaker, "prompt_seconds": seconds, "units": len(units.ids),
               "continuation_units": len(new), "files": {k: str(v) for k, v in files.items()},
               "picture": str(out / "demo.png"), "transcripts": transcripts, "frame_rate": tok.frame_rate,
               "corpus_units": None if corpus_stats is None else {"split": cfg.corpus_split, **corpus_stats.to_dict()},
               "timings_s": timer.seconds}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    logger.info(f"wrote {out / 'summary.json'} (all of the above, as JSON)")
    return summary


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo (see the module docstring); returns the summary also written to ``<output_dir>/summary.json``."""
    if cfg.mode == "starter":
        return run_starter_demo(cfg)
    if cfg.mode == "train":
        from textless.jobs.demo_train import run_training_demo

        return run_training_demo(cfg)
    raise ConfigError(f"demo mode must be 'starter' or 'train', got {cfg.mode!r}")
