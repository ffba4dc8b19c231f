"""DPO / cDPO / IPO / hinge losses against float64 NumPy references, hand-computed cases, gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax.losses.dpo import dpo_loss, preference_margin, preference_metrics, sequence_logprob


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def np_reference(pw, pl, rw, rl, beta, loss_type, eps=0.0):
    h = (pw - rw) - (pl - rl)
    if loss_type == "sigmoid":
        return -(1 - eps) * np_log_sigmoid(beta * h) - eps * np_log_sigmoid(-beta * h)
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    return np.maximum(0.0, 1.0 - beta * h)


def random_logps(rng, p, scale=20.0):
    return [rng.normal(size=p) * scale - 30.0 for _ in range(4)]


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("sigmoid", 0.1), ("sigmoid", 0.3),
                                           ("ipo", 0.0), ("hinge", 0.0)])
@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
def test_matches_float64_numpy(loss_type, eps, beta):
    rng = np.random.default_rng(0)
    arrays = random_logps(rng, 64)
    with jax.enable_x64(True):
        got = dpo_loss(*map(jnp.asarray, arrays), beta=beta, loss_type=loss_type, label_smoothing=eps)
        assert got.dtype == jnp.float64 and got.shape == (64,)
        np.testing.assert_allclose(np.asarray(got), np_reference(*arrays, beta, loss_type, eps),
                                   rtol=1e-12, atol=1e-12)


def test_hand_computed_cases():
    one = jnp.ones(1)
    zero = jnp.zeros(1)
    # h = 0: -log sigma(0) = log 2 for any beta and any label smoothing.
    np.testing.assert_allclose(dpo_loss(zero, zero, zero, zero, beta=3.0), [np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(dpo_loss(zero, zero, zero, zero, beta=3.0, label_smoothing=0.2),
                               [np.log(2)], rtol=1e-6)
    # h = 2 (chosen up by 1, rejected down by 1), beta = 0.5: -log sigma(1) = log(1 + e^-1).
    np.testing.assert_allclose(dpo_loss(one, -one, zero, zero, beta=0.5), [np.log1p(np.exp(-1))], rtol=1e-6)
    # cDPO eps = 0.25 at beta h = 1: 0.75 log(1 + e^-1) + 0.25 log(1 + e).
    np.testing.assert_allclose(dpo_loss(one, -one, zero, zero, beta=0.5, label_smoothing=0.25),
                               [0.75 * np.log1p(np.exp(-1)) + 0.25 * np.log1p(np.e)], rtol=1e-6)
    # IPO: target 1/(2 beta) = 1 for beta = 0.5; h = 2 -> (2 - 1)^2 = 1; h = 1 -> 0.
    np.testing.assert_allclose(dpo_loss(one, -one, zero, zero, beta=0.5, loss_type="ipo"), [1.0])
    np.testing.assert_allclose(dpo_loss(one, zero, zero, zero, beta=0.5, loss_type="ipo"), [0.0])
    # Hinge: max(0, 1 - 0.5 * 2) = 0 and with h = -2: 2.
    np.testing.assert_allclose(dpo_loss(one, -one, zero, zero, beta=0.5, loss_type="hinge"), [0.0])
    np.testing.assert_allclose(dpo_loss(-one, one, zero, zero, beta=0.5, loss_type="hinge"), [2.0])
    # The reference shifts h: pi == ref everywhere means h = 0.
    np.testing.assert_allclose(dpo_loss(one * 5, one * 7, one * 5, one * 7, beta=2.0), [np.log(2)], rtol=1e-6)


def test_sigmoid_is_stable_for_huge_margins():
    pw = jnp.array([1e4, -1e4, 0.0])
    z = jnp.zeros(3)
    losses = dpo_loss(pw, z, z, z, beta=1.0)
    assert np.all(np.isfinite(losses))
    np.testing.assert_allclose(losses, [0.0, 1e4, np.log(2)], rtol=1e-6)
    grads = jax.grad(lambda p: dpo_loss(p, z, z, z, beta=1.0).sum())(pw)
    np.testing.assert_allclose(grads, [0.0, -1.0, -0.5], atol=1e-6)


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0), ("hinge", 0.0)])
def test_gradients_match_analytic_and_ref_gets_none(loss_type, eps):
    rng = np.random.default_rng(1)
    pw, pl, rw, rl = (rng.normal(size=16) for _ in range(4))
    beta = 0.7
    with jax.enable_x64(True):
        args = tuple(map(jnp.asarray, (pw, pl, rw, rl)))
        f = lambda *a: dpo_loss(*a, beta=beta, loss_type=loss_type, label_smoothing=eps).sum()  # noqa: E731
        g_pw, g_pl, g_rw, g_rl = jax.grad(f, argnums=(0, 1, 2, 3))(*args)
    h = (pw - rw) - (pl - rl)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    if loss_type == "sigmoid":
        dh = -beta * ((1 - eps) * sig(-beta * h) - eps * sig(beta * h))
    elif loss_type == "ipo":
        dh = 2 * (h - 1 / (2 * beta))
    else:
        dh = np.where(1 - beta * h > 0, -beta, 0.0)
    np.testing.assert_allclose(g_pw, dh, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_pl, -dh, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(g_rw, 0.0)  # stop_gradient: the reference is frozen
    np.testing.assert_array_equal(g_rl, 0.0)


def _traced_loss(pw, pl, rw, rl, beta, eps):  # beta and eps may be traced scalars
    return dpo_loss(pw, pl, rw, rl, beta=beta, label_smoothing=eps)


_jitted = jax.jit(_traced_loss)
_vmapped = jax.jit(jax.vmap(_traced_loss, in_axes=(0, 0, 0, 0, None, None)))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([1, 7]), st.floats(0.01, 5.0), st.floats(0.0, 0.49), st.integers(0, 2**31 - 1))
def test_property_jit_vmap_and_symmetry(p, beta, eps, seed):
    rng = np.random.default_rng(seed)
    arrays = [jnp.asarray(a, jnp.float32) for a in random_logps(rng, p, scale=3.0)]
    eager = dpo_loss(*arrays, beta=beta, label_smoothing=eps)
    jitted = _jitted(*arrays, beta, eps)
    stacked = [jnp.stack([a, a[::-1]]) for a in arrays]
    vmapped = _vmapped(*stacked, beta, eps)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vmapped[0], eager, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vmapped[1], eager[::-1], rtol=1e-6, atol=1e-6)
    # Label smoothing is symmetric: swapping chosen/rejected == smoothing 1 - eps.
    pw, pl, rw, rl = arrays
    swapped = dpo_loss(pl, pw, rl, rw, beta=beta, label_smoothing=eps)
    flipped = -eps * jax.nn.log_sigmoid(beta * preference_margin(*arrays)) - (1 - eps) * jax.nn.log_sigmoid(
        -beta * preference_margin(*arrays))
    np.testing.assert_allclose(swapped, flipped, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(eager) >= 0)


def test_sequence_logprob_sum_and_average():
    rng = np.random.default_rng(2)
    logp = rng.normal(size=(3, 5)) - 2.0
    mask = np.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.float64)
    logp_with_inf = np.where(mask > 0, logp, -np.inf)  # padded positions may be -inf
    with jax.enable_x64(True):
        total = sequence_logprob(jnp.asarray(logp_with_inf), jnp.asarray(mask))
        mean = sequence_logprob(jnp.asarray(logp_with_inf), jnp.asarray(mask.astype(bool)), average=True)
    np.testing.assert_allclose(total, (logp * mask).sum(1), rtol=1e-12)
    np.testing.assert_allclose(mean, [(logp[0, 1:4]).mean(), logp[1].mean(), 0.0], rtol=1e-12)


def test_preference_metrics():
    pw = jnp.array([-1.0, -3.0, -2.0])
    pl = jnp.array([-2.0, -1.0, -2.5])
    rw = jnp.array([-1.5, -1.0, -1.0])
    rl = jnp.array([-1.5, -3.0, -4.0])
    m = preference_metrics(pw, pl, rw, rl, beta=0.1)
    np.testing.assert_allclose(m.chosen_rewards, [0.05, -0.2, -0.1], rtol=1e-6)
    np.testing.assert_allclose(m.rejected_rewards, [-0.05, 0.2, 0.15], rtol=1e-6)
    np.testing.assert_allclose(m.margins, [0.1, -0.4, -0.25], rtol=1e-5)
    np.testing.assert_array_equal(m.reward_accuracy, [1.0, 0.0, 0.0])  # h = 1, -4, -2.5
    np.testing.assert_array_equal(m.logprob_accuracy, [1.0, 0.0, 1.0])  # pi_w > pi_l


def test_bad_input_errors():
    z = jnp.zeros(3)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(z, z, z, z, beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing is only defined"):
        dpo_loss(z, z, z, z, beta=0.1, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        dpo_loss(z, z, z, z, beta=0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(AssertionError):
        dpo_loss(z, jnp.zeros(4), z, z, beta=0.1)
    with pytest.raises(AssertionError):
        sequence_logprob(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    chex.assert_shape(dpo_loss(z, z, z, z, beta=0.1), (3,))
