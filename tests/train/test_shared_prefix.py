"""Shared-prefix forward (``grpo.shared_prefix`` / ``preference.shared_prefix``) == the concatenated forward.

The GRPO step (G = 4 rows per prompt) and the DPO step (chosen / rejected sharing the prompt) run with the
shared prefix on a 2 x 4 (data x fsdp) mesh of the 8 fake devices and without it on one device, on
left-padded prompts of different lengths and right-padded completions (one of them empty); the loss and
the gradient of every parameter must agree to float32 rounding, on a model with scanned layers and LoRA
adapters (made non-zero) whose base weights and adapters are all trained. The gradients are read from an
optimizer that stores them as its state. A GRPO batch whose groups do not
share a prompt is not trained on (``shared_prefix/mismatch`` = 1, the step skipped as non-finite). The
compiled shared-prefix forward costs fewer FLOPs than the concatenated one on a long-prompt shape, and
gives its log-probs with per-layer modules under ``remat="full"``. Each step is compiled once per module.
A run whose prompts per micro-batch the mesh's batch axes do not divide is refused in one line.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from grpojax import sharding as shd
from grpojax.cli import UserError
from grpojax.config import load_config
from grpojax.models import Qwen, QwenConfig
from grpojax.models.lora import apply_lora
from grpojax.train.placement import init_train_state
from grpojax.train.steps.forward import completion_logprobs, shared_prefix_logprobs
from grpojax.train.steps.grpo import GRPOSettings, grpo_step
from grpojax.train.steps.preference import PreferenceSettings, preference_step
from grpojax.train.tasks.grpo import GRPOTask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = QwenConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8)
G, Q, C = 4, 7, 5
TOL = dict(rtol=1e-5, atol=2e-6)
MESH = (2, 4, 1)


def _capture():
    """An optimizer whose state after ``update`` is the gradient itself (and whose update is zero)."""
    return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p),
                                        lambda g, s, p=None: (jax.tree.map(jnp.zeros_like, g), g))


def _model(scan=False, remat="none", lora=False):
    model = Qwen(CFG.replace(scan_layers=scan), rngs=nnx.Rngs(0), remat=remat)
    if lora:
        apply_lora(model, rank=2, alpha=4, rngs=nnx.Rngs(1))
        ad = nnx.state(model, nnx.LoRAParam)
        keys = iter(jax.random.split(jax.random.key(2), len(jax.tree.leaves(ad))))
        nnx.update(model, jax.tree.map(lambda x: 0.02 * jax.random.normal(next(keys), x.shape), ad))
    return model


def _prompts(r, n):
    lens = np.array([Q, 2, 5, 1, 4, 6, 3, 7][:n])  # different lengths, left-padded
    mask = (np.arange(Q)[None, :] >= Q - lens[:, None]).astype(np.int32)
    return np.where(mask, r.integers(1, CFG.vocab_size, (n, Q)), 0).astype(np.int32), mask


def _completions(r, rows):
    lens = r.integers(1, C + 1, rows)
    lens[1] = 0  # an empty completion
    mask = (np.arange(C)[None, :] < lens[:, None]).astype(np.int32)
    return np.where(mask, r.integers(1, CFG.vocab_size, (rows, C)), 0).astype(np.int32), mask


def grpo_batch(prompts=8, seed=0):
    r = np.random.default_rng(seed)
    p, pm = _prompts(r, prompts)
    c, cm = _completions(r, prompts * G)
    B = prompts * G
    return {"prompt_BQ": np.repeat(p, G, axis=0), "prompt_mask_BQ": np.repeat(pm, G, axis=0),
            "completion_BC": c, "completion_mask_BC": cm, "advantages_B": r.standard_normal(B).astype(np.float32),
            "ref_logp_BC": (-4.0 - r.random((B, C))).astype(np.float32)}


def dpo_batch(pairs=8, seed=1):
    r = np.random.default_rng(seed)
    p, pm = _prompts(r, pairs)
    (ch, chm), (rj, rjm) = _completions(r, pairs), _completions(r, pairs)
    return {"prompt_BQ": p, "prompt_mask_BQ": pm, "chosen_BC": ch, "chosen_mask_BC": chm, "rejected_BC": rj,
            "rejected_mask_BC": rjm, "ref_chosen_logp_B": (-15.0 - r.random(pairs)).astype(np.float32),
            "ref_rejected_logp_B": (-15.0 - r.random(pairs)).astype(np.float32)}


def _grpo(shared):
    return GRPOSettings(beta=0.04, logprob_chunk=None, shared_prefix=shared, num_generations=G)


def _dpo(shared):
    return PreferenceSettings(loss="dpo", beta=0.1, shared_prefix=shared)


KINDS = {"grpo": (grpo_step, _grpo, grpo_batch), "dpo": (preference_step, _dpo, dpo_batch)}


def _lora_model():
    """Scanned layers and LoRA adapters; every ``nnx.Param`` (``nnx.LoRAParam`` included) is trained, so
    the gradients cover the base weights and the adapters."""
    return _model(scan=True, lora=True)


def _run(kind, batch):
    """The single-device step with the concatenated forward."""
    step, settings, _ = KINDS[kind]
    graphdef, state = _single()
    fn = jax.jit(functools.partial(step, graphdef=graphdef, tx=_capture(), settings=settings(False)))
    new, metrics = fn(state, batch, jax.random.key(1))
    return jax.device_get(metrics), jax.device_get(new.opt_state)


@functools.cache
def _single():
    """The same train state as host arrays (before any sharded step donates it)."""
    _, graphdef, holder, _ = _on_mesh()
    return graphdef, jax.device_get(holder["state"])


@functools.cache
def _on_mesh():
    """The train state born sharded on a 2 x 4 (data x fsdp) mesh of the 8 fake devices (one per module)."""
    mesh = shd.make_mesh(MESH)
    graphdef, state, state_sh = init_train_state(_lora_model, _capture(), jax.random.key(0), mesh)
    return mesh, graphdef, {"state": state}, state_sh


@functools.cache
def _sharded(kind):
    """The shared-prefix step jitted on the mesh: ``run(batch) -> (metrics, gradients)``."""
    step, settings, make_batch = KINDS[kind]
    _single()
    mesh, graphdef, holder, state_sh = _on_mesh()
    batch_sh = shd.batch_shardings(make_batch(), mesh)
    fn = shd.jit_step(functools.partial(step, graphdef=graphdef, tx=_capture(), settings=settings(True)),
                      state_sh, batch_sh, mesh)

    def run(batch):
        new, metrics = fn(holder["state"], shd.shard(batch, batch_sh), jax.random.key(1))
        out = jax.device_get(metrics), jax.device_get(new.opt_state)
        holder["state"] = new  # the input was donated; the update is zero, so the params are the same
        return out

    return run


def _assert_same(a, b):
    (ma, ga), (mb, gb) = a, b
    np.testing.assert_allclose(ma["loss"], mb["loss"], **TOL)
    assert len(jax.tree.leaves(ga)) == len(jax.tree.leaves(gb)) > 0
    assert max(float(np.max(np.abs(x))) for x in jax.tree.leaves(gb)) > 1e-4  # gradients are not all zero
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **TOL), ga, gb)


@pytest.mark.parametrize("kind", list(KINDS))
def test_sharded_shared_prefix_steps_equal_single_device_concatenated(kind):
    b = KINDS[kind][2]()
    shared = _sharded(kind)(b)
    assert any("lora" in str(path) for path, _ in jax.tree_util.tree_leaves_with_path(shared[1]))
    _assert_same(shared, _run(kind, b))
    if kind == "grpo":
        assert shared[0]["shared_prefix/mismatch"] == 0.0 and shared[0]["nonfinite"] == 0.0


def test_grpo_rows_that_do_not_share_a_prompt_are_not_trained_on():
    b = grpo_batch()
    b = {k: v[np.r_[1:len(v), 0]] for k, v in b.items()}  # every group straddles two prompts
    metrics, _ = _sharded("grpo")(b)
    assert metrics["shared_prefix/mismatch"] == 1.0 and metrics["nonfinite"] == 1.0


def test_shared_prefix_forward_costs_fewer_flops_on_a_long_prompt():
    """Q = 64 prompt tokens, C = 2 answer tokens, a pair: the prompt's projections and MLPs run once, and
    the per-layer (unscanned) model's log-probs under ``remat="full"`` are those of the concatenated forward."""
    model = _model(remat="full")
    r = np.random.default_rng(3)
    pm = (np.arange(64)[None, :] >= np.array([[0], [10]])).astype(np.int32)
    p = np.where(pm, r.integers(1, CFG.vocab_size, (2, 64)), 0).astype(np.int32)
    c = r.integers(1, CFG.vocab_size, (2, 2, 2)).astype(np.int32)
    cm = np.array([[[1, 1], [1, 0]], [[1, 0], [1, 1]]], np.int32)

    def compiled(fn, *args):
        return jax.jit(fn).lower(*args).compile()

    shared = compiled(lambda *a: shared_prefix_logprobs(model, *a).logp_BC, p, pm, c, cm)
    concat_args = (np.repeat(p, 2, axis=0), np.repeat(pm, 2, axis=0), c.reshape(4, 2), cm.reshape(4, 2))
    concat = compiled(lambda *a: completion_logprobs(model, *a).logp_BC, *concat_args)
    assert shared.cost_analysis()["flops"] < 0.6 * concat.cost_analysis()["flops"]
    np.testing.assert_allclose(shared(p, pm, c, cm) * cm.reshape(4, 2), concat(*concat_args) * cm.reshape(4, 2),
                               **TOL)


def test_prompts_the_batch_axes_do_not_divide_are_refused(monkeypatch):
    """tiny_grpo: 16 completions = 4 prompts per step, the mesh's data axis takes all 8 devices."""
    monkeypatch.chdir(ROOT)
    cfg = load_config("configs/tiny_grpo.yaml", ["run_dir=/tmp/never", "grpo.shared_prefix=true"])
    with pytest.raises(UserError, match=r"grpo.shared_prefix: prompts per micro-batch=4 is not divisible by mesh "
                                        r"data\*fsdp=8"):
        GRPOTask(cfg)
