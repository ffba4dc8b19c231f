"""Group-robust GRPO weights (ALGORITHMS.md 3) against a float64 NumPy reference: the alpha update (absent
groups, NaN scores, masks), the loss weights, alpha = mu -> weights 1, the direction of the update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.losses.robust_grpo import group_mean_scores, robust_grpo_weights


def np_update(log_alpha, scores, gids, sizes, eta, chi, mask=None):
    """Float64 loop reference: group means of valid scores, EG descent among present groups."""
    sizes = np.asarray(sizes, np.float64)
    mu = sizes / sizes.sum()
    M = len(sizes)
    valid = ~np.isnan(scores) if mask is None else (~np.isnan(scores)) & (mask > 0)
    s = np.full(M, np.nan)
    for g in range(M):
        sel = valid & (gids == g)
        if sel.any():
            s[g] = scores[sel].mean()
    present = ~np.isnan(s)
    alpha = np.exp(log_alpha)
    new = alpha.copy()
    if present.any():
        step = alpha[present] * np.exp(-eta * s[present])
        new[present] = alpha[present].sum() * step / step.sum()
    w = ((1 - chi) * mu + chi * new) / mu
    return np.log(new), w[gids], s


def test_matches_float64_numpy_over_several_rollouts():
    rng = np.random.default_rng(0)
    sizes, eta, chi = (50, 30, 15, 5), 0.7, 0.8
    with jax.enable_x64(True):
        rw = robust_grpo_weights(4, group_sizes_M=sizes, eta=eta, chi=chi)
        update = jax.jit(rw.update)
        state = rw.init()
        assert state.log_alpha_M.dtype == jnp.float64
        log_alpha = np.log(np.asarray(sizes) / sum(sizes))
        np.testing.assert_allclose(np.exp(state.log_alpha_M), np.exp(log_alpha), rtol=1e-6)
        for t in range(6):
            n = 24
            gids = rng.integers(0, 3 if t % 2 else 4, size=n)  # odd rollouts: group 3 absent
            scores = rng.normal(size=n) * 2.0 + gids
            scores[rng.random(n) < 0.15] = np.nan  # not applicable: left out of the means
            mask = (rng.random(n) > 0.1).astype(np.float64)
            w, state, aux = update(jnp.asarray(scores), jnp.asarray(gids), state, jnp.asarray(mask))
            log_alpha, ref_w, ref_s = np_update(log_alpha, scores, gids, sizes, eta, chi, mask)
            np.testing.assert_allclose(np.asarray(aux.alpha_M), np.exp(log_alpha), rtol=1e-10)
            np.testing.assert_allclose(np.asarray(w), ref_w, rtol=1e-10)
            np.testing.assert_allclose(np.asarray(aux.score_M), ref_s, rtol=1e-10)
            np.testing.assert_allclose(float(jnp.sum(aux.alpha_M)), 1.0, rtol=1e-12)
        assert int(state.step) == 6


def test_absent_group_keeps_alpha_and_nothing_present_changes_nothing():
    rw = robust_grpo_weights(3, group_sizes_M=(1, 1, 2), eta=1.0)
    s0 = rw.init()
    _, s1, aux = jax.jit(rw.update)(jnp.array([0.0, 1.0, 0.0, 1.0]), jnp.array([0, 0, 1, 1]), s0)
    np.testing.assert_allclose(aux.alpha_M[2], 0.5, rtol=1e-6)  # group 2 absent: alpha kept
    np.testing.assert_allclose(aux.alpha_M[:2], [0.25, 0.25], rtol=1e-6)  # equal scores: split kept
    _, s2, aux = jax.jit(rw.update)(jnp.array([jnp.nan, jnp.nan]), jnp.array([0, 1]), s1)  # no valid score
    np.testing.assert_allclose(aux.alpha_M, [0.25, 0.25, 0.5], rtol=1e-6)
    assert np.isnan(np.asarray(aux.score_M)).all() and not np.isnan(np.asarray(s2.log_alpha_M)).any()


def test_alpha_equal_mu_gives_unit_weights_and_alpha_moves_to_the_worst_group():
    rw = robust_grpo_weights(2, group_sizes_M=(9, 1), eta=0.0)  # eta 0: alpha stays mu
    w, _, _ = jax.jit(rw.update)(jnp.array([1.0, 0.0, 0.5]), jnp.array([0, 1, 0]), rw.init())
    np.testing.assert_allclose(w, 1.0, rtol=1e-6)
    rw = robust_grpo_weights(2, group_sizes_M=(9, 1), eta=0.5, chi=0.0)  # chi 0: plain GRPO
    w, _, aux = jax.jit(rw.update)(jnp.array([1.0, 0.0]), jnp.array([0, 1]), rw.init())
    np.testing.assert_allclose(w, 1.0, rtol=1e-6)
    assert aux.alpha_M[1] > 0.1  # but alpha itself moved
    rw = robust_grpo_weights(2, group_sizes_M=(9, 1), eta=0.5)
    state, update = rw.init(), jax.jit(rw.update)
    for _ in range(3):  # group 1 (the minority) has the lower reward: its alpha and weight rise
        w, state, aux = update(jnp.array([1.0, 1.0, 0.0]), jnp.array([0, 0, 1]), state)
    alpha1 = 0.1 * np.exp(1.5) / (0.9 + 0.1 * np.exp(1.5))  # three steps of exp(-0.5 * (0 - 1)) relative
    np.testing.assert_allclose(aux.alpha_M[1], alpha1, rtol=1e-5)
    np.testing.assert_allclose(w, [(1 - alpha1) / 0.9, (1 - alpha1) / 0.9, alpha1 / 0.1], rtol=1e-5)
    assert w[2] > 1.0 > w[0]


def test_group_mean_scores_and_validation():
    mean, count = map(np.asarray, group_mean_scores(jnp.array([1.0, 3.0, jnp.nan, 5.0]),
                                                    jnp.array([0, 0, 1, 2]), 4))
    np.testing.assert_allclose(count, [2, 0, 1, 0])
    np.testing.assert_allclose(mean[[0, 2]], [2.0, 5.0])
    assert np.isnan(mean[1]) and np.isnan(mean[3])
    with pytest.raises(ValueError, match="at least one training prompt"):
        robust_grpo_weights(2, group_sizes_M=(3, 0), eta=0.1)
    with pytest.raises(ValueError, match="chi"):
        robust_grpo_weights(2, group_sizes_M=(3, 1), eta=0.1, chi=1.5)
    with pytest.raises(ValueError, match="eta"):
        robust_grpo_weights(2, group_sizes_M=(3, 1), eta=-0.1)


def test_jits_with_traced_eta_and_chi():
    def run(eta, chi):
        rw = robust_grpo_weights(2, group_sizes_M=(3, 1), eta=eta, chi=chi)
        w, _, aux = rw.update(jnp.array([1.0, 0.0]), jnp.array([0, 1]), rw.init())
        return w, aux.alpha_M

    w, alpha = jax.jit(run)(0.3, 0.5)  # eta and chi traced
    log_alpha, w_ref, _ = np_update(np.log([0.75, 0.25]), np.array([1.0, 0.0]), np.array([0, 1]), (3, 1), 0.3, 0.5)
    np.testing.assert_allclose(w, w_ref, rtol=1e-5)
    np.testing.assert_allclose(alpha, np.exp(log_alpha), rtol=1e-5)
