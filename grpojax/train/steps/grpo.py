"""The pure GRPO train step ``(state, batch, rng) -> (state, metrics)``.

The batch is one optimizer step's worth of scored rollouts (ALGORITHMS.md 1.3-1.4):

    prompt_BQ, prompt_mask_BQ           left-padded prompts (one row per completion)
    completion_BC, completion_mask_BC   right-padded completions; mask 1 up to and including EOS
    advantages_B                        group-relative advantages, one per completion
    ref_logp_BC                         log-probs under the frozen reference (only when beta > 0)
    old_logp_BC                         optional: the trainer's log-probs before the rollout's first update
    sampler_logp_BC                     optional: the sampler's log-probs (logged, never in the loss)
    group_id_B, score_B                 group-robust GRPO only (``settings.group_robust``;
                                        ``grpojax.train.steps.robust_grpo``): each completion's group, score

Old log-probs (ALGORITHMS.md 1.4): without ``old_logp_BC`` the step is on-policy, ``old_logp =
stop_gradient(logp)`` of this very forward, so the ratio is exactly 1 whatever the dtype (mu = 1, and
the first of mu > 1 updates on a rollout). The sampler's log-probs are NOT the old log-probs: in bf16
the KV-cache decode and the training forward round differently (~1e-3), which would make the ratio differ
from 1 and switch the clip on. With ``settings.emit_logp`` the step returns ``old_logp_BC`` (this forward's
log-probs, before the update) for the later updates on the same rollout (TRL computes them once per
rollout with the current params likewise). ``sampler/logp_max_abs_diff`` / ``_mean_abs_diff`` log the
sampler / trainer mismatch of this forward given ``sampler_logp_BC`` (the task logs the first update's).
``settings.sampler_is_cap`` corrects for it (TRL's ``vllm_importance_sampling_correction``, token level,
truncated): every per-token loss is weighted by ``min(exp(old_logp - sampler_logp), cap)``
(``sampler_logp_BC`` required).

With ``settings.shared_prefix`` (``grpo.shared_prefix``) the forward computes each prompt once for its
``num_generations`` consecutive rows (:func:`grpojax.train.steps.forward.grouped_completion_logprobs`); the
log-probs, loss and gradients are those of the concatenated forward. A rollout is prompt-major by
construction (the sampler repeats each prompt G times; dynamic sampling keeps whole groups). The step also
checks it: a batch whose groups hold different prompts gives ``shared_prefix/mismatch`` = 1 and a
non-finite loss, so the update is skipped (``nonfinite`` = 1) rather than trained on the wrong prompts.

``num_micro`` micro-batches are accumulated inside the step; with ``loss_type="dapo"`` the token
normaliser is the active-token count of the whole batch, so the update is independent of ``num_micro``.
Metrics are those of the whole step whatever ``num_micro`` (``grpojax.train.steps.accumulate``): ``kl``,
``entropy`` and ``clip_ratio/*`` are token-weighted over every micro-batch, the maximum a maximum.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from grpojax.losses import grpo_loss, masked_sum
from grpojax.train.steps.accumulate import Max, Ratio, Rows, accumulate, apply_gradients, ratio_of
from grpojax.train.steps.forward import completion_logprobs, grouped_completion_logprobs
from grpojax.train.steps.robust_grpo import RobustGRPOSettings, step_metrics, step_weights
from grpojax.train.steps.state import TrainState, merge_model


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
    emit_logp: bool = False  # return this forward's log-probs as ``old_logp_BC`` (on-policy steps only)
    sampler_is_cap: float | None = None  # truncated IS correction min(pi_old / pi_sampler, cap); None = off
    use_bias_correction_kl: bool = False  # the KL term times the differentiated ratio (TRL / DeepSeek-V3.2)
    group_robust: RobustGRPOSettings | None = None  # group-robust GRPO (alpha in ``state.robust``); None = off
    shared_prefix: bool = False  # each prompt computed once for its num_generations rows (module docstring)
    num_generations: int | None = None  # G: consecutive rows per prompt (needed by shared_prefix)

    def __post_init__(self):
        if self.shared_prefix and not self.num_generations:
            raise ValueError("GRPOSettings: shared_prefix needs num_generations (rows per prompt)")


def grpo_step(state: TrainState, batch: dict, rng: jax.Array, *, graphdef, tx,
              settings: GRPOSettings, num_micro: int = 1):
    """One GRPO optimizer update on a batch of scored completions (module docstring); ``rng`` is unused
    (no dropout). Returns ``(state, metrics)``; metrics hold ``old_logp_BC`` [B, L] when
    ``settings.emit_logp`` and the batch has no ``old_logp_BC``."""
    del rng
    on_policy = "old_logp_BC" not in batch
    num_items = jnp.maximum(jnp.sum(batch["completion_mask_BC"].astype(jnp.float32)), 1.0)
    robust_state, robust_metrics = state.robust, {}
    if settings.group_robust is not None:  # alpha from the whole batch (a rollout's first update), w_g per row
        weights_B, robust_state, robust_aux = step_weights(settings.group_robust, state.robust, batch,
                                                           update=on_policy)
        batch = {**batch, "robust_weight_B": weights_B}
        robust_metrics = step_metrics(robust_aux)

    def loss_fn(params, mb):
        model = merge_model(graphdef, params, state.frozen)
        args = (model, mb["prompt_BQ"], mb["prompt_mask_BQ"], mb["completion_BC"], mb["completion_mask_BC"])
        kw = dict(temperature=settings.temperature, chunk_size=settings.logprob_chunk)
        shared = None
        if settings.shared_prefix:
            out, shared = grouped_completion_logprobs(*args, group=settings.num_generations, **kw)
        else:
            out = completion_logprobs(*args, **kw)
        mask = mb["completion_mask_BC"].astype(jnp.float32)
        old_BC = jax.lax.stop_gradient(out.logp_BC) if on_policy else mb["old_logp_BC"]
        weights = is_w = None
        if settings.sampler_is_cap is not None:  # the sampler drew the tokens, pi_old is the trainer's
            weights = is_w = jnp.minimum(jnp.exp(old_BC - mb["sampler_logp_BC"]), settings.sampler_is_cap)
        if "robust_weight_B" in mb:  # group-robust GRPO: every token of completion i weighted by w_g(i)
            w_BC = jnp.broadcast_to(mb["robust_weight_B"][:, None], mask.shape)
            weights = w_BC if weights is None else weights * w_BC
        loss, aux = grpo_loss(
            out.logp_BC, None if on_policy else mb["old_logp_BC"], mb.get("ref_logp_BC"), mb["advantages_B"],
            mask, loss_type=settings.loss_type, epsilon=settings.epsilon,
            epsilon_high=settings.epsilon_high, delta=settings.delta, beta=settings.beta,
            kl_estimator=settings.kl_estimator,
            importance_sampling_level=settings.importance_sampling_level,
            max_completion_length=settings.max_completion_length, num_items=num_items, token_weights_NT=weights,
            use_bias_correction_kl=settings.use_bias_correction_kl)
        if settings.loss_type != "dapo":
            loss = loss / num_micro
        n = aux.num_tokens
        metrics = {
            "kl": ratio_of(aux.kl, n),
            "entropy": Ratio(masked_sum(out.entropy_BC, mask), n),
            "clip_ratio/low_mean": ratio_of(aux.clip_ratio_low_mean, n),
            "clip_ratio/high_mean": ratio_of(aux.clip_ratio_high_mean, n),
            "clip_ratio/region_mean": ratio_of(aux.clip_ratio_region_mean, n),
        }
        if "sampler_logp_BC" in mb:  # this forward vs the sampler (the task logs it before any update)
            diff = jnp.where(mask != 0, jnp.abs(out.logp_BC - mb["sampler_logp_BC"]), 0.0)
            metrics["sampler/logp_max_abs_diff"] = Max(jnp.max(diff))
            metrics["sampler/logp_mean_abs_diff"] = Ratio(jnp.sum(diff), n)
        if is_w is not None:
            metrics["sampler/is_weight_mean"] = Ratio(masked_sum(is_w, mask), n)
            metrics["sampler/is_capped_frac"] = Ratio(masked_sum((is_w >= settings.sampler_is_cap)
                                                                 .astype(jnp.float32), mask), n)
        if shared is not None:  # 1 when some micro-batch's rows did not share their prompts (step skipped)
            metrics["shared_prefix/mismatch"] = Max(1.0 - shared.astype(jnp.float32))
        if settings.emit_logp and on_policy:
            metrics["old_logp_BC"] = Rows(jax.lax.stop_gradient(out.logp_BC))
        return loss, metrics

    loss, grads, metrics = accumulate(loss_fn, state.params, batch, num_micro)
    extra = {} if settings.group_robust is None else {"robust": robust_state}
    state, opt_metrics = apply_gradients(state, tx, grads, loss, **extra)
    return state, {"loss": loss, **metrics, **opt_metrics, **robust_metrics}
