"""Sharded == single device: GRPO and GR-DPO train steps and the KV-cache sampler on 8 fake CPU devices.

For each mesh (data x fsdp x tensor) in 8x1x1, 2x4x1, 2x2x2, 1x1x8 the state is born sharded through
``init_train_state`` (``grpojax.train.placement``) and stepped through ``jit_step`` (shardings + donation);
the loss, the metrics and the updated parameters must match an unsharded single-device step to float32
tolerance (optax.sgd, so float noise is not amplified by Adam's normalisation), and the parameters must
really be split the way the rules say.
"""

import functools

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax import sharding as shd
from grpojax.models import Qwen, QwenConfig
from grpojax.sampling import ShardedCache, sample
from grpojax.train.placement import init_train_state
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.preference import PreferenceSettings, init_robust_state, preference_step
from grpojax.train.steps.state import create_train_state

CFG = QwenConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=8,
                 num_kv_heads=8, head_dim=4, tie_word_embeddings=False)
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]
B, P, L = 8, 6, 8
TX = optax.sgd(0.5)
GRPO = GRPOSettings(beta=0.04, logprob_chunk=4)
GRDPO = PreferenceSettings(loss="gr_dpo", beta=0.1, num_groups=2, group_sizes=(3, 5), eta_alpha=0.5)


def ctor():
    return Qwen(CFG, rngs=nnx.Rngs(3))


def _tokens(rng, shape):
    return rng.integers(1, CFG.vocab_size, size=shape).astype(np.int32)


def _left_mask(rng, rows, width):
    lens = rng.integers(1, width + 1, size=rows)
    return (np.arange(width)[None, :] >= width - lens[:, None]).astype(np.int32)


def _right_mask(rng, rows, width):
    lens = rng.integers(1, width + 1, size=rows)
    return (np.arange(width)[None, :] < lens[:, None]).astype(np.int32)


def grpo_batch():
    r = np.random.default_rng(0)
    return {"prompt_BQ": _tokens(r, (B, P)), "prompt_mask_BQ": _left_mask(r, B, P),
            "completion_BC": _tokens(r, (B, L)), "completion_mask_BC": _right_mask(r, B, L),
            "old_logp_BC": (-3.0 - r.random((B, L))).astype(np.float32),
            "ref_logp_BC": (-3.0 - r.random((B, L))).astype(np.float32),
            "advantages_B": r.standard_normal(B).astype(np.float32)}


def dpo_batch():
    r = np.random.default_rng(1)
    return {"prompt_BQ": _tokens(r, (B, P)), "prompt_mask_BQ": _left_mask(r, B, P),
            "chosen_BC": _tokens(r, (B, L)), "chosen_mask_BC": _right_mask(r, B, L),
            "rejected_BC": _tokens(r, (B, L)), "rejected_mask_BC": _right_mask(r, B, L),
            "ref_chosen_logp_B": (-20.0 - r.random(B)).astype(np.float32),
            "ref_rejected_logp_B": (-20.0 - r.random(B)).astype(np.float32),
            "group_id_B": np.array([0, 1, 1, 0, 1, 1, 0, 1], np.int32)}


STEPS = {
    "grpo": (grpo_batch, lambda gd: functools.partial(grpo_step, graphdef=gd, tx=TX, settings=GRPO), None),
    "gr_dpo": (dpo_batch,
               lambda gd: functools.partial(preference_step, graphdef=gd, tx=TX, settings=GRDPO),
               init_robust_state(GRDPO)),
}


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


@pytest.fixture(scope="module")
def reference():
    """Unsharded single-device results of one step of each kind."""
    out = {}
    for kind, (make_batch, make_step, robust) in STEPS.items():
        graphdef, state = create_train_state(ctor(), TX, jax.random.key(0), robust=robust)
        new_state, metrics = jax.jit(make_step(graphdef))(state, make_batch(), jax.random.key(1))
        out[kind] = (_host(new_state.params), _host(metrics), _host(state.params))
    return out


@pytest.mark.parametrize("sizes", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_steps_match_single_device(sizes, reference):
    mesh = shd.make_mesh(sizes)
    assert dict(mesh.shape) == dict(zip(shd.AXES, sizes))
    for kind, (make_batch, make_step, robust) in STEPS.items():
        graphdef, state, state_sh = init_train_state(ctor, TX, jax.random.key(0), mesh, robust=robust)
        ref_params, ref_metrics, init_params = reference[kind]
        # born sharded with the same values as the unsharded (eager) init, up to jit's float rounding
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
                     _host(state.params), init_params)
        q_w = state.params["layers"][0]["attn"]["q"]["w"][...]
        data, fsdp, tensor = sizes
        assert q_w.sharding.spec == jax.sharding.PartitionSpec(
            "fsdp" if fsdp > 1 else None, "tensor" if tensor > 1 else None, None)
        assert q_w.addressable_shards[0].data.shape == (32 // fsdp, 8 // tensor, 4)
        batch = make_batch()
        batch_sh = shd.batch_shardings(batch, mesh)
        step = shd.jit_step(make_step(graphdef), state_sh, batch_sh, mesh)
        new_state, metrics = step(state, shd.shard(batch, batch_sh), jax.random.key(1))
        assert state.params["embed"][...].is_deleted(), "the input state should be donated"
        assert new_state.params["layers"][0]["attn"]["q"]["w"][...].sharding.spec == q_w.sharding.spec
        got = _host(metrics)
        np.testing.assert_allclose(got["loss"], ref_metrics["loss"], rtol=2e-5, atol=1e-6)
        for k in ref_metrics:
            np.testing.assert_allclose(got[k], ref_metrics[k], rtol=1e-4, atol=1e-5, err_msg=f"{kind}:{k}")
        moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), ref_params, init_params)
        assert max(jax.tree.leaves(moved)) > 1e-4, "the step should move the params"
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=2e-6),
                     _host(new_state.params), ref_params)


def test_sampler_sharded_matches_unsharded():
    r = np.random.default_rng(2)
    prompts, mask = _tokens(r, (4, 5)), _left_mask(r, 4, 5)
    kw = dict(max_new_tokens=6, temperature=0.8, num_samples=2)
    ref = sample(ctor(), prompts, mask, jax.random.key(7), **kw)
    mesh = shd.make_mesh((2, 2, 2))
    model = shd.init_sharded(ctor, mesh)
    assert model.layers[0].mlp.up.w[...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    sh = shd.batch_shardings({"p": prompts}, mesh)["p"]
    out = sample(model, jax.device_put(prompts, sh), jax.device_put(mask, sh), jax.random.key(7),
                 cache_fn=ShardedCache(CFG, mesh), **kw)
    np.testing.assert_array_equal(np.asarray(out.completion_tokens_BC), np.asarray(ref.completion_tokens_BC))
    np.testing.assert_array_equal(np.asarray(out.completion_mask_BC), np.asarray(ref.completion_mask_BC))
    np.testing.assert_allclose(np.asarray(out.completion_logp_BC), np.asarray(ref.completion_logp_BC),
                               rtol=1e-5, atol=1e-5)


CFG2 = CFG.replace(num_layers=2)


def _unstack(params):
    """A scanned model's params as the per-layer model's ``{"layers": {0: ..., 1: ...}}``."""
    out = nnx.to_pure_dict(params)
    out["layers"] = {i: jax.tree.map(lambda x, i=i: x[i], out["layers"]) for i in range(CFG2.num_layers)}
    return out


def test_scanned_layers_sharded_match_per_layer_single_device():
    """``scan_layers`` on a 2x2x2 mesh (stacked params: the ``layers`` axis whole, the rest by the rules)
    == the per-layer model on one device: GRPO and GR-DPO steps, and the sampler with a stacked
    ``ShardedCache``."""
    mesh = shd.make_mesh((2, 2, 2))
    scanned = lambda: Qwen(CFG2.replace(scan_layers=True), rngs=nnx.Rngs(3))  # noqa: E731
    for kind, (make_batch, make_step, robust) in STEPS.items():
        graphdef, state = create_train_state(Qwen(CFG2, rngs=nnx.Rngs(3)), TX, jax.random.key(0), robust=robust)
        ref_state, ref_metrics = jax.jit(make_step(graphdef))(state, make_batch(), jax.random.key(1))
        graphdef, state, state_sh = init_train_state(scanned, TX, jax.random.key(0), mesh, robust=robust)
        q_w = state.params["layers"]["attn"]["q"]["w"][...]
        assert q_w.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
        batch = make_batch()
        batch_sh = shd.batch_shardings(batch, mesh)
        step = shd.jit_step(make_step(graphdef), state_sh, batch_sh, mesh)
        new_state, metrics = step(state, shd.shard(batch, batch_sh), jax.random.key(1))
        for k, v in _host(ref_metrics).items():
            np.testing.assert_allclose(_host(metrics)[k], v, rtol=1e-4, atol=1e-5, err_msg=f"{kind}:{k}")
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=2e-6),
                     _unstack(_host(new_state.params)), nnx.to_pure_dict(_host(ref_state.params)))
    r = np.random.default_rng(2)
    prompts, mask = _tokens(r, (4, 5)), _left_mask(r, 4, 5)
    kw = dict(max_new_tokens=6, temperature=0.8, num_samples=2)
    ref = sample(Qwen(CFG2, rngs=nnx.Rngs(3)), prompts, mask, jax.random.key(7), **kw)
    model = shd.init_sharded(scanned, mesh)
    sh = shd.batch_shardings({"p": prompts}, mesh)["p"]
    out = sample(model, jax.device_put(prompts, sh), jax.device_put(mask, sh), jax.random.key(7),
                 cache_fn=ShardedCache(model.config, mesh), **kw)
    np.testing.assert_array_equal(np.asarray(out.completion_tokens_BC), np.asarray(ref.completion_tokens_BC))
    np.testing.assert_allclose(np.asarray(out.completion_logp_BC), np.asarray(ref.completion_logp_BC),
                               rtol=1e-5, atol=1e-5)
    cache = jax.eval_shape(lambda: ShardedCache(model.config, mesh)(4, 11))
    assert shd.cache_shardings(cache, mesh)["k"].spec == jax.sharding.PartitionSpec(
        None, ("data", "fsdp"), None, "tensor", None)
