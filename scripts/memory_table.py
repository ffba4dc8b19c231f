"""Writes docs/memory_plan.md: the largest GRPO batch per step that fits each device's HBM.

    python scripts/memory_table.py --out docs/memory_plan.md [--only v5e-16,h100x8] [--models qwen2.5-7b]
                                   [--tunings full,lora]
    python scripts/memory_table.py --render-only                     # rewrite --out from the cache

For every (shape, model, full fine-tune | LoRA) it compiles the real GRPO step with
``scripts/plan_memory.py`` machinery (mesh ``fsdp`` = every device, bf16 params, float32 Adam,
remat=full, log-prob chunks of 128) at FULL depth with the layers scanned (``--scan-layers``,
``QwenConfig.scan_layers``, as the 7B / 14B presets run; a scanned program compiles in about the time of
one layer whatever the depth, so no depth extrapolation is needed):

1. **fit**: at ``SEQS`` = 2 and 4 sequences per device (1 and 2 when 2 is already over budget);
   ``bytes(b) = fixed + per_seq * b`` through the two points; predicted max
   ``b* = floor((0.9 HBM - fixed) / per_seq)``.
2. **check**: compiles at ``b*``, then searches (secant / bisection on the compiled bytes, at most
   ``MAX_CHECKS`` compiles; an affine row needs two: ``b*`` and ``b* + 1``) until a compiled ``b`` fits the
   budget and a compiled ``b + 1`` does not (or ``b = 1`` does not fit: 0). The table's max batch is that
   compiled fact, not the fit.

"Fits" = XLA's per-device bytes (``argument + output - aliased + temp``) within 90% of HBM; libtpu
refusing the program for HBM at compile time is "does not fit" too. Each compile is appended to a
JSON-lines cache (``--cache``) as soon as it finishes, so an interrupted run resumes compile by compile;
runs with disjoint ``--only`` lists may share the cache.
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
MAX_CHECKS = 8  # compiles after the fit per row (an affine row needs 2)
POINT = "pinned_point"  # cache record type: scanned full depth, decoder activations pinned (stop 15)
UNPINNED = "scan_point"  # the same compiles before the pins (stop 14): compared, never in the table
# (records of the older 1-2 layer method are ignored)
GIB, MIB = 2**30, 2**20


def shape_devices(shape: str) -> int:
    return TOPOLOGIES[shape][1] if shape in TOPOLOGIES else 8


def shape_hbm(shape: str) -> int:
    return TOPOLOGIES[shape][2] if shape in TOPOLOGIES else H100_HBM


def plan_argv(shape, model, lora, seq, batch, libtpu=None):
    argv = ["--model", model, "--mesh", "fsdp=-1", "--batch", str(batch), "--seq", str(seq),
            "--lora-rank", str(lora), "--remat", "full", "--scan-layers"]
    argv += ["--topology", shape] if shape in TOPOLOGIES else ["--devices", "8"]
    if libtpu:
        argv += ["--libtpu-path", libtpu]
    return argv


def fits(rec: dict, headroom: float = HEADROOM) -> bool:
    return rec["per_device_bytes"] is not None and rec["per_device_bytes"] <= headroom * rec["hbm_bytes"]


def fit_pair(pts: dict) -> tuple[int, int]:
    """The two per-device batches the line goes through: ``SEQS``, or 1 and ``SEQS[0]`` when ``SEQS[0]``
    is already over budget (then the answer is 0 or 1 and a compile at ``SEQS[1]`` would be wasted)."""
    first = SEQS[0]
    return SEQS if first not in pts or fits(pts[first]) else (1, first)


def fit(pts: dict, hbm: int, headroom: float = HEADROOM) -> dict | None:
    """The affine fit through the ``fit_pair`` points ``{b: record}`` (None until both are compiled and
    below the compiler's limit): fixed / per-sequence bytes and the predicted max sequences per device."""
    b1, b2 = fit_pair(pts)
    if not all(b in pts and pts[b]["per_device_bytes"] is not None for b in (b1, b2)):
        return None
    m1, m2 = pts[b1]["per_device_bytes"], pts[b2]["per_device_bytes"]
    per_seq = (m2 - m1) / (b2 - b1)
    fixed = m1 - per_seq * b1
    budget = headroom * hbm
    b_pred = int((budget - fixed) // per_seq) if per_seq > 0 and budget > fixed else 0
    return {"fixed_bytes": int(fixed), "per_seq_bytes": int(per_seq), "predicted_seqs": b_pred}


def next_b(pts: dict, hbm: int, headroom: float = HEADROOM) -> int | None:
    """The next per-device batch to compile for a row, or None when the row is done: the largest fitting
    ``b`` and ``b + 1`` are both compiled, or the row has had ``len(SEQS) + MAX_CHECKS`` compiles.
    ``pts``: ``{b: record}``. Between a fitting ``lo`` and a failing ``hi`` the guess is the secant through
    their bytes; when the compiler refused ``hi`` (no bytes) it is the line through the two largest fitting
    points if that line reaches the budget below ``hi``, else bisection; above every compiled point it is
    that line."""
    for b in fit_pair(pts):
        if b not in pts:
            return b
    budget = headroom * hbm
    ok = sorted(b for b in pts if fits(pts[b], headroom))
    lo = ok[-1] if ok else 0
    hi = min((b for b in pts if b > lo and not fits(pts[b], headroom)), default=None)
    if hi == lo + 1 or len(pts) >= len(SEQS) + MAX_CHECKS:
        return None
    m = {b: r["per_device_bytes"] for b, r in pts.items()}

    def cross(b1, b2):  # where the line through (b1, m1), (b2, m2) meets the budget
        slope = (m[b2] - m[b1]) / (b2 - b1)
        return b2 + int((budget - m[b2]) // slope) if slope > 0 else 2 * b2

    if hi is None:
        return max(cross(ok[-2], ok[-1]) if len(ok) > 1 else 2 * lo, lo + 1)
    known_bad = sorted(b for b in pts if b >= hi and m[b] is not None)
    if lo and m[hi] is not None:
        guess = cross(lo, hi)
    elif len(ok) > 1 and cross(ok[-2], ok[-1]) < hi:  # the compiler refused hi (no bytes there) and
        # the fitting points' line reaches the budget below it; a line past hi is no guide: bisection
        guess = cross(ok[-2], ok[-1])
    elif not lo and len(known_bad) > 1:
        guess = cross(known_bad[0], known_bad[1])
    else:
        guess = (lo + hi) // 2
    return min(max(guess, lo + 1), hi - 1)


def compiled_max(pts: dict) -> int | None:
    """The largest compiled ``b`` that fits while ``b + 1`` was compiled and does not (0 when ``b = 1``
    does not fit); None when the compiles do not bracket the max yet."""
    if 1 in pts and not fits(pts[1]):
        return 0
    found = [b for b in pts if fits(pts[b]) and b + 1 in pts and not fits(pts[b + 1])]
    return max(found) if found else None


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


def row_points(recs: list[dict], seq: int, kind: str = POINT) -> dict:
    """``{(shape, model, lora): {b: record}}`` of the scanned full-depth compiles of record type ``kind``
    (last record wins)."""
    out: dict = {}
    for r in recs:
        if r.get("type") == kind and r["seq"] == seq:
            out.setdefault((r["shape"], r["model"], r["lora_rank"]), {})[r["b"]] = r
    return out


def worker(shape: str, seq: int, libtpu, rows: list[tuple[str, int]], cache: str) -> None:
    """Runs in a fresh process per shape (the backend is fixed at jax import); compiles each row's points
    in ``next_b`` order, printing one JSON record per compile. A row whose compile raises is reported and
    skipped; the others go on."""
    import plan_memory as pm

    n, hbm = shape_devices(shape), shape_hbm(shape)
    failed = []
    for model, lora in rows:
        pts = row_points(read_cache(cache), seq).get((shape, model, lora), {})
        while (b := next_b(pts, hbm)) is not None:
            try:
                r = pm.plan(pm.parse_args(plan_argv(shape, model, lora, seq, b * n, libtpu)))
            except Exception as e:  # one row failing must not lose the others: say which, go on
                print(f"memory_table: {shape} {model} lora={lora} b={b} FAILED: {type(e).__name__}: "
                      f"{str(e)[:500]}", file=sys.stderr, flush=True)
                failed.append((model, lora))
                break
            rec = {"type": POINT, "shape": shape, "model": model, "lora_rank": lora, "seq": seq,
                   "layers": r["layers"], "b": b, "devices": n, "hbm_bytes": hbm,
                   "per_device_bytes": r["per_device_bytes"], "temp_bytes": r["temp_bytes"],
                   "argument_bytes": r["argument_bytes"], "backend": r["backend"],
                   "compile_seconds": r["compile_seconds"], "compile_error": r["compile_error"]}
            pts[b] = rec
            print(json.dumps(rec), flush=True)
    if failed:
        raise SystemExit(f"memory_table: {shape}: failed rows {failed} (see above)")


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


def table_rows(recs: list[dict], seq: int) -> list[dict]:
    """One summary per (shape, model, lora) with compiled points, in table order."""
    rows = []
    for (shape, model, lora), pts in row_points(recs, seq).items():
        hbm = shape_hbm(shape)
        f = fit(pts, hbm) or {}
        best = compiled_max(pts)
        rows.append({"shape": shape, "devices": shape_devices(shape), "model": model, "lora_rank": lora,
                     "hbm_bytes": hbm, **f, "compiled_seqs": best, "done": next_b(pts, hbm) is None,
                     "largest_fit": max((b for b in pts if fits(pts[b])), default=None),
                     "at_max": pts[best] if best else None, "compiles": len(pts),
                     "backend": next(iter(pts.values()))["backend"],
                     "compile_seconds": sum(p["compile_seconds"] for p in pts.values())})
    order = {s: i for i, s in enumerate(SHAPES)}
    return sorted(rows, key=lambda r: (order.get(r["shape"], 99), MODELS.index(r["model"]), r["lora_rank"]))


def _tuning(lora_rank: int) -> str:
    return f"LoRA r={lora_rank}" if lora_rank else "full"


def _gib(x) -> str:
    return "-" if x is None else f"{x / GIB:.2f}"


HEADER = """# Memory plan: largest GRPO batch that fits

Generated by `python scripts/memory_table.py --out docs/memory_plan.md` (method in its docstring). Every
number comes from XLA's `compiled.memory_analysis()` of the real `grpo_step` at FULL depth (prompt {p} +
completion {c} = {seq} tokens per sequence, bf16 params and activations, float32 AdamW moments
(`f32_optimizer_state`), `remat=full`, layers scanned (`scan_layers`), log-prob chunks of 128, mesh
`fsdp` = all devices, state donated). Budget: {pct}% of HBM. HBM assumed: TPU v5e 16 GiB/chip, TPU v5p
95 GiB/chip, H100 80 GB. TPU rows are compiled by libtpu for that topology (compile-only, on a CPU
machine); **H100 rows come from the CPU compiler with 8 fake devices** (an approximation: GPU fusion,
scheduling and kernels differ, see below). LoRA: rank {rank} on q,k,v,o,gate,up,down; the frozen base is
bf16 and FSDP-sharded. v5p-8 is 4 chips (8 TensorCores).

- `fixed` / `per sequence`: the line through the compiles at 2 and 4 sequences per chip (1 and 2 when 2
  does not fit).
- `predicted`: the largest batch the line allows; `compiled max`: the largest batch whose compile fits
  while one more sequence per chip does not (both compiled), i.e. the answer; `-` = not bracketed yet;
  `>= N (n.b.)` = the row used all its compiles without a bracket (compiled bytes not monotonic in the
  batch there): N fits, the max is not known.
  Batch = sequences per optimizer step (GRPO: prompts x G) without gradient accumulation (`num_micro`
  for more); 0 = not even one sequence per chip fits.
- `GiB/chip at max`: XLA's per-chip bytes at the compiled max. `compiles` / `compile s`: how many
  full-depth compiles the row took and their wall seconds (shared 2-core machine).

| shape | chips | model | tuning | fixed GiB/chip | MiB per sequence | predicted | compiled max | GiB/chip at max | compiles | backend | compile s |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""

CAVEATS = """
## Read this before using the numbers

- **Scanned layers.** The table compiles the layer stack as one `jax.lax.scan` (`QwenConfig.scan_layers`,
  on in the 7B / 14B preset configs): a full-depth libtpu compile then takes minutes instead of the hour
  that the unrolled 0.5B program took (v5p-8 LoRA: 3164 s). Earlier versions of this file compiled
  unrolled 1-2 layer programs and extrapolated in depth; for libtpu that failed (the fixed part or the
  cost per sequence fell with depth). An unrolled model (`scan_layers: false`) may use a different amount
  of memory: see the comparison section when present.
- **The LM head is pinned to the batch sharding.** `completion_logprobs` constrains the hidden chunk and
  its `[B, chunk, V]` float32 logits to B over `(data, fsdp)` (V over `tensor`) under `jit_step`'s mesh
  (test: `tests/test_sharding_memory.py::test_lm_head_memory_per_sequence_does_not_grow_with_devices`);
  without it GSPMD split the head's contraction over the FSDP-sharded `D` and every device held the logits
  of the whole global batch. The price is fixed: each device all-gathers the head table and, in full
  fine-tuning, holds its full-size gradient before the reduce-scatter, about `V D (2 + 4)` bytes (0.8 GB
  for 0.5B, 3.3 GB for 7B, 4.7 GB for 14B), inside `fixed`. A vocabulary-parallel head would remove it;
  not done.
- **The decoder's activations are pinned to the batch sharding** (`grpojax.sharding.pin` in
  `grpojax.models.qwen`: the residual stream `[B, T, D]` with B over `(data, fsdp)` and D whole, q / k / v
  and the MLP's F over `tensor`). Before (this table's earlier version), GSPMD carried the embedding's FSDP
  split of `D` into the residual stream and ran every layer on the whole global batch with partial-sum
  all-reduces: per-chip memory at a fixed number of sequences per chip grew with the chip count (7B LoRA
  at 2 per chip: 6.3 / 7.8 / 12.0 GiB on v5e-8 / 16 / 32). See the before / after section below; test:
  `tests/test_sharding_memory.py::test_train_step_memory_per_sequence_does_not_grow_with_devices`.
- **Fit range.** The line uses 2 and 4 sequences per chip: at one or two sequences a b-independent buffer
  (the gathered head and its gradient, the optimizer update) can set the peak and hide the activations,
  so `predicted` can be off below 2 per chip; `compiled max` is checked by compiles either way.
- **H100 rows come from the CPU compiler** (8 fake devices): its fusion, scheduling and buffer reuse differ
  from XLA:GPU (it keeps far more per sequence than libtpu does for the same program), so they are a
  pessimistic bound, not a plan; a GPU compile or a real run is needed.
"""

LEVERS = """
## Levers (what the plan assumes, and how to change it)

| lever | where | effect on the numbers above |
|---|---|---|
| FSDP over `fsdp` | `grpojax.sharding` rules: `embed` -> `fsdp` | params + moments divided by the chip count (the `fixed` column) |
| bf16 params, f32 AdamW | `grpojax.sharding.f32_optimizer_state(tx)` + `Qwen(param_dtype=bfloat16)` | 10 B/param resident (2 + 4 + 4) instead of 12 (f32 params + moments) + transient grads |
| LoRA-only optimizer state | `TrainState.params` = `nnx.LoRAParam` only (run config `model.lora.rank`) | moments for the adapters only; base stays bf16 and sharded |
| remat | run config `model.remat: none / block / full` (`Qwen(remat=...)`) | `full` keeps one `[B, T, D]` per layer; `block` also the matmul outputs |
| scanned layers | run config `model.scan_layers: true` (`QwenConfig.scan_layers`) | compile time and program size independent of depth |
| chunked log-probs | `completion_logprobs(chunk_size=...)` | `[B, chunk, V]` float32 logits at a time instead of `[B, L, V]` (tested in `tests/test_sharding_memory.py`) |
| LM head on the batch sharding | `completion_logprobs` under `jit_step`'s mesh | logits `[B, chunk, V]` split over (data, fsdp) (V over tensor): per-sequence memory independent of the device count; the head table is gathered per device (`fixed`) |
| decoder activations on the batch sharding | `grpojax.sharding.pin` in the model, active under `jit_step`'s mesh | each chip runs its own sequences only: per-sequence memory independent of the chip count |
| gradient accumulation | `grpo_step(num_micro=...)` | activation memory of `batch / num_micro` sequences; the `fixed` part unchanged |
| attention implementation | run config `model.attention` (`Qwen(attention=...)`); `plan-memory --attention` | `splash` / `blockwise` keep no `[T, S]` scores: memory per sequence linear in its length (long-sequence section); `einsum` holds float32 `[K, g, T, S]` scores per sequence |
| MLP in sequence chunks | `grpojax.models.qwen.MLP_CHUNK_TOKENS` (4096); `plan-memory --mlp-chunk` | past 4096 tokens the MLP holds one chunk's `[B, c, F]` intermediates at a time (recomputed in the backward) |

Check one configuration yourself, e.g. the 7B row on v5e-16:

    pip install -e .[tpu-plan]
    python scripts/plan_memory.py --model qwen2.5-7b --mesh fsdp=16 --batch 16 --seq 1024 --topology v5e-16 --scan-layers

`--json` prints one object with `per_device_bytes`, `flops_per_step` (XLA's count of the per-device
program x devices; None with `--scan-layers`, where XLA would count the scanned layer stack once; without
it a lower bound, the chunked LM head's loop being counted once) and `model_flops_per_step` (the MFU
count: 6 N T + attention); `--kind dpo` plans the preference step.
"""


def pinning_lines(recs: list[dict], seq: int) -> list[str]:
    """The same full-depth scanned compile before (stop 14) and after the decoder's activations were
    pinned, for every (row, batch) compiled both ways."""
    old, new = row_points(recs, seq, UNPINNED), row_points(recs, seq)
    lines = []
    for key in sorted(set(old) & set(new), key=lambda k: (SHAPES.index(k[0]), MODELS.index(k[1]), k[2])):
        for b in sorted(set(old[key]) & set(new[key])):
            o, n = old[key][b], new[key][b]
            if o["per_device_bytes"] is None and n["per_device_bytes"] is None:
                continue
            lines.append(f"| {key[0]} | {key[1]} | {_tuning(key[2])} | {b * o['devices']} | "
                         f"{_gib(o['per_device_bytes'])} | {_gib(n['per_device_bytes'])} | "
                         f"{o['compile_seconds']:.0f} | {n['compile_seconds']:.0f} |")
    return _section("Before and after pinning the decoder's activations, same compile",
                    "`-` = libtpu refused the program for HBM.",
                    ["unpinned GiB/chip", "pinned GiB/chip", "unpinned compile s", "pinned compile s"], lines)


def comparison_lines(recs: list[dict], seq: int) -> list[str]:
    """Scanned vs unrolled full-depth compiles of the same row and batch (the unrolled ones are the
    ``validation`` records of the earlier method; both compiled before the activation pins)."""
    pts = row_points(recs, seq, UNPINNED)
    lines = []
    for v in recs:
        if v.get("type") != "validation" or v["seq"] != seq or v["per_device_bytes"] is None:
            continue
        s = pts.get((v["shape"], v["model"], v["lora_rank"]), {}).get(v["b"])
        if s is None or s["per_device_bytes"] is None:
            continue
        lines.append(f"| {v['shape']} | {v['model']} | {_tuning(v['lora_rank'])} | {v['batch']} | "
                     f"{v['per_device_bytes'] / GIB:.3f} | {s['per_device_bytes'] / GIB:.3f} | "
                     f"{(s['per_device_bytes'] - v['per_device_bytes']) / v['per_device_bytes']:+.1%} | "
                     f"{v['compile_seconds']:.0f} | {s['compile_seconds']:.0f} |")
    return _section("Scanned vs unrolled layers, same step at full depth",
                    "Both compiled before the decoder's activations were pinned (stop 14).",
                    ["unrolled GiB/chip", "scanned GiB/chip", "scanned vs unrolled", "unrolled compile s",
                     "scanned compile s"], lines)


def _section(title: str, note: str, columns: list[str], lines: list[str]) -> list[str]:
    """A markdown section: title, a note, a table of (shape, model, tuning, batch, *columns) rows."""
    if not lines:
        return []
    cols = ["shape", "model", "tuning", "batch", *columns]
    return ["", f"## {title}", "", note, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + lines


def write_markdown(recs: list[dict], path: str, seq: int) -> None:
    rows = table_rows(recs, seq)
    text = HEADER.format(p=seq // 2, c=seq - seq // 2, seq=seq, pct=int(HEADROOM * 100), rank=LORA_RANK)
    lines = text.rstrip("\n").split("\n")
    for r in rows:
        n = r["devices"]
        pred = "-" if "predicted_seqs" not in r else str(r["predicted_seqs"] * n)
        best = "-" if r["compiled_seqs"] is None else str(r["compiled_seqs"] * n)
        if r["compiled_seqs"] is None and r["done"] and r["largest_fit"]:  # out of checks, not bracketed
            best = f">= {r['largest_fit'] * n} (n.b.)"
        at = r["at_max"]["per_device_bytes"] if r["at_max"] else None
        per_seq = f"{r['per_seq_bytes'] / MIB:.0f}" if "per_seq_bytes" in r else "-"
        lines.append(f"| {r['shape']} | {n} | {r['model']} | {_tuning(r['lora_rank'])} | "
                     f"{_gib(r.get('fixed_bytes'))} | {per_seq} | {pred} | {best} | {_gib(at)} | "
                     f"{r['compiles']} | {r['backend'].split(';')[0].split(' (')[0]} | "
                     f"{r['compile_seconds']:.0f} |")
    have = {(r["shape"], r["model"], r["lora_rank"]) for r in rows if r["done"]}
    pending = [f"{s} {m} {_tuning(lr)}" for s in SHAPES for m in MODELS for lr in (0, LORA_RANK)
               if (s, m, lr) not in have]
    if pending:
        lines += ["", "Not finished (rerun the command above; it resumes from `runs/memory_table.jsonl`): "
                  + ", ".join(pending) + "."]
    refused = [r for r in recs if r.get("type") == POINT and r["seq"] == seq and r.get("compile_error")]
    if refused:
        lines += ["", "Compiles libtpu refused for HBM (counted as \"does not fit\"): " + "; ".join(
            f"{r['shape']} {r['model']} {_tuning(r['lora_rank'])} batch {r['b'] * r['devices']}: "
            f"`{r['compile_error'].rstrip('.')}`" for r in refused) + "."]
    lines += CAVEATS.rstrip("\n").split("\n")
    lines += pinning_lines(recs, seq) + comparison_lines(recs, seq)
    from long_plans import section_lines  # the long-sequence rows (scripts/long_plans.py) share the cache

    lines += section_lines(recs)
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
    p.add_argument("--render-only", action="store_true", help="rewrite --out from the cache, compile nothing")
    p.add_argument("--shape", default=None, help=argparse.SUPPRESS)  # internal: one shape per process
    p.add_argument("--rows", default="", help=argparse.SUPPRESS)  # internal: model:lora;...
    args = p.parse_args(argv)
    bad = [s for s in args.only.split(",") if s not in SHAPES] + \
        [m for m in args.models.split(",") if m not in MODELS] + \
        [t for t in args.tunings.split(",") if t not in ("full", "lora")]
    if bad:
        raise SystemExit(f"memory_table: unknown {bad}; shapes {SHAPES}, models {MODELS}, tunings full,lora")
    if args.shape:
        rows = [(m, int(lr)) for m, lr in (x.split(":") for x in args.rows.split(";") if x)]
        worker(args.shape, args.seq, args.libtpu_path, rows, args.cache)
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
    if args.render_only:
        write_markdown(read_cache(args.cache), args.out, args.seq)
        return 0
    loras = [0 if t == "full" else LORA_RANK for t in args.tunings.split(",")]
    failed = 0
    for shape in args.only.split(","):
        pts = row_points(read_cache(args.cache), args.seq)
        rows = [(m, lr) for m in args.models.split(",") for lr in loras
                if next_b(pts.get((shape, m, lr), {}), shape_hbm(shape)) is not None]
        if not rows:
            continue
        print(f"memory_table: {shape}: {len(rows)} rows to do", flush=True)
        cmd = [sys.executable, __file__, "--shape", shape, "--seq", str(args.seq), "--cache", args.cache,
               "--rows", ";".join(f"{m}:{lr}" for m, lr in rows)]
        if args.libtpu_path:
            cmd += ["--libtpu-path", args.libtpu_path]
        t0 = time.time()

        def progress(rec, shape=shape, t0=t0):
            got = "refused by the compiler" if rec["per_device_bytes"] is None else \
                f"{rec['per_device_bytes'] / GIB:.3f} GiB/device"
            print(f"memory_table: {shape} {rec['model']} lora={rec['lora_rank']} b={rec['b']}: {got}, compile "
                  f"{rec['compile_seconds']} s ({time.time() - t0:.0f} s into {shape})", flush=True)
            write_markdown(read_cache(args.cache), args.out, args.seq)

        rc = run_subprocess(cmd, args.cache, progress)
        if rc:
            failed += 1
            print(f"memory_table: {shape} exited with {rc}; its finished points are kept in {args.cache}",
                  file=sys.stderr)
    write_markdown(read_cache(args.cache), args.out, args.seq)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
