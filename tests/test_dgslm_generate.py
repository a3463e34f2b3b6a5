"""dGSLM generation: fairseq's duration counters (both variants), prompts and teacher forcing, streaming == full
recompute, seeds and batch independence, and the generate-dialogue job (dataset, stereo audio, statistics, resume)."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from textless.cli import main
from textless.data.identity import UnitIdentity
from textless.dialogue.data import Dialogue, dialogue_meta, read_dialogues, write_dialogues
from textless.dialogue.dgslm import DGSLM, DGSLMOutput, DialogueVocab, preset_config
from textless.dialogue.dgslm.generate import DialogueSamplingConfig, DurationCounters, generate_dialogue
from textless.dialogue.dgslm.model import DGSLMConfig
from textless.errors import ConfigError, TextlessError
from textless.jobs import generate_dialogue as job
from textless.jobs.generate_dialogue import GenerateDialogueConfig, channel_speakers, generate_dialogues, stereo
from textless.streaming import StreamingModule, StreamingState
from textless.utils.runs import ResumeMismatchError
from textless.vocoders import UnitHiFiGANConfig, UnitVocoder

K = 10
TOKENIZER = {"name": "toy-km20"}


class Stub(StreamingModule):
    """The `DGSLM` interface with known outputs: each channel's logits favour (fed unit + 1) % K (unit 0 after a
    special) by a margin of 100, its duration prediction is `duration(fed tokens)` frames."""

    def __init__(self, duration, delayed=True, k=K):
        super().__init__()
        self.config = DGSLMConfig(num_units=k, d_model=4, heads=1, layers=0, cross_layers=0, delayed_duration=delayed)
        self.vocab = DialogueVocab(k)
        self.duration = duration
        self.anchor = nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def _init_streaming_state(self, batch_size):
        return StreamingState(batch_size, self.device)

    def _outputs(self, fed):
        k = self.config.num_units
        favoured = torch.where(fed < k, (fed + 1) % k, 0)
        logits = torch.full((*fed.shape, self.vocab.size), -50.0).scatter(-1, favoured[..., None], 50.0)
        return DGSLMOutput(logits, self.duration(fed).float())

    def step(self, tokens):
        self._require_streaming("Stub.step")
        return self._outputs(tokens)

    def forward(self, input_ids):  # [B, 2, T] -> logits [B, 2, T, V], durations [B, 2, T]
        return self._outputs(input_ids)


def _const(frames):
    return lambda fed: torch.full(fed.shape, float(frames))


def _gen(model, prompts, **kw):
    sampling = DialogueSamplingConfig(**{"max_frames": 10, **kw.pop("sampling", {})})
    return generate_dialogue(model, prompts, sampling=sampling, **kw)


def _runs(row):
    starts = np.flatnonzero(np.concatenate(([True], row[1:] != row[:-1])))
    return np.diff(np.concatenate((starts, [len(row)]))).tolist()


EMPTY = np.zeros((2, 0), dtype=np.int64)


# --------------------------------------------------------------------------------------------- duration counters
@pytest.mark.parametrize("delayed, expected", [
    # delayed: the run of unit u lasts the prediction made when u is fed: u + 2 frames
    (True, [0, 0, 1, 1, 1, 2, 2, 2, 2, 3]),
    # non-delayed: the run of the unit sampled at step t lasts the prediction of step t, made when the unit BEFORE it
    # is fed (the start token: 4 frames of unit 0; unit 0: 2 frames of unit 1; unit 1: 3 frames of unit 2)
    (False, [0, 0, 0, 0, 1, 1, 2, 2, 2, 3]),
])
def test_duration_counters_give_fairseqs_runs(delayed, expected):
    """Worked by hand through fairseq's loop (multichannel_sequence_generator.py) with duration(u) = u + 2 frames
    for a fed unit u and 4 for the start token."""
    model = Stub(lambda fed: torch.where(fed < K, fed + 2, 4), delayed=delayed)
    out = _gen(model, [EMPTY])[0]
    assert out.shape == (2, 10)
    assert out[0].tolist() == expected and out[1].tolist() == expected


@pytest.mark.parametrize("delayed", [True, False])
def test_constant_duration_gives_runs_of_exactly_that_length(delayed):
    out = _gen(Stub(_const(3), delayed=delayed), [EMPTY], sampling={"max_frames": 12})[0]
    assert out[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert _runs(out[1]) == [3, 3, 3, 3]


@pytest.mark.parametrize("temperature, run", [(1.0, 6), (2.0, 3), (0.5, 12), (4.0, 2)])  # 6 / 4 = 1.5 -> 2 (even)
def test_duration_temperature_divides_the_run_lengths(temperature, run):
    out = _gen(Stub(_const(6)), [EMPTY], sampling={"max_frames": 4 * run, "duration_temperature": temperature})[0]
    assert _runs(out[0]) == [run] * 4


def test_the_counter_runs_over_the_prompt_and_never_overrides_it():
    model = Stub(_const(3))
    # the prompt's last run (2 frames of 7) is completed to its predicted 3 frames, then runs of 3 follow
    short = _gen(model, [np.full((2, 2), 7)], sampling={"max_frames": 7})[0]
    assert short[0].tolist() == [7, 7, 7, 8, 8, 8, 9, 9, 9]
    # a prompt run longer than the prediction stays as given; the continuation starts a new run at once
    long = _gen(model, [np.full((2, 5), 7)], sampling={"max_frames": 4})[0]
    assert long[0].tolist() == [7, 7, 7, 7, 7, 8, 8, 8, 9]


def test_counters_unit():
    """One channel, delayed: a new unit takes its prediction one step after it is fed; a repeat never does."""
    c = DurationCounters(1, delayed=True)
    fed = [10, 3, 3, 3, 5]
    copies = [bool(c.update(torch.tensor([[f, f]]), torch.tensor([[3.4, 3.4]]))[0, 0]) for f in fed]
    assert copies == [False, True, True, False, True]
    paused = c.counter.clone()
    c.update(torch.tensor([[5, 5]]), torch.tensor([[9.0, 9.0]]), running=torch.tensor([False]))
    assert torch.equal(c.counter, paused)


def test_teacher_forcing_feeds_one_channel_and_generates_the_other():
    model = Stub(_const(3))
    force = np.full((2, 8), -1)
    force[0] = [4, 4, 5, 6, 6, 6, 6, 0]
    out = _gen(model, [np.full((2, 2), 7)], force=[force], sampling={"max_frames": 8})[0]
    assert out[0, 2:].tolist() == force[0].tolist()        # forced: never copied over
    assert out[1].tolist() == [7, 7, 7, 8, 8, 8, 9, 9, 9, 0]  # the free channel keeps its counters


# ------------------------------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = DGSLM(preset_config("tiny", K), tokenizer=TOKENIZER, frame_rate=50.0).eval()
    with torch.no_grad():
        m.duration_head.bias.fill_(2.5)  # predictions around 2-3 frames: the counters copy often
    return m


def _prompts(seed=0, lengths=(6, 0, 11)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, K, (2, n)) for n in lengths]


@pytest.mark.parametrize("delayed", [True, False])
def test_streaming_equals_the_full_recompute(model, delayed):
    m = DGSLM(preset_config("tiny", K, delayed_duration=delayed)).eval()
    m.load_state_dict(model.state_dict())
    prompts = _prompts()
    cached = _gen(m, prompts, sampling={"max_frames": 16})
    full = _gen(m, prompts, sampling={"max_frames": 16}, use_cache=False)
    for a, b, p in zip(cached, full, prompts, strict=True):
        assert a.shape == (2, p.shape[1] + 16) and np.array_equal(a, b)
        assert np.array_equal(a[:, :p.shape[1]], p)
    assert any(1 < r for a in cached for r in _runs(a[0]))  # the duration counters did copy


def test_seeds_reproduce_and_batches_do_not_matter(model):
    prompts = _prompts(1)
    together = _gen(model, prompts, sampling={"max_frames": 12, "seed": 5}, batch_size=3)
    alone = _gen(model, prompts, sampling={"max_frames": 12, "seed": 5}, batch_size=1)
    again = _gen(model, prompts, sampling={"max_frames": 12, "seed": 5}, batch_size=2)
    for a, b, c in zip(together, alone, again, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    # an item's own seed decides: item 2 alone with seed 5 + 2
    assert np.array_equal(_gen(model, prompts[2:], sampling={"max_frames": 12, "seed": 7})[0], together[2])
    other = _gen(model, prompts, sampling={"max_frames": 12, "seed": 6})
    assert not all(np.array_equal(a, b) for a, b in zip(together, other))
    greedy = _gen(model, prompts, sampling={"max_frames": 12, "temperature": 0})
    assert all(np.array_equal(a, b) for a, b in zip(greedy, _gen(model, prompts, sampling={"max_frames": 12,
                                                                                          "temperature": 0.0})))


def test_teacher_forcing_on_the_real_model(model):
    prompts = _prompts(2, (5, 8))
    rng = np.random.default_rng(3)
    forces = [np.stack([rng.integers(0, K, 10), np.full(10, -1)]), None]
    out = _gen(model, prompts, force=forces, sampling={"max_frames": 10})
    assert np.array_equal(out[0][0, 5:], forces[0][0]) and out[1].shape == (2, 18)


def test_bad_inputs_are_refused(model):
    with pytest.raises(TextlessError, match=r"prompt 0: units must be \[2 channels"):
        _gen(model, [np.zeros(5, int)])
    with pytest.raises(TextlessError, match="outside"):
        _gen(model, [np.full((2, 3), K)])
    with pytest.raises(TextlessError, match="exceed the model's 512 positions"):
        _gen(model, [np.zeros((2, 510), int)])
    with pytest.raises(TextlessError, match="force must be"):
        _gen(model, [EMPTY], force=[np.zeros((2, 11), int)])
    with pytest.raises(ConfigError, match="duration_temperature"):
        DialogueSamplingConfig(duration_temperature=0)


# ------------------------------------------------------------------------------------------------------ audio
class ChannelVocoder:
    """Encodes its input in the signal: sample = unit / 100 + speaker (hop 2)."""

    class config:
        multispkr, speakers, num_speakers, speaker_input = True, ["ann", "bob", "cy"], 3, "id"

    sample_rate, hop = 100, 2

    def synthesize(self, units, speakers=None, deduplicated=None):
        assert deduplicated is False  # dialogue units are frame-level
        return [np.repeat(u / 100 + s, self.hop).astype(np.float32) for u, s in zip(units, speakers, strict=True)]

    def speaker_id(self, s):
        return self.config.speakers.index(s) if isinstance(s, str) else int(s)


def test_stereo_rows_are_the_channels_in_order():
    units = np.array([[1, 2, 3], [7, 8, 9]])
    wav = stereo(ChannelVocoder(), units, [0, 2])
    np.testing.assert_allclose(wav[0], np.repeat([0.01, 0.02, 0.03], 2), rtol=1e-6)
    np.testing.assert_allclose(wav[1], np.repeat([2.07, 2.08, 2.09], 2), rtol=1e-6)


def test_channel_speakers():
    voc = ChannelVocoder()
    cfg = GenerateDialogueConfig()
    assert channel_speakers(cfg, voc, ["bob", "ann"]) == [1, 0]      # the conversation's own speakers
    assert channel_speakers(cfg, voc, ["zed", "ann"]) == [0, 1]      # unknown to the vocoder: ids 0 and 1
    assert channel_speakers(GenerateDialogueConfig(speakers=["cy", "2"]), voc, ["ann", "bob"]) == [2, 2]


# ------------------------------------------------------------------------------------------------- the job
IDENTITY = UnitIdentity(tokenizer=TOKENIZER, vocab_size=K, frame_rate=50.0, deduplicated=False, bpe=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("dialogue_job")
    model.save_pretrained(root / "model")
    rng = np.random.default_rng(0)
    convs = [Dialogue(f"conv{i}", rng.integers(0, K, (2, n)), (f"s{i}", "ann")) for i, n in enumerate((30, 14, 8))]
    write_dialogues(root / "prompts", convs, dialogue_meta(IDENTITY))
    cfg = UnitHiFiGANConfig(num_embeddings=K, embedding_dim=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4],
                            upsample_initial_channel=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1]],
                            multispkr=True, num_speakers=2, speakers=["ann", "bob"], sampling_rate=200)
    torch.manual_seed(0)
    UnitVocoder.from_config(cfg, tokenizer=TOKENIZER).save_pretrained(root / "voc")
    return root, convs


def test_cli_end_to_end(files, capsys):
    root, convs = files
    out = root / "gen"
    assert main(["generate-dialogue", f"model={root / 'model'}", f"prompts={root / 'prompts'}", "prompt_seconds=0.2",
                 "max_frames=12", "num_samples=2", f"vocoder={root / 'voc'}", f"reference={root / 'prompts'}",
                 "silence_units=[0,1]", "progress=false", "batch_size=4", f"output={out}"]) == 0
    data = read_dialogues(out)
    assert data.ids == [f"conv{i}/{k}" for i in range(3) for k in range(2)]
    extra = data.meta.extra["generation"]
    for d in data:
        conv = convs[int(d.id[4])]
        p = min(10, conv.num_frames)
        assert extra["prompt_frames"][d.id] == p and d.units.shape == (2, p + 12)
        assert np.array_equal(d.units[:, :p], conv.units[:, :p]) and d.speakers == conv.speakers
    # stereo: row c = channel c voiced alone (conv speakers (s0, ann) -> ids 0 and 1: s0 unknown to the vocoder)
    voc = UnitVocoder.from_pretrained(root / "voc")
    d = data.get("conv0/1")
    wav, sr = sf.read(out / "audio" / "conv0__1.wav", dtype="float32", always_2d=True)
    assert sr == 200 and wav.shape == (22 * voc.hop, 2)
    ref = voc.synthesize([d.units[0], d.units[1]], speakers=[0, 1], deduplicated=False)
    for c in range(2):
        np.testing.assert_allclose(wav[:, c], np.clip(ref[c], -1, 1), atol=1 / 2**15 + 1e-6)
    assert not np.allclose(ref[0], ref[1])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["comparison"]["rows"] and len(stats["corpus"]["conversations"]) == 6
    assert (out / "timelines.png").is_file() and (out / "durations.png").is_file()
    assert "ipu" in capsys.readouterr().out
    assert not (root / "gen.parts").exists()


def test_teacher_forcing_and_failures(files):
    root, convs = files
    out = generate_dialogues(GenerateDialogueConfig(model=str(root / "model"), prompts=str(root / "prompts"),
                                                    prompt_seconds=0.2, max_frames=12, teacher_force="B",
                                                    progress=False, output=str(root / "tf")))
    data = read_dialogues(out)
    assert data.ids == ["conv0/0", "conv1/0"]   # conv2 (8 frames) has nothing after its prompt to force
    for d, conv in zip(data, convs):
        n = min(12, conv.num_frames - 10)
        assert d.units.shape == (2, 10 + n) and np.array_equal(d.units[1], conv.units[1, :10 + n])
    summary = json.loads((out / "generation.json").read_text())
    assert [f["id"] for f in summary["failures"]] == ["conv2/0"]
    with pytest.raises(ConfigError, match="teacher_force must be one of"):
        generate_dialogues(GenerateDialogueConfig(model="m", prompts="p", teacher_force="C"))


class Killed(BaseException):
    pass


def test_a_killed_run_resumes_to_the_uninterrupted_output(files, monkeypatch):
    root, _ = files
    base = {"model": str(root / "model"), "prompts": str(root / "prompts"), "prompt_seconds": 0.1,
            "max_frames": 8, "num_samples": 2, "progress": False}
    whole = read_dialogues(generate_dialogues(GenerateDialogueConfig(**base, batch_size=4, output=str(root / "w"))))
    calls = []
    real = job.generate_dialogue

    def dies_second_time(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*a, **kw)

    monkeypatch.setattr(job, "generate_dialogue", dies_second_time)
    with pytest.raises(Killed):
        generate_dialogues(GenerateDialogueConfig(**base, batch_size=2, output=str(root / "r")))
    monkeypatch.setattr(job, "generate_dialogue", real)
    with pytest.raises(ResumeMismatchError, match="seed"):
        generate_dialogues(GenerateDialogueConfig(**base, seed=1, output=str(root / "r")))
    resumed = read_dialogues(generate_dialogues(GenerateDialogueConfig(**base, batch_size=3, output=str(root / "r"))))
    assert list(resumed) == list(whole)
