"""PPO-RLHF training: value head, rollout targets vs NumPy, ppo_step == pure loss, exact micro-batching,
gradient routing, the KL controller inside the task, and a learning run through scripts/train_ppo.py."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax.config import load_config
from grpojax.losses import ppo_loss
from grpojax.models import Qwen, QwenConfig
from grpojax.models.value_head import ActorCritic, ValueHead, value_head
from grpojax.train.steps.forward import completion_logprobs, sequence_inputs
from grpojax.train.steps.optim import make_optimizer
from grpojax.train.steps.ppo import PPOSettings, policy_and_values, ppo_step, rollout_targets
from grpojax.train.steps.state import create_train_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
P, L = 5, 6


def _actor_critic(separate=False, seed=0):
    critic = Qwen(CFG, rngs=nnx.Rngs(seed + 7)) if separate else None
    return ActorCritic(Qwen(CFG, rngs=nnx.Rngs(seed)), ValueHead(32, init_std=0.1, rngs=nnx.Rngs(seed + 1)),
                       critic)


def _batch(seed, B=8):
    r = np.random.default_rng(seed)
    plen = r.integers(1, P + 1, B)
    prompt_mask = np.arange(P)[None, :] >= (P - plen)[:, None]
    clen = r.integers(1, L + 1, B)
    comp_mask = np.arange(L)[None, :] < clen[:, None]
    return dict(prompt_BQ=jnp.asarray(np.where(prompt_mask, r.integers(1, 64, (B, P)), 0), jnp.int32),
                prompt_mask_BQ=jnp.asarray(prompt_mask, jnp.int32),
                completion_BC=jnp.asarray(np.where(comp_mask, r.integers(1, 64, (B, L)), 0), jnp.int32),
                completion_mask_BC=jnp.asarray(comp_mask, jnp.int32))


def _rollout_batch(model, seed=1, kl_in_loss=False):
    """A PPO batch whose old log-probs / values are the model's, perturbed so clipping is exercised."""
    b = _batch(seed)
    out = policy_and_values(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                            b["completion_mask_BC"])
    r = np.random.default_rng(seed + 100)
    noise = lambda s: jnp.asarray(r.normal(scale=s, size=(8, L)), jnp.float32)  # noqa: E731
    b.update(old_logp_BC=out.logp_BC + noise(0.3), old_values_BC=out.values_BC + noise(0.3),
             advantages_BC=noise(1.0), returns_BC=noise(1.0))
    if kl_in_loss:
        b.update(ref_logp_BC=out.logp_BC + noise(0.2), kl_coef_B=jnp.full((8,), 0.05, jnp.float32))
    return b


def test_value_head_hand_case_shapes_and_gradient():
    params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.25)}
    h = jnp.array([[[1.0, 1.0, 2.0], [0.0, 0.5, 0.0]]])
    np.testing.assert_allclose(np.asarray(value_head(params, h)), [[0.25 + 1 - 2 + 1, 0.25 - 1.0]])
    grads = jax.grad(lambda p: jnp.sum(value_head(p, h)))(params)
    np.testing.assert_allclose(np.asarray(grads["w"]), np.asarray(h.sum(axis=(0, 1))))  # d/dw = Σ h
    assert float(grads["b"]) == 2.0
    head = ValueHead(3, init_std=0.0)
    assert np.asarray(head(jnp.ones((4, 7, 3)))).shape == (4, 7) and float(jnp.abs(head.w[...]).sum()) == 0
    with pytest.raises(ValueError, match="w has 3 features"):
        value_head(params, jnp.ones((1, 2, 4)))


@pytest.mark.parametrize("separate", [False, True])
def test_policy_and_values_match_direct_forward(separate):
    model = _actor_critic(separate)
    b = _batch(0)
    out = policy_and_values(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                            b["completion_mask_BC"], temperature=0.7)
    ref = completion_logprobs(model.policy, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                              b["completion_mask_BC"], temperature=0.7)
    np.testing.assert_allclose(np.asarray(out.logp_BC), np.asarray(ref.logp_BC), atol=1e-6)
    tokens, mask, pos = sequence_inputs(b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                                        b["completion_mask_BC"])
    backbone = model.critic if separate else model.policy
    hidden = backbone(tokens, pos, attn_mask_BT=mask, return_hidden=True)
    expected = value_head(model.value_head.params(), hidden)[:, P - 1:P - 1 + L]
    np.testing.assert_allclose(np.asarray(out.values_BC), np.asarray(expected), atol=1e-6)


def _np_gae(r, v, m, gamma, lam):
    """Float64 GAE over each row's active tokens (independent of the scan implementation)."""
    adv = np.zeros_like(r)
    for b in range(r.shape[0]):
        idx = np.flatnonzero(m[b])
        nxt_v, nxt_a = 0.0, 0.0
        for t in idx[::-1]:
            nxt_a = r[b, t] + gamma * nxt_v - v[b, t] + gamma * lam * nxt_a
            adv[b, t], nxt_v = nxt_a, v[b, t]
    return adv, np.where(m > 0, adv + v, 0.0)


@pytest.mark.parametrize("kl_in_loss", [False, True])
def test_rollout_targets_match_numpy(kl_in_loss):
    r = np.random.default_rng(3)
    B, T = 4, 5
    m = (np.arange(T)[None, :] < np.array([5, 3, 1, 4])[:, None]).astype(np.float64)
    logp, ref, v = (r.normal(size=(B, T)) for _ in range(3))
    scores = r.normal(size=B)
    s = PPOSettings(gamma=0.9, lam=0.8, kl_mode="loss" if kl_in_loss else "reward", kl_estimator="k1",
                    whiten_advantages=True)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    targets, metrics = rollout_targets(f32(scores), f32(logp), f32(ref), f32(v), f32(m), kl_coef=0.1, settings=s)
    coef = 0.0 if kl_in_loss else 0.1
    rew = -coef * (logp - ref) * m
    last = m.sum(axis=1).astype(int) - 1
    rew[np.arange(B), last] += scores
    adv, ret = _np_gae(rew, v, m, 0.9, 0.8)
    on = m > 0
    white = np.where(on, (adv - adv[on].mean()) / np.sqrt(adv[on].var(ddof=1) + 1e-8), 0.0)
    np.testing.assert_allclose(np.asarray(targets["rewards_BC"]), rew, atol=1e-5)
    np.testing.assert_allclose(np.asarray(targets["returns_BC"]), ret, atol=1e-5)
    np.testing.assert_allclose(np.asarray(targets["advantages_BC"]), white, atol=1e-5)
    kl_seq = ((logp - ref) * m).sum(axis=1)
    np.testing.assert_allclose(float(metrics["objective/kl"]), kl_seq.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["objective/rlhf_reward"]), (scores - coef * kl_seq).mean(), rtol=1e-5)


def _step(num_micro, settings, tx=None, separate=False):
    model = _actor_critic(separate)
    tx = tx or make_optimizer(1e-2, total_steps=10, max_grad_norm=None)
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    step = jax.jit(functools.partial(ppo_step, graphdef=graphdef, tx=tx, settings=settings, num_micro=num_micro))
    return model, state, step


def test_ppo_step_loss_equals_pure_ppo_loss_and_micro_batching_is_exact(reduction="token_mean", kl_in_loss=True):
    """token_mean is the case where micro-batches must be weighted by their token share (unequal here)."""
    s = PPOSettings(cliprange=0.2, cliprange_value=0.2, vf_coef=0.5, kl_mode="loss" if kl_in_loss else "reward",
                    kl_estimator="k3", reduction=reduction)
    sgd = optax.sgd(1.0)  # params move by exactly -grad (Adam's first step would amplify rounding: ~sign(g))
    model, state, step1 = _step(1, s, tx=sgd)
    b = _rollout_batch(model, kl_in_loss=kl_in_loss)
    out = policy_and_values(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"], b["completion_mask_BC"])
    kw = dict(ref_logp_BT=b["ref_logp_BC"], kl_coef=0.05) if kl_in_loss else {}
    expected, aux = ppo_loss(out.logp_BC, b["old_logp_BC"], b["advantages_BC"], out.values_BC, b["old_values_BC"],
                             b["returns_BC"], b["completion_mask_BC"].astype(jnp.float32), cliprange=0.2,
                             cliprange_value=0.2, vf_coef=0.5, kl_estimator="k3", reduction=reduction, **kw)
    assert float(aux.policy.clipfrac) > 0  # the perturbed old log-probs make the clip bite
    new1, m1 = step1(state, b, jax.random.key(1))
    np.testing.assert_allclose(float(m1["loss"]), float(expected), rtol=1e-5, atol=1e-6)
    _, state4, step4 = _step(4, s, tx=sgd)  # 4 micro-batches of 2 rows with unequal token counts
    new4, m4 = step4(state4, b, jax.random.key(1))
    np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(m4["grad_norm"]), float(m1["grad_norm"]), rtol=1e-4)
    for a, c in zip(jax.tree.leaves(new1.params), jax.tree.leaves(new4.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-4, atol=1e-7)


def test_gradient_reaches_value_head_and_separate_critic():
    tx = make_optimizer(1e-2, total_steps=10, max_grad_norm=None)
    model, state, step = _step(1, PPOSettings(vf_coef=1.0), tx=tx, separate=True)
    b = _rollout_batch(model)
    new, _ = step(state, b, jax.random.key(0))
    moved = lambda old, new_: float(jnp.abs(new_ - old).max())  # noqa: E731
    assert moved(state.params["value_head"]["w"][...], new.params["value_head"]["w"][...]) > 0
    assert moved(state.params["value_head"]["b"][...], new.params["value_head"]["b"][...]) > 0
    critic_leaf = lambda st: jax.tree.leaves(st.params["critic"])[0]  # noqa: E731
    assert moved(critic_leaf(state), critic_leaf(new)) > 0  # the separate critic backbone trains too


def test_ppo_config_validation_names_the_key(tmp_path):
    from grpojax.cli import UserError

    path = os.path.join(ROOT, "configs/tiny_ppo.yaml")
    with pytest.raises(UserError, match="ppo.num_mini_batches"):
        load_config(path, ["ppo.num_mini_batches=3"])
    with pytest.raises(UserError, match="ppo.critic_path"):
        load_config(path, ["ppo.critic_path=/x"])
    with pytest.raises(UserError, match="unknown key 'ppo.epochs'"):
        load_config(path, ["ppo.epochs=2"])
    for name in ("ppo_qwen2.5-0.5b", "ppo_qwen2.5-7b", "ppo_qwen2.5-14b"):
        cfg = load_config(os.path.join(ROOT, f"configs/{name}.yaml"))
        assert cfg.kind == "ppo" and cfg.model.lora.rank > 0


def test_adaptive_kl_controller_moves_kl_coef_across_rollouts(tmp_path):
    """Two rollouts in-process: the first has KL 0 to the reference (error clipped to -0.2), so with
    horizon = rollout size the coefficient of the second rollout is exactly 0.8 x the initial one; the KL
    here is a loss term and the critic is separate, covering those paths of the task."""
    from grpojax.train.runner import run
    from grpojax.train.tasks.ppo import PPOTask

    cfg = load_config(os.path.join(ROOT, "configs/tiny_ppo.yaml"), [
        f"run_dir={tmp_path}/run", "train.steps=2", "train.batch_size=8", "ppo.ppo_epochs=1",
        "ppo.num_mini_batches=1", "ppo.adaptive_kl=true", "ppo.kl_coef=0.2", "ppo.kl_target=1.0",
        "ppo.kl_horizon=8", "ppo.kl_mode=loss",
        "ppo.critic=separate", "ppo.max_completion_length=4"])
    task = PPOTask(cfg)
    run(cfg, task)
    rows = [json.loads(x) for x in open(f"{tmp_path}/run/metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    np.testing.assert_allclose([r["kl_coef"] for r in rows], [0.2, 0.16], rtol=1e-6)
    assert rows[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5) and rows[1]["objective/kl"] != 0.0
    assert task.position()["kl_coef"] == pytest.approx(0.16 * (1 + float(np.clip(
        rows[1]["objective/kl"] / 1.0 - 1, -0.2, 0.2))), rel=1e-5)


def test_train_ppo_script_raises_the_reward(tmp_path):
    """configs/tiny_ppo.yaml as shipped, through the script: metrics.jsonl has step / loss / reward and the
    vowel-fraction reward of the last rollouts beats the first ones."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    cmd = [sys.executable, os.path.join(ROOT, "scripts/train_ppo.py"), os.path.join(ROOT, "configs/tiny_ppo.yaml"),
           f"run_dir={tmp_path}/run"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in open(f"{tmp_path}/run/metrics.jsonl")]
    cfg = load_config(os.path.join(ROOT, "configs/tiny_ppo.yaml"))
    assert [r["step"] for r in rows] == list(range(1, cfg.train.steps + 1))
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["reward"]) for r in rows)
    per_rollout = cfg.ppo.ppo_epochs * cfg.ppo.num_mini_batches
    rewards = [r["reward"] for r in rows][::per_rollout]
    first, last = np.mean(rewards[:3]), np.mean(rewards[-3:])
    assert last > first + 0.1, rewards
