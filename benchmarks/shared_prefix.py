"""Shared-prefix vs concatenated training forward: FLOPs and time of forward + backward, side by side.

    python benchmarks/shared_prefix.py --out runs/bench_shared_prefix [--layers 4] [--width 256] [--repeats 5]

Two shapes, each as the concatenated forward (every row = prompt + completion) and as the shared-prefix
forward (each prompt once; ``grpojax.models.shared_prefix``):

* ``opinionqa``: the GlobalOpinionQA preference shape, ``--pairs`` prompts of ``--opinion-prompt`` (512)
  tokens, each with a chosen and a rejected one-letter answer of 2 tokens (answer + EOS); the shared form
  is what ``preference.shared_prefix`` runs (:func:`grpojax.train.steps.forward.shared_prefix_logprobs`).
* ``grpo_g8``: ``--grpo-prompts`` prompts of 256 tokens with G = 8 completions of 256 tokens each, rows
  prompt-major as a rollout; the shared form is what ``grpo.shared_prefix`` runs
  (:func:`grpojax.train.steps.forward.grouped_completion_logprobs`, with its row check).

The workload is ``jax.value_and_grad`` of the masked sum of the completion log-probs over every parameter
(the model part of a train step), on a small random Qwen (``--width`` D, F = 4 D, heads of 64, ``--layers``,
vocab 4096). FLOPs are XLA's ``compiled.cost_analysis()["flops"]``; times are medians of alternated
rounds (``common.alternate``) on whatever backend JAX finds. Ratios are shared / concatenated. The
``analytic`` entries count the matmul FLOPs of forward + backward (3 x forward: projections, MLP, the
full ``Q x S`` attention rectangle the einsum attention computes, the LM head on the completion tokens)
for this model and for Qwen2.5-7B at the same shapes. Writes ``OUT/shared_prefix.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

import common  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256, help="D (F = 4 D, heads of 64)")
    p.add_argument("--pairs", type=int, default=4, help="opinionqa: prompts (each with chosen + rejected)")
    p.add_argument("--opinion-prompt", type=int, default=512)
    p.add_argument("--grpo-prompts", type=int, default=2, help="grpo_g8: prompts (x 8 completions)")
    p.add_argument("--repeats", type=int, default=5)
    return p.parse_args(argv)


SHAPES = {"opinionqa": dict(G=2, Q=512, C=2), "grpo_g8": dict(G=8, Q=256, C=256)}


def analytic_flops(cfg, B: int, G: int, Q: int, C: int, shared: bool) -> float:
    """Matmul FLOPs of forward + backward (3 x forward) for B prompts x G completions (module docstring)."""
    D, F, N, K, H, L, V = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                           cfg.num_layers, cfg.vocab_size)
    linear = 2 * (2 * D * N * H + 2 * D * K * H + 3 * D * F)  # per token per layer: q, o, k, v, MLP
    pair = 4 * N * H  # per (query, key) pair per layer: q k^T and p v
    if shared:
        tokens, pairs = B * Q + B * G * C, B * Q * Q + B * G * C * (Q + C)
    else:
        tokens, pairs = B * G * (Q + C), B * G * (Q + C) ** 2
    head = 2 * D * V * B * G * C
    return 3.0 * (L * (linear * tokens + pair * pairs) + head)


def build(args):
    from flax import nnx

    from grpojax.models import PRESETS, Qwen

    D = args.width
    cfg = PRESETS["qwen2.5-0.5b"].replace(vocab_size=4096, hidden_size=D, intermediate_size=4 * D,
                                          num_layers=args.layers, num_heads=D // 64,
                                          num_kv_heads=max(D // 256, 1), head_dim=64)
    return Qwen(cfg, rngs=nnx.Rngs(0))


def workloads(model, shape: str, B: int):
    """``{"concatenated": (fn, args), "shared": (fn, args)}``: ``fn(state, *args)`` -> (value, grads)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from grpojax.train.steps.forward import completion_logprobs, grouped_completion_logprobs, shared_prefix_logprobs

    G, Q, C = (SHAPES[shape][k] for k in "GQC")
    r = np.random.default_rng(0)
    V = model.config.vocab_size
    lens = r.integers(Q // 2, Q + 1, B)
    pm = (np.arange(Q)[None, :] >= Q - lens[:, None]).astype(np.int32)
    p = np.where(pm, r.integers(1, V, (B, Q)), 0).astype(np.int32)
    c = r.integers(1, V, (B, G, C)).astype(np.int32)
    cm = np.ones((B, G, C), np.int32)
    graphdef, state = nnx.split(model)
    rows = lambda x: np.repeat(x, G, axis=0)  # noqa: E731

    def grad_of(logp_fn):
        def loss(st, *a):
            return jnp.sum(logp_fn(nnx.merge(graphdef, st), *a) * a[-1].reshape(B * G, C))
        return jax.jit(jax.value_and_grad(loss))

    concat = grad_of(lambda m, p, pm, c, cm: completion_logprobs(m, p, pm, c, cm, with_entropy=False).logp_BC)
    concat_args = (rows(p), rows(pm), c.reshape(B * G, C), cm.reshape(B * G, C))
    if shape == "opinionqa":
        shared = grad_of(lambda m, p, pm, c, cm: shared_prefix_logprobs(m, p, pm, c, cm, with_entropy=False).logp_BC)
        shared_args = (p, pm, c, cm)
    else:
        shared = grad_of(lambda m, p, pm, c, cm: grouped_completion_logprobs(
            m, p, pm, c, cm, group=G, with_entropy=False)[0].logp_BC)
        shared_args = concat_args
    return state, {"concatenated": (concat, concat_args), "shared": (shared, shared_args)}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    import jax
    import numpy as np

    from grpojax.models import PRESETS

    os.makedirs(args.out, exist_ok=True)
    model = build(args)
    results = {"machine": common.machine(), "backend": jax.default_backend(), "args": vars(args), "shapes": {}}
    for shape, B in (("opinionqa", args.pairs), ("grpo_g8", args.grpo_prompts)):
        print(f"{shape}: B={B} {SHAPES[shape]}", flush=True)
        state, fns = workloads(model, shape, B)
        row = {}
        for name, (fn, a) in fns.items():
            row[f"{name}_flops"] = float(fn.lower(state, *a).compile().cost_analysis()["flops"])
        vals = {name: fn(state, *a) for name, (fn, a) in fns.items()}
        (v_c, g_c), (v_s, g_s) = vals["concatenated"], vals["shared"]
        row["loss_rel_diff"] = float(abs(v_s - v_c) / abs(v_c))
        row["grad_max_abs_diff_over_max_abs"] = (
            max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(g_s), jax.tree.leaves(g_c)))
            / max(float(np.max(np.abs(y))) for y in jax.tree.leaves(g_c)))
        t = common.alternate({name: (lambda f=fn, a=a, s=state: jax.block_until_ready(f(s, *a)))
                              for name, (fn, a) in fns.items()}, repeats=args.repeats, log=print)
        for name in fns:
            row[f"{name}_median_s"] = round(t[name]["median_s"], 4)
        row["flops_ratio_shared_over_concatenated"] = round(row["shared_flops"] / row["concatenated_flops"], 4)
        row["time_ratio_shared_over_concatenated"] = round(t["shared"]["median_s"] / t["concatenated"]["median_s"], 4)
        G, Q, C = (SHAPES[shape][k] for k in "GQC")
        for label, cfg in (("this_model", model.config), ("qwen2.5_7b", PRESETS["qwen2.5-7b"])):
            row[f"analytic_ratio_{label}"] = round(analytic_flops(cfg, B, G, Q, C, True)
                                                   / analytic_flops(cfg, B, G, Q, C, False), 4)
        results["shapes"][shape] = row
        print(json.dumps(row), flush=True)
    with open(os.path.join(args.out, "shared_prefix.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results["shapes"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
