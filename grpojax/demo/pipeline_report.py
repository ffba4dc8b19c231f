"""Plots and the printed report of the demo pipeline (:mod:`grpojax.demo.pipeline`).

``write_plots(summary, out)`` writes under ``OUT/plots``: training curves of every stage (through
``grpojax.commands.plot_metrics``'s ``plot``), ``aspects_before_after.png`` (ground-truth aspect means of the SFT
and GRPO policies on held-out requests) and ``robust_group_loss.png`` (per-group test loss of each
preference method). ``report_text(summary)`` is the short human-readable table printed at the end.
"""

from __future__ import annotations

import os

import numpy as np

from grpojax.demo.opinions import GROUPS
from grpojax.demo.scorers import ASPECTS

CURVES = {
    "policy_sft": ["loss"],
    "reward": ["loss", "eval/mse"],
    "grpo": ["reward", "rewards/politeness/mean", "rewards/meaningfulness/mean",
             "rewards/actionability/mean", "rewards/safety/mean", "completions/mean_length"],
    "opinion_sft": ["loss"],
    "ipo": ["loss", "eval/worst_group/loss"],
    "gr_ipo": ["loss", "eval/worst_group/loss"],
    "dpo": ["loss", "eval/worst_group/loss"],
    "gr_dpo": ["loss", "eval/worst_group/loss"],
}


def _plot_metrics_module():
    from grpojax.commands import plot_metrics

    return plot_metrics


def aspect_bars(summary: dict, path: str, title: str | None = None) -> str:
    """Grouped bars: each aspect's ground-truth mean before (SFT) and after GRPO, with +-1 s.e.m."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = summary["aspects"]
    x = np.arange(len(ASPECTS))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (when, label) in enumerate((("before", "SFT (before)"), ("after", "GRPO (after)"))):
        ax.bar(x + (i - 0.5) * 0.38, [a[k][when] for k in ASPECTS], 0.38, label=label,
               yerr=[a[k].get(f"{when}_sem", 0.0) for k in ASPECTS], capsize=3)
    ax.set_xticks(x, ASPECTS)
    ax.set_ylim(0, 1)
    ax.set_ylabel("ground-truth score (mean)")
    ax.set_title(title or f"held-out requests, seed {summary['seed']}")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def group_loss_bars(summary: dict, path: str) -> str:
    """Per-group test loss of each preference method (IPO-family and DPO-family losses differ in scale,
    so each family gets its own panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    robust = summary["robust"]
    families = [f for f in (("ipo", "gr_ipo"), ("dpo", "gr_dpo")) if all(m in robust for m in f)]
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 3.5), squeeze=False)
    x = np.arange(len(GROUPS))
    for ax, family in zip(axes[0], families):
        for i, m in enumerate(family):
            ax.bar(x + (i - 0.5) * 0.38, [robust[m]["group_test_loss"][g] for g in GROUPS], 0.38, label=m)
        ax.set_xticks(x, [g + (" (small)" if g == GROUPS[-1] else "") for g in GROUPS], fontsize=8)
        ax.set_ylabel("test loss")
        ax.set_title(f"{family[0].upper()} vs {family[1].upper().replace('_', '-')}: per-group test loss")
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(summary: dict, out: str) -> list[str]:
    """Every plot of the demo under ``OUT/plots``; returns the written paths."""
    from grpojax.metrics import read_metrics

    plot_dir = os.path.join(out, "plots")
    os.makedirs(plot_dir, exist_ok=True)
    pm = _plot_metrics_module()
    written = []
    for stage, run_dir in summary["run_dirs"].items():
        path = os.path.join(run_dir, "metrics.jsonl")
        if not os.path.isfile(path):
            continue
        rows = read_metrics(path)
        keys = [k for k in CURVES.get(stage, ["loss"]) if k in pm.numeric_keys(rows)]
        written += pm.plot(rows, keys, os.path.join(plot_dir, stage))
    written.append(aspect_bars(summary, os.path.join(plot_dir, "aspects_before_after.png")))
    if "ipo" in summary["robust"] and "gr_ipo" in summary["robust"]:
        written.append(group_loss_bars(summary, os.path.join(plot_dir, "robust_group_loss.png")))
    return written


def report_text(summary: dict) -> str:
    """A short plain-text report of the summary (what the pipeline prints at the end)."""
    lines = [f"== grpojax demo (seed {summary['seed']}{', quick' if summary['quick'] else ''}): "
             f"{summary['seconds']:.0f} s ==", "",
             "reward model, held-out:   " + "  ".join(
                 f"{a} mse {v['mse']:.3f} r {v['pearson']:.2f}" for a, v in summary["reward_model"].items()),
             "", f"GRPO, held-out requests ({summary['evaluation']['samples']} samples), ground truth "
                 "(reward model in brackets):",
             f"  {'aspect':<15}{'before':>16}{'after':>16}{'change':>9}"]
    for a, v in summary["aspects"].items():
        lines.append(f"  {a:<15}{v['before']:>7.3f} [{v['reward_model_before']:>6.3f}]"
                     f"{v['after']:>7.3f} [{v['reward_model_after']:>6.3f}]{v['after'] - v['before']:>+9.3f}")
    lines += ["", "group robustness (opinion task, test split):",
              f"  {'method':<8}{'worst-group loss':>18}{'worst-group acc':>17}   per-group loss   alpha"]
    for m, r in summary["robust"].items():
        per = " ".join(f"{r['group_test_loss'][g]:.3f}" for g in GROUPS)
        alpha = " ".join(f"{r['alpha'][g]:.2f}" for g in GROUPS) if "alpha" in r else "-"
        lines.append(f"  {m:<8}{r['worst_group_test_loss']:>18.4f}{r['worst_group_test_reward_accuracy']:>17.3f}"
                     f"   {per}   {alpha}")
    ref = next((r["reference_group_test_nll"] for r in summary["robust"].values() if "reference_group_test_nll" in r),
               None)
    if ref:
        lines.append("  reference (opinion SFT) NLL of the preferred answer: " + " ".join(
            f"{g} {ref[g]:.3f}" for g in GROUPS if g in ref) + f"  (uniform guess: ln 4 = {np.log(4):.3f})")
    lines += ["", f"summary: {os.path.join(os.path.dirname(summary['run_dirs']['grpo']), 'summary.json')}"]
    return "\n".join(lines)


def _mean_std(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def seeds_table(summaries: list[dict]) -> str:
    """Markdown tables of several seeds' summaries (used for docs/demo.md): every aspect before -> after
    and the worst-group test loss of each robust method per seed, with a mean ± std (ddof 1) row; the
    reward model's held-out Pearson per aspect; the opinion SFT model's test NLL against chance."""
    methods = [m for m in ("ipo", "gr_ipo", "dpo", "gr_dpo") if all(m in s["robust"] for s in summaries)]
    head = ["seed"] + [f"{a} before → after" for a in ASPECTS] + [f"{m} worst-group test loss" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        cells = [str(s["seed"])] + [f"{s['aspects'][a]['before']:.3f} → {s['aspects'][a]['after']:.3f}"
                                    for a in ASPECTS]
        cells += [f"{s['robust'][m]['worst_group_test_loss']:.4f}" for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["mean ± std"] + [f"{_mean_std([s['aspects'][a]['before'] for s in summaries])} → "
                              f"{_mean_std([s['aspects'][a]['after'] for s in summaries])}" for a in ASPECTS]
    cells += [_mean_std([s["robust"][m]["worst_group_test_loss"] for s in summaries]) for m in methods]
    lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| seed | " + " | ".join(f"reward model Pearson {a}" for a in ASPECTS) + " |",
              "|" + "---|" * (len(ASPECTS) + 1)]
    for s in summaries:
        lines.append(f"| {s['seed']} | " + " | ".join(f"{s['reward_model'][a]['pearson']:.3f}" for a in ASPECTS)
                     + " |")
    refs = [(s["seed"], next((r["reference_group_test_nll"] for r in s["robust"].values()
                              if "reference_group_test_nll" in r), None)) for s in summaries]
    if any(ref for _, ref in refs):
        lines += ["", "| seed | " + " | ".join(f"opinion SFT test NLL {g}" for g in GROUPS) + " |",
                  "|" + "---|" * (len(GROUPS) + 1)]
        for seed, ref in refs:
            if ref:
                lines.append(f"| {seed} | " + " | ".join(f"{ref[g]:.3f}" if g in ref else "-" for g in GROUPS) + " |")
        lines.append(f"(uniform guess among four letters: ln 4 = {np.log(4):.3f})")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m grpojax.demo.pipeline_report OUT1 OUT2 ...: the seeds table
    import json
    import sys

    rows = []
    for d in sys.argv[1:]:
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
            rows.append(json.load(f))
    print(seeds_table(rows))
