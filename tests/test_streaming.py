"""The streaming protocol (`textless.streaming`) and `UnitLM.step` (`textless.lm.streaming`).

Tolerance. Step-wise and full-forward logits run the same float32 arithmetic in another reduction order (attention
over a longer, masked key axis; batch 3 vs 1 changes matmul blocking and vector widths), so they differ by rounding
only: a few ulps per reduction (float32 ulp at logits of 1-10 is 1e-7..1e-6), summed over reductions of up to a
few dozen terms and a small amplification per layer through 2 layers - about 1e-6 to 1e-5 (measured: <= 2e-5 over
40 steps, logits up to 7). ATOL = RTOL = 1e-4 (allowed error 1e-4 + 1e-4 * |logit|) leave a margin of 5-50x for other
CPUs (AVX2 / AVX-512 / NEON) and thread counts, whatever the load, while any real mistake (a wrong position, a slot of
another life or stream leaking into the attention) moves logits by O(1) (measured 1.9-5.8) with these peaky random
weights (init std 0.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, OPTConfig, Qwen2Config

from textless.errors import TextlessError
from textless.lm import SamplingConfig, UnitLM, UnitVocab, generate_units
from textless.lm.streaming import UnitLMStreamingState, prefill, sample_continuation, sample_streaming
from textless.streaming import StreamingContainer, StreamingError, StreamingModule, StreamingState

ATOL = RTOL = 1e-4
NUM_UNITS = 21  # + pad/bos/eos/sep = 25 ids -> size 32
PROMPTS = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8, 9, 10]), np.array([11]), np.array([12, 13, 14, 15, 16])]


def _lm(arch: str = "llama", *, seed: int = 0, max_positions: int = 64, attn: str | None = None,
        **overrides: object) -> UnitLM:
    """A tiny random LM (hidden 32, 2 layers, float32) with peaky distributions (init std 0.3)."""
    torch.manual_seed(seed)
    vocab = UnitVocab.default(NUM_UNITS, extra_specials=("sep",))
    common = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "max_position_embeddings": max_positions}
    if arch == "opt":
        config = OPTConfig(ffn_dim=64, init_std=0.3, dropout=0.0, **common)
    elif arch == "qwen2":
        config = Qwen2Config(intermediate_size=64, num_key_value_heads=2, initializer_range=0.3, **common)
    else:
        config = LlamaConfig(intermediate_size=64, num_key_value_heads=2, initializer_range=0.3, **common)
    for key, value in overrides.items():
        setattr(config, key, value)
    return UnitLM.from_scratch(config, vocab, attn_implementation=attn).eval()


ARCHS = {"llama": {}, "llama-eager": {"attn": "eager"}, "opt": {"arch": "opt"}, "qwen2": {"arch": "qwen2"}}


@pytest.fixture(scope="module", params=list(ARCHS))
def any_lm(request) -> UnitLM:
    return _lm(**ARCHS[request.param])


@pytest.fixture(scope="module")
def lm() -> UnitLM:
    return _lm()


def _full(lm: UnitLM, seq: list[int]) -> torch.Tensor:
    """Full forward pass over one sequence: logits float32 [T, V]."""
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor(seq)[None]).logits[0].float()


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)


# ------------------------------------------------------------------------------------------------ step == full forward
def test_step_matches_full_forward_with_staggered_paused_and_reset_streams(any_lm):
    _check_staggered_paused_reset(any_lm)


def test_opt_positions_derived_from_the_mask_are_the_same(monkeypatch):
    """transformers versions whose OPT takes no position_ids derive them as cumsum(mask) - 1: with the timeline mask
    (this stream's valid slots + the new one) that is the stream's own position, so the logits do not change."""
    lm = _lm("opt")
    forward = lm.model.forward
    monkeypatch.setattr(lm.model, "forward", lambda *a, position_ids=None, **kw: forward(*a, **kw))
    _check_staggered_paused_reset(lm)


def _check_staggered_paused_reset(lm: UnitLM) -> None:
    """Stream 0 runs from step 0 and is reset before step 6; stream 1 starts at step 2; stream 2 is paused for
    steps 4-6. Running streams must get the full-forward logits of their current life at each position; paused
    streams get the logits their token would give (full forward of history + token), and keep their state."""
    steps = 12
    running = torch.ones(steps, 3, dtype=torch.bool)
    running[:2, 1] = False
    running[4:7, 2] = False
    g = torch.Generator().manual_seed(1)
    fed = torch.randint(0, lm.vocab.size, (steps, 3), generator=g)
    lives: list[list[tuple[list[int], list[torch.Tensor]]]] = [[([], [])] for _ in range(3)]  # (tokens, logits)
    with lm.streaming(3):
        for s in range(steps):
            if s == 6:
                lm.reset_streaming(torch.tensor([True, False, False]))
                lives[0].append(([], []))
            lm.set_exec_mask(running[s])
            logits = lm.step(fed[s])
            assert logits.dtype == torch.float32 and logits.shape == (3, lm.vocab.size)
            for b in range(3):
                tokens, got = lives[b][-1]
                if running[s, b]:
                    tokens.append(int(fed[s, b]))
                    got.append(logits[b])
                else:
                    _close(logits[b], _full(lm, [*tokens, int(fed[s, b])])[-1])
            state = lm._streaming_state
            assert torch.equal(state.valid.sum(dim=1), state.positions)  # a stream's slots = its positions
        assert isinstance(state, UnitLMStreamingState)
        assert state.positions.tolist() == [6, 10, 9] and state.num_slots == steps
    assert not lm.is_streaming
    assert [len(life[0]) for lives_b in lives for life in lives_b] == [6, 6, 10, 9]
    for lives_b in lives:
        for tokens, got in lives_b:
            _close(torch.stack(got), _full(lm, tokens))  # logits[0, t] for every t of the life


def test_compaction_drops_dead_slots_and_keeps_logits(lm):
    g = torch.Generator().manual_seed(2)
    fed = torch.randint(0, lm.vocab.size, (8, 2), generator=g)
    with lm.streaming(2):
        lm.set_exec_mask(torch.tensor([True, False]))  # stream 1 not started yet
        for s in range(4):
            lm.step(fed[s])
        lm.reset_streaming(torch.tensor([True, True]))  # stream 0's first life dies: slots 0-3 are dead for all
        assert lm.compact_streaming() == 4
        assert lm.compact_streaming() == 0
        state = lm._streaming_state
        assert state.num_slots == 0 and state.cache.get_seq_length() == 0
        got = torch.stack([lm.step(fed[s]) for s in range(4, 8)], dim=1)  # [2, 4, V]
        assert state.num_slots == 4 and state.cache.get_seq_length() == 4
    for b in range(2):
        _close(got[b], _full(lm, fed[4:, b].tolist()))


def test_positions_are_bounded_per_stream():
    lm = _lm(max_positions=4)
    with lm.streaming(2):
        for _ in range(4):
            lm.step(torch.tensor([5, 6]))
        state = lm._streaming_state
        with pytest.raises(StreamingError, match="stream 0 has used all 4 positions"):
            lm.step(torch.tensor([5, 6]))
        assert state.positions.tolist() == [4, 4] and state.num_slots == 4  # nothing changed
        lm.reset_streaming(torch.tensor([False, True]))
        lm.set_exec_mask(torch.tensor([False, True]))  # a paused full stream does not block the others
        lm.step(torch.tensor([5, 6]))
        assert state.positions.tolist() == [4, 1]
        with pytest.raises(StreamingError, match="outside the vocabulary"):
            lm.step(torch.tensor([5, lm.vocab.size]))
    with pytest.raises(TextlessError, match="exceed the model's 4 positions"):
        sample_streaming(lm, [np.array([1, 2])], SamplingConfig(temperature=0, max_new_tokens=2))


def test_sliding_window_models_are_refused():
    lm = _lm("qwen2", use_sliding_window=True, sliding_window=4, layer_types=["sliding_attention"] * 2)
    with pytest.raises(StreamingError, match="full attention"), lm.streaming(1):
        pass
    assert not lm.is_streaming


# ------------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_greedy_streaming_sampling_equals_generate_units(arch):
    lm = _lm(arch)
    for config in (SamplingConfig(temperature=0, max_new_tokens=12, num_samples=2),
                   SamplingConfig(temperature=0, max_new_tokens=10, min_new_tokens=3, prompt_multiple=2.0),
                   SamplingConfig(temperature=0, max_new_tokens=6, stop_at_eos=False)):
        expected = generate_units(lm, PROMPTS, config, batch_size=3)
        got = sample_streaming(lm, PROMPTS, config, batch_size=3)
        assert [[u.tolist() for u in p] for p in got] == [[u.tolist() for u in p] for p in expected]
        assert all(u.dtype == np.int64 for p in got for u in p)
    assert not lm.is_streaming and not lm.training


def test_snapshot_restore_repeats_a_seeded_continuation(lm):
    config = SamplingConfig(temperature=1.0, top_k=10, max_new_tokens=10, stop_at_eos=False)
    prompts = [lm.vocab.encode(p) for p in PROMPTS[:2]]
    with lm.streaming(2):
        logits = prefill(lm, prompts)
        snapshot = lm.get_streaming_state()
        frozen = {k: v.clone() for k, v in _tensors(snapshot[""]).items()}
        first = sample_continuation(lm, logits, config, generator=torch.Generator().manual_seed(7))
        for _ in range(2):  # restoring twice from one snapshot: it is not consumed nor changed by later steps
            lm.set_streaming_state(snapshot)
            again = sample_continuation(lm, logits, config, generator=torch.Generator().manual_seed(7))
            assert [u.tolist() for u in again.units] == [u.tolist() for u in first.units]
            _close(again.logits, first.logits)
            lm.step(torch.tensor([5, 6]))
        assert lm._streaming_state.positions.tolist() == [len(p) + 11 for p in prompts]
    assert [len(u) for u in first.units] == [10, 10]
    for name, tensor in _tensors(snapshot[""]).items():
        assert torch.equal(tensor, frozen[name]), name


def _tensors(state: UnitLMStreamingState) -> dict[str, torch.Tensor]:
    out = {"positions": state.positions, "valid": state.valid, "exec_mask": state.exec_mask}
    for i, layer in enumerate(state.cache.layers):
        out[f"keys{i}"], out[f"values{i}"] = layer.keys, layer.values
    return out


# ------------------------------------------------------------------------------------------------ errors
def test_misuse_raises_streaming_errors(lm):
    with pytest.raises(StreamingError, match="needs streaming mode"):
        lm.step(torch.tensor([5]))
    assert issubclass(StreamingError, TextlessError) and issubclass(StreamingError, RuntimeError)
    with pytest.raises(StreamingError, match="needs streaming mode"):
        lm.get_streaming_state()
    with lm.streaming(2):
        small = lm.get_streaming_state()
        with pytest.raises(StreamingError, match="already streaming"), lm.streaming(2):
            pass
        assert lm.is_streaming  # the failed entry left the running session alone
        lm.step(torch.tensor([5, 6]))
        with pytest.raises(StreamingError, match=r"bool tensor of shape \[2\]"):
            lm.reset_streaming(torch.tensor([True]))
        with pytest.raises(StreamingError, match="another set of modules"):
            lm.set_streaming_state({**small, "head": small[""]})
        with pytest.raises(StreamingError, match="one integer token per stream"):
            lm.step(torch.tensor([5]))
    assert not lm.is_streaming
    with lm.streaming(3):
        with pytest.raises(StreamingError, match="batch size 2"):
            lm.set_streaming_state(small)
        assert lm._streaming_state.batch_size == 3
    lm.streaming_forever(1)
    assert lm.is_streaming
    lm.stop_streaming()
    assert not lm.is_streaming


# ------------------------------------------------------------------------------------------------ generic protocol
@dataclass
class _SumState(StreamingState):
    total: torch.Tensor = field(init=False)  # [B, 2]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.total = torch.zeros(self.batch_size, 2, device=self.device)

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.total = self.total.masked_fill(mask[:, None], 0.0)


class _RunningSum(StreamingModule):
    def _init_streaming_state(self, batch_size: int) -> _SumState:
        return _SumState(batch_size, torch.device("cpu"))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        state = self._require_streaming("_RunningSum.step")
        state.total = torch.where(state.exec_mask[:, None], state.total + x, state.total)
        return state.total


def test_protocol_propagates_resets_pauses_and_detaches():
    parent = StreamingContainer()
    parent.inner = torch.nn.Sequential(_RunningSum())
    parent.detached = _RunningSum()
    parent.detached.set_streaming_detached(True)
    with parent.streaming(2):
        assert parent.inner[0].is_streaming and not parent.detached.is_streaming
        assert set(parent.get_streaming_state()) == {"", "inner.0"}
        summed = parent.inner[0]
        summed.step(torch.ones(2, 2))
        parent.set_exec_mask(torch.tensor([True, False]))
        assert summed.step(torch.ones(2, 2))[:, 0].tolist() == [2.0, 1.0]
        parent.reset_streaming(torch.tensor([False, True]))  # stream 1 restarts (and runs again)
        assert summed.step(torch.ones(2, 2))[:, 0].tolist() == [3.0, 1.0]
        parent.reset_streaming()
        assert summed._streaming_state.total.abs().sum() == 0
    assert not parent.is_streaming and not summed.is_streaming
