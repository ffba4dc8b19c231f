"""Parity of grpojax.models.Qwen with transformers (PyTorch) on tiny random checkpoints, and
cached decode == full forward."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_tiny import TINY, VOCAB, forward, torch_logits

from grpojax.models import Qwen, from_hf, init_cache

F32_TOL = 1e-4
# bf16: both sides round every matmul / residual to bf16 (8 bits of mantissa) but in different orders;
# on these tiny models logits of size ~1 differ by a few bf16 ulps.
BF16_TOL = 0.08


def tokens(B, T, seed=0):
    return np.random.RandomState(seed).randint(0, VOCAB, (B, T))


@pytest.mark.parametrize("name,T", [(n, 7) for n in sorted(TINY)] + [("qwen2-gqa2-untied", 1),
                                                                     ("qwen3-gqa2-tied", 1)])
def test_f32_logits_match_transformers(hf_checkpoint, name, T):
    ckpt, hf = hf_checkpoint(name)
    model = from_hf(ckpt)
    toks = tokens(3, T)
    ours = forward(model, toks)
    ref = torch_logits(hf, toks)
    err = np.abs(ours - ref).max()
    print(f"\n[parity f32] {name} T={T}: max |logits - HF| = {err:.3e}")
    assert ours.shape == (3, T, VOCAB) and ours.dtype == np.float32
    assert err <= F32_TOL


@pytest.mark.parametrize("name", ["qwen2-gqa2-untied", "qwen3-gqa4-untied"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_matches_transformers(hf_checkpoint, name, side):
    ckpt, hf = hf_checkpoint(name)
    model = from_hf(ckpt)
    T, lengths = 9, np.array([9, 5, 2])
    valid = np.arange(T)[None, :] < lengths[:, None]
    if side == "left":
        valid = valid[:, ::-1]
    mask = valid.astype(bool)
    toks = np.where(mask, tokens(3, T, seed=1), 0)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    ours = forward(model, toks, positions, mask)
    ref = torch_logits(hf, toks, mask, positions)
    err = np.abs(ours - ref)[mask].max()
    print(f"\n[parity f32 padded-{side}] {name}: max |logits - HF| on real tokens = {err:.3e}")
    assert err <= F32_TOL
    # Each row alone, unpadded, gives the same logits on its real tokens (masked == dropped).
    for b in range(3):
        alone = forward(model, toks[b][mask[b]][None])[0]
        np.testing.assert_allclose(ours[b][mask[b]], alone, atol=1e-5)


@pytest.mark.parametrize("name", ["qwen2-gqa2-untied", "qwen3-gqa2-tied"])
def test_bf16_logits_close_to_transformers(hf_checkpoint, name):
    ckpt, hf = hf_checkpoint(name)
    model = from_hf(ckpt, dtype=jnp.bfloat16)
    assert model.embed[...].dtype == jnp.bfloat16
    toks = tokens(2, 8)
    ours = forward(model, toks)
    # a copy: .to() is in place, and rounding the session-cached model to bf16 would change every
    # later test that compares against it
    ref = torch_logits(copy.deepcopy(hf).to(torch.bfloat16), toks)
    ref32 = torch_logits(hf, toks)
    err = np.abs(ours - ref).max()
    err32 = np.abs(ours - ref32).max()
    print(f"\n[parity bf16] {name}: max |ours_bf16 - HF_bf16| = {err:.3e}, vs HF f32 = {err32:.3e}, "
          f"logit scale {np.abs(ref32).max():.2f}")
    assert err <= BF16_TOL and err32 <= BF16_TOL


def _decode_steps(model, toks, mask, prefill, S):
    """Prefill ``prefill`` tokens, then feed the rest one at a time; returns logits of every step."""
    B, T = toks.shape
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    slot_mask = np.zeros((B, S), bool)
    slot_mask[:, :T] = mask
    step = jax.jit(lambda m, t, p, c, pos, am: m(t, p, attn_mask_BT=am, cache=c, cache_pos=pos))
    cache = init_cache(model.config, B, S)
    out, cache = step(model, jnp.asarray(toks[:, :prefill]), jnp.asarray(positions[:, :prefill]), cache,
                      jnp.int32(0), jnp.asarray(slot_mask))
    outs = [out]
    for t in range(prefill, T):
        out, cache = step(model, jnp.asarray(toks[:, t:t + 1]), jnp.asarray(positions[:, t:t + 1]), cache,
                          jnp.int32(t), jnp.asarray(slot_mask))
        outs.append(out)
    return np.concatenate([np.asarray(o) for o in outs], axis=1), cache


@pytest.mark.parametrize("name", ["qwen2-gqa2-untied", "qwen3-gqa2-tied"])
def test_cached_decode_equals_full_forward(hf_checkpoint, name):
    ckpt, _ = hf_checkpoint(name)
    model = from_hf(ckpt)
    B, T, S = 3, 10, 16
    mask = np.ones((B, T), bool)
    mask[1, :3] = False  # left padding
    mask[2, :6] = False
    toks = np.where(mask, tokens(B, T, seed=2), 0)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    full = forward(model, toks, positions, mask)
    cached, cache = _decode_steps(model, toks, mask, prefill=7, S=S)
    err = np.abs(cached - full)[mask].max()
    print(f"\n[cache] {name}: max |cached - full| = {err:.3e}")
    assert cached.shape == full.shape
    assert err <= 1e-5
    assert len(cache) == model.config.num_layers
    assert cache[0]["k"].shape == (B, S, model.config.num_kv_heads, model.config.head_dim)
    # slots never written stay zero
    assert not np.any(np.asarray(cache[0]["k"])[:, T:])


def test_return_hidden_and_logits_from_hidden(hf_checkpoint):
    from flax import nnx
    ckpt, _ = hf_checkpoint("qwen2-gqa2-untied")
    model = from_hf(ckpt)
    toks = jnp.asarray(tokens(2, 6))

    @nnx.jit
    def run(m, t):
        hidden = m(t, return_hidden=True)
        chunks = [m.logits_from_hidden(hidden[:, i:i + 2]) for i in range(0, 6, 2)]
        h_cached, _ = m(t, cache=init_cache(m.config, 2, 8), cache_pos=0, return_hidden=True)
        return (hidden, m(t), m.logits_from_hidden(hidden), jnp.concatenate(chunks, 1), h_cached,
                m.logits_from_hidden(hidden, vocab_major=True))

    hidden, logits, from_hidden, chunked, h_cached, vocab_major = run(model, toks)
    assert hidden.shape == (2, 6, 32)
    np.testing.assert_allclose(np.asarray(from_hidden), np.asarray(logits), atol=1e-6)
    assert vocab_major.shape == logits.shape  # the [V, N] product transposed back, same values
    np.testing.assert_allclose(np.asarray(vocab_major), np.asarray(logits), atol=1e-5)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(logits), atol=1e-6)
    np.testing.assert_allclose(np.asarray(h_cached), np.asarray(hidden), atol=1e-5)


def test_bad_inputs_fail_at_trace_time():
    from flax import nnx

    from grpojax.models import QwenConfig
    cfg = QwenConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=2,
                     num_kv_heads=1, head_dim=8)
    model = nnx.eval_shape(lambda: Qwen(cfg, rngs=nnx.Rngs(0)))
    toks = jax.ShapeDtypeStruct((2, 5), jnp.int32)
    with pytest.raises(ValueError, match="attn_mask_BT has shape"):
        nnx.eval_shape(lambda m, t: m(t, attn_mask_BT=jnp.ones((2, 4), bool)), model, toks)
    with pytest.raises(ValueError, match="cache_pos is required"):
        nnx.eval_shape(lambda m, t: m(t, cache=init_cache(cfg, 2, 8)), model, toks)
    with pytest.raises(ValueError, match="cache has 2 layers"):
        nnx.eval_shape(lambda m, t: m(t, cache=init_cache(cfg.replace(num_layers=2), 2, 8), cache_pos=0),
                       model, toks)
    with pytest.raises(AssertionError):
        nnx.eval_shape(lambda m: m(jnp.zeros((5,), jnp.int32)), model)
    with pytest.raises(ValueError, match="not a multiple"):
        cfg.replace(num_kv_heads=3)


def test_fresh_model_logical_axes_and_mixed_precision():
    from flax import nnx

    from grpojax.models import QwenConfig
    cfg = QwenConfig(vocab_size=50, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=2,
                     num_kv_heads=1, head_dim=8, qkv_bias=False, qk_norm=True, arch="qwen3")
    model = nnx.eval_shape(lambda: Qwen(cfg, dtype=jnp.bfloat16, param_dtype=jnp.float32, rngs=nnx.Rngs(3)))
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert tuple(specs["embed"].get_value()) == ("vocab", "embed")
    assert tuple(specs["lm_head"].get_value()) == ("vocab", "embed")
    assert tuple(specs["layers"][0]["attn"]["q"]["w"].get_value()) == ("embed", "q_heads", "head_dim")
    assert tuple(specs["layers"][0]["attn"]["k"]["w"].get_value()) == ("embed", "kv_heads", "head_dim")
    assert tuple(specs["layers"][0]["attn"]["o"]["w"].get_value()) == ("q_heads", "head_dim", "embed")
    assert tuple(specs["layers"][0]["attn"]["q_norm"]["scale"].get_value()) == ("head_dim",)
    assert tuple(specs["layers"][0]["mlp"]["down"]["w"].get_value()) == ("mlp", "embed")
    assert model.layers[0].attn.q.w.get_value().dtype == jnp.float32
    out = jax.eval_shape(lambda m: m(jnp.zeros((1, 3), jnp.int32)), model)
    assert out.dtype == jnp.float32 and out.shape == (1, 3, 50)
    hidden = jax.eval_shape(lambda m: m(jnp.zeros((1, 3), jnp.int32), return_hidden=True), model)
    assert hidden.dtype == jnp.bfloat16 and hidden.shape == (1, 3, 16)
