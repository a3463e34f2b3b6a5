"""ListeningChannel / StreamingListener: continuous listening features at the speaking units' frame rate.

MFCC (finite receptive field, 100 Hz pooled to 50 Hz): streaming features equal the offline ones. Tolerance: each
frame goes through the same per-frame operations offline and in a window; only the number of rows of the float32
matrix products (mel filterbank over 257 FFT bins, DCT) differs, so a difference can only be the rounding of those
sums, at most ~K u relative with K = 257 terms and u = 2^-24: ``257 u max|f|`` (~1e-3 for |f| <= 84; measured 0,
bitwise equal). A wrong, missing or shifted frame differs by O(max|f|) (checked below). Tiny random HuBERT / Whisper
models (built from configs) pin the gradient paths and the attention-encoder streaming bookkeeping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertModel, WhisperConfig, WhisperModel

from textless.audio import load_audio
from textless.data.corpus import load_bundled_corpus
from textless.dialogue.listening import ListeningChannel, ListeningConfig, StreamingListener, mean_pool
from textless.errors import ConfigError
from textless.streaming import StreamingError
from textless.tokenizers.encoders.mfcc import MFCCEncoder
from textless.tokenizers.encoders.ssl import SSLEncoder
from textless.tokenizers.encoders.whisper import WhisperFeatureEncoder

SR = 16000
MFCC_TERMS = 257  # FFT bins summed per mel bin: the longest float32 sum behind an MFCC
TINY_SSL = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
            "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def speech() -> list[torch.Tensor]:
    """The first three utterances of the bundled corpus' valid split (16 kHz, 2.3-3.5 s each)."""
    return [load_audio(item.path, SR)[0] for item in list(load_bundled_corpus("valid"))[:3]]


def tiny_hubert(seed: int = 0, layer: int = 2) -> SSLEncoder:
    torch.manual_seed(seed)
    return SSLEncoder(HubertModel(HubertConfig(**TINY_SSL)).eval(), layer)


def tiny_whisper(seed: int = 0) -> WhisperFeatureEncoder:
    torch.manual_seed(seed)
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80)
    return WhisperFeatureEncoder(WhisperModel(config).eval(), layer=1)


def pad(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()) + 123)  # extra padding: must change nothing
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, lengths


def mfcc_tolerance(reference: np.ndarray) -> float:
    return MFCC_TERMS * 2.0 ** -24 * float(np.abs(reference).max())


def stream(listener: StreamingListener, wavs: list[torch.Tensor], rng: np.random.RandomState, *,
           max_piece: int = 900, starts: list[int] | None = None) -> list[np.ndarray]:
    """Push each waveform in random pieces (stream b joins at push starts[b], paused before: its input ignored),
    check every push continues the stream's frame count, flush; the features [F_b, D] per stream."""
    batch = len(wavs)
    starts = starts or [0] * batch
    out: list[list[np.ndarray]] = [[] for _ in range(batch)]
    pos = [0] * batch
    with listener.streaming(batch):
        t = 0
        while any(p < len(w) for p, w in zip(pos, wavs)):
            run = [t >= s for s in starts]
            listener.set_exec_mask(torch.tensor(run))
            before = listener.frames_emitted
            pieces = []
            for b in range(batch):
                n = rng.randint(0, max_piece) if run[b] else 7
                pieces.append(wavs[b][pos[b]: pos[b] + n] if run[b] else torch.ones(n))
                pos[b] += n if run[b] else 0
            got = listener.push(pieces)
            for b in range(batch):
                assert got[b].dtype == np.float32 and got[b].shape[1] == listener.dim
                assert listener.frames_emitted[b] == before[b] + len(got[b])
                assert run[b] or len(got[b]) == 0
                out[b].append(got[b])
            t += 1
        for b, tail in enumerate(listener.flush()):
            out[b].append(tail)
    return [np.concatenate(o) for o in out]


# ------------------------------------------------------------------------------------------------ offline
def test_mfcc_pooling_is_the_mean_of_pairs(speech):
    channel = ListeningChannel(ListeningConfig())  # "mfcc" through load_encoder, 50 Hz
    assert (channel.ratio, channel.dim, channel.frame_rate, channel.sample_rate) == (2, 39, 50.0, SR)
    wavs = [speech[0], speech[1][:9100]]  # 9100 samples: 55 MFCC frames -> 27 output frames (the 55th is dropped)
    feats, lengths = channel(*pad(wavs))
    encoder = MFCCEncoder()
    expected_lengths = [encoder.num_frames(len(w)) // 2 for w in wavs]
    assert expected_lengths[1] == 27 and lengths.tolist() == expected_lengths
    assert feats.shape == (2, max(expected_lengths), 39) and feats.dtype == torch.float32
    for b, w in enumerate(wavs):
        f = encoder.encode(w)
        n = expected_lengths[b]
        hand = (f[0: 2 * n: 2] + f[1: 2 * n: 2]) / 2
        torch.testing.assert_close(feats[b, :n], hand, atol=0, rtol=0)
        assert channel.num_frames(len(w)) == n
    assert bool((feats[1, expected_lengths[1]:] == 0).all())  # frames past a length are zeros


def test_other_ratios_and_bad_frame_rates(speech):
    wav = speech[0][:8000]
    f = MFCCEncoder().encode(wav)
    same, _ = ListeningChannel(ListeningConfig(frame_rate=100.0))(wav[None])
    torch.testing.assert_close(same[0], f, atol=0, rtol=0)  # ratio 1: the encoder's features
    quarter, lengths = ListeningChannel(ListeningConfig(frame_rate=25.0))(wav[None])
    assert int(lengths[0]) == len(f) // 4
    torch.testing.assert_close(quarter[0], f[: len(f) // 4 * 4].reshape(-1, 4, 39).mean(1))
    for bad in (30.0, 200.0, 0.0):
        with pytest.raises(ConfigError, match=r"frame_rate"):
            ListeningChannel(ListeningConfig(frame_rate=bad))
    with pytest.raises(ConfigError, match=r"encoder's frame rate \(100 Hz\).*listening frame_rate \(30 Hz\)"):
        ListeningChannel(ListeningConfig(frame_rate=30.0))


def test_short_items_give_no_frames(speech):
    channel = ListeningChannel(ListeningConfig())
    wavs = [speech[0][:399], speech[0][:4000], speech[0][:560]]  # no MFCC frame; 23 -> 11; 2 -> 1
    feats, lengths = channel(*pad(wavs))
    assert lengths.tolist() == [0, 11, 1] == [channel.num_frames(len(w)) for w in wavs]
    alone, _ = channel(wavs[1][None])
    torch.testing.assert_close(feats[1, :11], alone[0], atol=0, rtol=0)
    assert bool((feats[0] == 0).all())
    empty, empty_lengths = channel(torch.zeros(2, 300))
    assert empty.shape == (2, 0, 39) and empty_lengths.tolist() == [0, 0]


def test_mean_pool_drops_the_partial_group():
    x = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)
    pooled = mean_pool(x, 3)
    assert pooled.shape == (2, 2, 3)
    torch.testing.assert_close(pooled[1, 1], x[1, 3:6].mean(0))


def test_encoder_from_a_hugging_face_directory(tmp_path):
    torch.manual_seed(0)
    HubertModel(HubertConfig(**TINY_SSL)).save_pretrained(tmp_path)
    channel = ListeningChannel(ListeningConfig(encoder=str(tmp_path), layer=1, frame_rate=25.0))
    assert isinstance(channel.encoder, SSLEncoder) and channel.encoder.layer == 1
    assert (channel.dim, channel.ratio) == (32, 2)
    feats, lengths = channel(torch.randn(1, 8000))
    assert feats.shape == (1, 12, 32) and lengths.tolist() == [12]  # 24 HuBERT frames at 50 Hz


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("kind", ["hubert", "whisper"])
def test_trainable_gradients_reach_the_encoder(kind):
    make = tiny_hubert if kind == "hubert" else tiny_whisper
    wavs = torch.randn(2, 6000) * 0.1
    lengths = torch.tensor([6000, 4100])
    frozen = ListeningChannel(ListeningConfig(frame_rate=50.0), encoder=make())
    trainable = ListeningChannel(ListeningConfig(frame_rate=50.0, trainable=True), encoder=make())

    ref, ref_lengths = frozen(wavs, lengths)
    assert not ref.requires_grad
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert frozen.training and not frozen.encoder.training

    feats, feat_lengths = trainable(wavs, lengths)
    assert feats.requires_grad and feat_lengths.tolist() == ref_lengths.tolist()
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)  # the same features, now differentiable
    assert bool((feats[1, int(feat_lengths[1]):] == 0).all())
    feats.pow(2).sum().backward()
    first_block = trainable.encoder.model.encoder.layers[0] if kind == "hubert" else trainable.encoder.encoder.layers[0]
    grads = [p.grad for p in first_block.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_trainable_needs_a_differentiable_encoder():
    with pytest.raises(ConfigError, match="trainable=True needs an encoder with a differentiable forward"):
        ListeningChannel(ListeningConfig(trainable=True))  # MFCC: nothing to train


# ------------------------------------------------------------------------------------------------ streaming
def test_mfcc_streaming_equals_offline(speech):
    channel = ListeningChannel(ListeningConfig())
    offline, lengths = channel(*pad(speech))
    got = stream(channel.streaming_listener(), speech, np.random.RandomState(0), starts=[0, 3, 1])
    for b, g in enumerate(got):
        ref = offline[b, : int(lengths[b])].numpy()
        assert g.shape == ref.shape
        np.testing.assert_allclose(g, ref, rtol=0, atol=mfcc_tolerance(ref))
        assert np.abs(g[1:] - ref[:-1]).max() > 100 * mfcc_tolerance(ref)  # a shifted frame is far off


def test_one_push_equals_many_pieces(speech):
    listener = ListeningChannel(ListeningConfig()).streaming_listener()
    wav = speech[2]
    with listener.streaming(1):
        whole = np.concatenate(listener.push(wav[None]) + listener.flush())
    for seed, max_piece in ((1, 50), (2, 5000)):
        np.testing.assert_array_equal(stream(listener, [wav], np.random.RandomState(seed), max_piece=max_piece)[0],
                                      whole)


def test_latency_and_when_frames_come_out(speech):
    channel = ListeningChannel(ListeningConfig())
    listener = channel.streaming_listener()
    # MFCC defaults: 4 frames of look-ahead, blocks of 2 frames, hop 160, span 400 -> (4 + 1) 160 + 400 samples
    assert listener.latency_samples == 1200 and channel.latency == listener.latency == pytest.approx(0.075)
    assert ListeningChannel(ListeningConfig(lookahead=0)).latency == pytest.approx(560 / SR)
    hubert = tiny_hubert()
    assert ListeningChannel(ListeningConfig(), encoder=hubert).latency == pytest.approx((10 * 320 + 400) / SR)
    assert ListeningChannel(ListeningConfig(frame_rate=25.0, lookahead=2), encoder=hubert).latency == \
        pytest.approx((3 * 320 + 400) / SR)
    wav, pushed = speech[0], 0
    with listener.streaming(1):
        for i in (0, 1, 6):
            need = i * 2 * 160 + listener.latency_samples  # output frame i starts at sample 2 i hop
            listener.push([wav[pushed: need - 1]])
            pushed = need
            assert listener.frames_emitted == [i]
            assert len(listener.push([wav[need - 1: need]])[0]) == 1
            assert listener.frames_emitted == [i + 1]


def test_flush_resets_a_stream_and_snapshots(speech):
    channel = ListeningChannel(ListeningConfig())
    listener = channel.streaming_listener()

    def offline(wav: torch.Tensor) -> np.ndarray:
        feats, lengths = channel(wav[None])
        return feats[0, : int(lengths[0])].numpy()

    s0, s1, s2 = speech
    with listener.streaming(2):
        # 9100 samples: 55 MFCC frames, the 55th waits in the pending group and is dropped at flush
        first = listener.push([s0[:9100], s1[:5000]])
        tail = listener.flush(torch.tensor([True, False]))
        assert len(tail[1]) == 0 and listener.frames_emitted == [0, len(first[1])]
        np.testing.assert_array_equal(np.concatenate([first[0], tail[0]]), offline(s0[:9100]))
        snap = listener.get_streaming_state()
        later = listener.push([s2[:3001], s1[5000:12345]])
        listener.set_streaming_state(snap)
        again = listener.push([s2[:3001], s1[5000:12345]])
        for a, b in zip(later, again):
            np.testing.assert_array_equal(a, b)
        rest = listener.push([s2[3001:], s1[12345:]])
        end = listener.flush()
        assert listener.frames_emitted == [0, 0]
    np.testing.assert_array_equal(np.concatenate([again[0], rest[0], end[0]]), offline(s2))  # nothing of s0 left
    np.testing.assert_array_equal(np.concatenate([first[1], again[1], rest[1], end[1]]), offline(s1))


def test_attention_encoder_streaming_is_cut_independent():
    """Tiny HuBERT at 25 Hz (blocks of 2 frames): the windows depend on the audio only, and the frame count is the
    offline one; the features differ from offline (each window sees 0.3 s of context)."""
    channel = ListeningChannel(ListeningConfig(frame_rate=25.0, left_context=0.3, lookahead=3),
                               encoder=tiny_hubert())
    wav = torch.randn(9000) * 0.1
    listener = channel.streaming_listener()
    with listener.streaming(1):
        whole = np.concatenate(listener.push([wav]) + listener.flush())
    pieces = stream(listener, [wav], np.random.RandomState(0), max_piece=2000)[0]
    np.testing.assert_allclose(pieces, whole, atol=1e-5, rtol=1e-5)
    offline, lengths = channel(wav[None])
    assert len(whole) == int(lengths[0]) == channel.num_frames(len(wav)) == 13  # 27 HuBERT frames -> 13
    assert not np.allclose(whole, offline[0].numpy(), atol=1e-3)  # windows, not the whole utterance


def test_misuse():
    listener = ListeningChannel(ListeningConfig()).streaming_listener()
    with pytest.raises(StreamingError):
        listener.push([torch.zeros(10)])
    with listener.streaming(2), pytest.raises(StreamingError, match="one waveform per stream"):
        listener.push([torch.zeros(10)])
    with pytest.raises(ConfigError):
        ListeningChannel(ListeningConfig(lookahead=-1))
    with pytest.raises(ConfigError):
        ListeningChannel(ListeningConfig(left_context=-0.5))
