"""LSLM examples and generation: target construction in token ids, the listening alignment of a batch, IRQ stops on a
hand-made listener, interaction scores and the speaking NLL with and without the listening channel."""

import numpy as np
import pytest
import torch

from textless.dialogue.lslm import FusionConfig, ListenSpeakLM, with_irq
from textless.dialogue.lslm.data import IGNORE, LSLMItem, collate, item_tokens
from textless.dialogue.lslm.generate import (
    ListenSpeakSampling,
    interaction_scores,
    listen_and_speak,
    plot_irq,
    speaking_nll,
    stop_time,
)
from textless.lm import UnitLM, UnitVocab

K, D, RATE = 12, 3, 50.0


def _model(fusion="late"):
    torch.manual_seed(0)
    lm = with_irq(UnitLM.from_scratch("tiny", UnitVocab.default(K), frame_rate=RATE).eval())
    return ListenSpeakLM(lm, FusionConfig(fusion=fusion, listen_dim=D)).eval()


def _alarm(model):
    """Late fusion whose listening feature 1 takes 100 from the eos and IRQ logits (while it hears feature 1 it
    neither ends nor stops on its own) and feature 0 adds 200 to the IRQ logit (it stops as soon as it hears it)."""
    with torch.no_grad():
        weight = model.projection.net[0].weight
        weight.zero_()
        weight[model.irq_id, 0] = 200.0
        weight[[model.irq_id, model.vocab.eos_id], 1] = -100.0
    return model


def test_item_tokens_cut_at_mu_after_the_onset():
    vocab = with_irq(UnitLM.from_scratch("tiny", UnitVocab.default(K))).vocab
    units = np.arange(100) % K
    plain = item_tokens(LSLMItem("a", units, np.zeros((100, D)), None), vocab, RATE)
    assert plain.tolist() == [vocab.bos_id, *(units + vocab.offset).tolist(), vocab.eos_id]
    cut = item_tokens(LSLMItem("b", units, np.zeros((100, D)), 1.0), vocab, RATE)   # (1.0 + 0.5) * 50 = 75
    assert cut.tolist() == [vocab.bos_id, *(units[:75] + vocab.offset).tolist(), vocab.specials["irq"]]
    late = item_tokens(LSLMItem("c", units, np.zeros((100, D)), 1.6), vocab, RATE)  # 105 >= 100 frames: eos
    assert late[-1] == vocab.eos_id and len(late) == 102


def test_collate_pads_and_aligns_the_listening_frames():
    vocab = with_irq(UnitLM.from_scratch("tiny", UnitVocab.default(K))).vocab
    listen = np.arange(1, 6, dtype=np.float32)[:, None].repeat(D, axis=1)         # frame t holds t + 1
    items = [LSLMItem("a", np.array([1, 2, 3, 4, 5]), listen, None),
             LSLMItem("b", np.array([1, 2, 3, 4, 5]), listen, 0.0)]               # (0 + 0.5) * 50 = 25 >= 5: eos
    short = LSLMItem("c", np.array([7, 8]), listen[:2], None)
    batch = collate([*items, short], vocab, RATE)
    assert batch.input_ids.shape == (3, 6) and batch.listen.shape == (3, 6, D)
    assert batch.listen[0, :, 0].tolist() == [0, 1, 2, 3, 4, 5]                  # position i reads frame i - 1
    assert batch.input_ids[2].tolist() == [vocab.bos_id, 10, 11, *[vocab.pad_id] * 3]
    assert batch.labels[2].tolist() == [10, 11, vocab.eos_id, *[IGNORE] * 3]
    assert batch.listen[2, 3:].abs().sum() == 0 and batch.targets == 6 + 6 + 3
    with pytest.raises(ValueError, match="item d: 1 listening frames for 5 speaking frames"):
        collate([LSLMItem("d", np.arange(5), listen[:1], None)], vocab, RATE)


def test_irq_stop_on_a_hand_made_listener():
    model = _alarm(_model())
    quiet = np.zeros((40, D), np.float32)
    quiet[:, 1] = 1.0                                      # no eos while listening
    listen = quiet.copy()
    listen[20:, 0] = 1.0                                   # the interruption is heard from frame 20 on
    prompt = np.arange(5) % K
    results = listen_and_speak(model, [prompt, prompt], [listen, quiet], [40, 40], ListenSpeakSampling(seed=1))
    heard, calm = results
    # position i reads frame i - 1: frame 20 reaches position 21, whose token is frame 21's: it speaks [0, 21)
    assert heard.stop == "irq" and heard.stop_frame == 21 and np.array_equal(heard.units[:5], prompt)
    assert heard.irq_prob[-1] > 0.99 and (heard.irq_prob[:-1] < 0.5).all() and len(heard.irq_prob) == 21 - 5 + 1
    assert calm.stop == "length" and calm.stop_frame == 40
    assert stop_time(heard, RATE) == 21 / RATE and stop_time(calm, RATE) is None
    alone = listen_and_speak(model, [prompt], [quiet], [40], ListenSpeakSampling(seed=2))[0]
    assert np.array_equal(alone.units, calm.units) and alone.stop == calm.stop  # stream 1 of the batch drew seed + 1
    scores = interaction_scores([heard, calm], [0.4 - 0.02, None], RATE)      # onset 0.38 s, stop 0.42 s: a hit
    assert (scores.tp, scores.fn, scores.fp, scores.tn) == (1, 0, 0, 1)
    late = interaction_scores([heard], [0.42 - 1.01], RATE)                     # stop 1.01 s after the onset: a miss
    assert (late.tp, late.fn) == (0, 1)


def test_speaking_nll_with_and_without_listening(tmp_path):
    model = _alarm(_model())
    units = np.arange(30) % K
    clean = LSLMItem("a", units, np.zeros((30, D), np.float32), None)
    noisy = LSLMItem("b", units, np.eye(D, dtype=np.float32)[np.zeros(30, int)], None)  # feature 0 only
    plain = speaking_nll(model, [clean], RATE)
    assert speaking_nll(model, [clean], RATE, listening=False) == pytest.approx(plain, abs=0)
    assert speaking_nll(model, [noisy], RATE) > plain + 50          # IRQ at +100 starves every unit
    assert speaking_nll(model, [noisy], RATE, listening=False) == pytest.approx(plain, abs=0)
    result = listen_and_speak(model, [units[:3]], [np.ones((30, D), np.float32)], [30])[0]
    path = plot_irq(result, 3, RATE, 0.1, tmp_path / "irq.png")
    assert path.stat().st_size > 1000


def test_character_prefix_in_batches_and_generation():
    from textless.dialogue.lslm.data import prefix_specials, prefix_tokens
    from textless.dialogue.lslm.model import with_specials

    torch.manual_seed(0)
    lm = with_specials(UnitLM.from_scratch("tiny", UnitVocab.default(K), frame_rate=RATE).eval(),
                       ["irq", *prefix_specials("characters")])
    model = ListenSpeakLM(lm, FusionConfig(fusion="middle", listen_dim=D, prefix="characters")).eval()
    torch.nn.init.normal_(model.projection.net[0].weight, std=0.5)
    vocab = model.vocab
    chars = prefix_tokens("Hi,  Yo!", vocab)
    assert chars.tolist() == [vocab.specials[f"chr:{c}"] for c in "hi yo"]
    listen = np.random.default_rng(0).normal(size=(30, D)).astype(np.float32)
    item = LSLMItem("a", np.arange(6) % K, listen[:6], None, text="Hi,  Yo!")
    batch = collate([item], vocab, RATE, prefix="characters")
    assert batch.input_ids[0].tolist() == [*chars.tolist(), vocab.bos_id, *(item.units + vocab.offset).tolist()]
    assert (batch.labels[0, :5] == IGNORE).all() and batch.labels[0, 5:].tolist() == [
        *(item.units + vocab.offset).tolist(), vocab.eos_id]
    assert batch.listen[0, :6].abs().sum() == 0 and torch.equal(batch.listen[0, 6:], torch.from_numpy(listen[:6]))
    # greedy generation after a prefix and a prompt = the argmax of the teacher-forced forward on what it said
    result = listen_and_speak(model, [np.arange(3) % K], [listen], [20], ListenSpeakSampling(temperature=0),
                              prefixes=[chars])[0]
    said = LSLMItem("b", result.units, listen, None, text="Hi,  Yo!")
    forced = collate([said], vocab, RATE, prefix="characters")
    logits = model(forced.input_ids, forced.listen)[0]
    allowed = torch.zeros(vocab.size, dtype=torch.bool)
    allowed[vocab.unit_range[0]:vocab.unit_range[1]] = True
    allowed[[vocab.eos_id, vocab.specials["irq"]]] = True
    best = logits.masked_fill(~allowed, -float("inf")).argmax(dim=-1)
    start = len(chars)                                     # position of <bos>: it predicts frame 0
    predicted = best[start + 3: start + len(result.units)] - vocab.offset
    assert predicted.tolist() == result.units[3:].tolist()
