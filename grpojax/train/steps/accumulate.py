"""Gradient accumulation inside one jitted step, and the optimizer update that follows it.

``accumulate(loss_fn, params, batch, num_micro)`` splits every array of ``batch`` along axis 0 into
``num_micro`` equal micro-batches and runs ``lax.scan`` over them, summing losses and gradients. The
``loss_fn`` returns its micro-batch's *contribution* to the step loss, so each loss decides its own
normaliser: the ``dapo`` GRPO loss divides by the token count of the whole step (identical loss and
gradient whatever ``num_micro`` is), per-micro-batch means divide by ``num_micro`` themselves.

Metrics declare how they combine over micro-batches, so that a step logs the value it would log with one
micro-batch (``micro_batch_size = batch_size``):

    Ratio(num, den)   Σ num / max(Σ den, 1)   token-weighted means: num = Σ m x, den = Σ m
    Sum(x)            Σ x                     counts, moments
    Max(x)            max x                   maxima (e.g. the sampler / trainer log-prob mismatch)
    Rows(x_B...)      x of every row          per-row outputs, concatenated back to the batch's rows
    a bare scalar     mean over micro-batches only right when every micro-batch weighs the same
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from grpojax.train.steps.state import TrainState


class Ratio(NamedTuple):
    """A metric ``Σ num / max(Σ den, 1)`` over the micro-batches (a masked mean: ``num = Σ m x``, ``den = Σ m``)."""

    num: jax.Array
    den: jax.Array


class Sum(NamedTuple):
    """A metric summed over the micro-batches."""

    value: jax.Array


class Max(NamedTuple):
    """A metric maximised over the micro-batches."""

    value: jax.Array


class Rows(NamedTuple):
    """A per-row output ``[b, ...]`` of a micro-batch; the step gets ``[B, ...]`` in the batch's row order."""

    value: jax.Array


_KINDS = (Ratio, Sum, Max, Rows)


def ratio_of(mean, count) -> Ratio:
    """The :class:`Ratio` of a masked mean already reduced as ``Σ m x / max(Σ m, 1)`` over ``count = Σ m``."""
    return Ratio(mean * count, count)


def split_micro(batch, num_micro: int):
    """``[B, ...] -> [num_micro, B // num_micro, ...]`` for every leaf (B must divide evenly)."""

    def one(x):
        if x.shape[0] % num_micro:
            raise ValueError(f"batch dimension {x.shape[0]} is not divisible by "
                             f"num_micro={num_micro}")
        return x.reshape((num_micro, x.shape[0] // num_micro) + x.shape[1:])

    return jax.tree.map(one, batch)


def _carry_init(metrics_shape: dict) -> dict:
    """Identity of each combine: 0 for sums / ratios / means, -inf for maxima; rows are scan outputs."""
    init = {}
    for k, v in metrics_shape.items():
        if isinstance(v, Rows):
            continue
        if isinstance(v, Max):
            init[k] = Max(jnp.full(v.value.shape, -jnp.inf, v.value.dtype))
        else:
            init[k] = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v)
    return init


def _combine(acc, new):
    if isinstance(new, Max):
        return Max(jnp.maximum(acc.value, new.value))
    return jax.tree.map(jnp.add, acc, new)


def _finish(metrics: dict, num_micro: int) -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, Ratio):
            out[k] = v.num / jnp.maximum(v.den, 1.0)
        elif isinstance(v, (Sum, Max, Rows)):
            out[k] = v.value
        else:
            out[k] = jax.tree.map(lambda m: m / num_micro, v) if num_micro > 1 else v
    return out


def accumulate(loss_fn: Callable, params, batch, num_micro: int = 1):
    """Sum ``loss_fn(params, micro) -> (loss, metrics)`` and its gradient over micro-batches.

    ``metrics`` is a dict whose values are :class:`Ratio`, :class:`Sum`, :class:`Max`, :class:`Rows` or bare
    scalars (averaged over micro-batches), combined as the module docstring says. Returns
    ``(loss, grads, metrics)`` with every metric reduced to its final array.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_micro == 1:
        (loss, metrics), grads = grad_fn(params, batch)
        return loss, grads, _finish(metrics, 1)
    micro = split_micro(batch, num_micro)
    first = jax.tree.map(lambda x: x[0], micro)
    (_, metrics_shape), _ = jax.eval_shape(grad_fn, params, first)
    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params), _carry_init(metrics_shape))

    def body(carry, mb):
        loss_acc, grad_acc, met_acc = carry
        (loss, metrics), grads = grad_fn(params, mb)
        met_acc = {k: _combine(met_acc[k], metrics[k]) for k in met_acc}
        rows = {k: v.value for k, v in metrics.items() if isinstance(v, Rows)}
        return (loss_acc + loss, jax.tree.map(jnp.add, grad_acc, grads), met_acc), rows

    (loss, grads, metrics), rows = jax.lax.scan(body, zeros, micro)
    metrics = {**metrics, **{k: Rows(v.reshape((-1,) + v.shape[2:])) for k, v in rows.items()}}
    return loss, grads, _finish(metrics, num_micro)


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
