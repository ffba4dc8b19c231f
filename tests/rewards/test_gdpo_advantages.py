"""GDPO (``aggregation: normalize_then_sum``, arXiv 2601.05242; ALGORITHMS.md 1.2): each aspect z-scored in
its group, the weighted sum z-scored over the batch, and THAT is the advantage -- no group re-scaling on top.
Checked against a float64 NumPy reference; an explicit ``scale_rewards`` with GDPO is refused."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.losses import group_advantages
from grpojax.rollout import reward_math

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPS = 1e-4


def gdpo_reference(s, w):
    """float64, loop by loop: advantages [B, G] (0 where a completion has no valid aspect)."""
    s = np.asarray(s, np.float64)
    B, G, R = s.shape
    z = np.full(s.shape, np.nan)
    for b in range(B):
        for r in range(R):
            vals = [s[b, g, r] for g in range(G) if not np.isnan(s[b, g, r])]
            for g in range(G):
                if np.isnan(s[b, g, r]):
                    continue
                if len(vals) < 2 or max(vals) == min(vals):
                    z[b, g, r] = 0.0
                else:
                    z[b, g, r] = (s[b, g, r] - np.mean(vals)) / (np.std(vals, ddof=1) + EPS)
    x = np.full((B, G), np.nan)
    for b in range(B):
        for g in range(G):
            ok = ~np.isnan(z[b, g])
            if ok.any():
                x[b, g] = float(np.sum(z[b, g][ok] * w[ok]))
    v = x[~np.isnan(x)]
    adv = (x - v.mean()) / (v.std(ddof=1) + EPS)
    return np.where(np.isnan(adv), 0.0, adv)


def _scores(seed=0, shape=(5, 6, 3)):
    rng = np.random.default_rng(seed)
    # aspects on very different scales: GDPO's point is that none of them dominates
    s = (rng.normal(size=shape) * np.array([1.0, 10.0, 0.1])).astype(np.float32)
    s[rng.uniform(size=shape) < 0.15] = np.nan
    s[0, 0, :] = np.nan   # no valid aspect: advantage 0
    s[1, :, 0] = 0.5      # an aspect constant within a group
    s[2, :, :] = 1.0      # a group with all rewards equal
    return s


def test_gdpo_advantages_equal_the_float64_reference_without_group_rescaling():
    s, w = _scores(), np.array([1.0, 2.0, 0.5])
    rewards, adv, metrics = reward_math(jnp.asarray(s), aggregation="normalize_then_sum", weights=tuple(w),
                                        names=("a", "b", "c"))
    want = gdpo_reference(s, w)
    np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-5)
    assert float(adv[0, 0]) == 0.0 and not np.any(np.isnan(np.asarray(adv)))
    # the batch z-score has mean 0 and std 1 over the valid completions (not std 1 in every group)
    valid = ~np.all(np.isnan(s), axis=-1)
    assert abs(want[valid].mean()) < 1e-9 and abs(want[valid].std(ddof=1) - 1) < 1e-3
    # what the old code did (group re-scaling on top) is far from GDPO
    rescaled = np.asarray(group_advantages(rewards, scale="group"))
    assert np.max(np.abs(rescaled - want)) > 0.1
    # the logged reward is the weighted sum of the raw scores, not the (mean 0) z-score
    raw = np.where(np.isnan(s), 0.0, s.astype(np.float64)) @ w
    np.testing.assert_allclose(float(metrics["reward"]), raw[valid].mean(), rtol=1e-5)


def test_explicit_scale_rewards_with_gdpo_is_refused():
    with pytest.raises(ValueError, match="scale_rewards='group' does not apply to aggregation='normalize_then_sum'"):
        reward_math(jnp.asarray(_scores()), aggregation="normalize_then_sum", scale="group", names=("a", "b", "c"))


def test_config_refuses_scale_rewards_with_normalize_then_sum_in_one_line(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(UserError) as e:  # tiny_grpo.yaml sets scale_rewards: group
        load_config("configs/tiny_grpo.yaml", ["grpo.aggregation=normalize_then_sum"])
    msg = str(e.value)
    assert "\n" not in msg and "grpo.scale_rewards" in msg and "normalize_then_sum" in msg, msg
    cfg = load_config("configs/tiny_grpo.yaml", ["grpo.aggregation=normalize_then_sum", "grpo.scale_rewards=null"])
    assert cfg.grpo.scale_rewards is None
    assert load_config("configs/tiny_grpo.yaml", ["grpo.scale_rewards=null"]).grpo.scale_rewards is None
