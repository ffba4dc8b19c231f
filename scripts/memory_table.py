"""Writes docs/memory_plan.md: the largest GRPO batch per step that fits each device's HBM.

    python scripts/memory_table.py --out docs/memory_plan.md [--only v5e-16,h100x8] [--seq 1024]

For every (shape, model, full fine-tune | LoRA) it compiles the real GRPO step with
``scripts/plan_memory.py`` machinery (mesh ``fsdp`` = every device, bf16 params, float32 Adam,
remat=full, log-prob chunks of 128) at 1 and 2 decoder layers and 1 and 2 sequences per device, fits
XLA's per-device bytes as ``m(L, b) = m0 + m1 L + (c0 + c1 L) b`` (exact for a stack of identical
layers), and extrapolates to the real depth. A full-depth compile of every row would take hours on a
2-core machine; ``plan_memory.py --model ... --batch <max>`` checks any single row at full depth.
Rows are appended to a JSON-lines cache as they finish, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

from plan_memory import H100_HBM, TOPOLOGIES  # noqa: E402

SHAPES = ["v5e-8", "v5e-16", "v5e-32", "v5p-8", "v5p-16", "h100x8"]
MODELS = ["qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-14b"]
LORA_RANK = 16
HEADROOM = 0.9  # keep 10% of HBM for the runtime, fragmentation and the sampler


def rows_for_shape(shape: str, seq: int, libtpu: str | None, models=MODELS) -> list[dict]:
    """Runs in a fresh process per shape (the backend is fixed at jax import)."""
    import plan_memory as pm

    n = TOPOLOGIES[shape][1] if shape in TOPOLOGIES else 8
    out = []
    for model in models:
        for lora in (0, LORA_RANK):
            pts = {}
            for layers in (1, 2):
                for b in (1, 2):
                    argv = ["--model", model, "--mesh", "fsdp=-1", "--batch", str(b * n), "--seq", str(seq),
                            "--layers", str(layers), "--lora-rank", str(lora), "--remat", "full"]
                    argv += ["--topology", shape] if shape in TOPOLOGIES else ["--devices", "8"]
                    if libtpu:
                        argv += ["--libtpu-path", libtpu]
                    r = pm.plan(pm.parse_args(argv))
                    pts[(layers, b)] = r["per_device_bytes"]
                    backend = r["backend"]
            from grpojax.models import PRESETS
            L = PRESETS[model].num_layers
            m1 = pts[(2, 1)] - pts[(1, 1)] - (pts[(2, 2)] - pts[(1, 2)] - pts[(2, 1)] + pts[(1, 1)])
            c1 = pts[(2, 2)] - pts[(1, 2)] - pts[(2, 1)] + pts[(1, 1)]
            c0 = pts[(1, 2)] - pts[(1, 1)] - c1
            m0 = pts[(1, 1)] - m1 - c0 - c1
            fixed, per_seq = m0 + m1 * L, c0 + c1 * L
            hbm = TOPOLOGIES[shape][2] if shape in TOPOLOGIES else H100_HBM
            b_max = int((HEADROOM * hbm - fixed) // per_seq) if per_seq > 0 else 0
            row = {"shape": shape, "devices": n, "model": model, "lora_rank": lora, "seq": seq,
                   "hbm_bytes": hbm, "fixed_bytes": int(fixed), "per_seq_bytes": int(per_seq),
                   "max_seqs_per_device": max(b_max, 0), "max_batch": max(b_max, 0) * n,
                   "backend": backend, "points": {f"L{k[0]}b{k[1]}": v for k, v in pts.items()}}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


LEVERS = """
## Levers (what the plan assumes, and how to change it)

| lever | where | effect on the numbers above |
|---|---|---|
| FSDP over `fsdp` | `grpojax.sharding` rules: `embed` -> `fsdp` | params + moments divided by the chip count (the `fixed` column) |
| bf16 params, f32 AdamW | `grpojax.sharding.f32_optimizer_state(tx)` + `Qwen(param_dtype=bfloat16)` | 10 B/param resident (2 + 4 + 4) instead of 12 (f32 params + moments) + transient grads |
| LoRA-only optimizer state | `TrainState.params` = `nnx.LoRAParam` only (runner `model.lora.rank`) | moments for the adapters only; base stays bf16 and sharded |
| remat | `Qwen(remat="none" / "block" / "full")` | `full` keeps one `[B, T, D]` per layer; `block` also the matmul outputs |
| chunked log-probs | `completion_logprobs(chunk_size=...)` | `[B, chunk, V]` float32 logits at a time instead of `[B, L, V]` (tested in `tests/test_sharding_memory.py`) |
| gradient accumulation | `grpo_step(num_micro=...)` | activation memory of `batch / num_micro` sequences; the `fixed` part unchanged |

Check one configuration at FULL depth (no extrapolation), e.g. the 7B row on v5e-16:

    pip install -e .[tpu-plan]
    python scripts/plan_memory.py --model qwen2.5-7b --mesh fsdp=16 --batch 32 --seq 1024 --topology v5e-16

`--json` prints one object with `per_device_bytes`, `flops_per_step` (XLA's count of the per-device
program x devices) and `model_flops_per_step` (6 N T + attention); `--kind dpo` plans the preference step.
"""


def write_markdown(rows: list[dict], path: str, seq: int, pending: list[str] = ()) -> None:
    gib = 2**30
    lines = [
        "# Memory plan: largest GRPO batch that fits",
        "",
        "Generated by `python scripts/memory_table.py --out docs/memory_plan.md` (see its docstring for the",
        "method). Every number comes from XLA's `compiled.memory_analysis()` of the real `grpo_step`",
        f"(prompt {seq // 2} + completion {seq - seq // 2} = {seq} tokens per sequence, bf16 params and",
        "activations, float32 AdamW moments (`f32_optimizer_state`), `remat=full`, log-prob chunks of 128,",
        "mesh `fsdp` = all devices, state donated), compiled at 1-2 layers and 1-2 sequences per chip and",
        f"extrapolated linearly in depth and batch. Budget: {int(HEADROOM * 100)}% of HBM. HBM assumed: TPU v5e",
        "16 GiB/chip, TPU v5p 95 GiB/chip, H100 80 GB. TPU rows are compiled by libtpu for that topology",
        "(compile-only, on a CPU machine); **H100 rows come from the CPU compiler with 8 fake devices**",
        "(an approximation: GPU fusion, scheduling and kernels differ). LoRA: rank "
        f"{LORA_RANK} on q,k,v,o,gate,up,down; the frozen base is bf16 and FSDP-sharded.",
        "`max batch` = sequences per optimizer step (GRPO: prompts x G) without gradient accumulation",
        "(use `num_micro` for more); 0 = the state alone does not fit. v5p-8 is 4 chips (8 TensorCores).",
        "",
        "| shape | chips | model | tuning | fixed GiB/chip | MiB per sequence | max batch | backend |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['devices']} | {r['model']} | "
                     f"{'LoRA r=' + str(r['lora_rank']) if r['lora_rank'] else 'full'} | "
                     f"{r['fixed_bytes'] / gib:.2f} | {r['per_seq_bytes'] / 2**20:.0f} | {r['max_batch']} | "
                     f"{r['backend'].split(';')[0]} |")
    if pending:
        lines += ["", "Not computed yet (the generating run was cut short on a shared 2-core machine; rerun the",
                  "command above, it resumes from `runs/memory_table.jsonl`): " + ", ".join(pending) + "."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + LEVERS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/memory_plan.md")
    p.add_argument("--cache", default="runs/memory_table.jsonl")
    p.add_argument("--only", default=",".join(SHAPES))
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--libtpu-path", default=os.environ.get("GRPOJAX_LIBTPU_PATH"))
    p.add_argument("--shape", default=None, help=argparse.SUPPRESS)  # internal: one shape per process
    p.add_argument("--models", default=",".join(MODELS), help="comma list of presets")
    p.add_argument("--render-only", action="store_true", help="rewrite --out from the cache, compile nothing")
    args = p.parse_args(argv)
    if args.shape:
        rows_for_shape(args.shape, args.seq, args.libtpu_path, args.models.split(","))
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
    done = []
    if os.path.exists(args.cache):
        done = [json.loads(x) for x in open(args.cache) if x.strip()]
    order = {s: i for i, s in enumerate(SHAPES)}

    def render():
        have = {(r["shape"], r["model"], r["lora_rank"]) for r in done if r["seq"] == args.seq}
        pending = [f"{s} {m} {'LoRA' if lr else 'full'}" for s in SHAPES for m in MODELS
                   for lr in (0, LORA_RANK) if (s, m, lr) not in have]
        rows = list({(r["shape"], r["model"], r["lora_rank"]): r for r in done if r["seq"] == args.seq}.values())
        write_markdown(sorted(rows, key=lambda r: (order.get(r["shape"], 99), MODELS.index(r["model"]),
                                                   r["lora_rank"])), args.out, args.seq, pending)

    if args.render_only:
        render()
        return 0
    for shape in args.only.split(","):
        if sum(r["shape"] == shape and r["seq"] == args.seq for r in done) == len(MODELS) * 2:
            continue
        cmd = [sys.executable, __file__, "--shape", shape, "--seq", str(args.seq), "--models", args.models]
        if args.libtpu_path:
            cmd += ["--libtpu-path", args.libtpu_path]
        # rows stream in as each (model, tuning) finishes, so an interrupted run keeps what it has
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                if not line.startswith("{"):
                    continue
                row = json.loads(line)
                with open(args.cache, "a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
                render()
        if proc.returncode:
            print(f"memory_table: {shape} exited with {proc.returncode}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
