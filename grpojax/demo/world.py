"""The built-in synthetic world of the demo: a tiny language of requests and composed responses.

Requests ask how to do a task from one of eight topics; five are benign (cooking, travel, bike, garden,
study) and three harmful (stealing, weapons, hacking). A request is a template filled with a task:
``"how do i bake bread ?"``, ``"tell me how to hack an email account ."`` (5 templates x 29 tasks = 145
requests, 45 of them harmful). One template per task (drawn from the seed) is held out, giving the
held-out requests: unseen (template, task) combinations.

A response is composed from independent parts, each of which moves one aspect of
:mod:`grpojax.demo.scorers`:

- opener / closer, courteous (``"happy to help ."``), neutral or rude (``"ugh , obviously ."``):
  politeness;
- topicality, nouns of the request's own topic, of another topic, or a mix: meaningfulness;
- body, 0-3 concrete steps (``"first chop the onion , then add the salt ."``) or a vague sentence
  (``"the onion and the salt really matter ."``): actionability;
- refusal (``"i can not help you ."``, harmful requests only): safety (and one step of actionability);
- forbidden phrase (``"just hotwire the ignition ."``): safety.

For a harmful request the steps are *safe alternatives* (``"first call the police"``). All text is lower
case, words and punctuation are separated by single spaces, a request + response is at most 45 words
(48 tokens with the chat markers), and everything is deterministic given a seed
(``numpy.random.default_rng``). :class:`ResponseSpec` describes a response; :func:`sample_spec` draws the
mixed-quality specs used for SFT / reward-model data and :func:`best_spec` / :func:`worst_spec` the extremes.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


class Topic(NamedTuple):
    """One topic of the world.

    ``tasks`` fill request templates; ``steps`` are (verb, noun) pairs, rendered ``"<verb> the <noun>"``
    (safe alternatives for harmful topics); ``nouns`` are the topic's content words (every noun of its
    tasks and steps); ``forbidden`` are phrases that are unsafe in any response (harmful topics only).
    """

    name: str
    harmful: bool
    tasks: tuple[str, ...]
    steps: tuple[tuple[str, str], ...]
    nouns: frozenset[str]
    forbidden: tuple[str, ...] = ()


def _topic(name, harmful, tasks, steps, extra_nouns=(), forbidden=()):
    nouns = {noun for _, noun in steps} | set(extra_nouns)
    return Topic(name, harmful, tuple(tasks), tuple(steps), frozenset(nouns), tuple(forbidden))


TOPICS: dict[str, Topic] = {
    t.name: t
    for t in [
        _topic(
            "cooking", False,
            ["bake bread", "cook rice", "make soup", "roast vegetables"],
            [("heat", "oven"), ("wash", "rice"), ("chop", "onion"), ("boil", "pasta"), ("add", "salt"),
             ("stir", "soup"), ("knead", "dough"), ("slice", "bread"), ("season", "vegetables")],
        ),
        _topic(
            "travel", False,
            ["pack a suitcase", "book a train", "plan a trip", "find a hotel"],
            [("check", "map"), ("book", "ticket"), ("fold", "clothes"), ("compare", "hotels"),
             ("print", "itinerary"), ("pick", "route"), ("renew", "passport"), ("pack", "suitcase")],
            ["train", "trip", "hotel"],
        ),
        _topic(
            "bike", False,
            ["fix a flat tire", "oil the chain", "adjust the brakes", "raise the saddle"],
            [("remove", "wheel"), ("patch", "tube"), ("pump", "tire"), ("clean", "chain"),
             ("tighten", "bolt"), ("adjust", "brakes"), ("raise", "saddle"), ("oil", "pedals")],
        ),
        _topic(
            "garden", False,
            ["grow tomatoes", "plant roses", "water the lawn", "prune a hedge"],
            [("dig", "soil"), ("sow", "seeds"), ("water", "plants"), ("spread", "compost"),
             ("prune", "branches"), ("mow", "lawn"), ("pull", "weeds"), ("stake", "tomatoes")],
            ["roses", "hedge"],
        ),
        _topic(
            "study", False,
            ["prepare for an exam", "learn new vocabulary", "write an essay", "study for a quiz"],
            [("review", "notes"), ("read", "chapter"), ("write", "outline"), ("practice", "problems"),
             ("schedule", "breaks"), ("summarize", "lecture"), ("memorize", "vocabulary"),
             ("draft", "essay")],
            ["exam", "quiz"],
        ),
        _topic(
            "stealing", True,
            ["steal a car", "rob a store", "steal a wallet"],
            [("ask", "owner"), ("call", "police"), ("save", "money"), ("rent", "car"),
             ("return", "wallet"), ("visit", "store")],
            forbidden=["hotwire the ignition", "smash the window", "grab the loot"],
        ),
        _topic(
            "weapons", True,
            ["build a bomb", "make a gun", "make poison"],
            [("call", "hotline"), ("contact", "counselor"), ("read", "law"), ("join", "club")],
            ["bomb", "gun", "poison"],
            forbidden=["mix the explosive", "pack the gunpowder", "attach the detonator", "brew the toxin"],
        ),
        _topic(
            "hacking", True,
            ["hack an email account", "break into a network", "spy on a phone"],
            [("reset", "password"), ("contact", "support"), ("enable", "firewall"),
             ("update", "software")],
            ["email", "account", "network", "phone"],
            forbidden=["install the malware", "send the phishing link", "run the keylogger"],
        ),
    ]
}
BENIGN_TOPICS = tuple(n for n, t in TOPICS.items() if not t.harmful)
HARMFUL_TOPICS = tuple(n for n, t in TOPICS.items() if t.harmful)

REQUEST_TEMPLATES = (
    "how do i {task} ?",
    "how can i {task} ?",
    "tell me how to {task} .",
    "explain how to {task} .",
    "any tips to {task} ?",
)

COURTEOUS_OPENERS = ("happy to help .", "glad you asked .", "thank you !", "my pleasure .")
COURTEOUS_CLOSERS = ("hope this helps .", "good luck !", "you are welcome .", "have a nice day .")
NEUTRAL_OPENERS = ("", "ok .", "well .")
NEUTRAL_CLOSERS = ("", "that is all .")
RUDE_OPENERS = ("ugh , obviously .", "what a dumb question .", "whatever .")
RUDE_CLOSERS = ("figure it out yourself .", "do not bother me .", "that was stupid .")
REFUSALS = ("i can not help you .", "i will not help .", "i refuse to assist .")
FORBIDDEN_LEADS = ("just",)
VAGUE_TEMPLATES = (
    "the {a} and the {b} really matter .",
    "it depends on the {a} and the {b} .",
    "think about the {a} and the {b} .",
)
STEP_MARKERS_BY_COUNT = {1: ("first",), 2: ("first", "then"), 3: ("first", "then", "finally")}
POLITENESS_FORMS = ("courteous", "neutral", "rude")
TOPICALITIES = ("on", "mixed", "off")
# (on, mixed, off) probabilities: balanced labels for the reward model; mostly on-topic for policy SFT
BALANCED_TOPICALITY = (0.45, 0.1, 0.45)
SFT_TOPICALITY = (0.7, 0.1, 0.2)


@dataclasses.dataclass(frozen=True)
class Request:
    """A request of the world: its text and the slots it was built from."""

    text: str
    topic: str
    task: str
    template_id: int
    harmful: bool


@dataclasses.dataclass(frozen=True)
class ResponseSpec:
    """What a composed response contains (see the module table).

    opener / closer: one of ``POLITENESS_FORMS``; topicality: one of ``TOPICALITIES``; n_steps: 0..3
    (0 renders a vague sentence); refusal: add a refusal sentence (harmful requests only);
    forbidden: add a forbidden phrase.
    """

    opener: str = "neutral"
    closer: str = "neutral"
    topicality: str = "on"
    n_steps: int = 0
    refusal: bool = False
    forbidden: bool = False

    def __post_init__(self):
        for key, value, valid in [("opener", self.opener, POLITENESS_FORMS),
                                  ("closer", self.closer, POLITENESS_FORMS),
                                  ("topicality", self.topicality, TOPICALITIES)]:
            if value not in valid:
                raise ValueError(f"ResponseSpec.{key}={value!r}; valid values: {valid}")
        if not 0 <= self.n_steps <= 3:
            raise ValueError(f"ResponseSpec.n_steps={self.n_steps}; must be in 0..3")


def all_requests() -> list[Request]:
    """Every request of the world, in a fixed order (topic, task, template)."""
    return [
        Request(template.format(task=task), name, task, i, topic.harmful)
        for name, topic in TOPICS.items()
        for task in topic.tasks
        for i, template in enumerate(REQUEST_TEMPLATES)
    ]


def split_requests(seed: int = 0) -> tuple[list[Request], list[Request]]:
    """(train, held_out) requests: for every task one template, drawn from ``seed``, is held out.

    Every task appears in both splits, but no held-out (template, task) combination is in train.
    """
    rng = np.random.default_rng([seed, 1])
    held = {task: int(rng.integers(len(REQUEST_TEMPLATES)))
            for topic in TOPICS.values() for task in topic.tasks}
    requests = all_requests()
    train = [r for r in requests if held[r.task] != r.template_id]
    held_out = [r for r in requests if held[r.task] == r.template_id]
    return train, held_out


def sample_spec(rng: np.random.Generator, harmful: bool, *, p_courteous: float = 0.5,
                p_rude: float = 0.2, p_forbidden_benign: float = 0.4,
                p_forbidden_harmful: float = 0.5, p_refusal: float = 0.5,
                p_topicality: tuple[float, float, float] = BALANCED_TOPICALITY) -> ResponseSpec:
    """A mixed-quality spec: every part is drawn independently.

    opener and closer: courteous / neutral / rude with probabilities (p_courteous, rest, p_rude);
    topicality: on / mixed / off with probabilities ``p_topicality``; n_steps uniform on 0..3; refusal
    (harmful requests only) with p_refusal; a forbidden phrase with p_forbidden_harmful / p_forbidden_benign.
    """
    if len(p_topicality) != 3 or min(p_topicality) < 0 or abs(sum(p_topicality) - 1.0) > 1e-9:
        raise ValueError(f"p_topicality={p_topicality}; need 3 non-negative probabilities (on, mixed, off) "
                         "summing to 1")
    p_form = [p_courteous, 1.0 - p_courteous - p_rude, p_rude]
    return ResponseSpec(
        opener=POLITENESS_FORMS[rng.choice(3, p=p_form)],
        closer=POLITENESS_FORMS[rng.choice(3, p=p_form)],
        topicality=TOPICALITIES[rng.choice(3, p=list(p_topicality))],
        n_steps=int(rng.integers(4)),
        refusal=bool(harmful and rng.random() < p_refusal),
        forbidden=bool(rng.random() < (p_forbidden_harmful if harmful else p_forbidden_benign)),
    )


def best_spec(harmful: bool) -> ResponseSpec:
    """The spec of a response that scores 1.0 on every aspect."""
    return ResponseSpec("courteous", "courteous", "on", 3 if not harmful else 2, refusal=harmful)


def worst_spec(harmful: bool) -> ResponseSpec:
    """The spec of a response that scores 0.0 on every aspect."""
    return ResponseSpec("rude", "rude", "off", 0, refusal=False, forbidden=True)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def compose_response(request: Request, spec: ResponseSpec, rng: np.random.Generator) -> str:
    """Render ``spec`` as response text for ``request`` (opener, refusal, forbidden, body, closer)."""
    topic = TOPICS[request.topic]
    others = [t for n, t in TOPICS.items() if n != request.topic]
    parts = [_pick(rng, {"courteous": COURTEOUS_OPENERS, "neutral": NEUTRAL_OPENERS,
                         "rude": RUDE_OPENERS}[spec.opener])]
    if spec.refusal:
        parts.append(_pick(rng, REFUSALS))
    if spec.forbidden:
        source = topic if topic.harmful else TOPICS[_pick(rng, HARMFUL_TOPICS)]
        parts.append(f"{_pick(rng, FORBIDDEN_LEADS)} {_pick(rng, source.forbidden)} .")
    n_slots = max(spec.n_steps, 2)
    if spec.topicality == "on":
        on_slot = [True] * n_slots
    elif spec.topicality == "off":
        on_slot = [False] * n_slots
    else:  # mixed: at least one slot of each kind
        on_slot = [bool(b) for b in rng.permutation([1] + [0] + [int(rng.integers(2))
                                                              for _ in range(n_slots - 2)])]
    off_topic = _pick(rng, others)
    slot_steps = [topic.steps if on else off_topic.steps for on in on_slot]
    if spec.n_steps == 0:
        nouns = [_pick(rng, s)[1] for s in slot_steps]
        if nouns[0] == nouns[1]:
            nouns[1] = next(n for _, n in slot_steps[1] if n != nouns[0])
        parts.append(_pick(rng, VAGUE_TEMPLATES).format(a=nouns[0], b=nouns[1]))
    else:
        markers = STEP_MARKERS_BY_COUNT[spec.n_steps]
        clauses, used = [], set()
        for marker, steps in zip(markers, slot_steps):
            choices = [s for s in steps if s not in used]
            verb, noun = _pick(rng, choices)
            used.add((verb, noun))
            clauses.append(f"{marker} {verb} the {noun}")
        parts.append(" , ".join(clauses) + " .")
    parts.append(_pick(rng, {"courteous": COURTEOUS_CLOSERS, "neutral": NEUTRAL_CLOSERS,
                             "rude": RUDE_CLOSERS}[spec.closer]))
    return " ".join(p for p in parts if p)


def vocabulary() -> set[str]:
    """Every word and punctuation mark the world's requests and responses can contain."""
    texts = [r.text for r in all_requests()]
    texts += [*COURTEOUS_OPENERS, *COURTEOUS_CLOSERS, *NEUTRAL_OPENERS, *NEUTRAL_CLOSERS,
              *RUDE_OPENERS, *RUDE_CLOSERS, *REFUSALS, *FORBIDDEN_LEADS, *VAGUE_TEMPLATES]
    for topic in TOPICS.values():
        texts += [f"{v} the {n}" for v, n in topic.steps] + list(topic.forbidden)
    texts += [" ".join(m) for m in STEP_MARKERS_BY_COUNT.values()]
    return {w for text in texts for w in text.split() if w not in ("{a}", "{b}", "{task}")}
