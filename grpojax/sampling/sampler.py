"""``sample``: the public entry point of the KV-cache sampler (validation + one cached ``jax.jit``)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from grpojax.models import init_cache
from grpojax.sampling.decode import CACHE_LAYOUTS, SampleOutput, decode
from grpojax.sharding import constrain, kv_cache_axes
from grpojax.types import Array, PRNGKey, PyTree


@dataclasses.dataclass(frozen=True)
class ModelCache:
    """Hashable ``(batch, max_len) -> cache`` builder: ``grpojax.models.init_cache(config, ...)``.

    Hashable (a frozen dataclass of a frozen config and a dtype) so it can be a static jit argument
    without causing recompilation on every call.
    """

    config: Any
    dtype: Any = jnp.float32

    def __call__(self, batch: int, max_len: int) -> PyTree:
        return init_cache(self.config, batch, max_len, self.dtype)


@dataclasses.dataclass(frozen=True)
class ShardedCache:
    """Hashable ``(batch, max_len) -> cache`` builder whose cache is laid out by the sharding rules on ``mesh``.

    ``k`` / ``v`` are ``[B, S, K, H]`` (stacked ``[L, B, S, K, H]`` with ``config.scan_layers``, L whole)
    with B over (data, fsdp) and K over tensor (:func:`grpojax.sharding.kv_cache_axes`). Pass
    ``cache_fn=ShardedCache(config, mesh, dtype)`` to :func:`sample` with a sharded model and batch: the
    zeros are created already sharded inside the sampler's jit, and the sampler is traced under ``mesh``
    so that the model's activation pins (:func:`grpojax.sharding.pin`) apply to prefill and decoding.
    """

    config: Any
    mesh: Mesh
    dtype: Any = jnp.float32

    def __call__(self, batch: int, max_len: int) -> PyTree:
        cache = init_cache(self.config, batch, max_len, self.dtype)
        return jax.tree.map(lambda x: constrain(x, kv_cache_axes(x.ndim), self.mesh), cache)


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "cache_fn", "max_new_tokens", "top_k", "use_greedy", "num_samples",
                     "cache_layout"),
)
def _sample_jit(graphdef, state, prompt_tokens_BT, prompt_mask_BT, rng, temperature, top_p, eos_ids_E,
                pad_id, *, cache_fn, max_new_tokens, top_k, use_greedy, num_samples,
                cache_layout=None) -> SampleOutput:
    model = nnx.merge(graphdef, state)
    if cache_layout is None:  # the model's best: "shared" when it supports it (grpojax.sampling.decode)
        cache_layout = "shared" if "shared" in getattr(model, "cache_layouts", ()) else "dense"
    return decode(model, cache_fn, prompt_tokens_BT, prompt_mask_BT, rng, temperature, top_p, eos_ids_E,
                  pad_id, max_new_tokens=max_new_tokens, top_k=top_k, use_greedy=use_greedy,
                  num_samples=num_samples, cache_layout=cache_layout)



def _eos_tuple(eos_ids: int | Iterable[int] | None) -> tuple[int, ...]:
    if eos_ids is None:
        return ()
    if isinstance(eos_ids, numbers.Integral):
        eos_ids = (eos_ids,)
    out = []
    for e in eos_ids:
        if isinstance(e, bool) or not isinstance(e, numbers.Integral) or e < 0:
            raise ValueError(f"eos_ids must be non-negative ints, got {e!r}")
        out.append(int(e))
    return tuple(sorted(set(out)))


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _validate(prompt_tokens_BT, prompt_mask_BT, *, max_new_tokens, temperature, top_k, top_p, pad_id,
              num_samples) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) \
            or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral)
                              or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, numbers.Integral) or pad_id < 0:
        raise ValueError(f"pad_id must be a non-negative int, got {pad_id!r}")
    if _is_concrete(temperature) and not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax decoding), got {temperature!r}")
    if top_p is not None and _is_concrete(top_p) and not 0 < float(top_p) <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    shape_t, shape_m = np.shape(prompt_tokens_BT), np.shape(prompt_mask_BT)
    if len(shape_t) != 2 or shape_t != shape_m:
        raise ValueError(f"prompt_tokens_BT and prompt_mask_BT must both be [B, T]; got shapes {shape_t} and "
                         f"{shape_m}")
    if 0 in shape_t:
        raise ValueError(f"empty prompt batch: prompt_tokens_BT has shape {shape_t}")
    if not jnp.issubdtype(jnp.result_type(prompt_tokens_BT), jnp.integer):
        raise ValueError(f"prompt_tokens_BT must hold integer ids, got dtype {jnp.result_type(prompt_tokens_BT)}")
    if _is_concrete(prompt_mask_BT):
        lens = np.sum(np.asarray(prompt_mask_BT) != 0, axis=-1)
        empty = np.flatnonzero(lens == 0)
        if empty.size:
            raise ValueError(f"prompt rows {empty.tolist()} have no real token (prompt_mask_BT is all 0 there); "
                             "every prompt needs at least one token")


def _traced_on(cache_fn):
    """A mesh-aware cache builder (:class:`ShardedCache`) also traces the sampler under its mesh,
    so the model's activation pins (``grpojax.sharding.pin``) keep prefill and decoding on each device's own
    rows; the abstract mesh is part of jit's cache key."""
    mesh = getattr(cache_fn, "mesh", None)
    return contextlib.nullcontext() if mesh is None else jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


def lower_sample(graphdef, state, prompt_tokens_BT, prompt_mask_BT, *, max_new_tokens: int, cache_fn,
                 num_samples: int = 1, top_k: int | None = None, top_p: bool = False, greedy: bool = False,
                 num_eos_ids: int = 1, cache_layout: str | None = None):
    """The program :func:`sample` runs, lowered ahead of time (``.compile()`` it for XLA's memory analysis
    and HLO) for ``state`` / prompts that may be ``jax.ShapeDtypeStruct`` s with shardings: no weight
    needs to exist (``scripts/plan_memory.py --kind sample``). Static choices as in :func:`sample`
    (``top_p``: whether a nucleus value is passed; ``cache_layout`` as there); the scalar arguments are replicated on
    ``cache_fn.mesh`` when it has one."""
    mesh = getattr(cache_fn, "mesh", None)

    def struct(shape, dtype):
        sh = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sh)

    key = jax.eval_shape(lambda: jax.random.key(0))
    with _traced_on(cache_fn):
        return _sample_jit.lower(
            graphdef, state, prompt_tokens_BT, prompt_mask_BT, struct(key.shape, key.dtype),
            struct((), jnp.float32), struct((), jnp.float32) if top_p else None,
            struct((num_eos_ids,), jnp.int32), struct((), jnp.int32), cache_fn=cache_fn,
            max_new_tokens=int(max_new_tokens), top_k=None if top_k is None else int(top_k),
            use_greedy=bool(greedy), num_samples=int(num_samples), cache_layout=cache_layout)


def sample(
    model: nnx.Module,
    prompt_tokens_BT: Array,
    prompt_mask_BT: Array,
    rng: PRNGKey,
    *,
    max_new_tokens: int,
    temperature: float | Array = 1.0,
    top_k: int | None = None,
    top_p: float | Array | None = None,
    greedy: bool = False,
    eos_ids: int | Iterable[int] | None = None,
    pad_id: int = 0,
    num_samples: int = 1,
    cache_fn: Callable[[int, int], PyTree] | None = None,
    cache_dtype: Any = None,
    cache_layout: str | None = None,
) -> SampleOutput:
    """Samples ``num_samples`` completions per prompt with a static-shape KV cache.

    Prefill the (left-padded) prompts once, then a ``lax.while_loop`` decodes one token per step until every
    row has emitted an EOS or ``max_new_tokens`` tokens exist. Per step and row:
    ``y ~ softmax(filter(z / tau))`` (``filter`` = top-k then top-p; ``y = argmax z`` when ``greedy``), and
    ``logp = log_softmax(z / tau)[y]`` under the **un-truncated** temperature-scaled distribution, i.e.
    exactly the log-prob a training forward pass at temperature ``tau`` gives (ALGORITHMS.md 1.4).
    After its EOS a row emits ``pad_id`` with mask 0 and log-prob 0.

    Compiled once per (model structure, shapes, ``max_new_tokens``, ``top_k``, ``greedy``, ``num_samples``,
    number of EOS ids); the values of ``temperature``, ``top_p``, ``eos_ids``, ``pad_id``, the weights and
    the prompts are traced, so changing them does not recompile (switching ``top_p`` between None and a
    number does).

    Args:
      model: a ``grpojax.models.Qwen`` (or any nnx module with its call / cache interface and
        ``logits_from_hidden(hidden, *, vocab_major)``).
      prompt_tokens_BT: ``[B, T]`` int token ids, left- or right-padded (any pad layout).
      prompt_mask_BT: ``[B, T]`` 1 / True on real tokens; every row needs at least one.
      rng: a PRNG key; the same key gives the same samples.
      max_new_tokens: L, the completion length budget (static).
      temperature: tau > 0 (also used for the returned log-probs when ``greedy``).
      top_k: keep the k most likely tokens (static int) or None.
      top_p: nucleus mass in (0, 1] or None.
      greedy: argmax decoding (ignores the rng, top-k and top-p).
      eos_ids: one id or several; None / () means never stop early.
      pad_id: id written to prompt pads and to completion slots after the EOS.
      num_samples: G, completions per prompt; rows are prompt-major ``[b0g0, b0g1, ..., b1g0, ...]``.
      cache_fn: ``(batch, max_len) -> cache`` (hashable); default ``grpojax.models.init_cache`` with
        ``model.config`` and ``cache_dtype``.
      cache_dtype: KV-cache dtype; default the model's compute dtype (``model.dtype``) if it has one,
        else float32.
      cache_layout: ``"shared"`` (the G samples of a prompt share its keys / values; each step reads only
        the filled part of the cache), ``"dense"`` (G copies, every step reads the whole budget: the
        reference), or None: ``"shared"`` when the model lists it in ``cache_layouts`` (``Qwen`` does).

    Returns:
      :class:`SampleOutput` with ``B * G`` rows.

    Example::

      out = sample(model, jnp.array([[0, 5, 6], [7, 8, 9]]), jnp.array([[0, 1, 1], [1, 1, 1]]),
                   jax.random.key(0), max_new_tokens=16, eos_ids=2, num_samples=4)
      out.completion_tokens_BC.shape  # (8, 16)
    """
    _validate(prompt_tokens_BT, prompt_mask_BT, max_new_tokens=max_new_tokens, temperature=temperature,
              top_k=top_k, top_p=top_p, pad_id=pad_id, num_samples=num_samples)
    if cache_layout is not None and cache_layout not in CACHE_LAYOUTS:
        raise ValueError(f"cache_layout must be one of {CACHE_LAYOUTS} or None, got {cache_layout!r}")
    if cache_fn is None:
        if not hasattr(model, "config"):
            raise ValueError(f"{type(model).__name__} has no .config: pass cache_fn=(batch, max_len) -> cache")
        dtype = cache_dtype if cache_dtype is not None else getattr(model, "dtype", jnp.float32)
        cache_fn = ModelCache(model.config, jnp.dtype(dtype))
    graphdef, state = nnx.split(model)
    with _traced_on(cache_fn):
        return _sample_jit(
            graphdef, state, jnp.asarray(prompt_tokens_BT), jnp.asarray(prompt_mask_BT), rng,
            jnp.asarray(temperature, jnp.float32), None if top_p is None else jnp.asarray(top_p, jnp.float32),
            jnp.asarray(_eos_tuple(eos_ids), jnp.int32), jnp.int32(pad_id), cache_fn=cache_fn,
            max_new_tokens=int(max_new_tokens), top_k=None if top_k is None else int(top_k),
            use_greedy=bool(greedy), num_samples=int(num_samples), cache_layout=cache_layout)
