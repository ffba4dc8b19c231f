"""Where a task's arrays live: the training mesh, the rollout mesh, and the state created already sharded.

:func:`start_mesh` starts ``jax.distributed`` when ``mesh.distributed`` is set and builds the mesh of the
config's ``mesh`` section; :class:`Placement` holds it with the rollout mesh (``mesh.rollout_tensor``) and
moves batches onto them: ``global_rows`` / ``full_rows`` turn this host's rows / a batch every host holds
into global arrays with rows over ``(data, fsdp)``, ``sampling_inputs`` copies the policy onto the rollout
mesh, ``jit_step`` jits a pure step with the state's shardings (donated). :func:`place` is the one path
that creates a pytree already sharded by the logical-axis rules: built under ``jax.jit`` with
``out_shardings`` (a random init: no device ever holds a whole weight), or loaded into host memory and
then placed (a checkpoint on disk); on a 1-device mesh it is the plain eager build.
:func:`init_train_state` is that path for a :class:`grpojax.train.steps.state.TrainState`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grpojax import sharding as shd
from grpojax.cli import UserError, one_line
from grpojax.sampling import ShardedCache
from grpojax.train.steps.state import create_train_state


def start_mesh(mesh_cfg):
    """``jax.distributed.initialize()`` when the ``mesh`` section asks for several processes
    (``distributed`` or ``coordinator_address`` / ``num_processes`` / ``process_id``), then the mesh of
    ``mesh_cfg`` (``-1`` = the remaining devices). Single-process, sizes without ``-1`` whose product is below
    the device count use the first devices (``mesh: {data: 1}`` = one device on a multi-device host); on a
    pod the mesh must span every device and its batch axes ``data * fsdp`` must be a multiple of the process
    count (each process feeds its own rows). Configuration problems become :class:`UserError` naming ``mesh``."""
    try:
        shd.maybe_initialize_distributed(mesh_cfg)
    except (RuntimeError, ValueError, TypeError) as e:
        raise UserError(f"mesh: jax.distributed.initialize({_shown(mesh_cfg.initialize_kwargs())}) failed: "
                        f"{one_line(str(e))[:300]} (it must run before any other JAX call, on every process)") from None
    sizes = {a: getattr(mesh_cfg, a) for a in shd.AXES}
    want = int(np.prod(list(sizes.values())))
    devices = None
    if -1 not in sizes.values() and want < jax.device_count() and jax.process_count() == 1:
        devices = jax.devices()[:want]  # e.g. mesh {data: 1} on a multi-device host: the first device(s)
    try:
        mesh = shd.make_mesh(mesh_cfg, devices=devices)
    except ValueError as e:
        raise UserError(f"mesh={sizes}: {e}") from None
    if shd.batch_axis_size(mesh) % jax.process_count():
        raise UserError(f"mesh={dict(mesh.shape)}: the batch axes data*fsdp={shd.batch_axis_size(mesh)} must be a "
                        f"multiple of the {jax.process_count()} processes (each process reads its own rows); "
                        "move devices from mesh.tensor to mesh.data or mesh.fsdp")
    return mesh


def _shown(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def place(build: Callable[[], tuple[Any, Any]], mesh, *, on_disk: bool):
    """``build() -> (pytree of arrays, static)`` with the arrays placed on ``mesh`` by the rules; returns
    ``(tree, static, shardings)``.

    On a multi-device mesh with ``on_disk=False`` (a random init), ``build`` runs under ``jax.jit`` with the
    rules' ``out_shardings``; with ``on_disk=True`` it runs eagerly in host memory and each device takes
    its slices; on a 1-device mesh it runs eagerly and the result is ``device_put`` onto its shardings."""
    holder = {}

    def arrays():
        tree, holder["static"] = build()
        return tree

    if mesh.size == 1:
        tree = arrays()
        shardings = shd.tree_shardings(tree, mesh)
        return shd.shard(tree, shardings), holder["static"], shardings
    if not on_disk:
        return shd.init_sharded_tree(build, mesh)
    with shd.host_memory():  # load into host memory, then each device takes its slices
        tree = arrays()
    shardings = shd.tree_shardings(tree, mesh)
    return shd.place_from_host(tree, shardings), holder["static"], shardings


def init_train_state(model_ctor: Callable[[], nnx.Module], tx: optax.GradientTransformation, rng: jax.Array,
                     mesh, *, lora: bool = False, robust: Any = None):
    """``(graphdef, state, state_shardings)``: :func:`grpojax.train.steps.state.create_train_state` of
    ``model_ctor()`` (LoRA already applied when ``lora``) created by :func:`place` as a random init: the
    model AND optimizer state born sharded under one jit."""
    def build():
        graphdef, state = create_train_state(model_ctor(), tx, rng, lora=lora, robust=robust)
        return state, graphdef

    state, graphdef, shardings = place(build, mesh, on_disk=False)
    return graphdef, state, shardings


class Placement:
    """The training mesh of ``mesh_cfg`` (:func:`start_mesh`) and the rollout mesh, and the moves of
    batches, models and steps onto them."""

    def __init__(self, mesh_cfg):
        self.mesh_cfg = mesh_cfg
        self.mesh = start_mesh(mesh_cfg)
        try:  # where rollouts sample (grpojax.sharding.rollout_mesh): the training mesh unless rollout_tensor
            self.rollout_mesh = shd.rollout_mesh(self.mesh, mesh_cfg.rollout_tensor)
        except ValueError as e:
            raise UserError(f"mesh.rollout_tensor: {e}") from None

    def check_rows(self, rows: int, key: str) -> None:
        """UserError unless the batch axes ``data * fsdp`` of the mesh divide ``rows`` (named by ``key``)."""
        n = shd.batch_axis_size(self.mesh)
        if rows % n:
            m = self.mesh_cfg
            raise UserError(f"{key}={rows} is not divisible by mesh data*fsdp={n} (mesh.data={m.data}, "
                            f"mesh.fsdp={m.fsdp} on {self.mesh.size} devices); use a multiple of {n} or "
                            "change mesh.data / mesh.fsdp")

    def batch_sharding(self, rows: int):
        """The sharding of a ``[rows, ...]`` batch leaf: rows over ``(data, fsdp)`` where they divide."""
        return shd.named(self.mesh, shd.batch_spec((rows,), self.mesh))

    def global_rows(self, local: dict) -> dict:
        """This host's rows of a batch (NumPy, from the loader) -> global arrays sharded over the batch axes."""
        return shd.global_batch({k: np.asarray(v) for k, v in local.items()}, self.mesh)

    def full_rows(self, batch: dict) -> dict:
        """A batch every host holds whole (sampler outputs, host-side rewards) -> rows over the batch axes."""
        return shd.global_batch_from_full(batch, self.mesh)

    def sampling_inputs(self, model, prompt_ids_BQ, prompt_mask_BQ):
        """``(model, prompt_ids, prompt_mask, cache_fn)`` for ``grpojax.sampling.sample`` on the rollout mesh.

        On the training mesh (``mesh.rollout_tensor`` null) the model is used as it is; otherwise its state
        is copied onto :attr:`rollout_mesh` (:func:`grpojax.sharding.copy_to_rollout`; once per rollout,
        freed with the returned model; a model returned by this method is reused as it is). The host's whole
        prompt batch goes on the same mesh with rows over its batch axes, and the KV cache is a
        :class:`ShardedCache` there (``None``, the sampler's default, on one device). The
        sampled arrays come back on the rollout mesh: ``full_rows`` moves them onto the training mesh."""
        mesh = self.rollout_mesh
        graphdef, st = nnx.split(model)
        leaf = jax.tree.leaves(st)[0]
        if mesh is not self.mesh and leaf.sharding.mesh != mesh:  # not yet copied (evaluate reuses the copy)
            model = nnx.merge(graphdef, shd.copy_to_rollout(st, self.mesh, mesh))
        rows = shd.global_batch_from_full({"ids": prompt_ids_BQ, "mask": prompt_mask_BQ}, mesh)
        cache_fn = None if mesh.size == 1 else ShardedCache(
            model.config, mesh, jnp.dtype(getattr(model, "dtype", jnp.float32)))
        return model, rows["ids"], rows["mask"], cache_fn

    def jit_step(self, step_fn, state_shardings, rows: int):
        """``step_fn(state, batch, rng)`` jitted with ``state_shardings`` (the state donated) and ``rows``
        batch rows over the batch axes."""
        return shd.jit_step(step_fn, state_shardings, self.batch_sharding(rows), self.mesh)

    def place(self, build, *, on_disk: bool):
        """:func:`place` on this mesh."""
        return place(build, self.mesh, on_disk=on_disk)
