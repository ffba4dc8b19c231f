"""IPO vs GR-IPO and DPO vs GR-DPO on the demo's group-opinion task over many seeds: the paired table.

    python scripts/robust_demo_seeds.py --seeds 10-19 --out runs/robust_demo [--runs ipo,gr_ipo,dpo,gr_dpo]
        [--pref train.learning_rate=5e-4 ...] [--tag _lr5e-4] [--table-only]

For every seed this runs the demo's opinion stages only (world of that seed, ``opinion_sft`` = the
reference, then every run of ``--runs`` with the demo's configs in ``configs/demo/`` plus the ``--pref``
overrides), all in this one process (``scripts/opinion_ablation.py``'s ``main`` per seed, into
``OUT/s<seed>``; a seed whose ``ablation<tag>.json`` already holds every run is reused, so an
interrupted sweep resumes). Then it tabulates, per pair (IPO vs GR-IPO, DPO vs GR-DPO): each seed's
worst-group test loss (max over the four groups), mean-group test loss (unweighted mean over the
groups), worst-group test reward accuracy, and the paired difference robust - plain; over seeds the
mean +- sample std, the number of seeds where the robust loss is lower, and the paired difference's
mean, std, min and max. The table goes to stdout and ``OUT/table<tag>.md``, the numbers to
``OUT/table<tag>.json``. ``docs/robust_demo.md`` shows the result and the settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from grpojax import cli  # noqa: E402
from grpojax.cli import UserError  # noqa: E402

PAIRS = (("ipo", "gr_ipo"), ("dpo", "gr_dpo"))
LABEL = {"ipo": "IPO", "gr_ipo": "GR-IPO", "dpo": "DPO", "gr_dpo": "GR-DPO"}


def parse_seeds(text: str) -> list[int]:
    """``"10-19"`` / ``"10,12,15"`` / ``"10-12,20"`` -> sorted distinct seeds; bad text is a UserError."""
    seeds = set()
    for part in filter(None, text.split(",")):
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise UserError(f"--seeds: {part!r} is not a seed or a range like 10-19") from None
        if b < a or a < 0:
            raise UserError(f"--seeds: {part!r}: need 0 <= first <= last")
        seeds.update(range(a, b + 1))
    if not seeds:
        raise UserError("--seeds: no seed given (e.g. --seeds 10-19)")
    return sorted(seeds)


def seed_row(runs: dict, plain: str, robust: str) -> dict:
    """One seed's numbers of a pair from its ``ablation.json`` ``runs`` entries (``plain`` / ``robust`` keys)."""
    out = {}
    for name, key in ((plain, "plain"), (robust, "robust")):
        r = runs[name]
        out[key] = {"worst": r["worst_group_test_loss"], "mean": float(np.mean(list(r["group_test_loss"].values()))),
                    "worst_acc": r["worst_group_test_reward_accuracy"], "groups": r["group_test_loss"]}
        if "alpha" in r:
            out[key]["alpha"] = r["alpha"]
    out["diff_worst"] = out["robust"]["worst"] - out["plain"]["worst"]
    out["diff_mean"] = out["robust"]["mean"] - out["plain"]["mean"]
    return out


def _ms(values) -> str:
    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def sign_test_p(wins: int, n: int) -> float:
    """Exact two-sided sign test: P(a Binomial(n, 1/2) count at least as far from n/2 as ``wins``)."""
    if n == 0:
        return 1.0
    k = min(wins, n - wins)
    return min(1.0, 2.0 * sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n)


def summarise(rows: dict[int, dict]) -> dict:
    """Over-seed statistics of :func:`seed_row` results (``{seed: row}``): means, sample stds, wins."""
    d_w = np.array([r["diff_worst"] for r in rows.values()])
    d_m = np.array([r["diff_mean"] for r in rows.values()])
    stat = {"seeds": len(rows), "robust_lower_worst": int(np.sum(d_w < 0)), "robust_lower_mean": int(np.sum(d_m < 0))}
    for name, v in (("diff_worst", d_w), ("diff_mean", d_m)):
        std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        stat[name] = {"mean": float(v.mean()), "std": std, "sem": std / np.sqrt(len(v)),
                      "min": float(v.min()), "max": float(v.max()), "median": float(np.median(v)),
                      "sign_test_p": sign_test_p(int(np.sum(v < 0)), int(np.sum(v != 0)))}
    for key in ("plain", "robust"):
        for m in ("worst", "mean", "worst_acc"):
            v = np.array([r[key][m] for r in rows.values()])
            stat[f"{key}_{m}"] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return stat


def pair_table(rows: dict[int, dict], plain: str, robust: str) -> str:
    """Markdown: one line per seed, then mean ± std over seeds, then the paired-difference summary."""
    P, R = LABEL.get(plain, plain), LABEL.get(robust, robust)
    head = (f"| seed | {P} worst-group | {R} worst-group | {R} - {P} | {P} mean-group | {R} mean-group | "
            f"{R} - {P} (mean) | {P} / {R} worst-group reward acc. | {R} final alpha |")
    lines = [head, "|" + "---|" * 9]
    for s, r in sorted(rows.items()):
        alpha = " / ".join(f"{a:.2f}" for a in r["robust"].get("alpha", {}).values())
        lines.append(f"| {s} | {r['plain']['worst']:.3f} | {r['robust']['worst']:.3f} | {r['diff_worst']:+.3f} | "
                     f"{r['plain']['mean']:.3f} | {r['robust']['mean']:.3f} | {r['diff_mean']:+.3f} | "
                     f"{r['plain']['worst_acc']:.3f} / {r['robust']['worst_acc']:.3f} | {alpha} |")
    def col(k, m):
        return _ms([r[k][m] for r in rows.values()])

    lines.append(f"| mean ± std | {col('plain', 'worst')} | {col('robust', 'worst')} | "
                 f"{_ms([r['diff_worst'] for r in rows.values()])} | {col('plain', 'mean')} | "
                 f"{col('robust', 'mean')} | "
                 f"{_ms([r['diff_mean'] for r in rows.values()])} | {col('plain', 'worst_acc')} / "
                 f"{col('robust', 'worst_acc')} | |")
    st = summarise(rows)
    dw, dm = st["diff_worst"], st["diff_mean"]
    lines.append("")
    lines.append(f"{R} has the lower worst-group test loss on {st['robust_lower_worst']} of {st['seeds']} seeds; "
                 f"paired difference {R} - {P}: mean {dw['mean']:+.3f} (standard error {dw['sem']:.3f}), "
                 f"std {dw['std']:.3f}, "
                 f"median {dw['median']:+.3f}, range {dw['min']:+.3f} .. {dw['max']:+.3f}; sign test p = "
                 f"{dw['sign_test_p']:.2f}. Mean-group loss lower on "
                 f"{st['robust_lower_mean']} of {st['seeds']}; difference mean {dm['mean']:+.3f}, std {dm['std']:.3f}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="10-19")
    p.add_argument("--out", required=True)
    p.add_argument("--runs", default="ipo,gr_ipo,dpo,gr_dpo")
    p.add_argument("--pref", nargs="*", default=[], help="overrides of every preference run")
    p.add_argument("--tag", default="", help="suffix of the runs' directories and of the JSON / table files")
    p.add_argument("--table-only", action="store_true", help="tabulate the finished seeds, train nothing")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    import opinion_ablation

    names = [loss + args.tag for loss, _ in opinion_ablation.parse_runs(args.runs)]
    results = {}
    for seed in seeds:
        sdir = os.path.join(args.out, f"s{seed}")
        path = os.path.join(sdir, f"ablation{args.tag}.json")
        have = {}
        if os.path.isfile(path):
            with open(path) as f:
                have = json.load(f)["runs"]
        if not all(n in have for n in names):
            if args.table_only:
                print(f"seed {seed}: not finished ({path}), left out", flush=True)
                continue
            argv_seed = ["--seed", str(seed), "--out", sdir, "--runs", args.runs, "--tag", args.tag]
            opinion_ablation.main(argv_seed + (["--pref", *args.pref] if args.pref else []))
            with open(path) as f:
                have = json.load(f)["runs"]
        results[seed] = have
    if not results:
        raise UserError(f"no finished seed under {args.out}")
    tables, numbers = [], {}
    for plain, robust in PAIRS:
        if plain + args.tag in names and robust + args.tag in names:
            rows = {s: seed_row(r, plain + args.tag, robust + args.tag) for s, r in results.items()}
            tables.append(pair_table(rows, plain, robust))
            numbers[f"{plain}_vs_{robust}"] = {"per_seed": rows, "summary": summarise(rows)}
    text = "\n\n".join(tables)
    print(text)
    with open(os.path.join(args.out, f"table{args.tag}.md"), "w") as f:
        f.write(f"Seeds {', '.join(map(str, results))}; --pref {' '.join(args.pref) or '(none)'}\n\n{text}\n")
    with open(os.path.join(args.out, f"table{args.tag}.json"), "w") as f:
        json.dump({"seeds": list(results), "pref": args.pref, "pairs": numbers}, f, indent=2)
    return 0


if __name__ == "__main__":
    cli.main(main)
