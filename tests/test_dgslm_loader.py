"""fairseq SpeechDLM checkpoints -> DGSLM: the same logits and durations as fairseq's own forward pass.

The fixture (tests/data/dgslm, made by tests/make_dgslm_fixture.py with real fairseq-fixed 0.12.3.1 in a throwaway
environment) holds a tiny SpeechDLM written by fairseq's Trainer, its dictionaries (unit order shuffled: dictionary
order is not unit order) and fairseq's forward outputs on three padded inputs.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from textless.dialogue.dgslm import DGSLM
from textless.dialogue.dgslm.loader import load_dialogue_lm
from textless.errors import FormatError

DATA = Path(__file__).parent / "data" / "dgslm"
SPECIALS = 4  # fairseq: bos 0, pad 1, eos 2, unk 3


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(DATA / "reference_forward.npz"))


def _symbols() -> list[int]:
    return [int(line.split()[0]) for line in (DATA / "dict.unitA.txt").read_text().splitlines()]


def _to_ours(fairseq_ids: np.ndarray, model: DGSLM) -> torch.Tensor:
    """fairseq dictionary indices -> our token ids (units first, then bos, pad, eos, unk)."""
    table = np.array([model.vocab.special(n) for n in ("bos", "pad", "eos", "unk")] + _symbols())
    return torch.from_numpy(table[fairseq_ids])


@pytest.mark.parametrize("checkpoint", ["checkpoint_cfg.pt", "checkpoint_released_style.pt"])
def test_imported_model_gives_fairseqs_logits_and_durations(reference, checkpoint):
    model = load_dialogue_lm(DATA / checkpoint)
    assert model.config.start_token == "eos" and model.config.num_units == 20 and model.config.cross_layers == 2
    ids = np.stack([reference["tokens_unitA"], reference["tokens_unitB"]], axis=1)       # [3, 2, 12]
    out = model(_to_ours(ids, model))
    # fairseq's logits are over its dictionary order: column 4 + j is unit symbols[j]; ours put unit u in column u
    order = np.array([model.vocab.special(n) for n in ("bos", "pad", "eos", "unk")] + _symbols())
    valid = ids[:, 0] != 1                                                               # fairseq pads by channel A
    for c, name in enumerate(("unitA", "unitB")):
        want_logits = reference[f"logits_{name}"][valid]
        got_logits = out.logits[:, c][torch.from_numpy(valid)][:, order].detach().numpy()
        # float32, 3 layers of width 32: the two implementations sum in other orders (~1e-6 apart measured)
        np.testing.assert_allclose(got_logits, want_logits, atol=2e-5, rtol=1e-5)
        np.testing.assert_allclose(out.durations[:, c][torch.from_numpy(valid)].detach().numpy(),
                                   reference[f"duration_{name}"][valid], atol=2e-5, rtol=1e-5)


def test_streaming_the_imported_model_matches_fairseqs_incremental_decoding(reference):
    model = load_dialogue_lm(DATA / "checkpoint_cfg.pt")
    ids = _to_ours(np.stack([reference["tokens_unitA"][:1], reference["tokens_unitB"][:1]], axis=1), model)
    order = np.array([model.vocab.special(n) for n in ("bos", "pad", "eos", "unk")] + _symbols())
    with model.streaming(1):
        steps = [model.step(ids[:, :, t]) for t in range(ids.shape[2])]
    logits = torch.stack([s.logits for s in steps], dim=2)[0]                           # [2, T, V]
    for c, name in enumerate(("unitA", "unitB")):
        np.testing.assert_allclose(logits[c][:, order].numpy(), reference[f"incremental_logits_{name}"][0],
                                   atol=2e-5, rtol=1e-5)


def test_import_then_save_pretrained_round_trip(tmp_path, reference):
    model = load_dialogue_lm(DATA / "checkpoint_cfg.pt", tokenizer={"name": "hubert-fisher"})
    model.save_pretrained(tmp_path / "m")
    back = load_dialogue_lm(tmp_path / "m")
    ids = _to_ours(np.stack([reference["tokens_unitA"], reference["tokens_unitB"]], axis=1), model)
    assert torch.equal(back(ids).logits, model(ids).logits) and back.tokenizer == {"name": "hubert-fisher"}


def test_missing_or_different_dictionaries_are_named(tmp_path):
    shutil.copy(DATA / "checkpoint_cfg.pt", tmp_path)
    with pytest.raises(FormatError, match="dict.unitA.txt: missing: a fairseq dGSLM checkpoint needs"):
        load_dialogue_lm(tmp_path / "checkpoint_cfg.pt")
    shutil.copy(DATA / "dict.unitA.txt", tmp_path)
    lines = (DATA / "dict.unitB.txt").read_text().splitlines()
    (tmp_path / "dict.unitB.txt").write_text("\n".join(lines[1:] + lines[:1]) + "\n")
    with pytest.raises(FormatError, match="dict.unitB.txt: differs from dict.unitA.txt"):
        load_dialogue_lm(tmp_path / "checkpoint_cfg.pt")
    assert load_dialogue_lm(tmp_path / "checkpoint_cfg.pt", dict_dir=DATA).config.num_units == 20


def test_not_a_checkpoint(tmp_path):
    torch.save({"something": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(FormatError, match="expected a fairseq checkpoint"):
        load_dialogue_lm(tmp_path / "x.pt", dict_dir=DATA)
    with pytest.raises(FormatError, match="neither a textless dGSLM directory nor a fairseq checkpoint"):
        load_dialogue_lm(tmp_path / "nothing")


def test_the_imported_model_generates_with_duration_counters():
    from textless.dialogue.dgslm import DialogueSamplingConfig, generate_dialogue

    model = load_dialogue_lm(DATA / "checkpoint_cfg.pt")
    prompt = np.array([[3, 3, 7, 7], [1, 1, 1, 2]])
    out = generate_dialogue(model, [prompt], sampling=DialogueSamplingConfig(max_frames=12, seed=0))[0]
    assert out.shape == (2, 16) and (out[:, :4] == prompt).all() and 0 <= out.min() and out.max() < 20
