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

A query with no allowed key (only possible with ``offset < 0``) gets finite, meaningless output; callers
ignore such rows. Pad queries (segment 0) read the pad keys before them, so their outputs are finite and
equally ignored.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from grpojax.models.attention_blockwise import attend_blockwise
from grpojax.types import Array

IMPLEMENTATIONS = ("einsum", "blockwise")  # the names ``Qwen(attention=...)`` / ``model.attention`` accept
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
    if implementation == "einsum":
        return attend_einsum(q_BTNH, k_BSKH, v_BSKH, q_segment_BT, kv_segment_BS, offset)
    if implementation == "blockwise":
        return attend_blockwise(q_BTNH, k_BSKH, v_BSKH, q_segment_BT, kv_segment_BS, offset)
    raise ValueError(f"attention: implementation={implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}")
