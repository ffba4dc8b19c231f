"""Reward-model losses: masked multi-label regression, pairwise Bradley–Terry, and the label affine map.

The multi-label reward model of arXiv 2503.21819 predicts R aspect scores per (prompt, response) and is
trained by regression on the labelled aspects (``ALGORITHMS.md`` §1.1). Users with only preference pairs
use the Bradley–Terry loss (Ouyang et al., InstructGPT, arXiv 2203.02155, eq. 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from grpojax.types import Array


class RegressionAux(NamedTuple):
    """Diagnostics of :func:`reward_regression_loss`.

    Attributes:
      mse_R: per-aspect (unweighted) MSE over the labelled rows, 0 for an aspect with no label.
      count_R: number of labelled rows per aspect.
      num_labels: total number of labelled entries.
    """

    mse_R: Array
    count_R: Array
    num_labels: Array


def _aspect_weights(n_aspects: int, aspect_weights) -> Array:
    if aspect_weights is None:
        return jnp.ones((n_aspects,), jnp.float32)
    w_R = jnp.asarray(aspect_weights, jnp.float32)
    if w_R.shape != (n_aspects,):
        raise ValueError(f"aspect_weights must have shape ({n_aspects},), got {w_R.shape}")
    return w_R


def _labelled(labels_BR: Array, label_mask_BR: Array) -> Array:
    """Bool ``[B, R]``: the mask is set AND the label is finite."""
    return (label_mask_BR.astype(jnp.float32) != 0) & jnp.isfinite(labels_BR.astype(jnp.float32))


def regression_weight(labels_BR: Array, label_mask_BR: Array,
                      aspect_weights_R: Array | Sequence[float] | None = None) -> Array:
    """``Σ_{b,r} w_r m_br``: the normaliser of :func:`reward_regression_loss` over these rows. Computed on
    a whole optimizer step's rows and passed as ``num_items`` to every micro-batch's loss, the summed
    micro-batch losses (and gradients) equal the full-batch ones whatever the split."""
    chex.assert_equal_shape([labels_BR, label_mask_BR])
    w_R = _aspect_weights(labels_BR.shape[1], aspect_weights_R)
    return jnp.sum(_labelled(labels_BR, label_mask_BR).astype(jnp.float32) * w_R[None, :])


def reward_regression_loss(
    scores_BR: Array,
    labels_BR: Array,
    label_mask_BR: Array,
    aspect_weights_R: Array | Sequence[float] | None = None,
    num_items: Array | float | None = None,
) -> tuple[Array, RegressionAux]:
    """Masked, aspect-weighted multi-label MSE.

    ``L = Σ_{b,r} w_r m_br (s_br - y_br)² / max(N, tiny)`` with ``N = Σ_{b,r} w_r m_br`` of these rows, or
    ``num_items`` when given (0 when nothing is labelled). Gradient accumulation passes the whole step's
    :func:`regression_weight` as ``num_items``, so micro-batches with unevenly missing labels add up to
    exactly the full-batch loss (as the ``dapo`` GRPO loss and SFT do).

    A missing label is NaN in the data with ``m_br = 0``; an entry counts only if its mask is set AND its
    label is finite, and the residual is formed with ``where`` before squaring, so NaN labels never
    poison the loss or the gradient.

    Args:
      scores_BR: ``[B, R]`` predicted scores.
      labels_BR: ``[B, R]`` targets (NaN = missing).
      label_mask_BR: ``[B, R]`` bool / 0-1 mask of labelled entries.
      aspect_weights_R: optional ``[R]`` non-negative per-aspect weights ``w_r`` (default all 1).
      num_items: optional normaliser ``N`` (scalar, may be traced): the whole step's weighted label count.

    Returns:
      ``(loss, aux)``: scalar float32 loss and :class:`RegressionAux` (of these rows).
    """
    chex.assert_rank([scores_BR, labels_BR, label_mask_BR], 2)
    chex.assert_equal_shape([scores_BR, labels_BR, label_mask_BR])
    w_R = _aspect_weights(scores_BR.shape[1], aspect_weights_R)
    y = labels_BR.astype(jnp.float32)
    m_BR = _labelled(labels_BR, label_mask_BR)
    resid_BR = jnp.where(m_BR, scores_BR.astype(jnp.float32) - jnp.where(m_BR, y, 0.0), 0.0)
    sq_BR = jnp.square(resid_BR)
    mf_BR = m_BR.astype(jnp.float32)
    weight_BR = mf_BR * w_R[None, :]
    denom = jnp.sum(weight_BR) if num_items is None else jnp.asarray(num_items, jnp.float32)
    loss = jnp.sum(weight_BR * sq_BR) / jnp.maximum(denom, jnp.finfo(jnp.float32).tiny)
    count_R = jnp.sum(mf_BR, axis=0)
    mse_R = jnp.sum(mf_BR * sq_BR, axis=0) / jnp.maximum(count_R, 1.0)
    return loss, RegressionAux(mse_R=mse_R, count_R=count_R, num_labels=jnp.sum(count_R))


class BradleyTerryAux(NamedTuple):
    """Diagnostics of :func:`bradley_terry_loss`: ``accuracy`` = fraction of pairs with r_w > r_l,
    ``margin_mean`` = mean of ``r_w - r_l``, ``num_pairs`` = active pairs."""

    accuracy: Array
    margin_mean: Array
    num_pairs: Array


def bradley_terry_loss(
    chosen_reward_B: Array,
    rejected_reward_B: Array,
    margin: Array | float | None = None,
    mask_B: Array | None = None,
) -> tuple[Array, BradleyTerryAux]:
    """Pairwise Bradley–Terry reward loss ``mean_b -log σ(r_w - r_l - margin_b)`` (stable log-sigmoid).

    Args:
      chosen_reward_B: ``[B]`` rewards of the preferred responses.
      rejected_reward_B: ``[B]`` rewards of the rejected responses.
      margin: optional scalar or ``[B]`` margin (Llama-2 style preference-strength margin).
      mask_B: optional ``[B]`` bool / 0-1 mask of valid pairs (default all valid).

    Returns:
      ``(loss, aux)``: scalar float32 loss and :class:`BradleyTerryAux`.
    """
    chex.assert_rank([chosen_reward_B, rejected_reward_B], 1)
    chex.assert_equal_shape([chosen_reward_B, rejected_reward_B])
    diff_B = chosen_reward_B.astype(jnp.float32) - rejected_reward_B.astype(jnp.float32)
    z_B = diff_B
    if margin is not None:
        margin = jnp.asarray(margin, jnp.float32)
        if margin.ndim not in (0, 1) or (margin.ndim == 1 and margin.shape != diff_B.shape):
            raise ValueError(f"margin must be a scalar or shape {diff_B.shape}, got {margin.shape}")
        z_B = diff_B - margin
    m_B = jnp.ones_like(diff_B) if mask_B is None else mask_B.astype(jnp.float32)
    chex.assert_equal_shape([m_B, diff_B])
    active = m_B != 0
    nll_B = jnp.where(active, -jax.nn.log_sigmoid(jnp.where(active, z_B, 0.0)), 0.0)
    n = jnp.maximum(jnp.sum(m_B), 1.0)
    loss = jnp.sum(m_B * nll_B) / n
    aux = BradleyTerryAux(
        accuracy=jnp.sum(jnp.where(active & (diff_B > 0), m_B, 0.0)) / n,
        margin_mean=jnp.sum(jnp.where(active, m_B * diff_B, 0.0)) / n,
        num_pairs=jnp.sum(m_B),
    )
    return loss, aux


class LabelAffine(NamedTuple):
    """The declared per-aspect affine map between raw labels and model targets, stored with the model.

    ``target = label · scale_R + shift_R``; ``label = (target - shift_R) / scale_R``. Use
    :func:`label_affine_from_range` to map a known label range ``[low, high]`` onto ``[0, 1]``.
    NaN (missing) labels stay NaN through both directions.
    """

    scale_R: Array
    shift_R: Array

    def _lead(self, x: Array) -> tuple[Array, Array]:
        x = jnp.asarray(x)
        n = self.scale_R.shape[-1]
        if x.ndim < 1 or n not in (1, x.shape[-1]):
            raise ValueError(f"LabelAffine: expected [..., {n}] values, got shape {x.shape}")
        lead = (1,) * (x.ndim - 1)
        return self.scale_R.reshape(lead + self.scale_R.shape), self.shift_R.reshape(lead + self.shift_R.shape)

    def apply(self, labels: Array) -> Array:
        """Raw labels ``[..., R]`` -> model targets."""
        scale, shift = self._lead(labels)
        return labels * scale + shift

    def invert(self, targets: Array) -> Array:
        """Model scores ``[..., R]`` -> the raw label scale."""
        scale, shift = self._lead(targets)
        return (targets - shift) / scale

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-friendly form (for saving next to the reward-model weights)."""
        return {"scale": np.asarray(self.scale_R).tolist(), "shift": np.asarray(self.shift_R).tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> LabelAffine:
        missing = {"scale", "shift"} - set(d)
        if missing:
            raise KeyError(f"LabelAffine.from_dict: missing key(s) {sorted(missing)}; got keys {sorted(d)}")
        return make_label_affine(d["scale"], d["shift"])


def make_label_affine(scale_R: Sequence[float] | Array | float, shift_R: Sequence[float] | Array | float
                      ) -> LabelAffine:
    """Validated :class:`LabelAffine` (float32 ``[R]`` arrays, every scale finite and non-zero).

    ``scale_R`` / ``shift_R`` are scalars or ``[R]``; a scalar pair (the config's
    ``label_affine: [scale, shift]``) gives a size-1 map that applies the same transform to every aspect.
    """
    scale = np.asarray(scale_R, np.float32).reshape(-1)
    shift = np.asarray(shift_R, np.float32).reshape(-1)
    if scale.shape != shift.shape and 1 not in (scale.size, shift.size):
        raise ValueError(f"LabelAffine: scale has shape {scale.shape} but shift has {shift.shape}")
    scale, shift = np.broadcast_arrays(scale, shift)
    bad = np.flatnonzero(~np.isfinite(scale) | (scale == 0) | ~np.isfinite(shift))
    if bad.size:
        raise ValueError(f"LabelAffine: scale must be finite and non-zero and shift finite; bad aspect(s) "
                         f"{bad.tolist()} (scale={scale.tolist()}, shift={shift.tolist()})")
    return LabelAffine(jnp.asarray(scale), jnp.asarray(shift))


def label_affine_from_range(low_R: Sequence[float] | float, high_R: Sequence[float] | float) -> LabelAffine:
    """Affine map sending ``low -> 0`` and ``high -> 1`` per aspect: scale = 1/(high-low), shift = -low·scale.

    ``low_R`` / ``high_R`` are scalars or ``[R]`` (a scalar is shared by every aspect).
    """
    low, high = np.broadcast_arrays(np.atleast_1d(np.asarray(low_R, np.float64)),
                                    np.atleast_1d(np.asarray(high_R, np.float64)))
    bad = np.flatnonzero(~(high > low))
    if bad.size:
        raise ValueError(f"label_affine_from_range: need high > low for every aspect; bad aspect(s) "
                         f"{bad.tolist()} (low={low.tolist()}, high={high.tolist()})")
    scale = 1.0 / (high - low)
    return make_label_affine(scale, -low * scale)
