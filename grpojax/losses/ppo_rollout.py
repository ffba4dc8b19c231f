"""PPO-RLHF from a rollout to advantages: KL-shaped token rewards, GAE, whitening, KL-coefficient controllers
and running reward normalisation (the losses that consume them: ``grpojax.losses.ppo``).

    r_bt = -kl_coef * KL_bt  (+ scores_b at the last active token)    kl_penalized_rewards
    A_bt, R_bt = GAE(r, V; gamma, lam)                                   gae_advantages
    A <- whiten(A)                                                       whiten
    kl_coef <- controller(mean rollout KL)                               adaptive_kl_controller

References: GAE, Schulman et al. 2016 (arXiv 1506.02438, eq. 16); the KL-shaped reward and the adaptive
controller, Ziegler et al. 2019 (arXiv 1909.08593, section 2.2). Masks as in ``grpojax.losses.ppo``:
recurrences skip inactive tokens and outputs are 0 there; everything here is computed from the rollout
and carries no gradient. Shape key: ``grpojax/types.py`` (B sequences, T tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from grpojax.losses.common import KL_ESTIMATORS, as_float, check_bt, check_nonneg, is_active, kl_penalty
from grpojax.types import Array

_sg = jax.lax.stop_gradient


# ----------------------------------------------------------------------------------------- rewards


def rollout_kl(logp_BT: Array, ref_logp_BT: Array, mask_BT: Array, *, kl_estimator: str = "k1") -> Array:
    """Per-sequence KL to the reference, ``KL_b = Σ_t m_bt KL_bt`` (TRL's ``objective/kl`` is its mean;
    the mean is what :func:`adaptive_kl_controller` tracks).

    Args:
      logp_BT: [B, T] log-probs of the sampled tokens under the policy that sampled them.
      ref_logp_BT: [B, T] the same tokens under the frozen reference.
      mask_BT: [B, T] 1 on active response tokens.
      kl_estimator: ``"k1"`` (``logp - ref``, TRL PPO's default), ``"k2"`` or ``"k3"``.

    Returns:
      [B] summed KL estimates, no gradient.
    """
    check_bt("rollout_kl", logp_BT, ref_logp_BT, mask_BT)
    kl_BT = kl_penalty(_sg(logp_BT), _sg(ref_logp_BT), kl_estimator)
    return jnp.sum(jnp.where(is_active(mask_BT), kl_BT, 0.0), axis=1)


def kl_penalized_rewards(
    scores_B: Array,
    logp_BT: Array,
    ref_logp_BT: Array,
    mask_BT: Array,
    *,
    kl_coef: float | Array,
    kl_estimator: str = "k1",
) -> Array:
    """Per-token RLHF reward: a KL penalty on every active token plus the sequence score at the end.

    ``r_bt = m_bt (-kl_coef · KL_bt) + [t = last_b] · score_b`` with ``last_b = max{t : m_bt > 0}``
    (Ziegler et al. 2019 eq. 2; TRL ``PPOTrainer`` puts the score on the last token the same way).
    A row with no active token gets all-zero rewards (there is no token to credit its score to).

    Args:
      scores_B: [B] reward-model score of each sequence (already aggregated over aspects).
      logp_BT: [B, T] sampled-token log-probs under the rollout policy.
      ref_logp_BT: [B, T] the same tokens under the frozen reference.
      mask_BT: [B, T] 1 on active response tokens (bool or float).
      kl_coef: KL coefficient ``β ≥ 0``; a Python float or the traced state of a KL controller.
      kl_estimator: ``"k1"`` (default, as TRL PPO), ``"k2"`` or ``"k3"``.

    Returns:
      [B, T] rewards, 0 at inactive positions, no gradient (they are rollout targets).

    >>> kl_penalized_rewards(jnp.array([2.0]), jnp.array([[-1.0, -1.0, 0.0]]),
    ...                      jnp.array([[-1.5, -1.0, 0.0]]), jnp.array([[1, 1, 0]]), kl_coef=0.1)
    Array([[-0.05,  2.  ,  0.  ]], dtype=float32)
    """
    check_bt("kl_penalized_rewards", logp_BT, ref_logp_BT, mask_BT)
    chex.assert_shape(scores_B, (logp_BT.shape[0],))
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {kl_estimator!r}; valid choices: {', '.join(KL_ESTIMATORS)}")
    check_nonneg("kl_coef", kl_coef)
    active_BT = is_active(mask_BT)
    kl_BT = kl_penalty(_sg(logp_BT), _sg(ref_logp_BT), kl_estimator)
    penalty_BT = jnp.where(active_BT, -kl_coef * kl_BT, 0.0)
    t_T = jnp.arange(mask_BT.shape[1])
    last_B = jnp.max(jnp.where(active_BT, t_T[None, :], -1), axis=1)  # -1 for an empty row
    at_end_BT = t_T[None, :] == last_B[:, None]
    return _sg(penalty_BT + jnp.where(at_end_BT, as_float(scores_B)[:, None], 0.0))


# ------------------------------------------------------------------------------------ advantages


def gae_advantages(
    rewards_BT: Array,
    values_BT: Array,
    mask_BT: Array,
    *,
    gamma: float | Array = 1.0,
    lam: float | Array = 0.95,
) -> tuple[Array, Array]:
    """Generalised advantage estimation over the active tokens of each row (reverse ``lax.scan``).

    On the active tokens ``t_1 < … < t_n`` of a row (inactive tokens are skipped, so a masked sequence
    gives exactly the GAE of the sequence with those tokens dropped):

        δ_k = r_{t_k} + γ V_{t_{k+1}} − V_{t_k},   V_{t_{n+1}} = 0 (the episode ends at the last token)
        A_{t_k} = δ_k + γ λ A_{t_{k+1}},           A_{t_{n+1}} = 0
        R_{t_k} = A_{t_k} + V_{t_k}                 (the λ-return, the value target)

    Schulman et al. 2016 eq. 16; identical to TRL ``PPOTrainer`` for right-padded (prefix) masks.
    With ``γ = λ = 1`` the returns are the reward-to-go ``Σ_{j ≥ k} r_{t_j}``.

    Args:
      rewards_BT: [B, T] per-token rewards (e.g. :func:`kl_penalized_rewards`).
      values_BT: [B, T] critic values at rollout time.
      mask_BT: [B, T] 1 on active tokens.
      gamma: discount ``γ ∈ [0, 1]``. lam: GAE ``λ ∈ [0, 1]``. Either may be traced.

    Returns:
      ``(advantages_BT, returns_BT)``, both [B, T], 0 at inactive positions, under ``stop_gradient``.
    """
    check_bt("gae_advantages", rewards_BT, values_BT, mask_BT)
    check_nonneg("gamma", gamma, 1.0)
    check_nonneg("lam", lam, 1.0)
    dtype = jnp.promote_types(jnp.promote_types(rewards_BT.dtype, values_BT.dtype), jnp.float32)
    active_TB = is_active(mask_BT).T
    r_TB = jnp.where(active_TB, _sg(rewards_BT).T.astype(dtype), 0.0)
    v_TB = jnp.where(active_TB, _sg(values_BT).T.astype(dtype), 0.0)

    def step(carry, xs):
        next_value_B, next_adv_B = carry
        r_B, v_B, on_B = xs
        adv_B = r_B + gamma * next_value_B - v_B + gamma * lam * next_adv_B
        adv_B = jnp.where(on_B, adv_B, 0.0)
        carry = (jnp.where(on_B, v_B, next_value_B), jnp.where(on_B, adv_B, next_adv_B))
        return carry, adv_B

    zeros_B = jnp.zeros(mask_BT.shape[:1], dtype)
    _, adv_TB = jax.lax.scan(step, (zeros_B, zeros_B), (r_TB, v_TB, active_TB), reverse=True)
    adv_BT = adv_TB.T
    return _sg(adv_BT), _sg(jnp.where(active_TB.T, adv_BT + v_TB.T, 0.0))


def masked_var(x: Array, mask: Array, *, unbiased: bool = True) -> Array:
    """Masked variance over all entries, ``Σ m (x − μ)² / (n − 1)`` (``/ n`` if not ``unbiased``),
    ``μ = Σ m x / n``, ``n = Σ m``; 0 when fewer than 2 (1) entries are active.

    Args: x: any shape. mask: same shape (0/1). Returns a scalar.
    """
    chex.assert_equal_shape([x, mask])
    on = is_active(mask)
    xf = jnp.where(on, as_float(x), 0.0)
    n = jnp.sum(on.astype(xf.dtype))
    mean = jnp.sum(xf) / jnp.maximum(n, 1.0)
    ss = jnp.sum(jnp.where(on, jnp.square(xf - mean), 0.0))
    return ss / jnp.maximum(n - 1.0 if unbiased else n, 1.0)


def whiten(x: Array, mask: Array, *, shift_mean: bool = True, eps: float = 1e-8) -> Array:
    """Masked whitening over all entries, as TRL ``masked_whiten``.

    ``y = (x − μ) / sqrt(σ² + eps)`` (``+ μ`` back when ``shift_mean=False``: scale only), with the
    masked mean ``μ`` and the unbiased (Bessel-corrected) masked variance ``σ²`` of :func:`masked_var`.
    Used on advantages (``shift_mean=True``) and optionally on token rewards (``shift_mean=False``).

    Args:
      x: any shape, e.g. [B, T] advantages or [B] scores.
      mask: same shape; 1 on the entries that count.
      shift_mean: subtract the mean (True) or keep it (False).
      eps: added to the variance.

    Returns:
      Same shape as ``x``; 0 at inactive entries; the statistics are not differentiated through.
    """
    chex.assert_equal_shape([x, mask])
    on = is_active(mask)
    xf = as_float(x)
    stats_x = _sg(jnp.where(on, xf, 0.0))
    mean = jnp.sum(stats_x) / jnp.maximum(jnp.sum(on.astype(xf.dtype)), 1.0)
    var = masked_var(stats_x, mask)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        y = y + mean
    return jnp.where(on, y, 0.0)


# --------------------------------------------------------------------------------- KL controllers


class KLControllerState(NamedTuple):
    """State of a KL controller: the current coefficient ``β`` of the KL penalty (a float32 scalar)."""

    kl_coef: Array


class KLController(NamedTuple):
    """An optax-style pair: ``state = init()``; ``state = update(current_kl, state, n_steps=...)``."""

    init: Callable[[], KLControllerState]
    update: Callable[..., KLControllerState]


def fixed_kl_controller(kl_coef: float) -> KLController:
    """A constant ``β`` with the :func:`adaptive_kl_controller` interface (TRL ``FixedKLController``)."""
    check_nonneg("kl_coef", kl_coef)

    def init() -> KLControllerState:
        return KLControllerState(kl_coef=jnp.asarray(kl_coef, jnp.float32))

    def update(current_kl, state: KLControllerState, *, n_steps) -> KLControllerState:
        del current_kl, n_steps
        return state

    return KLController(init, update)


def adaptive_kl_controller(init_kl_coef: float, *, target: float, horizon: float) -> KLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 (section 2.2; TRL ``AdaptiveKLController``).

    ``e = clip(KL / KL_target − 1, −0.2, 0.2)``, ``β ← β (1 + e · n_steps / horizon)``: β grows when
    the measured KL is above the target and shrinks when below, at most 20% per ``horizon`` samples.

    Args:
      init_kl_coef: initial ``β ≥ 0``.
      target: target KL per sequence ``> 0`` (compare with the mean of :func:`rollout_kl`).
      horizon: number of samples over which a full proportional correction is applied ``> 0``.

    ``update(current_kl, state, *, n_steps)``: ``current_kl`` a scalar (the rollout's mean sequence KL),
    ``n_steps`` the number of sequences in that rollout; both may be traced (jit-safe).
    """
    check_nonneg("init_kl_coef", init_kl_coef)
    for name, value in (("target", target), ("horizon", horizon)):
        if not value > 0:
            raise ValueError(f"adaptive_kl_controller: {name} must be > 0, got {value!r}")

    def init() -> KLControllerState:
        return KLControllerState(kl_coef=jnp.asarray(init_kl_coef, jnp.float32))

    def update(current_kl, state: KLControllerState, *, n_steps) -> KLControllerState:
        chex.assert_rank(current_kl, 0)
        error = jnp.clip(jnp.asarray(current_kl, jnp.float32) / target - 1.0, -0.2, 0.2)
        mult = 1.0 + error * jnp.asarray(n_steps, jnp.float32) / horizon
        return KLControllerState(kl_coef=state.kl_coef * mult)

    return KLController(init, update)


# ------------------------------------------------------------------------------ score normalisation


class RunningMomentsState(NamedTuple):
    """Running count, mean and sum of squared deviations ``m2`` of every score seen (float32 scalars)."""

    count: Array
    mean: Array
    m2: Array


class RunningMoments(NamedTuple):
    """An optax-style pair: ``state = init()``; ``state = update(scores_B, state, mask_B=None)``."""

    init: Callable[[], RunningMomentsState]
    update: Callable[..., RunningMomentsState]


def running_moments() -> RunningMoments:
    """Running mean / variance of sequence scores over all rollouts (TRL ``RunningMoments``).

    Merges each batch with Chan et al.'s parallel update: with batch count ``n_b``, mean ``μ_b`` and
    sum of squared deviations ``M_b``, ``n = n_a + n_b``, ``δ = μ_b − μ_a``,
    ``μ = μ_a + δ n_b / n``, ``M = M_a + M_b + δ² n_a n_b / n``. The result equals the moments of all
    scores concatenated. ``update(scores_B, state, mask_B=None)`` skips masked-out (e.g. NaN) scores.
    """

    def init() -> RunningMomentsState:
        zero = jnp.zeros((), jnp.float32)
        return RunningMomentsState(count=zero, mean=zero, m2=zero)

    def update(scores_B: Array, state: RunningMomentsState, mask_B: Array | None = None):
        chex.assert_rank(scores_B, 1)
        on_B = jnp.ones(scores_B.shape, bool) if mask_B is None else is_active(mask_B)
        chex.assert_equal_shape([scores_B, on_B])
        x_B = jnp.where(on_B, scores_B.astype(jnp.float32), 0.0)
        n_b = jnp.sum(on_B.astype(jnp.float32))
        mean_b = jnp.sum(x_B) / jnp.maximum(n_b, 1.0)
        m2_b = jnp.sum(jnp.where(on_B, jnp.square(x_B - mean_b), 0.0))
        n = state.count + n_b
        delta = mean_b - state.mean
        safe_n = jnp.maximum(n, 1.0)
        return RunningMomentsState(
            count=n,
            mean=state.mean + delta * n_b / safe_n,
            m2=state.m2 + m2_b + jnp.square(delta) * state.count * n_b / safe_n,
        )

    return RunningMoments(init, update)


def running_std(state: RunningMomentsState) -> Array:
    """Unbiased standard deviation ``sqrt(m2 / (count − 1))`` of the scores seen; 1 before 2 scores."""
    return jnp.where(state.count > 1, jnp.sqrt(state.m2 / jnp.maximum(state.count - 1.0, 1.0)), 1.0)


def normalize_scores(
    scores_B: Array, state: RunningMomentsState, *, shift_mean: bool = True, eps: float = 1e-8
) -> Array:
    """``(s − μ) / (σ + eps)`` (``shift_mean=True``, TRL ``use_score_norm``) or ``s / (σ + eps)``
    (score scaling only) with the running moments ``μ``, ``σ = running_std(state)``.

    Args:
      scores_B: [B] sequence scores. state: from :func:`running_moments` (update it with this batch
      first, as TRL does). Returns [B], no gradient through the statistics.
    """
    chex.assert_rank(scores_B, 1)
    state = jax.tree.map(_sg, state)
    x_B = as_float(scores_B)
    if shift_mean:
        x_B = x_B - state.mean
    return x_B / (running_std(state) + eps)
