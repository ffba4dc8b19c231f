"""Tests for grpojax.losses.common: log-probs, entropy, masked reductions, KL estimators."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpojax.losses import kl_penalty, masked_mean, masked_sum, token_entropy, token_logprobs

# Jitted wrappers: one compiled program per shape is far cheaper on CPU than op-by-op eager dispatch of
# every new shape; the eager path is compared against these in test_token_logprobs_jit_and_vmap.
j_logprobs = jax.jit(token_logprobs, static_argnames="temperature")
j_entropy = jax.jit(token_entropy, static_argnames="temperature")
j_masked_sum = jax.jit(masked_sum, static_argnames="axis")
j_masked_mean = jax.jit(masked_mean, static_argnames="axis")
j_kl = jax.jit(kl_penalty, static_argnames="estimator")


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    zmax = z.max(-1, keepdims=True)
    return z - zmax - np.log(np.exp(z - zmax).sum(-1, keepdims=True))


def np_token_logprobs(logits, tokens, temperature=1.0):
    lsm = np_log_softmax(np.asarray(logits, np.float64) / temperature)
    out = np.empty(tokens.shape)
    for idx in np.ndindex(tokens.shape):
        out[idx] = lsm[idx + (tokens[idx],)]
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
def test_token_logprobs_matches_float64_reference(temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 4
    tokens = rng.integers(0, 11, size=(3, 5))
    got = j_logprobs(jnp.asarray(logits), jnp.asarray(tokens), temperature=temperature)
    assert got.dtype == jnp.float32 and got.shape == (3, 5)
    np.testing.assert_allclose(got, np_token_logprobs(logits, tokens, temperature), rtol=1e-5, atol=1e-5)


def test_token_logprobs_hand_case_and_bf16_upcast():
    # uniform over 4 tokens: log(1/4) = -1.3862944
    np.testing.assert_allclose(j_logprobs(jnp.zeros((1, 2, 4)), jnp.array([[0, 3]])), [[-math.log(4)] * 2],
                               rtol=1e-6)
    # logits [0, ln 3] -> p = [1/4, 3/4]
    logits = jnp.array([[[0.0, math.log(3.0)]]], jnp.bfloat16)
    got = j_logprobs(logits, jnp.array([[1]]))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, [[math.log(0.75)]], atol=5e-3)  # bf16 rounding of ln 3 only


def test_token_logprobs_gradient_is_onehot_minus_softmax_over_temperature():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 7)).astype(np.float32)
    tokens = rng.integers(0, 7, size=(4,))
    temp = 0.5
    grad = jax.jit(jax.grad(lambda z: token_logprobs(z, jnp.asarray(tokens), temp).sum()))(jnp.asarray(logits))
    p = np.exp(np_log_softmax(logits / temp))
    want = (np.eye(7)[tokens] - p) / temp
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)


def test_token_logprobs_jit_and_vmap():
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(size=(3, 4, 9)).astype(np.float32))
    tokens = jnp.asarray(rng.integers(0, 9, size=(3, 4)))
    eager = token_logprobs(logits, tokens, 1.3)
    np.testing.assert_allclose(jax.jit(token_logprobs)(logits, tokens, 1.3), eager, rtol=1e-6)  # traced temp
    vmapped = jax.jit(jax.vmap(lambda a, b: token_logprobs(a, b, 1.3)))(logits, tokens)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-6)


def test_token_logprobs_bad_input():
    with pytest.raises(ValueError, match=r"logits .*\(2, 3, 5\).*tokens .*\(2, 4\)"):
        token_logprobs(jnp.zeros((2, 3, 5)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(TypeError, match="integer"):
        token_logprobs(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(jnp.zeros((2, 3, 5)), jnp.zeros((2, 3), jnp.int32), 0.0)


def test_token_entropy_matches_reference_and_bounds():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 3, 6)).astype(np.float32) * 2
    for temp in (1.0, 0.5):
        lsm = np_log_softmax(logits / temp)
        want = -(np.exp(lsm) * lsm).sum(-1)
        np.testing.assert_allclose(j_entropy(jnp.asarray(logits), temperature=temp), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(j_entropy(jnp.zeros((1, 2, 8))), [[math.log(8)] * 2], rtol=1e-6)
    # -inf logits (banned tokens) contribute 0, not NaN: two live tokens -> ln 2
    z = jnp.array([[[0.0, 0.0, -jnp.inf, -jnp.inf]]])
    np.testing.assert_allclose(j_entropy(z), [[math.log(2)]], rtol=1e-6)
    with pytest.raises(ValueError, match="logits"):
        token_entropy(jnp.zeros((5,)))


def test_masked_reductions_hand_case_and_axis():
    x = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    m = jnp.array([[1, 0, 1], [0, 0, 0]], bool)
    assert float(j_masked_sum(x, m)) == 4.0
    assert float(j_masked_mean(x, m)) == 2.0
    np.testing.assert_array_equal(j_masked_sum(x, m, axis=1), [4.0, 0.0])
    np.testing.assert_array_equal(j_masked_mean(x, m, axis=1), [2.0, 0.0])  # fully masked row -> 0
    np.testing.assert_array_equal(j_masked_mean(x, m, axis=0), [1.0, 0.0, 3.0])
    with pytest.raises(ValueError, match="mask shape"):
        masked_mean(x, m[:, :2])


def test_masked_reductions_ignore_nan_garbage_in_values_and_gradients():
    x = jnp.array([[1.0, jnp.nan, 3.0], [jnp.inf, 2.0, -jnp.inf]])
    m = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert float(j_masked_mean(x, m)) == 2.0
    g = jax.jit(jax.grad(lambda v: masked_mean(v, m)))(x)
    np.testing.assert_array_equal(g, np.asarray(m) / 3.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-30, 30, allow_nan=False), min_size=6, max_size=6),
       st.lists(st.floats(-30, 30, allow_nan=False), min_size=6, max_size=6))
def test_k3_is_nonnegative_and_zero_at_equality(a, b):
    logp, ref = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    k3 = j_kl(logp, ref, estimator="k3")
    assert bool(jnp.all(k3 >= 0))
    np.testing.assert_array_equal(j_kl(logp, logp, estimator="k3"), np.zeros(6))
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    np.testing.assert_allclose(k3, np.exp(-d) + d - 1, rtol=2e-5, atol=1e-6)


def test_kl_estimators_hand_values():
    # d = logp - ref = ln 2: k1 = 0.693147, k2 = 0.240227, k3 = 1/2 + ln 2 - 1 = 0.193147
    logp, ref = jnp.array([math.log(0.5)]), jnp.array([math.log(0.25)])
    np.testing.assert_allclose(j_kl(logp, ref, estimator="k1"), [0.693147], rtol=1e-5)
    np.testing.assert_allclose(j_kl(logp, ref, estimator="k2"), [0.240227], rtol=1e-5)
    np.testing.assert_allclose(j_kl(logp, ref, estimator="k3"), [0.193147], rtol=1e-5)
    # d = -ln 2: k3 = 2 - ln 2 - 1 = 0.306853
    np.testing.assert_allclose(j_kl(ref, logp, estimator="k3"), [0.306853], rtol=1e-5)
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(logp, ref, "k4")
    with pytest.raises(AssertionError):
        kl_penalty(jnp.zeros((2, 3)), jnp.zeros((3, 2)))


def test_config_choices_are_the_losses_choices():
    """Every string option the config accepts for a loss is exactly the set that loss accepts (one list each)."""
    import typing

    from grpojax.config.methods import GRPOConfig, PPOConfig
    from grpojax.losses import (
        ADVANTAGE_SCALES,
        DPO_LOSS_TYPES,
        GRPO_LOSS_TYPES,
        IMPORTANCE_SAMPLING_LEVELS,
        KL_ESTIMATORS,
        PPO_REDUCTIONS,
        dpo_loss,
    )

    def choices(cls, name):
        tp = typing.get_type_hints(cls)[name]
        if typing.get_origin(tp) is typing.Union:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        return typing.get_args(tp)

    assert choices(GRPOConfig, "loss_type") == GRPO_LOSS_TYPES
    assert choices(GRPOConfig, "kl_estimator") == choices(PPOConfig, "kl_estimator") == KL_ESTIMATORS
    assert choices(GRPOConfig, "scale_rewards") == ADVANTAGE_SCALES
    assert choices(GRPOConfig, "importance_sampling_level") == IMPORTANCE_SAMPLING_LEVELS
    assert choices(PPOConfig, "reduction") == PPO_REDUCTIONS
    assert GRPO_LOSS_TYPES != DPO_LOSS_TYPES
    z = jnp.zeros(1)
    for loss_type in DPO_LOSS_TYPES:
        assert dpo_loss(z, z, z, z, beta=0.1, loss_type=loss_type).shape == (1,)
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss(z, z, z, z, beta=0.1, loss_type=GRPO_LOSS_TYPES[0])
