#!/usr/bin/env python
"""PPO-RLHF: sample completions with the current policy, score them (multi-label reward model and/or
Python reward functions), KL-shaped per-token rewards, value head / critic, GAE, whitening, then
ppo_epochs x shuffled mini-batches of clipped policy + value updates; fixed or adaptive KL controller.

    python scripts/train_ppo.py configs/tiny_ppo.yaml train.steps=20 run_dir=runs/x

Trains from scratch or resumes from the latest checkpoint in run_dir; appends one JSON object per optimizer
step to run_dir/metrics.jsonl (TRL metric names). Bad input: one line 'error: ...' on stderr and exit 2.
"""

from grpojax import cli
from grpojax.train.scripting import train_main

if __name__ == "__main__":
    cli.main(train_main("ppo", "grpojax.train.tasks.ppo:PPOTask", "train_ppo.py CONFIG.yaml [key=value ...]"))
