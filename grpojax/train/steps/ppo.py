"""PPO-RLHF: rollout targets (KL-shaped rewards, GAE, whitening) and the pure train step.

A rollout batch holds B completions (one row each) and, per token, everything computed once at rollout
time (``grpojax.losses.ppo`` gives the formulas):

    prompt_BQ, prompt_mask_BQ           left-padded prompts
    completion_BC, completion_mask_BC   right-padded completions; mask 1 up to and including EOS
    old_logp_BC, old_values_BC          policy log-probs and critic values at rollout time
    advantages_BC, returns_BC           GAE advantages (whitened) and lambda-returns (value targets)
    ref_logp_BC, kl_coef_B              reference log-probs and the KL coefficient (kl_mode="loss" only)

:func:`rollout_targets` turns scores, log-probs and values into those targets (Ziegler et al. 2019,
arXiv 1909.08593; GAE, Schulman et al. 2016, arXiv 1506.02438). :func:`ppo_step` is one optimizer update
of the policy and the critic on a mini-batch, ``L = L_clip + vf_coef L_V [+ kl_coef KL]`` (Schulman et al.
2017, arXiv 1707.06347, eq. 9). With ``num_micro > 1`` the gradient is accumulated exactly: each
micro-batch's mean is weighted by its share of the normaliser (active tokens for ``token_mean``, rows for
``sequence_mean``), so the loss and the update do not depend on ``num_micro``; nor do the metrics (token
means weighted by tokens, the explained variance from the step's moments).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from grpojax.losses import masked_mean, masked_sum
from grpojax.losses.ppo import ppo_loss
from grpojax.losses.ppo_rollout import gae_advantages, kl_penalized_rewards, rollout_kl, whiten
from grpojax.train.steps.accumulate import Ratio, Sum, accumulate, apply_gradients, ratio_of
from grpojax.train.steps.forward import completion_logprobs, sequence_inputs
from grpojax.train.steps.state import TrainState, merge_model


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """Static (hashable) PPO options, named as the ``ppo`` config keys (TRL's ``PPOConfig`` names) and the
    keywords of :func:`grpojax.losses.ppo.ppo_loss`; built by :func:`grpojax.train.steps.settings.from_section`.

    kl_mode: ``"reward"`` = the KL is a per-token reward penalty (TRL); ``"loss"`` = it is a loss term
    ``kl_coef * KL`` (as GRPO does).
    """

    cliprange: float = 0.2
    cliprange_value: float | None = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_mode: str = "reward"
    kl_estimator: str = "k1"
    whiten_rewards: bool = False
    whiten_advantages: bool = True
    reduction: str = "token_mean"
    temperature: float = 1.0
    logprob_chunk: int | None = 128

    @property
    def kl_in_loss(self) -> bool:
        return self.kl_mode == "loss"


class PolicyValues(NamedTuple):
    logp_BC: jax.Array      # [B, L] log-probs of the completion tokens at the sampling temperature
    entropy_BC: jax.Array   # [B, L] entropies of the next-token distributions
    values_BC: jax.Array    # [B, L] critic values of the states that predict each completion token


class _HiddenTap:
    """Forwards to a Qwen and remembers the hidden states of its forward pass, so the shared value head
    reuses the backbone pass of :func:`completion_logprobs` instead of running a second one."""

    def __init__(self, model):
        self.model, self.hidden_BTD = model, None

    def __call__(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        self.hidden_BTD = out
        return out

    def logits_from_hidden(self, hidden, **kwargs):
        return self.model.logits_from_hidden(hidden, **kwargs)


def policy_and_values(model, prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC, *,
                      temperature: float = 1.0, chunk_size: int | None = 128,
                      with_entropy: bool = True) -> PolicyValues:
    """Completion log-probs, entropies and values of an :class:`grpojax.models.value_head.ActorCritic`.

    The value of completion token ``j`` is read at the column that predicts it, ``P - 1 + j`` (the state
    before the token is generated; TRL reads values at the same positions as logits). A shared critic uses
    the policy's single backbone pass; a separate critic runs its own backbone on the same tokens.

    Args:
      model: ``ActorCritic``.
      prompt_BQ, prompt_mask_BQ: [B, P] left-padded prompts. completion_BC, completion_mask_BC: [B, L].
      temperature, chunk_size, with_entropy: as :func:`grpojax.train.steps.forward.completion_logprobs`.
    """
    tap = _HiddenTap(model.policy)
    out = completion_logprobs(tap, prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC,
                              temperature=temperature, chunk_size=chunk_size, with_entropy=with_entropy)
    tokens, mask, positions = sequence_inputs(prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC)
    values_BT = model.values(tokens, positions, mask, policy_hidden_BTD=tap.hidden_BTD)
    P, L = prompt_BQ.shape[1], completion_BC.shape[1]
    values_BC = jax.lax.slice_in_dim(values_BT, P - 1, P - 1 + L, axis=1)
    return PolicyValues(out.logp_BC, out.entropy_BC, values_BC)


def rollout_targets(scores_B, logp_BC, ref_logp_BC, values_BC, mask_BC, *, kl_coef,
                    settings: PPOSettings) -> tuple[dict, dict]:
    """Per-token rewards, GAE advantages and returns of one rollout, plus TRL-named rollout metrics.

    ``r = kl_penalized_rewards(scores, logp, ref, kl_coef)`` (``kl_coef`` used as 0 when the KL is in the
    loss), optionally ``r <- whiten(r, shift_mean=False)``; ``A, R = GAE(r, V; gamma, lam)``; optionally
    ``A <- whiten(A)`` (TRL whitens advantages always, rewards on request).

    Args:
      scores_B: [B] sequence scores (aggregated reward, after any penalty).
      logp_BC, ref_logp_BC: [B, L] rollout-policy and reference log-probs of the sampled tokens.
      values_BC: [B, L] critic values at rollout time. mask_BC: [B, L] 1 on active completion tokens.
      kl_coef: scalar KL coefficient (the controller's current value; may be traced).
      settings: :class:`PPOSettings`.

    Returns:
      ``(targets, metrics)``: targets ``rewards_BC``, ``advantages_BC``, ``returns_BC``; metrics
      ``objective/kl`` (mean per-sequence KL), ``objective/non_score_reward`` (mean per-sequence KL
      penalty), ``objective/rlhf_reward`` (scores + penalty), ``objective/scores``, ``val/mean_return``.
    """
    s = settings
    mask = mask_BC.astype(jnp.float32)
    reward_coef = jnp.zeros((), jnp.float32) if s.kl_in_loss else jnp.asarray(kl_coef, jnp.float32)
    rewards_BC = kl_penalized_rewards(scores_B, logp_BC, ref_logp_BC, mask, kl_coef=reward_coef,
                                      kl_estimator=s.kl_estimator)
    kl_B = rollout_kl(logp_BC, ref_logp_BC, mask, kl_estimator=s.kl_estimator)
    non_score_B = -reward_coef * kl_B
    if s.whiten_rewards:
        rewards_BC = whiten(rewards_BC, mask, shift_mean=False)
    adv_BC, ret_BC = gae_advantages(rewards_BC, values_BC, mask, gamma=s.gamma, lam=s.lam)
    if s.whiten_advantages:
        adv_BC = whiten(adv_BC, mask)
    metrics = {"objective/kl": jnp.mean(kl_B), "objective/non_score_reward": jnp.mean(non_score_B),
               "objective/rlhf_reward": jnp.mean(scores_B + non_score_B), "objective/scores": jnp.mean(scores_B),
               "val/mean_return": masked_mean(ret_BC, mask)}
    return {"rewards_BC": rewards_BC, "advantages_BC": adv_BC, "returns_BC": ret_BC}, metrics


def ppo_step(state: TrainState, batch: dict, rng: jax.Array, *, graphdef, tx, settings: PPOSettings,
             num_micro: int = 1):
    """One PPO optimizer update of the policy and the critic on a mini-batch (see the module docstring).

    ``rng`` is unused (no dropout). Returns ``(state, metrics)`` with ``loss`` (exactly
    ``grpojax.losses.ppo_loss`` on the whole mini-batch), ``loss/policy_avg``, ``loss/value_avg``,
    ``loss/kl``, ``policy/approxkl_avg``, ``policy/clipfrac_avg``, ``policy/entropy_avg``, ``val/ratio``,
    ``val/clipfrac_avg``, ``val/explained_variance``, ``val/mean`` and ``grad_norm``.
    """
    del rng
    s = settings
    rows = batch["completion_BC"].shape[0]
    n_tokens = jnp.maximum(jnp.sum(batch["completion_mask_BC"].astype(jnp.float32)), 1.0)

    def loss_fn(params, mb):
        model = merge_model(graphdef, params, state.frozen)
        out = policy_and_values(model, mb["prompt_BQ"], mb["prompt_mask_BQ"], mb["completion_BC"],
                                mb["completion_mask_BC"], temperature=s.temperature, chunk_size=s.logprob_chunk)
        mask = mb["completion_mask_BC"].astype(jnp.float32)
        kl_kwargs = {}
        if s.kl_in_loss:
            kl_kwargs = dict(ref_logp_BT=mb["ref_logp_BC"], kl_coef=mb["kl_coef_B"][0])
        loss, aux = ppo_loss(out.logp_BC, mb["old_logp_BC"], mb["advantages_BC"], out.values_BC,
                             mb["old_values_BC"], mb["returns_BC"], mask, cliprange=s.cliprange,
                             cliprange_value=s.cliprange_value, vf_coef=s.vf_coef, kl_estimator=s.kl_estimator,
                             reduction=s.reduction, **kl_kwargs)
        n = jnp.sum(mask)
        share = n / n_tokens if s.reduction == "token_mean" else mask.shape[0] / rows
        # token means weighted by the micro-batch's tokens; the loss terms by its share of the normaliser
        w = n if s.reduction == "token_mean" else jnp.asarray(mask.shape[0], jnp.float32)
        metrics = {"loss/policy_avg": ratio_of(aux.policy_loss, w), "loss/value_avg": ratio_of(aux.value_loss, w),
                   "loss/kl": ratio_of(aux.kl, w), "policy/approxkl_avg": ratio_of(aux.policy.approx_kl, n),
                   "policy/clipfrac_avg": ratio_of(aux.policy.clipfrac, n),
                   "policy/entropy_avg": Ratio(masked_sum(out.entropy_BC, mask), n),
                   "val/ratio": ratio_of(aux.policy.ratio_mean, n), "val/clipfrac_avg": ratio_of(aux.value.clipfrac, n),
                   "val/mean": Ratio(masked_sum(out.values_BC, mask), n),
                   **explained_variance_moments(out.values_BC, mb["returns_BC"], mask)}
        return loss * share, metrics

    loss, grads, metrics = accumulate(loss_fn, state.params, batch, num_micro)
    metrics["val/explained_variance"] = explained_variance(metrics)
    state, opt_metrics = apply_gradients(state, tx, grads, loss)
    return state, {"loss": loss, **metrics, **opt_metrics}


def explained_variance_moments(values_BC, returns_BC, mask_BC) -> dict:
    """Sums of ``R``, ``R^2``, ``R - V``, ``(R - V)^2`` and the token count over the active tokens, from
    which :func:`explained_variance` computes ``1 - Var(R - V) / Var(R)`` over the whole step."""
    on = mask_BC != 0
    r = jnp.where(on, returns_BC.astype(jnp.float32), 0.0)
    e = jnp.where(on, r - values_BC.astype(jnp.float32), 0.0)
    return {f"_ev/{k}": Sum(v) for k, v in {"n": jnp.sum(on.astype(jnp.float32)), "r": jnp.sum(r),
                                           "r2": jnp.sum(r * r), "e": jnp.sum(e), "e2": jnp.sum(e * e)}.items()}


def explained_variance(metrics: dict):
    """Pops the ``_ev/*`` sums from ``metrics``; ``1 - Var(R - V) / Var(R)`` (Bessel), 0 when Var(R) = 0
    (as ``grpojax.losses.ppo_value_loss``'s per-call value)."""
    n, r, r2, e, e2 = (metrics.pop(f"_ev/{k}") for k in ("n", "r", "r2", "e", "e2"))
    d = jnp.maximum(n - 1.0, 1.0)
    var_r = jnp.maximum(r2 - r * r / jnp.maximum(n, 1.0), 0.0) / d
    var_e = jnp.maximum(e2 - e * e / jnp.maximum(n, 1.0), 0.0) / d
    return jnp.where(var_r > 0, 1.0 - var_e / jnp.where(var_r > 0, var_r, 1.0), 0.0)
