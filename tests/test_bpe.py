"""UnitBPE: Rust BPE over speech units, lossless back to units and durations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textless.data.units import UnitSequence
from textless.errors import ConfigError, FormatError, TextlessError
from textless.tokenizers.bpe import (
    CHAR_OFFSET,
    MAX_BASE_VOCAB,
    BPEConfig,
    BPEUnits,
    UnitBPE,
    _canonical_model,
    text_to_units,
    units_to_text,
)

K = 50


def planted_corpus(n: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Random deduplicated-looking units in [10, 40) with [3, 7, 3, 7, ...] and [1, 2, 5] planted in them."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n):
        parts = []
        for _ in range(rng.integers(3, 7)):
            parts.append(rng.integers(10, 40, rng.integers(2, 6)))
            parts.append(np.tile([3, 7], rng.integers(1, 4)) if rng.random() < 0.5 else np.array([1, 2, 5]))
        seqs.append(np.concatenate(parts).astype(np.int64))
    return seqs


@pytest.fixture(scope="module")
def corpus() -> list[np.ndarray]:
    return planted_corpus()


@pytest.fixture(scope="module")
def bpe(corpus) -> UnitBPE:
    return UnitBPE.train(corpus, K, BPEConfig(vocab_size=120))


def all_token_units(model: UnitBPE) -> set[tuple[int, ...]]:
    return {model.token_units(i) for i in range(model.vocab_size)}


# ------------------------------------------------------------------------------------------------------- training


def test_planted_patterns_are_merged(bpe):
    tokens = all_token_units(bpe)
    assert (3, 7) in tokens
    assert (1, 2, 5) in tokens
    assert (3, 7, 3, 7) in tokens


def test_vocab_layout_base_units_are_identity(bpe):
    assert bpe.base_vocab_size == K
    assert bpe.vocab_size == 120  # enough frequent pairs to fill the vocabulary
    for u in range(K):
        assert bpe.token_units(u) == (u,)
    assert all(len(bpe.token_units(i)) >= 2 for i in range(K, bpe.vocab_size))
    assert len(all_token_units(bpe)) == bpe.vocab_size  # no two ids stand for the same units
    assert bpe.token_lengths.tolist() == [len(bpe.token_units(i)) for i in range(bpe.vocab_size)]
    hf_vocab = bpe.tokenizer.get_vocab()
    assert all(hf_vocab[chr(CHAR_OFFSET + u)] == u for u in range(K))


def test_unmerged_units_are_unchanged(bpe):
    # units 40..49 never occur in training, so nothing merges with them: tokens == units
    units = np.array([40, 41, 49, 45, 40, 42], dtype=np.int64)
    encoded = bpe.encode(units)
    assert encoded.tokens.tolist() == units.tolist()
    assert encoded.tokens.dtype == np.int64


def test_compression_on_planted_data(bpe, corpus):
    encoded = bpe.encode_batch(corpus)
    ratio = sum(len(s) for s in corpus) / sum(len(e) for e in encoded)
    assert ratio > 1.3


def test_canonical_layout_is_rebuilt_from_the_merge_order():
    def c(*units):
        return "".join(chr(CHAR_OFFSET + u) for u in units)

    merges = [(c(2), c(3)), (c(1), c(2, 3)), (c(1), c(2)), (c(1, 2), c(3)), (c(0), c(9))]
    vocab, kept = _canonical_model(merges, 5, None, CHAR_OFFSET)
    # base units first as ids 0..4, then merge results in merge order; a token made twice gets one id;
    # a merge with a part outside the vocabulary (unit 9 >= K) is dropped
    assert vocab == {**{c(u): u for u in range(5)}, c(2, 3): 5, c(1, 2, 3): 6, c(1, 2): 7}
    assert kept == merges[:4]
    vocab, kept = _canonical_model(merges, 5, 2, CHAR_OFFSET)  # max_token_length=2 drops the 3-unit merges
    assert vocab == {**{c(u): u for u in range(5)}, c(2, 3): 5, c(1, 2): 6}
    assert kept == [merges[0], merges[2]]


def test_vocab_size_is_an_upper_bound():
    seqs = [np.array([1, 2, 3])] * 5  # only a couple of pairs can ever be merged
    model = UnitBPE.train(seqs, 10, BPEConfig(vocab_size=1000))
    assert 10 < model.vocab_size <= 13
    exact = UnitBPE.train(planted_corpus(50), K, BPEConfig(vocab_size=K + 7))
    assert exact.vocab_size == K + 7
    assert UnitBPE.train(seqs, 10, BPEConfig(vocab_size=10)).vocab_size == 10


def test_min_frequency():
    seqs = [np.array([1, 2, 3, 4])] * 3 + [np.array([5, 6])]
    model = UnitBPE.train(seqs, 10, BPEConfig(vocab_size=100, min_frequency=3))
    tokens = all_token_units(model)
    assert (1, 2) in tokens and (5, 6) not in tokens
    assert (5, 6) in all_token_units(UnitBPE.train(seqs, 10, BPEConfig(vocab_size=100, min_frequency=1)))


@pytest.mark.parametrize("max_len", [1, 2, 3, 4])
def test_max_token_length(corpus, max_len):
    model = UnitBPE.train(corpus, K, BPEConfig(vocab_size=120, max_token_length=max_len))
    assert model.token_lengths.max() == max_len  # never more, and the limit itself is reachable
    if max_len >= 2:
        assert (3, 7) in all_token_units(model)
    units = np.concatenate(corpus[:10])
    assert np.array_equal(model.decode(model.encode(units).tokens), units)


def test_train_chunk_length_only_affects_training(corpus):
    model = UnitBPE.train(corpus, K, BPEConfig(vocab_size=100, train_chunk_length=8))
    assert (3, 7) in all_token_units(model)
    long = np.concatenate(corpus)  # one long utterance, encoded as a whole
    assert np.array_equal(model.decode(model.encode(long).tokens), long)


def test_training_is_deterministic(corpus):
    a = UnitBPE.train(corpus, K, BPEConfig(vocab_size=120))
    b = UnitBPE.train(iter(corpus), K, BPEConfig(vocab_size=120))
    assert a.tokenizer.to_str() == b.tokenizer.to_str()


def test_train_accepts_unit_sequences_and_skips_empty(corpus):
    seqs = [UnitSequence(f"u{i}", s) for i, s in enumerate(corpus)]
    from_seqs = UnitBPE.train([np.zeros(0, dtype=np.int64), *seqs], K, BPEConfig(vocab_size=120))
    from_arrays = UnitBPE.train(corpus, K, BPEConfig(vocab_size=120))
    assert from_seqs.tokenizer.to_str() == from_arrays.tokenizer.to_str()


def test_large_base_vocabulary():
    k = 2000
    rng = np.random.default_rng(1)
    pattern = np.array([1999, 0, 1234])
    seqs = [np.concatenate([rng.integers(0, k, 20), pattern, rng.integers(0, k, 20)]) for _ in range(30)]
    model = UnitBPE.train(seqs, k, BPEConfig(vocab_size=k + 10))
    assert model.base_vocab_size == k and k < model.vocab_size <= k + 10
    assert (1999, 0, 1234) in all_token_units(model)
    assert all(model.token_units(u) == (u,) for u in range(k))
    units = rng.integers(0, k, 500)
    assert np.array_equal(model.decode(model.encode(units).tokens), units)
    assert model.encode(np.array([1999, 1998])).tokens.tolist() == [1999, 1998]


def test_char_mapping_covers_the_largest_vocabulary():
    units = np.array([0, 1, MAX_BASE_VOCAB - 1])
    text = units_to_text(units)
    assert len(text) == 3 and text[0] == chr(CHAR_OFFSET) and text[-1] == "\U000ffffd"
    assert all(not 0xD800 <= ord(c) <= 0xDFFF and not c.isspace() and not c.isprintable() for c in text)
    assert np.array_equal(text_to_units(text), units)


# ------------------------------------------------------------------------------------------------ encode / decode


def test_round_trip_random_sequences(bpe):
    rng = np.random.default_rng(2)
    for _ in range(50):
        units = rng.integers(0, K, rng.integers(1, 300))  # includes units 0, 4..9, 40..49 never seen in training
        encoded = bpe.encode(units)
        assert np.array_equal(bpe.decode(encoded.tokens), units)
        assert len(encoded.tokens) <= len(units)
        assert (encoded.tokens >= 0).all() and (encoded.tokens < bpe.vocab_size).all()


def test_round_trip_planted_data_uses_merges(bpe, corpus):
    for units in corpus[:20]:
        encoded = bpe.encode(units)
        assert (encoded.tokens >= K).any()
        assert np.array_equal(bpe.decode(encoded.tokens), units)


def test_durations_round_trip(bpe, corpus):
    rng = np.random.default_rng(3)
    units = corpus[0]
    durations = rng.integers(1, 10, len(units))
    encoded = bpe.encode(units, durations)
    assert np.array_equal(encoded.unit_durations, durations)
    assert encoded.token_durations is not None and encoded.token_durations.dtype == np.int64
    assert len(encoded.token_durations) == len(encoded.tokens)
    assert encoded.token_durations.sum() == durations.sum()
    # each token's duration is the sum over the units it covers
    pos = 0
    for tok, dur in zip(encoded.tokens, encoded.token_durations, strict=True):
        n = len(bpe.token_units(int(tok)))
        assert dur == durations[pos:pos + n].sum()
        pos += n
    back_units, back_durations = encoded.to_units(bpe)
    assert np.array_equal(back_units, units) and np.array_equal(back_durations, durations)
    assert np.array_equal(np.repeat(back_units, back_durations), np.repeat(units, durations))


def test_encode_without_durations(bpe, corpus):
    encoded = bpe.encode(corpus[0])
    assert encoded.token_durations is None and encoded.unit_durations is None
    units, durations = encoded.to_units(bpe)
    assert np.array_equal(units, corpus[0]) and durations is None


def test_encode_unit_sequence(bpe, corpus):
    seq = UnitSequence("utt", corpus[1], np.arange(1, len(corpus[1]) + 1))
    assert bpe.encode(seq) == bpe.encode(seq.units, seq.durations)


def test_empty_sequence(bpe):
    encoded = bpe.encode(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert encoded.tokens.shape == (0,) and encoded.tokens.dtype == np.int64
    assert encoded.token_durations.shape == (0,) and encoded.unit_durations.shape == (0,)
    assert bpe.encode([]).tokens.shape == (0,)
    assert bpe.decode(np.zeros(0, dtype=np.int64)).shape == (0,)
    units, durations = encoded.to_units(bpe)
    assert units.shape == (0,) and durations.shape == (0,)


def test_batch_equals_single(bpe, corpus):
    rng = np.random.default_rng(4)
    items = [corpus[0], (corpus[1], rng.integers(1, 5, len(corpus[1]))), np.zeros(0, dtype=np.int64),
             UnitSequence("s", corpus[2], np.ones(len(corpus[2]), dtype=np.int64)), rng.integers(0, K, 1000)]
    batch = bpe.encode_batch(items)
    single = [bpe.encode(*item) if isinstance(item, tuple) else bpe.encode(item) for item in items]
    assert batch == single
    assert bpe.encode_batch([]) == []


def test_decode_accepts_lists_and_other_int_dtypes(bpe):
    tokens = bpe.encode(np.array([3, 7, 3, 7, 1, 2, 5])).tokens
    assert np.array_equal(bpe.decode(tokens.tolist()), bpe.decode(tokens.astype(np.uint16)))
    assert bpe.decode(tokens).tolist() == [3, 7, 3, 7, 1, 2, 5]
    assert bpe.encode(np.array([3, 7], dtype=np.uint8)).tokens.tolist() == bpe.encode(np.array([3, 7])).tokens.tolist()


# ---------------------------------------------------------------------------------------------------- save / load


def test_save_load_reproduces_encoding(bpe, corpus, tmp_path):
    path = bpe.save(tmp_path / "bpe")
    assert sorted(p.name for p in path.iterdir()) == ["bpe.json", "tokenizer.json"]
    loaded = UnitBPE.load(path)
    assert loaded.base_vocab_size == bpe.base_vocab_size and loaded.vocab_size == bpe.vocab_size
    assert loaded.config == bpe.config
    rng = np.random.default_rng(5)
    seqs = corpus[:20] + [rng.integers(0, K, 200) for _ in range(5)]
    assert loaded.encode_batch(seqs) == bpe.encode_batch(seqs)
    assert all(loaded.token_units(i) == bpe.token_units(i) for i in range(bpe.vocab_size))
    assert not list(tmp_path.glob(".tmp-*"))  # atomic: no leftovers


def test_save_refuses_to_overwrite(bpe, tmp_path):
    bpe.save(tmp_path / "bpe")
    with pytest.raises(FileExistsError):
        bpe.save(tmp_path / "bpe")
    bpe.save(tmp_path / "bpe", overwrite=True)
    assert UnitBPE.load(tmp_path / "bpe").vocab_size == bpe.vocab_size


def _edit_json(path, edit):
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_load_newer_version_is_format_error(bpe, tmp_path):
    path = bpe.save(tmp_path / "bpe")
    _edit_json(path / "bpe.json", lambda d: d.update(version=2))
    with pytest.raises(FormatError, match=r"bpe\.json: written by a newer textless \(version 2\)"):
        UnitBPE.load(path)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="other"), "not a textless BPE model"),
    (lambda d: d.update(base_vocab_size=0), "'base_vocab_size' must be a positive integer"),
    (lambda d: d.update(vocab_size=7), "'vocab_size' is 7 but tokenizer.json has 120"),
    (lambda d: d["config"].update(extra=1), "unknown key 'extra'"),
    (lambda d: d["config"].update(min_frequency=0), "min_frequency must be a positive integer"),
    (lambda d: d.update(base_vocab_size=40), "token id 40 holds characters outside the 40 base units"),
])
def test_load_rejects_bad_meta(bpe, tmp_path, edit, match):
    path = bpe.save(tmp_path / "bpe")
    _edit_json(path / "bpe.json", edit)
    with pytest.raises(FormatError, match=match):
        UnitBPE.load(path)


def _swap_ids(d):
    vocab = d["model"]["vocab"]
    a, b = chr(CHAR_OFFSET), chr(CHAR_OFFSET + 1)
    vocab[a], vocab[b] = vocab[b], vocab[a]


@pytest.mark.parametrize("edit, match", [
    (_swap_ids, "token id 0 must be base unit 0"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "'pre_tokenizer' must be null"),
    (lambda d: d["model"].update(dropout=0.1), "dropout must be null"),
    (lambda d: d["model"].update(type="WordPiece"), "expected a BPE model"),
    (lambda d: d["model"]["merges"].append(["x", "y"]), "not a valid Hugging Face tokenizer"),
])
def test_load_rejects_bad_tokenizer(bpe, tmp_path, edit, match):
    path = bpe.save(tmp_path / "bpe")
    _edit_json(path / "tokenizer.json", edit)
    with pytest.raises(FormatError, match=match):
        UnitBPE.load(path)


def test_load_missing_or_corrupt(bpe, tmp_path):
    with pytest.raises(FormatError, match="not a BPE model directory"):
        UnitBPE.load(tmp_path / "nothing")
    path = bpe.save(tmp_path / "bpe")
    (path / "bpe.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(FormatError, match=r"bpe\.json: invalid JSON"):
        UnitBPE.load(path)
    (path / "bpe.json").unlink()
    with pytest.raises(FormatError, match=r"bpe\.json: missing"):
        UnitBPE.load(path)


# ------------------------------------------------------------------------------------------------------- errors


def test_encode_rejects_units_out_of_range(bpe):
    with pytest.raises(TextlessError, match=r"unit 50 at position 2 is outside \[0, 50\)"):
        bpe.encode(np.array([1, 2, 50, 3]))
    with pytest.raises(TextlessError, match=r"unit -1 at position 0"):
        bpe.encode(np.array([-1, 2]))
    with pytest.raises(TextlessError, match=r"encode_batch item 1: unit 99 at position 0"):
        bpe.encode_batch([np.array([1]), np.array([99])])
    with pytest.raises(TextlessError, match="must be integers"):
        bpe.encode(np.array([1.0, 2.0]))
    with pytest.raises(TextlessError, match="must be a 1-D array"):
        bpe.encode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TextlessError, match="durations has 1 items but units has 2"):
        bpe.encode(np.array([1, 2]), np.array([3]))


def test_train_rejects_units_out_of_range():
    with pytest.raises(TextlessError, match=r"training sequence 1: unit 12 at position 1 is outside \[0, 10\)"):
        UnitBPE.train([np.array([1, 2]), np.array([3, 12])], 10, BPEConfig(vocab_size=20))
    with pytest.raises(TextlessError, match=r"training utterance 'b': unit 10"):
        UnitBPE.train([UnitSequence("b", [10])], 10, BPEConfig(vocab_size=20))


def test_bad_config():
    with pytest.raises(ConfigError, match="vocab_size 5 is smaller than the number of base units 10"):
        UnitBPE.train([np.array([1, 2])], 10, BPEConfig(vocab_size=5))
    with pytest.raises(ConfigError, match="min_frequency must be a positive integer"):
        UnitBPE.train([np.array([1, 2])], 10, BPEConfig(vocab_size=20, min_frequency=0))
    with pytest.raises(ConfigError, match="max_token_length must be a positive integer or None"):
        UnitBPE.train([np.array([1, 2])], 10, BPEConfig(vocab_size=20, max_token_length=0))
    with pytest.raises(ConfigError, match="base_vocab_size must be an integer"):
        UnitBPE.train([np.array([1, 2])], MAX_BASE_VOCAB + 1, BPEConfig(vocab_size=MAX_BASE_VOCAB + 10))


def test_decode_rejects_bad_token_ids(bpe):
    with pytest.raises(TextlessError, match=r"token id 120 at position 1 is outside \[0, 120\)"):
        bpe.decode(np.array([0, 120]))
    with pytest.raises(TextlessError, match=r"token id 500 is outside \[0, 120\)"):
        bpe.token_units(500)


def test_bpe_units_checks(bpe, corpus):
    with pytest.raises(TextlessError, match="token_durations has 1 items but tokens has 2"):
        BPEUnits(np.array([1, 2]), np.array([1]))
    encoded = bpe.encode(corpus[0], np.ones(len(corpus[0]), dtype=np.int64))
    with pytest.raises(TextlessError, match="no unit_durations"):
        BPEUnits(encoded.tokens, encoded.token_durations).to_units(bpe)
    with pytest.raises(TextlessError, match="unit_durations has 1 items"):
        BPEUnits(encoded.tokens, None, np.array([1])).to_units(bpe)
    with pytest.raises(TextlessError, match="token_durations do not match"):
        BPEUnits(encoded.tokens, encoded.token_durations + 1, encoded.unit_durations).to_units(bpe)
