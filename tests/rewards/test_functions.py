"""grpojax.rollout.text_rewards: reward functions named by built-in name, file path, dotted module or a
top-level module in the working directory; TRL's call convention with the data's columns; one-line errors."""

import math
import os
import sys
import textwrap

import numpy as np
import pytest

from grpojax import cli
from grpojax.cli import UserError
from grpojax.rollout.text_rewards import check_columns, resolve, reward_names, score

USER_FILE = '''
def answer_len(prompts, completions, answer, **kwargs):
    return [None if a is None else float(len(c) == int(a)) for c, a in zip(completions, answer)]

def old_style(prompts, texts):
    return [float(len(t)) for t in texts]

def wants_topic(completions, topic):
    return [1.0 if t in c else 0.0 for c, t in zip(completions, topic)]

VALUE = 3
'''


def _score(funcs, prompts, texts, columns=None):
    return score(funcs, reward_names(funcs), prompts, texts, **(columns or {}))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a script run as `python scripts/x.py` has its own folder on sys.path, not the working directory
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "user_rewards.py").write_text(USER_FILE)
    (tmp_path / "top_rewards_19.py").write_text(USER_FILE)
    return tmp_path


def test_file_path_relative_and_absolute_receive_aligned_columns(in_tmp):
    cols = {"answer": ["2", "2", "3", None], "topic": ["ab", "ab", "x", "x"]}
    texts = ["ab", "abc", "xyz", "q"]
    rel = resolve("sub/user_rewards.py:answer_len")
    absolute = resolve(f"{in_tmp}/sub/user_rewards.py:answer_len")
    assert rel.name == absolute.name == "answer_len"
    for f in (rel, absolute):
        got = _score([f], ["p0", "p0", "p1", "p1"], texts, cols)
        np.testing.assert_array_equal(got[:3, 0], [1.0, 0.0, 1.0])
        assert got.shape == (4, 1) and math.isnan(got[3, 0])  # None -> NaN (not applicable)
    # positional (prompts, texts) without columns; a function naming one column gets only that one
    both = [resolve("sub/user_rewards.py:old_style"), resolve("sub/user_rewards.py:wants_topic")]
    np.testing.assert_array_equal(_score(both, ["p"] * 4, texts, cols), [[2, 1], [3, 1], [3, 1], [1, 0]])


def test_top_level_module_in_working_directory_and_dotted_module(in_tmp):
    f = resolve("top_rewards_19:wants_topic")
    assert _score([f], ["p"], ["abc"], {"topic": ["b"]})[0, 0] == 1.0
    g = resolve("grpojax.rewards.verifiable:format_reward")
    assert g.name == "format_reward"
    assert _score([g], ["p"], ["<think>a</think><answer>b</answer>"], {"answer": ["b"]})[0, 0] == 1.0


def test_builtins_names_and_columns(in_tmp):
    fs = [resolve(s) for s in ("exact_match", "format", "format:answer", "length:4", "char_frac:ab")]
    assert reward_names(fs) == ["exact_match", "format", "format_2", "length", "char_frac"]
    got = _score(fs, ["p"] * 2, ["<answer>7</answer>", "7 ab"], {"answer": ["7", "8"], "solution": ["0", "0"]})
    np.testing.assert_allclose(got, [[1, 0, 1, 0, 2 / 18], [0, 0, 0, 1, 0.5]], rtol=1e-6)
    by_column = resolve("exact_match:solution")
    assert _score([by_column], ["p"], ["0"], {"answer": ["7"], "solution": ["0"]})[0, 0] == 1.0
    check_columns(fs, ["prompt", "solution"], "d.jsonl")
    with pytest.raises(UserError, match=r"exact_match needs a column 'answer or solution' in d.jsonl"):
        check_columns(fs, ["prompt", "topic"], "d.jsonl")
    with pytest.raises(UserError, match=r"exact_match needs a column 'target'"):
        check_columns([resolve("exact_match:target")], ["prompt", "answer"], "d.jsonl")


@pytest.mark.parametrize("spec,match", [
    ("sub/missing.py:f", r"grpo.reward_funcs: 'sub/missing.py:f': no file .*sub/missing.py"),
    ("sub/user_rewards.py:nope", r"has no function 'nope'; its functions: answer_len, old_style, wants_topic"),
    ("sub/user_rewards.py:VALUE", r"has a non-callable 'VALUE'"),
    ("sub/user_rewards.py", r"name the function"),
    ("sub/broken.py:f", r"loading .*broken.py failed: SyntaxError"),
    ("no_such_module_19:f", r"no module 'no_such_module_19'"),
    ("top_rewards_19:nope", r"top_rewards_19 has no function 'nope'"),
    ("format:a b", r"format:a b: .*tag names"),
    ("plain", r"unknown reward 'plain'"),
])
def test_unresolvable_names_are_one_line_user_errors(in_tmp, spec, match):
    (in_tmp / "sub" / "broken.py").write_text("def f(:\n")
    with pytest.raises(UserError, match=match):
        resolve(spec)
    with pytest.raises(SystemExit) as e:  # exit 2, one line, no traceback
        cli.main(lambda argv: resolve(spec), [])
    assert e.value.code == 2


def test_bad_return_values_name_the_function(in_tmp):
    (in_tmp / "bad.py").write_text(textwrap.dedent('''
        def short(prompts, completions, **kw):
            return [1.0]
        def text(prompts, completions, **kw):
            return ["x" for _ in completions]
    '''))
    with pytest.raises(ValueError, match="'short' returned 1 scores for 2 completions"):
        _score([resolve("bad.py:short")], ["p", "p"], ["a", "b"])
    with pytest.raises(ValueError, match="'text' returned a non-number"):
        _score([resolve(os.path.join(str(in_tmp), "bad.py") + ":text")], ["p", "p"], ["a", "b"])
