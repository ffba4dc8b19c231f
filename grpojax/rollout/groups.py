"""Group-robust GRPO on the rollout side (``grpo.robust``; ALGORITHMS.md 3; the step:
:mod:`grpojax.train.steps.robust_grpo`).

The prompts' groups come from ``grpo.robust.group_column`` of the prompt data (a ``group`` column of the
prompt dataset, ``grpojax.data.load_from_config(..., prompt_groups=...)``): :func:`prompt_groups` names
them (sorted) and counts their prompts. Every rollout adds two row arrays to the step's batch
(:func:`robust_batch`):

    group_id_B   int32 group of each completion's prompt
    score_B      float32 the completion's score: the aggregated reward (``score: reward``; the weighted sum
                 of the raw aspect scores under ``normalize_then_sum``) or one named aspect; NaN = n/a

:func:`drop_absent` removes the NaN ``robust/reward/<group>`` entries of groups absent from a rollout
from its metric row.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from grpojax.cli import UserError
from grpojax.rewards import aggregate
from grpojax.train.steps.robust_grpo import RobustGRPOSettings


def prompt_groups(cfg, dataset) -> tuple[list[str], np.ndarray, RobustGRPOSettings]:
    """``(group_names, group_id per prompt row, settings)`` of a GRPO run with ``grpo.robust.group_column``;
    names are sorted, ids index them. ``dataset`` holds the prompts with their ``group`` column."""
    r = cfg.grpo.robust
    values = [str(v) for v in dataset["group"]]
    names = sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    ids = np.asarray([index[v] for v in values], np.int32)
    sizes = tuple(int(c) for c in np.bincount(ids, minlength=len(names)))
    return names, ids, RobustGRPOSettings(group_sizes=sizes, eta_alpha=r.eta_alpha, chi=r.chi)


def score_column(cfg, aspect_names) -> int | None:
    """The column of the aspect ``grpo.robust.score`` names (None for ``reward``); a UserError otherwise."""
    score = cfg.grpo.robust.score
    if score == "reward":
        return None
    if score not in aspect_names:
        raise UserError(f"grpo.robust.score={score!r} is neither 'reward' nor an aspect of this run "
                        f"({', '.join(aspect_names)})")
    return list(aspect_names).index(score)


def robust_batch(scores_NR: np.ndarray, group_ids_N: np.ndarray, *, aggregation: str, weights, column) -> dict:
    """The batch arrays ``group_id_B`` / ``score_B`` of one rollout (module docstring)."""
    if column is not None:
        score_N = scores_NR[:, column]
    else:
        agg = "weighted_sum" if aggregation == "normalize_then_sum" else aggregation
        kwargs = {"weights": jnp.asarray(weights, jnp.float32)} if weights and agg == "weighted_sum" else {}
        score_N = np.asarray(aggregate(agg, jnp.asarray(scores_NR)[None], **kwargs))[0]
    return {"group_id_B": np.asarray(group_ids_N, np.int32), "score_B": np.asarray(score_N, np.float32)}


def drop_absent(row: dict) -> dict:
    """A host metric row without the NaN entries of absent groups (``robust/reward/<g>``, worst group)."""
    return {k: v for k, v in row.items()
            if not (k.startswith(("robust/reward/", "robust/worst_group_reward")) and math.isnan(v))}
