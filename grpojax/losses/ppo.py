"""PPO-RLHF losses: clipped policy / value losses and their sum (the rollout side: ``ppo_rollout``).

Pure functions of arrays in the style of rlax and TRL's ``PPOTrainer`` (the names of TRL's arguments and
metrics are kept so configs and dashboards port). One rollout of B sequences of T response tokens gives
``logp_BT`` (policy at sampling time), ``ref_logp_BT`` (frozen reference), ``values_BT`` (critic) and a
sequence score ``scores_B`` from the reward model; then

    r_bt = -kl_coef * KL_bt  (+ scores_b at the last active token)    kl_penalized_rewards
    A_bt, R_bt = GAE(r, V; gamma, lam)                                   gae_advantages
    A <- whiten(A)                                                       whiten
    L = L_clip(logp, old_logp, A) + vf_coef * L_V(V, old_V, R) [+ beta KL]   ppo_loss

References:
  * PPO: Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv 1707.06347, eq. 7 and 9.
  * GAE: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", arXiv 1506.02438, eq. 16.
  * RLHF with a KL-shaped reward and the adaptive KL controller: Ziegler et al. 2019, "Fine-Tuning
    Language Models from Human Preferences", arXiv 1909.08593, section 2.2.
  * KL estimators k1 / k2 / k3: Schulman 2020, "Approximating KL divergence" (see ``common.kl_penalty``).

Masks: ``mask_BT`` is 1 on response tokens that count and 0 on prompt / padding; the recurrences skip
inactive tokens (values there may be garbage, even NaN) and every output is 0 at inactive positions.
Everything computed from the rollout (rewards, advantages, returns, old log-probs, old values, reference
log-probs) receives ``stop_gradient``: gradients flow only into the current ``logp_BT`` and ``values_BT``.
Shape key: ``grpojax/types.py`` (B sequences, T tokens).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from grpojax.losses.common import as_float, check_bt, check_nonneg, is_active, kl_penalty, masked_mean
from grpojax.losses.ppo_rollout import masked_var
from grpojax.types import Array

_sg = jax.lax.stop_gradient
PPO_REDUCTIONS = ("token_mean", "sequence_mean")


def _reduce(x_BT: Array, mask_BT: Array, reduction: str) -> Array:
    """``token_mean``: ``Σ m x / Σ m``; ``sequence_mean``: ``(1/B) Σ_b (Σ_t m x / n_b)`` (rows with
    ``n_b = 0`` contribute 0)."""
    if reduction == "token_mean":
        return masked_mean(x_BT, mask_BT)
    if reduction == "sequence_mean":
        return jnp.mean(masked_mean(x_BT, mask_BT, axis=1))
    raise ValueError(f"unknown reduction {reduction!r}; valid choices: {', '.join(PPO_REDUCTIONS)}")


# ----------------------------------------------------------------------------------------- losses


class PolicyLossAux(NamedTuple):
    """Diagnostics of :func:`ppo_policy_loss` (scalars, TRL names in brackets).

    clipfrac: fraction of active tokens where the clipped term is the active one [policy/clipfrac_avg].
    approx_kl: ``½ mean (logp − old_logp)²`` [policy/approxkl_avg].
    ratio_mean: mean of ``ρ = exp(logp − old_logp)`` [val/ratio].
    """

    clipfrac: Array
    approx_kl: Array
    ratio_mean: Array


def ppo_policy_loss(
    logp_BT: Array,
    old_logp_BT: Array,
    advantages_BT: Array,
    mask_BT: Array,
    *,
    cliprange: float = 0.2,
    reduction: str = "token_mean",
) -> tuple[Array, PolicyLossAux]:
    """PPO clipped surrogate ``ℓ_bt = max(−A ρ, −A clip(ρ, 1 − ε, 1 + ε))``, ``ρ = exp(logp − old_logp)``.

    Schulman et al. 2017 eq. 7 (as a loss to minimise); TRL ``PPOTrainer`` ``pg_loss``.
    ``old_logp_BT`` and ``advantages_BT`` are stop-gradiented. At ``ρ = 1`` the clip is inactive and
    the gradient is the vanilla policy gradient ``−A ∇logp``.

    Args:
      logp_BT: [B, T] current policy log-probs of the rollout tokens (differentiated).
      old_logp_BT: [B, T] log-probs at rollout time.
      advantages_BT: [B, T] (whitened) advantages.
      mask_BT: [B, T] 1 on active tokens.
      cliprange: ``ε ≥ 0`` (TRL's name).
      reduction: ``"token_mean"`` (``Σ m ℓ / Σ m``, TRL) or ``"sequence_mean"`` (mean over rows of each
        row's token mean). Aux metrics are always token means.

    Returns:
      ``(loss, PolicyLossAux)``; every scalar is finite even when all rows are masked.
    """
    check_bt("ppo_policy_loss", logp_BT, old_logp_BT, advantages_BT, mask_BT)
    check_nonneg("cliprange", cliprange)
    on = is_active(mask_BT)
    # Inactive positions are replaced before exp() so garbage there cannot create inf / NaN gradients.
    diff_BT = jnp.where(on, as_float(logp_BT) - _sg(old_logp_BT), 0.0)
    adv_BT = jnp.where(on, _sg(advantages_BT), 0.0)
    ratio_BT = jnp.exp(diff_BT)
    loss1_BT = -adv_BT * ratio_BT
    loss2_BT = -adv_BT * jnp.clip(ratio_BT, 1.0 - cliprange, 1.0 + cliprange)
    loss = _reduce(jnp.maximum(loss1_BT, loss2_BT), mask_BT, reduction)
    aux = PolicyLossAux(
        clipfrac=masked_mean((loss2_BT > loss1_BT).astype(diff_BT.dtype), mask_BT),
        approx_kl=0.5 * masked_mean(jnp.square(diff_BT), mask_BT),
        ratio_mean=masked_mean(ratio_BT, mask_BT),
    )
    return loss, jax.tree.map(_sg, aux)


class ValueLossAux(NamedTuple):
    """Diagnostics of :func:`ppo_value_loss` (scalars).

    clipfrac: fraction of active tokens where the clipped error is the larger one [val/clipfrac_avg].
    explained_variance: ``1 − Var(R − V) / Var(R)`` over active tokens (0 when ``Var(R) = 0``).
    """

    clipfrac: Array
    explained_variance: Array


def ppo_value_loss(
    values_BT: Array,
    old_values_BT: Array,
    returns_BT: Array,
    mask_BT: Array,
    *,
    cliprange_value: float | None = 0.2,
    reduction: str = "token_mean",
) -> tuple[Array, ValueLossAux]:
    """Clipped value loss, ``½ mean_m max((V − R)², (clip(V, V_old − c, V_old + c) − R)²)``.

    As TRL ``PPOTrainer`` (``cliprange_value``) and OpenAI baselines' PPO2; ``cliprange_value=None`` gives the
    plain ``½ mean_m (V − R)²``. ``old_values_BT`` and ``returns_BT`` are stop-gradiented.

    Args:
      values_BT: [B, T] current critic values (differentiated).
      old_values_BT: [B, T] critic values at rollout time.
      returns_BT: [B, T] value targets (the λ-returns of :func:`gae_advantages`).
      mask_BT: [B, T] 1 on active tokens.
      cliprange_value: ``c ≥ 0`` or None.
      reduction: as :func:`ppo_policy_loss`.

    Returns:
      ``(loss, ValueLossAux)``.
    """
    check_bt("ppo_value_loss", values_BT, old_values_BT, returns_BT, mask_BT)
    on = is_active(mask_BT)
    v_BT = jnp.where(on, as_float(values_BT), 0.0)
    old_BT = jnp.where(on, _sg(old_values_BT), 0.0).astype(v_BT.dtype)
    ret_BT = jnp.where(on, _sg(returns_BT), 0.0).astype(v_BT.dtype)
    err1_BT = jnp.square(v_BT - ret_BT)
    if cliprange_value is None:
        err2_BT = err1_BT
    else:
        check_nonneg("cliprange_value", cliprange_value)
        err2_BT = jnp.square(jnp.clip(v_BT, old_BT - cliprange_value, old_BT + cliprange_value) - ret_BT)
    loss = 0.5 * _reduce(jnp.maximum(err1_BT, err2_BT), mask_BT, reduction)
    var_ret = masked_var(ret_BT, mask_BT)
    safe_var = jnp.where(var_ret > 0, var_ret, 1.0)
    ev = jnp.where(var_ret > 0, 1.0 - masked_var(ret_BT - v_BT, mask_BT) / safe_var, 0.0)
    clipfrac = masked_mean((err2_BT > err1_BT).astype(v_BT.dtype), mask_BT)
    aux = ValueLossAux(clipfrac=clipfrac, explained_variance=ev)
    return loss, jax.tree.map(_sg, aux)


class PPOLossAux(NamedTuple):
    """Diagnostics of :func:`ppo_loss`: the two loss terms, the KL to the reference (token mean of the
    chosen estimator, 0 when no reference is given) and the policy / value diagnostics."""

    policy_loss: Array
    value_loss: Array
    kl: Array
    policy: PolicyLossAux
    value: ValueLossAux


def ppo_loss(
    logp_BT: Array,
    old_logp_BT: Array,
    advantages_BT: Array,
    values_BT: Array,
    old_values_BT: Array,
    returns_BT: Array,
    mask_BT: Array,
    *,
    cliprange: float = 0.2,
    cliprange_value: float | None = 0.2,
    vf_coef: float = 0.1,
    ref_logp_BT: Array | None = None,
    kl_coef: float | Array = 0.0,
    kl_estimator: str = "k3",
    reduction: str = "token_mean",
) -> tuple[Array, PPOLossAux]:
    """Total PPO-RLHF loss ``L = L_clip + vf_coef · L_V + β · mean_m KL(logp ‖ ref_logp)``.

    ``L_clip`` is :func:`ppo_policy_loss`, ``L_V`` :func:`ppo_value_loss` (Schulman et al. 2017 eq. 9
    without the entropy bonus; TRL ``vf_coef`` default 0.1). The KL term is for configurations that put
    the KL in the loss (as GRPO does) instead of in the reward (:func:`kl_penalized_rewards`); it is
    differentiated through ``logp_BT`` with the reference stop-gradiented.

    Args:
      logp_BT, old_logp_BT, advantages_BT: [B, T], see :func:`ppo_policy_loss`.
      values_BT, old_values_BT, returns_BT: [B, T], see :func:`ppo_value_loss`.
      mask_BT: [B, T] 1 on active tokens (shared by both terms).
      cliprange, cliprange_value, reduction: see the two losses.
      vf_coef: weight of the value loss (≥ 0).
      ref_logp_BT: [B, T] reference log-probs, required when ``kl_coef`` is not 0.
      kl_coef: ``β`` of the KL-as-loss term (may be traced).
      kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (default, unbiased and ≥ 0).

    Returns:
      ``(loss, PPOLossAux)``.
    """
    check_nonneg("vf_coef", vf_coef)
    check_nonneg("kl_coef", kl_coef)
    pg_loss, pg_aux = ppo_policy_loss(
        logp_BT, old_logp_BT, advantages_BT, mask_BT, cliprange=cliprange, reduction=reduction
    )
    vf_loss, vf_aux = ppo_value_loss(
        values_BT, old_values_BT, returns_BT, mask_BT, cliprange_value=cliprange_value, reduction=reduction
    )
    loss = pg_loss + vf_coef * vf_loss
    kl = jnp.zeros((), loss.dtype)
    if ref_logp_BT is None:
        if not (isinstance(kl_coef, numbers.Real) and kl_coef == 0):
            raise ValueError("ppo_loss: kl_coef is not 0 but ref_logp_BT is None; pass reference log-probs")
    else:
        check_bt("ppo_loss", logp_BT, ref_logp_BT, mask_BT)
        on = is_active(mask_BT)
        kl_BT = kl_penalty(jnp.where(on, logp_BT, 0.0), jnp.where(on, _sg(ref_logp_BT), 0.0), kl_estimator)
        kl_term = _reduce(kl_BT, mask_BT, reduction)
        loss = loss + kl_coef * kl_term
        kl = _sg(kl_term)
    aux = PPOLossAux(policy_loss=_sg(pg_loss), value_loss=_sg(vf_loss), kl=kl, policy=pg_aux, value=vf_aux)
    return loss, aux
