"""Data recipes of two listen-while-speaking models: LSLM's interruption targets and listening channel, and the
duplex S2S two-stream conversations with barge-in (pure numpy; the models and trainers build on these).

LSLM (Ma et al. 2024, seed 002, sections 4.3 and 5.3). The model speaks an utterance of ``T`` unit frames while it
listens to a second channel. "If a sample is selected to include an interruption, we modify the sentence to output
the IRQ token mu = 0.5 s after the start of the interruption and then stop outputting the remaining speaking tokens":
`irq_cut` gives the frame of the IRQ target, `lslm_targets` the target sequence (units then IRQ, or units then
EOS). "For each sample, noise is added with a 50% probability, and interruption with a 50% probability, to the
listening tokens": `mix_listening` builds that listening audio (`ListeningMix`), the interruption placed so that
its SPEECH onset (`textless.dialogue.builder.speech_extent`, not the clip's first sample) is the returned onset.

Duplex S2S (seed 003, sections 4.1-4.2 and 5.2). From user / agent QA pairs (`QATurn`), `compose_duplex` writes two
streams of equal length: silence in the agent's stream while the user speaks and vice versa, the agent starting
``AGENT_LEAD_SILENCE`` = 0.64 s after the user's turn ends ("to prevent the agent from barging in unexpectedly");
several pairs are concatenated with a gap before each next user turn (`DuplexRecipe`); with ``barge_in_prob`` per
agent turn the next user turn starts inside the agent's turn and the agent keeps ``BARGE_IN_KEEP`` = 0.64 s of speech
after the user's onset ("to account for barge-in latency"), the rest of its turn being silence; the ``impatient``
variant halves the silence between an agent turn's end and the next user turn (the "Impatient" evaluation set). The
result carries a `Timeline` (speakers ``("user", "agent")``, one segment per turn, an `Interruption` per barge-in) that
the metrics of `textless.dialogue.interaction` score as they score the dialogue builder's timelines; `split_roles`
turns a builder conversation (stereo + timeline) into the same (user, agent) form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from textless.dialogue.builder import NOISE_KINDS, noise_signal, speech_extent
from textless.dialogue.interaction import LSLM_MU
from textless.dialogue.timeline import Interruption, Segment, Timeline
from textless.errors import ConfigError
from textless.eval.builder.tts import SAMPLE_RATE, SILENCE_DB

AGENT_LEAD_SILENCE = 0.64      # s: silence from the end of a user turn to the start of the agent's answer (seed 003)
BARGE_IN_KEEP = 0.64           # s: agent speech kept after the user's barge-in onset (seed 003)
USER, AGENT = "user", "agent"  # timeline speaker names of the duplex recipe; channel 0 = user
ROLES = (USER, AGENT)
ONSET_UNITS = ("fraction", "seconds")
ROUNDING = 1e-9                # frames: float slack of `irq_cut`'s ceiling


# ------------------------------------------------------------------------------------------------------ LSLM targets
def irq_cut(num_frames: int, onset: float | None, frame_rate: float, mu: float = LSLM_MU) -> int | None:
    """The frame index ``n`` of the IRQ target of an utterance of `num_frames` unit frames at `frame_rate` Hz whose
    listening channel is interrupted at `onset` seconds (None: no interruption).

    Frame ``k`` covers ``[k / frame_rate, (k + 1) / frame_rate)``; the IRQ goes at the first frame that starts at or
    after ``onset + mu``: ``n = ceil((onset + mu) * frame_rate - 1e-9)`` (the 1e-9 frame absorbs float error:
    (0.34 + 0.5) * 50 = 42.00000000000001 gives 42, not 43). The speaking units of frames ``[0, n)`` are kept, IRQ is
    the target at position ``n``, nothing follows. None when `onset` is None or ``n >= num_frames`` (the utterance
    ends before: no IRQ, the normal EOS). The model's stop time for `interaction.lslm_outcome` is ``n / frame_rate``.
    """
    if num_frames < 0 or not frame_rate > 0 or mu < 0:
        raise ValueError(f"need num_frames >= 0, frame_rate > 0 and mu >= 0, got {num_frames}, {frame_rate}, {mu}")
    if onset is None:
        return None
    if onset < 0:
        raise ValueError(f"the interruption onset must be >= 0 s, got {onset}")
    n = math.ceil((onset + mu) * frame_rate - ROUNDING)
    return n if n < num_frames else None


def lslm_targets(units: np.ndarray, onset: float | None, frame_rate: float, irq: int, eos: int,
                 mu: float = LSLM_MU) -> np.ndarray:
    """The LSLM target sequence of an utterance: `units` [T] (ints, one per frame at `frame_rate` Hz) followed by
    `eos` ([T + 1]), or, when `irq_cut` places an IRQ at frame n, ``units[:n]`` followed by `irq` ([n + 1]). int64.
    The markers are plain ints: the caller maps units and markers to its LM ids."""
    units = np.asarray(units)
    if units.ndim != 1 or (units.size and not np.issubdtype(units.dtype, np.integer)):
        raise ValueError(f"units must be a 1-D integer array, got shape {units.shape} dtype {units.dtype}")
    n = irq_cut(len(units), onset, frame_rate, mu)
    kept, marker = (units, eos) if n is None else (units[:n], irq)
    return np.concatenate([kept.astype(np.int64), np.array([marker], dtype=np.int64)])


# ---------------------------------------------------------------------------------------------- LSLM listening mix
@dataclass
class ListeningMix:
    """How LSLM's listening channel is drawn (seed 002 sec. 5.3: noise and interruption each with probability 0.5).

    The interruption's speech onset is drawn uniformly (in samples) in ``[onset_min, onset_max]`` (``onset_unit``
    "fraction": of the speaking utterance's length; "seconds": from its start), and at most ``end_margin`` seconds
    before the utterance's end (default mu: the IRQ, mu after the onset, then lands inside the utterance, up to the
    frame rounding of `irq_cut`); when that window is empty the sample gets no interruption. Noise: a noise kind
    of the builder (white, pink, tone) or a recording, at an SNR drawn uniformly in ``[snr_min, snr_max]`` dB relative
    to the speech power of the interruption clip drawn for the sample (one is drawn for every sample, placed or not,
    so the noise level does not tell whether an interruption is present); ``reference_rms`` when no clips are given.
    """

    noise_prob: float = 0.5        # chance that a sample's listening channel gets noise
    interrupt_prob: float = 0.5    # chance that it gets an interruption
    snr_min: float = 0.0           # dB
    snr_max: float = 20.0          # dB
    onset_unit: str = "fraction"   # "fraction" (of the speaking utterance) or "seconds"
    onset_min: float = 0.0         # earliest speech onset of the interruption
    onset_max: float = 1.0         # latest speech onset
    end_margin: float = LSLM_MU    # s: the onset is at least this long before the utterance's end
    reference_rms: float = 0.1     # speech RMS the SNR refers to when no interruption clips are given
    silence_db: float = SILENCE_DB  # the clips' speech threshold (`builder.speech_extent`)

    def check(self) -> None:
        if not (0 <= self.noise_prob <= 1 and 0 <= self.interrupt_prob <= 1):
            raise ConfigError(f"listening mix: probabilities must be in [0, 1], got noise_prob={self.noise_prob}, "
                              f"interrupt_prob={self.interrupt_prob}")
        if not self.snr_min <= self.snr_max:
            raise ConfigError(f"listening mix: need snr_min <= snr_max, got {self.snr_min}, {self.snr_max}")
        if self.onset_unit not in ONSET_UNITS:
            raise ConfigError(f"listening mix: onset_unit must be one of {ONSET_UNITS}, got {self.onset_unit!r}")
        if not 0 <= self.onset_min <= self.onset_max or self.end_margin < 0 or not self.reference_rms > 0:
            raise ConfigError("listening mix: need 0 <= onset_min <= onset_max, end_margin >= 0, reference_rms > 0")


@dataclass
class NoiseDraw:
    index: int        # into the `noises` given to `mix_listening`
    kind: str         # a builder noise kind, or "recording" (an array)
    snr_db: float     # speech power / noise power


@dataclass
class Listening:
    """One listening channel: float32 audio [T] (T = the speaking utterance's samples), the interruption's speech
    onset (s, None without interruption), the clip drawn (index; placed only when onset is not None), the sample at
    which the clip's first sample sits (negative: its head is cut) and the noise (None: clean)."""

    audio: np.ndarray
    onset: float | None
    clip: int | None
    clip_start: int | None
    noise: NoiseDraw | None


def _noise(source: str | np.ndarray, length: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """`length` samples of unit-RMS noise: a builder kind, or a recording looped from a random sample."""
    if isinstance(source, str):
        return noise_signal(source, length, rng, sample_rate=sample_rate)
    x = np.asarray(source, dtype=np.float64)
    x = np.resize(np.roll(x, -int(rng.integers(len(x)))), length)
    return x / (np.sqrt((x ** 2).mean()) + 1e-12)


def mix_listening(speaking_seconds: float, sample_rate: int, rng: np.random.Generator,
                  interruptions: Sequence[np.ndarray], noises: Sequence[str | np.ndarray],
                  cfg: ListeningMix | None = None) -> Listening:
    """LSLM's listening audio for a speaking utterance of `speaking_seconds` s (``T = round(speaking_seconds *
    sample_rate)`` samples): silence, plus noise with ``cfg.noise_prob``, plus one of `interruptions` (1-D clips at
    `sample_rate`, floats used as they are) with ``cfg.interrupt_prob``, placed so that its speech onset
    (`builder.speech_extent`) falls on the drawn onset sample (the clip's head is cut when it would start before 0,
    its tail when it runs past T). `noises`: builder kinds (white, pink, tone) and / or recordings (1-D arrays).

    Draw order (deterministic for an rng state): noise and interruption decisions (two uniforms, always), the clip
    (always, when clips are given), then, when noise: its source, SNR and signal; when interruption: its onset.
    """
    cfg = cfg or ListeningMix()
    cfg.check()
    if cfg.noise_prob > 0 and not noises:
        raise ConfigError("listening mix: noise_prob > 0 needs noises (kinds or recordings)")
    if cfg.interrupt_prob > 0 and not interruptions:
        raise ConfigError("listening mix: interrupt_prob > 0 needs interruption clips")
    bad = [n for n in noises if isinstance(n, str) and (n not in NOISE_KINDS or n == "babble")]
    if bad:
        raise ConfigError(f"listening mix: noise kinds {bad} are not available (white, pink, tone; babble: pass "
                          f"recordings)")
    length = round(speaking_seconds * sample_rate)
    if length < 1:
        raise ValueError(f"the speaking utterance must last at least one sample, got {speaking_seconds} s")
    with_noise = bool(rng.random() < cfg.noise_prob)
    with_interruption = bool(rng.random() < cfg.interrupt_prob)
    audio = np.zeros(length, dtype=np.float64)
    index = first = clip = None
    power = cfg.reference_rms ** 2
    if interruptions:
        index = int(rng.integers(len(interruptions)))
        clip = np.asarray(interruptions[index], dtype=np.float64)
        first, end, _ = speech_extent(clip, cfg.silence_db, sample_rate)
        power = float((clip[first:end] ** 2).mean())
    noise = None
    if with_noise:
        which = int(rng.integers(len(noises)))
        snr = float(rng.uniform(cfg.snr_min, cfg.snr_max))
        source = noises[which]
        noise = NoiseDraw(which, source if isinstance(source, str) else "recording", snr)
        audio += _noise(source, length, rng, sample_rate) * math.sqrt(power / 10 ** (snr / 10))
    onset = start = None
    if with_interruption:
        scale = speaking_seconds if cfg.onset_unit == "fraction" else 1.0
        low = math.ceil(cfg.onset_min * scale * sample_rate - ROUNDING)
        high = min(math.floor(cfg.onset_max * scale * sample_rate + ROUNDING),
                   length - 1 - math.ceil(cfg.end_margin * sample_rate - ROUNDING))
        if low <= high:
            assert clip is not None and first is not None
            onset_sample = int(rng.integers(low, high + 1))
            start = onset_sample - first
            lo, hi = max(start, 0), min(start + len(clip), length)
            audio[lo:hi] += clip[lo - start:hi - start]
            onset = onset_sample / sample_rate
    return Listening(audio.astype(np.float32), onset, index, start, noise)


# -------------------------------------------------------------------------------------------------- duplex recipe
@dataclass
class QATurn:
    """One user / agent exchange: per-sample arrays [N, ...] (audio [N] at the recipe's rate, or frames), each
    exactly its speech (trim leading / trailing silence first, e.g. with `trim_to_speech`); optional texts."""

    user: np.ndarray
    agent: np.ndarray
    user_text: str = ""
    agent_text: str = ""


@dataclass
class DuplexRecipe:
    """Timing of the duplex S2S streams (seconds, placed in samples of ``rate`` Hz by rounding).

    Each agent turn starts ``agent_lead`` after its user turn ends. After an agent turn that has a next user turn:
    with ``barge_in_prob`` the user barges in, its onset drawn uniformly (in samples) from ``barge_in_earliest`` after
    the agent's start to the last sample that leaves more than ``barge_in_keep`` of agent speech (no barge-in when
    the turn is too short), the agent's audio cut ``barge_in_keep`` after the onset; otherwise the next user turn
    starts a gap after the agent turn's end: ``gaps[i]`` when given (one per turn change), else uniform in
    ``[gap_min, gap_max]``, rounded to samples, and floor-halved (``g // 2`` samples) when ``impatient``.
    """

    rate: float = SAMPLE_RATE              # samples (or frames) per second of the arrays
    agent_lead: float = AGENT_LEAD_SILENCE  # s
    barge_in_keep: float = BARGE_IN_KEEP   # s
    barge_in_prob: float = 0.0             # per agent turn followed by a user turn
    barge_in_earliest: float = 0.0         # s after the agent's start
    gap_min: float = 0.5                   # s of silence from an agent turn's end to the next user turn
    gap_max: float = 2.0                   # s
    gaps: Sequence[float] | None = None    # s, one per turn change (len(turns) - 1); overrides gap_min / gap_max
    impatient: bool = False                # halve the gaps (seed 003's "Impatient" set)
    lead_in: float = 0.0                   # s of silence before the first user turn
    tail: float = 0.0                      # s of silence after the last speech

    def check(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"duplex recipe: rate must be > 0, got {self.rate}")
        if min(self.agent_lead, self.barge_in_keep, self.barge_in_earliest, self.lead_in, self.tail) < 0:
            raise ConfigError("duplex recipe: agent_lead, barge_in_keep, barge_in_earliest, lead_in and tail must "
                              "be >= 0")
        if not 0 <= self.barge_in_prob <= 1:
            raise ConfigError(f"duplex recipe: barge_in_prob must be in [0, 1], got {self.barge_in_prob}")
        if not 0 <= self.gap_min <= self.gap_max:
            raise ConfigError(f"duplex recipe: need 0 <= gap_min <= gap_max, got {self.gap_min}, {self.gap_max}")
        if self.gaps is not None and any(g < 0 for g in self.gaps):
            raise ConfigError(f"duplex recipe: gaps must be >= 0, got {list(self.gaps)}")

    def samples(self, seconds: float) -> int:
        return round(seconds * self.rate)


@dataclass
class PlacedTurn:
    """Where one QA pair went (samples, half-open): the user turn, the agent turn as written (after a cut), the
    agent clip's uncut end, and the sample of the next user turn's barge-in onset (None: no barge-in)."""

    user_start: int
    user_end: int
    agent_start: int
    agent_end: int
    agent_full_end: int
    barge_in: int | None = None


@dataclass
class DuplexConversation:
    """Two streams of equal length (channel 0 = user, 1 = agent; [N, ...], zeros where the role is silent), the
    timeline (speakers ``("user", "agent")``) and, for `compose_duplex`, the placement of every turn."""

    user: np.ndarray
    agent: np.ndarray
    timeline: Timeline
    turns: list[PlacedTurn] = field(default_factory=list)

    @property
    def stereo(self) -> np.ndarray:
        """[2, N, ...]: user, agent."""
        return np.stack([self.user, self.agent])


def trim_to_speech(clip: np.ndarray, sample_rate: int = SAMPLE_RATE, silence_db: float = SILENCE_DB) -> np.ndarray:
    """A 1-D clip reduced to its speech extent (`builder.speech_extent`, the dialogue builder's rule)."""
    first, end, _ = speech_extent(np.asarray(clip), silence_db, sample_rate)
    return clip[first:end]


def _cut_text(text: str, kept: int, total: int) -> str:
    """The builder's rule for a cut IPU: the same fraction of the words, then "-"."""
    if not text:
        return text
    words = text.split()
    return " ".join(words[:round(len(words) * kept / total)]) + "-"


def compose_duplex(turns: Sequence[QATurn], cfg: DuplexRecipe | None = None, rng: np.random.Generator | None = None,
                   conversation_id: str = "duplex") -> DuplexConversation:
    """The user and agent streams of `turns` (see `DuplexRecipe` for the timing).

    Timeline: a ``turn`` segment per user and agent turn ([start, end) s; an agent turn cut by a barge-in ends at the
    cut, its text keeps the builder's fraction of words + "-"), the barging user turn of kind ``interruption``, and
    an `Interruption` (user -> agent, onset = the user's first sample, stop = the cut) per barge-in. Draws per turn
    change (always, so ``impatient`` and the barge-in outcome do not shift later draws): the barge-in decision, the
    onset position, and the gap (only when ``gaps`` is not given).
    """
    cfg = cfg or DuplexRecipe()
    cfg.check()
    if not turns:
        raise ValueError("no turns to compose")
    if cfg.gaps is not None and len(cfg.gaps) != len(turns) - 1:
        raise ConfigError(f"duplex recipe: {len(turns)} turns need {len(turns) - 1} gaps, got {len(cfg.gaps)}")
    if rng is None and len(turns) > 1 and (cfg.gaps is None or cfg.barge_in_prob > 0):
        raise ValueError("drawn gaps and barge-ins need an rng")
    clips = [(np.asarray(t.user), np.asarray(t.agent)) for t in turns]
    shapes = {c.shape[1:] for pair in clips for c in pair}
    if len(shapes) != 1 or any(c.ndim < 1 or len(c) < 1 for pair in clips for c in pair):
        raise ValueError(f"every clip must be a non-empty array [N, ...] of one trailing shape, got {shapes}")
    lead, keep = cfg.samples(cfg.agent_lead), cfg.samples(cfg.barge_in_keep)
    placed: list[PlacedTurn] = []
    start = cfg.samples(cfg.lead_in)
    for i, (user, agent) in enumerate(clips):
        user_end = start + len(user)
        agent_start = user_end + lead
        if placed and agent_start < placed[-1].agent_end:
            raise ValueError(f"turn {i}: the agent would start (sample {agent_start}) before its cut turn ends "
                             f"({placed[-1].agent_end}): agent_lead < barge_in_keep and a short user turn")
        turn = PlacedTurn(start, user_end, agent_start, agent_start + len(agent), agent_start + len(agent))
        placed.append(turn)
        if i == len(clips) - 1:
            break
        barge, where = (float(rng.random()), float(rng.random())) if rng is not None else (1.0, 0.0)
        if cfg.gaps is not None:
            seconds = float(cfg.gaps[i])
        else:
            assert rng is not None
            seconds = float(rng.uniform(cfg.gap_min, cfg.gap_max))
        low = agent_start + cfg.samples(cfg.barge_in_earliest)
        high = turn.agent_full_end - keep - 1
        if barge < cfg.barge_in_prob and low <= high:
            turn.barge_in = low + min(int(where * (high - low + 1)), high - low)
            turn.agent_end = turn.barge_in + keep
            start = turn.barge_in
        else:
            gap = cfg.samples(seconds)
            start = turn.agent_end + (gap // 2 if cfg.impatient else gap)
    length = max(t.agent_end for t in placed) + cfg.samples(cfg.tail)
    trailing, dtype = clips[0][0].shape[1:], np.result_type(*[c for pair in clips for c in pair])
    streams = np.zeros((2, length) + trailing, dtype=dtype)
    segments: list[Segment] = []
    interruptions: list[Interruption] = []
    rate = cfg.rate
    for i, (turn, (user, agent), qa) in enumerate(zip(placed, clips, turns)):
        streams[0, turn.user_start:turn.user_end] = user
        kept = turn.agent_end - turn.agent_start
        streams[1, turn.agent_start:turn.agent_end] = agent[:kept]
        barged = i > 0 and placed[i - 1].barge_in is not None
        segments.append(Segment(USER, turn.user_start / rate, turn.user_end / rate, qa.user_text,
                                "interruption" if barged else "turn"))
        text = qa.agent_text if turn.barge_in is None else _cut_text(qa.agent_text, kept, len(agent))
        segments.append(Segment(AGENT, turn.agent_start / rate, turn.agent_end / rate, text, "turn"))
        if turn.barge_in is not None:
            interruptions.append(Interruption(USER, AGENT, turn.barge_in / rate, turn.agent_end / rate, False))
    segments.sort(key=lambda s: (s.start, ROLES.index(s.speaker)))
    timeline = Timeline(conversation_id, length / rate, ROLES, segments, interruptions)
    return DuplexConversation(streams[0], streams[1], timeline, placed)


def split_roles(audio: np.ndarray, timeline: Timeline, user: str | int) -> DuplexConversation:
    """A two-speaker conversation (the dialogue builder's [2, N] channels in the timeline's speaker order, and its
    timeline) as (user, agent): `user` (a speaker name or channel index) becomes "user", the other "agent";
    segments (kinds, texts) and interruptions are kept with the names changed."""
    audio = np.asarray(audio)
    if audio.ndim < 2 or audio.shape[0] != 2:
        raise ValueError(f"expected two channels [2, N, ...], got shape {audio.shape}")
    index = user if isinstance(user, int) else timeline.speakers.index(user) if user in timeline.speakers else -1
    if index not in (0, 1):
        raise ValueError(f"user {user!r} is not a speaker of the timeline {list(timeline.speakers)} (or 0 / 1)")
    names = {timeline.speakers[index]: USER, timeline.speakers[1 - index]: AGENT}
    segments = sorted((Segment(names[s.speaker], s.start, s.end, s.text, s.kind) for s in timeline.segments),
                      key=lambda s: (s.start, ROLES.index(s.speaker)))
    interruptions = [Interruption(names[i.interrupter], names[i.interrupted], i.onset, i.stop, i.ignored)
                     for i in timeline.interruptions]
    renamed = Timeline(timeline.conversation_id, timeline.duration, ROLES, segments, interruptions)
    return DuplexConversation(audio[index], audio[1 - index], renamed)
