"""The device mesh (axes ``data``, ``fsdp``, ``tensor``) and multi-host start-up.

    mesh = make_mesh(cfg.mesh)                 # MeshConfig(data=-1, fsdp=1, tensor=1): -1 = the rest
    mesh = make_mesh({"fsdp": 4, "tensor": 2}) # a dict / tuple of sizes works too; missing axes are 1

Axis roles (the logical-axis rules in :mod:`grpojax.sharding.rules` map arrays onto them):

* ``data``   pure data parallelism: the batch is split, parameters are replicated.
* ``fsdp``   the batch is split AND parameters / optimizer state are sharded along their ``embed`` axis
             (ZeRO-3 / FSDP: XLA all-gathers a weight right before its use and reduce-scatters its grad).
* ``tensor`` Megatron-style tensor parallelism: heads, MLP width and vocabulary are split.

Axes are ``AxisType.Auto`` (GSPMD propagation): model code needs no sharding annotations.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

_log = logging.getLogger(__name__)


def mesh_sizes(spec: Any, num_devices: int) -> tuple[int, int, int]:
    """Resolves ``(data, fsdp, tensor)`` sizes for ``num_devices`` devices; one axis may be ``-1``.

    ``spec``: an object with ``data``/``fsdp``/``tensor`` attributes (``grpojax.config.MeshConfig``), a
    mapping with a subset of those keys (missing = 1), or a 3-sequence. The product must equal
    ``num_devices``.
    """
    if isinstance(spec, Mapping):
        bad = sorted(set(spec) - set(AXES))
        if bad:
            raise ValueError(f"mesh: unknown axis {bad[0]!r}; valid axes: {', '.join(AXES)}")
        sizes = [int(spec.get(a, 1)) for a in AXES]
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 3:
            raise ValueError(f"mesh: expected 3 sizes (data, fsdp, tensor), got {tuple(spec)}")
        sizes = [int(s) for s in spec]
    elif all(hasattr(spec, a) for a in AXES):
        sizes = [int(getattr(spec, a)) for a in AXES]
    else:
        raise TypeError(f"mesh: cannot read axis sizes from {spec!r}")
    for a, s in zip(AXES, sizes):
        if s != -1 and s < 1:
            raise ValueError(f"mesh.{a}={s}: must be -1 or >= 1")
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(AXES, sizes))}")
    if -1 in sizes:
        i = sizes.index(-1)
        rest = int(np.prod([s for s in sizes if s != -1]))
        if num_devices % rest:
            raise ValueError(f"mesh: {num_devices} devices are not divisible by the fixed axes "
                             f"{dict((a, s) for a, s in zip(AXES, sizes) if s != -1)} (product {rest})")
        sizes[i] = num_devices // rest
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(f"mesh: axis sizes {dict(zip(AXES, sizes))} multiply to {int(np.prod(sizes))}, "
                         f"but there are {num_devices} devices")
    return tuple(sizes)


def make_mesh(spec: Any = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``Mesh`` with axes ``("data", "fsdp", "tensor")`` over ``devices`` (default: all devices).

    ``spec`` as in :func:`mesh_sizes`; ``None`` means pure data parallelism over every device. With
    ``devices=None`` the device order comes from ``jax.make_mesh`` (topology-aware on TPU/GPU); with an
    explicit device list the devices are laid out in the given order.
    """
    spec = {"data": -1} if spec is None else spec
    n = len(devices) if devices is not None else jax.device_count()
    sizes = mesh_sizes(spec, n)
    types = (AxisType.Auto,) * len(AXES)
    if devices is None:
        return jax.make_mesh(sizes, AXES, axis_types=types)
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), AXES, axis_types=types)


def rollout_mesh(mesh: Mesh, tensor: int | None) -> Mesh:
    """The mesh a rollout samples on: ``mesh`` itself when ``tensor`` is None, else the same devices as
    ``(data = n / tensor, fsdp = 1, tensor)`` (``-1`` = every device on ``tensor``).

    Under the training mesh's FSDP layout every decoded token all-gathers every weight (the weights are
    split along D and each decoding step uses all of them once). On this mesh the weights are split by
    heads / MLP width / vocabulary over ``tensor`` and replicated over ``data``: a decoding step moves only
    activations (Megatron all-reduces) and each chip holds ``1 / tensor`` of the weights. ``tensor=1``
    replicates the weights (pure data-parallel sampling, for models that fit one chip). The devices keep
    the training mesh's order (row-major), so each ``tensor`` group is consecutive devices of that order.
    """
    if tensor is None or mesh.size == 1:  # one device: nothing to lay out (a 7B preset run on one GPU)
        return mesh
    n = mesh.size
    if tensor != -1 and (tensor < 1 or n % tensor):
        raise ValueError(f"rollout tensor={tensor} must be -1 or divide the {n} devices of the mesh")
    tensor = n if tensor == -1 else tensor
    return make_mesh((n // tensor, 1, tensor), devices=list(mesh.devices.flat))


def maybe_initialize_distributed(spec: Any = None, **kwargs) -> bool:
    """Calls ``jax.distributed.initialize(**kwargs)`` when ``spec.distributed`` is true (multi-host).

    On Cloud TPU VM pods and SLURM / Open MPI GPU clusters the coordinator address, process count and
    id are auto-detected, so no arguments are needed. Must run before any other JAX call. Returns True
    when it initialised (or JAX was already initialised), False for a single-host run.
    """
    if not bool(getattr(spec, "distributed", False)) and not kwargs:
        return False
    if jax.distributed.is_initialized():
        return True
    jax.distributed.initialize(**kwargs)
    _log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
              jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def is_main_process() -> bool:
    """True on process 0: the only one that writes logs, metrics and exported files."""
    return jax.process_index() == 0


def host_batch_slice(global_batch: int) -> slice:
    """The rows of a global batch that this host loads: ``[i * B/P, (i+1) * B/P)`` for process i of P.

    Each process reads only its own rows and :func:`grpojax.sharding.global_batch` assembles the global
    array. ``global_batch`` must divide evenly among processes.
    """
    p, i = jax.process_count(), jax.process_index()
    if global_batch % p:
        raise ValueError(f"global batch {global_batch} is not divisible by the {p} processes")
    per = global_batch // p
    return slice(i * per, (i + 1) * per)


def batch_axis_size(mesh: Any) -> int:
    """How many ways a batch is split: the product of the ``data`` and ``fsdp`` axis sizes of ``mesh``
    (a ``Mesh``, or anything :func:`mesh_sizes` reads, resolved against all devices)."""
    if isinstance(mesh, Mesh):
        return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    sizes = dict(zip(AXES, mesh_sizes(mesh, jax.device_count())))
    return int(np.prod([sizes[a] for a in BATCH_AXES]))
