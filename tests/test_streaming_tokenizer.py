"""StreamingTokenizer: labels of audio pushed piece by piece against offline labelling (`frame_labels_batch`).

MFCC (finite receptive field): equal on every frame. Whisper (the starter, full attention): an agreement rate on real
speech of the bundled corpus, with the threshold derived from the measurement in the module docstring of
`textless.tokenizers.streaming`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textless.audio import load_audio
from textless.data.corpus import load_bundled_corpus
from textless.errors import ConfigError
from textless.streaming import StreamingError
from textless.tokenizers.bundle import SpeechTokenizer
from textless.tokenizers.encoders.mfcc import MFCCEncoder
from textless.tokenizers.kmeans import KMeans
from textless.tokenizers.streaming import StreamingTokenizer, exact_reach

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def speech() -> list[torch.Tensor]:
    """The first four utterances of the bundled corpus' valid split (16 kHz, 2.3-3.5 s each)."""
    return [load_audio(item.path, 16000)[0] for item in list(load_bundled_corpus("valid"))[:4]]


@pytest.fixture(scope="module")
def mfcc_tokenizer(speech) -> SpeechTokenizer:
    encoder = MFCCEncoder()
    feats = torch.cat([encoder.encode(w) for w in speech]).numpy()
    return SpeechTokenizer(encoder, KMeans(k=24, backend="torch", max_iter=10, seed=0).fit(feats))


def stream(st: StreamingTokenizer, wavs: list[torch.Tensor], rng: np.random.RandomState, *, max_piece: int = 900,
           starts: list[int] | None = None) -> list[np.ndarray]:
    """Push each waveform in random pieces (0..max_piece samples; stream b joins at push starts[b], paused before),
    check each push's labels continue the stream's frame count, flush; the labels per stream."""
    batch = len(wavs)
    starts = starts or [0] * batch
    out: list[list[np.ndarray]] = [[] for _ in range(batch)]
    pos = [0] * batch
    with st.streaming(batch):
        t = 0
        while any(p < len(w) for p, w in zip(pos, wavs)):
            run = [t >= s for s in starts]
            st.set_exec_mask(torch.tensor(run))
            before = st.frames_emitted
            pieces = []
            for b in range(batch):
                n = rng.randint(0, max_piece) if run[b] else 7  # paused streams' input is ignored
                pieces.append(wavs[b][pos[b]: pos[b] + n] if run[b] else torch.ones(n))
                pos[b] += n if run[b] else 0
            labels = st.push(pieces)
            for b in range(batch):
                assert st.frames_emitted[b] == before[b] + len(labels[b])
                assert run[b] or len(labels[b]) == 0
                out[b].append(labels[b])
            t += 1
        for b, labels in enumerate(st.flush()):
            out[b].append(labels)
    return [np.concatenate(o) for o in out]


# ------------------------------------------------------------------------------------------------ MFCC: exact
def test_mfcc_defaults_cover_the_receptive_field(mfcc_tokenizer):
    st = StreamingTokenizer(mfcc_tokenizer)
    assert exact_reach(mfcc_tokenizer.encoder) == 4
    assert (st.context, st.lookahead, st.hop, st.span, st.exact) == (4, 4, 160, 400, True)
    assert st.latency_samples == 4 * 160 + 400 and st.latency == pytest.approx(0.065)  # lookahead + one 25 ms frame
    assert StreamingTokenizer(mfcc_tokenizer, lookahead=3).exact is False
    assert StreamingTokenizer(mfcc_tokenizer, left_context=0.03).exact is False  # 3 frames < 4


@pytest.mark.parametrize("block", [1, 3])
def test_mfcc_streaming_equals_offline_staggered(mfcc_tokenizer, speech, block):
    st = StreamingTokenizer(mfcc_tokenizer, block_frames=block)
    offline = mfcc_tokenizer.frame_labels_batch(speech)
    got = stream(st, speech, np.random.RandomState(block), starts=[0, 3, 1, 6])
    for g, ref in zip(got, offline):
        np.testing.assert_array_equal(g, ref)


def test_mfcc_short_lookahead_differs(mfcc_tokenizer, speech):
    st = StreamingTokenizer(mfcc_tokenizer, lookahead=1, left_context=0.01)
    got = stream(st, speech[:1], np.random.RandomState(0))[0]
    ref = mfcc_tokenizer.frame_labels_batch(speech[:1])[0]
    assert len(got) == len(ref) and 0.5 < (got == ref).mean() < 1.0  # deltas cut: some labels change


def test_labels_come_out_after_exactly_the_latency(mfcc_tokenizer, speech):
    """Frame i is labelled once i hop + latency_samples samples are in, not one sample earlier."""
    st = StreamingTokenizer(mfcc_tokenizer)
    wav = speech[0]
    pushed = 0
    with st.streaming(1):
        for i in (0, 1, 7):
            need = i * st.hop + st.latency_samples
            st.push([wav[pushed: need - 1]])
            pushed = need
            assert st.frames_emitted == [i]
            assert len(st.push([wav[need - 1: need]])[0]) == 1
            assert st.frames_emitted == [i + 1]


def test_reset_in_the_middle_and_snapshots(mfcc_tokenizer, speech):
    st = StreamingTokenizer(mfcc_tokenizer)
    ref = mfcc_tokenizer.frame_labels_batch(speech[:2])
    with st.streaming(2):
        first = st.push([speech[0][:8000], speech[1][:8000]])
        st.reset_streaming(torch.tensor([True, False]))  # stream 0 starts over with utterance 2
        snap = st.get_streaming_state()
        later = st.push([speech[1][:5000], speech[1][8000:20000]])
        st.set_streaming_state(snap)
        again = st.push([speech[1][:5000], speech[1][8000:20000]])
        for a, b in zip(later, again):
            np.testing.assert_array_equal(a, b)
        rest = st.push([speech[1][5000:], speech[1][20000:]])
        tail = st.flush()
    np.testing.assert_array_equal(np.concatenate([again[0], rest[0], tail[0]]), ref[1])
    np.testing.assert_array_equal(np.concatenate([first[1], again[1], rest[1], tail[1]]), ref[1])


def test_flush_of_short_and_empty_streams(mfcc_tokenizer, speech):
    st = StreamingTokenizer(mfcc_tokenizer)
    with st.streaming(3):
        st.push([speech[0][:399], speech[0][:400], torch.zeros(0)])  # 399 samples: no MFCC frame at all
        out = st.flush()
        assert [len(o) for o in out] == [0, 1, 0]
        assert st.frames_emitted == [0, 0, 0]  # flushed streams start anew


def test_misuse(mfcc_tokenizer):
    st = StreamingTokenizer(mfcc_tokenizer)
    with pytest.raises(StreamingError):
        st.push([torch.zeros(10)])
    with st.streaming(2):
        with pytest.raises(StreamingError, match="one waveform per stream"):
            st.push([torch.zeros(10)])
        with pytest.raises(StreamingError, match="mono"):
            st.push([torch.zeros(2, 10), torch.zeros(10)])
    with pytest.raises(ConfigError):
        StreamingTokenizer(mfcc_tokenizer, block_frames=0)


# ------------------------------------------------------------------------------------------------ Whisper: agreement
@pytest.fixture(scope="module")
def starter() -> SpeechTokenizer:
    return SpeechTokenizer.from_pretrained("starter")


def test_whisper_geometry_and_latency(starter):
    st = StreamingTokenizer(starter)
    assert exact_reach(starter.encoder) is None and not st.exact
    assert (st.hop, st.span, st.context, st.lookahead, st.pad_frames) == (320, 320, 100, 10, 50)
    assert st.latency == pytest.approx(0.22)  # 10 frames of look-ahead + one 20 ms frame
    with pytest.raises(ConfigError, match="exceeds"):
        StreamingTokenizer(starter, left_context=29.5)


def test_whisper_push_pieces_do_not_change_labels(starter, speech):
    """Windows are fixed by the audio: one push of everything == random small pushes (first 1.2 s, 3-frame blocks)."""
    st = StreamingTokenizer(starter, block_frames=3, left_context=0.5)
    wav = speech[0][:19200]
    with st.streaming(1):
        whole = np.concatenate(st.push([wav]) + st.flush())
    pieces = stream(st, [wav], np.random.RandomState(0), max_piece=3000)[0]
    np.testing.assert_array_equal(pieces, whole)
    assert len(whole) == len(starter.frame_labels_batch([wav])[0])


# Measured at the defaults (2 s context, 10 frames of look-ahead, 50 padding frames, one-frame blocks) over the whole
# valid split (15 utterances of 7 voices, 2825 frames): 79.9 % of the labels equal the offline ones; per utterance
# 68-85 %, standard deviation 3.9 points. Offline labels of the same audio perturbed by 1e-6 (relative) agree 100 %
# with the unperturbed ones, so the rate is not at the mercy of float rounding (another BLAS, a GPU). This test runs
# two utterances (260 frames, 80.8 % here, ~30 s on one loaded core); the threshold lets their mean fall two standard
# errors of a two-utterance mean (2 x 3.9 / sqrt(2) = 5.5 points) below the split's 79.9 %.
WHISPER_AGREEMENT_MIN = 0.744


def test_whisper_streaming_agrees_with_offline(starter, speech):
    wavs = [speech[0], speech[2]]  # alan_0017, awb_0002
    st = StreamingTokenizer(starter)
    offline = starter.frame_labels_batch(wavs)
    with st.streaming(len(wavs)):  # all pushed at once: the same windows as any other cut (previous test)
        got = [np.concatenate(parts) for parts in zip(st.push(wavs), st.flush())]
    assert [len(g) for g in got] == [len(ref) for ref in offline]
    agree = np.concatenate([g == ref for g, ref in zip(got, offline)])
    assert WHISPER_AGREEMENT_MIN <= agree.mean() < 1.0
    # frame-exact timing: the labels shifted by one frame agree far less (39 % over the split)
    shifted = np.concatenate([g[1:] == ref[:-1] for g, ref in zip(got, offline)])
    assert shifted.mean() < agree.mean() - 0.25
