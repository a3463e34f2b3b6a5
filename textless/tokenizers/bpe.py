"""Byte-pair encoding over discrete speech units, lossless back to the units and their durations.

Pipeline position: speech -> k-means units -> dedup -> **BPE** -> unit LM. A deduplicated utterance is `units` int64
`[L]` in `[0, K)` (K = `base_vocab_size`, the k-means k) with `durations` int64 `[L]` (frames per unit). BPE turns it
into `tokens` int64 `[M]`, `M <= L`, in `[0, V)` (V = `vocab_size`), each token standing for a run of `>= 1` units.

Why Hugging Face `tokenizers`: its BPE trainer and encoder are Rust (multi-threaded batch encoding, a trainer that
updates pair counts incrementally instead of recounting), battle-tested, and save a standard `tokenizer.json`. We
write no merge loop of our own; this module only maps units to characters, fixes the id layout, and keeps durations.

Design choices:

- **One character per unit**: unit `u` is `chr(CHAR_OFFSET + u)` with `CHAR_OFFSET = 0xF0000`, the start of
  Supplementary Private Use Area-A. Private-use code points are never assigned to real characters, so nothing
  (normalizers, whitespace handling, surrogates, control characters) treats them specially, and the block holds
  65534 contiguous non-noncharacter code points: K up to `MAX_BASE_VOCAB = 65534`. (speechbrain's `chr(u + 97)`
  runs through Unicode whitespace such as U+00A0, U+2000..U+200A, U+3000 and reaches the surrogates at K ~ 55000;
  the CJK block at 0x4E00 only holds 20992.) The conversion is vectorised: int -> UTF-32 bytes -> `str`.
- **The whole utterance is one BPE "word"**: no normalizer and no pre-tokenizer, so merges may span the whole
  utterance, as in the unit-BPE papers (there are no word boundaries in speech units). Costs: the trainer keeps
  every *distinct* training utterance in memory (a Rust `String`, 4 bytes per unit, a `Word` of ~32 bytes per unit
  and per-pair sets of utterance indices: measured peak 100-180 bytes per training unit, i.e. 1-2 GB per 10M units,
  so train on a sample), and applying a merge to an utterance costs O(length) per occurrence, super-linear in the
  utterance length (measured: two 100k-unit utterances train 13x slower than the same units in 2k-unit pieces).
  `BPEConfig.train_chunk_length` cuts utterances into pieces for *training only* (merges then never straddle a
  piece boundary in the statistics, negligible for pieces of thousands of units); encoding always sees the whole
  utterance and is O(L log L) (the Rust encoder caches only strings shorter than 256 bytes: memory stays flat).
- **Id layout**: token `u` *is* base unit `u` for `u < K`, merged tokens get ids `>= K` in merge order. An
  utterance without merges is unchanged and the BPE vocabulary is a superset of the unit vocabulary. The trainer's
  output is always rebuilt into this layout (from its ordered merge list) and the layout is checked on load.
  Every base unit is in the vocabulary (`initial_alphabet`), so units never seen in training still encode.
- **max_token_length**: `tokenizers`' own option is off by one (its trainer keeps tokens strictly shorter than
  the limit, and never limits the first 2-unit merges), so we pass `max + 1` and then drop every merge longer than
  `max` ourselves (a dropped merge is never part of a kept one, which would be longer still).
- **vocab_size** is an upper bound: training stops early when no pair occurs `min_frequency` times.
- **Durations**: `BPEUnits.token_durations[j]` is the sum of the durations of the units token `j` covers (what a
  unit LM with duration inputs consumes); `unit_durations` keeps the original per-unit durations, so
  `BPEUnits.to_units` gives back exactly what was encoded.

Saved layout (`UnitBPE.save(path)`, atomic): a directory with `tokenizer.json` (the Hugging Face tokenizer, loadable
by `tokenizers.Tokenizer.from_file`) and `bpe.json` ({"format": "textless.bpe", "version", "base_vocab_size",
"vocab_size", "char_offset", "config"}). A file written by a newer format version raises `FormatError`.

SentencePiece is not offered as a backend: it always reserves an id for <unk> (breaking the id layout), skips
training sentences longer than `max_sentence_length` bytes (4192 by default, ~1000 units), and adds nothing here.

Note: `encode_batch` runs on the Rust thread pool (`TOKENIZERS_PARALLELISM`); after a fork, `tokenizers` falls back
to one thread in the child (with a warning).
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, models, trainers

from textless.data.units import UnitSequence
from textless.errors import ConfigError, FormatError, TextlessError
from textless.utils.atomic import atomic_directory
from textless.utils.versioned import artifact

BPE = artifact("textless.bpe", 1, "a textless BPE model")
META_FILE = "bpe.json"
TOKENIZER_FILE = "tokenizer.json"

CHAR_OFFSET = 0xF0000  # Supplementary Private Use Area-A: U+F0000..U+FFFFD
MAX_BASE_VOCAB = 0xFFFFD - CHAR_OFFSET + 1  # 65534


# --------------------------------------------------------------------------------------------------------------------
# Units <-> text
# --------------------------------------------------------------------------------------------------------------------


def units_to_text(units: np.ndarray, offset: int = CHAR_OFFSET) -> str:
    """Units `[L]` (already validated, non-negative) -> a string of `L` characters, unit `u` = `chr(offset + u)`."""
    return (np.asarray(units, dtype=np.int64) + offset).astype("<u4").tobytes().decode("utf-32-le")


def text_to_units(text: str, offset: int = CHAR_OFFSET) -> np.ndarray:
    """Inverse of `units_to_text`: a string -> int64 units `[len(text)]`."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64) - offset


def _int_array(value: Any, what: str) -> np.ndarray:
    """`value` as a 1-D integer array (not converted yet); an empty input gives an empty int64 array."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise TextlessError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TextlessError(f"{what} must be integers, got dtype {arr.dtype}")
    return arr


def _check_range(arr: np.ndarray, upper: int, what: str, name: str) -> np.ndarray:
    """Raise a `TextlessError` naming the first value of `arr` outside `[0, upper)`; return `arr` as int64."""
    if arr.size:
        bad = (arr < 0) | (arr >= upper)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise TextlessError(f"{what}: {name} {int(arr[pos])} at position {pos} is outside [0, {upper})")
    return arr.astype(np.int64, copy=False)


# --------------------------------------------------------------------------------------------------------------------
# Config and encoded result
# --------------------------------------------------------------------------------------------------------------------


def _positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


@dataclass
class BPEConfig:
    """How to train a `UnitBPE`.

    vocab_size: final vocabulary size V (base units included), `>= base_vocab_size`; an upper bound (fewer tokens
        when too few pairs occur `min_frequency` times).
    min_frequency: a pair must occur at least this often (summed over the corpus) to be merged.
    max_token_length: at most this many units per token (None: unlimited; 1: no merges at all).
    train_chunk_length: training only, cut utterances into pieces of at most this many units (bounds the
        super-linear cost of very long utterances, see the module docstring); None: whole utterances.
    """

    vocab_size: int
    min_frequency: int = 2
    max_token_length: int | None = None
    train_chunk_length: int | None = None

    def problem(self) -> str | None:
        """What is wrong with the values (None if they are fine); `validate` raises it."""
        for name in ("vocab_size", "min_frequency"):
            if not _positive_int(getattr(self, name)):
                return f"BPE {name} must be a positive integer, got {getattr(self, name)!r}"
        for name in ("max_token_length", "train_chunk_length"):
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                return f"BPE {name} must be a positive integer or None, got {value!r}"
        return None

    def validate(self, base_vocab_size: int) -> None:
        problem = self.problem()
        if problem is None and self.vocab_size < base_vocab_size:
            problem = (f"BPE vocab_size {self.vocab_size} is smaller than the number of base units "
                       f"{base_vocab_size}; it must be >= base_vocab_size")
        if problem:
            raise ConfigError(problem)


def _optional_array(value: Any, what: str) -> np.ndarray | None:
    return None if value is None else _int_array(value, what).astype(np.int64, copy=False)


@dataclass(eq=False)
class BPEUnits:
    """One BPE-encoded utterance.

    tokens: int64 `[M]` token ids in `[0, V)`.
    token_durations: int64 `[M]` frames covered by each token (sum of its units' durations), or None.
    unit_durations: int64 `[L]` the original per-unit durations (so decoding is lossless), or None.
    Equality compares the array contents.
    """

    tokens: np.ndarray
    token_durations: np.ndarray | None = None
    unit_durations: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.tokens = _int_array(self.tokens, "tokens").astype(np.int64, copy=False)
        self.token_durations = _optional_array(self.token_durations, "token_durations")
        self.unit_durations = _optional_array(self.unit_durations, "unit_durations")
        if self.token_durations is not None and len(self.token_durations) != len(self.tokens):
            raise TextlessError(f"token_durations has {len(self.token_durations)} items but tokens has "
                                f"{len(self.tokens)}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BPEUnits):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays

    def __len__(self) -> int:
        return len(self.tokens)

    def to_units(self, bpe: UnitBPE) -> tuple[np.ndarray, np.ndarray | None]:
        """(units int64 `[L]`, durations int64 `[L]` or None): exactly what `bpe.encode` was given."""
        units = bpe.decode(self.tokens)
        if self.unit_durations is None:
            if self.token_durations is not None:
                raise TextlessError("these BPE tokens carry token_durations but no unit_durations; per-unit "
                                    "durations cannot be recovered from token durations alone")
            return units, None
        if len(self.unit_durations) != len(units):
            raise TextlessError(f"unit_durations has {len(self.unit_durations)} items but the tokens decode to "
                                f"{len(units)} units")
        if self.token_durations is not None and not np.array_equal(
                self.token_durations, bpe.token_durations(self.tokens, self.unit_durations)):
            raise TextlessError("token_durations do not match the sums of unit_durations over the tokens")
        return units, self.unit_durations.copy()


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.array_equal(a, b))


# --------------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------------


def _merge_pairs(raw: list) -> list[tuple[str, str]]:
    """Merges from a tokenizer.json: `[[a, b], ...]` (tokenizers >= 0.20) or `["a b", ...]` (older)."""
    pairs = []
    for item in raw:
        if isinstance(item, str):
            parts = item.split(" ")
        else:
            parts = list(item)
        if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
            raise ValueError(f"malformed merge {item!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def _canonical_model(merges: Sequence[tuple[str, str]], base_vocab_size: int, max_len: int | None,
                     offset: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges in the textless layout: base unit u -> id u, merged tokens -> K, K+1... in merge order.

    Merges whose result is longer than `max_len` characters (or whose parts are unknown) are dropped.
    """
    vocab = {chr(offset + u): u for u in range(base_vocab_size)}
    kept = []
    for a, b in merges:
        new = a + b
        if a not in vocab or b not in vocab or (max_len is not None and len(new) > max_len):
            continue
        kept.append((a, b))
        if new not in vocab:
            vocab[new] = len(vocab)
    return vocab, kept


def _build_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    # No normalizer, no pre-tokenizer, no post-processor: the whole utterance is one word, nothing is added.
    return Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, fuse_unk=False,
                                byte_fallback=False, ignore_merges=False))


def _vocab_problem(id_to_token: list[str | None], base_vocab_size: int, offset: int) -> str | None:
    """Check the id layout: ids 0..V-1 all used, id u < K is unit u, every token is a run of base units."""
    for i, token in enumerate(id_to_token):
        if token is None:
            return f"token id {i} is missing (ids must be 0..{len(id_to_token) - 1})"
        if i < base_vocab_size and token != chr(offset + i):
            return f"token id {i} must be base unit {i} but is {[ord(c) - offset for c in token]}"
        if not token or any(not 0 <= ord(c) - offset < base_vocab_size for c in token):
            return f"token id {i} holds characters outside the {base_vocab_size} base units"
    return None


class UnitBPE:
    """BPE over deduplicated units: `encode` units `[L]` -> `BPEUnits` (tokens `[M]`), `decode` tokens -> units.

    Attributes: `base_vocab_size` (K, base units, ids 0..K-1), `vocab_size` (V, all tokens), `config`.
    Build with `UnitBPE.train(...)` or `UnitBPE.load(path)`.
    """

    def __init__(self, tokenizer: Tokenizer, base_vocab_size: int, config: BPEConfig,
                 char_offset: int = CHAR_OFFSET, *, _source: str | Path | None = None):
        self._tokenizer = tokenizer
        self.base_vocab_size = int(base_vocab_size)
        self.config = config
        self.char_offset = int(char_offset)
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        id_to_token: list[str | None] = [None] * len(vocab)
        for token, i in vocab.items():
            if 0 <= i < len(vocab):
                id_to_token[i] = token
        problem = _vocab_problem(id_to_token, self.base_vocab_size, self.char_offset)
        if problem:
            if _source is not None:
                raise FormatError(_source, problem)
            raise RuntimeError(f"BPE vocabulary breaks the textless id layout: {problem}")
        tokens = [t for t in id_to_token if t is not None]
        self._lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        self._starts = np.concatenate(([0], np.cumsum(self._lengths)[:-1])).astype(np.int64)
        self._flat = text_to_units("".join(tokens), self.char_offset)

    def __repr__(self) -> str:
        return f"UnitBPE(base_vocab_size={self.base_vocab_size}, vocab_size={self.vocab_size}, config={self.config})"

    @property
    def vocab_size(self) -> int:
        return len(self._lengths)

    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying Hugging Face tokenizer (input: `units_to_text(units)`)."""
        return self._tokenizer

    @property
    def token_lengths(self) -> np.ndarray:
        """int64 `[V]`: number of base units each token stands for (1 for ids < K)."""
        return self._lengths.copy()

    def token_units(self, token_id: int) -> tuple[int, ...]:
        """The base units token `token_id` stands for (`(u,)` for a base unit u < K)."""
        if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral):
            raise TextlessError(f"token id must be an integer, got {token_id!r}")
        if not 0 <= token_id < self.vocab_size:
            raise TextlessError(f"token id {int(token_id)} is outside [0, {self.vocab_size})")
        start = self._starts[token_id]
        return tuple(int(u) for u in self._flat[start:start + self._lengths[token_id]])

    # ------------------------------------------------------------------------------------------------- training
    @classmethod
    def train(cls, sequences: Iterable[np.ndarray | UnitSequence], base_vocab_size: int,
              config: BPEConfig) -> UnitBPE:
        """Learn merges from (deduplicated) unit sequences, each int64 `[L]` in `[0, base_vocab_size)`.

        `sequences` is consumed once (streamed; a `UnitDataset` or `UnitSequence`s work too). Every base unit is in
        the vocabulary whether or not it occurs. Raises `ConfigError` for a bad config and `TextlessError` naming
        the sequence and value for a unit out of range.
        """
        if not _positive_int(base_vocab_size) or base_vocab_size > MAX_BASE_VOCAB:
            raise ConfigError(f"base_vocab_size must be an integer in [1, {MAX_BASE_VOCAB}], got {base_vocab_size!r}")
        if not isinstance(config, BPEConfig):
            raise TypeError(f"config must be a BPEConfig, got {type(config).__name__}")
        config.validate(base_vocab_size)
        max_len = config.max_token_length
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size, min_frequency=config.min_frequency, show_progress=False,
            special_tokens=[], initial_alphabet=[chr(CHAR_OFFSET + u) for u in range(base_vocab_size)],
            # tokenizers keeps tokens strictly shorter than its max_token_length; we filter exactly below
            max_token_length=None if max_len is None else max_len + 1)
        tokenizer = Tokenizer(models.BPE())
        tokenizer.train_from_iterator(_training_texts(sequences, base_vocab_size, config.train_chunk_length),
                                      trainer=trainer)
        trained = json.loads(tokenizer.to_str())["model"]
        trained_merges = _merge_pairs(trained["merges"])
        vocab, merges = _canonical_model(trained_merges, base_vocab_size, max_len, CHAR_OFFSET)
        unexpected = set(trained["vocab"]) - {a + b for a, b in trained_merges} - set(vocab)
        if unexpected:  # pragma: no cover - would mean tokenizers added tokens we did not ask for
            raise RuntimeError(f"tokenizers added {len(unexpected)} unexpected tokens to the BPE vocabulary")
        return cls(_build_tokenizer(vocab, merges), base_vocab_size, config)

    # ------------------------------------------------------------------------------------------------- encoding
    def _prepare(self, units: Any, durations: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(units, UnitSequence):
            if durations is not None:
                raise TypeError("pass durations either in the UnitSequence or as an argument, not both")
            what = f"utterance {units.id!r}"
            units, durations = units.units, units.durations
        arr = _check_range(_int_array(units, f"{what}: units"), self.base_vocab_size, what, "unit")
        if durations is None:
            return arr, None
        dur = _int_array(durations, f"{what}: durations").astype(np.int64, copy=False)
        if len(dur) != len(arr):
            raise TextlessError(f"{what}: durations has {len(dur)} items but units has {len(arr)}")
        return arr, dur

    def _result(self, ids: list[int], units: np.ndarray, durations: np.ndarray | None) -> BPEUnits:
        tokens = np.asarray(ids, dtype=np.int64)
        if int(self._lengths[tokens].sum()) != len(units):  # pragma: no cover - lossless by construction
            raise RuntimeError(f"BPE encoding covers {int(self._lengths[tokens].sum())} units, expected {len(units)}")
        if durations is None:
            return BPEUnits(tokens)
        return BPEUnits(tokens, self.token_durations(tokens, durations), durations.copy())

    def encode(self, units: np.ndarray | UnitSequence, durations: np.ndarray | None = None) -> BPEUnits:
        """Units int64 `[L]` in `[0, K)` (+ optional durations `[L]`) -> `BPEUnits` (tokens `[M]`, `M <= L`).

        A `UnitSequence` may be passed instead (its durations are used). An empty sequence gives empty arrays.
        """
        arr, dur = self._prepare(units, durations, "encode")
        if arr.size == 0:
            return self._result([], arr, dur)
        ids = self._tokenizer.encode(units_to_text(arr, self.char_offset), add_special_tokens=False).ids
        return self._result(ids, arr, dur)

    def encode_batch(self, items: Sequence[np.ndarray | tuple[np.ndarray, np.ndarray | None] | UnitSequence]
                     ) -> list[BPEUnits]:
        """Encode many utterances on the Rust thread pool; identical to calling `encode` on each.

        Each item is a units array `[L]`, a `(units, durations)` pair, or a `UnitSequence`.
        """
        prepared = []
        for i, item in enumerate(items):
            if isinstance(item, tuple):
                if len(item) != 2:
                    raise TextlessError(f"encode_batch item {i}: expected (units, durations), got {len(item)} items")
                prepared.append(self._prepare(item[0], item[1], f"encode_batch item {i}"))
            else:
                prepared.append(self._prepare(item, None, f"encode_batch item {i}"))
        texts = [units_to_text(arr, self.char_offset) for arr, _ in prepared]
        batch = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        encodings = batch(texts, add_special_tokens=False) if texts else []
        return [self._result(enc.ids, arr, dur) for enc, (arr, dur) in zip(encodings, prepared, strict=True)]

    def token_durations(self, tokens: np.ndarray, unit_durations: np.ndarray) -> np.ndarray:
        """int64 `[M]`: for each token, the sum of `unit_durations` `[L]` over the units it covers."""
        tokens = self._check_tokens(tokens)
        lengths = self._lengths[tokens]
        dur = _int_array(unit_durations, "unit_durations").astype(np.int64, copy=False)
        if int(lengths.sum()) != len(dur):
            raise TextlessError(f"the tokens cover {int(lengths.sum())} units but unit_durations has {len(dur)}")
        if tokens.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.add.reduceat(dur, np.concatenate(([0], np.cumsum(lengths)[:-1]))).astype(np.int64)

    # ------------------------------------------------------------------------------------------------- decoding
    def _check_tokens(self, tokens: Any) -> np.ndarray:
        return _check_range(_int_array(tokens, "tokens"), self.vocab_size, "decode", "token id")

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids int64 `[M]` in `[0, V)` -> base units int64 `[L]` (`L = token_lengths[tokens].sum()`)."""
        tokens = self._check_tokens(tokens)
        lengths = self._lengths[tokens]
        total = int(lengths.sum())
        # position p of the output reads flat[starts[token] + (p - first output position of that token)]
        shift = self._starts[tokens] - (np.cumsum(lengths) - lengths)
        return self._flat[np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)].copy()

    # ---------------------------------------------------------------------------------------------- persistence
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write `path/` (tokenizer.json + bpe.json) atomically; `FileExistsError` if it exists and not `overwrite`."""
        path = Path(path)
        meta = {**BPE.header(), "base_vocab_size": self.base_vocab_size,
                "vocab_size": self.vocab_size, "char_offset": self.char_offset, "config": asdict(self.config)}
        with atomic_directory(path, overwrite=overwrite) as tmp:
            self._tokenizer.save(str(tmp / TOKENIZER_FILE))
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> UnitBPE:
        """Read a directory written by `save`. Raises `FormatError` (naming the file) if it is not a valid one."""
        path = Path(path)
        if not path.is_dir():
            raise FormatError(path, "not a BPE model directory (expected tokenizer.json and bpe.json)")
        meta_path, tok_path = path / META_FILE, path / TOKENIZER_FILE
        meta = _read_json(meta_path)
        base, config, offset = _parse_meta(meta, meta_path)
        tok_json = _read_json(tok_path)
        problem = _tokenizer_json_problem(tok_json)
        if problem:
            raise FormatError(tok_path, problem)
        try:
            tokenizer = Tokenizer.from_str(json.dumps(tok_json))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed model
            raise FormatError(tok_path, f"not a valid Hugging Face tokenizer ({e})") from None
        bpe = cls(tokenizer, base, config, offset, _source=tok_path)
        if bpe.vocab_size != meta["vocab_size"]:
            raise FormatError(meta_path, f"'vocab_size' is {meta['vocab_size']} but tokenizer.json has "
                                         f"{bpe.vocab_size} tokens")
        return bpe


def _training_texts(sequences: Iterable[Any], base_vocab_size: int, chunk: int | None) -> Iterator[str]:
    for i, seq in enumerate(sequences):
        what = f"training sequence {i}"
        if isinstance(seq, UnitSequence):
            what, seq = f"training utterance {seq.id!r}", seq.units
        arr = _check_range(_int_array(seq, f"{what}: units"), base_vocab_size, what, "unit")
        if arr.size == 0:
            continue
        step = chunk or arr.size
        for start in range(0, arr.size, step):
            yield units_to_text(arr[start:start + step])


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FormatError(path, "missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError(path, f"not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise FormatError(path, f"invalid JSON ({e.msg} at line {e.lineno})") from None


def _parse_meta(meta: Any, path: Path) -> tuple[int, BPEConfig, int]:
    BPE.check(meta, path)
    for key in ("base_vocab_size", "vocab_size", "char_offset"):
        if not _positive_int(meta.get(key)):
            raise FormatError(path, f"'{key}' must be a positive integer, got {meta.get(key)!r}")
    base, offset = meta["base_vocab_size"], meta["char_offset"]
    last = offset + base - 1
    if last > 0x10FFFF or (offset <= 0xDFFF and last >= 0xD800):
        raise FormatError(path, f"'char_offset' {offset:#x} with {base} units leaves the valid Unicode range")
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise FormatError(path, f"'config' must be an object, got {type(raw).__name__}")
    known = {f.name for f in fields(BPEConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise FormatError(path, f"'config' has unknown key {unknown[0]!r}")
    try:
        config = BPEConfig(**raw)
    except TypeError as e:
        raise FormatError(path, f"'config' is incomplete ({e})") from None
    problem = config.problem()
    if problem:
        raise FormatError(path, f"'config': {problem}")
    return base, config, offset


def _tokenizer_json_problem(tok: Any) -> str | None:
    """The tokenizer must be a plain BPE: no normalizer/pre-tokenizer/post-processor/added tokens, no dropout."""
    if not isinstance(tok, dict) or not isinstance(tok.get("model"), dict):
        return "expected a Hugging Face tokenizer JSON object with a 'model'"
    model = tok["model"]
    if model.get("type") != "BPE":
        return f"expected a BPE model, got {model.get('type')!r}"
    for key in ("normalizer", "pre_tokenizer", "post_processor"):
        if tok.get(key) is not None:
            return f"'{key}' must be null (units are encoded as one word), got {tok[key]!r}"
    if tok.get("added_tokens"):
        return "'added_tokens' must be empty"
    if model.get("dropout") not in (None, 0, 0.0):
        return f"BPE dropout must be null (encoding must be deterministic), got {model.get('dropout')!r}"
    for key in ("unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key) is not None:
            return f"BPE '{key}' must be null, got {model.get(key)!r}"
    if model.get("byte_fallback") or model.get("ignore_merges"):
        return "BPE 'byte_fallback' and 'ignore_merges' must be false"
    return None
