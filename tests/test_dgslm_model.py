"""dGSLM model: shared towers, cross-channel causality, streaming == full forward, persistence; run targets."""

import json

import numpy as np
import pytest
import torch

from textless.data.identity import UnitIdentity, UnitMismatchError
from textless.dialogue.dgslm import DGSLM, DGSLMConfig, preset_config
from textless.dialogue.dgslm.model import sinusoidal_table
from textless.dialogue.dgslm.targets import collate, losses, run_targets, window
from textless.errors import ConfigError, FormatError
from textless.streaming import StreamingError

K = 20


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DGSLM(preset_config("tiny", K), tokenizer={"name": "tok"}, frame_rate=50.0).eval()


def _inputs(model, b=3, t=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, K, (b, 2, t), generator=g)
    x[:, :, 0] = model.vocab.bos
    return x


def test_swapping_the_channels_swaps_the_outputs(model):
    x = _inputs(model)
    out, swapped = model(x), model(x.flip(1))
    assert torch.equal(swapped.logits.flip(1), out.logits) and torch.equal(swapped.durations.flip(1), out.durations)


def test_cross_attention_sees_the_other_channel_up_to_the_current_step_only(model):
    x = _inputs(model)
    y = x.clone()
    y[:, 1, 7:] = (y[:, 1, 7:] + 1) % K  # change channel B from step 7 on
    a, b = model(x), model(y)
    assert torch.equal(a.logits[:, 0, :7], b.logits[:, 0, :7]) and torch.equal(a.durations[:, 0, :7],
                                                                                b.durations[:, 0, :7])
    assert not torch.allclose(a.logits[:, 0, 7], b.logits[:, 0, 7])  # step 7 of A sees step 7 of B


def test_without_cross_layers_the_towers_are_independent():
    torch.manual_seed(0)
    m = DGSLM(preset_config("tiny", K, cross_layers=0)).eval()
    x = _inputs(m)
    y = x.clone()
    y[:, 1] = (y[:, 1] + 3) % K
    y[:, :, 0] = m.vocab.bos
    assert torch.equal(m(x).logits[:, 0], m(y).logits[:, 0])


def test_streaming_steps_equal_the_full_forward(model):
    x = _inputs(model)
    full = model(x)
    with model.streaming(3):
        steps = [model.step(x[:, :, t]) for t in range(x.shape[2])]
    logits = torch.stack([s.logits for s in steps], dim=2)
    durations = torch.stack([s.durations for s in steps], dim=2)
    # float32 sums in another order (one key at a time vs all at once): |logits| ~ 5, 24-way sums of 32-d products
    torch.testing.assert_close(logits, full.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(durations, full.durations, atol=1e-5, rtol=1e-5)


def test_streaming_pause_and_reset(model):
    x = _inputs(model, b=2)
    with model.streaming(2):
        model.step(x[:, :, 0])
        model.set_exec_mask(torch.tensor([True, False]))
        model.step(x[:, :, 1])                       # stream 1 paused: this frame never happened for it
        model.set_exec_mask(torch.tensor([True, True]))
        out = model.step(x[:, :, 2])
    ref1 = model(x[1:, :, [0, 2]])
    torch.testing.assert_close(out.logits[1], ref1.logits[0, :, 1], atol=1e-5, rtol=1e-5)
    with model.streaming(2):
        model.step(x[:, :, 0])
        model.reset_streaming(torch.tensor([False, True]))
        again = model.step(x[:, :, 0])
    torch.testing.assert_close(again.logits[1], model(x[1:, :, :1]).logits[0, :, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(StreamingError, match=r"shape \[2, 2\]"), model.streaming(2):
        model.step(x[:, 0, 0])


def test_eager_attention_equals_sdpa(model):
    x = _inputs(model)
    eager = DGSLM(DGSLMConfig(**{**model.config.to_dict(), "attn_implementation": "eager"})).eval()
    eager.load_state_dict(model.state_dict())
    torch.testing.assert_close(eager(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format"] == "textless.dialogue_lm" and meta["config"]["cross_layers"] == 2
    back = DGSLM.from_pretrained(tmp_path / "m")
    x = _inputs(model)
    assert torch.equal(back(x).logits, model(x).logits)
    assert back.units == UnitIdentity(tokenizer={"name": "tok"}, vocab_size=K, frame_rate=50.0, deduplicated=False,
                                      bpe=False)
    with pytest.raises(UnitMismatchError):
        back.check_units(UnitIdentity(tokenizer={"name": "other"}, vocab_size=K, frame_rate=50.0,
                                      deduplicated=False, bpe=False), "data")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(FormatError, match="model.safetensors"):
        DGSLM.from_pretrained(tmp_path / "m")


def test_config_errors():
    with pytest.raises(ConfigError, match="attn_implementation must be one of"):
        DGSLMConfig(attn_implementation="flash_attention_2")
    with pytest.raises(ConfigError, match="unknown dGSLM preset"):
        preset_config("huge", 10)


def test_sinusoidal_table_is_fairseqs():
    table = sinusoidal_table(6, 4, padding_idx=1)
    # half = 2, step = log(10000) / 1: frequencies 1 and 1e-4; row p = [sin p, sin 1e-4 p, cos p, cos 1e-4 p]
    p = 3.0
    assert np.allclose(table[3].numpy(), [np.sin(p), np.sin(1e-4 * p), np.cos(p), np.cos(1e-4 * p)], atol=1e-6)
    assert torch.equal(table[1], torch.zeros(4))


# ------------------------------------------------------------------------------------------------------- targets
def test_run_targets_extend_the_last_run_and_cap_at_256():
    runs = run_targets(np.array([5, 5, 7, 7, 7, 2]), np.array([2, 2, 2, 9]))
    assert runs.starts.tolist() == [0, 2, 5] and runs.units.tolist() == [5, 7, 2]
    assert runs.durations.tolist() == [2, 3, 4]                 # the last run continues 3 frames after the window
    assert run_targets(np.array([4] * 300)).durations.tolist() == [256]
    assert run_targets(np.array([4] * 10), np.array([4] * 300)).durations.tolist() == [256]


def test_window_inputs_are_the_previous_frames():
    conv = np.array([[1, 1, 2, 3, 3, 3, 4], [5, 6, 6, 6, 6, 7, 7]])
    inputs, target, following = window(conv, 2, 3, start_token=99)
    assert inputs.tolist() == [[1, 2, 3], [6, 6, 6]] and target.tolist() == [[2, 3, 3], [6, 6, 6]]
    assert following.tolist() == [[3, 4], [7, 7]]
    assert window(conv, 0, 2, start_token=99)[0].tolist() == [[99, 1], [99, 5]]


@pytest.mark.parametrize(("delayed", "at"), [(True, [1, 3, 4, 6, 7]), (False, [0, 2, 3, 5, 6])])
def test_collate_places_edges_and_delayed_durations(model, delayed, at):
    conv = np.array([[1, 1, 2, 3, 3, 3, 4], [5, 6, 6, 6, 6, 7, 7]])
    batch = collate([window(conv, 0, 5, model.vocab.bos)], model.vocab, delayed=delayed)
    assert batch.edge_index.tolist() == [0, 2, 3, 5, 6] and batch.edge_unit.tolist() == [1, 2, 3, 5, 6]
    assert batch.dur_index.tolist() == at
    assert batch.dur_target.tolist() == [2, 1, 3, 1, 4]          # unit 3 runs on after the window (3 frames)
    # the loss: channel means of the NLL at the edges and of |duration prediction - target|, by hand
    out = model(batch.input_ids)
    loss, metrics = losses(out, batch)
    logp = out.logits.flatten(0, 2).log_softmax(-1)
    nll = -logp[batch.edge_index, batch.edge_unit]
    l1 = (out.durations.flatten()[batch.dur_index] - batch.dur_target).abs()
    by_hand = (nll[:3].mean() + nll[3:].mean()) / 2 + (l1[:3].mean() + l1[3:].mean()) / 2
    torch.testing.assert_close(loss, by_hand)
    assert metrics["edges"] == 5 and metrics["durations"] == 5


def test_a_run_whose_delayed_step_falls_outside_the_window_has_no_duration_target(model):
    conv = np.array([[1, 2], [3, 3]])
    batch = collate([window(conv, 0, 2, model.vocab.bos)], model.vocab, delayed=True)
    assert batch.edge_unit.tolist() == [1, 2, 3] and batch.dur_index.tolist() == [1, 3]  # unit 2 starts at the end
