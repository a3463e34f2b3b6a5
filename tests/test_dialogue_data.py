"""Two-channel unit datasets (unit dataset version 2 with channels) and dGSLM's .unitA / .unitB files."""

import json

import numpy as np
import pytest

from textless.data.convert import export_units, import_units, read_dgslm_units
from textless.data.identity import UnitIdentity
from textless.data.units import InvalidUnitsError, UnitMeta, UnitSequence, read_units, write_units
from textless.dialogue.data import (
    Dialogue,
    dialogue_meta,
    export_dgslm,
    import_dgslm,
    read_dialogues,
    write_dialogues,
)
from textless.errors import FormatError

IDENTITY = UnitIdentity(tokenizer={"name": "hubert-fisher"}, vocab_size=500, frame_rate=50.0, deduplicated=False,
                        bpe=False)


def _dialogues(n=5, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        frames = int(rng.integers(1, 40))
        out.append(Dialogue(f"conv {i}", rng.integers(0, 500, (2, frames)), (f"spk{2 * i}", f"spk{2 * i + 1}")))
    return out


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
def test_round_trip_keeps_units_speakers_and_counts(tmp_path, encoding):
    dialogues = _dialogues()
    ds = read_dialogues(write_dialogues(tmp_path / "d", dialogues, dialogue_meta(IDENTITY), encoding=encoding))
    assert list(ds) == dialogues and ds.channels == ("A", "B") and len(ds) == 5
    assert ds.get("conv 3") == dialogues[3] and ds[1:3] == dialogues[1:3]
    assert ds.num_frames == sum(d.num_frames for d in dialogues)
    assert ds.meta.identity == IDENTITY  # both channels carry the tokenizer's identity
    info = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert info["version"] == 2 and info["channels"] == ["A", "B"] and info["num_frames"] == ds.num_frames
    assert info["num_units"] == 2 * ds.num_frames
    ds.units.validate()


def test_jsonl_record_holds_one_list_per_channel(tmp_path):
    d = Dialogue("c", [[1, 2, 3], [7, 7, 8]], ("x", "y"))
    path = write_dialogues(tmp_path / "d", [d], dialogue_meta(IDENTITY))
    assert json.loads((path / "units.jsonl").read_text()) == {"id": "c", "units": [[1, 2, 3], [7, 7, 8]]}


def test_binary_is_frame_major(tmp_path):
    path = write_dialogues(tmp_path / "d", [Dialogue("c", [[1, 2, 3], [7, 8, 9]])], dialogue_meta(IDENTITY),
                           encoding="binary")
    assert np.fromfile(path / "units.bin", dtype="<u2").tolist() == [1, 7, 2, 8, 3, 9]


def test_one_stream_readers_refuse_channels_and_old_files_still_read(tmp_path):
    path = write_dialogues(tmp_path / "d", _dialogues(2), dialogue_meta(IDENTITY))
    with pytest.raises(FormatError, match="2-channel unit dataset .*read_dialogues"):
        read_units(path)
    mono = write_units(tmp_path / "m", [UnitSequence("u", [1, 2])], UnitMeta({"name": "t"}, 50.0, 10, False))
    assert json.loads((mono / "meta.json").read_text())["version"] == 1
    with pytest.raises(InvalidUnitsError, match="one-stream unit dataset"):
        read_dialogues(mono)


def test_bad_input_is_named(tmp_path):
    meta = dialogue_meta(IDENTITY)
    with pytest.raises(InvalidUnitsError, match="unit 500 out of range"):
        write_dialogues(tmp_path / "a", [Dialogue("c", [[1, 500], [2, 3]])], meta)
    with pytest.raises(InvalidUnitsError, match=r"shape \[channels >= 2, frames >= 1\]"):
        Dialogue("c", [[1, 2, 3]])
    with pytest.raises(InvalidUnitsError, match="must not deduplicate"):
        dialogue_meta(UnitIdentity(tokenizer={"name": "t"}, vocab_size=5, frame_rate=50.0, deduplicated=True,
                                   bpe=False))
    with pytest.raises(ValueError, match="'deduplicated' and 'bpe' must be false"):
        UnitMeta({"name": "t"}, 50.0, 5, True, channels=("A", "B"))
    path = write_dialogues(tmp_path / "ok", _dialogues(2), meta)
    lines = (path / "units.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    record["units"][1] = record["units"][1][:-1]
    (path / "units.jsonl").write_text(lines[0] + "\n" + json.dumps(record) + "\n")
    with pytest.raises(FormatError, match=r"units.jsonl:2: the channels have different lengths"):
        read_dialogues(path)


# --------------------------------------------------------------------------------------------------------------------
# dGSLM fairseq layout
# --------------------------------------------------------------------------------------------------------------------


def _write_dgslm(tmp_path, a, b, dict_lines=None):
    (tmp_path / "train.unitA").write_text("".join(x + "\n" for x in a))
    (tmp_path / "train.unitB").write_text("".join(x + "\n" for x in b))
    for name in ("A", "B"):
        if dict_lines is not None:
            (tmp_path / f"dict.unit{name}.txt").write_text("".join(x + "\n" for x in dict_lines))
    return tmp_path / "train"


def test_read_hand_written_dgslm_files(tmp_path):
    # dictionary order (by count) is not unit order; the units are the symbols
    prefix = _write_dgslm(tmp_path, ["7 7 376 2", "5"], ["1 1 1 9", "0"], ["1 4", "7 2", "376 1", "2 1", "9 1",
                                                                            "5 1", "0 1"])
    seqs, meta = read_dgslm_units(prefix)
    assert meta.channels == ("A", "B") and meta.vocab_size == 377 and not meta.deduplicated
    assert [s.id for s in seqs] == ["0", "1"]
    assert seqs[0].units.reshape(-1, 2).T.tolist() == [[7, 7, 376, 2], [1, 1, 1, 9]]


@pytest.mark.parametrize(("a", "b", "dict_lines", "message"), [
    (["1 2 3"], ["1 2"], None, r"train.unitB:1: conversation has \[3, 2\] frames per channel"),
    (["1 2", "3"], ["1 2"], None, r"different numbers of conversations \(train.unitA: 2, train.unitB: 1\)"),
    (["1 x"], ["1 2"], None, r"train.unitA:1: invalid unit 'x'"),
    (["1 2"], ["1 2"], ["3 5", "1 3"], r"train.unitA:1: unit 2 is not in dict.unitA.txt"),
])
def test_bad_dgslm_files_are_named(tmp_path, a, b, dict_lines, message):
    with pytest.raises(FormatError, match=message):
        read_dgslm_units(_write_dgslm(tmp_path, a, b, dict_lines))


@pytest.mark.parametrize("encoding", ["jsonl", "binary"])
def test_dgslm_round_trip_is_lossless(tmp_path, encoding):
    dialogues = [Dialogue(d.id, d.units) for d in _dialogues(6, seed=3)]  # speakers are not in dGSLM's files
    ours = write_dialogues(tmp_path / "ours", dialogues, dialogue_meta(IDENTITY), encoding=encoding)
    first = export_dgslm(ours, tmp_path / "fs" / "valid", ids_path=tmp_path / "fs" / "valid.ids")
    assert first.name == "valid.unitA" and (tmp_path / "fs" / "valid.unitB").is_file()
    dict_a = (tmp_path / "fs" / "dict.unitA.txt").read_text()
    assert dict_a == (tmp_path / "fs" / "dict.unitB.txt").read_text()
    counts = [int(line.split()[1]) for line in dict_a.splitlines()]
    assert counts == sorted(counts, reverse=True) and len(counts) == 500  # fairseq's finalize order, every unit
    back = import_dgslm(tmp_path / "fs" / "valid", tmp_path / "back", ids_path=tmp_path / "fs" / "valid.ids",
                        vocab_size=500, tokenizer={"name": "hubert-fisher"}, encoding=encoding)
    assert list(back) == dialogues and back.meta.identity == IDENTITY
    # and again through the generic converter registry (the `textless units` command)
    export_units(tmp_path / "back", tmp_path / "fs2" / "valid", "dgslm")
    assert (tmp_path / "fs2" / "valid.unitA").read_text() == (tmp_path / "fs" / "valid.unitA").read_text()
    again = read_dialogues(import_units(tmp_path / "fs2" / "valid", tmp_path / "again", "dgslm", vocab_size=500))
    assert [d.units.tolist() for d in again] == [d.units.tolist() for d in dialogues]


def test_one_stream_dataset_cannot_be_exported_as_dgslm(tmp_path):
    mono = write_units(tmp_path / "m", [UnitSequence("u", [1, 2])], UnitMeta({"name": "t"}, 50.0, 10, False))
    with pytest.raises(InvalidUnitsError, match="holds conversations with channels; this dataset has one stream"):
        export_units(mono, tmp_path / "x" / "train", "dgslm")
