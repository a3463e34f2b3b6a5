"""Vocoder checkpoint import: fairseq CodeHiFiGAN and speechbrain unit HiFi-GAN directories, built here in their exact
on-disk layouts, against independent reference forward passes (a functional re-statement of fairseq's CodeGenerator
for the first, speechbrain's own UnitHifiganGenerator for the second)."""

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textless.errors import FormatError, TextlessError
from textless.vocoders import UnitVocoder
from textless.vocoders.generator import UnitHiFiGAN
from textless.vocoders.loaders import detect_vocoder_format, load_vocoder

K = 20


# ------------------------------------------------------------------------------------------- fairseq CodeHiFiGAN
def fairseq_config(**kw) -> dict:
    """A fairseq CodeHiFiGAN config.json, small sizes."""
    cfg = {"resblock": "1", "upsample_rates": [2, 3], "upsample_kernel_sizes": [4, 5], "upsample_initial_channel": 16,
           "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [[1, 3], [1, 2]], "model_in_dim": 8,
           "num_embeddings": K, "embedding_dim": 8, "code_hop_size": 6, "sampling_rate": 16000,
           "segment_size": 8960}
    cfg.update(kw)
    return cfg


def _wn(shape, gen):
    """A weight-norm pair (g, v) as fairseq stores it (torch.nn.utils.weight_norm, dim 0)."""
    v = torch.randn(*shape, generator=gen) * 0.3
    g = torch.rand(shape[0], *([1] * (len(shape) - 1)), generator=gen) + 0.5
    return g, v


def fairseq_state(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random CodeGenerator state dict with fairseq's key names and weight-norm pairs."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"dict.weight": torch.randn(cfg["num_embeddings"], cfg["embedding_dim"],
                                                              generator=gen)}

    def conv(name, c_out, c_in, k, transpose=False):
        g, v = _wn((c_in, c_out, k) if transpose else (c_out, c_in, k), gen)
        sd[f"{name}.weight_g"], sd[f"{name}.weight_v"] = g, v
        sd[f"{name}.bias"] = torch.randn(c_out, generator=gen) * 0.1

    ch = cfg["upsample_initial_channel"]
    conv("conv_pre", ch, cfg["model_in_dim"], 7)
    j = 0
    for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"])):
        c_in, c_out = ch // 2**i, ch // 2 ** (i + 1)
        conv(f"ups.{i}", c_out, c_in, k, transpose=True)
        for rk, dil in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]):
            for n in range(len(dil)):
                conv(f"resblocks.{j}.convs1.{n}", c_out, c_out, rk)
                conv(f"resblocks.{j}.convs2.{n}", c_out, c_out, rk)
            j += 1
    conv("conv_post", 1, ch // 2 ** len(cfg["upsample_rates"]), 7)
    if cfg.get("multispkr") and cfg.get("embedder_params"):  # d-vector speakers: Linear(embedder_dim, E)
        sd["spkr.weight"] = torch.randn(cfg["embedding_dim"], cfg["embedder_dim"], generator=gen) * 0.3
        sd["spkr.bias"] = torch.randn(cfg["embedding_dim"], generator=gen) * 0.1
    elif cfg.get("multispkr"):
        sd["spkr.weight"] = torch.randn(cfg["num_speakers"], cfg["embedding_dim"], generator=gen)
    if cfg.get("f0_quant_num_bin"):
        sd["f0_quant_embed.weight"] = torch.randn(cfg["f0_quant_num_bin"], cfg["embedding_dim"], generator=gen)
    if cfg.get("dur_predictor_params"):
        p = cfg["dur_predictor_params"]
        e, h, k = p["encoder_embed_dim"], p["var_pred_hidden_dim"], p["var_pred_kernel_size"]
        for name, c_in in (("conv1", e), ("conv2", h)):
            sd[f"dur_predictor.{name}.0.weight"] = torch.randn(h, c_in, k, generator=gen) * 0.3
            sd[f"dur_predictor.{name}.0.bias"] = torch.randn(h, generator=gen) * 0.1
        for name in ("ln1", "ln2"):
            sd[f"dur_predictor.{name}.weight"] = torch.rand(h, generator=gen) + 0.5
            sd[f"dur_predictor.{name}.bias"] = torch.randn(h, generator=gen) * 0.1
        sd["dur_predictor.proj.weight"] = torch.randn(1, h, generator=gen) * 0.3
        sd["dur_predictor.proj.bias"] = torch.tensor([1.2])
    return sd


def reference_code_generator(sd, cfg, code, spkr=None, f0=None, dur_prediction=False):
    """textlesslib's CodeGenerator forward for ONE utterance (fairseq's without f0), restated with
    torch.nn.functional on the raw state dict (weight norm applied as w = g v / ||v||): units, then f0 (bins embedded
    by f0_quant_embed when f0_quant_num_bin), then the speaker (an id, or a d-vector through Linear).
    code: int [1, L] -> waveform [1, 1, T]."""
    def w(name):
        if f"{name}.weight_g" in sd:
            g, v = sd[f"{name}.weight_g"], sd[f"{name}.weight_v"]
            return g * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
        return sd[f"{name}.weight"]

    def conv(name, x, dilation=1):
        k = w(name).shape[-1]
        return F.conv1d(x, w(name), sd[f"{name}.bias"], padding=dilation * (k - 1) // 2, dilation=dilation)

    x = F.embedding(code, sd["dict.weight"]).transpose(1, 2)  # [1, E, L]
    if dur_prediction:  # fastspeech2 VariancePredictor: (conv, relu, LN) x 2, proj
        h = x
        for c, ln in (("conv1", "ln1"), ("conv2", "ln2")):
            h = F.relu(conv(f"dur_predictor.{c}.0", h))
            h = F.layer_norm(h.transpose(1, 2), (h.shape[1],), sd[f"dur_predictor.{ln}.weight"],
                             sd[f"dur_predictor.{ln}.bias"]).transpose(1, 2)
        log_dur = F.linear(h.transpose(1, 2), sd["dur_predictor.proj.weight"], sd["dur_predictor.proj.bias"])[..., 0]
        dur = torch.clamp(torch.round(torch.exp(log_dur) - 1).long(), min=1)
        x = torch.repeat_interleave(x, dur.view(-1), dim=2)
    if f0 is not None:
        f = (F.embedding(f0.long().view(1, -1), sd["f0_quant_embed.weight"]).transpose(1, 2)
             if cfg.get("f0_quant_num_bin") else f0.view(1, 1, -1))
        x = torch.cat([x, f.repeat_interleave(x.shape[-1] // f.shape[-1], dim=2)], dim=1)
    if spkr is not None:
        s = (F.linear(spkr.view(1, -1), sd["spkr.weight"], sd["spkr.bias"]).unsqueeze(2) if spkr.dim() == 1
             else F.embedding(spkr.view(1, 1), sd["spkr.weight"]).transpose(1, 2))
        x = torch.cat([x, s.repeat(1, 1, x.shape[-1])], dim=1)
    x = conv("conv_pre", x)
    n = len(cfg["resblock_kernel_sizes"])
    for i, (u, k) in enumerate(zip(cfg["upsample_rates"], cfg["upsample_kernel_sizes"])):
        x = F.conv_transpose1d(F.leaky_relu(x, 0.1), w(f"ups.{i}"), sd[f"ups.{i}.bias"], stride=u,
                               padding=(k - u) // 2)
        total = 0
        for j in range(n):
            r, y = i * n + j, x
            for m, d in enumerate(cfg["resblock_dilation_sizes"][j]):
                t = conv(f"resblocks.{r}.convs1.{m}", F.leaky_relu(y, 0.1), dilation=d)
                y = y + conv(f"resblocks.{r}.convs2.{m}", F.leaky_relu(t, 0.1))
            total = total + y
        x = total / n
    return torch.tanh(conv("conv_post", F.leaky_relu(x)))


def write_fairseq_checkpoint(tmp_path, cfg, sd, name="g_00500000"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": sd}, tmp_path / name)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path / name


DUR = {"dur_predictor_params": {"encoder_embed_dim": 8, "var_pred_hidden_dim": 6, "var_pred_kernel_size": 3,
                                "var_pred_dropout": 0.5}}


@pytest.mark.parametrize("variant", ["plain", "speakers_f0", "duration", "quantized_f0", "dvector_duration"])
def test_fairseq_code_hifigan_matches_reference(tmp_path, variant):
    kw = {"speakers_f0": {"multispkr": True, "num_speakers": 3, "f0": True, "model_in_dim": 8 + 8 + 1},
          "duration": DUR,
          # textlesslib: f0 as bins of a quantiser (f0_quant_embed), with speakers
          "quantized_f0": {"multispkr": True, "num_speakers": 3, "f0": True, "f0_quant_num_bin": 5,
                           "model_in_dim": 8 + 8 + 8},
          # speakers as d-vectors (embedder_params: spkr = Linear(embedder_dim, E)) + duration predictor
          "dvector_duration": {"multispkr": True, "embedder_params": {"x": 1}, "embedder_dim": 4,
                               "model_in_dim": 8 + 8, **DUR}}.get(variant, {})
    cfg = fairseq_config(**kw)
    sd = fairseq_state(cfg)
    ckpt = write_fairseq_checkpoint(tmp_path, cfg, sd)
    assert detect_vocoder_format(ckpt) == detect_vocoder_format(tmp_path) == "fairseq"
    voc = load_vocoder(ckpt)
    dur = variant in ("duration", "dvector_duration")
    assert voc.hop == 6 and voc.deduplicated == dur
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, K, n) for n in (9, 4, 13)]
    spk = {"speakers_f0": [2, 0, 1], "quantized_f0": [1, 2, 0],
           "dvector_duration": [rng.normal(size=4).astype(np.float32) for _ in seqs]}.get(variant)
    f0 = {"speakers_f0": [rng.normal(size=len(s)).astype(np.float32) for s in seqs],
          # bins at half the unit rate for the first utterance (repeated x2), at the unit rate for the others
          "quantized_f0": [rng.integers(0, 5, n) for n in (3, 4, 13)]}.get(variant)
    speakers = np.stack(spk) if variant == "dvector_duration" else spk
    ours = voc.synthesize(seqs, speakers=speakers, f0=f0, batch_size=len(seqs))  # one padded batch
    for i, s in enumerate(seqs):
        with torch.no_grad():
            ref = reference_code_generator(sd, cfg, torch.as_tensor(s)[None],
                                           None if spk is None else torch.as_tensor(spk[i]),
                                           None if f0 is None else torch.as_tensor(f0[i]),
                                           dur_prediction=dur)[0, 0].numpy()
        assert ours[i].shape == ref.shape
        np.testing.assert_allclose(ours[i], ref, atol=2e-5)
    # a converted copy is a plain textless directory that gives the same audio (alone vs in a padded batch: other
    # summation orders, so the tolerance of the reference comparison above, ~50x the 4e-7 seen here)
    copy = UnitVocoder.from_pretrained(voc.save_pretrained(tmp_path / "converted"))
    assert detect_vocoder_format(tmp_path / "converted") == "textless"
    np.testing.assert_allclose(copy.synthesize(seqs[:1], speakers=None if spk is None else speakers[:1],
                                               f0=None if f0 is None else f0[:1])[0], ours[0], atol=2e-5)
    if variant in ("speakers_f0", "quantized_f0"):  # the conditioning order matters: fairseq S2ST's is not this one
        swapped = UnitVocoder(UnitHiFiGAN(dataclasses.replace(copy.config, f0_before_speaker=False)).eval(),
                              deduplicated=False)
        swapped.generator.load_state_dict(copy.generator.state_dict())
        assert np.abs(swapped.synthesize(seqs[:1], speakers=spk[:1], f0=f0[:1])[0] - ours[0]).max() > 1e-3


def test_fairseq_checkpoint_errors(tmp_path):
    cfg = fairseq_config()
    sd = fairseq_state(cfg)
    bad = dict(sd)
    bad["conv_pre.weight_v"] = torch.randn(16, 9, 7)
    ckpt = write_fairseq_checkpoint(tmp_path / "shape", cfg, bad)
    with pytest.raises(FormatError, match="do not fit config.json"):
        load_vocoder(ckpt)
    missing = {k: v for k, v in sd.items() if not k.startswith("conv_post")}
    with pytest.raises(FormatError, match="missing"):
        load_vocoder(write_fairseq_checkpoint(tmp_path / "missing", cfg, missing))
    # a checkpoint that pickles an object is refused without trust_pickle
    (tmp_path / "obj").mkdir()
    torch.save({"generator": sd, "when": __import__("datetime").date(2024, 1, 1)}, tmp_path / "obj" / "g_1")
    (tmp_path / "obj" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="trust_pickle=True"):
        load_vocoder(tmp_path / "obj" / "g_1")
    assert load_vocoder(tmp_path / "obj" / "g_1", trust_pickle=True).hop == 6
    with pytest.raises(TextlessError, match="not a vocoder checkpoint of a known format"):
        load_vocoder(tmp_path)
    # variants with modules textless does not implement are named, not loaded half-way
    styled = write_fairseq_checkpoint(tmp_path / "styled", fairseq_config(multistyle=True, num_styles=4), sd)
    with pytest.raises(FormatError, match=r"config.json: multistyle: textlesslib style-conditioned .* not supported"):
        load_vocoder(styled)
    # quantised f0: bins outside the table are refused
    qcfg = fairseq_config(f0=True, f0_quant_num_bin=5, model_in_dim=16)
    voc = load_vocoder(write_fairseq_checkpoint(tmp_path / "quant", qcfg, fairseq_state(qcfg)))
    with pytest.raises(ValueError, match=r"f0 bins must be in \[0, 5\), got 0..7"):
        voc.synthesize([np.arange(4) % K], f0=[np.array([0, 7, 1, 2])])
    with pytest.raises(ValueError, match="integer bins"):
        voc.synthesize([np.arange(4) % K], f0=[np.array([0.5, 1, 1, 2])])


# ------------------------------------------------------------------------------------------ speechbrain UnitHIFIGAN
SB_HPARAMS = """\
# ############################################################################
# Model: Unit HiFi-GAN (inference hyperparameters, as speechbrain publishes them)
# ############################################################################
sample_rate: 16000
layer: {layers}
duration_predictor: {duration}
vocab_size: {vocab}
embedding_dim: 8
in_channels: {in_channels}
out_channels: 1
var_pred_hidden_dim: 6
var_pred_kernel_size: 3
var_pred_dropout: 0.5
resblock_type: "1"
resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
resblock_kernel_sizes: [3, 5]
upsample_kernel_sizes: [4, 5]
upsample_initial_channel: 16
upsample_factors: [2, 3]
inference_padding: 5
cond_channels: 0
conv_post_bias: True
multi_speaker: {multi}
normalize_speaker_embeddings: {multi}

generator: !new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator
  in_channels: !ref <in_channels>
  out_channels: !ref <out_channels>
  resblock_type: !ref <resblock_type>
  resblock_dilation_sizes: !ref <resblock_dilation_sizes>
  resblock_kernel_sizes: !ref <resblock_kernel_sizes>
  upsample_kernel_sizes: !ref <upsample_kernel_sizes>
  upsample_initial_channel: !ref <upsample_initial_channel>
  upsample_factors: !ref <upsample_factors>
  inference_padding: !ref <inference_padding>
  cond_channels: !ref <cond_channels>
  conv_post_bias: !ref <conv_post_bias>
  vocab_size: !ref <vocab_size>
  embedding_dim: !ref <embedding_dim>
  duration_predictor: !ref <duration_predictor>
  var_pred_hidden_dim: !ref <var_pred_hidden_dim>
  var_pred_kernel_size: !ref <var_pred_kernel_size>
  var_pred_dropout: !ref <var_pred_dropout>
  multi_speaker: !ref <multi_speaker>
  normalize_speaker_embeddings: !ref <normalize_speaker_embeddings>

modules:
  generator: !ref <generator>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
  loadables:
    generator: !ref <generator>
"""


def speechbrain_vocoder(tmp_path, layers=(6,), duration=False, multi=False, spk_dim=5, seed=0):
    """A speechbrain unit HiFi-GAN directory (hyperparams.yaml + generator.ckpt) and the live speechbrain model."""
    from speechbrain.lobes.models.HifiGAN import UnitHifiganGenerator

    vocab = K * len(layers) + 1
    in_channels = 8 + (spk_dim if multi else 0)
    text = SB_HPARAMS.format(layers=list(layers), duration=duration, vocab=vocab, in_channels=in_channels, multi=multi)
    torch.manual_seed(seed)
    sb = UnitHifiganGenerator(in_channels=in_channels, out_channels=1, resblock_type="1",
                              resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], resblock_kernel_sizes=[3, 5],
                              upsample_kernel_sizes=[4, 5], upsample_initial_channel=16, upsample_factors=[2, 3],
                              vocab_size=vocab, embedding_dim=8, duration_predictor=duration, var_pred_hidden_dim=6,
                              var_pred_kernel_size=3, var_pred_dropout=0.5, multi_speaker=multi,
                              normalize_speaker_embeddings=multi).eval()
    with torch.no_grad():
        for name, p in sb.named_parameters():
            p.normal_(0, 0.3 if "original" in name or "weight" in name else 0.1)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "hyperparams.yaml").write_text(text)
    torch.save(sb.state_dict(), tmp_path / "generator.ckpt")
    return sb


def _sb_inference(sb, units, spk=None):
    """speechbrain's UnitHIFIGAN.decode_unit: +1 on every unit, then generator.inference (one utterance)."""
    with torch.no_grad():
        x = torch.as_tensor(units)
        x = (x[:, None] if x.dim() == 1 else x) + 1
        return sb.inference(x[None], spk=None if spk is None else torch.as_tensor(spk)[None])[0, 0].numpy()


@pytest.mark.parametrize("variant", ["plain", "speaker_vectors", "duration"])
def test_speechbrain_unit_hifigan_matches_speechbrain(tmp_path, variant):
    sb = speechbrain_vocoder(tmp_path, duration=variant == "duration", multi=variant == "speaker_vectors")
    assert detect_vocoder_format(tmp_path) == "speechbrain"
    voc = load_vocoder(tmp_path)
    assert voc.config.padding_mode == "reflect" and voc.config.unit_offset == 1 and voc.config.codebook_size == K
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, K, n) for n in (12, 7, 20)]  # reflection needs > 10 samples after x2: 6+ units
    spk = [rng.normal(size=5).astype(np.float32) for _ in seqs] if variant == "speaker_vectors" else None
    ours = voc.synthesize(seqs, speakers=None if spk is None else np.stack(spk), batch_size=len(seqs))  # one batch
    for i, s in enumerate(seqs):
        ref = _sb_inference(sb, s, None if spk is None else spk[i])
        assert ours[i].shape == ref.shape
        np.testing.assert_allclose(ours[i], ref, atol=2e-5)


def test_speechbrain_multi_codebook_attention_pooling(tmp_path):
    """Units of 3 SSL layers per frame (vocab = 3 K + 1, layer j offset by j K), attention-pooled."""
    sb = speechbrain_vocoder(tmp_path, layers=(1, 6, 12))
    voc = load_vocoder(tmp_path)
    assert voc.config.num_codebooks == 3 and voc.config.pooling == "attention"
    rng = np.random.default_rng(2)
    seqs = [rng.integers(0, K, (n, 3)) for n in (7, 11)]
    ours = voc.synthesize(seqs, batch_size=len(seqs))
    for s, o in zip(seqs, ours):
        np.testing.assert_allclose(o, _sb_inference(sb, s + np.arange(3) * K), atol=2e-5)
    with pytest.raises(TextlessError, match=r"\[L, 3\]"):
        voc.synthesize([rng.integers(0, K, 7)])


def test_speechbrain_hparams_are_never_executed(tmp_path):
    speechbrain_vocoder(tmp_path)
    text = (tmp_path / "hyperparams.yaml").read_text()
    marker = tmp_path / "executed"
    # HyperPyYAML would run this; our inert loader must not
    text += f"__boom: !apply:pathlib.Path.touch [!new:pathlib.Path ['{marker}']]\n"
    (tmp_path / "hyperparams.yaml").write_text(text)
    load_vocoder(tmp_path)
    assert not marker.exists()
    (tmp_path / "hyperparams.yaml").write_text(text.replace("UnitHifiganGenerator", "HifiganGenerator"))
    with pytest.raises(FormatError, match="not a !new:speechbrain.lobes.models.HifiGAN.UnitHifiganGenerator"):
        load_vocoder(tmp_path)


# ------------------------------------------------------------------------------------------- reflect padding
def test_reflect_padding_batched_equals_one_by_one():
    from textless.vocoders import UnitHiFiGANConfig

    cfg = UnitHiFiGANConfig(num_embeddings=K, embedding_dim=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
                            upsample_initial_channel=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                            padding_mode="reflect", duration_predictor=True, dur_predictor_layer_norm=False,
                            dur_predictor_params={"encoder_embed_dim": 8, "var_pred_hidden_dim": 8})
    torch.manual_seed(0)
    voc = UnitVocoder.from_config(cfg).eval()
    with torch.no_grad():
        for p in voc.parameters():
            p.normal_(0, 0.3)
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, K, n) for n in (4, 17, 9)]
    batched = voc.synthesize(seqs, deduplicated=True, batch_size=len(seqs))
    for s, b in zip(seqs, batched):
        np.testing.assert_allclose(b, voc.synthesize([s], deduplicated=True)[0], atol=1e-5)
    with pytest.raises(ValueError, match="reflection padding by 3 needs more than 3 frames"):
        voc.synthesize([np.array([1, 2])], [np.array([1, 1])])
    assert math.isfinite(float(np.abs(batched[1]).max()))


def test_warning_free_import(tmp_path):
    """Loading either format emits no warnings (no deprecated weight-norm calls, no pickle warnings)."""
    cfg = fairseq_config()
    ckpt = write_fairseq_checkpoint(tmp_path / "fs", cfg, fairseq_state(cfg))
    speechbrain_vocoder(tmp_path / "sb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_vocoder(ckpt)
        load_vocoder(tmp_path / "sb")


def test_textlesslib_download_layout(tmp_path):
    """textlesslib's CHECKPOINT_MANAGER files: <name> (torch), <name>-config (JSON, no suffix), <name>-speakers (names
    in id order): loaded by file or directory, speaker names usable, the same audio as the config.json layout."""
    cfg = fairseq_config(multispkr=True, num_speakers=4, model_in_dim=16)
    sd = fairseq_state(cfg)
    name = "hubert-base-ls960-kmeans-100-hifigan"
    root = tmp_path / "textlesslib"
    root.mkdir()
    torch.save({"generator": sd}, root / name)
    (root / f"{name}-config").write_text(json.dumps(cfg))
    (root / f"{name}-speakers").write_text("p225\np226\np227\n")
    assert detect_vocoder_format(root / name) == detect_vocoder_format(root) == "fairseq"
    voc, by_dir = load_vocoder(root / name), load_vocoder(root)
    assert voc.config.speakers == by_dir.config.speakers == ["p225", "p226", "p227", "#3"]
    units = [np.arange(7) % K]
    reference = load_vocoder(write_fairseq_checkpoint(tmp_path / "fairseq", cfg, sd)).synthesize(units, speakers=1)[0]
    np.testing.assert_allclose(voc.synthesize(units, speakers="p226")[0], reference, atol=1e-6)
    (root / f"{name}-speakers").write_text("a\nb\nc\nd\ne\n")
    with pytest.raises(FormatError, match="-speakers: 5 speaker names"):
        load_vocoder(root / name)
    bad = dict(sd)
    bad["conv_pre.weight_v"] = torch.randn(16, 9, 7)
    (root / f"{name}-speakers").unlink()
    torch.save({"generator": bad}, root / name)
    with pytest.raises(FormatError, match=f"do not fit {name}-config"):
        load_vocoder(root / name)
