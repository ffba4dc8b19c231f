"""Placing pytrees on a mesh, params born sharded, jitted steps with shardings + donation, and per-host
batch assembly."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from grpojax.sharding.mesh import rollout_mesh
from grpojax.sharding.rules import Rules, batch_shardings, named, tree_shardings


def shard(tree: Any, shardings: Any) -> Any:
    """``jax.device_put`` every leaf of ``tree`` with the matching sharding (a tree or a single one)."""
    return jax.device_put(tree, shardings)


def init_sharded_tree(build: Callable[[], tuple[Any, Any]], mesh: Mesh, rules: Rules | None = None):
    """``build() -> (pytree of arrays, static)`` run once under ``jax.jit`` with every array born sharded.

    ``jax.eval_shape`` gives the abstract arrays -> :func:`tree_shardings` of them -> ``jax.jit(build)``
    with those ``out_shardings``, so no device ever holds a whole weight. ``static`` is whatever ``build``
    returns beside the arrays (an nnx ``GraphDef``); a train state born sharded is
    ``init_sharded_tree(lambda: create_train_state(ctor(), tx, rng)[::-1], mesh)``.
    Returns ``(tree, static, shardings)``.
    """
    holder = {}

    def arrays():
        tree, holder["static"] = build()
        return tree

    shardings = tree_shardings(jax.eval_shape(arrays), mesh, rules)
    return jax.jit(arrays, out_shardings=shardings)(), holder["static"], shardings


def init_sharded(model_ctor: Callable[[], nnx.Module], mesh: Mesh, rules: Rules | None = None):
    """Builds ``model_ctor()`` with every parameter born sharded (:func:`init_sharded_tree` of its
    ``nnx.split`` state); returns the model."""
    state, graphdef, _ = init_sharded_tree(lambda: nnx.split(model_ctor())[::-1], mesh, rules)
    return nnx.merge(graphdef, state)


def traced_on_mesh(fn: Callable, mesh: Mesh | None) -> Callable:
    """``fn`` traced under ``jax.sharding.use_abstract_mesh(mesh)`` (``fn`` itself when ``mesh`` is None).

    Inside ``jax.jit`` there is no mesh for :func:`grpojax.sharding.constrain` to read unless one is
    entered while tracing; with it, code such as :func:`grpojax.train.steps.forward.completion_logprobs` pins its
    activations to the rules. Wrap every jitted function that runs the model on a mesh (train steps,
    forward-only reference / evaluation passes) before ``jax.jit``."""
    if mesh is None:
        return fn

    @functools.wraps(fn)
    def on_mesh(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args, **kwargs)

    return on_mesh


def jit_step(step: Callable, state_shardings: Any, batch_shardings_: Any, mesh: Mesh, *,
             donate: bool = True) -> Callable:
    """``jax.jit`` of a pure ``step(state, batch, rng) -> (state, metrics)`` with explicit shardings.

    The state comes in and goes out with ``state_shardings`` (so the updated params keep their layout
    step after step), the batch with ``batch_shardings_`` (a tree or one sharding for all leaves), the
    rng and every metric replicated. ``donate`` donates the input state's buffers to the output state,
    so a step holds one copy of params + optimizer state, not two. The step is traced under
    ``jax.sharding.use_abstract_mesh(mesh)`` so that its code can pin activation layouts to the rules
    (:func:`grpojax.train.steps.forward.completion_logprobs` does for the LM head). Bind static arguments first:
    ``jit_step(functools.partial(grpo_step, graphdef=g, tx=tx, settings=s), ...)``.
    """
    rep = named(mesh)
    return jax.jit(traced_on_mesh(step, mesh), in_shardings=(state_shardings, batch_shardings_, rep),
                   out_shardings=(state_shardings, rep), donate_argnums=(0,) if donate else ())


def abstract_batch(batch_shapes: dict, mesh: Mesh, rules: Rules | None = None) -> dict:
    """``{key: ShapeDtypeStruct(shape, dtype, sharding=rows over (data, fsdp))}`` for AOT lowering;
    ``batch_shapes`` maps keys to ``(shape, dtype)`` pairs or arrays."""
    out = {}
    for k, v in batch_shapes.items():
        shape, dtype = (v.shape, v.dtype) if hasattr(v, "shape") else v
        out[k] = jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype))
    sh = batch_shardings(out, mesh, rules)
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sh[k]) for k, v in out.items()}


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """Attach shardings to an ``eval_shape`` tree (ShapeDtypeStructs) for ``jit(...).lower(...)``."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                        shardings)


def global_batch(local_batch: dict, mesh: Mesh, rules: Rules | None = None) -> dict:
    """Assembles per-host rows (this process's slice of every leaf, see
    :func:`grpojax.sharding.host_batch_slice`) into global arrays sharded over (data, fsdp).

    Single-host this is a plain sharded ``device_put``; multi-host it calls
    ``jax.make_array_from_process_local_data`` so no host ever holds the global batch.
    """
    def one(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        sh = batch_shardings(jax.ShapeDtypeStruct(global_shape, x.dtype), mesh, rules)
        return jax.make_array_from_process_local_data(sh, x, global_shape)

    return jax.tree.map(one, local_batch)


def global_batch_from_full(full_batch: dict, mesh: Mesh, rules: Rules | None = None) -> dict:
    """Like :func:`global_batch`, for a batch that every host holds whole (e.g. rollout prompts and the
    host-side rewards): each device gets its rows of ``full_batch`` (rows over (data, fsdp) where they
    divide, replicated otherwise), via ``jax.make_array_from_callback``; no cross-host traffic.

    A leaf that is already a multi-device ``jax.Array`` is resharded with ``jax.device_put`` instead."""
    def one(x):
        if isinstance(x, jax.Array) and (jax.process_count() == 1 or not x.is_fully_addressable):
            return jax.device_put(x, batch_shardings(x, mesh, rules))
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, batch_shardings(x, mesh, rules), lambda idx: x[idx])

    return jax.tree.map(one, full_batch)


def rollout_hops(mesh: Mesh, rollout: Mesh) -> list[Mesh]:
    """The meshes a copy of the weights from ``mesh`` onto ``rollout`` (:func:`rollout_mesh`) goes through.

    A rollout mesh that is all ``tensor`` or all ``data`` (weights replicated) is one hop. Otherwise the
    copy goes through ``tensor`` = every device first (an all-to-all-like exchange of 1/n pieces), then
    gathers only within each ``data`` group: straight onto a mesh with a ``data`` axis, XLA's resharding
    gathers whole weights and needs about twice the traffic and temporaries (``docs/sharding.md``)."""
    if rollout is mesh:
        return []
    if rollout.shape["tensor"] in (1, rollout.size):  # all on tensor: one exchange; all on data: one gather
        return [rollout]
    return [rollout_mesh(mesh, -1), rollout]


def copy_to_rollout(tree: Any, mesh: Mesh, rollout: Mesh, rules: Rules | None = None) -> Any:
    """``tree`` (laid out on ``mesh`` by the rules) copied onto ``rollout`` through :func:`rollout_hops`."""
    for hop in rollout_hops(mesh, rollout):
        tree = jax.device_put(tree, tree_shardings(tree, hop, rules))
    return tree


def host_memory():
    """``jax.default_device(cpu)`` where a CPU backend exists (weights read from disk stay in host memory
    until :func:`place_from_host` slices them onto a mesh), else a no-op context."""
    try:
        return jax.default_device(jax.local_devices(backend="cpu")[0])
    except RuntimeError:
        return contextlib.nullcontext()


def place_from_host(tree: Any, shardings: Any) -> Any:
    """A pytree held whole in host memory -> global arrays with ``shardings``; each device copies only its
    slice of each leaf (``make_array_from_callback``), so no accelerator ever holds a whole weight."""
    def one(x, sharding):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)


def to_host(tree: Any) -> Any:
    """Every leaf as a (writable, copied) NumPy array holding the whole global value, on every host.

    Single-process (or for fully replicated arrays) this is ``np.asarray``; multi-host, arrays whose
    shards live on other processes are gathered with ``multihost_utils.process_allgather`` -- a
    collective, so every process must call it with the same tree."""
    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.array(x)  # a copy: np.asarray of a jax.Array is read-only (merge_lora writes in place)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def sharded_bytes_per_device(tree: Any) -> int:
    """Bytes of ``tree`` resident on the most loaded device (concrete sharded arrays)."""
    per: dict[Any, int] = {}
    for x in jax.tree.leaves(tree):
        if isinstance(x, jax.Array):
            for s in x.addressable_shards:
                per[s.device] = per.get(s.device, 0) + s.data.nbytes
    return max(per.values()) if per else 0


__all__ = ["shard", "init_sharded_tree", "init_sharded", "jit_step", "abstract_batch", "with_shardings",
           "global_batch", "global_batch_from_full", "to_host", "host_memory", "place_from_host", "rollout_hops",
           "copy_to_rollout", "sharded_bytes_per_device", "NamedSharding"]
