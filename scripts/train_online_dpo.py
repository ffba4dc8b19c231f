#!/usr/bin/env python
"""Online (iterative) DPO from the reward model: sample G completions per prompt with the current policy,
score them (multi-label reward model and/or Python reward functions), pair the best with the worst of each
prompt (ties skipped), and take one DPO / IPO / hinge step against the initial policy as reference.

    python scripts/train_online_dpo.py configs/tiny_online_dpo.yaml train.steps=20 run_dir=runs/x

Trains from scratch or resumes from the latest checkpoint in run_dir; appends one JSON object per step to
run_dir/metrics.jsonl. Bad input: one line 'error: ...' on stderr and exit status 2.
"""

from grpojax import cli
from grpojax.train.scripting import train_main

if __name__ == "__main__":
    cli.main(train_main("online_dpo", "grpojax.train.tasks.online_dpo:OnlineDPOTask",
                        "train_online_dpo.py CONFIG.yaml [key=value ...]"))
