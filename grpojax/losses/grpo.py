"""GRPO: group-relative advantages and the clipped policy-gradient loss.

Group Relative Policy Optimization (Shao et al., DeepSeekMath, arXiv 2402.03300), as used with a
multi-label reward model in arXiv 2503.21819; loss aggregations of TRL's ``GRPOTrainer`` (``grpo``,
``bnpo``, ``dr_grpo`` from Dr. GRPO arXiv 2503.20783, ``dapo`` from DAPO arXiv 2503.14476) and sequence-level
importance sampling from GSPO (arXiv 2507.18071). See ``ALGORITHMS.md`` §1.3–1.4.

Everything here is a pure function of arrays; no model runs inside a loss.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from grpojax.losses.common import GRPO_LOSS_TYPES, KL_ESTIMATORS, kl_penalty, masked_mean
from grpojax.types import Array

ADVANTAGE_SCALES = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")


def _choice(kind: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}")


def _concrete_float(x) -> float | None:
    """``float(x)`` for Python numbers / concrete arrays, ``None`` for tracers."""
    try:
        return float(x)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


# ----------------------------------------------------------------------------------------------------------
# Group-relative advantages
# ----------------------------------------------------------------------------------------------------------


class GroupRewardStats(NamedTuple):
    """Per-group reward statistics (NaN rewards excluded everywhere).

    Attributes:
      mean_B: group mean of the valid rewards (0 for a group with no valid reward).
      std_B: Bessel-corrected (n-1) group std; 0 when fewer than two valid rewards.
      count_B: number of valid (non-NaN) rewards in each group.
      zero_std_B: True where all valid rewards of the group are equal (or there are fewer than two).
      frac_reward_zero_std: scalar, mean of ``zero_std_B`` (TRL metric ``frac_reward_zero_std``).
      reward: scalar, mean of all valid rewards (TRL metric ``reward``).
      reward_std: scalar, mean over groups of ``std_B`` (TRL metric ``reward_std``).
    """

    mean_B: Array
    std_B: Array
    count_B: Array
    zero_std_B: Array
    frac_reward_zero_std: Array
    reward: Array
    reward_std: Array


def _bessel_std(dev: Array, count: Array, axis) -> Array:
    """sqrt(Σ dev² / max(n - 1, 1)), with a gradient-safe sqrt at 0. ``dev`` is already 0 where invalid."""
    var = jnp.sum(jnp.square(dev), axis=axis) / jnp.maximum(count - 1.0, 1.0)
    positive = var > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, var, 1.0)), 0.0)


def group_reward_stats(rewards_BG: Array) -> GroupRewardStats:
    """Group mean / std / zero-std flags of a ``[B, G]`` reward matrix (B prompts × G completions).

    A NaN reward means "not applicable" (e.g. no valid reward aspect): it is left out of every mean,
    std and count. Rewards must otherwise be finite.

    Args:
      rewards_BG: ``[B, G]`` float rewards.

    Returns:
      :class:`GroupRewardStats`.
    """
    chex.assert_rank(rewards_BG, 2)
    r = rewards_BG.astype(jnp.float32)
    valid = ~jnp.isnan(r)
    count_B = jnp.sum(valid, axis=1).astype(jnp.float32)
    r0 = jnp.where(valid, r, 0.0)
    mean_B = jnp.sum(r0, axis=1) / jnp.maximum(count_B, 1.0)
    dev = jnp.where(valid, r - mean_B[:, None], 0.0)
    std_B = _bessel_std(dev, count_B, axis=1)
    r_max = jnp.max(jnp.where(valid, r, -jnp.inf), axis=1)
    r_min = jnp.min(jnp.where(valid, r, jnp.inf), axis=1)
    zero_std_B = r_max <= r_min  # all valid rewards equal, or fewer than one valid reward
    reward = jnp.sum(r0) / jnp.maximum(jnp.sum(count_B), 1.0)
    return GroupRewardStats(
        mean_B=mean_B,
        std_B=jnp.where(zero_std_B, 0.0, std_B),
        count_B=count_B,
        zero_std_B=zero_std_B,
        frac_reward_zero_std=jnp.mean(zero_std_B.astype(jnp.float32)),
        reward=reward,
        reward_std=jnp.mean(jnp.where(zero_std_B, 0.0, std_B)),
    )


def group_advantages(rewards_BG: Array, *, scale: str = "group", eps: float = 1e-4) -> Array:
    """Group-relative advantages (DeepSeekMath outcome supervision; TRL ``scale_rewards``).

    With ``μ_b``, ``σ_b`` the mean and Bessel-corrected (n-1) std of the valid rewards of group b:
      - ``scale="group"``: ``A_bg = (R_bg - μ_b) / (σ_b + eps)``  (GRPO / TRL default)
      - ``scale="batch"``: ``A_bg = (R_bg - μ_b) / (σ + eps)``, σ the Bessel std of all valid rewards of
        the batch (more robust to tiny groups, "Tricks or Traps" arXiv 2508.08221)
      - ``scale="none"``:  ``A_bg = R_bg - μ_b``  (Dr. GRPO, arXiv 2503.20783)

    NaN contract: a NaN reward ("not applicable") is excluded from μ and σ and gets advantage exactly 0.
    A group whose valid rewards are all equal gets advantage exactly 0 (no rounding residue), so it gives
    no policy gradient; it is counted in ``group_reward_stats(...).frac_reward_zero_std``.

    Args:
      rewards_BG: ``[B, G]`` rewards.
      scale: ``"group"``, ``"batch"`` or ``"none"``.
      eps: added to the std before dividing (TRL uses 1e-4).

    Returns:
      ``[B, G]`` float32 advantages (never NaN).
    """
    _choice("advantage scale", scale, ADVANTAGE_SCALES)
    eps_value = _concrete_float(eps)
    if eps_value is not None and eps_value < 0:
        raise ValueError(f"group_advantages: eps must be >= 0, got {eps}")
    stats = group_reward_stats(rewards_BG)
    r = rewards_BG.astype(jnp.float32)
    valid = ~jnp.isnan(r)
    centred_BG = jnp.where(valid, r - stats.mean_B[:, None], 0.0)
    if scale == "group":
        adv_BG = centred_BG / (stats.std_B[:, None] + eps)
    elif scale == "batch":
        n = jnp.sum(valid).astype(jnp.float32)
        batch_mean = jnp.sum(jnp.where(valid, r, 0.0)) / jnp.maximum(n, 1.0)
        batch_std = _bessel_std(jnp.where(valid, r - batch_mean, 0.0), n, axis=None)
        adv_BG = centred_BG / (batch_std + eps)
    else:
        adv_BG = centred_BG
    return jnp.where(valid & ~stats.zero_std_B[:, None], adv_BG, 0.0)


# ----------------------------------------------------------------------------------------------------------
# Policy loss
# ----------------------------------------------------------------------------------------------------------


class GRPOAux(NamedTuple):
    """Diagnostics of :func:`grpo_loss` (scalars; masked means are over the active tokens).

    Attributes:
      policy_loss: the clipped surrogate alone, aggregated like the loss (loss = policy_loss + β·kl_loss).
      kl_loss: the per-token KL aggregated like the loss (0 when no reference is given).
      kl: masked mean of the per-token KL estimate (0 when ``ref_logp_NT`` is None).
      clip_ratio_low_mean: fraction of active tokens with ``ρ < 1 - ε_low`` and ``A < 0``.
      clip_ratio_high_mean: fraction of active tokens with ``ρ > 1 + ε_high`` and ``A > 0``.
      clip_ratio_region_mean: fraction of active tokens in either clipped region.
      ratio_mean: masked mean of the importance ratio ρ (before the ``delta`` cap).
      num_tokens: number of active tokens (Σ mask) in this call.
    """

    policy_loss: Array
    kl_loss: Array
    kl: Array
    clip_ratio_low_mean: Array
    clip_ratio_high_mean: Array
    clip_ratio_region_mean: Array
    ratio_mean: Array
    num_tokens: Array

    def metrics(self) -> dict[str, Array]:
        """The diagnostics under TRL's metric names (so dashboards port)."""
        return {
            "kl": self.kl,
            "clip_ratio/low_mean": self.clip_ratio_low_mean,
            "clip_ratio/high_mean": self.clip_ratio_high_mean,
            "clip_ratio/region_mean": self.clip_ratio_region_mean,
            "ratio_mean": self.ratio_mean,
            "num_tokens": self.num_tokens,
            "policy_loss": self.policy_loss,
        }


def aggregate_token_loss(
    loss_NT: Array,
    mask_NT: Array,
    *,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
    num_items: Array | float | None = None,
) -> Array:
    """Reduce a per-token loss ``[N, T]`` to a scalar (TRL's ``loss_type``). With ``n_i = Σ_t m_it``:

      - ``grpo``:    ``(1/N) Σ_i (1/max(n_i, 1)) Σ_t m ℓ``  (DeepSeekMath sequence mean)
      - ``bnpo``:    ``Σ m ℓ / max(Σ m, 1)``               (per micro-batch token mean)
      - ``dr_grpo``: ``Σ m ℓ / (N · L_max)``, ``L_max = max_completion_length`` (default T)
      - ``dapo``:    ``Σ m ℓ / max(num_items, 1)``, ``num_items`` = active tokens of the WHOLE optimizer
        step (all micro-batches, all devices; default ``Σ m``). Summing the micro-batch losses computed
        with the global ``num_items`` gives exactly the full-batch loss, so gradient accumulation never
        changes the scale.

    Masked entries are dropped with ``where`` (garbage under the mask is harmless).

    Args:
      loss_NT: ``[N, T]`` per-token loss.
      mask_NT: ``[N, T]`` bool / 0-1 mask.
      loss_type: one of ``GRPO_LOSS_TYPES``.
      max_completion_length: ``L_max`` for ``dr_grpo``.
      num_items: global active-token count for ``dapo`` (scalar, may be traced).

    Returns:
      Scalar float32 loss.
    """
    _choice("loss_type", loss_type, GRPO_LOSS_TYPES)
    chex.assert_rank([loss_NT, mask_NT], 2)
    chex.assert_equal_shape([loss_NT, mask_NT])
    m = mask_NT.astype(jnp.float32)
    summed_NT = jnp.where(m != 0, loss_NT * m, 0.0)
    n_rows, n_cols = loss_NT.shape
    if loss_type == "grpo":
        per_seq_N = jnp.sum(summed_NT, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
        return jnp.mean(per_seq_N)
    if loss_type == "bnpo":
        return jnp.sum(summed_NT) / jnp.maximum(jnp.sum(m), 1.0)
    if loss_type == "dr_grpo":
        l_max = n_cols if max_completion_length is None else max_completion_length
        if int(l_max) <= 0:
            raise ValueError(f"max_completion_length must be positive, got {max_completion_length}")
        return jnp.sum(summed_NT) / (n_rows * float(l_max))
    denom = jnp.sum(m) if num_items is None else jnp.asarray(num_items, jnp.float32)
    return jnp.sum(summed_NT) / jnp.maximum(denom, 1.0)


def _check_clip_params(eps_low, eps_high, delta) -> None:
    lo, hi = _concrete_float(eps_low), _concrete_float(eps_high)
    if lo is not None and not lo >= 0.0:  # >= 1 is allowed: it switches the lower clip off
        raise ValueError(f"grpo_loss: epsilon must be >= 0, got {eps_low}")
    if hi is not None and not hi >= 0.0:
        raise ValueError(f"grpo_loss: epsilon_high must be >= 0, got {eps_high}")
    d = None if delta is None else _concrete_float(delta)
    if d is not None and not d > 1.0:
        raise ValueError(f"grpo_loss: delta caps the ratio from above and must be > 1 (use > 1 + epsilon_high), "
                         f"got {delta}")


def grpo_loss(
    logp_NT: Array,
    old_logp_NT: Array | None,
    ref_logp_NT: Array | None,
    advantages_N: Array,
    mask_NT: Array,
    *,
    loss_type: str = "dapo",
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    delta: float | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    importance_sampling_level: str = "token",
    max_completion_length: int | None = None,
    num_items: Array | float | None = None,
    token_weights_NT: Array | None = None,
    use_bias_correction_kl: bool = False,
) -> tuple[Array, GRPOAux]:
    """Clipped GRPO policy loss with optional KL penalty (DeepSeekMath eq. 3; TRL ``GRPOTrainer``).

    Per active token (i, t), with advantage ``A_i`` broadcast over the tokens of completion i:
      - token-level ratio ``ρ_it = exp(logp_it - old_logp_it)``; sequence level (GSPO)
        ``ρ_i = exp(Σ_t m_it (logp_it - old_logp_it) / max(n_i, 1))`` broadcast over tokens,
      - ``ℓ_it = -min(ρ̃ A_i, clip(ρ, 1 - ε_low, 1 + ε_high) A_i) + β · KL_it`` where
        ``ρ̃ = min(ρ, delta)`` if ``delta`` is set (TRL's two-sided GRPO cap, use ``delta > 1 + ε_high``)
        else ``ρ``, and KL_it is ``kl_penalty(logp_NT, ref_logp_NT, kl_estimator)``,
      - with ``use_bias_correction_kl`` (TRL 1.16's option of that name, DeepSeek-V3.2 arXiv 2512.02556)
        the KL term is ``ρ · KL_it`` with the unclipped, uncapped ratio ρ (the sequence weight under GSPO),
        ρ differentiated: an unbiased estimate of the KL under π_θ when the tokens come from π_old. It
        changes the gradient even on-policy, where ρ = 1 but ``∂ρ/∂logp = ρ``,
      - reduced by :func:`aggregate_token_loss` according to ``loss_type``.

    Gradients: ``advantages_N``, ``old_logp_NT`` and ``ref_logp_NT`` are wrapped in ``stop_gradient``; only
    ``logp_NT`` is differentiated. ``old_logp_NT=None`` means on-policy (μ = 1): ``old_logp_NT =
    stop_gradient(logp_NT)``, so ρ = 1 and the clip is inactive. Masked tokens are removed with ``where``
    before any arithmetic, so fully-masked rows give a finite loss and finite (zero) gradients.

    Args:
      logp_NT: ``[N, T]`` policy log-probs of the sampled completion tokens (N = B·G completions).
      old_logp_NT: ``[N, T]`` log-probs of the policy that sampled them, or None (on-policy).
      ref_logp_NT: ``[N, T]`` frozen reference log-probs; may be None only when ``beta == 0``.
      advantages_N: ``[N]`` per-completion advantages (e.g. ``group_advantages(...).reshape(-1)``).
      mask_NT: ``[N, T]`` completion mask (bool or 0/1).
      loss_type: ``"grpo" | "bnpo" | "dr_grpo" | "dapo"`` (see :func:`aggregate_token_loss`).
      epsilon: lower clip ε; ``epsilon_high`` defaults to it (DAPO clip-higher uses e.g. 0.28).
      delta: optional upper cap on ρ in the unclipped term.
      beta: KL coefficient β.
      kl_estimator: ``"k1" | "k2" | "k3"``.
      importance_sampling_level: ``"token"`` or ``"sequence"`` (GSPO).
      max_completion_length: ``L_max`` for ``dr_grpo`` (default T).
      num_items: active tokens of the whole optimizer step for ``dapo`` (default ``Σ mask_NT``).
      token_weights_NT: optional ``[N, T]`` weights ``w_it`` multiplying every per-token loss ``ℓ_it`` (KL term
        included) before aggregation, stop-gradiented: e.g. the truncated importance-sampling correction
        ``min(π_old / π_sampler, cap)`` of TRL's ``vllm_importance_sampling_correction``.
      use_bias_correction_kl: multiply each token's KL by the differentiated ratio ρ (above); ``aux.kl`` is
        then the mean of ``ρ · KL_it`` (as TRL logs it).

    Returns:
      ``(loss, aux)``: scalar float32 loss and :class:`GRPOAux`.
    """
    _choice("loss_type", loss_type, GRPO_LOSS_TYPES)
    _choice("kl_estimator", kl_estimator, KL_ESTIMATORS)
    _choice("importance_sampling_level", importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
    beta_value = _concrete_float(beta)
    if ref_logp_NT is None and (beta_value is None or beta_value != 0.0):
        raise ValueError(f"grpo_loss: ref_logp_NT is None but beta={beta!r}; pass ref_logp_NT or set beta=0")
    chex.assert_rank([logp_NT, mask_NT, advantages_N], [2, 2, 1])
    chex.assert_equal_shape([logp_NT, mask_NT])
    chex.assert_equal_shape_prefix([logp_NT, advantages_N], 1)
    if old_logp_NT is not None:
        chex.assert_equal_shape([logp_NT, old_logp_NT])
    if ref_logp_NT is not None:
        chex.assert_equal_shape([logp_NT, ref_logp_NT])
    eps_low = epsilon
    eps_high = epsilon if epsilon_high is None else epsilon_high
    _check_clip_params(eps_low, eps_high, delta)

    m = mask_NT.astype(jnp.float32)
    active = m != 0
    logp_NT = jnp.where(active, logp_NT.astype(jnp.float32), 0.0)
    old = jax.lax.stop_gradient(logp_NT if old_logp_NT is None else jnp.where(active, old_logp_NT, 0.0))
    adv_N1 = jax.lax.stop_gradient(advantages_N.astype(jnp.float32))[:, None]

    log_ratio_NT = logp_NT - old.astype(jnp.float32)  # exactly 0 where masked
    if importance_sampling_level == "sequence":
        n_N = jnp.maximum(jnp.sum(m, axis=1), 1.0)
        log_w_N1 = (jnp.sum(log_ratio_NT * m, axis=1) / n_N)[:, None]
        log_ratio_NT = jnp.broadcast_to(log_w_N1, logp_NT.shape)
    ratio_NT = jnp.exp(log_ratio_NT)
    clipped_NT = jnp.clip(ratio_NT, 1.0 - eps_low, 1.0 + eps_high)
    capped_NT = ratio_NT if delta is None else jnp.minimum(ratio_NT, delta)
    pg_NT = -jnp.minimum(capped_NT * adv_N1, clipped_NT * adv_N1)

    agg = dict(loss_type=loss_type, max_completion_length=max_completion_length, num_items=num_items)
    if token_weights_NT is not None:
        chex.assert_equal_shape([logp_NT, token_weights_NT])
        w_NT = jax.lax.stop_gradient(jnp.where(active, token_weights_NT.astype(jnp.float32), 0.0))
    else:
        w_NT = None
    weigh = (lambda x: x) if w_NT is None else (lambda x: x * w_NT)  # noqa: E731
    policy_loss = aggregate_token_loss(weigh(pg_NT), m, **agg)
    if ref_logp_NT is not None:
        ref = jax.lax.stop_gradient(jnp.where(active, ref_logp_NT.astype(jnp.float32), 0.0))
        kl_NT = kl_penalty(logp_NT, ref, kl_estimator)
        if use_bias_correction_kl:
            kl_NT = kl_NT * ratio_NT
        kl_loss = aggregate_token_loss(weigh(kl_NT), m, **agg)
        kl = masked_mean(kl_NT, m)
    else:
        kl_loss = kl = jnp.zeros((), jnp.float32)
    loss = policy_loss + beta * kl_loss if (beta_value is None or beta_value != 0.0) else policy_loss

    low_NT = (ratio_NT < 1.0 - eps_low) & (adv_N1 < 0)
    high_NT = (ratio_NT > 1.0 + eps_high) & (adv_N1 > 0)
    aux = GRPOAux(
        policy_loss=policy_loss,
        kl_loss=kl_loss,
        kl=kl,
        clip_ratio_low_mean=masked_mean(low_NT.astype(jnp.float32), m),
        clip_ratio_high_mean=masked_mean(high_NT.astype(jnp.float32), m),
        clip_ratio_region_mean=masked_mean((low_NT | high_NT).astype(jnp.float32), m),
        ratio_mean=masked_mean(ratio_NT, m),
        num_tokens=jnp.sum(m),
    )
    return loss, aux
