"""Rule-based rewards on decoded completion strings (plain Python; run on the host after decoding).

Each rule maps a list of N completion strings to a float32 NumPy array ``[N]``; NaN means "not
applicable" (same contract as the reward-model aspects in :mod:`grpojax.rewards.aggregate`).
:func:`rule_scores` stacks several rules into ``[N, R]`` aspect columns so that they can be concatenated
with reward-model scores and aggregated together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

TextRule = Callable[[Sequence[str]], np.ndarray]


def _check_texts(texts: Sequence[str], name: str) -> None:
    if isinstance(texts, str):
        raise TypeError(f"{name}: expected a sequence of strings, got a single string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}: completion {i} is {type(t).__name__}, expected str")


def length_reward(texts: Sequence[str], *, max_chars: int, min_chars: int = 0) -> np.ndarray:
    """1 inside ``[min_chars, max_chars]`` characters, decaying linearly to 0 at ``2·max_chars`` above
    and at 0 characters below: ``r = clip(len/min_chars, 0, 1)`` if short, ``clip(2 - len/max_chars, 0, 1)``
    if long."""
    _check_texts(texts, "length_reward")
    if not 0 <= min_chars <= max_chars or max_chars <= 0:
        raise ValueError(f"length_reward: need 0 <= min_chars <= max_chars and max_chars > 0, "
                         f"got min_chars={min_chars}, max_chars={max_chars}")
    n = np.array([len(t) for t in texts], np.float64)
    r = np.ones_like(n)
    if min_chars > 0:
        r = np.where(n < min_chars, n / min_chars, r)
    r = np.where(n > max_chars, np.clip(2.0 - n / max_chars, 0.0, 1.0), r)
    return r.astype(np.float32)


def keyword_reward(texts: Sequence[str], keywords: Sequence[str], *, mode: str = "any",
                   case_sensitive: bool = False, penalize: bool = False) -> np.ndarray:
    """1 if the completion contains any (``mode="any"``) / all (``mode="all"``) keywords, else 0.
    With ``penalize=True`` the reward is negated (-1 when matched), e.g. for banned phrases."""
    _check_texts(texts, "keyword_reward")
    if mode not in ("any", "all"):
        raise ValueError(f"keyword_reward: unknown mode {mode!r}; valid choices: any, all")
    if not keywords or isinstance(keywords, str):
        raise ValueError(f"keyword_reward: keywords must be a non-empty list of strings, got {keywords!r}")
    keys = list(keywords) if case_sensitive else [k.lower() for k in keywords]
    combine = any if mode == "any" else all
    out = []
    for t in texts:
        body = t if case_sensitive else t.lower()
        out.append(1.0 if combine(k in body for k in keys) else 0.0)
    r = np.asarray(out, np.float32)
    return -r if penalize else r


def regex_reward(texts: Sequence[str], pattern: str, *, full_match: bool = False) -> np.ndarray:
    """1 if ``pattern`` matches (``re.search``, or ``re.fullmatch`` with ``full_match``), else 0
    (e.g. a required answer format such as ``r"<answer>.*</answer>"``)."""
    _check_texts(texts, "regex_reward")
    try:
        rx = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ValueError(f"regex_reward: invalid pattern {pattern!r}: {e}") from e
    match = rx.fullmatch if full_match else rx.search
    return np.asarray([1.0 if match(t) else 0.0 for t in texts], np.float32)


def rule_scores(texts: Sequence[str], rules: Mapping[str, TextRule]) -> tuple[np.ndarray, list[str]]:
    """Apply named rules and stack their outputs as aspect columns.

    Args:
      texts: N decoded completions (flattened B·G order).
      rules: ``{aspect_name: rule}``; each rule returns ``[N]``.

    Returns:
      ``(scores_NR, names)``: float32 ``[N, R]`` and the R aspect names in column order.
    """
    _check_texts(texts, "rule_scores")
    if not rules:
        raise ValueError("rule_scores: no rules given")
    cols, names = [], []
    for name, rule in rules.items():
        col = np.asarray(rule(texts), np.float32)
        if col.shape != (len(texts),):
            raise ValueError(f"rule_scores: rule {name!r} returned shape {col.shape}, expected ({len(texts)},)")
        cols.append(col)
        names.append(name)
    return np.stack(cols, axis=-1), names
