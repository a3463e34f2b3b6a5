"""Tokenizer metrics: ABX (libri-light / ZeroSpeech 2021), purity / PNMI (HuBERT), unit bitrate, `textless
eval-tokenizer`."""

import json
import math

import numpy as np
import pytest

from textless.data.alignments import Alignment
from textless.data.units import InvalidUnitsError, UnitSequence
from textless.errors import FormatError, TextlessError
from textless.eval.abx import (
    ABXItem,
    abx_error_rates,
    dtw_distance,
    make_item_file,
    make_items,
    read_item_file,
    unit_features,
    write_item_file,
)
from textless.eval.tokenizer_metrics import contingency, purity, purity_from_counts
from textless.eval.unit_stats import unit_statistics


# ------------------------------------------------------------------------------------------------------- ABX
def _toy(rng, prototypes, speakers=3, files=2, tokens=40, noise=0.1, contexts=2):
    """Files of 1-frame-per-10-ms features: tokens of 3..6 frames separated by 2 frames, each token's frames
    = prototypes[phone] + noise; items with random phone and context."""
    feats, items = {}, []
    phones = list(prototypes)
    dim = len(next(iter(prototypes.values())))
    for s in range(speakers):
        for f in range(files):
            uid = f"s{s}_{f}"
            x = rng.normal(size=(tokens * 8 + 10, dim)).astype(np.float32)
            frame = 2
            for _ in range(tokens):
                phone = phones[rng.integers(len(phones))]
                size = int(rng.integers(3, 7))
                x[frame:frame + size] = prototypes[phone] + noise * rng.normal(size=(size, dim))
                ctx = int(rng.integers(contexts))
                items.append(ABXItem(uid, frame / 100, (frame + size) / 100, phone, f"p{ctx}", f"n{ctx}", f"spk{s}"))
                frame += size + 2
            feats[uid] = x
    return feats, items


def test_separable_features_give_zero_error_and_random_ones_half():
    rng = np.random.default_rng(0)
    prototypes = {p: v for p, v in zip("abc", np.eye(3, 8, dtype=np.float32) * 3)}
    feats, items = _toy(rng, prototypes)
    result = abx_error_rates(feats, items, frame_shift=0.01)
    assert result.within == 0.0 and result.across == 0.0
    assert result.tokens == len(items) and result.items_dropped == 0
    assert result.phone_pairs_within == result.phone_pairs_across == 6

    noise = {uid: rng.normal(size=x.shape).astype(np.float32) for uid, x in feats.items()}
    random = abx_error_rates(noise, items, frame_shift=0.01)
    assert abs(random.within - 0.5) < 0.08 and abs(random.across - 0.5) < 0.08


def test_sampling_is_seeded():
    rng = np.random.default_rng(1)
    feats, items = _toy(rng, {p: rng.normal(size=4) for p in "ab"}, speakers=8, noise=1.0, contexts=1)
    runs = [abx_error_rates(feats, items, 0.01, max_size_group=3, max_x_across=2, seed=s) for s in (0, 0, 1)]
    assert runs[0] == runs[1]
    assert (runs[0].within, runs[0].across) != (runs[2].within, runs[2].across)


def test_dtw_angular_distance_by_hand():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    assert dtw_distance(np.array([e1]), np.array([[1.0, 1.0]])) == pytest.approx(0.25)   # 45 degrees
    assert dtw_distance(np.array([e1, e2]), np.array([[3.0, 3.0]])) == pytest.approx(0.25)  # 2 x 0.25 / path 2
    # a = [e1, e2, e2], b = [e1, -e1]: frame distances [[0, 1], [.5, .5], [.5, .5]]; cost [[0, 1], [.5, .5], [1, 1]];
    # back-tracking (2,1) -> diagonal (1,0) -> up (0,0): path of 3 cells, cost 1 -> 1/3
    a = np.array([e1, e2, e2])
    b = np.array([e1, [-1.0, 0.0]])
    assert dtw_distance(a, b) == pytest.approx(1 / 3)
    assert dtw_distance(np.array([[0.0, 0.0]]), np.array([e1])) == pytest.approx(1.0)  # a zero frame is maximally far


def test_within_and_across_on_a_hand_made_item_set():
    """Single-frame tokens, one context, speakers s1 (A: e1, e2; B: -e1) and s2 (A: e1; B: e2).

    Angular distances: 0 (same), 0.5 (orthogonal), 1 (opposite).
    within (s1, A vs B): X=e1: d(e1,e2)=.5 < d(e1,-e1)=1 -> 1; X=e2: .5 vs .5 -> tie 0.5; theta = 1.5/2 -> error .25.
    (other cells: A or B group of size 1 is never X for within.)
    across, A vs B:  s1 with X=s2's e1: both A closer -> error 0; s2 (A={e1}, B={e2}) with X in {e1, e2}: 1 + 0 ->
    error .5; mean over speakers .25.  B vs A: s1 (A={-e1}, B={e1, e2}, X={e2}): tie + wrong -> theta .25, error .75;
    s2 (A={e2}, B={e1}, X={-e1}): .5 < 1 -> error 0; mean .375.  Across = (.25 + .375) / 2.
    """
    e = np.eye(3, dtype=np.float32)
    s1 = np.zeros((40, 3), np.float32)
    s1[10], s1[20], s1[30] = e[0], e[1], -e[0]
    s2 = np.zeros((40, 3), np.float32)
    s2[10], s2[20] = e[0], e[1]
    items = [ABXItem("f1", 0.10, 0.12, "A", "x", "y", "s1"), ABXItem("f1", 0.20, 0.22, "A", "x", "y", "s1"),
             ABXItem("f1", 0.30, 0.32, "B", "x", "y", "s1"), ABXItem("f2", 0.10, 0.12, "A", "x", "y", "s2"),
             ABXItem("f2", 0.20, 0.22, "B", "x", "y", "s2")]
    result = abx_error_rates({"f1": s1, "f2": s2}, items, frame_shift=0.01)
    assert result.within == pytest.approx(0.25)
    assert result.across == pytest.approx((0.25 + 0.375) / 2)
    assert result.within_triplet_groups == 1 and result.across_triplet_groups == 4
    only = abx_error_rates({"f1": s1, "f2": s2}, items, frame_shift=0.01, modes=["within"])
    assert only.within == result.within and only.across is None


def test_frame_window_and_dropped_items():
    """Frames ceil(on/shift - .5) .. floor(off/shift - .5), end excluded: a 13 ms token (frames 4 .. 4) has none."""
    feats = {"f": np.ones((10, 2), np.float32)}
    items = [ABXItem("f", 0.0, 0.03, "A", "x", "y", "s"), ABXItem("f", 0.041, 0.054, "B", "x", "y", "s"),
             ABXItem("nofeat", 0.0, 0.05, "A", "x", "y", "s")]
    result = abx_error_rates(feats, items, frame_shift=0.01)
    assert result.tokens == 1 and result.items_dropped == 2 and result.within is None
    with pytest.raises(TextlessError, match="0 of the 1 feature files"):
        abx_error_rates({"other": feats["f"]}, items, frame_shift=0.01)


def test_unit_features():
    labels = {"u": np.array([0, 2, 2])}
    onehot = unit_features(labels, 3)["u"]
    assert onehot.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    centroids = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert unit_features(labels, 3, centroids)["u"].tolist() == [[0, 1], [4, 5], [4, 5]]
    with pytest.raises(TextlessError, match="ids in \\[0, 3\\)"):
        unit_features({"u": np.array([3])}, 3)


# ------------------------------------------------------------------------------------------------ item files
def test_items_from_alignments_and_round_trip(tmp_path):
    from textless.data.corpus import load_bundled_alignments, load_bundled_corpus

    ali = Alignment("u", [(0.0, 0.1, "SIL"), (0.1, 0.2, "AA"), (0.2, 0.35, "B"), (0.35, 0.4, "K"), (0.4, 0.6, "SIL")])
    assert make_items({"u": ali}, {"u": "spk"}) == [ABXItem("u", 0.1, 0.4, "B", "AA", "K", "spk")]
    single = make_items({"u": ali}, {"u": "spk"}, extension="single_phone", exclude=())
    assert [(i.phone, i.context, i.onset, i.offset) for i in single][:2] == [("SIL", "SIL+AA", 0.0, 0.1),
                                                                             ("AA", "SIL+B", 0.1, 0.2)]
    assert len(single) == 5
    half = make_items({"u": ali}, {"u": "spk"}, extension="half_triphone")
    assert (half[0].onset, half[0].offset) == pytest.approx((0.15, 0.375))

    manifest = load_bundled_corpus("valid_unseen")
    alignments = {k: v for k, v in load_bundled_alignments().items() if k in set(manifest.ids)}
    speakers = {i.id: i.speaker for i in manifest}
    path = make_item_file(alignments, speakers, tmp_path / "valid_unseen.item")
    assert path.read_text().splitlines()[0] == "#file onset offset #phone prev-phone next-phone speaker"
    items = read_item_file(path)
    assert items == make_items(alignments, speakers)
    assert len(items) > 500 and {i.speaker for i in items} == {"slt", "rms"}
    assert all("SIL" not in (i.phone, i.prev, i.next) for i in items)


def test_item_file_errors(tmp_path):
    bad = tmp_path / "bad.item"
    bad.write_text("#header\nf 0.1 0.2 A x y\n")
    with pytest.raises(FormatError, match=r"bad.item:2: expected 7 fields"):
        read_item_file(bad)
    bad.write_text("#header\nf 0.3 0.2 A x y s\n")
    with pytest.raises(FormatError, match="not 0 <= onset <= offset"):
        read_item_file(bad)
    with pytest.raises(TextlessError, match="has no speaker"):
        make_items({"u": Alignment("u", [(0, 1, "AA")])}, {})
    write_item_file([ABXItem("f", 0.1, 0.2, "A", "x", "y", "s")], tmp_path / "ok.item")
    assert read_item_file(tmp_path / "ok.item")[0].context == "x+y"


# ----------------------------------------------------------------------------------------------- purity / PNMI
def test_purity_and_pnmi_by_hand():
    counts = np.array([[3, 0, 0], [1, 2, 2]])  # rows phones, columns units; 8 frames
    stats = purity_from_counts(counts)
    assert stats.phone_purity == pytest.approx(7 / 8)      # columns' maxima: 3 + 2 + 2
    assert stats.cluster_purity == pytest.approx(5 / 8)    # rows' maxima: 3 + 2
    mi = 3 / 8 * math.log(2) + 1 / 8 * math.log(0.4) + 4 / 8 * math.log(1.6)
    h = -(3 / 8 * math.log(3 / 8) + 5 / 8 * math.log(5 / 8))
    assert stats.mutual_info == pytest.approx(mi, abs=1e-6) and stats.pnmi == pytest.approx(mi / h, abs=1e-6)

    perfect = purity_from_counts(np.array([[5, 0, 0, 0], [0, 3, 0, 4], [0, 0, 2, 0]]))  # each unit within one phone
    assert perfect.phone_purity == pytest.approx(1) and perfect.pnmi == pytest.approx(1, abs=1e-6)
    independent = purity_from_counts(np.outer([1, 2, 3], [2, 5]))
    assert independent.pnmi == pytest.approx(0, abs=1e-6)
    # unused phones / units do not change anything (fairseq would give NaN)
    padded = np.zeros((4, 5), np.int64)
    padded[:2, 1:4] = counts
    assert purity_from_counts(padded).pnmi == pytest.approx(stats.pnmi)


def test_contingency_truncates_to_the_shorter():
    phones = [np.array([0, 0, 1, 1, 1]), np.array([1, 0])]
    units = [np.array([2, 2, 0]), np.array([0, 1, 1, 1])]
    counts, dropped = contingency(phones, units, 2, 3)
    assert counts.tolist() == [[0, 1, 2], [2, 0, 0]] and dropped == 4
    stats = purity(phones, units, 2)
    assert stats.frames == 5 and stats.frames_dropped == 4 and stats.units_seen == 3
    with pytest.raises(TextlessError, match="utterance 0: labels outside"):
        contingency([np.array([5])], [np.array([0])], 2, 3)


# ---------------------------------------------------------------------------------------------------- bitrate
def test_unit_statistics_by_hand_deduplicated_and_frame_level():
    # deduplicated: units 0 1 0 | 2 0 with durations 2 3 1 | 4 1 -> 5 units over 11 frames = 0.22 s at 50 Hz;
    # counts 0:3 1:1 2:1 (unit 3 unused) -> H = 0.6 log2(5/3) + 2 * 0.2 log2(5) = 1.37095 bits
    dedup = [UnitSequence("a", [0, 1, 0], [2, 3, 1]), UnitSequence("b", [2, 0], [4, 1])]
    stats = unit_statistics(dedup, frame_rate=50.0, vocab_size=4)
    entropy = 0.6 * math.log2(5 / 3) + 0.4 * math.log2(5)
    assert (stats.utterances, stats.units, stats.frames, stats.used_units) == (2, 5, 11, 3)
    assert stats.seconds == pytest.approx(0.22) and stats.units_per_second == pytest.approx(5 / 0.22)
    assert stats.mean_run_frames == pytest.approx(2.2)
    assert stats.entropy_bits == pytest.approx(entropy) and entropy == pytest.approx(1.370951, abs=1e-6)
    assert stats.bitrate == pytest.approx(5 / 0.22 * entropy) and stats.bitrate == pytest.approx(31.15797, abs=1e-4)

    # frame level (durations None): one frame per unit; 1 1 3 3 | 3 at 25 Hz -> 5 frames = 0.2 s, 25 units/s;
    # counts 1:2 3:3 -> H = 0.4 log2(5/2) + 0.6 log2(5/3) = 0.97095 bits
    frames = [UnitSequence("c", [1, 1, 3, 3]), UnitSequence("d", [3])]
    stats = unit_statistics(frames, frame_rate=25.0, vocab_size=4)
    entropy = 0.4 * math.log2(5 / 2) + 0.6 * math.log2(5 / 3)
    assert (stats.utterances, stats.units, stats.frames, stats.used_units) == (2, 5, 5, 2)
    assert (stats.seconds, stats.units_per_second, stats.mean_run_frames) == (pytest.approx(0.2), pytest.approx(25.0),
                                                                             1.0)
    assert stats.entropy_bits == pytest.approx(entropy) and entropy == pytest.approx(0.970951, abs=1e-6)
    assert stats.bitrate == pytest.approx(25 * entropy) and stats.bitrate == pytest.approx(24.27377, abs=1e-4)

    # one unit value only: 0 bits (not -0.0), so 0 bits/s; no sequences: all zeros
    single = unit_statistics([UnitSequence("e", [2], [7])], frame_rate=50.0, vocab_size=4)
    assert (single.entropy_bits, single.bitrate, single.frames, single.mean_run_frames) == (0.0, 0.0, 7, 7.0)
    assert math.copysign(1.0, single.entropy_bits) == 1.0
    empty = unit_statistics([], frame_rate=50.0, vocab_size=4)
    assert (empty.units, empty.frames, empty.seconds, empty.entropy_bits, empty.bitrate) == (0, 0, 0.0, 0.0, 0.0)


def test_unit_statistics_refuses_units_outside_the_vocabulary():
    # unit 4 with vocab_size 4 used to be dropped from the counts (5 units seen, 4 counted, frames kept)
    with pytest.raises(InvalidUnitsError, match=r"utterance 'b': unit 4 is outside the vocabulary 0\.\.3"):
        unit_statistics([UnitSequence("a", [0, 1]), UnitSequence("b", [2, 4, 3])], 50.0, 4)
    with pytest.raises(TextlessError, match="frame_rate must be > 0, got 0"):
        unit_statistics([UnitSequence("a", [0])], 0, 4)


# -------------------------------------------------------------------------------------------------------- CLI
def test_eval_tokenizer_cli(tmp_path, capsys):
    from textless.audio import load_audio
    from textless.cli import main
    from textless.data.corpus import bundled_corpus_dir, load_bundled_corpus
    from textless.data.manifest import Manifest
    from textless.tokenizers.bundle import SpeechTokenizer
    from textless.tokenizers.encoders import load_encoder
    from textless.tokenizers.kmeans import KMeans

    manifest = load_bundled_corpus("valid_unseen")
    items = [i for i in manifest if i.speaker == "slt"][:4] + [i for i in manifest if i.speaker == "rms"][:4]
    subset = Manifest(items).save(tmp_path / "subset.tsv")
    encoder = load_encoder("mfcc")
    feats = np.concatenate([encoder.encode(load_audio(i.path, 16000)[0]).numpy() for i in items])
    tok = SpeechTokenizer(encoder, KMeans(k=16, backend="torch", max_iter=10, seed=0).fit(feats))
    bundle = tok.save_pretrained(tmp_path / "tok")

    out = tmp_path / "report.json"
    assert main(["eval-tokenizer", f"tokenizer={bundle}", f"dataset={subset}",
                 f"alignments={bundled_corpus_dir() / 'alignments.jsonl'}", f"output={out}"]) == 0
    printed = capsys.readouterr().out
    assert "abx_within_features (%)" in printed and "pnmi" in printed
    report = json.loads(out.read_text())
    head = report["headline"]
    assert report["utterances"] == 8 and report["num_units"] == 16 and report["tokenizer"] == "mfcc-km16"
    for key in ("abx_within_features", "abx_across_features", "abx_within_units", "abx_across_units"):
        assert 0 <= head[key] < 0.5
    assert 0 < head["pnmi"] < 1 and 0 < head["phone_purity"] <= 1 and 0 < head["cluster_purity"] <= 1
    assert head["bitrate"] == pytest.approx(report["unit_stats"]["units_per_second"]
                                            * report["unit_stats"]["entropy_bits"])
    assert report["purity"]["frames"] > 0 and report["abx_features"]["tokens"] > 100

    assert main(["eval-tokenizer", f"tokenizer={tmp_path / 'nope'}"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["eval-tokenizer", f"tokenizer={bundle}", f"dataset={subset}"]) == 2
    assert "needs alignments=" in capsys.readouterr().err
