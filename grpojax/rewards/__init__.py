"""Aggregation of multi-aspect reward scores into one reward per completion.

NaN contract: a NaN aspect score is "not applicable" and is skipped; a completion with no valid aspect
gets a NaN reward, which ``grpojax.losses.group_advantages`` turns into advantage 0.

Public API::

    weighted_sum, normalize_then_sum (GDPO), min_aspect, soft_min, clip, affine
    aggregate(name, scores, **kw), AGGREGATORS, aspect_stats(scores_BGR, aspect_names)

Text rewards on decoded completions (TRL's ``fn(prompts, completions, **kwargs)``) are in
:mod:`grpojax.rollout.text_rewards`.
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

__all__ = [
    "AGGREGATORS",
    "affine",
    "aggregate",
    "aspect_stats",
    "clip",
    "min_aspect",
    "normalize_then_sum",
    "soft_min",
    "weighted_sum",
]
