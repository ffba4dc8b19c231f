"""MFU of the real GRPO update step and sampler tokens/s on whatever accelerator JAX finds.

    python benchmarks/accelerator.py --out runs/bench_accel.json                 # 0.5B shape, bf16
    python benchmarks/accelerator.py --layers 2 --batch 4 --seq 256 --new-tokens 16   # a small CPU run

MFU = model FLOPs / step time / (devices x peak FLOP/s). Model FLOPs per step (PaLM appendix B):
``6 N T + 6 L T S_eff N_h H`` where N = matmul weights (incl. the LM head), T = tokens in the step,
S_eff = sequence / 2 (causal attention, fwd + bwd = 3 x the 2 matmuls). The peak is the dense bf16
number of a known device (``PEAKS``); for an unknown device (e.g. CPU) it is MEASURED with a large
matmul, and the JSON says so. The step is :func:`grpojax.train.grpo_step` (bf16 params, float32 Adam via
``f32_optimizer_state``, remat and log-prob chunking as given) jitted with ``grpojax.sharding.jit_step``
over a data-parallel mesh of every device; times are medians of ``--steps`` runs after one warm-up.
Writes one JSON object with the device name and every number.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from grpojax import sharding as shd  # noqa: E402
from grpojax.models import PRESETS, Qwen  # noqa: E402
from grpojax.sampling import ShardedCache, sample  # noqa: E402
from grpojax.train.placement import init_train_state  # noqa: E402
from grpojax.train.steps.grpo import GRPOSettings, grpo_step  # noqa: E402

# dense bf16 peak FLOP/s per device (vendor datasheets; sparsity excluded)
PEAKS = {
    "H100": 989e12, "H200": 989e12, "H800": 989e12, "GH200": 989e12, "A100": 312e12, "L4": 121e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}


def known_peak(kind: str) -> float | None:
    for name in sorted(PEAKS, key=len, reverse=True):
        if name.lower() in kind.lower():
            return PEAKS[name]
    return None


def measured_peak(dtype, n: int = 2048, reps: int = 5) -> float:
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def model_flops(cfg, batch: int, seq: int) -> float:
    D, F, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    n_matmul = L * (2 * D * N * H + 2 * D * K * H + 3 * D * F) + V * D
    tokens = batch * seq
    return 6 * n_matmul * tokens + 6 * L * tokens * (seq / 2) * N * H * 2


def timed(fn, steps):
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times)), times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-0.5b")
    p.add_argument("--layers", type=int, default=None, help="override num_layers (small CPU runs)")
    p.add_argument("--batch", type=int, default=16, help="sequences per GRPO step")
    p.add_argument("--seq", type=int, default=1024, help="prompt + completion tokens")
    p.add_argument("--remat", default="block", choices=("none", "block", "full"))
    p.add_argument("--logprob-chunk", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--sample-batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--out", default=None, help="write the JSON here too")
    args = p.parse_args(argv)

    cfg = PRESETS[args.model]
    if args.layers:
        cfg = cfg.replace(num_layers=args.layers)
    dev = jax.devices()[0]
    mesh = shd.make_mesh({"data": -1})
    tx = shd.f32_optimizer_state(optax.adamw(1e-6))

    def ctor():
        return Qwen(cfg, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0), remat=args.remat)

    graphdef, state, state_sh = init_train_state(ctor, tx, jax.random.key(0), mesh)
    B, P = args.batch, args.seq // 2
    Lc = args.seq - P
    r = np.random.default_rng(0)
    batch = {"prompt_BQ": r.integers(0, cfg.vocab_size, (B, P), dtype=np.int32),
             "prompt_mask_BQ": np.ones((B, P), np.int32),
             "completion_BC": r.integers(0, cfg.vocab_size, (B, Lc), dtype=np.int32),
             "completion_mask_BC": np.ones((B, Lc), np.int32),
             "old_logp_BC": np.full((B, Lc), -5.0, np.float32),
             "ref_logp_BC": np.full((B, Lc), -5.0, np.float32),
             "advantages_B": r.standard_normal(B).astype(np.float32)}
    batch_sh = shd.batch_shardings(batch, mesh)
    batch = shd.shard(batch, batch_sh)
    step = shd.jit_step(functools.partial(grpo_step, graphdef=graphdef, tx=tx,
                                          settings=GRPOSettings(beta=0.04, logprob_chunk=args.logprob_chunk)),
                        state_sh, batch_sh, mesh)
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step(holder["state"], batch, jax.random.key(1))
        return metrics["loss"]

    t = time.perf_counter()
    jax.block_until_ready(one_step())
    compile_s = time.perf_counter() - t
    step_s, step_times = timed(one_step, args.steps)

    flops = model_flops(cfg, B, args.seq)
    peak = known_peak(dev.device_kind)
    peak_source = "datasheet (dense bf16)"
    if peak is None:
        peak, peak_source = measured_peak(jnp.bfloat16), "measured 2048^3 bf16 matmul"
    n_dev = jax.device_count()
    mfu = flops / step_s / (n_dev * peak)

    # sampler: the trained params, prompts sharded over the batch axes, KV cache sharded by the rules
    model = nnx.merge(graphdef, holder["state"].params, holder["state"].frozen)
    prompts = r.integers(0, cfg.vocab_size, (args.sample_batch, args.prompt_len), dtype=np.int32)
    psh = shd.batch_shardings({"p": prompts}, mesh)["p"]
    prompts = jax.device_put(prompts, psh)
    mask = jax.device_put(np.ones(prompts.shape, np.int32), psh)
    cache_fn = ShardedCache(cfg, mesh, jnp.bfloat16)

    def run_sample():
        return sample(model, prompts, mask, jax.random.key(2), max_new_tokens=args.new_tokens,
                      temperature=1.0, cache_fn=cache_fn).completion_tokens_BC

    t = time.perf_counter()
    jax.block_until_ready(run_sample())
    sample_compile_s = time.perf_counter() - t
    sample_s, _ = timed(run_sample, max(2, args.steps // 2))
    gen_tokens = args.sample_batch * args.new_tokens

    out = {
        "device_kind": dev.device_kind, "platform": dev.platform, "devices": n_dev,
        "host": platform.node(), "jax": jax.__version__,
        "model": args.model, "num_layers": cfg.num_layers, "params_dtype": "bfloat16", "remat": args.remat,
        "batch": B, "seq": args.seq, "step_seconds": step_s, "step_seconds_all": step_times,
        "compile_seconds": compile_s, "model_flops_per_step": flops,
        "peak_flops_per_device": peak, "peak_source": peak_source, "mfu": mfu,
        "tokens_per_second_train": B * args.seq / step_s,
        "sample_batch": args.sample_batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "sample_seconds": sample_s, "sample_compile_seconds": sample_compile_s,
        "sampler_tokens_per_second": gen_tokens / sample_s,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
