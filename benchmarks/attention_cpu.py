"""Attention on XLA:CPU: einsum vs blockwise, forward + backward, by sequence length (``model.attention: auto``).

    python benchmarks/attention_cpu.py --out runs/bench_attention [--lengths 256,512,1024,2048] [--repeats 5]

One attention layer of the Qwen2.5-0.5B shape (14 query heads on 2 key/value heads, H = 64), float32, one
left-padded sequence per row, ``jax.grad`` of a scalar loss with respect to q, k, v (what a training step
runs per layer). Per length the two implementations are alternated (``common.alternate``: warm-up, then
>= 5 rounds, medians); the ratio is einsum seconds / blockwise seconds (> 1 = blockwise faster). Also the
compiled temp bytes of each (``memory_analysis``). ``grpojax.models.attention.AUTO_CPU_EINSUM_MAX_KEYS``
(the length up to which ``auto`` keeps einsum on CPU) is read off this table.

Writes ``OUT/attention_cpu.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

N, K, H = 14, 2, 64


def contender(impl: str, B: int, T: int):
    """(run, temp_bytes): a zero-argument callable running one jitted forward + backward, and its temps."""
    import jax
    import jax.numpy as jnp

    from grpojax.models.attention import attention

    ks = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(ks[0], (B, T, N, H))
    k = jax.random.normal(ks[1], (B, T, K, H))
    v = jax.random.normal(ks[2], (B, T, K, H))
    seg = (jnp.arange(T)[None, :] >= T // 8).astype(jnp.int32).repeat(B, 0)

    def loss(q, k, v):
        return jnp.sum(attention(q, k, v, seg, seg, implementation=impl) ** 2)

    step = jax.jit(jax.grad(loss, (0, 1, 2)))
    temp = step.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes
    return (lambda: jax.block_until_ready(step(q, k, v))), temp


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--lengths", default="256,512,1024,2048")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    rows = []
    for T in (int(x) for x in args.lengths.split(",")):
        print(f"T={T}")
        einsum, einsum_temp = contender("einsum", args.batch, T)
        blockwise, blockwise_temp = contender("blockwise", args.batch, T)
        res = common.alternate({"einsum": einsum, "blockwise": blockwise}, repeats=args.repeats)
        rows.append({"T": T, "einsum_s": res["einsum"]["median_s"], "blockwise_s": res["blockwise"]["median_s"],
                     "einsum_over_blockwise": res["einsum"]["median_s"] / res["blockwise"]["median_s"],
                     "einsum_temp_bytes": einsum_temp, "blockwise_temp_bytes": blockwise_temp,
                     "runs": res})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "attention_cpu.json"), "w") as f:
        json.dump({"machine": common.machine(), "batch": args.batch, "shape": {"N": N, "K": K, "H": H},
                   "rows": rows}, f, indent=1)
    print("| T | einsum s | blockwise s | einsum / blockwise | einsum temp MiB | blockwise temp MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['T']} | {r['einsum_s']:.4f} | {r['blockwise_s']:.4f} | {r['einsum_over_blockwise']:.2f} | "
              f"{r['einsum_temp_bytes'] / 2**20:.1f} | {r['blockwise_temp_bytes'] / 2**20:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
