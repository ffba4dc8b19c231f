"""Group-robust GRPO in the GRPO step (ALGORITHMS.md 3; the weights: ``grpojax.losses.robust_grpo``).

With ``GRPOSettings.group_robust`` the step's batch also holds, per completion, ``group_id_B`` (int32 group
of its prompt) and ``score_B`` (float32 score, NaN = not applicable; :mod:`grpojax.rollout.groups` builds
both). :func:`step_weights` updates alpha (``TrainState.robust``, checkpointed with the state) from the
whole batch on the first update of a rollout only (with ``num_iterations`` > 1 the later updates reuse the
alpha of that rollout), then gives each completion its loss weight ``w_g``; micro-batches and devices see
the weights of the whole batch. :func:`step_metrics`: ``robust/alpha``, ``robust/weight``,
``robust/reward`` ([M]: the groups' mean scores in the rollout, NaN where absent) and
``robust/worst_group_reward`` (the lowest of those).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from grpojax.losses.robust_grpo import RobustGRPOAux, robust_grpo_weights


@dataclasses.dataclass(frozen=True)
class RobustGRPOSettings:
    """Static (hashable) settings of the step: M groups with ``group_sizes`` training prompts each, the
    step size ``eta_alpha`` and the trade-off ``chi`` (``grpo.robust``)."""

    group_sizes: tuple[int, ...]
    eta_alpha: float
    chi: float

    def weights(self):
        return robust_grpo_weights(len(self.group_sizes), group_sizes_M=list(self.group_sizes),
                                   eta=self.eta_alpha, chi=self.chi)


def step_weights(settings: RobustGRPOSettings, robust_state, batch: dict, update: bool):
    """``(weights_B, new_state, aux)``: alpha updated on ``batch`` when ``update`` (else kept), and each
    row's loss weight from the resulting alpha."""
    rw = settings.weights()
    if update:
        return rw.update(batch["score_B"], batch["group_id_B"], robust_state)
    mu = np.asarray(settings.group_sizes, np.float64) / sum(settings.group_sizes)
    alpha = jnp.exp(robust_state.log_alpha_M)
    weights_M = ((1.0 - settings.chi) * mu + settings.chi * alpha) / mu
    aux = RobustGRPOAux(alpha_M=alpha, weights_M=weights_M, score_M=jnp.full(alpha.shape, jnp.nan),
                        count_M=jnp.zeros(alpha.shape))
    return weights_M[batch["group_id_B"]].astype(jnp.float32), robust_state, aux


def step_metrics(aux: RobustGRPOAux) -> dict:
    present = aux.count_M > 0
    worst = jnp.where(jnp.any(present), jnp.min(jnp.where(present, aux.score_M, jnp.inf)), jnp.nan)
    return {"robust/alpha": aux.alpha_M, "robust/weight": aux.weights_M, "robust/reward": aux.score_M,
            "robust/worst_group_reward": worst}
