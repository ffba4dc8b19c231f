#!/usr/bin/env python
"""Plot a run's metrics.jsonl as PNG curves: ``grpojax plot-metrics`` from a clone.

usage: python scripts/plot_metrics.py RUN_DIR [--keys loss reward ...] [--out DIR]

See grpojax/commands/plot_metrics.py. Bad input: one line 'error: ...' on stderr and exit status 2.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax import cli  # noqa: E402
from grpojax.commands.plot_metrics import numeric_keys, plot, run  # noqa: E402, F401

if __name__ == "__main__":
    cli.main(run)
