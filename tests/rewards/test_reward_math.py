"""``grpojax.rollout.reward_math`` (the rollout's jitted aggregation + advantages + metrics) equals the
eager composition of the pure functions it wraps, NaN ("not applicable") scores included."""

import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.losses import group_advantages, group_reward_stats
from grpojax.rewards import aggregate, aspect_stats
from grpojax.rollout import reward_math


@pytest.mark.parametrize("aggregation, weights, scale", [
    ("weighted_sum", (2.0, 4.0, 1.0), "group"), ("weighted_sum", None, "batch"), ("min", (9.0, 9.0, 9.0), "none")])
def test_reward_math_equals_the_eager_functions(aggregation, weights, scale):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(3, 4, 3)).astype(np.float32)
    s[0, 1, 2] = np.nan  # one inapplicable aspect
    s[2, :, 0] = 0.5     # one aspect constant within a group
    names = ("a", "b", "c")
    rewards, adv, metrics = reward_math(jnp.asarray(s), aggregation=aggregation, weights=weights, scale=scale,
                                        names=names)
    kw = {"weights": jnp.asarray(weights)} if weights and aggregation == "weighted_sum" else {}  # min: ignored
    r_ref = aggregate(aggregation, jnp.asarray(s), **kw)
    np.testing.assert_allclose(rewards, r_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(adv, group_advantages(r_ref, scale=scale), rtol=1e-5, atol=1e-6)
    stats = group_reward_stats(r_ref)
    ref = {"reward": stats.reward, "reward_std": stats.reward_std,
           "frac_reward_zero_std": stats.frac_reward_zero_std, **aspect_stats(jnp.asarray(s), list(names))}
    assert set(metrics) == set(ref)
    for k in ref:
        np.testing.assert_allclose(metrics[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert float(metrics["rewards/c/frac_nan"]) == pytest.approx(1 / 12)
