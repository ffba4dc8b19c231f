#!/usr/bin/env python
"""Supervised fine-tuning on (prompt, response) pairs.

    python scripts/sft.py configs/tiny_sft.yaml train.steps=20 run_dir=runs/x

Trains from scratch or resumes from the latest checkpoint in run_dir; appends one JSON object per step to
run_dir/metrics.jsonl. Bad input: one line 'error: ...' on stderr and exit status 2.
"""

from grpojax import cli
from grpojax.train.scripting import TASKS, train_main

if __name__ == "__main__":
    cli.main(train_main("sft", TASKS["sft"], "sft.py CONFIG.yaml [key=value ...]"))
