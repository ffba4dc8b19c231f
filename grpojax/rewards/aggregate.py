"""Combine R aspect scores into one scalar reward per completion (``ALGORITHMS.md`` §1.2).

All functions are pure functions of ``scores[..., R]`` (usually ``scores_BGR``: B prompts × G completions
× R aspects from the multi-label reward model of arXiv 2503.21819).

NaN contract (shared with :func:`grpojax.losses.group_advantages`):
  - a NaN aspect score means "not applicable" for that completion: it is skipped (it contributes nothing
    to a sum, a min or a soft-min, and is left out of every statistic);
  - a completion with NO valid aspect gets a NaN reward; ``group_advantages`` excludes NaN rewards from
    the group statistics and gives them advantage exactly 0, so such completions produce no gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp

from grpojax.losses.grpo import group_advantages, group_reward_stats
from grpojax.types import Array


def _weights(weights, n_aspects: int) -> Array:
    if weights is None:
        return jnp.ones((n_aspects,), jnp.float32)
    w_R = jnp.asarray(weights, jnp.float32)
    if w_R.shape != (n_aspects,):
        raise ValueError(f"reward weights must have shape ({n_aspects},) (one per aspect), got {w_R.shape}")
    return w_R


def _per_aspect(value, n_aspects: int, name: str) -> Array:
    v = jnp.asarray(value, jnp.float32)
    if v.ndim == 0:
        return jnp.broadcast_to(v, (n_aspects,))
    if v.shape != (n_aspects,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_aspects},), got {v.shape}")
    return v


def _lead(v_R: Array, ndim: int) -> Array:
    """Reshape a per-aspect ``[R]`` vector to ``[1, ..., 1, R]`` (explicit broadcasting, rank ``ndim``)."""
    return v_R.reshape((1,) * (ndim - 1) + v_R.shape)


def _check_scores(scores: Array, name: str) -> None:
    if scores.ndim < 1 or scores.shape[-1] == 0:
        raise ValueError(f"{name}: scores must be [..., R] with R >= 1 aspects, got shape {scores.shape}")


def weighted_sum(scores: Array, weights: Array | Sequence[float] | None = None, *,
                 renormalize: bool = False) -> Array:
    """``reward = Σ_{r valid} w_r s_r`` (the multi-objective GRPO paper's aggregation).

    NaN aspects are skipped; a row with no valid aspect gives NaN (see the module NaN contract). With
    ``renormalize=True`` the sum is rescaled by ``Σ_r w_r / Σ_{r valid} w_r`` so that a missing aspect
    does not shrink the reward's scale.

    Args:
      scores: ``[..., R]`` aspect scores.
      weights: ``[R]`` weights ``w_r`` (default all 1; TRL's ``reward_weights``).
      renormalize: rescale by the weight mass of the valid aspects.

    Returns:
      ``[...]`` float32 rewards.
    """
    _check_scores(scores, "weighted_sum")
    s = scores.astype(jnp.float32)
    w = _lead(_weights(weights, s.shape[-1]), s.ndim)
    valid = ~jnp.isnan(s)
    total = jnp.sum(jnp.where(valid, s, 0.0) * w, axis=-1)
    if renormalize:
        w_valid = jnp.sum(jnp.where(valid, w, 0.0), axis=-1)
        total = total * jnp.sum(w) / jnp.where(w_valid != 0, w_valid, 1.0)
    return jnp.where(jnp.any(valid, axis=-1), total, jnp.nan)


def normalize_then_sum(scores_BGR: Array, weights: Array | Sequence[float] | None = None, *,
                       eps: float = 1e-4) -> Array:
    """GDPO (group reward-decoupled normalisation, arXiv 2601.05242).

    1. per aspect r, z-score inside each group: ``z_bgr = (s_bgr - μ_br) / (σ_br + eps)`` with the same
       conventions as ``group_advantages(scale="group")`` (Bessel std, NaN excluded, a zero-std group -> 0);
    2. ``x_bg = Σ_{r valid} w_r z_bgr`` (NaN if no valid aspect);
    3. z-score over the whole batch: ``(x_bg - mean(x)) / (std(x) + eps)`` over the valid entries.

    The result IS GDPO's advantage (ALGORITHMS.md 1.2; TRL ``multi_objective_aggregation="normalize_then_sum"``):
    ``grpojax.rollout.reward_math`` uses it as is, with no group re-scaling on top.

    Args:
      scores_BGR: ``[B, G, R]`` aspect scores.
      weights: ``[R]`` aspect weights (default all 1).
      eps: std guard of both normalisations.

    Returns:
      ``[B, G]`` float32 rewards (NaN where a completion has no valid aspect).
    """
    chex.assert_rank(scores_BGR, 3)
    s = scores_BGR.astype(jnp.float32)
    valid_BGR = ~jnp.isnan(s)
    z_RBG = jax.vmap(lambda s_BG: group_advantages(s_BG, scale="group", eps=eps))(jnp.moveaxis(s, -1, 0))
    z_BGR = jnp.where(valid_BGR, jnp.moveaxis(z_RBG, 0, -1), jnp.nan)
    x_BG = weighted_sum(z_BGR, weights)
    valid_BG = ~jnp.isnan(x_BG)
    n = jnp.sum(valid_BG).astype(jnp.float32)
    mean = jnp.sum(jnp.where(valid_BG, x_BG, 0.0)) / jnp.maximum(n, 1.0)
    dev_BG = jnp.where(valid_BG, x_BG - mean, 0.0)
    var = jnp.sum(jnp.square(dev_BG)) / jnp.maximum(n - 1.0, 1.0)
    std = jnp.sqrt(var)
    return jnp.where(valid_BG, dev_BG / (std + eps), jnp.nan)


def min_aspect(scores: Array) -> Array:
    """Worst-aspect reward ``min_{r valid} s_r``; NaN if no aspect is valid.

    Args:
      scores: ``[..., R]``.

    Returns:
      ``[...]`` float32.
    """
    _check_scores(scores, "min_aspect")
    s = scores.astype(jnp.float32)
    valid = ~jnp.isnan(s)
    low = jnp.min(jnp.where(valid, s, jnp.inf), axis=-1)
    return jnp.where(jnp.any(valid, axis=-1), low, jnp.nan)


def soft_min(scores: Array, temperature: float = 1.0) -> Array:
    """Smooth worst-aspect reward ``-τ log( (1/n) Σ_{r valid} exp(-s_r / τ) )`` (n valid aspects).

    This log-mean-exp form lies between ``min`` (τ -> 0) and the mean of the valid aspects (τ -> ∞).
    NaN if no aspect is valid.

    Args:
      scores: ``[..., R]``.
      temperature: τ > 0.

    Returns:
      ``[...]`` float32.
    """
    _check_scores(scores, "soft_min")
    try:
        if not float(temperature) > 0:
            raise ValueError(f"soft_min: temperature must be > 0, got {temperature}")
    except (TypeError, jax.errors.ConcretizationTypeError):
        pass
    s = scores.astype(jnp.float32)
    valid = ~jnp.isnan(s)
    n = jnp.sum(valid, axis=-1).astype(jnp.float32)
    a = jnp.where(valid, -s / temperature, -jnp.inf)
    lme = jax.nn.logsumexp(a, axis=-1) - jnp.log(jnp.maximum(n, 1.0))
    return jnp.where(n > 0, -temperature * lme, jnp.nan)


def clip(scores: Array, low: Array | float | None = None, high: Array | float | None = None) -> Array:
    """Per-aspect clipping ``min(max(s_r, low_r), high_r)``; ``low`` / ``high`` scalar or ``[R]``.

    NaN ("not applicable") stays NaN. ``scores`` is ``[..., R]``; returns float32 of the same shape.
    """
    _check_scores(scores, "clip")
    n_aspects = scores.shape[-1]
    s = scores.astype(jnp.float32)
    if low is not None:
        s = jnp.where(jnp.isnan(s), s, jnp.maximum(s, _lead(_per_aspect(low, n_aspects, "clip low"), s.ndim)))
    if high is not None:
        s = jnp.where(jnp.isnan(s), s, jnp.minimum(s, _lead(_per_aspect(high, n_aspects, "clip high"), s.ndim)))
    return s


def affine(scores: Array, scale: Array | float = 1.0, shift: Array | float = 0.0) -> Array:
    """Per-aspect affine transform ``s_r · scale_r + shift_r``; ``scale`` / ``shift`` scalar or ``[R]``."""
    _check_scores(scores, "affine")
    n_aspects = scores.shape[-1]
    nd = scores.ndim
    return (scores.astype(jnp.float32) * _lead(_per_aspect(scale, n_aspects, "affine scale"), nd)
            + _lead(_per_aspect(shift, n_aspects, "affine shift"), nd))


AGGREGATORS: dict[str, Callable[..., Array]] = {
    "weighted_sum": weighted_sum,
    "normalize_then_sum": normalize_then_sum,
    "min": min_aspect,
    "soft_min": soft_min,
}


def aggregate(name: str, scores: Array, **kwargs) -> Array:
    """Dispatch to an aggregator by name (``weighted_sum``, ``normalize_then_sum``, ``min``, ``soft_min``).

    Example (one prompt, two completions, four aspects -> ``[B, G]``):
      >>> import jax.numpy as jnp
      >>> scores_BGR = jnp.array([[[1.0, 0.5, 0.0, 1.0], [0.0, 1.0, 1.0, 0.5]]])
      >>> aggregate("weighted_sum", scores_BGR, weights=[1.0, 1.0, 0.5, 2.0])
      Array([[3.5, 2.5]], dtype=float32)
    """
    if name not in AGGREGATORS:
        raise ValueError(f"unknown reward aggregation {name!r}; valid choices: {', '.join(AGGREGATORS)}")
    return AGGREGATORS[name](scores, **kwargs)


def aspect_stats(scores_BGR: Array, aspect_names: Sequence[str]) -> dict[str, Array]:
    """Per-aspect logging statistics with TRL-style keys (NaN scores excluded everywhere).

    For each aspect ``a`` (index r):
      - ``rewards/<a>/mean``: mean of the valid scores over the batch,
      - ``rewards/<a>/std``: their Bessel-corrected std (as TRL's ``nanstd``),
      - ``rewards/<a>/frac_zero_std``: fraction of groups whose valid scores of aspect r are all equal,
      - ``rewards/<a>/frac_nan``: fraction of completions where the aspect is not applicable.

    Args:
      scores_BGR: ``[B, G, R]``.
      aspect_names: R names.

    Returns:
      dict of float32 scalars (jit-friendly: names are static).
    """
    chex.assert_rank(scores_BGR, 3)
    names = list(aspect_names)
    if len(names) != scores_BGR.shape[-1]:
        raise ValueError(f"aspect_stats: got {len(names)} aspect names {names} for "
                         f"{scores_BGR.shape[-1]} aspects (scores shape {scores_BGR.shape})")
    if len(set(names)) != len(names):
        raise ValueError(f"aspect_stats: aspect names must be unique, got {names}")
    out: dict[str, Array] = {}
    for r, name in enumerate(names):
        s_BG = scores_BGR[..., r].astype(jnp.float32)
        valid = ~jnp.isnan(s_BG)
        n = jnp.sum(valid).astype(jnp.float32)
        mean = jnp.sum(jnp.where(valid, s_BG, 0.0)) / jnp.maximum(n, 1.0)
        var = jnp.sum(jnp.where(valid, jnp.square(s_BG - mean), 0.0)) / jnp.maximum(n - 1.0, 1.0)
        out[f"rewards/{name}/mean"] = mean
        out[f"rewards/{name}/std"] = jnp.sqrt(var)
        out[f"rewards/{name}/frac_zero_std"] = group_reward_stats(s_BG).frac_reward_zero_std
        out[f"rewards/{name}/frac_nan"] = 1.0 - n / s_BG.size
    return out
