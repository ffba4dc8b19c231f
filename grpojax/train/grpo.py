"""The pure GRPO train step ``(state, batch, rng) -> (state, metrics)``.

The batch is one optimizer step's worth of scored rollouts (ALGORITHMS.md 1.3-1.4):

    prompt_BP, prompt_mask_BP           left-padded prompts (one row per completion)
    completion_BL, completion_mask_BL   right-padded completions; mask 1 up to and including EOS
    old_logp_BL                         log-probs under the policy that sampled (the sampler's)
    ref_logp_BL                         log-probs under the frozen reference (only when beta > 0)
    advantages_B                        group-relative advantages, one per completion

``num_micro`` micro-batches are accumulated inside the step; with ``loss_type="dapo"`` the token
normaliser is the active-token count of the whole batch, so the update is independent of ``num_micro``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from grpojax.losses import grpo_loss, masked_mean
from grpojax.train.accumulate import accumulate, apply_gradients
from grpojax.train.forward import completion_logprobs
from grpojax.train.state import TrainState, merge_model


@dataclasses.dataclass(frozen=True)
class GRPOSettings:
    """Static (hashable) options of the GRPO loss; names follow TRL's GRPOConfig."""

    loss_type: str = "dapo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    delta: float | None = None
    beta: float = 0.04
    kl_estimator: str = "k3"
    importance_sampling_level: str = "token"
    temperature: float = 1.0
    max_completion_length: int | None = None
    logprob_chunk: int | None = 128


def grpo_step(state: TrainState, batch: dict, rng: jax.Array, *, graphdef, tx,
              settings: GRPOSettings, num_micro: int = 1):
    """One GRPO optimizer update on a batch of scored completions. ``rng`` is unused (no dropout)."""
    del rng
    num_items = jnp.maximum(jnp.sum(batch["completion_mask_BL"].astype(jnp.float32)), 1.0)

    def loss_fn(params, mb):
        model = merge_model(graphdef, params, state.frozen)
        out = completion_logprobs(model, mb["prompt_BP"], mb["prompt_mask_BP"],
                                  mb["completion_BL"], mb["completion_mask_BL"],
                                  temperature=settings.temperature,
                                  chunk_size=settings.logprob_chunk)
        mask = mb["completion_mask_BL"].astype(jnp.float32)
        loss, aux = grpo_loss(
            out.logp_BL, mb["old_logp_BL"], mb.get("ref_logp_BL"), mb["advantages_B"], mask,
            loss_type=settings.loss_type, epsilon_low=settings.epsilon,
            epsilon_high=settings.epsilon_high, delta=settings.delta, beta=settings.beta,
            kl_estimator=settings.kl_estimator,
            importance_sampling_level=settings.importance_sampling_level,
            max_completion_length=settings.max_completion_length, num_items=num_items)
        if settings.loss_type != "dapo":
            loss = loss / num_micro
        metrics = {
            "kl": aux.kl,
            "entropy": masked_mean(out.entropy_BL, mask),
            "clip_ratio/low_mean": aux.clip_ratio_low_mean,
            "clip_ratio/high_mean": aux.clip_ratio_high_mean,
            "clip_ratio/region_mean": aux.clip_ratio_region_mean,
            "logp_mismatch_max": jnp.max(jnp.abs(out.logp_BL - mb["old_logp_BL"]) * mask),
        }
        return loss, metrics

    loss, grads, metrics = accumulate(loss_fn, state.params, batch, num_micro)
    state, opt_metrics = apply_gradients(state, tx, grads, loss)
    return state, {"loss": loss, **metrics, **opt_metrics}
