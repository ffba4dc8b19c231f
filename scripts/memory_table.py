"""Writes docs/memory_plan.md: the largest GRPO batch per step that fits each device's HBM.

    python scripts/memory_table.py --out docs/memory_plan.md [--only v5e-16,h100x8] [--models qwen2.5-7b]
    python scripts/memory_table.py --validate v5e-8:qwen2.5-0.5b:0   # full-depth check of one row
    python scripts/memory_table.py --render-only                     # rewrite --out from the caches

For every (shape, model, full fine-tune | LoRA) it compiles the real GRPO step with
``scripts/plan_memory.py`` machinery (mesh ``fsdp`` = every device, bf16 params, float32 Adam,
remat=full, log-prob chunks of 128) at 1 and 2 decoder layers and 1 and 2 sequences per device, fits
XLA's per-device bytes as ``m(L, b) = m0 + m1 L + (c0 + c1 L) b`` (four points, four unknowns: exact
for a stack of identical layers whose memory is affine in the batch), and extrapolates to the real
depth ``L``: ``fixed = m0 + m1 L``, ``per_seq = c0 + c1 L``, ``max b = floor((0.9 HBM - fixed) / per_seq)``.
A full-depth compile of every row would take hours on a 2-core machine; ``--validate`` compiles one
row at full depth at its predicted max batch and one sequence per device more, and the comparison is
rendered into the document.

Each compiled point is appended to a JSON-lines cache (``--cache``) as soon as it finishes, so an
interrupted run resumes at point granularity; two runs with disjoint ``--only`` lists may share the
cache (one line per ``write``, opened in append mode).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

from plan_memory import H100_HBM, TOPOLOGIES  # noqa: E402

SHAPES = ["v5e-8", "v5e-16", "v5e-32", "v5p-8", "v5p-16", "h100x8"]
MODELS = ["qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-14b"]
LORA_RANK = 16
HEADROOM = 0.9  # keep 10% of HBM for the runtime, fragmentation and the sampler
SEQS = (2, 4)  # sequences per device of the fit: past the small-b regime where a b-independent buffer peaks
POINTS = tuple((L, b) for L in (1, 2) for b in SEQS)  # (layers, sequences per device)
GIB, MIB = 2**30, 2**20


def shape_devices(shape: str) -> int:
    return TOPOLOGIES[shape][1] if shape in TOPOLOGIES else 8


def shape_hbm(shape: str) -> int:
    return TOPOLOGIES[shape][2] if shape in TOPOLOGIES else H100_HBM


def plan_argv(shape, model, lora, seq, layers, batch, libtpu=None):
    argv = ["--model", model, "--mesh", "fsdp=-1", "--batch", str(batch), "--seq", str(seq),
            "--lora-rank", str(lora), "--remat", "full"]
    if layers is not None:
        argv += ["--layers", str(layers)]
    argv += ["--topology", shape] if shape in TOPOLOGIES else ["--devices", "8"]
    if libtpu:
        argv += ["--libtpu-path", libtpu]
    return argv


def fit_row(pts: dict, num_layers: int, hbm: int, devices: int, headroom: float = HEADROOM) -> dict:
    """Solves ``m(L, b) = m0 + m1 L + (c0 + c1 L) b`` from the four points ``{(L, b): bytes}`` at
    ``L in {1, 2}``, ``b in SEQS`` and extrapolates to ``num_layers``; returns fixed / per-sequence bytes and
    the largest whole number of sequences per device with ``fixed + per_seq b <= headroom * hbm``."""
    missing = [k for k in POINTS if k not in pts]
    if missing:
        raise ValueError(f"fit_row: missing points {missing} (have {sorted(pts)})")
    b1, b2 = SEQS
    slope = {L: (pts[(L, b2)] - pts[(L, b1)]) / (b2 - b1) for L in (1, 2)}  # bytes per sequence at depth L
    icept = {L: pts[(L, b1)] - slope[L] * b1 for L in (1, 2)}            # ... and at b = 0
    c1, m1 = slope[2] - slope[1], icept[2] - icept[1]
    c0, m0 = slope[1] - c1, icept[1] - m1
    fixed, per_seq = m0 + m1 * num_layers, c0 + c1 * num_layers
    budget = headroom * hbm
    b_max = int((budget - fixed) // per_seq) if per_seq > 0 and budget > fixed else 0
    return {"fixed_bytes": int(fixed), "per_seq_bytes": int(per_seq), "max_seqs_per_device": b_max,
            "max_batch": b_max * devices, "coefficients": {"m0": m0, "m1": m1, "c0": c0, "c1": c1}}


def predicted_bytes(row: dict, seqs_per_device: int) -> int:
    return int(row["fixed_bytes"] + row["per_seq_bytes"] * seqs_per_device)


def full_depth_fits(vals: list[dict], headroom: float = HEADROOM) -> list[dict]:
    """Per (shape, model, lora): the affine fit ``fixed + per_seq b`` through the two compiled full-depth
    validation points with the smallest distinct per-device batches, and its max batch (None when the
    cost per sequence is not positive)."""
    groups: dict = {}
    for v in vals:
        if v["per_device_bytes"] is not None:
            groups.setdefault((v["shape"], v["model"], v["lora_rank"]), {})[v["b"]] = v
    out = []
    for (shape, model, lora), by_b in sorted(groups.items()):
        if len(by_b) < 2:
            continue
        b1, b2 = sorted(by_b)[:2]
        m1, m2 = by_b[b1]["per_device_bytes"], by_b[b2]["per_device_bytes"]
        per_seq = (m2 - m1) / (b2 - b1)
        fixed = m1 - per_seq * b1
        budget = headroom * by_b[b1]["hbm_bytes"]
        b_max = int((budget - fixed) // per_seq) if per_seq > 0 and budget > fixed else 0
        out.append({"shape": shape, "model": model, "lora_rank": lora, "b1": b1, "b2": b2,
                    "fixed_bytes": int(fixed), "per_seq_bytes": int(per_seq),
                    "max_batch": b_max * shape_devices(shape) if per_seq > 0 else None})
    return out


def read_cache(path: str) -> list[dict]:
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:  # a line cut by a kill: say where, keep the rest
                print(f"memory_table: {path}:{i}: skipping unreadable line ({e})", file=sys.stderr)
    return out


def append_cache(path: str, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def point_key(r):
    return (r["shape"], r["model"], r["lora_rank"], r["seq"], r["layers"], r["b"])


def rows_from_points(points: list[dict], seq: int) -> list[dict]:
    """Every (shape, model, lora) whose four points are in the cache, fitted."""
    from grpojax.models import PRESETS

    groups: dict = {}
    for p in points:
        if p.get("type") == "point" and p["seq"] == seq:
            groups.setdefault((p["shape"], p["model"], p["lora_rank"]), {})[(p["layers"], p["b"])] = p
    rows = []
    for (shape, model, lora), pts in groups.items():
        if not all(k in pts for k in POINTS):
            continue
        n = shape_devices(shape)
        row = fit_row({k: v["per_device_bytes"] for k, v in pts.items()}, PRESETS[model].num_layers,
                      shape_hbm(shape), n)
        row.update(shape=shape, devices=n, model=model, lora_rank=lora, seq=seq, hbm_bytes=shape_hbm(shape),
                   backend=pts[POINTS[0]]["backend"],
                   compile_seconds=sum(pts[k]["compile_seconds"] for k in POINTS))
        rows.append(row)
    order = {s: i for i, s in enumerate(SHAPES)}
    return sorted(rows, key=lambda r: (order.get(r["shape"], 99), MODELS.index(r["model"]), r["lora_rank"]))


def worker(shape: str, seq: int, libtpu, todo: list[tuple[str, int, int, int]]) -> None:
    """Runs in a fresh process per shape (the backend is fixed at jax import); prints one JSON point per
    compile. ``todo``: (model, lora_rank, layers, seqs per device)."""
    import plan_memory as pm

    n = shape_devices(shape)
    failed = set()
    for model, lora, layers, b in todo:
        if (model, lora) in failed:
            continue
        try:
            r = pm.plan(pm.parse_args(plan_argv(shape, model, lora, seq, layers, b * n, libtpu)))
            if r["per_device_bytes"] is None:
                raise RuntimeError(f"compiler rejected the point: {r['compile_error']}")
        except Exception as e:  # one row failing must not lose the others: say which, go on
            print(f"memory_table: {shape} {model} lora={lora} L={layers} b={b} FAILED: "
                  f"{type(e).__name__}: {str(e)[:500]}", file=sys.stderr, flush=True)
            failed.add((model, lora))
            continue
        print(json.dumps({"type": "point", "shape": shape, "model": model, "lora_rank": lora, "seq": seq,
                          "layers": layers, "b": b, "devices": n, "per_device_bytes": r["per_device_bytes"],
                          "temp_bytes": r["temp_bytes"], "argument_bytes": r["argument_bytes"],
                          "backend": r["backend"], "compile_seconds": r["compile_seconds"]}), flush=True)
    if failed:
        raise SystemExit(f"memory_table: {shape}: failed rows {sorted(failed)} (see above)")


def run_subprocess(cmd: list[str], cache: str, on_record) -> int:
    """Streams JSON lines of ``cmd`` into ``cache`` (and ``on_record``) as they come."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            append_cache(cache, rec)
            on_record(rec)
    return proc.returncode


def validate(spec: str, args) -> int:
    """``shape:model:lora[:seqs_per_device,...]``: full-depth compiles at the predicted max batch and one
    sequence per device more (or at the given per-device counts); appends records to the cache."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or parts[0] not in SHAPES or parts[1] not in MODELS:
        raise SystemExit(f"--validate {spec!r}: expected shape:model:lora_rank[:b1,b2] with shape in "
                         f"{SHAPES} and model in {MODELS}")
    shape, model, lora = parts[0], parts[1], int(parts[2])
    row = next((r for r in rows_from_points(read_cache(args.cache), args.seq)
                if (r["shape"], r["model"], r["lora_rank"]) == (shape, model, lora)), None)
    if row is None:
        raise SystemExit(f"--validate {spec!r}: no fitted row in {args.cache}; run the table for it first")
    bs = ([int(x) for x in parts[3].split(",")] if len(parts) == 4
          else [max(row["max_seqs_per_device"], 1), row["max_seqs_per_device"] + 1])
    if args.shape_worker:
        import plan_memory as pm
        n = shape_devices(shape)
        for b in bs:
            r = pm.plan(pm.parse_args(plan_argv(shape, model, lora, args.seq, None, b * n, args.libtpu_path)))
            print(json.dumps({"type": "validation", "shape": shape, "model": model, "lora_rank": lora,
                              "seq": args.seq, "b": b, "batch": b * n, "per_device_bytes": r["per_device_bytes"],
                              "predicted_bytes": predicted_bytes(row, b), "hbm_bytes": shape_hbm(shape),
                              "backend": r["backend"], "compile_seconds": r["compile_seconds"],
                              "compile_error": r["compile_error"]}), flush=True)
        return 0
    cmd = [sys.executable, __file__, "--validate", f"{shape}:{model}:{lora}:{','.join(map(str, bs))}",
           "--shape-worker", "--seq", str(args.seq), "--cache", args.cache]
    if args.libtpu_path:
        cmd += ["--libtpu-path", args.libtpu_path]
    rc = run_subprocess(cmd, args.cache, lambda rec: (print(json.dumps(rec), flush=True),
                                                      render(args.cache, args.out, args.seq)))
    return 1 if rc else 0

LEVERS = """
## Levers (what the plan assumes, and how to change it)

| lever | where | effect on the numbers above |
|---|---|---|
| FSDP over `fsdp` | `grpojax.sharding` rules: `embed` -> `fsdp` | params + moments divided by the chip count (the `fixed` column) |
| bf16 params, f32 AdamW | `grpojax.sharding.f32_optimizer_state(tx)` + `Qwen(param_dtype=bfloat16)` | 10 B/param resident (2 + 4 + 4) instead of 12 (f32 params + moments) + transient grads |
| LoRA-only optimizer state | `TrainState.params` = `nnx.LoRAParam` only (runner `model.lora.rank`) | moments for the adapters only; base stays bf16 and sharded |
| remat | `Qwen(remat="none" / "block" / "full")` | `full` keeps one `[B, T, D]` per layer; `block` also the matmul outputs |
| chunked log-probs | `completion_logprobs(chunk_size=...)` | `[B, chunk, V]` float32 logits at a time instead of `[B, L, V]` (tested in `tests/test_sharding_memory.py`) |
| LM head on the batch sharding | `completion_logprobs` under `jit_step`'s mesh | logits `[B, chunk, V]` split over (data, fsdp) (V over tensor): per-sequence memory independent of the device count; the head table is gathered per device (`fixed`) |
| gradient accumulation | `grpo_step(num_micro=...)` | activation memory of `batch / num_micro` sequences; the `fixed` part unchanged |

Check one configuration at FULL depth (no extrapolation), e.g. the 7B row on v5e-16:

    pip install -e .[tpu-plan]
    python scripts/plan_memory.py --model qwen2.5-7b --mesh fsdp=16 --batch 16 --seq 1024 --topology v5e-16

`--json` prints one object with `per_device_bytes`, `flops_per_step` (XLA's count of the per-device
program x devices; a lower bound: XLA counts a `while` body once, so the chunked LM head is undercounted)
and `model_flops_per_step` (the MFU count: 6 N T + attention); `--kind dpo` plans the preference step.
"""


CAVEATS = """
## Read this before using the numbers

- **The LM head is pinned to the batch sharding (fixed in this version).** Before, nothing pinned the
  `[B, chunk, V]` logits of `completion_logprobs`; GSPMD split the head's contraction over the
  FSDP-sharded `D` instead and every device held float32 logits for the whole global batch, so the cost
  of one more sequence per device grew with the device count. `completion_logprobs` now constrains the
  hidden chunk and its logits to B over `(data, fsdp)` (V over `tensor`) whenever the step is traced
  under a mesh (`grpojax.sharding.jit_step` does that); test:
  `tests/test_sharding_memory.py::test_lm_head_memory_per_sequence_does_not_grow_with_devices`. Measured
  with `python scripts/plan_memory.py --model qwen2.5-0.5b --layers 1 --seq 256 --devices N --mesh
  fsdp=N --batch N*b --json` (CPU compiler), bytes per device of one more sequence per device:

  | N | before, b 2 -> 4 | after, b 2 -> 4 | after, b 4 -> 8 |
  |---|---|---|---|
  | 2 | 643 MB | 160 MB | 236 MB |
  | 8 | 1926 MB | 203 MB | 276 MB |

  (a residual +17% from N=2 to N=8 remains, down from 3x; not investigated: a candidate is the same
  contraction-vs-gather choice in the decoder blocks, whose activations are not pinned.)
  The price is a fixed one: each device all-gathers the LM-head table (the tied embedding for 0.5B) and,
  in full fine-tuning, holds its full-size gradient before the reduce-scatter, about `V D (2 + 4)` bytes
  (0.8 GB for 0.5B, 3.3 GB for 7B, 4.7 GB for 14B; measured on the 0.5B plan above at N=2: +1.05 GB
  per device at b=1), which is in the `fixed` column. A vocabulary-parallel head (V over `fsdp` too)
  would remove it; not done.
- **Fit range.** The fit uses 2 and 4 sequences per device, not 1 and 2: at one or two sequences a
  b-independent buffer (the gathered head and its gradient, the optimizer update) sets the peak and hides
  the activations (CPU compiler, 0.5B, fsdp=8, 1 layer, 1024 tokens: +0.66 GB from b=1 to 2, +1.03 GB per
  sequence from 2 to 4 and from 4 to 8). Rows marked **(e)** have a max below 2 sequences per device:
  there the affine model is extrapolated below its range and underestimates, so treat them as
  "does not fit usefully" unless a full-depth validation row says otherwise.
- **(c) H100 rows come from the CPU compiler** (8 fake devices): its fusion, scheduling and buffer reuse
  differ from XLA:GPU (it keeps far more per sequence than libtpu does for the same program), so they are
  a pessimistic bound, not a plan. A GPU compile (or a real run) is needed.
- **(g) no extrapolation**: the per-sequence cost falls with depth at 1-2 layers (`c1 < 0`: libtpu
  schedules the 2-layer program in less memory per sequence than the 1-layer one), so the fit gives a
  negative cost per sequence at full depth; `fixed` is shown, the batch is not. Only a full-depth compile
  (`--validate`) answers for these rows. libtpu's small programs are not even monotone in the batch
  (v5p-8, 7B full, 1 layer: 7.50 GiB per chip at b=2, 7.04 at b=4), so any TPU row extrapolated from
  1-2 layers is a rough guide until a full-depth validation backs it.
- **(f) the fit is not affine there**: the fixed part falls with depth (`m1 < 0`, impossible for a
  stack of layers that each add parameters), i.e. at 1-2 layers the peak is set by buffers that do not
  add up layer by layer. The fitted numbers are shown so that the failure is visible; no max batch is
  derived from them. Trust a full-depth validation row instead.
- The extrapolation assumes memory affine in depth and batch; the validation section (when present)
  checks rows at full depth.
"""


def _tuning(lora_rank: int) -> str:
    return f"LoRA r={lora_rank}" if lora_rank else "full"


def write_markdown(rows: list[dict], vals: list[dict], path: str, seq: int, pending=(), partial=()) -> None:
    lines = [
        "# Memory plan: largest GRPO batch that fits",
        "",
        "Generated by `python scripts/memory_table.py --out docs/memory_plan.md` (see its docstring for the",
        "method). Every number comes from XLA's `compiled.memory_analysis()` of the real `grpo_step`",
        f"(prompt {seq // 2} + completion {seq - seq // 2} = {seq} tokens per sequence, bf16 params and",
        "activations, float32 AdamW moments (`f32_optimizer_state`), `remat=full`, log-prob chunks of 128,",
        "mesh `fsdp` = all devices, state donated), compiled at 1-2 layers and 2 and 4 sequences per chip and",
        f"extrapolated linearly in depth and batch. Budget: {int(HEADROOM * 100)}% of HBM. HBM assumed: TPU v5e",
        "16 GiB/chip, TPU v5p 95 GiB/chip, H100 80 GB. TPU rows are compiled by libtpu for that topology",
        "(compile-only, on a CPU machine); **H100 rows come from the CPU compiler with 8 fake devices**",
        "(an approximation: GPU fusion, scheduling and kernels differ). LoRA: rank "
        f"{LORA_RANK} on q,k,v,o,gate,up,down; the frozen base is bf16 and FSDP-sharded.",
        "`max batch` = sequences per optimizer step (GRPO: prompts x G) without gradient accumulation",
        "(use `num_micro` for more); 0 = the state alone does not fit. v5p-8 is 4 chips (8 TensorCores).",
        "`compile s` = wall seconds of the four compiles behind the row (on a shared 2-core machine).",
        "",
        "| shape | chips | model | tuning | fixed GiB/chip | MiB per sequence | max batch | backend | compile s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["per_seq_bytes"] <= 0:  # (g): no extrapolation to report
            flag, per_seq, max_batch = " (g)", "-", "-"
        else:
            flag = " (e)" if r["max_seqs_per_device"] < SEQS[0] else ""
            per_seq = f"{r['per_seq_bytes'] / MIB:.0f}"
            max_batch = "-" if r["coefficients"]["m1"] < 0 else str(r["max_batch"])  # (f): the fit is broken
        lines.append(f"| {r['shape']} | {r['devices']} | {r['model']} | {_tuning(r['lora_rank'])}{flag}"
                     f"{' (f)' if r['coefficients']['m1'] < 0 else ''} | "
                     f"{r['fixed_bytes'] / GIB:.2f} | {per_seq} | {max_batch} | "
                     f"{r['backend'].split(';')[0].split(' (')[0]} | {r['compile_seconds']:.0f} |")
    lines += CAVEATS.rstrip("\n").split("\n")
    if pending:
        lines += ["", "Not computed (a libtpu compile of one 7B / 14B point takes many minutes on the shared 2-core",
                  "machine that generated this file, see `compile s`; the run did h100x8 and v5p-8 first and did not",
                  "finish these (the points it did compile are listed below); rerun the command above, it resumes",
                  "from `runs/memory_table.jsonl`): "
                  + ", ".join(pending) + "."]
    if partial:
        lines += ["", "Compiled points of rows not complete (per-device GiB of the real step at `layers` decoder layers",
                  "and `b` sequences per chip; libtpu's numbers need not grow with `b` at 1-2 layers, see (g)):", "",
                  "| shape | model | tuning | layers | b | GiB/chip | compile s |", "|---|---|---|---|---|---|---|"]
        order = {sh: i for i, sh in enumerate(SHAPES)}
        for p in sorted(partial, key=lambda p: (order.get(p["shape"], 99), MODELS.index(p["model"]), p["lora_rank"],
                                                p["layers"], p["b"])):
            lines.append(f"| {p['shape']} | {p['model']} | {_tuning(p['lora_rank'])} | {p['layers']} | {p['b']} | "
                         f"{p['per_device_bytes'] / GIB:.3f} | {p['compile_seconds']:.0f} |")
    if vals:
        lines += ["", "## Validation: full-depth compiles against the extrapolation", "",
                  "`python scripts/memory_table.py --validate SHAPE:MODEL:LORA_RANK` compiles the row at its real",
                  "depth (no `--layers`) at the predicted max batch and at one sequence per chip more, or at the",
                  "sequences per chip given (`SHAPE:MODEL:LORA_RANK:b1,b2`).", "",
                  "| shape | model | tuning | batch | predicted GiB/chip | compiled GiB/chip | error | "
                  f"fits {int(HEADROOM * 100)}% HBM | compile s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        oom = []
        for v in vals:
            if v["per_device_bytes"] is None:  # the compiler itself said it does not fit
                why = str(v.get("compile_error")).rstrip(".")
                oom.append(f"{v['shape']} {v['model']} batch {v['batch']}: `{why}`")
                compiled, err, fits = "out of memory (o)", "-", "no"
            else:
                compiled = f"{v['per_device_bytes'] / GIB:.3f}"
                err = f"{(v['predicted_bytes'] - v['per_device_bytes']) / v['per_device_bytes']:+.1%}"
                fits = "yes" if v["per_device_bytes"] <= HEADROOM * v["hbm_bytes"] else "no"
            lines.append(f"| {v['shape']} | {v['model']} | {_tuning(v['lora_rank'])} | {v['batch']} | "
                         f"{v['predicted_bytes'] / GIB:.3f} | {compiled} | {err} | {fits} | "
                         f"{v['compile_seconds']:.0f} |")
        lines += ["", "`error` = (predicted - compiled) / compiled."]
        if oom:
            lines += ["(o) libtpu refused to compile the program for this HBM size: " + "; ".join(oom) + "."]
        fits = full_depth_fits(vals)
        if fits:
            lines += ["", "Full-depth fits (two validation compiles of one row at different batches, no depth",
                      "extrapolation; affine in the batch between and beyond them):", "",
                      "| shape | model | tuning | from seqs/chip | fixed GiB/chip | MiB per sequence | max batch |",
                      "|---|---|---|---|---|---|---|"]
            lines += [f"| {f['shape']} | {f['model']} | {_tuning(f['lora_rank'])} | {f['b1']}, {f['b2']} | "
                      f"{f['fixed_bytes'] / GIB:.2f} | {f['per_seq_bytes'] / MIB:.0f} | "
                      f"{'-' if f['max_batch'] is None else f['max_batch']} |" for f in fits]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + LEVERS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/memory_plan.md")
    p.add_argument("--cache", default="runs/memory_table.jsonl")
    p.add_argument("--only", default=",".join(SHAPES), help="shapes, in the order to compute them")
    p.add_argument("--models", default=",".join(MODELS), help="presets, in the order to compute them")
    p.add_argument("--tunings", default="full,lora", help="full,lora or one of them")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--libtpu-path", default=os.environ.get("GRPOJAX_LIBTPU_PATH"))
    p.add_argument("--validate", default=None, help="shape:model:lora_rank[:b1,b2] full-depth check")
    p.add_argument("--render-only", action="store_true", help="rewrite --out from the cache, compile nothing")
    p.add_argument("--shape", default=None, help=argparse.SUPPRESS)  # internal: one shape per process
    p.add_argument("--todo", default="", help=argparse.SUPPRESS)  # internal: model:lora:layers:b;...
    p.add_argument("--shape-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    bad = [s for s in args.only.split(",") if s not in SHAPES] + \
        [m for m in args.models.split(",") if m not in MODELS] + \
        [t for t in args.tunings.split(",") if t not in ("full", "lora")]
    if bad:
        raise SystemExit(f"memory_table: unknown {bad}; shapes {SHAPES}, models {MODELS}, tunings full,lora")
    if args.shape:
        todo = [(m, int(lr), int(L), int(b)) for m, lr, L, b in
                (x.split(":") for x in args.todo.split(";") if x)]
        worker(args.shape, args.seq, args.libtpu_path, todo)
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
    if args.validate:
        return validate(args.validate, args)
    if args.render_only:
        render(args.cache, args.out, args.seq)
        return 0
    loras = [0 if t == "full" else LORA_RANK for t in args.tunings.split(",")]
    failed = 0
    for shape in args.only.split(","):
        have = {point_key(r) for r in read_cache(args.cache) if r.get("type") == "point"}
        todo = [(m, lr, L, b) for m in args.models.split(",") for lr in loras for L, b in POINTS
                if (shape, m, lr, args.seq, L, b) not in have]
        if not todo:
            continue
        print(f"memory_table: {shape}: {len(todo)} compiles to do", flush=True)
        cmd = [sys.executable, __file__, "--shape", shape, "--seq", str(args.seq),
               "--todo", ";".join(f"{m}:{lr}:{L}:{b}" for m, lr, L, b in todo)]
        if args.libtpu_path:
            cmd += ["--libtpu-path", args.libtpu_path]
        t0 = time.time()

        def progress(rec, shape=shape, t0=t0):
            print(f"memory_table: {shape} {rec['model']} lora={rec['lora_rank']} L={rec['layers']} "
                  f"b={rec['b']}: {rec['per_device_bytes'] / GIB:.3f} GiB/device, compile "
                  f"{rec['compile_seconds']} s ({time.time() - t0:.0f} s into {shape})", flush=True)
            render(args.cache, args.out, args.seq)

        rc = run_subprocess(cmd, args.cache, progress)
        if rc:
            failed += 1
            print(f"memory_table: {shape} exited with {rc}; its finished points are kept in {args.cache}",
                  file=sys.stderr)
    render(args.cache, args.out, args.seq)
    return 1 if failed else 0


def render(cache: str, out: str, seq: int) -> None:
    recs = read_cache(cache)
    rows = rows_from_points(recs, seq)
    have = {(r["shape"], r["model"], r["lora_rank"]) for r in rows}
    pending = [f"{s} {m} {'LoRA' if lr else 'full'}" for s in SHAPES for m in MODELS
               for lr in (0, LORA_RANK) if (s, m, lr) not in have]
    vals = [r for r in recs if r.get("type") == "validation" and r["seq"] == seq]
    partial = {}  # the compiled points of rows not complete yet (last record per point wins)
    for p in recs:
        if p.get("type") == "point" and p["seq"] == seq and (p["shape"], p["model"], p["lora_rank"]) not in have:
            partial[point_key(p)] = p
    write_markdown(rows, vals, out, seq, pending, list(partial.values()))


if __name__ == "__main__":
    sys.exit(main())
