"""Optimizers from plain values: an ``optax.chain`` of clipping, AdamW and a schedule.

    tx = make_optimizer(1e-5, total_steps=1000, schedule="cosine", warmup_steps=50, max_grad_norm=1.0)

With ``plateau=PlateauSettings(...)`` a ``optax.contrib.reduce_on_plateau`` stage is appended; its
``update`` then needs ``value=<loss>``, and :func:`plateau_scale` reads the current LR multiplier out of
the optimizer state (the group-robust runs cut the robust step size alongside, ALGORITHMS.md 2.3).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class PlateauSettings:
    """LR ÷ (1/factor) after ``patience`` updates without improvement (optax reduce_on_plateau)."""

    factor: float = 0.1
    patience: int = 10
    rtol: float = 1e-4
    cooldown: int = 0
    accumulation_size: int = 1
    min_scale: float = 0.0


def make_schedule(learning_rate: float, *, total_steps: int, schedule: str = "constant",
                  warmup_steps: int = 0, final_fraction: float = 0.0) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps``, then constant / linear-to-final / cosine-to-final."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; valid choices: {', '.join(SCHEDULES)}")
    if total_steps < 1 or warmup_steps < 0 or learning_rate < 0:
        raise ValueError(f"need total_steps >= 1, warmup_steps >= 0, learning_rate >= 0; got "
                         f"{total_steps}, {warmup_steps}, {learning_rate}")
    decay_steps = max(total_steps - warmup_steps, 1)
    final = learning_rate * final_fraction
    if schedule == "constant":
        main = optax.constant_schedule(learning_rate)
    elif schedule == "linear":
        main = optax.linear_schedule(learning_rate, final, decay_steps)
    else:
        main = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final_fraction)
    if warmup_steps == 0:
        return main
    warm = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(learning_rate: float, *, total_steps: int, schedule: str = "constant",
                   warmup_steps: int = 0, weight_decay: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, eps: float = 1e-8, max_grad_norm: float | None = 1.0,
                   final_fraction: float = 0.0,
                   plateau: PlateauSettings | None = None) -> optax.GradientTransformationExtraArgs:
    """``clip_by_global_norm -> adamw(schedule) [-> reduce_on_plateau]`` as one ``optax.chain``."""
    parts = []
    if max_grad_norm is not None and max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    sched = make_schedule(learning_rate, total_steps=total_steps, schedule=schedule,
                          warmup_steps=warmup_steps, final_fraction=final_fraction)
    parts.append(optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    if plateau is not None:
        parts.append(optax.contrib.reduce_on_plateau(
            factor=plateau.factor, patience=plateau.patience, rtol=plateau.rtol,
            cooldown=plateau.cooldown, accumulation_size=plateau.accumulation_size,
            min_scale=plateau.min_scale))
    return optax.chain(*parts)


def plateau_scale(opt_state) -> jax.Array:
    """The LR multiplier of the reduce-on-plateau stage in ``opt_state`` (1.0 if there is none)."""
    leaves = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau_state)
              if _is_plateau_state(s)]
    if not leaves:
        return jnp.asarray(1.0, jnp.float32)
    return jnp.asarray(leaves[0].scale, jnp.float32)


def num_cuts(scale: jax.Array, factor: float) -> jax.Array:
    """How many times the LR was multiplied by ``factor`` to reach ``scale`` (rounded)."""
    return jnp.round(jnp.log(jnp.maximum(scale, 1e-30)) / math.log(factor))


def _is_plateau_state(x) -> bool:
    return isinstance(x, optax.contrib.ReduceLROnPlateauState)
