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
import optax
import pytest
from flax import nnx

from grpojax.config import load_config
from grpojax.models import Qwen, QwenConfig
from grpojax.train.steps.preference import PreferenceSettings, pair_logprobs, preference_step
from grpojax.train.steps.state import create_train_state
from grpojax.train.tasks.online_dpo import best_worst_pairs, pair_batch

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


def test_pair_batch_picks_rows_of_each_prompt_and_masks_skipped_ones():
    G, B, L = 3, 3, 4
    comp = jnp.arange(B * G * L, dtype=jnp.int32).reshape(B * G, L)
    sampled = {"prompt_BQ": jnp.repeat(jnp.array([[7, 8], [9, 10], [11, 12]]), G, axis=0),
               "prompt_mask_BQ": jnp.ones((B * G, 2), jnp.int32), "completion_BC": comp,
               "completion_mask_BC": (comp % 2).astype(jnp.int32)}
    pb = pair_batch(sampled, np.array([2, 0, 1]), np.array([1, 0, 2]), np.array([True, False, True]), G)
    np.testing.assert_array_equal(pb["prompt_BQ"], [[7, 8], [9, 10], [11, 12]])
    np.testing.assert_array_equal(pb["chosen_BC"], comp[jnp.array([2, 3, 7])])
    np.testing.assert_array_equal(pb["rejected_BC"], comp[jnp.array([1, 3, 8])])
    expect = np.array(comp[jnp.array([1, 3, 8])] % 2)
    expect[1] = 0  # the skipped prompt has no active response token
    np.testing.assert_array_equal(pb["rejected_mask_BC"], expect)
    assert int(pb["chosen_mask_BC"][1].sum()) == 0 and int(pb["chosen_mask_BC"][0].sum()) > 0


def _pref_setup(loss):
    cfg = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, tie_word_embeddings=True)
    model = Qwen(cfg, rngs=nnx.Rngs(0))
    tx = optax.sgd(1.0)  # params move by exactly -grad
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    s = PreferenceSettings(loss=loss, beta=0.1)
    step = jax.jit(functools.partial(preference_step, graphdef=graphdef, tx=tx, settings=s))
    return model, state, s, step


def test_skipped_rows_contribute_exactly_zero_gradient(loss="dpo"):
    """2 real pairs + 2 skipped rows (zeroed masks): the update is exactly (2/4) x the update of the two
    real pairs alone, an all-skipped batch does not move the parameters, and pairs/loss undoes the mean."""
    model, state, s, step = _pref_setup(loss)
    r = np.random.default_rng(0)
    B, P, L = 4, 3, 5
    batch = {"prompt_BQ": jnp.asarray(r.integers(1, 64, (B, P)), jnp.int32),
             "prompt_mask_BQ": jnp.ones((B, P), jnp.int32),
             "chosen_BC": jnp.asarray(r.integers(1, 64, (B, L)), jnp.int32),
             "rejected_BC": jnp.asarray(r.integers(1, 64, (B, L)), jnp.int32)}
    keep_B1 = jnp.array([1, 0, 1, 0], jnp.int32)[:, None]
    batch["chosen_mask_BC"] = jnp.ones((B, L), jnp.int32) * keep_B1
    batch["rejected_mask_BC"] = jnp.ones((B, L), jnp.int32) * keep_B1
    pw, pl = pair_logprobs(model, batch, s)
    batch["ref_chosen_logp_B"], batch["ref_rejected_logp_B"] = jax.lax.stop_gradient(pw) - 0.3 * keep_B1[:, 0], pl
    new, metrics = step(state, batch, jax.random.key(0))
    real = jax.tree.map(lambda x: x[jnp.array([0, 2])], batch)
    new_real, metrics_real = step(state, real, jax.random.key(0))
    for p0, p4, p2 in zip(*(jax.tree.leaves(t.params) for t in (state, new, new_real))):
        scale = float(jnp.max(jnp.abs(p2 - p0)))  # float32 rounding of p + delta at |p| ~ 1 and large deltas
        np.testing.assert_allclose(np.asarray(p4 - p0), 0.5 * np.asarray(p2 - p0), rtol=1e-4, atol=3e-7 + 1e-6 * scale)
    from grpojax.losses.dpo import dpo_loss
    zero = jnp.zeros((1,))
    c = float(dpo_loss(zero, zero, zero, zero, beta=0.1, loss_type="sigmoid" if loss == "dpo" else "ipo")[0])
    np.testing.assert_allclose((4 * float(metrics["loss"]) - 2 * c) / 2, float(metrics_real["loss"]), rtol=1e-5)
    skipped = dict(batch, chosen_mask_BC=batch["chosen_mask_BC"] * 0, rejected_mask_BC=batch["rejected_mask_BC"] * 0)
    new0, metrics0 = step(state, skipped, jax.random.key(0))
    assert float(metrics0["grad_norm"]) == 0.0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(new0.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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
