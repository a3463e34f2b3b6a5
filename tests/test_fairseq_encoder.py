"""fairseq HuBERT / wav2vec 2.0 checkpoints -> Hugging Face models, and the restricted unpickler that reads them.

The checkpoints are built in fairseq's real layout by `tests/fairseq_fixtures.py` (fake fairseq modules exist only while
saving). The reference is torchaudio's own fairseq importer (`_convert_state_dict` + `wav2vec2_model`): fairseq's
`extract_features(output_layer=L)` equals torchaudio's `extract_features(num_layers=L)[0][L - 1]` and must equal our
HF model's `hidden_states[L]`, for every layer L, fp32, max abs diff < 1e-4.
"""

import argparse
import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from fairseq_fixtures import (
    CONV_LAYERS,
    HUBERT_CONV,
    VARIANTS,
    WAV2VEC2_CONV,
    torchaudio_reference,
    write_fairseq_checkpoint,
)
from omegaconf import OmegaConf

from textless.errors import FormatError, TextlessError
from textless.tokenizers.encoders.fairseq import (
    FairseqCheckpoint,
    hf_config_from_fairseq,
    hf_state_dict_from_fairseq,
    load_fairseq_model,
    parse_conv_feature_layers,
    read_fairseq_checkpoint,
)
from textless.utils import safe_pickle
from textless.utils.safe_pickle import (
    UnsafePickleError,
    is_stub,
    plain_config,
    resolve_interpolations,
    safe_torch_load,
    stub_class,
    stub_origin,
)

TOL = 1e-4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fairseq")
    paths = {name: write_fairseq_checkpoint(root / f"{name}.pt", name) for name in VARIANTS}
    paths["hubert_base_dict"] = write_fairseq_checkpoint(
        root / "hubert_base_dict.pt", dataclasses.replace(VARIANTS["hubert_base"], cfg_format="dict"))
    return paths


def _waveform(normalize: bool, seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    wav = torch.randn(1, int(16000 * seconds), generator=torch.Generator().manual_seed(seed)) * 0.1
    return F.layer_norm(wav, wav.shape) if normalize else wav  # what fairseq's dataset does when task.normalize


# --------------------------------------------------------------------------------------------------------------------
# Reference parity
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_layer_matches_torchaudio(checkpoints, name):
    variant = VARIANTS[name]
    model, normalize = load_fairseq_model(checkpoints[name])
    assert normalize is variant.normalize
    assert isinstance(model, transformers.HubertModel if variant.kind == "hubert" else transformers.Wav2Vec2Model)
    assert not model.training
    reference = torchaudio_reference(variant)
    wav = _waveform(normalize)
    with torch.no_grad():
        out = model(wav, output_hidden_states=True)
        num_layers = variant.model["encoder_layers"]
        assert len(out.hidden_states) == num_layers + 1
        for layer in range(1, num_layers + 1):
            expected = reference.extract_features(wav, num_layers=layer)[0][layer - 1]
            assert expected.shape == out.hidden_states[layer].shape == (1, 24, 64)
            diff = (out.hidden_states[layer] - expected).abs().max().item()
            assert diff < TOL, f"{name} layer {layer}: max abs diff {diff}"
        # a wrong layer is far off: the comparison has teeth
        assert (out.hidden_states[1] - reference.extract_features(wav, num_layers=2)[0][1]).abs().max() > 0.1


def test_last_layer_and_final_layer_norm_of_pre_ln_models(checkpoints):
    """transformers 5: hidden_states[N] is the raw last layer (= fairseq output_layer=N, no final encoder LayerNorm);
    last_hidden_state has encoder.layer_norm applied (= fairseq's default output of a layer_norm_first model)."""
    model, _ = load_fairseq_model(checkpoints["hubert_large_style"])
    reference = torchaudio_reference(VARIANTS["hubert_large_style"])
    wav = _waveform(True)
    with torch.no_grad():
        out = model(wav, output_hidden_states=True)
        last = reference.extract_features(wav)[0][-1]
        final = reference.encoder.transformer.layer_norm(last)
    assert (out.hidden_states[-1] - last).abs().max() < TOL
    assert (out.last_hidden_state - final).abs().max() < TOL
    assert (out.last_hidden_state - out.hidden_states[-1]).abs().max() > 0.1
    # the encoder: layer=None = the model's final output (with the LayerNorm), an explicit last layer = raw
    from textless.tokenizers.encoders import load_encoder

    # (they normalise the raw waveform themselves, task.normalize; the final LayerNorm divides by the features' std,
    # ~0.3 here, so the raw layers' TOL grows accordingly)
    raw = _waveform(False)[0]
    assert (load_encoder(checkpoints["hubert_large_style"], None).encode(raw) - final[0]).abs().max() < 5 * TOL
    explicit = load_encoder(checkpoints["hubert_large_style"], len(out.hidden_states) - 1)
    assert (explicit.encode(raw) - last[0]).abs().max() < TOL


def test_finetuned_ctc_checkpoint_gives_its_pretrained_encoder(checkpoints):
    ckpt = read_fairseq_checkpoint(checkpoints["wav2vec2_ctc"])
    assert ckpt.finetuned and ckpt.kind == "wav2vec2"
    assert not any(k.startswith("w2v_encoder.") for k in ckpt.state_dict)
    assert {"proj.weight", "proj.bias"} <= set(ckpt.state_dict)  # the CTC head, dropped by the converter
    ctc, _ = load_fairseq_model(checkpoints["wav2vec2_ctc"])
    pre, _ = load_fairseq_model(checkpoints["wav2vec2_base"])
    wav = _waveform(False)
    with torch.no_grad():
        assert torch.equal(ctc(wav).last_hidden_state, pre(wav).last_hidden_state)


# --------------------------------------------------------------------------------------------------------------------
# The real checkpoint format
# --------------------------------------------------------------------------------------------------------------------


def test_checkpoint_has_fairseq_objects_and_loads_without_fairseq(checkpoints):
    assert "fairseq" not in sys.modules
    state = safe_torch_load(checkpoints["hubert_base"])
    assert set(state) >= {"args", "cfg", "model", "optimizer_history", "extra_state", "task_state"}
    cfg = state["cfg"]
    assert OmegaConf.is_config(cfg)  # a real DictConfig ...
    object_type = cfg.model._metadata.object_type  # ... whose metadata names fairseq's dataclass, now a stub
    assert is_stub(object_type) and stub_origin(object_type) == "fairseq.models.hubert.hubert.HubertConfig"
    enum_value = cfg.model._get_node("extractor_mode")._val  # fairseq ChoiceEnum member -> enum-like stub
    assert is_stub(enum_value) and enum_value.value == "default"
    dictionary = state["task_state"]["dictionaries"][0]  # fairseq.data.dictionary.Dictionary, stubbed
    assert stub_origin(dictionary) == "fairseq.data.dictionary.Dictionary"
    assert dictionary.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and len(dictionary.symbols) == 504
    assert state["extra_state"]["previous_training_time"] == 123456.5  # a numpy scalar
    assert "fairseq" not in sys.modules


def test_config_becomes_plain_python(checkpoints):
    ckpt = read_fairseq_checkpoint(checkpoints["hubert_base"])
    assert ckpt.kind == "hubert" and ckpt.normalize is False and not ckpt.finetuned
    assert ckpt.model_cfg["extractor_mode"] == "default" and type(ckpt.model_cfg["extractor_mode"]) is str
    assert ckpt.model_cfg["label_rate"] == 50.0  # "${task.label_rate}" resolved
    assert ckpt.model_cfg["latent_temp"] == [2.0, 0.5, 0.999995]
    assert ckpt.task_cfg["_name"] == "hubert_pretraining" and ckpt.task_cfg["labels"] == ["km"]
    assert all(isinstance(v, torch.Tensor) for v in ckpt.state_dict.values())


def test_dictconfig_dict_and_namespace_checkpoints_agree(checkpoints):
    configs = {}
    for name in ("hubert_base", "hubert_base_dict", "hubert_base_args"):
        ckpt = read_fairseq_checkpoint(checkpoints[name])
        assert ckpt.kind == "hubert" and ckpt.normalize is False
        configs[name] = hf_config_from_fairseq(ckpt).to_dict()
        configs[name].pop("transformers_version", None)
    assert configs["hubert_base"] == configs["hubert_base_dict"] == configs["hubert_base_args"]


def test_hf_config_of_a_large_style_checkpoint(checkpoints):
    ckpt = read_fairseq_checkpoint(checkpoints["hubert_large_style"])
    config = hf_config_from_fairseq(ckpt)
    assert isinstance(config, transformers.HubertConfig) and ckpt.normalize is True
    assert config.feat_extract_norm == "layer" and config.do_stable_layer_norm and config.conv_bias
    assert list(zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True)) == CONV_LAYERS
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        64, 2, 4, 128)
    assert (config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups, config.hidden_act) == (16, 4, "gelu")
    base = hf_config_from_fairseq(read_fairseq_checkpoint(checkpoints["hubert_base"]))
    assert base.feat_extract_norm == "group" and not base.do_stable_layer_norm and not base.conv_bias


def test_heads_are_dropped_and_mask_emb_kept(checkpoints):
    for name, heads in (("hubert_base", ("final_proj", "label_embs_concat")),
                        ("wav2vec2_base", ("final_proj", "quantizer", "project_q"))):
        ckpt = read_fairseq_checkpoint(checkpoints[name])
        assert all(any(k.startswith(h) for k in ckpt.state_dict) for h in heads)
        hf = hf_state_dict_from_fairseq(ckpt)
        assert not any(h in k for k in hf for h in heads)
        assert torch.equal(hf["masked_spec_embed"], ckpt.state_dict["mask_emb"])
        assert torch.equal(hf["encoder.pos_conv_embed.conv.parametrizations.weight.original0"],
                           ckpt.state_dict["encoder.pos_conv.0.weight_g"])


def test_extractor_as_wide_as_the_encoder_gets_an_identity_projection(checkpoints):
    """fairseq has no post_extract_proj when conv dim == encoder_embed_dim; HF always has a projection."""
    ckpt = read_fairseq_checkpoint(checkpoints["hubert_base"])
    wide = [(64, k, s) for _, k, s in CONV_LAYERS]
    ckpt.model_cfg["conv_feature_layers"] = repr(wide)
    sd = {k: v for k, v in ckpt.state_dict.items() if not k.startswith(("feature_extractor", "layer_norm", "post_"))}
    for i, (dim, kernel, _) in enumerate(wide):
        sd[f"feature_extractor.conv_layers.{i}.0.weight"] = torch.randn(dim, 1 if i == 0 else dim, kernel)
    sd.update({"feature_extractor.conv_layers.0.2.weight": torch.ones(64), "layer_norm.weight": torch.ones(64),
               "feature_extractor.conv_layers.0.2.bias": torch.zeros(64), "layer_norm.bias": torch.zeros(64)})
    ckpt = dataclasses.replace(ckpt, state_dict=sd)
    config = hf_config_from_fairseq(ckpt)
    model = transformers.HubertModel(config)
    model.load_state_dict(hf_state_dict_from_fairseq(ckpt, config), strict=True)
    assert torch.equal(model.feature_projection.projection.weight, torch.eye(64))


def test_fused_attention_projection_of_old_checkpoints_is_split(checkpoints):
    ckpt = read_fairseq_checkpoint(checkpoints["hubert_base"])
    expected = hf_state_dict_from_fairseq(ckpt)
    sd = dict(ckpt.state_dict)
    for kind in ("weight", "bias"):
        parts = [sd.pop(f"encoder.layers.1.self_attn.{p}_proj.{kind}") for p in "qkv"]
        sd[f"encoder.layers.1.self_attn.in_proj_{kind}"] = torch.cat(parts)
    fused = hf_state_dict_from_fairseq(dataclasses.replace(ckpt, state_dict=sd))
    assert fused.keys() == expected.keys() and all(torch.equal(fused[k], expected[k]) for k in expected)


# --------------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------------


def _edit_model_cfg(**fields):
    def edit(state):
        state["cfg"]["model"].update(fields)

    return edit


def test_unknown_state_dict_key_is_an_error(tmp_path):
    def edit(state):
        state["model"]["encoder.layers.0.adapter.down.weight"] = torch.zeros(2, 2)

    path = write_fairseq_checkpoint(tmp_path / "x.pt", dataclasses.replace(VARIANTS["hubert_base"], cfg_format="dict"),
                                    edit=edit)
    with pytest.raises(FormatError, match=r"encoder\.layers\.0\.adapter\.down\.weight"):
        load_fairseq_model(path)


def test_state_dict_not_matching_its_config_is_an_error(tmp_path):
    variant = dataclasses.replace(VARIANTS["hubert_base"], cfg_format="dict")
    path = write_fairseq_checkpoint(tmp_path / "x.pt", variant, edit=_edit_model_cfg(encoder_layers=4))
    with pytest.raises(FormatError, match="does not match its own config.*encoder.layers.3"):
        load_fairseq_model(path)


@pytest.mark.parametrize("spec,expected", [
    (HUBERT_CONV, CONV_LAYERS), (WAV2VEC2_CONV, CONV_LAYERS), ("[(512, 10, 5)]", [(512, 10, 5)]),
    ("[(64 * 2, 3, 2)] * 2", [(128, 3, 2)] * 2),
])
def test_conv_feature_layers_are_parsed(spec, expected):
    assert parse_conv_feature_layers(spec) == expected


@pytest.mark.parametrize("spec", [
    "__import__('os')", "__import__('os').system('touch pwned')", "[(512, 10, 5)] * 10**9", "[(1, 1, 1)] * 100000",
    "[x for x in range(3)]", "open('f')", "[(512, 10, 5.0)]", "[(512, 10)]", "[]", "", "[(512, -10, 5)]",
    "[(True, 10, 5)]", "[(512, 10, 5)] + (1, 2, 3)", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2; 1",
])
def test_conv_feature_layers_outside_the_whitelist_are_refused(spec):
    with pytest.raises((ValueError, TypeError)):
        parse_conv_feature_layers(spec)


def test_malicious_conv_feature_layers_in_a_checkpoint(tmp_path):
    variant = dataclasses.replace(VARIANTS["hubert_base"], cfg_format="dict")
    marker = tmp_path / "pwned"
    path = write_fairseq_checkpoint(tmp_path / "x.pt", variant, edit=_edit_model_cfg(
        conv_feature_layers=f"__import__('os').system('touch {marker}')"))
    with pytest.raises(FormatError, match="conv_feature_layers.*not allowed"):
        load_fairseq_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("field,value,match", [("layer_type", "conformer", "layer_type"),
                                               ("extractor_mode", "fancy", "extractor_mode"),
                                               ("activation_fn", "softplus", "activation_fn")])
def test_unsupported_architectures_are_errors(tmp_path, field, value, match):
    variant = dataclasses.replace(VARIANTS["hubert_base"], cfg_format="dict")
    path = write_fairseq_checkpoint(tmp_path / "x.pt", variant, edit=_edit_model_cfg(**{field: value}))
    with pytest.raises(FormatError, match=match):
        load_fairseq_model(path)


def test_non_fairseq_files_are_format_errors(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, bare)
    with pytest.raises(FormatError, match="expected a fairseq checkpoint.*'cfg'.*bare state dict"):
        read_fairseq_checkpoint(bare)
    other = tmp_path / "other.pt"
    torch.save({"generator": {"w": torch.zeros(1)}, "config": {}}, other)
    with pytest.raises(FormatError, match="got keys"):
        read_fairseq_checkpoint(other)
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(FormatError, match="not a readable PyTorch checkpoint"):
        read_fairseq_checkpoint(text)


def test_finetuned_checkpoint_without_pretraining_config(tmp_path):
    variant = dataclasses.replace(VARIANTS["wav2vec2_ctc"], cfg_format="dict")
    path = write_fairseq_checkpoint(tmp_path / "x.pt", variant, edit=_edit_model_cfg(w2v_args=None))
    with pytest.raises(FormatError, match="w2v_path='/checkpoint/wav2vec_small.pt'"):
        read_fairseq_checkpoint(path)


# --------------------------------------------------------------------------------------------------------------------
# Restricted unpickler
# --------------------------------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": _Evil(os.system, f"echo pwned > {marker}")}, path)
    with pytest.raises(UnsafePickleError, match=r"'posix\.system'|'os\.system'") as info:
        read_fairseq_checkpoint(path)
    assert isinstance(info.value, TextlessError) and str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("func,args", [
    (eval, ("1 + 1",)), (exec, ("x = 1",)), (getattr, ("s", "upper")), (subprocess.Popen, (["true"],)),
    (os.system, ("true",)), (__import__, ("os",)), (pickle.loads, (b"N.",)), (torch.load, ("x",)),
])
def test_non_allowlisted_callables_are_refused(func, args):
    data = pickle.dumps(_Evil(func, *args), protocol=2)
    with pytest.raises(UnsafePickleError, match=func.__name__):
        safe_pickle.loads(data)


def test_state_of_classes_and_functions_cannot_be_set():
    """BUILD on an allowed class / function would monkey-patch this process (class pollution): refused."""
    pollute_class = b"\x80\x02cargparse\nNamespace\nN}X\x03\x00\x00\x00fooK\x01s\x86b."
    pollute_function = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x03\x00\x00\x00fooK\x01s\x86b."
    for data, target in ((pollute_class, argparse.Namespace), (pollute_function, torch._utils._rebuild_tensor_v2)):
        with pytest.raises(UnsafePickleError, match="not of classes or functions"):
            safe_pickle.loads(data)
        assert not hasattr(target, "foo")


class _FairseqLike(dict):
    pass


@pytest.mark.parametrize("protocol", [0, 1, 2, 4])
def test_unknown_objects_of_any_protocol_become_stubs(protocol, monkeypatch):
    module = type(sys)("fairseq_fake_criterions")
    _FairseqLike.__module__, _FairseqLike.__qualname__ = module.__name__, "Meter"
    module.Meter = _FairseqLike
    monkeypatch.setitem(sys.modules, module.__name__, module)
    obj = _FairseqLike(a=1)
    obj.avg = 0.5
    data = pickle.dumps({"meter": obj}, protocol=protocol)
    monkeypatch.delitem(sys.modules, module.__name__)
    meter = safe_pickle.loads(data)["meter"]
    assert stub_origin(meter) == "fairseq_fake_criterions.Meter"
    # protocol >= 2: NEWOBJ + SETITEMS; protocol 0/1: copyreg._reconstructor(cls, dict, items); then BUILD(__dict__)
    items = meter._stub_items if protocol >= 2 else meter._stub_args[0]
    assert meter.avg == 0.5 and items == {"a": 1}


@pytest.mark.parametrize("protocol", [0, 1, 2, 4, 5])
def test_ordinary_values_round_trip(protocol):
    values = {"ns": argparse.Namespace(a=1, b=[1, 2]), "arr": np.arange(6).reshape(2, 3), "scalar": np.float32(1.5),
              "dtype": np.dtype("float64"), "none_type": type(None), "bytes": b"xy", "set": {1, 2}, "complex": 1 + 2j,
              "cfg": OmegaConf.create({"a": {"b": [1, "${a.c}"], "c": 2}}), "path": Path("/x/y")}
    out = safe_pickle.loads(pickle.dumps(values, protocol=protocol))
    assert out["ns"] == values["ns"] and np.array_equal(out["arr"], values["arr"]) and out["scalar"] == 1.5
    assert out["dtype"] == values["dtype"] and out["none_type"] is type(None) and out["path"] == Path("/x/y")
    assert (out["bytes"], out["set"], out["complex"]) == (b"xy", {1, 2}, 1 + 2j)
    assert plain_config(out["cfg"]) == {"a": {"b": [1, 2], "c": 2}}


def test_unknown_classes_become_inert_stubs():
    cls = stub_class("fairseq.models.wav2vec.wav2vec2", "Wav2Vec2Model")
    assert cls is stub_class("fairseq.models.wav2vec.wav2vec2", "Wav2Vec2Model")
    obj = cls(1, "a", key=2)
    obj.__setstate__({"dim": 768})
    assert obj.dim == 768 and obj._stub_args == (1, "a") and stub_origin(obj).endswith("wav2vec2.Wav2Vec2Model")
    with pytest.raises(TypeError, match="cannot be pickled again"):
        pickle.dumps(obj)
    # a lower-case global in an unknown module is a function: refused, not stubbed
    with pytest.raises(UnsafePickleError, match="fairseq.utils.import_user_module"):
        safe_pickle.RestrictedUnpickler(__import__("io").BytesIO(b"")).find_class("fairseq.utils", "import_user_module")


def test_plain_config_conversion():
    cfg = OmegaConf.create({"task": {"rate": 50, "data": "???"}, "model": {"rate": "${task.rate}", "x": "${nope.y}"}})
    plain = plain_config(pickle.loads(pickle.dumps(cfg)))
    assert plain == {"task": {"rate": 50, "data": None}, "model": {"rate": 50, "x": "${nope.y}"}}
    ns = argparse.Namespace(arch="hubert", inner=argparse.Namespace(normalize=True))
    assert plain_config(ns) == {"arch": "hubert", "inner": {"normalize": True}}
    assert resolve_interpolations({"a": "${a}"}) == {"a": "${a}"}  # a cycle is left alone


def test_fairseq_checkpoint_dataclass_defaults():
    ckpt = FairseqCheckpoint(kind="hubert", model_cfg={"conv_pos": None}, task_cfg={}, state_dict={}, normalize=False)
    assert ckpt.get("conv_pos") == 128 and ckpt.get("extractor_mode") == "default"


def test_load_encoder_dispatches_fairseq_checkpoints(checkpoints):
    """Integration with the encoder registry: `load_encoder(x.pt, layer)` -> SSLEncoder over our HF model."""
    from textless.tokenizers.encoders import ENCODER_LOADERS, load_encoder
    from textless.tokenizers.encoders.registry import load_fairseq_encoder

    assert ENCODER_LOADERS["fairseq"] is load_fairseq_encoder
    encoder = load_encoder(checkpoints["hubert_large_style"], 2)
    assert encoder.normalize is True and encoder.layer == 2 and encoder.dim == 64
    wav = _waveform(False)
    model, _ = load_fairseq_model(checkpoints["hubert_large_style"])
    with torch.no_grad():
        features, lengths = encoder(wav, torch.tensor([wav.shape[1]]))
        expected = model(F.layer_norm(wav, wav.shape), output_hidden_states=True).hidden_states[2]
    assert lengths.tolist() == [24] and (features - expected).abs().max() < TOL
