"""Rollouts: prompts -> G completions each -> aspect scores -> one reward -> group advantages.

``sample_and_score`` is the host-side glue between the jitted sampler, the (jitted) multi-label reward
model, Python reward functions on decoded text, and the pure aggregation / advantage functions
(ALGORITHMS.md 1.2-1.3), shared by every online method. It returns the arrays a
:func:`grpojax.train.steps.grpo.grpo_step` batch needs, the aggregated reward per completion (PPO's score,
online DPO's ranking) and TRL-named metrics:

    reward, reward_std, frac_reward_zero_std, rewards/<aspect>/mean|std|frac_zero_std|frac_nan,
    completions/mean_length, completions/max_length, completions/clipped_ratio
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from grpojax.losses import group_advantages, group_reward_stats
from grpojax.rewards import aggregate, aspect_stats
from grpojax.sampling import sample
from grpojax.sharding import to_host


class SamplingSettings(NamedTuple):
    num_generations: int
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None


def sampling_settings(rc) -> SamplingSettings:
    """The sampling of a method section (``grpo``, ``ppo``, ``online_dpo``: same field names); top_p 1 = off."""
    return SamplingSettings(num_generations=rc.num_generations, max_new_tokens=rc.max_completion_length,
                            temperature=rc.temperature, top_k=rc.top_k, top_p=None if rc.top_p >= 1.0 else rc.top_p)


class Rollout(NamedTuple):
    batch: dict                 # prompt_BQ, prompt_mask_BQ, completion_BC, completion_mask_BC,
                                # sampler_logp_BC, advantages_B  (B = prompts x G rows)
    metrics: dict               # host floats
    completions: list           # decoded completion texts, prompt-major
    prompts: list               # each completion's prompt as given (text or conversation), G copies each
    scores_NR: np.ndarray       # aspect scores, N = prompts x G
    rewards_N: np.ndarray       # aggregated reward per completion (NaN = no applicable aspect)
    truncated_N: np.ndarray     # bool: hit the length limit without EOS


def reward_math(scores_BGR, *, aggregation: str, weights=None, scale: str | None = None, names=()):
    """Aspect scores ``[B, G, R]`` -> ``(rewards_BG, advantages_BG, reward metrics)`` as one compiled
    program (eagerly, these few dozen small ops would each compile on first use in every process).
    ``weights`` (the config's ``reward_weights``) apply to ``weighted_sum`` / ``normalize_then_sum`` only.

    Advantages (ALGORITHMS.md 1.2-1.3):
      - ``normalize_then_sum`` (GDPO, arXiv 2601.05242): each aspect z-scored inside its group, the weighted
        sum z-scored over the batch -- that IS the advantage (as TRL's ``multi_objective_aggregation``);
        no group re-scaling on top (it would re-normalise every group to std 1 and undo the per-aspect
        balance), so ``scale`` must be None. ``rewards_BG`` is that GDPO value (the score PPO / online DPO
        consume); the logged ``reward`` / ``reward_std`` / ``frac_reward_zero_std`` are of the weighted sum
        of the raw scores (a z-score has mean 0 by construction and would not show progress).
      - every other aggregation: ``group_advantages(rewards, scale)``, ``scale`` None = ``"group"``.
    """
    if aggregation == "normalize_then_sum" and scale is not None:
        raise ValueError(f"scale_rewards={scale!r} does not apply to aggregation='normalize_then_sum' (GDPO's "
                         "batch z-score is the advantage); leave scale_rewards unset")
    static = (tuple(float(w) for w in weights)
              if aggregation in ("weighted_sum", "normalize_then_sum") and weights else None)
    return _reward_math(scores_BGR, aggregation=aggregation, weights=static, scale=scale or "group",
                        names=tuple(names))


@functools.partial(jax.jit, static_argnames=("aggregation", "weights", "scale", "names"))
def _reward_math(scores_BGR, *, aggregation, weights, scale, names):
    kwargs = {"weights": jnp.asarray(weights, jnp.float32)} if weights else {}
    rewards_BG = aggregate(aggregation, scores_BGR, **kwargs)
    if aggregation == "normalize_then_sum":
        advantages_BG = jnp.nan_to_num(rewards_BG, nan=0.0)  # no valid aspect: advantage 0
        stats = group_reward_stats(aggregate("weighted_sum", scores_BGR, **kwargs))
    else:
        advantages_BG = group_advantages(rewards_BG, scale=scale)
        stats = group_reward_stats(rewards_BG)
    metrics = {"reward": stats.reward, "reward_std": stats.reward_std,
               "frac_reward_zero_std": stats.frac_reward_zero_std, **aspect_stats(scores_BGR, list(names))}
    return rewards_BG, advantages_BG, metrics


def sample_and_score(model, prompt_ids_BQ, prompt_mask_BQ, prompts: Sequence[str], rng, *,
                     tok, sampling: SamplingSettings, aspect_names: Sequence[str],
                     score_fn: Callable[[dict, list, list], np.ndarray], aggregation: str = "weighted_sum",
                     reward_weights: Sequence[float] | None = None, scale_rewards: str | None = None,
                     mask_truncated_completions: bool = False, cache_fn=None) -> Rollout:
    """Sample ``G`` completions per prompt, score every aspect, aggregate, and compute group advantages:
    the rollout of every online method (GRPO, PPO, online DPO, and the evaluation of their policies).

    Args:
      model: the policy (a ``grpojax.models.Qwen``).
      prompt_ids_BQ, prompt_mask_BQ: [B, P] left-padded prompt tokens and mask (B prompts).
      prompts: the B prompt texts (for reward functions).
      rng: PRNG key of this rollout.
      tok: ``grpojax.data.Tokenizer`` (EOS / pad ids, decoding).
      sampling: generation settings; ``num_generations`` = G.
      aspect_names: the R aspect names, in the column order of ``score_fn``'s output.
      score_fn: ``(sample_batch, prompt_texts_N, completion_texts_N) -> [N, R]`` aspect scores (NaN = not
        applicable); ``sample_batch`` holds the sampled token arrays (for a reward model).
      aggregation, reward_weights: how the R aspects become one reward (``grpojax.rewards.aggregate``).
      scale_rewards: ``group`` | ``batch`` | ``none`` (``grpojax.losses.group_advantages``); None = ``group``,
        or nothing for ``normalize_then_sum`` (GDPO's advantage; :func:`reward_math`).
      mask_truncated_completions: zero the loss mask of completions that hit the length limit without EOS.
      cache_fn: the sampler's KV-cache builder (``grpojax.sampling.ShardedCache`` for a sharded model with
        batch-sharded prompts; None = unsharded default).

    On a mesh the sampled arrays of ``batch`` stay global jax arrays; the host-side work (decoding,
    reward functions, aggregation) sees them whole through :func:`grpojax.sharding.to_host`.
    """
    G = sampling.num_generations
    out = sample(model, jnp.asarray(prompt_ids_BQ), jnp.asarray(prompt_mask_BQ), rng,
                 max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                 top_k=sampling.top_k, top_p=sampling.top_p, eos_ids=tok.eos_ids, pad_id=tok.pad_id,
                 num_samples=G, cache_fn=cache_fn)
    tokens, mask, truncated = to_host((out.completion_tokens_BC, out.completion_mask_BC, out.truncated_B))
    texts = [tok.decode(row[: int(m.sum())]) for row, m in zip(tokens, mask)]
    prompts_N = [p for p in prompts for _ in range(G)]
    batch = {"prompt_BQ": out.prompt_tokens_BT, "prompt_mask_BQ": out.prompt_mask_BT,
             "completion_BC": out.completion_tokens_BC, "completion_mask_BC": out.completion_mask_BC}
    scores_NR = np.asarray(score_fn(batch, prompts_N, texts), np.float32)
    R = len(aspect_names)
    if scores_NR.shape != (len(texts), R):
        raise ValueError(f"score_fn returned shape {scores_NR.shape}, expected ({len(texts)}, {R}) for "
                         f"aspects {list(aspect_names)}")
    B = len(prompts)
    rewards_BG, adv_BG, reward_metrics = reward_math(jnp.asarray(scores_NR.reshape(B, G, R)),
                                                     aggregation=aggregation, weights=reward_weights,
                                                     scale=scale_rewards, names=aspect_names)
    loss_mask = mask * (~truncated)[:, None] if mask_truncated_completions else mask
    batch["completion_mask_BC"] = np.asarray(loss_mask, np.int32)
    batch["sampler_logp_BC"] = out.completion_logp_BC
    batch["advantages_B"] = np.asarray(adv_BG.reshape(B * G), np.float32)
    lengths = mask.sum(axis=1)
    metrics = {**reward_metrics,
               "completions/mean_length": float(lengths.mean()),
               "completions/max_length": float(lengths.max()),
               "completions/min_length": float(lengths.min()),
               "completions/clipped_ratio": float(truncated.mean())}
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return Rollout(batch=batch, metrics=metrics, completions=texts, prompts=prompts_N, scores_NR=scores_NR,
                   rewards_N=np.asarray(rewards_BG, np.float32).reshape(-1), truncated_N=np.asarray(truncated))


def completion_reward_metrics(ro: Rollout) -> dict:
    """The metrics of a rollout whose completions are scored one by one (PPO, online DPO): ``reward`` /
    ``reward_std`` over the completions with a reward (NaN rewards left out), the completion lengths and
    the per-aspect ``rewards/...``."""
    valid = ro.rewards_N[~np.isnan(ro.rewards_N)]
    return {"reward": float(valid.mean()) if valid.size else float("nan"),
            "reward_std": float(valid.std(ddof=1)) if valid.size > 1 else 0.0,
            **{k: v for k, v in ro.metrics.items() if k.startswith("completions/")},
            **{k: v for k, v in ro.metrics.items() if k.startswith("rewards/")}}
