"""Blockwise (flash-style) attention in pure JAX: O(T) memory in the forward AND the backward, every backend.

Same function and mask as :func:`grpojax.models.attention.attend_einsum` (see that module's docstring), computed
one ``[bq, bk]`` tile of scores at a time:

* forward: for each query block ``i`` (``lax.map``), an online softmax over key blocks ``j`` (``fori_loop``)
  keeps a running max ``m``, sum ``l`` and output accumulator in float32 and returns ``out = acc / l`` and
  the log-sum-exp ``lse = m + log(l)`` (float32, ``[B, K, g, T]``);
* backward (``jax.custom_vjp``, FlashAttention-2): from the saved ``out`` and ``lse`` it recomputes each tile's
  probabilities ``p = exp(s - lse)``, with ``D = rowsum(dout * out)``: ``ds = p * (dout v^T - D)``,
  ``dq = ds k``, ``dk = ds^T q``, ``dv = p^T dout`` (one pass over query blocks for ``dq``, one over key
  blocks for ``dk`` / ``dv``), so no ``[T, S]`` array is kept for the backward either.

Key block ``j`` is visited for query block ``i`` only when some key in it can be allowed by the causal part of
the mask, ``j * bk <= (i + 1) * bq - 1 + offset`` (loop bounds computed from ``offset``, static or traced), so
a causal forward does about half of the tile work. Grouped-query heads are handled by viewing q as
``[B, T, K, g, H]`` (K/V are never repeated); the tile matmuls take the input dtype (bf16) and accumulate in
float32. T and S are padded to multiples of the block sizes with segment ids that match nothing, and the
padding is dropped from the results.

Lower-case sizes: ``g`` query heads per KV head, ``bq`` / ``bk`` query / key block lengths, ``nq`` / ``nk``
block counts.
"""

from __future__ import annotations

import contextlib
from functools import partial

import jax
import jax.numpy as jnp

from grpojax.types import Array

_TARGET: list[str] = []  # the backend being compiled for, when not jax's default (see target_backend)


@contextlib.contextmanager
def target_backend(name: str | None):
    """Within it, ``auto`` / ``splash`` / ``cudnn`` decide for backend ``name`` ("tpu", "gpu", "cpu")
    instead of ``jax.default_backend()``: for ahead-of-time compiles for a TPU topology on a CPU host
    (``grpojax plan-memory --topology``). None = jax's default."""
    _TARGET.append(name)
    try:
        yield
    finally:
        _TARGET.pop()


def backend() -> str:
    """The backend attention compiles for: the innermost :func:`target_backend`, else jax's default."""
    return next((b for b in reversed(_TARGET) if b), None) or jax.default_backend()


BLOCK_Q = 512  # default query block length
BLOCK_K = 512  # default key block length
_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)
_PAD_Q, _PAD_KV = -2, -1  # segments of the block padding: match no real or padded token


def _blocks(length: int, block: int) -> tuple[int, int]:
    """(block length, block count) covering ``length``: one block of ``length`` (rounded up to 8) if short."""
    b = min(block, -(-length // 8) * 8)
    return b, -(-length // b)


def _hi(i, bq: int, bk: int, nk: int, offset):
    """One past the last key block that query block ``i`` visits (at least 1, so every row is finite)."""
    last = ((i + 1) * bq - 1 + offset) // bk
    return jnp.clip(last + 1, 1, nk)


def _lo(j, bq: int, bk: int, nq: int, offset):
    """The first query block that visits key block ``j`` (the inverse of :func:`_hi`)."""
    first = -((offset - 1 - j * bk) // bq) - 1  # ceil((j * bk + 1 - offset) / bq) - 1
    return jnp.where(j == 0, 0, jnp.clip(first, 0, nq))


def _scores(q_BbKgH, k_BcKH, qseg_Bb, kseg_Bc, i, j, bq, bk, offset):
    """Scaled, masked float32 scores of one tile: ``[B, K, g, bq, bk]``."""
    H = q_BbKgH.shape[-1]
    s = jnp.einsum("BTKGH,BSKH->BKGTS", q_BbKgH, k_BcKH, preferred_element_type=jnp.float32) * (H ** -0.5)
    t_b = i * bq + jnp.arange(bq, dtype=jnp.int32)
    s_c = j * bk + jnp.arange(bk, dtype=jnp.int32)
    allowed = (s_c[None, :] <= t_b[:, None] + offset)[None] & (qseg_Bb[:, :, None] == kseg_Bc[:, None, :])
    return jnp.where(allowed[:, None, None], s, _NEG)


def _slice(x, j, size):
    return jax.lax.dynamic_slice_in_dim(x, j * size, size, axis=1)


def _forward(q_BTKgH, k_BSKH, v_BSKH, qseg_BT, kseg_BS, offset, bq, bk):
    """Padded inputs -> (out ``[B, T, K, g, H]`` in q's dtype, lse ``[B, K, g, T]`` float32)."""
    B, T, K, g, H = q_BTKgH.shape
    nq, nk = T // bq, k_BSKH.shape[1] // bk

    def q_block(i):
        q_i, seg_i = _slice(q_BTKgH, i, bq), _slice(qseg_BT, i, bq)

        def body(j, carry):
            m, denom, acc = carry
            s = _scores(q_i, _slice(k_BSKH, j, bk), seg_i, _slice(kseg_BS, j, bk), i, j, bq, bk, offset)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m - m_new)
            pv = jnp.einsum("BKGTS,BSKH->BKGTH", p.astype(v_BSKH.dtype), _slice(v_BSKH, j, bk),
                            preferred_element_type=jnp.float32)
            return m_new, denom * corr + p.sum(-1), acc * corr[..., None] + pv

        init = (jnp.full((B, K, g, bq), _NEG, jnp.float32), jnp.zeros((B, K, g, bq), jnp.float32),
                jnp.zeros((B, K, g, bq, H), jnp.float32))
        m, denom, acc = jax.lax.fori_loop(0, _hi(i, bq, bk, nk, offset), body, init)
        return acc / denom[..., None], m + jnp.log(denom)

    out_nBKgbH, lse_nBKgb = jax.lax.map(q_block, jnp.arange(nq, dtype=jnp.int32))
    out = jnp.moveaxis(out_nBKgbH, 0, 3).reshape(B, K, g, T, H).transpose(0, 3, 1, 2, 4)
    lse = jnp.moveaxis(lse_nBKgb, 0, 3).reshape(B, K, g, T)
    return out.astype(q_BTKgH.dtype), lse


def _backward(q_BTKgH, k_BSKH, v_BSKH, qseg_BT, kseg_BS, offset, out, lse, dout, bq, bk):
    """FlashAttention-2 backward on padded inputs: (dq, dk, dv) in the inputs' dtypes."""
    B, T, K, g, H = q_BTKgH.shape
    nq, nk = T // bq, k_BSKH.shape[1] // bk
    scale = H ** -0.5
    dt = q_BTKgH.dtype
    D_BKgT = jnp.einsum("BTKGH,BTKGH->BKGT", dout.astype(jnp.float32), out.astype(jnp.float32))

    def tile(i, j):
        """(p, ds) of tile (i, j), float32 ``[B, K, g, bq, bk]``."""
        q_i, k_j, v_j = _slice(q_BTKgH, i, bq), _slice(k_BSKH, j, bk), _slice(v_BSKH, j, bk)
        s = _scores(q_i, k_j, _slice(qseg_BT, i, bq), _slice(kseg_BS, j, bk), i, j, bq, bk, offset)
        p = jnp.exp(s - jax.lax.dynamic_slice_in_dim(lse, i * bq, bq, axis=3)[..., None])
        dp = jnp.einsum("BTKGH,BSKH->BKGTS", _slice(dout, i, bq), v_j, preferred_element_type=jnp.float32)
        return p, p * (dp - jax.lax.dynamic_slice_in_dim(D_BKgT, i * bq, bq, axis=3)[..., None])

    def dq_block(i):
        def body(j, dq):
            _, ds = tile(i, j)
            return dq + jnp.einsum("BKGTS,BSKH->BTKGH", ds.astype(dt), _slice(k_BSKH, j, bk),
                                   preferred_element_type=jnp.float32)
        dq = jax.lax.fori_loop(0, _hi(i, bq, bk, nk, offset), body, jnp.zeros((B, bq, K, g, H), jnp.float32))
        return dq * scale

    def dkv_block(j):
        def body(i, carry):
            dk, dv = carry
            p, ds = tile(i, j)
            dv = dv + jnp.einsum("BKGTS,BTKGH->BSKH", p.astype(dt), _slice(dout, i, bq),
                                 preferred_element_type=jnp.float32)
            dk = dk + jnp.einsum("BKGTS,BTKGH->BSKH", ds.astype(dt), _slice(q_BTKgH, i, bq),
                                 preferred_element_type=jnp.float32)
            return dk, dv
        zero = jnp.zeros((B, bk, K, H), jnp.float32)
        dk, dv = jax.lax.fori_loop(_lo(j, bq, bk, nq, offset), nq, body, (zero, zero))
        return dk * scale, dv

    idx = partial(jnp.arange, dtype=jnp.int32)
    dq = jnp.moveaxis(jax.lax.map(dq_block, idx(nq)), 0, 1).reshape(B, T, K, g, H)
    dk, dv = jax.lax.map(dkv_block, idx(nk))
    dk = jnp.moveaxis(dk, 0, 1).reshape(k_BSKH.shape)
    dv = jnp.moveaxis(dv, 0, 1).reshape(v_BSKH.shape)
    return dq.astype(dt), dk.astype(k_BSKH.dtype), dv.astype(v_BSKH.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _flash(q, k, v, qseg, kseg, offset, bq, bk):
    return _forward(q, k, v, qseg, kseg, offset, bq, bk)[0]


def _flash_fwd(q, k, v, qseg, kseg, offset, bq, bk):
    out, lse = _forward(q, k, v, qseg, kseg, offset, bq, bk)
    return out, (q, k, v, qseg, kseg, offset, out, lse)


def _flash_bwd(bq, bk, res, dout):
    q, k, v, qseg, kseg, offset, out, lse = res
    dq, dk, dv = _backward(q, k, v, qseg, kseg, offset, out, lse, dout, bq, bk)
    return dq, dk, dv, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad(x, axis: int, length: int, value=0):
    extra = length - x.shape[axis]
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def attend_blockwise(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, q_segment_BT: Array, kv_segment_BS: Array,
                     offset: int | Array = 0, *, block_q: int = BLOCK_Q, block_k: int = BLOCK_K) -> Array:
    """Blockwise attention (module docstring); same arguments and result as ``attend_einsum``.

    ``block_q`` / ``block_k``: tile lengths (a sequence shorter than a block is one block, rounded up to 8).
    """
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    bq, nq = _blocks(T, block_q)
    bk, nk = _blocks(S, block_k)
    q = _pad(q_BTNH.reshape(B, T, K, N // K, H), 1, nq * bq)
    k = _pad(k_BSKH.astype(q_BTNH.dtype), 1, nk * bk)
    v = _pad(v_BSKH.astype(q_BTNH.dtype), 1, nk * bk)
    qseg = _pad(q_segment_BT.astype(jnp.int32), 1, nq * bq, _PAD_Q)
    kseg = _pad(kv_segment_BS.astype(jnp.int32), 1, nk * bk, _PAD_KV)
    out = _flash(q, k, v, qseg, kseg, jnp.asarray(offset, jnp.int32), bq, bk)
    return out[:, :T].reshape(B, T, N, H)
