"""Gradient accumulation inside one jitted step, and the optimizer update that follows it.

``accumulate(loss_fn, params, batch, num_micro)`` splits every array of ``batch`` along axis 0 into
``num_micro`` equal micro-batches and runs ``lax.scan`` over them, summing losses and gradients. The
``loss_fn`` returns its micro-batch's *contribution* to the step loss, so each loss decides its own
normaliser: the ``dapo`` GRPO loss divides by the token count of the whole step (identical loss and
gradient whatever ``num_micro`` is), per-micro-batch means divide by ``num_micro`` themselves.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from grpojax.train.state import TrainState


def split_micro(batch, num_micro: int):
    """``[B, ...] -> [num_micro, B // num_micro, ...]`` for every leaf (B must divide evenly)."""

    def one(x):
        if x.shape[0] % num_micro:
            raise ValueError(f"batch dimension {x.shape[0]} is not divisible by "
                             f"num_micro={num_micro}")
        return x.reshape((num_micro, x.shape[0] // num_micro) + x.shape[1:])

    return jax.tree.map(one, batch)


def accumulate(loss_fn: Callable, params, batch, num_micro: int = 1):
    """Sum ``loss_fn(params, micro) -> (loss, metrics)`` and its gradient over micro-batches.

    Returns ``(loss, grads, metrics)`` where metrics (a dict of scalars) are averaged over micro-batches.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_micro == 1:
        (loss, metrics), grads = grad_fn(params, batch)
        return loss, grads, metrics
    micro = split_micro(batch, num_micro)
    first = jax.tree.map(lambda x: x[0], micro)
    (_, metrics_shape), _ = jax.eval_shape(grad_fn, params, first)
    zeros = (jnp.zeros((), jnp.float32),
             jax.tree.map(jnp.zeros_like, params),
             jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape))

    def body(carry, mb):
        loss_acc, grad_acc, met_acc = carry
        (loss, metrics), grads = grad_fn(params, mb)
        return (loss_acc + loss, jax.tree.map(jnp.add, grad_acc, grads),
                jax.tree.map(jnp.add, met_acc, metrics)), None

    (loss, grads, metrics), _ = jax.lax.scan(body, zeros, micro)
    metrics = jax.tree.map(lambda m: m / num_micro, metrics)
    return loss, grads, metrics


def apply_gradients(state: TrainState, tx: optax.GradientTransformation, grads, loss,
                    **extra) -> tuple[TrainState, dict]:
    """One optimizer update, scaled by ``state.lr_scale`` (the host-side LR-on-plateau multiplier)."""
    del loss
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if state.lr_scale is not None:
        updates = jax.tree.map(lambda u: (u * state.lr_scale).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    new_state = state._replace(step=state.step + 1, params=params, opt_state=opt_state, **extra)
    return new_state, {"grad_norm": optax.tree.norm(grads)}
