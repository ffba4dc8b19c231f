"""The KV cache: a plain pytree of ``[..., B, S, K, H]`` key / value arrays.

Layout follows the model's ``config.scan_layers``:

* per-layer (default): ``[dict(k=[B, S, K, H], v=[B, S, K, H])] * L``;
* stacked (``scan_layers=True``): one ``dict(k=[L, B, S, K, H], v=[L, B, S, K, H])``; the scanned
  forward carries it whole and writes layer ``l``'s new tokens in place (``dynamic_update_slice`` at
  ``(l, 0, cache_pos, 0, 0)``), so a decoding step never copies the whole cache.

Either way the batch axis is the 4th from the end (:data:`CACHE_BATCH_AXIS`). The cache holds no write
index: the caller passes ``cache_pos`` (a scalar) to the model, which writes the new tokens' keys/values
into slots ``[cache_pos, cache_pos + T)`` and attends over slots ``s <= cache_pos + t`` that are also
valid in the caller's ``attn_mask_BS``. Keys are stored after RoPE, so a slot never needs its position
again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grpojax.models.config import QwenConfig
from grpojax.types import Array

Cache = list | dict  # per-layer list of {k, v} dicts, or one stacked {k, v} dict
CACHE_BATCH_AXIS = -4  # [..., B, S, K, H]


def init_cache(config: QwenConfig, batch: int, max_len: int, dtype=jnp.float32) -> Cache:
    """Zero cache for ``batch`` rows and ``max_len`` slots in the layout of ``config.scan_layers``."""
    if batch <= 0 or max_len <= 0:
        raise ValueError(f"init_cache: batch={batch} and max_len={max_len} must be positive")
    shape = (batch, max_len, config.num_kv_heads, config.head_dim)
    if config.scan_layers:
        shape = (config.num_layers,) + shape
        return dict(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype))
    return [dict(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype)) for _ in range(config.num_layers)]


def write_cache(layer_cache: dict, k_BTKH: Array, v_BTKH: Array, cache_pos: Array) -> dict:
    """Writes ``T`` new keys/values at slots ``[cache_pos, cache_pos + T)`` of one layer's cache.

    ``layer_cache`` is ``dict(k=[B, S, K, H], v=...)`` or, inside the scanned forward, the whole stacked
    cache plus the layer index: ``dict(k=[L, B, S, K, H], v=..., layer=l)`` (written in place at ``l``).
    """
    k_cache, v_cache = layer_cache["k"], layer_cache["v"]
    if k_BTKH.shape[0] != k_cache.shape[-4] or k_BTKH.shape[2:] != k_cache.shape[-2:]:
        raise ValueError(f"cache has shape {k_cache.shape}, new keys have shape {k_BTKH.shape}")
    pos = jnp.asarray(cache_pos, jnp.int32)
    if "layer" in layer_cache:
        layer = layer_cache["layer"]
        start = (layer, 0, pos, 0, 0)
        k_BTKH, v_BTKH = k_BTKH[None], v_BTKH[None]
    else:
        start = (0, pos, 0, 0)
    out = dict(layer_cache)
    out["k"] = jax.lax.dynamic_update_slice(k_cache, k_BTKH.astype(k_cache.dtype), start)
    out["v"] = jax.lax.dynamic_update_slice(v_cache, v_BTKH.astype(v_cache.dtype), start)
    return out


def layer_kv(layer_cache: dict) -> tuple[Array, Array]:
    """This layer's ``[B, S, K, H]`` keys and values (indexed out of a stacked cache)."""
    if "layer" not in layer_cache:
        return layer_cache["k"], layer_cache["v"]
    take = lambda x: jax.lax.dynamic_index_in_dim(x, layer_cache["layer"], axis=0, keepdims=False)  # noqa: E731
    return take(layer_cache["k"]), take(layer_cache["v"])
