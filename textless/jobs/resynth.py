"""`textless resynth`: audio -> units -> audio, for one file or a whole dataset.

    textless resynth in.wav out.wav                          # the starter pipeline (tokenizer + vocoder)
    textless resynth bundled:valid out_dir/ --tokenizer tok/ --vocoder voc/ --speaker slt

A file input writes one file, and a failure is an error. A dataset (directory, manifest, ``bundled:<split>``) writes
``<output>/<id>.wav`` for each utterance (ids with "/" become sub-directories); unreadable or too-short inputs are
reported and skipped while the rest completes. Every file is read window by window and written piece by piece, and
published atomically (`SpeechPipeline.resynthesize_file`): memory does not grow with a file's length. A re-run
skips utterances whose output exists (resume), only for the same pipeline (tokenizer identity, vocoder weights) and
speaker, recorded in ``<output>/.textless-run.json``; anything else is refused with the differences (``restart``
starts over). A multi-speaker vocoder speaks with ``--speaker`` (a name or id), else each utterance's own speaker
when the vocoder knows it, else the pipeline's default voice.
"""

from __future__ import annotations

import logging
from pathlib import Path

from textless.data import load_dataset
from textless.data.manifest import AudioItem
from textless.errors import TextlessError
from textless.pipeline import SpeechPipeline, starter_pipeline
from textless.tokenizers.bundle import SpeechTokenizer
from textless.utils.runs import module_fingerprint, resume_or_record
from textless.vocoders import load_vocoder

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
RECORD_FILE = ".textless-run.json"


def build_pipeline(pipeline: str | None, tokenizer: str | None, vocoder: str | None, device: str = "cpu",
                   trust_pickle: bool = False) -> SpeechPipeline:
    """A `SpeechPipeline` (no LM) from a pipeline directory, or from a tokenizer bundle + any vocoder checkpoint
    (``trust_pickle``: allow a fairseq checkpoint that pickles more than tensors); with neither, the starter."""
    if tokenizer or vocoder:
        if not (tokenizer and vocoder):
            raise TextlessError("pass both --tokenizer and --vocoder (or --pipeline)")
        voc = load_vocoder(vocoder, device=device, trust_pickle=trust_pickle)
        speakers = voc.config.speakers or []
        return SpeechPipeline(SpeechTokenizer.from_pretrained(tokenizer, device=device), None, voc,
                              default_speaker=speakers[0] if speakers else (0 if voc.config.multispkr else None))
    if pipeline:
        return SpeechPipeline.from_pretrained(pipeline, device=device, load_lm=False)
    return starter_pipeline(device=device, load_lm=False)


def pipeline_identity(pipeline: SpeechPipeline) -> dict[str, str]:
    """What a resynthesis depends on: the tokenizer's units and the vocoder's weights (`module_fingerprint`)."""
    return {"tokenizer": pipeline.tokenizer.unit_identity().describe(),
            "vocoder": module_fingerprint(pipeline.vocoder.generator)}


def resynthesize(source: str, output: str, *, pipeline: SpeechPipeline, speaker: str | int | None = None,
                 restart: bool = False) -> list[dict]:
    """Resynthesize `source` (a file or a dataset) into `output`; returns the failures of a dataset ({"id", "path",
    "error"}). A single file's failure raises. `speaker`: a name, an id, or an id written as a string ("3")."""
    if isinstance(speaker, str) and speaker.isdigit():
        speaker = int(speaker)
    src = Path(source)
    if src.is_file() and src.suffix.lower() in AUDIO_SUFFIXES:
        units = pipeline.resynthesize_file(src, output, speaker=speaker)
        frames = int(units.durations.sum()) if units.durations is not None else len(units.ids)
        logger.info(f"wrote {output}: {frames / pipeline.tokenizer.frame_rate:.2f} s")
        return []
    items: list[AudioItem] = list(load_dataset(source))
    if not items:
        raise TextlessError(f"no audio in '{source}'")
    out = Path(output)
    if restart:  # only what this job writes: the record and this dataset's outputs (other files stay)
        removed = [p for p in (out / RECORD_FILE, *(out / f"{item.id}.wav" for item in items)) if p.is_file()]
        for p in removed:
            p.unlink()
        logger.info(f"--restart: removed {len(removed)} files of an earlier run from {out}")
    resume_or_record(out, {**pipeline_identity(pipeline), "speaker": speaker, "dataset": load_dataset(source).identity()},
                     what=f"the resynthesis in {out}", filename=RECORD_FILE, restart=restart,
                     how_to_restart="or pass --restart to replace its files (or choose another output)")
    failures: list[dict] = []
    done = skipped = 0
    for item in items:
        target = out / f"{item.id}.wav"
        if target.exists():
            skipped += 1
            continue
        try:
            pipeline.resynthesize_file(item.path, target, speaker=speaker if speaker is not None else item.speaker)
            done += 1
        except TextlessError as e:
            failures.append({"id": item.id, "path": str(item.path), "error": str(e)})
            logger.warning(f"failed {item.id}: {e}")
    logger.info(f"wrote {out}: {done} resynthesized" + (f", {skipped} already there" if skipped else "")
                + (f", {len(failures)} failed" if failures else ""))
    return failures
