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
from grpojax.train.forward import completion_logprobs
from grpojax.train.grpo_task import GRPOTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPS = 1e-6  # far below the bf16 sampler / trainer mismatch (1e-5..1e-3): a ratio != 1 is clipped


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _task(tmp_path, mu):
    cfg = load_config("configs/tiny_grpo.yaml", [
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
    mask = b["completion_mask_BL"].astype(np.float32)
    assert mask.sum() > 0

    # the independent on-policy loss and gradient: old = stop_gradient(logp) of the bf16 trainer forward
    graphdef = task.graphdef

    def loss_of(params):
        model = task.model_of(state._replace(params=params))
        logp = completion_logprobs(model, b["prompt_BP"], b["prompt_mask_BP"], b["completion_BL"],
                                   b["completion_mask_BL"], temperature=1.0).logp_BL
        loss, _ = grpo_loss(logp, None, b["ref_logp_BL"], b["advantages_B"], mask, loss_type="dapo",
                            epsilon_low=EPS, beta=0.04)
        return loss, logp

    (want_loss, logp), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    want_norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads))))
    sampler_gap = float(np.max(np.abs(np.asarray(logp) - b["sampler_logp_BL"]) * mask))
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
    task, state = _task(tmp_path, 2)
    assert task.steps_per_call(0, 10) == 2
    _, rows = task.train_steps(state, 0, [jax.random.key(4), jax.random.key(5)])
    assert rows[0]["clip_ratio/region_mean"] == 0.0  # first update: ratio exactly 1
    assert "sampler/logp_max_abs_diff" in rows[0] and "sampler/logp_max_abs_diff" not in rows[1]
    # second update: old = the first forward's log-probs, the params moved (lr 0.05): the clip is active
    assert rows[1]["clip_ratio/region_mean"] > 0.0
