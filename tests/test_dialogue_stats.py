"""Corpus turn-taking statistics, the dGSLM comparison table and the dialogue-stats / eval-duplex commands, on
hand-made corpora and the real pyannote sample call, with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from textless.cli import main
from textless.dialogue.stats import (
    compare,
    duration_distance,
    stats_from_audio,
    stats_from_rttm,
    stats_from_timelines,
    stats_from_units,
)
from textless.dialogue.timeline import Interruption, Segment, Timeline, write_timeline

SAMPLE_RTTM = Path(__file__).parent / "data" / "pyannote" / "sample.rttm"
RATE = 16000

# A: 0-2, (pause 1 s) 3-5, ............ 9-10;  B: 4.5-7 (overlap 0.5 s), (gap 2 s, to A) ...; 12 s = 0.2 min
HAND_RTTM = """SPEAKER c1 1 0.0 2.0 <NA> <NA> A <NA> <NA>
SPEAKER c1 1 3.0 2.0 <NA> <NA> A <NA> <NA>
SPEAKER c1 1 4.5 2.5 <NA> <NA> B <NA> <NA>
SPEAKER c1 1 9.0 1.0 <NA> <NA> A <NA> <NA>
"""


def _c2() -> Timeline:
    """X: 0-1, 3.1-4 + 4.1-5 (one IPU: a 100 ms silence); Y: 1.5-3. Gaps 1-1.5 and 3-3.1; 6 s = 0.1 min."""
    segs = [Segment("X", 0.0, 1.0), Segment("Y", 1.5, 3.0), Segment("X", 3.1, 4.0), Segment("X", 4.1, 5.0)]
    return Timeline("c2", 6.0, ("X", "Y"), segs)


def _kind(stats, kind):
    k = getattr(stats, kind)
    return k.count, k.seconds, k.per_minute, k.seconds_per_minute


def test_stats_of_a_hand_made_rttm_and_timeline(tmp_path):
    path = tmp_path / "c1.rttm"
    path.write_text(HAND_RTTM)
    report = stats_from_rttm(path, 12.0)
    (conv,) = report.conversations
    assert conv.speakers == ("A", "B") and conv.duration == 12.0 and report.source == "rttm"
    c = report.corpus
    assert _kind(c, "ipu") == pytest.approx((4, 7.5, 20.0, 37.5))
    assert _kind(c, "pause") == pytest.approx((1, 1.0, 5.0, 5.0))
    assert _kind(c, "gap") == pytest.approx((1, 2.0, 5.0, 10.0))
    assert _kind(c, "overlap") == pytest.approx((1, 0.5, 5.0, 2.5))
    assert stats_from_rttm(path, speakers={"c1": ("B", "A")}).conversations[0].speakers == ("B", "A")
    assert stats_from_rttm(path).conversations[0].duration == 10.0    # default: the last segment's end

    t = stats_from_timelines([_c2()]).corpus
    assert _kind(t, "ipu") == pytest.approx((3, 4.4, 30.0, 44.0))
    assert _kind(t, "gap") == pytest.approx((2, 0.6, 20.0, 6.0))
    assert t.pause.count == 0 and t.overlap.count == 0
    # pooled: events and seconds summed, over 0.3 minutes
    both = stats_from_timelines([_c2(), *[
        Timeline("c1", 12.0, ("A", "B"), [Segment(s.speaker, s.start, s.end) for s in _rttm_segments(path)])]])
    assert both.minutes == pytest.approx(0.3)
    assert _kind(both.corpus, "gap") == pytest.approx((3, 2.6, 10.0, 2.6 / 0.3))


def _rttm_segments(path):
    from textless.dialogue.timeline import read_rttm

    return read_rttm(path)["c1"]


def test_the_real_pyannote_sample_call():
    report = stats_from_rttm(SAMPLE_RTTM, 30.0)          # the RTTM ends before the 30 s of sample.wav
    (conv,) = report.conversations
    assert conv.speakers == ("speaker90", "speaker91") and report.minutes == 0.5
    c = report.corpus
    assert _kind(c, "ipu") == pytest.approx((10, 24.35, 20.0, 48.7))
    assert _kind(c, "pause") == (0, 0.0, 0.0, 0.0)
    assert _kind(c, "gap") == pytest.approx((3, 0.85, 6.0, 1.7))
    assert c.gap.durations == pytest.approx([0.43, 0.13, 0.29])   # 7.12-7.55, 17.92-18.05, 21.49-21.78
    assert _kind(c, "overlap") == pytest.approx((6, 1.89, 12.0, 3.78))
    json.dumps(report.to_dict())


def test_comparison_table_and_distances(tmp_path):
    path = tmp_path / "c1.rttm"
    path.write_text(HAND_RTTM)
    ref, gen = stats_from_rttm(path, 12.0), stats_from_timelines([_c2()])
    cmp = compare(ref, gen)
    rows = {(r.kind, r.measure): r for r in cmp.rows}
    r = rows["ipu", "per_minute"]
    assert (r.reference, r.generated, r.difference, r.relative) == pytest.approx((20.0, 30.0, 10.0, 0.5))
    r = rows["gap", "per_minute"]
    assert (r.reference, r.generated, r.difference, r.relative) == pytest.approx((5.0, 20.0, 15.0, 3.0))
    r = rows["gap", "mean_duration"]
    assert (r.reference, r.generated, r.difference, r.relative) == pytest.approx((2.0, 0.3, -1.7, -0.85))
    r = rows["ipu", "median_duration"]                    # [1, 2, 2, 2.5] -> 2; [1, 1.5, 1.9] -> 1.5
    assert (r.reference, r.generated, r.difference, r.relative) == pytest.approx((2.0, 1.5, -0.5, -0.25))
    r = rows["pause", "mean_duration"]                    # no pause generated: undefined
    assert (r.reference, r.generated, r.difference, r.relative) == (1.0, None, None, None)
    r = rows["pause", "per_minute"]
    assert (r.difference, r.relative) == pytest.approx((-5.0, -1.0))
    dist = {d.kind: d for d in cmp.distances}
    # gap: delta at 2 s vs {0.5, 0.1}: W1 = mean |2 - x| = 1.7; disjoint 200 ms bins: JSD (base 2) = 1
    assert dist["gap"].wasserstein == pytest.approx(1.7) and dist["gap"].jensen_shannon == pytest.approx(1.0)
    assert dist["pause"].wasserstein is None and dist["pause"].jensen_shannon is None
    # ipu by hand: reference [2, 2, 1, 2.5] -> bins 10, 10, 5, 12; generated [1, 1.9, 1.5] -> bins 5, 9, 7
    # p = {5: 1/4, 10: 1/2, 12: 1/4}, q = {5, 7, 9: 1/3}, m = {5: 7/24, 10: 1/4, 12: 1/8, 7: 1/6, 9: 1/6}
    kl_p = 0.25 * math.log2(6 / 7) + 0.5 * 1 + 0.25 * 1
    kl_q = (1 / 3) * math.log2(8 / 7) + (2 / 3) * 1
    assert dist["ipu"].bins == 13
    assert dist["ipu"].jensen_shannon == pytest.approx(math.sqrt((kl_p + kl_q) / 2))
    from scipy.stats import wasserstein_distance

    assert dist["ipu"].wasserstein == pytest.approx(wasserstein_distance([2, 2, 1, 2.5], [1, 1.9, 1.5]))
    assert duration_distance([0.3], [0.3]).jensen_shannon == 0.0
    json.dumps(cmp.to_dict())


def _tones(spans, seconds=6.0, channels=1):
    """A [T] (or [T, channels] with the tones in the last channel) 440 Hz wave: 0.5 amplitude inside `spans`."""
    t = np.arange(int(seconds * RATE)) / RATE
    wave = np.zeros_like(t)
    for start, end in spans:
        on = (t >= start) & (t < end)
        wave[on] = 0.5 * np.sin(2 * np.pi * 440 * t[on])
    if channels == 1:
        return wave.astype(np.float32)
    out = np.zeros((len(t), channels), np.float32)
    out[:, -1] = wave
    return out


def test_stats_from_stereo_audio_with_the_energy_vad_and_from_units(tmp_path):
    from textless.dialogue.vad import VADConfig

    stereo = np.stack([_tones([(0.5, 2.0), (3.0, 4.0)]), _tones([(2.5, 2.9), (3.8, 5.0)])], axis=1)
    sf.write(tmp_path / "call.wav", stereo, RATE)
    report = stats_from_audio([tmp_path / "call.wav"], VADConfig(method="energy"))
    assert report.vad["method"] == "energy" and report.conversations[0].id == "call"
    c = report.corpus
    assert c.minutes == pytest.approx(0.1)
    assert c.gap.durations == pytest.approx([0.5, 0.1], abs=0.02)   # 2.0-2.5, 2.9-3.0
    assert c.overlap.durations == pytest.approx([0.2], abs=0.02)     # 3.8-4.0
    # units at 10 Hz, 0 = silence: A speaks frames 0-9, B 12-19 (gap 0.2 s) over 2 s
    units = np.zeros((2, 20), np.int64)
    units[0, :10] = 5
    units[1, 12:] = 7
    report = stats_from_units(_Units([SimpleNamespace(id="u1", units=units, speakers=None)], 10.0), [0])
    assert report.corpus.gap.durations == pytest.approx([0.2]) and report.corpus.ipu.count == 2
    assert report.vad == {"method": "units", "silence_units": [0], "frame_rate": 10.0}


class _Units(list):
    def __init__(self, records, rate):
        super().__init__(records)
        self.meta = SimpleNamespace(frame_rate=rate)


def test_dialogue_stats_cli_on_a_timelines_dir_and_on_the_rttm(tmp_path, capsys):
    timelines = tmp_path / "timelines"
    write_timeline(timelines / "c2.json", _c2())
    out = tmp_path / "out"
    assert main(["dialogue-stats", f"input={timelines}", f"output={out}"]) == 0
    data = json.loads((out / "stats.json").read_text())
    assert data["corpus"]["source"] == "timeline" and data["corpus"]["corpus"]["gap"]["count"] == 2
    assert (out / "timelines.png").stat().st_size > 0 and (out / "durations.png").stat().st_size > 0
    out2 = tmp_path / "out2"
    assert main(["dialogue-stats", f"input={SAMPLE_RTTM}", "duration=30", f"reference={timelines}",
                 f"output={out2}"]) == 0
    data = json.loads((out2 / "stats.json").read_text())
    assert data["corpus"]["corpus"]["overlap"]["count"] == 6 and data["reference"]["source"] == "timeline"
    gap = next(r for r in data["comparison"]["rows"] if (r["kind"], r["measure"]) == ("gap", "per_minute"))
    assert (gap["reference"], gap["generated"]) == pytest.approx((20.0, 6.0))
    assert (out2 / "timelines.png").is_file() and (out2 / "durations.png").is_file()
    printed = capsys.readouterr().out
    assert "overlap" in printed and "JS distance" in printed
    assert main(["dialogue-stats", f"input={tmp_path / 'missing'}", f"output={out2}"]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err


def _sessions(tmp_path: Path) -> Path:
    """Four sessions (user, model = channel 1), 6 s each; the model's tones are its speech:

    s1: user interrupts at 2.0 (2-3), model 0.5-2.6 then answers 4-5     -> LSLM TP, barge-in 0.6 s (success)
    s2: user interrupts at 1.0 (1-2), model 0.5-4.0 talks over it         -> LSLM FN, barge-in 3.0 s (failure)
    s3: no interruption, planned 0.5-3.0, model 0.5-3.0 and 3.5-4.0 while the user speaks 3.2-4.5 -> TN, 1 false
        alarm (stereo file, model in channel 1)
    s4: no interruption, planned 0.5-5.0, model stops at 2.0             -> LSLM FP
    """
    def timeline(sid, user, model, onset=None):
        segs = [Segment("user", s, e, kind="interruption" if onset is not None else "turn") for s, e in user]
        segs += [Segment("model", s, e) for s, e in model]
        inter = [Interruption("user", "model", onset, None)] if onset is not None else []
        return write_timeline(tmp_path / f"{sid}.json", Timeline(sid, 6.0, ("user", "model"), segs, inter))

    timeline("s1", [(2.0, 3.0)], [(0.5, 6.0)], 2.0)
    timeline("s2", [(1.0, 2.0)], [(0.5, 6.0)], 1.0)
    timeline("s3", [(3.2, 4.5)], [(0.5, 3.0)])
    timeline("s4", [], [(0.5, 5.0)])
    sf.write(tmp_path / "s1.wav", _tones([(0.5, 2.6), (4.0, 5.0)]), RATE)
    sf.write(tmp_path / "s2.wav", _tones([(0.5, 4.0)]), RATE)
    sf.write(tmp_path / "s3.wav", _tones([(0.5, 3.0), (3.5, 4.0)], channels=2), RATE)
    sf.write(tmp_path / "s4.wav", _tones([(0.5, 2.0)]), RATE)
    rows = [{"id": "s1", "audio": "s1.wav", "timeline": "s1.json"},
            {"id": "s2", "audio": "s2.wav", "timeline": "s2.json"},
            {"id": "s3", "audio": "s3.wav", "channel": 1, "timeline": "s3.json"},
            {"id": "s4", "audio": "s4.wav", "timeline": "s4.json"}]
    path = tmp_path / "sessions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "bc_reference.json").write_text(json.dumps({"s4": [1.0] * 10}))
    return path


def test_eval_duplex_on_synthetic_sessions_without_asr(tmp_path, capsys):
    sessions = _sessions(tmp_path)
    out = tmp_path / "report"
    assert main(["eval-duplex", f"sessions={sessions}", f"output={out}", "vad.method=energy", "asr=null",
                 f"backchannel_reference={tmp_path / 'bc_reference.json'}"]) == 0
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert {k: s["lslm"][k] for k in ("tp", "fn", "fp", "tn")} == {"tp": 1, "fn": 1, "fp": 1, "tn": 1}
    assert s["lslm"]["f1"] == pytest.approx(0.5)
    per = {r["id"]: r for r in report["per_session"]}
    assert per["s1"]["lslm"]["stop"] == pytest.approx(2.6, abs=0.02)
    assert per["s1"]["barge_in"][0]["latency"] == pytest.approx(0.6, abs=0.02)
    assert per["s2"]["barge_in"][0]["latency"] == pytest.approx(3.0, abs=0.02)
    assert s["barge_in"]["success_rate"] == 0.5 and s["barge_in"]["mean_latency"] == pytest.approx(1.8, abs=0.02)
    assert per["s3"]["false_alarms"] == [pytest.approx(3.5, abs=0.02)] and s["false_alarms"] == 1
    assert s["false_alarm_rate"] == pytest.approx(0.25)
    assert per["s1"]["first_response_latency"] == pytest.approx(1.0, abs=0.02)
    assert s["first_response_latency"] == pytest.approx(1.0, abs=0.02)
    # backchannels (VAD segments <= 3 s up to the first longer one): 2, 0, 2, 1 over 6 s each
    assert s["backchannel"]["frequency"] == pytest.approx(5 / 24)
    # s4: int(6.0 / 0.2) + 1 = 31 bins; (0.5, 2.0) covers bins 2..10 (9 bins, p = 1/9) vs uniform q = 1/31:
    # m = 20/279 on those 9, 1/62 elsewhere; KL(p||m) = ln(31/20), KL(q||m) = 9/31 ln(9/20) + 22/31 ln 2 (nats)
    js = (math.log(31 / 20) + 9 / 31 * math.log(9 / 20) + 22 / 31 * math.log(2)) / 2
    assert per["s4"]["backchannel"]["jsd"] == pytest.approx(math.sqrt(js), abs=1e-6)
    assert per["s1"]["backchannel"]["jsd"] is None and per["s1"]["backchannel"]["tor"] is None
    assert s["fdb_smooth_turn_taking"] is None and s["fdb_interruption"] is None
    assert any("asr=null" in r for r in report["skipped"])
    assert any("s1" in r for r in report["skipped"] if "backchannel_reference" in r)
    assert "LSLM f1" in capsys.readouterr().out


def test_eval_duplex_full_duplex_bench_tor_and_latency_with_word_times(tmp_path, monkeypatch):
    import textless.eval.asr as asr_module

    words = iter([
        [(0.6, 1.0, "a"), (1.0, 1.5, "b"), (4.1, 4.4, "yes"), (4.4, 4.9, "of"), (4.9, 5.3, "course")],
        [(0.6, 1.0, "a"), (1.0, 1.5, "b"), (2.0, 3.9, "c")],
        [(0.6, 1.2, "one"), (1.2, 2.9, "two")],
        [],
    ])

    class FakeWords:
        name = "fake-words"

        def transcribe_words(self, wavs):
            return [next(words)]

    monkeypatch.setattr(asr_module, "load_asr", lambda spec, **kw: FakeWords())
    sessions = _sessions(tmp_path)
    out = tmp_path / "report"
    assert main(["eval-duplex", f"sessions={sessions}", f"output={out}", "vad.method=energy", "asr=fake"]) == 0
    report = json.loads((out / "report.json").read_text())
    per = {r["id"]: r for r in report["per_session"]}
    # s1: words from the onset (2.0) span 4.1-5.3 = 1.2 s -> TOR 1; latency 4.1 - 3.0 (the interrupting turn's end)
    assert per["s1"]["fdb"] == {"task": "interruption", "tor": 1, "latency": pytest.approx(1.1), "reference_end": 3.0}
    assert per["s2"]["fdb"]["latency"] == 0.0                 # started before the interruption ended
    assert per["s3"]["fdb"] == {"task": "smooth_turn_taking", "tor": 1, "latency": 0.0, "reference_end": 4.5}
    assert per["s4"]["fdb"]["tor"] == 0 and per["s4"]["fdb"]["latency"] is None
    s = report["summary"]
    assert s["fdb_interruption"] == {"count": 2, "tor": 1.0, "latency": pytest.approx(0.55)}
    assert s["fdb_smooth_turn_taking"] == {"count": 2, "tor": 0.5, "latency": 0.0}
    assert s["backchannel"]["tor"] == 1.0 and report["asr"] == "fake-words"
    assert not any("asr" in r for r in report["skipped"])


def test_a_builder_directory_as_timelines_as_audio_and_as_eval_duplex_sessions(tmp_path):
    _sessions(tmp_path)   # s3.wav: stereo, the model's tones in channel 1; s3.json its timeline
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "s3", "stereo": "s3.wav", "timeline": "s3.json",
                                                         "duration": 6.0}) + "\n")
    out = tmp_path / "out"
    assert main(["dialogue-stats", f"input={tmp_path}", f"output={out}", "max_plots=0"]) == 0
    data = json.loads((out / "stats.json").read_text())
    assert data["corpus"]["source"] == "timeline" and data["corpus"]["corpus"]["ipu"]["count"] == 2
    assert main(["dialogue-stats", f"input={tmp_path}", "source=audio", "vad.method=energy", f"output={out}",
                 "max_plots=0"]) == 0
    data = json.loads((out / "stats.json").read_text())
    assert data["corpus"]["vad"]["method"] == "energy"
    segments = data["corpus"]["conversations"][0]["segments"]
    assert segments[0] == [] and [t for seg in segments[1] for t in seg] == pytest.approx([0.5, 3.0, 3.5, 4.0], abs=0.02)
    assert main(["eval-duplex", f"sessions={tmp_path}", f"output={out}", "vad.method=energy", "asr=null"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["per_session"][0]["false_alarms"] == [pytest.approx(3.5, abs=0.02)]
