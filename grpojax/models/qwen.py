"""Qwen2 / Qwen2.5 / Qwen3 dense decoders as Flax NNX modules (einsum with lettered axes).

Architecture (Qwen2 technical report, arXiv 2407.10671; Qwen3 technical report, arXiv 2505.09388):

    x_0      = E[tokens]                                         E: [V, D]
    h_l      = x_l + Attn(RMSNorm(x_l))                          GQA, RoPE; Qwen2: q/k/v bias;
                                                                 Qwen3: per-head RMSNorm on q and k
    x_{l+1}  = h_l + W_down (silu(W_gate z) * (W_up z)),  z = RMSNorm(h_l)
    logits   = RMSNorm(x_L) @ W_head^T                            W_head = E when embeddings are tied

    RMSNorm(x) = w * x / sqrt(mean(x^2) + eps)   (computed in float32, as transformers does)
    Attn: softmax(q k^T / sqrt(H) + mask) v with query head n reading key/value head n // G, G = N / K.

Every parameter carries logical axis names (``out_sharding`` metadata, e.g. ``("embed", "mlp")``) so a
sharding layer can map them onto a mesh (``nnx.get_partition_spec``); no mesh is needed to build one.
Parameters live in ``param_dtype`` and are cast to the compute ``dtype`` at use.

Activations are pinned to :data:`grpojax.sharding.ACTIVATION_AXES` (residual stream ``[B, T, D]`` with B
over ``(data, fsdp)`` and D whole; q / k / v heads and the MLP's F over ``tensor``) whenever the model is
traced under a mesh (:func:`grpojax.sharding.pin`; a no-op otherwise), so each device computes only its
own rows and per-device memory per sequence does not grow with the device count
(``tests/test_sharding_memory.py::test_train_step_memory_per_sequence_does_not_grow_with_devices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from grpojax.models.attention import IMPLEMENTATIONS, attention
from grpojax.models.config import QwenConfig
from grpojax.models.decode_attention import shared_prompt_attention
from grpojax.models.kv_cache import cache_geometry, layer_kv, write_cache
from grpojax.models.rope import apply_rope, rope_angles
from grpojax.models.shared_prefix import shared_prefix_hidden
from grpojax.sharding.rules import ACTIVATION_AXES, pin
from grpojax.types import Array

_INIT = nnx.initializers.normal(stddev=0.02)
_X_BTD, _H_BTF = ACTIVATION_AXES["x_BTD"], ACTIVATION_AXES["h_BTF"]


class KeyStream:
    """Fresh PRNG keys ``fold_in(key, 1), fold_in(key, 2), ...`` for parameter initialisers.

    Drawing one key from ``nnx.Rngs`` and folding in a counter avoids updating the ``Rngs`` counter
    variable once per parameter, which costs time quadratic in the number of parameters under tracing.
    """

    def __init__(self, rngs: nnx.Rngs):
        self.key = rngs.params()
        self.count = 0

    def __call__(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count)


def _param(init, keys: KeyStream, shape: Sequence[int], axes: Sequence[str], param_dtype) -> nnx.Param:
    """A parameter tagged with logical axis names (no mesh needed: ``eager_sharding=False``)."""
    if len(shape) != len(axes):
        raise ValueError(f"shape {tuple(shape)} and axis names {tuple(axes)} differ in rank")
    return nnx.Param(init(keys(), tuple(shape), param_dtype),
                     out_sharding=tuple(axes), eager_sharding=False)


class Dense(nnx.Module):
    """``y = einsum(eq, x, w) [+ b] [+ (alpha / r) * (x A) B]`` with a lettered-axis kernel.

    ``w`` has shape ``in_shape + out_shape`` (e.g. q: ``[D, N, H]``, o: ``[N, H, D]``). ``lora`` is ``None``
    until :func:`grpojax.models.lora.apply_lora` attaches a flax ``nnx.LoRA`` acting on the flattened
    input/output features; ``lora_scale`` is alpha / r (PEFT's scaling).
    """

    def __init__(self, eq: str, in_shape: Sequence[int], out_shape: Sequence[int], axes: Sequence[str], *,
                 bias: bool, dtype: Any, param_dtype: Any, keys: KeyStream):
        self.eq = eq
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)
        self.dtype = dtype
        self.w = _param(_INIT, keys, self.in_shape + self.out_shape, axes, param_dtype)
        self.b = (_param(nnx.initializers.zeros, keys, self.out_shape, axes[len(self.in_shape):], param_dtype)
                  if bias else nnx.data(None))
        self.lora = nnx.data(None)
        self.lora_scale = 1.0

    def __call__(self, x: Array) -> Array:
        y = jnp.einsum(self.eq, x.astype(self.dtype), self.w[...].astype(self.dtype))
        if self.b is not None:
            b = self.b[...].astype(self.dtype)
            y = y + b.reshape((1,) * (y.ndim - b.ndim) + b.shape)
        if self.lora is not None:
            lead = x.shape[: x.ndim - len(self.in_shape)]
            x_flat = x.reshape(*lead, -1).astype(self.dtype)
            delta = self.lora(x_flat) * self.lora_scale
            y = y + delta.reshape(y.shape).astype(y.dtype)
        return y


class RMSNorm(nnx.Module):
    """``w * x / sqrt(mean(x^2) + eps)`` over the last axis; statistics in float32 (as transformers)."""

    def __init__(self, size: int, axis_name: str, *, eps: float, dtype: Any, param_dtype: Any,
                 keys: KeyStream):
        self.eps = float(eps)
        self.dtype = dtype
        self.scale = _param(nnx.initializers.ones, keys, (size,), (axis_name,), param_dtype)

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(var + self.eps)).astype(self.dtype)
        w = self.scale[...].astype(self.dtype)
        return normed * w.reshape((1,) * (x.ndim - 1) + w.shape)


class Attention(nnx.Module):
    """Self-attention block: q/k/v projections, optional q/k norm, RoPE, GQA, output projection.

    ``implementation`` names the attention kernel (:mod:`grpojax.models.attention`); ``mask`` is the
    ``(q_segment_BT, kv_segment_BS, offset)`` triple that describes the mask there."""

    def __init__(self, cfg: QwenConfig, *, dtype: Any, param_dtype: Any, keys: KeyStream,
                 implementation: str = "einsum"):
        self.implementation = implementation
        D, N, K, H = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, keys=keys)
        self.q = Dense("BTD,DNH->BTNH", (D,), (N, H), ("embed", "q_heads", "head_dim"), bias=cfg.qkv_bias, **kw)
        self.k = Dense("BTD,DKH->BTKH", (D,), (K, H), ("embed", "kv_heads", "head_dim"), bias=cfg.qkv_bias, **kw)
        self.v = Dense("BTD,DKH->BTKH", (D,), (K, H), ("embed", "kv_heads", "head_dim"), bias=cfg.qkv_bias, **kw)
        self.o = Dense("BTNH,NHD->BTD", (N, H), (D,), ("q_heads", "head_dim", "embed"), bias=False, **kw)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(H, "head_dim", eps=cfg.rms_norm_eps, **kw)
            self.k_norm = RMSNorm(H, "head_dim", eps=cfg.rms_norm_eps, **kw)
        else:
            self.q_norm = nnx.data(None)
            self.k_norm = nnx.data(None)

    def __call__(self, x_BTD: Array, cos_BTJ: Array, sin_BTJ: Array, mask: tuple,
                 layer_cache: dict | None = None, cache_pos: Array | None = None):
        q_BTNH = pin(self.q(x_BTD), ACTIVATION_AXES["q_BTNH"])
        k_BTKH = pin(self.k(x_BTD), ACTIVATION_AXES["k_BTKH"])
        v_BTKH = pin(self.v(x_BTD), ACTIVATION_AXES["k_BTKH"])
        if self.q_norm is not None:
            q_BTNH, k_BTKH = self.q_norm(q_BTNH), self.k_norm(k_BTKH)
        q_BTNH = apply_rope(q_BTNH, cos_BTJ, sin_BTJ)
        k_BTKH = apply_rope(k_BTKH, cos_BTJ, sin_BTJ)
        q_segment_BT, kv_segment_BS, offset = mask
        if layer_cache is None:
            k_BSKH, v_BSKH = k_BTKH, v_BTKH
        elif "prompt_k" in layer_cache:  # shared-prompt cache: kv_segment is the prompts' [b, Q] segments
            layer_cache = write_cache(layer_cache, k_BTKH, v_BTKH, cache_pos)
            out_BTNH = shared_prompt_attention(q_BTNH, *layer_kv(layer_cache, "prompt_"), kv_segment_BS,
                                               layer_cache["k"], layer_cache["v"], offset,
                                               layer=layer_cache.get("layer"))
            return self.o(out_BTNH), layer_cache
        else:
            layer_cache = write_cache(layer_cache, k_BTKH, v_BTKH, cache_pos)
            k_BSKH, v_BSKH = layer_kv(layer_cache)
        out_BTNH = attention(q_BTNH, k_BSKH, v_BSKH, q_segment_BT, kv_segment_BS, offset=offset,
                             implementation=self.implementation)
        return self.o(out_BTNH), layer_cache


# Sequences longer than this run through the MLP in chunks of this many tokens (``MLP.__call__``).
MLP_CHUNK_TOKENS = 4096


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``, token by token.

    A sequence longer than ``MLP_CHUNK_TOKENS`` is cut into chunks of that many tokens (the last one
    zero-padded; a zero row gives a zero output) that go through the MLP one after another
    (``lax.map``), each under ``jax.checkpoint``: the forward and the backward then hold the ``[B, c, F]``
    gate / up / product of one chunk instead of ``[B, T, F]`` (F is 5x D in Qwen2.5-7B), for the price of
    recomputing the chunk's forward in the backward. Every token's output is the same function as unchunked.
    """

    def __init__(self, cfg: QwenConfig, *, dtype: Any, param_dtype: Any, keys: KeyStream):
        D, F = cfg.hidden_size, cfg.intermediate_size
        kw = dict(bias=False, dtype=dtype, param_dtype=param_dtype, keys=keys)
        self.gate = Dense("BTD,DF->BTF", (D,), (F,), ("embed", "mlp"), **kw)
        self.up = Dense("BTD,DF->BTF", (D,), (F,), ("embed", "mlp"), **kw)
        self.down = Dense("BTF,FD->BTD", (F,), (D,), ("mlp", "embed"), **kw)

    def swiglu(self, x_BTD: Array) -> Array:
        h_BTF = jax.nn.silu(pin(self.gate(x_BTD), _H_BTF)) * pin(self.up(x_BTD), _H_BTF)
        return self.down(h_BTF)

    def __call__(self, x_BTD: Array) -> Array:
        B, T, D = x_BTD.shape
        c = MLP_CHUNK_TOKENS
        if T <= c:
            return self.swiglu(x_BTD)
        n = -(-T // c)
        x_BnD = jnp.pad(x_BTD, ((0, 0), (0, n * c - T), (0, 0)))
        x_nBcD = x_BnD.reshape(B, n, c, D).swapaxes(0, 1)
        graphdef, state = nnx.split(self)
        chunk = jax.checkpoint(lambda st, x_BcD: pin(nnx.merge(graphdef, st).swiglu(x_BcD), _X_BTD))
        y_nBcD = jax.lax.map(lambda x_BcD: chunk(state, x_BcD), x_nBcD)
        return y_nBcD.swapaxes(0, 1).reshape(B, n * c, D)[:, :T]


class Block(nnx.Module):
    """Pre-norm decoder layer: ``h = x + attn(norm(x)); y = h + mlp(norm(h))``."""

    def __init__(self, cfg: QwenConfig, *, dtype: Any, param_dtype: Any, keys: KeyStream,
                 attention: str = "einsum"):
        kw = dict(dtype=dtype, param_dtype=param_dtype, keys=keys)
        self.attn_norm = RMSNorm(cfg.hidden_size, "embed", eps=cfg.rms_norm_eps, **kw)
        self.attn = Attention(cfg, implementation=attention, **kw)
        self.mlp_norm = RMSNorm(cfg.hidden_size, "embed", eps=cfg.rms_norm_eps, **kw)
        self.mlp = MLP(cfg, **kw)

    def __call__(self, x_BTD, cos_BTJ, sin_BTJ, mask, layer_cache=None, cache_pos=None):
        attn_BTD, layer_cache = self.attn(self.attn_norm(x_BTD), cos_BTJ, sin_BTJ, mask,
                                          layer_cache, cache_pos)
        h_BTD = pin(x_BTD + attn_BTD, _X_BTD)
        return pin(h_BTD + self.mlp(self.mlp_norm(h_BTD)), _X_BTD), layer_cache


# Rematerialisation (activation checkpointing) per decoder block, for the backward pass of training:
#   "none"  keep every activation;
#   "block" keep each block's matmul outputs, recompute the cheap element-wise ops (norms, SiLU, softmax);
#   "full"  keep only each block's input, recompute the whole block (least memory, ~1/3 more FLOPs).
REMAT_POLICIES = {"none": None, "block": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                  "full": jax.checkpoint_policies.nothing_saveable}


def stack_layers(modules: Sequence[nnx.Module]) -> nnx.Module:
    """``modules`` (all of one structure) as ONE module whose every Variable is the stack of theirs along
    a new leading axis, named ``"layers"`` in its logical axes (``out_sharding``). ``nnx.split`` of the
    result gives the ``xs`` of a ``jax.lax.scan`` over the layers; the values are the modules' own, so a
    stacked model equals the per-layer one built from the same keys."""
    splits = [nnx.split(m) for m in modules]
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *[st for _, st in splits])
    stacked = nnx.merge(splits[0][0], state)
    for _, v in nnx.iter_graph(stacked):
        if isinstance(v, nnx.Variable):
            names = v.get_metadata().get("out_sharding")
            if names is not None:
                v.set_metadata(out_sharding=("layers",) + tuple(names))
    return stacked


def _call_block(layer, x_BTD, cos_BTJ, sin_BTJ, mask, layer_cache, cache_pos):
    return layer(x_BTD, cos_BTJ, sin_BTJ, mask, layer_cache, cache_pos)


def _remat_block(policy):
    """``_call_block`` under ``jax.checkpoint``: the layer is split into (graphdef, state) and merged again
    inside, so the checkpointed function is pure. (``nnx.remat`` fails on LoRA layers merged inside
    ``jax.grad``: "Cannot mutate Param from a different trace level".) A training block mutates nothing,
    so nothing is written back. A Python-int attention ``offset`` stays out of the checkpointed arguments
    (they are traced), so the attention sees it static, as the fused kernels (splash) need."""

    def call(layer, x_BTD, cos_BTJ, sin_BTJ, mask, layer_cache, cache_pos):
        graphdef, state = nnx.split(layer)
        q_segment_BT, kv_segment_BS, offset = mask
        static = isinstance(offset, int)

        def pure(st, x, cos, sin, q_seg, kv_seg, traced_offset, lc, pos):
            mask = (q_seg, kv_seg, offset if static else traced_offset)
            return _call_block(nnx.merge(graphdef, st), x, cos, sin, mask, lc, pos)

        return jax.checkpoint(pure, policy=policy)(state, x_BTD, cos_BTJ, sin_BTJ, q_segment_BT, kv_segment_BS,
                                                   None if static else offset, layer_cache, cache_pos)

    return call


class Qwen(nnx.Module):
    """A dense Qwen2 / Qwen2.5 / Qwen3 decoder.

    ``model(tokens_BT, positions_BT=None, *, attn_mask_BT=None, segment_ids_BT=None, cache=None,
    cache_pos=None, return_hidden=False)``:

    * no cache: causal attention over the T tokens; ``attn_mask_BT`` (bool, True = real token) masks
      padded keys; ``positions_BT`` defaults to ``arange(T)`` per row. Returns float32 logits ``[B, T, V]``.
      ``segment_ids_BT`` (int, instead of ``attn_mask_BT``) packs several examples in a row: a token reads
      only earlier tokens of its own segment, 0 = padding (pass their restarting ``positions_BT``).
    * with ``cache`` (from :func:`init_cache`, S slots) and scalar ``cache_pos``: the new keys/values go
      to slots ``[cache_pos, cache_pos + T)``; query t attends to slot s iff ``s <= cache_pos + t`` and
      ``attn_mask_BT[b, s]`` (then of length S). ``positions_BT`` defaults to ``cache_pos + arange(T)``.
      Returns ``(logits_BTV, new_cache)``.
    * with a shared-prompt cache (``kv_cache.shared_prompt_cache``, B = b * G rows): ``cache_pos`` is the
      generated slot of the first new token, ``attn_mask_BT`` the b prompts' ``[b, Q]`` mask; query t reads
      its prompt's real tokens and generated slots ``c <= cache_pos + t`` (pass ``positions_BT``).
    * ``return_hidden=True`` returns the final-normed hidden states ``[B, T, D]`` instead of logits; apply
      :meth:`logits_from_hidden` (e.g. chunk by chunk) to get logits.

    ``with_lm_head=False`` drops an untied LM head (reward-model backbones). ``remat`` ("none", "block",
    "full"; see ``REMAT_POLICIES``) checkpoints every block of a cache-free forward (training).
    ``attention`` names the attention implementation (:data:`grpojax.models.attention.IMPLEMENTATIONS`).

    ``config.scan_layers`` picks the layout of the decoder layers: ``layers`` is an ``nnx.List`` of L
    :class:`Block` (``model.layers[i].attn.q.w: [D, N, H]``) run by a Python loop, or ONE Block whose
    parameters carry a leading L axis (``model.layers.attn.q.w: [L, D, N, H]``, logical axis ``"layers"``)
    run by ``jax.lax.scan``, with the cache stacked likewise (:mod:`grpojax.models.kv_cache`). Both layouts
    compute the same function from the same keys (``tests/models/test_scan_layers.py``).
    """

    cache_layouts = ("dense", "shared")  # KV-cache layouts the cache branch reads (grpojax.sampling.decode)

    def __init__(self, config: QwenConfig, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs | None = None, with_lm_head: bool = True, remat: str = "none",
                 attention: str = "einsum"):
        keys = KeyStream(nnx.Rngs(0) if rngs is None else rngs)
        if remat not in REMAT_POLICIES:
            raise ValueError(f"Qwen: remat={remat!r}; valid: {', '.join(REMAT_POLICIES)}")
        if attention not in IMPLEMENTATIONS:
            raise ValueError(f"Qwen: attention={attention!r}; valid: {', '.join(IMPLEMENTATIONS)}")
        self.attention = attention
        self.config = config
        self.dtype = dtype
        self.remat = remat
        kw = dict(dtype=dtype, param_dtype=param_dtype, keys=keys)
        self.embed = _param(_INIT, keys, (config.vocab_size, config.hidden_size), ("vocab", "embed"),
                            param_dtype)
        blocks = [Block(config, attention=attention, **kw) for _ in range(config.num_layers)]
        # scan_layers: one Block whose parameters are [L, ...] (see QwenConfig.scan_layers)
        self.layers = stack_layers(blocks) if config.scan_layers else nnx.List(blocks)
        self.final_norm = RMSNorm(config.hidden_size, "embed", eps=config.rms_norm_eps, **kw)
        if with_lm_head and not config.tie_word_embeddings:
            self.lm_head = _param(_INIT, keys, (config.vocab_size, config.hidden_size), ("vocab", "embed"),
                                  param_dtype)
        else:
            self.lm_head = nnx.data(None)

    def _scan_layers(self, call, x_BTD, args, cache, cache_pos):
        """``jax.lax.scan`` of ``call`` over the stacked layers; the stacked cache rides in the carry and
        each layer writes its new keys / values in place at its index (no per-step cache copy)."""
        graphdef, state = nnx.split(self.layers)

        def body(carry, xs):
            x_BTD, kv = carry
            layer_state, index = xs
            layer_cache = None if kv is None else dict(kv, layer=index)
            x_BTD, layer_cache = call(nnx.merge(graphdef, layer_state), x_BTD, *args, layer_cache, cache_pos)
            kv = None if kv is None else {name: layer_cache[name] for name in kv}
            return (x_BTD, kv), None

        index = jnp.arange(self.config.num_layers, dtype=jnp.int32)
        (x_BTD, new_cache), _ = jax.lax.scan(body, (x_BTD, cache), (state, index))
        return x_BTD, new_cache

    def logits_from_hidden(self, hidden_BTD: Array, *, vocab_major: bool = False) -> Array:
        """float32 logits ``[..., V]`` from final hidden states ``[..., D]`` (tied or untied head).

        ``vocab_major=True`` computes the product as ``[V, N]`` (``N`` = all leading positions) and then
        transposes it; the values are the same. For the few rows of a decoding step this streams the
        ``[V, D]`` table once along its rows, which XLA:CPU runs faster than the ``[N, V]`` form
        (``benchmarks/decode_matmul.py``; timings in ``docs/history.md``). The optimization barrier keeps
        XLA from folding the transpose back into the dot.
        """
        table_VD = self.embed if self.config.tie_word_embeddings else self.lm_head
        if table_VD is None:
            raise ValueError("this Qwen was built with with_lm_head=False; it has no LM head")
        h, table = hidden_BTD.astype(self.dtype), table_VD[...].astype(self.dtype)
        if not vocab_major:
            return jnp.einsum("...D,VD->...V", h, table, preferred_element_type=jnp.float32)
        lead = h.shape[:-1]
        z_VN = jnp.einsum("VD,ND->VN", table, h.reshape(-1, h.shape[-1]), preferred_element_type=jnp.float32)
        return jax.lax.optimization_barrier(z_VN).T.reshape(*lead, table.shape[0])

    def forward_shared_prefix(self, prompt_BQ: Array, prompt_mask_BQ: Array, completion_BGC: Array,
                              completion_mask_BGC: Array) -> tuple[Array, Array]:
        """Final-normed hidden states ``(prompt [B, Q, D], completions [B * G, C, D])`` with each of the B
        left-padded prompts computed once for its G right-padded completions: the function of the
        cache-free forward on the B * G concatenated rows ``prompt + completion`` (positions
        ``cumsum(mask) - 1``), split at Q (:mod:`grpojax.models.shared_prefix`). Completion row ``b * G + g``
        is ``completion_BGC[b, g]``; ``remat`` applies as in the cache-free forward."""
        return shared_prefix_hidden(self, prompt_BQ, prompt_mask_BQ, completion_BGC, completion_mask_BGC,
                                    remat_policy=REMAT_POLICIES[self.remat])

    def __call__(self, tokens_BT: Array, positions_BT: Array | None = None, *,
                 attn_mask_BT: Array | None = None, segment_ids_BT: Array | None = None,
                 cache: list | None = None, cache_pos: Array | None = None, return_hidden: bool = False):
        chex.assert_rank(tokens_BT, 2)
        B, T = tokens_BT.shape
        steps_T = jnp.arange(T, dtype=jnp.int32)
        mask_rows, shared = B, False  # rows of attn_mask_BT: the b prompts with a shared-prompt cache
        if cache is None:
            S = T
            if positions_BT is None:
                positions_BT = jnp.broadcast_to(steps_T[None, :], (B, T))
            offset = 0
        else:
            if cache_pos is None:
                raise ValueError("Qwen: cache_pos is required when a cache is given")
            if segment_ids_BT is not None:
                raise ValueError("Qwen: segment_ids_BT (packed rows) is for cache-free forwards only")
            S, prompts = cache_geometry(cache, self.config)
            mask_rows, shared = (B, False) if prompts is None else (prompts, True)
            cache_pos = jnp.asarray(cache_pos, jnp.int32)
            if positions_BT is None:
                positions_BT = jnp.broadcast_to(cache_pos + steps_T[None, :], (B, T))
            offset = cache_pos
        chex.assert_shape(positions_BT, (B, T))
        if segment_ids_BT is not None:
            if attn_mask_BT is not None:
                raise ValueError("Qwen: pass segment_ids_BT or attn_mask_BT, not both")
            chex.assert_shape(segment_ids_BT, (B, T))
            kv_segment_BS = segment_ids_BT.astype(jnp.int32)
        elif attn_mask_BT is not None:
            if attn_mask_BT.shape != (mask_rows, S):
                raise ValueError(f"Qwen: attn_mask_BT has shape {attn_mask_BT.shape}, expected {(mask_rows, S)} (token "
                                 "length / cache length S / [prompts, prompt length] of a shared-prompt cache)")
            kv_segment_BS = attn_mask_BT.astype(bool).astype(jnp.int32)
        else:
            kv_segment_BS = jnp.ones((mask_rows, S), jnp.int32)
        # the new tokens sit at key slots [offset, offset + T): their segments are those slots'
        if cache is None:
            q_segment_BT = kv_segment_BS
        elif shared:  # generated tokens are real: they read every real prompt token
            q_segment_BT = jnp.ones((B, T), jnp.int32)
        else:
            q_segment_BT = jax.lax.dynamic_slice_in_dim(kv_segment_BS, offset, T, axis=1)
        mask = (q_segment_BT, kv_segment_BS, offset)

        cos_BTJ, sin_BTJ = rope_angles(positions_BT, self.config.head_dim, self.config.rope_theta)
        x_BTD = pin(jnp.take(self.embed[...], tokens_BT, axis=0).astype(self.dtype), _X_BTD)
        call = _call_block
        if self.remat != "none" and cache is None:
            call = _remat_block(REMAT_POLICIES[self.remat])
        args = (cos_BTJ, sin_BTJ, mask)
        if self.config.scan_layers:
            x_BTD, new_cache = self._scan_layers(call, x_BTD, args, cache, cache_pos)
        else:
            new_cache = None if cache is None else []
            for i, layer in enumerate(self.layers):
                x_BTD, layer_cache = call(layer, x_BTD, *args, None if cache is None else cache[i], cache_pos)
                if cache is not None:
                    new_cache.append(layer_cache)
        hidden_BTD = self.final_norm(x_BTD)
        out = hidden_BTD if return_hidden else self.logits_from_hidden(hidden_BTD)
        return out if cache is None else (out, new_cache)
