"""Rollouts: prompts -> sampled completions -> aspect scores -> one reward each (-> group advantages).

    sample      sample_and_score (every online method), reward_math, SamplingSettings, Rollout
    scoring     the aspect names of a method section and the scorer combining a reward model's aspects
                with text-reward columns
    reward_scorer  a trained reward model (run_dir or HF directory) as a scorer
    text_rewards   the text-reward functions (TRL's convention) named in ``<method>.reward_funcs``
"""

from grpojax.rollout.sample import (
                                    Rollout,
                                    SamplingSettings,
                                    completion_reward_metrics,
                                    reward_math,
                                    sample_and_score,
                                    sampling_settings,
)

__all__ = ["Rollout", "SamplingSettings", "completion_reward_metrics", "reward_math", "sample_and_score",
           "sampling_settings"]
