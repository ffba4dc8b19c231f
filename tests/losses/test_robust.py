"""Group-robust weights (GR-DPO / GR-IPO): NumPy references, equivalences with plain DPO, simplex and
monotonicity properties, gradients, masking, group metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax.losses.dpo import dpo_loss
from grpojax.losses.robust import group_metrics, robust_weights


def np_minibatch(losses, gids, sizes, log_alpha, eta, chi, mu):
    sizes = np.asarray(sizes, np.float64)
    ghat = np.array([sizes.sum() / sizes[g] * losses[gids == g].sum() for g in range(len(sizes))])
    la = log_alpha + eta * ghat
    alpha = np.exp(la - np.logaddexp.reduce(la))
    w = (1 - chi) * mu + chi * alpha
    return float((w * ghat).sum() / len(losses)), alpha, w


def test_init_is_uniform_and_minibatch_matches_numpy():
    rng = np.random.default_rng(0)
    sizes = (50, 30, 20)
    losses = rng.uniform(0, 2, size=11)
    gids = rng.integers(0, 3, size=11)
    mu = np.array([0.5, 0.3, 0.2])
    with jax.enable_x64(True):
        rw = robust_weights(3, group_sizes_M=sizes, eta=0.3, chi=0.6, mu=mu)
        state = rw.init()
        np.testing.assert_allclose(np.exp(state.log_alpha_M), [1 / 3] * 3, rtol=1e-12)
        log_alpha = np.log(np.full(3, 1 / 3))
        for _ in range(3):  # several steps: the state carries over
            loss, state, aux = rw.update(jnp.asarray(losses), jnp.asarray(gids), state)
            ref_loss, ref_alpha, ref_w = np_minibatch(losses, gids, sizes, log_alpha, 0.3, 0.6, mu)
            log_alpha = np.log(ref_alpha)
            np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
            np.testing.assert_allclose(aux.alpha_M, ref_alpha, rtol=1e-12)
            np.testing.assert_allclose(aux.weights_M, ref_w, rtol=1e-12)
        assert int(state.step) == 3


def test_hand_computed_minibatch_step():
    # N = 4 with N_0 = 1, N_1 = 3; batch: group 0 loss 1, group 1 losses 2, 3, 4.
    rw = robust_weights(2, group_sizes_M=(1, 3), eta=0.5)
    loss, state, aux = rw.update(jnp.array([1.0, 2.0, 3.0, 4.0]), jnp.array([0, 1, 1, 1]), rw.init())
    np.testing.assert_allclose(aux.group_loss_M, [4.0, 12.0])  # (4/1) * 1, (4/3) * 9
    alpha = np.exp([2.0, 6.0]) / np.exp([2.0, 6.0]).sum()
    np.testing.assert_allclose(aux.alpha_M, alpha, rtol=1e-6)
    np.testing.assert_allclose(loss, (alpha[0] * 4 + alpha[1] * 12) / 4, rtol=1e-6)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 3.0))
def test_one_group_or_proportional_frozen_weights_equal_plain_dpo(seed, eta):
    rng = np.random.default_rng(seed)
    p = 9
    pw, pl, rw_, rl = (jnp.asarray(rng.normal(size=p) * 3, jnp.float32) for _ in range(4))
    losses = dpo_loss(pw, pl, rw_, rl, beta=0.5)
    plain = float(jnp.mean(losses))
    # One group: alpha = 1 whatever eta is, ghat = sum, loss = mean.
    one = robust_weights(1, group_sizes_M=(123,), eta=eta)
    loss1, _, _ = one.update(losses, jnp.zeros(p, jnp.int32), one.init())
    np.testing.assert_allclose(loss1, plain, rtol=1e-5)
    # Weights frozen at N_g / N (chi = 0, mu = N_g / N): every sample weighs 1 / |batch|.
    gids = jnp.asarray(rng.integers(0, 3, size=p))
    prop = robust_weights(3, group_sizes_M=(10, 25, 65), eta=eta, chi=0.0, mu="proportional")
    loss2, _, aux = prop.update(losses, gids, prop.init())
    np.testing.assert_allclose(loss2, plain, rtol=1e-5)
    np.testing.assert_allclose(aux.weights_M, [0.1, 0.25, 0.65], rtol=1e-6)  # chi = 0 gives mu
    # Full batch over the whole data set with the same frozen weights is plain DPO too.
    counts = np.bincount(np.asarray(gids), minlength=3)
    full = robust_weights(3, group_sizes_M=np.maximum(counts, 1), eta=eta, chi=0.0,
                          mu=jnp.asarray(counts / p), mode="full_batch")
    loss3, _, _ = full.update(losses, gids, full.init())
    np.testing.assert_allclose(loss3, plain, rtol=1e-5)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 0.2), st.sampled_from(["minibatch", "full_batch"]))
def test_alpha_stays_on_simplex_and_rises_for_the_worse_group(seed, eta, mode):
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        rw = robust_weights(3, group_sizes_M=(40, 40, 40), eta=eta, mode=mode)
        state = rw.init()
        gids = jnp.asarray(np.repeat(np.arange(3), 4))
        for _ in range(3):
            losses = jnp.asarray(rng.uniform(0, 1, size=12) + np.repeat([2.0, 0.0, 0.0], 4))
            before = np.exp(np.asarray(state.log_alpha_M))
            _, state, aux = rw.update(losses, gids, state)
            alpha = np.asarray(aux.alpha_M)
            assert np.all(alpha >= 0) and abs(alpha.sum() - 1) < 1e-12
            assert alpha[0] > before[0]  # group 0 always has the largest loss
            # Exponentiated gradient: alpha_g / alpha_h = before_g / before_h * exp(eta (ghat_g - ghat_h)).
            ratio = alpha / before
            np.testing.assert_allclose(np.log(ratio) - np.log(ratio[1]),
                                       eta * (aux.group_loss_M - aux.group_loss_M[1]), rtol=1e-9, atol=1e-9)


def test_gradient_flows_through_losses_not_alpha():
    sizes = (6, 2)
    gids = jnp.array([0, 0, 1, 1, 1])
    losses = jnp.array([0.3, 1.2, 0.7, 2.0, 0.1])
    rw = robust_weights(2, group_sizes_M=sizes, eta=0.4, chi=0.8)

    def f(losses_P, log_alpha_M):
        state = rw.init()._replace(log_alpha_M=log_alpha_M)
        loss, _, aux = rw.update(losses_P, gids, state)
        return loss, aux

    (g_losses, g_alpha), aux = jax.grad(f, argnums=(0, 1), has_aux=True)(losses, rw.init().log_alpha_M)
    np.testing.assert_array_equal(g_alpha, 0.0)  # weights are stop-gradiented
    w = np.asarray(aux.weights_M)
    expected = np.array([w[g] * 8 / sizes[g] / 5 for g in np.asarray(gids)])
    np.testing.assert_allclose(g_losses, expected, rtol=1e-6)
    # Finite differences with the weights held at their value agree.
    eps = 1e-3
    for i in range(5):
        bump = losses.at[i].add(eps)
        num = (np.sum(w * np.array([8 / 6 * bump[:2].sum(), 8 / 2 * bump[2:].sum()])) / 5
               - np.sum(w * np.array([8 / 6 * losses[:2].sum(), 8 / 2 * losses[2:].sum()])) / 5) / eps
        np.testing.assert_allclose(g_losses[i], num, rtol=1e-2)


def test_full_batch_paper_and_official_alpha_updates():
    losses = jnp.array([1.0, 3.0, 0.5, 0.5, 0.5, 0.5])
    gids = jnp.array([0, 0, 1, 1, 1, 1])
    paper = robust_weights(2, group_sizes_M=(2, 4), eta=0.1, chi=0.5, mode="full_batch")
    loss, _, aux = paper.update(losses, gids, paper.init())
    np.testing.assert_allclose(aux.group_loss_M, [2.0, 0.5])
    alpha = np.exp([0.2, 0.05]) / np.exp([0.2, 0.05]).sum()
    np.testing.assert_allclose(aux.alpha_M, alpha, rtol=1e-6)
    w = 0.5 * 0.5 + 0.5 * alpha
    np.testing.assert_allclose(loss, w[0] * 2.0 + w[1] * 0.5, rtol=1e-6)
    official = robust_weights(2, group_sizes_M=(2, 4), eta=0.1, mode="full_batch", alpha_update="official")
    _, _, aux = official.update(losses, gids, official.init())
    alpha = np.exp([0.1 * 2.0 / 2, 0.1 * 0.5 / 4])
    np.testing.assert_allclose(aux.alpha_M, alpha / alpha.sum(), rtol=1e-6)


def test_masked_pairs_equal_dropped_pairs_and_absent_groups():
    rw = robust_weights(3, group_sizes_M=(5, 5, 10), eta=0.7)
    losses = jnp.array([0.2, jnp.nan, 1.5, 0.4])
    gids = jnp.array([0, 2, 0, 1])
    mask = jnp.array([1, 0, 1, 1])
    loss_m, st_m, aux_m = rw.update(losses, gids, rw.init(), mask)
    keep = np.array([0, 2, 3])
    loss_d, st_d, aux_d = rw.update(losses[keep], gids[keep], rw.init())
    np.testing.assert_allclose(loss_m, loss_d, rtol=1e-6)
    np.testing.assert_allclose(st_m.log_alpha_M, st_d.log_alpha_M, rtol=1e-6)
    assert aux_m.group_count_M.tolist() == [2.0, 1.0, 0.0]
    assert float(aux_m.group_loss_M[2]) == 0.0  # absent group: ghat = 0
    # A padded (fully masked) batch leaves the loss at 0 and alpha unchanged.
    loss0, st0, _ = rw.update(losses, gids, rw.init(), jnp.zeros(4))
    assert float(loss0) == 0.0
    np.testing.assert_allclose(np.exp(st0.log_alpha_M), [1 / 3] * 3, rtol=1e-6)


def test_jit_and_vmap_over_traced_chi_and_eta():
    losses = jnp.array([0.3, 1.2, 0.7, 2.0])
    gids = jnp.array([0, 1, 1, 0])

    def run(chi, eta):
        rw = robust_weights(2, group_sizes_M=(3, 7), eta=eta, chi=chi)
        loss, state, _ = rw.update(losses, gids, rw.init())
        return loss, state.log_alpha_M

    chis, etas = jnp.array([0.0, 0.5, 1.0]), jnp.array([0.1, 0.2, 0.3])
    loss_v, la_v = jax.jit(jax.vmap(run))(chis, etas)
    for i in range(3):
        loss_e, la_e = run(float(chis[i]), float(etas[i]))
        np.testing.assert_allclose(loss_v[i], loss_e, rtol=1e-6)
        np.testing.assert_allclose(la_v[i], la_e, rtol=1e-6)


def test_group_metrics_against_numpy_with_absent_group():
    rng = np.random.default_rng(3)
    losses = rng.uniform(0, 2, 10)
    racc = rng.integers(0, 2, 10).astype(float)
    lacc = rng.integers(0, 2, 10).astype(float)
    gids = np.array([0, 1, 0, 1, 3, 3, 0, 1, 3, 0])  # group 2 absent
    mask = np.ones(10)
    mask[4] = 0
    m = jax.jit(lambda *a: group_metrics(*a, num_groups=4, mask_P=jnp.asarray(mask)))(
        *map(jnp.asarray, (losses, racc, lacc, gids)))
    valid = mask > 0
    for g in (0, 1, 3):
        sel = valid & (gids == g)
        np.testing.assert_allclose(m.loss_M[g], losses[sel].mean(), rtol=1e-6)
        np.testing.assert_allclose(m.reward_accuracy_M[g], racc[sel].mean(), rtol=1e-6)
        np.testing.assert_allclose(m.logprob_accuracy_M[g], lacc[sel].mean(), rtol=1e-6)
    assert np.isnan(m.loss_M[2]) and float(m.count_M[2]) == 0
    present = [0, 1, 3]
    np.testing.assert_allclose(m.worst_loss, np.max(np.asarray(m.loss_M)[present]), rtol=1e-6)
    np.testing.assert_allclose(m.worst_reward_accuracy, np.min(np.asarray(m.reward_accuracy_M)[present]))
    np.testing.assert_allclose(m.worst_logprob_accuracy, np.min(np.asarray(m.logprob_accuracy_M)[present]))


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="group_sizes_M is required"):
        robust_weights(2, eta=0.1)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        robust_weights(3, group_sizes_M=(1, 2), eta=0.1)
    with pytest.raises(ValueError, match="at least one training pair"):
        robust_weights(2, group_sizes_M=(0, 2), eta=0.1)
    with pytest.raises(ValueError, match="chi must be in"):
        robust_weights(2, group_sizes_M=(1, 2), eta=0.1, chi=1.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        robust_weights(2, group_sizes_M=(1, 2), eta=0.1, mode="online")
    with pytest.raises(ValueError, match="mu must"):
        robust_weights(2, group_sizes_M=(1, 2), eta=0.1, mu="softmax")
    with pytest.raises(ValueError, match="eta must be >= 0"):
        robust_weights(2, group_sizes_M=(1, 2), eta=-1.0)
