"""Logical-axis rules: which mesh axes every named array dimension is split over.

Parameters of :class:`grpojax.models.Qwen` carry logical axis names (``out_sharding`` metadata, e.g. the
query kernel ``[D, N, H]`` is ``("embed", "q_heads", "head_dim")``); optax states built from them keep
the same metadata, so the optimizer moments are sharded exactly like their parameters. Batches, the KV
cache and activations are named here by position. The default rules (:data:`RULES`):

    logical axis   mesh axes          arrays
    ------------   ----------------   ---------------------------------------------------------------
    batch          (data, fsdp)       every batch array's axis 0; KV cache B; activations B
    vocab          tensor             embedding / LM head rows V
    embed          fsdp               D of every kernel, norm scale and the embedding (FSDP / ZeRO-3)
    q_heads        tensor             N of q / o kernels and q bias
    kv_heads       tensor             K of k / v kernels and biases; KV cache K
    mlp            tensor             F of gate / up / down kernels
    head_dim       -                  H (never split)
    layers         -                  L, the leading axis of stacked layers (``scan_layers``) and of
                                      the stacked KV cache (never split: each step uses one layer)
    length         -                  T / S (sequence, cache slots)
    (no metadata)  -                  replicated: step, rng, lr_scale, robust weights, LoRA factors

A dimension that a rule's mesh axes do not divide evenly falls back to the longest prefix of those axes
that does (e.g. Qwen2.5-0.5B's 2 KV heads on ``tensor=4`` stay replicated), and a mesh axis is used at
most once per array, so every spec is valid for every shape. Override a rule by passing ``rules=``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from grpojax.sharding.mesh import BATCH_AXES

Rules = Mapping[str, tuple[str, ...]]

RULES: dict[str, tuple[str, ...]] = {
    "batch": BATCH_AXES,
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "q_heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "head_dim": (),
    "length": (),
    "layers": (),
}

# logical names by position of the non-parameter arrays
KV_CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")   # k / v: [B, S, K, H]


def kv_cache_axes(ndim: int) -> tuple[str, ...]:
    """Logical names of a KV-cache leaf: ``[B, S, K, H]`` or stacked ``[L, B, S, K, H]``."""
    if ndim not in (4, 5):
        raise ValueError(f"a KV-cache leaf is [B, S, K, H] or [L, B, S, K, H]; got rank {ndim}")
    return ("layers",) * (ndim - 4) + KV_CACHE_AXES
ACTIVATION_AXES = {
    "x_BTD": ("batch", "length", None),
    "q_BTNH": ("batch", "length", "q_heads", "head_dim"),
    "k_BTKH": ("batch", "length", "kv_heads", "head_dim"),
    "h_BTF": ("batch", "length", "mlp"),
    "logits_BTV": ("batch", "length", "vocab"),
}


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Rules | None = None) -> PartitionSpec:
    """``PartitionSpec`` for an array of ``shape`` whose dimensions have logical ``names``.

    Each name maps to a tuple of mesh axes through ``rules`` (unknown names and ``None`` replicate). A
    dimension not divisible by the product of its axes keeps the longest dividing prefix; an axis
    already used by an earlier dimension is skipped.
    """
    rules = RULES if rules is None else rules
    if len(names) != len(shape):
        raise ValueError(f"logical axes {tuple(names)} and shape {tuple(shape)} differ in rank")
    used: set[str] = set()
    out = []
    for name, size in zip(names, shape):
        axes = [a for a in (rules.get(name, ()) if name is not None else ()) if a not in used
                and mesh.shape.get(a, 1) > 1]
        while axes and size % int(np.prod([mesh.shape[a] for a in axes])):
            axes.pop()
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*out)


def named(mesh: Mesh, spec: PartitionSpec | None = None) -> NamedSharding:
    """``NamedSharding(mesh, spec)``; replicated when ``spec`` is None."""
    return NamedSharding(mesh, PartitionSpec() if spec is None else spec)


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


def _var_sharding(v: nnx.Variable, mesh: Mesh, rules: Rules | None):
    names = v.get_metadata().get("out_sharding")
    shape = np.shape(v.get_value()) if hasattr(v, "get_value") else np.shape(v.value)
    if names and len(names) == len(shape):
        return v.replace(named(mesh, logical_to_spec(names, shape, mesh, rules)))
    return v.replace(named(mesh))


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Shardings for any pytree holding ``nnx.Variable`` leaves (by their logical names) and arrays.

    Variables with ``out_sharding`` metadata follow :data:`RULES`; every other array (scalars, PRNG
    keys, robust weights, LoRA factors, optimizer counters) is replicated. Works on concrete arrays and
    on ``jax.eval_shape`` outputs alike; the result has the structure ``jax.jit`` expects.
    """
    def one(x):
        if _is_var(x):
            return _var_sharding(x, mesh, rules)
        if hasattr(x, "shape"):
            return named(mesh)
        return x

    return jax.tree.map(one, tree, is_leaf=_is_var)


def train_state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Shardings of a :class:`grpojax.train.TrainState` (params, frozen and opt_state by rule, the rest
    replicated); ``abstract_state`` from ``jax.eval_shape`` or a concrete state."""
    return tree_shardings(abstract_state, mesh, rules)


def batch_spec(shape: Sequence[int], mesh: Mesh, rules: Rules | None = None) -> PartitionSpec:
    """Axis 0 over the ``batch`` rule (``(data, fsdp)``), the rest replicated; scalars replicated."""
    if len(shape) == 0:
        return PartitionSpec()
    return logical_to_spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh, rules)


def batch_shardings(batch: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Per-leaf shardings of a batch dict (arrays or ShapeDtypeStructs): rows over ``(data, fsdp)``."""
    return jax.tree.map(lambda x: named(mesh, batch_spec(np.shape(x), mesh, rules)), batch)


def cache_shardings(cache: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Shardings of a KV cache ``[dict(k=[B,S,K,H], v=[B,S,K,H])] * L`` or stacked ``dict(k=[L,B,S,K,H],
    v=...)``: B over (data, fsdp), K over tensor (when the kv heads divide), L, S and H whole."""
    return jax.tree.map(
        lambda x: named(mesh, logical_to_spec(kv_cache_axes(np.ndim(x)), np.shape(x), mesh, rules)), cache)


def constrain(x: jax.Array, names: Sequence[str | None], mesh: Mesh, rules: Rules | None = None):
    """``with_sharding_constraint`` of ``x`` to its logical ``names`` (e.g. ``ACTIVATION_AXES["x_BTD"]``);
    use inside a jitted function to pin an activation's layout where GSPMD propagation is ambiguous."""
    return jax.lax.with_sharding_constraint(x, named(mesh, logical_to_spec(names, x.shape, mesh, rules)))


def pin(x: jax.Array, names: Sequence[str | None], rules: Rules | None = None) -> jax.Array:
    """:func:`constrain` on the ambient mesh (``jax.sharding.use_abstract_mesh`` / ``jax.set_mesh``, which
    :func:`grpojax.sharding.jit_step` and :func:`grpojax.sharding.traced_on_mesh` enter while tracing);
    identity when there is none or it has one device, so model code can pin its activations and still run
    unsharded. ``names`` are logical axes, e.g. ``ACTIVATION_AXES["x_BTD"]``."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return x
    return constrain(x, names, mesh, rules)


def describe(shardings: Any) -> dict[str, str]:
    """``{path: str(PartitionSpec)}`` of a sharding tree (for logs and tests)."""
    out = {}
    for path, s in jax.tree_util.tree_leaves_with_path(shardings):
        out[jax.tree_util.keystr(path)] = str(s.spec) if isinstance(s, NamedSharding) else str(s)
    return out
