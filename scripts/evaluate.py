#!/usr/bin/env python
"""Evaluate a trained run on held-out data and print one JSON object: ``grpojax evaluate`` from a clone.

    python scripts/evaluate.py configs/tiny_grpo.yaml run_dir=runs/grpo data.eval_path=prompts.jsonl
    python scripts/evaluate.py configs/tiny_dpo.yaml  run_dir=runs/gr_ipo data.eval_path=pairs.jsonl

See grpojax/commands/evaluate.py. Bad input: one line 'error: ...' on stderr and exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax import cli  # noqa: E402
from grpojax.commands.evaluate import run  # noqa: E402

if __name__ == "__main__":
    cli.main(run)
