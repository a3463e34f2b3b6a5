"""ZeroSpeech 2021 sWUGGY (lexical) and sBLIMP (syntactic): reader, scoring and submission files.

Layout (the official dataset, ``zerospeech2021`` / ``zerospeech/benchmarks`` sLM21)::

    <root>/lexical/{dev,test}/*.wav     + gold.csv   columns id, filename, voice, frequency, word, phones, length, correct
    <root>/syntactic/{dev,test}/*.wav   + gold.csv   columns filename, id, voice, type, subtype, transcription, correct

``filename`` is the wav stem (a ``.wav`` suffix is tolerated); ``correct`` is 1 (word / grammatical sentence) or 0.
Only the dev gold is distributed: a split without gold.csv (the test split) is read as "submission only" (every wav
is scored and written to the submission file; no accuracy). Every wav of the split must appear in gold.csv and every
gold row must have its wav; anything else is an error naming the file.

Pairing, by KEYS, never by row position:
    lexical    (voice, id): one word row and one non-word row per key, as ``zerospeech/benchmarks`` (a ``merge`` on
               voice and id; the older ``zerospeech2021`` code paired the k-th word row with the k-th non-word row);
    syntactic  (type, subtype, id, voice): both official codes pair the k-th correct row with the k-th incorrect row
               (``pandas.concat(axis=1)``), i.e. they rely on the gold file's order. We match on (id, voice), with
               type and subtype added to the key so an id reused by two subtypes stays unambiguous.

Scoring, exactly as the official evaluation: per pair ``0.5 * (s_w == s_nw) + (s_w > s_nw)``; mean over voices per
``id`` (lexical) or per ``(type, subtype, id)`` (syntactic); then

    lexical_all       mean over ids (``by_pair.score.mean()``)
    lexical_invocab   count-weighted mean of the frequency bands except 'oov' (``leaderboard._score_invocab``)
    lexical_oov       the 'oov' band (LibriSpeech frequency 0)
    syntactic         mean over (type, subtype, id)

slamkit's aggregation (``*_pair_mean``): slamkit's ``modelling_metric`` scores sWUGGY / sBLIMP as one flat list of
pairs and reports the plain mean of the pair outcomes, with no per-id voice averaging. Both numbers are reported:

    lexical_pair_mean     mean over all (voice, id) pairs, n = pairs (slamkit)
    syntactic_pair_mean   mean over all (type, subtype, id, voice) pairs, n = pairs (slamkit)

They equal ``lexical_all`` / ``syntactic`` only when every id has the same number of voices: with voice counts
``v_i`` and per-id means ``m_i``, ZeroSpeech takes ``mean_i m_i`` and slamkit ``sum_i v_i m_i / sum_i v_i``, which
weights an id by its voices (e.g. an id won by 2 voices and an id lost by its single voice: 0.5 vs 2/3). Compare
with papers by the aggregation they used; the ZeroSpeech one is the headline here.

Frequency bands: ``pandas.cut(frequency, [0, 1, 5, 20, 100, inf], right=False)`` labelled oov, 1-5, 6-20, 21-100,
>100, i.e. right-open ``[0,1) [1,5) [5,20) [20,100) [100,inf)`` (so "1-5" holds 1..4 and 5 falls in "6-20"; the labels
are the official ones). The official scripts round their CSVs to 4 decimals before the leaderboard reads them; we
do not round. Empty bands are skipped in ``lexical_invocab`` (the official ``np.average`` would return NaN).

Submission (``<dir>/lexical/<split>.txt``, ``<dir>/syntactic/<split>.txt``): one line ``<wav stem> <score>`` per
wav of the split, single space, no header, as ``zerospeech2021`` validates them; the score is the file's
log-likelihood (higher = more probable). The toolkit also wants ``meta.yaml`` and the phonetic / semantic parts for
a complete submission; those are not written here.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from textless.errors import FormatError, TextlessError
from textless.eval.suites.base import (
    Pair,
    ReadOptions,
    SuiteData,
    SuiteResult,
    group_scores,
    item_scores,
    list_wavs,
    show,
    summarize,
    weighted_mean,
)
from textless.utils.atomic import atomic_write_text

SPLITS = ("dev", "test")
GOLD = "gold.csv"
BAND_EDGES = (0, 1, 5, 20, 100, math.inf)
BAND_LABELS = ("oov", "1-5", "6-20", "21-100", ">100")
LEXICAL_COLUMNS = ("filename", "id", "voice", "frequency", "length", "correct")
SYNTACTIC_COLUMNS = ("filename", "id", "voice", "type", "subtype", "correct")
_TRUE, _FALSE = {"1", "1.0", "true", "True"}, {"0", "0.0", "false", "False"}


def frequency_band(frequency: int) -> str:
    """The official band of a LibriSpeech word frequency (right-open bins, see the module docstring)."""
    for label, lo, hi in zip(BAND_LABELS, BAND_EDGES[:-1], BAND_EDGES[1:]):
        if lo <= frequency < hi:
            return label
    raise ValueError(f"frequency {frequency} is negative")


# ---------------------------------------------------------------------------------------------------------- gold
def read_gold(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a gold.csv, checking the header has the `required` columns and filenames are unique."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise FormatError(path, f"missing column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'};"
                                        f" expected the ZeroSpeech 2021 columns {', '.join(required)})", line=1)
            rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None})
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise FormatError(path, f"cannot read ({e})") from None
    seen: dict[str, int] = {}
    for line, row in rows:
        row["filename"] = row["filename"].removesuffix(".wav")
        if not row["filename"]:
            raise FormatError(path, "empty filename", line=line)
        if row["filename"] in seen:
            raise FormatError(path, f"filename '{row['filename']}' is listed twice (first on line "
                                    f"{seen[row['filename']]})", line=line)
        seen[row["filename"]] = line
        row["correct"] = _correct(row.get("correct", ""), path, line)
    return rows


def _correct(value: str, path: Path, line: int) -> str:
    if value in _TRUE:
        return "1"
    if value in _FALSE:
        return "0"
    raise FormatError(path, f"'correct' must be 1 or 0, got {value!r}", line=line)


def _int(value: str, column: str, path: Path, line: int) -> int:
    try:
        number = float(value)
    except ValueError:
        raise FormatError(path, f"'{column}' must be an integer, got {value!r}", line=line) from None
    if not number.is_integer() or number < 0:
        raise FormatError(path, f"'{column}' must be a non-negative integer, got {value!r}", line=line)
    return int(number)


def _split_dir(root: Path, task: str, split: str) -> Path:
    if split not in SPLITS:
        raise TextlessError(f"ZeroSpeech 2021 split must be one of {', '.join(SPLITS)}, got '{split}'")
    directory = root / task / split
    if not directory.is_dir():
        raise TextlessError(f"'{root}' is not a ZeroSpeech 2021 dataset root: '{directory}' is missing (expected "
                            f"<root>/{task}/{split}/*.wav and gold.csv)")
    return directory


def _match_files(directory: Path, rows: list[tuple[int, dict[str, str]]]) -> dict[str, Path]:
    """stem -> wav, checking gold rows and wavs are the same set."""
    wavs = {p.stem: p for p in list_wavs(directory)}
    stems = [row["filename"] for _, row in rows]
    missing = [s for s in stems if s not in wavs]
    if missing:
        raise FormatError(directory / GOLD, f"{len(missing)} gold row(s) have no wav in {directory}: "
                                            f"{show(s + '.wav' for s in missing)}")
    orphans = sorted(set(wavs) - set(stems))
    if orphans:
        raise FormatError(directory / GOLD, f"{len(orphans)} wav(s) in {directory} are not in gold.csv: "
                                            f"{show(s + '.wav' for s in orphans)}")
    return wavs


def _pair_rows(path: Path, rows: list[tuple[int, dict[str, str]]], key_columns: Sequence[str],
               what: tuple[str, str]) -> list[tuple[tuple[int, dict[str, str]], tuple[int, dict[str, str]]]]:
    """(correct row, incorrect row) per key, in the order of the correct rows; errors name the key and lines."""
    sides: dict[tuple[str, ...], dict[str, tuple[int, dict[str, str]]]] = {}
    for line, row in rows:
        key = tuple(row[c] for c in key_columns)
        side = sides.setdefault(key, {})
        if row["correct"] in side:
            label = what[0] if row["correct"] == "1" else what[1]
            raise FormatError(path, f"two {label} rows for {_key_text(key_columns, key)} (lines "
                                    f"{side[row['correct']][0]} and {line})", line=line)
        side[row["correct"]] = (line, row)
    pairs = []
    for key, side in sides.items():
        for have, lack, label in (("1", "0", what[1]), ("0", "1", what[0])):
            if lack not in side:
                raise FormatError(path, f"{_key_text(key_columns, key)} has no {label} row (pairs are matched on "
                                        f"{', '.join(key_columns)})", line=side[have][0])
        pairs.append((side["1"], side["0"]))
    pairs.sort(key=lambda p: p[0][0])
    return pairs


def _key_text(columns: Sequence[str], key: Sequence[str]) -> str:
    return " ".join(f"{c}={v!r}" for c, v in zip(columns, key))


def _no_gold(suite: str, directory: Path, split: str) -> SuiteData:
    if split == "dev":
        raise TextlessError(f"'{directory / GOLD}' is missing (the dev split ships with its gold.csv)")
    note = f"no {GOLD} in {directory}: every wav is scored for the submission file only (the organisers hold " \
           f"the {split} gold)"
    return SuiteData(suite, directory, list_wavs(directory), [], split=split, has_gold=False, notes=[note])


# ------------------------------------------------------------------------------------------------------- lexical
def read_lexical(root: Path, options: ReadOptions) -> SuiteData:
    """sWUGGY pairs (word, non-word) of ``<root>/lexical/<split>``, matched on (voice, id)."""
    directory = _split_dir(root, "lexical", options.split)
    gold = directory / GOLD
    if not gold.is_file():
        return _no_gold("swuggy", directory, options.split)
    rows = read_gold(gold, LEXICAL_COLUMNS)
    wavs = _match_files(directory, rows)
    pairs = []
    for (wline, word), (_, non_word) in _pair_rows(gold, rows, ("voice", "id"), ("word", "non-word")):
        frequency = _int(word["frequency"], "frequency", gold, wline)
        info = {"id": word["id"], "voice": word["voice"], "frequency": frequency,
                "band": frequency_band(frequency), "length": _int(word["length"], "length", gold, wline),
                "word": word.get("word") or word.get("phones", ""),
                "non_word": non_word.get("word") or non_word.get("phones", "")}
        pairs.append(Pair(wavs[word["filename"]], wavs[non_word["filename"]], item=word["id"], info=info))
    return SuiteData("swuggy", directory, [wavs[row["filename"]] for _, row in rows], pairs, split=options.split)


def aggregate_lexical(data: SuiteData, outcomes: np.ndarray) -> SuiteResult:
    """lexical_all / lexical_invocab / lexical_oov (ZeroSpeech), lexical_pair_mean (slamkit) and the by-frequency
    and by-length breakdowns."""
    result = SuiteResult(data.suite, data.split, {}, pairs=len(data.pairs), notes=list(data.notes))
    if not data.has_gold:
        return result
    items = item_scores(data.pairs, outcomes)
    bands = group_scores(items, lambda it: it.info["band"], order=BAND_LABELS)
    result.items = len(items)
    result.metrics = {"lexical_all": summarize(it.score for it in items),
                      "lexical_invocab": weighted_mean(s for band, s in bands.items() if band != "oov"),
                      "lexical_oov": bands["oov"],
                      "lexical_pair_mean": summarize(outcomes)}
    result.breakdowns = {"frequency": bands, "length": group_scores(items, lambda it: it.info["length"])}
    return result


# ----------------------------------------------------------------------------------------------------- syntactic
def read_syntactic(root: Path, options: ReadOptions) -> SuiteData:
    """sBLIMP pairs (grammatical, ungrammatical) of ``<root>/syntactic/<split>``, matched on (type, subtype, id,
    voice)."""
    directory = _split_dir(root, "syntactic", options.split)
    gold = directory / GOLD
    if not gold.is_file():
        return _no_gold("sblimp", directory, options.split)
    rows = read_gold(gold, SYNTACTIC_COLUMNS)
    wavs = _match_files(directory, rows)
    pairs = []
    for (_, good), (_, bad) in _pair_rows(gold, rows, ("type", "subtype", "id", "voice"),
                                          ("correct", "incorrect")):
        info = {"id": good["id"], "voice": good["voice"], "type": good["type"], "subtype": good["subtype"],
                "sentence": good.get("transcription", ""), "non_sentence": bad.get("transcription", "")}
        pairs.append(Pair(wavs[good["filename"]], wavs[bad["filename"]],
                          item=f"{good['type']}/{good['subtype']}/{good['id']}", info=info))
    return SuiteData("sblimp", directory, [wavs[row["filename"]] for _, row in rows], pairs, split=options.split)


def aggregate_syntactic(data: SuiteData, outcomes: np.ndarray) -> SuiteResult:
    """syntactic (mean over (type, subtype, id)), syntactic_pair_mean (mean over pairs, slamkit) and the by-type
    (official) and by-subtype breakdowns."""
    result = SuiteResult(data.suite, data.split, {}, pairs=len(data.pairs), notes=list(data.notes))
    if not data.has_gold:
        return result
    items = item_scores(data.pairs, outcomes)
    result.items = len(items)
    result.metrics = {"syntactic": summarize(it.score for it in items), "syntactic_pair_mean": summarize(outcomes)}
    result.breakdowns = {"type": group_scores(items, lambda it: it.info["type"]),
                         "subtype": group_scores(items, lambda it: f"{it.info['type']}/{it.info['subtype']}")}
    return result


# ---------------------------------------------------------------------------------------------------- submission
def _submission_writer(task: str):
    def write(data: SuiteData, scores: Mapping[Path, float], directory: Path) -> Path:
        """``<directory>/<task>/<split>.txt``: ``<stem> <score>`` per wav of the split (the official format)."""
        missing = [f for f in data.files if f not in scores]
        if missing:
            raise TextlessError(f"no score for {show(f.name for f in missing)}")
        lines = [f"{f.stem} {float(scores[f])!r}\n" for f in data.files]
        path = Path(directory) / task / f"{data.split}.txt"
        atomic_write_text(path, "".join(lines))
        return path

    return write


write_lexical_submission = _submission_writer("lexical")
write_syntactic_submission = _submission_writer("syntactic")


def read_submission(path: str | Path) -> dict[str, float]:
    """A submission file -> {stem: score}, validated like ``zerospeech2021`` (two space-separated fields, a float,
    no duplicate names)."""
    path = Path(path)
    scores: dict[str, float] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = raw.strip().split(" ")
        if len(fields) != 2:
            raise FormatError(path, f'must be "<filename> <score>" but is "{raw.strip()}"', line=number)
        try:
            value = float(fields[1])
        except ValueError:
            raise FormatError(path, f'<score> must be a float but is "{fields[1]}"', line=number) from None
        if fields[0] in scores:
            raise FormatError(path, f"duplicate filename '{fields[0]}'", line=number)
        scores[fields[0]] = value
    return scores
