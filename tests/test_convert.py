"""Converters to and from the anchor toolkits' unit files (fairseq .km, GSLM, slamkit features.jsonl)."""

import json

import numpy as np
import pytest

from textless.data.convert import (
    REGISTRY,
    export_units,
    import_units,
    read_fairseq_km,
    read_gslm_units,
    read_slamkit_features,
    write_fairseq_km,
    write_gslm_units,
    write_slamkit_features,
)
from textless.data.units import InvalidUnitsError, UnitMeta, UnitSequence, dedup, read_units, write_units
from textless.errors import ConfigError, FormatError


def _meta(deduplicated, vocab_size=20, frame_rate=50.0):
    return UnitMeta({"name": "test"}, frame_rate, vocab_size, deduplicated)


def _random_dataset(tmp_path, deduplicated, vocab_size=20, n=8, encoding="binary"):
    rng = np.random.default_rng(int(deduplicated))
    seqs = []
    for i in range(n):
        frames = np.repeat(rng.integers(0, vocab_size - 1, rng.integers(1, 30)), rng.integers(1, 4, 1)[0])
        seqs.append(UnitSequence(f"d/utt {i}|x", *dedup(frames)) if deduplicated else UnitSequence(f"u{i}", frames))
    return read_units(write_units(tmp_path / "ours", seqs, _meta(deduplicated, vocab_size), encoding=encoding))


def _lines(text):
    return "".join(line + "\n" for line in text)


# --------------------------------------------------------------------------------------------------------------------
# fairseq .km
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def km_files(tmp_path):
    km = tmp_path / "train.km"
    km.write_text(_lines(["0 0 1 1 1 2", "3 3", "4 0 0 4"]))
    dictionary = tmp_path / "dict.km.txt"
    dictionary.write_text(_lines(["0 1", "1 1", "2 1", "3 1", "4 1", "5 1"]))
    tsv = tmp_path / "train.tsv"
    tsv.write_text(_lines(["/data/LibriSpeech", "dev/84/121123/84-121123-0000.flac\t16000",
                           "dev/84/121123/84-121123-0001.flac\t8000", "x.y.wav\t320"]))
    return km, dictionary, tsv


def test_read_hand_written_km_with_dict_and_manifest(km_files):
    km, dictionary, tsv = km_files
    seqs, meta = read_fairseq_km(km, manifest_tsv=tsv, dict_path=dictionary)
    assert meta == UnitMeta({"name": "unknown"}, 50.0, 6, deduplicated=False)
    assert seqs == [UnitSequence("dev/84/121123/84-121123-0000", [0, 0, 1, 1, 1, 2]),
                    UnitSequence("dev/84/121123/84-121123-0001", [3, 3]),
                    UnitSequence("x.y", [4, 0, 0, 4])]


def test_read_km_deduplicated_default_ids_and_inferred_vocab(km_files):
    km, _, _ = km_files
    seqs, meta = read_fairseq_km(km, deduplicate=True, frame_rate=25.0, tokenizer={"name": "mhubert", "k": 5})
    assert meta == UnitMeta({"name": "mhubert", "k": 5}, 25.0, 5, deduplicated=True)
    assert seqs == [UnitSequence("0", [0, 1, 2], [2, 3, 1]), UnitSequence("1", [3], [2]),
                    UnitSequence("2", [4, 0, 4], [1, 2, 1])]
    seqs, _ = read_fairseq_km(km, ids=["a", "b", "c"])
    assert [s.id for s in seqs] == ["a", "b", "c"]


def test_km_line_count_must_match_the_manifest(km_files):
    km, _, tsv = km_files
    tsv.write_text(_lines(["/root", "a.flac\t10", "b.flac\t10"]))
    with pytest.raises(FormatError) as e:
        read_fairseq_km(km, manifest_tsv=tsv)
    assert str(e.value) == f"{km}: has 3 utterances but the manifest {tsv} lists 2"
    with pytest.raises(FormatError) as e:
        read_fairseq_km(km, ids=["a"])
    assert str(e.value) == f"{km}: has 3 utterances but 1 ids were given"
    with pytest.raises(ConfigError, match="at most one of ids, ids_path, manifest_tsv"):
        read_fairseq_km(km, ids=["a", "b", "c"], manifest_tsv=tsv)


@pytest.mark.parametrize(("km_text", "line", "reason"), [
    (["1 2", "1 x 2"], 2, "invalid unit 'x' (expected a non-negative integer)"),
    (["1 2", "1 -2"], 2, "invalid unit '-2' (expected a non-negative integer)"),
    (["1 2", "1 2.0"], 2, "invalid unit '2.0' (expected a non-negative integer)"),
    (["1 2", "", "3"], 2, "empty utterance"),
    (["1 2", "3", "   "], 3, "empty utterance"),
    (["1 2", "3", "7 1"], 3, "unit 7 out of range [0, 6)"),
])
def test_malformed_km(km_files, km_text, line, reason):
    km, dictionary, _ = km_files
    km.write_text(_lines(km_text))
    with pytest.raises(FormatError) as e:
        read_fairseq_km(km, dict_path=dictionary)
    assert str(e.value) == f"{km}:{line}: {reason}"


@pytest.mark.parametrize(("dict_text", "line", "reason"), [
    (["0 1", "1"], 2, "expected '<unit> <count>', got '1'"),
    (["0 1", "a 1"], 2, "symbol 'a' is not a unit (a non-negative integer)"),
    (["0 1", "1 many"], 2, "invalid count 'many' (expected a non-negative integer)"),
    (["0 1", "1 1", "0 5"], 3, "duplicate symbol 0 (first on line 1)"),
    (["0 1", "2 1"], None, "symbols must be the units 0..1; missing [1]"),
    ([], None, "no symbols"),
])
def test_malformed_dict(km_files, dict_text, line, reason):
    km, dictionary, _ = km_files
    dictionary.write_text(_lines(dict_text))
    with pytest.raises(FormatError) as e:
        read_fairseq_km(km, dict_path=dictionary)
    where = f"{dictionary}:{line}" if line else f"{dictionary}"
    assert str(e.value) == f"{where}: {reason}"


def test_dict_accepts_fairseq_flags_and_any_symbol_order(km_files):
    km, dictionary, _ = km_files
    dictionary.write_text(_lines(["4 90", "0 80 #fairseq:overwrite", "3 7", "1 5", "2 1"]))
    assert read_fairseq_km(km, dict_path=dictionary)[1].vocab_size == 5


def test_malformed_manifest(km_files):
    km, _, tsv = km_files
    tsv.write_text(_lines(["/root", "a.flac\t10", "b.flac 10", "c.flac\t10"]))
    with pytest.raises(FormatError) as e:
        read_fairseq_km(km, manifest_tsv=tsv)
    assert str(e.value) == f"{tsv}:3: expected '<relative audio path>\\t<num samples>'"
    tsv.write_text(_lines(["/root", "a.flac\t10", "b.wav\t10", "a.wav\t10"]))
    with pytest.raises(FormatError) as e:
        read_fairseq_km(km, manifest_tsv=tsv)
    assert str(e.value) == f"{tsv}:4: duplicate id 'a' (first on line 2)"


def test_km_to_ours_to_km_is_byte_identical(tmp_path):
    km, dictionary = tmp_path / "in.km", tmp_path / "dict.km.txt"
    km.write_text(_lines(["0 0 1 1 1 2", "3 3", "4 0 0 4"]))
    dictionary.write_text(_lines(["0 4", "1 3", "2 1", "3 2", "4 2", "5 0"]))  # canonical: real frame counts
    for deduplicate in (False, True):
        out = import_units(km, tmp_path / f"ours{deduplicate}", "fairseq_km", dict_path=dictionary,
                           deduplicate=deduplicate)
        export_units(out, tmp_path / "out.km", "fairseq_km", dict_path=tmp_path / "out.dict")
        assert (tmp_path / "out.km").read_bytes() == km.read_bytes()
        assert (tmp_path / "out.dict").read_bytes() == dictionary.read_bytes()


@pytest.mark.parametrize("deduplicated", [True, False])
def test_ours_to_km_to_ours_is_lossless(tmp_path, deduplicated):
    ds = _random_dataset(tmp_path, deduplicated)
    km, dictionary, ids = tmp_path / "x.km", tmp_path / "dict.km.txt", tmp_path / "x.ids"
    assert write_fairseq_km(ds, km, dict_path=dictionary, ids_path=ids) == km
    seqs, meta = read_fairseq_km(km, ids_path=ids, dict_path=dictionary, deduplicate=deduplicated)
    assert seqs == list(ds)
    assert meta.vocab_size == ds.meta.vocab_size == len(dictionary.read_text().splitlines())
    frames = np.concatenate([s.expand() for s in ds])
    counts = [int(line.split()[1]) for line in dictionary.read_text().splitlines()]
    assert counts == np.bincount(frames, minlength=ds.meta.vocab_size).tolist()
    assert km.read_text().splitlines()[0] == " ".join(map(str, ds[0].expand().tolist()))


def test_write_km_from_plain_sequences_and_refusals(tmp_path):
    seqs = [UnitSequence("a", [1, 2], [2, 1]), UnitSequence("b", [0])]
    write_fairseq_km(seqs, tmp_path / "x.km", dict_path=tmp_path / "d.txt")
    assert (tmp_path / "x.km").read_text() == "1 1 2\n0\n"
    assert (tmp_path / "d.txt").read_text() == "0 1\n1 2\n2 1\n"
    with pytest.raises(InvalidUnitsError, match="utterance 'b': unit 3 out of range \\[0, 3\\)"):
        write_fairseq_km([UnitSequence("a", [1]), UnitSequence("b", [3])], tmp_path / "y.km", vocab_size=3)
    assert not (tmp_path / "y.km").exists()
    with pytest.raises(InvalidUnitsError, match="utterance 'e': empty utterance"):
        write_fairseq_km([UnitSequence("e", [])], tmp_path / "z.km")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.txt", "x.km"]  # atomic: nothing partial left


# --------------------------------------------------------------------------------------------------------------------
# GSLM
# --------------------------------------------------------------------------------------------------------------------


def test_read_hand_written_gslm(tmp_path):
    path = tmp_path / "units.txt"
    path.write_text(_lines(["1272-128104-0000|71 71 12 12 12 57", "a|b|3", "x y|0"]))
    seqs, meta = read_gslm_units(path, frame_rate=50.0, vocab_size=100)
    assert meta == UnitMeta({"name": "unknown"}, 50.0, 100, deduplicated=False)
    assert seqs == [UnitSequence("1272-128104-0000", [71, 71, 12, 12, 12, 57]), UnitSequence("a|b", [3]),
                    UnitSequence("x y", [0])]
    seqs, meta = read_gslm_units(path, frame_rate=50.0, deduplicate=True)
    assert meta.vocab_size == 72 and meta.deduplicated
    assert seqs[0] == UnitSequence("1272-128104-0000", [71, 12, 57], [2, 3, 1])


@pytest.mark.parametrize(("text", "line", "reason"), [
    (["a|1 2", "b 1 2"], 2, "expected '<name>|<units>'"),
    (["a|1 2", "b|1 z"], 2, "invalid unit 'z' (expected a non-negative integer)"),
    (["a|1 2", "b|"], 2, "empty utterance"),
    (["a|1 2", "|1"], 2, "empty id"),
    (["a|1 2", "a|1"], 2, "duplicate id 'a' (first on line 1)"),
    (["a|1 200"], 1, "unit 200 out of range [0, 100)"),
])
def test_malformed_gslm(tmp_path, text, line, reason):
    path = tmp_path / "units.txt"
    path.write_text(_lines(text))
    with pytest.raises(FormatError) as e:
        read_gslm_units(path, frame_rate=50.0, vocab_size=100)
    assert str(e.value) == f"{path}:{line}: {reason}"


def test_gslm_round_trips(tmp_path):
    path = tmp_path / "units.txt"
    canonical = _lines(["s1|5 5 5 1 2", "s2|0", "s3|3 4"])
    path.write_text(canonical)
    out = import_units(path, tmp_path / "ours", "gslm", frame_rate=50.0, vocab_size=10, deduplicate=True)
    assert export_units(out, tmp_path / "back.txt", "gslm") == tmp_path / "back.txt"
    assert (tmp_path / "back.txt").read_text() == canonical
    for deduplicated in (True, False):
        ds = _random_dataset(tmp_path / str(deduplicated), deduplicated)
        write_gslm_units(ds, tmp_path / "g.txt")
        seqs, meta = read_gslm_units(tmp_path / "g.txt", frame_rate=50.0, vocab_size=20, deduplicate=deduplicated)
        assert seqs == list(ds) and meta == UnitMeta({"name": "unknown"}, 50.0, 20, deduplicated)


# --------------------------------------------------------------------------------------------------------------------
# slamkit
# --------------------------------------------------------------------------------------------------------------------

SLAMKIT_EXAMPLE = (
    '{"units": [3, 49, 7, 254, 30, 4], "duration": [1, 1, 1, 1, 2, 1], '
    '"file_name": "../example_data/audio/audio2.flac"}\n'
    '{"units": [381, 267, 381, 7], "duration": [2, 3, 3, 1], "file_name": "../example_data/audio/audio1.flac"}\n'
)


def test_read_hand_written_slamkit_features(tmp_path):
    path = tmp_path / "features.jsonl"
    path.write_text(SLAMKIT_EXAMPLE)
    seqs, meta = read_slamkit_features(path)
    assert meta == UnitMeta({"name": "unknown"}, 25.0, 500, deduplicated=True)
    assert seqs == [UnitSequence("../example_data/audio/audio2.flac", [3, 49, 7, 254, 30, 4], [1, 1, 1, 1, 2, 1]),
                    UnitSequence("../example_data/audio/audio1.flac", [381, 267, 381, 7], [2, 3, 3, 1])]


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
def test_slamkit_to_ours_to_slamkit_is_byte_identical(tmp_path, encoding):
    path = tmp_path / "features.jsonl"
    path.write_text(SLAMKIT_EXAMPLE)
    out = import_units(path, tmp_path / "ours", "slamkit", encoding=encoding)
    assert read_units(out).encoding == encoding
    export_units(out, tmp_path / "back.jsonl", "slamkit")
    assert (tmp_path / "back.jsonl").read_bytes() == path.read_bytes()


def test_slamkit_frame_level_file_round_trips_as_not_deduplicated(tmp_path):
    path = tmp_path / "features.jsonl"
    path.write_text(_lines([json.dumps({"units": [5, 5, 6], "duration": [1, 1, 1], "file_name": "a.flac"}),
                            json.dumps({"units": [1], "duration": [1], "file_name": "b.flac"})]))
    seqs, meta = read_slamkit_features(path)
    assert not meta.deduplicated and seqs == [UnitSequence("a.flac", [5, 5, 6]), UnitSequence("b.flac", [1])]
    out = import_units(path, tmp_path / "ours", "slamkit")
    export_units(out, tmp_path / "frames.jsonl", "slamkit", deduplicate=False)
    assert (tmp_path / "frames.jsonl").read_bytes() == path.read_bytes()
    export_units(out, tmp_path / "dedup.jsonl", "slamkit")  # default: run-length encode first
    assert read_slamkit_features(tmp_path / "dedup.jsonl")[0] == [UnitSequence("a.flac", [5, 6], [2, 1]),
                                                                   UnitSequence("b.flac", [1], [1])]


@pytest.mark.parametrize("deduplicated", [True, False])
def test_ours_to_slamkit_to_ours(tmp_path, deduplicated):
    ds = _random_dataset(tmp_path, deduplicated)
    write_slamkit_features(ds, tmp_path / "f.jsonl")
    seqs, meta = read_slamkit_features(tmp_path / "f.jsonl", frame_rate=50.0, vocab_size=20)
    assert meta.deduplicated
    assert seqs == [s.deduplicated() for s in ds]
    assert [s.expand().tolist() for s in seqs] == [s.expand().tolist() for s in ds]


@pytest.mark.parametrize(("line", "reason"), [
    ('{"units": [1, 2], "duration": [1], "file_name": "a"}', "'duration' has 1 items but 'units' has 2"),
    ('{"units": [1, 2], "file_name": "a"}', "missing key 'duration'"),
    ('{"units": [1, 2], "duration": [1, 1], "file_name": "a", "text": "hi"}', "unknown key 'text' (it would be lost)"),
    ('{"units": [1, 2], "duration": [1, 0], "file_name": "a"}', "duration 0 at position 1 is < 1"),
    ('{"units": [1, 900], "duration": [1, 1], "file_name": "a"}', "unit 900 out of range [0, 500)"),
    ('{"units": [1, "2"], "duration": [1, 1], "file_name": "a"}', "'units' must be a list of integers"),
    ('{"units": [], "duration": [], "file_name": "a"}', "empty utterance"),
    ('{"units": [1], "duration": [1], "file_name": 3}', "'file_name' must be a string"),
    ('{"units": [1], "duration": [1], "file_name": "../example_data/audio/audio1.flac"}',
     "duplicate id '../example_data/audio/audio1.flac' (first on line 2)"),
    ('{"units": [1], "duration": [1], "file_name": "a"', "invalid JSON (Expecting ',' delimiter at column 49)"),
    ('{"units": [7, 7], "duration": [1, 1], "file_name": "a"}',
     ("consecutive duplicate unit 7 at position 1, but line 1 has durations > 1 (a file must be all deduplicated "
      "or all frame-level)")),
])
def test_malformed_slamkit(tmp_path, line, reason):
    path = tmp_path / "features.jsonl"
    path.write_text(SLAMKIT_EXAMPLE + line + "\n")
    with pytest.raises(FormatError) as e:
        read_slamkit_features(path)
    assert str(e.value) == f"{path}:3: {reason}"


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------


def test_registry_and_unknown_format(tmp_path):
    assert set(REGISTRY) == {"fairseq_km", "gslm", "slamkit", "dgslm"}
    assert all(fmt.name == name and callable(fmt.read) and callable(fmt.write) for name, fmt in REGISTRY.items())
    with pytest.raises(ConfigError, match="unknown unit file format 'kaldi' \\(known: fairseq_km, gslm, slamkit, dgslm\\)"):
        import_units(tmp_path / "x", tmp_path / "y", "kaldi")
    with pytest.raises(ConfigError, match="unknown unit file format"):
        export_units(tmp_path / "x", tmp_path / "y", "kaldi")
    with pytest.raises(FormatError, match="no such file"):
        import_units(tmp_path / "missing.km", tmp_path / "y", "fairseq_km")
    assert not (tmp_path / "y").exists()
