"""Profile our side of the GRPO benchmark step: per-phase times and, from a JAX profiler trace, the XLA ops
that take the time.

    python benchmarks/profile_grpo_step.py --size small --out runs/profile_grpo [--steps 5] [--top 25]

Runs exactly the step of ``grpo_vs_trl.py``'s ``ours`` worker (rollout, reference forward, update) on the
same random checkpoint, in this process: ``--steps`` timed steps after one warm-up, then one more step
under ``jax.profiler.trace(OUT/trace)``. Prints the median seconds of each phase and, from the trace's
per-thunk events, the total op time per compiled program and its ``--top`` ops (op time summed over
threads, so it can exceed wall time); writes both to ``OUT/profile.json``. Nothing is compared here: the
side-by-side numbers are ``run.py``'s.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402
from grpo_vs_trl import build_checkpoint, worker_ours  # noqa: E402
from sampling_vs_hf import SIZES  # noqa: E402


def op_times(trace_dir: str, top: int) -> dict:
    """``{program: {"total_ms": t, "top": [[op, ms, calls], ...]}}`` from a profiler trace directory."""
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise SystemExit(f"error: no *.trace.json.gz under {trace_dir}")
    with gzip.open(files[0]) as f:
        events = json.load(f)["traceEvents"]
    per_op = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        args = e.get("args") or {}
        if e.get("ph") == "X" and "hlo_module" in args:
            key = (args["hlo_module"], args.get("hlo_op", e["name"]))
            per_op[key][0] += e["dur"] / 1e3
            per_op[key][1] += 1
    out = {}
    for (module, op), (ms, calls) in per_op.items():
        m = out.setdefault(module, {"total_ms": 0.0, "top": []})
        m["total_ms"] += ms
        m["top"].append([op, ms, calls])
    for m in out.values():
        m["top"] = sorted(m["top"], key=lambda r: -r[1])[:top]
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["total_ms"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    common.prepare_out(args.out, ["profile.json"], args.overwrite)
    import jax

    captured = {}
    with tempfile.TemporaryDirectory() as work:
        ckpt = os.path.join(work, "ckpt")
        build_checkpoint(args.size, args.seed, ckpt)
        ns = argparse.Namespace(ckpt=ckpt, seed=args.seed, num_prompts=2 * (args.steps + 2), prompt_len=16)
        worker_ours(ns, serve_fn=lambda step, ready: captured.update(step=step))
        step = captured["step"]
        step()  # warm-up: compilation
        rows = [step() for _ in range(args.steps)]
        trace = os.path.join(args.out, "trace")
        with jax.profiler.trace(trace):
            step()
    phases = {k: statistics.median(r[k] for r in rows) for k in ("rollout_s", "ref_s", "update_s")}
    programs = op_times(trace, args.top)
    common.write_json(os.path.join(args.out, "profile.json"),
                      {"machine": common.machine(), "size": args.size, "phases_median_s": phases,
                       "steps": rows, "programs": programs})
    print("median seconds:", {k: round(v, 3) for k, v in phases.items()})
    for module, m in programs.items():
        if m["total_ms"] < 1.0:
            continue
        print(f"\n{module}: {m['total_ms']:.1f} ms of op time")
        for op, ms, calls in m["top"]:
            print(f"  {ms:9.1f} ms {calls:5d} x  {op}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
