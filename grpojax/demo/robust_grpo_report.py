"""The table and plot of the GRPO vs group-robust GRPO experiment (:mod:`grpojax.demo.robust_grpo`).

``write_report(results, out, tag)`` writes ``OUT/robust_grpo[_<tag>].json`` (every seed's result),
``.md`` (one row per seed and method: each group's ground-truth reward before -> after, the worst group,
the mean over groups weighted by the held-out prompts, and the mean +- std over seeds) and ``.png`` (left:
each group's reward before / after per method, averaged over seeds with the seeds as dots; right: alpha of
the dialect group over the steps, one line per seed), and returns the markdown.
"""

from __future__ import annotations

import json
import os

import numpy as np

from grpojax.demo.robust_grpo import GROUPS, METHODS

HELDOUT = {"standard": 29, "dialect": 29}  # held-out requests per group (the mean weighs groups by them)


def _row(rewards: dict) -> dict:
    r = {g: rewards[g]["reward"] for g in GROUPS}
    n = {g: rewards[g].get("samples", HELDOUT[g]) for g in GROUPS}
    return {**r, "worst": min(r.values()), "mean": sum(r[g] * n[g] for g in GROUPS) / sum(n.values())}


def rows(results: list[dict]) -> list[dict]:
    """``{"seed", "method", "before": {...}, "after": {...}}`` per seed and method (keys: groups, worst, mean)."""
    out = []
    for res in results:
        before = _row(res["before"])
        for m in METHODS:
            if m in res["after"]:
                out.append({"seed": res["seed"], "method": m, "before": before, "after": _row(res["after"][m]),
                            "alpha_final": None if m == "grpo" or not res["alpha"] else
                            {g: res["alpha"][g][-1] for g in GROUPS}})
    return out


def markdown(results: list[dict]) -> str:
    rs = rows(results)
    s = results[0]["settings"]
    head = (f"GRPO vs group-robust GRPO (eta_alpha {s['eta_alpha']}, chi {s['chi']}, {results[0]['steps']} steps), "
            f"ground-truth reward on held-out requests (mu dialect = {results[0]['mu']['dialect']:.3f})\n\n"
            "| seed | method | standard before → after | dialect before → after | worst group before → after | "
            "mean before → after | final alpha (standard / dialect) |\n|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rs:
        b, a = r["before"], r["after"]
        al = "-" if r["alpha_final"] is None else " / ".join(f"{r['alpha_final'][g]:.2f}" for g in GROUPS)
        lines.append(f"| {r['seed']} | {r['method']} | " + " | ".join(
            f"{b[k]:.3f} → {a[k]:.3f}" for k in (*GROUPS, "worst", "mean")) + f" | {al} |")
    for m in METHODS:
        sel = [r for r in rs if r["method"] == m]
        if len(sel) > 1:
            cells = []
            for k in (*GROUPS, "worst", "mean"):
                b, a = np.array([r["before"][k] for r in sel]), np.array([r["after"][k] for r in sel])
                cells.append(f"{b.mean():.3f} ± {b.std(ddof=1):.3f} → {a.mean():.3f} ± {a.std(ddof=1):.3f}")
            lines.append(f"| mean ± std | {m} | " + " | ".join(cells) + " | |")
    diffs = {k: [] for k in ("worst", "mean")}
    by = {(r["seed"], r["method"]): r for r in rs}
    for res in results:
        if (res["seed"], "grpo") in by and (res["seed"], "robust_grpo") in by:
            for k, values in diffs.items():
                values.append(by[res["seed"], "robust_grpo"]["after"][k] - by[res["seed"], "grpo"]["after"][k])
    tail = ""
    if diffs["worst"]:
        tail = ("\n\nrobust_grpo - grpo after training, per seed: worst group " +
                ", ".join(f"{d:+.3f}" for d in diffs["worst"]) + "; mean " +
                ", ".join(f"{d:+.3f}" for d in diffs["mean"]))
    return head + "\n".join(lines) + tail + "\n"


def plot(results: list[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = rows(results)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    bars = [("SFT (before)", [r["before"] for r in rs if r["method"] == "grpo"])]
    bars += [(m, [r["after"] for r in rs if r["method"] == m]) for m in METHODS]
    keys = (*GROUPS, "worst", "mean")
    x = np.arange(len(keys))
    width = 0.8 / len(bars)
    for i, (label, vals) in enumerate(bars):
        v = np.array([[r[k] for k in keys] for r in vals])
        pos = x + (i - (len(bars) - 1) / 2) * width
        ax.bar(pos, v.mean(0), width, label=label)
        for row in v:
            ax.plot(pos, row, "k.", ms=3)
    ax.set_xticks(x, [*GROUPS, "worst group", "mean"])
    ax.set_ylabel("ground-truth reward (held-out)")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    for res in results:
        if res["alpha"]:
            ax2.plot(res["alpha"]["step"], res["alpha"]["dialect"], label=f"seed {res['seed']}")
    ax2.axhline(results[0]["mu"]["dialect"], color="gray", ls="--", lw=1, label="mu (= GRPO)")
    ax2.set_xlabel("step")
    ax2.set_ylabel("alpha of the dialect group")
    ax2.set_ylim(0, 1)
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(results: list[dict], out: str, tag: str | None = None) -> str:
    base = os.path.join(out, "robust_grpo" + ("" if tag is None else f"_{tag}"))
    os.makedirs(out, exist_ok=True)
    with open(base + ".json", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    text = markdown(results)
    with open(base + ".md", "w", encoding="utf-8") as f:
        f.write(text)
    plot(results, base + ".png")
    return text
