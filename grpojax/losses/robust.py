"""Group-robust preference optimisation (GR-DPO / GR-IPO): the adversarial group weights alpha.

Ramesh et al., "Group Robust Preference Optimization in Reward-free RLHF", NeurIPS 2024,
arXiv 2405.20304 (Algorithm 1 mini-batch form, Algorithm 2 / section 5.1 full-batch form) solve

    min_theta  max_{alpha in simplex_K}  sum_g alpha_g L_g(theta),     L_g = mean loss of group g,

by alternating an exponentiated-gradient (mirror ascent) step on alpha with a gradient step on theta that
uses the **new** alpha. This module holds the alpha part as an optax-style ``(init, update)`` pair with a
NamedTuple state (log-alpha is stored, so the renormalisation is a ``logsumexp``):

* ``mode="minibatch"`` (default, the official LLM code): for each group g in the batch
  ``ghat_g = (N / N_g) sum_{i in batch, g(i) = g} l_i`` (0 when absent),
  ``alpha_g <- alpha_g exp(eta ghat_g) / Z``, and the loss to differentiate is
  ``sum_g w_g ghat_g / |batch|`` with ``w_g = stop_gradient((1 - chi) mu_g + chi alpha_g)``.
* ``mode="full_batch"`` (the paper's log-linear experiments): ``ghat_g = L_g`` (group **mean**),
  ``alpha_g <- alpha_g exp(eta L_g) / Z`` and the loss is ``sum_g w_g L_g``.
  ``alpha_update="official"`` divides the statistic by N_g once more, as the official bandit code does
  for GR-IPO (which leaves alpha almost uniform).

Weights ``mu`` (used where chi < 1) multiply *group-mean* losses: ``mu="uniform"`` (1/K, the default) makes
every group count equally, i.e. per-sample weights proportional to 1/N_g = importance sampling
("IS-DPO" when chi = 0); ``mu="proportional"`` (N_g / N) weighs every sample equally = plain DPO (ERM).

Shape key: P pairs, M robust groups. Everything is jit- and vmap-safe; ``chi``, ``eta`` and ``mu`` may be
traced arrays (e.g. vmapped over a sweep).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import NamedTuple, Optional, Union

import chex
import jax
import jax.numpy as jnp
import numpy as np

from grpojax.types import Array, Scalar

MODES = ("minibatch", "full_batch")
ALPHA_UPDATES = ("paper", "official")


class RobustWeightsState(NamedTuple):
    """log_alpha_M: [M] log of the group weights (on the simplex); step: int32 number of updates."""

    log_alpha_M: Array
    step: Array


class RobustAux(NamedTuple):
    """Diagnostics of one update (all stop-gradiented).

    alpha_M: [M] the new alpha. weights_M: [M] ``(1 - chi) mu + chi alpha`` used for the loss.
    group_loss_M: [M] ``ghat_g`` (mini-batch) or the group mean loss (full batch); 0 for absent groups.
    group_count_M: [M] number of valid pairs of each group in the batch.
    """

    alpha_M: Array
    weights_M: Array
    group_loss_M: Array
    group_count_M: Array


class RobustWeights(NamedTuple):
    """``init() -> state``; ``update(losses_P, group_ids_P, state, mask_P=None, *, eta_scale=1.0)
    -> (weighted_loss, new_state, aux)``."""

    init: Callable[[], RobustWeightsState]
    update: Callable[..., tuple]


def group_one_hot(group_ids_P: Array, num_groups: int, mask_P: Optional[Array] = None) -> Array:
    """[P, M] float one-hot of the group ids, rows zeroed where ``mask_P`` is 0 or the id is out of range."""
    chex.assert_rank(group_ids_P, 1)
    one_hot_PM = (group_ids_P[:, None] == jnp.arange(num_groups)[None, :]).astype(jnp.float32)
    if mask_P is not None:
        chex.assert_equal_shape([group_ids_P, mask_P])
        one_hot_PM = one_hot_PM * mask_P.astype(jnp.float32)[:, None]
    return one_hot_PM


def group_sums(values_P: Array, group_ids_P: Array, num_groups: int, mask_P=None) -> tuple:
    """Per-group masked sums and counts: ``(sum_M, count_M)``, both [M], in the dtype of ``values_P``."""
    chex.assert_rank([values_P, group_ids_P], 1)
    chex.assert_equal_shape([values_P, group_ids_P])
    one_hot_PM = group_one_hot(group_ids_P, num_groups, mask_P).astype(values_P.dtype)
    return values_P @ one_hot_PM, jnp.sum(one_hot_PM, axis=0)


def _resolve_mu(mu, num_groups: int, sizes_M: Optional[np.ndarray]) -> Array:
    if isinstance(mu, str):
        if mu == "uniform":
            return jnp.full((num_groups,), 1.0 / num_groups)
        if mu == "proportional":
            if sizes_M is None:
                raise ValueError("mu='proportional' needs group_sizes_M")
            return jnp.asarray(sizes_M / sizes_M.sum())
        raise ValueError(f"mu must be 'uniform', 'proportional' or an [M] array, got {mu!r}")
    mu = jnp.asarray(mu)
    if mu.shape != (num_groups,):
        raise ValueError(f"mu must have shape ({num_groups},) = [M], got {mu.shape}")
    return mu


def robust_weights(
    num_groups: int,
    *,
    group_sizes_M=None,
    eta: Union[float, Array],
    chi: Union[float, Array] = 1.0,
    mu: Union[str, Array] = "uniform",
    mode: str = "minibatch",
    alpha_update: str = "paper",
) -> RobustWeights:
    """Group-robust weights alpha as an optax-style ``(init, update)`` pair.

    Args:
      num_groups: K = M, the number of groups (static).
      group_sizes_M: [M] N_g, the number of training pairs of each group (all > 0). Required for
        ``mode="minibatch"``, ``mu="proportional"`` and ``alpha_update="official"``.
      eta: step size eta_alpha of the exponentiated-gradient ascent on alpha (>= 0; 0 freezes alpha).
      chi: trade-off in [0, 1]; the loss weights are ``(1 - chi) mu + chi alpha``.
      mu: ``"uniform"`` (1/K), ``"proportional"`` (N_g / N) or an explicit [M] array on the simplex.
      mode: ``"minibatch"`` (Algorithm 1, official LLM code) or ``"full_batch"`` (group means).
      alpha_update: ``"paper"`` or ``"official"`` (statistic divided by N_g again; GR-IPO bandit code).

    Returns:
      ``RobustWeights(init, update)``. ``update(losses_P, group_ids_P, state, mask_P=None, *,
      eta_scale=1.0)`` takes [P] unreduced per-pair losses (gradients flow through them), [P] integer
      group ids in ``[0, M)``, an optional [P] mask (0 = padding pair) and a multiplier on eta (e.g. halved
      at each learning-rate drop) and returns ``(weighted_loss, new_state, RobustAux)``; the weights
      are stop-gradiented, so ``jax.grad`` of ``weighted_loss`` is ``sum_g w_g grad(ghat_g) / |batch|``
      (mini-batch) or ``sum_g w_g grad(L_g)`` (full batch) and nothing flows into alpha.

    Example (mini-batch GR-DPO step)::

        rw = robust_weights(2, group_sizes_M=[60, 240], eta=0.5)
        state = rw.init()
        def loss_fn(params, state):
            losses_P = dpo_loss(*logps(params), beta=0.1)
            loss, state, aux = rw.update(losses_P, batch["group_ids_P"], state)
            return loss, (state, aux)
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if alpha_update not in ALPHA_UPDATES:
        raise ValueError(f"alpha_update must be one of {ALPHA_UPDATES}, got {alpha_update!r}")
    if not isinstance(num_groups, numbers.Integral) or num_groups < 1:
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
    sizes_M = None
    if group_sizes_M is not None:
        sizes_M = np.asarray(group_sizes_M, dtype=np.float64)
        if sizes_M.shape != (num_groups,):
            raise ValueError(f"group_sizes_M must have shape ({num_groups},) = [M], got {sizes_M.shape}")
        if not np.all(sizes_M > 0):
            raise ValueError(f"every group needs at least one training pair, got group_sizes_M={sizes_M}")
    if sizes_M is None and (mode == "minibatch" or alpha_update == "official"):
        raise ValueError(f"group_sizes_M is required for mode={mode!r}, alpha_update={alpha_update!r}")
    if isinstance(eta, numbers.Real) and eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if isinstance(chi, numbers.Real) and not 0.0 <= chi <= 1.0:
        raise ValueError(f"chi must be in [0, 1], got {chi!r}")
    mu_M = _resolve_mu(mu, num_groups, sizes_M)

    def init() -> RobustWeightsState:
        return RobustWeightsState(
            log_alpha_M=jnp.full((num_groups,), -np.log(num_groups), dtype=jnp.result_type(float)),
            step=jnp.zeros((), jnp.int32),
        )

    def update(losses_P, group_ids_P, state, mask_P=None, *, eta_scale=1.0):
        chex.assert_rank([losses_P, group_ids_P], 1)
        chex.assert_equal_shape([losses_P, group_ids_P])
        chex.assert_shape(state.log_alpha_M, (num_groups,))
        dtype = jnp.promote_types(losses_P.dtype, jnp.float32)
        losses_P = losses_P.astype(dtype)
        if mask_P is None:
            mask_P = jnp.ones(losses_P.shape, dtype)
        chex.assert_equal_shape([losses_P, mask_P])
        losses_P = jnp.where(mask_P > 0, losses_P, 0.0)  # a NaN in a padded pair must not leak
        sum_M, count_M = group_sums(losses_P, group_ids_P, num_groups, mask_P)
        if mode == "minibatch":
            n_M = jnp.asarray(sizes_M, dtype)
            stat_M = (jnp.sum(n_M) / n_M) * sum_M  # ghat_g; 0 where the group is absent
            batch_size = jnp.maximum(jnp.sum(count_M), 1.0)
        else:
            stat_M = sum_M / jnp.maximum(count_M, 1.0)  # group mean; 0 where absent
            batch_size = jnp.ones((), dtype)
        ascent_M = jax.lax.stop_gradient(stat_M)
        if alpha_update == "official":
            ascent_M = ascent_M / jnp.asarray(sizes_M, dtype)
        log_alpha_M = state.log_alpha_M.astype(dtype) + eta * eta_scale * ascent_M
        log_alpha_M = log_alpha_M - jax.scipy.special.logsumexp(log_alpha_M)
        alpha_M = jnp.exp(log_alpha_M)
        weights_M = jax.lax.stop_gradient((1.0 - chi) * mu_M.astype(dtype) + chi * alpha_M)
        loss = jnp.sum(weights_M * stat_M) / batch_size
        new_state = RobustWeightsState(
            log_alpha_M=log_alpha_M.astype(state.log_alpha_M.dtype), step=state.step + 1
        )
        aux = RobustAux(
            alpha_M=jax.lax.stop_gradient(alpha_M),
            weights_M=weights_M,
            group_loss_M=jax.lax.stop_gradient(stat_M),
            group_count_M=count_M,
        )
        return loss, new_state, aux

    return RobustWeights(init=init, update=update)


class GroupMetrics(NamedTuple):
    """Per-group ([M]) and worst-group (scalar) preference metrics.

    Groups absent from the batch (count 0) are NaN in the [M] arrays and ignored by the worst-group
    reductions (max for the loss, min for the accuracies); if no group is present those are NaN too.
    """

    loss_M: Array
    reward_accuracy_M: Array
    logprob_accuracy_M: Array
    count_M: Array
    worst_loss: Scalar
    worst_reward_accuracy: Scalar
    worst_logprob_accuracy: Scalar


def group_metrics(
    losses_P: Array,
    reward_accuracy_P: Array,
    logprob_accuracy_P: Array,
    group_ids_P: Array,
    *,
    num_groups: int,
    mask_P: Optional[Array] = None,
) -> GroupMetrics:
    """Per-group mean loss / reward accuracy / log-prob accuracy and their worst-group values.

    Args:
      losses_P: [P] per-pair losses (e.g. :func:`grpojax.losses.dpo.dpo_loss`).
      reward_accuracy_P: [P] 1.0 where ``h > 0`` (``PreferenceMetrics.reward_accuracy``).
      logprob_accuracy_P: [P] 1.0 where ``pi_w > pi_l`` (``PreferenceMetrics.logprob_accuracy``).
      group_ids_P: [P] int group of each pair, in ``[0, num_groups)``.
      num_groups: M.
      mask_P: optional [P] validity mask.

    Returns:
      :class:`GroupMetrics`; ``worst_loss = max_g loss_g``, ``worst_*_accuracy = min_g acc_g`` over the
      groups present in the batch.
    """
    chex.assert_rank([losses_P, reward_accuracy_P, logprob_accuracy_P, group_ids_P], 1)
    chex.assert_equal_shape([losses_P, reward_accuracy_P, logprob_accuracy_P, group_ids_P])
    values_P3 = jax.lax.stop_gradient(
        jnp.stack([losses_P, reward_accuracy_P, logprob_accuracy_P], axis=-1).astype(jnp.float32)
    )
    one_hot_PM = group_one_hot(group_ids_P, num_groups, mask_P)
    sums_M3 = jnp.einsum("pm,pc->mc", one_hot_PM, values_P3)
    count_M = jnp.sum(one_hot_PM, axis=0)
    present_M = count_M > 0
    means_M3 = jnp.where(present_M[:, None], sums_M3 / jnp.maximum(count_M, 1.0)[:, None], jnp.nan)
    any_present = jnp.any(present_M)
    worst_loss = jnp.where(any_present, jnp.max(jnp.where(present_M, means_M3[:, 0], -jnp.inf)), jnp.nan)
    worst_acc_2 = jnp.where(
        any_present, jnp.min(jnp.where(present_M[:, None], means_M3[:, 1:], jnp.inf), axis=0), jnp.nan
    )
    return GroupMetrics(
        loss_M=means_M3[:, 0],
        reward_accuracy_M=means_M3[:, 1],
        logprob_accuracy_M=means_M3[:, 2],
        count_M=count_M,
        worst_loss=worst_loss,
        worst_reward_accuracy=worst_acc_2[0],
        worst_logprob_accuracy=worst_acc_2[1],
    )
