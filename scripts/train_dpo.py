#!/usr/bin/env python
"""Preference optimisation: DPO / IPO / hinge / GR-DPO / GR-IPO / IS-DPO.

    python scripts/train_dpo.py configs/tiny_dpo.yaml train.steps=20 run_dir=runs/x

Trains from scratch or resumes from the latest checkpoint in run_dir; appends one JSON object per step to
run_dir/metrics.jsonl. Bad input: one line 'error: ...' on stderr and exit status 2.
"""

from grpojax import cli
from grpojax.train.scripting import train_main

if __name__ == "__main__":
    cli.main(train_main("dpo", "grpojax.train.tasks.preference:PreferenceTask", "train_dpo.py CONFIG.yaml [key=value ...]"))
