"""Ahead-of-time memory / FLOP plan of the REAL GRPO or DPO train step on a mesh, without weights.

    grpojax plan-memory --model qwen2.5-7b --mesh fsdp=16 --batch 32 --seq 1024 \
        --topology v5e-16 [--kind grpo|dpo] [--lora-rank 16] [--remat full] [--json]
    grpojax plan-memory --model qwen2.5-0.5b --devices 8 --mesh fsdp=8 --batch 16 --seq 1024
    grpojax plan-memory --model qwen2.5-7b --kind sample --mesh fsdp=-1 --rollout-tensor 8 \
        --batch 64 --seq 1024 --topology v5e-8       # the rollout sampler instead of a train step

The train state is ``jax.eval_shape``-d (no parameter is ever allocated), given the shardings of
``grpojax.sharding`` and lowered + compiled with ``jit_step`` (donated state). Numbers come from XLA:
``compiled.memory_analysis()`` -> ``per_device_bytes = argument + output - aliased + temp`` and
``compiled.cost_analysis()["flops"]`` (the per-device SPMD program) x devices = ``flops_per_step``.
XLA's cost analysis counts the body of a ``while`` loop ONCE, whatever its trip count: the chunked
log-prob ``lax.map`` (completion / ``--logprob-chunk`` iterations of the LM head) is undercounted, so
``flops_per_step`` is a lower bound that includes remat recompute; ``model_flops_per_step`` is the
analytic MFU count (see ``model_flops``), the one to divide by step time for MFU. With ``--scan-layers``
the whole layer stack is one ``while`` loop, so XLA's count would be one layer's: ``flops_per_step`` is
None there, while the memory analysis (buffer assignment of the whole program) is complete.

``--kind sample`` compiles the rollout sampler (``grpojax.sampling.lower_sample``: prefill ``--prompt-len``
tokens, decode ``seq - prompt_len``, top-p, bf16 KV cache) on ``rollout_mesh(mesh, --rollout-tensor)``
and adds ``train_state_bytes_per_device`` (the train state of ``--lora-rank`` on the training mesh,
resident beside the rollout), ``rollout_copy_collective_bytes`` / ``rollout_copy_temp_bytes`` (what
copying the policy from the training layout onto the rollout mesh, ``grpojax.sharding.copy_to_rollout``,
brings into a chip once per rollout and its largest temporaries; 0 without ``--rollout-tensor``) and
``decode_step_collective_bytes``: what one decoded token moves between chips, per device
(``grpojax.sharding.hlo.loop_collective_bytes``: the decoding loop's body, scanned layers x their count),
and ``program_collective_bytes`` (every collective of the program once).

``--attention`` is ``model.attention`` (default auto, decided for the backend compiled for: splash for a
TPU ``--topology``, einsum / blockwise by length for fake CPU devices; ``grpojax.models.attention``).

Backends: ``--topology v5e-8|v5e-16|v5e-32|v5p-8|v5p-16`` compiles for that TPU topology on this CPU
machine with libtpu's compile-only client (``pip install -e .[tpu-plan]``; MaxText ``train_compile.py``
approach). ``--devices N`` (or a topology libtpu cannot give) uses N fake CPU devices: the CPU compiler's
memory analysis approximates TPU / GPU numbers (different fusion, no GPU-specific kernels); the output
says which backend produced it. ``python scripts/plan_memory.py ...`` (a clone) is the same command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

TOPOLOGIES = {  # name -> (libtpu topology, chips, HBM bytes per chip)
    "v5e-8": ("v5e:2x4", 8, 16 * 2**30), "v5e-16": ("v5e:4x4", 16, 16 * 2**30),
    "v5e-32": ("v5e:4x8", 32, 16 * 2**30), "v5p-8": ("v5p:2x2x1", 4, 95 * 2**30),
    "v5p-16": ("v5p:2x2x2", 8, 95 * 2**30),
}
H100_HBM = 80 * 10**9


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a grpojax.models.PRESETS name, e.g. qwen2.5-7b")
    p.add_argument("--mesh", default="fsdp=-1", help="comma list of data=,fsdp=,tensor= (-1 = the rest)")
    p.add_argument("--batch", type=int, default=None,
                   help="sequences (grpo) or pairs (dpo) per step; sampled rows (sample)")
    p.add_argument("--seq", type=int, default=1024, help="prompt + completion tokens")
    p.add_argument("--prompt-len", type=int, default=None, help="default: seq // 2")
    p.add_argument("--kind", choices=("grpo", "dpo", "sample"), default="grpo",
                   help="sample: the rollout sampler (prefill --prompt-len, decode the rest) instead of a step")
    p.add_argument("--rollout-tensor", type=int, default=None,
                   help="--kind sample: sample on grpojax.sharding.rollout_mesh(mesh, k) (mesh.rollout_tensor)")
    p.add_argument("--copy-direct", action="store_true",
                   help="--kind sample: measure the policy copy as ONE reshard straight onto the rollout mesh "
                        "(what grpojax.sharding.copy_to_rollout avoids) instead of its hops")
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--remat", choices=("none", "block", "full"), default="full")
    p.add_argument("--attention", choices=("auto", "einsum", "blockwise", "cudnn", "splash"), default="auto",
                   help="model.attention; auto = what the compiled-for backend picks (splash for --topology)")
    p.add_argument("--param-dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--micro", type=int, default=1, help="gradient-accumulation micro-batches")
    p.add_argument("--logprob-chunk", type=int, default=128)
    p.add_argument("--mlp-chunk", type=int, default=None,
                   help="tokens per MLP chunk of a long sequence (grpojax.models.qwen.MLP_CHUNK_TOKENS, default "
                        "4096); 0 runs the MLP over the whole sequence at once")
    p.add_argument("--layers", type=int, default=None, help="override num_layers")
    p.add_argument("--scan-layers", action="store_true",
                   help="stacked layers run by lax.scan (QwenConfig.scan_layers): the compile takes about as "
                        "long as one layer's at any depth; flops_per_step is then None (see --json)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--topology", choices=sorted(TOPOLOGIES))
    g.add_argument("--devices", type=int, default=None, help="N fake CPU devices")
    p.add_argument("--libtpu-path", default=os.environ.get("GRPOJAX_LIBTPU_PATH"),
                   help="extra sys.path entry holding the libtpu package (if not installed)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def parse_mesh(text: str) -> dict:
    out = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in part:
            raise SystemExit(f"--mesh: expected axis=size, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = int(v)
    return out


def setup_backend(args):
    """Chooses TPU AOT (libtpu) or N fake CPU devices; must run before jax is imported."""
    if args.topology:
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no chip is locked
        if args.libtpu_path:
            sys.path.insert(0, args.libtpu_path)
        try:
            from jax.experimental import topologies
            topo_name, chips, hbm = TOPOLOGIES[args.topology]
            topo = topologies.get_topology_desc(topo_name, "tpu", chip_config_name="default",
                                                chips_per_host_bounds=(2, 2, 1), num_slices=1)
            devices = list(topo.devices)
            return devices, f"tpu AOT compile ({args.topology}, {devices[0].device_kind})", hbm
        except Exception as e:  # libtpu missing or unusable here: fall back, loudly
            n = TOPOLOGIES[args.topology][1]
            print(f"plan_memory: libtpu topology {args.topology} unavailable ({type(e).__name__}: {e}); "
                  f"falling back to {n} fake CPU devices", file=sys.stderr)
            args.devices = n
            hbm = TOPOLOGIES[args.topology][2]
    else:
        hbm = H100_HBM
    n = args.devices or 8
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={n}").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    if jax.device_count() < n:
        raise SystemExit(f"plan_memory: need {n} CPU devices, JAX has {jax.device_count()} (was jax "
                         "imported before XLA_FLAGS could be set?)")
    return jax.devices()[:n], f"cpu ({n} fake devices; an approximation of accelerator memory)", hbm


def model_flops(cfg, seqs: int, seq: int, completion_len: int, lora: bool) -> float:
    """Model FLOPs of one train step by the MFU convention (PaLM, Chowdhery et al. 2022, appendix B; no
    rematerialisation recompute counted):

        decoder matmuls  k N_layers (seqs * seq)          N_layers = L (2 D N H + 2 D K H + 3 D F)
        attention        12 L (N H) seq^2 seqs            (QK^T and AV, forward + backward, not halved)
        LM head          k V D (seqs * completion_len)    (log-probs of completion tokens only)

    with ``k = 6`` (forward 2 + input gradient 2 + weight gradient 2) for trained weights and ``k = 4``
    for frozen ones (LoRA: the base gets no weight gradient; the rank-r adapters are neglected).
    """
    D, F, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    N, K, H = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    k = 4 if lora else 6
    per_layer = D * (N * H) * 2 + D * (K * H) * 2 + 3 * D * F
    return float(k * L * per_layer * seqs * seq + 12 * L * N * H * seq * seq * seqs
                 + k * V * D * seqs * completion_len)


def build(args, devices):
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from grpojax import sharding as shd
    from grpojax.models import PRESETS, Qwen
    from grpojax.models.lora import apply_lora
    from grpojax.train.steps.grpo import GRPOSettings, grpo_step
    from grpojax.train.steps.optim import make_optimizer
    from grpojax.train.steps.preference import PreferenceSettings, preference_step
    from grpojax.train.steps.state import create_train_state

    if args.model not in PRESETS:
        raise SystemExit(f"--model {args.model!r}: valid presets: {', '.join(PRESETS)}")
    cfg = PRESETS[args.model]
    if args.layers:
        cfg = cfg.replace(num_layers=args.layers)
    cfg = cfg.replace(scan_layers=args.scan_layers)
    pdt = jnp.dtype(args.param_dtype)
    mesh = shd.make_mesh(parse_mesh(args.mesh), devices=devices)
    P = args.prompt_len if args.prompt_len is not None else args.seq // 2
    Lc = args.seq - P
    if P < 1 or Lc < 1:
        raise SystemExit(f"--seq {args.seq} / --prompt-len {P}: both parts need >= 1 token")

    def ctor():
        m = Qwen(cfg, dtype=jnp.bfloat16, param_dtype=pdt, remat=args.remat, attention=args.attention)
        if args.lora_rank:
            apply_lora(m, rank=args.lora_rank, alpha=2 * args.lora_rank, param_dtype=jnp.float32)
        return m

    tx = make_optimizer(1e-5, total_steps=1000)
    if pdt != jnp.float32:
        tx = shd.f32_optimizer_state(tx)
    holder = {}

    def init(rng):
        holder["graphdef"], state = create_train_state(ctor(), tx, rng, lora=args.lora_rank > 0)
        return state

    rng = jax.random.key(0)
    abstract = jax.eval_shape(init, rng)
    graphdef = holder["graphdef"]
    state_sh = shd.train_state_shardings(abstract, mesh)
    if args.kind == "sample":  # the train state stays resident on the training mesh while a rollout runs
        resident = sum(int(np.prod(sh.shard_shape(x.shape))) * x.dtype.itemsize
                       for x, sh in zip(jax.tree.leaves(abstract), jax.tree.leaves(state_sh)))
        *built, extra = build_sampler(args, cfg, ctor, mesh, P, Lc)
        return (*built, {**extra, "train_state_bytes_per_device": resident})
    abstract = shd.with_shardings(abstract, state_sh)
    B = args.batch
    i32, f32 = jnp.int32, jnp.float32
    if args.kind == "grpo":
        shapes = {"prompt_BQ": ((B, P), i32), "prompt_mask_BQ": ((B, P), i32),
                  "completion_BC": ((B, Lc), i32), "completion_mask_BC": ((B, Lc), i32),
                  "old_logp_BC": ((B, Lc), f32), "ref_logp_BC": ((B, Lc), f32), "advantages_B": ((B,), f32)}
        step = functools.partial(grpo_step, graphdef=graphdef, tx=tx, num_micro=args.micro,
                                 settings=GRPOSettings(beta=0.04, logprob_chunk=args.logprob_chunk))
        seqs = B
    else:
        shapes = {"prompt_BQ": ((B, P), i32), "prompt_mask_BQ": ((B, P), i32),
                  "chosen_BC": ((B, Lc), i32), "chosen_mask_BC": ((B, Lc), i32),
                  "rejected_BC": ((B, Lc), i32), "rejected_mask_BC": ((B, Lc), i32),
                  "ref_chosen_logp_B": ((B,), f32), "ref_rejected_logp_B": ((B,), f32)}
        step = functools.partial(preference_step, graphdef=graphdef, tx=tx, num_micro=args.micro,
                                 settings=PreferenceSettings(loss="dpo", logprob_chunk=args.logprob_chunk))
        seqs = 2 * B
    batch = shd.abstract_batch(shapes, mesh)
    batch_sh = {k: v.sharding for k, v in batch.items()}
    rng_abs = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=shd.named(mesh))
    jitted = shd.jit_step(step, state_sh, batch_sh, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(abstract.params)) + \
        sum(x.size for x in jax.tree.leaves(abstract.frozen))
    n_train = sum(x.size for x in jax.tree.leaves(abstract.params))
    return cfg, mesh, lambda: jitted.lower(abstract, batch, rng_abs), seqs, n_params, n_train, {}


def target_platform(devices) -> str:
    """The backend the plan compiles for (``tpu`` for a libtpu topology), for the attention choice."""
    return devices[0].platform


def build_sampler(args, cfg, ctor, mesh, P, Lc):
    """The rollout sampler's program (``grpojax.sampling.lower_sample``) for ``--batch`` prompts of ``P``
    tokens decoding ``Lc`` tokens, on ``rollout_mesh(mesh, --rollout-tensor)``, weights abstract."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from grpojax import sharding as shd
    from grpojax.sampling import ShardedCache, lower_sample

    train_mesh, mesh = mesh, shd.rollout_mesh(mesh, args.rollout_tensor)
    holder = {}

    def init():
        holder["graphdef"], state = nnx.split(ctor())
        return state

    plain = jax.eval_shape(init)
    abstract = shd.with_shardings(plain, shd.tree_shardings(plain, mesh))
    # the per-rollout copy of the policy from the training layout (shd.copy_to_rollout, hop by hop): what a
    # chip receives, and the largest temporaries of a hop; None when libtpu refuses a hop for HBM
    copy = {"rollout_copy_collective_bytes": 0, "rollout_copy_temp_bytes": 0}
    src = train_mesh
    hops = shd.rollout_hops(train_mesh, mesh)
    for hop in (hops[-1:] if args.copy_direct else hops):
        from grpojax.sharding.hlo import collective_bytes

        try:
            c = jax.jit(lambda st: st, out_shardings=shd.tree_shardings(plain, hop)).lower(
                shd.with_shardings(plain, shd.tree_shardings(plain, src))).compile()
        except Exception as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            copy = dict.fromkeys(copy)
            break
        copy["rollout_copy_collective_bytes"] += sum(collective_bytes(c.as_text()).values())
        copy["rollout_copy_temp_bytes"] = max(copy["rollout_copy_temp_bytes"], c.memory_analysis().temp_size_in_bytes)
        src = hop
    B = args.batch
    prompt = shd.abstract_batch({"ids": ((B, P), jnp.int32), "mask": ((B, P), jnp.int32)}, mesh)
    cache = ShardedCache(cfg, mesh, jnp.bfloat16)
    n_params = sum(x.size for x in jax.tree.leaves(abstract))
    return cfg, mesh, lambda: lower_sample(holder["graphdef"], abstract, prompt["ids"], prompt["mask"],
                                           max_new_tokens=Lc, cache_fn=cache, top_p=True), B, n_params, 0, copy


@contextlib.contextmanager
def mlp_chunk(tokens: int | None):
    """``grpojax.models.qwen.MLP_CHUNK_TOKENS`` = ``tokens`` (0: no chunking) while the step is traced,
    restored after; None leaves it alone."""
    from grpojax.models import qwen

    old = qwen.MLP_CHUNK_TOKENS
    if tokens is not None:
        if tokens < 0:
            raise SystemExit(f"--mlp-chunk {tokens}: expected 0 (off) or a token count")
        qwen.MLP_CHUNK_TOKENS = tokens or sys.maxsize
    try:
        yield
    finally:
        qwen.MLP_CHUNK_TOKENS = old


def plan(args) -> dict:
    """Compiles the step and returns XLA's numbers. A program the TPU compiler itself rejects for its size
    (``RESOURCE_EXHAUSTED: Ran out of memory on HBM``) is a plan too: ``fits`` is False,
    ``per_device_bytes`` / ``flops_per_step`` are None and ``compile_error`` holds the compiler's line."""
    devices, backend, hbm = setup_backend(args)
    compiled, error = None, None
    from grpojax.models.attention import check_backend, target_backend

    platform = target_platform(devices)
    why = check_backend(args.attention, platform)
    if why:
        raise SystemExit(f"plan_memory: --attention: {why}")
    cfg, mesh, lower, seqs, n_params, n_train, extra = build(args, devices)
    t0 = time.time()
    try:
        with target_backend(platform), mlp_chunk(args.mlp_chunk):
            compiled = lower().compile()
    except Exception as e:  # only the compiler's out-of-memory verdict is an answer; the rest propagates
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        error = next((ln.strip() for ln in str(e).splitlines() if "RESOURCE_EXHAUSTED" in ln), str(e))[:400]
    compile_s = time.time() - t0
    n_dev = mesh.devices.size
    mflops = None if args.kind == "sample" else model_flops(
        cfg, seqs, args.seq, args.seq - (args.prompt_len if args.prompt_len is not None else args.seq // 2),
        args.lora_rank > 0)
    out = {
        "model": args.model, "kind": args.kind, "lora_rank": args.lora_rank, "remat": args.remat,
        "attention": args.attention,
        "scan_layers": args.scan_layers, "layers": cfg.num_layers, "mlp_chunk": args.mlp_chunk,
        "param_dtype": args.param_dtype, "batch": args.batch, "seq": args.seq, "micro": args.micro,
        "mesh": dict(mesh.shape), "devices": n_dev, "backend": backend,
        "topology": args.topology, "hbm_bytes_per_device": hbm,
        "per_device_bytes": None, "fits": False, "argument_bytes": None, "output_bytes": None,
        "alias_bytes": None, "temp_bytes": None, "flops_per_device": None, "flops_per_step": None,
        "model_flops_per_step": mflops, "params": int(n_params), "trainable_params": int(n_train),
        "compile_seconds": round(compile_s, 1), "compile_error": error, "rollout_tensor": args.rollout_tensor,
        **extra,
    }
    if compiled is None:
        return out
    if args.kind == "sample":  # what the program moves between chips: per decoded token, and in all
        from grpojax.sampling import DECODE_SCOPE
        from grpojax.sharding.hlo import collective_bytes, loop_collective_bytes

        text = compiled.as_text()
        out.update(decode_step_collective_bytes=loop_collective_bytes(text, DECODE_SCOPE),
                   program_collective_bytes=collective_bytes(text))
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    per_device = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                  + mem.temp_size_in_bytes)
    flops_dev = float(cost.get("flops", 0.0)) if cost else 0.0
    if args.scan_layers:  # XLA counts the scanned layer stack (a while loop) once: not a step's FLOPs
        flops_dev = None
    out.update(per_device_bytes=int(per_device), fits=bool(per_device <= hbm),
               argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
               alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
               flops_per_device=flops_dev, flops_per_step=None if flops_dev is None else flops_dev * n_dev)
    return out


def main(argv=None, prog=None) -> int:
    args = parse_args(argv, prog)
    if args.batch is None:
        raise SystemExit("plan_memory: --batch is required")
    out = plan(args)
    if args.json:
        print(json.dumps(out))
    else:
        gib = 2**30
        print(f"{out['model']} {out['kind']} lora_rank={out['lora_rank']} remat={out['remat']} "
              f"batch={out['batch']} seq={out['seq']} mesh={out['mesh']}")
        print(f"backend: {out['backend']}")
        if out["compile_error"]:
            print(f"DOES NOT FIT: the compiler rejected the program: {out['compile_error']}")
            return 0
        print(f"per device: {out['per_device_bytes'] / gib:.2f} GiB (args {out['argument_bytes'] / gib:.2f}, "
              f"temp {out['temp_bytes'] / gib:.2f}, out-not-aliased "
              f"{(out['output_bytes'] - out['alias_bytes']) / gib:.2f}) of {out['hbm_bytes_per_device'] / gib:.1f}"
              f" GiB HBM -> {'fits' if out['fits'] else 'DOES NOT FIT'}")
        if args.kind == "sample":
            step = out["decode_step_collective_bytes"]
            print(f"collective bytes per device and decoded token: {sum(step.values()) / 2**20:.2f} MiB "
                  f"({', '.join(f'{k} {v / 2**20:.2f}' for k, v in step.items() if v) or 'none'}); "
                  f"compile {out['compile_seconds']} s")
            return 0
        xla = "n/a (scanned layers)" if out["flops_per_step"] is None else f"{out['flops_per_step']:.3e}"
        print(f"flops/step (XLA): {xla}; model flops/step (MFU count): "
              f"{out['model_flops_per_step']:.3e}; compile {out['compile_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
