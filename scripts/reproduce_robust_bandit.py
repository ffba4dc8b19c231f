"""Reproduce the group-robust synthetic bandit experiment (Ramesh et al. 2024, arXiv 2405.20304, sec. 5.1).

    python scripts/reproduce_robust_bandit.py --scenario uneven_imbalanced --seeds 20 --out runs/bandit

writes OUT/results.json = {method: {"worst_group_val_loss": [mean, std], "max_reward_error": [mean, std],
"avg_val_loss": [mean, std], "alpha": [alpha_0, alpha_1] or null}} (final iteration, mean / population
std over seeds), OUT/config.json (settings, dtype, timings), PNG curves, and prints a table.
``--scenario all`` runs the three scenarios into OUT/<scenario>/. An existing results.json is never
overwritten without ``--overwrite`` (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grpojax.bandit import SCENARIOS, BanditSettings, run_scenario, summarize  # noqa: E402

DPO_FAMILY = ("DPO", "IS-DPO", "GR-DPO")
IPO_FAMILY = ("IPO", "IS-IPO", "GR-IPO")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS) + ["all"])
    p.add_argument("--seeds", type=int, default=20, help="number of seeds (0..seeds-1)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results.json")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--dpo-iters", type=int, default=BanditSettings.dpo_iters)
    p.add_argument("--ipo-iters", type=int, default=BanditSettings.ipo_iters)
    p.add_argument("--eval-every", type=int, default=BanditSettings.eval_every)
    p.add_argument("--chi-sweep", default="0.25,0.5,0.75", help="comma-separated chi in (0,1); '' = none")
    p.add_argument("--ipo-alpha-update", choices=("paper", "official"), default="paper")
    p.add_argument("--gr-ipo-sample-weight", choices=("alpha", "alpha_over_n"), default="alpha")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def fmt(stat):
    return f"{stat[0]:.4f} ± {stat[1]:.4f}"


def print_table(scenario, results):
    print(f"\n=== {scenario}: final iteration, mean ± std over seeds ===")
    print(f"{'method':18s} {'worst-group val loss':>22s} {'max reward error':>20s} {'avg val loss':>20s}  alpha")
    for name, r in results.items():
        alpha = "-" if r["alpha"] is None else "[" + ", ".join(f"{a:.3f}" for a in r["alpha"]) + "]"
        print(f"{name:18s} {fmt(r['worst_group_val_loss']):>22s} {fmt(r['max_reward_error']):>20s} "
              f"{fmt(r['avg_val_loss']):>20s}  {alpha}")


def plot(scenario, out, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for family, names, key in (("dpo", DPO_FAMILY, "dpo"), ("ipo", IPO_FAMILY, "ipo")):
        iters = out["_iterations"][key]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        panels = (("worst_val_loss_I", "worst-group validation loss"),
                  ("max_reward_error_I", "max reward error"),
                  (None, "alpha of group 0 (hard and/or minority group)"))
        for ax, (field, title) in zip(axes, panels):
            for name in names:
                if field is None and not name.startswith("GR"):
                    continue
                values = out[name].alpha_IM[..., 0] if field is None else getattr(out[name], field)
                mean, std = values.mean(axis=0), values.std(axis=0)
                ax.plot(iters, mean, label=name)
                ax.fill_between(iters, mean - std, mean + std, alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("iteration")
            ax.legend()
        fig.suptitle(f"{scenario}: {family.upper()} family (mean ± std over seeds)")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{family}_curves.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    chis = sorted(k for k in out if k.startswith("GR-DPO(chi="))
    if chis:
        labels = ["IS-DPO"] + chis + ["GR-DPO"]
        xs = [0.0] + [float(k[len("GR-DPO(chi="):-1]) for k in chis] + [1.0]
        fig, ax = plt.subplots(figsize=(6, 4))
        for field, title in (("worst_val_loss_I", "worst-group val loss"), ("avg_val_loss_I", "avg val loss")):
            ys = [getattr(out[k], field)[:, -1].mean() for k in labels]
            ax.plot(xs, ys, marker="o", label=title)
        ax.set_xlabel("chi  (weights (1 - chi)/K + chi alpha)")
        ax.set_title(f"{scenario}: GR-DPO trade-off")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, "chi_tradeoff.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def run_one(scenario, args, settings, out_dir):
    start = time.time()

    def progress(family, done, total):
        print(f"[{scenario}] {family}: {done}/{total} iterations ({time.time() - start:.1f} s)", flush=True)

    out = run_scenario(scenario, args.seeds, settings, progress=progress)
    elapsed = time.time() - start
    names = [k for k in out if not k.startswith("_")]
    results = {name: summarize(out[name], robust=name.startswith("GR")) for name in names}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    config = {
        "scenario": scenario, "seeds": args.seeds, "dtype": args.dtype, "train_group_sizes": out["_group_sizes"],
        "settings": dataclasses.asdict(settings), "seconds": round(elapsed, 1), "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print_table(scenario, results)
    for path in plot(scenario, out, out_dir):
        print(f"wrote {path}")
    print(f"wrote {os.path.join(out_dir, 'results.json')}  ({elapsed:.1f} s for {args.seeds} seeds)")


def main(argv=None):
    args = parse_args(argv)
    try:
        chi_sweep = tuple(float(c) for c in args.chi_sweep.split(",") if c.strip())
        settings = BanditSettings(
            dpo_iters=args.dpo_iters, ipo_iters=args.ipo_iters, eval_every=args.eval_every,
            chi_sweep=chi_sweep, ipo_alpha_update=args.ipo_alpha_update,
            gr_ipo_sample_weight=args.gr_ipo_sample_weight)
        if settings.dpo_iters % settings.eval_every:
            raise ValueError(f"--dpo-iters {settings.dpo_iters} must be a multiple of "
                             f"--eval-every {settings.eval_every}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scenarios = sorted(SCENARIOS) if args.scenario == "all" else [args.scenario]
    dirs = {s: (os.path.join(args.out, s) if args.scenario == "all" else args.out) for s in scenarios}
    existing = [p for p in (os.path.join(d, "results.json") for d in dirs.values()) if os.path.exists(p)]
    if existing and not args.overwrite:
        print(f"error: {', '.join(existing)} already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    with jax.enable_x64(args.dtype == "float64"):
        for s in scenarios:
            run_one(s, args, settings, dirs[s])
    return 0


if __name__ == "__main__":
    sys.exit(main())
