"""Unit LM scoring (log-likelihood convention, batching) and generation (sampling rules, greedy, batching)."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig

from textless.errors import ConfigError, TextlessError
from textless.lm import SamplingConfig, UnitLM, UnitVocab, generate_units, log_likelihood
from textless.lm.generation import filter_logits
from textless.lm.presets import build_config

NUM_UNITS = 21  # + 4 specials = 25 ids -> size 32: rows 25..31 are unused
PROMPTS = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8, 9, 10]), np.array([11]), np.array([12, 13, 14, 15, 16])]


def _lm(seed: int = 0, arch: str = "llama") -> UnitLM:
    """A tiny random LM with peaky distributions (large init), so greedy paths are not degenerate."""
    torch.manual_seed(seed)
    vocab = UnitVocab.default(NUM_UNITS, extra_specials=("sep",))
    if arch == "opt":
        config = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=128, init_std=0.3, dropout=0.0)
        return UnitLM.from_text_lm(AutoModelForCausalLM.from_config(config), vocab).eval()
    config = build_config("tiny", vocab)
    config.initializer_range = 0.3
    return UnitLM.from_scratch(config, vocab).eval()


@pytest.fixture(scope="module")
def lm() -> UnitLM:
    return _lm()


# ---------------------------------------------------------------------------------------------------------- scoring
def _manual_log_likelihood(lm: UnitLM, units: np.ndarray, eos: bool = False) -> tuple[float, int]:
    """One forward over [bos] + units (+ eos): sum over t >= 1 of log_softmax(logits[t - 1])[x_t]."""
    tokens = torch.tensor(lm.vocab.encode(units, bos=True, eos=eos))
    with torch.no_grad():
        logits = lm(tokens[None]).logits[0]
    logp = torch.log_softmax(logits.double(), dim=-1)
    return sum(logp[t - 1, tokens[t]].item() for t in range(1, len(tokens))), len(tokens) - 1


def test_log_likelihood_matches_manual_convention(lm):
    """The default is slamkit's convention, bos + units + eos (every unit and the eos scored)."""
    result = log_likelihood(lm, PROMPTS)
    for i, units in enumerate(PROMPTS):
        total, count = _manual_log_likelihood(lm, units, eos=True)
        assert result.num_tokens[i] == count == len(units) + 1  # bos is context, every unit and the eos scored
        np.testing.assert_allclose(result.sum[i], total, atol=1e-5)
    np.testing.assert_allclose(result.mean, result.sum / result.num_tokens)
    assert result.sum.dtype == np.float64 and result.num_tokens.dtype == np.int64


def test_log_likelihood_batching_is_invisible(lm):
    one_by_one = [log_likelihood(lm, [p]).sum[0] for p in PROMPTS]
    for batch_size in (1, 2, len(PROMPTS)):
        result = log_likelihood(lm, PROMPTS, batch_size=batch_size)
        np.testing.assert_allclose(result.sum, one_by_one, atol=1e-5)
        assert result.num_tokens.tolist() == [len(p) + 1 for p in PROMPTS]


def test_add_eos_adds_exactly_the_eos_term(lm):
    plain = log_likelihood(lm, PROMPTS, add_eos=False)
    with_eos = log_likelihood(lm, PROMPTS, add_eos=True, batch_size=3)
    assert (with_eos.num_tokens == plain.num_tokens + 1).all()
    for i, units in enumerate(PROMPTS):
        tokens = torch.tensor(lm.vocab.encode(units))
        with torch.no_grad():
            last = torch.log_softmax(lm(tokens[None]).logits[0, -1].double(), -1)
        np.testing.assert_allclose(with_eos.sum[i] - plain.sum[i], last[lm.vocab.eos_id].item(), atol=1e-5)
        np.testing.assert_allclose(with_eos.sum[i], _manual_log_likelihood(lm, units, eos=True)[0], atol=1e-5)


def test_without_bos_the_first_unit_is_context(lm):
    prompts = [p for p in PROMPTS if len(p) > 1]
    result = log_likelihood(lm, prompts, add_bos=False, add_eos=False)
    assert result.num_tokens.tolist() == [len(p) - 1 for p in prompts]
    tokens = torch.tensor(lm.vocab.encode(prompts[1], bos=False))
    with torch.no_grad():
        logp = torch.log_softmax(lm(tokens[None]).logits[0].double(), -1)
    expected = sum(logp[t - 1, tokens[t]].item() for t in range(1, len(tokens)))
    np.testing.assert_allclose(result.sum[1], expected, atol=1e-5)
    with pytest.raises(TextlessError, match="nothing to score"):
        log_likelihood(lm, [np.array([3])], add_bos=False, add_eos=False)


def test_log_likelihood_length_limit_and_truncation(lm):
    long = np.arange(3000) % NUM_UNITS
    with pytest.raises(TextlessError, match="max_tokens"):
        log_likelihood(lm, [long])
    truncated = log_likelihood(lm, [long], max_tokens=9)
    assert truncated.num_tokens[0] == 8  # the first 9 tokens: bos + 8 units, no eos
    np.testing.assert_allclose(truncated.sum, log_likelihood(lm, [long[:8]], add_eos=False).sum, atol=1e-5)


def test_log_likelihood_restores_training_mode_and_uses_float32_logits():
    lm = _lm()
    lm.train()
    first = log_likelihood(lm, PROMPTS[:2]).sum
    assert lm.training
    lm_bf16 = _lm().to(torch.bfloat16)
    approx = log_likelihood(lm_bf16, PROMPTS[:2]).sum
    np.testing.assert_allclose(approx, first, rtol=0.05)
    assert lm.log_likelihood(PROMPTS[:2]).sum.tolist() == first.tolist()


# ---------------------------------------------------------------------------------------------------------- generation
def _manual_greedy(lm: UnitLM, prompt: np.ndarray, max_new: int) -> np.ndarray:
    """Full forward every step, argmax over units + eos."""
    vocab = lm.vocab
    allowed = torch.zeros(vocab.size, dtype=torch.bool)
    allowed[vocab.offset:vocab.offset + vocab.num_units] = True
    allowed[vocab.eos_id] = True
    tokens = list(vocab.encode(prompt))
    out = []
    for _ in range(max_new):
        with torch.no_grad():
            logits = lm(torch.tensor([tokens])).logits[0, -1]
        nxt = int(logits.masked_fill(~allowed, -math.inf).argmax())
        if nxt == vocab.eos_id:
            break
        out.append(nxt - vocab.offset)
        tokens.append(nxt)
    return np.array(out, dtype=np.int64)


def _bias_logits(lm: UnitLM, token_ids: list[int], value: float):
    """Add `value` to the logits of `token_ids` (forward hook on the output head); returns the hook handle."""
    bias = torch.zeros(lm.vocab.size)
    bias[token_ids] = value
    return lm.model.get_output_embeddings().register_forward_hook(lambda mod, inp, out: out + bias)


GREEDY = SamplingConfig(temperature=0, max_new_tokens=12)


def test_greedy_equals_manual_argmax(lm):
    results = generate_units(lm, PROMPTS, GREEDY)
    for prompt, [units] in zip(PROMPTS, results, strict=True):
        np.testing.assert_array_equal(units, _manual_greedy(lm, prompt, 12))
    assert any(len(np.unique(u)) > 1 for [u] in results)  # not a degenerate model


@pytest.mark.parametrize("arch", ["llama", "opt"])
def test_greedy_batched_equals_one_by_one_and_cache_is_invisible(arch):
    lm = _lm(arch=arch)
    alone = [generate_units(lm, [p], GREEDY)[0][0] for p in PROMPTS]
    for batch_size in (2, len(PROMPTS)):
        batched = generate_units(lm, PROMPTS, GREEDY, batch_size=batch_size)
        for a, [b] in zip(alone, batched, strict=True):
            np.testing.assert_array_equal(a, b)
    no_cache = generate_units(lm, PROMPTS, SamplingConfig(temperature=0, max_new_tokens=12, use_cache=False))
    for a, [b] in zip(alone, no_cache, strict=True):
        np.testing.assert_array_equal(a, b)


def test_sampling_is_deterministic_with_seed_and_leaves_rng_alone(lm):
    config = SamplingConfig(temperature=1.0, top_k=10, top_p=0.95, max_new_tokens=15, num_samples=2, seed=123)
    state = torch.get_rng_state()
    first = generate_units(lm, PROMPTS, config, batch_size=3)
    assert torch.equal(torch.get_rng_state(), state)
    second = generate_units(lm, PROMPTS, config, batch_size=3)
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    other = generate_units(lm, PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=15, num_samples=2, seed=7))
    assert any(not np.array_equal(x, y) for a, b in zip(first, other, strict=True) for x, y in zip(a, b))


def test_num_samples_and_max_new_tokens(lm):
    config = SamplingConfig(temperature=1.5, max_new_tokens=9, num_samples=3, stop_at_eos=False)
    results = generate_units(lm, PROMPTS, config, batch_size=5)
    assert len(results) == len(PROMPTS) and all(len(r) == 3 for r in results)
    assert all(len(u) == 9 and u.dtype == np.int64 for r in results for u in r)
    assert any(not np.array_equal(r[0], r[1]) for r in results)
    stopping = generate_units(lm, PROMPTS, SamplingConfig(temperature=1.5, max_new_tokens=9, num_samples=3))
    assert all(len(u) <= 9 for r in stopping for u in r)


def test_prompt_multiple_limits_length(lm):
    config = SamplingConfig(temperature=1.0, max_new_tokens=10, prompt_multiple=2.0, stop_at_eos=False)
    prompts = [np.array([1, 2]), np.array([3, 4, 5, 6, 7, 8]), np.zeros(0, dtype=np.int64)]
    results = generate_units(lm, prompts, config)
    assert [len(r[0]) for r in results] == [4, 10, 0]  # min(10, 2 x prompt length)
    assert config.max_new_for(3) == 6 and SamplingConfig(prompt_multiple=3.0).max_new_for(100) == 250


def test_never_emits_specials_even_when_they_dominate(lm):
    vocab = lm.vocab
    unused = [i for i in range(vocab.size) if i not in vocab.special_ids and not vocab.is_unit(np.array(i))]
    assert unused  # size is rounded up: there are unused rows
    others = [vocab.pad_id, vocab.bos_id, vocab.specials["sep"], *unused]
    handle = _bias_logits(lm, others, 30.0)
    try:
        for config in (SamplingConfig(temperature=2.0, max_new_tokens=8, stop_at_eos=False, num_samples=2),
                       SamplingConfig(temperature=0, max_new_tokens=8, stop_at_eos=False)):
            results = generate_units(lm, PROMPTS, config)
            assert all(len(u) == 8 and ((u >= 0) & (u < NUM_UNITS)).all() for r in results for u in r)
    finally:
        handle.remove()


def test_eos_stops_and_min_new_tokens(lm):
    handle = _bias_logits(lm, [lm.vocab.eos_id], 30.0)
    try:
        stopped = generate_units(lm, PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=8))
        assert all(len(u) == 0 for r in stopped for u in r)
        delayed = generate_units(lm, PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=8, min_new_tokens=3))
        assert all(len(u) == 3 for r in delayed for u in r)
        ignored = generate_units(lm, PROMPTS, SamplingConfig(temperature=0, max_new_tokens=5, stop_at_eos=False))
        assert all(len(u) == 5 for r in ignored for u in r)
    finally:
        handle.remove()


def test_generation_errors(lm):
    with pytest.raises(ConfigError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(ConfigError, match="top_p"):
        SamplingConfig(top_p=0)
    with pytest.raises(TextlessError, match="exceed"):
        generate_units(lm, [np.zeros(2040, dtype=np.int64)], SamplingConfig(max_new_tokens=20))
    assert lm.generate_units([PROMPTS[0]], GREEDY)[0][0].tolist() == generate_units(lm, [PROMPTS[0]],
                                                                                      GREEDY)[0][0].tolist()


# -------------------------------------------------------------------------------------------------- top-k / top-p
def _kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


def test_filter_logits_on_hand_computed_logits():
    # probabilities 1/2, 1/4, 1/8, 1/16, 1/16, scattered over the positions (the filters must map back)
    probs = torch.tensor([1 / 16, 1 / 4, 1 / 2, 1 / 16, 1 / 8], dtype=torch.float64)
    logits = probs.log()
    order = [2, 1, 4]  # most likely first
    assert _kept(filter_logits(logits)) == [0, 1, 2, 3, 4]
    assert sorted(_kept(filter_logits(logits, top_k=1))) == [2]
    assert sorted(_kept(filter_logits(logits, top_k=3))) == sorted(order)
    kept = filter_logits(logits, top_k=3)
    assert torch.equal(kept[order], logits[order])  # kept logits are untouched
    # nucleus: the fewest most likely tokens whose probability reaches top_p (mass before a kept token < top_p)
    for top_p, expected in [(0.01, [2]), (0.3, [2]), (0.5, [2]), (0.6, [1, 2]), (0.8, [1, 2, 4]),
                            (1.0, [0, 1, 2, 3, 4])]:
        assert _kept(filter_logits(logits, top_p=top_p)) == expected, top_p
    tie = _kept(filter_logits(logits, top_p=0.9))  # 0.875 < 0.9: one of the two 1/16 tokens completes the nucleus
    assert len(tie) == 4 and set(order) < set(tie)
    # temperature first: T=2 flattens to p ~ sqrt(p) = [.121, .243, .343, .121, .172]: top_p 0.6 now keeps 3
    assert sorted(_kept(filter_logits(logits, temperature=2.0, top_p=0.6))) == [1, 2, 4]
    np.testing.assert_allclose(filter_logits(logits, temperature=2.0), logits / 2)
    # top-k before top-p: after top_k=2 the probabilities are 2/3, 1/3, so top_p 0.6 keeps only the first
    assert _kept(filter_logits(logits, top_k=2, top_p=0.6)) == [2]
    # ties with the k-th value are kept; -inf (disallowed) stays -inf; rows are independent; input untouched
    batch = torch.tensor([[1.0, 1.0, 0.0, -math.inf], [0.0, 3.0, 2.0, 1.0]])
    before = batch.clone()
    out = filter_logits(batch, top_k=1)
    assert _kept(out[0]) == [0, 1] and _kept(out[1]) == [1] and torch.equal(batch, before)
    assert _kept(filter_logits(batch, top_k=4)[0]) == [0, 1, 2]
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(batch, temperature=0)


@pytest.mark.parametrize("top", [{"top_k": 1}, {"top_p": 1e-4}, {"top_k": 1, "top_p": 0.5}])
def test_top_k_1_and_tiny_top_p_sample_the_greedy_path(lm, top):
    greedy = generate_units(lm, PROMPTS, GREEDY)
    for seed in (0, 1):
        sampled = generate_units(lm, PROMPTS, SamplingConfig(temperature=1.3, max_new_tokens=12, seed=seed, **top))
        for [a], [b] in zip(greedy, sampled, strict=True):
            np.testing.assert_array_equal(a, b)


# units 0, 1, 2 get logits 2.0, 1.5, 1.0 and every other unit 0.5: without filtering the 18 others carry 67 % of the
# probability, so a filter that leaked would show within a few samples
_KNOWN = {0: 2.0, 1: 1.5, 2: 1.0}


def _constant_logits(lm: UnitLM):
    """Make the LM's logits exactly the same known vector at every position (forward hook on the head)."""
    logits = torch.full((lm.vocab.size,), 0.5)
    for unit, value in _KNOWN.items():
        logits[lm.vocab.offset + unit] = value
    return lm.model.get_output_embeddings().register_forward_hook(lambda mod, inp, out: logits.expand_as(out))


def _sample_counts(lm: UnitLM, **top) -> np.ndarray:
    config = SamplingConfig(temperature=1.0, max_new_tokens=10, num_samples=150, stop_at_eos=False, seed=3, **top)
    [samples] = generate_units(lm, [np.array([5, 6])], config, batch_size=150)
    units = np.concatenate(samples)
    assert len(units) == 1500
    return np.bincount(units, minlength=NUM_UNITS)


@pytest.mark.parametrize("top,allowed", [({"top_k": 3}, [0, 1, 2]), ({"top_k": 2}, [0, 1]),
                                         ({"top_p": 0.3}, [0, 1, 2]),  # 0.167 + 0.101 < 0.3 <= 0.167 + 0.101 + 0.061
                                         ({"top_p": 0.1}, [0]), ({"top_k": 1}, [0])])
def test_top_k_top_p_restrict_what_is_sampled(top, allowed):
    lm = _lm()
    handle = _constant_logits(lm)
    try:
        counts = _sample_counts(lm, **top)
        unfiltered = _sample_counts(lm)
    finally:
        handle.remove()
    assert np.flatnonzero(counts).tolist() == allowed  # never outside, and every allowed unit appears
    expected = np.exp([_KNOWN[u] for u in allowed])
    np.testing.assert_allclose(counts[allowed] / counts.sum(), expected / expected.sum(), atol=0.05)
    assert (unfiltered[3:] > 0).sum() >= 15  # the check above could fail: unfiltered sampling reaches the others
