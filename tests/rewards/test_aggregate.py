"""Tests for grpojax.rewards.aggregate against float64 NumPy references, plus the NaN contract."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax import rewards
from grpojax.losses import group_advantages

NAN = float("nan")
j_aggregate = jax.jit(rewards.aggregate, static_argnames=("name", "renormalize", "temperature", "eps"))
j_stats = jax.jit(rewards.aspect_stats, static_argnames="aspect_names")
j_soft_min = jax.jit(rewards.soft_min)  # traced temperature: one compile for all hypothesis examples
j_advantages = jax.jit(group_advantages)


def np_weighted_sum(s, w, renormalize=False):
    s = np.asarray(s, np.float64)
    out = np.full(s.shape[:-1], np.nan)
    for idx in np.ndindex(s.shape[:-1]):
        valid = ~np.isnan(s[idx])
        if valid.any():
            out[idx] = np.sum(s[idx][valid] * w[valid])
            if renormalize and w[valid].sum() != 0:
                out[idx] *= w.sum() / w[valid].sum()
    return out


def np_gdpo(s, w, eps=1e-4):
    s = np.asarray(s, np.float64)
    n_b, n_g, n_r = s.shape
    z = np.full(s.shape, np.nan)
    for b in range(n_b):
        for r in range(n_r):
            col = s[b, :, r]
            vals = col[~np.isnan(col)]
            for g in range(n_g):
                if np.isnan(col[g]):
                    continue
                if vals.size < 2 or np.all(vals == vals[0]):
                    z[b, g, r] = 0.0
                else:
                    z[b, g, r] = (col[g] - vals.mean()) / (vals.std(ddof=1) + eps)
    x = np_weighted_sum(z, w)
    v = x[~np.isnan(x)]
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    return (x - v.mean()) / (sd + eps)


def np_soft_min(s, tau):
    s = np.asarray(s, np.float64)
    out = np.full(s.shape[:-1], np.nan)
    for idx in np.ndindex(s.shape[:-1]):
        v = s[idx][~np.isnan(s[idx])]
        if v.size:
            out[idx] = -tau * np.log(np.mean(np.exp(-v / tau)))
    return out


def make_scores(seed, shape=(4, 5, 3), nan_frac=0.2):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=shape).astype(np.float32)
    s[rng.uniform(size=shape) < nan_frac] = np.nan
    s[0, 0, :] = np.nan  # a completion with no valid aspect
    s[1, :, 0] = 0.5  # an aspect that is constant within a group
    return s


def test_weighted_sum_hand_case_and_nan_skipping():
    s = jnp.array([[1.0, 2.0, 3.0], [1.0, NAN, 3.0], [NAN, NAN, NAN]])
    w = jnp.array([1.0, 0.5, 2.0])
    got = j_aggregate("weighted_sum", s, weights=w)
    np.testing.assert_allclose(got[:2], [1 + 1 + 6, 1 + 6])
    assert np.isnan(got[2])
    # renormalised: (1 + 6) * 3.5 / 3
    np.testing.assert_allclose(j_aggregate("weighted_sum", s, weights=w, renormalize=True)[1], 7 * 3.5 / 3,
                               rtol=1e-6)
    np.testing.assert_allclose(rewards.weighted_sum(s[:2]), [6.0, 4.0])  # eager, default unit weights


@pytest.mark.parametrize("renormalize", [False, True])
def test_weighted_sum_matches_reference(renormalize):
    s = make_scores(0)
    w = np.array([1.0, 0.3, 2.0])
    got = j_aggregate("weighted_sum", s, weights=w, renormalize=renormalize)
    np.testing.assert_allclose(got, np_weighted_sum(s, w, renormalize), rtol=1e-5, atol=1e-6)


def test_normalize_then_sum_matches_reference():
    s = make_scores(1)
    w = np.array([1.0, 0.5, 2.0])
    got = j_aggregate("normalize_then_sum", s, weights=w)
    want = np_gdpo(s, w)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    valid = got[~np.isnan(got)]  # batch z-scored
    np.testing.assert_allclose(valid.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(valid.std(ddof=1), 1.0, rtol=1e-3)


def test_gdpo_is_invariant_to_per_aspect_scale_unlike_weighted_sum():
    # GDPO's point: an aspect with a 100x larger range does not dominate after per-group normalisation.
    s = make_scores(2, nan_frac=0.0)
    s[0, 0, :] = np.random.default_rng(3).normal(size=3)
    scaled = s * np.array([100.0, 1.0, 1.0], np.float32) + np.array([5.0, 0.0, 0.0], np.float32)
    a = j_aggregate("normalize_then_sum", s)
    b = j_aggregate("normalize_then_sum", scaled)
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_min_and_soft_min():
    s = jnp.array([[3.0, 1.0, 2.0], [NAN, 4.0, NAN], [NAN, NAN, NAN]])
    got = j_aggregate("min", s)
    np.testing.assert_allclose(got[:2], [1.0, 4.0])
    assert np.isnan(got[2])
    # hand value, tau = 1: -log((e^-3 + e^-1 + e^-2) / 3) = -log(0.553001 / 3) = 1.691006
    np.testing.assert_allclose(j_aggregate("soft_min", s, temperature=1.0)[0], 1.691006, rtol=1e-6)
    x = make_scores(4)
    for tau in (0.1, 1.0, 5.0):
        got = j_aggregate("soft_min", x, temperature=tau)
        np.testing.assert_allclose(got, np_soft_min(x, tau), rtol=1e-5, atol=1e-6)
    # limits: tau -> 0 gives the min, tau -> inf the mean of the valid aspects
    np.testing.assert_allclose(j_aggregate("soft_min", s, temperature=1e-3)[:2], [1.0, 4.0], atol=2e-3)
    np.testing.assert_allclose(j_aggregate("soft_min", s, temperature=1e4)[:2], [2.0, 4.0], atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        rewards.soft_min(s, temperature=0.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.floats(-50, 50, width=32), st.just(NAN)), min_size=4, max_size=4),
       st.floats(0.05, 20.0))
def test_soft_min_lies_between_min_and_mean(values, tau):
    s = jnp.asarray(values, jnp.float32)
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    got = float(j_soft_min(s, tau))
    if v.size == 0:
        assert math.isnan(got)
    else:
        assert v.min() - 1e-3 <= got <= v.mean() + 1e-3 * (1 + abs(v.mean()))


def test_clip_and_affine_per_aspect():
    s = jnp.array([[-1.0, 0.5, 9.0], [NAN, 3.0, -7.0]])
    c = rewards.clip(s, low=[0.0, 0.0, -5.0], high=1.0)
    np.testing.assert_allclose(c, [[0.0, 0.5, 1.0], [NAN, 1.0, -5.0]])
    a = rewards.affine(s, scale=[2.0, 1.0, 0.5], shift=1.0)
    np.testing.assert_allclose(a, [[-1.0, 1.5, 5.5], [NAN, 4.0, -2.5]])
    with pytest.raises(ValueError, match=r"clip low .*\(3,\)"):
        rewards.clip(s, low=[0.0, 1.0])


def test_aggregate_dispatch_errors():
    with pytest.raises(ValueError, match="weighted_sum, normalize_then_sum, min, soft_min"):
        rewards.aggregate("mean", jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        rewards.aggregate("weighted_sum", jnp.zeros((2, 3)), weights=[1.0, 2.0])
    with pytest.raises(AssertionError):  # GDPO needs [B, G, R]
        rewards.aggregate("normalize_then_sum", jnp.zeros((2, 3)))


@pytest.mark.parametrize("name", ["weighted_sum", "normalize_then_sum", "min", "soft_min"])
def test_nan_contract_row_without_valid_aspect_gets_zero_advantage(name):
    # completion (0, 0) has no valid aspect -> NaN reward -> advantage exactly 0, and the rest of its
    # group is normalised as if it were absent
    s = make_scores(5)
    reward_BG = j_aggregate(name, s)
    assert np.isnan(reward_BG[0, 0]) and np.sum(np.isnan(reward_BG)) == np.sum(np.all(np.isnan(s), -1))
    adv = j_advantages(reward_BG)
    assert not np.any(np.isnan(adv))
    assert float(adv[0, 0]) == 0.0
    np.testing.assert_allclose(adv[0, 1:], j_advantages(reward_BG[:1, 1:])[0], rtol=1e-6)


def test_aspect_stats_matches_reference():
    s = make_scores(6)
    names = ("politeness", "meaningfulness", "safety")
    got = j_stats(s, aspect_names=names)
    assert set(got) == {f"rewards/{a}/{k}" for a in names for k in ("mean", "std", "frac_zero_std", "frac_nan")}
    for r, a in enumerate(names):
        col = s[..., r].astype(np.float64)
        v = col[~np.isnan(col)]
        np.testing.assert_allclose(got[f"rewards/{a}/mean"], v.mean(), rtol=1e-5)
        np.testing.assert_allclose(got[f"rewards/{a}/std"], v.std(ddof=1), rtol=1e-5)
        np.testing.assert_allclose(got[f"rewards/{a}/frac_nan"], np.isnan(col).mean(), rtol=1e-6)
        zero = [np.unique(g[~np.isnan(g)]).size <= 1 for g in col]
        np.testing.assert_allclose(got[f"rewards/{a}/frac_zero_std"], np.mean(zero), rtol=1e-6)
    assert float(got["rewards/politeness/frac_zero_std"]) >= 0.25  # group 1 is constant by construction
    with pytest.raises(ValueError, match="2 aspect names"):
        rewards.aspect_stats(jnp.asarray(s), ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        rewards.aspect_stats(jnp.asarray(s), ["a", "a", "b"])
