"""The shared-prefix forward: each prompt is computed once for the G completions that follow it.

A batch of B prompts ``[B, Q]`` (left-padded) with G right-padded completions each ``[B, G, C]`` is run as
two streams through every decoder block:

    prompt stream      x_BQD     causal self-attention over the prompt (segments = prompt mask)
    completion stream  x_(BG)CD  attends to concat(the prompt's keys / values repeated G times, its own)
                                 with ``attention(..., offset=Q)``: completion token t sits at key index
                                 Q + t, so it reads every real prompt key and its own keys up to t

Segments are the masks (1 = real, 0 = padding), so a real completion token reads exactly the keys it reads
in the concatenated ``[B * G, Q + C]`` forward, and positions (RoPE) are the concatenated forward's too:
the prompt's ``cumsum(mask) - 1`` and, for the completion, the prompt's real length plus its own. The two
streams share every weight (norms, projections with their LoRA adapters, MLPs), so the function, its
gradients and its remat / ``scan_layers`` layouts are those of the concatenated forward; the prompt's
projections and MLPs run on B rows instead of B * G. Any attention implementation works (it sees the
ordinary segment / offset signature of :func:`grpojax.models.attention.attention`).

Under a mesh both streams are pinned with rows over the batch axes: prompt b's G completions are rows
``[b * G, (b + 1) * G)``, so when the batch-axis size divides B, the repeat of a prompt's keys stays on
the device that holds both (callers refuse the other case).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from grpojax.models.attention import attention
from grpojax.models.rope import apply_rope, rope_angles
from grpojax.sharding.rules import ACTIVATION_AXES, pin
from grpojax.types import Array

_X_BTD = ACTIVATION_AXES["x_BTD"]


def stream_positions(prompt_mask_BQ: Array, completion_mask_BGC: Array) -> tuple[Array, Array]:
    """RoPE positions of both streams, those of the concatenated row ``max(cumsum(mask) - 1, 0)``:
    ``([B, Q], [B * G, C])``."""
    B, G, C = completion_mask_BGC.shape
    pm_BQ = prompt_mask_BQ.astype(jnp.int32)
    pos_BQ = jnp.maximum(jnp.cumsum(pm_BQ, axis=1) - 1, 0)
    length_B1 = jnp.sum(pm_BQ, axis=1, keepdims=True)
    cm_BC = completion_mask_BGC.astype(jnp.int32).reshape(B * G, C)
    pos_BC = jnp.maximum(jnp.repeat(length_B1, G, axis=0) + jnp.cumsum(cm_BC, axis=1) - 1, 0)
    return pos_BQ, pos_BC


def _qkv(attn, x_BTD, cos_BTJ, sin_BTJ):
    """The q / k / v of :class:`grpojax.models.qwen.Attention` (projections, q/k norm, RoPE)."""
    q_BTNH = pin(attn.q(x_BTD), ACTIVATION_AXES["q_BTNH"])
    k_BTKH = pin(attn.k(x_BTD), ACTIVATION_AXES["k_BTKH"])
    v_BTKH = pin(attn.v(x_BTD), ACTIVATION_AXES["k_BTKH"])
    if attn.q_norm is not None:
        q_BTNH, k_BTKH = attn.q_norm(q_BTNH), attn.k_norm(k_BTKH)
    return apply_rope(q_BTNH, cos_BTJ, sin_BTJ), apply_rope(k_BTKH, cos_BTJ, sin_BTJ), v_BTKH


def two_stream_block(block, xp_BQD, xc_BCD, rope, segments):
    """One pre-norm decoder :class:`grpojax.models.qwen.Block` on both streams (module docstring).

    ``rope`` = ``(cos_BQJ, sin_BQJ, cos_BCJ, sin_BCJ)`` (completion rows B * G), ``segments`` =
    ``(prompt_segment_BQ, completion_segment_BC)``. Returns the new ``(xp_BQD, xc_BCD)``."""
    cos_p, sin_p, cos_c, sin_c = rope
    seg_p_BQ, seg_c_BC = segments
    G = xc_BCD.shape[0] // xp_BQD.shape[0]
    Q = xp_BQD.shape[1]
    a = block.attn
    qp, kp, vp = _qkv(a, block.attn_norm(xp_BQD), cos_p, sin_p)
    qc, kc, vc = _qkv(a, block.attn_norm(xc_BCD), cos_c, sin_c)
    out_p = attention(qp, kp, vp, seg_p_BQ, seg_p_BQ, offset=0, implementation=a.implementation)
    k_cat = jnp.concatenate([jnp.repeat(kp, G, axis=0), kc], axis=1)
    v_cat = jnp.concatenate([jnp.repeat(vp, G, axis=0), vc], axis=1)
    seg_cat = jnp.concatenate([jnp.repeat(seg_p_BQ, G, axis=0), seg_c_BC], axis=1)
    out_c = attention(qc, k_cat, v_cat, seg_c_BC, seg_cat, offset=Q, implementation=a.implementation)
    hp = pin(xp_BQD + a.o(out_p), _X_BTD)
    hc = pin(xc_BCD + a.o(out_c), _X_BTD)
    xp_BQD = pin(hp + block.mlp(block.mlp_norm(hp)), _X_BTD)
    xc_BCD = pin(hc + block.mlp(block.mlp_norm(hc)), _X_BTD)
    return xp_BQD, xc_BCD


def _block_call(policy):
    """:func:`two_stream_block`, under ``jax.checkpoint(policy)`` when ``policy`` is given (the block is
    split and merged inside, as ``grpojax.models.qwen._remat_block``, so the checkpointed function is pure)."""
    if policy is None:
        return two_stream_block

    def call(block, xp, xc, rope, segments):
        graphdef, state = nnx.split(block)
        pure = lambda st, *a: two_stream_block(nnx.merge(graphdef, st), *a)  # noqa: E731
        return jax.checkpoint(pure, policy=policy)(state, xp, xc, rope, segments)

    return call


def shared_prefix_hidden(model, prompt_BQ: Array, prompt_mask_BQ: Array, completion_BGC: Array,
                         completion_mask_BGC: Array, *, remat_policy=None) -> tuple[Array, Array]:
    """Final-normed hidden states ``(prompt [B, Q, D], completion [B * G, C, D])`` of a
    :class:`grpojax.models.qwen.Qwen` run as two streams (module docstring); completion row ``b * G + g``
    is ``completion_BGC[b, g]``. ``remat_policy`` (a ``jax.checkpoint`` policy or None) checkpoints every
    block; the layers run as a Python loop or, with ``model.config.scan_layers``, one ``jax.lax.scan``."""
    chex.assert_rank([prompt_BQ, prompt_mask_BQ, completion_BGC, completion_mask_BGC], [2, 2, 3, 3])
    chex.assert_equal_shape([prompt_BQ, prompt_mask_BQ])
    chex.assert_equal_shape([completion_BGC, completion_mask_BGC])
    B, G, C = completion_BGC.shape
    chex.assert_axis_dimension(prompt_BQ, 0, B)
    cfg = model.config
    pos_BQ, pos_BC = stream_positions(prompt_mask_BQ, completion_mask_BGC)
    rope = (*rope_angles(pos_BQ, cfg.head_dim, cfg.rope_theta), *rope_angles(pos_BC, cfg.head_dim, cfg.rope_theta))
    segments = (prompt_mask_BQ.astype(bool).astype(jnp.int32),
                completion_mask_BGC.astype(bool).astype(jnp.int32).reshape(B * G, C))
    table = model.embed[...]
    xp = pin(jnp.take(table, prompt_BQ, axis=0).astype(model.dtype), _X_BTD)
    xc = pin(jnp.take(table, completion_BGC.reshape(B * G, C), axis=0).astype(model.dtype), _X_BTD)
    call = _block_call(remat_policy)
    if cfg.scan_layers:
        graphdef, state = nnx.split(model.layers)

        def body(carry, layer_state):
            return call(nnx.merge(graphdef, layer_state), *carry, rope, segments), None

        (xp, xc), _ = jax.lax.scan(body, (xp, xc), state)
    else:
        for layer in model.layers:
            xp, xc = call(layer, xp, xc, rope, segments)
    return model.final_norm(xp), model.final_norm(xc)
