"""LoRA adapters on any subset of a Qwen's projections, built from flax's own ``nnx.LoRA``.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (arXiv 2106.09685). A projection
``y = x W`` (W: ``[in, out]``, flattened over lettered axes) becomes

    y = x W + (alpha / r) * (x A) B,     A: [in, r] (he-uniform init),  B: [r, out] (zeros)

so the adapted model equals the base model at initialisation; the scaling alpha / r is PEFT's.
A and B are ``nnx.LoRAParam`` variables, so an optimizer restricted with ``wrt=nnx.LoRAParam``
(``nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)``) updates only the adapters. :func:`merge_lora` folds
``(alpha / r) A B`` into W and removes the adapters (then :func:`grpojax.models.to_hf` exports it).

Example::

    model = from_hf("Qwen/Qwen2.5-0.5B-Instruct")
    apply_lora(model, ("q", "k", "v", "o", "gate", "up", "down"), rank=8, alpha=32, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-5), wrt=nnx.LoRAParam)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import jax.numpy as jnp
from flax import nnx

from grpojax.models.qwen import Dense, Qwen, stack_layers

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_ALIASES = {f"{t}_proj": t for t in LORA_TARGETS}
LoRAParam = nnx.LoRAParam


def _targets(targets: Iterable[str]) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = (targets,)
    out = []
    for t in targets:
        name = _ALIASES.get(t, t)
        if name not in LORA_TARGETS:
            raise ValueError(f"unknown LoRA target {t!r}; valid targets: {LORA_TARGETS} "
                             "(or the HF names q_proj, ..., down_proj)")
        out.append(name)
    if not out:
        raise ValueError(f"no LoRA targets given; choose from {LORA_TARGETS}")
    return tuple(dict.fromkeys(out))


def _dense(layer, target: str) -> Dense:
    return getattr(layer.mlp if target in ("gate", "up", "down") else layer.attn, target)


def _new_lora(dense: Dense, rank: int, param_dtype, rngs: nnx.Rngs) -> nnx.LoRA:
    in_f, out_f = math.prod(dense.in_shape), math.prod(dense.out_shape)
    return nnx.LoRA(in_f, rank, out_f, dtype=dense.dtype, param_dtype=param_dtype, rngs=rngs,
                    a_metadata=dict(out_sharding=(None, None), eager_sharding=False),
                    b_metadata=dict(out_sharding=(None, None), eager_sharding=False))


def apply_lora(model: Qwen, targets: Iterable[str] = LORA_TARGETS, *, rank: int, alpha: float,
               rngs: nnx.Rngs | None = None, param_dtype=jnp.float32) -> Qwen:
    """Attaches a flax ``nnx.LoRA`` (rank ``rank``, scale ``alpha / rank``) to each targeted projection
    of every layer, in place; returns ``model``.

    Args:
      model: a :class:`Qwen` (also the ``backbone`` of a reward model).
      targets: subset of ``("q", "k", "v", "o", "gate", "up", "down")`` (HF ``*_proj`` names accepted).
      rank: r > 0.
      alpha: LoRA alpha; the update is scaled by alpha / r as in PEFT.
      rngs: key source for A (default ``nnx.Rngs(0)``).
      param_dtype: dtype of A and B.
    """
    targets = _targets(targets)
    if int(rank) <= 0:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
    rank = int(rank)
    rngs = nnx.Rngs(0) if rngs is None else rngs
    scanned = model.config.scan_layers
    layers = [model.layers] * model.config.num_layers if scanned else list(model.layers)
    if any(_dense(layers[0], t).lora is not None for t in targets):
        raise ValueError("apply_lora: the model already has LoRA adapters (merge_lora first)")
    # layer-major key order, so a scan_layers model gets the same adapters as a per-layer one
    made = [[_new_lora(_dense(layer, t), rank, param_dtype, rngs) for t in targets] for layer in layers]
    for j, t in enumerate(targets):
        per_layer = [row[j] for row in made]
        owners = [_dense(model.layers, t)] if scanned else [_dense(layer, t) for layer in layers]
        loras = [stack_layers(per_layer)] if scanned else per_layer
        for dense, lora in zip(owners, loras):
            dense.lora = lora
            dense.lora_scale = float(alpha) / rank
    return model


def lora_dense_modules(model: nnx.Module) -> list[Dense]:
    """The projections of ``model`` that carry an adapter."""
    return [m for _, m in nnx.iter_graph(model) if isinstance(m, Dense) and m.lora is not None]


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds every adapter into its base weight, ``W <- W + (alpha / r) A B`` (reshaped to W's lettered
    axes, computed in float32, stored in W's dtype), and removes the adapters. In place; returns model."""
    denses = lora_dense_modules(model)
    if not denses:
        raise ValueError("merge_lora: the model has no LoRA adapters")
    for dense in denses:
        a = dense.lora.lora_a[...].astype(jnp.float32)  # [in, r] or stacked [L, in, r]
        b = dense.lora.lora_b[...].astype(jnp.float32)
        w = dense.w[...]
        delta = (dense.lora_scale * jnp.matmul(a, b)).reshape(w.shape)
        dense.w[...] = (w.astype(jnp.float32) + delta).astype(w.dtype)
        dense.lora = None
        dense.lora_scale = 1.0
    return model


def lora_params(model: nnx.Module) -> nnx.State:
    """Only the adapter parameters (``nnx.LoRAParam``): what a LoRA optimizer updates / saves."""
    return nnx.state(model, nnx.LoRAParam)
