"""DPO / IS-DPO / GR-DPO (gradient descent) and IPO / IS-IPO / GR-IPO (closed form) on the group bandit.

Ramesh et al. 2024 (arXiv 2405.20304), section 5.1, Algorithm 2, Table 1. With the log-linear policy and
a uniform reference, the DPO margin of a pair is linear in theta:
``h_i = log pi(y_w) - log pi(y_l) = <s_i, theta>`` with ``s_i = phi(x, y_w, g) - phi(x, y_l, g)`` (the
normaliser ``log Z(x, g)`` and the reference cancel). The losses and the group weights come from
:mod:`grpojax.losses` (``dpo_loss``, ``robust_weights(mode="full_batch")``):

* DPO family, one full-batch iteration: alpha update with the current group mean losses, then
  ``theta <- theta - lr * grad sum_g w_g L_g(theta)``, ``w = (1 - chi) mu + chi alpha``.
  DPO: chi = 0, mu_g = N_g / N. IS-DPO: chi = 0, mu_g = 1/K. GR-DPO: chi = 1 (chi in (0, 1): trade-off).
* IPO family, one iteration: alpha update with the group mean IPO losses, then the weighted least-squares
  minimiser ``theta = (S^T W S + lambda I)^{-1} S^T W 1 / (2 beta)`` of ``sum_i v_i (<s_i, theta> - 1/(2 beta))^2``
  with per-sample weights ``v_i = (1 - chi) base_g + chi scale_g alpha_g`` (g = g(i)).
  IPO: chi = 0, base = 1. IS-IPO: chi = 0, base_g = 1 / N_g. GR-IPO: chi = 1, scale = 1 (official code;
  ``scale_g = 1 / N_g`` is the paper's text).

``run_*`` functions are vmapped over seeds (data) and over methods (chi, mu / base, scale arrays) and run
a ``lax.scan`` over iterations, in chunks so a caller can report progress between chunks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp

from grpojax.bandit.env import NUM_GROUPS, PreferenceData, reward_error_from_tables
from grpojax.losses.dpo import dpo_loss
from grpojax.losses.robust import RobustWeightsState, group_sums, robust_weights
from grpojax.types import Array


class Problem(NamedTuple):
    """One seed's problem: training pairs, balanced validation pairs, initial theta, and the test-state
    tables of :func:`grpojax.bandit.env.test_tables` (features [M, Q, A, E], true rewards [M, Q, A])."""

    train: PreferenceData
    val: PreferenceData
    test_feat_MQAE: Array
    test_reward_MQA: Array
    theta0_E: Array


class Curves(NamedTuple):
    """Metrics at each evaluation point I (leading axes of a vmapped run come first).

    val_loss_IM: per-group validation loss; worst_val_loss_I: its max over groups; avg_val_loss_I: its
    mean over groups; reward_error_IM / max_reward_error_I: relative reward error of the greedy policy;
    alpha_IM: the group weights; train_loss_IM: per-group training loss (before the step).
    """

    val_loss_IM: Array
    worst_val_loss_I: Array
    avg_val_loss_I: Array
    reward_error_IM: Array
    max_reward_error_I: Array
    alpha_IM: Array
    train_loss_IM: Array


def pair_losses(theta_E: Array, data: PreferenceData, *, beta, loss_type: str) -> Array:
    """[P] DPO or IPO losses of the log-linear policy (policy log-probs up to the shared log Z)."""
    chex.assert_rank(theta_E, 1)
    policy_w = data.chosen_feat_PE @ theta_E
    policy_l = data.rejected_feat_PE @ theta_E
    ref = jnp.zeros_like(policy_w)  # uniform reference: its log-probs cancel inside h
    return dpo_loss(policy_w, policy_l, ref, ref, beta=beta, loss_type=loss_type)


def group_mean_losses(theta_E, data: PreferenceData, *, beta, loss_type: str) -> Array:
    """[M] mean loss of each group."""
    sum_M, count_M = group_sums(pair_losses(theta_E, data, beta=beta, loss_type=loss_type),
                                data.group_ids_P, NUM_GROUPS)
    return sum_M / jnp.maximum(count_M, 1.0)


def _evaluate(theta_E, alpha_M, train_loss_M, problem: Problem, *, beta, loss_type) -> Curves:
    val_M = group_mean_losses(theta_E, problem.val, beta=beta, loss_type=loss_type)
    err_M = reward_error_from_tables(theta_E, problem.test_feat_MQAE, problem.test_reward_MQA)
    return Curves(val_M, jnp.max(val_M), jnp.mean(val_M), err_M, jnp.max(err_M), alpha_M, train_loss_M)


def weighted_least_squares(s_PE: Array, v_P: Array, target: Array, ridge=0.0) -> Array:
    """``argmin_theta sum_i v_i (<s_i, theta> - target)^2 + ridge |theta|^2``, i.e.
    ``theta = (S^T V S + ridge I)^{-1} S^T V 1 target`` (the GR-IPO closed-form step)."""
    chex.assert_rank([s_PE, v_P], [2, 1])
    gram_EE = jnp.einsum("pe,p,pf->ef", s_PE, v_P, s_PE) + ridge * jnp.eye(s_PE.shape[1], dtype=s_PE.dtype)
    rhs_E = jnp.einsum("pe,p->e", s_PE, v_P) * target
    return jnp.linalg.solve(gram_EE, rhs_E)


def dpo_family_block(carry, problem: Problem, chi, mu_M, *, beta, lr, eta, eval_every: int,
                     num_evals: int, group_sizes_M: tuple):
    """Run ``num_evals * eval_every`` gradient-descent iterations from ``carry = (theta_E, robust_state)``;
    returns the new carry and :class:`Curves` with I = num_evals (metrics after every block)."""
    rw = robust_weights(NUM_GROUPS, group_sizes_M=group_sizes_M, eta=eta, chi=chi, mu=mu_M,
                        mode="full_batch")

    def objective(theta_E, state):
        losses_P = pair_losses(theta_E, problem.train, beta=beta, loss_type="sigmoid")
        loss, state, aux = rw.update(losses_P, problem.train.group_ids_P, state)
        return loss, (state, aux)

    def step(carry, _):
        theta_E, state = carry
        grad_E, (state, aux) = jax.grad(objective, has_aux=True)(theta_E, state)
        return (theta_E - lr * grad_E, state), aux.group_loss_M

    def block(carry, _):
        carry, train_loss_KM = jax.lax.scan(step, carry, None, length=eval_every)
        theta_E, state = carry
        curves = _evaluate(theta_E, jnp.exp(state.log_alpha_M), train_loss_KM[-1], problem,
                           beta=beta, loss_type="sigmoid")
        return carry, curves

    return jax.lax.scan(block, carry, None, length=num_evals)


def ipo_family_block(carry, problem: Problem, chi, base_M, scale_M, *, beta, eta, num_iters: int,
                     ridge=0.0, alpha_update: str = "paper", group_sizes_M: tuple):
    """Run ``num_iters`` closed-form IPO iterations from ``carry = (theta_E, robust_state)``;
    Curves with I = num_iters."""
    rw = robust_weights(NUM_GROUPS, group_sizes_M=group_sizes_M, eta=eta, chi=1.0,
                        mode="full_batch", alpha_update=alpha_update)
    train = problem.train
    s_PE = train.chosen_feat_PE - train.rejected_feat_PE

    def step(carry, _):
        theta_E, state = carry
        losses_P = pair_losses(theta_E, train, beta=beta, loss_type="ipo")
        _, state, aux = rw.update(losses_P, train.group_ids_P, state)
        v_M = (1.0 - chi) * base_M + chi * scale_M * aux.alpha_M
        theta_E = weighted_least_squares(s_PE, v_M[train.group_ids_P], 1.0 / (2.0 * beta), ridge)
        curves = _evaluate(theta_E, aux.alpha_M, aux.group_loss_M, problem, beta=beta, loss_type="ipo")
        return (theta_E, state), curves

    return jax.lax.scan(step, carry, None, length=num_iters)


def _init_carry(problems: Problem, num_methods: int, rw_init: Callable[[], RobustWeightsState]):
    """``(theta_HSE, state with [H, S] leading axes)``: every method starts from the seed's theta0."""
    num_seeds = problems.theta0_E.shape[0]
    tile = lambda a: jnp.broadcast_to(a, (num_methods, num_seeds) + a.shape)  # noqa: E731
    theta_HSE = jnp.broadcast_to(problems.theta0_E[None], (num_methods,) + problems.theta0_E.shape)
    return theta_HSE, jax.tree.map(tile, rw_init())


@functools.lru_cache(maxsize=16)
def _compiled_dpo(num_evals, beta, lr, eta, eval_every, group_sizes_M):
    """jit(vmap over methods (vmap over seeds (dpo_family_block))), cached on its static settings."""
    fn = lambda c, p, chi, mu: dpo_family_block(  # noqa: E731
        c, p, chi, mu, beta=beta, lr=lr, eta=eta, eval_every=eval_every, num_evals=num_evals,
        group_sizes_M=group_sizes_M)
    return jax.jit(jax.vmap(jax.vmap(fn, in_axes=(0, 0, None, None)), in_axes=(0, None, 0, 0)))


@functools.lru_cache(maxsize=16)
def _compiled_ipo(beta, eta, num_iters, ridge, alpha_update, group_sizes_M):
    """jit(vmap over methods (vmap over seeds (ipo_family_block))), cached on its static settings."""
    fn = lambda c, p, chi, base, scale: ipo_family_block(  # noqa: E731
        c, p, chi, base, scale, beta=beta, eta=eta, num_iters=num_iters, ridge=ridge,
        alpha_update=alpha_update, group_sizes_M=group_sizes_M)
    over_seeds = jax.vmap(fn, in_axes=(0, 0, None, None, None))
    return jax.jit(jax.vmap(over_seeds, in_axes=(0, None, 0, 0, 0)))


def run_dpo_family(problems: Problem, chi_H: Array, mu_HM: Array, *, group_sizes_M: tuple, beta, lr,
                   eta, num_iters: int, eval_every: int, evals_per_chunk: int = 20,
                   progress: Optional[Callable[[int, int], None]] = None):
    """All methods (H, via chi_H / mu_HM) x all seeds (S, the leading axis of ``problems``).

    Returns ``(theta_HSE, Curves)`` with curves of shape [H, S, num_iters // eval_every, ...].
    ``progress(done_iters, num_iters)`` is called after every chunk.
    """
    if num_iters % eval_every:
        raise ValueError(f"num_iters={num_iters} must be a multiple of eval_every={eval_every}")
    num_evals = num_iters // eval_every
    evals_per_chunk = max(1, min(evals_per_chunk, num_evals))
    rw = robust_weights(NUM_GROUPS, group_sizes_M=group_sizes_M, eta=eta, mode="full_batch")
    carry = _init_carry(problems, chi_H.shape[0], rw.init)

    chunks, done = [], 0
    while done < num_evals:
        n = min(evals_per_chunk, num_evals - done)
        run = _compiled_dpo(n, float(beta), float(lr), float(eta), eval_every, tuple(group_sizes_M))
        carry, curves = run(carry, problems, chi_H, mu_HM)
        chunks.append(curves)
        done += n
        if progress is not None:
            jax.block_until_ready(carry)  # dispatch is asynchronous: report real progress
            progress(done * eval_every, num_iters)
    curves = jax.tree.map(lambda *c: jnp.concatenate(c, axis=2), *chunks)
    return carry[0], curves


def run_ipo_family(problems: Problem, chi_H: Array, base_HM: Array, scale_HM: Array, *,
                   group_sizes_M: tuple, beta, eta, num_iters: int, ridge=0.0,
                   alpha_update: str = "paper"):
    """Closed-form IPO family, methods (H) x seeds (S). Returns ``(theta_HSE, Curves [H, S, num_iters])``."""
    rw = robust_weights(NUM_GROUPS, group_sizes_M=group_sizes_M, eta=eta, mode="full_batch")
    carry = _init_carry(problems, chi_H.shape[0], rw.init)
    run = _compiled_ipo(float(beta), float(eta), num_iters, float(ridge), alpha_update, tuple(group_sizes_M))
    carry, curves = run(carry, problems, chi_H, base_HM, scale_HM)
    return carry[0], curves
