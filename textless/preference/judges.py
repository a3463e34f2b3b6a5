"""Automatic feedback for Align-SLM: *judges* score sampled speech continuations, batch by batch.

A `Candidate` is one continuation of one prompt (its units, the vocoded audio, the ASR transcripts). A judge
(`Judge` protocol) maps a batch of candidates to one ``{key: float}`` dict per candidate; every key is prefixed by
the judge's name (``"llm/expected"``). Judges live in the `JUDGES` registry (name -> factory taking keyword options);
`load_judges` builds them and `score_candidates` merges their dicts.

Built-in judges and their keys (all floats; NaN only where stated):

``text_lm`` (`TextLMJudge`): likelihood of the transcript under a causal text LM (default ``offline:smollm2-135m``,
    any local HF directory / ``.gguf`` / ``offline:<name>`` as `textless.eval.generative.perplexity.HFTextScorer`
    loads it, with the same boundary token). The sequence ``[BOS] prompt_ids continuation_ids`` is scored, where
    ``prompt_ids`` = tokens of the prompt transcript and ``continuation_ids`` = tokens of ``" " + text`` (tokenized
    apart, so the boundary between the two is exact; a BPE tokenizer gives the same ids as tokenizing
    ``prompt + " " + text`` at once).
    ``text_lm/logprob``: mean natural-log probability per continuation token, conditioned on BOS + prompt (nats).
    ``text_lm/logprob_full``: mean log-prob over all tokens of prompt + continuation (after BOS).
    ``text_lm/tokens``: number of continuation tokens.
    An empty continuation transcript has no token: both means are `EMPTY_LOGPROB` (-20 nats per token, far below
    a uniform guess over a 50k vocabulary, -10.8), so silence or babble that ASR drops ranks last, never NaN.
``llm`` (`LLMJudge`): an instruct LM (default the same SmolLM2-135M-Instruct) as a judge. Its chat template gets
    `JUDGE_RUBRIC` as the system turn and `JUDGE_REQUEST` filled with the two transcripts as the user turn.
    ``llm/score``: the parsed 1-5 score (`parse_score`) of the greedy answer (``max_new_tokens``); NaN when none parses.
    ``llm/parsed``: 1.0 when the greedy answer parsed, else 0.0.
    ``llm/expected``: ``sum_k k p(k)``, p = the judge's next-token distribution restricted to the tokens "1".."5"
    and renormalised (`expected_score`), read right after the assistant turn with ``\\boxed{`` forced as its
    prefix (the next token is the digit). Always defined and continuous: small judges rarely answer in format, and
    integer scores tie a lot; this is the score to rank with.
    ``llm/digit_mass``: the probability mass the judge put on the five digit tokens there (format adherence).
``repetition`` (`RepetitionJudge`): slamkit auto-BLEU (`auto_bleu_slamkit`, bigrams, treebank words) in [0, 1].
    ``repetition/text_auto_bleu`` of the continuation transcript; ``repetition/units_auto_bleu`` of the continuation
    units with consecutive repeats merged (runs; units given with durations are runs already);
    ``repetition/prompt_text_auto_bleu`` of ``prompt_text + " " + text``: slamkit's preference filter (< 0.3).
    Text keys are NaN when a candidate has no transcript (``text is None``).
``length`` (`LengthJudge`): ``length/seconds`` of the continuation (its audio when given, else its units:
    ``sum(durations) / frame_rate`` or ``len(units) / frame_rate``), ``length/units`` (number of unit ids as given),
    ``length/words`` (whitespace words of the transcript; NaN without transcript).
``silence`` (`SilenceJudge`): from the continuation audio, with `textless.eval.levels`' 20 ms frames and its
    -60 dBFS threshold: ``silence/ratio`` (fraction of silent frames, 0 for audio shorter than a frame),
    ``silence/leading_seconds`` / ``silence/trailing_seconds`` (silent frames before the first / after the last
    non-silent frame, x 0.02 s; the whole length when every frame is silent).

Model-backed judges load their model on first use (``device``, ``batch_size`` options); transformers is imported
then. A judge whose input is missing (no transcript for ``text_lm`` / ``llm``, no audio for ``silence``) raises a
`TextlessError` naming the candidate.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from textless.errors import ConfigError, TextlessError
from textless.eval.generative.bleu import auto_bleu_slamkit
from textless.eval.generative.perplexity import DEFAULT_TEXT_LM
from textless.eval.levels import SILENCE_DB, frame_levels
from textless.utils.registry import Registry

EMPTY_LOGPROB = -20.0  # nats per token given to an empty continuation transcript (see the module docstring)
SCORE_RANGE = (1, 5)
BOX_PREFIX = "\\boxed{"
COMMON_OPTIONS = ("device", "batch_size")  # options any judge list accepts (`load_judges`)
DEFAULT_JUDGE_LM = DEFAULT_TEXT_LM  # SmolLM2-135M-Instruct, offline

JUDGE_RUBRIC = (
    "You are an expert judge of spoken language. A speech language model heard the beginning of a spoken utterance "
    "(the prompt) and continued it with speech of its own. Both were transcribed automatically by speech "
    "recognition, so ignore missing punctuation, capitalisation and small recognition errors.\n"
    "Rate the continuation on a scale of 1 to 5:\n"
    "1: unrelated to the prompt, or not language at all (noise, nonsense, endless repetition, empty)\n"
    "2: mostly incoherent, with only a few relevant or fluent words\n"
    "3: partly relevant and partly fluent, with clear problems\n"
    "4: relevant and fluent, a likely continuation with minor problems\n"
    "5: a natural, fluent and highly relevant continuation of the prompt\n"
    "Answer with the score only, in the form \\boxed{x}, where x is 1, 2, 3, 4 or 5."
)
JUDGE_REQUEST = 'Prompt transcript: "{prompt}"\nContinuation transcript: "{continuation}"\nScore:'


@dataclass
class Candidate:
    """One sampled continuation of one prompt.

    prompt_units / units: int64 unit ids [P] / [U] (deduplicated runs when `durations` is given);
    prompt_text / text: ASR transcripts (None: not transcribed); audio: float32 mono waveform [T] of the
    continuation at `sample_rate` Hz (None: not vocoded); frame_rate: unit frames per second (Hz);
    durations: frames per unit [U] (int) when `units` are deduplicated, else None.
    """

    prompt_id: str
    sample: int
    prompt_units: np.ndarray
    units: np.ndarray
    prompt_text: str | None = None
    text: str | None = None
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    frame_rate: float = 50.0
    durations: np.ndarray | None = None

    @property
    def frames(self) -> int:
        """Unit frames of the continuation (``sum(durations)`` or ``len(units)``)."""
        return int(np.sum(self.durations)) if self.durations is not None else int(np.asarray(self.units).size)

    @property
    def seconds(self) -> float:
        """Duration of the continuation in seconds from its units: ``frames / frame_rate``."""
        return self.frames / self.frame_rate

    @property
    def audio_seconds(self) -> float | None:
        """Duration of the continuation audio in seconds (None without audio)."""
        if self.audio is None or not self.sample_rate:
            return None
        return int(np.asarray(self.audio).size) / self.sample_rate

    @property
    def name(self) -> str:
        return f"{self.prompt_id}/{self.sample}"


class Judge(Protocol):
    """Scores a batch of candidates: one dict per candidate, every key starting with ``name + "/"``."""

    name: str

    def score(self, candidates: Sequence[Candidate]) -> list[dict[str, float]]:
        ...


JUDGES: Registry[Callable[..., Judge]] = Registry("judge")


def register_judge(name: str) -> Callable:
    """Decorator: add a judge factory (a class or function taking keyword options) to `JUDGES` under `name`."""
    return JUDGES.register(name)


def _need_text(judge: str, c: Candidate) -> str:
    if c.text is None:
        raise TextlessError(f"judge '{judge}': candidate {c.name} has no transcript (transcribe the continuations)")
    return c.text.strip()


# ---------------------------------------------------------------------------------------------------- scoring helpers


def parse_score(answer: str, low: int = SCORE_RANGE[0], high: int = SCORE_RANGE[1]) -> float:
    """The score in a judge's answer, or NaN: the last ``\\boxed{k}``, else ``score/rating [is|of|:|=] k``, else the
    first standalone digit k (not part of a number, a word or a decimal; "/5" and "out of 5" are ignored), with k an
    integer in [low, high]."""
    digits = f"[{low}-{high}]"
    boxed = re.findall(r"\\boxed\s*\{\s*(" + digits + r")\s*(?:/\s*\d+\s*)?\}", answer)
    if boxed:
        return float(boxed[-1])
    labelled = re.search(r"(?i)\b(?:score|rating|rate)\s*(?:is|of|:|=|-)?\s*\**\s*(" + digits + r")(?![\d.]\d|\w)",
                         answer)
    if labelled:
        return float(labelled.group(1))
    stripped = re.sub(r"(?i)\s*(?:/|out\s+of)\s*\d+", " ", answer)
    bare = re.search(r"(?<![\w.])(" + digits + r")(?![\w]|\.\d)", stripped)
    return float(bare.group(1)) if bare else float("nan")


def expected_score(logits: np.ndarray | torch.Tensor, probabilities: bool = False) -> np.ndarray:
    """``sum_k k p(k)`` over the scores k = 1..K from the judge's logits (or probabilities) of the digit tokens.

    logits: [..., K] float, column j for the score j + 1 (K = 5); softmax over these K only (= the full
    next-token distribution restricted to them and renormalised). With `probabilities`, the values are
    probabilities (any positive scale) and are renormalised. Returns float64 [...] in [1, K].
    """
    x = torch.as_tensor(logits, dtype=torch.float64)
    p = x / x.sum(-1, keepdim=True) if probabilities else torch.softmax(x, dim=-1)
    k = torch.arange(1, x.shape[-1] + 1, dtype=torch.float64)
    return (p * k).sum(-1).numpy()


def run_lengths(units: np.ndarray) -> np.ndarray:
    """Consecutive repeats merged: [U] -> [R] (int64)."""
    units = np.asarray(units, np.int64).reshape(-1)
    if units.size == 0:
        return units
    keep = np.ones(units.size, bool)
    keep[1:] = units[1:] != units[:-1]
    return units[keep]


# ------------------------------------------------------------------------------------------------------ simple judges


@register_judge("repetition")
class RepetitionJudge:
    """slamkit auto-BLEU of the continuation transcript, its units and prompt + continuation (module docstring)."""

    name = "repetition"
    keys = ("repetition/text_auto_bleu", "repetition/units_auto_bleu", "repetition/prompt_text_auto_bleu")

    def __init__(self, n: int = 2, tokenizer: str = "treebank"):
        self.n, self.tokenizer = n, tokenizer

    def score(self, candidates: Sequence[Candidate]) -> list[dict[str, float]]:
        out = []
        for c in candidates:
            units = np.asarray(c.units) if c.durations is not None else run_lengths(c.units)
            row = {"repetition/units_auto_bleu": auto_bleu_slamkit(units.tolist(), n=self.n)}
            if c.text is None:
                row["repetition/text_auto_bleu"] = row["repetition/prompt_text_auto_bleu"] = float("nan")
            else:
                text = c.text.strip()
                joined = f"{(c.prompt_text or '').strip()} {text}".strip()
                row["repetition/text_auto_bleu"] = auto_bleu_slamkit(text, n=self.n, tokenizer=self.tokenizer)
                row["repetition/prompt_text_auto_bleu"] = auto_bleu_slamkit(joined, n=self.n,
                                                                            tokenizer=self.tokenizer)
            out.append(row)
        return out


@register_judge("length")
class LengthJudge:
    """Seconds (audio, else units), unit count and transcript words of each continuation."""

    name = "length"
    keys = ("length/seconds", "length/units", "length/words")

    def score(self, candidates: Sequence[Candidate]) -> list[dict[str, float]]:
        out = []
        for c in candidates:
            seconds = c.audio_seconds
            out.append({"length/seconds": float(seconds if seconds is not None else c.seconds),
                        "length/units": float(np.asarray(c.units).size),
                        "length/words": float("nan") if c.text is None else float(len(c.text.split()))})
        return out


@register_judge("silence")
class SilenceJudge:
    """Silent-frame ratio and leading / trailing silence of the continuation audio (`textless.eval.levels` frames)."""

    name = "silence"
    keys = ("silence/ratio", "silence/leading_seconds", "silence/trailing_seconds")

    def __init__(self, threshold_db: float = SILENCE_DB, frame_seconds: float = 0.02):
        self.threshold_db, self.frame_seconds = threshold_db, frame_seconds

    def score(self, candidates: Sequence[Candidate]) -> list[dict[str, float]]:
        out = []
        for c in candidates:
            if c.audio is None or not c.sample_rate:
                raise TextlessError(f"judge 'silence': candidate {c.name} has no audio (vocode the continuations)")
            silent = frame_levels(c.audio, c.sample_rate, self.frame_seconds) < self.threshold_db
            loud = np.flatnonzero(~silent)
            lead = int(loud[0]) if loud.size else silent.size
            trail = int(silent.size - 1 - loud[-1]) if loud.size else silent.size
            out.append({"silence/ratio": float(silent.mean()) if silent.size else 0.0,
                        "silence/leading_seconds": lead * self.frame_seconds,
                        "silence/trailing_seconds": trail * self.frame_seconds})
        return out


# ------------------------------------------------------------------------------------------------ model-backed judges


def _forward_logits(model, rows: Sequence[Sequence[int]], pad_id: int, device: str) -> torch.Tensor:
    """Left-padded batch forward: rows of token ids -> float32 logits [B, W, V] (pad positions meaningless).

    Positions are counted from each row's first real token, so a row gives the same logits padded or alone.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
        mask[i, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        return model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                     use_cache=False).logits.float()


@register_judge("text_lm")
class TextLMJudge:
    """Continuation-conditional and whole-text mean token log-probs of the transcripts under a text LM.

    model: any source `HFTextScorer.from_pretrained` takes (default ``offline:smollm2-135m``); boundary_token: the
    BOS used (None: the scorer's default for the source); empty_logprob: the value of an empty continuation.
    """

    name = "text_lm"
    keys = ("text_lm/logprob", "text_lm/logprob_full", "text_lm/tokens")

    def __init__(self, model: str | Path = DEFAULT_TEXT_LM, device: str = "cpu", batch_size: int = 8,
                 boundary_token: str | None = None, empty_logprob: float = EMPTY_LOGPROB):
        self.source, self.device, self.batch_size = str(model), device, batch_size
        self.boundary_token, self.empty_logprob = boundary_token, empty_logprob
        self._scorer = None

    @property
    def scorer(self):
        """The loaded `HFTextScorer` (model, tokenizer, BOS id), loaded on first use."""
        if self._scorer is None:
            from textless.eval.generative.perplexity import HFTextScorer

            self._scorer = HFTextScorer.from_pretrained(self.source, device=self.device, batch_size=self.batch_size,
                                                        boundary_token=self.boundary_token)
        return self._scorer

    def token_ids(self, prompt_text: str, text: str) -> tuple[list[int], int]:
        """``[BOS] + ids(prompt) + ids(" " + text)`` (``ids(text)`` without a prompt) and the number of continuation
        ids at its end."""
        tok = self.scorer.tokenizer
        prompt_ids = list(tok(prompt_text, add_special_tokens=False)["input_ids"]) if prompt_text else []
        cont = f" {text}" if prompt_text and text else text
        cont_ids = list(tok(cont, add_special_tokens=False)["input_ids"]) if text else []
        return [self.scorer.bos] + prompt_ids + cont_ids, len(cont_ids)

    def score(self, candidates: Sequence[Candidate]) -> list[dict[str, float]]:
        seqs = [self.token_ids((c.prompt_text or "").strip(), _need_text(self.name, c)) for c in candidates]
        limit = self.scorer.max_positions
        for c, (ids, _) in zip(candidates, seqs):
            if limit is not None and len(ids) > limit:
                raise TextlessError(f"judge 'text_lm': candidate {c.name}: {len(ids)} tokens exceed the text LM's "
                                    f"{limit} positions")
        out: list[dict[str, float]] = [{} for _ in candidates]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start: start + self.batch_size]
            rows = [seqs[i][0] for i in batch]
            width = max(len(r) for r in rows)
            logits = _forward_logits(self.scorer.model, rows, self.scorer.bos, self.device)
            logp = torch.log_softmax(logits, dim=-1)
            for b, i in enumerate(batch):
                ids, n_cont = seqs[i]
                start_col = width - len(ids)
                # the log-prob of token t (t >= 1) is read at position t - 1
                lp = logp[b, start_col: width - 1].gather(-1, torch.tensor(ids[1:], device=logp.device)[:, None])
                lp = lp.squeeze(-1).double().cpu().numpy()
                cont = lp[len(lp) - n_cont:] if n_cont else lp[:0]
                out[i] = {"text_lm/logprob": float(cont.mean()) if n_cont else self.empty_logprob,
                          "text_lm/logprob_full": float(lp.mean()) if n_cont else self.empty_logprob,
                          "text_lm/tokens": float(n_cont)}
        return out


@register_judge("llm")
class LLMJudge:
    """An instruct LM rating each continuation 1-5 with `JUDGE_RUBRIC` (see the module docstring for the keys).

    model: a local HF directory / ``offline:<name>`` of a model whose tokenizer has a chat template;
    max_new_tokens: length of the greedy answer; generate: False skips the greedy answer (``llm/score`` and
    ``llm/parsed`` are then not reported, only ``llm/expected`` and ``llm/digit_mass``).
    After `score`, `last_answers` holds the greedy answers (for logs).
    """

    name = "llm"

    def __init__(self, model: str | Path = DEFAULT_JUDGE_LM, device: str = "cpu", batch_size: int = 8,
                 max_new_tokens: int = 16, generate: bool = True, rubric: str = JUDGE_RUBRIC,
                 request: str = JUDGE_REQUEST):
        self.source, self.device, self.batch_size = str(model), device, batch_size
        self.max_new_tokens, self.generate = max_new_tokens, generate
        self.rubric, self.request = rubric, request
        self._model = self._tokenizer = None
        self._digits: list[int] | None = None
        self.last_answers: list[str] = []

    @property
    def keys(self) -> tuple[str, ...]:
        extra = ("llm/score", "llm/parsed") if self.generate else ()
        return ("llm/expected", "llm/digit_mass") + extra

    def load(self) -> None:
        """Load the model and tokenizer (once) and check the chat template and the digit tokens."""
        if self._model is not None:
            return
        from transformers import AutoTokenizer

        from textless.lm.twist import load_text_lm, resolve_text_lm

        path = resolve_text_lm(self.source)
        folder, gguf = (path.parent, {"gguf_file": path.name}) if path.suffix == ".gguf" else (path, {})
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **gguf)
        except (OSError, ValueError) as e:
            raise TextlessError(f"judge 'llm' model '{self.source}': cannot load its tokenizer ({e})") from e
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"judge 'llm' model '{self.source}': its tokenizer has no chat template (use an "
                              f"instruct / chat model)")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise TextlessError(f"judge 'llm' model '{self.source}': its tokenizer has no pad or EOS token")
        self._pad = pad
        prefix = tokenizer(BOX_PREFIX, add_special_tokens=False)["input_ids"]
        digits = []
        for k in range(SCORE_RANGE[0], SCORE_RANGE[1] + 1):
            ids = tokenizer(f"{BOX_PREFIX}{k}", add_special_tokens=False)["input_ids"]
            if list(ids[: len(prefix)]) != list(prefix) or len(ids) != len(prefix) + 1:
                raise TextlessError(f"judge 'llm' model '{self.source}': its tokenizer does not give the score "
                                    f"{k} one token after {BOX_PREFIX!r} ({ids})")
            digits.append(int(ids[-1]))
        self._digits, self._tokenizer = digits, tokenizer
        self._model = load_text_lm(path).to(self.device).eval()

    def chat_prompt(self, prompt_text: str, text: str) -> str:
        """The judge's input up to the start of its answer (chat template with the generation prompt)."""
        messages = [{"role": "system", "content": self.rubric},
                    {"role": "user", "content": self.request.format(prompt=prompt_text, continuation=text)}]
        return self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, candidate: Candidate, forced_prefix: bool) -> list[int]:
        """Token ids of the judge input of `candidate` (+ ``\\boxed{`` when `forced_prefix`)."""
        self.load()
        text = self.chat_prompt((candidate.prompt_text or "").strip(), _need_text(self.name, candidate))
        if forced_prefix:
            text += BOX_PREFIX
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def digit_ids(self) -> list[int]:
        """Token ids of "1".."5" as they follow ``\\boxed{``."""
        self.load()
        return list(self._digits)

    @property
    def model(self):
        self.load()
        return self._model

    @property
    def tokenizer(self):
        self.load()
        return self._tokenizer

    def _greedy(self, rows: list[list[int]]) -> list[str]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        with torch.inference_mode():
            out = self._model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                       max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=self._pad)
        return [self._tokenizer.decode(row[width:], skip_special_tokens=True) for row in out.cpu()]

    def score(self, candidates: Sequence[Candidate]) -> list[dict[str, float]]:
        if not candidates:
            return []
        self.load()
        forced = [self.prompt_ids(c, forced_prefix=True) for c in candidates]
        plain = [self.prompt_ids(c, forced_prefix=False) for c in candidates] if self.generate else []
        out: list[dict[str, float]] = [{} for _ in candidates]
        answers = [""] * len(candidates)
        order = sorted(range(len(candidates)), key=lambda i: len(forced[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start: start + self.batch_size]
            last = _forward_logits(self._model, [forced[i] for i in batch], self._pad, self.device)[:, -1]
            digit_logits = last[:, self._digits].double().cpu()
            mass = torch.softmax(last.double(), dim=-1)[:, self._digits].sum(-1).cpu().numpy()
            expected = expected_score(digit_logits)
            for b, i in enumerate(batch):
                out[i] = {"llm/expected": float(expected[b]), "llm/digit_mass": float(mass[b])}
            if self.generate:
                for b, (i, answer) in enumerate(zip(batch, self._greedy([plain[i] for i in batch]))):
                    score = parse_score(answer)
                    answers[i] = answer
                    out[i].update({"llm/score": score, "llm/parsed": float(not math.isnan(score))})
        self.last_answers = answers
        return out


# ---------------------------------------------------------------------------------------------- loading and merging


def _accepted(factory: Callable) -> tuple[set[str], bool]:
    params = inspect.signature(factory).parameters.values()
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def load_judges(names: Sequence[str], **options: Any) -> list[Judge]:
    """Build the judges `names` (registered in `JUDGES`).

    Options: ``<judge name>={...}`` are that judge's own options (every one must be accepted, e.g.
    ``llm={"model": "...", "max_new_tokens": 8}``); any other option (``device="cuda"``, ``batch_size=16``) goes to
    every judge that accepts it and must be accepted by at least one (except `COMMON_OPTIONS`, ``device`` and
    ``batch_size``, which judges without a model ignore). Unknown or repeated names, or options no judge takes, are
    a `ConfigError`.
    """
    names = list(names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"judges given twice: {', '.join(repeated)}")
    factories = {n: JUDGES.get(n) for n in names}
    own = {k: v for k, v in options.items() if k in JUDGES}
    shared = {k: v for k, v in options.items() if k not in JUDGES}
    for k, v in own.items():
        if k not in factories:
            raise ConfigError(f"options for judge '{k}', which is not among the judges ({', '.join(names)})")
        if not isinstance(v, Mapping):
            raise ConfigError(f"options for judge '{k}' must be a mapping, got {type(v).__name__}")
    accepted = {n: _accepted(f) for n, f in factories.items()}
    unused = [k for k in shared if k not in COMMON_OPTIONS and not any(k in acc or var for acc, var in accepted.values())]
    if unused:
        raise ConfigError(f"judge option(s) {', '.join(unused)} are accepted by none of the judges "
                          f"({', '.join(names)})")
    judges = []
    for n, factory in factories.items():
        acc, var = accepted[n]
        kw = {k: v for k, v in shared.items() if k in acc or var}
        for k, v in own.get(n, {}).items():
            if k not in acc and not var:
                raise ConfigError(f"judge '{n}' has no option '{k}' (options: {', '.join(sorted(acc)) or 'none'})")
            kw[k] = v
        judges.append(factory(**kw))
    return judges


def score_candidates(judges: Sequence[Judge], candidates: Sequence[Candidate]) -> list[dict[str, float]]:
    """Every judge's scores of every candidate, merged: one dict per candidate (each judge called once)."""
    merged: list[dict[str, float]] = [{} for _ in candidates]
    for judge in judges:
        rows = judge.score(candidates)
        if len(rows) != len(candidates):
            raise TextlessError(f"judge '{judge.name}' returned {len(rows)} score rows for {len(candidates)} "
                                f"candidates")
        for row, into in zip(rows, merged):
            for key, value in row.items():
                if not key.startswith(f"{judge.name}/"):
                    raise TextlessError(f"judge '{judge.name}' returned the key '{key}' (keys must start with "
                                        f"'{judge.name}/')")
                if key in into:
                    raise TextlessError(f"score key '{key}' is given by two judges")
                into[key] = float(value)
    return merged
