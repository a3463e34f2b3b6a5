"""The bundled speech corpus: the embedded default dataset that tests and `make demo` use (nothing is downloaded).

About 15 minutes of English TTS speech from 9 voices whose licences allow any use, 16 kHz FLAC, with transcripts, speaker ids and phone
alignments for the engines that give them. Splits: ``train``; ``valid`` (held-out utterances of the training speakers);
``valid_unseen`` (held-out speakers). ``experiments/data/make_corpus.py`` regenerates or enlarges it; its README lists
the voices and their licences. As a unit dataset, ``bundled:<split>`` names the split tokenized by the starter
tokenizer (`bundled_units_dir`; `textless.data.units.read_units` reads it like a directory).
"""

from __future__ import annotations

import json
from pathlib import Path

from textless.data.alignments import Alignment, load_alignments
from textless.data.manifest import Manifest, load_manifest
from textless.errors import TextlessError
from textless.utils.assets import ASSETS_DIR, STARTER_DIR

SPLITS = ("train", "valid", "valid_unseen")
BUNDLED_PREFIX = "bundled:"


def bundled_corpus_dir() -> Path:
    return ASSETS_DIR / "corpus"


def bundled_units_dir(split: str) -> Path:
    """The unit dataset of a bundled split tokenized by the starter tokenizer (it ships beside the starter)."""
    if split not in SPLITS:
        raise TextlessError(f"unknown bundled-corpus split '{split}' (choose from {', '.join(SPLITS)})")
    return STARTER_DIR / "units" / split


def load_bundled_corpus(split: str = "train") -> Manifest:
    """Manifest of one split of the bundled corpus (durations, speakers and transcripts filled in)."""
    if split not in SPLITS:
        raise TextlessError(f"unknown bundled-corpus split '{split}' (choose from {', '.join(SPLITS)})")
    path = bundled_corpus_dir() / f"{split}.tsv"
    if not path.exists():
        raise TextlessError(f"the bundled corpus is missing ({path}); regenerate it with "
                            f"experiments/data/make_corpus.py")
    return load_manifest(path)


def load_bundled_alignments() -> dict[str, Alignment]:
    """Phone (and word) alignments of every bundled utterance whose TTS engine reports timings."""
    return load_alignments(bundled_corpus_dir() / "alignments.jsonl")


def load_bundled_speakers() -> dict[str, dict]:
    """``{speaker: {"engine", "voice", "sex", "alignments", "split"}}``."""
    return json.loads((bundled_corpus_dir() / "speakers.json").read_text())
