"""Tests for grpojax.rewards.text: rule-based rewards on decoded strings."""

import numpy as np
import pytest

from grpojax import rewards


def test_length_reward_piecewise_linear():
    texts = ["", "ab", "abcd", "abcdefgh", "a" * 12, "a" * 16, "a" * 40]
    got = rewards.length_reward(texts, max_chars=8, min_chars=4)
    # below 4: len/4; inside [4, 8]: 1; above: 2 - len/8, floored at 0
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    assert got.dtype == np.float32
    with pytest.raises(ValueError, match="min_chars"):
        rewards.length_reward(texts, max_chars=3, min_chars=4)
    with pytest.raises(TypeError, match="single string"):
        rewards.length_reward("abc", max_chars=3)


def test_keyword_and_regex_rewards():
    texts = ["I cannot help with that.", "Sure! Here is how: step 1", "<answer>42</answer>"]
    np.testing.assert_array_equal(rewards.keyword_reward(texts, ["CANNOT", "sorry"]), [1, 0, 0])
    np.testing.assert_array_equal(rewards.keyword_reward(texts, ["CANNOT"], case_sensitive=True), [0, 0, 0])
    np.testing.assert_array_equal(rewards.keyword_reward(texts, ["sure", "step"], mode="all"), [0, 1, 0])
    np.testing.assert_array_equal(rewards.keyword_reward(texts, ["cannot"], penalize=True), [-1, 0, 0])
    np.testing.assert_array_equal(rewards.regex_reward(texts, r"<answer>\d+</answer>", full_match=True), [0, 0, 1])
    np.testing.assert_array_equal(rewards.regex_reward(texts, r"step \d"), [0, 1, 0])
    with pytest.raises(ValueError, match="invalid pattern"):
        rewards.regex_reward(texts, "(")
    with pytest.raises(ValueError, match="any, all"):
        rewards.keyword_reward(texts, ["x"], mode="most")
    with pytest.raises(TypeError, match="completion 1 is int"):
        rewards.keyword_reward(["a", 3], ["a"])


def test_rule_scores_stack_into_aspect_columns():
    texts = ["hello world", "bye", "x" * 30]
    scores, names = rewards.rule_scores(texts, {
        "length": lambda t: rewards.length_reward(t, max_chars=15),
        "greeting": lambda t: rewards.keyword_reward(t, ["hello"]),
    })
    assert names == ["length", "greeting"]
    np.testing.assert_allclose(scores, [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    # the columns aggregate like reward-model aspects
    np.testing.assert_allclose(rewards.weighted_sum(scores, [1.0, 2.0]), [3.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="rule 'bad' returned shape"):
        rewards.rule_scores(texts, {"bad": lambda t: np.zeros(2)})
