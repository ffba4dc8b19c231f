"""Attention behind one signature, with interchangeable implementations (``model.attention``).

Every implementation computes, for query ``t`` and key ``s``::

    out[t] = sum_s softmax_s(q[t] . k[s] / sqrt(H) + mask[t, s]) v[s]
    allowed(t, s) = (s <= t + offset) and (q_segment[t] == kv_segment[s])

with grouped-query heads (query head ``n`` reads key/value head ``n // (N / K)``, as HF ``repeat_kv``) and
the softmax in float32. The mask is never passed as a ``[B, T, S]`` array: it is described by

* ``q_segment_BT`` / ``kv_segment_BS`` (int32): the document each token belongs to. Padding is segment 0
  and real tokens are segment >= 1, so a real query never reads a pad key; several packed examples in one
  row use segments 1, 2, ... (attention is blocked between them).
* ``offset`` (an int, or a traced int32 scalar for a KV cache): query ``t`` sits at key index
  ``t + offset`` (0 for a plain causal forward, ``cache_pos`` when T new tokens go into a cache of S slots).

Implementations (``implementation=``; docs/attention.md has the details and parity numbers):

* ``einsum``: the reference below, materialises the float32 ``[B, K, g, T, S]`` scores.
* ``blockwise``: :mod:`grpojax.models.attention_blockwise`, online softmax over tiles with its own
  FlashAttention-2 backward; O(T) memory, pure JAX, every backend.
* ``cudnn``: :mod:`grpojax.models.attention_cudnn`, cuDNN flash attention (GPU; bf16 / fp16).
* ``splash``: :mod:`grpojax.models.attention_splash`, the Pallas TPU kernel (Pallas' interpreter elsewhere).
* ``auto``: :func:`resolve` picks one per call from the backend, dtype, shape and offset.

cudnn and splash compile the causal structure into the kernel, so they need a static offset; with a traced
one (a KV-cache forward) they, and auto, use blockwise.

A query with no allowed key (only possible with ``offset < 0``) gets finite, meaningless output; callers
ignore such rows. Pad queries (segment 0) read the pad keys before them, so their outputs are finite and
equally ignored.
"""

from __future__ import annotations

from functools import partial

import chex
import jax
import jax.numpy as jnp

from grpojax.models import attention_cudnn
from grpojax.models.attention_blockwise import attend_blockwise, backend, target_backend  # noqa: F401
from grpojax.models.attention_splash import attend_splash
from grpojax.types import Array

# the names ``Qwen(attention=...)`` / ``model.attention`` accept (docs/attention.md)
IMPLEMENTATIONS = ("auto", "einsum", "blockwise", "cudnn", "splash")
AUTO_CPU_EINSUM_MAX_KEYS = 1024  # auto on CPU: einsum up to this many keys, blockwise above
AUTO_EINSUM_MAX_QUERIES = 16  # auto on any backend: einsum for this few queries (decode steps)
_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def allowed_mask(q_segment_BT: Array, kv_segment_BS: Array, offset: int | Array = 0) -> Array:
    """The ``[B, T, S]`` boolean mask the segments and offset describe (True = may attend)."""
    T, S = q_segment_BT.shape[1], kv_segment_BS.shape[1]
    causal_TS = jnp.arange(S, dtype=jnp.int32)[None, :] <= jnp.arange(T, dtype=jnp.int32)[:, None] + offset
    same_BTS = q_segment_BT[:, :, None] == kv_segment_BS[:, None, :]
    return causal_TS[None] & same_BTS


def attend_einsum(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, q_segment_BT: Array, kv_segment_BS: Array,
                  offset: int | Array = 0) -> Array:
    """The reference: materialises the float32 ``[B, K, g, T, S]`` scores. Returns ``[B, T, N, H]``."""
    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    q_BTKgH = q_BTNH.reshape(B, T, K, N // K, H)
    logits_BKgTS = jnp.einsum("BTKGH,BSKH->BKGTS", q_BTKgH, k_BSKH.astype(q_BTNH.dtype),
                              preferred_element_type=jnp.float32) * (H ** -0.5)
    mask_BTS = allowed_mask(q_segment_BT, kv_segment_BS, offset)
    logits_BKgTS = jnp.where(mask_BTS[:, None, None, :, :], logits_BKgTS, _NEG)
    probs_BKgTS = jax.nn.softmax(logits_BKgTS, axis=-1).astype(q_BTNH.dtype)
    out_BTKgH = jnp.einsum("BKGTS,BSKH->BTKGH", probs_BKgTS, v_BSKH.astype(q_BTNH.dtype))
    return out_BTKgH.reshape(B, T, N, H)


def attention(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, q_segment_BT: Array, kv_segment_BS: Array, *,
              offset: int | Array = 0, implementation: str = "einsum") -> Array:
    """Grouped-query attention under the segment / offset mask (module docstring), by ``implementation``.

    Shapes: q ``[B, T, N, H]``, k / v ``[B, S, K, H]``, ``q_segment_BT`` ``[B, T]``, ``kv_segment_BS``
    ``[B, S]``. Returns ``[B, T, N, H]`` in q's dtype.
    """
    B, T, N, _ = q_BTNH.shape
    chex.assert_equal_shape([k_BSKH, v_BSKH])
    chex.assert_shape(q_segment_BT, (B, T))
    chex.assert_shape(kv_segment_BS, (B, k_BSKH.shape[1]))
    if N % k_BSKH.shape[2]:
        raise ValueError(f"attention: {N} query heads are not a multiple of {k_BSKH.shape[2]} key/value heads")
    args = (q_BTNH, k_BSKH, v_BSKH, q_segment_BT, kv_segment_BS, offset)
    implementation = resolve(implementation, q_BTNH, k_BSKH, offset)
    if implementation == "einsum":
        return attend_einsum(*args)
    if implementation == "blockwise":
        return attend_blockwise(*args)
    if implementation == "cudnn":
        return attention_cudnn.attend_cudnn(*args)
    return attend_splash(*args)


def check_backend(implementation: str, platform: str | None = None) -> str | None:
    """None when ``implementation`` can run on ``platform`` (default: :func:`backend`), else why not."""
    if implementation not in IMPLEMENTATIONS:
        return f"attention={implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}"
    platform = platform or backend()
    if implementation == "cudnn" and platform not in ("gpu", "cuda"):
        return f"attention=cudnn needs a CUDA GPU (the jax backend is {platform}); use auto or blockwise"
    return None


def resolve(implementation: str, q_BTNH: Array, k_BSKH: Array, offset: int | Array = 0,
            platform: str | None = None) -> str:
    """The implementation a call runs: ``auto`` picked, a fused kernel with a traced offset -> blockwise.

    ``platform``: the backend compiled for (default: :func:`backend`, which :func:`target_backend` sets).
    ``auto``: einsum for at most :data:`AUTO_EINSUM_MAX_QUERIES` queries (a decode step: its scores are
    one short row per query, and the cache forwards stay as they were); else TPU -> splash; GPU -> cudnn
    when :func:`attention_cudnn.supported` (bf16 / fp16, no cache), else blockwise; CPU -> einsum up to
    :data:`AUTO_CPU_EINSUM_MAX_KEYS` keys (faster there, and the numbers of every existing CPU run stay as
    they were), else blockwise.
    """
    why = check_backend(implementation, platform)
    if why:
        raise ValueError(f"attention: {why}")
    platform = platform or backend()
    static = isinstance(offset, int)
    if implementation == "auto":
        if q_BTNH.shape[1] <= AUTO_EINSUM_MAX_QUERIES:
            implementation = "einsum"
        elif platform == "tpu":
            implementation = "splash"
        elif platform in ("gpu", "cuda"):
            ok = attention_cudnn.supported(q_BTNH, k_BSKH, offset) is None
            implementation = "cudnn" if ok else "blockwise"
        else:
            implementation = "einsum" if k_BSKH.shape[1] <= AUTO_CPU_EINSUM_MAX_KEYS else "blockwise"
    if implementation in ("cudnn", "splash") and not static:
        return "blockwise"
    return implementation


def parity_inputs(B: int = 2, T: int = 300, N: int = 4, K: int = 2, H: int = 64, dtype=jnp.float32, seed: int = 0):
    """Random ``(q, k, v, segment_BT, w)`` for a parity check: row 0 left-padded, row 1 right-padded, the rest
    both (prompt left-padded, completion right-padded); ``w`` weights the output in a scalar loss."""
    kq, kk, kv, kw = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (B, T, N, H), jnp.float32).astype(dtype)
    k = jax.random.normal(kk, (B, T, K, H), jnp.float32).astype(dtype)
    v = jax.random.normal(kv, (B, T, K, H), jnp.float32).astype(dtype)
    t = jnp.arange(T)[None, :]
    b = jnp.arange(B)[:, None]
    left = jnp.where(b == 1, 0, (T // 7) * (1 + b % 3))
    right = jnp.where(b == 0, T, T - (T // 5) * (1 + b % 2))
    segment_BT = ((t >= left) & (t < right)).astype(jnp.int32)
    return q, k, v, segment_BT, jax.random.normal(kw, (B, T, N, H), jnp.float32)


def check_parity(implementation: str, *, B: int = 2, T: int = 300, N: int = 4, K: int = 2, H: int = 64,
                 dtype=jnp.bfloat16, seed: int = 0) -> dict[str, float]:
    """Max |difference| against the float32 einsum reference, over real (non-pad) query rows: the output
    and the gradients of ``sum(w * out)`` with respect to q, k, v (``{"out", "dq", "dk", "dv"}``, each
    divided by the reference's max |value|). For an accelerator check (``benchmarks/accelerator.py``):
    e.g. ``check_parity("cudnn")`` on a GPU; bf16 inputs give ~1e-2, float32 ones ~1e-6."""
    q, k, v, segment_BT, w = parity_inputs(B, T, N, K, H, dtype, seed)
    real = (segment_BT > 0)[:, :, None, None]

    def loss(impl, q, k, v):
        out = attention(q, k, v, segment_BT, segment_BT, implementation=impl).astype(jnp.float32)
        return jnp.sum(jnp.where(real, out * w, 0.0)), out

    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    (_, ref), ref_grads = jax.value_and_grad(partial(loss, "einsum"), argnums=(0, 1, 2), has_aux=True)(*f32)
    (_, out), grads = jax.jit(jax.value_and_grad(partial(loss, implementation), argnums=(0, 1, 2),
                                                 has_aux=True))(q, k, v)
    result = {"out": jnp.where(real, out - ref, 0.0), **{
        name: g.astype(jnp.float32) - r for name, g, r in zip(("dq", "dk", "dv"), grads, ref_grads)}}
    scale = {"out": jnp.where(real, ref, 0.0), "dq": ref_grads[0], "dk": ref_grads[1], "dv": ref_grads[2]}
    return {name: float(jnp.abs(d).max() / jnp.abs(scale[name]).max()) for name, d in result.items()}
