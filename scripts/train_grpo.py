#!/usr/bin/env python
"""Multi-objective GRPO: sample G completions per prompt, score every aspect (multi-label reward model
and/or Python reward functions), aggregate, normalise inside each group, clipped policy update + KL.

    python scripts/train_grpo.py configs/tiny_grpo.yaml train.steps=20 run_dir=runs/x

Trains from scratch or resumes from the latest checkpoint in run_dir; appends one JSON object per step to
run_dir/metrics.jsonl (TRL metric names). Bad input: one line 'error: ...' on stderr and exit status 2.
"""

from grpojax import cli
from grpojax.train.scripting import train_main

if __name__ == "__main__":
    cli.main(train_main("grpo", "grpojax.train.tasks.grpo:GRPOTask", "train_grpo.py CONFIG.yaml [key=value ...]"))
