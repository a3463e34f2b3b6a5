import json

import numpy as np
import pytest

from textless.data.alignments import PHONE_TO_ID, PHONES, Alignment, load_alignments
from textless.errors import FormatError


def test_phone_inventory_is_39_arpabet_plus_silence():
    assert len(PHONES) == 40 and PHONES[0] == "SIL" and len(set(PHONES)) == 40


def test_frame_labels_read_phone_at_frame_centres():
    a = Alignment("u", [(0.0, 0.06, "SIL"), (0.06, 0.12, "AH"), (0.12, 0.2, "T")])
    # 50 Hz frames centred at 0.01, 0.03, ..., 0.19 s
    expected = ["SIL", "SIL", "SIL", "AH", "AH", "AH", "T", "T", "T", "T"]
    # a centre exactly on a boundary belongs to the phone that starts there ([start, end) intervals)
    assert Alignment("v", [(0.0, 0.05, "SIL"), (0.05, 0.1, "AH")]).frame_labels(50.0).tolist() == [0, 0, 3, 3, 3]
    assert a.frame_labels(50.0).tolist() == [PHONE_TO_ID[p] for p in expected]
    # frames past the last phone are silence
    assert a.frame_labels(50.0, 12)[-2:].tolist() == [0, 0]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_load_alignments_round_trip(tmp_path):
    rec = {"id": "u1", "phones": [[0, 0.1, "SIL"], [0.1, 0.3, "HH"]], "words": [[0.1, 0.3, "hi"]]}
    a = load_alignments(_write(tmp_path / "a.jsonl", [rec]))["u1"]
    assert a.phones == [(0.0, 0.1, "SIL"), (0.1, 0.3, "HH")] and a.words == [(0.1, 0.3, "hi")]
    assert a.duration == pytest.approx(0.3)
    assert np.all(a.frame_labels(100.0) >= 0)


@pytest.mark.parametrize("record, message", [
    ({"id": "u", "phones": [[0, 0.1, "XX"]]}, "a.jsonl:1: unknown phone 'XX'"),
    ({"id": "u", "phones": [[0, 0.1, "AH"], [0.2, 0.3, "T"]]}, "a.jsonl:1: phones of 'u' are not contiguous"),
    ({"id": "u", "phones": [[0.2, 0.1, "AH"]]}, "start > end"),
    ({"phones": []}, "a.jsonl:1: each line needs 'id' and 'phones'"),
])
def test_bad_alignments_name_the_line(tmp_path, record, message):
    with pytest.raises(FormatError) as e:
        load_alignments(_write(tmp_path / "a.jsonl", [record]))
    assert message in str(e.value)
