"""Packed unit-LM batches (textless.lm.data): layout, determinism, resume, ranks, and packed == unpacked loss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from textless.data.units import UnitMeta, UnitSequence, read_units, write_units
from textless.lm.data import (
    IGNORE_INDEX,
    PackedUnitDataset,
    PackingConfig,
    packed_attention_mask,
    packed_forward,
    packed_nll,
    packing_mode,
)
from textless.lm.vocab import UnitVocab

K = 20


def make_units(path, lengths, seed=0, encoding="binary", vocab_size=K):
    rng = np.random.default_rng(seed)
    seqs = [UnitSequence(f"utt{i:03d}", rng.integers(0, vocab_size, n)) for i, n in enumerate(lengths)]
    meta = UnitMeta(tokenizer={"name": "test-km"}, frame_rate=50.0, vocab_size=vocab_size, deduplicated=False)
    write_units(path, seqs, meta, encoding=encoding)
    return read_units(path), seqs


@pytest.fixture
def dataset(tmp_path):
    # lengths chosen so that some utterances are longer than a context (split) and some are tiny
    lengths = [5, 1, 30, 12, 7, 3, 44, 9, 2, 16, 8, 21]
    units, seqs = make_units(tmp_path / "u", lengths)
    return units, seqs


def segments(input_ids, position_ids):
    """Split a row into segments at position 0."""
    starts = np.flatnonzero(position_ids == 0).tolist() + [len(position_ids)]
    return list(itertools.pairwise(starts))


def test_layout_positions_and_labels(dataset):
    units, seqs = dataset
    vocab = UnitVocab.default(K)
    cfg = PackingConfig(context_length=16, seed=3)
    ds = PackedUnitDataset(units, vocab, cfg)
    T = sum(len(s.units) + 2 for s in seqs)
    assert ds.tokens_per_epoch == T and len(ds) == -(-T // 16)
    order = np.random.default_rng(3 + 1).permutation(len(seqs))
    np.testing.assert_array_equal(ds.epoch_order(1), order)
    expected = np.concatenate([vocab.encode(seqs[j].units, bos=True, eos=True) for j in order])
    rows = [ds.context(len(ds) + k) for k in range(len(ds))]  # epoch 1
    stream = np.concatenate([r[0] for r in rows])
    n_pad = len(ds) * 16 - T
    np.testing.assert_array_equal(stream[:T], expected)
    assert (stream[T:] == vocab.pad_id).all() and len(stream) - T == n_pad
    for ids, pos, lab in rows:
        assert ids.dtype == pos.dtype == lab.dtype == np.int64 and ids.shape == (16,)
        assert pos.min() >= 0 and pos.max() < 16
        for a, b in segments(ids, pos):
            np.testing.assert_array_equal(pos[a:b], np.arange(b - a))          # restart at every segment
            assert lab[a] == IGNORE_INDEX                                      # no prediction across a boundary
            seg_is_pad = (ids[a:b] == vocab.pad_id).all()
            if seg_is_pad:
                assert (lab[a:b] == IGNORE_INDEX).all()
            else:
                np.testing.assert_array_equal(lab[a + 1:b], ids[a + 1:b])
    # a context boundary that splits an utterance: the tail starts the next context at position 0 without a bos
    ends = np.cumsum([len(seqs[j].units) + 2 for j in order])
    split = [k for k in range(1, len(ds)) if (k * 16) not in set(ends.tolist()) and k * 16 < T]
    assert split, "fixture should split at least one utterance"
    for k in split:  # the tail of a split utterance opens the context: position 0, no bos, not a target
        ids, pos, lab = rows[k]
        assert pos[0] == 0 and ids[0] != vocab.bos_id and lab[0] == IGNORE_INDEX


def test_segment_boundaries_match_utterances(dataset):
    units, seqs = dataset
    vocab = UnitVocab.default(K)
    ds = PackedUnitDataset(units, vocab, PackingConfig(context_length=64, seed=0, shuffle=False))
    ids, pos, _ = ds.context(0)
    segs = segments(ids, pos)
    # in dataset order, the first utterances fit in context 0 whole: each segment is one encoded utterance
    for (a, b), seq in zip(segs[:3], seqs[:3], strict=True):
        np.testing.assert_array_equal(ids[a:b], vocab.encode(seq.units, bos=True, eos=True))


def test_no_bos_eos_and_drop_last(dataset):
    units, seqs = dataset
    vocab = UnitVocab.default(K)
    ds = PackedUnitDataset(units, vocab, PackingConfig(context_length=10, add_bos=False, add_eos=False,
                                                       drop_last=True))
    T = sum(len(s.units) for s in seqs)
    assert len(ds) == T // 10
    for c in range(3 * len(ds)):
        ids = ds.context(c)[0]
        assert not np.isin(ids, list(vocab.special_ids)).any()  # no pad, bos or eos anywhere


def test_batches_deterministic_resumable_and_lazy(dataset, monkeypatch):
    units, _ = dataset
    vocab = UnitVocab.default(K)
    cfg = PackingConfig(context_length=16, seed=7)
    a = PackedUnitDataset(units, vocab, cfg)
    first = [next(it) for it in [a.batches(3)] for _ in range(12)]  # crosses several epochs
    again = PackedUnitDataset(units, vocab, cfg).batches(3)
    for b in first:
        c = next(again)
        assert torch.equal(b.input_ids, c.input_ids) and torch.equal(b.labels, c.labels)
        assert b.input_ids.shape == (3, 16) and b.step == c.step
    assert first[-1].epoch >= 2 and [b.step for b in first] == list(range(12))
    assert first[0].contexts == [0, 1, 2] and first[5].contexts == [15, 16, 17]
    # start_step = the data position: same batches as the uninterrupted stream, without building skipped ones
    fresh = PackedUnitDataset(units, vocab, cfg)
    calls = []
    original = fresh._utterance_tokens
    monkeypatch.setattr(fresh, "_utterance_tokens", lambda j: calls.append(j) or original(j))
    resumed = fresh.batches(3, start_step=9)
    b9 = next(resumed)
    assert torch.equal(b9.input_ids, first[9].input_ids) and torch.equal(b9.position_ids, first[9].position_ids)
    assert b9.step == 9 and b9.epoch == first[9].epoch
    assert len(calls) <= 3 * 16  # at most one utterance per token of the 3 contexts, nothing for steps 0..8
    # far away: O(1) contexts materialised
    calls.clear()
    far = next(fresh.batches(3, start_step=10**6))
    assert far.contexts[0] == 3 * 10**6 and len(calls) <= 3 * 16


def test_ranks_take_interleaved_batches(dataset):
    units, _ = dataset
    vocab = UnitVocab.default(K)
    cfg = PackingConfig(context_length=16, seed=1)
    single = PackedUnitDataset(units, vocab, cfg).batches(2)
    r0 = PackedUnitDataset(units, vocab, cfg, rank=0, world_size=2).batches(2)
    r1 = PackedUnitDataset(units, vocab, cfg, rank=1, world_size=2).batches(2, start_step=0)
    for _ in range(5):
        b0, b1 = next(r0), next(r1)
        assert torch.equal(b0.input_ids, next(single).input_ids)
        assert torch.equal(b1.input_ids, next(single).input_ids)
        assert not set(b0.contexts) & set(b1.contexts)
    with pytest.raises(ValueError, match="rank"):
        PackedUnitDataset(units, vocab, cfg, rank=2, world_size=2)


def test_epoch_batches_cover_every_context_once(dataset):
    units, _ = dataset
    vocab = UnitVocab.default(K)
    cfg = PackingConfig(context_length=16, shuffle=False)
    seen = []
    for rank in range(3):
        ds = PackedUnitDataset(units, vocab, cfg, rank=rank, world_size=3)
        for b in ds.epoch_batches(4):
            seen += b.contexts
    assert sorted(seen) == list(range(len(ds)))
    capped = PackedUnitDataset(units, vocab, cfg).epoch_batches(4, max_batches=2)
    assert sum(len(b.contexts) for b in capped) == 8


def test_jsonl_encoding_gives_the_same_batches(tmp_path, dataset):
    units, seqs = dataset
    vocab = UnitVocab.default(K)
    write_units(tmp_path / "j", seqs, units.meta, encoding="jsonl")
    cfg = PackingConfig(context_length=16, seed=2)
    a = next(PackedUnitDataset(units, vocab, cfg).batches(4, start_step=3))
    b = next(PackedUnitDataset(read_units(tmp_path / "j"), vocab, cfg).batches(4, start_step=3))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)


def test_too_small_dataset_is_refused(tmp_path):
    units, _ = make_units(tmp_path / "s", [3])
    with pytest.raises(ValueError, match="fewer than one context"):
        PackedUnitDataset(units, UnitVocab.default(K), PackingConfig(context_length=64, drop_last=True))


def tiny_model(arch, attn, vocab):
    """fp32 tiny Llama (RoPE; masks from position ids) or OPT (learned positions; needs an explicit mask)."""
    from transformers import LlamaConfig, OPTConfig

    from textless.lm.model import UnitLM

    if arch == "llama":
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64)
    else:
        config = OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                           max_position_embeddings=64, word_embed_proj_dim=32, dropout=0.0)
    torch.manual_seed(0)
    return UnitLM.from_scratch(config, vocab, attn_implementation=attn).eval()


@pytest.mark.parametrize(("arch", "attn", "mode"), [
    ("llama", "sdpa", "position_ids"), ("llama", "eager", "position_ids"), ("opt", "sdpa", "mask"),
    ("opt", "eager", "mask"), ("llama", "sdpa", "mask")])
def test_packed_loss_equals_unpacked_loss(dataset, arch, attn, mode):
    """Per-token NLL of a packed batch == the same tokens' NLL with each segment run alone; sums equal too."""
    units, seqs = dataset
    vocab = UnitVocab.default(K)
    lm = tiny_model(arch, attn, vocab)
    model = lm.model
    if mode != packing_mode(model):
        assert (arch, mode) == ("llama", "mask")
        model._textless_packing_mode = "mask"  # force the explicit-mask path on a model that does not need it
    ds = PackedUnitDataset(units, vocab, PackingConfig(context_length=24, seed=0))
    batch = next(ds.batches(len(ds)))  # the whole epoch: splits, short utterances and padding
    with torch.no_grad():
        packed, n_packed = packed_nll(lm, batch)
        total, n_total, n_segments = torch.zeros((), dtype=torch.float64), 0, 0
        for row in range(batch.input_ids.shape[0]):
            ids, pos, lab = (t[row].numpy() for t in (batch.input_ids, batch.position_ids, batch.labels))
            packed_logits = packed_forward(lm, batch).logits[row]
            for a, b in segments(ids, pos):
                if (ids[a:b] == vocab.pad_id).all():
                    continue
                n_segments += 1
                if b - a == 1:
                    continue  # a one-token segment predicts nothing
                logits = model(input_ids=torch.from_numpy(ids[a:b])[None]).logits[0, :-1].float()
                target = torch.from_numpy(lab[a + 1:b])
                nll = torch.nn.functional.cross_entropy(logits, target, reduction="none")
                packed_tok = torch.nn.functional.cross_entropy(packed_logits[a:b - 1], target, reduction="none")
                torch.testing.assert_close(packed_tok, nll, atol=1e-5, rtol=0)
                total += nll.double().sum()
                n_total += len(target)
    assert n_segments > len(seqs)  # some utterances were split across contexts
    # every token but the first of each segment is predicted
    assert n_packed == n_total == ds.tokens_per_epoch - n_segments
    torch.testing.assert_close(packed.double(), total, atol=1e-5, rtol=0)


def test_packed_attention_mask():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0]])
    m = packed_attention_mask(pos)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                             [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    additive = packed_attention_mask(pos, torch.float32)[0, 0]
    assert (additive[expected] == 0).all() and (additive[~expected] == torch.finfo(torch.float32).min).all()
