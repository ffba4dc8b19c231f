"""The request / response language: sizes, splits, extremes, lengths, validation, determinism."""

import numpy as np
import pytest

from grpojax.demo import scorers as S
from grpojax.demo import world as W


def test_request_inventory():
    requests = W.all_requests()
    n_tasks = sum(len(t.tasks) for t in W.TOPICS.values())
    assert len(requests) == n_tasks * len(W.REQUEST_TEMPLATES) == 145
    assert len({r.text for r in requests}) == len(requests)
    assert sum(r.harmful for r in requests) == 45
    assert len(W.BENIGN_TOPICS) == 5 and len(W.HARMFUL_TOPICS) == 3
    assert 150 <= len(W.vocabulary()) <= 400  # "a few hundred words"


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_holds_out_unseen_combinations(seed):
    train, held = W.split_requests(seed)
    assert len(held) == 29 and len(train) == 116
    assert not {r.text for r in train} & {r.text for r in held}
    assert {r.task for r in held} == {r.task for r in train}  # every task in both, as a new combination
    for task in {r.task for r in held}:
        assert sum(r.task == task for r in held) == 1
    assert W.split_requests(seed) == (train, held)


def test_split_depends_on_seed():
    assert W.split_requests(0)[1] != W.split_requests(1)[1]


def test_best_and_worst_responses_hit_the_extremes():
    rng = np.random.default_rng(0)
    for request in W.all_requests():
        for _ in range(3):
            best = W.compose_response(request, W.best_spec(request.harmful), rng)
            worst = W.compose_response(request, W.worst_spec(request.harmful), rng)
            assert S.score_all(request.text, best) == dict.fromkeys(S.ASPECTS, 1.0), (request, best)
            assert S.score_all(request.text, worst) == dict.fromkeys(S.ASPECTS, 0.0), (request, worst)


def test_longest_possible_response_fits_the_word_budget():
    """The longest parts of every kind together: request + response <= 45 words (48 tokens with markers)."""
    longest = W.ResponseSpec("courteous", "rude", "on", 3, refusal=True, forbidden=True)
    rng = np.random.default_rng(0)
    worst_len = 0
    for request in W.all_requests():
        for _ in range(20):
            response = W.compose_response(request, longest, rng)
            worst_len = max(worst_len, len(request.text.split()) + len(response.split()))
    assert worst_len <= 45
    short = W.compose_response(W.all_requests()[0], W.ResponseSpec(n_steps=1), rng)
    assert 5 <= len(short.split())


def test_compose_is_deterministic_given_the_generator_state():
    request = W.all_requests()[100]
    spec = W.ResponseSpec("courteous", "neutral", "mixed", 3, refusal=request.harmful, forbidden=True)
    a = [W.compose_response(request, spec, np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]
    assert len({W.compose_response(request, spec, np.random.default_rng(s)) for s in range(20)}) > 5


def test_sample_spec_marginals():
    rng = np.random.default_rng(0)
    specs = [W.sample_spec(rng, harmful=bool(i % 2)) for i in range(4000)]
    opener = np.array([s.opener for s in specs])
    assert abs(np.mean(opener == "courteous") - 0.5) < 0.03 and abs(np.mean(opener == "rude") - 0.2) < 0.03
    assert abs(np.mean([s.n_steps for s in specs]) - 1.5) < 0.06
    assert not any(s.refusal for s in specs[0::2])  # benign requests are never refused
    assert abs(np.mean([s.refusal for s in specs[1::2]]) - 0.5) < 0.04


@pytest.mark.parametrize("kwargs, match", [
    (dict(opener="nice"), "opener='nice'"),
    (dict(closer="x"), "closer='x'"),
    (dict(topicality="maybe"), "topicality='maybe'"),
    (dict(n_steps=4), "n_steps=4"),
])
def test_response_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        W.ResponseSpec(**kwargs)
