"""Likelihood scoring of wav files for the suites in `textless.eval.suites`: tokenizer -> units -> unit LM.

Per file (natural log, float64):

    tokens = [bos] + (units + offset) + [eos]                         (``add_bos`` / ``add_eos``, both on by default)
    sum    = sum_{t >= 1} log P(tokens_t | tokens_<t)                 (every target after bos, eos included)
    mean   = sum / (len(tokens) - 1)                                  (= -(mean NLL per token))

``score="mean"`` (the default) is slamkit's ``mean_nll: true`` score exactly: its ``UnitLM.log_likelihood`` builds
``<S> units <S>`` (bos = eos) with a ``TemplateProcessing`` and returns ``-calc_nll(...)`` with ``len_norm``, the mean
over the L units and the final eos prediction. ``score="sum"`` is ``mean_nll: false``. (SALMon's own baseline adds no
bos and no eos: ``add_bos=false add_eos=false`` reproduces it, its first unit then being context only.) Computed by
`UnitLM.log_likelihood` (`textless.lm.scoring`): right padding with an attention mask, logits in float32.

What differs from the anchors, on purpose:

* Every wav is tokenized ONCE, alone (`SpeechTokenizer.encode_batch` gives the same units as one-by-one encoding):
  slamkit feeds zero-padded batches to HuBERT without a mask, so a short file's units can change with its batch.
* Each DISTINCT token sequence is scored once and every file with that sequence gets that score, so two files with
  identical units tie exactly (outcome 0.5) whatever batch padding would do to the last float bits.
* The LM must accept the tokenizer's units (`UnitLM.check_units`: tokenizer identity, vocabulary, dedup).

The cache (units and scores per file) lives in the `LikelihoodScorer` for the whole run, so a file shared by two
suites or pairs is tokenized and scored once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textless.errors import AudioError, ConfigError, TextlessError
from textless.eval.suites.base import Suite, SuiteData, SuiteResult, pair_outcomes

logger = logging.getLogger(__name__)

SCORES: dict[str, str] = {"mean": "mean log-probability per token (slamkit mean_nll: true; -mean NLL)",
                          "sum": "summed log-probability (slamkit mean_nll: false)"}


@dataclass(frozen=True)
class ScoringConfig:
    """`score`: mean | sum (see `SCORES`); `add_bos` / `add_eos`: tokens around the units; `batch_size`: LM
    sequences per forward pass; `tokenize_batch_size`: wavs per tokenizer call; `max_tokens`: keep the first N
    tokens of a sequence (None: a sequence longer than the LM's positions is an error)."""

    score: str = "mean"
    add_bos: bool = True
    add_eos: bool = True
    batch_size: int = 8
    tokenize_batch_size: int = 16
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ConfigError(f"score must be one of {', '.join(SCORES)}, got '{self.score}'")
        for name in ("batch_size", "tokenize_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


class LikelihoodScorer:
    """Wav files -> one score each (higher = more probable), with per-file unit and score caches.

    `tokenizer`: a `SpeechTokenizer`; `lm`: a `UnitLM` (checked to accept the tokenizer's units). Progress goes to the
    module logger.
    """

    def __init__(self, tokenizer, lm, config: ScoringConfig | None = None, where: str = ""):
        lm.check_units(tokenizer.unit_identity(), where=where or "the tokenizer's units")
        self.tokenizer, self.lm = tokenizer, lm
        self.config = config or ScoringConfig()
        self.units: dict[Path, np.ndarray] = {}
        self._by_sequence: dict[bytes, float] = {}

    # --------------------------------------------------------------------------------------------------- units
    def tokenize(self, files: Sequence[Path]) -> None:
        """Units of every file not yet cached, `tokenize_batch_size` wavs per `encode_batch` call."""
        from textless.audio import load_audio

        todo = [f for f in dict.fromkeys(files) if f not in self.units]
        if todo:
            logger.info(f"tokenizing {len(todo)} file(s)")
        rate = self.tokenizer.sample_rate
        step = self.config.tokenize_batch_size
        for start in range(0, len(todo), step):
            batch = todo[start:start + step]
            wavs = []
            for path in batch:
                wav, _ = load_audio(path, rate)
                problem = self.tokenizer.encoder.length_problem(len(wav))
                if problem:
                    raise AudioError(path, f"cannot be tokenized: {problem}")
                wavs.append(wav)
            for path, units in zip(batch, self.tokenizer.encode_batch(wavs, rate)):
                self.units[path] = np.asarray(units.ids, dtype=np.int64)
            done = start + len(batch)
            if len(todo) >= 10 * step and done < len(todo) and (done // step) % max(1, len(todo) // step // 10) == 0:
                logger.info(f"tokenized {done}/{len(todo)}")

    # -------------------------------------------------------------------------------------------------- scores
    def _check_length(self, path: Path) -> None:
        """The file's token sequence has something to score and fits the LM (else an error naming the file)."""
        cfg = self.config
        length = len(self.units[path]) + int(cfg.add_bos) + int(cfg.add_eos)
        if cfg.max_tokens is not None:
            length = min(length, cfg.max_tokens)
        if length < 2:
            raise AudioError(path, f"gives {len(self.units[path])} unit(s), {length} token(s) with add_bos="
                                   f"{cfg.add_bos} add_eos={cfg.add_eos}: nothing to score")
        limit = self.lm.max_positions
        if limit is not None and length > limit:
            raise AudioError(path, f"gives {length} tokens but the LM covers {limit} positions; pass max_tokens "
                                   f"(<= {limit}) to keep the first ones")

    def score_files(self, files: Sequence[Path]) -> dict[Path, float]:
        """{file: score} for `files` (tokenized and scored as needed; identical unit sequences scored once)."""
        self.tokenize(files)
        fresh = {}
        for f in dict.fromkeys(files):
            key = self._key(f)
            if key not in self._by_sequence and key not in fresh:
                self._check_length(f)
                fresh[key] = self.units[f]
        if fresh:
            logger.info(f"scoring {len(fresh)} distinct unit sequence(s)")
            cfg = self.config
            result = self.lm.log_likelihood(list(fresh.values()), batch_size=cfg.batch_size, add_bos=cfg.add_bos,
                                            add_eos=cfg.add_eos, max_tokens=cfg.max_tokens)
            values = result.mean if cfg.score == "mean" else result.sum
            self._by_sequence.update(zip(fresh, (float(v) for v in values)))
        return {f: self._by_sequence[self._key(f)] for f in files}

    def _key(self, path: Path) -> bytes:
        """The token ids the LM will score for this file (after truncation): equal keys, equal scores."""
        cfg = self.config
        tokens = self.lm.vocab.encode(self.units[path], bos=cfg.add_bos, eos=cfg.add_eos)
        return tokens[:cfg.max_tokens].tobytes() if cfg.max_tokens is not None else tokens.tobytes()


def evaluate_suite(suite: Suite, data: SuiteData, score_files: Callable[[Sequence[Path]], dict[Path, float]]
                   ) -> tuple[SuiteResult, dict[Path, float]]:
    """Score every file of `data`, compare each pair (ties 0.5) and aggregate: (result, {file: score}).

    `score_files` is usually `LikelihoodScorer.score_files`; any function giving one float per file works.
    """
    scores = score_files(data.files)
    missing = [f for p in data.pairs for f in (p.positive, p.negative) if f not in scores]
    if missing:
        raise TextlessError(f"{data.suite}: no score for {missing[0]}")
    positive = np.array([scores[p.positive] for p in data.pairs], dtype=np.float64)
    negative = np.array([scores[p.negative] for p in data.pairs], dtype=np.float64)
    return suite.aggregate(data, pair_outcomes(positive, negative)), scores
