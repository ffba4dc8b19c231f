"""Decode-step attention over a shared-prompt KV cache: read the prompt once per group, the rest by chunks.

A decoding step has ``B = b * G`` rows: ``G`` samples of each of ``b`` prompts, prompt-major
(``[p0g0, p0g1, ..., p1g0, ...]``). The cache of one layer (:func:`grpojax.models.kv_cache.shared_prompt_cache`)
holds

* ``prompt_k`` / ``prompt_v`` ``[b, Q, K, H]``: the prompt keys / values, ONE copy per prompt;
* ``k`` / ``v`` ``[B, C, K, H]`` (stacked: ``[L, B, C, K, H]`` and a layer index): the generated tokens of
  every row, slot ``c`` holding the ``c``-th completion token.

Query ``t`` of row ``r`` (prompt ``r // G``) reads prompt slot ``q`` iff ``prompt_segment_bQ[r // G, q] != 0``
and generated slot ``c`` iff ``c <= filled + t`` (``filled`` = the slot the first new token was written to).
The output is the softmax attention over the union of both key sets, computed as two partial softmaxes
merged by their log-sum-exp (the online-softmax recurrence)::

    m = max(m_a, m_b),  l = l_a e^(m_a - m) + l_b e^(m_b - m),  o = o_a e^(m_a - m) + o_b e^(m_b - m),
    out = o / l                                     (m: running max, l: sum of e^(s - m), o: sum e^(s - m) v)

* the prompt part reshapes the queries to ``[b, G * T, K, g, H]`` (``g = N / K`` query heads per key/value
  head) so the G samples of a prompt read the same ``[b, Q, K, H]`` keys without copying them;
* the generated part is read ``c`` slots at a time by a ``lax.fori_loop`` whose trip count is the number of
  chunks that hold a filled slot, ``ceil((filled + T) / c)`` (a traced bound), so a step's work depends on
  the filled length, not on the size ``C`` of the cache.

Scores and the softmax statistics are float32; probabilities are cast to the query dtype before they
multiply the values (as :func:`grpojax.models.attention.attend_einsum`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grpojax.types import Array

DECODE_CHUNK = 128  # generated slots read per iteration of the chunk loop
_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def _prompt_part(q_BTKgH: Array, k_bQKH: Array, v_bQKH: Array, prompt_segment_bQ: Array):
    """Partial softmax over the prompt keys: ``(m, l)`` ``[B, K, g, T]`` f32 and ``o`` ``[B, K, g, T, H]`` f32."""
    B, T, K, g, H = q_BTKgH.shape
    b, Q = prompt_segment_bQ.shape
    G = B // b
    q_bMKgH = q_BTKgH.reshape(b, G * T, K, g, H)  # M = G * T: the group's queries against one key set
    s_bKgMQ = jnp.einsum("bMKgH,bQKH->bKgMQ", q_bMKgH, k_bQKH.astype(q_BTKgH.dtype),
                         preferred_element_type=jnp.float32) * (H ** -0.5)
    s_bKgMQ = jnp.where((prompt_segment_bQ != 0)[:, None, None, None, :], s_bKgMQ, _NEG)
    m_bKgM = jnp.max(s_bKgMQ, axis=-1)
    p_bKgMQ = jnp.exp(s_bKgMQ - m_bKgM[..., None])
    l_bKgM = jnp.sum(p_bKgMQ, axis=-1)
    o_bKgMH = jnp.einsum("bKgMQ,bQKH->bKgMH", p_bKgMQ.astype(q_BTKgH.dtype), v_bQKH.astype(q_BTKgH.dtype),
                         preferred_element_type=jnp.float32)

    def rows(x):  # [b, K, g, G*T, ...] -> [B, K, g, T, ...]
        x = x.reshape(b, K, g, G, T, *x.shape[4:])
        x = jnp.moveaxis(x, 3, 1)
        return x.reshape(B, K, g, T, *x.shape[5:])

    return rows(m_bKgM), rows(l_bKgM), rows(o_bKgMH)


def _read_chunk(cache: Array, layer: Array | None, start: Array, chunk: int) -> Array:
    """``chunk`` slots ``[start, start + chunk)`` of one layer's ``[B, C, K, H]`` (or stacked) cache."""
    if layer is None:
        return jax.lax.dynamic_slice_in_dim(cache, start, chunk, axis=1)
    B, _, K, H = cache.shape[1:]
    return jax.lax.dynamic_slice(cache, (layer, 0, start, 0, 0), (1, B, chunk, K, H))[0]


def shared_prompt_attention(q_BTNH: Array, prompt_k_bQKH: Array, prompt_v_bQKH: Array,
                            prompt_segment_bQ: Array, k_cache: Array, v_cache: Array, filled: Array, *,
                            layer: Array | None = None, chunk: int | None = None) -> Array:
    """Attention of ``T`` new tokens per row over the shared prompt and the filled generated slots.

    Args:
      q_BTNH: queries of the ``B = b * G`` rows (prompt-major), after RoPE.
      prompt_k_bQKH, prompt_v_bQKH: the ``b`` prompts' keys / values (after RoPE).
      prompt_segment_bQ: int / bool, nonzero on real prompt tokens (every prompt needs one).
      k_cache, v_cache: generated keys / values ``[B, C, K, H]``, or the stacked ``[L, B, C, K, H]`` with
        ``layer`` the traced layer index. The new tokens' own keys must already be written.
      filled: int32 scalar, the generated slot of query 0 (query ``t`` reads slots ``c <= filled + t``).
      chunk: generated slots per loop iteration (capped at ``C``; None: :data:`DECODE_CHUNK`, read when
        traced); any ``C`` works (the last chunk is read from ``C - chunk`` and its already-read slots are
        masked).

    Returns:
      ``[B, T, N, H]`` in q's dtype.
    """
    B, T, N, H = q_BTNH.shape
    b, Q, K, _ = prompt_k_bQKH.shape
    C = k_cache.shape[-3]
    if B % b or N % K or prompt_segment_bQ.shape != (b, Q) or k_cache.shape[-4] != B:
        raise ValueError(f"shared_prompt_attention: queries {q_BTNH.shape}, prompt keys {prompt_k_bQKH.shape}, "
                         f"prompt segments {prompt_segment_bQ.shape}, generated keys {k_cache.shape}")
    g, chunk = N // K, min(int(DECODE_CHUNK if chunk is None else chunk), C)
    dtype = q_BTNH.dtype
    q_BTKgH = q_BTNH.reshape(B, T, K, g, H)
    state = _prompt_part(q_BTKgH, prompt_k_bQKH, prompt_v_bQKH, prompt_segment_bQ)
    q_BKgTH = jnp.moveaxis(q_BTKgH, 1, 3)
    filled = jnp.asarray(filled, jnp.int32)
    last_T = filled + jnp.arange(T, dtype=jnp.int32)  # the last generated slot query t may read

    def body(i, state):
        m_BKgT, l_BKgT, o_BKgTH = state
        nominal = i * chunk
        start = jnp.minimum(nominal, C - chunk)  # the last chunk ends at C; its slots below nominal are old
        k_BcKH = _read_chunk(k_cache, layer, start, chunk).astype(dtype)
        v_BcKH = _read_chunk(v_cache, layer, start, chunk).astype(dtype)
        s_BKgTc = jnp.einsum("BKgTH,BcKH->BKgTc", q_BKgTH, k_BcKH,
                             preferred_element_type=jnp.float32) * (H ** -0.5)
        slot_c = start + jnp.arange(chunk, dtype=jnp.int32)
        ok_Tc = (slot_c[None, :] >= nominal) & (slot_c[None, :] <= last_T[:, None])
        s_BKgTc = jnp.where(ok_Tc[None, None, None], s_BKgTc, _NEG)
        m_new = jnp.maximum(m_BKgT, jnp.max(s_BKgTc, axis=-1))
        alpha = jnp.exp(m_BKgT - m_new)
        p_BKgTc = jnp.exp(s_BKgTc - m_new[..., None])
        l_BKgT = alpha * l_BKgT + jnp.sum(p_BKgTc, axis=-1)
        o_BKgTH = alpha[..., None] * o_BKgTH + jnp.einsum("BKgTc,BcKH->BKgTH", p_BKgTc.astype(dtype), v_BcKH,
                                                          preferred_element_type=jnp.float32)
        return m_new, l_BKgT, o_BKgTH

    num_chunks = jnp.minimum((filled + T + chunk - 1) // chunk, -(-C // chunk))
    _, l_BKgT, o_BKgTH = jax.lax.fori_loop(0, num_chunks, body, state)
    out_BKgTH = (o_BKgTH / l_BKgT[..., None]).astype(dtype)
    return jnp.moveaxis(out_BKgTH, 3, 1).reshape(B, T, N, H)
