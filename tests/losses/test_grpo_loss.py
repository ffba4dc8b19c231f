"""Tests for grpojax.losses.grpo: group advantages and the clipped GRPO policy loss.

The references below are written from ALGORITHMS.md §1.3-1.4 in float64 NumPy with explicit loops,
independently of the JAX code.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax.losses import aggregate_token_loss, group_advantages, group_reward_stats, grpo_loss

LN = math.log
NAN = float("nan")


STATIC = ("loss_type", "epsilon", "epsilon_high", "delta", "beta", "kl_estimator",
          "importance_sampling_level", "max_completion_length")


def _loss_value(logp, old_logp, ref_logp, advantages, mask, *, loss_type="dapo", epsilon=0.2,
                epsilon_high=None, delta=None, beta=0.0, kl_estimator="k3", importance_sampling_level="token",
                max_completion_length=None, num_items=None):
    return grpo_loss(logp, old_logp, ref_logp, advantages, mask, loss_type=loss_type, epsilon=epsilon,
                     epsilon_high=epsilon_high, delta=delta, beta=beta, kl_estimator=kl_estimator,
                     importance_sampling_level=importance_sampling_level,
                     max_completion_length=max_completion_length, num_items=num_items)[0]


GRAD_KW = dict(epsilon=0.2, epsilon_high=0.28, delta=1.6, beta=0.05, kl_estimator="k3")

# Compiled once per static configuration and shape: much cheaper on CPU than op-by-op eager autodiff.
jit_loss = jax.jit(_loss_value, static_argnames=STATIC)
jit_value_and_grad = jax.jit(jax.value_and_grad(_loss_value), static_argnames=STATIC)
jit_full = jax.jit(grpo_loss, static_argnames=STATIC)  # (loss, aux)
jit_adv = jax.jit(group_advantages, static_argnames=("scale", "eps"))
jit_stats = jax.jit(group_reward_stats)
jit_grad_all = jax.jit(jax.grad(_loss_value, argnums=(0, 1, 2, 3)), static_argnames=STATIC)


# ------------------------------------------------------------------------------------- NumPy references


def np_group_advantages(rewards, scale, eps=1e-4):
    r = np.asarray(rewards, np.float64)
    out = np.zeros_like(r)
    all_valid = r[~np.isnan(r)]
    batch_std = all_valid.std(ddof=1) if all_valid.size > 1 else 0.0
    for b in range(r.shape[0]):
        vals = r[b][~np.isnan(r[b])]
        if vals.size == 0 or np.all(vals == vals[0]):
            continue  # zero-std group (or nothing valid): advantage 0
        mu = vals.mean()
        sd = vals.std(ddof=1) if vals.size > 1 else 0.0
        for g in range(r.shape[1]):
            if np.isnan(r[b, g]):
                continue
            a = r[b, g] - mu
            out[b, g] = {"group": a / (sd + eps), "batch": a / (batch_std + eps), "none": a}[scale]
    return out


def np_kl(logp, ref, est):
    d = logp - ref
    return {"k1": d, "k2": 0.5 * d * d, "k3": np.exp(-d) + d - 1.0}[est]


def np_grpo_loss(logp, old, ref, adv, mask, *, loss_type="dapo", epsilon=0.2, epsilon_high=None,
                 delta=None, beta=0.0, kl_estimator="k3", importance_sampling_level="token",
                 max_completion_length=None, num_items=None):
    logp, old, adv, mask = (np.asarray(x, np.float64) for x in (logp, old, adv, mask))
    eh = epsilon if epsilon_high is None else epsilon_high
    n_rows, n_cols = logp.shape
    per_tok = np.zeros((n_rows, n_cols))
    ratios = np.ones((n_rows, n_cols))
    kls = np.zeros((n_rows, n_cols))
    for i in range(n_rows):
        act = mask[i] > 0
        if importance_sampling_level == "sequence":
            lw = np.sum((logp[i] - old[i])[act]) / max(act.sum(), 1)
        for t in range(n_cols):
            if not act[t]:
                continue
            rho = math.exp(lw) if importance_sampling_level == "sequence" else math.exp(logp[i, t] - old[i, t])
            unclipped = min(rho, delta) if delta is not None else rho
            clipped = min(max(rho, 1 - epsilon), 1 + eh)
            loss = -min(unclipped * adv[i], clipped * adv[i])
            if ref is not None:
                kls[i, t] = np_kl(logp[i, t], float(ref[i, t]), kl_estimator)
                loss += beta * kls[i, t]
            per_tok[i, t] = loss
            ratios[i, t] = rho
    n_i = mask.sum(1)
    if loss_type == "grpo":
        total = np.mean([per_tok[i].sum() / max(n_i[i], 1) for i in range(n_rows)])
    elif loss_type == "bnpo":
        total = per_tok.sum() / max(mask.sum(), 1)
    elif loss_type == "dr_grpo":
        total = per_tok.sum() / (n_rows * (max_completion_length or n_cols))
    else:
        total = per_tok.sum() / max(mask.sum() if num_items is None else num_items, 1)
    act = mask > 0
    a_tok = np.broadcast_to(adv[:, None], mask.shape)
    low = (ratios < 1 - epsilon) & (a_tok < 0) & act
    high = (ratios > 1 + eh) & (a_tok > 0) & act
    n_act = max(act.sum(), 1)
    aux = dict(kl=kls[act].sum() / n_act, clip_ratio_low_mean=low.sum() / n_act,
               clip_ratio_high_mean=high.sum() / n_act, clip_ratio_region_mean=(low | high).sum() / n_act,
               ratio_mean=ratios[act].sum() / n_act, num_tokens=act.sum())
    return total, aux


def random_batch(seed, n=6, t=5, spread=0.4):
    rng = np.random.default_rng(seed)
    logp = -rng.uniform(0.05, 3.0, size=(n, t))
    old = logp + rng.normal(scale=spread, size=(n, t))  # ratios spread well across the clip range
    ref = logp + rng.normal(scale=0.5, size=(n, t))
    adv = rng.normal(size=n)
    lengths = rng.integers(1, t + 1, size=n)
    lengths[0] = 0  # one fully masked row
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)
    return [x.astype(np.float32) for x in (logp, old, ref, adv)] + [mask]


# ------------------------------------------------------------------------------------- advantages


def test_group_advantages_hand_case():
    # group 0: [1, 2, 3] -> mean 2, Bessel std 1 -> [-1, 0, 1] / 1.0001
    # group 1: [5, NaN, 7] -> mean 6, std sqrt(2); NaN -> 0
    # group 2: [0.1, 0.1, 0.1] -> all equal -> exactly 0
    r = jnp.array([[1.0, 2.0, 3.0], [5.0, NAN, 7.0], [0.1, 0.1, 0.1]])
    a = jit_adv(r, scale="group")
    np.testing.assert_allclose(a[0], [-1 / 1.0001, 0.0, 1 / 1.0001], rtol=1e-6)
    np.testing.assert_allclose(a[1], [-1 / (math.sqrt(2) + 1e-4), 0.0, 1 / (math.sqrt(2) + 1e-4)], rtol=1e-6)
    np.testing.assert_array_equal(a[2], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(jit_adv(r, scale="none")[1], [-1.0, 0.0, 1.0])
    # batch std over the 8 valid rewards [1,2,3,5,7,.1,.1,.1]
    bstd = np.std([1, 2, 3, 5, 7, 0.1, 0.1, 0.1], ddof=1)
    np.testing.assert_allclose(jit_adv(r, scale="batch")[0], np.array([-1, 0, 1]) / (bstd + 1e-4),
                               rtol=1e-5)
    s = jit_stats(r)
    np.testing.assert_array_equal(s.zero_std_B, [False, False, True])
    np.testing.assert_allclose(s.frac_reward_zero_std, 1 / 3)
    np.testing.assert_array_equal(s.count_B, [3, 2, 3])
    np.testing.assert_allclose(s.reward, np.mean([1, 2, 3, 5, 7, 0.1, 0.1, 0.1]), rtol=1e-6)
    np.testing.assert_allclose(s.reward_std, (1 + math.sqrt(2)) / 3, rtol=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_reference_with_nans(scale):
    rng = np.random.default_rng(7)
    r = rng.normal(size=(5, 6)).astype(np.float32)
    r[rng.uniform(size=r.shape) < 0.25] = np.nan
    r[1] = np.nan  # no valid reward at all
    r[2, 1:] = np.nan  # a single valid reward
    r[3] = 0.3  # all equal
    got = jit_adv(jnp.asarray(r), scale=scale)
    assert not np.any(np.isnan(got))
    np.testing.assert_allclose(got, np_group_advantages(r, scale), rtol=1e-5, atol=1e-6)
    if scale == "group":  # eager == jit
        np.testing.assert_allclose(group_advantages(jnp.asarray(r)), got, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=12, max_size=12),
       st.sampled_from(["group", "batch", "none"]))
def test_advantages_have_zero_group_mean(values, scale):
    r = jnp.asarray(values, jnp.float32).reshape(3, 4)
    a = np.asarray(jit_adv(r, scale=scale), np.float64)
    scale_ref = np.abs(np.asarray(values)).max() + 1.0
    np.testing.assert_allclose(a.mean(axis=1), 0.0, atol=1e-5 * scale_ref)


@settings(max_examples=15, deadline=None)
@given(st.floats(-1e3, 1e3, allow_nan=False, width=32), st.sampled_from(["group", "batch", "none"]))
def test_equal_rewards_give_zero_advantage_and_zero_policy_gradient(value, scale):
    r = jnp.full((2, 4), value, jnp.float32)
    adv = jit_adv(r, scale=scale).reshape(-1)
    np.testing.assert_array_equal(adv, np.zeros(8))
    logp, old, ref, _, mask = random_batch(3, n=8, t=4)
    _, grad = jit_value_and_grad(logp, old, None, adv, mask)
    np.testing.assert_array_equal(grad, np.zeros((8, 4)))


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match="group, batch, none"):
        group_advantages(jnp.zeros((2, 3)), scale="std")
    with pytest.raises(AssertionError):
        group_advantages(jnp.zeros((6,)))
    with pytest.raises(ValueError, match="eps"):
        group_advantages(jnp.zeros((2, 3)), eps=-1.0)


# ------------------------------------------------------------------------------------- policy loss


def hand_batch():
    # ratios: row 0 -> [1, 2] (A = +1), row 1 -> [0.5, masked] (A = -1), eps = 0.2
    logp = jnp.array([[LN(0.5), LN(0.5)], [LN(0.25), 0.0]])
    old = jnp.array([[LN(0.5), LN(0.25)], [LN(0.5), 0.0]])
    adv = jnp.array([1.0, -1.0])
    mask = jnp.array([[1.0, 1.0], [1.0, 0.0]])
    return logp, old, adv, mask


@pytest.mark.parametrize("loss_type,want", [("dapo", -1.4 / 3), ("bnpo", -1.4 / 3), ("grpo", -0.15),
                                            ("dr_grpo", -0.35)])
def test_grpo_loss_hand_case(loss_type, want):
    # token losses: rho=1,A=1 -> -1; rho=2,A=1 -> -min(2, 1.2) = -1.2 (high clip);
    # rho=0.5,A=-1 -> -min(-0.5, -0.8) = 0.8 (low clip).  Sum -1.4 over 3 tokens;
    # grpo: mean(-2.2/2, 0.8/1) = -0.15;  dr_grpo: -1.4 / (2 rows * L_max 2) = -0.35
    logp, old, adv, mask = hand_batch()
    loss, aux = jit_full(logp, old, None, adv, mask, loss_type=loss_type)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(aux.clip_ratio_low_mean, 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(aux.clip_ratio_high_mean, 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(aux.clip_ratio_region_mean, 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(aux.ratio_mean, 3.5 / 3, rtol=1e-6)
    assert float(aux.num_tokens) == 3.0 and float(aux.kl) == 0.0


def test_grpo_loss_hand_case_sequence_level_delta_and_kl():
    logp, old, adv, mask = hand_batch()
    # GSPO: row 0 rho = exp((0 + ln 2)/2) = sqrt 2 -> clipped 1.2 for both tokens -> -2.4;
    # row 1 rho = 0.5 -> 0.8.  dapo: -1.6 / 3
    loss, _ = jit_full(logp, old, None, adv, mask, importance_sampling_level="sequence")
    np.testing.assert_allclose(loss, -1.6 / 3, rtol=1e-6)
    # delta caps the unclipped term: rho = 2, A = -1 -> -min(min(2, 1.5) * -1, 1.2 * -1) = 1.5 (else 2)
    lp, od, one = jnp.array([[LN(0.5)]]), jnp.array([[LN(0.25)]]), jnp.ones((1, 1))
    np.testing.assert_allclose(jit_full(lp, od, None, -one[0], one)[0], 2.0, rtol=1e-6)
    np.testing.assert_allclose(jit_full(lp, od, None, -one[0], one, delta=1.5)[0], 1.5, rtol=1e-6)
    # KL: ref = ln 0.25 at logp = ln 0.5 -> k3 = 0.193147; rho = 1, A = 0 -> loss = beta * k3
    loss, aux = jit_full(lp, lp, od, jnp.zeros(1), one, beta=0.1)
    np.testing.assert_allclose(loss, 0.0193147, rtol=1e-5)
    np.testing.assert_allclose(aux.kl, 0.193147, rtol=1e-5)


CASES = list(itertools.product(["grpo", "bnpo", "dr_grpo", "dapo"], ["token", "sequence"],
                               ["k1", "k2", "k3"], [(0.2, None), (0.2, 0.28), (10.0, None)], [None, 1.5]))


@pytest.mark.parametrize("loss_type,level,est,eps,delta", CASES)
def test_grpo_loss_matches_reference(loss_type, level, est, eps, delta):
    # eps=(10, None) switches clipping off; (0.2, 0.28) is DAPO clip-higher.
    logp, old, ref, adv, mask = random_batch(CASES.index((loss_type, level, est, eps, delta)))
    kw = dict(loss_type=loss_type, epsilon=eps[0], epsilon_high=eps[1], delta=delta, beta=0.05,
              kl_estimator=est, importance_sampling_level=level, max_completion_length=7)
    loss, aux = grpo_loss(logp, old, ref, adv, mask, **kw)
    want, want_aux = np_grpo_loss(logp, old, ref, adv, mask, **kw)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
    for k, v in want_aux.items():
        np.testing.assert_allclose(getattr(aux, k), v, rtol=2e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize("loss_type,level", list(itertools.product(["grpo", "bnpo", "dr_grpo", "dapo"],
                                                                   ["token", "sequence"])))
def test_grpo_loss_gradient_matches_finite_differences_of_reference(loss_type, level):
    logp, old, ref, adv, mask = random_batch(11, n=4, t=4)
    kw = dict(loss_type=loss_type, importance_sampling_level=level, **GRAD_KW)
    _, grad = jit_value_and_grad(logp, old, ref, adv, mask, **kw)
    lp64 = logp.astype(np.float64)
    num = np.zeros_like(lp64)
    h = 1e-6
    for idx in np.ndindex(lp64.shape):
        up, dn = lp64.copy(), lp64.copy()
        up[idx] += h
        dn[idx] -= h
        f_up = np_grpo_loss(up, old, ref, adv, mask, **kw)[0]
        f_dn = np_grpo_loss(dn, old, ref, adv, mask, **kw)[0]
        num[idx] = (f_up - f_dn) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-3, atol=1e-5)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([2, 4, 8]), st.sampled_from(["token", "sequence"]))
def test_dapo_microbatches_with_global_num_items_equal_full_batch(seed, k, level):
    logp, old, ref, adv, mask = random_batch(seed, n=8, t=5)
    kw = dict(loss_type="dapo", beta=0.04, importance_sampling_level=level)
    full = jit_loss(logp, old, ref, adv, mask, **kw)
    num_items = mask.sum()
    parts = [jit_loss(*(x[i::k] for x in (logp, old, ref, adv, mask)), num_items=num_items, **kw)
             for i in range(k)]
    np.testing.assert_allclose(sum(float(p) for p in parts), float(full), rtol=1e-6, atol=1e-7)


def test_dapo_microbatches_under_vmap_equal_full_batch():
    # the trainer's layout: [k, N/k, T] micro-batches mapped with vmap, summed, global num_items
    logp, old, ref, adv, mask = random_batch(21, n=8, t=5)
    kw = dict(loss_type="dapo", beta=0.04)
    full = jit_loss(logp, old, ref, adv, mask, **kw)
    stack = [x.reshape(4, 2, *x.shape[1:]) for x in (logp, old, ref, adv, mask)]
    per_micro = jax.jit(jax.vmap(lambda a, b, c, d, e: _loss_value(a, b, c, d, e, num_items=mask.sum(), **kw)))
    np.testing.assert_allclose(float(jnp.sum(per_micro(*stack))), float(full), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_masked_tokens_equal_dropped_tokens(loss_type, level):
    logp, old, ref, adv, mask = random_batch(5)  # the [6, 5] shape of the reference test: eager-cached
    pad = lambda x, v: np.concatenate([x, np.full((x.shape[0], 3), v, np.float32)], axis=1)  # noqa: E731
    kw = dict(loss_type=loss_type, beta=0.1, importance_sampling_level=level, max_completion_length=8)
    short, short_aux = grpo_loss(logp, old, ref, adv, mask, **kw)
    # padded positions hold NaN / inf garbage under a zero mask
    long, long_aux = grpo_loss(pad(logp, np.nan), pad(old, np.inf), pad(ref, -np.inf), adv,
                               pad(mask, 0.0), **kw)
    np.testing.assert_allclose(long, short, rtol=1e-6)
    for a, b in zip(long_aux, short_aux):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    if loss_type in ("bnpo", "dapo"):  # token-normalised losses also ignore fully masked rows
        keep = mask.sum(1) > 0
        dropped, _ = grpo_loss(logp[keep], old[keep], ref[keep], adv[keep], mask[keep], **kw)
        np.testing.assert_allclose(dropped, short, rtol=1e-6)


def test_gradients_finite_with_fully_masked_rows_and_garbage():
    logp, old, ref, adv, mask = random_batch(9, n=4, t=4)  # same shapes/config as the FD test: no recompiles
    mask[2] = 0.0
    logp[2] = np.nan
    old[2, 0] = np.inf
    ref[2, 1] = -np.inf
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
        for level in ("token", "sequence"):
            loss, grad = jit_value_and_grad(logp, old, ref, adv, mask, loss_type=loss_type,
                                            importance_sampling_level=level, **GRAD_KW)
            assert np.isfinite(loss) and np.all(np.isfinite(grad)), (loss_type, level)
            np.testing.assert_array_equal(grad[2], 0.0)
            np.testing.assert_array_equal(np.asarray(grad)[mask == 0], 0.0)
    all_masked = np.zeros_like(mask)
    loss, grad = jit_value_and_grad(logp, old, ref, adv, all_masked, loss_type="dapo", **GRAD_KW)
    assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0)


def test_stop_gradient_on_old_ref_and_advantages():
    logp, old, ref, adv, mask = random_batch(13, n=3, t=3)
    g_logp, *others = jit_grad_all(logp, old, ref, adv, mask, beta=0.1)
    assert np.any(np.asarray(g_logp) != 0)
    for g in others:  # old_logp, ref_logp, advantages
        np.testing.assert_array_equal(g, 0.0)
    # old_logp=None means on-policy: rho = 1 and the gradient is -A * m / num_items
    _, g = jit_value_and_grad(logp, None, None, adv, mask)
    np.testing.assert_allclose(g, -adv[:, None] * mask / mask.sum(), rtol=1e-6)


def test_jit_and_vmap_variants():
    logp, old, ref, adv, mask = random_batch(17)
    kw = dict(loss_type="grpo", beta=0.04, importance_sampling_level="sequence", epsilon_high=0.28)
    eager, eager_aux = grpo_loss(logp, old, ref, adv, mask, **kw)
    jitted, jit_aux = jax.jit(lambda *a: grpo_loss(*a, **kw))(logp, old, ref, adv, mask)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    np.testing.assert_allclose(jit_aux.metrics()["clip_ratio/region_mean"], eager_aux.clip_ratio_region_mean)
    # traced beta and num_items are accepted under jit
    f = jax.jit(lambda b, n: grpo_loss(logp, old, ref, adv, mask, beta=b, num_items=n)[0])
    np.testing.assert_allclose(f(0.04, mask.sum()), grpo_loss(logp, old, ref, adv, mask, beta=0.04)[0], rtol=1e-6)
    stacked = [np.stack([x, x[::-1]]) for x in (logp, old, ref, adv, mask)]
    vm = jax.jit(jax.vmap(lambda *a: grpo_loss(*a, **kw)[0]))(*stacked)
    np.testing.assert_allclose(vm[0], eager, rtol=1e-6)
    rev = grpo_loss(logp[::-1], old[::-1], ref[::-1], adv[::-1], mask[::-1], **kw)[0]
    np.testing.assert_allclose(vm[1], rev, rtol=1e-6)


def test_grpo_loss_bad_input():
    logp, old, ref, adv, mask = random_batch(1, n=2, t=3)
    with pytest.raises(ValueError, match="grpo, bnpo, dr_grpo, dapo"):
        grpo_loss(logp, old, ref, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="k1, k2, k3"):
        grpo_loss(logp, old, ref, adv, mask, kl_estimator="k5")
    with pytest.raises(ValueError, match="token, sequence"):
        grpo_loss(logp, old, ref, adv, mask, importance_sampling_level="sentence")
    with pytest.raises(ValueError, match="ref_logp_NT is None"):
        grpo_loss(logp, old, None, adv, mask, beta=0.04)
    with pytest.raises(ValueError, match="epsilon"):
        grpo_loss(logp, old, ref, adv, mask, epsilon=-0.2)
    with pytest.raises(ValueError, match="epsilon_high"):
        grpo_loss(logp, old, ref, adv, mask, epsilon_high=-0.1)
    with pytest.raises(ValueError, match="delta"):
        grpo_loss(logp, old, ref, adv, mask, delta=0.9)
    with pytest.raises(AssertionError):  # chex: advantages must be [N]
        grpo_loss(logp, old, ref, adv[:, None], mask)
    with pytest.raises(AssertionError):  # chex: logp must be [N, T]
        grpo_loss(logp[0], old[0], ref[0], adv, mask[0])
    with pytest.raises(AssertionError):  # chex: mask shape must match
        grpo_loss(logp, old, ref, adv, mask[:, :2])
    with pytest.raises(AssertionError):  # chex: advantages length must be N
        grpo_loss(logp, old, ref, adv[:1], mask)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_token_loss(jnp.zeros((2, 2)), jnp.ones((2, 2)), loss_type="dr_grpo", max_completion_length=0)
