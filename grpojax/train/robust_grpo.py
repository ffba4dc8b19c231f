"""Group-robust GRPO in the GRPO step and task (ALGORITHMS.md 3; the weights: ``grpojax.losses.robust_grpo``).

Config ``grpo.robust: {group_column, eta_alpha, chi, score}``. The task reads each prompt's group from
``group_column`` of the prompt data (:func:`prompt_groups`), and every rollout adds two row arrays to the
step's batch (:func:`robust_batch`):

    group_id_B   int32 group of each completion's prompt
    score_B      float32 the completion's score: the aggregated reward (``score: reward``; the weighted sum
                 of the raw aspect scores under ``normalize_then_sum``) or one named aspect; NaN = n/a

The step (:func:`step_weights`) updates alpha (``TrainState.robust``, checkpointed with the state) from the
whole batch on the first update of a rollout only (with ``num_iterations`` > 1 the later updates reuse the
alpha of that rollout), then weights each completion's GRPO loss term by ``w_g``; micro-batches and
devices see the weights of the whole batch. Metrics: ``robust/alpha/<group>``, ``robust/weight/<group>``,
``robust/reward/<group>`` (the group's mean score in the rollout; absent groups not logged) and
``robust/worst_group_reward`` (the lowest of those).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from grpojax.cli import UserError
from grpojax.losses.robust_grpo import RobustGRPOAux, robust_grpo_weights
from grpojax.rewards import aggregate


@dataclasses.dataclass(frozen=True)
class RobustGRPOSettings:
    """Static (hashable) settings of the step: M groups with ``group_sizes`` prompts each."""

    group_sizes: tuple[int, ...]
    eta: float
    chi: float

    def weights(self):
        return robust_grpo_weights(len(self.group_sizes), group_sizes_M=list(self.group_sizes), eta=self.eta,
                                   chi=self.chi)


def prompt_groups(cfg, dataset) -> tuple[list[str], np.ndarray, RobustGRPOSettings]:
    """``(group_names, group_id per prompt row, settings)`` of a GRPO run with ``grpo.robust.group_column``;
    names are sorted, ids index them. ``dataset`` holds the prompts with their ``group`` column."""
    r = cfg.grpo.robust
    values = [str(v) for v in dataset["group"]]
    names = sorted(set(values))
    index = {n: i for i, n in enumerate(names)}
    ids = np.asarray([index[v] for v in values], np.int32)
    sizes = tuple(int(c) for c in np.bincount(ids, minlength=len(names)))
    return names, ids, RobustGRPOSettings(group_sizes=sizes, eta=r.eta_alpha, chi=r.chi)


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


def step_weights(settings: RobustGRPOSettings, robust_state, batch: dict, update: bool):
    """``(weights_B, new_state, aux)``: alpha updated on ``batch`` when ``update`` (else kept), and each
    row's loss weight from the resulting alpha."""
    rw = settings.weights()
    if update:
        return rw.update(batch["score_B"], batch["group_id_B"], robust_state)
    mu = np.asarray(settings.group_sizes, np.float64) / sum(settings.group_sizes)
    alpha = jnp.exp(robust_state.log_alpha_M)
    weights_M = ((1.0 - settings.chi) * mu + settings.chi * alpha) / mu
    aux = RobustGRPOAux(alpha_M=alpha, weights_M=weights_M, score_M=jnp.full(alpha.shape, jnp.nan),
                        count_M=jnp.zeros(alpha.shape))
    return weights_M[batch["group_id_B"]].astype(jnp.float32), robust_state, aux


def step_metrics(aux: RobustGRPOAux) -> dict:
    present = aux.count_M > 0
    worst = jnp.where(jnp.any(present), jnp.min(jnp.where(present, aux.score_M, jnp.inf)), jnp.nan)
    return {"robust/alpha": aux.alpha_M, "robust/weight": aux.weights_M, "robust/reward": aux.score_M,
            "robust/worst_group_reward": worst}


def drop_absent(row: dict) -> dict:
    """A host metric row without the NaN entries of absent groups (``robust/reward/<g>``, worst group)."""
    return {k: v for k, v in row.items()
            if not (k.startswith(("robust/reward/", "robust/worst_group_reward")) and math.isnan(v))}
