"""Text rewards: Python functions on the decoded completions, in TRL's convention, and their names.

Every text reward is ``fn(prompts, completions, **kwargs) -> list[float | None]`` (TRL's ``reward_funcs``):
one score per completion, ``None`` (or NaN) = not applicable, which becomes a NaN aspect that the
aggregation skips (:mod:`grpojax.rewards.aggregate`). A method section names them in ``reward_funcs``:

    length:<max_chars>            1 up to max_chars characters, linear decay to 0 at 2*max_chars
    keyword:<w1>,<w2>,...         1 if the completion contains any of the words
    regex:<pattern>               1 if the pattern matches (re.search)
    char_frac:<chars>             fraction of the completion's characters that are in <chars>
    some.module:function          any importable function with the signature above

:func:`resolve` turns a name into the function, :func:`score` runs several on one batch and stacks their
columns ``[N, R]`` (float32, NaN where a function returned None) next to the reward model's aspects.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import Callable, Sequence

import numpy as np

from grpojax.cli import UserError

TextReward = Callable[..., Sequence[float | None]]
BUILTINS = ("length", "keyword", "regex", "char_frac")


def _check_texts(texts: Sequence[str], name: str) -> None:
    if isinstance(texts, str):
        raise TypeError(f"{name}: expected a sequence of strings, got a single string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}: completion {i} is {type(t).__name__}, expected str")


def length_reward(prompts, completions: Sequence[str], *, max_chars: int, min_chars: int = 0,
                  **kwargs) -> list[float]:
    """1 inside ``[min_chars, max_chars]`` characters, decaying linearly to 0 at ``2·max_chars`` above
    and at 0 characters below: ``r = clip(len/min_chars, 0, 1)`` if short, ``clip(2 - len/max_chars, 0, 1)``
    if long (float32 values)."""
    _check_texts(completions, "length_reward")
    if not 0 <= min_chars <= max_chars or max_chars <= 0:
        raise ValueError(f"length_reward: need 0 <= min_chars <= max_chars and max_chars > 0, "
                         f"got min_chars={min_chars}, max_chars={max_chars}")
    n = np.array([len(t) for t in completions], np.float64)
    r = np.ones_like(n)
    if min_chars > 0:
        r = np.where(n < min_chars, n / min_chars, r)
    r = np.where(n > max_chars, np.clip(2.0 - n / max_chars, 0.0, 1.0), r)
    return r.astype(np.float32).tolist()


def keyword_reward(prompts, completions: Sequence[str], *, keywords: Sequence[str], mode: str = "any",
                   case_sensitive: bool = False, penalize: bool = False, **kwargs) -> list[float]:
    """1 if the completion contains any (``mode="any"``) / all (``mode="all"``) keywords, else 0.
    With ``penalize=True`` the reward is negated (-1 when matched), e.g. for banned phrases."""
    _check_texts(completions, "keyword_reward")
    if mode not in ("any", "all"):
        raise ValueError(f"keyword_reward: unknown mode {mode!r}; valid choices: any, all")
    if not keywords or isinstance(keywords, str):
        raise ValueError(f"keyword_reward: keywords must be a non-empty list of strings, got {keywords!r}")
    keys = list(keywords) if case_sensitive else [k.lower() for k in keywords]
    combine = any if mode == "any" else all
    sign = -1.0 if penalize else 1.0
    return [sign if combine(k in (t if case_sensitive else t.lower()) for k in keys) else 0.0
            for t in completions]


def regex_reward(prompts, completions: Sequence[str], *, pattern: str, full_match: bool = False,
                 **kwargs) -> list[float]:
    """1 if ``pattern`` matches (``re.search``, or ``re.fullmatch`` with ``full_match``), else 0
    (e.g. a required answer format such as ``r"<answer>.*</answer>"``)."""
    _check_texts(completions, "regex_reward")
    try:
        rx = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ValueError(f"regex_reward: invalid pattern {pattern!r}: {e}") from e
    match = rx.fullmatch if full_match else rx.search
    return [1.0 if match(t) else 0.0 for t in completions]


def char_fraction(prompts, completions: Sequence[str], *, chars: str, **kwargs) -> list[float]:
    """Fraction of each completion's characters that belong to ``chars`` (0 for an empty text)."""
    allowed = set(chars)
    return [sum(c in allowed for c in t) / len(t) if t else 0.0 for t in completions]


def _builtin(name: str, arg: str, section: str) -> TextReward:
    if name == "length":
        return functools.partial(length_reward, max_chars=int(arg) if arg else 64)
    if name == "keyword":
        words = [w for w in arg.split(",") if w]
        if not words:
            raise UserError(f"{section}.reward_funcs: keyword:<w1>,<w2> needs at least one word")
        return functools.partial(keyword_reward, keywords=words)
    if name == "regex":
        return functools.partial(regex_reward, pattern=arg)
    if not arg:
        raise UserError(f"{section}.reward_funcs: char_frac:<chars> needs the characters to reward")
    return functools.partial(char_fraction, chars=arg)


def resolve(spec: str, section: str = "grpo") -> TextReward:
    """The text reward named by ``spec`` (module docstring); UserError naming ``<section>.reward_funcs``
    when it is unknown or cannot be imported."""
    head, _, arg = spec.partition(":")
    if head in BUILTINS:
        return _builtin(head, arg, section)
    if "." in head and arg:
        try:
            fn = getattr(importlib.import_module(head), arg)
        except (ImportError, AttributeError) as e:
            raise UserError(f"{section}.reward_funcs: cannot import {spec!r}: {e}") from None
        if not callable(fn):
            raise UserError(f"{section}.reward_funcs: {spec!r} is not callable")
        return fn
    raise UserError(f"{section}.reward_funcs: unknown reward {spec!r}; built-ins: "
                    f"{', '.join(b + ':<arg>' for b in BUILTINS)}, or module.path:function")


def score(funcs: Sequence[TextReward], names: Sequence[str], prompts: Sequence[str],
          completions: Sequence[str], **kwargs) -> np.ndarray:
    """``[N, len(funcs)]`` float32 scores (None -> NaN); ``kwargs`` reach every function. A function
    returning the wrong number of scores is an error naming it."""
    cols = []
    for fn, name in zip(funcs, names):
        values = fn(list(prompts), list(completions), **kwargs)
        col = np.asarray([np.nan if v is None else v for v in values], np.float32).reshape(-1)
        if col.shape != (len(completions),):
            raise ValueError(f"reward function {name!r} returned {col.shape[0]} scores for "
                             f"{len(completions)} completions")
        cols.append(col)
    return np.stack(cols, axis=-1) if cols else np.zeros((len(completions), 0), np.float32)
