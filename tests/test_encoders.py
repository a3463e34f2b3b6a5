"""Tests for textless.tokenizers.encoders: SSL (HuBERT / wav2vec2 / WavLM), Whisper and MFCC encoders, the loader
registry and long-audio chunking. Every model is a tiny random one built from a config (real conv kernel/stride
layout, so the frame arithmetic is the real one)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torchaudio.compliance import kaldi
from transformers import (
    BertConfig,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from textless.audio import resample
from textless.errors import ConfigError, TextlessError
from textless.tokenizers.encoders import (
    ENCODER_LOADERS,
    MFCCEncoder,
    SpeechEncoder,
    SSLEncoder,
    WhisperFeatureEncoder,
    encode_long,
    load_encoder,
)
from textless.tokenizers.encoders.chunking import frame_geometry, iter_encode_long

SR = 16000
ATOL = 1e-5
TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (32,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
PRE_LN = {"feat_extract_norm": "layer", "do_stable_layer_norm": True}

# name -> (model class, config class, extra config): the flavours the encoder must handle
SSL_FLAVOURS = {
    "hubert-group-postln": (HubertModel, HubertConfig, {}),
    "wav2vec2-layer-preln": (Wav2Vec2Model, Wav2Vec2Config, PRE_LN),
    "wavlm-group-postln": (WavLMModel, WavLMConfig, {}),
    "wavlm-layer-preln": (WavLMModel, WavLMConfig, PRE_LN),
}


def ssl_model(flavour: str, seed: int = 0):
    model_class, config_class, extra = SSL_FLAVOURS[flavour]
    torch.manual_seed(seed)
    return model_class(config_class(**TINY, **extra)).eval()


def whisper_model(seed: int = 0) -> WhisperModel:
    torch.manual_seed(seed)
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80)
    return WhisperModel(config).eval()


def speechlike(n: int, seed: int = 0) -> torch.Tensor:
    """Noise with a slow random envelope: every position differs (no chance matches)."""
    g = torch.Generator().manual_seed(seed)
    envelope = 0.1 + torch.rand(n // 800 + 2, generator=g).repeat_interleave(800)[:n]
    return (0.3 * torch.randn(n, generator=g) * envelope).float()


def padded_batch(lengths: list[int], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    wavs = [speechlike(n, seed=i + 1) for i, n in enumerate(lengths)]
    batch = torch.full((len(wavs), max(lengths) + 37), pad_value)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, torch.tensor(lengths), wavs


def assert_batched_equals_single(encoder: SpeechEncoder, lengths: list[int], atol: float = ATOL,
                                 pad_value: float = 0.0) -> None:
    batch, lens, wavs = padded_batch(lengths, pad_value)
    feats, feat_lens = encoder(batch, lens)
    assert feats.dtype == torch.float32 and feat_lens.dtype == torch.long
    assert feats.shape == (len(lengths), int(feat_lens.max()), encoder.dim)
    for i, w in enumerate(wavs):
        single, single_len = encoder(w[None])
        assert int(feat_lens[i]) == int(single_len[0]) == encoder.num_frames(len(w))
        torch.testing.assert_close(feats[i, : feat_lens[i]], single[0], atol=atol, rtol=0)
        assert not feats[i, feat_lens[i]:].any(), "padded frames must be zero"


# ------------------------------------------------------------------------------------------------ SSL: batching


@pytest.mark.parametrize("flavour", list(SSL_FLAVOURS))
def test_ssl_batched_equals_one_by_one(flavour):
    encoder = SSLEncoder(ssl_model(flavour), layer=2)
    assert_batched_equals_single(encoder, [2 * SR + 123, 400, 7777, SR])


def test_ssl_non_zero_padding_is_ignored():
    encoder = SSLEncoder(ssl_model("hubert-group-postln"), layer=2)
    assert_batched_equals_single(encoder, [SR, 3000], pad_value=0.7)


def test_plain_groupnorm_would_break_padding_invariance():
    """Why the masked GroupNorm exists: the HF module on a zero-padded batch changes the short item's features."""
    model = ssl_model("hubert-group-postln")
    batch, lens, wavs = padded_batch([2 * SR, 5000])
    with torch.no_grad():
        hf_batched = model(batch, attention_mask=(torch.arange(batch.shape[1]) < lens[:, None]).long())
        hf_single = model(wavs[1][None])
    n = hf_single.last_hidden_state.shape[1]
    assert (hf_batched.last_hidden_state[1, :n] - hf_single.last_hidden_state[0]).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------------ SSL: layers


def hf_hidden_states(model, wav: torch.Tensor):
    with torch.no_grad():
        return model(wav[None], output_hidden_states=True)


@pytest.mark.parametrize("flavour", ["hubert-group-postln", "wavlm-group-postln"])
def test_post_ln_layer_equals_hf_hidden_states_for_every_layer(flavour):
    model = ssl_model(flavour)
    wav = speechlike(SR + 500)
    out = hf_hidden_states(model, wav)
    assert len(out.hidden_states) == 4
    for layer in range(4):
        feats = SSLEncoder(model, layer).encode(wav)
        torch.testing.assert_close(feats, out.hidden_states[layer][0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("flavour", ["wav2vec2-layer-preln", "wavlm-layer-preln"])
def test_pre_ln_layers_and_the_final_layer_norm(flavour):
    """Pre-LN: layer L = hidden_states[L] for L < N; at L = N the final encoder.layer_norm is NOT applied (fairseq
    output_layer parity). In transformers 5 hidden_states[N] is the raw block output too; last_hidden_state is not."""
    model = ssl_model(flavour)
    wav = speechlike(SR + 500)
    out = hf_hidden_states(model, wav)
    for layer in range(3):
        torch.testing.assert_close(SSLEncoder(model, layer).encode(wav), out.hidden_states[layer][0],
                                   atol=ATOL, rtol=0)
    last = SSLEncoder(model, 3).encode(wav)
    torch.testing.assert_close(last, out.hidden_states[3][0], atol=ATOL, rtol=0)  # transformers 5 behaviour
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.layer_norm(last), out.last_hidden_state[0], atol=ATOL, rtol=0)
    assert (last - out.last_hidden_state[0]).abs().max() > 0.1
    # layer=None is the model's final output: the last block AND the final layer norm (HF last_hidden_state; fairseq
    # extract_features(output_layer=None)); its identity says so, and it survives a bundle round trip
    final = SSLEncoder(model, None)
    torch.testing.assert_close(final.encode(wav), out.last_hidden_state[0], atol=ATOL, rtol=0)
    assert final.identity()["layer"] is None and final.identity()["final_layer_norm"] is True
    assert SSLEncoder(model, 3).identity()["layer"] == 3 and "final_layer_norm" not in SSLEncoder(model, 3).identity()


def test_layer_default_and_range():
    model = ssl_model("hubert-group-postln")
    assert SSLEncoder(model, None).layer == 3
    for bad in (-1, 4, 2.0, True, "6"):
        with pytest.raises(TextlessError, match="out of range"):
            SSLEncoder(model, bad)


def test_early_exit_runs_only_the_needed_blocks():
    model = ssl_model("hubert-group-postln")
    calls = []
    handles = [block.register_forward_hook(lambda mod, args, out, i=i: calls.append(i))
               for i, block in enumerate(model.encoder.layers)]
    try:
        SSLEncoder(model, 1).encode(speechlike(SR))
        assert calls == [0]
        calls.clear()
        SSLEncoder(model, 0).encode(speechlike(SR))
        assert calls == []
        SSLEncoder(model, 3).encode(speechlike(SR))
        assert calls == [0, 1, 2]
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------------------------ SSL: frames, inputs


def test_num_frames_matches_output_for_many_lengths():
    encoder = SSLEncoder(ssl_model("hubert-group-postln"), 1)
    lengths = [400, 401, 719, 720, 721, 1039, 1040, 5000, SR - 1, SR, SR + 1]
    for n in lengths:
        assert encoder.num_frames(n) == (n - 400) // 320 + 1
    batch, lens, _ = padded_batch(lengths)
    _, feat_lens = encoder(batch, lens)
    assert feat_lens.tolist() == [encoder.num_frames(n) for n in lengths]
    assert encoder.frame_rate == 50.0 and encoder.sample_rate == SR and encoder.dim == 32


def test_too_short_input_is_a_clear_error():
    encoder = SSLEncoder(ssl_model("hubert-group-postln"), 1)
    with pytest.raises(TextlessError, match="399 samples is too short.*at least 400 samples"):
        encoder.num_frames(399)
    with pytest.raises(TextlessError, match="batch item 1: 300 samples is too short"):
        encoder(torch.zeros(2, 1000), torch.tensor([1000, 300]))


def test_normalize_layer_norms_each_waveform_over_its_valid_samples():
    """(A layer-norm CNN: with feat_extract_norm="group" the first GroupNorm already cancels gain and offset.)"""
    model = ssl_model("wav2vec2-layer-preln")
    plain, normed = SSLEncoder(model, 2), SSLEncoder(model, 2, normalize=True)
    wavs = [3.0 * speechlike(SR, seed=5) + 0.2, 0.01 * speechlike(6000, seed=6)]
    for w in wavs:
        expected = plain.encode(F.layer_norm(w, w.shape, eps=1e-5))
        torch.testing.assert_close(normed.encode(w), expected, atol=ATOL, rtol=0)
        assert (normed.encode(w) - plain.encode(w)).abs().max() > 1e-3
    assert_batched_equals_single(normed, [SR, 6000, 2500])


def test_encode_resamples_8khz_input():
    encoder = SSLEncoder(ssl_model("hubert-group-postln"), 2)
    wav8k = speechlike(8000)
    feats = encoder.encode(wav8k, sample_rate=8000)
    assert feats.shape == (encoder.num_frames(16000), 32)
    torch.testing.assert_close(feats, encoder.encode(resample(wav8k, 8000, SR)), atol=0, rtol=0)


def test_outputs_are_ordinary_float32_tensors_and_bf16_autocast_runs_on_cpu():
    model = ssl_model("hubert-group-postln")
    wav = speechlike(SR)
    reference = SSLEncoder(model, 2).encode(wav)
    for dtype in (torch.bfloat16, "bfloat16"):
        encoder = SSLEncoder(model, 2, dtype=dtype)
        encoder.force_dtype = True  # bf16 even on a CPU without native bf16 (emulated: slow but exact in behaviour)
        assert encoder.loader_options() == {"normalize": False, "dtype": "bfloat16"}
        feats = encoder.encode(wav)
        assert feats.dtype == torch.float32 and not feats.is_inference()
        feats[0] = 0  # in-place use outside inference mode is allowed
        # bf16 matmuls really ran (the result differs from float32) and stay close to it (8-bit mantissa)
        err = (feats[1:] - reference[1:]).abs().max() / reference.abs().max()
        assert 1e-4 < err < 0.05
    assert SSLEncoder(model, 2, dtype="float32").dtype == torch.float32
    # without force_dtype, a CPU without native bf16 runs float32 (and says so); one with it runs bf16
    from textless.tokenizers.encoders import base

    for native in (False, True):
        base.cpu_has_native_bf16.cache_clear()
        base._warn_emulated.cache_clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(base, "cpu_has_native_bf16", lambda native=native: native)
            feats = SSLEncoder(model, 2, dtype="bfloat16").encode(wav)
        assert torch.equal(feats, reference) is (not native)
    base.cpu_has_native_bf16.cache_clear()
    for bad in (torch.int8, "half-ish"):
        with pytest.raises(ConfigError, match="dtype"):
            SSLEncoder(model, 2, dtype=bad)


def test_train_mode_is_ignored():
    encoder = SSLEncoder(ssl_model("hubert-group-postln"), 2)
    encoder.train()
    assert not encoder.training and not encoder.model.training


# ------------------------------------------------------------------------------------------------ Whisper


@pytest.fixture(scope="module")
def whisper():
    return whisper_model()


def test_whisper_log_mel_matches_hf_feature_extractor(whisper):
    encoder = WhisperFeatureEncoder(whisper)
    wav = speechlike(SR + 777)
    expected = WhisperFeatureExtractor(feature_size=80)(wav.numpy(), sampling_rate=SR, return_tensors="pt")
    mel = encoder.log_mel(wav[None])
    assert mel.shape == (1, 80, 3000)
    torch.testing.assert_close(mel, expected.input_features, atol=1e-4, rtol=0)


def test_whisper_layers_match_hf_encoder(whisper):
    encoder_hf = whisper.encoder
    wav = speechlike(SR + 777)
    mel = WhisperFeatureExtractor(feature_size=80)(wav.numpy(), sampling_rate=SR, return_tensors="pt").input_features
    with torch.no_grad():
        out = encoder_hf(mel, output_hidden_states=True)
    frames = math.ceil(math.ceil(len(wav) / 160) / 2)
    for layer in range(3):
        enc = WhisperFeatureEncoder(whisper, layer)
        feats = enc.encode(wav)
        assert feats.shape == (frames, 32) == (enc.num_frames(len(wav)), 32)
        torch.testing.assert_close(feats, out.hidden_states[layer][0, :frames], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.hidden_states[2], out.last_hidden_state)  # HF ties the last entry: with LN


def test_whisper_batched_equals_one_by_one_and_frames(whisper):
    encoder = WhisperFeatureEncoder(whisper, 1)
    assert (encoder.sample_rate, encoder.frame_rate, encoder.dim, encoder.max_samples) == (SR, 50.0, 32, 30 * SR)
    assert_batched_equals_single(encoder, [3 * SR + 5, 1, 4321, SR])
    for n in (1, 320, 321, 16000, 30 * SR):
        assert encoder.num_frames(n) == math.ceil(n / 320)


def test_whisper_too_long_points_to_encode_long(whisper):
    encoder = WhisperFeatureEncoder(whisper, 1)
    with pytest.raises(TextlessError, match="encode_long"):
        encoder.num_frames(30 * SR + 1)
    with pytest.raises(TextlessError, match="batch item 0.*encode_long"):
        encoder(torch.zeros(1, 30 * SR + 1))


# ------------------------------------------------------------------------------------------------ MFCC


def test_mfcc_matches_gslm_recipe_and_shapes():
    encoder = MFCCEncoder()
    wav = speechlike(SR + 123)
    reference = kaldi.mfcc(wav[None], sample_frequency=SR, use_energy=False).T  # fairseq MfccFeatureReader
    delta = AF.compute_deltas(reference)
    expected = torch.cat([reference, delta, AF.compute_deltas(delta)]).T
    feats = encoder.encode(wav)
    assert feats.shape == (encoder.num_frames(len(wav)), 39) == (1 + (len(wav) - 400) // 160, 39)
    torch.testing.assert_close(feats, expected, atol=0, rtol=0)
    assert (encoder.dim, encoder.frame_rate) == (39, 100.0)
    assert MFCCEncoder(n_mfcc=20, deltas=False, frame_rate=50.0).encode(wav).shape == (1 + (len(wav) - 400) // 320, 20)


def test_mfcc_batched_equals_unbatched_exactly():
    assert_batched_equals_single(MFCCEncoder(), [2 * SR, 400, 7777], atol=0)


def test_mfcc_errors():
    with pytest.raises(TextlessError, match="too short"):
        MFCCEncoder().num_frames(399)
    with pytest.raises(ConfigError, match="layer must be None"):
        load_encoder("mfcc", layer=3)
    with pytest.raises(ConfigError, match="whole number"):
        MFCCEncoder(frame_rate=300.0)


# ------------------------------------------------------------------------------------------------ loading


def save_ssl(flavour: str, path, preprocessor: dict | None = None):
    model = ssl_model(flavour)
    model.save_pretrained(path)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return model


@pytest.mark.parametrize("flavour", ["hubert-group-postln", "wav2vec2-layer-preln", "wavlm-layer-preln"])
def test_load_encoder_from_hf_directory(tmp_path, flavour):
    model = save_ssl(flavour, tmp_path)
    encoder = load_encoder(tmp_path, layer=2)
    assert isinstance(encoder, SSLEncoder)
    ident = encoder.identity()
    assert ident["name"] == model.config.model_type and ident["layer"] == 2 and ident["source"] == str(tmp_path)
    assert ident["normalize"] is False
    wav = speechlike(SR)
    torch.testing.assert_close(encoder.encode(wav), SSLEncoder(model, 2).encode(wav), atol=0, rtol=0)
    assert load_encoder(str(tmp_path)).layer == 3  # None -> last block


def test_load_encoder_reads_do_normalize(tmp_path):
    save_ssl("wav2vec2-layer-preln", tmp_path, {"do_normalize": True, "sampling_rate": 16000})
    assert load_encoder(tmp_path, 1).normalize is True
    assert load_encoder(tmp_path, 1, normalize=False).normalize is False


@pytest.mark.parametrize("what", ["model", "encoder"])
def test_load_encoder_whisper_directory(tmp_path, whisper, what):
    (whisper if what == "model" else whisper.encoder).save_pretrained(tmp_path)
    encoder = load_encoder(tmp_path, layer=1)
    assert isinstance(encoder, WhisperFeatureEncoder) and encoder.identity()["name"] == "whisper"
    wav = speechlike(SR)
    torch.testing.assert_close(encoder.encode(wav), WhisperFeatureEncoder(whisper, 1).encode(wav), atol=0, rtol=0)


def test_load_encoder_errors(tmp_path):
    with pytest.raises(TextlessError, match=r"'nope\.bin': no such file.*Accepted: 'mfcc'.*config\.json.*\*\.pt"):
        load_encoder("nope.bin")
    with pytest.raises(TextlessError, match="has no config.json"):
        load_encoder(tmp_path)
    odd = tmp_path / "weights.ckpt"
    odd.write_bytes(b"x")
    with pytest.raises(TextlessError, match="unrecognised file type '.ckpt'"):
        load_encoder(odd)
    bert = tmp_path / "bert"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(bert)
    with pytest.raises(TextlessError, match="model_type 'bert' is not a supported.*hubert.*whisper"):
        load_encoder(bert)
    hub = tmp_path / "hubert"
    save_ssl("hubert-group-postln", hub)
    with pytest.raises(TextlessError, match="out of range"):
        load_encoder(hub, layer=7)


def test_load_encoder_mfcc_and_fairseq_dispatch(tmp_path, monkeypatch):
    assert isinstance(load_encoder("mfcc"), MFCCEncoder)
    assert load_encoder("mfcc", n_mfcc=20, deltas=False).dim == 20
    checkpoint = tmp_path / "hubert_base_ls960.pt"
    checkpoint.write_bytes(b"not read")
    seen = {}

    def fake_fairseq(source, layer, **kw):
        seen.update(source=source, layer=layer, **kw)
        return MFCCEncoder()

    monkeypatch.setitem(ENCODER_LOADERS, "fairseq", fake_fairseq)
    load_encoder(checkpoint, 6, normalize=False)
    assert seen == {"source": checkpoint, "layer": 6, "normalize": False}


# ------------------------------------------------------------------------------------------------ chunking


def test_frame_geometry():
    assert (frame_geometry(MFCCEncoder()).hop, frame_geometry(MFCCEncoder()).receptive) == (160, 400)
    hubert = SSLEncoder(ssl_model("hubert-group-postln"), 1)
    assert (frame_geometry(hubert).hop, frame_geometry(hubert).receptive) == (320, 400)


def test_chunked_mfcc_is_identical_to_whole():
    encoder = MFCCEncoder()
    wav = speechlike(20 * SR + 123)
    chunked = encode_long(encoder, wav, chunk_seconds=3.0, context_seconds=0.1)
    whole = encoder.encode(wav)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


class WindowSpy(SSLEncoder):
    """Records the length of every window the encoder is called on."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.window_lengths: list[int] = []

    def forward(self, wavs, lengths=None):
        self.window_lengths.append(wavs.shape[-1])
        return super().forward(wavs, lengths)


def test_chunked_ssl_frames_difference_and_memory_bound():
    encoder = WindowSpy(ssl_model("wav2vec2-layer-preln"), 3)
    chunk, context = 1.0, 0.25
    bound = (chunk + 2 * context) * SR + 400
    for seconds in (4, 12):
        wav = speechlike(seconds * SR + 211, seed=seconds)
        encoder.window_lengths.clear()
        chunked = encode_long(encoder, wav, chunk_seconds=chunk, context_seconds=context)
        assert chunked.shape == (encoder.num_frames(len(wav)), 32)
        assert max(encoder.window_lengths) <= bound  # independent of the input length
        assert len(encoder.window_lengths) == math.ceil(encoder.num_frames(len(wav)) / 50)
    wav = speechlike(4 * SR + 211)
    whole = encoder.encode(wav)
    diffs = [(encode_long(encoder, wav, chunk_seconds=chunk, context_seconds=c) - whole).abs().mean().item()
             for c in (0.0, 0.5, 1.5, 10.0)]
    assert diffs[0] > diffs[1] > diffs[2] > 0
    assert diffs[3] < 1e-6  # a window covering the whole utterance


def test_chunked_single_window_is_whole_utterance_and_pieces_concatenate():
    encoder = SSLEncoder(ssl_model("hubert-group-postln"), 2)
    wav = speechlike(2 * SR + 700)  # 101 frames
    torch.testing.assert_close(encode_long(encoder, wav), encoder.encode(wav), atol=0, rtol=0)
    pieces = list(iter_encode_long(encoder, wav, chunk_seconds=0.5, context_seconds=0.2))
    assert [len(p) for p in pieces] == [25, 25, 25, 25, 1]


def test_chunked_whisper_fits_its_window(whisper):
    encoder = WhisperFeatureEncoder(whisper, 1)
    wav = speechlike(31 * SR)
    feats = encode_long(encoder, wav, sample_rate=SR, chunk_seconds=30.0, context_seconds=2.0)
    assert feats.shape == (encoder.num_frames(30 * SR) + 50, 32)
    assert np.isfinite(feats.numpy()).all()


def test_whisper_long_audio_is_chunked_not_refused(whisper):
    """A 31 s file is fine for Whisper (too long for one call, chunked by encode_utterances); 0 samples is not."""
    from textless.tokenizers.encoders.utterances import encode_utterances

    encoder = WhisperFeatureEncoder(whisper, 1)
    assert encoder.length_problem(31 * SR) is None and "at least 1 sample" in encoder.length_problem(0)
    long, short = speechlike(31 * SR), speechlike(SR)
    feats = encode_utterances(encoder, [short, long], chunk_seconds=60.0)
    torch.testing.assert_close(feats[1], encode_long(encoder, long, chunk_seconds=60.0), atol=0, rtol=0)
    torch.testing.assert_close(feats[0], encoder.encode(short), atol=0, rtol=0)


def test_encode_utterances_chunks_beyond_chunk_seconds():
    encoder = SSLEncoder(ssl_model("hubert-group-postln"), 2)
    wavs = [speechlike(SR), speechlike(8 * SR)]  # 1 s chunks + 2 s context each side: windows of 5 s < 8 s
    from textless.tokenizers.encoders.utterances import encode_utterances

    feats = encode_utterances(encoder, wavs, chunk_seconds=1.0)
    torch.testing.assert_close(feats[0], encoder.encode(wavs[0]), atol=0, rtol=0)
    torch.testing.assert_close(feats[1], encode_long(encoder, wavs[1], chunk_seconds=1.0), atol=0, rtol=0)
    assert (feats[1] - encoder.encode(wavs[1])).abs().max() > 0  # windows really were used (group-norm CNN)


def test_fairseq_checkpoint_plugs_into_the_registry(tmp_path):
    """End to end through encoders/fairseq.py (imported lazily by load_encoder) with a tiny fairseq-layout .pt."""
    fixtures = pytest.importorskip("fairseq_fixtures")
    path = fixtures.write_fairseq_checkpoint(tmp_path / "hubert_base.pt", "hubert_base")
    encoder = load_encoder(path, 2)
    assert isinstance(encoder, SSLEncoder) and encoder.identity()["source"] == str(path)
    assert encoder.identity()["layer"] == 2 and encoder.frame_rate == 50.0
    assert_batched_equals_single(encoder, [SR, 3000])
