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


def all_finite(tree) -> jax.Array:
    """True (a bool scalar) when every element of every floating leaf of ``tree`` is finite."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
             if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def apply_gradients(state: TrainState, tx: optax.GradientTransformation, grads, loss,
                    **extra) -> tuple[TrainState, dict]:
    """One optimizer update, scaled by ``state.lr_scale`` (the host-side LR-on-plateau multiplier), or
    none at all when the step is not finite.

    A step whose loss, gradients or updates hold a NaN / inf is skipped inside the jitted step: the
    returned state is the input state, leaf for leaf (params, optimizer state with its step count and
    Adam moments, ``step``, and the ``extra`` fields such as the robust weights), so nothing non-finite
    ever reaches the train state or a checkpoint. ``state.step`` counts *applied* updates (the runner's
    loop step, which names checkpoints and metric rows, counts attempted ones). The metric
    ``nonfinite`` is 1.0 for a skipped step and 0.0 otherwise (the runner turns it into
    ``train/nonfinite_steps`` and stops after ``train.max_bad_steps`` in a row)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if state.lr_scale is not None:
        updates = jax.tree.map(lambda u: (u * state.lr_scale).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    ok = all_finite((loss, grads, updates))
    new = dict(step=state.step + 1, params=params, opt_state=opt_state, **extra)
    old = {k: getattr(state, k) for k in new}
    kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)
    return state._replace(**kept), {"grad_norm": optax.tree.norm(grads),
                                    "nonfinite": 1.0 - ok.astype(jnp.float32)}
