"""grpojax.rewards.verifiable: final-answer extraction, number normalisation, exact match and the tag
format reward, on hand-written completions."""

from fractions import Fraction

import pytest

from grpojax.rewards.verifiable import (
    answers_match,
    exact_match_reward,
    extract_answer,
    format_reward,
    last_number,
    parse_number,
    reference_answer,
    tag_format_reward,
)


@pytest.mark.parametrize("text,want", [
    ("so \\boxed{4} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),          # the last box, nested braces
    ("\\boxed{x^{2}+{1}} and more", "x^{2}+{1}"),
    ("\\boxed{7 unclosed", "\\boxed{7 unclosed"),                         # unclosed: falls to the last line
    ("<think>2+2</think><answer> 4 </answer>", "4"),
    ("Natalia sold 24 clips.\n#### 72\n", "72"),                            # GSM8K
    ("The answer is 42. Then 7 more", "42"),
    ("so the final answer is: -3", "-3"),
    ("Answer: Paris", "Paris"),
    ("first line\n\n  last line  \n", "last line"),
    ("   \n ", None),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


@pytest.mark.parametrize("text,want", [
    ("1,000", 1000), ("1000.0", 1000), ("-3", -3), ("3/4", Fraction(3, 4)), ("\\frac{3}{4}", Fraction(3, 4)),
    ("0.75", Fraction(3, 4)), (".5", Fraction(1, 2)), ("50%", 50), ("$12.50", Fraction(25, 2)), ("42.", 42),
    ("- 7", -7), ("1/0", None), ("1,00", None), ("12 apples", None), ("x", None), ("", None),
])
def test_parse_number(text, want):
    assert parse_number(text) == want


def test_last_number():
    assert last_number("so the total is 1,000 apples.") == 1000
    assert last_number("5 - 3 = 2") == 2
    assert last_number("a -3 b") == -3
    assert last_number("(2)-3") == 3   # a minus after a closing bracket is subtraction, not a sign
    assert last_number("x = \\frac{6}{8}") == Fraction(3, 4)
    assert last_number("1,2,3") == 3
    assert last_number("no digits") is None


@pytest.mark.parametrize("completion,reference,want", [
    ("so the total is 1,000 apples.", "1000", True),
    ("we get 1000.0", "1,000", True),
    ("\\boxed{\\frac{3}{4}}", "0.75", True),
    ("The answer is $12.50", 12.5, True),
    ("x\n#### 42", 42, True),
    ("The answer is 41. Check: 6*7=42", "42", False),                  # the sentence's number, not the last one
    ("12", "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", False),  # GSM8K reference: its #### answer
    ("72", "Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", True),
    ("it is 7", "seven", False),
    ("Paris.", "paris", True),
    ("\\text{Paris}", "$Paris$", True),
    ("", "1", False),
    ("-3", "3", False),
])
def test_answers_match(completion, reference, want):
    assert answers_match(completion, reference) is want
    assert reference_answer("\\boxed{5}") == "5"


def test_exact_match_reward_trl_convention():
    prompts = ["p0", "p0", "p1", "p1"]
    comps = ["#### 5", "the answer is 6", [{"role": "assistant", "content": "\\boxed{10}"}], "ten"]
    assert exact_match_reward(prompts, comps, answer=["5", "5", "10", None]) == [1.0, 0.0, 1.0, None]
    assert exact_match_reward(prompts, comps, solution=["6", "6", "1", "1"]) == [0.0, 1.0, 0.0, 0.0]
    assert exact_match_reward(prompts, comps, column="target", target=["5"] * 4, answer=["6"] * 4) == [1.0, 0, 0, 0]
    with pytest.raises(KeyError, match="answer"):
        exact_match_reward(prompts, comps, question=["q"] * 4)
    with pytest.raises(ValueError, match="3 references for 4"):
        exact_match_reward(prompts, comps, answer=["1"] * 3)


def test_tag_format_reward():
    texts = ["<think>a\nb</think>\n<answer>4</answer>", "  <think></think><answer></answer>\n",
             "<answer>4</answer>", "<answer>4</answer><think>a</think>",
             "<think><answer>1</answer></think><answer>2</answer>", "<think>a</think><answer>4</answer> extra"]
    assert tag_format_reward(texts) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert format_reward(["p"] * 6, texts, answer=["x"] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert tag_format_reward(texts, ["answer"]) == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="tag names"):
        tag_format_reward(texts, ["a b"])
