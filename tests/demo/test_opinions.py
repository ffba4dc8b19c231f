"""The group-opinion task: group sizes, per-group splits, the preference rules, noise, determinism, and
the structural reason the small group is harder."""

import itertools
from collections import Counter

import numpy as np
import pytest

from grpojax.demo import opinions as O
from grpojax.demo.tokenizer import format_completion, format_prompt


@pytest.fixture(scope="module")
def pairs():
    return O.opinion_pairs(seed=0)


def test_group_sizes_and_splits(pairs):
    assert len(O.questions()) == 192
    per_group = {s: Counter(r["group"] for r in pairs[s]) for s in O.SPLITS}
    for g in O.GROUPS[:-1]:
        assert per_group["train"][g] == 134 and per_group["val"][g] == 29 * 3 and per_group["test"][g] == 29 * 3
    small = O.SMALL_GROUP
    assert per_group["train"][small] == 34 and per_group["val"][small] == 7 * 3
    assert per_group["test"][small] == 7 * 3
    share = per_group["train"][small] / sum(per_group["train"].values())
    assert 0.05 < share < 0.1
    for g in O.GROUPS:  # splits of one group are disjoint question sets
        qs = {s: {r["question_id"] for r in pairs[s] if r["group"] == g} for s in O.SPLITS}
        for a, b in itertools.combinations(O.SPLITS, 2):
            assert not qs[a] & qs[b], (g, a, b)


def test_rows_follow_the_rules_and_the_format(pairs):
    qs = O.questions()
    for split in O.SPLITS:
        for row in pairs[split]:
            q = qs[row["question_id"]]
            g = O.GROUPS.index(row["group"])
            assert row["group_id"] == g and row["split"] == split
            pref = O.preferred_index(g, q["category_id"], q["positive"])
            assert row["chosen_letter"] == O.LETTERS[pref] != row["rejected_letter"]
            assert row["chosen"] == format_completion(row["chosen_letter"])
            assert row["rejected"] == format_completion(row["rejected_letter"])
            assert row["prompt"] == format_prompt(row["question"])
            assert row["question"].startswith(f"opinion of people in {row['group']} on : {q['text']}\n")
            assert row["question"].endswith("\nA. very much\nB. somewhat\nC. not much\nD. not at all")
    for split in ("val", "test"):  # all three rejected letters per evaluated question
        by_q = Counter((r["group"], r["question_id"]) for r in pairs[split])
        assert set(by_q.values()) == {3}


def test_preferences_differ_systematically_between_groups():
    table = np.array([[O.preferred_index(g, c, p) for c in range(4) for p in (True, False)]
                      for g in range(len(O.GROUPS))])
    for a, b in itertools.combinations(range(len(O.GROUPS)), 2):
        assert (table[a] != table[b]).mean() >= 0.5, (a, b)
    with pytest.raises(ValueError, match="group_id=4"):
        O.preferred_index(4, 0, True)


def _best_accuracy(rows, features):
    """Train accuracy of the best lookup table from the given question features to a letter."""
    qs = O.questions()
    table = Counter()
    keys = []
    for row in rows:
        q = qs[row["question_id"]]
        key = tuple(q[f] for f in features)
        table[key, row["chosen_letter"]] += 1
        keys.append(key)
    best = {k: max(("A", "B", "C", "D"), key=lambda letter: table[k, letter]) for k in set(keys)}
    return np.mean([best[k] == r["chosen_letter"] for k, r in zip(keys, rows)])


def test_small_group_needs_an_interaction_of_features(pairs):
    """Large groups are predictable from the category alone; the small group only from category x
    polarity: it is the harder one."""
    for g in O.GROUPS:
        rows = [r for r in pairs["train"] if r["group"] == g]
        by_category = _best_accuracy(rows, ["category_id"])
        by_both = _best_accuracy(rows, ["category_id", "positive"])
        assert by_both == 1.0
        if g == O.SMALL_GROUP:
            assert by_category < 0.8
        else:
            assert by_category == 1.0


def test_noise_determinism_and_validation():
    noisy = O.opinion_pairs(seed=0, small_noise=0.3, small_fraction=1.0, eval_all_rejected=False)
    qs = O.questions()
    rows = [r for s in O.SPLITS for r in noisy[s] if r["group"] == O.SMALL_GROUP]
    flipped = np.mean([r["chosen_letter"] != O.LETTERS[O.preferred_index(
        3, qs[r["question_id"]]["category_id"], qs[r["question_id"]]["positive"])] for r in rows])
    assert len(rows) == 192 and 0.2 < flipped < 0.4
    big = [r for r in noisy["train"] if r["group"] == O.GROUPS[0]]
    assert all(r["chosen_letter"] == O.LETTERS[O.preferred_index(
        0, qs[r["question_id"]]["category_id"], qs[r["question_id"]]["positive"])] for r in big)
    assert O.opinion_pairs(seed=3) == O.opinion_pairs(seed=3)
    assert O.opinion_pairs(seed=3)["test"] != O.opinion_pairs(seed=4)["test"]
    for kwargs, match in [(dict(small_fraction=0.0), "small_fraction"), (dict(small_noise=1.0), "small_noise"),
                          (dict(split_fractions=(0.5, 0.5, 0.5)), "split_fractions")]:
        with pytest.raises(ValueError, match=match):
            O.opinion_pairs(**kwargs)


def test_sft_rows_one_per_question(pairs):
    rows = O.opinion_sft_rows(pairs)
    assert len(rows) == len(pairs["train"])  # train has one pair per question
    assert len({(r["group_id"], r["question_id"]) for r in rows}) == len(rows)
    test_rows = O.opinion_sft_rows(pairs, "test")
    assert len(test_rows) == len(pairs["test"]) // 3
