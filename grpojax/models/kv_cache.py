"""The KV cache: a plain pytree, one ``dict(k=[B, S, K, H], v=[B, S, K, H])`` per layer.

It holds no write index: the caller passes ``cache_pos`` (a scalar) to the model, which writes the new
tokens' keys/values into slots ``[cache_pos, cache_pos + T)`` with ``lax.dynamic_update_slice`` and
attends over slots ``s <= cache_pos + t`` that are also valid in the caller's ``attn_mask_BS``.
Keys are stored after RoPE, so a slot never needs its position again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grpojax.models.config import QwenConfig
from grpojax.types import Array

Cache = list  # list[dict[str, Array]], one entry per layer


def init_cache(config: QwenConfig, batch: int, max_len: int, dtype=jnp.float32) -> Cache:
    """Zero cache for ``batch`` rows and ``max_len`` slots: ``[{k: [B,S,K,H], v: [B,S,K,H]}] * L``."""
    if batch <= 0 or max_len <= 0:
        raise ValueError(f"init_cache: batch={batch} and max_len={max_len} must be positive")
    shape = (batch, max_len, config.num_kv_heads, config.head_dim)
    return [dict(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype)) for _ in range(config.num_layers)]


def write_cache(layer_cache: dict, k_BTKH: Array, v_BTKH: Array, cache_pos: Array) -> dict:
    """Writes ``T`` new keys/values at slots ``[cache_pos, cache_pos + T)`` of one layer's cache."""
    k_cache, v_cache = layer_cache["k"], layer_cache["v"]
    if k_BTKH.shape[0] != k_cache.shape[0] or k_BTKH.shape[2:] != k_cache.shape[2:]:
        raise ValueError(f"cache has shape {k_cache.shape}, new keys have shape {k_BTKH.shape}")
    start = (0, jnp.asarray(cache_pos, jnp.int32), 0, 0)
    return dict(
        k=jax.lax.dynamic_update_slice(k_cache, k_BTKH.astype(k_cache.dtype), start),
        v=jax.lax.dynamic_update_slice(v_cache, v_BTKH.astype(v_cache.dtype), start),
    )
