"""The one entry point of the peer benchmarks (issue 7): writes ``OUT/results.json`` and ``OUT/results.md``.

    python benchmarks/run.py --quick --out runs/bench_quick     # small size only (< 5 minutes)
    python benchmarks/run.py --out runs/bench_full              # + the Qwen2.5-0.5B shape (long on a CPU)

In order, on this machine, in one run:
1. the float32 and bfloat16 matmul peak (``utilisation.matmul_peak``), measured again at the end;
2. sampling vs HF ``generate`` (``sampling_vs_hf.py`` in its own process);
3. one GRPO step vs TRL ``GRPOTrainer`` (``grpo_vs_trl.py``: each side its own process, alternated);
4. one DPO step vs TRL ``DPOTrainer`` (``dpo_vs_trl.py``, same);
5. utilisation of our GRPO update step = its model FLOPs / its median seconds / the float32 peak.
The 0.5B GRPO pair runs sequentially (one trainer process at a time: two 0.5B trainers with AdamW state
and a reference model do not fit the memory of a small machine together). Nothing is installed here; see
``benchmarks/README.md`` for installing the peers. Ratios are peer seconds / ours (> 1 = grpojax faster).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

import common  # noqa: E402
import dpo_vs_trl  # noqa: E402
import grpo_vs_trl  # noqa: E402
import utilisation  # noqa: E402
from sampling_vs_hf import COMMON, SIZES  # noqa: E402

MEASUREMENTS = ("sampling.small", "sampling.qwen0p5b", "grpo_step.small", "grpo_step.qwen0p5b", "dpo_step.small")
GOALS = {"grpo_step.small": 3.0, "grpo_step.qwen0p5b": 1.5, "utilisation.qwen0p5b": 0.5}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for results.json / results.md and worker logs")
    p.add_argument("--quick", action="store_true", help="the small size only")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per side after the warm-up (>= 5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    p.add_argument("--only", default=None,
                   help="comma list of measurements to run, e.g. grpo_step.qwen0p5b,sampling.small "
                        f"(from {', '.join(MEASUREMENTS)}; utilisation.<size> follows grpo_step.<size>)")
    args = p.parse_args(argv)
    if args.only is not None:
        args.only = set(x for x in args.only.split(",") if x)
        bad = sorted(args.only - set(MEASUREMENTS))
        if bad or not args.only:
            p.error(f"--only: unknown measurement(s) {bad or args.only}; choose from {', '.join(MEASUREMENTS)}")
    if args.repeats < 5:
        p.error("--repeats must be >= 5 (medians of at least 5 timed steps)")
    return args


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def run_sampling(size: str, out_dir: str, repeats: int) -> dict:
    d = os.path.join(out_dir, f"sampling_{size}")
    cmd = [sys.executable, os.path.join(HERE, "sampling_vs_hf.py"), "--sizes", size, "--out", d,
           "--repeats", str(repeats), "--overwrite"]
    with open(os.path.join(out_dir, f"sampling_{size}.log"), "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    if code != 0:
        raise RuntimeError(f"sampling_vs_hf.py exited {code}; see {log.name}")
    with open(os.path.join(d, "results.json")) as f:
        row = json.load(f)["results"][0]
    return {"ratio_vs_hf": row["ratio_ours_over_hf"], "ours_tokens_per_s": row["ours_tokens_per_s"],
            "hf_tokens_per_s": row["hf_tokens_per_s"], "ours_compile_s_estimate": row["ours_compile_s_estimate"],
            "peak_rss_mb_both_in_one_process": row["peak_rss_mb_after"],
            "workload": "batch 8, prompt 32, 64 new tokens, sample mode (sampling_vs_hf.py)", "detail": row}


def guarded(results: dict, errors: list, section: str, size: str, fn) -> None:
    """Runs one measurement; a failure is recorded (with its reason) instead of stopping the others."""
    try:
        results.setdefault(section, {})[size] = fn()
    except Exception as e:  # noqa: BLE001 - recorded, reported, and the exit status says so
        traceback.print_exc()
        results.setdefault(section, {})[size] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        errors.append(f"{section}.{size}")


def fmt(x, spec=".2f", suffix=""):
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def markdown(res: dict) -> str:
    rows = []
    for sec, peer in (("grpo_step", "TRL GRPOTrainer"), ("dpo_step", "TRL DPOTrainer")):
        for size, r in res.get(sec, {}).items():
            goal = GOALS.get(f"{sec}.{size}")
            rows.append([f"{sec} vs {peer}", size, fmt(r.get("ours_s_per_step"), ".3f", " s"),
                         fmt(r.get("trl_s_per_step"), ".3f", " s"), fmt(r.get("ratio_vs_trl"), ".2f", "x"),
                         fmt(goal, ".1f", "x") if goal else "-",
                         f"ours {fmt(r.get('ours_compile_s_estimate'), '.1f')} / TRL first step "
                         f"{fmt(r.get('trl_first_step_s'), '.1f')}",
                         f"{fmt(r.get('ours_peak_rss_mb'), '.0f')} / {fmt(r.get('trl_peak_rss_mb'), '.0f')}",
                         r.get("reason") or r.get("error", "")])
    for size, r in res.get("sampling", {}).items():
        rows.append(["sampling vs HF generate (tok/s)", size, fmt(r.get("ours_tokens_per_s"), ".1f"),
                     fmt(r.get("hf_tokens_per_s"), ".1f"), fmt(r.get("ratio_vs_hf"), ".2f", "x"), "-",
                     f"ours {fmt(r.get('ours_compile_s_estimate'), '.1f')}",
                     f"{fmt(r.get('peak_rss_mb_both_in_one_process'), '.0f')} (one process)",
                     r.get("reason") or r.get("error", "")])
    head = ["measurement", "size", "ours", "peer", "peer/ours", "goal", "compile / first step (s)",
            "peak RSS MiB ours / peer", "note"]
    text = [common.table(rows, head), ""]
    urows = []
    for size, u in res.get("utilisation", {}).items():
        goal = GOALS.get(f"utilisation.{size}")
        urows.append([size, fmt(u.get("update_step_s"), ".3f", " s"),
                      fmt(u.get("model_flops_per_step", {}).get("flops", None) and
                          u["model_flops_per_step"]["flops"] / 1e9, ".1f"),
                      fmt(u.get("achieved_flops") and u["achieved_flops"] / 1e9, ".1f"),
                      fmt(u.get("peak_f32_flops") and u["peak_f32_flops"] / 1e9, ".1f"),
                      fmt(u.get("peak_bf16_flops") and u["peak_bf16_flops"] / 1e9, ".1f"),
                      fmt(u.get("fraction_of_peak") and 100 * u["fraction_of_peak"], ".1f", "%"),
                      fmt(goal and 100 * goal, ".0f", "%") if goal else "-",
                      u.get("reason") or u.get("error", "")])
    text.append(common.table(urows, ["update step", "seconds", "model GFLOP", "achieved GFLOP/s",
                                     "f32 peak GFLOP/s", "bf16 peak GFLOP/s", "of f32 peak", "goal", "note"]))
    m = res["machine"]
    text += ["", f"{res['date']} · {m['cpu']} · {m['logical_cpus']} logical CPUs · {m['memory_gb']} GB · "
             f"`{res['uptime_start']}` at the start, `{res['uptime_end']}` at the end · "
             f"`{res['command']}` · {res['wall_s']:.0f} s"]
    return "\n".join(text) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    common.prepare_out(args.out, ["results.json", "results.md"], args.overwrite)
    t0 = time.perf_counter()
    sizes = ["small"] if args.quick else ["small", "qwen0p5b"]
    wanted = lambda m: args.only is None or m in args.only  # noqa: E731
    if args.only is not None:
        sizes = [s for s in sizes if any(m.endswith("." + s) for m in args.only)]
    res = {"command": "python " + " ".join([os.path.relpath(__file__, REPO)] +
                                            (argv if argv is not None else sys.argv[1:])),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "uptime_start": uptime(), "machine": common.machine(), "quick": args.quick,
           "only": sorted(args.only) if args.only is not None else None}
    errors: list[str] = []
    print(f"== matmul peaks ({res['uptime_start']})", flush=True)
    peaks = {"start": {dt: utilisation.matmul_peak(dt) for dt in ("float32", "bfloat16")}}
    for size in filter(lambda z: wanted(f"sampling.{z}"), sizes):
        print(f"== sampling {size}", flush=True)
        guarded(res, errors, "sampling", size, lambda: run_sampling(size, args.out, args.repeats))  # noqa: B023 (run within this iteration)
    with tempfile.TemporaryDirectory() as work:
        for size in filter(lambda z: wanted(f"grpo_step.{z}"), sizes):
            seq = size != "small"
            guarded(res, errors, "grpo_step", size, lambda: grpo_vs_trl.bench(
                size, work_dir=work, log_dir=args.out, repeats=args.repeats, sequential=seq))  # noqa: B023 (run within this iteration)
        if wanted("dpo_step.small"):
            guarded(res, errors, "dpo_step", "small", lambda: dpo_vs_trl.bench(
                "small", work_dir=work, log_dir=args.out, repeats=args.repeats))
    peaks["end"] = {dt: utilisation.matmul_peak(dt) for dt in ("float32", "bfloat16")}
    res["matmul_peak"] = peaks
    best = {dt: max(peaks[w][dt]["peak_flops"] for w in peaks) for dt in ("float32", "bfloat16")}
    for size in sizes:
        g = res.get("grpo_step", {}).get(size, {})
        if "ours_update_median_s" not in g:
            res.setdefault("utilisation", {})[size] = {"fraction_of_peak": None,
                                                       "reason": f"grpo_step.{size} failed"}
            continue
        guarded(res, errors, "utilisation", size, lambda: utilisation.utilisation(
            {**SIZES[size], "vocab_size": COMMON["vocab_size"]}, rows=grpo_vs_trl.COMPLETIONS_PER_STEP,  # noqa: B023 (run within this iteration)
            prompt_len=g["workload"]["prompt_len"], completion_len=grpo_vs_trl.COMPLETION_LEN,  # noqa: B023 (run within this iteration)
            step_s=g["ours_update_median_s"], peak_f32=best["float32"], peak_bf16=best["bfloat16"]))  # noqa: B023 (run within this iteration)
    if args.quick:
        reason = "not run with --quick (the 0.5B shape takes many minutes per step on a CPU)"
        for sec, key in (("grpo_step", "ratio_vs_trl"), ("sampling", "ratio_vs_hf"),
                         ("utilisation", "fraction_of_peak")):
            res.setdefault(sec, {})["qwen0p5b"] = {key: None, "reason": reason}
    res["uptime_end"] = uptime()
    res["wall_s"] = time.perf_counter() - t0
    res["errors"] = errors
    common.write_json(os.path.join(args.out, "results.json"), res)
    md = markdown(res)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {os.path.join(args.out, 'results.json')} and results.md")
    if errors:
        print(f"error: {len(errors)} measurement(s) failed: {', '.join(errors)} (see results.json)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
