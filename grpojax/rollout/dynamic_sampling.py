"""DAPO's dynamic sampling (Yu et al., arXiv 2503.14476, section 3.2): a GRPO batch of informative groups only.

A group whose G rewards are all equal (all correct, all wrong, or no valid reward) has advantage exactly 0
for every completion (:func:`grpojax.losses.group_advantages`) and gives no policy gradient; it only
dilutes the batch. With ``grpo.dynamic_sampling_max_rounds = K > 0`` a step samples up to K rollouts of
B prompts each (every round reads the next B prompts of the data) and keeps the groups with a nonzero
advantage, in order, until B are kept. If K rounds leave fewer than B, the batch is filled with the
first zero-advantage groups drawn (they keep the shapes fixed and give no gradient), so the step never
waits indefinitely nor recompiles. Logged: ``dynamic_sampling/rounds`` (rollouts sampled),
``dynamic_sampling/dropped_groups`` (zero-advantage groups drawn and left out) and
``dynamic_sampling/filled_groups`` (zero-advantage groups kept to fill the batch after K rounds).
The other rollout metrics (``reward``, ``rewards/*``, ``completions/*``) are those of the first round:
the policy's own samples, before any filtering.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from grpojax.rollout.sample import Rollout
from grpojax.sharding import to_host


def informative_groups(advantages_N: np.ndarray, num_generations: int) -> np.ndarray:
    """``[B]`` bool: True where some completion of the group has a nonzero advantage."""
    adv_BG = np.asarray(advantages_N).reshape(-1, num_generations)
    return np.any(adv_BG != 0, axis=1)


def _take_groups(ro: Rollout, groups: np.ndarray, G: int) -> Rollout:
    """The rows of ``groups`` in every per-row field (the batch's arrays, texts, scores, rewards...)."""
    rows = (groups[:, None] * G + np.arange(G)[None, :]).reshape(-1)
    out = {}
    for name, value in ro._asdict().items():
        if name == "metrics":
            out[name] = value
        elif name == "batch":
            out[name] = {k: np.asarray(v)[rows] for k, v in to_host(value).items()}
        elif isinstance(value, list):
            out[name] = [value[i] for i in rows]
        else:
            out[name] = np.asarray(value)[rows]
    return Rollout(**out)


def _concat(parts: list[Rollout]) -> Rollout:
    out = {}
    for name, value in parts[0]._asdict().items():
        if name == "metrics":
            out[name] = value
        elif name == "batch":
            out[name] = {k: np.concatenate([p.batch[k] for p in parts]) for k in value}
        elif isinstance(value, list):
            out[name] = [x for p in parts for x in getattr(p, name)]
        else:
            out[name] = np.concatenate([getattr(p, name) for p in parts])
    return Rollout(**out)


def dynamic_sample(sample_round: Callable[[], Rollout], num_prompts: int, num_generations: int,
                   max_rounds: int) -> Rollout:
    """Up to ``max_rounds`` calls of ``sample_round()`` (each a scored rollout of ``num_prompts`` groups of
    ``num_generations`` rows) -> one rollout of ``num_prompts`` groups, informative first (module
    docstring); the first round's metrics plus the ``dynamic_sampling/*`` counts. Host NumPy arrays."""
    if max_rounds < 1:
        raise ValueError(f"dynamic_sample: max_rounds must be >= 1, got {max_rounds}")
    G, kept, spare, dropped, first, rounds = num_generations, [], [], 0, None, 0
    while rounds < max_rounds and sum(len(k.completions) for k in kept) < num_prompts * G:
        ro = sample_round()
        rounds += 1
        first = first or ro
        good = informative_groups(to_host(ro.batch["advantages_B"]), G)
        need = num_prompts - sum(len(k.completions) for k in kept) // G
        take = np.flatnonzero(good)[:need]
        if take.size:
            kept.append(_take_groups(ro, take, G))
        dropped += int(np.sum(~good))
        if sum(len(s.completions) for s in spare) < num_prompts * G and np.any(~good):
            spare.append(_take_groups(ro, np.flatnonzero(~good), G))
    have = sum(len(k.completions) for k in kept) // G
    filled = num_prompts - have
    if filled:
        kept.append(_take_groups(_concat(spare), np.arange(filled), G))
    out = _concat(kept)
    metrics = {**first.metrics, "dynamic_sampling/rounds": float(rounds),
               "dynamic_sampling/dropped_groups": float(dropped - filled),
               "dynamic_sampling/filled_groups": float(filled)}
    return out._replace(metrics=metrics)
