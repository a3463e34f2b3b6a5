"""Unit HiFi-GAN vocoder: shapes, masked batching, duration predictor, weight norm, save/load, chunked synthesis,
and an independent check against speechbrain's UnitHifiganGenerator."""

import json
import warnings

import numpy as np
import pytest
import torch

from textless.errors import TextlessError
from textless.vocoders import (
    UnitHiFiGAN,
    UnitHiFiGANConfig,
    UnitVocoder,
    fold_weight_norm,
    receptive_field_frames,
    synthesize_long,
)

K = 20
TOKENIZER = {"name": "test-km20", "num_units": K}


def tiny_config(**kw) -> UnitHiFiGANConfig:
    base = {"num_embeddings": K, "embedding_dim": 8, "upsample_rates": [2, 2], "upsample_kernel_sizes": [4, 4],
            "upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
            "dur_predictor_params": {"encoder_embed_dim": 8, "var_pred_hidden_dim": 8}}
    return UnitHiFiGANConfig(**{**base, **kw})


def make_vocoder(seed=0, **kw) -> UnitVocoder:
    torch.manual_seed(seed)
    voc = UnitVocoder.from_config(tiny_config(**kw), tokenizer=TOKENIZER).eval()
    with torch.no_grad():  # larger weights than HiFi-GAN's N(0, 0.01) init so that differences are visible
        for p in voc.parameters():
            p.normal_(0, 0.3)
    return voc


def rand_units(rng, n):
    return rng.integers(0, K, n)


# ------------------------------------------------------------------------------------------------ shapes, batching
def test_output_length_is_frames_times_hop():
    voc = make_vocoder()
    assert voc.hop == 4 and voc.frame_rate == 4000.0
    units = torch.randint(0, K, (2, 7))
    assert voc.generator(units).shape == (2, 1, 28)
    wavs = voc.synthesize([np.arange(5) % K, np.arange(1) % K, np.zeros(0, int)])
    assert [w.shape for w in wavs] == [(20,), (4,), (0,)] and all(w.dtype == np.float32 for w in wavs)


def test_default_sizes_shapes_and_hop():
    cfg = UnitHiFiGANConfig()  # K=100, 512 channels, 320 hop
    assert (cfg.hop, cfg.code_hop_size, cfg.model_in_dim) == (320, 320, 128)
    torch.manual_seed(0)
    gen = UnitHiFiGAN(cfg).eval()
    names = set(gen.state_dict())
    for key in ["dict.weight", "conv_pre.weight", "ups.4.weight", "resblocks.14.convs1.2.weight",
                "resblocks.14.convs2.2.bias", "conv_post.weight"]:
        assert key in names
    with torch.no_grad():
        wav = gen(torch.randint(0, 100, (1, 6)))
    assert wav.shape == (1, 1, 6 * 320) and wav.abs().max() <= 1
    assert receptive_field_frames(cfg) == 21


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(0)
    voc = make_vocoder()
    seqs = [rand_units(rng, n) for n in (1, 3, 40, 17, 2)]
    batched = voc.synthesize(seqs, batch_size=5)
    for s, b in zip(seqs, batched):
        (single,) = voc.synthesize([s], batch_size=1)
        np.testing.assert_allclose(b, single, atol=1e-5)
    # without masking the short items would see their neighbours' padding differently: make sure masking matters
    ids, _ = voc._pad([seqs[2], seqs[0]])
    with torch.no_grad():
        unmasked = voc.generator(ids)[1, 0, :4].numpy()
    assert np.abs(unmasked - batched[0]).max() > 1e-3


@pytest.mark.parametrize("variant", ["speakers", "f0", "both"])
def test_conditioning_variants_batched_equals_one_by_one(variant):
    kw = {"multispkr": variant in ("speakers", "both"), "num_speakers": 3, "f0": variant in ("f0", "both")}
    voc = make_vocoder(**kw)
    assert voc.config.model_in_dim == 8 + 8 * kw["multispkr"] + kw["f0"]
    rng = np.random.default_rng(1)
    seqs = [rand_units(rng, n) for n in (12, 3, 30)]
    spk = [2, 0, 1] if kw["multispkr"] else None
    # f0 at half the frame rate for the first item (repeated x2, fairseq's rule), frame-level for the others
    f0 = [rng.normal(size=6), rng.normal(size=3), rng.normal(size=30)] if kw["f0"] else None
    batched = voc.synthesize(seqs, speakers=spk, f0=f0, batch_size=len(seqs))  # one padded batch
    singles = []
    for i, s in enumerate(seqs):
        (single,) = voc.synthesize([s], speakers=None if spk is None else [spk[i]], f0=None if f0 is None else [f0[i]])
        # outputs are tanh in [-1, 1] after ~10 float32 convolutions of a few hundred terms each: another batch
        # shape changes the reduction order (and the vector width of the CPU changes it again), a few 1e-7 per
        # layer; 1e-5 bounds that with room, while a masking bug moves samples by 1e-3 or more (checked below)
        np.testing.assert_allclose(batched[i], single, atol=1e-5)
        singles.append(single)
    if kw["multispkr"]:
        other = voc.synthesize([seqs[0]], speakers=0, f0=None if f0 is None else [f0[0]])[0]
        assert np.abs(other - batched[0]).max() > 1e-3
    if kw["f0"]:
        # the same inputs once repeated, through the same one-item path: the same numbers exactly
        repeated = voc.synthesize([seqs[0]], speakers=None if spk is None else [2], f0=[np.repeat(f0[0], 2)])[0]
        np.testing.assert_array_equal(repeated, singles[0])


# ---------------------------------------------------------------------------------------------- duration predictor
def test_duration_rule_on_hand_set_weights():
    voc = make_vocoder(duration_predictor=True)
    dp = voc.generator.dur_predictor
    with torch.no_grad():  # proj ignores its input: log-duration = bias
        dp.proj.weight.zero_()
        for log_dur, expected in [(np.log(1 + 3.0), 3), (np.log(1 + 2.5), 2), (np.log(1 + 3.5), 4),
                                  (np.log(1 + 0.2), 1), (-5.0, 1), (np.log(1 + 7.4), 7)]:
            dp.proj.bias.fill_(float(log_dur))
            dur = voc.generator.predict_durations(torch.tensor([[1, 2, 3]]), torch.tensor([[True, True, False]]))
            assert dur.tolist() == [[expected, expected, 0]], log_dur  # torch.round: 2.5 -> 2, 3.5 -> 4


def test_predicted_durations_expand_and_batch():
    rng = np.random.default_rng(2)
    voc = make_vocoder(duration_predictor=True)
    voc.deduplicated = True
    seqs = [rand_units(rng, n) for n in (5, 1, 9)]
    durs = voc.predict_durations(seqs, batch_size=len(seqs))
    for s, d in zip(seqs, durs):
        np.testing.assert_array_equal(d, voc.predict_durations([s])[0])
        assert d.dtype == np.int64 and (d >= 1).all() and len(d) == len(s)
    wavs = voc.synthesize(seqs, batch_size=len(seqs))
    for s, d, w in zip(seqs, durs, wavs):
        assert len(w) == d.sum() * voc.hop
        frame_level = voc.synthesize([np.repeat(s, d)], deduplicated=False)[0]
        np.testing.assert_allclose(w, frame_level, atol=1e-5)
    explicit = voc.synthesize([seqs[0]], [np.full(5, 2)])[0]
    assert len(explicit) == 10 * voc.hop


# ----------------------------------------------------------------------------------------------------- weight norm
def test_remove_weight_norm_keeps_outputs():
    voc = make_vocoder()
    units = torch.randint(0, K, (2, 9))
    with torch.no_grad():
        ref = voc.generator(units)
        voc.generator.apply_weight_norm()
        assert any("parametrizations" in k for k in voc.generator.state_dict())
        with_wn = voc.generator(units)
        voc.generator.remove_weight_norm()
        without = voc.generator(units)
    assert set(voc.generator.state_dict()) == set(UnitHiFiGAN(voc.config).state_dict())
    torch.testing.assert_close(with_wn, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(without, ref, atol=1e-5, rtol=0)


def test_fold_weight_norm_fairseq_style_state_dict():
    torch.manual_seed(0)
    modules = {"conv": torch.nn.Conv1d(4, 6, 3), "ups": torch.nn.ConvTranspose1d(6, 3, 4, 2)}
    for name, m in modules.items():
        with warnings.catch_warnings():  # the old (deprecated) API fairseq used: keys weight_g / weight_v
            warnings.simplefilter("ignore")
            wn = torch.nn.utils.weight_norm(m)
        with torch.no_grad():
            wn.weight_g.mul_(torch.rand_like(wn.weight_g) + 0.5)
        sd = {f"{name}.{k}": v for k, v in wn.state_dict().items()}
        assert f"{name}.weight_g" in sd and f"{name}.weight_v" in sd
        folded = fold_weight_norm(sd)
        assert set(folded) == {f"{name}.weight", f"{name}.bias"}
        wn(torch.zeros(1, wn.in_channels, 5))  # the pre-forward hook recomputes .weight
        torch.testing.assert_close(folded[f"{name}.weight"], wn.weight.detach(), atol=1e-6, rtol=1e-6)
    with pytest.raises(KeyError, match="both g and v"):
        fold_weight_norm({"x.weight_g": torch.ones(1, 1, 1)})


# ---------------------------------------------------------------------------------------------------- persistence
def test_save_from_pretrained_round_trip(tmp_path):
    voc = make_vocoder(duration_predictor=True, multispkr=True, num_speakers=2)
    voc.deduplicated = True
    voc.generator.apply_weight_norm()  # saved folded
    path = voc.save_pretrained(tmp_path / "voc")
    meta = json.loads((path / "config.json").read_text())
    assert meta["format"] == "textless.vocoder" and meta["version"] == 1 and meta["deduplicated"] is True
    assert meta["tokenizer"] == TOKENIZER and meta["generator"]["dur_predictor_params"]["var_pred_hidden_dim"] == 8
    loaded = UnitVocoder.from_pretrained(path)
    seqs = [np.array([1, 2, 3, 4]), np.array([5])]
    for a, b in zip(voc.synthesize(seqs, speakers=1), loaded.synthesize(seqs, speakers=1)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(FileExistsError):
        voc.save_pretrained(path)
    with pytest.raises(TextlessError, match="not a textless vocoder directory"):
        UnitVocoder.from_pretrained(tmp_path)


def test_fairseq_config_round_trip():
    cfg = {"resblock": "1", "upsample_rates": [5, 4, 4, 2, 2], "upsample_kernel_sizes": [11, 8, 8, 4, 4],
           "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "model_in_dim": 128, "num_embeddings": 100,
           "embedding_dim": 128, "code_hop_size": 320, "sampling_rate": 16000, "segment_size": 8960,
           "dur_predictor_params": {"encoder_embed_dim": 128, "var_pred_hidden_dim": 128,
                                    "var_pred_kernel_size": 3, "var_pred_dropout": 0.5}}
    c = UnitHiFiGANConfig.from_fairseq_config(cfg)
    assert c.duration_predictor and c.extra == {"segment_size": 8960}
    out = c.to_dict()
    assert {k: out[k] for k in cfg} == cfg
    assert not UnitHiFiGANConfig.from_fairseq_config({k: v for k, v in cfg.items()
                                                      if k != "dur_predictor_params"}).duration_predictor


# -------------------------------------------------------------------------------------------------- long synthesis
def test_synthesize_long_equals_whole():
    rng = np.random.default_rng(3)
    voc = make_vocoder()
    units = rand_units(rng, 53)
    rf = receptive_field_frames(voc.config)
    assert rf == 9
    (whole,) = voc.synthesize([units])
    long = synthesize_long(voc, units, chunk_frames=10, context_frames=rf)
    assert long.shape == whole.shape
    np.testing.assert_allclose(long, whole, atol=1e-4)
    seamed = synthesize_long(voc, units, chunk_frames=10, context_frames=0)
    assert seamed.shape == whole.shape and np.abs(seamed - whole).max() > 1e-3
    short = synthesize_long(voc, units, chunk_frames=10, context_frames=rf - 3)
    assert np.abs(short - whole).max() > 1e-6  # the receptive field is tight (not over-estimated by much)
    # bounded memory: the generator never sees more than batch_size windows of chunk + 2 context frames
    seen = []
    forward = voc.generator.forward
    voc.generator.forward = lambda units, *a, **kw: seen.append(tuple(units.shape)) or forward(units, *a, **kw)
    synthesize_long(voc, np.tile(units, 20), chunk_frames=10, context_frames=rf, batch_size=3)
    assert len(seen) == -(-106 // 3) and max(b for b, _ in seen) == 3 and max(f for _, f in seen) == 10 + 2 * rf


def test_synthesize_long_with_durations_and_predictor():
    rng = np.random.default_rng(4)
    voc = make_vocoder(duration_predictor=True)
    voc.deduplicated = True
    units = rand_units(rng, 20)
    (whole,) = voc.synthesize([units])
    np.testing.assert_allclose(synthesize_long(voc, units, chunk_frames=7, context_frames=9), whole, atol=1e-4)
    d = rng.integers(1, 4, 20)
    (whole_d,) = voc.synthesize([units], [d])
    np.testing.assert_allclose(synthesize_long(voc, units, d, chunk_frames=7, context_frames=9), whole_d, atol=1e-4)


# ----------------------------------------------------------------------------------------------------------- errors
def test_errors():
    voc = make_vocoder()
    with pytest.raises(TextlessError, match=r"outside \[0, 20\)"):
        voc.synthesize([np.array([1, 20])])
    with pytest.raises(TextlessError, match=r"outside \[0, 20\)"):
        voc.synthesize([np.array([-1, 2])])
    voc.deduplicated = True
    with pytest.raises(TextlessError, match="need durations.*no duration predictor"):
        voc.synthesize([np.array([1, 2])])
    with pytest.raises(TextlessError, match="durations"):
        voc.synthesize([np.array([1, 2])], [np.array([1])])
    with pytest.raises(TextlessError, match="single-speaker"):
        voc.synthesize([np.array([1, 2])], [np.array([1, 1])], speakers=0)
    spk = make_vocoder(multispkr=True, num_speakers=2)
    with pytest.raises(TextlessError, match="multi-speaker"):
        spk.synthesize([np.array([1, 2])])
    with pytest.raises(TextlessError, match="speakers must be"):
        spk.synthesize([np.array([1, 2])], speakers=5)


# ------------------------------------------------------------------------------------------ speechbrain reference
def test_matches_speechbrain_unit_hifigan():
    """speechbrain's UnitHifiganGenerator implements the same generator. Differences, handled here:
    * its "same" convs pad by reflection (speechbrain Conv1d default padding_mode="reflect"); fairseq and we pad
      with zeros -> switched to zero padding below;
    * its speaker input is an embedding vector (no nn.Embedding) -> we pass our spkr.weight rows;
    * its duration predictor has no LayerNorms (fairseq's has ln1/ln2) and speechbrain's ResBlock1 needs exactly
      3 dilations -> the predictor is not compared, dilations are [1, 3, 5].
    Weights are copied by a key mapping through `fold_weight_norm` (speechbrain keeps weight norm as torch
    parametrizations under `<module>.conv.`)."""
    from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator
    from speechbrain.nnet.CNN import Conv1d as SBConv1d

    cfg = tiny_config(resblock_dilation_sizes=[[1, 3, 5]], resblock_kernel_sizes=[3], multispkr=True,
                      num_speakers=3, upsample_rates=[2, 3], upsample_kernel_sizes=[4, 5])
    torch.manual_seed(0)
    sb = UnitHifiganGenerator(in_channels=cfg.model_in_dim, out_channels=1, resblock_type="1",
                              resblock_dilation_sizes=cfg.resblock_dilation_sizes,
                              resblock_kernel_sizes=cfg.resblock_kernel_sizes,
                              upsample_kernel_sizes=cfg.upsample_kernel_sizes,
                              upsample_initial_channel=cfg.upsample_initial_channel,
                              upsample_factors=cfg.upsample_rates, vocab_size=K, embedding_dim=cfg.embedding_dim,
                              multi_speaker=True, pooling_type="none").eval()
    with torch.no_grad():
        for p in sb.parameters():
            p.normal_(0, 0.3)
    for m in sb.modules():
        if isinstance(m, SBConv1d):
            m.padding_mode = "constant"  # zero padding, as fairseq

    def map_key(key: str) -> str | None:
        if key.startswith("unit_embedding."):
            return key.replace("unit_embedding.", "dict.")
        key = key.replace(".conv.parametrizations.weight.original0", ".weight_g")
        key = key.replace(".conv.parametrizations.weight.original1", ".weight_v")
        return key.replace(".conv.", ".")

    state = fold_weight_norm({map_key(k): v for k, v in sb.state_dict().items()})
    gen = UnitHiFiGAN(cfg).eval()
    spk_table = torch.randn(3, cfg.embedding_dim)
    gen.load_state_dict({**state, "spkr.weight": spk_table}, strict=True)

    units = torch.randint(0, K, (2, 11))
    speakers = torch.tensor([2, 0])
    with torch.no_grad():
        ref = sb.inference(units.unsqueeze(-1), spk=spk_table[speakers])
        ours = gen(units, speakers=speakers)
    assert ours.shape == ref.shape == (2, 1, 11 * 6)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
