"""Optimizers from plain values: an ``optax.chain`` of clipping, AdamW and a schedule, and LR-on-plateau.

    tx = make_optimizer(1e-5, total_steps=1000, schedule="cosine", warmup_steps=50, max_grad_norm=1.0)

LR-on-plateau (the GR-IPO paper's schedule) is host-side: :class:`Plateau` watches the evaluation loss and
counts cuts; the train state's ``lr_scale = factor ** cuts`` multiplies every update inside the jitted
step, and the robust step size is cut alongside (``eta_alpha * eta_alpha_decay_on_lr_cut ** cuts``,
ALGORITHMS.md 2.3). Its counters are plain JSON saved with the data position, so a resumed run continues them exactly.
"""

from __future__ import annotations

import dataclasses
import math

import optax

SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass
class Plateau:
    """``update(eval_loss) -> cut?``: after ``patience`` evaluations without an improvement of more than
    ``min_delta`` over the best loss, one more cut (and the count of bad evaluations restarts)."""

    factor: float = 0.1
    patience: int = 1
    min_delta: float = 0.0
    best: float = math.inf
    bad: int = 0
    cuts: int = 0

    def update(self, value: float) -> bool:
        if value < self.best - self.min_delta:
            self.best, self.bad = float(value), 0
            return False
        self.bad += 1
        if self.bad >= self.patience:
            self.cuts, self.bad = self.cuts + 1, 0
            return True
        return False

    @property
    def scale(self) -> float:
        return self.factor ** self.cuts

    def state(self) -> dict:
        return {"best": self.best if math.isfinite(self.best) else None, "bad": self.bad, "cuts": self.cuts}

    def restore(self, d: dict) -> Plateau:
        self.best = math.inf if d.get("best") is None else float(d["best"])
        self.bad, self.cuts = int(d.get("bad", 0)), int(d.get("cuts", 0))
        return self


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
                   final_fraction: float = 0.0) -> optax.GradientTransformation:
    """``clip_by_global_norm -> adamw(schedule)`` as one ``optax.chain``."""
    parts = []
    if max_grad_norm is not None and max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(max_grad_norm))
    sched = make_schedule(learning_rate, total_steps=total_steps, schedule=schedule,
                          warmup_steps=warmup_steps, final_fraction=final_fraction)
    parts.append(optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts)
