"""The training state: one pytree that holds everything a step reads and writes.

``TrainState`` is a NamedTuple (a pytree, so it jits, shards, donates and checkpoints as is):

    step       int32 scalar, optimizer updates done
    params     nnx.State of the trainable variables (all ``nnx.Param``, or only ``nnx.LoRAParam``)
    frozen     nnx.State of every other model variable (base weights under LoRA; empty otherwise)
    opt_state  optax state over ``params`` only (LoRA runs keep no optimizer state for the base)
    rng        PRNG key, split by the loop each step
    robust     group-robust weights state (GR-DPO / GR-IPO) or None
    lr_scale   float32 scalar multiplying every update: the LR-on-plateau factor (1.0 until a cut)

The model's ``GraphDef`` is static structure, not state: steps close over it and rebuild the module with
``nnx.merge(graphdef, params, frozen)`` inside the traced function.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class TrainState(NamedTuple):
    step: jax.Array
    params: Any
    frozen: Any
    opt_state: Any
    rng: jax.Array
    robust: Any = None
    lr_scale: Any = None


def trainable_filter(lora: bool):
    """``nnx.LoRAParam`` when training LoRA adapters only, else every ``nnx.Param``."""
    return nnx.LoRAParam if lora else nnx.Param


def split_model(model: nnx.Module, lora: bool = False):
    """``(graphdef, trainable_state, frozen_state)`` of an NNX model."""
    graphdef, params, frozen = nnx.split(model, trainable_filter(lora), ...)
    return graphdef, params, frozen


def merge_model(graphdef, params, frozen) -> nnx.Module:
    """Inverse of :func:`split_model` (cheap under jit: it only rebuilds Python objects)."""
    return nnx.merge(graphdef, params, frozen)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation, rng: jax.Array, *,
                       lora: bool = False, robust: Any = None):
    """Split ``model`` and build the initial :class:`TrainState`; returns ``(graphdef, state)``."""
    graphdef, params, frozen = split_model(model, lora)
    if not jax.tree.leaves(params):
        kind = "nnx.LoRAParam (did you apply LoRA?)" if lora else "nnx.Param"
        raise ValueError(f"the model has no trainable variables of type {kind}")
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                       opt_state=tx.init(params), rng=rng, robust=robust,
                       lr_scale=jnp.ones((), jnp.float32))
    return graphdef, state


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
