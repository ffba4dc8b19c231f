"""Every attention implementation against the einsum reference (forward and gradients), the Qwen forward with
``attention="blockwise"``, the memory growth of blockwise vs einsum, and the choices of ``auto``.

Masks covered: causal, left padding, right padding, both, packed segments, GQA, a cache-prefill offset, T
not a multiple of the block. splash runs through Pallas' interpreter on CPU; cudnn's row mapping runs
through jax's XLA version of the same ``dot_product_attention`` call (the kernel needs a GPU:
``grpojax.models.attention.check_parity``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grpojax.cli import UserError
from grpojax.models import PRESETS, Qwen
from grpojax.models import attention as attn
from grpojax.models.attention_blockwise import attend_blockwise
from grpojax.models.attention_cudnn import attend_cudnn
from grpojax.models.attention_cudnn import rows as cudnn_rows
from grpojax.models.attention_splash import attend_splash

F32_TOL = 1e-5  # relative to the reference's max |value|
BF16_TOL = 3e-2


def _segments(B, T, kind):
    """``[B, T]`` int32 segments: causal (all 1), left / right / both padding, or packed rows."""
    seg = np.ones((B, T), np.int32)
    if kind == "left":
        seg[:, : T // 4] = 0
    elif kind == "right":
        seg[:, T - T // 3:] = 0
    elif kind == "both":
        seg[0, : T // 5], seg[-1, T - T // 4:] = 0, 0
    elif kind == "packed":
        seg[:, T // 3:] = 2
        seg[:, 2 * T // 3:] = 3
        seg[-1, T - 5:] = 0
    return jnp.asarray(seg)


def _inputs(B, T, S, N, K, H, dtype, seed=0):
    ks = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(ks[0], (B, T, N, H)).astype(dtype)
    k = jax.random.normal(ks[1], (B, S, K, H)).astype(dtype)
    v = jax.random.normal(ks[2], (B, S, K, H)).astype(dtype)
    return q, k, v, jax.random.normal(ks[3], (B, T, N, H))


@functools.cache
def _einsum_fn(offset):
    return lambda q, k, v, qs, ks: attn.attend_einsum(q, k, v, qs, ks, offset)


@functools.cache
def _grads(f):
    """jit of ``(out, d sum(w * out) / d(q, k, v))`` over the ``keep`` rows (one compile per f and shape)."""
    def grads(q, k, v, qseg, kseg, keep, w):
        def loss(q, k, v):
            out = f(q, k, v, qseg, kseg).astype(jnp.float32)
            return jnp.sum(jnp.where(keep, out * w, 0.0)), jnp.where(keep, out, 0.0)
        (_, out), g = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(q, k, v)
        return out, g
    return jax.jit(grads)


def _rel_errors(fn, q, k, v, w, qseg, kseg, offset=0, rows=None):
    """Max |fn - einsum| / max |einsum| of the output and of the q, k, v gradients of ``sum(w * out)``
    (the reference in float32 from the same rounded inputs); ``rows`` [B, T] restricts the compared rows.
    ``fn(q, k, v, qseg, kseg)``; segments are jit arguments, so one compile serves every mask of a shape."""
    keep = (jnp.ones(qseg.shape, bool) if rows is None else rows)[:, :, None, None]
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    ref, ref_g = _grads(_einsum_fn(offset))(*f32, qseg, kseg, keep, w)
    out, g = _grads(fn)(q, k, v, qseg, kseg, keep, w)
    rel = lambda a, b: float(jnp.abs(a.astype(jnp.float32) - b).max() / jnp.abs(b).max())  # noqa: E731
    return [rel(out, ref)] + [rel(a, b) for a, b in zip(g, ref_g)]


KINDS = ("causal", "left", "right", "both", "packed")


def _mixed_segments(T):
    """One row per mask kind: causal, left padding, right padding, both, packed (+ right padding)."""
    return jnp.concatenate([_segments(2, T, kind)[-1:] for kind in KINDS])


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_blockwise_matches_einsum(dtype, tol):
    """Rows of every mask kind, GQA (4 query heads on 2 KV heads), T = 37 in blocks of 8 x 16 (not a
    multiple of either; key blocks above the diagonal skipped)."""
    seg = _mixed_segments(37)
    q, k, v, w = _inputs(len(KINDS), 37, 37, 4, 2, 8, dtype)
    fn = lambda q, k, v, qs, ks: attend_blockwise(q, k, v, qs, ks, 0, block_q=8, block_k=16)  # noqa: E731
    errs = _rel_errors(fn, q, k, v, w, seg, seg)
    print(f"\n[blockwise {jnp.dtype(dtype).name}] out, dq, dk, dv rel err: {errs}")
    assert max(errs) <= tol


def test_blockwise_cache_prefill_offset():
    """T = 12 new tokens into a cache of S = 40 slots at a traced offset 9 (row 0 left-padded), forward and
    gradients; the dispatcher's blockwise equals the direct call."""
    q, k, v, w = _inputs(2, 12, 40, 4, 2, 8, jnp.float32)
    kseg = jnp.ones((2, 40), jnp.int32).at[0, :3].set(0)
    qseg = kseg[:, 9:21]
    fn = lambda q, k, v, qs, ks: attend_blockwise(q, k, v, qs, ks, jnp.int32(9), block_q=8, block_k=8)  # noqa: E731
    errs = _rel_errors(fn, q, k, v, w, qseg, kseg, offset=9)
    print(f"\n[blockwise prefill] out, dq, dk, dv rel err: {errs}")
    assert max(errs) <= F32_TOL
    via = attn.attention(q, k, v, qseg, kseg, offset=9, implementation="blockwise")
    assert float(jnp.abs(via - attend_blockwise(q, k, v, qseg, kseg, 9)).max()) == 0.0


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, F32_TOL), (jnp.bfloat16, BF16_TOL)])
def test_splash_interpret_matches_einsum(dtype, tol):
    """Splash (Pallas interpreter): a left-padded row and a packed + right-padded one, GQA, H = 64 (Qwen
    0.5B), T = 200 padded to two 128-tiles."""
    seg = jnp.asarray(np.stack([np.r_[[0] * 7, [1] * 193], np.r_[[1] * 60, [2] * 90, [0] * 50]]), jnp.int32)
    q, k, v, w = _inputs(2, 200, 200, 4, 2, 64, dtype)
    fn = lambda q, k, v, qs, ks: attend_splash(q, k, v, qs, ks, 0, block=128, interpret=True)  # noqa: E731
    errs = _rel_errors(fn, q, k, v, w, seg, seg)
    print(f"\n[splash {jnp.dtype(dtype).name}] out, dq, dk, dv rel err: {errs}")
    assert max(errs) <= tol


def test_cudnn_row_mapping_matches_einsum():
    """The rows cuDNN gets (rolled to a prefix, is_causal + lengths), through jax's XLA version of the call:
    equal to einsum on real rows; a packed batch takes the blockwise fallback, also equal."""
    q, k, v, w = _inputs(5, 30, 30, 4, 2, 8, jnp.float32)
    fn = lambda q, k, v, qs, ks: attend_cudnn(q, k, v, qs, ks, 0, impl="xla")  # noqa: E731
    padded = _mixed_segments(30).at[4].set(_segments(1, 30, "both")[0])  # every row 0* 1+ 0*
    packed = _mixed_segments(30)
    assert bool(jnp.all(cudnn_rows(padded, padded)[0]))  # the cuDNN branch runs
    assert list(cudnn_rows(packed, packed)[0]) == [True] * 4 + [False]  # the fallback runs
    for seg in (padded, packed):
        assert max(_rel_errors(fn, q, k, v, w, seg, seg, rows=seg > 0)) <= F32_TOL


def test_qwen_blockwise_forward_and_grad_match_einsum():
    """A whole tiny Qwen3 (qk-norm, GQA), left-padded rows: logits and parameter gradients agree."""
    cfg = PRESETS["qwen3-0.6b"].replace(vocab_size=61, hidden_size=32, intermediate_size=48, num_layers=1,
                                        num_heads=4, num_kv_heads=2, head_dim=8)
    toks = jax.random.randint(jax.random.key(1), (2, 21), 0, 61)
    mask = jnp.ones((2, 21), bool).at[0, :6].set(False)

    def loss_and_logits(model):
        logits = model(toks, attn_mask_BT=mask)
        return jnp.sum(jnp.where(mask[..., None], jax.nn.log_softmax(logits), 0.0)[..., :5]), logits

    @nnx.jit
    def step(model):
        return nnx.value_and_grad(loss_and_logits, has_aux=True)(model)

    results = {}
    for impl in ("einsum", "blockwise"):
        (_, logits), grads = step(Qwen(cfg, rngs=nnx.Rngs(0), attention=impl))
        results[impl] = (logits, jax.tree.leaves(nnx.to_pure_dict(grads)))
    (l0, g0), (l1, g1) = results["einsum"], results["blockwise"]
    assert float(jnp.abs(jnp.where(mask[..., None], l0 - l1, 0)).max()) <= 1e-5
    assert max(float(jnp.abs(a - b).max() / (jnp.abs(a).max() + 1e-12)) for a, b in zip(g0, g1)) <= 1e-4


def _train_temp_bytes(impl, T):
    """Compiled temp bytes of forward + backward of one attention layer at length T (CPU compile only)."""
    B, N, K, H = 1, 4, 2, 32
    q = jax.ShapeDtypeStruct((B, T, N, H), jnp.float32)
    kv = jax.ShapeDtypeStruct((B, T, K, H), jnp.float32)
    seg = jnp.ones((B, T), jnp.int32)

    def loss(q, k, v):
        return jnp.sum(attn.attention(q, k, v, seg, seg, implementation=impl) ** 2)

    compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(q, kv, kv).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_blockwise_memory_grows_linearly():
    """1k -> 2k -> 4k tokens: blockwise's temporaries grow ~2x per doubling, einsum's ~4x."""
    sizes = (1024, 2048, 4096)
    block = [_train_temp_bytes("blockwise", T) for T in sizes]
    dense = [_train_temp_bytes("einsum", T) for T in sizes[:2]]
    print(f"\n[attention temp bytes] blockwise {block}, einsum {dense}")
    assert block[1] / block[0] <= 2.5 and block[2] / block[1] <= 2.5
    assert dense[1] / dense[0] >= 3.5
    assert block[2] * 8 < _dense_estimate(4096)


def _dense_estimate(T, N=4):
    return N * T * T * 4  # one float32 [N, T, T] score matrix


def test_auto_resolution_and_refusals():
    q, k = jnp.zeros((1, 2048, 4, 8), jnp.bfloat16), jnp.zeros((1, 2048, 2, 8), jnp.bfloat16)
    assert attn.resolve("auto", q[:, :512], k[:, :512], platform="cpu") == "einsum"
    assert attn.resolve("auto", q, k, platform="cpu") == "blockwise"
    assert attn.resolve("auto", q, k, platform="tpu") == "splash"
    assert attn.resolve("auto", q, k, platform="gpu") == "cudnn"
    assert attn.resolve("auto", q.astype(jnp.float32), k, platform="gpu") == "blockwise"
    assert attn.resolve("auto", q[:, :1], k, offset=jnp.int32(5), platform="tpu") == "einsum"  # decode step
    assert attn.resolve("splash", q, k, offset=jnp.int32(5), platform="tpu") == "blockwise"  # KV cache
    with pytest.raises(ValueError, match="cudnn needs a CUDA GPU"):
        attn.resolve("cudnn", q, k, platform="cpu")


def test_model_attention_config_key():
    """``model.attention`` reaches the built Qwen; cudnn on CPU is refused in one line naming the key."""
    from grpojax.config.sections import ModelConfig
    from grpojax.train.build import build_model

    shape = dict(vocab_size=61, hidden_size=16, intermediate_size=16, num_layers=1, num_heads=2,
                 num_kv_heads=1, head_dim=8)
    base = ModelConfig(preset="qwen3-0.6b")
    model_cfg = lambda a: base.__class__(**{**base.__dict__, "attention": a,  # noqa: E731
                                             "shape": base.shape.__class__(**shape)})
    assert base.attention == "auto"
    assert build_model(model_cfg("blockwise")).attention == "blockwise"
    with pytest.raises(UserError, match="^model.attention: attention=cudnn needs a CUDA GPU"):
        build_model(model_cfg("cudnn"))
