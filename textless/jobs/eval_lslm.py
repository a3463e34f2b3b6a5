"""`textless eval-duplex lslm.model=<dir> lslm.data=<build-lslm dir>`: a ListenSpeakLM speaking while it listens,
scored as LSLM (seed 002, section 6.1).

Items: the ``split`` (default test) of a `textless build-lslm` set, prepared as train-lslm prepares them (speaking
units of ``units_tokenizer``, listening features of the model's own listening channel config; cached in
``<output>/prepared``). Each item's first ``prompt_seconds`` of units are teacher-forced, then the model speaks on its
own while its listening channel plays (`listen_and_speak`; at most as many frames as the utterance, so speaking to the
end means not stopping). Scores (`interaction_scores`): an IRQ at frame n is a stop at n / R s; a hit is a stop in
[onset, onset + 2 mu]: TP / FN / FP / TN, precision, recall, F1 over all items, the clean ones and the noisy ones
(noise in the listening channel). The cost to speaking (`speaking_nll`, nats per target token of the non-interrupted
items, all / clean / noisy listening): with the listening features and with zeros in their place (the plain LM's
view). With ``vocoder`` and ``asr``: the intelligibility of the speaking channel (`intelligibility`: WER of the ASR
transcripts of the voiced non-interrupted generations against their texts; for a model with a character prefix).
Plots of p(IRQ) over time for the first ``plots`` interrupted items (LSLM Fig. 4). Writes
``<output>/lslm_report.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from textless.audio import resample
from textless.dialogue.listening import ListeningChannel, ListeningConfig
from textless.dialogue.lslm.data import item_prefix
from textless.dialogue.lslm.generate import (
    ListenSpeakSampling,
    interaction_scores,
    listen_and_speak,
    plot_irq,
    speaking_nll,
    stop_time,
)
from textless.dialogue.lslm.model import ListenSpeakLM
from textless.dialogue.lslm.train import prepare_split
from textless.errors import ConfigError
from textless.eval.asr import load_asr
from textless.eval.wer import error_rate
from textless.tokenizers.bundle import SpeechTokenizer
from textless.utils.atomic import atomic_write_text
from textless.vocoders import load_vocoder


@dataclass
class LSLMEvalConfig:
    model: str | None = None            # a ListenSpeakLM directory (set: eval-duplex evaluates it on `data`)
    data: str | None = None             # a `textless build-lslm` directory
    split: str = "test"
    units_tokenizer: str = "starter"    # the tokenizer of the model's units (frame level)
    prompt_seconds: float = 0.5         # teacher-forced speaking prompt
    temperature: float = 1.0
    top_p: float | None = 0.99          # LSLM section 5.3
    seed: int = 0
    batch_size: int = 16
    mu: float = 0.5                     # s: a hit stops within [onset, onset + 2 mu]
    plots: int = 4                      # p(IRQ) plots of the first interrupted items
    cache_dir: str | None = None        # prepared splits (null: <output>/prepared); shareable with train-lslm runs
    vocoder: str | None = None          # with asr: voice the generated speech (e.g. starter) ...
    asr: str | None = None              # ... and transcribe it (e.g. offline:whisper-base): WER against the text
    speaker: str | None = None          # multi-speaker vocoder: its voice
    device: str = "cpu"


def _scores(results: list, items: list, rate: float, mu: float) -> dict[str, Any]:
    scores = interaction_scores(results, [i.onset for i in items], rate, mu) if items else None
    return {"items": len(items)} | ({} if scores is None else asdict(scores))


def intelligibility(results: list, items: list, cfg: LSLMEvalConfig) -> dict[str, Any]:
    """WER of the ASR transcripts of the generated speech (voiced by `cfg.vocoder`) against the items' texts: how
    intelligible the speaking channel is (LSLM's TTS WER; meaningful for a model with ``prefix=characters``, which
    is told what to say; a speech continuation has no reference text)."""
    vocoder = load_vocoder(cfg.vocoder, device=cfg.device)
    asr = load_asr(cfg.asr, device=cfg.device)
    speaker = cfg.speaker if cfg.speaker is not None else ((vocoder.config.speakers or [0])[0]
                                                           if vocoder.config.multispkr else None)
    kept = [(r, i) for r, i in zip(results, items, strict=True) if len(r.units)]
    wavs = vocoder.synthesize([r.units for r, _ in kept], speakers=speaker, deduplicated=False) if kept else []
    asr_rate = getattr(asr, "sample_rate", 16000)
    audio = [resample(torch.from_numpy(w), vocoder.sample_rate, asr_rate).numpy() for w in wavs]
    hypotheses = asr.transcribe(audio) if audio else []
    wer = error_rate([i.text for _, i in kept], hypotheses)
    return {"items": len(items), "voiced": len(kept), "vocoder": cfg.vocoder, "asr": cfg.asr,
            "wer": wer.rate, "errors": wer.errors, "reference_words": wer.reference_tokens,
            "transcripts": [{"id": i.id, "text": i.text, "asr": h} for (_, i), h in zip(kept, hypotheses)]}


def run_eval_lslm(cfg: LSLMEvalConfig, output: str | Path) -> dict[str, Any]:
    """Evaluate the model (module docstring); writes ``<output>/lslm_report.json`` and returns the report."""
    if not cfg.model or not cfg.data:
        raise ConfigError("the LSLM evaluation needs lslm.model=<ListenSpeakLM dir> and lslm.data=<build-lslm dir>")
    if cfg.prompt_seconds < 0 or cfg.batch_size < 1:
        raise ConfigError("need lslm.prompt_seconds >= 0 and lslm.batch_size >= 1")
    out = Path(output)
    model = ListenSpeakLM.from_pretrained(cfg.model, device=cfg.device)
    tokenizer = SpeechTokenizer.from_pretrained(cfg.units_tokenizer, device=cfg.device)
    channel = ListeningChannel(ListeningConfig(**model.inference_listening()))
    rate = tokenizer.frame_rate
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "prepared"
    items = prepare_split(cfg.data, cfg.split, tokenizer, channel, cache / f"{cfg.split}.npz")
    if not items:
        raise ConfigError(f"{cfg.data}: split {cfg.split!r} holds no example")
    prompt = math.floor(cfg.prompt_seconds * rate)
    sampling = ListenSpeakSampling(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
    results = []
    for start in range(0, len(items), cfg.batch_size):
        chunk = items[start:start + cfg.batch_size]
        prefixes = [item_prefix(i, model.vocab, model.config.prefix) for i in chunk]
        results += listen_and_speak(model, [i.units[:prompt] for i in chunk], [i.listen for i in chunk],
                                    [len(i.units) for i in chunk],
                                    ListenSpeakSampling(sampling.temperature, sampling.top_k, sampling.top_p,
                                                        sampling.seed + start), prefixes=prefixes)
    def cost(kept: list) -> dict[str, Any]:
        return {"items": len(kept), "with_listening": speaking_nll(model, kept, rate) if kept else None,
                "without_listening": speaking_nll(model, kept, rate, listening=False) if kept else None}

    spoken = [i for i in items if i.onset is None]
    report = {
        "model": str(cfg.model), "data": str(cfg.data), "split": cfg.split, "settings": asdict(cfg),
        "frame_rate": rate, "prompt_frames": prompt,
        "interaction": {
            "all": _scores(results, items, rate, cfg.mu),
            "clean_listening": _scores([r for r, i in zip(results, items) if not i.noisy],
                                       [i for i in items if not i.noisy], rate, cfg.mu),
            "noisy_listening": _scores([r for r, i in zip(results, items) if i.noisy],
                                       [i for i in items if i.noisy], rate, cfg.mu)},
        "speaking_nll": {"all": cost(spoken), "clean_listening": cost([i for i in spoken if not i.noisy]),
                         "noisy_listening": cost([i for i in spoken if i.noisy])},
        "per_item": [{"id": i.id, "onset": i.onset, "noisy": i.noisy, "stop": r.stop, "stop_frame": r.stop_frame,
                      "stop_time": stop_time(r, rate)} for i, r in zip(items, results)],
    }
    if cfg.asr and cfg.vocoder:
        report["intelligibility"] = intelligibility([r for r, i in zip(results, items) if i.onset is None],
                                                    spoken, cfg)
    plotted = 0
    for item, result in zip(items, results):
        if plotted < cfg.plots and item.onset is not None:
            plot_irq(result, prompt, rate, item.onset, out / f"irq_{item.id}.png", cfg.mu)
            plotted += 1
    atomic_write_text(out / "lslm_report.json", json.dumps(report, indent=1) + "\n")
    a = report["interaction"]["all"]
    print(f"{cfg.model} on {cfg.data} ({cfg.split}, {len(items)} items): precision {a['precision']:.3f} recall "
          f"{a['recall']:.3f} F1 {a['f1']:.3f}; speaking NLL with / without listening "
          f"{report['speaking_nll']['all']['with_listening']} / {report['speaking_nll']['all']['without_listening']}")
    print(f"wrote {out / 'lslm_report.json'}")
    return report
