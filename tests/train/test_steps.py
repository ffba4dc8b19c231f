"""The pure train steps: learning happens, micro-batching is exact, log-probs are the model's."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax.losses import grpo_loss, token_logprobs
from grpojax.models import Qwen, QwenConfig
from grpojax.train.steps.forward import completion_logprobs, sequence_inputs
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.optim import make_optimizer
from grpojax.train.steps.sft import sft_step
from grpojax.train.steps.state import create_train_state, merge_model

CFG = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, tie_word_embeddings=True)


def _model(seed=0):
    return Qwen(CFG, rngs=nnx.Rngs(seed))


def _batch(rng, B=8, P=5, L=6):
    r = np.random.default_rng(rng)
    prompt = r.integers(1, CFG.vocab_size, (B, P))
    plen = r.integers(1, P + 1, B)
    prompt_mask = np.arange(P)[None, :] >= (P - plen)[:, None]  # left padded
    prompt = np.where(prompt_mask, prompt, 0)
    comp = r.integers(1, CFG.vocab_size, (B, L))
    clen = r.integers(0, L + 1, B)
    comp_mask = np.arange(L)[None, :] < clen[:, None]
    comp = np.where(comp_mask, comp, 0)
    return dict(prompt_BQ=jnp.asarray(prompt, jnp.int32), prompt_mask_BQ=jnp.asarray(prompt_mask),
                completion_BC=jnp.asarray(comp, jnp.int32), completion_mask_BC=jnp.asarray(comp_mask))


def test_completion_logprobs_match_full_forward_and_chunking():
    model = _model()
    b = _batch(0)
    tokens, mask, pos = sequence_inputs(b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                                        b["completion_mask_BC"])
    logits = model(tokens, pos, attn_mask_BT=mask)
    P, L = 5, 6
    ref = token_logprobs(logits[:, P - 1:P + L - 1], b["completion_BC"], temperature=0.7)
    for chunk in (None, 2, 4):  # 4 -> largest divisor 3
        out = completion_logprobs(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                                  b["completion_mask_BC"], temperature=0.7, chunk_size=chunk)
        np.testing.assert_allclose(np.asarray(out.logp_BC), np.asarray(ref), atol=1e-5, rtol=1e-5)


def _grpo_setup(num_micro, loss_type="dapo", tx=None):
    model = _model()
    tx = tx or make_optimizer(1e-2, total_steps=10, max_grad_norm=None)
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    b = _batch(1)
    out = completion_logprobs(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                              b["completion_mask_BC"])
    b["old_logp_BC"] = out.logp_BC
    b["ref_logp_BC"] = out.logp_BC
    b["advantages_B"] = jnp.asarray(np.random.default_rng(2).normal(size=8), jnp.float32)
    settings = GRPOSettings(loss_type=loss_type, beta=0.04)
    step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=settings,
                                     num_micro=num_micro))
    return graphdef, state, b, step


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo", "dr_grpo"])
def test_grpo_step_loss_equals_pure_loss(loss_type):
    graphdef, state, b, step = _grpo_setup(1, loss_type)
    new_state, metrics = step(state, b, jax.random.key(1))
    mask = b["completion_mask_BC"].astype(jnp.float32)
    expected, _ = grpo_loss(b["old_logp_BC"], b["old_logp_BC"], b["ref_logp_BC"], b["advantages_B"],
                            mask, loss_type=loss_type, beta=0.04)
    np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5, atol=1e-6)
    assert int(new_state.step) == 1
    moved = jax.tree.leaves(jax.tree.map(lambda a, c: jnp.max(jnp.abs(a - c)), state.params,
                                         new_state.params))
    assert max(float(m) for m in moved) > 0


def test_grpo_dapo_micro_batching_is_exact():
    # plain SGD: Adam's first update is ~lr*sign(g), which amplifies float noise in tiny gradients
    _, s1, b, step1 = _grpo_setup(1, tx=optax.sgd(1.0))
    _, s4, _, step4 = _grpo_setup(4, tx=optax.sgd(1.0))
    n1, m1 = step1(s1, b, jax.random.key(0))
    n4, m4 = step4(s4, b, jax.random.key(0))
    np.testing.assert_allclose(float(m1["loss"]), float(m4["loss"]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-4)
    for a, c in zip(jax.tree.leaves(n1.params), jax.tree.leaves(n4.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-6)


def test_grpo_step_raises_logprob_of_positive_advantage_completion():
    graphdef, state, b, step = _grpo_setup(1)
    adv = jnp.where(jnp.arange(8) % 2 == 0, 1.0, -1.0)
    b["advantages_B"] = adv
    for _ in range(5):
        state, _ = step(state, b, jax.random.key(0))
    model = merge_model(graphdef, state.params, state.frozen)
    new = completion_logprobs(model, b["prompt_BQ"], b["prompt_mask_BQ"], b["completion_BC"],
                              b["completion_mask_BC"]).logp_BC
    mask = b["completion_mask_BC"]
    delta = np.asarray(jnp.sum((new - b["old_logp_BC"]) * mask, axis=1))
    has = np.asarray(mask.sum(1) > 0)
    assert np.all(delta[(np.arange(8) % 2 == 0) & has] > 0)
    assert np.all(delta[(np.arange(8) % 2 == 1) & has] < 0)


def test_sft_step_lowers_nll_and_micro_batching_is_exact():
    model = _model()
    tx = make_optimizer(3e-2, total_steps=50, max_grad_norm=1.0)
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    b = _batch(3)
    step1 = jax.jit(functools.partial(sft_step, graphdef=graphdef, tx=tx, num_micro=1))
    step2 = jax.jit(functools.partial(sft_step, graphdef=graphdef, tx=tx, num_micro=2))
    _, m1 = step1(state, b, jax.random.key(0))
    _, m2 = step2(state, b, jax.random.key(0))
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
    assert float(m1["tokens"]) == float(m2["tokens"]) == float(jnp.sum(b["completion_mask_BC"]))
    first = float(m1["loss"])
    for _ in range(30):
        state, m = step1(state, b, jax.random.key(0))
    assert float(m["loss"]) < 0.5 * first


def test_lora_state_trains_only_adapters():
    from grpojax.models import lora

    model = lora.apply_lora(_model(), targets=("q_proj", "v_proj"), rank=4, alpha=8, rngs=nnx.Rngs(1))
    tx = make_optimizer(1e-2, total_steps=10)
    graphdef, state = create_train_state(model, tx, jax.random.key(0), lora=True)
    n_train = sum(x.size for x in jax.tree.leaves(state.params))
    n_frozen = sum(x.size for x in jax.tree.leaves(state.frozen))
    assert 0 < n_train < n_frozen
    b = _batch(4)
    step = jax.jit(functools.partial(sft_step, graphdef=graphdef, tx=tx))
    new_state, _ = step(state, b, jax.random.key(0))
    for a, c in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(new_state.frozen)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


# ---------------------------------------------------------------- preference step
from grpojax.losses.dpo import dpo_loss  # noqa: E402
from grpojax.train.steps.preference import PreferenceSettings, init_robust_state, pair_logprobs, preference_step  # noqa: E402


def _pref_batch(seed=5, B=8):
    a, c = _batch(seed, B=B), _batch(seed + 100, B=B)
    b = dict(prompt_BQ=a["prompt_BQ"], prompt_mask_BQ=a["prompt_mask_BQ"],
             chosen_BC=a["completion_BC"], chosen_mask_BC=a["completion_mask_BC"],
             rejected_BC=c["completion_BC"], rejected_mask_BC=c["completion_mask_BC"],
             group_id_B=jnp.asarray([0, 1, 1, 1, 0, 1, 1, 1], jnp.int32))
    return b


def _pref_setup(settings, num_micro, tx=None):
    model = _model()
    tx = tx or optax.sgd(1.0)
    b = _pref_batch()
    pw, pl = pair_logprobs(model, b, settings)
    b["ref_chosen_logp_B"] = pw + 0.3 * jnp.arange(8.0)   # a reference != policy, so h != 0
    b["ref_rejected_logp_B"] = pl
    graphdef, state = create_train_state(model, tx, jax.random.key(0),
                                         robust=init_robust_state(settings))
    step = jax.jit(functools.partial(preference_step, graphdef=graphdef, tx=tx, settings=settings,
                                     num_micro=num_micro))
    return state, b, step, (pw, pl)


@pytest.mark.parametrize("loss", ["dpo", "ipo"])
def test_preference_step_plain_loss_is_mean_pair_loss(loss):
    settings = PreferenceSettings(loss=loss, beta=0.5, num_groups=2)
    state, b, step, (pw, pl) = _pref_setup(settings, 1)
    _, m = step(state, b, jax.random.key(0))
    expect = dpo_loss(pw, pl, b["ref_chosen_logp_B"], b["ref_rejected_logp_B"], beta=0.5,
                      loss_type="sigmoid" if loss == "dpo" else "ipo").mean()
    np.testing.assert_allclose(float(m["loss"]), float(expect), rtol=1e-5)


def test_gr_dpo_step_updates_alpha_first_and_micro_batching_is_exact():
    settings = PreferenceSettings(loss="gr_dpo", beta=0.5, num_groups=2, group_sizes=(20, 80),
                                  eta_alpha=0.5)
    s1, b, step1, (pw, pl) = _pref_setup(settings, 1)
    s2, _, step2, _ = _pref_setup(settings, 2)
    n1, m1 = step1(s1, b, jax.random.key(0))
    n2, m2 = step2(s2, b, jax.random.key(0))
    # hand-computed alpha update: alpha_g ∝ exp(eta * (N/N_g) * Σ_{i∈g} ℓ_i), then the weighted loss
    losses = np.asarray(dpo_loss(pw, pl, b["ref_chosen_logp_B"], b["ref_rejected_logp_B"], beta=0.5),
                        np.float64)
    g = np.asarray(b["group_id_B"])
    ghat = np.array([100 / 20 * losses[g == 0].sum(), 100 / 80 * losses[g == 1].sum()])
    alpha = 0.5 * np.exp(0.5 * ghat)
    alpha /= alpha.sum()
    np.testing.assert_allclose(np.asarray(m1["robust/alpha"]), alpha, rtol=1e-5)
    np.testing.assert_allclose(float(m1["loss"]), float((alpha * ghat).sum() / 8), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jnp.exp(n1.robust.log_alpha_M)), alpha, rtol=1e-5)
    # micro-batched (two-pass) step: same alpha, same loss, same update
    np.testing.assert_allclose(np.asarray(m2["robust/alpha"]), alpha, rtol=1e-5)
    np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5)
    for a, c in zip(jax.tree.leaves(n1.params), jax.tree.leaves(n2.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-6)
    assert float(m1["worst_group/loss"]) == pytest.approx(float(np.max(
        [losses[g == 0].mean(), losses[g == 1].mean()])), rel=1e-5)


@pytest.mark.parametrize("num_micro", [2, 4])
def test_reward_regression_step_micro_batching_is_exact_with_missing_labels(num_micro):
    """Labels missing unevenly across micro-batches: loss, per-aspect MSE and the update are the full
    batch's (loss against a float64 NumPy reference on the model's scores)."""
    from grpojax.models import RewardModel
    from grpojax.train.steps.reward import reward_step

    model = RewardModel(CFG, 3, rngs=nnx.Rngs(2), pad_token_id=0)
    tx = optax.sgd(0.5)
    graphdef, state = create_train_state(model, tx, jax.random.key(0))
    r = np.random.default_rng(5)
    B, T = 8, 6
    lengths = r.integers(2, T + 1, B)
    mask = np.arange(T)[None, :] < lengths[:, None]
    ids = np.where(mask, r.integers(1, CFG.vocab_size, (B, T)), 0)
    label_mask = np.zeros((B, 3), np.int32)
    label_mask[:2] = 1                            # micro-batch 0 holds most of the labels
    label_mask[[3, 6, 7], [0, 2, 1]] = 1
    labels = np.where(label_mask > 0, r.uniform(size=(B, 3)), 0.0).astype(np.float32)
    batch = {"input_ids_BT": jnp.asarray(ids, jnp.int32), "attention_mask_BT": jnp.asarray(mask, jnp.int32),
             "labels_BR": jnp.asarray(labels), "label_mask_BR": jnp.asarray(label_mask)}
    s = np.asarray(nnx.jit(lambda m, t, k: m(t, k))(model, batch["input_ids_BT"], batch["attention_mask_BT"]),
                   np.float64)
    live = label_mask > 0
    want = ((s - labels) ** 2 * live).sum() / live.sum()
    want_mse = ((s - labels) ** 2 * live).sum(0) / live.sum(0)
    out = {}
    for k in (1, num_micro):
        step = jax.jit(functools.partial(reward_step, graphdef=graphdef, tx=tx, num_micro=k))
        new, m = step(jax.tree.map(jnp.copy, state), batch, jax.random.key(0))
        out[k] = (float(m["loss"]), np.asarray(m["mse"]), [np.asarray(x) for x in jax.tree.leaves(new.params)])
    np.testing.assert_allclose(out[1][0], want, rtol=1e-5)
    np.testing.assert_allclose(out[1][1], want_mse, rtol=1e-5)
    np.testing.assert_allclose(out[num_micro][0], want, rtol=1e-5)
    np.testing.assert_allclose(out[num_micro][1], want_mse, rtol=1e-5)
    for a, b in zip(out[1][2], out[num_micro][2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
