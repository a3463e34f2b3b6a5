"""ListenSpeakLM: where each fusion puts the listening channel, zero features == the plain LM, the IRQ token,
streaming step == forward, persistence.

Tolerance of step vs forward: as tests/test_streaming.py (the same float32 arithmetic in another reduction order:
rounding only, <= ~2e-5 on logits of a few units; ATOL = RTOL = 1e-4)."""

import pytest
import torch

from textless.dialogue.lslm import FUSIONS, FusionConfig, ListenSpeakLM, listen_positions, with_irq
from textless.dialogue.lslm.model import decoder_layers
from textless.errors import ConfigError
from textless.lm import UnitLM, UnitVocab
from textless.streaming import StreamingError

ATOL = RTOL = 1e-4
D = 6          # listening feature size
K = 20         # units


def _lm(seed=0, preset="tiny", num_units=K):
    torch.manual_seed(seed)
    return UnitLM.from_scratch(preset, UnitVocab.default(num_units), frame_rate=50.0).eval()


def _model(fusion, seed=0, preset="tiny", random_projection=True):
    model = ListenSpeakLM(with_irq(_lm(seed, preset)), FusionConfig(fusion=fusion, listen_dim=D, adapter_dim=8))
    if random_projection:  # the last layer starts at zero (a fresh model is the plain LM): make it listen
        torch.manual_seed(seed + 1)
        for p in model.projection.parameters():
            torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def _inputs(model, b=2, length=9, seed=3):
    g = torch.Generator().manual_seed(seed)
    lo, hi = model.vocab.unit_range
    ids = torch.randint(lo, hi, (b, length), generator=g)
    ids[:, 0] = model.vocab.bos_id
    return ids, torch.randn(b, length, D, generator=g)


def _block_io(model):
    """Record every block's input and output hidden states (hooks registered after the fusion's)."""
    record = {"in": [], "out": []}
    for layer in decoder_layers(model.lm.model):
        layer.register_forward_pre_hook(lambda m, a, k: record["in"].append((a[0] if a else k["hidden_states"])
                                                                              .clone()), with_kwargs=True)
        layer.register_forward_hook(lambda m, a, o: record["out"].append((o[0] if isinstance(o, tuple) else o)
                                                                         .clone()))
    return record


@pytest.mark.parametrize("fusion", FUSIONS)
def test_zero_listening_features_are_the_plain_lm(fusion):
    model = _model(fusion)
    ids, listen = _inputs(model)
    plain = model.lm.model(input_ids=ids).logits
    assert torch.equal(model(ids, torch.zeros_like(listen)), plain)
    assert torch.equal(model(ids), plain)
    assert not torch.allclose(model(ids, listen), plain)
    fresh = _model(fusion, random_projection=False)  # zero-initialised last layer: the plain LM until trained
    assert torch.equal(fresh(ids, listen), fresh.lm.model(input_ids=ids).logits)


def test_early_and_sum_fusion_change_only_the_inputs():
    for fusion in ("early", "sum"):
        model = _model(fusion)
        ids, listen = _inputs(model)
        embeds = model.lm.model.get_input_embeddings()(ids) + model.listen_term(listen)
        assert torch.equal(model(ids, listen), model.lm.model(inputs_embeds=embeds).logits)
        record = _block_io(model)
        model(ids, listen)
        blocks = len(record["out"])
        for k in range(1, blocks):  # no block but the first reads anything new
            assert torch.equal(record["in"][k], record["out"][k - 1])


def test_middle_fusion_adds_to_every_block_input():
    model = _model("middle")
    ids, listen = _inputs(model)
    term = model.listen_term(listen)
    record = _block_io(model)
    logits = model(ids, listen)
    embeds = model.lm.model.get_input_embeddings()(ids)
    assert torch.equal(record["in"][0], embeds + term)
    for k in range(1, len(record["out"])):
        assert torch.equal(record["in"][k], record["out"][k - 1] + term)
    assert not torch.allclose(logits, model.lm.model(input_ids=ids).logits)
    assert model._term is None  # nothing left behind for the next (plain) call
    assert torch.equal(model(ids), model.lm.model(input_ids=ids).logits)


def test_late_fusion_adds_only_to_the_logits():
    model = _model("late")
    ids, listen = _inputs(model)
    record = _block_io(model)
    fused = model(ids, listen)
    fused_blocks = [x.clone() for x in record["in"] + record["out"]]
    record["in"].clear(), record["out"].clear()
    plain = model.lm.model(input_ids=ids).logits
    assert all(torch.equal(a, b) for a, b in zip(fused_blocks, record["in"] + record["out"], strict=True))
    assert torch.equal(fused, plain + model.listen_term(listen).float())


@pytest.mark.parametrize("preset", ["tiny", "starter"])  # Llama, and OPT (learned positions, pre-LN)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_step_equals_forward(fusion, preset):
    model = _model(fusion, preset=preset)
    ids, listen = _inputs(model, b=2, length=10)
    full = model(ids, listen)
    with model.streaming(2):
        steps = [model.step(ids[:, t], listen[:, t]) for t in range(4)]
        model.set_exec_mask(torch.tensor([True, False]))       # stream 1 pauses one step: its state is kept
        steps.append(model.step(ids[:, 4], listen[:, 4]))
        model.set_exec_mask(torch.tensor([False, True]))
        late = model.step(ids[:, 4], listen[:, 4])             # ... and catches up while stream 0 waits
        model.set_exec_mask(torch.tensor([True, True]))
        steps[-1][1] = late[1]
        steps += [model.step(ids[:, t], listen[:, t]) for t in range(5, 10)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=ATOL, rtol=RTOL)
    with pytest.raises(StreamingError, match="needs streaming"):
        model.step(ids[:, 0], listen[:, 0])


def test_irq_token_keeps_the_lm():
    lm = _lm()
    before = lm.model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    size = lm.vocab.size
    with_irq(lm)
    irq = lm.vocab.specials["irq"]
    assert irq == lm.vocab.offset + K and lm.vocab.size == size  # a free id of the rounded-up table: no resize
    after = lm.model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert torch.equal(before, after) and with_irq(lm) is lm and lm.vocab.specials["irq"] == irq
    full = _lm(num_units=5)                                    # 3 specials + 5 units = 8 = the whole table
    old = full.model.get_input_embeddings().weight.clone()
    with_irq(full)
    assert full.vocab.specials["irq"] == 8 and full.vocab.size == 16
    new = full.model.get_input_embeddings().weight
    assert new.shape[0] == 16 and torch.equal(new[:8], old)
    assert full.model(input_ids=torch.tensor([[1, 8, 3]])).logits.shape == (1, 3, 16)
    with pytest.raises(ConfigError, match="with_irq"):
        ListenSpeakLM(_lm(), FusionConfig(listen_dim=D))


def test_listen_positions_reads_the_frame_before():
    frames = torch.arange(1, 4, dtype=torch.float32).reshape(1, 3, 1)   # frames 0, 1, 2 hold 1, 2, 3
    assert listen_positions(frames, 5)[0, :, 0].tolist() == [0, 1, 2, 3, 0]
    assert listen_positions(frames, 2)[0, :, 0].tolist() == [0, 1]


def test_config_errors_and_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="fusion must be one of"):
        FusionConfig(fusion="cross", listen_dim=D)
    with pytest.raises(ConfigError, match="listen_dim"):
        FusionConfig()
    assert FusionConfig(fusion="sum", listen_dim=D).projection == "adapter"
    model = _model("middle")
    model.config.listening = {"encoder": "mfcc", "frame_rate": 50.0}
    ids, listen = _inputs(model)
    loaded = ListenSpeakLM.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config == model.config and loaded.irq_id == model.irq_id
    assert torch.equal(loaded(ids, listen), model(ids, listen))
    with pytest.raises(ValueError, match="listening features have 5 dims"):
        model(ids, listen[..., :5])


def test_input_scale_divides_by_the_training_rms_and_keeps_zero_at_zero(tmp_path):
    model = _model("early")
    ids, listen = _inputs(model)
    features = torch.tensor([[3.0, 0.0, -4.0, 1.0, 2.0, 0.5], [4.0, 0.0, 3.0, -1.0, 2.0, 0.5]])
    model.projection.scale_to(features)
    rms = torch.tensor([12.5, 0.0, 12.5, 1.0, 4.0, 0.25]).sqrt()
    expected = torch.where(rms > 0, 1 / rms.clamp_min(1e-8), torch.ones(6))  # an all-zero dimension keeps 1
    torch.testing.assert_close(model.projection.input_scale, expected)
    assert torch.equal(model(ids, torch.zeros_like(listen)), model.lm.model(input_ids=ids).logits)
    scaled = model.projection.net(listen * expected)
    torch.testing.assert_close(model.listen_term(listen), scaled.to(model.lm.dtype), rtol=0, atol=0)
    loaded = ListenSpeakLM.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert torch.equal(loaded.projection.input_scale, model.projection.input_scale)
