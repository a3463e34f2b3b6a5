"""`textless resynth`: audio -> units -> audio, for one file or a whole dataset.

    textless resynth in.wav out.wav                          # the starter pipeline (tokenizer + vocoder)
    textless resynth bundled:valid out_dir/ --tokenizer tok/ --vocoder voc/ --speaker slt

A file input writes one file; a dataset (directory, manifest, ``bundled:<split>``) writes ``<output>/<id>.wav`` for
each utterance (ids with "/" become sub-directories). Each file is written atomically; unreadable or too-short inputs
are reported and skipped while the rest completes, and a re-run skips utterances whose output exists (resume).
A multi-speaker vocoder speaks with ``--speaker`` (a name or id), else each utterance's own speaker when the vocoder
knows it, else the pipeline's default voice.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textless.audio import load_audio, save_audio
from textless.errors import TextlessError

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def build_pipeline(pipeline: str | None, tokenizer: str | None, vocoder: str | None, device: str = "cpu"):
    """A `SpeechPipeline` (no LM) from a pipeline directory, or from a tokenizer bundle + any vocoder checkpoint; with
    neither, the starter pipeline."""
    from textless.pipeline import SpeechPipeline, starter_pipeline
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.vocoders import load_vocoder

    if tokenizer or vocoder:
        if not (tokenizer and vocoder):
            raise TextlessError("pass both --tokenizer and --vocoder (or --pipeline)")
        voc = load_vocoder(vocoder, device=device)
        speakers = voc.config.speakers or []
        return SpeechPipeline(SpeechTokenizer.from_pretrained(tokenizer, device=device), None, voc,
                              default_speaker=speakers[0] if speakers else (0 if voc.config.multispkr else None))
    if pipeline:
        return SpeechPipeline.from_pretrained(pipeline, device=device, load_lm=False)
    return starter_pipeline(device=device, load_lm=False)


def resynthesize(source: str, output: str, *, pipeline=None, speaker: str | None = None) -> list[dict]:
    """Resynthesize `source` (a file or a dataset) into `output`; returns the failures ({"id", "path", "error"})."""
    from textless.data import load_dataset
    from textless.data.manifest import AudioItem

    src = Path(source)
    single = src.is_file() and src.suffix.lower() in AUDIO_SUFFIXES
    items = [AudioItem(src.stem, src)] if single else list(load_dataset(source))
    if not items:
        raise TextlessError(f"no audio in '{source}'")
    out = Path(output)
    failures: list[dict] = []
    done = skipped = 0
    for item in items:
        target = out if single else out / f"{item.id}.wav"
        if not single and target.exists():
            skipped += 1
            continue
        try:
            wav, sr = load_audio(item.path)
            audio, _ = pipeline.resynthesize(wav, sr, speaker=speaker if speaker is not None else item.speaker)
            save_audio(target, audio, pipeline.sample_rate)
            done += 1
        except TextlessError as e:
            failures.append({"id": item.id, "path": str(item.path), "error": str(e)})
            logger.info(f"failed {item.id}: {e}")
    logger.info(f"wrote {out}: {done} resynthesized" + (f", {skipped} already there" if skipped else "")
                + (f", {len(failures)} failed" if failures else ""))
    return failures
