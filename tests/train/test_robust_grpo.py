"""Group-robust GRPO in the GRPO step and run (``grpo.robust``; ALGORITHMS.md 3): alpha = mu is plain GRPO
(loss and update), a hand-built rollout moves alpha toward its low-reward group and weights the loss by
alpha / mu, micro-batching and an 8-device mesh give the same update, the refusals are one line.
(Resume with alpha: tests/train/test_resume.py.)"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.losses import grpo_loss
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.robust_grpo import RobustGRPOSettings
from grpojax.train.steps.state import create_train_state
from grpojax.train.tasks.grpo import GRPOTask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # pytest runs with --import-mode=importlib
from test_runner import _metrics, _repo_root, _train  # noqa: F401 (autouse fixture)
from test_steps import _batch, _model

GROUPS = ["grpo.robust.group_column=group", "data.path=tests/data/fixtures/tiny_prompt_groups.jsonl"]
GROUP_B = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int32)  # 2 prompts x 4 completions
SCORE_B = np.array([0.9, 0.7, 0.8, 0.6, 0.1, 0.3, 0.2, 0.0], np.float32)  # group 1 is served worse


def _setup(robust, num_micro=1, loss_type="grpo"):
    model = _model()
    tx = optax.sgd(1.0)  # plain SGD: the update is the gradient itself
    graphdef, state = create_train_state(model, tx, jax.random.key(0),
                                         robust=None if robust is None else robust.weights().init())
    b = _batch(1)
    b["advantages_B"] = jnp.asarray(np.random.default_rng(2).normal(size=8), jnp.float32)
    b["group_id_B"], b["score_B"] = jnp.asarray(GROUP_B), jnp.asarray(SCORE_B)
    settings = GRPOSettings(loss_type=loss_type, beta=0.0, group_robust=robust)
    step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=settings, num_micro=num_micro))
    return state, b, step


def _close_params(a, b, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_alpha_equal_mu_is_plain_grpo(loss_type):
    plain_state, b, plain = _setup(None, loss_type=loss_type)
    p_state, p_metrics = plain(plain_state, {k: v for k, v in b.items() if k not in ("group_id_B", "score_B")},
                               jax.random.key(0))
    for robust in (RobustGRPOSettings((3, 1), eta_alpha=0.0, chi=1.0),   # eta 0: alpha stays mu
                   RobustGRPOSettings((3, 1), eta_alpha=2.0, chi=0.0)):  # chi 0: alpha moves, the loss ignores it
        state, b, step = _setup(robust, loss_type=loss_type)
        new, metrics = step(state, b, jax.random.key(0))
        np.testing.assert_allclose(float(metrics["loss"]), float(p_metrics["loss"]), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(float(metrics["grad_norm"]), float(p_metrics["grad_norm"]), rtol=1e-6)
        _close_params(new, p_state, atol=1e-7)
        np.testing.assert_allclose(metrics["robust/weight"], [1.0, 1.0], rtol=1e-6)


def test_hand_built_rollout_moves_alpha_to_the_worst_group_and_weights_the_loss():
    robust = RobustGRPOSettings((3, 1), eta_alpha=0.5, chi=1.0)
    state, b, step = _setup(robust)
    new, metrics = step(state, b, jax.random.key(0))
    s = np.array([0.75, 0.15])  # the groups' mean scores
    alpha = np.array([0.75, 0.25]) * np.exp(-0.5 * s)
    alpha /= alpha.sum()
    np.testing.assert_allclose(np.exp(np.asarray(new.robust.log_alpha_M)), alpha, rtol=1e-6)
    np.testing.assert_allclose(metrics["robust/reward"], s, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["robust/worst_group_reward"]), 0.15, rtol=1e-6)
    assert alpha[1] > 0.25  # toward the group with the lower reward
    w = (alpha / np.array([0.75, 0.25]))[GROUP_B]
    logp = _logp(state, b)  # on-policy: ratio 1, the loss is -mean_i(w_i A_i) with the grpo aggregation
    mask = b["completion_mask_BC"].astype(jnp.float32)
    expected, _ = grpo_loss(logp, logp, None, b["advantages_B"], mask, loss_type="grpo",
                            token_weights_NT=jnp.broadcast_to(jnp.asarray(w, jnp.float32)[:, None], mask.shape))
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5, atol=1e-7)
    # a later update on the same rollout (old log-probs given, num_iterations > 1) keeps that rollout's alpha
    again, metrics2 = step(new, {**b, "old_logp_BC": logp}, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(again.robust.log_alpha_M), np.asarray(new.robust.log_alpha_M))
    np.testing.assert_allclose(metrics2["robust/weight"], alpha / np.array([0.75, 0.25]), rtol=1e-6)


def _logp(state, b):
    from grpojax.train.steps.forward import completion_logprobs

    return completion_logprobs(_model(), b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                               b["completion_mask_BC"]).logp_BC


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_micro_batching_gives_the_same_update(loss_type):
    robust = RobustGRPOSettings((3, 1), eta_alpha=0.5, chi=0.8)
    s1, b, step1 = _setup(robust, 1, loss_type)
    s4, _, step4 = _setup(robust, 4, loss_type)
    n1, m1 = step1(s1, b, jax.random.key(0))
    n4, m4 = step4(s4, b, jax.random.key(0))
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(n1.robust.log_alpha_M), np.asarray(n4.robust.log_alpha_M), rtol=1e-6)
    _close_params(n1, n4)


def test_run_on_an_8_device_mesh_equals_one_device(tmp_path):
    """The tiny GRPO run with groups (8 prompts of 32 in group ``minority``): the same losses, alpha and
    group rewards on mesh {data: 8} (the batch rows split over the devices) as on one device."""
    common = [*GROUPS, "grpo.robust.eta_alpha=2.0", "train.steps=2", "train.batch_size=8",
              "grpo.max_completion_length=6", "model.shape.num_layers=1", "train.save_every=100",
              "train.adam_eps=1e-4"]
    rows = {}
    for mesh in (1, 8):
        _train("grpo", GRPOTask, [*common, f"mesh.data={mesh}", f"run_dir={tmp_path / str(mesh)}"])
        rows[mesh] = _metrics(tmp_path / str(mesh))
    for a, b in zip(rows[1], rows[8]):
        assert {k for k in a if k.startswith("robust/")} == {k for k in b if k.startswith("robust/")}
        assert {"robust/alpha/majority", "robust/alpha/minority", "robust/worst_group_reward"} <= set(a)
        for k in ("loss", "reward", *(k for k in a if k.startswith("robust/"))):
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert rows[1][-1]["robust/alpha/minority"] != pytest.approx(0.25)  # alpha moved from mu


def test_refusals_are_one_line(tmp_path):
    def task(*over):
        return GRPOTask(load_config("configs/tiny_grpo.yaml", [f"run_dir={tmp_path}", *over]))

    with pytest.raises(UserError, match="column 'kind'") as e:
        task("grpo.robust.group_column=kind", "data.path=tests/data/fixtures/tiny_prompt_groups.jsonl")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"grpo.robust.score='safety' is neither 'reward' nor an aspect"):
        task(*GROUPS, "grpo.robust.score=safety")
    for kind in ("ppo", "online_dpo"):  # group-robust GRPO is GRPO's: the other rollout methods refuse it
        with pytest.raises(UserError, match=f"unknown key '{kind}.robust'") as e:
            load_config(f"configs/tiny_{kind}.yaml", [f"run_dir={tmp_path}", f"{kind}.robust.group_column=group"])
        assert "\n" not in str(e.value)
