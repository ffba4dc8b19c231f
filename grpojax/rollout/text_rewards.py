"""Text rewards: Python functions on the decoded completions, in TRL's convention, named in a config.

A text reward follows TRL's convention ``fn(prompts, completions, **columns) -> list[float | None]``: N
prompts (each repeated for its G completions), N completion texts, and every other column of the prompt
dataset as a list of N values aligned with the completions (prompt-major); ``None`` (or NaN) = not
applicable, a NaN aspect that the aggregation skips (:mod:`grpojax.rewards.aggregate`). It is called with
keywords (``prompts=``, ``completions=``, one per column; only those it names unless it takes
``**kwargs``) when it has a ``completions`` parameter, else with the two lists positionally (``fn(prompts,
texts)``) and the columns it names (all with ``**kwargs``). A method section names them in ``reward_funcs``:

    length:<max_chars>            1 up to max_chars characters, linear decay to 0 at 2*max_chars
    keyword:<w1>,<w2>,...         1 if the completion contains any of the words
    regex:<pattern>               1 if the pattern matches (re.search)
    char_frac:<chars>             fraction of the completion's characters that are in <chars>
    exact_match[:<column>]        final answer == the column (default answer, else solution)  (verifiable)
    format[:<tag1>,<tag2>,...]    1 if the completion is <tag1>...</tag1><tag2>...</tag2> (default think,answer)
    path/to/file.py:function      a function in a Python file (relative to the working directory or absolute)
    package.module:function       a function in an importable module
    my_rewards:function           a module (my_rewards.py or a package) in the working directory
    <name>                        a function registered in this process with :func:`register` (what
                                  ``grpojax.train.GRPOTrainer(reward_funcs=[fn])`` does with ``fn.__name__``)

:func:`resolve` turns a name into a :class:`RewardFunction` (a name that cannot be resolved is a
:class:`grpojax.cli.UserError` naming ``<section>.reward_funcs``); its metric name (``rewards/<name>/mean``)
is the built-in's name or the function's ``__name__`` (:func:`reward_names`). :func:`score` runs several on
one batch and stacks their columns ``[N, R]`` (float32, NaN where a function returned None) next to the
reward model's aspects. The verifiable rewards themselves are in :mod:`grpojax.rewards.verifiable`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from grpojax.cli import UserError
from grpojax.rewards.verifiable import exact_match_reward, tag_format_reward

TextReward = Callable[..., Sequence[float | None]]


class RewardFunction(NamedTuple):
    """A resolved reward: ``fn`` (TRL convention), its metric ``name`` and the data ``columns`` it needs
    (``a|b``: either); calling it calls ``fn``."""

    fn: Callable
    name: str
    columns: tuple[str, ...] = ()

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)



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


def _builtin(name: str, arg: str, key: str) -> RewardFunction:
    # the built-ins take no data column: a column named like one of their options must not reach them
    if name == "length":
        max_chars = int(arg) if arg else 64
        return RewardFunction(lambda prompts, texts: length_reward(prompts, texts, max_chars=max_chars), name)
    if name == "keyword":
        words = [w for w in arg.split(",") if w]
        if not words:
            raise UserError(f"{key}: keyword:<w1>,<w2> needs at least one word")
        return RewardFunction(lambda prompts, texts: keyword_reward(prompts, texts, keywords=words), name)
    if name == "regex":
        return RewardFunction(lambda prompts, texts: regex_reward(prompts, texts, pattern=arg), name)
    if name == "char_frac":
        if not arg:
            raise UserError(f"{key}: char_frac:<chars> needs the characters to reward")
        return RewardFunction(lambda prompts, texts: char_fraction(prompts, texts, chars=arg), name)
    if name == "exact_match":
        column = arg or None

        def exact_match(prompts, completions, **columns):
            return exact_match_reward(prompts, completions, column=column, **columns)
        return RewardFunction(exact_match, name, (arg,) if arg else ("answer|solution",))
    tags = tuple(t.strip() for t in arg.split(",") if t.strip()) or ("think", "answer")
    try:
        tag_format_reward([], tags)
    except ValueError as e:
        raise UserError(f"{key}: format:{arg}: {e}") from None
    return RewardFunction(lambda prompts, completions, **columns: tag_format_reward(completions, tags), name)


BUILTINS = ("length", "keyword", "regex", "char_frac", "exact_match", "format")


def _load_file(path: str, spec: str, key: str):
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UserError(f"{key}: {spec!r}: no file {full}")
    name = f"grpojax_user_rewards.{os.path.splitext(os.path.basename(full))[0]}_" \
           f"{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, os.path.dirname(full))  # its sibling helper modules import while it loads
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 -- the user's file: one line naming it, not a traceback
        del sys.modules[name]
        raise UserError(f"{key}: {spec!r}: loading {full} failed: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(os.path.dirname(full))
    return module


def _load_module(head: str, spec: str, key: str):
    cwd = os.getcwd()
    local = os.path.join(cwd, *head.split("."))
    in_cwd = os.path.isfile(local + ".py") or os.path.isfile(os.path.join(local, "__init__.py"))
    added = in_cwd and cwd not in sys.path
    if added:  # scripts run as `python scripts/x.py` do not see the working directory
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(head)
    except ModuleNotFoundError as e:
        if e.name and head.startswith(e.name):
            raise UserError(f"{key}: {spec!r}: no module {head!r} (neither importable nor {head.replace('.', '/')}"
                            f".py under {cwd})") from None
        raise UserError(f"{key}: {spec!r}: importing {head!r} failed: {e}") from None
    except Exception as e:  # noqa: BLE001 -- the user's module: one line naming it
        raise UserError(f"{key}: {spec!r}: importing {head!r} failed: {type(e).__name__}: {e}") from None
    finally:
        if added:
            sys.path.remove(cwd)


_REGISTERED: dict[str, TextReward] = {}


def register(name: str, fn: TextReward) -> str:
    """Makes ``fn`` resolvable by the plain ``name`` (letters, digits, ``_``, ``-``; not a built-in) in this
    process; returns ``name``. Registering another function under a taken name replaces it."""
    if not callable(fn):
        raise TypeError(f"reward function {name!r} is not callable: {fn!r}")
    if not name or not all(c.isalnum() or c in "_-" for c in name) or name in BUILTINS:
        raise ValueError(f"cannot register a reward function as {name!r}: use letters, digits, _ or -, not a "
                         f"built-in ({', '.join(BUILTINS)})")
    _REGISTERED[name] = fn
    return name


def resolve(spec: str, section: str = "grpo") -> RewardFunction:
    """The reward named by ``spec`` (module docstring); :class:`UserError` naming ``<section>.reward_funcs``
    when it cannot be resolved."""
    key = f"{section}.reward_funcs"
    if spec in _REGISTERED:
        return RewardFunction(_REGISTERED[spec], spec)
    head, sep, arg = spec.partition(":")
    if head in BUILTINS:
        return _builtin(head, arg, key)
    if head.endswith(".py") or "/" in head or os.sep in head:
        if not arg:
            raise UserError(f"{key}: {spec!r}: name the function, as path/to/file.py:function")
        module, where = _load_file(head, spec, key), os.path.abspath(head)
    elif sep and arg and head:
        module, where = _load_module(head, spec, key), head
    else:
        raise UserError(f"{key}: unknown reward {spec!r}; built-ins: {', '.join(BUILTINS)}, or "
                        "path/to/file.py:function, package.module:function, module:function")
    fn = getattr(module, arg, None)
    if fn is None or not callable(fn):
        have = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        what = "no function" if fn is None else "a non-callable"
        raise UserError(f"{key}: {spec!r}: {where} has {what} {arg!r}; its functions: {', '.join(have) or 'none'}")
    return RewardFunction(fn, getattr(fn, "__name__", arg))


def reward_names(funcs: Sequence[RewardFunction]) -> list[str]:
    """The metric names of ``funcs``: each one's name, a repeated name numbered (``fn``, ``fn_2``, ...)."""
    names, seen = [], {}
    for f in funcs:
        seen[f.name] = seen.get(f.name, 0) + 1
        names.append(f.name if seen[f.name] == 1 else f"{f.name}_{seen[f.name]}")
    return names


def check_columns(funcs: Sequence[RewardFunction], columns: Sequence[str], source: str,
                  section: str = "grpo") -> None:
    """UserError when a built-in needs a data column ``source`` lacks (``a|b``: either of them)."""
    key = f"{section}.reward_funcs"
    for f in funcs:
        for need in f.columns:
            if not any(c in columns for c in need.split("|")):
                raise UserError(f"{key}: {f.name} needs a column {need.replace('|', ' or ')!r} in {source}; "
                                f"its columns: {', '.join(columns)}")


def data_columns(rows: Mapping[str, Sequence], num_generations: int, skip: Sequence[str] = ("prompt",)) -> dict:
    """The columns of B dataset rows (``{column: [B values]}``) other than ``skip``, aligned with the
    B·G completions of a rollout: prompt-major, each row's value repeated G times."""
    return {k: [v for v in vals for _ in range(num_generations)] for k, vals in rows.items() if k not in skip}


def _call(fn: Callable, prompts: list, completions: list, columns: Mapping[str, list]):
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature: TRL's keyword call
        return fn(prompts=prompts, completions=completions, **columns)
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "completions" in params:  # TRL's call: every argument by keyword
        kwargs = {"prompts": prompts, "completions": completions, **columns}
        return fn(**(kwargs if var_kw else {k: v for k, v in kwargs.items() if k in params}))
    return fn(prompts, completions, **(columns if var_kw else {k: v for k, v in columns.items() if k in params}))


def score(funcs: Sequence[TextReward], names: Sequence[str], prompts: Sequence, completions: Sequence[str],
          **columns: Sequence) -> np.ndarray:
    """``[N, len(funcs)]`` float32 scores (None -> NaN) of N completions; ``columns`` maps each data column
    to its N values. A function returning the wrong number of scores or a non-number is an error naming
    it (by ``names``)."""
    n = len(completions)
    cols = dict(columns)
    out = np.zeros((n, len(funcs)), np.float32)
    for j, (f, name) in enumerate(zip(funcs, names)):
        values = _call(f.fn if isinstance(f, RewardFunction) else f, list(prompts), list(completions), cols)
        values = list(np.asarray(values, dtype=object).reshape(-1)) if not isinstance(values, list) else values
        if len(values) != n:
            raise ValueError(f"reward function {name!r} returned {len(values)} scores for {n} completions")
        try:
            out[:, j] = [math.nan if v is None else float(v) for v in values]
        except (TypeError, ValueError) as e:
            raise ValueError(f"reward function {name!r} returned a non-number: {e}") from None
    return out
