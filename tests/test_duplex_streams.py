"""Duplex token streams (textless.dialogue.streams) on hand-made arrays with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textless.dialogue.streams import (
    IGNORE,
    ZERO,
    StreamLayout,
    StreamSpec,
    TDMFormat,
    TDMSwitch,
    content_layout,
    dialogue_streams,
    listen_speak_layout,
    place_content,
)
from textless.errors import ConfigError


# --------------------------------------------------------------------------------------------------- specs, layouts
def test_stream_spec_ids_and_validation():
    spec = StreamSpec("content", "speak", 4, ("pad", "wait"), delay=2, filler="wait", filler_weight=0.01)
    assert (spec.vocab_size, spec.pad, spec.token("wait"), spec.filler_id) == (6, 4, 5, 5)
    assert StreamSpec("speak", "speak", 7, filler=3).filler_id == 3
    assert StreamSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(KeyError, match="no special 'eos'"):
        spec.token("eos")
    with pytest.raises(ConfigError, match="including 'pad'"):
        StreamSpec("a", "speak", 4, ("wait",), filler="wait")
    with pytest.raises(ConfigError, match="role must be one of"):
        StreamSpec("a", "talk", 4)
    with pytest.raises(ConfigError, match=r"filler must be a special's name or a unit in \[0, 4\)"):
        StreamSpec("a", "speak", 4, filler=4)
    with pytest.raises(ConfigError, match="filler 'wait' is not one of its specials"):
        StreamSpec("a", "speak", 4, filler="wait")
    with pytest.raises(ConfigError, match="delay must be an integer >= 0"):
        StreamSpec("a", "speak", 4, delay=-1)
    with pytest.raises(ConfigError, match="unknown StreamSpec keys: colour"):
        StreamSpec.from_dict({**spec.to_dict(), "colour": 1})
    with pytest.raises(ConfigError, match="names must be distinct"):
        StreamLayout((StreamSpec("a", "speak", 4), StreamSpec("a", "listen", 4)))
    with pytest.raises(ConfigError, match="at least one speak stream"):
        StreamLayout((StreamSpec("a", "listen", 4),))


def _layout() -> StreamLayout:
    # A: listen, 5 units, pad 5; B: speak, 4 units, pad 4, wait 5, delay 2; C: speak, 5 units, pad 5, delay 1
    return StreamLayout((
        StreamSpec("A", "listen", 5, filler=0),
        StreamSpec("B", "speak", 4, ("pad", "wait"), delay=2, filler="wait", loss_weight=0.5, filler_weight=0.01),
        StreamSpec("C", "speak", 5, delay=1, filler=4, loss_weight=2.0),
    ))


TOKENS = np.array([[[0, 1, 2, 3], [3, 5, 1, ZERO], [4, 4, 0, 1]]])  # [B=1, N=3, T=4]
DELAYED = np.array([[[0, 1, 2, 3, 5, 5], [4, 4, 3, 5, 1, ZERO], [5, 4, 4, 0, 1, 5]]])


def test_layout_indices_and_dict_round_trip():
    layout = _layout()
    assert (layout.max_delay, layout.speak, layout.listen, layout.index("C"), layout.names) == (
        2, (1, 2), (0,), 2, ("A", "B", "C"))
    assert layout["B"].delay == 2
    assert StreamLayout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout
    with pytest.raises(KeyError, match="no stream 'D'"):
        layout.index("D")


def test_delay_writes_each_stream_at_its_delay_with_its_pad_and_undelay_inverts_it():
    layout = _layout()
    delayed = layout.delay(TOKENS)
    assert delayed.dtype == np.int64
    np.testing.assert_array_equal(delayed, DELAYED)
    np.testing.assert_array_equal(layout.undelay(delayed), TOKENS)
    np.testing.assert_array_equal(layout.delay(TOKENS[0]), DELAYED[0])  # unbatched [N, T]
    batch = np.stack([TOKENS[0], TOKENS[0][:, ::-1].clip(0)])            # two items of a batch are independent
    np.testing.assert_array_equal(layout.undelay(layout.delay(batch)), batch)
    np.testing.assert_array_equal(layout.delay(batch)[1, 1], [4, 4, 0, 1, 5, 3])
    as_torch = layout.delay(torch.from_numpy(TOKENS))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.int64
    assert torch.equal(as_torch, torch.from_numpy(DELAYED))
    assert torch.equal(layout.undelay(as_torch), torch.from_numpy(TOKENS))
    # zero frames: only the pads
    np.testing.assert_array_equal(layout.delay(np.zeros((3, 0), np.int64)), [[5, 5], [4, 4], [5, 5]])


def test_delay_refuses_out_of_vocabulary_tokens_and_wrong_shapes():
    layout = _layout()
    bad = TOKENS.copy()
    bad[0, 1, 0] = 6  # B's vocabulary is [0, 6)
    with pytest.raises(ValueError, match=r"stream 'B' holds token 6, outside \[0, 6\) and not ZERO"):
        layout.delay(bad)
    bad[0, 1, 0] = -2
    with pytest.raises(ValueError, match="stream 'B' holds token -2"):
        layout.delay(torch.from_numpy(bad))
    with pytest.raises(ValueError, match=r"expected shape \[..., 3 streams, frames\], got \[1, 2, 4\]"):
        layout.delay(TOKENS[:, :2])
    with pytest.raises(ValueError, match="must be integers"):
        layout.delay(TOKENS.astype(np.float32))
    with pytest.raises(ValueError, match=">= 2 frames"):
        layout.undelay(DELAYED[..., :1])


def test_labels_mask_listen_streams_delay_pads_and_zero_inputs_and_weight_fillers():
    layout = _layout()
    labels, weights = layout.labels(DELAYED)
    assert labels.dtype == np.int64 and weights.dtype == np.float32
    i = IGNORE
    np.testing.assert_array_equal(labels[0], [[i] * 6,                 # listen: never a label
                                              [i, i, 3, 5, 1, i],      # delay pads and the ZERO input: none
                                              [i, 4, 4, 0, 1, i]])
    np.testing.assert_allclose(weights[0], [[0] * 6,
                                            [0, 0, 0.5, 0.01, 0.5, 0],  # wait (the filler) weighs 0.01
                                            [0, 2, 2, 2, 2, 0]])        # filler_weight None: loss_weight
    t_labels, t_weights = layout.labels(torch.from_numpy(DELAYED))
    assert torch.equal(t_labels, torch.from_numpy(labels)) and torch.equal(t_weights, torch.from_numpy(weights))


def test_listen_speak_layout():
    layout = listen_speak_layout(100, silence_unit=7, speak_delay=1)
    assert layout.names == ("listen", "speak") and layout.speak == (1,) and layout.listen == (0,)
    assert [(s.units, s.vocab_size, s.delay, s.filler_id) for s in layout.streams] == [(100, 101, 0, 7),
                                                                                      (100, 101, 1, 7)]


# ------------------------------------------------------------------------------------------------- dialogue streams
# 10 Hz frames, silence unit 0, min_silence 0.2 s = 2 frames. The speak channel (channel 1):
#   frame: 0  1  2  3  4  5  6  7  8  9 10 11 12
SPEAK = [0, 1, 2, 0, 3, 0, 0, 5, 0, 0, 6, 6, 7]
LISTEN = [9, 9, 0, 0, 0, 0, 8, 8, 8, 0, 0, 0, 0]
# IPUs: [1, 5) (its 1-frame pause is inside it), [7, 8), [10, 13); contents [1, 2, 0, 3], [5], [6, 7] (deduplicated)
W = 11  # the content stream's "wait" (10 units, then pad 10, wait 11)
LEAD = [W, 1, 2, 0, 3, W, W, 5, W, W, 6, 7, W]
FOLLOW = [W, W, W, W, 1, 2, 0, 3, 5, W, W, W, 6]  # 5 pushed from 7 to 8; the 7 after 6 is cut at the end


def _streams(mode: str, **kw) -> np.ndarray:
    layout = content_layout(10, silence_unit=0, content_units=10, mode=mode)
    return dialogue_streams(np.array([LISTEN, SPEAK]), 1, layout, silence_units={0}, frame_rate=10, **kw)


def test_content_layout_streams():
    layout = content_layout(10, silence_unit=0, content_units=10, mode="follow", content_delay=1)
    assert layout.names == ("listen", "content", "speak") and layout.speak == (1, 2)
    content = layout["content"]
    assert (content.pad, content.filler_id, content.filler_weight, content.source, content.delay) == (
        10, 11, 0.01, "follow", 1)
    with pytest.raises(ConfigError, match="content mode must be one of"):
        content_layout(10, 0, 10, mode="ahead")


def test_dialogue_streams_lead_and_follow_placement():
    np.testing.assert_array_equal(_streams("lead"), [LISTEN, LEAD, SPEAK])
    np.testing.assert_array_equal(_streams("follow"), [LISTEN, FOLLOW, SPEAK])
    # a 300 ms min_silence merges all three (their 200 ms silences are inside): one IPU [1, 13)
    np.testing.assert_array_equal(_streams("lead", min_silence=0.3)[1], [W, 1, 2, 0, 3, 0, 5, 0, 6, 7, W, W, W])
    np.testing.assert_array_equal(_streams("follow", min_silence=0.3)[1], [W] * 12 + [1])
    # the content hook (e.g. BPE): here the length of each IPU's deduplicated units
    np.testing.assert_array_equal(_streams("follow", content=lambda u: [len(u)])[1],
                                  [W, W, W, W, 4, W, W, 1, W, W, W, W, 2])
    with pytest.raises(ValueError, match=r"stream 'content' \(lead\) gets id 11, outside its units \[0, 10\)"):
        _streams("lead", content=lambda u: u + 10)


def test_dialogue_streams_swaps_channels_and_fills_absent_streams_with_zero():
    layout = StreamLayout((*content_layout(10, 0, 10, mode="lead").streams,
                           StreamSpec("text", "speak", 32, source="absent")))
    out = dialogue_streams(np.array([LISTEN, SPEAK]), 0, layout, silence_units=[0], frame_rate=10)
    np.testing.assert_array_equal(out, [SPEAK, [9, W, W, W, W, W, 8, W, W, W, W, W, W], LISTEN, [ZERO] * 13])
    labels, weights = layout.labels(layout.delay(out))
    assert (labels[3] == IGNORE).all() and (weights[3] == 0).all()   # an absent stream has no loss
    np.testing.assert_allclose(weights[1], [1.0] + [0.01] * 5 + [1.0] + [0.01] * 6)
    with pytest.raises(ValueError, match="speak_channel must be 0 or 1"):
        dialogue_streams(np.array([LISTEN, SPEAK]), 2, layout, silence_units=[0])
    with pytest.raises(ValueError, match=r"integer units \[2 channels, frames\]"):
        dialogue_streams(np.array([SPEAK]), 0, layout, silence_units=[0])
    with pytest.raises(ValueError, match=r"stream 'listen' \(listen\) gets id 12, outside its units"):
        dialogue_streams(np.array([LISTEN, [12] * 13]), 0, layout, silence_units=[0])


def test_place_content_pushes_later_contents_and_cuts_at_the_end():
    out = place_content([np.array([1, 2, 3]), np.array([4]), np.array([5, 6])], [0, 1, 4], 6, filler=9)
    np.testing.assert_array_equal(out, [1, 2, 3, 4, 5, 6])
    out = place_content([np.array([1, 2, 3]), np.array([4, 5])], [2, 3], 6, filler=9)
    np.testing.assert_array_equal(out, [9, 9, 1, 2, 3, 4])  # 5 would fall at frame 6: cut
    np.testing.assert_array_equal(place_content([np.array([1])], [7], 6, filler=9), [9] * 6)


# ---------------------------------------------------------------------------------------------------------- TDM
# K = 10 units: listen 0..9, speak 10..19, <listen> 20, <speak> 21, [speak] 22, [listen] 23, <bos> 24, <pad> 25
L, S, SW_SPEAK, SW_LISTEN, BOS, PAD = 20, 21, 22, 23, 24, 25
LISTEN_T = [1, 2, 3, 4, 5, 6, 7]


def test_tdm_vocabulary_chunks_and_dict_round_trip():
    fmt = TDMFormat(10, chunk_frames=3, controlled=True, silence_unit=0, silence_units=[9, 0])
    assert (fmt.vocab_size, fmt.token("<listen>"), fmt.token("[listen]"), fmt.bos, fmt.pad) == (26, L, SW_LISTEN,
                                                                                              BOS, PAD)
    assert fmt.silence_units == (0, 9)
    assert [fmt.token_name(t) for t in (3, 13, 22, 26)] == ["listen unit 3", "speak unit 3", "[speak]",
                                                             "outside the vocabulary [0, 26)"]
    assert fmt.chunk_boundaries(7) == [(0, 3), (3, 6), (6, 7)]
    assert fmt.chunk_boundaries(6) == [(0, 3), (3, 6)] and fmt.chunk_boundaries(0) == []
    assert TDMFormat.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt
    with pytest.raises(ConfigError, match="controlled TDM format needs silence_unit"):
        TDMFormat(10, controlled=True)
    with pytest.raises(ConfigError, match=r"silence unit 10 is outside \[0, 10\)"):
        TDMFormat(10, silence_unit=10)
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1"):
        TDMFormat(10, chunk_frames=0)


def test_tdm_fixed_chunks_encode_and_decode():
    fmt = TDMFormat(10, chunk_frames=3)
    speak = [0, 0, 9, 9, 0, 0, 1]
    tokens, labels, weights = fmt.encode(np.array(LISTEN_T), np.array(speak))
    expected = [BOS, L, 1, 2, 3, S, 10, 10, 19, L, 4, 5, 6, S, 19, 10, 10, L, 7, S, 11]
    np.testing.assert_array_equal(tokens, expected)
    speak_unit = (tokens >= 10) & (tokens < 20)
    np.testing.assert_array_equal(labels, np.where(speak_unit, tokens, IGNORE))
    np.testing.assert_array_equal(weights, speak_unit.astype(np.float32))
    listen, decoded = fmt.decode(np.concatenate([tokens, [PAD, PAD]]))  # trailing pads are batch padding
    np.testing.assert_array_equal(listen, LISTEN_T)
    np.testing.assert_array_equal(decoded, speak)
    # listen units get a loss too with listen_loss_weight; tags never
    _, labels, weights = TDMFormat(10, chunk_frames=3, listen_loss_weight=0.5).encode(np.array(LISTEN_T),
                                                                                      np.array(speak))
    listen_unit = tokens < 10
    np.testing.assert_array_equal(labels, np.where(speak_unit | listen_unit, tokens, IGNORE))
    np.testing.assert_allclose(weights, speak_unit + 0.5 * listen_unit)
    # no frames: only <bos>
    tokens, _, _ = fmt.encode(np.array([], np.int64), np.array([], np.int64))
    np.testing.assert_array_equal(tokens, [BOS])
    assert [len(x) for x in fmt.decode(tokens)] == [0, 0]


def test_tdm_controlled_encode_and_decode():
    fmt = TDMFormat(10, chunk_frames=3, controlled=True, silence_unit=0)
    speak = [0, 0, 0, 9, 0, 0, 0]
    tokens, labels, weights = fmt.encode(np.array(LISTEN_T), np.array(speak))
    np.testing.assert_array_equal(tokens, [BOS, L, 1, 2, 3, SW_LISTEN, L, 4, 5, 6, SW_SPEAK, 19, 10, 10, L, 7,
                                           SW_LISTEN])
    scored = [5, 10, 11, 12, 13, 16]  # both switch tokens and the speak units
    np.testing.assert_array_equal(np.flatnonzero(weights), scored)
    np.testing.assert_array_equal(np.flatnonzero(labels != IGNORE), scored)
    np.testing.assert_array_equal(labels[scored], tokens[scored])
    listen, decoded = fmt.decode(tokens)
    np.testing.assert_array_equal(listen, LISTEN_T)
    np.testing.assert_array_equal(decoded, speak)
    # with silence units {0, 9}, the middle chunk is silent: [listen], decoded as silence_unit frames
    fmt = TDMFormat(10, chunk_frames=3, controlled=True, silence_unit=0, silence_units=(0, 9))
    tokens, _, _ = fmt.encode(np.array(LISTEN_T), np.array([5, 5, 5, 9, 0, 9, 4]))
    np.testing.assert_array_equal(tokens, [BOS, L, 1, 2, 3, SW_SPEAK, 15, 15, 15, L, 4, 5, 6, SW_LISTEN, L, 7,
                                           SW_SPEAK, 14])
    np.testing.assert_array_equal(fmt.decode(tokens)[1], [5, 5, 5, 0, 0, 0, 4])


def test_tdm_encode_and_decode_refuse_bad_input():
    fmt = TDMFormat(10, chunk_frames=3)
    with pytest.raises(ValueError, match=r"TDM speak: unit 10 is outside \[0, 10\)"):
        fmt.encode(np.array([1, 2]), np.array([1, 10]))
    with pytest.raises(ValueError, match="2 listen frames but 3 speak frames"):
        fmt.encode(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"token 0: illegal token 20 \(<listen>\) in state 'start', expecting <bos>"):
        fmt.decode([L, 1, S, 11])
    with pytest.raises(ValueError, match=r"token 4: illegal token 22 \(\[speak\]\) in state 'speaking', "
                                         r"expecting <speak>"):
        fmt.decode([BOS, L, 1, 2, SW_SPEAK, 11, 12])
    with pytest.raises(ValueError, match=r"ends inside a chunk \(state 'speaking', 1 speak units left\)"):
        fmt.decode([BOS, L, 1, 2, 3, S, 11, 12])
    with pytest.raises(ValueError, match="ends inside a chunk"):
        fmt.decode([BOS, L, 1])
    with pytest.raises(ValueError, match="ends inside a chunk"):
        fmt.decode([])
    with pytest.raises(ValueError, match="token 7: only the last chunk may be shorter than 3 frames"):
        fmt.decode([BOS, L, 1, 2, S, 11, 12, L, 3, 4, 5, S, 11, 12, 13])


def _mask(*ids) -> list[int]:
    return sorted(i for part in ids for i in (part if isinstance(part, range) else [part]))


def test_tdm_switch_controlled_states():
    fmt = TDMFormat(10, chunk_frames=2, controlled=True, silence_unit=0)
    sw = TDMSwitch(fmt)
    listen_units, speak_units = range(10), range(10, 20)
    steps = [  # (state before, left, allowed ids, token taken)
        ("start", 0, _mask(BOS), BOS),
        ("listening", 0, _mask(L), L),
        ("listening", 2, _mask(listen_units), 4),
        ("listening", 1, _mask(listen_units), 5),
        ("deciding", 0, _mask(SW_SPEAK, SW_LISTEN), SW_SPEAK),
        ("speaking", 2, _mask(speak_units), 13),
        ("speaking", 1, _mask(speak_units), 13),
        ("listening", 0, _mask(L), L),
        ("listening", 2, _mask(listen_units), 1),
        ("listening", 1, _mask(listen_units), 1),
        ("deciding", 0, _mask(SW_SPEAK, SW_LISTEN), SW_LISTEN),
        ("listening", 0, _mask(L), L),
    ]
    for state, left, allowed, token in steps:
        assert (sw.state, sw.left) == (state, left)
        mask = sw.allowed()
        assert mask.dtype == torch.bool and mask.shape == (26,)
        assert torch.nonzero(mask).flatten().tolist() == allowed
        assert [sw.legal(t) for t in range(-1, 27)] == [False] + mask.tolist() + [False]
        sw.advance(token)
    with pytest.raises(ValueError, match=r"illegal token 13 \(speak unit 3\) in state 'listening', 2 user units left"):
        sw.advance(13)
    sw.advance(3)
    sw.end_chunk()  # a short chunk: one unit heard, so one speak unit after [speak]
    with pytest.raises(ValueError, match=r"illegal token 21 \(<speak>\) in state 'deciding', expecting \[speak\] or "
                                         r"\[listen\]"):
        sw.advance(S)
    sw.advance(SW_SPEAK)
    assert (sw.state, sw.left) == ("speaking", 1)
    with pytest.raises(ValueError, match=r"illegal token 25 \(<pad>\) in state 'speaking', 1 speak units left"):
        sw.advance(PAD)
    with pytest.raises(ValueError, match="end_chunk: no chunk with heard user units to end in state 'speaking'"):
        sw.end_chunk()
    sw.advance(19)
    assert (sw.state, sw.expect) == ("listening", L)
    sw.reset()
    assert (sw.state, sw.expect) == ("start", BOS)


def test_tdm_switch_fixed_mode_has_no_deciding_state():
    fmt = TDMFormat(10, chunk_frames=2)
    sw = TDMSwitch(fmt)
    states = []
    for token in [BOS, L, 1, 2, S, 11, 12, L, 3]:
        sw.advance(token)
        states.append((sw.state, sw.left, sw.expect))
    assert states == [("listening", 0, L), ("listening", 2, None), ("listening", 1, None), ("speaking", 0, S),
                      ("speaking", 2, None), ("speaking", 1, None), ("listening", 0, L), ("listening", 2, None),
                      ("listening", 1, None)]
    with pytest.raises(ValueError, match=r"illegal token 22 \(\[speak\]\) in state 'speaking', expecting <speak>"):
        _advance_all(fmt, [BOS, L, 1, 2, SW_SPEAK])


def _advance_all(fmt: TDMFormat, tokens: list[int]) -> TDMSwitch:
    sw = TDMSwitch(fmt)
    for token in tokens:
        sw.advance(token)
    return sw


@pytest.mark.parametrize("controlled", [False, True])
def test_every_encoded_sequence_is_legal_for_the_switch_and_decodes_back(controlled):
    rng = np.random.default_rng(0)
    fmt = TDMFormat(10, chunk_frames=4, controlled=controlled, silence_unit=0)
    listen = rng.integers(0, 10, 20)
    speak = np.where(rng.random(20) < 0.5, 0, rng.integers(1, 10, 20))
    speak[8:12] = 0  # one silent chunk
    tokens, _, _ = fmt.encode(listen, speak)
    sw = _advance_all(fmt, tokens.tolist())  # every token legal, the sequence ends on a chunk boundary
    assert (sw.state, sw.expect) == ("listening", L)
    silent_chunks = sum(not speak[s:e].any() for s, e in fmt.chunk_boundaries(20))
    assert silent_chunks >= 1
    assert (tokens == SW_LISTEN).sum() == (silent_chunks if controlled else 0)
    assert (tokens == SW_SPEAK).sum() == (5 - silent_chunks if controlled else 0)
    assert len(tokens) == 1 + 5 * 10 - (4 * silent_chunks if controlled else 0)  # a chunk: 1 + 4 + 1 + 4
    decoded = fmt.decode(tokens)
    np.testing.assert_array_equal(decoded[0], listen)
    np.testing.assert_array_equal(decoded[1], speak)
