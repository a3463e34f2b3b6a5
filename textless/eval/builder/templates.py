"""sBLIMP-style minimal pairs from templates and a small grammatical lexicon.

Every template fills a sentence frame with words drawn from `GrammarLexicon` and returns a grammatical and an
ungrammatical token list that differ by ONE token (a substitution, or for the complex-NP island one inserted noun):
`token_distance` is 1 for every pair. ``type`` / ``subtype`` follow BLiMP's phenomena:

==========================  ==================  =========================================================
type                        subtype             grammatical / ungrammatical (example)
==========================  ==================  =========================================================
subject_verb_agreement      singular_subject    the king sees the book / the king see the book
subject_verb_agreement      plural_subject      the women see the book / the women sees the book
subject_verb_agreement      attractor           the son near the hills was old / ... were old
determiner_noun_agreement   singular_noun       the king found this book / ... these book
determiner_noun_agreement   plural_noun         the king found these books / ... this books
argument_structure          transitive          the king found the book / the king died the book
argument_structure          intransitive        the king died today / the king found today
anaphor_agreement           gender              the king saw himself / the king saw herself
anaphor_agreement           number              the kings saw themselves / the kings saw himself
island_effects              wh_island           who does the king remember that the queen attacked /
                                                ... remember why the queen attacked
island_effects              complex_np_island   who does the king believe that the queen attacked /
                                                ... believe stories that the queen attacked
npi_licensing               ever                no king has ever found the book / the king has ever found the book
npi_licensing               any                 no king found anything / the king found anything
==========================  ==================  =========================================================

Verbs carry their argument structure: ``strict`` transitive verbs never drop their object (find, destroy...) and
``strict`` intransitive verbs never take one (die, arrive...); only strict verbs fill the argument-structure slots
whose ungrammaticality depends on it. Anaphor and agreement templates only use nouns whose gender / number is known.

`VocabularyPolicy` restricts the words: ``seen`` keeps only fillers (and template frames) whose every word is in a
reference vocabulary (e.g. the bundled corpus' training transcripts); ``unseen`` keeps only fillers whose content words
are all outside it (the frame's function words stay: the, who, does...); ``any`` keeps everything. A template that
cannot be filled under the policy is skipped (`generate_pairs` reports which and why). Drawing is deterministic for a
seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from textless.errors import ConfigError


# ------------------------------------------------------------------------------------------------------- lexicon
@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str
    human: bool = False
    gender: str | None = None  # "m" | "f" | None (unknown or either)


@dataclass(frozen=True)
class Verb:
    base: str
    s3: str
    past: str
    pp: str
    transitive: bool
    strict: bool = False  # transitive: the object is obligatory; intransitive: no object is possible
    object: str = "any"   # transitive verbs: "human" | "thing" | "any"


def _nouns(spec: str, human: bool) -> tuple[Noun, ...]:
    out = []
    for entry in spec.split("|"):
        fields = entry.split()
        if fields:
            out.append(Noun(fields[0], fields[1], human, fields[2] if len(fields) > 2 else None))
    return tuple(out)


def _verbs(spec: str, transitive: bool) -> tuple[Verb, ...]:
    out = []
    for entry in spec.split("|"):
        fields = entry.split()
        if fields:
            base, s3, past, pp, obj, strict = (fields + ["any", "0"])[:6] if transitive else (fields + ["-", "1"])[:6]
            out.append(Verb(base, s3, past, pp, transitive, strict == "1", obj if transitive else "-"))
    return tuple(out)


HUMANS = _nouns("""
man men m | woman women f | boy boys m | girl girls f | king kings m | queen queens f | prince princes m |
princess princesses f | mother mothers f | father fathers m | son sons m | daughter daughters f | wife wives f |
husband husbands m | grandfather grandfathers m | grandmother grandmothers f | hostess hostesses f | uncle uncles m |
aunt aunts f | nephew nephews m | niece nieces f | actress actresses f | waitress waitresses f | duke dukes m |
duchess duchesses f | monk monks m | nun nuns f | bride brides f | groom grooms m | child children | student students |
prisoner prisoners | guard guards | artist artists | teacher teachers | captain captains | pilot pilots |
manager managers | professor professors | president presidents | poet poets | customer customers |
landlord landlords | sheriff sheriffs | producer producers | friend friends | player players | worker workers |
citizen citizens | visitor visitors | agent agents | partner partners | survivor survivors | candidate candidates |
champion champions | accountant accountants | adviser advisers | burglar burglars | smuggler smugglers |
convict convicts | actor actors | waiter waiters | guest guests | resident residents | philosopher philosophers |
enemy enemies | operator operators | programmer programmers | minister ministers | lover lovers | doctor doctors |
nurse nurses | farmer farmers | lawyer lawyers | dancer dancers | singer singers | baker bakers | soldier soldiers |
sailor sailors | cousin cousins | neighbor neighbors | driver drivers | hunter hunters | tailor tailors |
banker bankers | clerk clerks | judge judges | thief thieves | writer writers | gardener gardeners |
plumber plumbers | butcher butchers | senator senators | tourist tourists
""", human=True)

THINGS = _nouns("""
book books | car cars | house houses | table tables | letter letters | paper papers | coat coats | basket baskets |
boat boats | plane planes | ship ships | tree trees | hill hills | lake lakes | cabinet cabinets | drawer drawers |
desk desks | window windows | board boards | cap caps | glove gloves | belt belts | file files | box boxes |
piece pieces | plate plates | school schools | hotel hotels | office offices | room rooms | kitchen kitchens |
poem poems | song songs | computer computers | balloon balloons | rocket rockets | mansion mansions |
closet closets | disk disks | pill pills | potato potatoes | bagel bagels | object objects | image images |
chair chairs | lamp lamps | cup cups | clock clocks | bag bags | spoon spoons | wagon wagons | fence fences |
bucket buckets | candle candles | kettle kettles | ladder ladders | pillow pillows | blanket blankets | tent tents |
rope ropes | shovel shovels | hammer hammers | barrel barrels | cottage cottages | barn barns | bridge bridges |
tower towers | castle castles | garden gardens | bench benches | jacket jackets | sandwich sandwiches |
bicycle bicycles | umbrella umbrellas | apple apples | pencil pencils | wallet wallets | helmet helmets
""", human=False)

# base s3 past pp object strict(1: the object is obligatory)
TRANSITIVE = _verbs("""
see sees saw seen any 0 | find finds found found any 1 | help helps helped helped human 0 |
attack attacks attacked attacked any 0 | kick kicks kicked kicked any 0 | kiss kisses kissed kissed human 0 |
rob robs robbed robbed human 1 | scold scolds scolded scolded human 0 | destroy destroys destroyed destroyed thing 1 |
protect protects protected protected any 0 | question questions questioned questioned human 1 |
confront confronts confronted confronted human 1 | accuse accuses accused accused human 1 |
call calls called called human 0 | bring brings brought brought thing 1 | take takes took taken thing 1 |
make makes made made thing 1 | sell sells sold sold thing 0 | write writes wrote written thing 0 |
draw draws drew drawn thing 0 | visit visits visited visited any 0 | meet meets met met human 0 |
love loves loved loved any 0 | follow follows followed followed any 0 | expect expects expected expected any 0 |
keep keeps kept kept thing 1 | replace replaces replaced replaced thing 1 | erase erases erased erased thing 1 |
paint paints painted painted thing 0 | tolerate tolerates tolerated tolerated human 1 |
admire admires admired admired human 1 | chase chases chased chased any 0 | clean cleans cleaned cleaned thing 0 |
hug hugs hugged hugged human 0 | greet greets greeted greeted human 1 | praise praises praised praised human 1 |
blame blames blamed blamed human 1 | punish punishes punished punished human 1 | scare scares scared scared human 0 |
hire hires hired hired human 1 | insult insults insulted insulted human 1 | bother bothers bothered bothered human 0 |
fix fixes fixed fixed thing 1 | wash washes washed washed thing 0 | push pushes pushed pushed thing 0 |
lift lifts lifted lifted thing 1 | borrow borrows borrowed borrowed thing 1 | repair repairs repaired repaired thing 1 |
tickle tickles tickled tickled human 1 | rescue rescues rescued rescued human 1 | thank thanks thanked thanked human 1 |
carry carries carried carried thing 1
""", transitive=True)

# base s3 past pp (never take a direct object)
INTRANSITIVE = _verbs("""
die dies died died | fall falls fell fallen | come comes came come | go goes went gone | retire retires retired retired |
immigrate immigrates immigrated immigrated | panic panics panicked panicked | emerge emerges emerged emerged |
arrive arrives arrived arrived | sneeze sneezes sneezed sneezed | yawn yawns yawned yawned |
cough coughs coughed coughed | frown frowns frowned frowned | giggle giggles giggled giggled |
shiver shivers shivered shivered | blush blushes blushed blushed | vanish vanishes vanished vanished |
faint faints fainted fainted | sigh sighs sighed sighed | smile smiles smiled smiled | sleep sleeps slept slept |
laugh laughs laughed laughed | hesitate hesitates hesitated hesitated
""", transitive=False)

ADJECTIVES = ("old", "young", "sick", "dead", "lazy", "lonely", "curious", "safe", "famous", "wealthy", "strange", "nice", "good", "bad", "big", "huge", "new", "dirty", "dry", "sweet", "pleasant", "rebellious", "ungrateful", "watchful", "depressed", "tired", "angry", "brave", "clever", "hungry", "quiet", "gentle", "polite", "noisy", "sleepy", "rude", "tall", "shy", "proud", "honest", "cheerful", "grumpy", "silly", "nervous", "jealous")

# verbs taking both a that-clause and an embedded question (wh-island frames), and complex-NP frames + heads
WH_BRIDGES = ("remember", "learn", "mention", "know", "forget", "discover", "reveal", "explain")
NP_BRIDGES = ("believe", "remember", "mention", "hear", "doubt", "deny", "repeat")
NP_HEADS = ("stories", "ideas", "rumors", "claims", "reports", "theories")


@dataclass(frozen=True)
class GrammarLexicon:
    humans: tuple[Noun, ...] = HUMANS
    things: tuple[Noun, ...] = THINGS
    transitive: tuple[Verb, ...] = TRANSITIVE
    intransitive: tuple[Verb, ...] = INTRANSITIVE
    adjectives: tuple[str, ...] = ADJECTIVES
    wh_bridges: tuple[str, ...] = WH_BRIDGES
    np_bridges: tuple[str, ...] = NP_BRIDGES
    np_heads: tuple[str, ...] = NP_HEADS


# -------------------------------------------------------------------------------------------------------- policy
POLICY_MODES = ("any", "seen", "unseen")


@dataclass(frozen=True)
class VocabularyPolicy:
    """Which words templates may use (see the module docstring). `vocabulary`: lower-case words."""

    mode: str = "any"
    vocabulary: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.mode not in POLICY_MODES:
            raise ConfigError(f"vocabulary policy must be one of {', '.join(POLICY_MODES)}, got '{self.mode}'")

    def content_ok(self, used: Iterable[str], every: Iterable[str] = ()) -> bool:
        """Whether a filler may be used: ``seen``: the forms it contributes (`used`) are all in the vocabulary;
        ``unseen``: none of its forms (`used` and the entry's other forms `every`: the lemma is unseen) is."""
        if self.mode == "seen":
            return all(w in self.vocabulary for w in used)
        if self.mode == "unseen":
            return not any(w in self.vocabulary for w in [*used, *every])
        return True

    def frame_ok(self, words: Iterable[str]) -> bool:
        return self.mode != "seen" or all(w in self.vocabulary for w in words)


def _all_forms(entry: object) -> list[str]:
    if isinstance(entry, Noun):
        return [entry.sg, entry.pl]
    if isinstance(entry, Verb):
        return [entry.base, entry.s3, entry.past, entry.pp]
    return [str(entry)]


class NoFiller(Exception):
    """No lexicon entry satisfies a slot's constraints under the policy."""


@dataclass
class Picker:
    """Draws slot fillers with `rng`, honouring the policy for exactly the forms the template uses; records them."""

    lexicon: GrammarLexicon
    policy: VocabularyPolicy
    rng: random.Random
    used: set[str] = field(default_factory=set)

    def _choose(self, options: Sequence, forms: Callable[[object], Sequence[str]], what: str):
        allowed = [o for o in options if self.policy.content_ok(forms(o), _all_forms(o))]
        if not allowed:
            raise NoFiller(f"no {what} under the '{self.policy.mode}' vocabulary policy")
        choice = self.rng.choice(allowed)
        self.used.update(forms(choice))
        return choice

    def noun(self, *forms: str, human: bool, gender: str | None = None, exclude: Sequence[Noun] = ()) -> Noun:
        pool = [n for n in (self.lexicon.humans if human else self.lexicon.things)
                if n not in exclude and (gender is None or n.gender == gender)]
        return self._choose(pool, lambda n: [getattr(n, f) for f in forms], f"{'human' if human else 'thing'} noun "
                            f"({'/'.join(forms)}{', ' + gender if gender else ''})")

    def verb(self, *forms: str, transitive: bool, strict: bool = False, obj: str | None = None) -> Verb:
        pool = [v for v in (self.lexicon.transitive if transitive else self.lexicon.intransitive)
                if (v.strict or not strict) and (obj is None or v.object in (obj, "any"))]
        return self._choose(pool, lambda v: [getattr(v, f) for f in forms],
                            f"{'transitive' if transitive else 'intransitive'} verb ({'/'.join(forms)})")

    def word(self, kind: str) -> str:
        return self._choose(getattr(self.lexicon, kind), lambda w: [w], kind.rstrip("s"))

    def gendered(self) -> tuple[Noun, str, str]:
        """A gendered human noun (sg), its reflexive and the other gender's reflexive."""
        gender = self.rng.choice(("m", "f"))
        noun = self.noun("sg", human=True, gender=gender)
        own, other = ("himself", "herself") if gender == "m" else ("herself", "himself")
        return noun, own, other


# ----------------------------------------------------------------------------------------------------- templates
Tokens = list[str]


@dataclass(frozen=True)
class Template:
    type: str
    subtype: str
    make: Callable[[Picker], tuple[Tokens, Tokens]]  # (grammatical, ungrammatical) lower-case tokens
    question: bool = False


def _singular_subject(p: Picker) -> tuple[Tokens, Tokens]:
    subject, verb = p.noun("sg", human=True), p.verb("s3", "base", transitive=True, obj="thing")
    obj = p.noun("sg", human=False)
    return (["the", subject.sg, verb.s3, "the", obj.sg], ["the", subject.sg, verb.base, "the", obj.sg])


def _plural_subject(p: Picker) -> tuple[Tokens, Tokens]:
    subject, verb = p.noun("pl", human=True), p.verb("base", "s3", transitive=True, obj="thing")
    obj = p.noun("sg", human=False)
    return (["the", subject.pl, verb.base, "the", obj.sg], ["the", subject.pl, verb.s3, "the", obj.sg])


def _attractor(p: Picker) -> tuple[Tokens, Tokens]:
    head = p.noun("sg", human=True)
    attractor = p.noun("pl", human=p.rng.random() < 0.5)
    adjective = p.word("adjectives")
    frame = ["the", head.sg, "near", "the", attractor.pl]
    return frame + ["was", adjective], frame + ["were", adjective]


def _determiner(number: str) -> Callable[[Picker], tuple[Tokens, Tokens]]:
    def make(p: Picker) -> tuple[Tokens, Tokens]:
        subject, verb = p.noun("sg", human=True), p.verb("past", transitive=True, obj="thing")
        obj = p.noun(number, human=False)
        good, bad = ("this", "these") if number == "sg" else ("these", "this")
        noun = getattr(obj, number)
        return ["the", subject.sg, verb.past, good, noun], ["the", subject.sg, verb.past, bad, noun]

    return make


def _transitive(p: Picker) -> tuple[Tokens, Tokens]:
    subject = p.noun("sg", human=True)
    good = p.verb("past", transitive=True, obj="thing")
    bad = p.verb("past", transitive=False, strict=True)
    obj = p.noun("sg", human=False)
    return ["the", subject.sg, good.past, "the", obj.sg], ["the", subject.sg, bad.past, "the", obj.sg]


def _intransitive(p: Picker) -> tuple[Tokens, Tokens]:
    subject = p.noun("sg", human=True)
    good = p.verb("past", transitive=False, strict=True)
    bad = p.verb("past", transitive=True, strict=True)
    return ["the", subject.sg, good.past, "today"], ["the", subject.sg, bad.past, "today"]


def _anaphor_gender(p: Picker) -> tuple[Tokens, Tokens]:
    noun, own, other = p.gendered()
    verb = p.verb("past", transitive=True, obj="human")
    return ["the", noun.sg, verb.past, own], ["the", noun.sg, verb.past, other]


def _anaphor_number(p: Picker) -> tuple[Tokens, Tokens]:
    noun = p.noun("pl", human=True)
    verb = p.verb("past", transitive=True, obj="human")
    wrong = {"m": "himself", "f": "herself"}.get(noun.gender or "", p.rng.choice(("himself", "herself")))
    return ["the", noun.pl, verb.past, "themselves"], ["the", noun.pl, verb.past, wrong]


def _wh_island(p: Picker) -> tuple[Tokens, Tokens]:
    subject = p.noun("sg", human=True)
    bridge = p.word("wh_bridges")
    embedded = p.noun("sg", human=True, exclude=(subject,))
    verb = p.verb("past", transitive=True, strict=True, obj="human")
    head, tail = ["who", "does", "the", subject.sg, bridge], ["the", embedded.sg, verb.past]
    return head + ["that"] + tail, head + ["why"] + tail


def _complex_np_island(p: Picker) -> tuple[Tokens, Tokens]:
    subject = p.noun("sg", human=True)
    bridge = p.word("np_bridges")
    noun = p.word("np_heads")
    embedded = p.noun("sg", human=True, exclude=(subject,))
    verb = p.verb("past", transitive=True, strict=True, obj="human")
    head, tail = ["who", "does", "the", subject.sg, bridge], ["that", "the", embedded.sg, verb.past]
    return head + tail, head + [noun] + tail


def _npi_ever(p: Picker) -> tuple[Tokens, Tokens]:
    subject, verb = p.noun("sg", human=True), p.verb("pp", transitive=True, obj="thing")
    obj = p.noun("sg", human=False)
    tail = [subject.sg, "has", "ever", verb.pp, "the", obj.sg]
    return ["no"] + tail, ["the"] + tail


def _npi_any(p: Picker) -> tuple[Tokens, Tokens]:
    subject, verb = p.noun("sg", human=True), p.verb("past", transitive=True, obj="thing")
    tail = [subject.sg, verb.past, "anything"]
    return ["no"] + tail, ["the"] + tail


TEMPLATES: tuple[Template, ...] = (
    Template("subject_verb_agreement", "singular_subject", _singular_subject),
    Template("subject_verb_agreement", "plural_subject", _plural_subject),
    Template("subject_verb_agreement", "attractor", _attractor),
    Template("determiner_noun_agreement", "singular_noun", _determiner("sg")),
    Template("determiner_noun_agreement", "plural_noun", _determiner("pl")),
    Template("argument_structure", "transitive", _transitive),
    Template("argument_structure", "intransitive", _intransitive),
    Template("anaphor_agreement", "gender", _anaphor_gender),
    Template("anaphor_agreement", "number", _anaphor_number),
    Template("island_effects", "wh_island", _wh_island, question=True),
    Template("island_effects", "complex_np_island", _complex_np_island, question=True),
    Template("npi_licensing", "ever", _npi_ever),
    Template("npi_licensing", "any", _npi_any),
)


# --------------------------------------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class MinimalPair:
    type: str
    subtype: str
    good: tuple[str, ...]  # lower-case tokens
    bad: tuple[str, ...]
    question: bool = False

    @property
    def good_text(self) -> str:
        return render(self.good, self.question)

    @property
    def bad_text(self) -> str:
        return render(self.bad, self.question)


def render(tokens: Sequence[str], question: bool = False) -> str:
    """Tokens -> the sentence read by the TTS voice (capitalised, final '.' or '?')."""
    text = " ".join(tokens)
    return text[:1].upper() + text[1:] + ("?" if question else ".")


def token_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitution, insertion, deletion cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


@dataclass
class Generation:
    pairs: list[MinimalPair]
    skipped: dict[str, str]  # "type/subtype" -> why the template could not be used


def generate_pairs(count: int, seed: int, policy: VocabularyPolicy | None = None,
                   lexicon: GrammarLexicon | None = None, templates: Sequence[Template] = TEMPLATES,
                   max_attempts: int = 200) -> Generation:
    """`count` distinct minimal pairs spread evenly over the usable templates (in `templates` order; the first
    ``count % n`` templates get one more), deterministic for `seed`."""
    policy, lexicon = policy or VocabularyPolicy(), lexicon or GrammarLexicon()
    if count < 1:
        raise ConfigError(f"the number of syntactic pairs must be >= 1, got {count}")
    usable, skipped = [], {}
    for template in templates:
        name = f"{template.type}/{template.subtype}"
        try:
            picker = Picker(lexicon, policy, random.Random(f"{seed}:{name}:probe"))
            good, bad = template.make(picker)
        except NoFiller as e:
            skipped[name] = str(e)
            continue
        frame = (set(good) | set(bad)) - picker.used
        if not policy.frame_ok(frame):
            missing = sorted(w for w in frame if w not in policy.vocabulary)
            skipped[name] = f"frame word(s) {', '.join(missing)} outside the vocabulary ('seen' policy)"
            continue
        usable.append(template)
    if not usable:
        raise ConfigError(f"no template can be filled under the '{policy.mode}' vocabulary policy: "
                          + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    pairs: list[MinimalPair] = []
    seen: set[tuple[str, ...]] = set()
    for index, template in enumerate(usable):
        wanted = count // len(usable) + (index < count % len(usable))
        rng = random.Random(f"{seed}:{template.type}/{template.subtype}")
        made = 0
        for _ in range(max_attempts):
            if made == wanted:
                break
            good, bad = template.make(Picker(lexicon, policy, rng))
            if tuple(good) in seen:
                continue
            seen.add(tuple(good))
            pairs.append(MinimalPair(template.type, template.subtype, tuple(good), tuple(bad), template.question))
            made += 1
        if made < wanted:
            raise ConfigError(f"{template.type}/{template.subtype}: only {made} distinct pairs out of {wanted} under "
                              f"the '{policy.mode}' vocabulary policy (enlarge the lexicon or ask for fewer)")
    return Generation(pairs, skipped)
