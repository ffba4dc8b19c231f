"""Python reward functions for GRPO, resolved from the names in ``grpo.reward_funcs``.

Every reward function is ``fn(prompts: list[str], completions: list[str]) -> [N] float`` (TRL's
convention), run on the host after decoding; NaN = not applicable. A config names them as

    length:<max_chars>            1 up to max_chars characters, linear decay to 0 at 2*max_chars
    keyword:<w1>,<w2>,...         1 if the completion contains any of the words
    regex:<pattern>               1 if the pattern matches (re.search)
    char_frac:<chars>             fraction of the completion's characters that are in <chars>
    some.module:function          any importable function with the signature above
    <name>                        a function registered in this process with :func:`register` (what
                                  ``grpojax.train.GRPOTrainer(reward_funcs=[fn])`` does with ``fn.__name__``)
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

import numpy as np

from grpojax.cli import UserError
from grpojax.rewards.text import keyword_reward, length_reward, regex_reward

RewardFunc = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def char_fraction(texts: Sequence[str], chars: str) -> np.ndarray:
    """Fraction of each text's characters that belong to ``chars`` (0 for an empty text)."""
    allowed = set(chars)
    return np.asarray([sum(c in allowed for c in t) / len(t) if t else 0.0 for t in texts], np.float32)


def _builtin(name: str, arg: str) -> RewardFunc:
    if name == "length":
        max_chars = int(arg) if arg else 64
        return lambda prompts, texts: length_reward(texts, max_chars=max_chars)
    if name == "keyword":
        words = [w for w in arg.split(",") if w]
        if not words:
            raise UserError("grpo.reward_funcs: keyword:<w1>,<w2> needs at least one word")
        return lambda prompts, texts: keyword_reward(texts, words)
    if name == "regex":
        return lambda prompts, texts: regex_reward(texts, arg)
    if name == "char_frac":
        if not arg:
            raise UserError("grpo.reward_funcs: char_frac:<chars> needs the characters to reward")
        return lambda prompts, texts: char_fraction(texts, arg)
    raise KeyError(name)


BUILTINS = ("length", "keyword", "regex", "char_frac")


_REGISTERED: dict[str, RewardFunc] = {}


def register(name: str, fn: RewardFunc) -> str:
    """Makes ``fn`` resolvable by the plain ``name`` (letters, digits, ``_``, ``-``; not a built-in) in this
    process; returns ``name``. Registering another function under a taken name replaces it."""
    if not callable(fn):
        raise TypeError(f"reward function {name!r} is not callable: {fn!r}")
    if not name or not all(c.isalnum() or c in "_-" for c in name) or name in BUILTINS:
        raise ValueError(f"cannot register a reward function as {name!r}: use letters, digits, _ or -, not a "
                         f"built-in ({', '.join(BUILTINS)})")
    _REGISTERED[name] = fn
    return name


def resolve(spec: str) -> RewardFunc:
    """The reward function named by ``spec`` (see the module docstring); UserError when unknown."""
    if spec in _REGISTERED:
        return _REGISTERED[spec]
    head, _, arg = spec.partition(":")
    if head in BUILTINS:
        return _builtin(head, arg)
    if "." in head and arg:
        try:
            fn = getattr(importlib.import_module(head), arg)
        except (ImportError, AttributeError) as e:
            raise UserError(f"grpo.reward_funcs: cannot import {spec!r}: {e}") from None
        if not callable(fn):
            raise UserError(f"grpo.reward_funcs: {spec!r} is not callable")
        return fn
    raise UserError(f"grpo.reward_funcs: unknown reward {spec!r}; built-ins: "
                    f"{', '.join(b + ':<arg>' for b in BUILTINS)}, or module.path:function")


def score(funcs: Sequence[RewardFunc], names: Sequence[str], prompts: Sequence[str],
          completions: Sequence[str]) -> np.ndarray:
    """``[N, len(funcs)]`` float32 scores; a function returning the wrong length is an error naming it."""
    cols = []
    for fn, name in zip(funcs, names):
        col = np.asarray(fn(list(prompts), list(completions)), np.float32).reshape(-1)
        if col.shape != (len(completions),):
            raise ValueError(f"reward function {name!r} returned {col.shape[0]} scores for "
                             f"{len(completions)} completions")
        cols.append(col)
    return np.stack(cols, axis=-1) if cols else np.zeros((len(completions), 0), np.float32)
