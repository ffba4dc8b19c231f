"""Cost of one decoded token: the dense KV cache vs the shared-prompt cache, side by side on CPU.

    python benchmarks/decode_cost.py --out runs/decode_cost

A small Qwen (``MODEL`` below, float32) decodes with the model's real cache branch. Each contender is a
jitted ``lax.fori_loop`` of ``--steps`` decoding steps (one token per row, greedy feedback, the cache in
the loop carry and donated, as inside the sampler's while loop), always starting from the same filled
length; the time per decoded token is the median call time (``common.alternate``: a warm-up that
compiles, then >= 5 rounds alternating the two layouts) divided by ``--steps``.

* ``dense`` (``cache_layout="dense"``): a ``[B * G, Q + L, K, H]`` cache per layer, the prompt repeated G
  times, every step attending over all ``Q + L`` slots;
* ``shared`` (the sampler's default for ``Qwen``): the prompt ``[B, Q, K, H]`` once, the generated
  ``[B * G, L, K, H]`` read by filled chunks (``grpojax.models.decode_attention``).

Sweeps: (a) the unused budget: ``L = max_new_tokens`` from 64 to 1024 at a fixed filled length;
(b) the group size G from 1 to 16 at a long prompt (per-row cost = step time / rows). Then (c) the
sampler's compiled memory (``lower_sample(...).compile().memory_analysis()``) for one shape, both layouts.

Writes ``OUT/decode_cost.json`` and prints a table of each sweep with the ratio dense / shared (> 1 =
the shared cache is cheaper).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import common  # noqa: E402

MODEL = dict(vocab_size=2048, hidden_size=256, intermediate_size=768, num_layers=4, num_heads=8,
             num_kv_heads=2, head_dim=32)


def step_loop(graphdef, layout: str, prompt_len: int, steps: int):
    """jitted ``(state, cache, last_B, slots, start) -> (cache, last_B)``: ``steps`` greedy decoding steps
    from completion index ``start`` (the cache is donated and updated in place)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from grpojax.sampling.decode import forward_last

    first_slot = 0 if layout == "shared" else prompt_len

    def run(state, cache, last_B, slots, start):
        model = nnx.merge(graphdef, state)

        def body(i, carry):
            cache, tok_B = carry
            fed = start + i
            positions_B1 = jnp.full((tok_B.shape[0], 1), prompt_len + fed, jnp.int32)
            logits_BV, cache = forward_last(model, tok_B[:, None], positions_B1, slots, cache, first_slot + fed)
            return cache, jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)

        return jax.lax.fori_loop(0, steps, body, (cache, last_B))

    return jax.jit(run, donate_argnums=1)


def caches(cfg, layout: str, prompts: int, group: int, prompt_len: int, budget: int, seed: int = 0):
    """A random-valued cache of either layout and its slot mask (every prompt slot real)."""
    import jax
    import jax.numpy as jnp

    from grpojax.models import init_cache
    from grpojax.models.kv_cache import shared_prompt_cache

    rows = prompts * group
    if layout == "shared":
        cache = shared_prompt_cache(init_cache(cfg, prompts, prompt_len), init_cache(cfg, rows, budget))
        slots = jnp.ones((prompts, prompt_len), bool)
    else:
        cache = init_cache(cfg, rows, prompt_len + budget)
        slots = jnp.ones((rows, prompt_len + budget), bool)
    leaves, tree = jax.tree.flatten(cache)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    cache = jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    return cache, slots


def measure(model, *, prompts: int, group: int, prompt_len: int, budget: int, filled: int, steps: int,
            repeats: int) -> dict:
    """Median seconds per decoded step of each layout at one shape (``filled`` generated tokens before)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = nnx.split(model)
    contenders, live = {}, {}
    for layout in ("dense", "shared"):
        fn = step_loop(graphdef, layout, prompt_len, steps)
        cache, slots = caches(model.config, layout, prompts, group, prompt_len, budget)
        live[layout] = [cache, jnp.ones((prompts * group,), jnp.int32)]

        def call(fn=fn, slots=slots, box=live[layout]):
            box[0], box[1] = fn(state, box[0], box[1], slots, jnp.int32(filled))
            return jax.block_until_ready(box[1])

        contenders[layout] = call
    res = common.alternate(contenders, repeats=repeats, log=lambda s: None)
    return {layout: res[layout]["median_s"] / steps for layout in contenders} | {
        f"{layout}_min": res[layout]["min_s"] / steps for layout in contenders}


def memory(model, *, prompts: int, group: int, prompt_len: int, budget: int) -> dict:
    """XLA's compiled memory of the whole sampler (``lower_sample``) for each layout, in bytes."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from grpojax.sampling import ModelCache, lower_sample

    graphdef, state = nnx.split(model)
    prompt = jax.ShapeDtypeStruct((prompts, prompt_len), jnp.int32)
    out = {}
    for layout in ("dense", "shared"):
        m = lower_sample(graphdef, state, prompt, prompt, max_new_tokens=budget, num_samples=group,
                         cache_fn=ModelCache(model.config), cache_layout=layout).compile().memory_analysis()
        out[layout] = dict(temp_bytes=m.temp_size_in_bytes, argument_bytes=m.argument_size_in_bytes,
                           output_bytes=m.output_size_in_bytes)
    c = model.config
    slot = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 4  # float32 keys + values of one token, all layers
    out["cache_bytes"] = dict(dense=prompts * group * (prompt_len + budget) * slot,
                              shared=(prompts * prompt_len + prompts * group * budget) * slot)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--steps", type=int, default=16, help="decoding steps per timed call")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    common.prepare_out(args.out, ["decode_cost.json"], args.overwrite)

    from flax import nnx

    from grpojax.models import Qwen, QwenConfig

    model = Qwen(QwenConfig(**MODEL), rngs=nnx.Rngs(0))
    kw = dict(steps=args.steps, repeats=args.repeats)
    budget_rows, group_rows = [], []
    for budget in (64, 128, 256, 512, 1024):
        t = measure(model, prompts=2, group=4, prompt_len=64, budget=budget, filled=32, **kw)
        budget_rows.append(dict(max_new_tokens=budget, **{f"{k}_ms": v * 1e3 for k, v in t.items()}))
        print(f"(a) L={budget}: dense {t['dense'] * 1e3:.3f} ms, shared {t['shared'] * 1e3:.3f} ms", flush=True)
    for group in (1, 2, 4, 8, 16):
        t = measure(model, prompts=1, group=group, prompt_len=512, budget=64, filled=32, **kw)
        group_rows.append(dict(G=group, **{f"{k}_ms_per_row": v * 1e3 / group for k, v in t.items()}))
        print(f"(b) G={group}: dense {t['dense'] * 1e3:.3f} ms, shared {t['shared'] * 1e3:.3f} ms", flush=True)
    mem_shape = dict(prompts=2, group=8, prompt_len=512, budget=64)
    mem = memory(model, **mem_shape)

    def cells(r, unit, first):
        out = []
        for stat in ("", "_min"):
            d, s = r[f"dense{stat}_{unit}"], r[f"shared{stat}_{unit}"]
            out += [f"{d:.3f}", f"{s:.3f}", f"{d / s:.2f}"]
            if first is not None:
                out += [f"{d / first[f'dense{stat}_{unit}']:.2f}", f"{s / first[f'shared{stat}_{unit}']:.2f}"]
        return out

    def head(unit, growth):
        out = []
        for stat in ("median", "min"):
            out += [f"dense {unit} ({stat})", f"shared {unit} ({stat})", "dense / shared"]
            out += ["dense vs L=64", "shared vs L=64"] if growth else []
        return out

    a = common.table([[r["max_new_tokens"]] + cells(r, "ms", budget_rows[0]) for r in budget_rows],
                     ["max_new_tokens"] + head("ms/step", True))
    b = common.table([[r["G"]] + cells(r, "ms_per_row", None) for r in group_rows],
                     ["G"] + head("ms/row/step", False))
    c = common.table([[k, mem[k]["temp_bytes"], mem[k]["argument_bytes"], mem["cache_bytes"][k]]
                      for k in ("dense", "shared")],
                     ["layout", "XLA temp bytes", "argument bytes", "KV cache bytes (computed)"])
    print("\n(a) unused budget: 2 prompts x G=4, prompt 64, 32 tokens filled\n" + a)
    print("\n(b) group size: 1 prompt of 512 tokens, L=64, 32 tokens filled\n" + b)
    print(f"\n(c) sampler memory, {mem_shape}\n" + c)
    common.write_json(os.path.join(args.out, "decode_cost.json"), dict(
        model=MODEL, steps_per_call=args.steps, repeats=args.repeats, machine=common.machine(),
        budget_sweep=budget_rows, group_sweep=group_rows, memory=dict(shape=mem_shape, **mem)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
