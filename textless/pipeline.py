"""The whole chain in one object: audio -> units (tokenizer) -> units (unit LM) -> audio (vocoder).

A pipeline directory (``SpeechPipeline.save_pretrained`` / ``from_pretrained``)::

    pipeline.json   {"format": "textless.pipeline", "version": 1, "tokenizer": "tokenizer", "lm": "lm" | null,
                     "vocoder": "vocoder" | null, "default_speaker": name | null, "notes": str}
    tokenizer/      SpeechTokenizer bundle
    lm/             UnitLM directory (optional: resynthesis needs none)
    vocoder/        UnitVocoder directory (optional: units-only continuation needs none)

Parts are checked against each other when loaded: the LM must accept the tokenizer's units (`UnitLM.check_units`) and
the vocoder must have been trained on units of the same tokenizer (name and k-means hash, when it records them) with
the same deduplication. The starter pipeline that ships with textless (`starter_pipeline`, trained on the bundled
corpus; see ``textless/assets/starter/README.md``) is the embedded default of ``make demo``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from textless.audio import AudioWriter
from textless.data.units import UnitSequence, crop_prompt
from textless.errors import TextlessError
from textless.lm.generation import SamplingConfig, generate_units
from textless.lm.model import UnitLM
from textless.tokenizers.bundle import SpeechTokenizer
from textless.utils.assets import STARTER_DIR, starter_part
from textless.utils.atomic import atomic_directory
from textless.utils.hf import quiet_progress_bars
from textless.utils.versioned import artifact
from textless.vocoders import UnitVocoder
from textless.vocoders.generator import receptive_field_frames
from textless.vocoders.synthesis import iter_synthesize_long

PIPELINE = artifact("textless.pipeline", 1, "a speech pipeline directory")
CONFIG_FILE = "pipeline.json"


@dataclass
class Continuation:
    """One continued prompt: deduplicated prompt units (ids, durations) and the sampled continuation units, with
    their audio (float32 [T] at ``sample_rate``; None without a vocoder)."""

    prompt_units: np.ndarray
    prompt_durations: np.ndarray | None
    units: np.ndarray
    prompt_audio: np.ndarray | None
    audio: np.ndarray | None
    sample_rate: int


class SpeechPipeline:
    """Tokenizer + optional unit LM + optional vocoder, checked to fit together."""

    def __init__(self, tokenizer, lm=None, vocoder=None, default_speaker: str | int | None = None, notes: str = ""):
        self.tokenizer, self.lm, self.vocoder = tokenizer, lm, vocoder
        self.default_speaker = default_speaker
        self.notes = notes
        self._check()

    # ------------------------------------------------------------------------------------------------- checks
    def _check(self) -> None:
        """The units contract: the LM takes what the tokenizer makes, the vocoder voices the tokenizer's units (BPE
        tokens are decoded back to units before vocoding)."""
        made = self.tokenizer.unit_identity()
        if self.lm is not None:
            self.lm.check_units(made, where="the pipeline's tokenizer", name="the pipeline's LM")
        if self.vocoder is not None:
            units = replace(made, vocab_size=self.tokenizer.num_units, bpe=False)
            self.vocoder.check_units(units, where="the pipeline's tokenizer", name="the pipeline's vocoder")

    # ------------------------------------------------------------------------------------------------- audio
    @property
    def sample_rate(self) -> int:
        """Output audio rate (the vocoder's) in Hz."""
        if self.vocoder is None:
            raise TextlessError("this pipeline has no vocoder")
        return self.vocoder.sample_rate

    def _speaker(self, speaker):
        if self.vocoder is None or not self.vocoder.config.multispkr:
            return None
        chosen = self.default_speaker if speaker is None else speaker
        if chosen is None:
            raise TextlessError("this vocoder is multi-speaker: pass speaker= (a name or id) or set default_speaker")
        names = self.vocoder.config.speakers or []
        if isinstance(chosen, str) and chosen not in names and self.default_speaker is not None:
            chosen = self.default_speaker  # a speaker the vocoder never heard: its default voice
        return self.vocoder.speaker_id(chosen)

    def iter_vocode(self, units: np.ndarray, durations: np.ndarray | None = None, speaker=None) -> Iterator[np.ndarray]:
        """Units [L] (deduplicated: durations given, or predicted) -> consecutive pieces of the waveform (float32, at
        `sample_rate`), synthesised in windows with a full receptive field of context on each side, so the pieces
        equal whole-sequence synthesis (up to float rounding) at a memory cost that does not grow with the length."""
        if self.vocoder is None:
            raise TextlessError("this pipeline has no vocoder")
        context = receptive_field_frames(self.vocoder.config)
        return iter_synthesize_long(self.vocoder, np.asarray(units), durations, chunk_frames=max(500, 4 * context),
                                    context_frames=context, speaker=self._speaker(speaker))

    def vocode(self, units: np.ndarray, durations: np.ndarray | None = None, speaker=None) -> np.ndarray:
        """Units [L] (deduplicated: durations given, or predicted) -> waveform float32 [T] at `sample_rate`."""
        pieces = list(self.iter_vocode(units, durations, speaker))
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def resynthesize(self, wav, sample_rate: int, speaker=None) -> tuple[np.ndarray, object]:
        """Waveform [T] at `sample_rate` -> (resynthesized waveform [T'] at `self.sample_rate`, its `Units`)."""
        units = self.tokenizer.encode(wav, sample_rate)
        ids, durations = self.tokenizer.to_units(units)
        return self.vocode(ids, durations, speaker), units

    def resynthesize_file(self, source: str | Path, output: str | Path, speaker=None):
        """An audio file of any length -> its resynthesis written to `output` (atomically); returns its `Units`.

        Read window by window (`SpeechTokenizer.encode_file`) and written piece by piece (`iter_vocode`): memory is
        flat in the input's length (benchmarks/resynth_memory.py)."""
        units = self.tokenizer.encode_file(source)
        ids, durations = self.tokenizer.to_units(units)
        with AudioWriter(output, self.sample_rate) as out:
            for piece in self.iter_vocode(ids, durations, speaker):
                out.write(piece)
        return units

    def continue_speech(self, wav, sample_rate: int, *, prompt_seconds: float | None = None, sampling=None,
                        speaker=None) -> Continuation:
        """Tokenize a prompt (its first `prompt_seconds`), continue it with the LM, and vocode both parts."""
        if self.lm is None:
            raise TextlessError("this pipeline has no unit LM")
        units = self.tokenizer.encode(wav, sample_rate)
        prompt = crop_prompt(UnitSequence("prompt", units.ids, units.durations), prompt_seconds,
                             self.tokenizer.frame_rate)
        new = generate_units(self.lm, [prompt.units], sampling or SamplingConfig())[0][0]
        prompt_audio = audio = None
        if self.vocoder is not None:
            prompt_audio = self.vocode(prompt.units, prompt.durations, speaker)
            audio = self.vocode(new, None, speaker) if len(new) else np.zeros(0, np.float32)
        return Continuation(prompt.units, prompt.durations, np.asarray(new), prompt_audio, audio,
                            self.vocoder.sample_rate if self.vocoder is not None else self.tokenizer.sample_rate)

    # ------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        config = {"tokenizer": "tokenizer",
                  "lm": "lm" if self.lm is not None else None,
                  "vocoder": "vocoder" if self.vocoder is not None else None,
                  "default_speaker": self.default_speaker, "notes": self.notes}
        with atomic_directory(path, overwrite=overwrite) as tmp, quiet_progress_bars():
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            if self.lm is not None:
                self.lm.save_pretrained(tmp / "lm")
            if self.vocoder is not None:
                self.vocoder.save_pretrained(tmp / "vocoder")
            (tmp / CONFIG_FILE).write_text(PIPELINE.dumps(config))
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu", load_lm: bool = True,
                        load_vocoder: bool = True) -> SpeechPipeline:
        path = starter_part(path)
        config = PIPELINE.read_dir(path, CONFIG_FILE)
        tokenizer = SpeechTokenizer.from_pretrained(path / config["tokenizer"], device=device)
        with quiet_progress_bars():
            lm = (UnitLM.from_pretrained(path / config["lm"]).to(device).eval()
                  if load_lm and config.get("lm") else None)
        vocoder = (UnitVocoder.from_pretrained(path / config["vocoder"], device=device)
                   if load_vocoder and config.get("vocoder") else None)
        return cls(tokenizer, lm, vocoder, default_speaker=config.get("default_speaker"),
                   notes=config.get("notes", ""))


def starter_pipeline(device: str | torch.device = "cpu", **kw) -> SpeechPipeline:
    """The pipeline that ships with textless (tokenizer: offline Whisper-base layer 4 + k-means 100; a small unit LM
    and a small unit HiFi-GAN trained on the bundled corpus). Quality notes: textless/assets/starter/README.md."""
    if not (STARTER_DIR / CONFIG_FILE).is_file():
        raise TextlessError(f"the starter pipeline is missing from this installation ({STARTER_DIR})")
    return SpeechPipeline.from_pretrained(STARTER_DIR, device=device, **kw)
