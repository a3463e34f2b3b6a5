"""Generative metrics of spoken LMs: auto-BLEU (fairseq and slamkit variants), self-BLEU, VERT, ASR perplexity
(GenPPL, slamkit and fairseq definitions); the `textless eval-generation` job is `textless.jobs.eval_generation`.

Modules: `bleu` (repetition / diversity, on texts or unit sequences), `word_tokenize` (word tokenizers),
`perplexity` (text LM scorers, GenPPL), `transcribe` (cached ASR of generations and of any audio files). Each module's docstring states its definitions and which anchor they follow.
"""

from textless.eval.generative.bleu import (
    MeanSem,
    RepetitionMetrics,
    auto_bleu_fairseq,
    auto_bleu_slamkit,
    repetition_metrics,
    self_bleu_fairseq,
    vert,
)
from textless.eval.generative.perplexity import (
    GenPPL,
    HFTextScorer,
    TextScorer,
    asr_perplexity,
    genppl_fairseq,
    genppl_slamkit,
    load_text_scorer,
    register_text_scorer,
)
from textless.eval.generative.transcribe import transcribe_files, transcribe_records

__all__ = [
    "GenPPL", "HFTextScorer", "MeanSem", "RepetitionMetrics", "TextScorer", "asr_perplexity", "auto_bleu_fairseq",
    "auto_bleu_slamkit", "genppl_fairseq", "genppl_slamkit", "load_text_scorer", "register_text_scorer",
    "repetition_metrics", "self_bleu_fairseq", "transcribe_files", "transcribe_records", "vert",
]
