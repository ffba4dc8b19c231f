"""Writes docs/rollout_layouts.md: what the rollout sampler costs per chip in each layout, compiled.

    python scripts/rollout_layouts.py --out docs/rollout_layouts.md [--only qwen2.5-7b] [--render-only]

For every point of ``POINTS`` (model, TPU topology, prompts, layout) it compiles the real sampler program
(``scripts/plan_memory.py --kind sample``: prefill 512 prompt tokens, decode 512, top-p, bf16 weights and
KV cache, layers scanned as the 7B / 14B presets run) for the training mesh ``fsdp`` = every chip and
either samples in that layout (``mesh.rollout_tensor: null``) or on ``rollout_mesh(mesh, k)``
(``mesh.rollout_tensor: k``), and records XLA's per-chip bytes and the bytes every chip receives through
collectives per decoded token (``grpojax.sharding.hlo.loop_collective_bytes`` of the decoding loop,
scanned layers times their count). libtpu refusing the program for HBM is "does not fit". One JSON line
per compile is appended to ``--cache`` as it finishes (an interrupted run resumes point by point).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SEQ, PROMPT, LORA = 1024, 512, 16  # the GRPO presets' LoRA rank: the rollout samples base + adapters
# (model, topology, prompts, rollout_tensor or None = the training layout, scanned layers)
POINTS = [
    ("qwen2.5-0.5b", "v5e-8", 256, None, True), ("qwen2.5-0.5b", "v5e-8", 256, 2, True),
    ("qwen2.5-0.5b", "v5e-8", 256, 1, True),
    ("qwen2.5-7b", "v5e-8", 64, None, True), ("qwen2.5-7b", "v5e-8", 64, None, False),
    ("qwen2.5-7b", "v5e-8", 64, 8, True), ("qwen2.5-7b", "v5e-8", 64, 4, True),
    ("qwen2.5-7b", "v5e-8", 64, 1, True),
    ("qwen2.5-14b", "v5e-16", 64, None, True), ("qwen2.5-14b", "v5e-16", 64, 8, True),
    ("qwen2.5-14b", "v5e-16", 64, 4, True),
]


def key(rec_or_point) -> tuple:
    if isinstance(rec_or_point, dict):
        r = rec_or_point
        return (r["model"], r["topology"], r["batch"], r["rollout_tensor"], r["scan_layers"], r["lora_rank"])
    return (*rec_or_point, LORA)


def command(point) -> list[str]:
    model, topo, batch, tensor, scan = point
    cmd = [sys.executable, os.path.join(HERE, "plan_memory.py"), "--model", model, "--kind", "sample",
           "--mesh", "fsdp=-1", "--batch", str(batch), "--seq", str(SEQ), "--prompt-len", str(PROMPT),
           "--topology", topo, "--lora-rank", str(LORA), "--json"]
    return cmd + (["--rollout-tensor", str(tensor)] if tensor is not None else []) + (
        ["--scan-layers"] if scan else [])


def read_cache(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def render(recs: list[dict]) -> str:
    by_key = {key(r): r for r in recs}
    gib, mib = 2**30, 2**20
    lines = [
        "# Rollout layouts: the sampler's memory and traffic per chip, compiled",
        "",
        "Written by `python scripts/rollout_layouts.py --out docs/rollout_layouts.md` (see its docstring);",
        f"every number is XLA's (libtpu's compile-only client), {PROMPT} prompt tokens + {SEQ - PROMPT} decoded, "
        f"bf16, LoRA rank {LORA} (as the GRPO presets). The training mesh is `fsdp` = every chip; *layout* is "
        "`mesh.rollout_tensor` (`null` = sample in "
        "the training layout; `k` = on `grpojax.sharding.rollout_mesh(mesh, k)`: the same chips as "
        "`data = n / k, tensor = k`). *Per token* is what one decoded token brings into every chip through "
        "collectives (the decoding loop's body, scanned layers x their count). *Train state*: the LoRA run's "
        "train state per chip on the training mesh (bf16 base, float32 adapters and Adam moments), resident "
        "while the rollout runs; the rollout peak is the sum. *Policy copy*: what copying the weights from the "
        "training layout onto the rollout mesh brings into a chip, once per rollout, and the copy's largest "
        "temporaries (`grpojax.sharding.copy_to_rollout`: through `tensor` = every chip first, then within "
        "each `data` group; XLA's direct resharding would gather whole weights).",
        "",
        "| model | chips | prompts | layout | layers | sampler GiB per chip (HBM) | + train state = rollout peak "
        "GiB | per-token collectives per chip | policy copy per rollout | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in POINTS:
        r = by_key.get(key(p))
        model, topo, batch, tensor, scan = p
        layout = "training (fsdp)" if tensor is None else f"rollout_tensor={tensor}"
        head = f"| {model} | {topo} | {batch} | {layout} | {'scanned' if scan else 'per-layer'} |"
        if r is None:
            lines.append(head + " not compiled yet | | | | |")
            continue
        hbm = r["hbm_bytes_per_device"] / gib
        if r["compile_error"]:
            lines.append(head + f" does not fit ({hbm:.0f}): libtpu refused it | | | | {r['compile_seconds']} |")
            continue
        step = r["decode_step_collective_bytes"]
        ops = ", ".join(f"{k} {v / mib:,.1f}" for k, v in step.items() if v >= 0.05 * mib) or "none"
        fit = "" if r["fits"] else ", DOES NOT FIT"
        copied = r["rollout_copy_collective_bytes"]
        copy = "DOES NOT FIT (libtpu refused the copy)" if copied is None else \
            f"{copied / mib:,.0f} MiB ({r['rollout_copy_temp_bytes'] / gib:.2f} GiB temp)"
        state = r["train_state_bytes_per_device"]
        peak = r["per_device_bytes"] + state
        over = "" if peak <= r["hbm_bytes_per_device"] else ", over HBM"
        lines.append(head + f" {r['per_device_bytes'] / gib:.2f} ({hbm:.0f}{fit}) | {state / gib:.2f} -> "
                     f"{peak / gib:.2f}{over} | {sum(step.values()) / mib:,.1f} MiB ({ops}) | "
                     f"{copy} | {r['compile_seconds']} |")
    lines += ["", "Reading it: in the training layout every decoded token all-gathers every weight of the model "
              "into every chip (the scanned and the per-layer 7B alike; per-layer also holds more per chip). On "
              "the rollout mesh a token moves activations only (the vocabulary-split logits, the heads' and "
              "MLP's partial sums). Choose `k` among the divisors of the model's KV heads (Qwen2.5-7B has 4, "
              "14B has 8): KV heads that `tensor` does not divide are replicated over it, and the rest of the "
              "chips (`data = n / k`) split the rows; `k = 1` replicates the weights (small models only). "
              "The 7B / 14B presets use 4 / 8. The rollout copy of the weights is freed when the rollout "
              "ends.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "..", "docs", "rollout_layouts.md"))
    p.add_argument("--cache", default=os.path.join(HERE, "..", "runs", "rollout_layouts.jsonl"))
    p.add_argument("--only", default=None, help="comma list of model names")
    p.add_argument("--render-only", action="store_true")
    a = p.parse_args(argv)
    recs = read_cache(a.cache)
    done = {key(r) for r in recs}
    todo = [pt for pt in POINTS if key(pt) not in done and (a.only is None or pt[0] in a.only.split(","))]
    t0 = time.time()
    for i, pt in enumerate([] if a.render_only else todo):
        proc = subprocess.run(command(pt), capture_output=True, text=True)
        out = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not out:
            print(f"rollout_layouts: {pt} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        rec = json.loads(out[-1])
        os.makedirs(os.path.dirname(os.path.abspath(a.cache)), exist_ok=True)
        with open(a.cache, "a") as f:
            f.write(json.dumps(rec) + "\n")
        recs.append(rec)
        el = time.time() - t0
        print(f"[{i + 1}/{len(todo)}] {pt}: compiled in {rec['compile_seconds']} s; elapsed {el:.0f} s, "
              f"ETA {el / (i + 1) * (len(todo) - i - 1):.0f} s", flush=True)
    with open(a.out, "w") as f:
        f.write(render(recs))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
