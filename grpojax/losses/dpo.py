"""Pairwise preference losses: DPO (sigmoid), conservative DPO (label smoothing), IPO and hinge.

All functions are pure functions of arrays. Sequence log-probabilities are computed first with
:func:`sequence_logprob` (a **sum** over response tokens by default, as in the official GR-DPO code, or a
length average), then the per-pair loss is a function of the implicit reward margin

    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))

References:
  * DPO:  Rafailov et al. 2023, "Direct Preference Optimization", arXiv 2305.18290, eq. 7.
  * cDPO: Mitchell 2023, "A note on DPO with noisy preferences" (label smoothing eps).
  * IPO:  Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
          Preferences", arXiv 2310.12036, eq. 17.
  * hinge (SLiC): Zhao et al. 2023, arXiv 2305.10425.

Shape key (``grpojax/types.py``): P preference pairs, B sequences, T tokens.
The reference log-probs always receive ``stop_gradient``: the reference policy is frozen.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from grpojax.losses.common import DPO_LOSS_TYPES
from grpojax.types import Array


def sequence_logprob(logp_BT: Array, mask_BT: Array, *, average: bool = False) -> Array:
    """Log-probability of each response: masked sum (or mean) of its token log-probs.

    ``logp_B = sum_t m_bt logp_bt`` (``average=False``, the GR-DPO / DPO convention) or
    ``sum_t m_bt logp_bt / max(sum_t m_bt, 1)`` (``average=True``, length-normalised).

    Args:
      logp_BT: [B, T] per-token log-probs of the sampled/labelled tokens (float).
      mask_BT: [B, T] 1 for response tokens, 0 for prompt and padding (bool or float).
      average: divide by the number of response tokens (a row with no token gives 0).

    Returns:
      [B] sequence log-probs, float32 or wider (the dtype of ``logp_BT`` promoted with float32).

    >>> sequence_logprob(jnp.array([[-1.0, -2.0, -5.0]]), jnp.array([[1, 1, 0]]))
    Array([-3.], dtype=float32)
    """
    chex.assert_rank([logp_BT, mask_BT], 2)
    chex.assert_equal_shape([logp_BT, mask_BT])
    dtype = jnp.promote_types(logp_BT.dtype, jnp.float32)
    mask_BT = mask_BT.astype(dtype)
    # where() keeps -inf log-probs of padded positions from turning into NaN via 0 * -inf.
    total_B = jnp.sum(jnp.where(mask_BT > 0, logp_BT.astype(dtype), 0.0) * mask_BT, axis=-1)
    if average:
        return total_B / jnp.maximum(jnp.sum(mask_BT, axis=-1), 1.0)
    return total_B


def _check_pairs(*arrays: Array) -> None:
    chex.assert_rank(list(arrays), 1)
    chex.assert_equal_shape(list(arrays))


def _check_positive(name: str, value) -> None:
    if isinstance(value, numbers.Real) and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def preference_margin(
    policy_chosen_logp_P: Array,
    policy_rejected_logp_P: Array,
    ref_chosen_logp_P: Array,
    ref_rejected_logp_P: Array,
) -> Array:
    """``h_P = (pi_w - ref_w) - (pi_l - ref_l)`` with ``stop_gradient`` on the reference terms.

    All arguments are [P] sequence log-probs; returns [P].
    """
    _check_pairs(policy_chosen_logp_P, policy_rejected_logp_P, ref_chosen_logp_P, ref_rejected_logp_P)
    ref_w = jax.lax.stop_gradient(ref_chosen_logp_P)
    ref_l = jax.lax.stop_gradient(ref_rejected_logp_P)
    return (policy_chosen_logp_P - ref_w) - (policy_rejected_logp_P - ref_l)


def dpo_loss(
    policy_chosen_logp_P: Array,
    policy_rejected_logp_P: Array,
    ref_chosen_logp_P: Array,
    ref_rejected_logp_P: Array,
    *,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> Array:
    """Unreduced per-pair preference loss (DPO / cDPO / IPO / hinge).

    With ``h = (pi_w - ref_w) - (pi_l - ref_l)`` (sequence log-probs, reference stop-gradiented):

    * ``"sigmoid"`` (DPO, cDPO): ``-(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``,
      computed with the stable ``jax.nn.log_sigmoid``; ``eps = label_smoothing`` (0 = plain DPO).
    * ``"ipo"``: ``(h - 1 / (2 beta))^2``.
    * ``"hinge"``: ``max(0, 1 - beta h)``.

    Args:
      policy_chosen_logp_P: [P] log pi_theta(y_w | x).
      policy_rejected_logp_P: [P] log pi_theta(y_l | x).
      ref_chosen_logp_P: [P] log pi_ref(y_w | x) (no gradient flows into it).
      ref_rejected_logp_P: [P] log pi_ref(y_l | x) (no gradient flows into it).
      beta: inverse temperature / KL strength (> 0); may be a traced scalar.
      loss_type: one of ``"sigmoid"``, ``"ipo"``, ``"hinge"``.
      label_smoothing: cDPO probability ``eps in [0, 0.5)`` that a label is flipped (sigmoid only).

    Returns:
      [P] per-pair losses; reduce them yourself (mean, or the group-robust weights of
      :mod:`grpojax.losses.robust`).

    >>> z = jnp.zeros(1)
    >>> dpo_loss(z, z, z, z, beta=0.1)   # h = 0: -log(1/2)
    Array([0.6931472], dtype=float32)
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    _check_positive("beta", beta)
    if isinstance(label_smoothing, numbers.Real) and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    if loss_type != "sigmoid" and not (
        isinstance(label_smoothing, numbers.Real) and label_smoothing == 0.0
    ):
        raise ValueError(f"label_smoothing is only defined for loss_type='sigmoid', got {loss_type!r}")
    h_P = preference_margin(policy_chosen_logp_P, policy_rejected_logp_P, ref_chosen_logp_P, ref_rejected_logp_P)
    if loss_type == "sigmoid":
        logits_P = beta * h_P
        eps = label_smoothing
        return -(1.0 - eps) * jax.nn.log_sigmoid(logits_P) - eps * jax.nn.log_sigmoid(-logits_P)
    if loss_type == "ipo":
        return jnp.square(h_P - 1.0 / (2.0 * beta))
    return jax.nn.relu(1.0 - beta * h_P)


class PreferenceMetrics(NamedTuple):
    """Per-pair diagnostics (all [P]); average them (or per group with ``robust.group_metrics``).

    chosen_rewards: ``beta (pi_w - ref_w)``, the implicit DPO reward of the chosen response.
    rejected_rewards: ``beta (pi_l - ref_l)``.
    margins: ``chosen_rewards - rejected_rewards = beta h``.
    reward_accuracy: 1.0 where ``h > 0`` (the implicit reward ranks the pair correctly), else 0.0.
    logprob_accuracy: 1.0 where ``pi_w > pi_l`` (the policy itself prefers the chosen response).
    """

    chosen_rewards: Array
    rejected_rewards: Array
    margins: Array
    reward_accuracy: Array
    logprob_accuracy: Array


def preference_metrics(
    policy_chosen_logp_P: Array,
    policy_rejected_logp_P: Array,
    ref_chosen_logp_P: Array,
    ref_rejected_logp_P: Array,
    *,
    beta: float,
) -> PreferenceMetrics:
    """Implicit rewards ``beta (pi - ref)``, margins and the two accuracies, per pair ([P] each).

    Everything is computed under ``stop_gradient`` (these are metrics, not losses).
    """
    _check_pairs(policy_chosen_logp_P, policy_rejected_logp_P, ref_chosen_logp_P, ref_rejected_logp_P)
    _check_positive("beta", beta)
    pw, pl, rw, rl = jax.lax.stop_gradient(
        (policy_chosen_logp_P, policy_rejected_logp_P, ref_chosen_logp_P, ref_rejected_logp_P)
    )
    chosen = beta * (pw - rw)
    rejected = beta * (pl - rl)
    h_P = (pw - rw) - (pl - rl)
    dtype = jnp.promote_types(h_P.dtype, jnp.float32)
    return PreferenceMetrics(
        chosen_rewards=chosen,
        rejected_rewards=rejected,
        margins=chosen - rejected,
        reward_accuracy=(h_P > 0).astype(dtype),
        logprob_accuracy=(pw > pl).astype(dtype),
    )
