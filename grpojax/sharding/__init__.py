"""Sharding over TPU / GPU meshes: the mesh, the logical-axis rules, state born sharded, jitted steps.

A ``Mesh`` has the axes ``("data", "fsdp", "tensor")``; logical-axis rules (:mod:`grpojax.sharding.rules`)
map every parameter, optimizer moment, batch row and KV-cache array onto them. :func:`init_sharded_tree`
builds a pytree (a train state, a model's state) already sharded, :func:`jit_step` jits a step with
explicit shardings and donation, :func:`global_batch` assembles per-host rows into global arrays, and
:func:`copy_to_rollout` moves weights onto the rollout mesh. This package imports nothing from grpojax;
the walk-through of a training loop, sampling on a mesh, multi-host and the memory levers is
``docs/sharding.md``.
"""

from grpojax.sharding.jit import (
                                  abstract_batch,
                                  copy_to_rollout,
                                  global_batch,
                                  global_batch_from_full,
                                  host_memory,
                                  init_sharded,
                                  init_sharded_tree,
                                  jit_step,
                                  place_from_host,
                                  rollout_hops,
                                  shard,
                                  sharded_bytes_per_device,
                                  to_host,
                                  traced_on_mesh,
                                  with_shardings,
)
from grpojax.sharding.memory import f32_optimizer_state
from grpojax.sharding.mesh import (
                                  AXES,
                                  BATCH_AXES,
                                  batch_axis_size,
                                  host_batch_slice,
                                  is_main_process,
                                  make_mesh,
                                  maybe_initialize_distributed,
                                  mesh_sizes,
                                  rollout_mesh,
                                  use_gloo_on_cpu,
)
from grpojax.sharding.rules import (
                                  ACTIVATION_AXES,
                                  KV_CACHE_AXES,
                                  RULES,
                                  batch_shardings,
                                  batch_spec,
                                  cache_shardings,
                                  constrain,
                                  describe,
                                  kv_cache_axes,
                                  logical_to_spec,
                                  named,
                                  pin,
                                  train_state_shardings,
                                  tree_shardings,
)

__all__ = [
    "AXES", "BATCH_AXES", "make_mesh", "mesh_sizes", "rollout_mesh", "batch_axis_size", "maybe_initialize_distributed",
    "use_gloo_on_cpu", "is_main_process", "host_batch_slice", "RULES", "KV_CACHE_AXES", "kv_cache_axes",
    "ACTIVATION_AXES",
    "logical_to_spec", "tree_shardings",
    "train_state_shardings", "batch_shardings", "batch_spec", "cache_shardings", "constrain", "pin", "named",
    "describe", "shard", "init_sharded_tree", "init_sharded", "jit_step", "traced_on_mesh", "abstract_batch",
    "with_shardings", "global_batch", "global_batch_from_full", "to_host", "host_memory", "place_from_host",
    "rollout_hops", "copy_to_rollout",
    "sharded_bytes_per_device", "f32_optimizer_state",
]
