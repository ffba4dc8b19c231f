"""Aggregation of multi-aspect reward scores into one reward per completion, and rule-based text rewards.

NaN contract: a NaN aspect score is "not applicable" and is skipped; a completion with no valid aspect
gets a NaN reward, which ``grpojax.losses.group_advantages`` turns into advantage 0.

Public API::

    weighted_sum, normalize_then_sum (GDPO), min_aspect, soft_min, clip, affine
    aggregate(name, scores, **kw), AGGREGATORS, aspect_stats(scores_BGR, aspect_names)
    length_reward, keyword_reward, regex_reward, rule_scores            # rule-based, on decoded text
"""

from grpojax.rewards.aggregate import (
    AGGREGATORS,
    affine,
    aggregate,
    aspect_stats,
    clip,
    min_aspect,
    normalize_then_sum,
    soft_min,
    weighted_sum,
)
from grpojax.rewards.text import keyword_reward, length_reward, regex_reward, rule_scores

__all__ = [
    "AGGREGATORS",
    "affine",
    "aggregate",
    "aspect_stats",
    "clip",
    "keyword_reward",
    "length_reward",
    "min_aspect",
    "normalize_then_sum",
    "regex_reward",
    "rule_scores",
    "soft_min",
    "weighted_sum",
]
