"""The prepared accelerator check: update-step MFU, sampler tokens/s vs the bandwidth floor and HF, on one GPU.

    python benchmarks/accelerator.py --suite --out DIR               # the real shapes, one GPU, < 8 minutes
    python benchmarks/accelerator.py --suite --tiny --out DIR        # every part's code at toy shapes (CPU)
    python benchmarks/accelerator.py --suite --out DIR --groups large,hf   # a subset of the groups

Writes ``DIR/suite.json`` (every number, the plan, the device, each part's error if it failed) and
``DIR/suite.md`` (the table, also printed), plus ``DIR/log_<group>.txt``; the persistent XLA compilation
cache lives in ``DIR/jax_cache`` (a second run skips the compiles). This file does not import JAX: it
runs each group in its own worker process, one after the other, so a crash or an out-of-memory in one
group loses nothing else, the GPU memory is returned between groups (the HF group needs it), and each
group is killed at its time budget (the budgets add up to ``--max-seconds``; a group that finishes early
hands its time on). Groups and what they measure (``benchmarks/accelerator_device.py``,
``benchmarks/accelerator_jax.py``, ``benchmarks/accelerator_hf.py``):

* ``device``: the matmul peak and HBM bandwidth measured on the device, and the attention parity lines:
  every implementation of :data:`grpojax.models.attention.IMPLEMENTATIONS` against a float64 NumPy
  reference (forward) and against the einsum implementation at float32 ``highest`` precision (gradient),
  in float32 and bfloat16, on a small packed / padded shape.
* ``small`` / ``large``: Qwen2.5-0.5B / Qwen2.5-7B (random weights, bf16 parameters, float32 Adam moments,
  ``remat``, ``attention=auto``, ``scan_layers``): MFU of the real jitted ``grpo_step`` at 1k and 8k tokens
  per sequence. ``large`` also times the sampler (batch 16 and 64, prompt 1k + 1k new tokens) and one whole
  GRPO step (rollout + reference forward + update) in NeMo RL's metric.
* ``hf``: ``transformers`` ``generate`` (torch, bf16, sdpa) at the sampler's shapes on the same device.

Formulas (the functions below, tested in ``tests/test_accelerator_suite.py``):

* model FLOPs of an update step over ``rows`` sequences of ``P`` prompt + ``C`` completion tokens
  (PaLM appendix B; remat recompute not counted): each matmul weight costs 2 FLOPs per token forward and
  4 backward when trained (activation + weight gradient), 2 backward when frozen (LoRA base: activation
  gradient only), 6 per LoRA adapter weight; the LM head is applied to the ``C`` scored positions only;
  causal attention adds ``6 L rows T^2 N H`` (``T = P + C``; the causal half of PaLM's
  ``12 L rows T^2 N H``, which is recorded as ``mfu_palm``). MFU = FLOPs / step seconds / the device's
  dense bf16 peak (``PEAKS``, datasheet; the measured matmul peak is reported beside it).
* sampler floor: prefill at the bf16 peak, then every decoding step reads all weights once plus the
  filled part of the KV cache (``rows x (P + i)`` tokens at step i) at the datasheet HBM bandwidth;
  fraction of floor = floor seconds / measured seconds.
* NeMo RL's GRPO metric: (prompt + generated tokens of the step) / step seconds / GPUs; their published
  on-policy Llama-3.1-8B GRPO on DGX-H100 is 1,562 tokens/s/GPU
  (https://docs.nvidia.com/nemo/rl/latest/about/performance-summary.html).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# device-kind substring -> (dense bf16 FLOP/s, HBM bytes/s), vendor datasheets (no sparsity); longest match
# wins, so "H100 PCIe" beats "H100" (= the SXM part)
PEAKS = {
    "H100": (989e12, 3.35e12), "H100 PCIe": (756e12, 2.0e12), "H100 NVL": (835e12, 3.9e12),
    "H800": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "GH200": (989e12, 4.0e12),
    "A100": (312e12, 2.039e12), "A100-SXM4-40GB": (312e12, 1.555e12), "A100-PCIE-40GB": (312e12, 1.555e12),
    "A100 80GB PCIe": (312e12, 1.935e12), "L4": (121e12, 0.3e12), "L40S": (362e12, 0.864e12),
    "TPU v4": (275e12, 1.2e12), "TPU v5 lite": (197e12, 0.819e12), "TPU v5e": (197e12, 0.819e12),
    "TPU v5p": (459e12, 2.765e12), "TPU v5": (459e12, 2.765e12), "TPU v6 lite": (918e12, 1.64e12),
    "TPU v6e": (918e12, 1.64e12),
}
NEMO_RL_GRPO_TOKENS_PER_S_PER_GPU = 1562.0  # on-policy Llama-3.1-8B GRPO, DGX-H100 (module docstring)
GOALS = {"mfu_small": 0.30, "mfu_large_1k": 0.50, "mfu_large_8k": 0.45, "sampler_floor_b16": 0.85,
         "grpo_tokens_per_s_per_gpu": NEMO_RL_GRPO_TOKENS_PER_S_PER_GPU}
GROUPS = ("device", "small", "large", "hf")
T0 = time.perf_counter()


def log(msg: str) -> None:
    """A progress line with the seconds since this process imported the suite (the workers use it)."""
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)
BUDGET_S = {"device": 30, "small": 70, "large": 290, "hf": 90}  # adds up to the default --max-seconds

# the model sizes as Qwen presets, or tiny QwenConfig fields for --tiny
TINY_SMALL = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=1, num_heads=4,
                  num_kv_heads=2, head_dim=16, tie_word_embeddings=True)
TINY_LARGE = dict(TINY_SMALL, tie_word_embeddings=False, hidden_size=96, num_heads=6, head_dim=16)


def plan(tiny: bool) -> dict:
    """The shapes of every part. Batch sizes fill one 141 GB H200 (the workers halve a batch whose compiled
    step would not fit the device and record it); ``large.mode`` "auto" trains the 7B fully where the device
    holds >= 120 GiB, else LoRA (rank 16, all projections; full 7B with AdamW does not fit 80 GB).
    ``sampler.group``: rows per distinct prompt (the tiny plan samples the GRPO step's rollout shape, so one
    compile serves both)."""
    if tiny:  # one shape per part: the smoke test runs every part's code, not every size
        mfu = [{"seq": 16, "batch": 4}]  # the GRPO step's update shape: one compile serves both
        return {
            "tiny": True,
            "device": {"matmul_n": 256, "copy_mib": 16, "parity": dict(B=2, T=24, N=4, K=2, H=16)},
            "small": {"model": TINY_SMALL, "name": "tiny-small", "mfu": mfu},
            "large": {"model": TINY_LARGE, "name": "tiny-large", "mode": "auto", "lora_rank": 4, "mfu": mfu,
                      "mfu_lora": mfu, "sampler": {"batches": [4], "group": 2, "prompt": 8, "new": 8, "repeats": 1},
                      "grpo": {"prompts": 2, "group": 2, "prompt": 8, "new": 8, "micro_rows": 4}},
            "hf": {"model": TINY_LARGE, "name": "tiny-large", "batches": [4], "prompt": 8, "new": 8},
            "common": {"remat": "block", "attention": "auto", "scan_layers": True, "logprob_chunk": 16,
                       "steps": 2},
        }
    return {
        "tiny": False,
        "device": {"matmul_n": 8192, "copy_mib": 2048, "parity": dict(B=2, T=256, N=8, K=2, H=128)},
        "small": {"model": "qwen2.5-0.5b", "name": "qwen2.5-0.5b",
                  "mfu": [{"seq": 1024, "batch": 64}, {"seq": 8192, "batch": 8}]},
        "large": {"model": "qwen2.5-7b", "name": "qwen2.5-7b", "mode": "auto", "lora_rank": 16,
                  "mfu": [{"seq": 1024, "batch": 8}, {"seq": 8192, "batch": 1}],
                  "mfu_lora": [{"seq": 1024, "batch": 16}, {"seq": 8192, "batch": 2}],
                  "sampler": {"batches": [16, 64], "group": 1, "prompt": 1024, "new": 1024, "repeats": 1},
                  "grpo": {"prompts": 8, "group": 8, "prompt": 256, "new": 768, "micro_rows": 4}},
        "hf": {"model": "qwen2.5-7b", "name": "qwen2.5-7b", "batches": [16, 64], "prompt": 1024, "new": 1024},
        "common": {"remat": "block", "attention": "auto", "scan_layers": True, "logprob_chunk": 256,
                   "steps": 3},
        # max seconds of a part (compiles included) on one H200: a part is skipped when less is left in its group
        "part_s": {"small": {"mfu": 30}, "large": {"mfu": 50, "sampler": 35, "grpo": 80},
                   "hf": {"generate_b16": 30, "generate_b64": 35}},
    }


def known_peaks(kind: str) -> tuple[float, float] | None:
    """``(bf16 FLOP/s, HBM bytes/s)`` of a device kind string (``jax.devices()[0].device_kind``), or None."""
    for name in sorted(PEAKS, key=len, reverse=True):
        if name.lower() in kind.lower():
            return PEAKS[name]
    return None


def block_weights(cfg: dict) -> int:
    """Matmul weights of the decoder blocks (q, k, v, o, gate, up, down of every layer) of a QwenConfig dict."""
    D, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_layers"]
    N, K, H = cfg["num_heads"], cfg["num_kv_heads"], cfg["head_dim"]
    return L * (2 * D * N * H + 2 * D * K * H + 3 * D * F)


def lora_weights(cfg: dict, rank: int) -> int:
    """Adapter weights of rank ``rank`` on all seven projections of every layer: ``r (in + out)`` each."""
    D, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_layers"]
    NH, KH = cfg["num_heads"] * cfg["head_dim"], cfg["num_kv_heads"] * cfg["head_dim"]
    return L * rank * ((D + NH) * 2 + (D + KH) * 2 + (D + F) * 3)


def update_flops(cfg: dict, *, rows: int, prompt: int, completion: int, lora_rank: int | None = None) -> dict:
    """Model FLOPs of one update step (module docstring); ``lora_rank`` set = frozen base + adapters."""
    T = prompt + completion
    per_weight = 4 if lora_rank else 6
    blocks = per_weight * block_weights(cfg) * rows * T
    head = per_weight * cfg["vocab_size"] * cfg["hidden_size"] * rows * completion
    attention = 6 * cfg["num_layers"] * rows * T * T * cfg["num_heads"] * cfg["head_dim"]
    adapters = 6 * lora_weights(cfg, lora_rank) * rows * T if lora_rank else 0
    return {"flops": float(blocks + head + attention + adapters), "blocks": float(blocks), "lm_head": float(head),
            "attention": float(attention), "adapters": float(adapters), "tokens": rows * T,
            "flops_palm": float(blocks + head + 2 * attention + adapters)}  # PaLM's count: no causal halving


def weight_bytes(cfg: dict, bytes_per: int = 2) -> int:
    """Bytes of the weights one decoding step reads: every block matmul and the LM head table."""
    return bytes_per * (block_weights(cfg) + cfg["vocab_size"] * cfg["hidden_size"])


def sampler_floor(cfg: dict, *, rows: int, prompt: int, new: int, peak_flops: float, bandwidth: float,
                  bytes_per: int = 2) -> dict:
    """Lower bound on the seconds of sampling ``new`` tokens after ``prompt`` for ``rows`` rows (docstring)."""
    L, K, H = cfg["num_layers"], cfg["num_kv_heads"], cfg["head_dim"]
    kv_token = L * 2 * K * H * bytes_per  # one token's keys + values over all layers
    W = weight_bytes(cfg, bytes_per)
    prefill_flops = 2 * (block_weights(cfg) * rows * prompt + cfg["vocab_size"] * cfg["hidden_size"] * rows) \
        + 2 * L * rows * prompt * prompt * cfg["num_heads"] * H
    prefill_s = max(prefill_flops / peak_flops, (W + rows * prompt * kv_token) / bandwidth)
    steps = new - 1  # the first new token comes from the prefill's logits
    kv_read = rows * kv_token * (steps * prompt + steps * (steps + 1) / 2)
    decode_s = (steps * W + kv_read) / bandwidth
    return {"floor_s": prefill_s + decode_s, "prefill_floor_s": prefill_s, "decode_floor_s": decode_s,
            "weight_bytes": W, "kv_bytes_read": kv_read, "floor_tokens_per_s": rows * new / (prefill_s + decode_s)}


# ------------------------------------------------------------------------------------------ orchestration

def run_group(group: str, plan_path: str, out: str, timeout_s: float, env: dict) -> dict:
    """Runs one group's worker; returns its results (each part's dict, or ``{"error": ...}``)."""
    worker = "accelerator_hf.py" if group == "hf" else "accelerator_jax.py"
    result_path = os.path.join(out, f"result_{group}.json")
    if os.path.exists(result_path):
        os.remove(result_path)
    cmd = [sys.executable, os.path.join(HERE, worker), "--group", group, "--plan", plan_path,
           "--result", result_path, "--cache-dir", os.path.join(out, "jax_cache"), "--seconds", f"{timeout_s:.1f}"]
    t0 = time.perf_counter()
    status = "ok"
    with open(os.path.join(out, f"log_{group}.txt"), "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                text=True, bufsize=1)

        def pump():  # everything to the log; the workers' progress lines ("[   12.3s] ...") to the console too
            for line in proc.stdout:
                log_file.write(line)
                if line.startswith("["):
                    print(f"    {group} {line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=max(timeout_s, 1))
            if rc:
                status = f"worker exited with status {rc} (log_{group}.txt)"
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            status = f"killed at its time budget of {timeout_s:.0f}s (log_{group}.txt)"
        reader.join(10)
    results = {}
    if os.path.exists(result_path):
        with open(result_path) as f:
            results = json.load(f)
    results["_group"] = {"status": status, "seconds": time.perf_counter() - t0, "budget_s": timeout_s}
    return results


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _verdict(value, goal, word=("met", "missed")):
    return "-" if goal is None else (word[0] if value >= goal else word[1])


def _line(grp: str, name: str, r: dict, suite: dict) -> list | None:
    """One table row for part ``name`` of group ``grp`` (None: nothing to show)."""
    label = f"{grp}.{name}"
    if "error" in r:
        return [label, r.get("shape", ""), "ERROR " + r["error"][:200], "", ""]
    if "skipped" in r:
        return [label, "", "skipped: " + r["skipped"], "", ""]
    if name.startswith("parity"):
        return [label, r["shape"], f"fwd {r['fwd_err']:.1e}, grad {r['grad_err']:.1e}", f"tol {r['tol']}",
                "ok" if r["ok"] else "FAILED"]
    if name in ("matmul_peak", "bandwidth"):
        val = f"{r['tflops']} TFLOP/s" if name == "matmul_peak" else f"{r['gb_per_s']} GB/s"
        return [label, r["shape"], val, f"datasheet {r['datasheet']}", ""]
    if name.startswith("mfu"):
        return [label, f"{r['shape']} ({r['mode']})", f"MFU {_pct(r['mfu'])} ({r['step_s']:.3f} s/step)",
                _pct(r.get("goal")), _verdict(r["mfu"], r.get("goal"))]
    if name.startswith("sampler"):
        return [label, r["shape"], f"{r['tokens_per_s']:.0f} tok/s, {_pct(r['fraction_of_floor'])} of floor",
                _pct(r.get("goal")), _verdict(r["fraction_of_floor"], r.get("goal"))]
    if name == "grpo_step":
        nemo = NEMO_RL_GRPO_TOKENS_PER_S_PER_GPU
        parts = f"rollout {r['rollout_s']:.1f}, ref {r['ref_s']:.1f}, update {r['update_s']:.1f}"
        return [label, f"{r['shape']} ({r['mode']})", f"{r['tokens_per_s_per_gpu']:.0f} tok/s/GPU "
                f"({r['step_s']:.1f} s: {parts})", f"NeMo RL {nemo:.0f}",
                _verdict(r["tokens_per_s_per_gpu"], nemo, ("beaten", "not beaten"))]
    if name.startswith("generate"):
        ours = suite["groups"].get("large", {}).get(name.replace("generate", "sampler"), {}).get("tokens_per_s")
        ratio = "" if ours is None else f"ours / HF {ours / r['tokens_per_s']:.2f}x"
        return [label, r["shape"], f"{r['tokens_per_s']:.0f} tok/s", "", ratio]
    return None


def table(suite: dict) -> str:
    """The markdown table of a suite's results: one row per measurement, errors included, group statuses."""
    rows = []
    for grp, res in suite["groups"].items():
        for name, r in res.items():
            row = None if name.startswith("_") else _line(grp, name, r, suite)
            if row:
                rows.append(row)
    for grp, res in suite["groups"].items():
        st = res.get("_group", {})
        rows.append([f"group {grp}", "", f"{st.get('status')} in {st.get('seconds', 0):.0f}s", "", ""])
    info = suite["groups"].get("device", {}).get("info", {})
    head = ["measurement", "shape", "value", "goal", ""]
    tiny = " (--tiny: toy shapes, the numbers mean nothing)" if suite.get("plan", {}).get("tiny") else ""
    lines = [f"device: {info.get('device_kind', '?')}, jax {info.get('jax', '?')}, attention implementations "
             f"{info.get('implementations', '?')}; {suite.get('seconds', 0):.0f}s in all{tiny}", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", action="store_true", required=True, help="run the prepared suite")
    p.add_argument("--out", required=True, help="directory for suite.json, suite.md, logs and the XLA cache")
    p.add_argument("--tiny", action="store_true", help="toy shapes everywhere (a CPU smoke run of every part)")
    p.add_argument("--groups", default=",".join(GROUPS), help=f"comma list from {GROUPS}")
    p.add_argument("--max-seconds", type=float, default=sum(BUDGET_S.values()),
                   help="the whole suite's time; each group gets its budget share plus what earlier ones left")
    p.add_argument("--large-mode", choices=("auto", "full", "lora"), default="auto",
                   help="7B: full fine-tuning, LoRA, or auto (full where the device holds >= 120 GiB)")
    p.add_argument("--attention", default="auto", help="Qwen(attention=...) of every JAX part (model.attention)")
    args = p.parse_args(argv)
    groups = [x for x in args.groups.split(",") if x]
    bad = [x for x in groups if x not in GROUPS]
    if bad or not groups:
        p.error(f"--groups: unknown {bad or args.groups!r}; choose from {GROUPS}")
    os.makedirs(args.out, exist_ok=True)
    the_plan = {**plan(args.tiny), "large_mode": args.large_mode}
    the_plan["common"]["attention"] = args.attention
    plan_path = os.path.join(args.out, "plan.json")
    with open(plan_path, "w") as f:
        json.dump(the_plan, f, indent=1)
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # the 7B train state needs most of the GPU
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    scale = args.max_seconds / sum(BUDGET_S[x] for x in groups)
    start = time.perf_counter()
    allowed = 0.0
    shown_env = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_FLAGS", "JAX_PLATFORMS")
    suite = {"command": "python benchmarks/accelerator.py " + " ".join(argv if argv is not None else sys.argv[1:]),
             "plan": the_plan, "goals": GOALS, "env": {k: env.get(k) for k in shown_env}, "groups": {}}
    for grp in groups:
        allowed += BUDGET_S[grp] * scale
        timeout = allowed - (time.perf_counter() - start)
        print(f"[{time.perf_counter() - start:6.1f}s] group {grp}: up to {timeout:.0f}s", flush=True)
        suite["groups"][grp] = run_group(grp, plan_path, args.out, timeout, env)
        print(f"[{time.perf_counter() - start:6.1f}s] group {grp}: {suite['groups'][grp]['_group']['status']}",
              flush=True)
        suite["seconds"] = time.perf_counter() - start
        with open(os.path.join(args.out, "suite.json"), "w") as f:
            json.dump(suite, f, indent=1)
    text = table(suite)
    with open(os.path.join(args.out, "suite.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"wrote {os.path.join(args.out, 'suite.json')} in {suite['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
