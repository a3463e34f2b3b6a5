"""`textless preference-pairs` and `textless import-pairs`: the starter LM and vocoder on the bundled prompts, with the
judges that need no ASR (repetition, length, silence), so the numbers can be checked against the candidates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

import textless.jobs.preference_pairs as job
from textless.data import load_dataset
from textless.errors import ConfigError
from textless.jobs.preference_pairs import ImportPairsConfig, PairsConfig, import_slamkit_pairs, make_pairs, reselect
from textless.preference.data import read_pairs
from textless.utils.runs import ResumeMismatchError

REPO = Path(__file__).resolve().parents[1]
# longest continuation wins: a rule whose best and worst are easy to recompute from candidates.jsonl
COMMON = {"prompts": "bundled:valid", "max_prompts": 4, "num_samples": 3, "max_new_tokens": 20, "asr": None,
          "judges": ["repetition", "length", "silence"], "rule": {"weights": {"length/seconds": 1.0}},
          "chunk_prompts": 1, "progress": False}


def _config(out: Path, **changes) -> PairsConfig:
    settings = {**COMMON, **changes}
    selection = settings.pop("selection", {"max_prompt_chosen_auto_bleu": None})
    return PairsConfig(**settings, output=str(out), selection=job.SelectionConfig(**selection))


def _candidates(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "candidates.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """An uninterrupted run (the reference for resume and sharding)."""
    return make_pairs(_config(tmp_path_factory.mktemp("pairs") / "whole"))


def test_pairs_are_best_vs_worst_of_each_prompt_with_scores_audio_and_a_hf_dataset(whole):
    data = read_pairs(whole)
    candidates = _candidates(whole)
    assert [c["id"] for c in candidates] == [f"{p}/{k}" for p in sorted({c["prompt_id"] for c in candidates})
                                            for k in range(3)]
    assert data.units.frame_rate == 50.0 and data.units.deduplicated is True  # the starter's units
    by_prompt: dict[str, list[dict]] = {}
    for c in candidates:
        by_prompt.setdefault(c["prompt_id"], []).append(c)
    expected = {}
    for pid, group in by_prompt.items():
        seconds = [c["scores"]["length/seconds"] for c in group]
        best = max(range(3), key=lambda k: (seconds[k], -k))
        worst = min(range(3), key=lambda k: (seconds[k], k))
        if seconds[best] > seconds[worst]:
            expected[pid] = (best, worst, seconds[best] - seconds[worst])
    assert {p.prompt_id: (p.chosen_units, p.rejected_units) for p in data.pairs} == {
        pid: (by_prompt[pid][b]["units"], by_prompt[pid][w]["units"]) for pid, (b, w, _) in expected.items()}
    for p in data.pairs:
        assert p.margin == pytest.approx(expected[p.prompt_id][2])
        assert p.chosen_scores["length/seconds"] == p.chosen_score
        for path in (p.prompt_audio, p.chosen_audio, p.rejected_audio):
            assert data.audio_path(path).is_file()
    assert set(data.source["skipped"]) == set(by_prompt) - set(expected)
    hf = load_from_disk(str(whole / "dataset"))
    assert hf.num_rows == len(data) and hf[0]["chosen_units"] == data.pairs[0].chosen_units
    assert json.loads(hf[0]["chosen_scores"]) == data.pairs[0].chosen_scores


def test_pairs_json_is_standard_json(whole):
    """NaN scores (no transcript) are written as null: any JSON reader takes the files."""
    for name in ("pairs.jsonl", "candidates.jsonl"):
        for line in (whole / name).read_text().splitlines():
            json.loads(line, parse_constant=lambda c, name=name: pytest.fail(f"{name} holds {c}"))


def test_two_ranks_give_the_single_rank_output(tmp_path, whole):
    out = tmp_path / "sharded"
    assert make_pairs(_config(out, rank=0, world_size=2)) is None  # waits for rank 1
    assert make_pairs(_config(out, rank=1, world_size=2)) == out   # the last rank publishes
    assert (out / "pairs.jsonl").read_text() == (whole / "pairs.jsonl").read_text()
    assert (out / "candidates.jsonl").read_text() == (whole / "candidates.jsonl").read_text()


def test_reselect_with_a_higher_margin_keeps_the_clearer_pairs(tmp_path, whole):
    margins = sorted(p.margin for p in read_pairs(whole).pairs)
    assert len(margins) >= 2
    cut = (margins[0] + margins[-1]) / 2
    out = reselect(whole, tmp_path / "strict", selection=job.SelectionConfig(min_margin=cut,
                                                                           max_prompt_chosen_auto_bleu=None))
    strict = read_pairs(out)
    assert sorted(p.margin for p in strict.pairs) == [m for m in margins if m >= cut]
    assert all(why.startswith("margin") for pid, why in strict.source["skipped"].items()
               if pid not in read_pairs(whole).source["skipped"])


def test_a_prompt_that_fails_is_reported_and_the_others_complete(tmp_path, monkeypatch, whole):
    real = job._judge_prompts

    def broken_for_one(models, cfg, prompts, *args):
        if any(p.id == prompts_ids[1] for p in prompts):
            raise RuntimeError("vocoder exploded")
        return real(models, cfg, prompts, *args)

    prompts_ids = sorted({c["prompt_id"] for c in _candidates(whole)})
    monkeypatch.setattr(job, "_judge_prompts", broken_for_one)
    out = make_pairs(_config(tmp_path / "p", chunk_prompts=2))
    data = read_pairs(out)
    assert data.source["failures"] == [{"id": prompts_ids[1], "error": "RuntimeError: vocoder exploded"}]
    assert {c["prompt_id"] for c in _candidates(out)} == set(prompts_ids) - {prompts_ids[1]}


def test_bad_settings_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="num_samples must be >= 2"):
        make_pairs(_config(tmp_path / "a", num_samples=1))
    with pytest.raises(ConfigError, match=r"judges \['llm'\] read transcripts"):
        make_pairs(_config(tmp_path / "b", judges=["llm", "length"]))
    with pytest.raises(ConfigError, match="unknown preset 'best'"):
        make_pairs(_config(tmp_path / "c", rule="best"))
    with pytest.raises(ConfigError, match=r"judge\(s\) llm, text_lm, which judges="):
        make_pairs(_config(tmp_path / "d", rule="llm+text_lm"))


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_uninterrupted_output(tmp_path, whole):
    out = tmp_path / "killed"
    overrides = ["prompts=bundled:valid", "max_prompts=4", "num_samples=3", "max_new_tokens=20", "asr=null",
                 "judges=[repetition,length,silence]", "rule={weights: {length/seconds: 1.0}}",
                 "selection.max_prompt_chosen_auto_bleu=null", "chunk_prompts=1", "progress=false", f"output={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "textless.cli", "preference-pairs", *overrides], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "killed.parts" / "part-00000-of-00001.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 1:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists()
    done = journal.read_text().count("\n")
    assert 1 <= done < 4
    with pytest.raises(ResumeMismatchError, match="sampling.temperature"):
        make_pairs(_config(out, temperature=1.0))
    calls = []
    real = job.judge_chunk

    def counted(*args, **kwargs):
        calls.append(args[2][0].id)
        return real(*args, **kwargs)

    job.judge_chunk = counted
    try:
        make_pairs(_config(out))
    finally:
        job.judge_chunk = real
    assert len(calls) == 4 - done  # only the chunks the killed run had not journalled
    assert (out / "candidates.jsonl").read_text() == (whole / "candidates.jsonl").read_text()
    assert (out / "pairs.jsonl").read_text() == (whole / "pairs.jsonl").read_text()
    assert not (tmp_path / "killed.parts").exists()


def test_import_slamkit_triplets_through_the_tokenizer(tmp_path):
    from textless.audio import load_audio
    from textless.tokenizers.bundle import SpeechTokenizer

    items = list(load_dataset("bundled:valid"))[:4]
    lines = [
        {"prompt_path": str(items[0].path), "chosen_path": str(items[1].path), "rejected_path": str(items[2].path)},
        {"prompt_path": str(items[3].path), "chosen_path": "missing.wav", "rejected_path": str(items[2].path)},
        {"prompt_path": str(items[0].path), "chosen_path": str(items[2].path)},
    ]
    source = tmp_path / "prefs.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    out = import_slamkit_pairs(ImportPairsConfig(source=str(source), tokenizer="starter",
                                                 output=str(tmp_path / "imported"), progress=False))
    data = read_pairs(out)
    tokenizer = SpeechTokenizer.from_pretrained("starter")
    units = [tokenizer.encode(load_audio(items[i].path, tokenizer.sample_rate)[0], tokenizer.sample_rate).ids.tolist()
             for i in range(3)]
    assert len(data) == 1
    assert (data.pairs[0].prompt_units, data.pairs[0].chosen_units, data.pairs[0].rejected_units) == tuple(units)
    assert data.units == tokenizer.unit_identity()
    failures = {f["line"]: f["error"] for f in data.source["failures"]}
    assert sorted(failures) == [2, 3, 4]
    assert "missing.wav" in failures[2] and "missing rejected_path" in failures[3] and "JSONDecodeError" in failures[4]
    assert np.all(np.asarray(data.pairs[0].chosen_units) >= 0)
