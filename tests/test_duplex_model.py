"""DuplexLM: native / TDM forward, streaming == teacher-forced forward (staggered, reset, paused, bounded cache),
separate stream tables, text-LM init, persistence; the generators (delays, TDM grammar, seeds)."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from textless.dialogue.duplex import DuplexConfig, DuplexGenerator, DuplexLM, DuplexSampling, TDMGenerator
from textless.dialogue.duplex.model import RingKVCache, backbone_config
from textless.dialogue.streams import ZERO, TDMFormat, content_layout
from textless.errors import ConfigError, FormatError
from textless.streaming import StreamingError

K = 10
BACKBONE = backbone_config("tiny", hidden_size=32, intermediate_size=64, num_attention_heads=4,
                           num_key_value_heads=2)
LAYOUT = content_layout(K, 0, 12, "lead", speak_delay=2)   # listen (d 0), content (d 0, wait), speak (d 2)
FIXED = TDMFormat(K, chunk_frames=3)
CONTROLLED = TDMFormat(K, chunk_frames=3, controlled=True, silence_unit=0)


def _native(context=64, seed=0, attn="sdpa"):
    torch.manual_seed(seed)
    config = DuplexConfig(layout=LAYOUT, backbone=BACKBONE, context=context, tokenizer={"name": "tok"},
                          frame_rate=50.0)
    return DuplexLM.from_scratch(config, attn_implementation=attn).eval()


def _tdm(fmt=FIXED, context=64, seed=0):
    torch.manual_seed(seed)
    return DuplexLM.from_scratch(DuplexConfig(format="tdm", tdm=fmt, backbone=BACKBONE, context=context)).eval()


def _frames(model, t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, v, (t,), generator=g) for v in model.vocab_sizes.tolist()])  # [N, T]


def _sequence(model, t, seed):
    return torch.randint(0, model.tdm.vocab_size, (t,), generator=torch.Generator().manual_seed(seed))  # [T]


# ------------------------------------------------------------------------------------------------ forward
def test_native_forward_shapes_and_zero_tokens():
    model = _native()
    x = torch.stack([_frames(model, 7, s) for s in range(2)])
    out = model(x)
    assert list(out) == ["content", "speak"]
    assert out["content"].shape == (2, 7, 14) and out["speak"].shape == (2, 7, 11)
    x[:, 1] = ZERO  # an absent stream contributes exactly nothing
    ref = model.embeddings["listen"](x[:, 0]) + model.embeddings["speak"](x[:, 2])
    assert torch.equal(model.embed(x), ref)
    with pytest.raises(ValueError, match="stream 'speak' got token 11"):
        model(torch.stack([x[0, 0], x[0, 0], torch.full((7,), 11)])[None])
    with pytest.raises(ValueError, match="3 streams"):
        model(x[:, :2])


def test_tdm_forward_shapes():
    model = _tdm()
    out = model(torch.stack([_sequence(model, 9, s) for s in range(2)]))
    assert list(out) == ["tdm"] and out["tdm"].shape == (2, 9, FIXED.vocab_size)


def test_config_errors():
    with pytest.raises(ConfigError, match="needs `layout`"):
        DuplexConfig(backbone=BACKBONE)
    with pytest.raises(ConfigError, match="needs `tdm`"):
        DuplexConfig(format="tdm", layout=LAYOUT.to_dict(), backbone=BACKBONE)
    with pytest.raises(ConfigError, match="context"):
        DuplexConfig(layout=LAYOUT, backbone=BACKBONE, context=0)
    with pytest.raises(ConfigError, match="unknown DuplexConfig keys: extra"):
        DuplexConfig.from_dict({"extra": 1})
    opt = {"model_type": "opt", "hidden_size": 32, "ffn_dim": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "word_embed_proj_dim": 32, "vocab_size": 1}
    with pytest.raises(ConfigError, match="rotary"):
        DuplexLM(DuplexConfig(layout=LAYOUT, backbone=opt))


# ------------------------------------------------------------------------------------------------ streaming
def _run_schedule(model, schedule, batch, step):
    """schedule[t][b]: ("feed" | "pause" | "reset", input) per step. Checks each output against `model` over the
    item's current life (+ the input); returns the number of checked outputs."""
    lives = [[] for _ in range(batch)]
    checked = 0
    with model.streaming(batch):
        for events in schedule:
            resets = torch.tensor([e[0] == "reset" for e in events])
            if resets.any():
                model.reset_streaming(resets)
                for b in resets.nonzero()[:, 0].tolist():
                    lives[b] = []
            model.set_exec_mask(torch.tensor([e[0] != "pause" for e in events]))
            out = step(torch.stack([e[1] for e in events]))
            for b, (kind, item) in enumerate(events):
                seq = torch.cat([*lives[b], item], dim=-1)
                ref = model(seq[None])
                width = item.shape[-1]
                for name, logits in (out.items() if isinstance(out, dict) else [("tdm", out)]):
                    got = logits[b] if logits.dim() == 3 else logits[b][None]
                    torch.testing.assert_close(got, ref[name][0, -width:], atol=2e-5, rtol=1e-4)
                checked += 1
                if kind != "pause":
                    lives[b].append(item)
    return checked


def _native_schedule(model, steps=14):
    """Item 0 runs with a pause at steps 5-6; item 1 starts late (paused at 0-3); item 2 is reset at step 6."""
    schedule = []
    for t in range(steps):
        frame = [_frames(model, 1, 100 * t + b) for b in range(3)]
        kinds = ["pause" if t in (5, 6) else "feed", "pause" if t < 4 else "feed", "reset" if t == 6 else "feed"]
        schedule.append(list(zip(kinds, frame, strict=True)))
    return schedule


def test_native_step_equals_the_teacher_forced_forward():
    model = _native()
    assert _run_schedule(model, _native_schedule(model), 3, lambda x: model.step(x[..., 0])) == 42


def test_bounded_cache_equals_a_sliding_window_forward():
    model = _native(context=4)
    assert model._init_streaming_state(1).ring == 4
    assert _run_schedule(model, _native_schedule(model, steps=16), 3, lambda x: model.step(x[..., 0])) == 48
    # the window is real: longer than context, the forward is not the full-attention one
    x = _frames(model, 12, 7)[None]
    full = _native(context=64)(x)["speak"]
    windowed = model(x)["speak"]
    assert torch.allclose(windowed[:, :4], full[:, :4], atol=1e-6)
    assert not torch.allclose(windowed[:, 4:], full[:, 4:], atol=1e-3)


def test_streaming_costs_the_steps_held_not_the_ring(monkeypatch):
    """Early in a session a step attends to (and the cache allocates) the steps so far, not the ring's capacity; the
    ring fills up to its size, then wraps at that size; resets of every stream and snapshots take the prefix along."""
    attended = []
    update = RingKVCache.update

    def spy(self, keys, values, layer_idx, *args, **kwargs):
        out = update(self, keys, values, layer_idx, *args, **kwargs)
        if layer_idx == 0:
            attended.append(out[0].shape[2])
        return out

    monkeypatch.setattr(RingKVCache, "update", spy)
    model = _native(context=16)
    frames = [_frames(model, 1, t)[:, 0].expand(2, -1) for t in range(24)]
    with model.streaming(2):
        state = model._streaming_state
        assert state.ring == 16 and state.cache.capacity == 0
        for t in range(5):
            model.step(frames[t])
            assert attended[-1] == t + 1 and state.cache.capacity < 2 * (t + 1)
        model.set_exec_mask(torch.tensor([True, False]))
        model.reset_streaming(torch.tensor([False, True]))  # one stream starts again: the prefix stays
        model.step(frames[5])
        assert attended[-1] == 6
        snap = model.get_streaming_state()
        model.set_exec_mask(torch.tensor([True, True]))
        for t in range(6, 24):
            model.step(frames[t])
        assert attended[6:] == list(range(7, 17)) + [16] * 8
        assert all(k.shape[2] == 16 for k in state.cache.keys + state.cache.values)  # the bound: the ring
        model.set_streaming_state(snap)
        model.step(frames[6])
        assert attended[-1] == 7 and model._streaming_state.cache.capacity < 16
        model.reset_streaming()
        model.step(frames[0])
        assert attended[-1] == 1
    tdm = _tdm(context=16)
    attended.clear()
    with tdm.streaming(1):
        assert tdm._streaming_state.ring == 16 + tdm.max_step - 1
        for width in (3, 8, 14):  # 8 and 14 > max_step 6: run in pieces
            tdm.step_chunk(_sequence(tdm, width, width)[None])
    assert attended == [3, 9, 11, 17, 21, 21]  # 3, 6 + 2, 6 + 6 + 2 tokens; the ring: 21 slots


def test_forward_window_is_a_sliding_window_mask():
    model = _native(context=3, attn="eager")
    x = _frames(model, 9, 3)[None]
    i = torch.arange(9)
    seen = (i[:, None] - i[None, :] >= 0) & (i[:, None] - i[None, :] < 3)
    mask = torch.zeros(9, 9).masked_fill(~seen, float("-inf"))[None, None]
    hidden = model.backbone(inputs_embeds=model.embed(x), attention_mask=mask, use_cache=False).last_hidden_state
    torch.testing.assert_close(model(x)["speak"], model.heads["speak"](hidden))


@pytest.mark.parametrize("fmt", [FIXED, CONTROLLED])
def test_tdm_chunk_step_equals_the_teacher_forced_forward(fmt):
    model = _tdm(fmt, context=5)
    assert model.max_step == fmt.chunk_frames + 3
    schedule = []
    for t, width in enumerate([1, 6, 3, 1, 8, 2, 14, 1]):  # 8 and 14 > max_step: run in pieces
        chunks = [_sequence(model, width, 10 * t + b) for b in range(3)]
        kinds = ["pause" if t == 3 else "feed", "pause" if t < 2 else "feed", "reset" if t == 4 else "feed"]
        schedule.append(list(zip(kinds, chunks, strict=True)))
    assert _run_schedule(model, schedule, 3, model.step_chunk) == 24


def test_streaming_misuse():
    native, tdm = _native(), _tdm()
    with pytest.raises(StreamingError, match="needs streaming"):
        native.step(torch.zeros(1, 3, dtype=torch.long))
    with native.streaming(1), pytest.raises(StreamingError, match="step_chunk steps a TDM"):
        native.step_chunk(torch.zeros(1, 2, dtype=torch.long))
    with tdm.streaming(1), pytest.raises(StreamingError, match="TDM model steps by step_chunk"):
        tdm.step(torch.zeros(1, 3, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ stream tables
def test_listen_and_speak_tables_are_separate():
    model = _native()
    x = torch.stack([_frames(model, 6, s) for s in range(2)])
    y = x.clone()
    y[:, 0] = (y[:, 0] + 1) % K  # other listen tokens
    diff = model.embed(y) - model.embed(x)
    torch.testing.assert_close(diff, model.embeddings["listen"](y[:, 0]) - model.embeddings["listen"](x[:, 0]))
    pointers = {t.weight.data_ptr() for t in model.embeddings.values()}
    assert len(pointers) == 3

    # gradients: the listen table only gets rows of listen tokens, the speak tables none of them
    x = torch.zeros(1, 3, 6, dtype=torch.long)
    x[0, 0] = torch.tensor([1, 2, 3, 1, 2, 3])
    x[0, 1] = torch.tensor([5, 6, 5, 6, 5, ZERO])
    x[0, 2] = torch.tensor([7, 8, 7, 8, 7, 8])
    model.zero_grad()
    out = model(x)
    (out["content"].logsumexp(-1).sum() + out["speak"].logsumexp(-1).sum()).backward()
    rows = {name: set(t.weight.grad.abs().sum(1).nonzero()[:, 0].tolist()) for name, t in model.embeddings.items()}
    assert rows == {"listen": {1, 2, 3}, "content": {5, 6}, "speak": {7, 8}}


# ------------------------------------------------------------------------------------------------ init, persistence
@pytest.fixture(scope="module")
def text_lm_dir(tmp_path_factory):
    torch.manual_seed(3)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("text_lm")
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["native", "tdm"])
def test_text_lm_init_keeps_every_transformer_weight(text_lm_dir, kind):
    text = LlamaForCausalLM.from_pretrained(text_lm_dir).state_dict()
    model = DuplexLM.from_text_lm(text_lm_dir, **({"layout": LAYOUT} if kind == "native" else {"tdm": CONTROLLED}),
                                  context=16)
    backbone = model.backbone.state_dict()
    kept = {k.removeprefix("model."): v for k, v in text.items() if k not in ("model.embed_tokens.weight",
                                                                              "lm_head.weight")}
    assert set(backbone) == set(kept) and len(kept) == 2 * 9 + 1
    assert all(torch.equal(backbone[k], v) for k, v in kept.items())
    assert model.config.backbone["vocab_size"] == 1 and model.config.backbone["hidden_size"] == 32
    assert set(model.embeddings) == ({"listen", "content", "speak"} if kind == "native" else {"tdm"})
    x = torch.stack([_frames(model, 5, 0)]) if kind == "native" else _sequence(model, 5, 0)[None]
    assert all(torch.isfinite(v).all() for v in model(x).values())


@pytest.mark.parametrize("kind", ["native", "tdm"])
def test_save_and_load_round_trip(tmp_path, kind):
    model = _native(context=7) if kind == "native" else _tdm(CONTROLLED, context=7)
    path = model.save_pretrained(tmp_path / "duplex")
    meta = json.loads((path / "config.json").read_text())
    assert meta["format"] == "textless.duplex_lm" and meta["version"] == 1
    loaded = DuplexLM.from_pretrained(path)
    assert loaded.config == model.config and not loaded.training
    state = loaded.state_dict()
    assert set(state) == set(model.state_dict())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    x = _frames(model, 9, 1)[None] if kind == "native" else _sequence(model, 9, 1)[None]
    for name, logits in model(x).items():
        assert torch.equal(loaded(x)[name], logits)
    with pytest.raises(Exception, match="exists"):
        model.save_pretrained(path)
    model.save_pretrained(path, overwrite=True)
    (path / "config.json").write_text(json.dumps({"format": "textless.unit_lm", "version": 1}))
    with pytest.raises(FormatError, match="not a textless duplex LM"):
        DuplexLM.from_pretrained(path)


def test_units_identity():
    model = _native()
    assert model.units.vocab_size == K and model.units.frame_rate == 50.0 and model.units.deduplicated is False


# ------------------------------------------------------------------------------------------------ generators
def _record(monkeypatch, model, method):
    """Record (input, exec mask) of every call of model.<method>."""
    calls = []
    original = getattr(model, method)

    def wrapped(x, *rest):
        calls.append((x.clone(), model._streaming_state.exec_mask.clone()))
        return original(x, *rest)

    monkeypatch.setattr(model, method, wrapped)
    return calls


def test_native_generator_delays_and_shapes(monkeypatch):
    model = _native()
    gen = DuplexGenerator(model, DuplexSampling(temperature=1.0, streams={"content": {"top_k": 3}}, seed=5))
    fed = _record(monkeypatch, model, "step")
    steps, delay = 12, LAYOUT.max_delay
    user = torch.randint(0, K, (2, 1, steps), generator=torch.Generator().manual_seed(0))
    outputs = []
    with gen.streaming(2):
        for t in range(steps):
            out = gen.step(user[:, :, t])
            if t < delay:
                assert out is None
            else:
                assert out.shape == (2, 2) and out.dtype == torch.long
                outputs.append(out)
    speak = torch.stack(outputs, dim=2)                                         # [B, 2, steps - D]
    assert (speak[:, 0] != LAYOUT["content"].pad).all() and (speak[:, 1] != LAYOUT["speak"].pad).all()
    assert (speak[:, 0, 0] == LAYOUT["content"].filler_id).all()               # nothing predicts frame 0
    known = steps - delay
    tokens = torch.cat([user[:, :, :known], speak], dim=1)                     # undelayed [B, N, known]
    frames = torch.stack([x for x, _ in fed], dim=2)                           # fed delayed frames [B, N, steps]
    assert torch.equal(frames[:, :, :known], LAYOUT.delay(tokens)[:, :, :known])


def test_native_generator_staggered_items():
    model = _native()
    gen = DuplexGenerator(model)
    with gen.streaming(2):
        gen.set_exec_mask(torch.tensor([True, False]))
        assert gen.step(torch.zeros(2, 1, dtype=torch.long)) is None
        assert gen.step(torch.zeros(2, 1, dtype=torch.long)) is None
        out = gen.step(torch.zeros(2, 1, dtype=torch.long))
        assert (out[0] >= 0).all() and (out[1] == -1).all()  # item 1 is paused
        gen.set_exec_mask(torch.tensor([True, True]))
        gen.reset_streaming(torch.tensor([True, False]))
        assert gen.step(torch.zeros(2, 1, dtype=torch.long)) is None  # both in their first max_delay steps
    with pytest.raises(ConfigError, match="not speak streams"):
        DuplexGenerator(model, DuplexSampling(streams={"listen": {"temperature": 0.5}}))


def _generate(gen, user):
    steps = user.shape[-1]
    out = []
    with gen.streaming(user.shape[0]):
        for t in range(steps):
            y = gen.step(user[:, :, t])
            out.append(torch.full((user.shape[0], 2), -1) if y is None else y)
    return torch.stack(out, dim=2)


def test_native_generator_is_seeded_and_batch_independent():
    model = _native()
    user = torch.randint(0, K, (2, 1, 10), generator=torch.Generator().manual_seed(1))
    a = _generate(DuplexGenerator(model, DuplexSampling(seed=3)), user)
    b = _generate(DuplexGenerator(model, DuplexSampling(seed=3)), user)
    c = _generate(DuplexGenerator(model, DuplexSampling(seed=4)), user)
    assert torch.equal(a, b) and not torch.equal(a, c)
    alone = _generate(DuplexGenerator(model, DuplexSampling(seed=3)), user[:1])
    assert torch.equal(alone[0], a[0])
    greedy = _generate(DuplexGenerator(model, DuplexSampling(temperature=0, seed=None)), user)
    assert torch.equal(greedy, _generate(DuplexGenerator(model, DuplexSampling(temperature=0, seed=9)), user))


def test_native_generator_snapshot_replays():
    model = _native()
    gen = DuplexGenerator(model, DuplexSampling(seed=0))
    user = torch.randint(0, K, (2, 1, 8), generator=torch.Generator().manual_seed(2))
    with gen.streaming(2):
        for t in range(4):
            gen.step(user[:, :, t])
        snap = gen.get_streaming_state()
        first = [gen.step(user[:, :, t]) for t in range(4, 8)]
        gen.set_streaming_state(snap)
        again = [gen.step(user[:, :, t]) for t in range(4, 8)]
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))


@pytest.mark.parametrize("fmt", [FIXED, CONTROLLED])
def test_tdm_generator_follows_the_grammar(monkeypatch, fmt):
    model = _tdm(fmt)
    gen = TDMGenerator(model, DuplexSampling(seed=1))
    fed = _record(monkeypatch, model, "step_chunk")
    user = torch.randint(0, K, (2, 8), generator=torch.Generator().manual_seed(0))
    chunks = [(0, 3), (3, 6), (6, 8)]  # the last one short
    outputs = []
    with gen.streaming(2):
        for start, stop in chunks:
            out = gen.step(user[:, start:stop])
            assert out.shape == (2, stop - start) and ((out >= 0) & (out < K)).all()
            outputs.append(out)
        pending = list(gen._streaming_state.pending)
    speak = torch.cat(outputs, dim=1)
    for b in range(2):
        tokens = [int(t) for x, run in fed if run[b] for t in x[b]] + [pending[b]]
        listen, decoded = fmt.decode(tokens)
        assert listen.tolist() == user[b].tolist() and decoded.tolist() == speak[b].tolist()


def test_tdm_generator_pauses_resets_and_seeds():
    model = _tdm(CONTROLLED)
    user = torch.randint(0, K, (2, 9), generator=torch.Generator().manual_seed(4))

    def run(seed, batch=2, pause=False):
        gen = TDMGenerator(model, DuplexSampling(seed=seed))
        outs = []
        with gen.streaming(batch):
            for c in range(3):
                if pause:
                    gen.set_exec_mask(torch.tensor([True, c != 1]))
                outs.append(gen.step(user[:batch, 3 * c:3 * c + 3]))
        return torch.cat(outs, dim=1)

    a, b, c = run(2), run(2), run(3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(run(2, batch=1)[0], a[0])
    paused = run(2, pause=True)
    assert (paused[1, 3:6] == -1).all() and torch.equal(paused[0], a[0])
    gen = TDMGenerator(model)
    with gen.streaming(1):
        gen.step(user[:1, :2])  # a short last chunk
        with pytest.raises(StreamingError, match="short last chunk"):
            gen.step(user[:1, :3])
        gen.reset_streaming()
        assert gen.step(user[:1, :3]).shape == (1, 3)
    with pytest.raises(ConfigError, match="native"):
        TDMGenerator(_native())
    with pytest.raises(ConfigError, match="not speak streams"):
        TDMGenerator(model, DuplexSampling(streams={"speak": {"top_k": 2}}))


def _recorded_speak(b, t, seed):
    """Recorded frames of the model side [b, 2, t]: content tokens (no pad) and speak units."""
    g = torch.Generator().manual_seed(seed)
    content = torch.randint(0, LAYOUT["content"].pad, (b, t), generator=g)
    return torch.stack([content, torch.randint(0, K, (b, t), generator=g)], dim=1)


@pytest.mark.parametrize("make", [_native, lambda: _depth()], ids=["heads", "depth"])
def test_native_generator_prompt_feeds_the_recording(monkeypatch, make):
    model = make()
    gen = DuplexGenerator(model, DuplexSampling(seed=0))
    fed = _record(monkeypatch, model, "step")
    steps, prompt, delay = 12, 6, LAYOUT.max_delay
    user = torch.randint(0, K, (2, 1, steps), generator=torch.Generator().manual_seed(3))
    recorded = _recorded_speak(2, steps, 4)
    out = []
    with gen.streaming(2):
        for t in range(steps):
            out.append(gen.step(user[:, :, t], recorded[:, :, t] if t < prompt else None))
    frames = torch.stack([x for x, _ in fed], dim=2)                          # fed delayed frames [B, N, steps]
    expected = LAYOUT.delay(torch.cat([user, recorded], dim=1))               # the recording, delayed
    for k, spec in enumerate(LAYOUT.streams):
        known = steps if spec.role == "listen" else prompt + spec.delay     # given positions, held past the prompt
        assert torch.equal(frames[:, k, :known], expected[:, k, :known]), spec.name
    assert frames[:, SPEAK, prompt + delay:].ne(expected[:, SPEAK, prompt + delay:steps]).any()  # then sampled
    returned = torch.stack(out[delay:], dim=2)                                # frames 0 .. steps - D - 1
    assert torch.equal(returned[:, :, :prompt], recorded[:, :, :prompt])


def test_native_generator_forces_one_stream_and_checks_the_frame():
    model = _native()
    user = torch.randint(0, K, (2, 1, 10), generator=torch.Generator().manual_seed(5))
    recorded = _recorded_speak(2, 10, 6)
    forced = recorded.clone()
    forced[:, 1] = -1                                                         # content given, speak sampled
    gen = DuplexGenerator(model, DuplexSampling(seed=1))
    with gen.streaming(2):
        out = [gen.step(user[:, :, t], forced[:, :, t]) for t in range(10)]
    returned = torch.stack(out[LAYOUT.max_delay:], dim=2)
    assert torch.equal(returned[:, 0], recorded[:, 0, :8]) and not torch.equal(returned[:, 1], recorded[:, 1, :8])
    with gen.streaming(2):
        with pytest.raises(StreamingError, match=r"speak_frame takes integer tokens \[2, 2\]"):
            gen.step(user[:, :, 0], recorded[:, :, :2])
        pad = recorded[:, :, 0].clone()
        pad[1, 1] = LAYOUT["speak"].pad
        with pytest.raises(StreamingError, match=f"stream 'speak' holds {LAYOUT['speak'].pad}"):
            gen.step(user[:, :, 0], pad)


@pytest.mark.parametrize("fmt", [FIXED, CONTROLLED])
def test_tdm_generator_prompt_is_the_encoded_recording(monkeypatch, fmt):
    model = _tdm(fmt)
    gen = TDMGenerator(model, DuplexSampling(seed=2))
    fed = _record(monkeypatch, model, "step_chunk")
    user = torch.randint(0, K, (2, 12), generator=torch.Generator().manual_seed(7))
    recorded = torch.randint(1, K, (2, 12), generator=torch.Generator().manual_seed(8))
    recorded[:, 3:6] = 0                                                      # a silent chunk: [listen] if controlled
    given = recorded.clone()
    given[1, 6:9] = -1                                                        # row 1 samples its third chunk
    outputs = []
    with gen.streaming(2):
        for c in range(4):
            chunk = slice(3 * c, 3 * c + 3)
            outputs.append(gen.step(user[:, chunk], given[:, chunk] if c < 3 else None))
        pending = list(gen._streaming_state.pending)
    speak = torch.cat(outputs, dim=1)
    assert torch.equal(speak[0, :9], recorded[0, :9]) and torch.equal(speak[1, :6], recorded[1, :6])
    for b, prompt in ((0, 9), (1, 6)):
        tokens = [int(t) for x, run in fed if run[b] for t in x[b]] + [pending[b]]
        head = fmt.encode(user[b, :prompt].numpy(), recorded[b, :prompt].numpy())[0].tolist()
        assert tokens[:len(head)] == head                                    # the prompt as TDMFormat encodes it
        listen, decoded = fmt.decode(tokens)
        assert listen.tolist() == user[b].tolist() and decoded.tolist() == speak[b].tolist()
    with gen.streaming(2), pytest.raises(StreamingError, match="speak_chunk row 1"):
        gen.step(user[:, :3], torch.tensor([[1, 2, 3], [1, -1, 3]]))


# ------------------------------------------------------------------------------------------------ depth decoder
DEPTH = {"depth_layers": 2, "depth_dim": 16, "depth_heads": 2}
CONTENT, SPEAK = LAYOUT.index("content"), LAYOUT.index("speak")  # the two speak streams, in layout order


def _depth(context=64, seed=0):
    torch.manual_seed(seed)
    config = DuplexConfig(layout=LAYOUT, backbone=BACKBONE, context=context, tokenizer={"name": "tok"},
                          frame_rate=50.0, **DEPTH)
    return DuplexLM.from_scratch(config).eval()


def test_depth_layers_zero_is_the_parallel_heads(tmp_path):
    model = _native()
    torch.manual_seed(0)
    same = DuplexLM.from_scratch(DuplexConfig(layout=LAYOUT, backbone=BACKBONE, context=64, tokenizer={"name": "tok"},
                                              frame_rate=50.0, depth_layers=0, depth_dim=8, depth_heads=2)).eval()
    assert model.depth is None and same.depth is None and model.config.depth_layers == 0
    assert model.state_dict().keys() == same.state_dict().keys()
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())
    x = torch.stack([_frames(model, 7, s) for s in range(2)])
    assert all(torch.equal(v, same(x)[k]) for k, v in model(x).items())
    # a config saved before the depth keys existed loads as parallel heads
    path = model.save_pretrained(tmp_path / "old")
    meta = json.loads((path / "config.json").read_text())
    for key in ("depth_layers", "depth_dim", "depth_heads"):
        del meta["config"][key]
    (path / "config.json").write_text(json.dumps(meta))
    old = DuplexLM.from_pretrained(path)
    assert old.depth is None and all(torch.equal(v, old(x)[k]) for k, v in model(x).items())
    with pytest.raises(ConfigError, match="parallel heads"):
        model.depth_logits(torch.zeros(1, 32), torch.zeros(1, 0, dtype=torch.long))


def test_depth_config_errors():
    with pytest.raises(ConfigError, match="a 'tdm' model has one stream"):
        DuplexConfig(format="tdm", tdm=FIXED, backbone=BACKBONE, depth_layers=1)
    with pytest.raises(ConfigError, match="not a multiple of depth_heads"):
        DuplexConfig(layout=LAYOUT, backbone=BACKBONE, depth_layers=1, depth_dim=10, depth_heads=4)
    for bad in ({"depth_layers": -1}, {"depth_dim": 0}, {"depth_heads": True}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} must be an integer"):
            DuplexConfig(layout=LAYOUT, backbone=BACKBONE, **bad)


def test_depth_decoder_is_causal_inside_the_frame():
    """Position t predicts frame t + 1: content (speak stream 0) reads no token of frame t + 1, speak (stream 1)
    reads content's and not its own."""
    model = _depth()
    x = _frames(model, 8, 0)[None]
    t = 4
    base = model(x)
    for stream, moves in ((CONTENT, {"speak"}), (SPEAK, set())):
        y = x.clone()
        y[0, stream, t + 1] = (y[0, stream, t + 1] + 1) % model.vocab_sizes[stream]
        out = model(y)
        for name in ("content", "speak"):
            assert torch.equal(out[name][:, :t], base[name][:, :t])  # the past is the past
            same = torch.allclose(out[name][:, t], base[name][:, t], atol=1e-6)
            assert same == (name not in moves), (stream, name)
    # the last position has no next frame: stream 0 exact, stream 1 read nothing (ZERO)
    short = model(x[..., :t + 1])
    torch.testing.assert_close(short["content"][:, t], base["content"][:, t])
    hidden = model.backbone(inputs_embeds=model.embed(x[..., :t + 1]), use_cache=False).last_hidden_state
    unconditioned = model.logits(hidden)
    torch.testing.assert_close(short["speak"], torch.cat([base["speak"][:, :t], unconditioned["speak"][:, t:]], 1))
    previous = torch.full((1, 1), ZERO)
    torch.testing.assert_close(model.depth_logits(hidden[:, t], previous), short["speak"][:, t])


def test_depth_step_with_the_data_tokens_equals_the_teacher_forced_forward():
    model = _depth()
    x = torch.stack([_frames(model, 9, s) for s in range(2)])  # [2, N, 9]
    ref = model(x)
    chosen = []

    def teacher(name, logits):
        """The data's tokens of the next frame (nothing after the last one)."""
        t = len(chosen) // 2
        chosen.append(name)
        return x[:, LAYOUT.index(name), t + 1] if t + 1 < 9 else torch.full((2,), ZERO)

    with model.streaming(2):
        for t in range(9):
            out = model.step(x[:, :, t], teacher)
            assert chosen[-2:] == ["content", "speak"]
            for name, logits in out.items():
                torch.testing.assert_close(logits, ref[name][:, t], atol=2e-5, rtol=1e-4)

    def nothing(name, logits):
        return torch.full((3,), ZERO)

    # staggered, paused and reset streams, with nothing read of the next frame (the forward's last position)
    assert _run_schedule(model, _native_schedule(model), 3, lambda f: model.step(f[..., 0], nothing)) == 42
    # without `choose`: the argmax
    with model.streaming(2):
        greedy = model.step(x[:, :, 0])
    with model.streaming(2):
        argmax = model.step(x[:, :, 0], lambda name, logits: logits.argmax(-1))
    assert all(torch.equal(v, argmax[k]) for k, v in greedy.items())


def test_depth_save_and_load_round_trip(tmp_path):
    model = _depth(context=7)
    path = model.save_pretrained(tmp_path / "depth")
    assert json.loads((path / "config.json").read_text())["config"]["depth_layers"] == 2
    loaded = DuplexLM.from_pretrained(path)
    assert loaded.config == model.config and loaded.depth is not None
    state = loaded.state_dict()
    assert set(state) == set(model.state_dict()) and any(k.startswith("depth.layers.1.") for k in state)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    x = _frames(model, 9, 1)[None]
    assert all(torch.equal(loaded(x)[name], logits) for name, logits in model(x).items())


def test_depth_text_lm_init_keeps_the_transformer(text_lm_dir):
    text = LlamaForCausalLM.from_pretrained(text_lm_dir).model.state_dict()
    model = DuplexLM.from_text_lm(text_lm_dir, layout=LAYOUT, context=16, **DEPTH)
    assert model.depth is not None and model.heads["speak"].in_features == 16
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in text.items() if k != "embed_tokens.weight")


def _depth_generate(model, user, seed, monkeypatch=None):
    """(speak frames [B, 2, steps] (-1: none yet), frames fed [B, N, steps], previous tokens read per step)."""
    fed, read = [], []
    if monkeypatch is not None:
        step, depth_logits = model.step, model.depth_logits
        monkeypatch.setattr(model, "step", lambda frame, *a: fed.append(frame.clone()) or step(frame, *a))
        monkeypatch.setattr(model, "depth_logits", lambda h, p: read.append(p.clone()) or depth_logits(h, p))
    gen = DuplexGenerator(model, DuplexSampling(seed=seed))
    out = []
    with gen.streaming(user.shape[0]):
        for t in range(user.shape[-1]):
            y = gen.step(user[:, :, t])
            out.append(torch.full((user.shape[0], 2), -1) if y is None else y)
    return torch.stack(out, dim=2), fed, read


def test_depth_generator_is_seeded_and_feeds_its_samples_back(monkeypatch):
    model = _depth()
    steps, delay = 10, LAYOUT.max_delay
    user = torch.randint(0, K, (2, 1, steps), generator=torch.Generator().manual_seed(1))
    a, _, _ = _depth_generate(model, user, 3)
    b, _, _ = _depth_generate(model, user, 3)
    c, _, _ = _depth_generate(model, user, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(_depth_generate(model, user[:1], 3)[0][0], a[0])  # batch independent
    got, fed, read = _depth_generate(model, user, 3, monkeypatch)
    assert torch.equal(got, a)
    frames = torch.stack(fed, dim=2)                                            # delayed frames fed [B, N, steps]
    known = steps - delay
    tokens = torch.cat([user[:, :, :known], a[..., delay:]], dim=1)             # undelayed [B, N, known]
    assert torch.equal(frames[:, :, :known], LAYOUT.delay(tokens)[:, :, :known])
    # per step, content's logits read nothing and speak's read the content token just drawn for the next frame,
    # which the next step feeds (pads while the delay lasts)
    assert [p.shape[1] for p in read] == [0, 1] * steps
    for t in range(steps - 1):
        assert torch.equal(read[2 * t + 1][:, 0], frames[:, CONTENT, t + 1])
