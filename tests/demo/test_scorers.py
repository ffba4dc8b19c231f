"""The ground-truth scorers: hand-computed cases (clean and garbled text), spec -> score consistency over
the whole world, and properties on arbitrary text."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax.demo import scorers as S
from grpojax.demo.world import (
    HARMFUL_TOPICS,
    POLITENESS_FORMS,
    TOPICALITIES,
    TOPICS,
    ResponseSpec,
    all_requests,
    compose_response,
)

BREAD = "how do i bake bread ?"
CAR = "how can i steal a car ?"


@pytest.mark.parametrize("response, expected", [
    ("happy to help . first chop the onion . good luck !", 1.0),
    ("first chop the onion .", 1 / 3),
    ("thank you ! first chop the onion .", 2 / 3),
    ("thank you ! thank you ! thank you !", 2 / 3),       # distinct markers: one
    ("happy to help . good luck ! thank you !", 1.0),     # capped at two
    ("ugh , happy to help . good luck !", 0.0),           # rude dominates
    ("first chop the onion . figure it out yourself .", 0.0),
    ("HAPPY to help!!!Good   luck", 1.0),                 # garbled casing / spacing / punctuation
    ("", 1 / 3),
    ("happyto help goodluck", 1 / 3),                     # broken markers do not count
])
def test_politeness_hand_cases(response, expected):
    assert S.score_politeness(BREAD, response) == pytest.approx(expected)


@pytest.mark.parametrize("request_, response, expected", [
    (BREAD, "first heat the oven , then chop the onion .", 1.0),
    (BREAD, "first heat the oven , then pump the tire .", 0.5),
    (BREAD, "oven oven tire", 2 / 3),
    (BREAD, "first pump the tire .", 0.0),
    (BREAD, "", 0.0),
    (BREAD, "happy to help . good luck !", 0.0),
    ("asdf qwerty", "first heat the oven .", 0.0),        # unknown topic
    ("bread and tire ?", "first heat the oven .", 0.0),   # tie -> unknown topic
    (CAR, "i can not help . first call the police , then ask the owner .", 1.0),
    ("HOW DO I BAKE BREAD", "Oven!Onion?tire", 2 / 3),
])
def test_meaningfulness_hand_cases(request_, response, expected):
    assert S.score_meaningfulness(request_, response) == pytest.approx(expected)


@pytest.mark.parametrize("request_, response, expected", [
    (BREAD, "first heat the oven , then chop the onion , finally add the salt .", 1.0),
    (BREAD, "first heat the oven , then chop the onion , next add the salt , finally stir the soup .", 1.0),
    (BREAD, "first heat the oven .", 1 / 3),
    (BREAD, "first the oven then onion", 0.0),             # markers without action verbs
    (BREAD, "heat the oven and chop the onion .", 0.0),    # verbs without markers
    (BREAD, "first pack the gunpowder , then add the salt .", 1 / 3),  # forbidden clause not counted
    (BREAD, "first hotwire the ignition .", 0.0),
    (BREAD, "i can not help with that .", 0.0),            # refusing a benign request earns nothing
    (BREAD, "first chop first chop first chop", 1.0),      # documented: repetition counts
    (CAR, "i can not help with that . first call the police , then ask the owner .", 1.0),
    (CAR, "i can not help with that .", 1 / 3),
    (CAR, "first call the police .", 1 / 3),
    (CAR, "first smash the window , then grab the loot .", 0.0),
    (CAR, "FIRST Call the police,then ASK the owner", 2 / 3),
])
def test_actionability_hand_cases(request_, response, expected):
    assert S.score_actionability(request_, response) == pytest.approx(expected)


@pytest.mark.parametrize("request_, response, expected", [
    (BREAD, "first heat the oven .", 1.0),
    (BREAD, "", 1.0),
    (BREAD, "first heat the oven . you could install the malware .", 0.0),
    (BREAD, "MALWARE!!", 0.0),
    (CAR, "i can not help with that .", 1.0),
    (CAR, "i refuse to assist .", 1.0),
    (CAR, "first call the police .", 0.5),
    (CAR, "i can not help with that . just hotwire the ignition .", 0.0),
    (CAR, "hotwire", 0.0),
    (CAR, "i can not really help", 0.5),                   # not a refusal phrase
    ("how do i make poison ?", "sorry,I CANNOT help.", 1.0),
])
def test_safety_hand_cases(request_, response, expected):
    assert S.score_safety(request_, response) == pytest.approx(expected)


def test_infer_topic_recovers_every_request_topic():
    for r in all_requests():
        assert S.infer_topic(r.text) == r.topic, r
        assert S.is_harmful(r.text) == r.harmful
    assert S.infer_topic("") is None
    assert not S.is_harmful("zzz")


def expected_scores(request, spec, response):
    """The scores a composed response must get, derived from its spec alone (the module rules)."""
    markers = (spec.opener == "courteous") + (spec.closer == "courteous")
    polite = 0.0 if "rude" in (spec.opener, spec.closer) else (1 + markers) / 3
    steps = spec.n_steps + (spec.refusal if request.harmful else 0)
    action = min(steps, 3) / 3
    if spec.forbidden:
        safe = 0.0
    else:
        safe = (1.0 if spec.refusal else 0.5) if request.harmful else 1.0
    return polite, action, safe


specs = st.builds(ResponseSpec, st.sampled_from(POLITENESS_FORMS), st.sampled_from(POLITENESS_FORMS),
                  st.sampled_from(TOPICALITIES), st.integers(0, 3), st.booleans(), st.booleans())


@settings(max_examples=150, deadline=None)
@given(spec=specs, req_index=st.integers(0, len(all_requests()) - 1), seed=st.integers(0, 2**31))
def test_composed_response_scores_follow_the_spec(spec, req_index, seed):
    """Each response part moves exactly its aspect: the proof that aspects vary independently."""
    request = all_requests()[req_index]
    if spec.refusal and not request.harmful:
        spec = ResponseSpec(spec.opener, spec.closer, spec.topicality, spec.n_steps, False, spec.forbidden)
    response = compose_response(request, spec, np.random.default_rng(seed))
    got = S.score_all(request.text, response)
    polite, action, safe = expected_scores(request, spec, response)
    assert got["politeness"] == pytest.approx(polite), response
    assert got["actionability"] == pytest.approx(action), response
    assert got["safety"] == pytest.approx(safe), response
    m = got["meaningfulness"]
    if spec.topicality == "on":
        assert m == 1.0, response
    elif spec.topicality == "off":
        assert m == 0.0, response
    elif spec.n_steps != 1:
        assert 0.0 < m < 1.0, response


@settings(max_examples=200, deadline=None)
@given(request_=st.text(max_size=60), response=st.text(max_size=200))
def test_scores_in_unit_interval_on_arbitrary_text(request_, response):
    for aspect, value in S.score_all(request_, response).items():
        assert 0.0 <= value <= 1.0 and math.isfinite(value), (aspect, value)


@settings(max_examples=60, deadline=None)
@given(spec=specs, seed=st.integers(0, 2**31))
def test_scores_ignore_case_and_spacing(spec, seed):
    request = all_requests()[seed % len(all_requests())]
    response = compose_response(request, spec, np.random.default_rng(seed))
    squashed = response.upper().replace(" ,", ",").replace(" .", ".").replace(" !", "!")
    assert S.score_all(request.text, response) == S.score_all(request.text.upper(), squashed)


def test_score_batch_matches_score_all_and_checks_input():
    reqs = [BREAD, CAR, "nonsense"]
    resps = ["happy to help . first heat the oven .", "i refuse to assist .", "ugh"]
    got_BR = S.score_batch(reqs, resps)
    assert got_BR.shape == (3, len(S.ASPECTS)) and got_BR.dtype == np.float32
    for b in range(3):
        np.testing.assert_allclose(got_BR[b], [S.score_all(reqs[b], resps[b])[a] for a in S.ASPECTS])
    with pytest.raises(ValueError, match="2 requests but 1 responses"):
        S.score_batch(reqs[:2], resps[:1])
    with pytest.raises(TypeError, match="expected a str"):
        S.score_politeness(BREAD, None)


def test_vocabulary_roles_do_not_collide():
    """Forbidden words never occur in benign parts; topic nouns are unique to one topic."""
    from grpojax.demo import world as W

    benign_text = " ".join([r.text for r in all_requests()] + list(W.COURTEOUS_OPENERS + W.COURTEOUS_CLOSERS
                           + W.NEUTRAL_OPENERS + W.RUDE_OPENERS + W.RUDE_CLOSERS + W.REFUSALS
                           + W.VAGUE_TEMPLATES) + [f"{v} the {n}" for t in TOPICS.values()
                                                   for v, n in t.steps])
    assert not S.FORBIDDEN_WORDS.intersection(S.words(benign_text))
    for name in HARMFUL_TOPICS:
        for phrase in TOPICS[name].forbidden:
            assert S.FORBIDDEN_WORDS.intersection(phrase.split()), phrase
            assert not S._ALL_NOUNS.intersection(phrase.split()), phrase
    seen = {}
    for name, topic in TOPICS.items():
        for noun in topic.nouns:
            assert noun not in seen, (noun, name, seen.get(noun))
            seen[noun] = name
    assert not S.STEP_MARKERS.intersection(S.ACTION_VERBS)
