"""The one resume rule (textless.utils.runs): what counts as a difference, records, foreign partial outputs,
journals."""

import json

import pytest
import torch

from textless.errors import FormatError
from textless.utils.runs import (
    ABSENT,
    Journal,
    ResumeMismatchError,
    differences,
    module_fingerprint,
    resume_or_record,
)


def test_differences_compare_nested_settings_and_values_of_another_shape():
    old = {"lr": 0.1, "gen": {"k": 3, "rates": (2, 4)}, "spk": None, "only_old": 1}
    new = {"lr": 0.1, "gen": {"k": 5, "rates": [2, 4]}, "spk": {"a": 1}, "only_new": 2}
    assert differences(old, new) == [("gen.k", 3, 5), ("spk", None, {"a": 1})]  # a tuple equals its list
    assert differences(old, new, one_sided=True) == [("gen.k", 3, 5), ("only_new", ABSENT, 2),
                                                      ("only_old", 1, ABSENT), ("spk", None, {"a": 1})]
    assert differences(old, new, ignore=["gen", "spk"]) == []
    assert repr(ABSENT) == "absent"


def test_a_record_is_written_then_enforced(tmp_path):
    run = tmp_path / "out.parts"
    resume_or_record(run, {"tokenizer": "a", "k": 100}, what="the partial run", how_to_restart="or restart")
    assert json.loads((run / "run.json").read_text())["started_with"] == {"tokenizer": "a", "k": 100}
    resume_or_record(run, {"tokenizer": "a", "k": 100}, what="the partial run", how_to_restart="or restart")
    with pytest.raises(ResumeMismatchError, match=r"the partial run was started with different inputs or settings "
                                                   r"\(k: 100 there, 50 now; seed: absent there, 1 now\); resume "
                                                   r"with the same ones, or restart"):
        resume_or_record(run, {"tokenizer": "a", "k": 50, "seed": 1}, what="the partial run",
                         how_to_restart="or restart")
    resume_or_record(run, {"tokenizer": "b"}, what="the partial run", how_to_restart="or restart", restart=True)
    assert json.loads((run / "run.json").read_text())["started_with"] == {"tokenizer": "b"}


def test_a_partial_output_without_a_record_is_not_adopted(tmp_path):
    """Files an older textless (or another tool) left: nothing says what made them, so they are not resumed."""
    run = tmp_path / "out.parts"
    run.mkdir()
    (run / ".tmp-run.json.x").write_text("")  # a concurrent rank writing the record: not a foreign file
    resume_or_record(run, {"k": 1}, what="the partial run", how_to_restart="or pass restart=true")
    other = tmp_path / "old.parts"
    other.mkdir()
    (other / "part-00000-of-00001.jsonl").write_text("{}\n")
    with pytest.raises(ResumeMismatchError, match=r"the partial run holds files but no record of the run that wrote "
                                                   r"them \(run.json: .*\); pass restart=true"):
        resume_or_record(other, {"k": 1}, what="the partial run", how_to_restart="or pass restart=true")


def test_journal_keeps_whole_lines_and_names_a_corrupt_one(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    assert journal.read() == []
    journal.add([{"a": 1}, {"b": 2}])
    with open(journal.path, "a") as f:
        f.write('{"c": ')  # killed mid-line
    assert journal.read() == [{"a": 1}, {"b": 2}] and journal.path.read_text().endswith("}\n")
    journal.path.write_text('{"a": 1}\nnot json\n')
    with pytest.raises(FormatError, match=r"j.jsonl:2: not a JSON line"):
        journal.read()


def test_module_fingerprint_follows_the_weights():
    torch.manual_seed(0)
    a = torch.nn.Linear(300, 300)
    before = module_fingerprint(a)
    assert module_fingerprint(a) == before
    with torch.no_grad():
        a.weight.add_(1e-3)
    assert module_fingerprint(a) != before
    assert module_fingerprint(torch.nn.Linear(300, 301)) != module_fingerprint(torch.nn.Linear(301, 300))
