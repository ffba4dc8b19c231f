"""The machine's limit: measured dense matmul peak (float32 / bfloat16) and the model FLOPs of an update step.

    python benchmarks/utilisation.py --out runs/bench_peak          # peaks only, writes peak.json

Peak: a jitted ``[n, n] @ [n, n]`` matmul in JAX on this CPU (XLA's Eigen / oneDNN GEMM, all cores), one
warm-up then ``reps`` timed calls; peak = 2 n^3 / the FASTEST call (the best the machine did, so utilisation
against it is conservative). Measured in the same run as the steps it is compared with.

Model FLOPs of one GRPO / DPO update step (forward + backward = 3 x the forward's 2 FLOPs per weight per
token, PaLM appendix B), for ``rows`` sequences of ``T = prompt + completion`` tokens of which ``L`` are
completion tokens::

    flops = 6 * N_blocks * rows * T            # q, k, v, o and the SwiGLU MLP of every layer, every token
          + 6 * V * D * rows * L               # the LM head, applied only where a completion token is scored
          + 6 * layers * rows * T^2 * N * H    # causal attention scores and values (T^2 / 2 each, fwd + bwd)

where ``N_blocks = layers * (D*N*H + 2*D*K*H + N*H*D + 3*D*F)`` (biases and norms ignored, embedding lookup
is not a matmul). ``six_n_t`` (6 x all parameters x rows x T) is reported alongside as the textbook count.
Utilisation = flops / measured seconds of the jitted update step / measured float32 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402


def matmul_peak(dtype: str = "float32", n: int = 2048, reps: int = 5) -> dict:
    """Measured ``n x n x n`` matmul throughput in FLOP/s: best and median of ``reps`` calls after warm-up."""
    import jax
    import jax.numpy as jnp

    if reps < 1 or n < 1:
        raise ValueError(f"need n >= 1 and reps >= 1, got n={n}, reps={reps}")
    dt = jnp.dtype(dtype)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dt)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dt)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    flops = 2.0 * n ** 3
    return {"dtype": str(dt), "n": n, "reps": reps, "times_s": times, "peak_flops": flops / min(times),
            "median_flops": flops / statistics.median(times)}


def block_matmul_params(cfg: dict) -> int:
    """Matmul weights of the decoder blocks of a HF ``Qwen2Config``-style dict (no embedding / LM head)."""
    D, F, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    N, K = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    H = cfg.get("head_dim") or D // N
    return layers * (D * N * H + 2 * D * K * H + N * H * D + 3 * D * F)


def update_step_flops(cfg: dict, *, rows: int, prompt_len: int, completion_len: int) -> dict:
    """Model FLOPs of one forward + backward over ``rows`` x (prompt + completion) tokens (module docstring)."""
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size"):
        if key not in cfg:
            raise KeyError(f"update_step_flops: config is missing {key!r}")
    D, V, layers, N = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    H = cfg.get("head_dim") or D // N
    T = prompt_len + completion_len
    blocks = 6 * block_matmul_params(cfg) * rows * T
    head = 6 * V * D * rows * completion_len
    attention = 6 * layers * rows * T * T * N * H
    all_params = block_matmul_params(cfg) + V * D
    return {"flops": float(blocks + head + attention), "blocks": float(blocks), "lm_head": float(head),
            "attention": float(attention), "six_n_t": float(6 * all_params * rows * T),
            "tokens": rows * T, "scored_tokens": rows * completion_len}


def utilisation(cfg: dict, *, rows: int, prompt_len: int, completion_len: int, step_s: float,
                peak_f32: float, peak_bf16: float | None = None) -> dict:
    """Achieved FLOP/s of an update step that took ``step_s`` seconds, and its fraction of the peaks."""
    if step_s <= 0 or peak_f32 <= 0:
        raise ValueError(f"step_s and peak_f32 must be > 0, got {step_s}, {peak_f32}")
    fl = update_step_flops(cfg, rows=rows, prompt_len=prompt_len, completion_len=completion_len)
    achieved = fl["flops"] / step_s
    out = {"model_flops_per_step": fl, "update_step_s": step_s, "achieved_flops": achieved,
           "peak_f32_flops": peak_f32, "fraction_of_peak": achieved / peak_f32}
    if peak_bf16:
        out.update(peak_bf16_flops=peak_bf16, fraction_of_bf16_peak=achieved / peak_bf16)
    return out


def xla_flops_check(size: str = "small", *, rows: int = 8, prompt_len: int = 16,
                    completion_len: int = 32) -> dict:
    """XLA's ``cost_analysis()`` FLOPs of the compiled GRPO update step of ``size`` vs
    :func:`update_step_flops` (a check of the formula; random checkpoint, the benchmark's settings)."""
    import functools
    import tempfile

    import grpo_vs_trl
    import jax
    import numpy as np
    from sampling_vs_hf import COMMON, SIZES

    from grpojax.models import from_hf
    from grpojax.train.steps.grpo import GRPOSettings, grpo_step
    from grpojax.train.steps.optim import make_optimizer
    from grpojax.train.steps.state import create_train_state

    with tempfile.TemporaryDirectory() as d:
        grpo_vs_trl.build_checkpoint(size, 0, d)
        tx = make_optimizer(grpo_vs_trl.LR, total_steps=1000, max_grad_norm=1.0)
        graphdef, state = create_train_state(from_hf(d), tx, jax.random.key(0))
    r = np.random.default_rng(0)
    V = COMMON["vocab_size"]
    batch = {"prompt_BQ": r.integers(0, V, (rows, prompt_len)).astype(np.int32),
             "prompt_mask_BQ": np.ones((rows, prompt_len), np.int32),
             "completion_BC": r.integers(0, V, (rows, completion_len)).astype(np.int32),
             "completion_mask_BC": np.ones((rows, completion_len), np.int32),
             "old_logp_BC": np.full((rows, completion_len), -12.0, np.float32),
             "ref_logp_BC": np.full((rows, completion_len), -12.0, np.float32),
             "advantages_B": r.standard_normal(rows).astype(np.float32)}
    settings = GRPOSettings(loss_type="grpo", beta=grpo_vs_trl.BETA, max_completion_length=completion_len)
    step = jax.jit(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=settings))
    cost = step.lower(state, batch, jax.random.key(0)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    formula = update_step_flops({**SIZES[size], "vocab_size": V}, rows=rows, prompt_len=prompt_len,
                                completion_len=completion_len)["flops"]
    return {"size": size, "xla_flops": float(cost["flops"]), "formula_flops": formula,
            "xla_over_formula": float(cost["flops"]) / formula}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for peak.json")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--xla-check", metavar="SIZE", help="also compare XLA's FLOP count of the GRPO update "
                   "step of SIZE (small / qwen0p5b) with the formula")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    common.prepare_out(args.out, ["peak.json"], args.overwrite)
    peaks = {dt: matmul_peak(dt, args.n, args.reps) for dt in ("float32", "bfloat16")}
    out = {"machine": common.machine(), "peaks": peaks}
    print(json.dumps({dt: f"{v['peak_flops'] / 1e9:.1f} GFLOP/s" for dt, v in peaks.items()}))
    if args.xla_check:
        out["xla_check"] = xla_flops_check(args.xla_check)
        print(json.dumps(out["xla_check"]))
    common.write_json(os.path.join(args.out, "peak.json"), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
