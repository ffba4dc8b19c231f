"""Long-sequence memory plans: the GRPO step at 4k-32k tokens per sequence, per attention implementation.

    python scripts/long_plans.py [--only lora-v5e-8,full-v5e-16] [--variants einsum,splash,...]
    python scripts/long_plans.py --render-only          # rewrite docs/memory_plan.md from the cache

Every point of ``POINTS`` is one ``scripts/plan_memory.py --json`` compile (libtpu compile-only for the
TPU topology; one fresh process per compile), appended to the JSON-lines cache (``--cache``, shared with
``scripts/memory_table.py``) as a ``long_point`` record keyed by its argv, so a rerun compiles only what is
missing. ``scripts/memory_table.py`` renders the records as the "Long sequences" section of
``docs/memory_plan.md`` (``section_lines``), this script rewrites that file after every compile.

Rows (``ROWS``): Qwen2.5-7B LoRA r=16 on v5e-8 (``--mesh fsdp=8``), one and two sequences per chip, and
Qwen2.5-7B full fine-tuning on v5e-16 (``--mesh fsdp=16``), one sequence per chip; both ``--remat full
--scan-layers``, prompt = completion = seq / 2, log-prob chunks of 128. "Per sequence" is the slope
``bytes(2 per chip) - bytes(1 per chip)`` of the same seq and variant: what one more sequence costs a
chip, without the state and the other fixed buffers (where two per chip do not compile, the growth of
the temporaries at one per chip over the half-length row's is the measure of linear vs quadratic).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import memory_table as mt  # noqa: E402

KIND = "long_point"
# variant -> (plan_memory flags, what it is); "einsum" is the program before this work (6225ad4): the
# einsum attention and the MLP over the whole sequence
VARIANTS = {
    "einsum": (["--attention", "einsum", "--mlp-chunk", "0"], "einsum attention, MLP unchunked (before)"),
    "blockwise-whole-mlp": (["--attention", "blockwise", "--mlp-chunk", "0"], "blockwise attention, MLP unchunked"),
    "blockwise": (["--attention", "blockwise"], "blockwise attention (pure JAX), MLP in 4096-token chunks"),
    "splash": (["--attention", "splash"], "splash attention (the Pallas TPU kernel), MLP in 4096-token chunks"),
}
GIB = 2**30


class Row:
    """One table row family: ``(name, topology, chips, lora rank, [(tokens per sequence, sequences per
    chip), ...])``; every (seq, per-chip) pair is compiled for each variant."""

    def __init__(self, name, topology, chips, lora, points, extra=()):
        self.name, self.topology, self.chips, self.lora, self.points = name, topology, chips, lora, points
        self.extra = tuple(extra)

    def argv(self, seq: int, per_chip: int, variant: str) -> list[str]:
        argv = ["--model", "qwen2.5-7b", "--mesh", f"fsdp={self.chips}", "--topology", self.topology,
                "--batch", str(per_chip * self.chips), "--seq", str(seq), "--lora-rank", str(self.lora),
                "--remat", "full", "--scan-layers", *self.extra]
        return argv + VARIANTS[variant][0]


# compile order: 32k, the 8k -> 16k growth, then the shorter ones
_LORA_POINTS = [(32768, 1), (8192, 1), (16384, 1), (8192, 2), (16384, 2), (4096, 1), (4096, 2), (1024, 1)]
ROWS = {
    "lora-v5e-8": Row("Qwen2.5-7B LoRA r=16, v5e-8", "v5e-8", 8, 16, _LORA_POINTS),
    "full-v5e-16": Row("Qwen2.5-7B full fine-tuning, v5e-16", "v5e-16", 16, 0, [(8192, 1)]),
}
# einsum programs past this length materialise > 100 GiB of scores per chip: not compiled
EINSUM_MAX_SEQ = 16384
WHOLE_MLP = ("blockwise-whole-mlp",)  # compiled at 16k and 32k, one sequence per chip


def command(argv: list[str]) -> str:
    return "python scripts/plan_memory.py " + " ".join(argv)


def points(rows, variants):
    for key in rows:
        row = ROWS[key]
        for variant in variants:
            for seq, per_chip in row.points:
                if variant == "einsum" and (seq > EINSUM_MAX_SEQ or per_chip > 1):
                    continue  # einsum: its 8k program is over HBM at one sequence per chip already
                if variant in WHOLE_MLP and (seq < 16384 or per_chip > 1):
                    continue  # the chunks' effect where it matters; below 4096 tokens nothing is chunked
                yield key, row, seq, per_chip, variant


def compile_point(row: Row, seq: int, per_chip: int, variant: str, key: str) -> dict:
    """Runs ``scripts/plan_memory.py ARGV --json`` in a fresh process and returns its cache record."""
    argv = row.argv(seq, per_chip, variant)
    t0 = time.time()
    proc = subprocess.run([sys.executable, os.path.join(HERE, "plan_memory.py"), *argv, "--json"],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{command(argv)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    out = json.loads(lines[-1])
    return {"type": KIND, "row": key, "argv": argv, "seq": seq, "per_chip": per_chip, "variant": variant,
            "wall_seconds": round(time.time() - t0, 1), **{k: out[k] for k in (
                "per_device_bytes", "argument_bytes", "temp_bytes", "output_bytes", "alias_bytes",
                "hbm_bytes_per_device", "compile_seconds", "compile_error", "backend", "fits")}}


def records(recs: list[dict]) -> dict:
    """``{(row, variant, seq, per_chip): record}`` of the long-sequence compiles (last one wins)."""
    return {(r["row"], r["variant"], r["seq"], r["per_chip"]): r for r in recs if r.get("type") == KIND}


def _cell(r: dict | None) -> str:
    if r is None:
        return "not compiled"
    if r["per_device_bytes"] is None:
        need = re.search(r"\(([\d.]+G)\) exceeds", r["compile_error"] or "")
        return "refused by libtpu" + (f" ({need.group(1)} temporaries)" if need else "")
    return f"{r['per_device_bytes'] / GIB:.2f}"


def section_lines(recs: list[dict]) -> list[str]:
    """The "Long sequences" section of docs/memory_plan.md from the cache's ``long_point`` records: per
    row, one line per (variant, seq) with the GiB per chip at one sequence per chip, the per-sequence
    slope where both points compiled, and the growth of the temporaries over the half-length row's."""
    got = records(recs)
    if not got:
        return []
    lines = ["", "## Long sequences: by attention implementation", "",
             "Generated by `python scripts/long_plans.py` (method in its docstring); each cell is one compile of",
             "the real `grpo_step` (`--remat full --scan-layers`, prompt = completion = seq / 2). `GiB/chip`: XLA's",
             "per-chip bytes (arguments + outputs - aliased + temporaries) at one sequence per chip; `fits`: those",
             "within the 15.75 GiB libtpu gives a program on a v5e chip (libtpu itself refuses a program only when",
             "its temporaries alone exceed that: `refused`); `per sequence`: bytes at 2 per chip minus bytes at 1",
             "per chip (`-` = not compiled or refused).",
             "`temp x vs half`: temporaries at one sequence per chip (everything but the state and the batch,",
             "which are the arguments) over those at half the length: 2.0 = linear, 4.0 = quadratic.",
             "Variants (flags added to the command of each row):", "",
             *(f"- `{name}`: `{' '.join(flags)}`: {what}" for name, (flags, what) in VARIANTS.items()), "",
             "Past the attention, what a long sequence costs a chip is linear in its length: with `--remat full`",
             "and scanned layers the backward keeps every layer's input, L T D bf16 bytes (Qwen2.5-7B at 32k:",
             "28 x 32,768 x 3,584 x 2 B = 6.1 GiB, arithmetic), plus one layer's recompute and backward at full",
             "length (`[T, D]` / `[T, N, H]` buffers and, unchunked, the MLP's `[T, F]` with F = 5.3 D). Lowering",
             "the first needs the layer stack's inputs offloaded to host memory or checkpointed in groups of layers",
             "(not done). The splash rows use the kernel's separate dq and dk/dv backward kernels: its fused",
             "backward writes one partial dq per key block and was refused at 32k (23.83G of temporaries, 17b76ae).",
             ""]
    for key, row in ROWS.items():
        body = []
        for variant in VARIANTS:
            prev = {}
            for seq in sorted({s for s, _ in row.points}):
                one, two = got.get((key, variant, seq, 1)), got.get((key, variant, seq, 2))
                if one is None and two is None:
                    continue
                slope = (two["per_device_bytes"] - one["per_device_bytes"]
                         if one and two and one["per_device_bytes"] and two["per_device_bytes"] else None)
                t = None if one is None else one["temp_bytes"]
                growth = f"{t / prev[seq // 2]:.2f}" if t and prev.get(seq // 2) else "-"
                fit = "-" if one is None or one["per_device_bytes"] is None else (
                    "yes" if one["per_device_bytes"] <= 15.75 * GIB else "no")
                temp = "-" if one is None or one["temp_bytes"] is None else f"{one['temp_bytes'] / GIB:.2f}"
                per_seq = "-" if slope is None else f"{slope / 2**20:,.0f}"
                secs = "-" if one is None else f"{one['compile_seconds']:.0f}"
                body.append(f"| {variant} | {seq:,} | {seq * row.chips:,} | {_cell(one)} | {temp} | {growth} | "
                            f"{fit} | {per_seq} | {secs} |")
                prev[seq] = t
        if body:
            base = " ".join(row.argv(0, 1, "einsum")[:-len(VARIANTS["einsum"][0])]).replace("--seq 0", "--seq SEQ")
            lines += [f"### {row.name}", "", f"`python scripts/plan_memory.py {base}` + the variant's flags "
                      f"(`--batch {2 * row.chips}` for 2 per chip)", "",
                      "| variant | tokens/seq | tokens/step | GiB/chip | temp GiB | temp x vs half | fits | "
                      "MiB per sequence | compile s |", "|---|---|---|---|---|---|---|---|---|", *body, ""]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/memory_plan.md")
    p.add_argument("--cache", default="runs/memory_table.jsonl")
    p.add_argument("--only", default=",".join(ROWS), help="rows, in the order to compile them")
    p.add_argument("--variants", default=",".join(VARIANTS), help="variants (VARIANTS) to compile")
    p.add_argument("--render-only", action="store_true", help="rewrite --out from the cache, compile nothing")
    args = p.parse_args(argv)
    rows, attns = args.only.split(","), args.variants.split(",")
    bad = [r for r in rows if r not in ROWS] + [a for a in attns if a not in VARIANTS]
    if bad:
        raise SystemExit(f"long_plans: unknown {bad}; rows {list(ROWS)}, variants {list(VARIANTS)}")
    os.makedirs(os.path.dirname(os.path.abspath(args.cache)), exist_ok=True)
    failed = 0
    if not args.render_only:
        for key, row, seq, per_chip, variant in points(rows, attns):
            if (key, variant, seq, per_chip) in records(mt.read_cache(args.cache)):
                continue
            try:
                rec = compile_point(row, seq, per_chip, variant, key)
            except Exception as e:  # one failing point must not lose the others
                print(f"long_plans: {key} {variant} seq={seq} x{per_chip} FAILED: {e}", file=sys.stderr,
                      flush=True)
                failed += 1
                continue
            mt.append_cache(args.cache, rec)
            print(f"long_plans: {key} {variant} seq={seq} x{per_chip}: {_cell(rec)} GiB/chip, compile "
                  f"{rec['compile_seconds']} s", flush=True)
            mt.write_markdown(mt.read_cache(args.cache), args.out, 1024)
    mt.write_markdown(mt.read_cache(args.cache), args.out, 1024)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
