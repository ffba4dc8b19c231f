"""Online DPO: best-vs-worst pair construction by hand, tied groups are zero-gradient self-pairs, and a
short run through scripts/train_online_dpo.py."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax.config import load_config
from grpojax.models import Qwen, QwenConfig
from grpojax.train.online_dpo_task import best_worst_pairs, pair_batch
from grpojax.train.optim import make_optimizer
from grpojax.train.preference import PreferenceSettings, pair_logprobs, preference_step
from grpojax.train.state import create_train_state, merge_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAN = float("nan")


def test_best_worst_pairs_by_hand():
    rewards = np.array([
        [0.1, 0.9, 0.5, 0.3],     # best 1, worst 0
        [2.0, 2.0, 2.0, 2.0],     # all tied: skipped
        [0.5, 0.7, 0.7, 0.2],     # tie for best: first index (1); worst 3
        [NAN, 0.4, NAN, 0.6],     # NaN ignored: best 3, worst 1
        [NAN, NAN, 1.0, NAN],     # one scored sample: no pair
        [NAN, NAN, NAN, NAN],     # nothing scored: no pair
        [-1.0, -3.0, -1.0, -3.0],  # negatives; ties on both ends: best 0, worst 1
    ])
    best, worst, valid = best_worst_pairs(rewards)
    np.testing.assert_array_equal(best, [1, 0, 1, 3, 2, 0, 0])
    np.testing.assert_array_equal(worst, [0, 0, 3, 1, 2, 0, 1])
    np.testing.assert_array_equal(valid, [True, False, True, True, False, False, True])
    with pytest.raises(ValueError, match="G >= 2"):
        best_worst_pairs(np.zeros((3, 1)))


def test_pair_batch_picks_rows_of_each_prompt():
    G, B, L = 3, 2, 4
    comp = jnp.arange(B * G * L, dtype=jnp.int32).reshape(B * G, L)
    sampled = {"prompt_BP": jnp.repeat(jnp.array([[7, 8], [9, 10]]), G, axis=0),
               "prompt_mask_BP": jnp.ones((B * G, 2), jnp.int32), "completion_BL": comp,
               "completion_mask_BL": (comp % 2).astype(jnp.int32)}
    pb = pair_batch(sampled, np.array([2, 0]), np.array([1, 0]), G)
    np.testing.assert_array_equal(pb["prompt_BP"], [[7, 8], [9, 10]])
    np.testing.assert_array_equal(pb["chosen_BL"], comp[jnp.array([2, 3])])
    np.testing.assert_array_equal(pb["rejected_BL"], comp[jnp.array([1, 3])])
    np.testing.assert_array_equal(pb["rejected_mask_BL"], (comp[jnp.array([1, 3])] % 2))


def test_tied_groups_as_self_pairs_contribute_no_gradient():
    """A batch of self-pairs (chosen == rejected) has grad 0; mixing them into a batch scales the real
    pairs' gradient by n_valid / B and changes nothing else."""
    cfg = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
    model = Qwen(cfg, rngs=nnx.Rngs(0))
    tx = make_optimizer(1e-2, total_steps=10, max_grad_norm=None)
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    s = PreferenceSettings(loss="dpo", beta=0.1)
    r = np.random.default_rng(0)
    B, P, L = 4, 3, 5
    batch = {"prompt_BP": jnp.asarray(r.integers(1, 64, (B, P)), jnp.int32),
             "prompt_mask_BP": jnp.ones((B, P), jnp.int32),
             "chosen_BL": jnp.asarray(r.integers(1, 64, (B, L)), jnp.int32),
             "chosen_mask_BL": jnp.ones((B, L), jnp.int32)}
    batch["rejected_BL"], batch["rejected_mask_BL"] = batch["chosen_BL"], batch["chosen_mask_BL"]
    pw, pl = pair_logprobs(model, batch, s)
    np.testing.assert_array_equal(np.asarray(pw), np.asarray(pl))
    batch["ref_chosen_logp_B"], batch["ref_rejected_logp_B"] = pw - 0.3, pl + 0.2  # any reference
    step = jax.jit(functools.partial(preference_step, graphdef=graphdef, tx=tx, settings=s))
    new, metrics = step(state, batch, jax.random.key(0))
    assert float(metrics["grad_norm"]) == 0.0
    np.testing.assert_allclose(float(metrics["rewards/margins"]), 0.0, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert merge_model(graphdef, new.params, new.frozen) is not None


def test_online_dpo_config_validation():
    from grpojax.cli import UserError

    path = os.path.join(ROOT, "configs/tiny_online_dpo.yaml")
    with pytest.raises(UserError, match="online_dpo.num_generations"):
        load_config(path, ["online_dpo.num_generations=1", "train.batch_size=4"])
    with pytest.raises(UserError, match="preference.loss"):
        load_config(path, ["preference.loss=gr_dpo"])
    with pytest.raises(UserError, match="train.batch_size"):
        load_config(path, ["train.batch_size=10"])


def test_train_online_dpo_script_short_run(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    cmd = [sys.executable, os.path.join(ROOT, "scripts/train_online_dpo.py"),
           os.path.join(ROOT, "configs/tiny_online_dpo.yaml"), f"run_dir={tmp_path}/run", "train.steps=3"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in open(f"{tmp_path}/run/metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert np.isfinite(r["loss"]) and np.isfinite(r["reward"]) and 0.0 <= r["pairs/valid_frac"] <= 1.0
        if r["pairs/valid_frac"] == 1.0:  # every row a real pair: the two losses agree
            assert r["pairs/loss"] == pytest.approx(r["loss"], rel=1e-5)
    assert rows[0]["loss"] == pytest.approx(np.log(2.0), abs=1e-4)  # policy == reference at step 1
    bad = subprocess.run(cmd + ["preference.loss=gr_ipo"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "preference.loss" in bad.stderr
