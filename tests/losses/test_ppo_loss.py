"""Tests of grpojax.losses.ppo against float64 NumPy references written from the formulas (explicit
Python loops over time steps), hand-computed cases, properties, gradients and jit / vmap variants."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax.losses import ppo, ppo_rollout

ATOL = 2e-5
# jitted once per shape: eager op-by-op dispatch dominates the run time of these tiny arrays otherwise
gae_jit = jax.jit(ppo_rollout.gae_advantages)


# ------------------------------------------------------------------------------ NumPy references


def np_kl(logp, ref, estimator):
    d = np.asarray(logp, np.float64) - np.asarray(ref, np.float64)
    return {"k1": d, "k2": 0.5 * d**2, "k3": np.exp(-d) + d - 1.0}[estimator]


def np_rewards(scores, logp, ref, mask, kl_coef, estimator):
    B, T = mask.shape
    out = np.zeros((B, T))
    kl = np_kl(logp, ref, estimator)
    for b in range(B):
        last = None
        for t in range(T):
            if mask[b, t]:
                out[b, t] = -kl_coef * kl[b, t]
                last = t
        if last is not None:
            out[b, last] += scores[b]
    return out


def np_gae(rewards, values, mask, gamma, lam):
    """Per row: keep the active tokens, run the textbook backward recursion, scatter back."""
    B, T = mask.shape
    adv, ret = np.zeros((B, T)), np.zeros((B, T))
    for b in range(B):
        idx = [t for t in range(T) if mask[b, t]]
        next_v, next_a = 0.0, 0.0
        for t in reversed(idx):
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            a = delta + gamma * lam * next_a
            adv[b, t], ret[b, t] = a, a + values[b, t]
            next_v, next_a = values[b, t], a
    return adv, ret


def np_gae_trl(rewards, values, mask, gamma, lam):
    """TRL PPOTrainer's loop verbatim (values / rewards zero-filled at padding, right padding)."""
    rewards = np.where(mask, rewards, 0.0)
    values = np.where(mask, values, 0.0)
    T = rewards.shape[1]
    last, rev = 0.0, []
    for t in reversed(range(T)):
        nextvalues = values[:, t + 1] if t < T - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        last = delta + gamma * lam * last
        rev.append(last)
    adv = np.stack(rev[::-1], axis=1)
    return adv, adv + values


def np_whiten(x, mask, shift_mean=True, eps=1e-8):
    v = np.asarray(x, np.float64)[np.asarray(mask, bool)]
    mean = v.mean()
    var = ((v - mean) ** 2).sum() / (len(v) - 1)
    y = (np.asarray(x, np.float64) - mean) / np.sqrt(var + eps)
    if not shift_mean:
        y = y + mean
    return np.where(mask, y, 0.0)


def np_reduce(x, mask, reduction):
    m = np.asarray(mask, np.float64)
    if reduction == "token_mean":
        return (x * m).sum() / max(m.sum(), 1.0)
    return np.mean([(x[b] * m[b]).sum() / max(m[b].sum(), 1.0) for b in range(x.shape[0])])


def np_policy_loss(logp, old, adv, mask, eps, reduction):
    d = np.where(mask, logp - old, 0.0)
    ratio = np.exp(d)
    l1 = -adv * ratio
    l2 = -adv * np.clip(ratio, 1 - eps, 1 + eps)
    loss = np_reduce(np.maximum(l1, l2), mask, reduction)
    n = max(mask.sum(), 1)
    return loss, ((l2 > l1) * mask).sum() / n, 0.5 * (d**2 * mask).sum() / n, (ratio * mask).sum() / n


def np_value_loss(v, old, ret, mask, c, reduction):
    e1 = (v - ret) ** 2
    e2 = e1 if c is None else (np.clip(v, old - c, old + c) - ret) ** 2
    return 0.5 * np_reduce(np.maximum(e1, e2), mask, reduction), ((e2 > e1) * mask).sum() / max(mask.sum(), 1)


def random_batch(seed, B=5, T=7, prefix=True):
    rng = np.random.default_rng(seed)
    if prefix:
        lengths = rng.integers(0, T + 1, size=B)
        lengths[0] = T  # one full row, others ragged (possibly empty)
        mask = np.arange(T)[None, :] < lengths[:, None]
    else:
        mask = rng.random((B, T)) < 0.6
        mask[0] = True
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return rng, mask, f


# ----------------------------------------------------------------------------------------- rewards


def test_kl_penalized_rewards_hand_case():
    # k1: KL = logp - ref = [0.5, 0, *]; r = -0.1 * KL, score 2 on the last active token (t = 1).
    out = ppo_rollout.kl_penalized_rewards(
        jnp.array([2.0, 7.0]),
        jnp.array([[-1.0, -1.0, 9.0], [-1.0, -2.0, -3.0]]),
        jnp.array([[-1.5, -1.0, 0.0], [0.0, 0.0, 0.0]]),
        jnp.array([[1, 1, 0], [0, 0, 0]]),
        kl_coef=0.1,
    )
    np.testing.assert_allclose(out, [[-0.05, 2.0, 0.0], [0.0, 0.0, 0.0]], atol=1e-7)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
@pytest.mark.parametrize("prefix", [True, False])
def test_kl_penalized_rewards_matches_numpy(estimator, prefix):
    rng, mask, f = random_batch(1, prefix=prefix)
    scores, logp, ref = f(5), f(5, 7), f(5, 7)
    logp[~mask] = np.nan  # garbage under the mask must not leak
    out = ppo_rollout.kl_penalized_rewards(scores, logp, ref, mask, kl_coef=0.3, kl_estimator=estimator)
    np.testing.assert_allclose(out, np_rewards(scores, logp, ref, mask, 0.3, estimator), atol=ATOL, rtol=1e-5)
    total_kl = ppo_rollout.rollout_kl(logp, ref, mask, kl_estimator=estimator)
    np.testing.assert_allclose(total_kl, np.where(mask, np_kl(logp, ref, estimator), 0).sum(1), atol=1e-4)


def test_kl_penalized_rewards_errors_and_traced_coef():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="kl_estimator"):
        ppo_rollout.kl_penalized_rewards(jnp.zeros(2), z, z, z, kl_coef=0.1, kl_estimator="k4")
    with pytest.raises(ValueError, match="kl_coef"):
        ppo_rollout.kl_penalized_rewards(jnp.zeros(2), z, z, z, kl_coef=-1.0)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        ppo_rollout.kl_penalized_rewards(jnp.zeros(2), z, jnp.zeros((2, 4)), z, kl_coef=0.1)
    fn = jax.jit(lambda c: ppo_rollout.kl_penalized_rewards(jnp.ones(2), z + 1.0, z, z + 1, kl_coef=c))
    np.testing.assert_allclose(fn(0.5), [[-0.5, -0.5, 0.5]] * 2)


# -------------------------------------------------------------------------------------------- GAE


def test_gae_hand_case():
    # T = 3 active, r = [0, 0, 1], V = [0.5, 0.2, 0.1], gamma = 0.9, lam = 0.8, then one pad token.
    # δ2 = 1 - 0.1 = 0.9;  δ1 = 0 + 0.9*0.1 - 0.2 = -0.11;  δ0 = 0 + 0.9*0.2 - 0.5 = -0.32
    # A2 = 0.9;  A1 = -0.11 + 0.72*0.9 = 0.538;  A0 = -0.32 + 0.72*0.538 = 0.06736
    adv, ret = ppo_rollout.gae_advantages(
        jnp.array([[0.0, 0.0, 1.0, 5.0]]),
        jnp.array([[0.5, 0.2, 0.1, 3.0]]),
        jnp.array([[1, 1, 1, 0]]),
        gamma=0.9,
        lam=0.8,
    )
    np.testing.assert_allclose(adv, [[0.06736, 0.538, 0.9, 0.0]], atol=1e-6)
    np.testing.assert_allclose(ret, [[0.56736, 0.738, 1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0), (1.0, 1.0)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gae_matches_numpy_and_trl(gamma, lam, seed):
    rng, mask, f = random_batch(seed, B=6, T=9)
    r, v = f(6, 9), f(6, 9)
    adv, ret = ppo_rollout.gae_advantages(r, v, mask, gamma=gamma, lam=lam)
    ref_adv, ref_ret = np_gae(r, v, mask, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, atol=ATOL, rtol=1e-5)
    trl_adv, trl_ret = np_gae_trl(r, v, mask, gamma, lam)  # same on active tokens for right padding
    np.testing.assert_allclose(np.where(mask, trl_adv, 0), ref_adv, atol=1e-10)
    np.testing.assert_allclose(np.where(mask, trl_ret, 0), ref_ret, atol=1e-10)


def test_gae_ragged_holes_match_numpy():
    rng, mask, f = random_batch(5, B=6, T=9, prefix=False)
    r, v = f(6, 9), f(6, 9)
    v[~mask] = np.nan
    adv, ret = ppo_rollout.gae_advantages(r, v, mask, gamma=0.97, lam=0.9)
    ref_adv, ref_ret = np_gae(r, v, mask, 0.97, 0.9)
    np.testing.assert_allclose(adv, ref_adv, atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, atol=ATOL, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=8),
    st.integers(0, 2**31 - 1),
    st.floats(0.5, 1.0),
    st.floats(0.0, 1.0),
)
def test_gae_masked_equals_dropped(mask_row, seed, gamma, lam):
    """GAE of a row with inactive tokens == GAE of the row with those tokens removed."""
    rng = np.random.default_rng(seed)
    T = 8
    mask = np.zeros((1, T), bool)
    mask[0, : len(mask_row)] = mask_row
    r, v = rng.normal(size=(1, T)).astype(np.float32), rng.normal(size=(1, T)).astype(np.float32)
    adv, ret = gae_jit(r, v, mask, gamma=gamma, lam=lam)
    keep = mask[0]
    n = int(keep.sum())
    if n:
        d_adv, d_ret = gae_jit(r[:, keep], v[:, keep], np.ones((1, n), bool), gamma=gamma, lam=lam)
        np.testing.assert_allclose(np.asarray(adv)[0, keep], d_adv[0], atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(ret)[0, keep], d_ret[0], atol=ATOL, rtol=1e-5)
    assert np.all(np.asarray(adv)[0, ~keep] == 0) and np.all(np.asarray(ret)[0, ~keep] == 0)


def test_gae_lambda_one_gamma_one_is_reward_to_go():
    rng, mask, f = random_batch(3, B=4, T=6)
    r, v = f(4, 6), f(4, 6)
    adv, ret = ppo_rollout.gae_advantages(r, v, mask, gamma=1.0, lam=1.0)
    rm = np.where(mask, r.astype(np.float64), 0.0)
    to_go = np.where(mask, np.cumsum(rm[:, ::-1], axis=1)[:, ::-1], 0.0)
    np.testing.assert_allclose(ret, to_go, atol=ATOL)
    np.testing.assert_allclose(adv, np.where(mask, to_go - v, 0.0), atol=ATOL)


def test_gae_lambda_zero_is_td_error_and_no_gradient():
    r = jnp.array([[1.0, 2.0, 3.0]])
    v = jnp.array([[0.5, 0.25, 0.125]])
    adv, _ = ppo_rollout.gae_advantages(r, v, jnp.ones((1, 3)), gamma=0.5, lam=0.0)
    np.testing.assert_allclose(adv, [[1 + 0.125 - 0.5, 2 + 0.0625 - 0.25, 3 - 0.125]], atol=1e-6)
    total = lambda vv, rr: sum(jnp.sum(x) for x in ppo_rollout.gae_advantages(rr, vv, jnp.ones((1, 3))))  # noqa: E731
    g = jax.grad(total, (0, 1))(v, r)
    assert all(np.all(np.asarray(x) == 0) for x in g)


def test_gae_jit_vmap_and_errors():
    rng, mask, f = random_batch(4, B=3, T=5)
    r, v = np.stack([f(3, 5) for _ in range(4)]), np.stack([f(3, 5) for _ in range(4)])
    gae = lambda a, b, g: ppo_rollout.gae_advantages(a, b, mask, gamma=g, lam=0.9)  # noqa: E731
    fn = jax.jit(jax.vmap(gae, in_axes=(0, 0, None)))
    adv, ret = fn(r, v, 0.95)
    for i in range(4):
        ref_adv, ref_ret = np_gae(r[i], v[i], mask, 0.95, 0.9)
        np.testing.assert_allclose(adv[i], ref_adv, atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(ret[i], ref_ret, atol=ATOL, rtol=1e-5)
    with pytest.raises(ValueError, match="lam must be in"):
        ppo_rollout.gae_advantages(r[0], v[0], mask, lam=1.5)
    with pytest.raises(ValueError, match="gae_advantages"):
        ppo_rollout.gae_advantages(r[0], v[0, :, :4], mask)


# -------------------------------------------------------------------------------------- whitening


@pytest.mark.parametrize("shift_mean", [True, False])
@pytest.mark.parametrize("prefix", [True, False])
def test_whiten_matches_numpy(shift_mean, prefix):
    rng, mask, f = random_batch(7, B=6, T=8, prefix=prefix)
    x = 3.0 + 2.0 * f(6, 8)
    x[~mask] = np.inf
    out = ppo_rollout.whiten(x, mask, shift_mean=shift_mean)
    np.testing.assert_allclose(out, np_whiten(np.where(mask, x, 0), mask, shift_mean), atol=1e-5, rtol=1e-5)
    if shift_mean:
        active = np.asarray(out)[mask].astype(np.float64)
        np.testing.assert_allclose([active.mean(), active.var(ddof=1)], [0.0, 1.0], atol=1e-5)


def test_whiten_degenerate_masks_are_finite():
    x = jnp.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(ppo_rollout.whiten(x, jnp.zeros((1, 3))), [[0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(ppo_rollout.whiten(x, jnp.array([[0, 1, 0]])), [[0.0, 0.0, 0.0]])
    np.testing.assert_allclose(ppo_rollout.whiten(x, jnp.array([[0, 1, 0]]), shift_mean=False), [[0.0, 2.0, 0.0]])
    # hand case: x = [1, 3], mean 2, unbiased var 2 -> ±1/sqrt(2)
    out = ppo_rollout.whiten(jnp.array([1.0, 3.0]), jnp.ones(2))
    np.testing.assert_allclose(out, [-(0.5**0.5), 0.5**0.5], rtol=1e-6)
    assert float(ppo_rollout.masked_var(x, jnp.ones((1, 3)), unbiased=False)) == pytest.approx(2 / 3, rel=1e-6)


# ------------------------------------------------------------------------------------ policy loss


def test_policy_loss_hand_case():
    # tokens: ratio e^{0.5}=1.6487 with A=+1 -> clipped: loss -1.2; ratio 1 with A=-2 -> 2;
    # ratio e^{-0.5}=0.6065 with A=-1 -> clipped: max(0.6065, 0.8) = 0.8; fourth token masked.
    logp = jnp.array([[0.5, 0.0, -0.5, 100.0]])
    old = jnp.zeros((1, 4))
    adv = jnp.array([[1.0, -2.0, -1.0, 7.0]])
    mask = jnp.array([[1, 1, 1, 0]])
    loss, aux = ppo.ppo_policy_loss(logp, old, adv, mask, cliprange=0.2)
    assert float(loss) == pytest.approx((-1.2 + 2.0 + 0.8) / 3, rel=1e-6)
    assert float(aux.clipfrac) == pytest.approx(2 / 3, rel=1e-6)
    assert float(aux.approx_kl) == pytest.approx(0.5 * (0.25 + 0 + 0.25) / 3, rel=1e-6)
    assert float(aux.ratio_mean) == pytest.approx((math.exp(0.5) + 1 + math.exp(-0.5)) / 3, rel=1e-6)


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_policy_loss_matches_numpy(reduction, seed):
    rng, mask, f = random_batch(seed, B=6, T=8)
    old = f(6, 8)
    logp = old + 0.4 * f(6, 8)
    adv = f(6, 8)
    loss, aux = ppo.ppo_policy_loss(logp, old, adv, mask, cliprange=0.15, reduction=reduction)
    ref = np_policy_loss(logp.astype(np.float64), old, adv, mask, 0.15, reduction)
    np.testing.assert_allclose([loss, aux.clipfrac, aux.approx_kl, aux.ratio_mean], ref, atol=ATOL, rtol=1e-5)
    assert 0.0 < float(aux.clipfrac) < 1.0  # the random case exercises both branches


def test_policy_gradient_equals_vanilla_pg_when_ratio_is_one():
    rng, mask, f = random_batch(11, B=4, T=6)
    logp, adv = f(4, 6), f(4, 6)
    g_ppo = jax.jit(jax.grad(lambda lp: ppo.ppo_policy_loss(lp, lp, adv, mask)[0]))(logp)
    n = mask.sum()
    np.testing.assert_allclose(g_ppo, np.where(mask, -adv / n, 0.0), atol=1e-6)
    g_pg = jax.jit(jax.grad(lambda lp: -jnp.sum(jnp.where(mask, adv * lp, 0.0)) / n))(logp)
    np.testing.assert_allclose(g_ppo, g_pg, atol=1e-6)


def test_policy_gradient_is_zero_on_clipped_tokens():
    # ratio e^{0.5} > 1.2 with A > 0 (clipped) and ratio e^{-0.5} < 0.8 with A > 0 (not clipped).
    logp = jnp.array([[0.5, -0.5]])
    adv = jnp.array([[1.0, 1.0]])
    g = jax.grad(lambda lp: ppo.ppo_policy_loss(lp, jnp.zeros((1, 2)), adv, jnp.ones((1, 2)))[0])(logp)
    np.testing.assert_allclose(g, [[0.0, -math.exp(-0.5) / 2]], rtol=1e-6)


def test_fully_masked_rows_give_finite_losses_and_grads():
    rng, mask, f = random_batch(2, B=4, T=5)
    mask[1:] = False
    logp, old, adv, v, ov, ret = (f(4, 5) for _ in range(6))
    logp[1:] = np.inf
    v[1:] = np.nan

    def total(lp, vv, m):
        loss, _ = ppo.ppo_loss(
            lp, old, adv, vv, ov, ret, m, ref_logp_BT=old, kl_coef=0.1, reduction="sequence_mean"
        )
        return loss

    value_and_grad = jax.jit(jax.value_and_grad(total, (0, 1)))
    for m in (mask, np.zeros_like(mask)):
        loss, grads = value_and_grad(logp, v, m)
        assert np.isfinite(float(loss))
        assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
        assert all(np.all(np.asarray(g)[~m] == 0) for g in grads)
    assert float(total(logp, v, np.zeros_like(mask))) == 0.0


def test_policy_loss_jit_vmap():
    rng, mask, f = random_batch(9, B=3, T=4)
    logp, old, adv = (np.stack([f(3, 4) for _ in range(5)]) for _ in range(3))
    fn = jax.jit(jax.vmap(lambda a, b, c: ppo.ppo_policy_loss(a, b, c, mask, cliprange=0.1)))
    loss, aux = fn(logp, old, adv)
    for i in range(5):
        ref = np_policy_loss(logp[i].astype(np.float64), old[i], adv[i], mask, 0.1, "token_mean")
        got = [loss[i], aux.clipfrac[i], aux.approx_kl[i], aux.ratio_mean[i]]
        np.testing.assert_allclose(got, ref, atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------------------- value loss


@pytest.mark.parametrize("cliprange_value", [0.2, None])
@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_value_loss_matches_numpy(cliprange_value, reduction):
    rng, mask, f = random_batch(13, B=6, T=8)
    old, ret = f(6, 8), f(6, 8)
    v = old + 0.5 * f(6, 8)
    loss, aux = ppo.ppo_value_loss(v, old, ret, mask, cliprange_value=cliprange_value, reduction=reduction)
    ref_loss, ref_clipfrac = np_value_loss(v.astype(np.float64), old, ret, mask, cliprange_value, reduction)
    np.testing.assert_allclose([loss, aux.clipfrac], [ref_loss, ref_clipfrac], atol=ATOL, rtol=1e-5)
    assert (0.0 < float(aux.clipfrac) < 1.0) == (cliprange_value is not None)
    rv, vv = ret[mask].astype(np.float64), v[mask].astype(np.float64)
    ev = 1 - np.var(rv - vv, ddof=1) / np.var(rv, ddof=1)
    assert float(aux.explained_variance) == pytest.approx(ev, rel=1e-4, abs=1e-5)


def test_value_loss_hand_case_and_gradient():
    # token 0: v=1.0, old=0.5, R=0: unclipped err 1.0, clipped v 0.7 -> 0.49: max 1.0 (grad (v-R)/n)
    # token 1: v=0.0, old=0.5, R=1: unclipped 1.0, clipped v 0.3 -> 0.49: max 1.0
    # token 2: v=0.0, old=0.5, R=-1: unclipped 1.0, clipped 0.3 -> 1.69: max 1.69 (no grad)
    v = jnp.array([[1.0, 0.0, 0.0]])
    old = jnp.array([[0.5, 0.5, 0.5]])
    ret = jnp.array([[0.0, 1.0, -1.0]])
    mask = jnp.ones((1, 3))
    loss, aux = ppo.ppo_value_loss(v, old, ret, mask, cliprange_value=0.2)
    assert float(loss) == pytest.approx(0.5 * (1.0 + 1.0 + 1.69) / 3, rel=1e-6)
    assert float(aux.clipfrac) == pytest.approx(1 / 3, rel=1e-6)
    g = jax.jit(jax.grad(lambda x: ppo.ppo_value_loss(x, old, ret, mask, cliprange_value=0.2)[0]))(v)
    np.testing.assert_allclose(g, [[1.0 / 3, -1.0 / 3, 0.0]], rtol=1e-6)


def test_value_loss_float64_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        v, old, ret = rng.normal(size=(3, 2, 5))
        mask = np.arange(5)[None, :] < np.array([[5], [3]])
        fn = jax.jit(lambda x: ppo.ppo_value_loss(x, old, ret, mask, cliprange_value=0.3)[0])
        g = np.asarray(jax.grad(fn)(jnp.asarray(v)))
        fd = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            e = np.zeros_like(v)
            e[idx] = 1e-6
            fd[idx] = (float(fn(v + e)) - float(fn(v - e))) / 2e-6
        np.testing.assert_allclose(g, fd, atol=1e-7)
        assert fn(v).dtype == jnp.float64


# -------------------------------------------------------------------------------------- ppo_loss


def test_ppo_loss_combines_terms():
    rng, mask, f = random_batch(21, B=4, T=6)
    logp, old, adv, v, ov, ret, ref = (f(4, 6) for _ in range(7))
    loss_fn = jax.jit(ppo.ppo_loss, static_argnames=("vf_coef",))
    loss, aux = loss_fn(logp, old, adv, v, ov, ret, mask, vf_coef=0.5, ref_logp_BT=ref, kl_coef=0.04)
    pg, _ = np_policy_loss(logp.astype(np.float64), old, adv, mask, 0.2, "token_mean")[:2]
    vf, _ = np_value_loss(v.astype(np.float64), ov, ret, mask, 0.2, "token_mean")
    kl = np_reduce(np_kl(logp, ref, "k3"), mask, "token_mean")
    np.testing.assert_allclose([aux.policy_loss, aux.value_loss, aux.kl], [pg, vf, kl], atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(loss, pg + 0.5 * vf + 0.04 * kl, atol=ATOL, rtol=1e-5)
    # d/dlogp of β k3 = β (1 - exp(ref - logp)) / n, on top of the policy gradient (ratio = 1 here)
    def at_old(lp):
        return loss_fn(lp, logp, adv, v, ov, ret, mask, ref_logp_BT=ref, kl_coef=0.04)[0]

    g = jax.jit(jax.grad(at_old))(logp)
    n = mask.sum()
    expect = np.where(mask, (-adv + 0.04 * (1 - np.exp(ref.astype(np.float64) - logp))) / n, 0.0)
    np.testing.assert_allclose(g, expect, atol=1e-6)
    g_v = jax.jit(jax.grad(lambda x: ppo.ppo_loss(logp, old, adv, x, x, ret, mask, vf_coef=0.5)[0]))(v)
    np.testing.assert_allclose(g_v, np.where(mask, 0.5 * (v - ret) / n, 0.0), atol=1e-6)


def test_ppo_loss_without_reference_and_errors():
    z = jnp.zeros((2, 3))
    loss, aux = ppo.ppo_loss(z, z, z + 1, z, z, z + 2, jnp.ones((2, 3)), vf_coef=1.0)
    assert float(loss) == pytest.approx(-1.0 + 0.5 * 4.0) and float(aux.kl) == 0.0
    with pytest.raises(ValueError, match="ref_logp_BT"):
        ppo.ppo_loss(z, z, z, z, z, z, z, kl_coef=0.1)
    with pytest.raises(ValueError, match="reduction"):
        ppo.ppo_loss(z, z, z, z, z, z, z, reduction="mean")
    with pytest.raises(ValueError, match="cliprange"):
        ppo.ppo_policy_loss(z, z, z, z, cliprange=-0.1)
    # a traced kl_coef works under jit
    one = jnp.ones((2, 3))
    fn = jax.jit(lambda b: ppo.ppo_loss(z, z, z, z, z, z, one, ref_logp_BT=z - 1.0, kl_coef=b)[0])
    assert float(fn(0.5)) == pytest.approx(0.5 * (math.exp(-1.0) + 1.0 - 1.0), rel=1e-6)


# -------------------------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_matches_reference_sequence():
    ctrl = ppo_rollout.adaptive_kl_controller(0.2, target=6.0, horizon=10000)
    state = ctrl.init()
    update = jax.jit(lambda kl, s: ctrl.update(kl, s, n_steps=256))
    value = 0.2
    for kl in [0.0, 3.0, 6.0, 6.6, 7.5, 50.0, 1e9]:
        state = update(jnp.float32(kl), state)
        value *= 1 + np.clip(kl / 6.0 - 1, -0.2, 0.2) * 256 / 10000
        assert float(state.kl_coef) == pytest.approx(value, rel=1e-6)
    # hand cases, target 6, horizon 1000, 100 samples: KL 9 -> error 0.5 clipped to 0.2 -> beta * 1.02;
    # KL 5.4 -> error -0.1 -> beta * (1 - 0.1 * 0.1) = beta * 0.99
    hand = ppo_rollout.adaptive_kl_controller(0.5, target=6.0, horizon=1000)
    s = hand.update(jnp.float32(9.0), hand.init(), n_steps=100)
    assert float(s.kl_coef) == pytest.approx(0.51, rel=1e-6)
    s = hand.update(jnp.float32(5.4), s, n_steps=100)
    assert float(s.kl_coef) == pytest.approx(0.51 * 0.99, rel=1e-6)
    assert float(ctrl.init().kl_coef) == pytest.approx(0.2)  # init is not mutated by updates
    with pytest.raises(ValueError, match="horizon"):
        ppo_rollout.adaptive_kl_controller(0.1, target=1.0, horizon=0)


def test_fixed_kl_controller_is_constant():
    ctrl = ppo_rollout.fixed_kl_controller(0.05)
    state = ctrl.init()
    for kl in [0.0, 10.0]:
        state = ctrl.update(jnp.float32(kl), state, n_steps=8)
    assert float(state.kl_coef) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="kl_coef"):
        ppo_rollout.fixed_kl_controller(-0.1)


# ------------------------------------------------------------------------------- score statistics


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_running_moments_equal_moments_of_concatenation(sizes, seed):
    rng = np.random.default_rng(seed)
    rm = ppo_rollout.running_moments()
    update = jax.jit(rm.update)
    state = rm.init()
    chunks = [(rng.normal(size=n) * 3 + 1).astype(np.float32) for n in sizes]
    for c in chunks:  # padded to one shape (one compilation); the padding is masked out
        padded = np.concatenate([c, np.full(6 - len(c), np.nan, np.float32)])
        state = update(padded, state, np.arange(6) < len(c))
    allx = np.concatenate(chunks).astype(np.float64)
    assert float(state.count) == len(allx)
    assert float(state.mean) == pytest.approx(allx.mean(), abs=1e-5)
    std = allx.std(ddof=1) if len(allx) > 1 else 1.0
    assert float(ppo_rollout.running_std(state)) == pytest.approx(std, rel=1e-4)


def test_running_moments_mask_and_normalize():
    rm = ppo_rollout.running_moments()
    state = rm.update(jnp.array([1.0, np.nan, 3.0]), rm.init(), jnp.array([True, False, True]))
    state = jax.jit(rm.update)(jnp.array([5.0, 7.0]), state)
    # scores 1, 3, 5, 7: mean 4, unbiased std sqrt(20/3)
    assert float(state.mean) == pytest.approx(4.0) and float(state.count) == 4.0
    std = math.sqrt(20 / 3)
    out = ppo_rollout.normalize_scores(jnp.array([4.0, 8.0]), state)
    np.testing.assert_allclose(out, [0.0, 4.0 / (std + 1e-8)], rtol=1e-6)
    scaled = ppo_rollout.normalize_scores(jnp.array([4.0]), state, shift_mean=False)
    np.testing.assert_allclose(scaled, [4.0 / std], rtol=1e-6)
    # before two scores the scale is 1
    one = rm.update(jnp.array([2.0]), rm.init())
    np.testing.assert_allclose(ppo_rollout.normalize_scores(jnp.array([5.0]), one), [3.0], rtol=1e-6)


# ------------------------------------------------------------------------- end to end (TRL order)


@pytest.mark.parametrize("whiten_rewards", [False, True])
def test_rollout_to_loss_pipeline_matches_trl_order_numpy(whiten_rewards):
    """TRL PPOTrainer's sequence for right-padded rows: KL-shaped rewards -> (whiten rewards) -> GAE ->
    whiten advantages -> clipped policy + value loss, all in NumPy float64 vs the composed functions."""
    rng, mask, f = random_batch(31, B=6, T=8)
    mask[1:, 0] = True  # TRL rows always have at least one response token
    scores, old_logp, ref_logp, old_v = f(6), f(6, 8), f(6, 8), f(6, 8)
    logp, v = old_logp + 0.3 * f(6, 8), old_v + 0.3 * f(6, 8)

    @jax.jit
    def pipeline(logp, v):
        r = ppo_rollout.kl_penalized_rewards(scores, old_logp, ref_logp, mask, kl_coef=0.05)
        if whiten_rewards:
            r = ppo_rollout.whiten(r, mask, shift_mean=False)
        adv, ret = ppo_rollout.gae_advantages(r, old_v, mask, gamma=1.0, lam=0.95)
        adv = ppo_rollout.whiten(adv, mask)
        return ppo.ppo_loss(logp, old_logp, adv, v, old_v, ret, mask, vf_coef=0.1)

    loss, aux = pipeline(logp, v)

    r = np_rewards(scores, old_logp, ref_logp, mask, 0.05, "k1")
    if whiten_rewards:
        r = np_whiten(r, mask, shift_mean=False)
    adv, ret = np_gae_trl(r, old_v.astype(np.float64), mask, 1.0, 0.95)
    adv = np_whiten(adv, mask)
    ret = np.where(mask, ret, 0.0)
    pg = np_policy_loss(logp.astype(np.float64), old_logp, adv, mask, 0.2, "token_mean")[0]
    vf = np_value_loss(v.astype(np.float64), old_v, ret, mask, 0.2, "token_mean")[0]
    np.testing.assert_allclose([aux.policy_loss, aux.value_loss], [pg, vf], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(loss, pg + 0.1 * vf, atol=1e-4, rtol=1e-4)
