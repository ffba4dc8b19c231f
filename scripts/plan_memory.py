#!/usr/bin/env python
"""Ahead-of-time memory / FLOP plan of the real GRPO or DPO train step: ``grpojax plan-memory`` from a clone.

    python scripts/plan_memory.py --model qwen2.5-7b --mesh fsdp=16 --batch 32 --seq 1024 --topology v5e-16

See grpojax/commands/plan_memory.py. ``import plan_memory`` (scripts/ on sys.path, as
scripts/memory_table.py does) gives that module itself.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax.commands import plan_memory  # noqa: E402

if __name__ == "__main__":
    sys.exit(plan_memory.main())
else:
    sys.modules[__name__] = plan_memory
