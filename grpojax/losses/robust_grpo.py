"""Group-robust GRPO (ALGORITHMS.md 3): the group weights alpha and each completion's loss weight.

Prompts belong to groups g = 1..M (a dataset column) with N_g prompts each, ``mu_g = N_g / N``. The
objective is ``max_theta min_{alpha in simplex_M} sum_g alpha_g J_g(theta)``, J_g the expected aggregated
reward of g's prompts. Per rollout, before the policy update:

1. ``s_g`` = mean score (the aggregated reward, or one chosen aspect) of the completions of g's prompts in
   the rollout; NaN scores (not applicable) are left out; a group with no valid completion is *absent*.
2. Exponentiated-gradient *descent* on the scores, in log space: ``l_g = log alpha_g - eta s_g`` for the
   present groups, renormalised among them so that their total weight is unchanged,
   ``alpha_g <- (sum_{h present} alpha_h) softmax_present(l)_g``; absent groups keep their alpha exactly
   (with every group present this is the plain update ``alpha_g exp(-eta s_g) / Z``). Low reward -> more
   weight.
3. Each completion i of group g gets the loss weight ``w_g = ((1 - chi) mu_g + chi alpha_g) / mu_g``,
   stop-gradiented; advantages stay group-relative per prompt. ``alpha = mu`` (or ``chi = 0``) gives
   ``w = 1``, exactly the plain GRPO loss, whatever ``loss_type``.

alpha starts at ``mu``, so ``eta = 0`` (or ``chi = 0``) is plain GRPO and the weights leave 1 only as the
groups' scores differ. The pair :func:`robust_grpo_weights` is optax-style ``(init, update)`` with a
NamedTuple state (log alpha is stored). Shape key: N completions, M groups. Everything is jit-safe;
``eta`` and ``chi`` may be traced.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from grpojax.losses.robust import group_one_hot
from grpojax.types import Array


class RobustGRPOState(NamedTuple):
    """log_alpha_M: [M] log of the group weights (on the simplex); step: int32 number of updates."""

    log_alpha_M: Array
    step: Array


class RobustGRPOAux(NamedTuple):
    """Diagnostics of one update (no gradient flows through any of them).

    alpha_M: [M] the new alpha. weights_M: [M] the loss weight ``w_g`` of a completion of group g.
    score_M: [M] ``s_g``, the group's mean score in this rollout (NaN where absent).
    count_M: [M] completions with a valid score per group.
    """

    alpha_M: Array
    weights_M: Array
    score_M: Array
    count_M: Array


class RobustGRPOWeights(NamedTuple):
    """``init() -> state``; ``update(scores_N, group_ids_N, state, mask_N=None) -> (weights_N, state, aux)``."""

    init: Callable[[], RobustGRPOState]
    update: Callable[..., tuple]


def group_mean_scores(scores_N: Array, group_ids_N: Array, num_groups: int, mask_N: Array | None = None):
    """``(mean_M, count_M)``: per-group mean of the valid (non-NaN, unmasked) scores; mean NaN where none."""
    chex.assert_rank([scores_N, group_ids_N], 1)
    chex.assert_equal_shape([scores_N, group_ids_N])
    scores_N = jnp.asarray(scores_N, jnp.promote_types(scores_N.dtype, jnp.float32))
    valid_N = ~jnp.isnan(scores_N)
    if mask_N is not None:
        valid_N = valid_N & (mask_N > 0)
    one_hot_NM = group_one_hot(group_ids_N, num_groups, valid_N).astype(scores_N.dtype)
    sum_M = jnp.where(valid_N, scores_N, 0.0) @ one_hot_NM
    count_M = jnp.sum(one_hot_NM, axis=0)
    return jnp.where(count_M > 0, sum_M / jnp.maximum(count_M, 1.0), jnp.nan), count_M


def robust_grpo_weights(num_groups: int, *, group_sizes_M, eta, chi=1.0) -> RobustGRPOWeights:
    """Group-robust GRPO weights as an ``(init, update)`` pair (module docstring).

    Args:
      num_groups: M (static).
      group_sizes_M: [M] N_g, the number of training prompts of each group (all > 0); ``mu = N_g / N``.
      eta: step size eta_alpha (>= 0; 0 freezes alpha at mu). Scores are in the reward's own units, so
        eta * (the spread of the groups' mean scores) is the log-change of alpha per rollout.
      chi: trade-off in [0, 1]: the loss uses ``(1 - chi) mu + chi alpha`` in place of alpha.

    Returns:
      ``RobustGRPOWeights(init, update)``. ``update(scores_N, group_ids_N, state, mask_N=None)`` takes the
      [N] scores of one rollout's completions (NaN = not applicable), their [N] integer groups in
      ``[0, M)`` and an optional [N] mask (0 = leave out of the scores; the row still gets its weight) and
      returns ``(weights_N, new_state, RobustGRPOAux)``: ``weights_N`` [N] = ``w_{g(i)}`` from the NEW
      alpha, stop-gradiented.
    """
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
    sizes_M = np.asarray(group_sizes_M, dtype=np.float64)
    if sizes_M.shape != (num_groups,):
        raise ValueError(f"group_sizes_M must have shape ({num_groups},) = [M], got {sizes_M.shape}")
    if not np.all(sizes_M > 0):
        raise ValueError(f"every group needs at least one training prompt, got group_sizes_M={sizes_M}")
    if isinstance(eta, numbers.Real) and eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if isinstance(chi, numbers.Real) and not 0.0 <= chi <= 1.0:
        raise ValueError(f"chi must be in [0, 1], got {chi!r}")
    mu_M = sizes_M / sizes_M.sum()

    def init() -> RobustGRPOState:
        return RobustGRPOState(log_alpha_M=jnp.asarray(np.log(mu_M), jnp.result_type(float)),
                               step=jnp.zeros((), jnp.int32))

    def update(scores_N, group_ids_N, state, mask_N=None):
        chex.assert_shape(state.log_alpha_M, (num_groups,))
        score_M, count_M = group_mean_scores(jax.lax.stop_gradient(scores_N), group_ids_N, num_groups, mask_N)
        dtype = score_M.dtype
        present_M = count_M > 0
        log_alpha_M = state.log_alpha_M.astype(dtype)
        stepped_M = jnp.where(present_M, log_alpha_M - eta * jnp.where(present_M, score_M, 0.0), -jnp.inf)
        log_mass = jax.scipy.special.logsumexp(jnp.where(present_M, log_alpha_M, -jnp.inf))
        norm = jax.scipy.special.logsumexp(stepped_M)
        new_log_alpha_M = jnp.where(present_M, stepped_M - jnp.where(jnp.any(present_M), norm, 0.0) + log_mass,
                                    log_alpha_M)
        alpha_M = jnp.exp(new_log_alpha_M)
        mu = jnp.asarray(mu_M, dtype)
        weights_M = jax.lax.stop_gradient(((1.0 - chi) * mu + chi * alpha_M) / mu)
        weights_N = weights_M[jnp.clip(group_ids_N, 0, num_groups - 1)]
        new_state = RobustGRPOState(log_alpha_M=new_log_alpha_M.astype(state.log_alpha_M.dtype),
                                    step=state.step + 1)
        return weights_N, new_state, RobustGRPOAux(alpha_M=alpha_M, weights_M=weights_M, score_M=score_M,
                                                    count_M=count_M)

    return RobustGRPOWeights(init=init, update=update)
