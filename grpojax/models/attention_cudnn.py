"""cuDNN flash attention (``jax.nn.dot_product_attention(implementation="cudnn")``) behind ``attention()``.

What the cuDNN call in jax can express without a ``[T, S]`` mask array: ``is_causal`` (query t reads keys
``s <= t``, T == S), ``query_seq_lengths`` / ``key_value_seq_lengths`` (each row's real tokens are a prefix
of its length), grouped-query heads (``[B, S, K, H]`` keys with K dividing N), bfloat16 / float16 inputs, H
a multiple of 8 up to 128 (a float32 input, a boolean ``mask`` or an additive ``bias`` would need the
``[B, N, T, S]`` array this module exists to avoid). Our mask (``grpojax.models.attention`` docstring) maps
onto it for the rows training forwards build:

* offset 0 and T == S (a cache-free self-attention);
* each row is ``0 ... 0  c ... c  0 ... 0``: left padding, ONE run of real tokens of one segment, right
  padding (a prompt left-padded and its completion right-padded). The row is rolled left by its number of
  left pads (q, k and v alike: RoPE is already applied, and the causal order of the real tokens is
  unchanged), so its real tokens are a prefix of length ``n``; cuDNN runs with ``is_causal`` and both
  lengths ``n``; the output is rolled back. Pad queries' outputs (meaningless, as in every implementation)
  are whatever cuDNN returns for queries past the length.

A batch with a row it cannot express (packed rows with several segments, a gap inside the real tokens) is
detected on device and computed by ``blockwise`` instead (``lax.cond`` on the whole batch, so the result is
always the masked attention; packed runs are better served by ``blockwise`` or ``splash`` directly). The
dispatcher sends a traced offset (KV cache) to blockwise. ``impl="xla"`` runs the very same call
through jax's XLA reference of it, which is how the row mapping is tested on CPU;
:func:`grpojax.models.attention.check_parity` tests the cuDNN kernel on a GPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grpojax.models.attention_blockwise import attend_blockwise
from grpojax.types import Array

DTYPES = (jnp.bfloat16, jnp.float16)  # what cuDNN flash attention takes


def supported(q_BTNH: Array, k_BSKH: Array, offset) -> str | None:
    """None when the shapes / dtype / offset fit the cuDNN kernel, else why not (one line)."""
    T, H, S = q_BTNH.shape[1], q_BTNH.shape[3], k_BSKH.shape[1]
    if not isinstance(offset, int) or offset != 0 or T != S:
        return "cudnn needs a cache-free self-attention (offset 0, T == S)"
    if q_BTNH.dtype not in DTYPES:
        return f"cudnn needs bfloat16 or float16 inputs, got {q_BTNH.dtype} (set model.dtype: bfloat16)"
    if H % 8 or H > 128:
        return f"cudnn needs a head dimension that is a multiple of 8 up to 128, got {H}"
    return None


def _roll_rows(x_BT, shift_B, sign: int):
    """Row b of ``x`` (any trailing axes) rolled left by ``sign * shift[b]`` along axis 1."""
    T = x_BT.shape[1]
    idx_BT = (jnp.arange(T, dtype=jnp.int32)[None, :] + sign * shift_B[:, None]) % T
    idx = idx_BT.reshape(idx_BT.shape + (1,) * (x_BT.ndim - 2))
    return jnp.take_along_axis(x_BT, idx, axis=1)


def rows(q_segment_BT: Array, kv_segment_BS: Array) -> tuple[Array, Array, Array]:
    """``(ok_B, start_B, n_B)``: whether each row is ``0* c+ 0*`` with equal q / kv segments (what cuDNN can
    express), the index of its first real token and its number of real tokens."""
    T = kv_segment_BS.shape[1]
    seg_BT = kv_segment_BS.astype(jnp.int32)
    real_BT = seg_BT != 0
    n_B = real_BT.sum(1, dtype=jnp.int32)
    start_B = jnp.where(n_B > 0, jnp.argmax(real_BT, axis=1).astype(jnp.int32), 0)
    first_B = jnp.take_along_axis(seg_BT, start_B[:, None], axis=1)[:, 0]
    pos_BT = jnp.arange(T, dtype=jnp.int32)[None, :]
    inside_BT = (pos_BT >= start_B[:, None]) & (pos_BT < (start_B + n_B)[:, None])
    ok_B = jnp.all(jnp.where(inside_BT, seg_BT == first_B[:, None], ~real_BT), axis=1)
    ok_B &= jnp.all(q_segment_BT.astype(jnp.int32) == seg_BT, axis=1)
    return ok_B, start_B, n_B


def attend_cudnn(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, q_segment_BT: Array, kv_segment_BS: Array,
                 offset: int = 0, *, impl: str = "cudnn") -> Array:
    """cuDNN flash attention for rows of the form ``0* c+ 0*`` (module docstring); ``impl`` as in
    ``jax.nn.dot_product_attention`` (``"xla"`` to test the mapping on any backend)."""
    if impl == "cudnn":
        why = supported(q_BTNH, k_BSKH, offset)
        if why:
            raise ValueError(f"attention: {why}")
    ok_B, start_B, n_B = rows(q_segment_BT, kv_segment_BS)

    def fused(q_BTNH, k_BSKH, v_BSKH):
        q, k, v = (_roll_rows(x, start_B, 1) for x in (q_BTNH, k_BSKH, v_BSKH))
        length_B = jnp.maximum(n_B, 1)  # an all-pad row: its first query reads itself (finite)
        out_BTNH = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=length_B,
                                                key_value_seq_lengths=length_B, implementation=impl)
        return _roll_rows(out_BTNH, start_B, -1).astype(q_BTNH.dtype)

    def fallback(q_BTNH, k_BSKH, v_BSKH):
        return attend_blockwise(q_BTNH, k_BSKH, v_BSKH, q_segment_BT, kv_segment_BS, offset)

    return jax.lax.cond(jnp.all(ok_B), fused, fallback, q_BTNH, k_BSKH, v_BSKH)
