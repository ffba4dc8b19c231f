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

The sampler decodes from a **shared-prompt** cache (:func:`shared_prompt_cache`): each layer's dict (or
the stacked dict) also holds ``prompt_k`` / ``prompt_v`` ``[..., b, Q, K, H]``, the keys / values of ``b``
prompts stored once, while ``k`` / ``v`` ``[..., b * G, C, K, H]`` hold the ``C`` generated tokens of each
of the ``G`` samples per prompt. ``cache_pos`` then counts generated slots, and attention runs through
:func:`grpojax.models.decode_attention.shared_prompt_attention`.
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


def shared_prompt_cache(prompt_cache: Cache, generated_cache: Cache) -> Cache:
    """The shared-prompt layout from a prefilled ``[..., b, Q, K, H]`` cache and a zero ``[..., b * G, C, K, H]``
    one (same layer layout): per layer ``dict(prompt_k, prompt_v, k, v)`` (or one stacked such dict)."""
    def join(p: dict, g: dict) -> dict:
        if p["k"].shape[:-4] != g["k"].shape[:-4] or p["k"].shape[-2:] != g["k"].shape[-2:] \
                or g["k"].shape[-4] % p["k"].shape[-4]:
            raise ValueError(f"prompt cache {p['k'].shape} and generated cache {g['k'].shape} do not fit")
        return dict(prompt_k=p["k"], prompt_v=p["v"], k=g["k"], v=g["v"])

    if isinstance(prompt_cache, dict) != isinstance(generated_cache, dict):
        raise ValueError("prompt and generated caches differ in layer layout (stacked vs per-layer)")
    if isinstance(prompt_cache, dict):
        return join(prompt_cache, generated_cache)
    if len(prompt_cache) != len(generated_cache):
        raise ValueError(f"prompt cache has {len(prompt_cache)} layers, generated {len(generated_cache)}")
    return [join(p, g) for p, g in zip(prompt_cache, generated_cache)]


def cache_geometry(cache: Cache, config: QwenConfig) -> tuple[int, int | None]:
    """Checks the cache's layer layout against ``config``; returns ``(S, None)`` for a ``[.., B, S, K, H]``
    cache and ``(Q, b)`` for a shared-prompt one (its prompt part ``[.., b, Q, K, H]``)."""
    stacked = isinstance(cache, dict)
    n = cache["k"].shape[0] if stacked else len(cache)
    if stacked != config.scan_layers or n != config.num_layers:
        raise ValueError(f"Qwen: cache has {n} layers ({'stacked' if stacked else 'per-layer'}), "
                         f"model has {config.num_layers} (scan_layers={config.scan_layers}); build it with "
                         "init_cache(model.config, ...)")
    first = cache if stacked else cache[0]
    if "prompt_k" in first:
        b, Q = first["prompt_k"].shape[-4:-2]
        return Q, b
    return first["k"].shape[-3], None


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


def layer_kv(layer_cache: dict, prefix: str = "") -> tuple[Array, Array]:
    """This layer's ``[B, S, K, H]`` keys and values (indexed out of a stacked cache); ``prefix="prompt_"``
    gives the shared prompt part ``[b, Q, K, H]`` of a shared-prompt cache."""
    k, v = layer_cache[prefix + "k"], layer_cache[prefix + "v"]
    if "layer" not in layer_cache:
        return k, v
    take = lambda x: jax.lax.dynamic_index_in_dim(x, layer_cache["layer"], axis=0, keepdims=False)  # noqa: E731
    return take(k), take(v)
