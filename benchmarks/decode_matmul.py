"""Decoding-step matmuls on XLA:CPU: which operand order streams the weights at memory bandwidth.

    python benchmarks/decode_matmul.py --out runs/bench_decode

A decoding step multiplies a handful of rows (batch x 1 token) by every weight matrix, so it is bound by
reading the weights. Three measurements, each contender alternated with the other (``common.alternate``),
medians of >= 5 rounds after a warm-up:

1. the tied LM head over Qwen's 151,936-token vocabulary, 31 dependent decoding steps in one jitted loop,
   as ``grpojax.models.Qwen.logits_from_hidden`` computes it: token-major ``[B, D] x [V, D] -> [B, V]``
   vs vocabulary-major (``vocab_major=True``: ``[V, D] x [B, D] -> [V, B]``, then transposed);
2. one decoder MLP matrix of the Qwen2.5-0.5B shape, ``[B, 896] x [896, 4864]`` (the layout our kernels
   are stored in), vs the same product against a pre-transposed ``[4864, 896]`` kernel taken
   weight-major (the lead for the 0.5B rollout: not used by the model yet);
3. the machine's streaming read rate: a sum over a float32 array of the LM head's size.

Writes ``OUT/decode_matmul.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

V, D_SMALL, ROWS, STEPS = 151_936, 256, 8, 31
D_05B, F_05B = 896, 4864


def lm_head_loop(vocab_major: bool):
    """``STEPS`` dependent decoding steps of the LM head (the next input depends on the logits)."""
    import jax
    import jax.numpy as jnp

    def logits(h_BD, table_VD):
        if not vocab_major:
            return jnp.einsum("BD,VD->BV", h_BD, table_VD)
        return jax.lax.optimization_barrier(jnp.einsum("VD,BD->VB", table_VD, h_BD)).T

    def run(h_BD, table_VD):
        def body(_, h):
            return h + 1e-3 * jnp.tanh(logits(h, table_VD)[:, : h.shape[1]])
        return jax.lax.fori_loop(0, STEPS, body, h_BD)

    return jax.jit(run)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    common.prepare_out(args.out, ["decode_matmul.json"], args.overwrite)
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(V, D_SMALL)).astype(np.float32) * 0.02)
    h = jnp.asarray(rng.normal(size=(ROWS, D_SMALL)).astype(np.float32))
    heads = {name: lm_head_loop(vm) for name, vm in (("token_major", False), ("vocab_major", True))}
    np.testing.assert_allclose(np.asarray(heads["token_major"](h, table)), np.asarray(heads["vocab_major"](h, table)),
                               rtol=1e-5, atol=1e-5)  # same values
    head = common.alternate({n: (lambda f=f: f(h, table).block_until_ready()) for n, f in heads.items()},
                            repeats=args.repeats)

    w_DF = jnp.asarray(rng.normal(size=(D_05B, F_05B)).astype(np.float32) * 0.02)
    w_FD = jnp.asarray(np.asarray(w_DF).T.copy())
    x = jnp.asarray(rng.normal(size=(ROWS, D_05B)).astype(np.float32))
    stored = jax.jit(lambda x, w: jnp.einsum("BD,DF->BF", x, w))
    weight_major = jax.jit(lambda x, w: jax.lax.optimization_barrier(jnp.einsum("FD,BD->FB", w, x)).T)
    np.testing.assert_allclose(np.asarray(stored(x, w_DF)), np.asarray(weight_major(x, w_FD)), rtol=1e-5, atol=1e-5)
    mlp = common.alternate({"stored_DF": lambda: stored(x, w_DF).block_until_ready(),
                            "pretransposed_weight_major": lambda: weight_major(x, w_FD).block_until_ready()},
                           repeats=args.repeats)

    total = jax.jit(jnp.sum)
    read = common.alternate({"sum": lambda: total(table).block_until_ready()}, repeats=args.repeats)["sum"]
    table_bytes = V * D_SMALL * 4
    out = {
        "machine": common.machine(),
        "lm_head_31_steps_s": {n: r["median_s"] for n, r in head.items()},
        "lm_head_speedup_vocab_major": head["token_major"]["median_s"] / head["vocab_major"]["median_s"],
        "mlp_matrix_0p5b_ms": {n: 1e3 * r["median_s"] for n, r in mlp.items()},
        "mlp_matrix_bandwidth_floor_ms": 1e3 * D_05B * F_05B * 4 / (table_bytes / read["median_s"]),
        "read_gb_per_s": table_bytes / read["median_s"] / 1e9,
        "timings": {"lm_head": head, "mlp": mlp, "read": read},
    }
    common.write_json(os.path.join(args.out, "decode_matmul.json"), out)
    print(json.dumps({k: v for k, v in out.items() if k not in ("timings", "machine")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
