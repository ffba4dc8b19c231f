#!/usr/bin/env python
"""Reward-model training: multi-label regression on R aspect labels (missing labels allowed), or
pairwise Bradley-Terry on preference pairs.

    python scripts/train_reward.py configs/tiny_reward.yaml train.steps=20 run_dir=runs/x

The run_dir is directly usable as ``grpo.reward_model`` of a GRPO config. Appends one JSON object per
step to run_dir/metrics.jsonl. Bad input: one line 'error: ...' on stderr and exit status 2.
"""

from grpojax import cli
from grpojax.train.scripting import train_main

if __name__ == "__main__":
    cli.main(train_main("reward", "grpojax.train.tasks.reward:RewardTask",
                        "train_reward.py CONFIG.yaml [key=value ...]"))
