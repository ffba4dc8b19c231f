"""Metrics under gradient accumulation are the whole step's: token-weighted means over every micro-batch,
maxima as maxima, per-row outputs in row order; identical for 1, 2 and 4 micro-batches of uneven length."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax.losses import grpo_loss, ppo_loss
from grpojax.models import Qwen, QwenConfig
from grpojax.models.value_head import ActorCritic, ValueHead
from grpojax.train.steps.accumulate import Max, Ratio, Rows, Sum, accumulate
from grpojax.train.steps.forward import completion_logprobs
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.ppo import PPOSettings, policy_and_values, ppo_step
from grpojax.train.steps.state import create_train_state

CFG = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
B, P, L = 8, 5, 6
# micro-batches of 2 rows at num_micro=4 hold 12, 11, 2 and 3 tokens: unweighted means of their means differ
LENGTHS = np.array([6, 6, 6, 5, 1, 1, 2, 1])


def _batch(seed=0):
    r = np.random.default_rng(seed)
    plen = r.integers(1, P + 1, B)
    prompt_mask = np.arange(P)[None, :] >= (P - plen)[:, None]
    comp_mask = np.arange(L)[None, :] < LENGTHS[:, None]
    return dict(prompt_BQ=jnp.asarray(np.where(prompt_mask, r.integers(1, 64, (B, P)), 0), jnp.int32),
                prompt_mask_BQ=jnp.asarray(prompt_mask, jnp.int32),
                completion_BC=jnp.asarray(np.where(comp_mask, r.integers(1, 64, (B, L)), 0), jnp.int32),
                completion_mask_BC=jnp.asarray(comp_mask, jnp.int32))


def _noise(seed, scale, shape=(B, L)):
    return jnp.asarray(np.random.default_rng(seed).normal(scale=scale, size=shape), jnp.float32)


def test_accumulate_combines_each_declared_reduction():
    x = jnp.arange(8.0)
    w = jnp.asarray([3.0, 1.0, 0.0, 2.0, 1.0, 1.0, 5.0, 1.0])

    def loss_fn(p, mb):
        return jnp.sum(p * mb["x"]), {"wmean": Ratio(jnp.sum(mb["w"] * mb["x"]), jnp.sum(mb["w"])),
                                      "n": Sum(jnp.sum(mb["w"])), "max": Max(jnp.max(mb["x"] * mb["w"])),
                                      "rows": Rows(mb["x"] * 2), "plain": jnp.mean(mb["x"])}

    for k in (1, 2, 4, 8):
        loss, grad, m = accumulate(loss_fn, jnp.float32(2.0), {"x": x, "w": w}, k)
        assert float(loss) == 56.0 and float(grad) == 28.0
        np.testing.assert_allclose(float(m["wmean"]), float(jnp.sum(w * x) / jnp.sum(w)), rtol=1e-6)
        assert float(m["n"]) == 14.0 and float(m["max"]) == 30.0 and float(m["plain"]) == 3.5
        np.testing.assert_array_equal(np.asarray(m["rows"]), np.asarray(x * 2))


def _grpo(num_micro, b):
    tx = optax.sgd(1e-2)
    graphdef, state = create_train_state(Qwen(CFG, rngs=nnx.Rngs(0)), tx, jax.random.key(0))
    step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, num_micro=num_micro,
                                     settings=GRPOSettings(loss_type="dapo", beta=0.04, epsilon=0.1)))
    return step(state, b, jax.random.key(1))[1]


GRPO_KEYS = ("kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
             "sampler/logp_max_abs_diff", "sampler/logp_mean_abs_diff", "loss", "grad_norm")


def test_grpo_metrics_do_not_depend_on_micro_batches():
    b = _batch(1)
    model = Qwen(CFG, rngs=nnx.Rngs(0))
    out = completion_logprobs(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                              b["completion_mask_BC"])
    # the (off-policy) old log-probs are perturbed so both clips bite; the sampler's differ by more at the end
    b.update(old_logp_BC=out.logp_BC + _noise(2, 0.3), ref_logp_BC=out.logp_BC + _noise(3, 0.5),
             sampler_logp_BC=out.logp_BC + _noise(4, 0.01) + 3.0 * (jnp.arange(B) == 7)[:, None],
             advantages_B=_noise(5, 1.0, (B,)))
    mask = b["completion_mask_BC"].astype(jnp.float32)
    _, aux = grpo_loss(out.logp_BC, b["old_logp_BC"], b["ref_logp_BC"], b["advantages_B"], mask,
                       loss_type="dapo", epsilon=0.1, beta=0.04)
    m1 = _grpo(1, b)
    # the whole batch's values, from the pure loss on the full batch
    want = {"kl": aux.kl, "clip_ratio/low_mean": aux.clip_ratio_low_mean,
            "clip_ratio/high_mean": aux.clip_ratio_high_mean, "clip_ratio/region_mean": aux.clip_ratio_region_mean,
            "entropy": jnp.sum(out.entropy_BC * mask) / jnp.sum(mask),
            "sampler/logp_max_abs_diff": jnp.max(jnp.abs(out.logp_BC - b["sampler_logp_BC"]) * mask),
            "sampler/logp_mean_abs_diff": jnp.sum(jnp.abs(out.logp_BC - b["sampler_logp_BC"]) * mask) / jnp.sum(mask)}
    for k, v in want.items():
        np.testing.assert_allclose(float(m1[k]), float(v), rtol=1e-4, atol=1e-6, err_msg=k)
    assert 0 < float(m1["clip_ratio/low_mean"]) and 0 < float(m1["clip_ratio/high_mean"])
    assert float(m1["sampler/logp_max_abs_diff"]) > 2.9  # row 7, alone in the last micro-batch
    for n in (2, 4):
        mn = _grpo(n, b)
        for k in GRPO_KEYS:
            np.testing.assert_allclose(float(mn[k]), float(m1[k]), rtol=1e-4, atol=1e-6, err_msg=f"{k} num_micro={n}")


def _ppo(num_micro, b, s):
    tx = optax.sgd(1e-2)
    model = ActorCritic(Qwen(CFG, rngs=nnx.Rngs(0)), ValueHead(32, init_std=0.1, rngs=nnx.Rngs(1)), None)
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    step = jax.jit(functools.partial(ppo_step, graphdef=graphdef, tx=tx, settings=s, num_micro=num_micro))
    return step(state, b, jax.random.key(1))[1]


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_ppo_metrics_do_not_depend_on_micro_batches(reduction):
    s = PPOSettings(cliprange=0.2, cliprange_value=0.2, vf_coef=0.5, kl_mode="loss", kl_estimator="k3",
                    reduction=reduction)
    model = ActorCritic(Qwen(CFG, rngs=nnx.Rngs(0)), ValueHead(32, init_std=0.1, rngs=nnx.Rngs(1)), None)
    b = _batch(2)
    out = policy_and_values(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"], b["completion_mask_BC"])
    b.update(old_logp_BC=out.logp_BC + _noise(6, 0.3), old_values_BC=out.values_BC + _noise(7, 0.3),
             advantages_BC=_noise(8, 1.0), returns_BC=_noise(9, 1.0) + 0.5 * jnp.arange(B)[:, None],
             ref_logp_BC=out.logp_BC + _noise(10, 0.2), kl_coef_B=jnp.full((B,), 0.05, jnp.float32))
    mask = b["completion_mask_BC"].astype(jnp.float32)
    _, aux = ppo_loss(out.logp_BC, b["old_logp_BC"], b["advantages_BC"], out.values_BC, b["old_values_BC"],
                      b["returns_BC"], mask, cliprange=0.2, cliprange_value=0.2, vf_coef=0.5, kl_estimator="k3",
                      reduction=reduction, ref_logp_BT=b["ref_logp_BC"], kl_coef=0.05)
    m1 = _ppo(1, b, s)
    want = {"loss/policy_avg": aux.policy_loss, "loss/value_avg": aux.value_loss, "loss/kl": aux.kl,
            "policy/approxkl_avg": aux.policy.approx_kl, "policy/clipfrac_avg": aux.policy.clipfrac,
            "val/ratio": aux.policy.ratio_mean, "val/clipfrac_avg": aux.value.clipfrac,
            "val/explained_variance": aux.value.explained_variance,
            "policy/entropy_avg": jnp.sum(out.entropy_BC * mask) / jnp.sum(mask),
            "val/mean": jnp.sum(out.values_BC * mask) / jnp.sum(mask)}
    for k, v in want.items():
        np.testing.assert_allclose(float(m1[k]), float(v), rtol=1e-4, atol=1e-6, err_msg=k)
    for n in (2, 4):
        mn = _ppo(n, b, s)
        for k in (*want, "loss", "grad_norm"):
            np.testing.assert_allclose(float(mn[k]), float(m1[k]), rtol=1e-4, atol=1e-6, err_msg=f"{k} num_micro={n}")


def test_grpo_emitted_old_logp_rows_keep_the_batch_order_under_micro_batches():
    """mu > 1: the on-policy first update returns its forward's log-probs [B, L] in row order."""
    b = _batch(3)
    model = Qwen(CFG, rngs=nnx.Rngs(0))
    want = completion_logprobs(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                               b["completion_mask_BC"]).logp_BC
    b.update(advantages_B=_noise(11, 1.0, (B,)))
    tx = optax.sgd(1e-2)
    for n in (1, 4):
        graphdef, state = create_train_state(Qwen(CFG, rngs=nnx.Rngs(0)), tx, jax.random.key(0))
        settings = GRPOSettings(loss_type="grpo", beta=0.0, emit_logp=True)
        step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, num_micro=n, settings=settings))
        _, m = step(state, b, jax.random.key(1))
        assert m["old_logp_BC"].shape == (B, L) and float(m["clip_ratio/region_mean"]) == 0.0
        np.testing.assert_allclose(np.asarray(m["old_logp_BC"]), np.asarray(want), rtol=1e-5, atol=1e-5)
