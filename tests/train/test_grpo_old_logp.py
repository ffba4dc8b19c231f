"""GRPO's old log-probs are the trainer's, not the sampler's (ALGORITHMS.md 1.4), in bf16 where they differ.

A tiny bf16 policy samples with a KV cache, the trainer runs a full forward: the two log-probs differ by
~1e-3. With a clip epsilon far below that, any use of the sampler's log-probs as ``old_logp`` would clip
tokens; the trainer's own ``stop_gradient(logp)`` gives a ratio of exactly 1, so nothing is clipped.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grpojax.config import load_config
from grpojax.losses import grpo_loss
from grpojax.train.steps.forward import completion_logprobs
from grpojax.train.tasks.grpo import GRPOTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPS = 1e-6  # far below the bf16 sampler / trainer mismatch (1e-5..1e-3): a ratio != 1 is clipped


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _task(tmp_path, mu, extra=()):
    cfg = load_config("configs/tiny_grpo.yaml", [*extra,
        "model.dtype=bfloat16", f"grpo.epsilon={EPS}", f"grpo.num_iterations={mu}", "grpo.loss_type=dapo",
        "grpo.beta=0.04", "train.learning_rate=0.05", "mesh.data=1", f"run_dir={tmp_path}"])
    task = GRPOTask(cfg)
    return task, task.init_state()


def test_bf16_mu1_ratio_is_exactly_one_and_loss_is_on_policy(tmp_path):
    task, state = _task(tmp_path, 1)
    rng = jax.random.key(3)
    pos = task.position()
    ro = task.rollout(state, jax.random.fold_in(rng, 1))
    b = jax.tree.map(np.asarray, ro.batch)
    mask = b["completion_mask_BC"].astype(np.float32)
    assert mask.sum() > 0

    # the independent on-policy loss and gradient: old = stop_gradient(logp) of the bf16 trainer forward
    graphdef = task.graphdef

    def loss_of(params):
        model = task.model_of(state._replace(params=params))
        logp = completion_logprobs(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                                   b["completion_mask_BC"], temperature=1.0).logp_BC
        loss, _ = grpo_loss(logp, None, b["ref_logp_BC"], b["advantages_B"], mask, loss_type="dapo",
                            epsilon=EPS, beta=0.04)
        return loss, logp

    (want_loss, logp), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    want_norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads))))
    sampler_gap = float(np.max(np.abs(np.asarray(logp) - b["sampler_logp_BC"]) * mask))
    assert sampler_gap > 10 * EPS, sampler_gap  # the mismatch is real in bf16 (the defect's trigger)
    del graphdef

    task.restore_position(pos)  # the step's rollout samples the same prompts with the same key
    _, rows = task.train_steps(state, 0, [rng])
    row = rows[0]
    assert row["clip_ratio/region_mean"] == 0.0
    assert row["clip_ratio/low_mean"] == 0.0 and row["clip_ratio/high_mean"] == 0.0
    np.testing.assert_allclose(row["loss"], float(want_loss), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(row["grad_norm"], want_norm, rtol=2e-2)
    # the mismatch is still logged (against the step's own forward)
    assert row["sampler/logp_max_abs_diff"] > 4 * EPS
    assert 0 < row["sampler/logp_mean_abs_diff"] <= row["sampler/logp_max_abs_diff"]


def test_bf16_mu2_first_update_on_policy_second_uses_pre_update_logp(tmp_path):
    task, state = _task(tmp_path, 2, ["grpo.sampler_is_cap=2.0", "grpo.use_bias_correction_kl=true"])
    assert task.steps_per_call(0, 10) == 2 and task.settings.use_bias_correction_kl
    _, rows = task.train_steps(state, 0, [jax.random.key(4), jax.random.key(5)])
    assert rows[0]["clip_ratio/region_mean"] == 0.0  # first update: ratio exactly 1
    assert "sampler/logp_max_abs_diff" in rows[0] and "sampler/logp_max_abs_diff" not in rows[1]
    # second update: old = the first forward's log-probs, the params moved (lr 0.05): the clip is active
    assert rows[1]["clip_ratio/region_mean"] > 0.0
    # the IS correction weighs both updates (the sampler's log-probs stay in the later batches)
    assert 0.5 < rows[0]["sampler/is_weight_mean"] < 2.0 and 0.5 < rows[1]["sampler/is_weight_mean"] < 2.0


def test_truncated_importance_sampling_correction_matches_float64_reference():
    """``grpo.sampler_is_cap``: every token's loss weighted by min(pi_old / pi_sampler, cap), pi_old the
    trainer's (on-policy: the step's own forward), checked against float64 NumPy; micro-batching exact."""
    import functools

    import optax
    from flax import nnx

    from grpojax.models import Qwen, QwenConfig
    from grpojax.train.steps.grpo import GRPOSettings, grpo_step
    from grpojax.train.steps.state import create_train_state

    cfg = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
    r = np.random.default_rng(0)
    B, P, L = 8, 4, 6
    lengths = np.array([6, 5, 6, 2, 1, 3, 6, 4])
    cmask = np.arange(L)[None, :] < lengths[:, None]
    b = dict(prompt_BQ=jnp.asarray(r.integers(1, 64, (B, P)), jnp.int32), prompt_mask_BQ=jnp.ones((B, P), jnp.int32),
             completion_BC=jnp.asarray(np.where(cmask, r.integers(1, 64, (B, L)), 0), jnp.int32),
             completion_mask_BC=jnp.asarray(cmask, jnp.int32))
    model = Qwen(cfg, rngs=nnx.Rngs(0))
    logp = np.asarray(completion_logprobs(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                                          b["completion_mask_BC"]).logp_BC, np.float64)
    sampler = logp + r.normal(scale=0.5, size=(B, L))
    ref = logp + r.normal(scale=0.3, size=(B, L))
    adv = r.normal(size=B)
    b.update(sampler_logp_BC=jnp.asarray(sampler, jnp.float32), ref_logp_BC=jnp.asarray(ref, jnp.float32),
             advantages_B=jnp.asarray(adv, jnp.float32))
    cap, beta = 1.5, 0.04
    w = np.minimum(np.exp(logp - sampler), cap)
    d = ref - logp
    per_token = -adv[:, None] + beta * (np.exp(d) - d - 1.0)  # ratio 1 on-policy: the clip is inactive
    m = cmask.astype(np.float64)
    want_loss = np.sum(m * w * per_token) / m.sum()
    tx = optax.sgd(1e-2)
    for num_micro in (1, 2):
        graphdef, state = create_train_state(Qwen(cfg, rngs=nnx.Rngs(0)), tx, jax.random.key(0))
        settings = GRPOSettings(loss_type="dapo", beta=beta, sampler_is_cap=cap)
        step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=settings, num_micro=num_micro))
        _, metrics = step(state, b, jax.random.key(1))
        np.testing.assert_allclose(float(metrics["loss"]), want_loss, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(float(metrics["sampler/is_weight_mean"]), np.sum(m * w) / m.sum(), rtol=1e-5)
        np.testing.assert_allclose(float(metrics["sampler/is_capped_frac"]), np.sum(m * (w >= cap)) / m.sum(),
                                   rtol=1e-5)
    assert 0 < np.sum(m * (w >= cap)) < m.sum()  # some weights capped, some not


def test_bias_correction_kl_reaches_the_step_gradient():
    """``GRPOSettings.use_bias_correction_kl``: the step's gradient is that of ``grpo_loss(...,
    use_bias_correction_kl=True)`` (on-policy: same loss, another gradient), not the plain one's."""
    import functools

    import optax
    from flax import nnx

    from grpojax.models import Qwen, QwenConfig
    from grpojax.train.steps.grpo import GRPOSettings, grpo_step
    from grpojax.train.steps.state import create_train_state

    cfg = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4,
                     num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
    r = np.random.default_rng(1)
    B, P, L = 4, 3, 5
    cmask = np.arange(L)[None, :] < np.array([5, 3, 4, 1])[:, None]
    b = dict(prompt_BQ=jnp.asarray(r.integers(1, 64, (B, P)), jnp.int32), prompt_mask_BQ=jnp.ones((B, P), jnp.int32),
             completion_BC=jnp.asarray(np.where(cmask, r.integers(1, 64, (B, L)), 0), jnp.int32),
             completion_mask_BC=jnp.asarray(cmask, jnp.int32), advantages_B=jnp.asarray(r.normal(size=B), jnp.float32),
             ref_logp_BC=jnp.asarray(-r.uniform(2.0, 6.0, (B, L)), jnp.float32))
    tx = optax.sgd(1.0)

    def norm(tree):
        return float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(tree))))

    def want():
        graphdef, params, rest = nnx.split(Qwen(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)

        def loss_of(p):
            logp = completion_logprobs(nnx.merge(graphdef, p, rest), b["prompt_BQ"], b["prompt_mask_BQ"],
                                       b["completion_BC"], b["completion_mask_BC"]).logp_BC
            return grpo_loss(logp, None, b["ref_logp_BC"], b["advantages_B"], b["completion_mask_BC"], beta=0.5,
                             use_bias_correction_kl=True)[0]
        return norm(jax.jit(jax.grad(loss_of))(params))

    got = {}
    for bias in (False, True):
        graphdef, state = create_train_state(Qwen(cfg, rngs=nnx.Rngs(0)), tx, jax.random.key(0))
        settings = GRPOSettings(loss_type="dapo", beta=0.5, use_bias_correction_kl=bias)
        _, metrics = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=settings))(
            state, b, jax.random.key(1))
        got[bias] = float(metrics["grad_norm"])
    np.testing.assert_allclose(got[True], want(), rtol=1e-4)
    assert abs(got[True] - got[False]) > 1e-3 * got[False]


def test_sampler_is_cap_must_be_positive(monkeypatch):
    from grpojax.cli import UserError

    with pytest.raises(UserError, match="grpo.sampler_is_cap: must be > 0"):
        load_config("configs/tiny_grpo.yaml", ["grpo.sampler_is_cap=0"])
    assert load_config("configs/tiny_grpo.yaml", ["grpo.sampler_is_cap=2"]).grpo.sampler_is_cap == 2.0
