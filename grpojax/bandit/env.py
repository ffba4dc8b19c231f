"""The synthetic group bandit of Ramesh et al. 2024 (arXiv 2405.20304, section 5.1 and appendix D).

State ``x in [0, 1]^2``, 8 actions, K = 2 groups, features ``phi(x, y, g) in R^4``: for ``i in 0..3`` with
``k = i // 2``

    phi_i = (y / 8 + 1) cos(pi x_k)      if i mod 2 == g
    phi_i = sin(pi x_k) / (y / 8 + 1)    otherwise            ("swapped" features),

true reward ``r*(x, y, g) = <phi(x, y, g), theta*_g>`` with ``theta*_0 = (1, 3, 1, 3)``,
``theta*_1 = (3, 1, 3, 1)``; the learner is one log-linear policy ``pi_theta(y | x, g) ∝ exp <phi, theta>``
with a uniform reference policy.

Local shape key (this subpackage only): P pairs, Q evaluation states, A actions (8), E feature dimension
(4), X state dimension (2), M groups (2). Everything is pure JAX, so data generation vmaps over seeds.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from grpojax.types import Array, PRNGKey

NUM_ACTIONS = 8
STATE_DIM = 2
FEATURE_DIM = 4
NUM_GROUPS = 2
THETA_STAR_ME = np.array([[1.0, 3.0, 1.0, 3.0], [3.0, 1.0, 3.0, 1.0]])


class Scenario(NamedTuple):
    """uneven: group 0 compares neighbouring actions (hard), group 1 actions 4 apart (easy);
    otherwise both groups compare two distinct uniformly drawn actions. fractions: training share
    of each group (validation is always balanced)."""

    uneven: bool
    fractions: tuple


SCENARIOS = {
    "even_imbalanced": Scenario(uneven=False, fractions=(0.2, 0.8)),
    "uneven_balanced": Scenario(uneven=True, fractions=(0.5, 0.5)),
    "uneven_imbalanced": Scenario(uneven=True, fractions=(0.2, 0.8)),
}


def group_sizes(num_pairs: int, fractions) -> tuple:
    """Integer group sizes ``round(f_g N)`` (the last group takes the remainder); all must be > 0."""
    sizes = [int(round(f * num_pairs)) for f in fractions[:-1]]
    sizes.append(num_pairs - sum(sizes))
    if min(sizes) <= 0:
        raise ValueError(f"{num_pairs} pairs split by {fractions} leaves an empty group: {sizes}")
    return tuple(sizes)


def features(x_X: Array, y: Array, g: Array) -> Array:
    """``phi(x, y, g)``: [E] features of one (state [X], action, group); vmap it for batches."""
    chex.assert_shape(x_X, (STATE_DIM,))
    scale = jnp.asarray(y, x_X.dtype) / NUM_ACTIONS + 1.0
    i_E = jnp.arange(FEATURE_DIM)
    x_E = x_X[i_E // 2]
    cos_part = scale * jnp.cos(jnp.pi * x_E)
    sin_part = jnp.sin(jnp.pi * x_E) / scale
    return jnp.where(i_E % 2 == g, cos_part, sin_part)


def action_features(x_QX: Array, g_Q: Array) -> Array:
    """[Q, A, E] features of every action for each (state, group)."""
    chex.assert_rank([x_QX, g_Q], [2, 1])
    per_action = jax.vmap(features, in_axes=(None, 0, None))
    return jax.vmap(per_action, in_axes=(0, None, 0))(x_QX, jnp.arange(NUM_ACTIONS), g_Q)


def true_rewards(x_QX: Array, g_Q: Array) -> Array:
    """[Q, A] true rewards ``r*(x, y, g) = <phi(x, y, g), theta*_g>``."""
    phi_QAE = action_features(x_QX, g_Q)
    theta_QE = jnp.asarray(THETA_STAR_ME, phi_QAE.dtype)[g_Q]
    return jnp.einsum("qae,qe->qa", phi_QAE, theta_QE)


class PreferenceData(NamedTuple):
    """One data set of P preference pairs.

    x_PX: states. first_P / second_P: the two compared actions (y_1 uniform, y_2 by the group's rule).
    chosen_P / rejected_P: the action with the higher / lower true reward. group_ids_P: int group.
    chosen_feat_PE / rejected_feat_PE: ``phi(x, y_w, g)`` and ``phi(x, y_l, g)``.
    """

    x_PX: Array
    first_P: Array
    second_P: Array
    chosen_P: Array
    rejected_P: Array
    group_ids_P: Array
    chosen_feat_PE: Array
    rejected_feat_PE: Array


def make_preference_data(key: PRNGKey, sizes_M: tuple, *, uneven: bool) -> PreferenceData:
    """Draw ``sum(sizes_M)`` pairs: group g gets ``sizes_M[g]`` consecutive rows.

    ``x ~ U[0, 1]^2``, ``y_1 ~ U{0..7}``. Uneven: group 0 compares ``y_1`` with ``y_1 ± 1`` (random sign,
    reflected at the ends: 7 -> 6, 0 -> 1), group 1 with ``(y_1 + 4) mod 8``. Even: ``y_2`` is uniform
    over the 7 other actions. The winner is the action with the higher true reward (deterministic labels).
    """
    group_ids_P = jnp.asarray(np.repeat(np.arange(len(sizes_M)), sizes_M), jnp.int32)
    num_pairs = int(sum(sizes_M))
    k_x, k_y, k_other = jax.random.split(key, 3)
    # Draw in float32 / int32 in both precisions, so a float64 run sees the same data as a float32 run.
    x_PX = jax.random.uniform(k_x, (num_pairs, STATE_DIM), dtype=jnp.float32).astype(jnp.result_type(float))
    first_P = jax.random.randint(k_y, (num_pairs,), 0, NUM_ACTIONS, dtype=jnp.int32)
    if uneven:
        step_P = 2 * (jax.random.uniform(k_other, (num_pairs,), jnp.float32) < 0.5).astype(jnp.int32) - 1
        neighbour_P = first_P + step_P
        neighbour_P = jnp.where(neighbour_P >= NUM_ACTIONS, first_P - 1, neighbour_P)
        neighbour_P = jnp.where(neighbour_P < 0, first_P + 1, neighbour_P)
        far_P = (first_P + NUM_ACTIONS // 2) % NUM_ACTIONS
        second_P = jnp.where(group_ids_P == 0, neighbour_P, far_P)
    else:
        offset_P = jax.random.randint(k_other, (num_pairs,), 1, NUM_ACTIONS, dtype=jnp.int32)
        second_P = (first_P + offset_P) % NUM_ACTIONS
    reward_PA = true_rewards(x_PX, group_ids_P)
    r1_P = jnp.take_along_axis(reward_PA, first_P[:, None], axis=1)[:, 0]
    r2_P = jnp.take_along_axis(reward_PA, second_P[:, None], axis=1)[:, 0]
    first_wins_P = r1_P > r2_P
    chosen_P = jnp.where(first_wins_P, first_P, second_P)
    rejected_P = jnp.where(first_wins_P, second_P, first_P)
    feat = jax.vmap(features)
    return PreferenceData(
        x_PX=x_PX,
        first_P=first_P,
        second_P=second_P,
        chosen_P=chosen_P,
        rejected_P=rejected_P,
        group_ids_P=group_ids_P,
        chosen_feat_PE=feat(x_PX, chosen_P, group_ids_P),
        rejected_feat_PE=feat(x_PX, rejected_P, group_ids_P),
    )


def test_tables(x_QX: Array) -> tuple:
    """``(feat_MQAE, reward_MQA)``: features and true rewards of every action at the Q test states, for
    each group; precomputed once so that evaluating a policy is a matmul."""
    chex.assert_rank(x_QX, 2)
    g_MQ = jnp.broadcast_to(jnp.arange(NUM_GROUPS)[:, None], (NUM_GROUPS, x_QX.shape[0]))
    feat_MQAE = jax.vmap(action_features, in_axes=(None, 0))(x_QX, g_MQ)
    reward_MQA = jax.vmap(true_rewards, in_axes=(None, 0))(x_QX, g_MQ)
    return feat_MQAE, reward_MQA


def reward_error_from_tables(theta_E: Array, feat_MQAE: Array, reward_MQA: Array) -> Array:
    """[M] relative reward error of the greedy policy, from :func:`test_tables` (see ``reward_error_M``)."""
    chex.assert_rank([theta_E, feat_MQAE, reward_MQA], [1, 4, 3])
    greedy_MQ = jnp.argmax(jnp.einsum("mqae,e->mqa", feat_MQAE, theta_E), axis=-1)
    best_M = jnp.mean(jnp.max(reward_MQA, axis=-1), axis=-1)
    got_M = jnp.mean(jnp.take_along_axis(reward_MQA, greedy_MQ[..., None], axis=-1)[..., 0], axis=-1)
    return (best_M - got_M) / best_M


def reward_error_M(theta_E: Array, x_QX: Array) -> Array:
    """[M] relative reward error of the greedy policy ``argmax_y <phi(x, y, g), theta>`` in each group.

    ``err_g = (E_x r*(x, y*, g) - E_x r*(x, yhat, g)) / E_x r*(x, y*, g)`` with ``y*`` the best action
    under ``theta*_g`` and the expectations the averages over the Q states (ratio of state-averaged
    rewards, as the official code evaluates group-wise rewards; ``E_x r*(x, y*, g) > 0`` here, whereas
    single-state optima can be <= 0, so the per-state ratio would be ill-defined).
    """
    chex.assert_rank([theta_E, x_QX], [1, 2])
    return reward_error_from_tables(theta_E, *test_tables(x_QX))
