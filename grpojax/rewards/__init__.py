"""Aggregation of multi-aspect reward scores into one reward per completion, and verifiable rewards.

NaN contract: a NaN aspect score is "not applicable" and is skipped; a completion with no valid aspect
gets a NaN reward, which ``grpojax.losses.group_advantages`` turns into advantage 0.

Public API::

    weighted_sum, normalize_then_sum (GDPO), min_aspect, soft_min, clip, affine
    aggregate(name, scores, **kw), AGGREGATORS, aspect_stats(scores_BGR, aspect_names)
    exact_match_reward, format_reward, tag_format_reward, extract_answer, answers_match   # verifiable

Text rewards on decoded completions (TRL's ``fn(prompts, completions, **kwargs)``), their names in a
config and how they are called are in :mod:`grpojax.rollout.text_rewards`.
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
from grpojax.rewards.verifiable import (
    answers_match,
    exact_match_reward,
    extract_answer,
    format_reward,
    tag_format_reward,
)

__all__ = [
    "AGGREGATORS",
    "affine",
    "aggregate",
    "answers_match",
    "aspect_stats",
    "clip",
    "exact_match_reward",
    "extract_answer",
    "format_reward",
    "min_aspect",
    "normalize_then_sum",
    "soft_min",
    "tag_format_reward",
    "weighted_sum",
]
