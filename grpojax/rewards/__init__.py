"""Aggregation of multi-aspect reward scores into one reward per completion, and rule-based text rewards.

NaN contract: a NaN aspect score is "not applicable" and is skipped; a completion with no valid aspect
gets a NaN reward, which ``grpojax.losses.group_advantages`` turns into advantage 0.

Public API::

    weighted_sum, normalize_then_sum (GDPO), min_aspect, soft_min, clip, affine
    aggregate(name, scores, **kw), AGGREGATORS, aspect_stats(scores_BGR, aspect_names)
    length_reward, keyword_reward, regex_reward, rule_scores            # rule-based, on decoded text
    exact_match_reward, format_reward, tag_format_reward, extract_answer, answers_match   # verifiable
    resolve_reward, RewardFunction, reward_names, score_rewards        # reward functions named in configs
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
from grpojax.rewards.functions import RewardFunction, reward_names
from grpojax.rewards.functions import resolve as resolve_reward
from grpojax.rewards.functions import score as score_rewards
from grpojax.rewards.text import (
    keyword_reward,
    length_reward,
    regex_reward,
    rule_scores,
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
    "RewardFunction",
    "affine",
    "aggregate",
    "answers_match",
    "aspect_stats",
    "clip",
    "exact_match_reward",
    "extract_answer",
    "format_reward",
    "keyword_reward",
    "length_reward",
    "min_aspect",
    "normalize_then_sum",
    "regex_reward",
    "resolve_reward",
    "reward_names",
    "rule_scores",
    "score_rewards",
    "soft_min",
    "tag_format_reward",
    "weighted_sum",
]
