"""The scorer of an online method's rollouts: a method section (``grpo``, ``ppo``, ``online_dpo``) ->
``scorer(sample_batch, prompts_N, texts_N) -> [N, R]`` aspect scores and their R names.

The columns are the reward model's aspects (``<section>.aspects``, scored by
:class:`grpojax.rollout.reward_scorer.RewardModelScorer`) followed by one column per text reward of
``<section>.reward_funcs`` (:mod:`grpojax.rollout.text_rewards`). :func:`aspect_names` is the naming rule:
a built-in text reward is named by its head (``char_frac:aeiou`` -> ``char_frac``), an imported function by
its whole spec; when two names collide every text reward is named ``func<i>_<spec>`` instead.
"""

from __future__ import annotations

import numpy as np

from grpojax.rollout import text_rewards
from grpojax.rollout.reward_scorer import load_reward_scorer
from grpojax.sharding import to_host


def aspect_names(rc) -> list[str]:
    """The R column names of a method section ``rc``: its ``aspects``, then one per ``reward_funcs`` spec."""
    names = list(rc.aspects) + [s.split(":")[0] if "." not in s else s for s in rc.reward_funcs]
    if len(set(names)) != len(names):
        names = list(rc.aspects) + [f"func{i}_{s}" for i, s in enumerate(rc.reward_funcs)]
    return names


class Scorer:
    """``scorer(batch, prompts_N, texts_N) -> [N, R]`` float32 NumPy scores of the section ``cfg.<section>``
    (``section`` defaults to ``cfg.kind``); ``names`` are the R columns.

    ``reward_model_scorer`` replaces loading ``<section>.reward_model`` (tests and the demo pass one they
    already hold); otherwise it is loaded onto ``mesh`` with the policy's tokenizer ``tok``."""

    def __init__(self, cfg, tok, reward_model_scorer=None, *, mesh=None, section: str | None = None):
        section = section or cfg.kind
        rc = getattr(cfg, section)
        self.specs = tuple(rc.reward_funcs)
        self.funcs = [text_rewards.resolve(s, section) for s in self.specs]
        self.rm = reward_model_scorer
        if rc.reward_model is not None and self.rm is None:
            self.rm = load_reward_scorer(rc.reward_model, cfg, tok, mesh=mesh, section=section)
        self.names = aspect_names(rc)

    def __call__(self, batch, prompts, texts) -> np.ndarray:
        cols = []
        if self.rm is not None:
            cols.append(np.asarray(to_host(self.rm(batch, prompts, texts)), np.float32))
        if self.funcs:
            cols.append(text_rewards.score(self.funcs, self.specs, prompts, texts))
        return np.concatenate(cols, axis=-1)
