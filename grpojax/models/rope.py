"""Rotary position embeddings (RoPE) in the "rotate half" layout used by Qwen / HF ``transformers``.

Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding" (arXiv 2104.09864).
For head dimension H, frequencies ``inv_freq_j = theta^(-2j / H)`` for j < H/2 and angles
``a_{t,j} = pos_t * inv_freq_j``. With ``x = [x1, x2]`` split into halves,

    rope(x)_t = [x1 cos a - x2 sin a,  x2 cos a + x1 sin a]

which equals HF's ``x * cos + rotate_half(x) * sin`` with ``cos = concat(cos a, cos a)``.
"""

from __future__ import annotations

import chex
import jax.numpy as jnp

from grpojax.types import Array


def rope_angles(positions_BT: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
    """cos and sin of the RoPE angles, float32, shapes ``[B, T, H/2]`` each.

    Args:
      positions_BT: integer positions ``[B, T]``.
      head_dim: H (even).
      theta: RoPE base.
    """
    chex.assert_rank(positions_BT, 2)
    exponent_J = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    inv_freq_J = 1.0 / (theta ** exponent_J)
    angles_BTJ = positions_BT.astype(jnp.float32)[:, :, None] * inv_freq_J[None, None, :]
    return jnp.cos(angles_BTJ), jnp.sin(angles_BTJ)


def apply_rope(x_BTNH: Array, cos_BTJ: Array, sin_BTJ: Array) -> Array:
    """Rotates ``x_BTNH`` (any number of heads N) by the angles of :func:`rope_angles`.

    Computed in float32 and cast back to ``x``'s dtype. Shapes: x ``[B, T, N, H]``,
    cos/sin ``[B, T, H/2]``; returns ``[B, T, N, H]``.
    """
    chex.assert_rank(x_BTNH, 4)
    chex.assert_equal_shape([cos_BTJ, sin_BTJ])
    half = x_BTNH.shape[-1] // 2
    chex.assert_shape(cos_BTJ, (*x_BTNH.shape[:2], half))
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos_BTJ[:, :, None, :], sin_BTJ[:, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)
