"""Sharding over TPU / GPU meshes, multi-host start-up, and memory levers.

A ``Mesh`` has three named axes, ``("data", "fsdp", "tensor")``; logical-axis rules map every parameter
(by the ``out_sharding`` names the model attaches), optimizer moment (same names), batch row and KV-cache
array onto them (table in :mod:`grpojax.sharding.rules`). The training loop needs five calls::

    from grpojax import sharding as shd

    shd.maybe_initialize_distributed(cfg.mesh)             # jax.distributed.initialize() if asked
    mesh = shd.make_mesh(cfg.mesh)                          # MeshConfig(data, fsdp, tensor), -1 = rest
    graphdef, state, state_sh = init_train_state(   # grpojax.train.placement: born sharded
        lambda: Qwen(model_cfg, param_dtype=jnp.bfloat16), tx, rng, mesh, lora=False)
    step = shd.jit_step(functools.partial(grpo_step, graphdef=graphdef, tx=tx, settings=s),
                        state_sh, shd.batch_shardings(example_batch, mesh), mesh)   # donates state
    batch = shd.global_batch(host_rows, mesh)               # rows of this host -> global sharded arrays
    state, metrics = step(state, batch, rng)

The training runner does exactly this from a config's ``mesh:`` block (:mod:`grpojax.train.tasks`:
``BaseTask`` builds the mesh, places the state, jits every step with ``jit_step``; rollouts sample with
the sharded policy and a :class:`ShardedCache`), so scripts need nothing more than ``mesh: {fsdp: -1}``.
Batches every host holds whole (rollout prompts, host-side rewards) go on the mesh with
:func:`global_batch_from_full`; results the host needs whole come back through :func:`to_host`
(``process_allgather`` on a pod); :func:`batch_axis_size` (data * fsdp) must divide every training batch.

Loading a checkpoint: ``shd.shard(state, state_sh)`` (or Orbax restore with ``state_sh`` as the target
shardings). Models outside a train state: ``shd.init_sharded(ctor, mesh)`` or
``nnx.update(model, shd.shard(nnx.state(model), shd.tree_shardings(nnx.state(model), mesh)))``.

Sampling: pass the sharded model, batch-sharded prompts, and ``cache_fn=shd.ShardedCache(config, mesh,
dtype)`` to :func:`grpojax.sampling.sample`: the KV cache ``[B, S, K, H]`` (stacked ``[L, B, S, K, H]``
with ``config.scan_layers``, L whole) is created sharded with B over (data, fsdp) and K over tensor, and
the decode loop runs under GSPMD with the model's layout. Under FSDP that layout all-gathers every weight at
every decoded token; ``rollout_mesh(mesh, tensor)`` is the same devices as (data, 1, tensor) with the
weights split by heads over ``tensor`` instead: :func:`copy_to_rollout` copies the model's state onto it
(the training runner does this per rollout with ``mesh.rollout_tensor``).

Activations: the model pins its residual stream, q / k / v and MLP activations to
:data:`ACTIVATION_AXES` with :func:`pin`, which reads the ambient mesh and is a no-op without one. Trace
every jitted function that runs the model on a mesh under that mesh (:func:`jit_step` and
:func:`traced_on_mesh` do; ``sample`` does with a :class:`ShardedCache`): otherwise GSPMD may carry the
embedding's FSDP split of D into the residual stream and run every layer on the whole global batch, so
per-device memory per sequence grows with the device count (``tests/test_sharding_memory.py``).

Multi-host: each process loads ``rows[shd.host_batch_slice(global_batch)]`` of every batch and calls
:func:`global_batch`; only :func:`is_main_process` writes logs; Orbax checkpointing of sharded
``jax.Array`` state is multi-host safe as is.

Memory levers: ``Qwen(..., param_dtype=jnp.bfloat16, remat="full")`` with ``tx = f32_optimizer_state(tx)``
(bf16 params, float32 Adam; run config ``model.remat``), LoRA (``TrainState.params`` = adapters only), chunked log-probs in
``grpojax.train.steps.forward``; ``scripts/plan_memory.py`` compiles the real step ahead of time for a mesh and
reports XLA's per-device bytes (``docs/memory_plan.md``). Compile time: ``QwenConfig.scan_layers``
(run config ``model.scan_layers``) stacks the layers (their ``"layers"`` axis is never split) and runs
them with ``lax.scan``, so a 7B / 14B step compiles in about the time of one layer.

Public API:
    AXES, BATCH_AXES, make_mesh, mesh_sizes, rollout_mesh, batch_axis_size     mesh.py
    maybe_initialize_distributed, is_main_process, host_batch_slice
    RULES, KV_CACHE_AXES, kv_cache_axes, ACTIVATION_AXES, logical_to_spec,      rules.py
    tree_shardings, train_state_shardings, batch_shardings, batch_spec, cache_shardings, constrain,
    pin, named, describe
    shard, init_sharded, jit_step, traced_on_mesh, abstract_batch,   jit.py
    with_shardings, global_batch, global_batch_from_full, to_host, host_memory, place_from_host,
    rollout_hops, copy_to_rollout, ShardedCache,
    sharded_bytes_per_device
    f32_optimizer_state                                          memory.py (bf16 params, f32 Adam)
"""

from grpojax.sharding.jit import (ShardedCache, abstract_batch, copy_to_rollout, global_batch, global_batch_from_full,
                                  host_memory, init_sharded, jit_step, place_from_host, rollout_hops,
                                  shard,
                                  sharded_bytes_per_device, to_host, traced_on_mesh, with_shardings)
from grpojax.sharding.memory import f32_optimizer_state
from grpojax.sharding.mesh import (AXES, BATCH_AXES, batch_axis_size, host_batch_slice, is_main_process,
                                   make_mesh, maybe_initialize_distributed, mesh_sizes, rollout_mesh)
from grpojax.sharding.rules import (ACTIVATION_AXES, KV_CACHE_AXES, RULES, batch_shardings, batch_spec,
                                    cache_shardings, constrain, describe, kv_cache_axes, logical_to_spec,
                                    named, pin, train_state_shardings, tree_shardings)

__all__ = [
    "AXES", "BATCH_AXES", "make_mesh", "mesh_sizes", "rollout_mesh", "batch_axis_size", "maybe_initialize_distributed", "is_main_process",
    "host_batch_slice", "RULES", "KV_CACHE_AXES", "kv_cache_axes", "ACTIVATION_AXES", "logical_to_spec", "tree_shardings",
    "train_state_shardings", "batch_shardings", "batch_spec", "cache_shardings", "constrain", "pin", "named",
    "describe", "shard", "init_sharded", "jit_step", "traced_on_mesh", "abstract_batch",
    "with_shardings", "global_batch", "global_batch_from_full", "to_host", "host_memory", "place_from_host",
    "rollout_hops", "copy_to_rollout",
    "ShardedCache", "sharded_bytes_per_device", "f32_optimizer_state",
]
