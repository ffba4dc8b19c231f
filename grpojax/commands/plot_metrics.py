"""Plot a run's metrics.jsonl as PNG curves (one file per metric).

usage: grpojax plot-metrics RUN_DIR [--keys loss reward ...] [--out DIR]
       python scripts/plot_metrics.py RUN_DIR ...          (the same, from a clone)

RUN_DIR holds metrics.jsonl (written by grpojax.metrics.MetricsWriter). Without --keys every numeric
metric is plotted; --out defaults to RUN_DIR/plots. A metric name such as ``rewards/safety/mean`` becomes
the file ``rewards_safety_mean.png``.
"""

from __future__ import annotations

import argparse
import math
import os

from grpojax import cli
from grpojax.cli import UserError


def numeric_keys(rows: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def plot(rows: list[dict], keys: list[str], out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for key in keys:
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))
               and not isinstance(r.get(key), bool) and math.isfinite(r[key]) and "step" in r]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(key)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = os.path.join(out_dir, key.replace("/", "_") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one-line UserError instead of argparse's usage dump + exit
        raise UserError(f"{message}; usage: {self.prog} RUN_DIR [--keys K ...] [--out DIR]")


def run(argv: list[str], prog: str = "plot_metrics.py") -> int:
    """``cli.main`` body: plots ``RUN_DIR/metrics.jsonl``; ``prog`` names the command in messages."""
    from grpojax.metrics import read_metrics

    parser = _Parser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--keys", nargs="+", default=None, help="metrics to plot (default: all numeric)")
    parser.add_argument("--out", default=None, help="output directory (default: RUN_DIR/plots)")
    args = parser.parse_args(argv)
    path = os.path.join(args.run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"no metrics file at {path}")
    rows = read_metrics(path)
    available = numeric_keys(rows)
    if not available:
        raise UserError(f"{path}: no numeric metrics to plot")
    keys = args.keys or available
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise UserError(f"{path}: no metric {unknown[0]!r}; available metrics: {', '.join(available)}")
    for p in plot(rows, keys, args.out or os.path.join(args.run_dir, "plots")):
        print(p)
    return 0


if __name__ == "__main__":
    cli.main(run)
