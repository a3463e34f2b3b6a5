"""The unit dataset format: round trips, memory mapping, validation messages, atomic and streaming writes."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textless.data import units as units_module
from textless.data.units import (
    UNITS,
    InvalidUnitsError,
    UnitDataset,
    UnitMeta,
    UnitSequence,
    UnitWriter,
    convert_encoding,
    dedup,
    read_units,
    write_units,
)
from textless.errors import FormatError, TextlessError
from textless.utils.atomic import cleanup_stale_temporaries

REPO_ROOT = Path(__file__).resolve().parents[1]


def _meta(vocab_size=500, deduplicated=True, **kw):
    return UnitMeta(tokenizer={"name": "hubert-base", "layer": 6, "k": vocab_size}, frame_rate=50.0,
                    vocab_size=vocab_size, deduplicated=deduplicated, **kw)


def _random_sequences(rng, n, vocab_size, deduplicated, max_frames=60):
    seqs = []
    for i in range(n):
        frames = rng.integers(0, vocab_size, size=int(rng.integers(1, max_frames)))
        frames = np.repeat(frames, rng.integers(1, 4, size=len(frames)))  # some runs to collapse
        utt_id = f"spk{i % 3}/utt{i}" if i else "spk0/utt0 é\u2028|\\x"  # odd but allowed characters
        if deduplicated:
            seqs.append(UnitSequence(utt_id, *dedup(frames)))
        else:
            seqs.append(UnitSequence(utt_id, frames))
    return seqs


# --------------------------------------------------------------------------------------------------------------------
# dedup and the in-memory types
# --------------------------------------------------------------------------------------------------------------------


def test_dedup_hand_cases():
    units, durations = dedup(np.array([1, 1, 2, 2, 2, 1]))
    assert units.tolist() == [1, 2, 1] and durations.tolist() == [2, 3, 1]
    assert units.dtype == np.int64 and durations.dtype == np.int64
    units, durations = dedup(np.array([], dtype=np.int64))
    assert units.tolist() == [] and durations.tolist() == []
    units, durations = dedup(np.array([7]))
    assert units.tolist() == [7] and durations.tolist() == [1]
    with pytest.raises(ValueError, match="1-D"):
        dedup(np.zeros((2, 2), dtype=np.int64))


def test_dedup_is_inverted_by_repeat():
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 5, 200), rng.integers(1, 5, 200))
    units, durations = dedup(frames)
    assert np.array_equal(np.repeat(units, durations), frames)
    assert not np.any(units[1:] == units[:-1]) and durations.min() >= 1


def test_unit_sequence_expand_frames_and_equality():
    seq = UnitSequence("a", [1, 2, 1], [2, 3, 1])
    assert seq.expand().tolist() == [1, 1, 2, 2, 2, 1]
    assert seq.num_frames == 6 and seq.num_units == 3
    assert seq.units.dtype == np.int64 and seq.durations.dtype == np.int64
    assert UnitSequence("b", np.array([4, 4], dtype=np.uint16)).expand().tolist() == [4, 4]
    assert seq == UnitSequence("a", np.array([1, 2, 1]), np.array([2, 3, 1]))
    assert seq != UnitSequence("a", [1, 2, 1], [2, 3, 2])
    assert seq != UnitSequence("a", [1, 2, 1])
    assert seq != UnitSequence("other", [1, 2, 1], [2, 3, 1])


def test_unit_sequence_deduplicated_merges_runs_and_their_durations():
    assert UnitSequence("a", [1, 1, 2]).deduplicated() == UnitSequence("a", [1, 2], [2, 1])
    assert UnitSequence("a", [1, 1, 2], [2, 3, 1]).deduplicated() == UnitSequence("a", [1, 2], [5, 1])


def test_unit_sequence_rejects_bad_arrays():
    with pytest.raises(InvalidUnitsError, match=r"utterance 'a': 'durations' has 2 items but 'units' has 3"):
        UnitSequence("a", [1, 2, 3], [1, 1])
    with pytest.raises(InvalidUnitsError, match="must be integers, got dtype float64"):
        UnitSequence("a", [1.5, 2.0])
    with pytest.raises(InvalidUnitsError, match="must be 1-D"):
        UnitSequence("a", [[1, 2]])


def test_unit_meta_json_round_trip_and_checks():
    meta = _meta(extra={"corpus": "librispeech"})
    data = json.loads(json.dumps(meta.to_json()))
    assert data["format"] == UNITS.name == "textless.units" and data["version"] == 1 and UNITS.version == 2  # one stream: still version 1
    assert UnitMeta.from_json(data) == meta
    with pytest.raises(ValueError, match=r"'vocab_size' must be an integer in \[1, 2\*\*32\], got 0"):
        _meta(vocab_size=0)
    with pytest.raises(ValueError, match="'tokenizer' must be a dict with a non-empty string 'name'"):
        UnitMeta(tokenizer={}, frame_rate=50, vocab_size=10, deduplicated=False)
    with pytest.raises(ValueError, match="'frame_rate' must be a positive number"):
        UnitMeta(tokenizer={"name": "x"}, frame_rate=0, vocab_size=10, deduplicated=False)


# --------------------------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
@pytest.mark.parametrize("deduplicated", [True, False])
@pytest.mark.parametrize("vocab_size", [500, 70_000])
def test_round_trip(tmp_path, encoding, deduplicated, vocab_size):
    rng = np.random.default_rng(vocab_size + deduplicated)
    seqs = _random_sequences(rng, 25, vocab_size, deduplicated)
    meta = _meta(vocab_size, deduplicated, extra={"note": "é"})
    out = write_units(tmp_path / "ds", seqs, meta, encoding=encoding)
    ds = read_units(out)
    assert isinstance(ds, UnitDataset) and ds.encoding == encoding and ds.path == out
    assert len(ds) == 25 and list(ds) == seqs and ds.meta == meta
    assert ds.ids == [s.id for s in seqs]
    assert ds[-1] == seqs[-1] and ds[3:6] == seqs[3:6] and ds.get("spk1/utt4") == seqs[4]
    assert ds.get(seqs[0].id) == seqs[0]
    item = ds[0]
    item.units[0] += 1  # items are copies
    assert ds[0] == seqs[0]
    with pytest.raises(IndexError):
        ds[25]
    with pytest.raises(KeyError):
        ds.get("nope")
    info = json.loads((out / "meta.json").read_text())
    assert info["num_utterances"] == 25
    assert info["num_units"] == sum(s.num_units for s in seqs) == ds.num_units
    assert info["num_frames"] == sum(s.num_frames for s in seqs) == ds.num_frames
    if encoding == "binary":
        assert info["dtype"] == ("uint16" if vocab_size <= 65536 else "uint32")
        assert ds.units_array.dtype == np.dtype(info["dtype"])
        assert ("durations_dtype" in info) == deduplicated
        assert sorted(p.name for p in out.iterdir()) == sorted(
            ["meta.json", "units.bin", "index.npy", "ids.txt"] + (["durations.bin"] if deduplicated else []))
    else:
        assert sorted(p.name for p in out.iterdir()) == ["meta.json", "units.jsonl"]
    ds.validate()


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
def test_empty_dataset_round_trip(tmp_path, encoding):
    ds = read_units(write_units(tmp_path / "ds", [], _meta(), encoding=encoding))
    assert len(ds) == 0 and list(ds) == [] and ds.num_units == 0
    ds.validate()


def test_long_durations_widen_binary_durations_to_uint32(tmp_path, monkeypatch):
    monkeypatch.setattr(units_module, "_CHUNK", 3)  # widen in several chunks
    seqs = [UnitSequence(f"u{i}", [1, 2, 3, 4], [1, 2, 65535, 7]) for i in range(3)]
    seqs.append(UnitSequence("long", [5, 6], [70_000, 1]))
    seqs.append(UnitSequence("after", [1, 2], [3, 4]))
    out = write_units(tmp_path / "ds", seqs, _meta(), encoding="binary")
    assert json.loads((out / "meta.json").read_text())["durations_dtype"] == "uint32"
    assert list(read_units(out)) == seqs
    small = write_units(tmp_path / "small", seqs[:3], _meta(), encoding="binary")
    assert json.loads((small / "meta.json").read_text())["durations_dtype"] == "uint16"


@pytest.mark.parametrize("deduplicated", [True, False])
def test_convert_encoding_both_ways(tmp_path, deduplicated):
    seqs = _random_sequences(np.random.default_rng(1), 12, 500, deduplicated)
    src = write_units(tmp_path / "a", seqs, _meta(deduplicated=deduplicated), encoding="jsonl")
    binary = convert_encoding(src, tmp_path / "b", "binary")
    back = convert_encoding(binary, tmp_path / "c", "jsonl")
    assert read_units(binary).encoding == "binary" and list(read_units(binary)) == seqs
    assert list(read_units(back)) == seqs and read_units(back).meta == read_units(src).meta
    assert (back / "units.jsonl").read_bytes() == (src / "units.jsonl").read_bytes()
    assert (back / "meta.json").read_bytes() == (src / "meta.json").read_bytes()


# --------------------------------------------------------------------------------------------------------------------
# Binary: memory-mapped, not read at open
# --------------------------------------------------------------------------------------------------------------------


def _binary_dataset(tmp_path, seqs=None, deduplicated=True):
    seqs = seqs if seqs is not None else _random_sequences(np.random.default_rng(2), 10, 500, deduplicated)
    return write_units(tmp_path / "ds", seqs, _meta(deduplicated=deduplicated), encoding="binary"), seqs


def test_binary_read_is_memory_mapped(tmp_path):
    out, seqs = _binary_dataset(tmp_path)
    ds = read_units(out)
    assert isinstance(ds.units_array, np.memmap) and ds.units_array.mode == "r"
    assert isinstance(ds.durations_array, np.memmap) and isinstance(ds.index, np.memmap)
    assert ds.index.dtype == np.int64 and ds.index.tolist()[-1] == ds.num_units
    a, b = ds.index[3], ds.index[4]
    assert np.array_equal(ds.units_array[a:b], seqs[3].units)
    item = ds[3]
    assert not isinstance(item.units, np.memmap) and item.units.dtype == np.int64


def test_binary_open_does_not_read_the_data_but_items_and_validate_check_it(tmp_path):
    out, seqs = _binary_dataset(tmp_path)
    start = int(np.load(out / "index.npy")[4])
    raw = np.fromfile(out / "units.bin", dtype="<u2")
    raw[start + 1] = 512
    raw.tofile(out / "units.bin")
    ds = read_units(out)  # opens: the corrupt unit is not looked at
    assert ds[3] == seqs[3]
    expected = f"{out / 'units.bin'}: utterance 4 ('spk1/utt4'): unit 512 out of range [0, 500)"
    with pytest.raises(FormatError) as e:
        ds[4]
    assert str(e.value) == expected
    with pytest.raises(FormatError) as e:
        ds.validate()
    assert str(e.value) == expected


def test_binary_ids_are_read_lazily(tmp_path):
    out, seqs = _binary_dataset(tmp_path)
    ds = read_units(out)
    (out / "ids.txt").write_text("".join(f"renamed{i}\n" for i in range(len(seqs))))  # after open, before use
    assert ds.ids[0] == "renamed0" and ds.get("renamed2") == UnitSequence("renamed2", seqs[2].units,
                                                                          seqs[2].durations)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1000])
def test_validate_in_chunks_allows_repeats_across_utterances_and_finds_repeats_inside(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(units_module, "_CHUNK", chunk)
    seqs = [UnitSequence("a", [1, 2, 3], [1, 1, 1]), UnitSequence("b", [3, 4], [2, 1]),  # "b" starts with a's unit
            UnitSequence("c", [4, 5, 6, 7], [1, 1, 1, 1]), UnitSequence("d", [7], [9])]
    out, _ = _binary_dataset(tmp_path, seqs)
    read_units(out).validate()
    raw = np.fromfile(out / "units.bin", dtype="<u2")
    raw[8] = 6  # "c" (flat positions 5..8) becomes [4, 5, 6, 6]
    raw.tofile(out / "units.bin")
    with pytest.raises(FormatError) as e:
        read_units(out).validate()
    assert str(e.value) == (f"{out / 'units.bin'}: utterance 2 ('c'): consecutive duplicate unit 6 at position 3 "
                            "in a deduplicated dataset")


def test_validate_checks_durations_and_frame_count(tmp_path):
    out, _ = _binary_dataset(tmp_path, [UnitSequence("a", [1, 2], [1, 1]), UnitSequence("b", [3], [4])])
    raw = np.fromfile(out / "durations.bin", dtype="<u2")
    raw[1] = 0
    raw.tofile(out / "durations.bin")
    with pytest.raises(FormatError) as e:
        read_units(out).validate()
    assert str(e.value) == (f"{out / 'durations.bin'}: utterance 0 ('a'): duration 0 at position 1 is outside "
                            "[1, 4294967295]")
    raw[1] = 2
    raw.tofile(out / "durations.bin")
    with pytest.raises(FormatError) as e:
        read_units(out).validate()
    assert str(e.value) == f"{out / 'meta.json'}: 'num_frames' is 6 but the data holds 7 frames"


def test_binary_truncated_units_file(tmp_path):
    out, _ = _binary_dataset(tmp_path)
    n = read_units(out).num_units
    with open(out / "units.bin", "r+b") as f:
        f.truncate(2 * n - 2)
    with pytest.raises(FormatError) as e:
        read_units(out)
    assert str(e.value) == (f"{out / 'units.bin'}: has {2 * n - 2} bytes but meta.json implies {n} x 2 = {2 * n} "
                            "(truncated or edited?)")


def test_binary_index_must_be_strictly_increasing(tmp_path):
    out, _ = _binary_dataset(tmp_path)
    index = np.load(out / "index.npy")
    index[2] = index[1]
    np.save(out / "index.npy", index)
    with pytest.raises(FormatError) as e:
        read_units(out)
    assert str(e.value) == (f"{out / 'index.npy'}: offsets are not strictly increasing at utterance 1 "
                            "(empty or negative length)")


def test_binary_duplicate_id_in_ids_file(tmp_path):
    out, seqs = _binary_dataset(tmp_path)
    ids = [s.id for s in seqs]
    ids[5] = ids[1]
    (out / "ids.txt").write_text("".join(i + "\n" for i in ids))
    ds = read_units(out)
    with pytest.raises(FormatError) as e:
        _ = ds.ids
    assert str(e.value) == f"{out / 'ids.txt'}:6: duplicate id 'spk1/utt1' (first on line 2)"


# --------------------------------------------------------------------------------------------------------------------
# jsonl validation messages
# --------------------------------------------------------------------------------------------------------------------


def _jsonl_with_line(tmp_path, line_no, text, deduplicated=True, n=20):
    seqs = [UnitSequence(f"u{i}", [i % 7, 8], [1, 2]) if deduplicated else UnitSequence(f"u{i}", [i % 7, 8])
            for i in range(n)]
    out = write_units(tmp_path / "ds", seqs, _meta(deduplicated=deduplicated), encoding="jsonl")
    lines = (out / "units.jsonl").read_text().splitlines(keepends=True)
    lines[line_no - 1] = text + "\n"
    (out / "units.jsonl").write_text("".join(lines))
    return out / "units.jsonl"


@pytest.mark.parametrize(("line_no", "text", "reason"), [
    (17, '{"id":"u16","units":[3,512],"durations":[1,1]}', "unit 512 out of range [0, 500)"),
    (17, '{"id":"u16","units":[-1,5],"durations":[1,1]}', "unit -1 out of range [0, 500)"),
    (3, '{"id":"u2","units":[1,2}', "invalid JSON (Expecting ',' delimiter at column 24)"),
    (5, '{"id":"u4","units":[1,2,3,4,5,6,7,8,9,10,11],"durations":[1,1,1,1,1,1,1,1,1,1]}',
     "'durations' has 10 items but 'units' has 11"),
    (4, '{"id":"u3","units":[5,7,7,3],"durations":[1,1,1,1]}',
     "consecutive duplicate unit 7 at position 2 in a deduplicated dataset"),
    (2, '{"id":"u1","units":[5,7],"durations":[1,0]}', "duration 0 at position 1 is outside [1, 4294967295]"),
    (2, '{"id":"u1","units":[5,7]}', "'durations' missing (the dataset is deduplicated)"),
    (2, '{"id":"u1","units":[],"durations":[]}', "empty utterance"),
    (2, '{"id":"u1","units":[1.5],"durations":[1]}', "'units' must be a list of integers"),
    (2, '{"id":"u1","units":[1],"duration":[1]}', "unknown key 'duration' (allowed: id, units, durations)"),
    (2, '{"units":[1],"durations":[1]}', "missing key 'id'"),
    (2, '[1, 2]', "expected a JSON object, got list"),
    (2, '', "empty line"),
    (9, '{"id":"u2","units":[1],"durations":[1]}', "duplicate id 'u2' (first on line 3)"),
    (2, '{"id":"a\\tb","units":[1],"durations":[1]}', "id 'a\\tb' contains a tab, newline or carriage return"),
])
def test_jsonl_validation_errors_name_file_and_line(tmp_path, line_no, text, reason):
    path = _jsonl_with_line(tmp_path, line_no, text)
    with pytest.raises(FormatError) as e:
        read_units(path.parent)
    assert str(e.value) == f"{path}:{line_no}: {reason}"
    assert e.value.line == line_no and isinstance(e.value, TextlessError)


def test_jsonl_durations_in_a_dataset_that_is_not_deduplicated(tmp_path):
    path = _jsonl_with_line(tmp_path, 2, '{"id":"u1","units":[5,5],"durations":[1,1]}', deduplicated=False)
    with pytest.raises(FormatError) as e:
        read_units(path.parent)
    assert str(e.value) == f"{path}:2: 'durations' given but the dataset is not deduplicated"


def test_jsonl_truncated_file_disagrees_with_meta(tmp_path):
    seqs = [UnitSequence(f"u{i}", [1, 2], [1, 1]) for i in range(4)]
    out = write_units(tmp_path / "ds", seqs, _meta(), encoding="jsonl")
    lines = (out / "units.jsonl").read_text().splitlines(keepends=True)
    (out / "units.jsonl").write_text("".join(lines[:3]))
    with pytest.raises(FormatError) as e:
        read_units(out)
    assert str(e.value) == f"{out / 'meta.json'}: 'num_utterances' is 4 but units.jsonl holds 3 (truncated or edited?)"


# --------------------------------------------------------------------------------------------------------------------
# meta.json problems
# --------------------------------------------------------------------------------------------------------------------


def _edit_meta(out, **changes):
    info = json.loads((out / "meta.json").read_text())
    for key, value in changes.items():
        if value is None:
            info.pop(key)
        else:
            info[key] = value
    (out / "meta.json").write_text(json.dumps(info))


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
@pytest.mark.parametrize(("changes", "reason"), [
    ({"frame_rate": None}, "missing key 'frame_rate'"),
    ({"encoding": None}, "missing key 'encoding'"),
    ({"encoding": "parquet"}, "unknown encoding 'parquet' (expected one of jsonl, binary)"),
    ({"num_units": None}, "missing key 'num_units'"),
    ({"version": 3}, ("written by a newer textless (version 3); this textless reads a textless unit dataset up to "
                      "version 2 - upgrade textless")),
    ({"format": "other"}, "not a textless unit dataset (format is 'other', expected 'textless.units')"),
    ({"vocab_size": "500"}, "'vocab_size' must be an integer in [1, 2**32], got '500'"),
])
def test_meta_errors(tmp_path, encoding, changes, reason):
    out = write_units(tmp_path / "ds", [UnitSequence("a", [1], [1])], _meta(), encoding=encoding)
    _edit_meta(out, **changes)
    with pytest.raises(FormatError) as e:
        read_units(out)
    assert str(e.value) == f"{out / 'meta.json'}: {reason}"


def test_newer_version_is_refused_even_if_keys_changed(tmp_path):
    out = write_units(tmp_path / "ds", [UnitSequence("a", [1], [1])], _meta())
    (out / "meta.json").write_text(json.dumps({"format": UNITS.name, "version": 7, "something": "new"}))
    with pytest.raises(FormatError, match=r"written by a newer textless \(version 7\)"):
        read_units(out)


def test_not_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError) as e:
        read_units(tmp_path / "empty")
    assert str(e.value) == f"{tmp_path / 'empty'}: not a textless unit dataset (no meta.json)"
    with pytest.raises(FormatError, match="no such unit dataset directory"):
        read_units(tmp_path / "missing")
    (tmp_path / "file.km").write_text("1 2\n")
    with pytest.raises(FormatError, match="expected a directory holding meta.json"):
        read_units(tmp_path / "file.km")
    out = write_units(tmp_path / "ds", [UnitSequence("a", [1], [1])], _meta())
    (out / "meta.json").write_text('{"format": "textless.units",\n "version": }')
    with pytest.raises(FormatError) as e:
        read_units(out)
    assert str(e.value) == f"{out / 'meta.json'}:2: invalid JSON (Expecting value)"


# --------------------------------------------------------------------------------------------------------------------
# UnitWriter
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
def test_writer_refuses_bad_sequences_naming_the_id(tmp_path, encoding):
    with UnitWriter(tmp_path / "ds", _meta(), encoding=encoding) as w:
        w.add(UnitSequence("a", [1, 2], [1, 1]))
        with pytest.raises(InvalidUnitsError) as e:
            w.add(UnitSequence("a", [3], [1]))
        assert str(e.value) == "duplicate utterance id 'a'"
        cases = [(UnitSequence("b", [3, 500], [1, 1]), "utterance 'b': unit 500 out of range [0, 500)"),
                 (UnitSequence("c", [3, 3], [1, 1]),
                  "utterance 'c': consecutive duplicate unit 3 at position 1 in a deduplicated dataset"),
                 (UnitSequence("d", [3]), "utterance 'd': 'durations' missing (the dataset is deduplicated)"),
                 (UnitSequence("e", [3], [0]), "utterance 'e': duration 0 at position 0 is outside [1, 4294967295]"),
                 (UnitSequence("f\tg", [3], [1]), "id 'f\\tg' contains a tab, newline or carriage return"),
                 (UnitSequence("", [3], [1]), "empty id"),
                 (UnitSequence("h", []), "utterance 'h': empty utterance")]
        for seq, message in cases:
            with pytest.raises(ValueError) as e:  # InvalidUnitsError is a ValueError and a TextlessError
                w.add(seq)
            assert str(e.value) == message
        w.add(UnitSequence("z", [4], [2]))  # refused sequences left nothing behind
    ds = read_units(tmp_path / "ds")
    assert ds.ids == ["a", "z"] and ds.num_frames == 4


def test_writer_exception_leaves_no_output_and_no_temporaries(tmp_path):
    parent = tmp_path / "out"
    parent.mkdir()
    for encoding in ("jsonl", "binary"):
        with pytest.raises(RuntimeError, match="boom"), UnitWriter(parent / "ds", _meta(), encoding=encoding) as w:
            w.add(UnitSequence("a", [1, 2], [1, 1]))
            raise RuntimeError("boom")
        assert list(parent.iterdir()) == []


def test_writer_exception_keeps_the_old_dataset_when_overwriting(tmp_path):
    old = [UnitSequence("old", [1], [3])]
    write_units(tmp_path / "ds", old, _meta(), encoding="binary")
    with pytest.raises(InvalidUnitsError), UnitWriter(tmp_path / "ds", _meta(), "jsonl", overwrite=True) as w:
        w.add(UnitSequence("new", [600], [1]))
    assert list(read_units(tmp_path / "ds")) == old
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_writer_refuses_existing_target_and_use_outside_with(tmp_path):
    write_units(tmp_path / "ds", [], _meta())
    with pytest.raises(FileExistsError):
        write_units(tmp_path / "ds", [], _meta())
    w = UnitWriter(tmp_path / "other", _meta())
    with pytest.raises(RuntimeError, match="outside its with-block"):
        w.add(UnitSequence("a", [1], [1]))
    with pytest.raises(ValueError, match="unknown encoding 'hdf5'"):
        UnitWriter(tmp_path / "x", _meta(), encoding="hdf5")


def test_overwrite_replaces_a_dataset(tmp_path):
    write_units(tmp_path / "ds", [UnitSequence("old", [1], [3])], _meta(), encoding="binary")
    new = [UnitSequence("new", [1, 2], [1, 1])]
    write_units(tmp_path / "ds", new, _meta(), encoding="jsonl", overwrite=True)
    assert list(read_units(tmp_path / "ds")) == new and read_units(tmp_path / "ds").encoding == "jsonl"
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


_KILLED_WRITER = """
import sys
import numpy as np
from textless.data.units import UnitMeta, UnitSequence, UnitWriter
meta = UnitMeta({"name": "t"}, 50.0, 500, deduplicated=False)
with UnitWriter(sys.argv[1], meta, encoding=sys.argv[2], overwrite=True) as w:
    for i in range(200):
        w.add(UnitSequence(f"new{i}", np.arange(i, i + 30) % 500))
    print("written", flush=True)
    sys.stdin.read()  # block until killed
"""


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
@pytest.mark.parametrize("existing", [False, True])
def test_killed_writer_leaves_no_partial_dataset(tmp_path, encoding, existing):
    target = tmp_path / "ds"
    old = [UnitSequence("old0", [1, 2, 3]), UnitSequence("old1", [4])]
    if existing:
        write_units(target, old, _meta(deduplicated=False), encoding=encoding)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target), encoding], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line == "written\n", proc.stderr.read() if proc.poll() is not None else line
        temporaries = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-ds.")]
        assert len(temporaries) == 1 and any(temporaries[0].iterdir())  # mid-write: data sits in the temporary
        if existing:  # readers still see the old dataset while the writer runs
            assert list(read_units(target)) == old
        else:
            assert not target.exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    if existing:
        assert list(read_units(target)) == old
    else:
        assert not target.exists()
    assert cleanup_stale_temporaries(tmp_path) == temporaries
    assert [p.name for p in tmp_path.iterdir()] == (["ds"] if existing else [])
