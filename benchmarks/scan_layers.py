"""Scanned vs per-layer decoder layers (``QwenConfig.scan_layers``): compile time, train-step time and
decoding time, side by side in one process on whatever backend JAX finds.

    python benchmarks/scan_layers.py --out runs/bench_scan [--layers 4,16] [--width 256] [--repeats 5]

For each depth: the jitted forward + backward of the GRPO step's model (``remat=full``, the 7B / 14B
presets' setting) on ``--batch`` x ``--seq`` tokens, and ``grpojax.sampling.sample`` (prefill +
``--new-tokens`` cached decoding steps). Compile seconds are one cold ``lower().compile()`` each (the
persistent compilation cache is off); run times are medians of alternated rounds (``common.alternate``).
Ratios are scanned / per-layer. Writes ``OUT/scan_layers.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

import common  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--layers", default="4,16", help="comma list of depths")
    p.add_argument("--width", type=int, default=256, help="D (F = 4 D, heads of 64)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    return p.parse_args(argv)


def build(num_layers: int, scan: bool, args):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from grpojax.models import PRESETS, Qwen

    D = args.width
    cfg = PRESETS["qwen2.5-0.5b"].replace(vocab_size=4096, hidden_size=D, intermediate_size=4 * D,
                                          num_layers=num_layers, num_heads=D // 64, num_kv_heads=max(D // 256, 1),
                                          head_dim=64, scan_layers=scan)
    model = Qwen(cfg, rngs=nnx.Rngs(0), remat="full")
    graphdef, state = nnx.split(model)
    toks = jax.random.randint(jax.random.key(1), (args.batch, args.seq), 0, cfg.vocab_size)

    def loss(st):
        logits = nnx.merge(graphdef, st)(toks)
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    grad = jax.jit(jax.grad(loss))
    return model, state, toks, grad


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    import jax
    import numpy as np

    from grpojax.sampling import sample

    os.makedirs(args.out, exist_ok=True)
    results = {"machine": common.machine(), "backend": jax.default_backend(), "args": vars(args), "depths": {}}
    for L in (int(x) for x in args.layers.split(",")):
        print(f"depth {L}", flush=True)
        built = {name: build(L, scan, args) for name, scan in (("per_layer", False), ("scanned", True))}
        row = {}
        for name, (_, state, _, grad) in built.items():
            t0 = time.perf_counter()
            grad.lower(state).compile()
            row[f"{name}_compile_s"] = round(time.perf_counter() - t0, 2)
            print(f"  compile {name}: {row[f'{name}_compile_s']} s", flush=True)
        train = {name: (lambda g=grad, s=state: jax.block_until_ready(g(s)))
                 for name, (model, state, toks, grad) in built.items()}
        prompts = np.asarray(built["scanned"][2][:, : args.seq // 2])
        mask = np.ones_like(prompts)
        decode = {name: (lambda m=model: jax.block_until_ready(
                      sample(m, prompts, mask, jax.random.key(2), max_new_tokens=args.new_tokens,  # noqa: B023 (run within this iteration)
                             temperature=1.0).completion_tokens_BC))
                  for name, (model, state, toks, grad) in built.items()}
        same = np.array_equal(decode["per_layer"](), decode["scanned"]())
        for what, fns in (("train_step", train), ("decode", decode)):
            t = common.alternate(fns, repeats=args.repeats, log=print)
            for name in fns:
                row[f"{name}_{what}_median_s"] = round(t[name]["median_s"], 4)
            row[f"{what}_ratio_scanned_over_per_layer"] = round(
                t["scanned"]["median_s"] / t["per_layer"]["median_s"], 3)
        row["compile_ratio_scanned_over_per_layer"] = round(row["scanned_compile_s"] / row["per_layer_compile_s"], 3)
        row["same_tokens"] = bool(same)
        results["depths"][str(L)] = row
        print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "scan_layers.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results["depths"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
