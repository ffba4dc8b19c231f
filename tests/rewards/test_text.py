"""Tests for grpojax.rollout.text_rewards: text rewards on decoded strings, in TRL's convention."""

import numpy as np
import pytest

from grpojax import rewards
from grpojax.cli import UserError
from grpojax.rollout import text_rewards as tr


def test_length_reward_piecewise_linear():
    texts = ["", "ab", "abcd", "abcdefgh", "a" * 12, "a" * 16, "a" * 40]
    got = tr.length_reward(None, texts, max_chars=8, min_chars=4)
    # below 4: len/4; inside [4, 8]: 1; above: 2 - len/8, floored at 0
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="min_chars"):
        tr.length_reward(None, texts, max_chars=3, min_chars=4)
    with pytest.raises(TypeError, match="single string"):
        tr.length_reward(None, "abc", max_chars=3)


def test_keyword_and_regex_rewards():
    texts = ["I cannot help with that.", "Sure! Here is how: step 1", "<answer>42</answer>"]
    kw, rx = tr.keyword_reward, tr.regex_reward
    np.testing.assert_array_equal(kw(None, texts, keywords=["CANNOT", "sorry"]), [1, 0, 0])
    np.testing.assert_array_equal(kw(None, texts, keywords=["CANNOT"], case_sensitive=True), [0, 0, 0])
    np.testing.assert_array_equal(kw(None, texts, keywords=["sure", "step"], mode="all"), [0, 1, 0])
    np.testing.assert_array_equal(kw(None, texts, keywords=["cannot"], penalize=True), [-1, 0, 0])
    np.testing.assert_array_equal(rx(None, texts, pattern=r"<answer>\d+</answer>", full_match=True), [0, 0, 1])
    np.testing.assert_array_equal(rx(None, texts, pattern=r"step \d"), [0, 1, 0])
    with pytest.raises(ValueError, match="invalid pattern"):
        rx(None, texts, pattern="(")
    with pytest.raises(ValueError, match="any, all"):
        kw(None, texts, keywords=["x"], mode="most")
    with pytest.raises(TypeError, match="completion 1 is int"):
        kw(None, ["a", 3], keywords=["a"])


def _only_questions(prompts, completions, **kwargs):
    """A TRL-style reward that does not apply to some rows (None) and reads a keyword column."""
    return [None if not p.endswith("?") else float(len(c)) * kwargs["scale"] for p, c in zip(prompts, completions)]


def test_score_stacks_named_rewards_into_aspect_columns():
    prompts, texts = ["hi?", "do it", "why?"], ["hello world", "bye", "x" * 30]
    funcs = [tr.resolve("length:15"), tr.resolve("keyword:hello"), _only_questions]
    scores = tr.score(funcs, ["length", "keyword", "q"], prompts, texts, scale=0.5)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, [[1.0, 1.0, 5.5], [1.0, 0.0, np.nan], [0.0, 0.0, 15.0]])
    # the columns aggregate like reward-model aspects (None -> NaN is skipped)
    np.testing.assert_allclose(rewards.weighted_sum(scores[:, :2], [1.0, 2.0]), [3.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="reward function 'bad' returned 2 scores"):
        tr.score([lambda p, c, **k: [0.0, 0.0]], ["bad"], prompts, texts)
    with pytest.raises(UserError, match="ppo.reward_funcs: unknown reward 'nope'"):
        tr.resolve("nope", "ppo")
