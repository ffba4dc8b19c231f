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
    for g in O.GROUPS[:-1]:  # 192 questions: 29 val, 29 test, 134 train; 3 pairs per question everywhere
        assert per_group["train"][g] == 134 * 3
        assert per_group["val"][g] == per_group["test"][g] == 29 * 3
    small = O.SMALL_GROUP  # half of the questions: 96 = 14 val + 14 test + 68 train
    assert per_group["train"][small] == 68 * 3 and per_group["val"][small] == per_group["test"][small] == 14 * 3
    share = per_group["train"][small] / sum(per_group["train"].values())
    assert 0.1 < share < 0.2
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
            assert row["question"].startswith(
                f"opinion of people in {row['group']} on {q['category']} : {q['text']}\n")
            assert row["question"].endswith("\nA. very much\nB. somewhat\nC. not much\nD. not at all")
    for split in O.SPLITS:  # all three rejected letters per question
        by_q = {}
        for r in pairs[split]:
            by_q.setdefault((r["group"], r["question_id"]), []).append(r["rejected_letter"])
        assert {len(v) for v in by_q.values()} == {3} and all(len(set(v)) == 3 for v in by_q.values())


def test_one_rejected_letter_and_no_category_options():
    pairs = O.opinion_pairs(seed=0, train_all_rejected=False, eval_all_rejected=False, category_in_prompt=False)
    for split in O.SPLITS:
        assert Counter(Counter((r["group"], r["question_id"]) for r in pairs[split]).values()) == \
            {1: len({(r["group"], r["question_id"]) for r in pairs[split]})}
        assert all(r["question"].startswith(f"opinion of people in {r['group']} on : ") for r in pairs[split])
    assert O.opinion_prompt("avalon", "how good is art for society ?", "leisure").splitlines()[0] == \
        "opinion of people in avalon on leisure : how good is art for society ?"


def test_preference_table_by_hand():
    """Rows: groups; columns: (category, polarity) = (0,+) (0,-) (1,+) (1,-) ... (3,-); 0..3 = A..D."""
    table = [[O.preferred_index(g, c, p) for c in range(4) for p in (True, False)]
             for g in range(len(O.GROUPS))]
    assert table == [
        [0, 3, 1, 2, 2, 1, 3, 0],  # base: c if positive else 3 - c
        [0, 3, 1, 2, 2, 1, 1, 2],  # category 3 shifted by 2
        [0, 3, 3, 0, 0, 3, 3, 0],  # categories 1, 2 shifted by 2
        [3, 0, 2, 1, 3, 2, 0, 1],  # small group: reversed polarity (c < 2), base + 1 (c >= 2)
    ]
    small = np.array(table[-1])
    for g in range(len(O.GROUPS) - 1):  # the small group disagrees with every large group everywhere
        assert (small != np.array(table[g])).all()
    with pytest.raises(ValueError, match="group_id=4"):
        O.preferred_index(4, 0, True)
    with pytest.raises(ValueError, match="category_id=7"):
        O.preferred_index(0, 7, True)


def _lookup(rows, features):
    """The majority letter of the rows for each value of the question features."""
    qs = O.questions()
    counts = Counter((tuple(qs[r["question_id"]][f] for f in features), r["chosen_letter"]) for r in rows)
    keys = {k for k, _ in counts}
    return {k: max(O.LETTERS, key=lambda letter: counts[k, letter]) for k in keys}


def _best_accuracy(rows, features):
    """Train accuracy of the best lookup table from the given question features to a letter."""
    qs = O.questions()
    best = _lookup(rows, features)
    return np.mean([best[tuple(qs[r["question_id"]][f] for f in features)] == r["chosen_letter"]
                    for r in rows])


def test_pooled_fit_serves_the_majority_and_fails_the_small_group(pairs):
    """Per group, the answer is a function of (category, polarity): the task is solvable. A predictor
    that ignores the group -- what the average loss favours -- is right for most large-group questions and
    wrong on every small-group one: the worst-group gap that group-robust weighting targets."""
    for g in O.GROUPS:
        rows = [r for r in pairs["train"] if r["group"] == g]
        assert _best_accuracy(rows, ["category_id", "positive"]) == 1.0
        assert _best_accuracy(rows, ["category_id"]) < 1.0  # polarity matters too
    pooled = _lookup(pairs["train"], ["category_id", "positive"])
    qs = O.questions()
    acc = {g: np.mean([pooled[qs[r["question_id"]]["category_id"], qs[r["question_id"]]["positive"]]
                       == r["chosen_letter"] for r in pairs["test"] if r["group"] == g])
           for g in O.GROUPS}
    # expected 1, 3/4, 1/2 (the share of categories where each large group holds the base opinion)
    assert acc[O.GROUPS[0]] == 1.0 and acc[O.GROUPS[1]] > 0.6 and acc[O.GROUPS[2]] > 0.35
    assert acc[O.SMALL_GROUP] == 0.0


def test_noise_determinism_and_validation():
    noisy = O.opinion_pairs(seed=0, small_noise=0.3, small_fraction=1.0, eval_all_rejected=False,
                            train_all_rejected=False)
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
    for kwargs, match in [(dict(small_fraction=0.0), "small_fraction"),
                          (dict(small_noise=1.0), "small_noise"),
                          (dict(split_fractions=(0.5, 0.5, 0.5)), "split_fractions")]:
        with pytest.raises(ValueError, match=match):
            O.opinion_pairs(**kwargs)


def test_sft_rows_one_per_question(pairs):
    rows = O.opinion_sft_rows(pairs)
    assert len(rows) == len(pairs["train"]) // 3  # train has three pairs per question
    assert len({(r["group_id"], r["question_id"]) for r in rows}) == len(rows)
    test_rows = O.opinion_sft_rows(pairs, "test")
    assert len(test_rows) == len(pairs["test"]) // 3
