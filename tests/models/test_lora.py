"""LoRA: zero-init equals base, alpha/r scaling against a float64 NumPy reference, LoRA-only optimizer
updates, merge == unmerged, merged export loads in transformers with the same logits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hf_tiny import VOCAB, forward, torch_logits
from transformers import AutoModelForCausalLM

from grpojax.models import LORA_TARGETS, apply_lora, from_hf, lora_params, merge_lora, to_hf
from grpojax.models.qwen import Dense

TOKS = np.random.RandomState(0).randint(0, VOCAB, (2, 6))


def randomize_lora_b_(model, seed=1):
    rs = np.random.RandomState(seed)
    for _, m in nnx.iter_graph(model):
        if isinstance(m, Dense) and m.lora is not None:
            m.lora.lora_b[...] = jnp.asarray(0.05 * rs.standard_normal(m.lora.lora_b.shape), jnp.float32)


def test_dense_lora_matches_numpy_reference():
    """y = x W + b + (alpha/r) x A B on lettered axes (o projection: [N, H] -> D), float64 reference."""
    from grpojax.models.qwen import KeyStream
    dense = Dense("BTNH,NHD->BTD", (2, 4), (6,), ("q_heads", "head_dim", "embed"), bias=True,
                  dtype=jnp.float32, param_dtype=jnp.float32, keys=KeyStream(nnx.Rngs(0)))
    rs = np.random.RandomState(0)
    dense.w[...] = jnp.asarray(rs.standard_normal((2, 4, 6)), jnp.float32)
    dense.b[...] = jnp.asarray(rs.standard_normal(6), jnp.float32)
    dense.lora = nnx.LoRA(8, 3, 6, rngs=nnx.Rngs(1))
    dense.lora.lora_b[...] = jnp.asarray(rs.standard_normal((3, 6)), jnp.float32)
    dense.lora_scale = 16 / 3
    x = rs.standard_normal((2, 5, 2, 4))
    w, b = np.asarray(dense.w[...], np.float64), np.asarray(dense.b[...], np.float64)
    a, bb = np.asarray(dense.lora.lora_a[...], np.float64), np.asarray(dense.lora.lora_b[...], np.float64)
    x_flat = x.reshape(2, 5, 8)
    ref = x_flat @ w.reshape(8, 6) + b + (16 / 3) * (x_flat @ a @ bb)
    np.testing.assert_allclose(np.asarray(dense(jnp.asarray(x, jnp.float32))), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("targets", [LORA_TARGETS, ("q_proj", "v_proj"), ("down",)])
def test_lora_init_is_identity_and_merge_is_exact(hf_checkpoint, targets):
    ckpt, _ = hf_checkpoint("qwen2-gqa2-untied")
    base = forward(from_hf(ckpt), TOKS)
    model = apply_lora(from_hf(ckpt), targets, rank=4, alpha=8, rngs=nnx.Rngs(0))
    n_adapted = len([1 for _, m in nnx.iter_graph(model) if isinstance(m, Dense) and m.lora is not None])
    assert n_adapted == 2 * len(targets)
    np.testing.assert_array_equal(forward(model, TOKS), base)  # B = 0 at init
    randomize_lora_b_(model)
    lora_logits = forward(model, TOKS)
    assert np.abs(lora_logits - base).max() > 1e-3
    merged = forward(merge_lora(model), TOKS)
    assert not lora_params(model)  # adapters removed
    np.testing.assert_allclose(merged, lora_logits, atol=2e-5)


def test_optimizer_restricted_to_lora_params(hf_checkpoint):
    ckpt, _ = hf_checkpoint("qwen3-gqa2-tied")
    model = apply_lora(from_hf(ckpt), ("q", "v", "up"), rank=2, alpha=4, rngs=nnx.Rngs(0))
    base_before = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    opt = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.LoRAParam)
    toks = jnp.asarray(TOKS)

    def loss_fn(m):
        logp = jax.nn.log_softmax(m(toks[:, :-1]))
        return -jnp.mean(jnp.take_along_axis(logp, toks[:, 1:, None], axis=-1))

    @nnx.jit
    def step(m, o):
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(m)
        o.update(m, grads)
        return loss

    l0 = step(model, opt)
    l1 = step(model, opt)
    after = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    changed = {jax.tree_util.keystr(p) for p, (x, y) in
               zip(jax.tree_util.tree_flatten_with_path(base_before)[0],
                   zip(jax.tree.leaves(base_before), jax.tree.leaves(after))) if not np.array_equal(x, y)}
    assert changed and all("lora" in p for p in changed)
    assert any("lora_b" in p for p in changed)
    assert float(l1) < float(l0)


def test_merged_lora_exports_to_transformers(hf_checkpoint, tmp_path):
    ckpt, _ = hf_checkpoint("qwen2-gqa1-tied")
    model = apply_lora(from_hf(ckpt), LORA_TARGETS, rank=4, alpha=16, rngs=nnx.Rngs(2))
    randomize_lora_b_(model, seed=3)
    lora_logits = forward(model, TOKS)
    with pytest.raises(ValueError, match="merge_lora"):
        to_hf(model, str(tmp_path / "unmerged"))
    to_hf(merge_lora(model), str(tmp_path / "merged"))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    err = np.abs(torch_logits(hf, TOKS) - lora_logits).max()
    print(f"\n[lora export] max |HF(merged) - ours(LoRA)| = {err:.3e}")
    assert err <= 1e-4


def test_bad_lora_arguments(hf_checkpoint):
    ckpt, _ = hf_checkpoint("qwen2-gqa2-untied")
    model = from_hf(ckpt)
    with pytest.raises(ValueError, match="unknown LoRA target 'qkv'"):
        apply_lora(model, ("qkv",), rank=2, alpha=2)
    with pytest.raises(ValueError, match="rank must be a positive"):
        apply_lora(model, ("q",), rank=0, alpha=2)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_lora(model)
    apply_lora(model, ("q",), rank=2, alpha=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, ("q",), rank=2, alpha=2)
